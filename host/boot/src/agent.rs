//! The node agents' endpoint, `GET /agent/v1/runtime?wait=<seconds>`: a node's runtime overlay
//! for its `wulf-agent`, authenticated by the node's credential (see `wulf_agent::proto`).
//!
//! A request whose `If-None-Match` is the current ETag is held until the overlay changes or the
//! wait is over (then 304): an idle node costs one parked request, and a change reaches every
//! waiting node as soon as it is built. While agents wait, the server checks the overlays'
//! inputs once a second and rebuilds what changed, as an overlay request would.
//!
//! Each check-in records what the node booted (the ETags of its kernel, image and system
//! overlay: as the agent reports them, else as this server last sent them, told back to the
//! agent so it can report them after a restart of the server) and the runtime overlay it holds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use wulf_agent::proto::{self, Answer, AuthError, Authorization, Booted, Covered, Credential};
use wulf_core::BootStage;
use wulf_core::provision::error_chain;

use crate::http::{AppState, resolve};
use wulf_core::boot_status::{AgentStatus, now};

/// A runtime overlay larger than this is not sent to an agent (it is read whole to sign it).
const MAX_RUNTIME: u64 = 256 << 20;

/// Agents parked on a long-poll, and the signal that wakes them.
pub struct Waiting {
    pub count: AtomicUsize,
    changes: tokio::sync::watch::Sender<u64>,
    /// (inventory generation, archives stamp) when last looked at.
    seen: std::sync::Mutex<(u64, u64)>,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            count: AtomicUsize::new(0),
            changes: tokio::sync::watch::Sender::new(0),
            seen: std::sync::Mutex::new((0, 0)),
        }
    }
}

/// Counts a parked request for as long as it lives.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Parked(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Once a second while agents wait: rebuild what changed, and wake them when the inventory or
/// the archives did.
pub(crate) async fn tick(app: &Arc<AppState>) {
    if app.waiting.count.load(Ordering::Relaxed) == 0 {
        return;
    }
    crate::http::freshen(app).await;
    let generation = app.index.snapshot().generation;
    let provisioner = Arc::clone(&app.provisioner);
    let Ok(stamp) = tokio::task::spawn_blocking(move || provisioner.archives_stamp()).await else {
        return;
    };
    let mut seen = app.waiting.seen.lock().unwrap_or_else(|p| p.into_inner());
    if *seen != (generation, stamp) {
        *seen = (generation, stamp);
        app.waiting.changes.send_modify(|n| *n += 1);
    }
}

fn refuse(status: StatusCode, message: String, peer: SocketAddr, node: Option<&str>) -> Response {
    tracing::warn!(node = node.unwrap_or("?"), %peer, %message, "agent request refused");
    (status, format!("{message}\n")).into_response()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) async fn runtime(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let auth = match header_text(&headers, header::AUTHORIZATION.as_str()) {
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                AuthError::Missing.to_string(),
                peer,
                None,
            );
        }
        Some(value) => match Authorization::parse(value) {
            Ok(auth) => auth,
            Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string(), peer, None),
        },
    };
    let id = auth.node.clone();
    if !app.index.snapshot().nodes.contains_key(&id) {
        // Said as a bad signature: who asks learns nothing of which nodes exist.
        tracing::warn!(node = %id, %peer, "agent request for a node that does not exist");
        return (
            StatusCode::UNAUTHORIZED,
            format!("{}\n", AuthError::BadSignature),
        )
            .into_response();
    }
    if app.secure && peer.port() >= 1024 {
        return refuse(
            StatusCode::FORBIDDEN,
            "secure mode: agents must connect from a privileged source port (below 1024)".into(),
            peer,
            Some(&id),
        );
    }
    let key = match app.provisioner.agent_key() {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot check an agent's credential");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}\n", error_chain(&e)),
            )
                .into_response();
        }
    };
    let credential = Credential::derive(&key, &id);
    let if_none_match_sent =
        header_text(&headers, header::IF_NONE_MATCH.as_str()).unwrap_or_default();
    let booted_sent = header_text(&headers, proto::BOOTED_HEADER).unwrap_or_default();
    let covered = Covered {
        if_none_match: if_none_match_sent,
        booted: booted_sent,
    };
    if let Err(e) = auth.verify(&credential, method.as_str(), target, now(), covered) {
        return refuse(StatusCode::UNAUTHORIZED, e.to_string(), peer, Some(&id));
    }
    let wait = query
        .get("wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(0)
        .min(proto::MAX_WAIT_SECS);
    let applied = Some(if_none_match_sent)
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let booted = Booted::parse(booted_sent)
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            let served = app.status.served(&id);
            Booted {
                kernel: served.kernel,
                image: served.image,
                system: served.system,
            }
        });
    app.status.record_agent(
        &id,
        AgentStatus {
            ipaddr: peer.ip().to_string(),
            boot_id: header_text(&headers, proto::BOOT_ID_HEADER)
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            booted: BTreeMap::from([
                ("kernel".to_owned(), booted.kernel.clone()),
                ("image".to_owned(), booted.image.clone()),
                ("system".to_owned(), booted.system.clone()),
            ]),
            applied: applied.clone().unwrap_or_default(),
            ..AgentStatus::default()
        },
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let _parked = Parked::new(&app.waiting.count);
    let mut changes = app.waiting.changes.subscribe();
    let booted_value = booted.header_value();
    let answered = loop {
        // The record as it is now: an edit while waiting is what the node must get.
        let Some(node) = app.index.snapshot().nodes.get(&id).cloned() else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("`{id}` is no longer a node"),
                peer,
                Some(&id),
            );
        };
        let file = match resolve(&app, BootStage::Runtime, &node).await {
            Ok(file) => file,
            Err((status, message)) => {
                tracing::warn!(node = %id, %message, "cannot serve an agent");
                return (status, format!("{message}\n")).into_response();
            }
        };
        if applied.as_deref() != Some(file.etag.as_str()) {
            match read_parts(&file.parts).await {
                Ok(body) => break Some((file.etag, body)),
                // A build replaced the archive between the lookup and the read: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::error!(node = %id, error = %e, "cannot read a runtime overlay");
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
                }
            }
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => break None,
        }
    };
    let (status, etag, body) = match answered {
        Some((etag, body)) => (StatusCode::OK, format!("\"{etag}\""), body),
        None => (
            StatusCode::NOT_MODIFIED,
            applied.map(|e| format!("\"{e}\"")).unwrap_or_default(),
            Vec::new(),
        ),
    };
    let signature = credential.sign_response(&Answer {
        request: auth.signature(),
        status: status.as_u16(),
        etag: &etag,
        booted: &booted_value,
        body: &body,
    });
    if status == StatusCode::OK {
        tracing::info!(node = %id, %etag, bytes = body.len(), %peer, "runtime overlay to the agent");
    }
    app.metrics
        .request("agent", status.as_u16(), body.len() as u64);
    let mut response = if status == StatusCode::OK {
        (
            status,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            body,
        )
            .into_response()
    } else {
        status.into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::ETAG.as_str(), etag.as_str()),
        (proto::SIGNATURE_HEADER, signature.as_str()),
        (proto::BOOTED_HEADER, booted_value.as_str()),
    ] {
        if !value.is_empty()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            headers.insert(name, value);
        }
    }
    response
}

/// A runtime overlay's segments, read whole (it is signed before it is sent).
async fn read_parts(parts: &[std::path::PathBuf]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(&tokio::fs::read(part).await?);
        if body.len() as u64 > MAX_RUNTIME {
            return Err(std::io::Error::other(format!(
                "a runtime overlay over {MAX_RUNTIME} bytes"
            )));
        }
    }
    Ok(body)
}

/// The agent part of each node's status, completed against what the node would get now.
pub(crate) fn complete(app: &AppState, agent: &mut AgentStatus, node: &str) {
    let Some(record) = app.index.snapshot().nodes.get(node).cloned() else {
        return;
    };
    agent.in_sync = app
        .provisioner
        .boot_file(&record, BootStage::Runtime)
        .is_ok_and(|file| file.etag == agent.applied);
    let booted: Vec<(BootStage, String)> = [
        (BootStage::Kernel, "kernel"),
        (BootStage::Image, "image"),
        (BootStage::System, "system"),
    ]
    .into_iter()
    .map(|(stage, key)| (stage, agent.booted.get(key).cloned().unwrap_or_default()))
    .collect();
    agent.reboot_needed = app
        .provisioner
        .changed_since_boot(&record, &booted)
        .into_iter()
        .map(|stage| stage.as_str().to_owned())
        .collect();
}
