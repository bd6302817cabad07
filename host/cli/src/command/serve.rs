//! `wulf serve`: the provisioning host (HTTP, TFTP) on the site configuration, or on built-in
//! defaults when there is none.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use clap::Args;
use wulf_api::{ApiOptions, ApiServer};
use wulf_boot::{BootConfig, BootServer, conn};
use wulf_core::Provisioner;
use wulf_site::Site;

use crate::context::Context;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// HTTP listen address [default: server.http-addr, or 0.0.0.0:9873]
    #[arg(long, value_name = "IP:PORT")]
    http_addr: Option<SocketAddr>,
    /// TFTP listen address [default: server.tftp-addr, or port 69 as root, 6969 otherwise]
    #[arg(long, value_name = "IP:PORT")]
    tftp_addr: Option<SocketAddr>,
    /// Directory of iPXE binaries served over TFTP [default: server.tftp-root, or /usr/lib/ipxe]
    #[arg(long, value_name = "DIR")]
    tftp_root: Option<PathBuf>,
    /// Do not serve TFTP
    #[arg(long)]
    no_tftp: bool,
    /// API and dashboard listen address [default: api.addr, or 127.0.0.1:9874]
    #[arg(long, value_name = "IP:PORT")]
    api_addr: Option<SocketAddr>,
    /// Do not serve the API and dashboard
    #[arg(long)]
    no_api: bool,
}

pub(crate) fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let site = &ctx.site;
    let server = site.config().server.clone();
    let open_files = raise_open_files();
    let config = BootConfig {
        http_addr: args.http_addr.unwrap_or(server.http_addr),
        tftp_addr: site
            .tftp_addr()
            .filter(|_| !args.no_tftp)
            .map(|default| args.tftp_addr.unwrap_or(default)),
        tftp_root: args.tftp_root.unwrap_or_else(|| server.tftp_root.clone()),
        state: site.state().clone(),
        secure: server.secure,
        provisioner: Arc::clone(site) as Arc<dyn Provisioner>,
        build_on_demand: true,
        connections: conn::Limits {
            total: server.connections_for(open_files),
            per_peer: server.max_connections_per_peer,
        },
        max_image_streams: server.max_image_streams,
        status: Arc::default(),
        dhcp: dhcp_settings(site),
    };
    let api_on = site.config().api.enabled && !args.no_api;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // From here on SIGHUP is a reload, never the default "terminate": `systemctl reload` while
    // the first start makes the cluster's keys must not kill the server. (The handler stays
    // installed for the process's life; the server's own listener picks the signals up.)
    {
        let _guard = runtime.enter();
        let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    }
    let root = site.state().root();
    std::fs::create_dir_all(root)?;
    // Before serving: generated later, they would change a build input under the first boots.
    site.host_keys()?;
    runtime.block_on(async {
        let boot = BootServer::bind(config.clone()).await?;
        let api = match api_on {
            true => Some(
                ApiServer::bind(ApiOptions {
                    site: Arc::clone(site),
                    monitor: boot.monitor(),
                    addr: args.api_addr,
                })
                .await?,
            ),
            false => None,
        };
        let api_url = api.as_ref().and_then(ApiServer::url);
        // Every command builds overlays naming this address while the server runs, and
        // `wulf dashboard` links to this API.
        let _serving = match boot.http_addr() {
            Some(addr) => Some(site.record_serving(addr, api_url.clone())?),
            None => None,
        };
        // Startup lines for people and scripts; a closed stdout must not stop the server.
        let mut out = std::io::stdout();
        let http = boot.http_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(out, "wulf: state in {}", root.display());
        let _ = writeln!(
            out,
            "wulf: HTTP on http://{http} (iPXE scripts at /ipxe/<mac>, status at /status)"
        );
        let _ = match &api_url {
            Some(url) => writeln!(
                out,
                "wulf: API on {url}/api/v1 (OpenAPI at /api/v1/openapi.json; dashboard at /, `wulf dashboard` prints a link)"
            ),
            None => writeln!(out, "wulf: API off"),
        };
        if let Some(dhcp) = &config.dhcp {
            let _ = writeln!(
                out,
                "wulf: DHCP ({}) on {}",
                match dhcp.mode {
                    wulf_boot::dhcp::Mode::Proxy => "proxy: boot options only",
                    wulf_boot::dhcp::Mode::Full => "full: addresses and boot options",
                },
                dhcp.interfaces.join(", ")
            );
        }
        let _ = match boot.tftp_addr() {
            Some(tftp) => writeln!(
                out,
                "wulf: TFTP on {tftp}, serving {}",
                config.tftp_root.display()
            ),
            None => writeln!(out, "wulf: TFTP off"),
        };
        let tftp_root = config.tftp_addr.map(|_| config.tftp_root.as_path());
        for step in site.first_steps(boot.nodes(), tftp_root) {
            let _ = writeln!(out, "wulf: next: {step}");
        }
        let plugins = Arc::clone(site);
        tokio::task::spawn_blocking(move || check_plugins(&plugins));
        if site.config().console.log {
            let _ = writeln!(
                out,
                "wulf: console logs in {}",
                site.console_dir().display()
            );
            let consoles = Arc::clone(site);
            std::thread::Builder::new()
                .name("console logs".into())
                .spawn(move || {
                    consoles.keep_console_logs(&std::sync::atomic::AtomicBool::new(false))
                })?;
        }
        notify_ready(&format!("serving HTTP on {http}"));
        match api {
            Some(api) => tokio::select! {
                served = boot.serve() => served?,
                served = api.serve() => served?,
            },
            None => boot.serve().await?,
        }
        Ok(())
    })
}

/// The built-in DHCP service as `[dhcp]` sets it; `None` when off.
fn dhcp_settings(site: &Site) -> Option<wulf_boot::dhcp::DhcpSettings> {
    use wulf_core::config::DhcpMode;
    let dhcp = site.config().dhcp.clone();
    let mode = match dhcp.mode {
        DhcpMode::Off => return None,
        DhcpMode::Proxy => wulf_boot::dhcp::Mode::Proxy,
        DhcpMode::Full => wulf_boot::dhcp::Mode::Full,
    };
    Some(wulf_boot::dhcp::DhcpSettings {
        mode,
        interfaces: dhcp.interfaces,
        server_ip: dhcp.server_ip,
        range: dhcp.range,
        lease: dhcp.lease,
        leases_file: site.state().root().join("dhcp").join("leases.json"),
    })
}

/// A boot storm and thousands of parked agents are a socket each: the soft limit on open files
/// (often 1,024) goes up to the hard one, as servers do. The limit in force after.
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(maximum) = limit.maximum
        && limit.current.is_some_and(|current| current < maximum)
    {
        limit.current = Some(maximum);
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

/// Tells systemd (`Type=notify`) that the server is up: `READY=1` to `$NOTIFY_SOCKET`, a
/// datagram socket in the file system or (`@name`) the abstract namespace. Nothing without it.
fn notify_ready(status: &str) {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        socket.send_to_addr(format!("READY=1\nSTATUS={status}").as_bytes(), &address?)
    });
    if let Err(error) = sent {
        tracing::warn!(socket = %path, "could not tell systemd the server is ready: {error}");
    }
}

/// Loads every enabled plugin once on the process's runtime, so a broken one is reported at
/// start and the first node does not wait for a compile. A failure is logged; the host keeps
/// serving.
fn check_plugins(site: &Site) {
    let Ok(loaded) = site.load_used_plugins() else {
        return;
    };
    for (name, plugin) in loaded {
        match plugin {
            Ok(plugin) => {
                tracing::info!(plugin = %name, origin = ?plugin.loaded.origin, ms = plugin.loaded.load_time.as_millis() as u64, "plugin loaded")
            }
            Err(error) => {
                tracing::error!(plugin = %name, error = %wulf_site::error_chain(&error), "plugin does not load")
            }
        }
    }
}
