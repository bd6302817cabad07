//! The boot server's view of the inventory: merged nodes by hardware address, reloaded when
//! the inventory file changes (a CLI edit), every half minute when backend plugins serve nodes
//! too, and on SIGHUP; swapped in whole so a request sees one consistent snapshot. A reload
//! that fails (a hand edit that broke the file) keeps the last good snapshot in service.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use wulf_core::provision::error_chain;
use wulf_core::{HwAddr, Inventory, Node, ProvisionError, Provisioner};

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
                if let Some(hwaddr) = device.hwaddr {
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
    provisioner: Arc<dyn Provisioner>,
    current: RwLock<Loaded>,
    /// One discovery at a time, so two unknown machines never claim the same node.
    discovering: std::sync::Mutex<()>,
}

struct Loaded {
    stamp: u64,
    at: Instant,
    snapshot: Arc<Snapshot>,
}

impl NodeIndex {
    pub fn open(provisioner: Arc<dyn Provisioner>) -> Result<NodeIndex, ProvisionError> {
        let index = NodeIndex {
            provisioner,
            current: RwLock::new(Loaded {
                stamp: 0,
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

    /// Reloads unconditionally.
    pub fn reload(&self) -> Result<(), ProvisionError> {
        let stamp = self.provisioner.inventory_stamp();
        let served = match self.provisioner.load_inventory() {
            Ok(served) => served,
            Err(error) => {
                // Not again until the file changes: the error was said once.
                let mut loaded = self.current.write().unwrap_or_else(|p| p.into_inner());
                loaded.stamp = stamp;
                loaded.at = Instant::now();
                return Err(error);
            }
        };
        let generation = self.read().snapshot.generation + 1;
        let snapshot = Arc::new(Snapshot::build(&served.inventory, generation));
        tracing::info!(
            nodes = snapshot.nodes.len(),
            refused = served.rejected.len(),
            generation,
            "inventory loaded"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded {
            stamp,
            at: Instant::now(),
            snapshot,
        };
        Ok(())
    }

    /// The node with `hwaddr` that no loaded record has: asked of the backends, then offered
    /// for discovery (a node marked discoverable takes it, or a backend accepts it). With the
    /// generation of the snapshot it came from.
    pub fn find_unknown(
        &self,
        hwaddr: &HwAddr,
    ) -> Result<Option<(Arc<Node>, u64)>, ProvisionError> {
        let _one_at_a_time = self.discovering.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.snapshot();
        if let Some(node) = snapshot.lookup(hwaddr) {
            return Ok(Some((Arc::clone(node), snapshot.generation)));
        }
        if let Some(node) = self.provisioner.lookup_hwaddr(hwaddr)? {
            return Ok(Some((Arc::new(node), snapshot.generation)));
        }
        if !snapshot.discoverable && !self.provisioner.has_backends() {
            return Ok(None);
        }
        if self.provisioner.discover(hwaddr)?.is_none() {
            return Ok(None);
        }
        self.reload()?;
        let snapshot = self.snapshot();
        Ok(snapshot
            .lookup(hwaddr)
            .map(|node| (Arc::clone(node), snapshot.generation)))
    }

    /// Reloads if the inventory file changed since the last load, or backends were last asked
    /// long ago. A broken file keeps the last good snapshot in service.
    pub fn refresh(&self) {
        let stale = {
            let loaded = self.read();
            self.provisioner.inventory_stamp() != loaded.stamp
                || (self.provisioner.has_backends() && loaded.at.elapsed() >= BACKEND_REFRESH)
        };
        if stale && let Err(e) = self.reload() {
            tracing::error!(error = %error_chain(&e), "inventory reload failed; still serving the previous one");
        }
    }
}
