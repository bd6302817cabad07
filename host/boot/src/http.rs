//! The HTTP edge (Warewulf's port 9873): thin handlers over the node index, the script
//! renderer and the status board.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wulf_core::HwAddr;

use crate::ipxe_script::IpxeScripts;
use crate::node_index::NodeIndex;
use crate::status::StatusBoard;

pub struct AppState {
    pub index: NodeIndex,
    pub scripts: IpxeScripts,
    pub status: StatusBoard,
    /// Used in scripts when a request carries no `Host` header.
    pub local: SocketAddr,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ipxe/{mac}", get(ipxe))
        .route("/status", get(status))
        .with_state(state)
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
    let snapshot = app.index.snapshot();
    let rendered = match snapshot.lookup(&hwaddr) {
        Some(node) => {
            let script = app.scripts.for_node(node, &hwaddr, &authority);
            if script.is_ok() {
                app.status
                    .record(&node.id, "ipxe", "ipxe script", peer.ip().to_string());
            }
            script
        }
        None => {
            tracing::info!(mac = %hwaddr, %peer, "unknown node asked for an iPXE script");
            app.scripts.unconfigured(&hwaddr, &authority)
        }
    };
    match rendered {
        Ok(script) => text(StatusCode::OK, script),
        Err(e) => {
            tracing::error!(mac = %hwaddr, error = %e, "cannot render iPXE script");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

async fn status(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({ "nodes": app.status.all() })).into_response()
}
