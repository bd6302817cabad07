//! wulf's network edges: HTTP provisioning (axum), the TFTP server, iPXE scripts and the
//! status board. The only crate that links axum. Everything a node gets comes from the
//! application layer through `wulf-core`'s [`Provisioner`] trait; this crate knows nothing of
//! wasm, stores or rules.

pub mod admission;
pub mod agent;
pub mod conn;
pub mod dhcp;
pub mod files;
pub mod freshness;
pub mod http;
pub mod ipxe_script;
pub mod metrics;
pub mod node_index;
pub mod tftp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use wulf_core::boot_status::{BootMonitor, NodeStatus, StatusBoard};
use wulf_core::{ProvisionError, Provisioner, StateDir};

/// Where to listen and what to serve.
#[derive(Clone)]
pub struct BootConfig {
    pub http_addr: SocketAddr,
    /// `None` turns TFTP off.
    pub tftp_addr: Option<SocketAddr>,
    pub tftp_root: PathBuf,
    /// Where per-node iPXE script templates live (`<state>/ipxe`).
    pub state: StateDir,
    /// Runtime overlays only to privileged source ports; scripts skip them.
    pub secure: bool,
    /// The application layer.
    pub provisioner: Arc<dyn Provisioner>,
    /// Build overlays when they are missing or their inputs changed.
    pub build_on_demand: bool,
    /// How many HTTP connections are kept at once.
    pub connections: conn::Limits,
    /// Image responses sent at once (`None`: no limit); see [`admission`].
    pub max_image_streams: Option<usize>,
    /// What each node fetched; shared with the admin-facing edges.
    pub status: Arc<StatusBoard>,
    /// The built-in DHCP service; `None` when off.
    pub dhcp: Option<dhcp::DhcpSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the inventory cannot be served")]
    Inventory(#[from] ProvisionError),
    #[error("{what} stopped: {error}")]
    Serve {
        what: &'static str,
        error: std::io::Error,
    },
}

/// The bound sockets, before serving starts (port 0 is resolved here).
pub struct BootServer {
    http: TcpListener,
    tftp: Option<UdpSocket>,
    app: Arc<http::AppState>,
    tftp_root: PathBuf,
    dhcp: Option<dhcp::DhcpSettings>,
}

/// Connections a boot storm may have waiting to be accepted (tokio's default is 1,024; a
/// rack powering on is more). The kernel caps it at `net.core.somaxconn`.
const HTTP_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

impl BootServer {
    pub async fn bind(config: BootConfig) -> Result<BootServer, BootError> {
        let http = listen(config.http_addr).map_err(|error| BootError::Bind {
            what: "HTTP",
            addr: config.http_addr,
            error,
        })?;
        let tftp = match config.tftp_addr {
            Some(addr) => Some(
                UdpSocket::bind(addr)
                    .await
                    .map_err(|error| BootError::Bind {
                        what: "TFTP",
                        addr,
                        error,
                    })?,
            ),
            None => None,
        };
        let local = http.local_addr().map_err(|error| BootError::Bind {
            what: "HTTP",
            addr: config.http_addr,
            error,
        })?;
        // Backend plugins run blocking calls (WASI inside them blocks too): keep them off the
        // async workers.
        let provisioner = Arc::clone(&config.provisioner);
        let index = tokio::task::spawn_blocking(move || node_index::NodeIndex::open(provisioner))
            .await
            .map_err(|error| BootError::Serve {
                what: "inventory load",
                error: std::io::Error::other(error),
            })??;
        let app = Arc::new(http::AppState {
            index,
            scripts: ipxe_script::IpxeScripts::new(config.state.root().join("ipxe"), config.secure),
            secure: config.secure,
            status: config.status,
            local,
            provisioner: Arc::clone(&config.provisioner),
            build_on_demand: config.build_on_demand,
            building: Default::default(),
            freshness: freshness::Freshness::new(Arc::clone(&config.provisioner)),
            metrics: Default::default(),
            waiting: Default::default(),
            open_files: Default::default(),
            image_streams: admission::ImageStreams::new(config.max_image_streams),
            connections: Arc::new(conn::Connections::new(config.connections)),
            dhcp: dhcp::DhcpCounters::default(),
        });
        Ok(BootServer {
            http,
            tftp,
            app,
            tftp_root: config.tftp_root,
            dhcp: config.dhcp,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.tftp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The running server as the admin-facing edges see it.
    pub fn monitor(&self) -> Arc<dyn BootMonitor> {
        Arc::new(Monitor(Arc::clone(&self.app)))
    }

    /// The nodes the server loaded at start.
    pub fn nodes(&self) -> usize {
        self.app.index.snapshot().nodes.len()
    }

    /// Serves until an error; reloads the inventory when its file changes and on SIGHUP.
    pub async fn serve(self) -> Result<(), BootError> {
        let app = self.app.clone();
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => true,
                };
                let blocking = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if forced {
                        blocking.freshness.forget();
                        blocking.provisioner.forget();
                        if let Err(e) = blocking.index.reload() {
                            tracing::error!(error = %wulf_core::provision::error_chain(&e), "inventory reload on SIGHUP failed");
                        }
                    } else {
                        blocking.index.refresh();
                    }
                })
                .await;
                crate::agent::tick(&app).await;
            }
        });
        let tftp = self.tftp.map(|socket| {
            let root = tftp::TftpRoot::new(self.tftp_root);
            tokio::spawn(tftp::serve(socket, root, tftp::TftpOptions::default()))
        });
        let dhcp = match (self.dhcp, self.http.local_addr()) {
            (Some(settings), Ok(local)) => {
                let app = Arc::clone(&self.app);
                let task = tokio::spawn(dhcp::serve(app, settings, local.port()));
                Some(task)
            }
            _ => None,
        };
        let dhcp = async move {
            match dhcp {
                Some(task) => match task.await {
                    Ok(result) => result,
                    Err(error) => Err(std::io::Error::other(error)),
                },
                None => std::future::pending().await,
            }
        };
        let connections = Arc::clone(&self.app.connections);
        let http = conn::serve(self.http, http::router(self.app), connections);
        let http = async move {
            tokio::select! {
                served = http => served.map_err(|error| BootError::Serve { what: "HTTP", error }),
                served = dhcp => served.map_err(|error| BootError::Serve { what: "DHCP", error }),
            }
        };
        match tftp {
            Some(tftp) => tokio::select! {
                result = http => result,
                result = tftp => match result {
                    Ok(Err(error)) => Err(BootError::Serve { what: "TFTP", error }),
                    _ => Err(BootError::Serve { what: "TFTP", error: std::io::Error::other("task ended") }),
                },
            },
            None => http.await,
        }
    }
}

struct Monitor(Arc<http::AppState>);

impl BootMonitor for Monitor {
    fn statuses(&self) -> std::collections::BTreeMap<String, NodeStatus> {
        http::completed_statuses(&self.0)
    }

    fn board(&self) -> &StatusBoard {
        &self.0.status
    }
}
