//! The inventory as a value: nodes and profiles, unmerged, and how to merge them. Where it
//! is stored is [`crate::inventory_store`]'s business; whether it is sound, [`crate::validation`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::merge::{Merged, merge};
use crate::node::Node;

/// A node that is not in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node `{id}` does not exist")]
pub struct UnknownNode {
    pub id: String,
}

/// The TOML form could not be produced.
#[derive(Debug, thiserror::Error)]
#[error("the inventory cannot be stored as TOML; nothing was written")]
pub struct SerializeError(#[from] pub toml::ser::Error);

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
        inventory.assign_ids();
        Ok(inventory)
    }

    /// The TOML form. Fails for values TOML cannot hold (a `null` inside a free-form
    /// resource, say), which must then never reach the disk.
    pub fn to_toml(&self) -> Result<String, SerializeError> {
        Ok(toml::to_string(self)?)
    }

    /// Sets every record's `id` from its key (after an edit that inserted records).
    pub fn assign_ids(&mut self) {
        for (id, node) in self.nodes.iter_mut().chain(self.profiles.iter_mut()) {
            node.id.clone_from(id);
        }
    }

    /// Every node merged with its profiles, in id order (merged once per profile list).
    pub fn merged_nodes(&self) -> Vec<Node> {
        crate::merge::merge_all(self.nodes.values(), &self.profiles)
            .into_iter()
            .map(|m| m.node)
            .collect()
    }

    /// A node merged with its profiles.
    pub fn merged(&self, id: &str) -> Result<Merged, UnknownNode> {
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| UnknownNode { id: id.to_string() })?;
        Ok(merge(node, &self.profiles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_applies_profiles_and_names_unknown_nodes() {
        let inventory = Inventory::from_toml(
            "[profiles.default]\nimage = \"rocky\"\n[nodes.n1]\nprofiles = [\"default\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inventory.nodes["n1"].id, "n1");
        assert_eq!(
            inventory
                .merged("n1")
                .ok()
                .and_then(|m| m.node.image)
                .as_deref(),
            Some("rocky")
        );
        assert_eq!(
            inventory.merged("n2").err(),
            Some(UnknownNode { id: "n2".into() })
        );
    }
}
