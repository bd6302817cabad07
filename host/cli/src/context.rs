//! What every command needs: the site (state directory, configuration, plugins), logging.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use wulf_site::{Site, SiteOptions};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `plugin_logs`: show everything plugins log and print (`wulf plugin test`), whatever the
/// verbosity.
pub(crate) fn init_tracing(verbose: u8, format: LogFormat, plugin_logs: bool) {
    // -vv is wulf's own debug output (with each step's time); the libraries' (wasmtime,
    // cranelift: thousands of lines per plugin compiled) only at -vvv or by RUST_LOG.
    let default = match verbose {
        0 => "warn".to_owned(),
        1 => "info".to_owned(),
        2 => {
            let ours = [
                "wulf",
                "wulf_core",
                "wulf_site",
                "wulf_overlay",
                "wulf_plugin",
                "wulf_image",
                "wulf_boot",
                "wulf_api",
                "wulf_bmc",
            ];
            ours.iter().fold("info".to_owned(), |filter, krate| {
                format!("{filter},{krate}=debug")
            })
        }
        _ => "trace".to_owned(),
    };
    let default = if plugin_logs {
        format!("{default},plugin=trace")
    } else {
        default
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: a log file or the journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // How long each step took (`overlay build -vv`), as the steps' spans close.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What every command gets: the site, opened once per process.
#[derive(Clone)]
pub(crate) struct Context {
    pub site: Arc<Site>,
    /// `--server HOST:PORT`: the boot server `node status` asks.
    pub boot_server: Option<String>,
}

impl Context {
    pub(crate) fn new(state_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<Self> {
        let state = state_dir.map(Ok).unwrap_or_else(default_state_dir)?;
        let site = Site::open(SiteOptions {
            state,
            config,
            embedded: crate::embedded::EMBEDDED,
            agent: crate::embedded::AGENT,
            stage1: crate::embedded::STAGE1,
        })?;
        Ok(Context {
            site: Arc::new(site),
            boot_server: None,
        })
    }

    pub(crate) fn with_boot_server(self, boot_server: Option<String>) -> Context {
        Context {
            boot_server,
            ..self
        }
    }
}

/// `/var/lib/wulf` for root; otherwise the XDG data directory.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from(wulf_site::SYSTEM_STATE_DIR));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .context("cannot choose a state directory: set --state-dir, WULF_STATE_DIR or HOME")?;
    Ok(data.join("wulf"))
}
