//! Nodes and profiles: list, show (stored and merged, with an `ETag`), create, change with a
//! `Patch` (`If-Match` for safe concurrent edits), delete. The same site methods and field
//! names as `wulf node|profile add|set|delete`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_site::{Kind, Patch, Selection};

use crate::Api;
use crate::auth::{Access, Read, Write};
use crate::error::{ApiError, Body};

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(
            list_nodes,
            create_nodes,
            update_nodes,
            delete_nodes
        ))
        .routes(routes!(show_node, update_node, delete_node))
        .routes(routes!(
            list_profiles,
            create_profiles,
            update_profiles,
            delete_profiles
        ))
        .routes(routes!(show_profile, update_profile, delete_profile))
}

/// A node as lists show it (merged with its profiles).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeSummary {
    id: String,
    profiles: Vec<String>,
    image: Option<String>,
    /// The primary network device's.
    hwaddr: Option<String>,
    ipaddr: Option<String>,
    comment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeList {
    nodes: Vec<NodeSummary>,
    /// With `records=true`: each node merged with its profiles, secrets masked, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    records: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileList {
    /// Profiles as stored, secrets masked.
    #[schema(value_type = Object)]
    profiles: serde_json::Map<String, serde_json::Value>,
}

/// Which records a list or a bulk delete is about.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub(crate) struct Names {
    /// Names or hostlists, separated by spaces (`n[001-004] n010`); all when absent (lists).
    names: Option<String>,
    /// Lists: the whole merged records too.
    records: bool,
}

impl Names {
    fn patterns(&self) -> Vec<String> {
        self.names
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// A change to many records at once, all or none: named ones, or every one with `all`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkUpdate {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    all: bool,
    fields: Patch,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BulkUpdated {
    updated: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    deleted: Vec<String>,
}

/// One record: as stored and as it applies (nodes merged with their profiles).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordBody {
    id: String,
    /// The stored record's version, for `If-Match`.
    etag: String,
    /// As stored, secrets masked; field names as in `nodes.toml`.
    #[schema(value_type = Object)]
    stored: serde_json::Value,
    /// What applies: profiles merged in (a profile: as stored).
    #[schema(value_type = Object)]
    merged: serde_json::Value,
    /// Profiles applied, in order.
    profiles_applied: Vec<String>,
    /// Profiles named but not defined.
    profiles_missing: Vec<String>,
}

/// New records: names or hostlists, and their fields (addresses count up across them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRecords {
    names: Vec<String>,
    #[serde(default)]
    fields: Patch,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    created: Vec<String>,
}

/// A changed record's new version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Updated {
    id: String,
    etag: String,
}

fn summary(node: &wulf_core::Node) -> NodeSummary {
    let primary = node
        .primary_network()
        .and_then(|name| node.network_devices.get(name));
    NodeSummary {
        id: node.id.clone(),
        profiles: node.profiles.clone(),
        image: node.image.clone(),
        hwaddr: primary.and_then(|d| d.hwaddr).map(|h| h.to_string()),
        ipaddr: primary.and_then(|d| d.ipaddr).map(|a| a.to_string()),
        comment: node.comment.clone(),
    }
}

fn to_json(node: &wulf_core::Node) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(node).map_err(ApiError::internal)
}

/// Runs blocking site work (file reads, plugin calls) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map(|v| {
                    v.trim()
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .to_owned()
                })
                .map_err(|_| {
                    ApiError::field(StatusCode::BAD_REQUEST, "If-Match", "not a valid ETag")
                })
        })
        .transpose()
}

fn with_etag(etag: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn show(api: Arc<Api>, kind: Kind, id: String) -> Result<Response, ApiError> {
    let record = blocking(move || Ok(api.site.versioned_record(kind, &id)?)).await?;
    let body = RecordBody {
        id: record.view.record.id.clone(),
        etag: record.etag.clone(),
        stored: to_json(&record.stored)?,
        merged: to_json(&record.view.record)?,
        profiles_applied: record.view.applied,
        profiles_missing: record.view.missing,
    };
    Ok(with_etag(&record.etag, Json(body)))
}

async fn create(
    api: Arc<Api>,
    kind: Kind,
    who: String,
    new: NewRecords,
) -> Result<Response, ApiError> {
    if new.names.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "names",
            format!(
                "name the {}s to add (hostlists work: n[001-004])",
                kind.noun()
            ),
        ));
    }
    let action = format!("{}.create", kind.noun());
    let subject = new.names.join(",");
    let created = blocking(move || {
        let result = api.site.add_records(kind, &new.names, &new.fields);
        audit(&api, &who, &action, &subject, &result);
        Ok(result?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(Created { created })).into_response())
}

async fn update(
    api: Arc<Api>,
    kind: Kind,
    who: String,
    id: String,
    headers: HeaderMap,
    patch: Patch,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let action = format!("{}.update", kind.noun());
    let etag = blocking(move || {
        let result = api
            .site
            .update_record(kind, &id, &patch, expected.as_deref());
        audit(&api, &who, &action, &id, &result);
        Ok(Updated { etag: result?, id })
    })
    .await?;
    Ok(with_etag(&etag.etag.clone(), Json(etag)))
}

async fn delete(
    api: Arc<Api>,
    kind: Kind,
    who: String,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let action = format!("{}.delete", kind.noun());
    blocking(move || {
        let result = api.site.delete_record(kind, &id, expected.as_deref());
        audit(&api, &who, &action, &id, &result);
        Ok(result?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn update_many(
    api: Arc<Api>,
    kind: Kind,
    who: String,
    bulk: BulkUpdate,
) -> Result<Json<BulkUpdated>, ApiError> {
    let selection = match (bulk.all, bulk.names.is_empty()) {
        (true, true) => Selection::All,
        (false, false) => Selection::Patterns(bulk.names),
        _ => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "names",
                format!(
                    "name the {}s (hostlists work), or give \"all\": true",
                    kind.noun()
                ),
            ));
        }
    };
    let action = format!("{}.update", kind.noun());
    let subject = match &selection {
        Selection::All => "all".to_owned(),
        Selection::Patterns(p) => p.join(","),
    };
    let updated = blocking(move || {
        let result = api.site.set_records(kind, &selection, &bulk.fields);
        audit(&api, &who, &action, &subject, &result);
        Ok(result?)
    })
    .await?;
    Ok(Json(BulkUpdated { updated }))
}

async fn delete_many(
    api: Arc<Api>,
    kind: Kind,
    who: String,
    names: Names,
) -> Result<Json<Deleted>, ApiError> {
    let patterns = names.patterns();
    if patterns.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "names",
            format!("name the {}s to delete (hostlists work)", kind.noun()),
        ));
    }
    let action = format!("{}.delete", kind.noun());
    let subject = patterns.join(",");
    let deleted = blocking(move || {
        let result = api.site.delete_records(kind, &patterns);
        audit(&api, &who, &action, &subject, &result);
        Ok(result?)
    })
    .await?;
    Ok(Json(Deleted { deleted }))
}

/// Audits a change, done or refused.
pub(crate) fn audit<T>(
    api: &Api,
    who: &str,
    action: &str,
    subject: &str,
    result: &Result<T, wulf_site::SiteError>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("refused: {}", wulf_site::error_chain(error)),
    };
    api.site.audit(who, action, subject, &outcome);
}

/// Nodes (all, or those named), merged with their profiles.
#[utoipa::path(get, path = "/nodes", tag = "nodes", params(Names),
    responses((status = 200, body = NodeList), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_nodes(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Query(names): Query<Names>,
) -> Result<Json<NodeList>, ApiError> {
    let patterns = names.patterns();
    let nodes = blocking(move || Ok(api.site.list_records(Kind::Node, &patterns)?)).await?;
    let records = match names.records {
        true => Some(
            nodes
                .iter()
                .map(|n| Ok((n.id.clone(), to_json(&n.clone().redacted())?)))
                .collect::<Result<_, ApiError>>()?,
        ),
        false => None,
    };
    Ok(Json(NodeList {
        nodes: nodes.iter().map(summary).collect(),
        records,
    }))
}

/// Changes the fields of the nodes named (or all), all or none.
#[utoipa::path(patch, path = "/nodes", tag = "nodes", request_body = BulkUpdate,
    responses((status = 200, body = BulkUpdated), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn update_nodes(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(bulk): Body<BulkUpdate>,
) -> Result<Json<BulkUpdated>, ApiError> {
    update_many(api, Kind::Node, access.who(), bulk).await
}

/// Deletes the nodes named, all or none.
#[utoipa::path(delete, path = "/nodes", tag = "nodes", params(Names),
    responses((status = 200, body = Deleted), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn delete_nodes(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Query(names): Query<Names>,
) -> Result<Json<Deleted>, ApiError> {
    delete_many(api, Kind::Node, access.who(), names).await
}

/// Adds nodes; a new node with no profiles given gets `default`.
#[utoipa::path(post, path = "/nodes", tag = "nodes", request_body = NewRecords,
    responses((status = 201, body = Created), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn create_nodes(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(new): Body<NewRecords>,
) -> Result<Response, ApiError> {
    create(api, Kind::Node, access.who(), new).await
}

/// One node: stored, merged, and its version in `ETag`.
#[utoipa::path(get, path = "/nodes/{id}", tag = "nodes", params(("id" = String, Path)),
    responses((status = 200, body = RecordBody), (status = 404, body = ApiError)))]
async fn show_node(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    show(api, Kind::Node, id).await
}

/// Changes a node's fields; with `If-Match`, only if nobody changed it since.
#[utoipa::path(patch, path = "/nodes/{id}", tag = "nodes", request_body = Patch,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag last read")),
    responses((status = 200, body = Updated), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn update_node(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(patch): Body<Patch>,
) -> Result<Response, ApiError> {
    update(api, Kind::Node, access.who(), id, headers, patch).await
}

/// Deletes a node; with `If-Match`, only if nobody changed it since.
#[utoipa::path(delete, path = "/nodes/{id}", tag = "nodes",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag last read")),
    responses((status = 204), (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn delete_node(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete(api, Kind::Node, access.who(), id, headers).await
}

/// Profiles (all, or those named) as stored.
#[utoipa::path(get, path = "/profiles", tag = "profiles", params(Names),
    responses((status = 200, body = ProfileList), (status = 401, body = ApiError)))]
async fn list_profiles(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Query(names): Query<Names>,
) -> Result<Json<ProfileList>, ApiError> {
    let patterns = names.patterns();
    let profiles = blocking(move || Ok(api.site.list_records(Kind::Profile, &patterns)?)).await?;
    let mut map = serde_json::Map::new();
    for profile in profiles {
        map.insert(profile.id.clone(), to_json(&profile.redacted())?);
    }
    Ok(Json(ProfileList { profiles: map }))
}

/// Adds profiles.
#[utoipa::path(post, path = "/profiles", tag = "profiles", request_body = NewRecords,
    responses((status = 201, body = Created), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn create_profiles(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(new): Body<NewRecords>,
) -> Result<Response, ApiError> {
    create(api, Kind::Profile, access.who(), new).await
}

/// Changes the fields of the profiles named (or all), all or none.
#[utoipa::path(patch, path = "/profiles", tag = "profiles", request_body = BulkUpdate,
    responses((status = 200, body = BulkUpdated), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn update_profiles(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(bulk): Body<BulkUpdate>,
) -> Result<Json<BulkUpdated>, ApiError> {
    update_many(api, Kind::Profile, access.who(), bulk).await
}

/// Deletes the profiles named, all or none; a profile still in use is refused.
#[utoipa::path(delete, path = "/profiles", tag = "profiles", params(Names),
    responses((status = 200, body = Deleted), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn delete_profiles(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Query(names): Query<Names>,
) -> Result<Json<Deleted>, ApiError> {
    delete_many(api, Kind::Profile, access.who(), names).await
}

/// One profile and its version in `ETag`.
#[utoipa::path(get, path = "/profiles/{id}", tag = "profiles", params(("id" = String, Path)),
    responses((status = 200, body = RecordBody), (status = 404, body = ApiError)))]
async fn show_profile(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    show(api, Kind::Profile, id).await
}

/// Changes a profile's fields; with `If-Match`, only if nobody changed it since.
#[utoipa::path(patch, path = "/profiles/{id}", tag = "profiles", request_body = Patch,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag last read")),
    responses((status = 200, body = Updated), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn update_profile(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(patch): Body<Patch>,
) -> Result<Response, ApiError> {
    update(api, Kind::Profile, access.who(), id, headers, patch).await
}

/// Deletes a profile no record outside it uses.
#[utoipa::path(delete, path = "/profiles/{id}", tag = "profiles",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag last read")),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 412, body = ApiError)))]
async fn delete_profile(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete(api, Kind::Profile, access.who(), id, headers).await
}
