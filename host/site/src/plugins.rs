//! The process's plugins: one wasm [`Runtime`] (one engine, one linker per world), created the
//! first time a plugin is needed and kept for the life of the process, and the plugins loaded
//! on it, kept until the site configuration, the plugin directory or the host keys change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;
use wulf_core::config::PluginsConfig;
use wulf_core::{ImageTransform, InventoryBackend, OverlayGenerator};
use wulf_plugin::{
    LoadedPlugin, PluginPackage, Registry, Runtime, WasmImageTransform, WasmInventoryBackend,
    WasmOverlayGenerator, World,
};

use crate::error::{Result, SiteError};

/// A loaded plugin and what identifies its output: name, version, code and the config it sees.
#[derive(Clone)]
pub struct Plugin {
    pub loaded: Arc<LoadedPlugin>,
    /// Hashed, never the config itself: it may hold the host keys, and identities are stored
    /// in the overlay index.
    pub identity: String,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.loaded.name())
            .field("identity", &self.identity)
            .finish()
    }
}

/// The runtime and the loaded plugins.
#[derive(Default)]
pub(crate) struct Plugins {
    runtime: Mutex<Option<Arc<Runtime>>>,
    loaded: Mutex<BTreeMap<String, Plugin>>,
    /// Counts [`Plugins::forget`]s: a plugin loaded under an older generation (its load began
    /// before the configuration changed) is used by its caller but never kept.
    generation: AtomicU64,
    /// Held while a plugin loads, so two threads asking for the same plugin load it once.
    loading: Mutex<()>,
}

impl Plugins {
    /// The process's runtime, created on first use.
    pub(crate) fn runtime(&self, config: &PluginsConfig) -> Result<Arc<Runtime>> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = runtime.as_ref() {
            return Ok(Arc::clone(runtime));
        }
        let created = Arc::new(Runtime::new(config.cache_dir.join("plugins"))?);
        *runtime = Some(Arc::clone(&created));
        Ok(created)
    }

    /// Drops every loaded plugin: the next use loads them again (on the same runtime).
    pub(crate) fn forget(&self) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        loaded.clear();
    }

    /// The current generation, to pass to [`Plugins::get`]; read it before the configuration.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A plugin by name, loaded once per generation. `host_keys` is asked for only when its
    /// manifest wants the cluster's SSH host keys.
    pub(crate) fn get(
        &self,
        generation: u64,
        registry: &Registry,
        config: &PluginsConfig,
        name: &str,
        host_keys: &dyn Fn() -> Result<serde_json::Value>,
    ) -> Result<Plugin> {
        let cached = || {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned()
        };
        if let Some(plugin) = cached() {
            return Ok(plugin);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plugin) = cached() {
            return Ok(plugin);
        }
        let package = registry.package(name)?;
        let plugin = self.load(&package, config, host_keys)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            loaded.insert(name.to_owned(), plugin.clone());
        }
        Ok(plugin)
    }

    /// Loads a package without keeping it (a plugin about to be installed, say).
    pub(crate) fn load(
        &self,
        package: &PluginPackage,
        config: &PluginsConfig,
        host_keys: &dyn Fn() -> Result<serde_json::Value>,
    ) -> Result<Plugin> {
        let runtime = self.runtime(config)?;
        let loaded = if package.manifest.ssh_host_keys {
            let mut config = config.clone();
            config.host_keys = Some(Arc::new(host_keys()?));
            runtime.load(package, &config)?
        } else {
            runtime.load(package, config)?
        };
        let identity = format!(
            "{}@{}:{}:{}",
            package.manifest.name,
            package.manifest.version,
            hex::encode(sha2::Sha256::digest(&package.wasm)),
            hex::encode(sha2::Sha256::digest(loaded.config_json()))
        );
        Ok(Plugin {
            loaded: Arc::new(loaded),
            identity,
        })
    }
}

/// The plugin as the extension point of its world.
pub(crate) fn overlay_generator(plugin: &Plugin) -> Option<Arc<dyn OverlayGenerator>> {
    WasmOverlayGenerator::new(Arc::clone(&plugin.loaded))
        .map(|g| Arc::new(g) as Arc<dyn OverlayGenerator>)
}

pub(crate) fn inventory_backend(plugin: &Plugin) -> Result<Arc<dyn InventoryBackend>> {
    WasmInventoryBackend::new(Arc::clone(&plugin.loaded))
        .map(|b| Arc::new(b) as Arc<dyn InventoryBackend>)
        .ok_or_else(|| SiteError::WrongWorld {
            plugin: plugin.loaded.name().to_owned(),
            wanted: "an inventory backend",
        })
}

pub(crate) fn image_transform(plugin: &Plugin) -> Result<Arc<dyn ImageTransform>> {
    WasmImageTransform::new(Arc::clone(&plugin.loaded))
        .map(|t| Arc::new(t) as Arc<dyn ImageTransform>)
        .ok_or_else(|| SiteError::WrongWorld {
            plugin: plugin.loaded.name().to_owned(),
            wanted: "an image transform",
        })
}

impl crate::Site {
    /// Loads every plugin the site uses, each with its outcome: enabled overlay generators and
    /// image transforms, and the inventory backends the configuration names (a backend the site
    /// does not use is not loaded: the shipped `csv-inventory` needs a directory grant that only
    /// a site using it gives). What a server does at start, so a broken plugin is reported then
    /// and the first node does not wait for a compile.
    pub fn load_used_plugins(&self) -> Result<Vec<(String, Result<Plugin>)>> {
        let backends = self.config().plugins.backends.clone();
        let used = |l: &wulf_plugin::Listing| match &l.manifest {
            Ok(m) => m.world != World::InventoryBackend || backends.contains(&l.name),
            Err(_) => true,
        };
        Ok(self
            .registry()
            .list()?
            .into_iter()
            .filter(|l| l.enabled && used(l))
            .map(|l| {
                let plugin = self.plugin(&l.name);
                (l.name, plugin)
            })
            .collect())
    }

    /// Runs an overlay generator for one node of the inventory, as a build would: its shared
    /// files (called only when its manifest says they depend on something), then the node's.
    pub fn test_generator(&self, name: &str, node: &str) -> Result<Vec<wulf_core::OverlayFile>> {
        let plugin = self.plugin(name)?;
        let generator = overlay_generator(&plugin).ok_or_else(|| SiteError::WrongWorld {
            plugin: name.to_owned(),
            wanted: "an overlay generator",
        })?;
        let inventory = self.inventory()?;
        let merged = inventory.merged(node)?.node;
        let server = self.server();
        let mut files = match generator.shared() {
            wulf_core::extension::Shared::None => Vec::new(),
            wulf_core::extension::Shared::Config => {
                generator.generate_shared(&Arc::from([]), &server)?
            }
            wulf_core::extension::Shared::Cluster => {
                generator.generate_shared(&inventory.merged_nodes().into(), &server)?
            }
            wulf_core::extension::Shared::Fields(fields) => {
                let merged = inventory.merged_nodes();
                let nodes = merged.iter().map(|n| fields.project(n)).collect();
                generator.generate_shared(&nodes, &server)?
            }
        };
        files.extend(generator.generate(&merged, &server)?);
        Ok(files)
    }

    /// The nodes an inventory backend lists, as it returns them, each read or refused.
    pub fn test_backend(&self, name: &str) -> Result<Vec<wulf_core::extension::BackendRecord>> {
        let backend = inventory_backend(&self.plugin(name)?)?;
        backend.list_nodes().map_err(|source| SiteError::Backend {
            backend: name.to_owned(),
            source,
        })
    }
}
