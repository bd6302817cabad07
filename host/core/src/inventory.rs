//! The inventory as a value: nodes and profiles, unmerged, and how to merge them. Where it
//! is stored is [`crate::inventory_store`]'s business; whether it is sound, [`crate::validation`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::merge::{Merged, merge};
use crate::node::Node;
use crate::record_error::{RecordKind, ValidationError};

/// Why an inventory's text was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not TOML, or not the inventory's shape.
    #[error("{0}")]
    Syntax(String),
    /// A record with a field of the wrong kind (a bad address, an unknown key).
    #[error(transparent)]
    Record(ValidationError),
}

/// The file's two tables, records still untyped.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawInventory {
    profiles: BTreeMap<String, toml::Value>,
    nodes: BTreeMap<String, toml::Value>,
}

/// Names the record, field and value of a record that did not read. Only on this path is the
/// text parsed again, to find the value as written.
fn record_error(
    text: &str,
    kind: RecordKind,
    id: &str,
    error: &serde_path_to_error::Error<toml::de::Error>,
) -> ValidationError {
    let path: Vec<String> = error
        .path()
        .iter()
        .map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => key.clone(),
            serde_path_to_error::Segment::Seq { index } => index.to_string(),
            serde_path_to_error::Segment::Enum { variant } => variant.clone(),
            serde_path_to_error::Segment::Unknown => "?".into(),
        })
        .collect();
    let raw: Option<RawInventory> = toml::from_str(text).ok();
    let record = raw.and_then(|raw| match kind {
        RecordKind::Profile => raw.profiles.get(id).cloned(),
        RecordKind::Node => raw.nodes.get(id).cloned(),
    });
    let value = record
        .as_ref()
        .and_then(|r| path.iter().try_fold(r, |v, key| v.get(key.as_str())))
        .map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    ValidationError {
        kind,
        id: id.to_owned(),
        field: path.join("."),
        value,
        reason: error.inner().message().trim_end().to_string(),
    }
}

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
            "agent",
        ]);
        default.runtime_overlays = names(&["ssh-authorized-keys"]);
        Inventory {
            profiles: [("default".to_string(), default)].into(),
            nodes: BTreeMap::new(),
        }
    }

    /// Parses the TOML form: the file as a whole, then each record into its typed form, so a
    /// bad value is reported with its record and field (`node `n2`: `network-devices.default
    /// .hwaddr` = "zz": not a MAC address ...`).
    pub fn from_toml(text: &str) -> Result<Inventory, ParseError> {
        match Inventory::from_toml_by_record(text) {
            Some(inventory) => Ok(inventory),
            None => Inventory::from_toml_whole(text),
        }
    }

    /// The file as wulf writes it, a record at a time: the TOML parser holds a table of the
    /// whole document while it reads, 50 times the text's size (1.1 GB for 100,000 nodes),
    /// so each record's lines are parsed on their own instead. A record's tables start at
    /// column 0 with `[nodes.<id>` or `[profiles.<id>` and are consecutive, as wulf writes
    /// them. `None` for anything else (a multi-line string, keys before the first record, a
    /// quoted name, a record's tables split apart) and for any error: then the whole text is
    /// parsed as one document, which also gives errors their line numbers, so this path
    /// never accepts a file the whole parse would refuse.
    fn from_toml_by_record(text: &str) -> Option<Inventory> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let mut inventory = Inventory::default();
        // The record whose lines are being gathered: (table, id, first byte).
        let mut current: Option<(&str, &str, usize)> = None;
        let mut offset = 0;
        let mut take = |record: Option<(&str, &str, usize)>, end: usize| -> Option<()> {
            let Some((_, _, start)) = record else {
                return Some(());
            };
            let part = Inventory::from_toml_whole(&text[start..end]).ok()?;
            for (records, into) in [
                (part.profiles, &mut inventory.profiles),
                (part.nodes, &mut inventory.nodes),
            ] {
                for (id, node) in records {
                    // Seen before: the record's tables were apart; the whole parse decides.
                    if into.insert(id, node).is_some() {
                        return None;
                    }
                }
            }
            Some(())
        };
        for line in text.split_inclusive('\n') {
            let header = ["nodes", "profiles"].into_iter().find_map(|table| {
                let id = line
                    .strip_prefix('[')?
                    .strip_prefix(table)?
                    .strip_prefix('.')?;
                let end = id.find(['.', ']'])?;
                let id = &id[..end];
                let bare = !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                Some((table, bare.then_some(id)))
            });
            match header {
                // A name this reader does not take apart (quoted, say).
                Some((_, None)) => return None,
                Some((table, Some(id)))
                    if !current.is_some_and(|(t, i, _)| t == table && i == id) =>
                {
                    take(current, offset)?;
                    current = Some((table, id, offset));
                }
                Some(_) => {}
                // Before the first record only comments and blank lines.
                None if current.is_none() => {
                    let line = line.trim();
                    if !line.is_empty() && !line.starts_with('#') {
                        return None;
                    }
                }
                None => {}
            }
            offset += line.len();
        }
        take(current, offset)?;
        Some(inventory)
    }

    /// The whole text as one document.
    fn from_toml_whole(text: &str) -> Result<Inventory, ParseError> {
        let raw: RawInventory = toml::from_str(text)
            .map_err(|e| ParseError::Syntax(e.to_string().trim_end().to_string()))?;
        let mut inventory = Inventory::default();
        for (kind, records) in [
            (RecordKind::Profile, raw.profiles),
            (RecordKind::Node, raw.nodes),
        ] {
            for (id, value) in records {
                let mut node: Node = match serde_path_to_error::deserialize(value) {
                    Ok(node) => node,
                    Err(e) => return Err(ParseError::Record(record_error(text, kind, &id, &e))),
                };
                node.id.clone_from(&id);
                match kind {
                    RecordKind::Profile => inventory.profiles.insert(id, node),
                    RecordKind::Node => inventory.nodes.insert(id, node),
                };
            }
        }
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
        let _span = tracing::debug_span!("merge", nodes = self.nodes.len()).entered();
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
    fn a_record_at_a_time_reads_what_the_whole_document_reads() {
        let mut inventory = Inventory::from_toml(
            "[profiles.default]\nimage = \"rocky\"\n[profiles.default.network-devices.default]\nnetmask = \"255.255.0.0\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for n in 0..20 {
            let text = format!(
                "[nodes.n{n}]\nprofiles = [\"default\"]\ntags = {{ rack = \"r{n}\" }}\n\
                 [nodes.n{n}.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:{n:02x}\"\n\
                 [nodes.n{n}.ipmi]\nipaddr = \"10.1.0.{n}\"\n"
            );
            let node = Inventory::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
            inventory.nodes.extend(node.nodes);
        }
        let written = format!("# a comment\n\n{}", inventory.to_toml().unwrap_or_default());
        assert_eq!(
            Inventory::from_toml_by_record(&written),
            Some(inventory.clone())
        );
        assert_eq!(Inventory::from_toml_whole(&written).ok(), Some(inventory));

        // Shapes this reader leaves to the whole parse, which reads them all the same.
        for text in [
            // A record's tables apart.
            "[nodes.a]\ncomment = \"x\"\n[nodes.b]\n[nodes.a.ipmi]\nport = 623\n",
            // A quoted name.
            "[nodes.\"a\"]\ncomment = \"x\"\n",
            // Keys before the first record.
            "nodes.a.comment = \"x\"\n[nodes.b]\n",
            // A multi-line string that holds a header-like line.
            "[nodes.a]\ncomment = \"\"\"\n[nodes.b]\n\"\"\"\n",
            // The whole table as one.
            "[nodes]\na = { comment = \"x\" }\n",
        ] {
            assert_eq!(Inventory::from_toml_by_record(text), None, "{text}");
            assert!(Inventory::from_toml(text).is_ok(), "{text}");
        }
        // An error is the whole parse's, with its record and field.
        let bad = "[nodes.a]\n[nodes.b.network-devices.default]\nhwaddr = \"zz\"\n";
        assert_eq!(Inventory::from_toml_by_record(bad), None);
        let error = Inventory::from_toml(bad).err();
        assert!(
            matches!(&error, Some(ParseError::Record(e)) if e.id == "b" && e.field == "network-devices.default.hwaddr"),
            "{error:?}"
        );
        // A table defined twice is refused, as TOML says.
        assert!(Inventory::from_toml("[nodes.a]\n[nodes.a]\n").is_err());
    }

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
