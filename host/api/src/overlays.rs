//! Overlays (list, build) and plugins (list, with whether each loads).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_site::Selection;

use crate::Api;
use crate::auth::{Access, Read, Write};
use crate::error::{ApiError, Body};
use crate::records::{audit, blocking};

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(list_overlays))
        .routes(routes!(build_overlays))
        .routes(routes!(list_plugins))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OverlayBody {
    name: String,
    /// `site`, or `plugin (<source>)`.
    kind: String,
    files: usize,
    templates: usize,
    /// Nodes listing it.
    nodes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OverlayList {
    overlays: Vec<OverlayBody>,
}

/// Which nodes to build; all when `nodes` is empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BuildRequest {
    /// Names or hostlists.
    nodes: Vec<String>,
    /// Build even what has not changed.
    force: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeFailure {
    node: String,
    error: String,
}

/// What a build did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BuildBody {
    built: Vec<String>,
    unchanged: usize,
    /// Shared archive segments written (files every node gets alike).
    shared_segments: usize,
    failed: Vec<NodeFailure>,
    took_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginBody {
    name: String,
    version: Option<String>,
    world: Option<String>,
    /// `embedded`, or the plugin directory.
    source: String,
    enabled: bool,
    /// Why its package is unusable.
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginList {
    plugins: Vec<PluginBody>,
}

/// Site overlays and generator plugins, with how many nodes use each.
#[utoipa::path(get, path = "/overlays", tag = "overlays",
    responses((status = 200, body = OverlayList), (status = 401, body = ApiError)))]
async fn list_overlays(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
) -> Result<Json<OverlayList>, ApiError> {
    let overlays = blocking(move || Ok(api.site.list_overlays()?)).await?;
    Ok(Json(OverlayList {
        overlays: overlays
            .into_iter()
            .map(|o| OverlayBody {
                name: o.name,
                kind: o.kind,
                files: o.files,
                templates: o.templates,
                nodes: o.nodes,
            })
            .collect(),
    }))
}

/// Builds the overlay archives of the nodes named (all when none); only what changed unless
/// `force`. Nodes that cannot be built are listed with why; the others are built.
#[utoipa::path(post, path = "/overlays/build", tag = "overlays", request_body = BuildRequest,
    responses((status = 200, body = BuildBody), (status = 400, body = ApiError)))]
async fn build_overlays(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(request): Body<BuildRequest>,
) -> Result<Json<BuildBody>, ApiError> {
    let who = access.who();
    let report = blocking(move || {
        let subject = if request.nodes.is_empty() {
            "all nodes".to_owned()
        } else {
            request.nodes.join(",")
        };
        let selection = if request.nodes.is_empty() {
            Selection::All
        } else {
            Selection::Patterns(request.nodes)
        };
        let result = api.site.build_overlays(&selection, request.force);
        audit(&api, &who, "overlay.build", &subject, &result);
        Ok(result?)
    })
    .await?;
    Ok(Json(BuildBody {
        built: report.built,
        unchanged: report.unchanged,
        shared_segments: report.shared_segments,
        failed: report
            .failed
            .into_iter()
            .map(|f| NodeFailure {
                node: f.node,
                error: f.error,
            })
            .collect(),
        took_ms: u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Installed and embedded plugins.
#[utoipa::path(get, path = "/plugins", tag = "overlays",
    responses((status = 200, body = PluginList), (status = 401, body = ApiError)))]
async fn list_plugins(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
) -> Result<Json<PluginList>, ApiError> {
    let listings = blocking(move || {
        api.site
            .registry()
            .list()
            .map_err(|e| ApiError::from(wulf_site::SiteError::from(e)))
    })
    .await?;
    Ok(Json(PluginList {
        plugins: listings
            .into_iter()
            .map(|l| {
                let manifest = l.manifest.as_ref().ok();
                PluginBody {
                    version: manifest.map(|m| m.version.to_string()),
                    world: manifest.map(|m| m.world.to_string()),
                    source: l.source.to_string(),
                    enabled: l.enabled,
                    error: l.manifest.as_ref().err().map(ToString::to_string),
                    name: l.name,
                }
            })
            .collect(),
    }))
}
