//! `wulf serve`: the provisioning host (HTTP, TFTP) on the site configuration, or on built-in
//! defaults when there is none.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use clap::Args;
use wulf_boot::{BootConfig, BootServer};
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
}

pub(crate) fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let site = &ctx.site;
    let server = site.config().server.clone();
    let default_tftp_port = if rustix::process::geteuid().is_root() {
        69
    } else {
        6969
    };
    let tftp_addr = args
        .tftp_addr
        .or(server.tftp_addr)
        .unwrap_or_else(|| SocketAddr::new(server.http_addr.ip(), default_tftp_port));
    let config = BootConfig {
        http_addr: args.http_addr.unwrap_or(server.http_addr),
        tftp_addr: (server.tftp && !args.no_tftp).then_some(tftp_addr),
        tftp_root: args.tftp_root.unwrap_or_else(|| server.tftp_root.clone()),
        state: site.state().clone(),
        secure: server.secure,
        provisioner: Arc::clone(site) as Arc<dyn Provisioner>,
        build_on_demand: true,
    };
    let root = site.state().root();
    std::fs::create_dir_all(root)?;
    // Before serving: generated later, they would change a build input under the first boots.
    site.host_keys()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let boot = BootServer::bind(config.clone()).await?;
        // Startup lines for people and scripts; a closed stdout must not stop the server.
        let mut out = std::io::stdout();
        let http = boot.http_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(out, "wulf: state in {}", root.display());
        let _ = writeln!(out, "wulf: HTTP on http://{http} (iPXE scripts at /ipxe/<mac>, status at /status)");
        let _ = match boot.tftp_addr() {
            Some(tftp) => writeln!(out, "wulf: TFTP on {tftp}, serving {}", config.tftp_root.display()),
            None => writeln!(out, "wulf: TFTP off"),
        };
        if !config.tftp_root.is_dir() && config.tftp_addr.is_some() {
            tracing::warn!(dir = %config.tftp_root.display(), "the TFTP root does not exist (install Debian's `ipxe` package or set server.tftp-root)");
        }
        let plugins = Arc::clone(site);
        tokio::task::spawn_blocking(move || check_plugins(&plugins));
        if site.config().console.log {
            let _ = writeln!(out, "wulf: console logs in {}", site.console_dir().display());
            let consoles = Arc::clone(site);
            std::thread::Builder::new()
                .name("console logs".into())
                .spawn(move || consoles.keep_console_logs(&std::sync::atomic::AtomicBool::new(false)))?;
        }
        boot.serve().await?;
        Ok(())
    })
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
