//! Loading components and calling them: one engine and one linker per world, a compiled and
//! pre-linked component per plugin, and a fresh store per call that is thrown away afterwards,
//! so a trap, a timeout or a memory blow-up can never poison the next call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};
use wulf_core::config::{Limits, PluginsConfig};
use wulf_core::{ExtensionError, OverlayFile, extension::Limit, overlay_file};

use crate::bindings::wit;
use crate::bindings::{cluster_overlay, inventory, node_overlay, overlay, transform};
use crate::cache::{CompileCache, Origin};
use crate::component_check::{self, SurfaceError};
use crate::conversion::{error_message, file_from_wit};
use crate::host_state::{HostState, StoreSpec};
use crate::manifest::{Manifest, World};

/// A plugin that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{plugin}` is refused: {source}")]
    Surface {
        plugin: String,
        source: SurfaceError,
    },
    #[error(
        "plugin `{plugin}` asks to read {dir}, which the site configuration does not grant; to allow it add the directory to `grant-read-dirs` under [plugin.{plugin}] in wulf.toml"
    )]
    CapabilityRefused { plugin: String, dir: PathBuf },
    #[error(
        "plugin `{plugin}` asks for the cluster's SSH host keys, which the site configuration does not grant; to allow it set `grant-ssh-host-keys = true` under [plugin.{plugin}] in wulf.toml"
    )]
    HostKeysRefused { plugin: String },
    #[error("plugin `{plugin}` needs the cluster's SSH host keys, and none were loaded")]
    HostKeysMissing { plugin: String },
    #[error(
        "plugin `{plugin}` implements only `generate` (world node-overlay-generator), but its manifest says shared = \"{shared}\": say shared = \"none\", or build it against the overlay-generator world"
    )]
    NoSharedFiles { plugin: String, shared: String },
    #[error("plugin `{plugin}` cannot be compiled: {message}")]
    Compile { plugin: String, message: String },
    #[error("plugin `{plugin}` cannot be linked: {message}")]
    Link { plugin: String, message: String },
    #[error("the plugin engine cannot start: {0}")]
    Engine(String),
}

/// A plugin ready to load: its manifest and component bytes.
#[derive(Debug, Clone)]
pub struct PluginPackage {
    pub manifest: Manifest,
    pub wasm: Arc<[u8]>,
    /// Shipped in the `wulf` binary: first-party, trusted with the host keys.
    pub embedded: bool,
}

/// The engine, the per-world linkers and the compile cache.
pub struct Runtime {
    engine: Engine,
    overlay: Linker<HostState>,
    /// The overlay world with the `cluster` import (`cluster-overlay-generator`).
    cluster_overlay: Linker<HostState>,
    inventory: Linker<HostState>,
    transform: Linker<HostState>,
    cache: CompileCache,
}

enum Pre {
    Overlay(overlay::OverlayGeneratorPre<HostState>),
    /// An overlay generator with only `generate` (world `node-overlay-generator`).
    NodeOverlay(node_overlay::NodeOverlayGeneratorPre<HostState>),
    /// An overlay generator that reads the cluster a page at a time.
    ClusterOverlay(cluster_overlay::ClusterOverlayGeneratorPre<HostState>),
    Inventory(inventory::InventoryBackendPre<HostState>),
    Transform(transform::ImageTransformPre<HostState>),
}

/// A compiled, linked plugin. Cheap to call from many threads at once.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub limits: Limits,
    /// Whether the native code came from the on-disk cache.
    pub origin: Origin,
    /// How long loading took (cache read or compile, plus linking).
    pub load_time: Duration,
    spec: StoreSpec,
    pre: Pre,
    engine: Engine,
}

impl Runtime {
    /// An engine whose compiled components are cached in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, LoadError> {
        let engine =
            crate::engine::new_engine().map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let linker = || -> wasmtime::Result<Linker<HostState>> {
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            crate::virtual_clock::link(&mut linker)?;
            Ok(linker)
        };
        let build = || -> wasmtime::Result<_> {
            let mut overlay_linker = linker()?;
            overlay::OverlayGenerator::add_to_linker::<_, HasSelf<_>>(&mut overlay_linker, |s| s)?;
            let mut cluster_linker = linker()?;
            cluster_overlay::ClusterOverlayGenerator::add_to_linker::<_, HasSelf<_>>(
                &mut cluster_linker,
                |s| s,
            )?;
            let mut inventory_linker = linker()?;
            inventory::InventoryBackend::add_to_linker::<_, HasSelf<_>>(
                &mut inventory_linker,
                |s| s,
            )?;
            let mut transform_linker = linker()?;
            transform::ImageTransform::add_to_linker::<_, HasSelf<_>>(
                &mut transform_linker,
                |s| s,
            )?;
            Ok((
                overlay_linker,
                cluster_linker,
                inventory_linker,
                transform_linker,
            ))
        };
        let (overlay, cluster_overlay, inventory, transform) =
            build().map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        wulf_core::plugin_stats::engine_created();
        Ok(Runtime {
            engine,
            overlay,
            cluster_overlay,
            inventory,
            transform,
            cache: CompileCache::new(cache_dir),
        })
    }

    /// Checks, compiles (or loads from cache) and links a plugin with its site settings.
    pub fn load(
        &self,
        package: &PluginPackage,
        config: &PluginsConfig,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let manifest = &package.manifest;
        let plugin = manifest.name.clone();
        let surface =
            component_check::surface(&package.wasm).map_err(|source| LoadError::Surface {
                plugin: plugin.clone(),
                source,
            })?;
        component_check::check(&surface, manifest.world).map_err(|source| LoadError::Surface {
            plugin: plugin.clone(),
            source,
        })?;

        let site = config.sites.get(&plugin).cloned().unwrap_or_default();
        if let Some(dir) = manifest
            .read_dirs
            .iter()
            .find(|d| !site.grant_read_dirs.contains(d))
        {
            return Err(LoadError::CapabilityRefused {
                plugin,
                dir: dir.clone(),
            });
        }
        let mut plugin_config = manifest.config.clone();
        plugin_config.extend(site.config);
        if manifest.ssh_host_keys {
            if !package.embedded && !site.grant_ssh_host_keys {
                return Err(LoadError::HostKeysRefused { plugin });
            }
            let keys = config
                .host_keys
                .as_ref()
                .ok_or_else(|| LoadError::HostKeysMissing {
                    plugin: plugin.clone(),
                })?;
            plugin_config.insert("host-keys".into(), keys.as_ref().clone());
        }
        let limits = config.limits_for(&plugin);

        let (component, origin) =
            self.cache
                .load(&self.engine, &package.wasm)
                .map_err(|e| LoadError::Compile {
                    plugin: plugin.clone(),
                    message: format!("{e:#}"),
                })?;
        let link = |e: wasmtime::Error| LoadError::Link {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        };
        let node_only = component_check::exports_node_generator(&surface);
        if node_only && manifest.shared != wulf_core::extension::Shared::None {
            return Err(LoadError::NoSharedFiles {
                plugin,
                shared: match manifest.shared {
                    wulf_core::extension::Shared::Fields(_) => "cluster".to_owned(),
                    other => other.to_string(),
                },
            });
        }
        let paged = component_check::exports_cluster_generator(&surface);
        let pre = match manifest.world {
            World::OverlayGenerator if paged => Pre::ClusterOverlay(
                cluster_overlay::ClusterOverlayGeneratorPre::new(
                    self.cluster_overlay
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
            World::OverlayGenerator if node_only => Pre::NodeOverlay(
                node_overlay::NodeOverlayGeneratorPre::new(
                    self.overlay.instantiate_pre(&component).map_err(link)?,
                )
                .map_err(link)?,
            ),
            World::OverlayGenerator => Pre::Overlay(
                overlay::OverlayGeneratorPre::new(
                    self.overlay.instantiate_pre(&component).map_err(link)?,
                )
                .map_err(link)?,
            ),
            World::InventoryBackend => Pre::Inventory(
                inventory::InventoryBackendPre::new(
                    self.inventory.instantiate_pre(&component).map_err(link)?,
                )
                .map_err(link)?,
            ),
            World::ImageTransform => Pre::Transform(
                transform::ImageTransformPre::new(
                    self.transform.instantiate_pre(&component).map_err(link)?,
                )
                .map_err(link)?,
            ),
        };
        let spec = StoreSpec {
            plugin: plugin.as_str().into(),
            config_json: serde_json::Value::Object(plugin_config).to_string().into(),
            memory_bytes: limits.memory_bytes,
            read_dirs: manifest.read_dirs.clone().into(),
        };
        wulf_core::plugin_stats::component_loaded();
        Ok(LoadedPlugin {
            manifest: manifest.clone(),
            limits,
            origin,
            load_time: started.elapsed(),
            spec,
            pre,
            engine: self.engine.clone(),
        })
    }
}

/// An instance of an overlay generator: the full world, one with only `generate`, or one
/// that reads the cluster a page at a time.
pub(crate) enum GeneratorInstance {
    Full(overlay::OverlayGenerator),
    NodeOnly(node_overlay::NodeOverlayGenerator),
    Paged(cluster_overlay::ClusterOverlayGenerator),
}

type Generated = wasmtime::Result<Result<Vec<wit::FileEntry>, wit::PluginError>>;

impl GeneratorInstance {
    pub(crate) fn generate(
        &self,
        store: &mut Store<HostState>,
        node: &wit::Node,
        server: &wit::Server,
    ) -> Generated {
        match self {
            GeneratorInstance::Full(i) => {
                i.wulf_plugin_generator().call_generate(store, node, server)
            }
            GeneratorInstance::NodeOnly(i) => i
                .wulf_plugin_node_generator()
                .call_generate(store, node, server),
            GeneratorInstance::Paged(i) => i
                .wulf_plugin_cluster_generator()
                .call_generate(store, node, server),
        }
    }

    /// Shared files; none from a generator without `generate-shared`. The full world gets
    /// every record in one list; the paged one reads them from the store during the call.
    pub(crate) fn generate_shared(
        &self,
        store: &mut Store<HostState>,
        nodes: &std::sync::Arc<[wulf_core::Node]>,
        server: &wit::Server,
    ) -> Generated {
        match self {
            GeneratorInstance::Full(i) => {
                let nodes: Vec<wit::Node> =
                    nodes.iter().map(crate::conversion::node_to_wit).collect();
                i.wulf_plugin_generator()
                    .call_generate_shared(store, &nodes, server)
            }
            GeneratorInstance::NodeOnly(_) => Ok(Ok(Vec::new())),
            GeneratorInstance::Paged(i) => {
                store.data_mut().cluster = Some(std::sync::Arc::clone(nodes));
                let result = i
                    .wulf_plugin_cluster_generator()
                    .call_generate_shared(&mut *store, server);
                store.data_mut().cluster = None;
                result
            }
        }
    }
}

/// How wasmtime says a guest handed the host more than its hostcall fuel.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// Hostcall fuel for an output limit: the output's bytes, plus room for the host-side records
/// of many small files, never below wasmtime's default of 128 MiB.
fn hostcall_fuel(output_bytes: u64) -> usize {
    let bytes = usize::try_from(output_bytes).unwrap_or(usize::MAX);
    bytes.saturating_add(bytes / 2).max(128 << 20)
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The configuration the plugin sees: manifest defaults, site settings, granted keys.
    pub fn config_json(&self) -> &str {
        &self.spec.config_json
    }

    /// A fresh store with this plugin's limits and deadline armed, for calls about `subject`
    /// (`node n001`: what its log lines are attributed to).
    pub(crate) fn new_store(&self, subject: &str) -> Result<Store<HostState>, ExtensionError> {
        let state = HostState::new(&self.spec, subject).map_err(|e| self.host_error(e))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What a guest may hand the host in one call (its returned files, mostly): enough for
        // the output limit, so exceeding it is reported as that limit, not as a crash.
        store.set_hostcall_fuel(hostcall_fuel(self.limits.output_bytes));
        self.arm_deadline(&mut store);
        Ok(store)
    }

    /// Runs one call in a fresh store and sorts out its failure modes. Blocking: async callers
    /// use `spawn_blocking` (WASI's synchronous bindings refuse to run on an async worker).
    pub(crate) fn call<T>(
        &self,
        subject: &str,
        call: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<T, wit::PluginError>>,
    ) -> Result<T, ExtensionError> {
        let started = Instant::now();
        let mut store = self.new_store(subject)?;
        let outcome = call(&mut store);
        let result = self.finish_call(&store, outcome);
        wulf_core::plugin_stats::record(self.name(), started.elapsed(), result.is_ok());
        result
    }

    /// Maps the three ways a call ends: a value, the guest's own error, or a trap/limit.
    pub(crate) fn finish_call<T>(
        &self,
        store: &Store<HostState>,
        outcome: wasmtime::Result<Result<T, wit::PluginError>>,
    ) -> Result<T, ExtensionError> {
        // What it printed goes to the log with whose and about what; a trap's is in its error.
        if outcome.is_ok() {
            let output = store.data().output_text();
            if !output.is_empty() {
                let on = &*store.data().subject;
                tracing::info!(target: "plugin", plugin = self.name(), on, "printed: {output}");
            }
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ExtensionError::Guest {
                plugin: self.name().to_string(),
                message: error_message(error),
            }),
            Err(error) => Err(self.classify(store, error)),
        }
    }

    pub(crate) fn arm_deadline(&self, store: &mut Store<HostState>) {
        store.set_epoch_deadline(crate::engine::ticks(self.limits.timeout));
    }

    pub(crate) fn host_error(&self, e: impl std::fmt::Display) -> ExtensionError {
        ExtensionError::Host {
            plugin: self.name().to_string(),
            message: e.to_string(),
        }
    }

    /// Turns a failed call into an error that says whose fault it was.
    pub(crate) fn classify(
        &self,
        store: &Store<HostState>,
        error: wasmtime::Error,
    ) -> ExtensionError {
        let plugin = self.name().to_string();
        let state = store.data();
        if state.limiter.exceeded {
            return ExtensionError::Limit {
                plugin,
                limit: Limit::Memory {
                    bytes: self.limits.memory_bytes,
                },
            };
        }
        if format!("{error:#}").contains(HOSTCALL_FUEL_EXHAUSTED) {
            return ExtensionError::Limit {
                plugin,
                limit: Limit::Output {
                    bytes: self.limits.output_bytes,
                },
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => ExtensionError::Limit {
                plugin,
                limit: Limit::Time {
                    millis: self.limits.timeout.as_millis() as u64,
                },
            },
            Some(trap) => {
                let output = state.output_text();
                let message = if output.is_empty() {
                    trap.to_string()
                } else {
                    format!("{trap}; its stderr: {output}")
                };
                ExtensionError::Trap { plugin, message }
            }
            None => ExtensionError::Trap {
                plugin,
                message: format!("{error:#}"),
            },
        }
    }

    /// Converts and validates returned files.
    pub(crate) fn accept_files(
        &self,
        files: Vec<wit::FileEntry>,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        self.accept_overlay_files(files.into_iter().map(file_from_wit).collect())
    }

    /// Validates returned files: clean paths, sane modes, total size under the output cap.
    pub(crate) fn accept_overlay_files(
        &self,
        files: Vec<OverlayFile>,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        let total: u64 = files.iter().map(|f| f.size() + f.path.len() as u64).sum();
        if total > self.limits.output_bytes {
            return Err(ExtensionError::Limit {
                plugin: self.name().to_string(),
                limit: Limit::Output {
                    bytes: self.limits.output_bytes,
                },
            });
        }
        files
            .iter()
            .map(|file| {
                overlay_file::validate(file).map_err(|e| ExtensionError::InvalidOutput {
                    plugin: self.name().to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Whether this is an overlay generator (of either shape).
    pub(crate) fn is_overlay_generator(&self) -> bool {
        matches!(
            self.pre,
            Pre::Overlay(_) | Pre::NodeOverlay(_) | Pre::ClusterOverlay(_)
        )
    }

    /// A new instance of an overlay generator in `store`.
    pub(crate) fn instantiate_generator(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<GeneratorInstance> {
        match &self.pre {
            Pre::Overlay(pre) => pre.instantiate(store).map(GeneratorInstance::Full),
            Pre::NodeOverlay(pre) => pre.instantiate(store).map(GeneratorInstance::NodeOnly),
            Pre::ClusterOverlay(pre) => pre.instantiate(store).map(GeneratorInstance::Paged),
            _ => wasmtime::bail!("plugin `{}` is not an overlay generator", self.name()),
        }
    }

    pub(crate) fn inventory_pre(&self) -> Option<&inventory::InventoryBackendPre<HostState>> {
        match &self.pre {
            Pre::Inventory(pre) => Some(pre),
            _ => None,
        }
    }

    pub(crate) fn transform_pre(&self) -> Option<&transform::ImageTransformPre<HostState>> {
        match &self.pre {
            Pre::Transform(pre) => Some(pre),
            _ => None,
        }
    }
}
