//! Bearer tokens: a handler names the scope it needs by its extractor (`Access<Write>`), so a
//! route cannot forget to check. Unknown, expired and revoked tokens all get the same 401; a
//! live token without the scope gets 403 naming the scope.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use wulf_site::{Scope, TokenInfo};

use crate::Api;
use crate::error::ApiError;

/// A scope a route needs.
pub(crate) trait Needs {
    const SCOPE: Scope;
}

pub(crate) struct Read;
pub(crate) struct Write;
pub(crate) struct Power;
pub(crate) struct Admin;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Needs for Write {
    const SCOPE: Scope = Scope::Write;
}
impl Needs for Power {
    const SCOPE: Scope = Scope::Power;
}
impl Needs for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The caller's token, checked for scope `S`.
pub(crate) struct Access<S> {
    pub(crate) token: TokenInfo,
    /// As presented, to check again on a long-lived stream; never logged.
    pub(crate) presented: String,
    scope: PhantomData<S>,
}

impl<S> Access<S> {
    /// Who audit lines name.
    pub(crate) fn who(&self) -> String {
        self.token.who()
    }
}

impl<S: Needs + Send + Sync> FromRequestParts<Arc<Api>> for Access<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "no token: send `Authorization: Bearer <token>` (make one with `wulf token create`)",
                )
            })?;
        let token = api.site.authenticate(presented).map_err(|refused| {
            tracing::info!(reason = %refused, path = %parts.uri.path(), "API token refused");
            ApiError::unauthorized(format!("the token was refused: {refused}"))
        })?;
        if !token.allows(S::SCOPE) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} lacks the `{}` scope this needs (it has {})",
                    token.id,
                    S::SCOPE,
                    wulf_site::scope_list(&token.scopes)
                ),
            ));
        }
        Ok(Access {
            token,
            presented: presented.to_owned(),
            scope: PhantomData,
        })
    }
}

/// Declares the bearer scheme every path uses.
pub(crate) struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
    }
}
