//! What nodes fetch: `/status` (every node's last steps) and `/events`, a server-sent-event
//! stream of each step as it happens (node, stage, file, bytes, result).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_core::boot_status::{BootEvent, NodeStatus, StatusBoard};

use crate::Api;
use crate::auth::{Access, Read};
use crate::error::ApiError;
use crate::records::blocking;

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(events))
}

/// Events a slow subscriber may fall behind by before it is told it missed some.
const BACKLOG: usize = 8192;
/// How often an open stream's token is checked again.
const RECHECK: Duration = Duration::from_secs(10);

/// What a stream does next: send an event, or go on only if its token still holds.
enum Step {
    Send(Event),
    Check(bool),
}

/// The boot server's steps, fanned out to every open stream.
pub(crate) struct Events {
    sender: broadcast::Sender<Arc<BootEvent>>,
}

impl Events {
    pub(crate) fn listen(board: &StatusBoard) -> Events {
        let (sender, _) = broadcast::channel(BACKLOG);
        let (feed, watched) = (sender.clone(), sender.clone());
        board.listen(
            move || watched.receiver_count() > 0,
            move |event| {
                // A subscriber gone since `wants` is not an error.
                let _ = feed.send(Arc::new(event.clone()));
            },
        );
        Events { sender }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusBody {
    /// By node id: the last stage served, each stage's latest step, the last failure, and
    /// what its agent last said.
    #[schema(value_type = Object)]
    nodes: BTreeMap<String, NodeStatus>,
}

/// Every node's boot status.
#[utoipa::path(get, path = "/status", tag = "status",
    responses((status = 200, body = StatusBody), (status = 401, body = ApiError)))]
async fn status(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
) -> Result<Json<StatusBody>, ApiError> {
    let nodes = blocking(move || Ok(api.monitor.statuses())).await?;
    Ok(Json(StatusBody { nodes }))
}

/// Boot events as they happen: `event: boot` with a JSON step (`seq`, `at` in unix ms, `node`
/// (null for an unknown address), `mac`, `stage`, `file`, `bytes`, `result`: ok, error or
/// unknown, `reason`); `event: lagged` with how many were missed by a reader too slow to keep
/// up (read `/status` again). A comment every 15 s keeps proxies from closing it.
#[utoipa::path(get, path = "/events", tag = "status",
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 401, body = ApiError)))]
async fn events(
    access: Access<Read>,
    State(api): State<Arc<Api>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(api.events.sender.subscribe()).map(|item| {
        Step::Send(match item {
            Ok(event) => Event::default()
                .event("boot")
                .json_data(event.as_ref())
                .unwrap_or_else(|_| Event::default().comment("unencodable event")),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
        })
    });
    // The token is checked again as the stream goes on: revoked or expired, the stream ends.
    let site = Arc::clone(&api.site);
    let presented = access.presented;
    let checks = IntervalStream::new(tokio::time::interval(RECHECK))
        .map(move |_| Step::Check(site.authenticate(&presented).is_ok()));
    let stream = events
        .merge(checks)
        .take_while(|step| !matches!(step, Step::Check(false)))
        .filter_map(|step| match step {
            Step::Send(event) => Some(Ok(event)),
            Step::Check(_) => None,
        });
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}
