//! Power actions and one-time netboot through the nodes' BMCs, and their console logs: the
//! `power` scope.

use std::io::{Read as _, Seek as _};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_core::bmc::PowerAction;
use wulf_site::BmcRequest;

use crate::Api;
use crate::auth::{Access, Power};
use crate::error::{ApiError, Body};
use crate::records::blocking;

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(power))
        .routes(routes!(console_log))
}

/// What to ask each BMC.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Action {
    On,
    Off,
    Cycle,
    Reset,
    /// An orderly shutdown through the operating system.
    Soft,
    Status,
    /// Netboot on the next boot only, then power on (off nodes) or cycle (on nodes).
    PxeOnce,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PowerRequest {
    /// Names or hostlists.
    nodes: Vec<String>,
    action: Action,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PowerResult {
    node: String,
    ok: bool,
    /// `on` or `off`, when the BMC said.
    state: Option<String>,
    /// What the BMC answered, or why it failed.
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PowerResults {
    results: Vec<PowerResult>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ConsoleQuery {
    /// How much of the log's end to send (default 64 KiB, at most 8 MiB).
    bytes: Option<u64>,
}

/// Runs a power action on every named node's BMC, as `wulf power` does (the site's fan-out and
/// timeout); each node gets a result, a failed one does not stop the others.
#[utoipa::path(post, path = "/power", tag = "power", request_body = PowerRequest,
    responses((status = 200, body = PowerResults), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn power(
    access: Access<Power>,
    State(api): State<Arc<Api>>,
    Body(request): Body<PowerRequest>,
) -> Result<Json<PowerResults>, ApiError> {
    if request.nodes.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "nodes",
            "name the nodes (hostlists work: n[001-004])",
        ));
    }
    let asked = match request.action {
        Action::On => BmcRequest::Power(PowerAction::On),
        Action::Off => BmcRequest::Power(PowerAction::Off),
        Action::Cycle => BmcRequest::Power(PowerAction::Cycle),
        Action::Reset => BmcRequest::Power(PowerAction::Reset),
        Action::Soft => BmcRequest::Power(PowerAction::Soft),
        Action::Status => BmcRequest::Power(PowerAction::Status),
        Action::PxeOnce => BmcRequest::BootOncePxe,
    };
    let who = access.who();
    let results = blocking(move || {
        let options = api.site.bmc_defaults();
        let results = api.site.bmc_run(&request.nodes, asked, &options, &|_| {})?;
        if asked != BmcRequest::Power(PowerAction::Status) {
            for result in &results {
                let outcome = match &result.outcome {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("failed: {}", wulf_site::error_chain(e)),
                };
                api.site.audit(
                    &who,
                    &format!("power.{}", asked.name()),
                    &result.node,
                    &outcome,
                );
            }
        }
        Ok(results)
    })
    .await?;
    Ok(Json(PowerResults {
        results: results
            .into_iter()
            .map(|r| match r.outcome {
                Ok(reply) => PowerResult {
                    node: r.node,
                    ok: true,
                    state: reply.state.map(|s| {
                        serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    }),
                    message: reply.message,
                },
                Err(error) => PowerResult {
                    node: r.node,
                    ok: false,
                    state: None,
                    message: wulf_site::error_chain(&error),
                },
            })
            .collect(),
    }))
}

/// The end of a node's console log, as `wulf serve` keeps it (`[console] log = true`).
#[utoipa::path(get, path = "/nodes/{id}/console", tag = "power",
    params(("id" = String, Path), ConsoleQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ApiError)))]
async fn console_log(
    _: Access<Power>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(query): Query<ConsoleQuery>,
) -> Result<Response, ApiError> {
    let want = query.bytes.unwrap_or(64 << 10).min(8 << 20);
    let text = blocking(move || {
        let logs = api.site.console_logs(&id)?;
        let Some(path) = logs.last() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no console log for node `{id}` yet (`[console] log = true` in wulf.toml makes wulf serve keep them)"
                ),
            ));
        };
        let mut file = std::fs::File::open(path).map_err(ApiError::internal)?;
        let length = file.metadata().map_err(ApiError::internal)?.len();
        file.seek(std::io::SeekFrom::Start(length.saturating_sub(want)))
            .map_err(ApiError::internal)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ApiError::internal)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
