//! What every command needs: the state directory, the site configuration, logging.

use std::path::PathBuf;

use anyhow::Context as _;
use std::sync::Arc;

use wulf_core::{Config, ImageTransform, Inventory, InventoryBackend, InventoryStore, StateDir};
use wulf_overlay::HostKeys;
use wulf_plugin::{
    LoadedPlugin, PluginPackage, Registry, Runtime, WasmImageTransform, WasmInventoryBackend,
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Clone)]
pub struct Context {
    pub state: StateDir,
    pub config: Config,
    /// `--config`, if given: where [`Context::reloaded`] reads the site configuration again.
    config_arg: Option<PathBuf>,
}

impl Context {
    pub fn new(state_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<Self> {
        let state = StateDir::new(state_dir.map(Ok).unwrap_or_else(default_state_dir)?);
        let config_arg = config;
        let config = Self::load_config(&state, config_arg.as_deref())?;
        Ok(Context {
            state,
            config,
            config_arg,
        })
    }

    fn load_config(state: &StateDir, path: Option<&std::path::Path>) -> anyhow::Result<Config> {
        Ok(match path {
            Some(path) => Config::load(path, state, true)?,
            None => Config::load(&state.config_file(), state, false)?,
        })
    }

    /// The site configuration file: `--config`, else `<state>/wulf.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_arg
            .clone()
            .unwrap_or_else(|| self.state.config_file())
    }

    /// This context with the site configuration read again (a long-running server's view of
    /// an edited `wulf.toml`).
    pub fn reloaded(&self) -> anyhow::Result<Context> {
        Ok(Context {
            state: self.state.clone(),
            config: Self::load_config(&self.state, self.config_arg.as_deref())?,
            config_arg: self.config_arg.clone(),
        })
    }

    pub fn registry(&self) -> Registry {
        Registry::new(&self.config.plugins.dir, crate::embedded::EMBEDDED)
    }

    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        Ok(Runtime::new(self.config.plugins.cache_dir.join("plugins"))?)
    }

    /// Loads `package` with its site settings, and with the cluster's SSH host keys when its
    /// manifest asks for them (generated the first time they are needed).
    pub fn load_plugin(
        &self,
        runtime: &Runtime,
        package: &PluginPackage,
    ) -> anyhow::Result<LoadedPlugin> {
        if !package.manifest.ssh_host_keys {
            return Ok(runtime.load(package, &self.config.plugins)?);
        }
        let mut plugins = self.config.plugins.clone();
        plugins.host_keys = Some(Arc::new(self.host_keys()?.to_json()));
        Ok(runtime.load(package, &plugins)?)
    }

    /// The cluster's SSH host keys, generating the missing ones.
    pub fn host_keys(&self) -> anyhow::Result<HostKeys> {
        let dir = HostKeys::dir_in(self.state.root());
        let comment = format!("root@{}", self.server().hostname);
        let (keys, generated) = HostKeys::ensure(&dir, &comment)?;
        if !generated.is_empty() {
            tracing::warn!(
                "generated the cluster's SSH host keys ({}) in {}",
                generated.join(", "),
                dir.display()
            );
        }
        Ok(keys)
    }

    /// The inventory backend plugins of the site configuration, in order, loaded.
    pub fn backends(&self) -> anyhow::Result<Vec<Arc<dyn InventoryBackend>>> {
        if self.config.plugins.backends.is_empty() {
            return Ok(Vec::new());
        }
        let registry = self.registry();
        let runtime = self.runtime()?;
        self.config
            .plugins
            .backends
            .iter()
            .map(|name| {
                let package = registry.package(name)?;
                let plugin = Arc::new(self.load_plugin(&runtime, &package)?);
                let backend = WasmInventoryBackend::new(plugin).with_context(|| {
                    format!("plugin `{name}` in plugins.backends is not an inventory backend")
                })?;
                Ok(Arc::new(backend) as Arc<dyn InventoryBackend>)
            })
            .collect()
    }

    /// This host as nodes see it: its name, and the address it serves HTTP on when one is set.
    pub fn server(&self) -> wulf_core::Server {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let addr = self.config.server.http_addr;
        wulf_core::Server {
            hostname,
            ipaddr: (!addr.ip().is_unspecified()).then(|| addr.ip().to_string()),
            port: addr.port(),
            ..wulf_core::Server::default()
        }
    }

    /// Image-transform plugins, loaded by name, in order.
    pub fn transforms(&self, names: &[String]) -> anyhow::Result<Vec<Arc<dyn ImageTransform>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let registry = self.registry();
        let runtime = self.runtime()?;
        names
            .iter()
            .map(|name| {
                let package = registry.package(name)?;
                let plugin = Arc::new(self.load_plugin(&runtime, &package)?);
                let transform = WasmImageTransform::new(plugin)
                    .with_context(|| format!("plugin `{name}` is not an image transform"))?;
                Ok(Arc::new(transform) as Arc<dyn ImageTransform>)
            })
            .collect()
    }

    /// The built-in inventory with every backend's nodes and profiles added.
    pub fn inventory(&self) -> anyhow::Result<Inventory> {
        let mut inventory = InventoryStore::new(&self.state).load()?;
        for backend in self.backends()? {
            for name in inventory.absorb(backend.as_ref())? {
                tracing::warn!(backend = backend.name(), record = %name, "the built-in inventory already defines it; the backend's is ignored");
            }
        }
        Ok(inventory)
    }
}

/// `/var/lib/wulf` for root; otherwise the XDG data directory.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/wulf"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .context("cannot choose a state directory: set --state-dir, WULF_STATE_DIR or HOME")?;
    Ok(data.join("wulf"))
}
