//! `wulf serve`: the provisioning host (HTTP, TFTP) on the site configuration, or on built-in
//! defaults when there is none.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use wulf_boot::{BootConfig, BootServer};

use crate::context::Context;

#[derive(Debug, Args)]
pub struct ServeArgs {
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

pub fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let server = &ctx.config.server;
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
        state: ctx.state.clone(),
        secure: server.secure,
        backends: ctx.backends()?,
        overlay_builder: Some({
            let ctx = ctx.clone();
            std::sync::Arc::new(move |id: Option<&str>| {
                // Builds follow edits of wulf.toml (plugin settings, grants, limits).
                let ctx = ctx.reloaded().map_err(|e| crate::describe(&e))?;
                crate::command::overlay::build_for_server(&ctx, id).map_err(|e| crate::describe(&e))
            })
        }),
        overlay_inputs: vec![
            ctx.config_file(),
            ctx.state.root().join("overlays"),
            ctx.config.plugins.dir.clone(),
            wulf_overlay::HostKeys::dir_in(ctx.state.root()),
            ctx.state.root().join("images"),
        ],
    };
    std::fs::create_dir_all(ctx.state.root())?;
    // Before serving: generated later, they would change a build input under the first boots.
    ctx.host_keys()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let boot = BootServer::bind(config.clone()).await?;
        // Startup lines for people and scripts; a closed stdout must not stop the server.
        let mut out = std::io::stdout();
        let http = boot.http_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(out, "wulf: state in {}", ctx.state.root().display());
        let _ = writeln!(out, "wulf: HTTP on http://{http} (iPXE scripts at /ipxe/<mac>, status at /status)");
        let _ = match boot.tftp_addr() {
            Some(tftp) => writeln!(out, "wulf: TFTP on {tftp}, serving {}", config.tftp_root.display()),
            None => writeln!(out, "wulf: TFTP off"),
        };
        if !config.tftp_root.is_dir() && config.tftp_addr.is_some() {
            tracing::warn!(dir = %config.tftp_root.display(), "the TFTP root does not exist (install Debian's `ipxe` package or set server.tftp-root)");
        }
        let plugins = ctx.clone();
        tokio::task::spawn_blocking(move || check_plugins(&plugins));
        boot.serve().await?;
        Ok(())
    })
}

/// Loads every enabled plugin once, so a broken one is reported at start and the compile
/// cache is warm before the first node asks. A failure is logged; the host keeps serving.
fn check_plugins(ctx: &Context) {
    let registry = ctx.registry();
    let runtime = match ctx.runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the plugin runtime cannot start");
            return;
        }
    };
    let Ok(listings) = registry.list() else {
        return;
    };
    for listing in listings.iter().filter(|l| l.enabled) {
        let loaded = registry
            .package_of(listing)
            .map_err(|e| e.to_string())
            .and_then(|package| {
                ctx.load_plugin(&runtime, &package)
                    .map_err(|e| format!("{e:#}"))
            });
        match loaded {
            Ok(plugin) => {
                tracing::info!(plugin = %listing.name, origin = ?plugin.origin, ms = plugin.load_time.as_millis() as u64, "plugin loaded")
            }
            Err(error) => tracing::error!(plugin = %listing.name, %error, "plugin does not load"),
        }
    }
}
