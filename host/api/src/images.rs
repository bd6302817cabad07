//! Images: list and show; import and build run as jobs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_image::{ImageMeta, ImportOptions, RegistryOptions, Source};
use wulf_site::BuildSettings;

use crate::Api;
use crate::auth::{Access, Read, Write};
use crate::error::{ApiError, Body};
use crate::jobs::Job;
use crate::records::{audit, blocking};

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(list_images, import_image))
        .routes(routes!(show_image))
        .routes(routes!(build_image))
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
}

/// An image: its record (source, entries, kernels, build) and the records using it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImageBody {
    #[schema(value_type = Object)]
    image: serde_json::Value,
    /// Node ids, and `profile <name>` for profiles.
    users: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImageList {
    images: Vec<ImageBody>,
}

/// What to import, as `wulf image import` takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    /// `docker://host/name:tag` (files and directories are imported on the host itself).
    source: String,
    /// Default: from the source.
    name: Option<String>,
    /// Replace an image of that name (it keeps serving until the new one is built).
    #[serde(default)]
    force: bool,
    /// Plain HTTP to the registry.
    #[serde(default)]
    insecure_http: bool,
    /// `linux/amd64`.
    platform: Option<String>,
    /// Skip building the initramfs.
    #[serde(default)]
    no_build: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobList {
    jobs: Vec<Job>,
}

fn body(meta: &ImageMeta, users: Vec<String>) -> Result<ImageBody, ApiError> {
    Ok(ImageBody {
        image: serde_json::to_value(meta).map_err(ApiError::internal)?,
        users,
    })
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{} image jobs are running; wait for one to end (GET /api/v1/jobs)",
            crate::jobs::MAX_RUNNING
        ),
    )
}

/// Every image.
#[utoipa::path(get, path = "/images", tag = "images",
    responses((status = 200, body = ImageList), (status = 401, body = ApiError)))]
async fn list_images(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
) -> Result<Json<ImageList>, ApiError> {
    let images = blocking(move || Ok(api.site.list_images()?)).await?;
    Ok(Json(ImageList {
        images: images
            .into_iter()
            .map(|i| body(&i.meta, i.users))
            .collect::<Result<_, _>>()?,
    }))
}

/// One image.
#[utoipa::path(get, path = "/images/{name}", tag = "images", params(("name" = String, Path)),
    responses((status = 200, body = ImageBody), (status = 404, body = ApiError)))]
async fn show_image(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<ImageBody>, ApiError> {
    let image = blocking(move || Ok(api.site.show_image(&name)?)).await?;
    Ok(Json(body(&image.meta, image.users)?))
}

/// Imports an image as a job (and builds it, unless `no_build`); 202 with the job.
#[utoipa::path(post, path = "/images", tag = "images", request_body = ImportRequest,
    responses((status = 202, body = Job), (status = 400, body = ApiError), (status = 429, body = ApiError)))]
async fn import_image(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Body(request): Body<ImportRequest>,
) -> Result<Response, ApiError> {
    // A file or directory path would be read on this host, as root, by whoever holds a write
    // token: the API imports from registries only.
    if !request.source.starts_with("docker://") {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "source",
            "through the API images come from registries only (docker://host/name:tag); import files and directories with `wulf image import` on the wulf host",
        ));
    }
    let source = Source::parse(&request.source)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "source", e.to_string()))?;
    let platform = request
        .platform
        .as_deref()
        .map(str::parse::<wulf_image::Platform>)
        .transpose()
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "platform", e))?;
    let name = request.name.unwrap_or_else(|| source.default_name());
    let options = ImportOptions {
        force: request.force,
        platform,
        registry: RegistryOptions {
            insecure_http: request.insecure_http,
            username: None,
            password: None,
        },
    };
    let (job, tracker) = api.jobs.start("image.import", &name).ok_or_else(busy)?;
    let who = access.who();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let build = (!request.no_build).then_some(0);
        let progress = Arc::new(tracker.clone());
        let result = runtime.block_on(
            api.site
                .import_image(&source, &name, &options, build, progress),
        );
        audit(&api, &who, "image.import", &name, &result);
        tracker.finish(
            result
                .map_err(|e| wulf_site::error_chain(&e))
                .and_then(|meta| serde_json::to_value(meta).map_err(|e| e.to_string())),
        );
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// Builds an image's initramfs again, as a job; 202 with the job.
#[utoipa::path(post, path = "/images/{name}/build", tag = "images", params(("name" = String, Path)),
    responses((status = 202, body = Job), (status = 404, body = ApiError)))]
async fn build_image(
    access: Access<Write>,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    // Refuse a missing image now, not in the job.
    let check = Arc::clone(&api);
    let named = name.clone();
    blocking(move || Ok(check.site.show_image(&named)?)).await?;
    let (job, tracker) = api.jobs.start("image.build", &name).ok_or_else(busy)?;
    let who = access.who();
    tokio::task::spawn_blocking(move || {
        let result = api
            .site
            .build_image(&name, &BuildSettings::default(), 0, &tracker);
        audit(&api, &who, "image.build", &name, &result);
        tracker.finish(
            result
                .map_err(|e| wulf_site::error_chain(&e))
                .and_then(|meta| serde_json::to_value(meta).map_err(|e| e.to_string())),
        );
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The jobs of this server's life (the last 100 finished, and every running one).
#[utoipa::path(get, path = "/jobs", tag = "images",
    responses((status = 200, body = JobList)))]
async fn list_jobs(_: Access<Read>, State(api): State<Arc<Api>>) -> Json<JobList> {
    Json(JobList {
        jobs: api.jobs.list(),
    })
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "images", params(("id" = u64, Path)),
    responses((status = 200, body = Job), (status = 404, body = ApiError)))]
async fn show_job(
    _: Access<Read>,
    State(api): State<Arc<Api>>,
    Path(id): Path<u64>,
) -> Result<Json<Job>, ApiError> {
    api.jobs
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}")))
}
