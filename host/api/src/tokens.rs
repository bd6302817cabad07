//! Tokens over the API: the `admin` scope lists, makes and revokes them (the CLI's
//! `wulf token` does the same locally).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wulf_site::{Scope, TokenInfo};

use crate::Api;
use crate::auth::{Access, Admin};
use crate::error::{ApiError, Body};
use crate::records::blocking;

pub(crate) fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenList {
    #[schema(value_type = Vec<Object>)]
    tokens: Vec<TokenInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// Who or what uses it.
    name: String,
    /// `read`, `write`, `power`, `admin`.
    scopes: Vec<String>,
    /// `12h`, `30d`; absent: never.
    expires: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    /// Shown once: only its hash is kept.
    token: String,
    #[schema(value_type = Object)]
    info: TokenInfo,
}

/// Every token (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = 403, body = ApiError)))]
async fn list_tokens(
    _: Access<Admin>,
    State(api): State<Arc<Api>>,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = blocking(move || Ok(api.site.list_tokens()?)).await?;
    Ok(Json(TokenList { tokens }))
}

/// Makes a token.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ApiError)))]
async fn create_token(
    access: Access<Admin>,
    State(api): State<Arc<Api>>,
    Body(new): Body<NewToken>,
) -> Result<Response, ApiError> {
    let scopes = new
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let lifetime = new
        .expires
        .as_deref()
        .map(|text| {
            wulf_site::parse_lifetime(text).ok_or_else(|| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "expires",
                    format!("{text:?}: expected a duration such as 12h, 30d or 90m"),
                )
            })
        })
        .transpose()?;
    let who = access.who();
    let (token, info) =
        blocking(move || Ok(api.site.create_token(&new.name, scopes, lifetime, &who)?)).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })).into_response())
}

/// Revokes a token by id; it is refused from the next request on.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ApiError)))]
async fn revoke_token(
    access: Access<Admin>,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = access.who();
    blocking(move || Ok(api.site.revoke_token(&id, &who)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
