//! The HTTP edge (Warewulf's port 9873): thin handlers over the node index, the script
//! renderer and the status board.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wulf_core::{BootFile, BootStage, HwAddr, Node, ProvisionError, Provisioner};

use crate::files;
use crate::ipxe_script::IpxeScripts;
use wulf_core::provision::error_chain;

use crate::node_index::NodeIndex;
use wulf_core::boot_status::{Delivery, StatusBoard};

pub struct AppState {
    /// The application layer: what each node gets, builds, discovery.
    pub provisioner: Arc<dyn Provisioner>,
    pub index: NodeIndex,
    /// Secure mode: runtime overlays only to source ports below 1024.
    pub secure: bool,
    pub scripts: IpxeScripts,
    pub status: Arc<StatusBoard>,
    /// Used in scripts when a request carries no `Host` header.
    pub local: SocketAddr,
    /// Build overlays on demand when they are missing or stale.
    pub build_on_demand: bool,
    /// One overlay build per node at a time: the others wait for it.
    pub building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the archives' inputs changed since the last cluster-wide check.
    pub freshness: crate::freshness::Freshness,
    pub metrics: crate::metrics::Metrics,
    /// Agents parked on a long-poll.
    pub waiting: crate::agent::Waiting,
    /// Files being sent, shared by their transfers.
    pub open_files: files::OpenFiles,
    /// Image responses being sent, and those waiting for their turn.
    pub image_streams: Arc<crate::admission::ImageStreams>,
    /// The open HTTP connections, for `/metrics`.
    pub connections: Arc<crate::conn::Connections>,
    /// DHCP packets answered and ignored, for `/metrics`.
    pub dhcp: crate::dhcp::DhcpCounters,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ipxe/{mac}", get(ipxe))
        .route("/kernel/{mac}", get(kernel))
        .route("/stage1/{mac}", get(stage1))
        .route("/stage1/{mac}/report", axum::routing::post(stage1_report))
        .route("/image/{mac}", get(image))
        .route("/system/{mac}", get(system))
        .route("/runtime/{mac}", get(runtime))
        .route("/provision/{mac}", get(provision))
        .route(wulf_agent::proto::RUNTIME_PATH, get(crate::agent::runtime))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What a file request carries.
struct Request {
    peer: SocketAddr,
    mac: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    head: bool,
}

macro_rules! stage_handler {
    ($name:ident, $stage:expr) => {
        async fn $name(
            State(app): State<Arc<AppState>>,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
            Path(mac): Path<String>,
            Query(query): Query<HashMap<String, String>>,
            method: Method,
            headers: HeaderMap,
        ) -> Response {
            let head = method == Method::HEAD;
            serve_stage(
                &app,
                $stage,
                Request {
                    peer,
                    mac,
                    query,
                    headers,
                    head,
                },
            )
            .await
        }
    };
}

stage_handler!(kernel, BootStage::Kernel);
stage_handler!(stage1, BootStage::Stage1);
stage_handler!(image, BootStage::Image);
stage_handler!(system, BootStage::System);
stage_handler!(runtime, BootStage::Runtime);

/// Warewulf's legacy dispatcher: `/provision/<mac>?stage=ipxe|kernel|image|system|runtime`.
async fn provision(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let stage = match query.get("stage").map(String::as_str).unwrap_or("ipxe") {
        "ipxe" => return ipxe(State(app), ConnectInfo(peer), Path(mac), headers).await,
        "kernel" => BootStage::Kernel,
        "stage1" => BootStage::Stage1,
        "image" | "container" => BootStage::Image,
        "system" => BootStage::System,
        "runtime" => BootStage::Runtime,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown stage {other:?}: use ipxe, kernel, stage1, image, system or runtime\n"
                ),
            );
        }
    };
    let head = method == Method::HEAD;
    serve_stage(
        &app,
        stage,
        Request {
            peer,
            mac,
            query,
            headers,
            head,
        },
    )
    .await
}

async fn serve_stage(app: &Arc<AppState>, stage: BootStage, req: Request) -> Response {
    let response = serve_stage_inner(app, stage, req).await;
    let bytes = content_length(&response);
    app.metrics
        .request(stage.as_str(), response.status().as_u16(), bytes);
    response
}

async fn serve_stage_inner(app: &Arc<AppState>, stage: BootStage, req: Request) -> Response {
    let hwaddr = match HwAddr::parse(&req.mac) {
        Ok(hwaddr) => hwaddr,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some((node, _)) = find_node(app, &hwaddr).await else {
        app.status.unknown(&hwaddr.to_string(), stage.as_str());
        tracing::info!(mac = %hwaddr, peer = %req.peer, stage = stage.as_str(), "unknown node asked for a file");
        return text(
            StatusCode::NOT_FOUND,
            format!("{hwaddr} is not a known node\n"),
        );
    };
    if !node.accepts_asset_key(req.query.get("assetkey").map(String::as_str)) {
        tracing::warn!(node = %node.id, peer = %req.peer, stage = stage.as_str(), "asset key mismatch");
        app.status.failed(
            &node.id,
            &hwaddr.to_string(),
            stage.as_str(),
            "asset key mismatch",
        );
        return text(StatusCode::UNAUTHORIZED, "asset key mismatch\n".into());
    }
    if stage == BootStage::Runtime && app.secure && req.peer.port() >= 1024 {
        tracing::warn!(node = %node.id, peer = %req.peer, "secure mode: runtime overlay refused to an unprivileged port");
        app.status.failed(
            &node.id,
            &hwaddr.to_string(),
            stage.as_str(),
            "secure mode: asked from an unprivileged port",
        );
        return text(
            StatusCode::FORBIDDEN,
            "secure mode: the runtime overlay is only sent to privileged source ports (below 1024)\n".into(),
        );
    }
    let file = match resolve(app, stage, &node).await {
        Ok(file) => file,
        Err((status, message)) => {
            tracing::warn!(node = %node.id, stage = stage.as_str(), %message, "cannot serve");
            app.status
                .failed(&node.id, &hwaddr.to_string(), stage.as_str(), &message);
            return text(status, format!("{message}\n"));
        }
    };
    let mut response = files::serve(&app.open_files, &file, &req.headers, req.head);
    if stage == BootStage::Image
        && response
            .extensions()
            .get::<Arc<files::SendFile>>()
            .is_some()
    {
        // Held by the connection until the body is sent (or the client leaves).
        let admitted = app.image_streams.admit().await;
        response.extensions_mut().insert(Arc::new(admitted));
    }
    if response.status().is_success() && !req.head {
        let sent = file
            .parts
            .last()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        app.status.delivered(Delivery {
            node: &node.id,
            mac: &hwaddr,
            stage: stage.as_str(),
            file: &sent,
            bytes: content_length(&response),
            peer: req.peer.ip(),
            etag: &file.etag,
        });
        tracing::info!(node = %node.id, stage = stage.as_str(), file = %sent, peer = %req.peer, "sending");
    }
    response
}

/// A report from a node's stage one (`ok <step>` or `error <step>: <why>`), for `/status`.
async fn stage1_report(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let hwaddr = match HwAddr::parse(&mac) {
        Ok(hwaddr) => hwaddr,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some((node, _)) = find_node(&app, &hwaddr).await else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{hwaddr} is not a known node\n"),
        );
    };
    if !node.accepts_asset_key(query.get("assetkey").map(String::as_str)) {
        return text(StatusCode::UNAUTHORIZED, "asset key mismatch\n".into());
    }
    let line: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    match line.split_once(' ') {
        Some(("ok", step)) => {
            tracing::info!(node = %node.id, %peer, step, "stage one");
            app.status.delivered(Delivery {
                node: &node.id,
                mac: &hwaddr,
                stage: BootStage::Stage1.as_str(),
                file: &format!("stage one: {step}"),
                bytes: 0,
                peer: peer.ip(),
                etag: "",
            });
        }
        Some(("error", reason)) => {
            tracing::warn!(node = %node.id, %peer, reason, "stage one failed");
            app.status.failed(
                &node.id,
                &hwaddr.to_string(),
                BootStage::Stage1.as_str(),
                reason,
            );
        }
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "a report is one line: `ok <step>` or `error <step>: <reason>`\n".into(),
            );
        }
    }
    text(StatusCode::OK, "noted\n".into())
}

/// The size a response promises.
fn content_length(response: &Response) -> u64 {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

type Failure = (StatusCode, String);

/// The node with `hwaddr`; else one a backend knows by that address, or one that takes it
/// by discovery (when some node waits to be discovered, or backends may accept it). With the
/// generation of the inventory snapshot it came from.
async fn find_node(app: &Arc<AppState>, hwaddr: &HwAddr) -> Option<(Arc<Node>, u64)> {
    let snapshot = app.index.snapshot();
    if let Some(node) = snapshot.lookup(hwaddr) {
        return Some((Arc::clone(node), snapshot.generation));
    }
    if !snapshot.discoverable && !app.provisioner.has_backends() {
        return None;
    }
    let (index_of, wanted) = (Arc::clone(app), *hwaddr);
    match tokio::task::spawn_blocking(move || index_of.index.find_unknown(&wanted)).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::error!(mac = %hwaddr, error = %error_chain(&error), "looking up an unknown node failed");
            None
        }
        Err(error) => {
            tracing::error!(mac = %hwaddr, %error, "the lookup task failed");
            None
        }
    }
}

fn failure(error: &ProvisionError) -> Failure {
    let status = if error.is_missing() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, error_chain(error))
}

/// What `node` gets at `stage`. Overlays are checked against their inputs first, and built
/// when missing (one build per node; requests arriving meanwhile wait for it, then re-check).
pub(crate) async fn resolve(
    app: &Arc<AppState>,
    stage: BootStage,
    node: &Arc<Node>,
) -> Result<BootFile, Failure> {
    if !stage.is_overlay() {
        return app
            .provisioner
            .boot_file(node, stage)
            .map_err(|e| failure(&e));
    }
    freshen(app).await;
    match app.provisioner.boot_file(node, stage) {
        Err(ProvisionError::NoOverlay { .. }) if app.build_on_demand => {}
        other => return other.map_err(|e| failure(&e)),
    }
    let lock = {
        let mut building = app.building.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(building.entry(node.id.clone()).or_default())
    };
    let _guard = lock.lock().await;
    match app.provisioner.boot_file(node, stage) {
        Err(ProvisionError::NoOverlay { .. }) => {}
        other => return other.map_err(|e| failure(&e)),
    }
    tracing::info!(node = %node.id, "building overlays on demand");
    let started = std::time::Instant::now();
    let (provisioner, id) = (Arc::clone(&app.provisioner), node.id.clone());
    let built = tokio::task::spawn_blocking(move || provisioner.build_overlays(Some(&id))).await;
    app.metrics.overlay_build(
        started.elapsed(),
        matches!(&built, Ok(Ok(summary)) if summary.all_built()),
    );
    let summary = built
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| failure(&e))?;
    if let Some(failed) = summary.failed.first() {
        tracing::error!(node = %failed.node, error = %failed.error, "building overlays on demand failed");
        return Err((StatusCode::INTERNAL_SERVER_ERROR, failed.error.clone()));
    }
    tracing::info!(node = %node.id, ms = summary.took.as_millis() as u64, "overlays built");
    app.provisioner
        .boot_file(node, stage)
        .map_err(|e| failure(&e))
}

/// Rebuilds stale archives (incrementally, for the whole cluster) when the inputs of a build
/// changed since the last check; concurrent requests wait for the one check.
pub(crate) async fn freshen(app: &AppState) {
    if !app.build_on_demand {
        return;
    }
    let generation = app.index.snapshot().generation;
    if app.freshness.changed(generation).is_none() {
        return;
    }
    let _running = app.freshness.running.lock().await;
    // Whoever held the lock before may have done it already.
    let Some(inputs) = app.freshness.changed(generation) else {
        return;
    };
    let started = std::time::Instant::now();
    let provisioner = Arc::clone(&app.provisioner);
    let built = tokio::task::spawn_blocking(move || provisioner.build_overlays(None)).await;
    let ok = matches!(&built, Ok(Ok(summary)) if summary.all_built());
    app.metrics.overlay_build(started.elapsed(), ok);
    match built {
        Ok(Ok(summary)) => {
            tracing::info!(
                built = summary.built,
                unchanged = summary.unchanged,
                failed = summary.failed.len(),
                ms = summary.took.as_millis() as u64,
                "overlay archives checked against their inputs"
            );
            for failed in &summary.failed {
                tracing::error!(node = %failed.node, error = %failed.error, "this node's overlays could not be built; serving its last built ones, and trying again later");
            }
        }
        Ok(Err(error)) => {
            tracing::error!(error = %error_chain(&error), "rebuilding stale overlay archives failed; serving the last built ones, and trying again later")
        }
        Err(error) => tracing::error!(%error, "the overlay build task failed"),
    }
    app.freshness.checked(inputs, ok);
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `host:port` as the client addressed us, for URLs inside the script.
fn authority(headers: &HeaderMap, local: SocketAddr) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| local.to_string())
}

async fn ipxe(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    headers: HeaderMap,
) -> Response {
    let hwaddr = match HwAddr::parse(&mac) {
        Ok(hwaddr) => hwaddr,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let authority = authority(&headers, app.local);
    let rendered = match find_node(&app, &hwaddr).await {
        Some((node, generation)) => {
            let script = app.scripts.cached_for_node(
                generation,
                &node,
                &hwaddr,
                &authority,
                &*app.provisioner,
            );
            match &script {
                Ok(script) => app.status.delivered(Delivery {
                    node: &node.id,
                    mac: &hwaddr,
                    stage: "ipxe",
                    file: "ipxe script",
                    bytes: script.len() as u64,
                    peer: peer.ip(),
                    etag: "",
                }),
                Err(e) => {
                    app.status
                        .failed(&node.id, &hwaddr.to_string(), "ipxe", &e.to_string());
                }
            }
            script
        }
        None => {
            app.status.unknown(&hwaddr.to_string(), "ipxe");
            tracing::info!(mac = %hwaddr, %peer, "unknown node asked for an iPXE script");
            app.scripts.unconfigured(&hwaddr, &authority).map(Arc::from)
        }
    };
    match rendered {
        Ok(script) => {
            app.metrics.request("ipxe", 200, script.len() as u64);
            text(StatusCode::OK, script.to_string())
        }
        Err(e) => {
            tracing::error!(mac = %hwaddr, error = %e, "cannot render iPXE script");
            app.metrics.request("ipxe", 500, 0);
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let nodes = app.index.snapshot().nodes.len();
    let statuses = node_statuses(&app).await;
    let agents: Vec<_> = statuses.values().filter_map(|s| s.agent.as_ref()).collect();
    let mut text = app.metrics.render(nodes);
    text.push_str(&crate::metrics::render_agents(
        agents.len(),
        agents.iter().filter(|a| !a.in_sync).count(),
        agents
            .iter()
            .filter(|a| !a.reboot_needed.is_empty())
            .count(),
        app.waiting.count.load(std::sync::atomic::Ordering::Relaxed),
    ));
    text.push_str(&app.connections.render_metrics());
    text.push_str(&app.image_streams.render_metrics());
    text.push_str(&app.dhcp.render());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// Every node's status, agents' completed against what the nodes would get now (file lookups:
/// off the async workers).
async fn node_statuses(
    app: &Arc<AppState>,
) -> std::collections::BTreeMap<String, wulf_core::boot_status::NodeStatus> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || completed_statuses(&app))
        .await
        .unwrap_or_default()
}

/// Every node's status, agents' completed against what the nodes would get now. Blocking.
pub(crate) fn completed_statuses(
    app: &AppState,
) -> std::collections::BTreeMap<String, wulf_core::boot_status::NodeStatus> {
    let mut all = app.status.all();
    for (id, status) in &mut all {
        if let Some(agent) = status.agent.as_mut() {
            crate::agent::complete(app, agent, id);
        }
    }
    all
}

async fn status(State(app): State<Arc<AppState>>) -> Response {
    let nodes = node_statuses(&app).await;
    axum::Json(serde_json::json!({ "nodes": nodes })).into_response()
}
