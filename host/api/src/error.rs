//! Every refusal as one JSON shape, `{"error": "...", "field": "..."}`, with the status that
//! says whose move it is; site errors keep their messages (they name their subject already).

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wulf_site::SiteError;

/// An error as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// What went wrong and what to do, in one sentence.
    pub error: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            field: None,
        }
    }

    pub(crate) fn field(
        status: StatusCode,
        field: impl Into<String>,
        error: impl Into<String>,
    ) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(status, error)
        }
    }

    pub(crate) fn unauthorized(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error)
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"wulf\""),
            );
        }
        response
    }
}

impl From<SiteError> for ApiError {
    fn from(error: SiteError) -> ApiError {
        use wulf_core::StoreError;
        let message = match &error {
            // The site phrases these as the CLI's flags; the API's fields have no dashes.
            SiteError::BadValue {
                field,
                value,
                reason,
            } => format!("{field} {value:?}: {reason}"),
            _ => wulf_site::error_chain(&error),
        };
        let (status, field) = match &error {
            SiteError::RecordNotFound { .. } | SiteError::OverlayNotFound { .. } => {
                (StatusCode::NOT_FOUND, None)
            }
            SiteError::Image(wulf_image::ImageError::NotFound(_)) => (StatusCode::NOT_FOUND, None),
            SiteError::Image(wulf_image::ImageError::Exists(_)) => (StatusCode::CONFLICT, None),
            SiteError::RecordExists { .. }
            | SiteError::ImportConflict { .. }
            | SiteError::ProfileInUse { .. }
            | SiteError::ImageInUse { .. }
            | SiteError::OverlayExists { .. }
            | SiteError::OverlayInUse { .. } => (StatusCode::CONFLICT, None),
            SiteError::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, None),
            SiteError::BadValue { field, .. } => (StatusCode::BAD_REQUEST, Some(field.clone())),
            SiteError::FieldNotSet { field, .. } => (StatusCode::BAD_REQUEST, Some(field.clone())),
            SiteError::Store(StoreError::Refused(refused)) => {
                (StatusCode::BAD_REQUEST, Some(refused.field.clone()))
            }
            SiteError::NothingSelected { .. } | SiteError::Hostlist(_) => {
                (StatusCode::BAD_REQUEST, None)
            }
            SiteError::Bmc { .. } => (StatusCode::BAD_GATEWAY, None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %message, "API request failed");
        }
        ApiError {
            status: status.as_u16(),
            error: message,
            field,
        }
    }
}

/// A JSON request body, refused with the field at fault named.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let reader = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(reader)
            .map(Body)
            .map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                let message = inner.to_string();
                // An unknown field is named in serde's message, not in the path.
                let field = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(|name| match path.as_str() {
                        "." => name.to_owned(),
                        at if at == name || at.ends_with(&format!(".{name}")) => at.to_owned(),
                        parent => format!("{parent}.{name}"),
                    })
                    .or_else(|| (path != ".").then_some(path));
                ApiError {
                    status: StatusCode::BAD_REQUEST.as_u16(),
                    error: format!("the request body: {message}"),
                    field,
                }
            })
    }
}

/// Any path the API does not have.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see /api/v1/openapi.json)",
            uri.path()
        ),
    )
}
