//! wulf's admin-facing edge: the REST API under `/api/v1` (scoped bearer tokens, an OpenAPI
//! document generated from the handlers, `ETag`/`If-Match` on records, long work as jobs), the
//! boot event stream, and the web dashboard embedded in the binary.
//!
//! Handlers are thin: each parses its input, calls one `wulf-site` method and renders the
//! typed result; every rule lives in the site layer, shared with the CLI. This crate depends on
//! `core` and `site` (and `image` for its request types), never on the boot server: what nodes
//! fetch reaches it through `core`'s [`BootMonitor`].

mod auth;
mod dashboard;
mod error;
mod events;
mod images;
mod jobs;
mod overlays;
mod power;
mod records;
mod tls;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use wulf_core::boot_status::BootMonitor;
use wulf_site::Site;

use crate::auth::BearerScheme;

pub use error::ApiError;
pub use tls::TlsError;

/// Where the API listens and what it serves.
#[derive(Clone)]
pub struct ApiOptions {
    pub site: Arc<Site>,
    /// The boot server it reports on.
    pub monitor: Arc<dyn BootMonitor>,
    /// `None`: `[api] addr` of the configuration.
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiServeError {
    #[error(
        "cannot listen for the API on {addr} (set api.addr in wulf.toml, or serve --api-addr or --no-api)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the API's TLS certificate")]
    Tls(#[source] tls::TlsError),
    #[error("the API stopped")]
    Serve(#[source] std::io::Error),
}

/// What the handlers share.
pub(crate) struct Api {
    pub(crate) site: Arc<Site>,
    pub(crate) monitor: Arc<dyn BootMonitor>,
    pub(crate) jobs: jobs::Jobs,
    pub(crate) events: events::Events,
}

/// The OpenAPI document's frame; paths and schemas come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "wulf",
        description = "Nodes, profiles, images, overlays, power and boot status of a wulf site. \
            Every endpoint takes a bearer token (`wulf token create`) with the scope it names.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "nodes"), (name = "profiles"), (name = "images"), (name = "overlays"),
        (name = "power"), (name = "status"), (name = "tokens")
    )
)]
struct ApiDoc;

/// The API's routes and their OpenAPI document, made from the same handler list so the two
/// cannot differ.
pub(crate) fn routes() -> (Router<Arc<Api>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            OpenApiRouter::new()
                .merge(records::routes())
                .merge(images::routes())
                .merge(overlays::routes())
                .merge(power::routes())
                .merge(events::routes())
                .merge(tokens::routes()),
        )
        .split_for_parts()
}

/// The whole OpenAPI document, as `/api/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// A bound API listener, before serving starts.
pub struct ApiServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
}

/// Admin clients are few: connections past this wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake or a request head slower than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ApiServer {
    pub async fn bind(options: ApiOptions) -> Result<ApiServer, ApiServeError> {
        let config = options.site.config().api.clone();
        let addr = options.addr.unwrap_or(config.addr);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiServeError::Bind { addr, source })?;
        let tls = if config.tls_on(addr) {
            let site = Arc::clone(&options.site);
            let made = tokio::task::spawn_blocking(move || tls::acceptor(&site, addr))
                .await
                .map_err(|e| ApiServeError::Tls(tls::TlsError::Task(e.to_string())))?;
            Some(made.map_err(ApiServeError::Tls)?)
        } else {
            None
        };
        let api = Arc::new(Api {
            events: events::Events::listen(options.monitor.board()),
            site: options.site,
            monitor: options.monitor,
            jobs: jobs::Jobs::default(),
        });
        let (routes, openapi) = routes();
        let openapi = Arc::new(openapi);
        let router = routes
            .route(
                "/api/v1/openapi.json",
                axum::routing::get(move || {
                    let doc = Arc::clone(&openapi);
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .merge(dashboard::routes())
            .fallback(error::not_found)
            .with_state(api);
        Ok(ApiServer {
            listener,
            tls,
            router,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The base URL clients use: `https://127.0.0.1:9874`.
    pub fn url(&self) -> Option<String> {
        self.local_addr()
            .map(|addr| wulf_site::api_base_url(addr, self.tls.is_some()))
    }

    /// Serves until the listener fails.
    pub async fn serve(self) -> Result<(), ApiServeError> {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|e| ApiServeError::Serve(std::io::Error::other(e)))?;
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let router = self.router.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let served = match tls {
                    Some(tls) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, router).await,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "API TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    None => connection(stream, router).await,
                };
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "API connection ended");
                }
            });
        }
    }
}

async fn connection<S>(stream: S, router: Router) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
}
