//! The inventory: nodes and profiles, stored as one TOML file in the state directory.
//!
//! Reads need no lock (writes replace the file atomically); every write is a locked
//! read-modify-write, so concurrent commands never lose each other's edits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::atomic_file::{WriteLock, write_atomic};
use crate::extension::{ExtensionError, InventoryBackend};
use crate::merge::{Merged, merge};
use crate::node::Node;
use crate::state_dir::StateDir;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("node `{id}` does not exist")]
    NodeNotFound { id: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid inventory: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the inventory cannot be stored as TOML ({message}); nothing was written")]
    Serialize { message: String },
    #[error(transparent)]
    Invalid(#[from] crate::validation::ValidationError),
}

/// Every node and profile, unmerged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inventory {
    pub profiles: BTreeMap<String, Node>,
    pub nodes: BTreeMap<String, Node>,
}

impl Inventory {
    /// What a new state directory starts with, as Warewulf ships its `nodes.conf`: a `default`
    /// profile, which `wulf node add` gives every new node, whose overlay lists are the
    /// first-party overlays, so a new node boots configured.
    pub fn shipped() -> Inventory {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let mut default = Node::new("default");
        default.comment = Some("This profile is given to every new node".into());
        default.system_overlays = names(&[
            "wwinit",
            "hostname",
            "hosts",
            "resolv",
            "network",
            "fstab",
            "ssh-host-keys",
        ]);
        default.runtime_overlays = names(&["ssh-authorized-keys"]);
        Inventory {
            profiles: [("default".to_string(), default)].into(),
            nodes: BTreeMap::new(),
        }
    }

    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Inventory, String> {
        let mut inventory: Inventory =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        for (id, node) in inventory
            .nodes
            .iter_mut()
            .chain(inventory.profiles.iter_mut())
        {
            node.id = id.clone();
        }
        Ok(inventory)
    }

    /// The TOML form. Fails for values TOML cannot hold (a `null` inside a free-form
    /// resource, say), which must then never reach the disk.
    pub fn to_toml(&self) -> Result<String, InventoryError> {
        toml::to_string(self).map_err(|e| InventoryError::Serialize {
            message: e.to_string(),
        })
    }

    /// Adds the nodes and profiles an inventory backend serves. The built-in store wins: a
    /// record it already has is skipped, and its name returned so the caller can warn.
    pub fn absorb(
        &mut self,
        backend: &dyn InventoryBackend,
    ) -> Result<Vec<String>, ExtensionError> {
        let mut shadowed = Vec::new();
        for (records, incoming) in [
            (&mut self.profiles, backend.list_profiles()?),
            (&mut self.nodes, backend.list_nodes()?),
        ] {
            for node in incoming {
                if records.contains_key(&node.id) {
                    shadowed.push(node.id);
                } else {
                    records.insert(node.id.clone(), node);
                }
            }
        }
        Ok(shadowed)
    }

    /// Every node merged with its profiles, in id order (merged once per profile list).
    pub fn merged_nodes(&self) -> Vec<Node> {
        crate::merge::merge_all(self.nodes.values(), &self.profiles)
            .into_iter()
            .map(|m| m.node)
            .collect()
    }

    /// A node merged with its profiles.
    pub fn merged(&self, id: &str) -> Result<Merged, InventoryError> {
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| InventoryError::NodeNotFound { id: id.to_string() })?;
        Ok(merge(node, &self.profiles))
    }
}

/// The inventory file of a state directory.
#[derive(Debug, Clone)]
pub struct InventoryStore {
    path: PathBuf,
    lock: PathBuf,
}

impl InventoryStore {
    pub fn new(state: &StateDir) -> Self {
        InventoryStore {
            path: state.nodes_file(),
            lock: state.lock_file(),
        }
    }

    /// The current inventory; the shipped one ([`Inventory::shipped`]) when nothing was
    /// stored yet.
    pub fn load(&self) -> Result<Inventory, InventoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Inventory::shipped()),
            Err(source) => {
                return Err(InventoryError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Inventory::from_toml(&text).map_err(|message| InventoryError::Parse {
            path: self.path.clone(),
            message,
        })
    }

    /// Applies `edit` under the write lock, validates the result and stores it atomically.
    /// Nothing is written when `edit` fails or the result is invalid.
    pub fn update<R, E: From<InventoryError>>(
        &self,
        edit: impl FnOnce(&mut Inventory) -> Result<R, E>,
    ) -> Result<R, E> {
        let _lock = WriteLock::acquire(&self.lock).map_err(|source| InventoryError::Write {
            path: self.lock.clone(),
            source,
        })?;
        let mut inventory = self.load()?;
        let result = edit(&mut inventory)?;
        for (id, node) in inventory
            .nodes
            .iter_mut()
            .chain(inventory.profiles.iter_mut())
        {
            node.id = id.clone();
        }
        crate::validation::validate(&inventory).map_err(|e| E::from(InventoryError::from(e)))?;
        let text = inventory.to_toml()?;
        write_atomic(&self.path, text.as_bytes()).map_err(|source| InventoryError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(result)
    }
}

/// The built-in store, as the first inventory backend.
impl InventoryBackend for InventoryStore {
    fn name(&self) -> &str {
        "toml"
    }

    fn list_nodes(&self) -> Result<Vec<Node>, ExtensionError> {
        Ok(self
            .load()
            .map_err(|e| self.failure(e))?
            .nodes
            .into_values()
            .collect())
    }

    fn list_profiles(&self) -> Result<Vec<Node>, ExtensionError> {
        Ok(self
            .load()
            .map_err(|e| self.failure(e))?
            .profiles
            .into_values()
            .collect())
    }

    fn lookup_hwaddr(&self, hwaddr: &str) -> Result<Option<Node>, ExtensionError> {
        let Ok(wanted) = crate::hwaddr::HwAddr::parse(hwaddr) else {
            return Ok(None);
        };
        Ok(self.list_nodes()?.into_iter().find(|n| {
            n.hwaddrs()
                .any(|h| crate::hwaddr::HwAddr::parse(&h) == Ok(wanted))
        }))
    }

    /// Discovery assigns addresses to nodes marked discoverable; the boot server does that
    /// through `update`, not through this trait.
    fn accept_discovered(&self, _hwaddr: &str) -> Result<Option<Node>, ExtensionError> {
        Ok(None)
    }
}

impl InventoryStore {
    fn failure(&self, error: InventoryError) -> ExtensionError {
        ExtensionError::Host {
            plugin: "toml".into(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_round_trips_and_failed_edits_write_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = InventoryStore::new(&StateDir::new(dir.path()));
        assert_eq!(store.load().ok(), Some(Inventory::shipped()));
        store
            .update(|inv| {
                inv.profiles.insert(
                    "default".into(),
                    Node {
                        image: Some("rocky".into()),
                        ..Node::default()
                    },
                );
                inv.nodes.insert(
                    "n1".into(),
                    Node {
                        profiles: vec!["default".into()],
                        ..Node::default()
                    },
                );
                Ok::<_, InventoryError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let before = std::fs::read(dir.path().join("nodes.toml")).unwrap_or_default();
        let failed = store.update(|inv| {
            inv.nodes.clear();
            Err::<(), _>(InventoryError::NodeNotFound { id: "x".into() })
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(dir.path().join("nodes.toml")).unwrap_or_default(),
            before
        );
        let inventory = store.load().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inventory.nodes["n1"].id, "n1");
        assert_eq!(
            inventory
                .merged("n1")
                .map(|m| m.node.image)
                .ok()
                .flatten()
                .as_deref(),
            Some("rocky")
        );
        assert!(matches!(
            inventory.merged("n2"),
            Err(InventoryError::NodeNotFound { .. })
        ));
    }
}
