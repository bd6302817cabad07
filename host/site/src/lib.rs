//! wulf's application layer: one long-lived [`Site`] per process that owns every use-case and
//! every rule (what may be deleted, what a rename rewrites, which profile a new node gets, what
//! a node gets at each boot stage), over the state directory, the site configuration and the
//! process's one plugin runtime.
//!
//! Every front end (the CLI, the boot server, later the API, the agent's endpoints and the
//! dashboard) parses its input, calls one `Site` method and renders its typed result; none
//! repeats a rule. This crate depends on `core`, `plugin`, `image` and `overlay`; it knows
//! nothing of HTTP, flags or terminals.

mod agent;
mod ansible;
mod audit;
mod console;
mod dhcp;
mod doctor;
mod error;
mod images;
mod inventory;
mod migrate;
mod overlays;
mod patch;
mod plugins;
mod power;
mod provision;
mod records;
mod serving;
mod tokens;
mod upgrade;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use wulf_core::config::Config;
use wulf_core::{InventoryStore, Server, StateDir};
use wulf_image::ImageStore;
use wulf_overlay::{ArchiveStore, HostKeys, OverlayStore};
use wulf_plugin::{EmbeddedPlugin, Registry};

pub use agent::{AGENT_OVERLAY, AGENT_SERVERS_TAG};
pub use audit::AuditEntry;
pub use dhcp::{DhcpHost, Ipv4Net};
pub use doctor::{Check, DoctorOptions, Health};
pub use error::{Result, SiteError};
pub use images::{BuildSettings, ExecOutcome, ImageUse, KernelUse, SyncReport};
pub use migrate::{
    PlannedImage, PlannedKind, PlannedOverlay, ReportKind, ReportLine, WAREWULF_DIR, WarewulfPlan,
};
pub use overlays::{BuildReport, OverlayListing, Rendered};
pub use patch::Patch;
pub use plugins::Plugin;
pub use power::{BmcOptions, BmcRequest, ConsoleAccess, NodeResult, Stagger, parse_duration};
pub use records::{ImportReport, Kind, RecordView, Selection, expand};
pub use serving::{Serving, api_base_url};
pub use tokens::{Scope, TokenInfo, TokenRefused, parse_lifetime, scope_list};
pub use upgrade::UpgradeReport;

pub(crate) use wulf_core::provision::IPXE_FIRMWARES;

/// The system's state directory, whose configuration lives in /etc like any daemon's.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/wulf";
/// The configuration of [`SYSTEM_STATE_DIR`]; the package ships it, commented.
pub const SYSTEM_CONFIG: &str = "/etc/wulf/wulf.toml";

/// How to open a site.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    pub state: PathBuf,
    /// `--config`: required to exist when given. Else the default, absent meaning built-in
    /// defaults: [`SYSTEM_CONFIG`] for the system's state directory, `<state>/wulf.toml` for
    /// any other.
    pub config: Option<PathBuf>,
    /// The first-party plugins compiled into the binary.
    pub embedded: &'static [EmbeddedPlugin],
    /// `wulf-agent` for nodes (a static binary), which the `agent` overlay ships.
    pub agent: &'static [u8],
    /// `wulf-stage1`, the `/init` of a two-stage boot (a static binary).
    pub stage1: &'static [u8],
}

/// One site: its state directory, configuration, stores and plugins. Shared by every thread of
/// a process (`Arc<Site>`); the configuration is read again when its file changes.
pub struct Site {
    state: StateDir,
    config_arg: Option<PathBuf>,
    embedded: &'static [EmbeddedPlugin],
    agent_binary: &'static [u8],
    stage1_binary: &'static [u8],
    agent_key: agent::AgentKey,
    config: RwLock<Arc<Config>>,
    /// A stamp of the configuration file, the plugin directory and the host keys, as last
    /// seen: when it changes, the configuration is read again and plugins loaded again.
    plugin_inputs: Mutex<u64>,
    plugins: plugins::Plugins,
    store: InventoryStore,
    images: ImageStore,
    overlays: OverlayStore,
    archives: ArchiveStore,
    hostname: String,
    provision: provision::ProvisionCache,
    /// The BMC drivers, made on first use.
    bmc: std::sync::OnceLock<std::result::Result<wulf_bmc::Drivers, wulf_core::bmc::BmcError>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Site {
    pub fn open(options: SiteOptions) -> Result<Site> {
        let state = StateDir::new(options.state);
        upgrade::check_version(&state)?;
        let config = load_config(&state, options.config.as_deref())?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let site = Site {
            store: InventoryStore::new(&state),
            images: ImageStore::new(&state),
            overlays: OverlayStore::new(&state),
            archives: ArchiveStore::new(&state),
            config_arg: options.config,
            embedded: options.embedded,
            agent_binary: options.agent,
            stage1_binary: options.stage1,
            agent_key: agent::AgentKey::default(),
            config: RwLock::new(Arc::new(config)),
            plugin_inputs: Mutex::new(0),
            plugins: plugins::Plugins::default(),
            hostname,
            provision: provision::ProvisionCache::default(),
            bmc: std::sync::OnceLock::new(),
            state,
        };
        *site.plugin_inputs.lock().unwrap_or_else(|p| p.into_inner()) = site.plugin_inputs_stamp();
        Ok(site)
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The site configuration file: `--config`, else the state directory's default.
    pub fn config_file(&self) -> PathBuf {
        self.config_arg
            .clone()
            .unwrap_or_else(|| default_config_file(&self.state))
    }

    /// The plugin registry: embedded plugins and the plugin directory.
    pub fn registry(&self) -> Registry {
        Registry::new(&self.config().plugins.dir, self.embedded)
    }

    pub fn image_store(&self) -> &ImageStore {
        &self.images
    }

    pub fn overlay_store(&self) -> &OverlayStore {
        &self.overlays
    }

    /// This host as nodes see it: its name, and the address it serves HTTP on when one is set.
    pub fn server(&self) -> Server {
        let configured = self.config().server.http_addr;
        // A running server's own address, port included, when `serve --http-addr` chose
        // another; the configured IP stands in for an unspecified one.
        let addr = match self.serving_addr() {
            Some(serving) if serving.ip().is_unspecified() => {
                SocketAddr::new(configured.ip(), serving.port())
            }
            Some(serving) => serving,
            None => configured,
        };
        Server {
            hostname: self.hostname.clone(),
            ipaddr: (!addr.ip().is_unspecified()).then(|| addr.ip().to_string()),
            port: addr.port(),
            ..Server::default()
        }
    }

    /// The cluster's SSH host keys, generating the missing ones.
    pub fn host_keys(&self) -> Result<HostKeys> {
        let dir = HostKeys::dir_in(self.state.root());
        let comment = format!("root@{}", self.hostname);
        let (keys, generated) = HostKeys::ensure(&dir, &comment).map_err(SiteError::HostKeys)?;
        if !generated.is_empty() {
            // First-start work, not a problem.
            tracing::info!(
                "generated the cluster's SSH host keys ({}) in {}",
                generated.join(", "),
                dir.display()
            );
        }
        Ok(keys)
    }

    /// What a new site still has to do before a node boots, for a server to say at start:
    /// `nodes` it serves (nodes may also come from inventory backends, on demand), and the
    /// TFTP root when it serves TFTP.
    pub fn first_steps(&self, nodes: usize, tftp_root: Option<&Path>) -> Vec<String> {
        let mut steps = Vec::new();
        if nodes == 0 && self.config().plugins.backends.is_empty() {
            steps.push(
                "no nodes yet: `wulf node add n001 --hwaddr MAC --ipaddr IP`, \
                 `wulf node import FILE` or `wulf import warewulf`"
                    .to_owned(),
            );
        }
        if let Some(root) = tftp_root
            && !IPXE_FIRMWARES
                .iter()
                .any(|(_, file, needed)| *needed && root.join(file).is_file())
        {
            steps.push(format!(
                "{} has no iPXE binaries for TFTP: `apt-get install ipxe`, or set \
                 server.tftp-root in wulf.toml",
                root.display()
            ));
        }
        steps
    }

    /// Replaces the cluster's SSH host keys.
    pub fn regenerate_host_keys(&self) -> Result<HostKeys> {
        let dir = HostKeys::dir_in(self.state.root());
        let comment = format!("root@{}", self.hostname);
        HostKeys::regenerate(&dir, &comment).map_err(SiteError::HostKeys)
    }

    /// Reads the configuration again and forgets loaded plugins when the configuration file,
    /// the plugin directory or the host keys changed since the last look. A configuration that
    /// no longer parses is logged and the last good one kept. The plugin runtime stays.
    pub fn refresh(&self) {
        let stamp = self.plugin_inputs_stamp();
        let mut seen = self.plugin_inputs.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == stamp {
            return;
        }
        *seen = stamp;
        match load_config(&self.state, self.config_arg.as_deref()) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "the site configuration no longer loads; keeping the last good one");
            }
        }
        self.plugins.forget();
        tracing::info!("site configuration or plugins changed; plugins will be loaded again");
    }

    fn plugin_inputs_stamp(&self) -> u64 {
        wulf_core::stamp::tree_stamp(&[
            self.config_file(),
            self.config().plugins.dir.clone(),
            HostKeys::dir_in(self.state.root()),
        ])
    }

    /// A plugin by name, loaded on the process's runtime once.
    pub fn plugin(&self, name: &str) -> Result<Plugin> {
        // The generation first, then the configuration: `refresh` replaces the configuration
        // before it starts a new generation, so a plugin loaded here with a configuration
        // that has since been replaced is never kept.
        let generation = self.plugins.generation();
        let config = self.config();
        self.plugins
            .get(generation, &self.registry(), &config.plugins, name, &|| {
                Ok(self.host_keys()?.to_json())
            })
    }

    /// Loads a plugin package that is not (yet) installed: checks that it would load here.
    pub fn try_load(&self, package: &wulf_plugin::PluginPackage) -> Result<Plugin> {
        let config = self.config();
        self.plugins.load(package, &config.plugins, &|| {
            Ok(self.host_keys()?.to_json())
        })
    }
}

fn load_config(state: &StateDir, path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path, state, true)?,
        None => Config::load(&default_config_file(state), state, false)?,
    })
}

/// [`SYSTEM_CONFIG`] for the system's state directory (the packaged service and root's
/// commands share it), else `<state>/wulf.toml`.
fn default_config_file(state: &StateDir) -> PathBuf {
    if state.root() == Path::new(SYSTEM_STATE_DIR) {
        PathBuf::from(SYSTEM_CONFIG)
    } else {
        state.config_file()
    }
}

pub use wulf_core::provision::error_chain;
