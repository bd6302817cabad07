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
    /// Whether some node waits to be discovered: unknown MACs are worth a look then.
    pub discoverable: bool,
}

impl Snapshot {
    pub fn build(inventory: &Inventory, generation: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            generation,
            ..Snapshot::default()
        };
        for merged in wulf_core::merge::merge_all(inventory.nodes.values(), &inventory.profiles) {
            let id = merged.node.id.clone();
            snapshot.discoverable |= merged.node.discoverable == Some(true);
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

/// How a discovery ends without claiming a node.
enum Discovery {
    /// The MAC is taken meanwhile, or no node is discoverable: nothing to write.
    Unclaimed,
    Inventory(wulf_core::inventory::InventoryError),
}

impl From<wulf_core::inventory::InventoryError> for Discovery {
    fn from(e: wulf_core::inventory::InventoryError) -> Self {
        Discovery::Inventory(e)
    }
}

/// The current snapshot and how to refresh it.
pub struct NodeIndex {
    store: InventoryStore,
    path: std::path::PathBuf,
    backends: Vec<Arc<dyn InventoryBackend>>,
    current: RwLock<Loaded>,
    /// One discovery at a time, so two unknown machines never claim the same node.
    discovering: std::sync::Mutex<()>,
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
            discovering: std::sync::Mutex::new(()),
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

    /// Gives `hwaddr`, which no node has, to the first node (by id) marked discoverable, as
    /// Warewulf does: the address goes on its primary network device (`default` when it has
    /// none), the mark is cleared, the inventory is written atomically and reloaded. `None`
    /// when no node is discoverable. Nodes from backend plugins are never edited.
    pub fn discover(
        &self,
        hwaddr: &HwAddr,
    ) -> Result<Option<(Arc<Node>, u64)>, wulf_core::inventory::InventoryError> {
        let _one_at_a_time = self.discovering.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.snapshot();
        if let Some(node) = snapshot.lookup(hwaddr) {
            return Ok(Some((Arc::clone(node), snapshot.generation)));
        }
        // `Unclaimed` aborts the update: nothing is written when no node takes the MAC.
        let claimed = self.store.update(|inventory| -> Result<_, Discovery> {
            let taken = inventory.nodes.values().any(|n| {
                n.network_devices.values().any(|d| {
                    d.hwaddr
                        .as_deref()
                        .and_then(|h| HwAddr::parse(h).ok())
                        .as_ref()
                        == Some(hwaddr)
                })
            });
            if taken {
                return Err(Discovery::Unclaimed);
            }
            let Some((id, node)) = inventory
                .nodes
                .iter_mut()
                .find(|(_, n)| n.discoverable == Some(true))
            else {
                return Err(Discovery::Unclaimed);
            };
            let merged = wulf_core::merge::merge(node, &inventory.profiles).node;
            let device = merged.primary_network().unwrap_or("default").to_owned();
            node.network_devices
                .entry(device.clone())
                .or_default()
                .hwaddr = Some(hwaddr.to_string());
            node.discoverable = None;
            Ok((id.clone(), device))
        });
        let (id, device) = match claimed {
            Ok(claimed) => claimed,
            Err(Discovery::Unclaimed) => return Ok(None),
            Err(Discovery::Inventory(e)) => return Err(e),
        };
        tracing::warn!(node = %id, mac = %hwaddr, %device, "discovered: the unknown MAC is now this node's");
        self.reload()?;
        let snapshot = self.snapshot();
        Ok(snapshot
            .nodes
            .get(&id)
            .map(|node| (Arc::clone(node), snapshot.generation)))
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
