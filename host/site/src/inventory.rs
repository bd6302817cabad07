//! The inventory as served: the built-in store first, then every backend plugin's records,
//! each record checked on its own before it is taken; discovery of unknown hardware addresses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wulf_core::extension::BackendRecord;
use wulf_core::merge::merge;
use wulf_core::provision::{RejectedRecord, ServedInventory};
use wulf_core::validation::{RecordKind, ValidationError, check_record};
use wulf_core::{ExtensionError, HwAddr, Inventory, InventoryBackend, Node};

use crate::Site;
use crate::error::{Result, SiteError};
use crate::plugins;

impl Site {
    /// The built-in store's inventory, checked.
    pub fn stored_inventory(&self) -> Result<Inventory> {
        Ok(self.store.load()?)
    }

    /// The inventory backends of the site configuration, in order, loaded.
    pub fn backends(&self) -> Result<Vec<Arc<dyn InventoryBackend>>> {
        let names = self.config().plugins.backends.clone();
        names
            .iter()
            .map(|name| plugins::inventory_backend(&self.plugin(name)?))
            .collect()
    }

    /// Every node and profile: the built-in store and the backends' valid records. A backend
    /// that fails is an error; records it returns that are refused are logged.
    pub fn inventory(&self) -> Result<Inventory> {
        let served = self.served_inventory(false)?;
        Ok(served.inventory)
    }

    /// The profiles and, of the nodes, at least those named in `nodes` that exist: what a
    /// command about a node or two needs. From the inventory cache only these records are read
    /// (`node show` on 10,000 nodes reads one). With inventory backends, every record: theirs
    /// can be any node.
    pub(crate) fn inventory_of(&self, nodes: &[&str]) -> Result<Inventory> {
        if !self.config().plugins.backends.is_empty() {
            return self.inventory();
        }
        Ok(self.store.load_some(nodes)?)
    }

    /// The inventory and the backend records refused, each with its reason. With `tolerant`, a
    /// failing backend is logged and skipped (a server keeps serving the others).
    pub(crate) fn served_inventory(&self, tolerant: bool) -> Result<ServedInventory> {
        let mut served = ServedInventory {
            inventory: self.store.load()?,
            rejected: Vec::new(),
        };
        if self.config().plugins.backends.is_empty() {
            return Ok(served);
        }
        self.refresh();
        for backend in self.backends()? {
            match absorb(&mut served.inventory, backend.as_ref()) {
                Ok(rejected) => served.rejected.extend(rejected),
                Err(source) if tolerant => {
                    tracing::error!(backend = backend.name(), error = %crate::error_chain(&source), "inventory backend failed; serving without its records");
                }
                Err(source) => {
                    return Err(SiteError::Backend {
                        backend: backend.name().to_owned(),
                        source,
                    });
                }
            }
        }
        for rejected in &served.rejected {
            tracing::warn!(backend = %rejected.backend, record = %rejected.record, reason = %rejected.reason, "backend record refused");
        }
        Ok(served)
    }

    /// The node owning `hwaddr` according to the backends (merged), for a MAC no loaded
    /// record has: a backend may know nodes it does not list.
    pub(crate) fn backend_lookup(&self, hwaddr: &HwAddr) -> Result<Option<Node>> {
        if self.config().plugins.backends.is_empty() {
            return Ok(None);
        }
        let profiles = self.store.load()?.profiles;
        for backend in self.backends()? {
            let found = backend
                .lookup_hwaddr(hwaddr)
                .map_err(|source| SiteError::Backend {
                    backend: backend.name().to_owned(),
                    source,
                })?;
            let Some(node) = found else { continue };
            match accept_node(backend.name(), node, &profiles, hwaddr) {
                Ok(merged) => return Ok(Some(merged)),
                Err(rejected) => {
                    tracing::warn!(backend = %rejected.backend, record = %rejected.record, reason = %rejected.reason, "backend lookup refused");
                }
            }
        }
        Ok(None)
    }

    /// Gives `hwaddr`, which no node has, to the first node (by id) of the built-in store marked
    /// discoverable, as Warewulf does: the address goes on its primary network device
    /// (`default` when it has none), the mark is cleared, the store written atomically. When no
    /// stored node takes it, it is offered to the backends (`accept-discovered`). The id of the
    /// node that took it, if any; nothing is written when none did.
    pub fn discover(&self, hwaddr: &HwAddr) -> Result<Option<String>> {
        enum Outcome {
            Unclaimed,
            Failed(SiteError),
        }
        impl From<wulf_core::StoreError> for Outcome {
            fn from(e: wulf_core::StoreError) -> Self {
                Outcome::Failed(e.into())
            }
        }
        let claimed = self.store.update(|inventory| -> Result<_, Outcome> {
            let taken = inventory
                .nodes
                .values()
                .any(|n| n.hwaddrs().any(|h| h == *hwaddr));
            if taken {
                return Err(Outcome::Unclaimed);
            }
            let Some((id, node)) = inventory
                .nodes
                .iter_mut()
                .find(|(_, n)| n.discoverable == Some(true))
            else {
                return Err(Outcome::Unclaimed);
            };
            let device = merge(node, &inventory.profiles)
                .node
                .primary_network()
                .unwrap_or("default")
                .to_owned();
            node.network_devices
                .get_or_insert_with(device.clone(), Default::default)
                .hwaddr = Some(*hwaddr);
            node.discoverable = None;
            Ok((id.clone(), device))
        });
        match claimed {
            Ok((id, device)) => {
                tracing::warn!(node = %id, mac = %hwaddr, %device, "discovered: the unknown MAC is now this node's");
                return Ok(Some(id));
            }
            Err(Outcome::Failed(e)) => return Err(e),
            Err(Outcome::Unclaimed) => {}
        }
        if self.config().plugins.backends.is_empty() {
            return Ok(None);
        }
        let profiles = self.store.load()?.profiles;
        for backend in self.backends()? {
            let accepted =
                backend
                    .accept_discovered(hwaddr)
                    .map_err(|source| SiteError::Backend {
                        backend: backend.name().to_owned(),
                        source,
                    })?;
            let Some(node) = accepted else { continue };
            match accept_node(backend.name(), node, &profiles, hwaddr) {
                Ok(node) => {
                    tracing::warn!(node = %node.id, mac = %hwaddr, backend = backend.name(), "discovered by an inventory backend");
                    return Ok(Some(node.id));
                }
                Err(rejected) => {
                    tracing::warn!(backend = %rejected.backend, record = %rejected.record, reason = %rejected.reason, "backend discovery refused");
                }
            }
        }
        Ok(None)
    }
}

/// A record a backend returned that did not even read: refused with its field.
fn unreadable(backend: &str, error: ValidationError) -> RejectedRecord {
    RejectedRecord {
        backend: backend.to_owned(),
        reason: error.to_string(),
        record: error.id,
    }
}

/// The records that read; the others are added to `rejected`.
fn readable(
    backend: &str,
    records: Vec<BackendRecord>,
    rejected: &mut Vec<RejectedRecord>,
) -> Vec<Node> {
    records
        .into_iter()
        .filter_map(|record| {
            record
                .map_err(|error| rejected.push(unreadable(backend, error)))
                .ok()
        })
        .collect()
}

/// A node a backend returned for `hwaddr`: typed, checked, merged, and really owning the
/// address.
fn accept_node(
    backend: &str,
    record: BackendRecord,
    profiles: &BTreeMap<String, Node>,
    hwaddr: &HwAddr,
) -> Result<Node, RejectedRecord> {
    let node = record.map_err(|e| unreadable(backend, e))?;
    let reject = |reason: String| RejectedRecord {
        backend: backend.to_owned(),
        record: node.id.clone(),
        reason,
    };
    check_record(RecordKind::Node, &node.id, &node, profiles).map_err(|e| reject(e.to_string()))?;
    let merged = merge(&node, profiles).node;
    if !merged.hwaddrs().any(|h| h == *hwaddr) {
        return Err(reject(format!(
            "node `{}` was returned for {hwaddr}, but none of its network devices has that address",
            node.id
        )));
    }
    Ok(merged)
}

/// Adds a backend's profiles and nodes to `inventory`. The built-in store wins; each record is
/// checked on its own (names, addresses, profile references) and must not claim a hardware
/// address another node has. Refused records are returned with their reasons.
pub(crate) fn absorb(
    inventory: &mut Inventory,
    backend: &dyn InventoryBackend,
) -> Result<Vec<RejectedRecord>, ExtensionError> {
    let mut rejected = Vec::new();
    let profiles = readable(backend.name(), backend.list_profiles()?, &mut rejected);
    let nodes = readable(backend.name(), backend.list_nodes()?, &mut rejected);
    let mut reject = |record: &str, reason: String| {
        rejected.push(RejectedRecord {
            backend: backend.name().to_owned(),
            record: record.to_owned(),
            reason,
        })
    };
    let shadowed = "the built-in inventory already defines it; the backend's is ignored";
    // Profiles first, all at once, so they may refer to each other.
    let mut incoming = BTreeMap::new();
    for profile in profiles {
        if inventory.profiles.contains_key(&profile.id) {
            reject(&profile.id, shadowed.into());
        } else {
            incoming.insert(profile.id.clone(), profile);
        }
    }
    let mut all_profiles = inventory.profiles.clone();
    all_profiles.extend(incoming.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (id, profile) in incoming {
        match check_record(RecordKind::Profile, &id, &profile, &all_profiles) {
            Ok(()) => {
                inventory.profiles.insert(id, profile);
            }
            Err(e) => reject(&id, e.to_string()),
        }
    }
    let mut owners: HashMap<HwAddr, String> = HashMap::new();
    for merged in wulf_core::merge::merge_all(inventory.nodes.values(), &inventory.profiles) {
        for h in merged.node.hwaddrs() {
            owners.insert(h, merged.node.id.clone());
        }
    }
    for node in nodes {
        if inventory.nodes.contains_key(&node.id) {
            reject(&node.id, shadowed.into());
            continue;
        }
        if let Err(e) = check_record(RecordKind::Node, &node.id, &node, &inventory.profiles) {
            reject(&node.id, e.to_string());
            continue;
        }
        let merged = merge(&node, &inventory.profiles).node;
        let macs: Vec<HwAddr> = merged.hwaddrs().collect();
        if let Some((mac, owner)) = macs
            .iter()
            .find_map(|m| owners.get(m).map(|owner| (m, owner)))
        {
            reject(
                &node.id,
                format!(
                    "node `{}`: hardware address {mac} belongs to node `{owner}`",
                    node.id
                ),
            );
            continue;
        }
        for mac in macs {
            owners.insert(mac, node.id.clone());
        }
        inventory.nodes.insert(node.id.clone(), node);
    }
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_core::node::NetDevice;

    /// A backend serving fixed records, read as the plugin runtime reads a plugin's.
    struct Fake {
        nodes: Vec<BackendRecord>,
        profiles: Vec<BackendRecord>,
    }

    impl InventoryBackend for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn list_nodes(&self) -> Result<Vec<BackendRecord>, ExtensionError> {
            Ok(self.nodes.clone())
        }
        fn list_profiles(&self) -> Result<Vec<BackendRecord>, ExtensionError> {
            Ok(self.profiles.clone())
        }
        fn lookup_hwaddr(&self, _: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError> {
            Ok(None)
        }
        fn accept_discovered(&self, _: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError> {
            Ok(None)
        }
    }

    /// A node with one device of MAC `mac`, or the error a record with that text gets.
    fn node(id: &str, mac: &str) -> BackendRecord {
        let hwaddr = HwAddr::parse(mac).map_err(|_| ValidationError {
            kind: RecordKind::Node,
            id: id.into(),
            field: "network-devices.default.hwaddr".into(),
            value: mac.into(),
            reason: wulf_core::hwaddr::HWADDR_RULE.into(),
        })?;
        let mut node = Node::new(id);
        node.network_devices.insert(
            "default".into(),
            NetDevice {
                hwaddr: Some(hwaddr),
                ..NetDevice::default()
            },
        );
        Ok(node)
    }

    fn ok(record: BackendRecord) -> Node {
        record.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bad_backend_records_are_refused_one_by_one() {
        let mut inventory = Inventory::shipped();
        inventory
            .nodes
            .insert("n1".into(), ok(node("n1", "aa:bb:cc:dd:ee:01")));
        let backend = Fake {
            nodes: vec![
                node("b1", "aa:bb:cc:dd:ee:10"),
                node("b2", "not-a-mac"),
                node("b3", "aa:bb:cc:dd:ee:01"),
                node("n1", "aa:bb:cc:dd:ee:11"),
            ],
            profiles: vec![Ok(Node::new("bad profile"))],
        };
        let rejected = absorb(&mut inventory, &backend).unwrap_or_else(|e| panic!("{e}"));
        let mut reasons: Vec<(String, String)> =
            rejected.into_iter().map(|r| (r.record, r.reason)).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons[0].0, "b2");
        assert!(
            reasons[0]
                .1
                .contains("`network-devices.default.hwaddr` = \"not-a-mac\""),
            "{reasons:?}"
        );
        assert_eq!(reasons[1].0, "b3");
        assert!(reasons[1].1.contains("belongs to node `n1`"), "{reasons:?}");
        assert_eq!(reasons[2].0, "bad profile");
        assert_eq!(reasons[3].0, "n1");
        assert!(reasons[3].1.contains("built-in"), "{reasons:?}");
        assert!(inventory.nodes.contains_key("b1"));
        assert!(!inventory.nodes.contains_key("b2"));
        assert_eq!(
            inventory.nodes["n1"].network_devices["default"]
                .hwaddr
                .map(|h| h.to_string())
                .as_deref(),
            Some("aa:bb:cc:dd:ee:01")
        );
    }

    #[test]
    fn a_looked_up_node_must_own_the_address() {
        let profiles = Inventory::shipped().profiles;
        let mac = HwAddr::parse("aa:bb:cc:dd:ee:02").unwrap_or_else(|e| panic!("{e}"));
        assert!(accept_node("fake", node("b1", "aa:bb:cc:dd:ee:02"), &profiles, &mac).is_ok());
        let wrong = accept_node("fake", node("b1", "aa:bb:cc:dd:ee:03"), &profiles, &mac);
        assert!(wrong.is_err());
        let bad = accept_node("fake", node("b1", "zz"), &profiles, &mac);
        assert!(bad.is_err_and(|r| r.reason.contains("not a MAC address")));
    }
}
