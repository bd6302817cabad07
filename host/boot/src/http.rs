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
use wulf_core::{HwAddr, Node};
use wulf_image::ImageStore;
use wulf_overlay::{ArchiveStore, Kind};

use crate::files::{self, Blob};
use crate::ipxe_script::IpxeScripts;
use crate::node_index::NodeIndex;
use crate::status::StatusBoard;

/// Builds overlay archives, incrementally: one node's (`Some(id)`), when the boot server finds
/// them missing, or every node's (`None`) when their inputs changed. Blocking.
pub type OverlayBuilder = Arc<dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync>;

pub struct AppState {
    pub index: NodeIndex,
    /// Secure mode: runtime overlays only to source ports below 1024.
    pub secure: bool,
    pub scripts: IpxeScripts,
    pub status: StatusBoard,
    /// Used in scripts when a request carries no `Host` header.
    pub local: SocketAddr,
    pub images: ImageStore,
    pub archives: ArchiveStore,
    pub overlay_builder: Option<OverlayBuilder>,
    /// One overlay build per node at a time: the others wait for it.
    pub building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the archives' inputs changed since the last cluster-wide check.
    pub freshness: crate::freshness::Freshness,
    pub metrics: crate::metrics::Metrics,
    /// The last parsed overlay index and the file it was parsed from.
    pub archive_index: Mutex<Option<(IndexStamp, Arc<wulf_overlay::archive::Index>)>>,
}

/// (mtime, inode, size): a build replaces the file by rename, so the inode changes too.
type IndexStamp = Option<(Option<std::time::SystemTime>, u64, u64)>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ipxe/{mac}", get(ipxe))
        .route("/kernel/{mac}", get(kernel))
        .route("/image/{mac}", get(image))
        .route("/system/{mac}", get(system))
        .route("/runtime/{mac}", get(runtime))
        .route("/provision/{mac}", get(provision))
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Kernel,
    Image,
    System,
    Runtime,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Kernel => "kernel",
            Stage::Image => "image",
            Stage::System => "system",
            Stage::Runtime => "runtime",
        }
    }
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

stage_handler!(kernel, Stage::Kernel);
stage_handler!(image, Stage::Image);
stage_handler!(system, Stage::System);
stage_handler!(runtime, Stage::Runtime);

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
        "kernel" => Stage::Kernel,
        "image" | "container" => Stage::Image,
        "system" => Stage::System,
        "runtime" => Stage::Runtime,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown stage {other:?}: use ipxe, kernel, image, system or runtime\n"),
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

async fn serve_stage(app: &Arc<AppState>, stage: Stage, req: Request) -> Response {
    let response = serve_stage_inner(app, stage, req).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    app.metrics
        .request(stage.name(), response.status().as_u16(), bytes);
    response
}

async fn serve_stage_inner(app: &Arc<AppState>, stage: Stage, req: Request) -> Response {
    let hwaddr = match HwAddr::parse(&req.mac) {
        Ok(hwaddr) => hwaddr,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some((node, _)) = find_node(app, &hwaddr).await else {
        tracing::info!(mac = %hwaddr, peer = %req.peer, stage = stage.name(), "unknown node asked for a file");
        return text(
            StatusCode::NOT_FOUND,
            format!("{hwaddr} is not a known node\n"),
        );
    };
    if let Some(key) = node.asset_key.as_deref().filter(|k| !k.is_empty())
        && req.query.get("assetkey").map(String::as_str) != Some(key)
    {
        tracing::warn!(node = %node.id, peer = %req.peer, stage = stage.name(), "asset key mismatch");
        return text(StatusCode::UNAUTHORIZED, "asset key mismatch\n".into());
    }
    if stage == Stage::Runtime && app.secure && req.peer.port() >= 1024 {
        tracing::warn!(node = %node.id, peer = %req.peer, "secure mode: runtime overlay refused to an unprivileged port");
        return text(
            StatusCode::FORBIDDEN,
            "secure mode: the runtime overlay is only sent to privileged source ports (below 1024)\n".into(),
        );
    }
    let blob = match resolve(app, stage, &node).await {
        Ok(blob) => blob,
        Err((status, message)) => {
            tracing::warn!(node = %node.id, stage = stage.name(), %message, "cannot serve");
            return text(status, format!("{message}\n"));
        }
    };
    let response = files::serve(&blob, &req.headers, req.head);
    if response.status().is_success() && !req.head {
        let sent = blob
            .parts
            .last()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        app.status
            .record(&node.id, stage.name(), &sent, req.peer.ip().to_string());
        tracing::info!(node = %node.id, stage = stage.name(), file = %sent, peer = %req.peer, "sending");
    }
    response
}

type Failure = (StatusCode, String);

/// The node with `hwaddr`; else, when some node is marked discoverable, the first of them,
/// which gets `hwaddr` (Warewulf's discovery, persisted in the inventory). With the
/// generation of the inventory snapshot it came from.
async fn find_node(app: &Arc<AppState>, hwaddr: &HwAddr) -> Option<(Arc<Node>, u64)> {
    let snapshot = app.index.snapshot();
    if let Some(node) = snapshot.lookup(hwaddr) {
        return Some((Arc::clone(node), snapshot.generation));
    }
    if !snapshot.discoverable {
        return None;
    }
    let (index_of, wanted) = (Arc::clone(app), *hwaddr);
    match tokio::task::spawn_blocking(move || index_of.index.discover(&wanted)).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::error!(mac = %hwaddr, %error, "discovery failed");
            None
        }
        Err(error) => {
            tracing::error!(mac = %hwaddr, %error, "discovery task failed");
            None
        }
    }
}

async fn resolve(app: &Arc<AppState>, stage: Stage, node: &Node) -> Result<Blob, Failure> {
    let not_found = |m: String| (StatusCode::NOT_FOUND, m);
    match stage {
        Stage::Kernel | Stage::Image => {
            let name = node.image.as_deref().ok_or_else(|| {
                not_found(format!(
                    "node {} has no image: wulf node set {} --image <name>",
                    node.id, node.id
                ))
            })?;
            let meta = app.images.get(name).map_err(|e| not_found(e.to_string()))?;
            if stage == Stage::Kernel {
                let wanted = node.kernel.version.as_deref();
                let kernel =
                    wulf_image::kernel::select(&meta.kernels, wanted).ok_or_else(|| {
                        not_found(match wanted {
                            Some(w) => format!(
                                "image {name} has no kernel matching {w:?} (node {})",
                                node.id
                            ),
                            None => {
                                format!("image {name} has no kernel: `wulf image kernels {name}`")
                            }
                        })
                    })?;
                Ok(Blob {
                    parts: vec![app.images.kernel_path(name, kernel)],
                    etag: if kernel.sha256.is_empty() {
                        format!("{}-{}", meta.imported_at, kernel.file)
                    } else {
                        kernel.sha256.clone()
                    },
                })
            } else {
                let path = app.images.initramfs_path(&meta).ok_or_else(|| {
                    not_found(format!(
                        "image {name} is not built: wulf image build {name}"
                    ))
                })?;
                let sha = meta.build.map(|b| b.sha256).unwrap_or_default();
                Ok(Blob {
                    parts: vec![path],
                    etag: sha,
                })
            }
        }
        Stage::System | Stage::Runtime => {
            let kind = if stage == Stage::System {
                Kind::System
            } else {
                Kind::Runtime
            };
            freshen(app).await;
            if let Some(blob) = overlay_blob(app, node, kind)? {
                return Ok(blob);
            }
            let Some(builder) = app.overlay_builder.clone() else {
                return Err(not_found(format!(
                    "the {} overlay of {} is not built: wulf overlay build {}",
                    kind.as_str(),
                    node.id,
                    node.id
                )));
            };
            // One build per node; requests arriving meanwhile wait for it, then re-check.
            let lock = {
                let mut building = app.building.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(building.entry(node.id.clone()).or_default())
            };
            let _guard = lock.lock().await;
            if let Some(blob) = overlay_blob(app, node, kind)? {
                return Ok(blob);
            }
            let id = node.id.clone();
            tracing::info!(node = %id, "building overlays on demand");
            let started = std::time::Instant::now();
            let built = tokio::task::spawn_blocking(move || builder(Some(&id))).await;
            app.metrics
                .overlay_build(started.elapsed(), matches!(built, Ok(Ok(()))));
            built
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("building the overlays of {}: {e}", node.id),
                    )
                })?;
            overlay_blob(app, node, kind)?.ok_or_else(|| {
                not_found(format!("node {} has no {} overlay", node.id, kind.as_str()))
            })
        }
    }
}

/// Rebuilds stale archives (incrementally, for the whole cluster) when the inputs of a build
/// changed since the last check; concurrent requests wait for the one check.
async fn freshen(app: &AppState) {
    let Some(builder) = app.overlay_builder.clone() else {
        return;
    };
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
    let built = tokio::task::spawn_blocking(move || builder(None)).await;
    let ok = matches!(built, Ok(Ok(())));
    app.metrics.overlay_build(started.elapsed(), ok);
    match built {
        Ok(Ok(())) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "overlay archives checked against their inputs"
        ),
        Ok(Err(error)) => {
            tracing::error!(%error, "rebuilding stale overlay archives failed; serving the last built ones")
        }
        Err(error) => tracing::error!(%error, "the overlay build task failed"),
    }
    app.freshness.checked(inputs);
}

/// The archive index, parsed again only when the file was replaced: with 10,000 nodes it is
/// megabytes of JSON, too much to parse per request.
fn archive_index(app: &AppState) -> Result<Arc<wulf_overlay::archive::Index>, Failure> {
    let stamp = std::fs::metadata(app.archives.index_path()).ok().map(|m| {
        (
            m.modified().ok(),
            std::os::unix::fs::MetadataExt::ino(&m),
            m.len(),
        )
    });
    let mut cached = app.archive_index.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((seen, index)) = cached.as_ref()
        && *seen == stamp
    {
        return Ok(Arc::clone(index));
    }
    let index = Arc::new(
        app.archives
            .index()
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    *cached = Some((stamp, Arc::clone(&index)));
    Ok(index)
}

fn overlay_blob(app: &AppState, node: &Node, kind: Kind) -> Result<Option<Blob>, Failure> {
    let index = archive_index(app)?;
    Ok(app
        .archives
        .segments(&index, &node.id, kind)
        .map(|(parts, archive)| Blob {
            parts,
            etag: archive.sha256.clone(),
        }))
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
            let script = app
                .scripts
                .cached_for_node(generation, &node, &hwaddr, &authority);
            if script.is_ok() {
                app.status
                    .record(&node.id, "ipxe", "ipxe script", peer.ip().to_string());
            }
            script
        }
        None => {
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
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(nodes),
    )
        .into_response()
}

async fn status(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({ "nodes": app.status.all() })).into_response()
}
