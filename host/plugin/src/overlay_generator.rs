//! `wulf-core`'s [`OverlayGenerator`] over a wasm plugin.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Store;
use wulf_core::{ExtensionError, Node, OverlayFile, OverlayGenerator, Server};

use crate::bindings::wit;
use crate::conversion::{node_to_wit, server_to_wit};
use crate::host_state::HostState;
use crate::runtime::{GeneratorInstance, LoadedPlugin};

/// An overlay-generator plugin, callable from any thread.
#[derive(Clone)]
pub struct WasmOverlayGenerator {
    plugin: Arc<LoadedPlugin>,
}

impl WasmOverlayGenerator {
    /// `None` when the plugin implements another world.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Option<Self> {
        plugin
            .is_overlay_generator()
            .then_some(WasmOverlayGenerator { plugin })
    }
}

impl OverlayGenerator for WasmOverlayGenerator {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn shared(&self) -> wulf_core::extension::Shared {
        self.plugin.manifest.shared
    }

    fn for_build(&self) -> Option<Arc<dyn OverlayGenerator>> {
        Some(Arc::new(PooledOverlayGenerator::new(self.clone())))
    }

    fn generate(&self, node: &Node, server: &Server) -> Result<Vec<OverlayFile>, ExtensionError> {
        let subject = format!("node {}", node.id);
        let (node, server) = (node_to_wit(node), server_to_wit(server));
        let files = self.plugin.call(&subject, |store| {
            let instance = self.plugin.instantiate_generator(store)?;
            instance.generate(store, &node, &server)
        })?;
        self.plugin.accept_files(files)
    }

    fn generate_shared(
        &self,
        nodes: &Arc<[Node]>,
        server: &Server,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        let server = server_to_wit(server);
        let files = self.plugin.call("shared files", |store| {
            let instance = self.plugin.instantiate_generator(store)?;
            instance.generate_shared(store, nodes, &server)
        })?;
        self.plugin.accept_files(files)
    }
}

/// One build's view of an overlay-generator plugin: instances stay warm between its calls
/// instead of a fresh one per node, which is most of a call's cost for an interpreted guest
/// (Python, JavaScript).
///
/// What is kept from isolation: instances live only as long as the build; an instance serves
/// only nodes whose records carry the same secrets (IPMI password, asset key), so a plugin
/// never holds a secret its current node's record does not hand it; a trap, a limit or a host
/// error throws the instance away, and a call that failed on a reused instance is tried once
/// more on a fresh one (unless it hit the time limit), so state a plugin kept can never fail a
/// node a fresh instance would build. Shared files (every node's record at once) always get a
/// fresh instance. After three calls stopped at the time limit, the build calls it no more.
pub(crate) struct PooledOverlayGenerator {
    generator: WasmOverlayGenerator,
    warm: Mutex<HashMap<u64, Vec<Warm>>>,
    /// Warm instances kept at most (the build's threads).
    cap: usize,
    /// Calls of this build stopped at the time limit; past [`GIVE_UP_AFTER`] the rest fail
    /// at once, so a plugin that hangs costs a build a few limits, not one per node.
    timeouts: std::sync::atomic::AtomicUsize,
}

/// Time-limit failures in one build after which a plugin is not called again in it.
const GIVE_UP_AFTER: usize = 3;

struct Warm {
    store: Store<HostState>,
    instance: GeneratorInstance,
}

/// The secrets a node's record hands a plugin, as a key.
fn secrets(node: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.ipmi.password.as_ref().map(|p| p.expose()).hash(&mut h);
    node.asset_key.hash(&mut h);
    h.finish()
}

impl PooledOverlayGenerator {
    fn new(generator: WasmOverlayGenerator) -> Self {
        let cap = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        PooledOverlayGenerator {
            generator,
            warm: Mutex::default(),
            cap,
            timeouts: Default::default(),
        }
    }

    fn plugin(&self) -> &LoadedPlugin {
        &self.generator.plugin
    }

    fn take(&self, key: u64) -> Option<Warm> {
        let mut pool = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        let warm = pool.get_mut(&key)?.pop();
        pool.retain(|_, instances| !instances.is_empty());
        warm
    }

    fn give_back(&self, key: u64, warm: Warm) {
        let mut pool = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if pool.values().map(Vec::len).sum::<usize>() < self.cap {
            pool.entry(key).or_default().push(warm);
        }
    }

    /// One call on `warm` (or a fresh instance), its output checked: the files, and the
    /// instance when the call succeeded (one that failed in any way is not used again).
    fn attempt(
        &self,
        warm: Option<Warm>,
        subject: &str,
        node: &wit::Node,
        server: &wit::Server,
    ) -> (Result<Vec<OverlayFile>, ExtensionError>, Option<Warm>) {
        let plugin = self.plugin();
        let mut warm = match warm {
            Some(mut warm) => {
                warm.store.data_mut().begin_call(subject);
                warm
            }
            None => {
                let fresh = plugin.new_store(subject).and_then(|mut store| {
                    let instance = plugin
                        .instantiate_generator(&mut store)
                        .map_err(|e| plugin.classify(&store, e))?;
                    Ok(Warm { store, instance })
                });
                match fresh {
                    Ok(warm) => warm,
                    Err(e) => return (Err(e), None),
                }
            }
        };
        plugin.arm_deadline(&mut warm.store);
        let outcome = warm.instance.generate(&mut warm.store, node, server);
        let result = plugin
            .finish_call(&warm.store, outcome)
            .and_then(|files| plugin.accept_files(files));
        let fit = result.is_ok();
        (result, fit.then_some(warm))
    }
}

impl OverlayGenerator for PooledOverlayGenerator {
    fn name(&self) -> &str {
        self.generator.name()
    }

    fn shared(&self) -> wulf_core::extension::Shared {
        self.generator.shared()
    }

    fn generate(&self, node: &Node, server: &Server) -> Result<Vec<OverlayFile>, ExtensionError> {
        use std::sync::atomic::Ordering;
        let time_limit = |e: &ExtensionError| {
            matches!(
                e,
                ExtensionError::Limit {
                    limit: wulf_core::extension::Limit::Time { .. },
                    ..
                }
            )
        };
        if self.timeouts.load(Ordering::Relaxed) >= GIVE_UP_AFTER {
            return Err(ExtensionError::Limit {
                plugin: self.name().to_owned(),
                limit: wulf_core::extension::Limit::Time {
                    millis: self.plugin().limits.timeout.as_millis() as u64,
                },
            });
        }
        let started = Instant::now();
        let key = secrets(node);
        let subject = format!("node {}", node.id);
        let (wit_node, wit_server) = (node_to_wit(node), server_to_wit(server));
        let warm = self.take(key);
        let reused = warm.is_some();
        let (mut result, mut fit) = self.attempt(warm, &subject, &wit_node, &wit_server);
        // What a reused instance kept must not fail a node a fresh one would build; a hang is
        // not tried twice.
        if reused && result.as_ref().is_err_and(|e| !time_limit(e)) {
            (result, fit) = self.attempt(None, &subject, &wit_node, &wit_server);
        }
        if let Err(e) = &result
            && time_limit(e)
        {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(warm) = fit {
            self.give_back(key, warm);
        }
        wulf_core::plugin_stats::record(self.name(), started.elapsed(), result.is_ok());
        result
    }

    fn generate_shared(
        &self,
        nodes: &Arc<[Node]>,
        server: &Server,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        self.generator.generate_shared(nodes, server)
    }
}
