//! A set of a node record's top-level fields, named as in `nodes.toml`: what an overlay
//! generator's shared files read of each node (its manifest's `shared-fields`). The host sends
//! the plugin only those fields and calls it again only when one of them changed, so a comment
//! or a tag set on one node does not write the cluster's hosts file again.

use std::fmt;

use crate::node::Node;

/// A set of [`Node`] fields; the id is always part of a projection.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct NodeFields(u32);

macro_rules! node_fields {
    ($($name:literal => $field:ident,)*) => {
        /// Every field's name, in bit order.
        const NAMES: &[&str] = &[$($name),*];

        impl NodeFields {
            /// A record with only these fields of `node` (and its id); the others are empty.
            pub fn project(self, node: &Node) -> Node {
                // Every field by name, with no `..`: a field added to `Node` and not here
                // does not compile.
                let Node { id, $($field),* } = node;
                let mut out = Node::new(id.clone());
                let mut bit = 0;
                $(
                    if self.0 & (1 << bit) != 0 {
                        out.$field = $field.clone();
                    }
                    bit += 1;
                )*
                let _ = bit;
                out
            }

            /// These fields of `node` as JSON, `"name":value` each, into `out`: what a
            /// projection hashes to, without copying the record.
            pub fn write_json(self, node: &Node, out: &mut dyn std::io::Write) -> std::io::Result<()> {
                let mut bit = 0;
                $(
                    if self.0 & (1 << bit) != 0 {
                        out.write_all(concat!("\"", $name, "\":").as_bytes())?;
                        serde_json::to_writer(&mut *out, &node.$field)?;
                    }
                    bit += 1;
                )*
                let _ = bit;
                Ok(())
            }
        }
    };
}

node_fields! {
    "profiles" => profiles,
    "comment" => comment,
    "cluster" => cluster,
    "image" => image,
    "ipxe-template" => ipxe_template,
    "system-overlays" => system_overlays,
    "runtime-overlays" => runtime_overlays,
    "init" => init,
    "root" => root,
    "kernel" => kernel,
    "primary-network" => primary_network,
    "network-devices" => network_devices,
    "ipmi" => ipmi,
    "tags" => tags,
    "resources" => resources,
    "disks" => disks,
    "filesystems" => filesystems,
    "asset-key" => asset_key,
    "discoverable" => discoverable,
}

impl NodeFields {
    /// The set of `names`; the first name that is no field is the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<NodeFields, String> {
        let mut bits = 0;
        for name in names {
            let bit = NAMES
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| name.to_owned())?;
            bits |= 1 << bit;
        }
        Ok(NodeFields(bits))
    }

    /// Every field name a set can hold, for messages.
    pub fn names() -> &'static [&'static str] {
        NAMES
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }
}

impl fmt::Debug for NodeFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The names, comma-separated: `network-devices, ipmi`.
impl fmt::Display for NodeFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projection_keeps_the_named_fields_and_the_id() {
        let mut node = Node::new("n1");
        node.comment = Some("rack 7".into());
        node.primary_network = Some("default".into());
        node.ipmi.ipaddr = Some("10.9.0.1".parse().unwrap_or_else(|e| panic!("{e}")));
        node.tags.insert("rack".into(), "7".into());
        let fields = NodeFields::parse(["ipmi", "primary-network"]).unwrap_or_default();
        let projected = fields.project(&node);
        assert_eq!(projected.id, "n1");
        assert_eq!(projected.ipmi, node.ipmi);
        assert_eq!(projected.primary_network, node.primary_network);
        assert_eq!(projected.comment, None);
        assert!(projected.tags.is_empty());
        assert_eq!(fields.to_string(), "primary-network, ipmi");
    }

    #[test]
    fn every_field_has_a_name_and_unknown_names_are_refused() {
        let all = NodeFields::parse(NodeFields::names().iter().copied())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut node = Node::new("n1");
        node.comment = Some("c".into());
        node.discoverable = Some(true);
        node.asset_key = Some("k".into());
        node.kernel.args = vec!["quiet".into()];
        assert_eq!(all.project(&node), node);
        assert_eq!(
            NodeFields::parse(["network-devices", "hostname"]),
            Err("hostname".to_owned())
        );
        assert!(NodeFields::default().is_empty());
    }
}
