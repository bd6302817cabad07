//! The boot server's view of the inventory: merged nodes by hardware address, reloaded when
//! the inventory file changes (a CLI edit), every half minute when backend plugins serve nodes
//! too, and on SIGHUP; swapped in whole so a request sees one consistent snapshot.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use wulf_core::{HwAddr, Inventory, InventoryBackend, InventoryStore, Node, StateDir};

/// How often nodes from backend plugins are fetched again.
const BACKEND_REFRESH: Duration = Duration::from_secs(30);

/// One consistent snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Merged nodes by id.
    pub nodes: HashMap<String, Arc<Node>>,
    /// Node ids by every hardware address of their devices.
    pub by_hwaddr: HashMap<HwAddr, String>,
    /// Bumped on every reload: caches keyed on it go stale together.
    pub generation: u64,
}

impl Snapshot {
    pub fn build(inventory: &Inventory, generation: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            generation,
            ..Snapshot::default()
        };
        for merged in wulf_core::merge::merge_all(inventory.nodes.values(), &inventory.profiles) {
            let id = merged.node.id.clone();
            for device in merged.node.network_devices.values() {
                if let Some(hwaddr) = device.hwaddr.as_deref().and_then(|h| HwAddr::parse(h).ok()) {
                    snapshot.by_hwaddr.insert(hwaddr, id.clone());
                }
            }
            snapshot.nodes.insert(id, Arc::new(merged.node));
        }
        snapshot
    }

    pub fn lookup(&self, hwaddr: &HwAddr) -> Option<&Arc<Node>> {
        self.by_hwaddr.get(hwaddr).and_then(|id| self.nodes.get(id))
    }
}

/// The current snapshot and how to refresh it.
pub struct NodeIndex {
    store: InventoryStore,
    path: std::path::PathBuf,
    backends: Vec<Arc<dyn InventoryBackend>>,
    current: RwLock<Loaded>,
}

struct Loaded {
    modified: Option<SystemTime>,
    at: Instant,
    snapshot: Arc<Snapshot>,
}

impl NodeIndex {
    pub fn open(
        state: &StateDir,
        backends: Vec<Arc<dyn InventoryBackend>>,
    ) -> Result<NodeIndex, wulf_core::inventory::InventoryError> {
        let index = NodeIndex {
            store: InventoryStore::new(state),
            path: state.nodes_file(),
            backends,
            current: RwLock::new(Loaded {
                modified: None,
                at: Instant::now(),
                snapshot: Arc::new(Snapshot::default()),
            }),
        };
        index.reload()?;
        Ok(index)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.read().snapshot.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // Writers replace the whole value in one assignment, so a poisoned lock still holds
        // a complete snapshot.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    /// Reloads unconditionally.
    pub fn reload(&self) -> Result<(), wulf_core::inventory::InventoryError> {
        let modified = self.modified();
        let mut inventory = self.store.load()?;
        for backend in &self.backends {
            match inventory.absorb(backend.as_ref()) {
                Ok(shadowed) => {
                    for name in shadowed {
                        tracing::warn!(backend = backend.name(), record = %name, "the built-in inventory already defines it; the backend's is ignored");
                    }
                }
                Err(e) => {
                    tracing::error!(backend = backend.name(), error = %e, "inventory backend failed; serving without its nodes")
                }
            }
        }
        let generation = self.read().snapshot.generation + 1;
        let snapshot = Arc::new(Snapshot::build(&inventory, generation));
        tracing::info!(nodes = snapshot.nodes.len(), generation, "inventory loaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded {
            modified,
            at: Instant::now(),
            snapshot,
        };
        Ok(())
    }

    /// Reloads if the inventory file changed since the last load. A broken file keeps the
    /// last good snapshot in service.
    pub fn refresh(&self) {
        let stale = {
            let loaded = self.read();
            self.modified() != loaded.modified
                || (!self.backends.is_empty() && loaded.at.elapsed() >= BACKEND_REFRESH)
        };
        if stale && let Err(e) = self.reload() {
            tracing::error!(error = %e, "inventory reload failed; still serving the previous one");
        }
    }
}
