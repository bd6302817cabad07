//! Nodes and profiles: adding, changing, clearing, replacing, importing and deleting them, with
//! the rules that go with it (a new node gets the `default` profile; a profile in use is not
//! deleted; names must exist or must not), each applied under the store's lock.

use std::collections::BTreeMap;

use wulf_core::merge::{FieldSource, Merged, field_sources, merge};
use wulf_core::validation::RecordKind;
use wulf_core::{Inventory, Node, hostlist};

use crate::Site;
use crate::error::{Result, SiteError};
use crate::patch::Patch;

/// Which records a change applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every record of the kind.
    All,
    /// Names or hostlists (`n[001-100]`).
    Patterns(Vec<String>),
}

/// Records of one kind.
pub type Kind = RecordKind;

/// One record as `show` presents it: merged (nodes) with the profiles applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub record: Node,
    pub applied: Vec<String>,
    /// Profiles named but not defined.
    pub missing: Vec<String>,
}

/// What an import of node records did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
}

fn records(kind: Kind, inventory: &Inventory) -> &BTreeMap<String, Node> {
    match kind {
        Kind::Node => &inventory.nodes,
        Kind::Profile => &inventory.profiles,
    }
}

/// The records among `all` that `patterns` name (all when empty).
fn chosen<'a>(
    all: &'a BTreeMap<String, Node>,
    patterns: &[String],
) -> Result<impl Iterator<Item = &'a Node>> {
    let wanted: std::collections::HashSet<String> = expand(patterns)?.into_iter().collect();
    Ok(all
        .values()
        .filter(move |n| wanted.is_empty() || wanted.contains(&n.id)))
}

fn records_mut(kind: Kind, inventory: &mut Inventory) -> &mut BTreeMap<String, Node> {
    match kind {
        Kind::Node => &mut inventory.nodes,
        Kind::Profile => &mut inventory.profiles,
    }
}

/// An existing record, to change.
fn record_mut<'a>(kind: Kind, inventory: &'a mut Inventory, name: &str) -> Result<&'a mut Node> {
    records_mut(kind, inventory)
        .get_mut(name)
        .ok_or_else(|| SiteError::RecordNotFound {
            kind,
            name: name.to_owned(),
        })
}

/// The most names one request may expand to, whatever its patterns.
pub(crate) const MAX_NAMES: usize = 100_000;

/// Names from names and hostlists, each once, in the order given; at most [`MAX_NAMES`].
pub fn expand(patterns: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pattern in patterns {
        for name in hostlist::expand(pattern)? {
            if seen.insert(name.clone()) {
                names.push(name);
                if names.len() > MAX_NAMES {
                    return Err(SiteError::BadValue {
                        field: "names".into(),
                        value: pattern.clone(),
                        reason: format!("more than {MAX_NAMES} names at once"),
                    });
                }
            }
        }
    }
    Ok(names)
}

impl Site {
    /// Adds records named by `patterns`. A new node with no profiles given gets `default`
    /// when that profile exists (as Warewulf's `nodes.conf` ships it); addresses in `patch`
    /// count up across the names. The names added, in order.
    pub fn add_records(
        &self,
        kind: Kind,
        patterns: &[String],
        patch: &Patch,
    ) -> Result<Vec<String>> {
        let names = expand(patterns)?;
        self.store.update(|inventory| -> Result<()> {
            let default_profile = kind == Kind::Node
                && patch.profiles.is_none()
                && inventory.profiles.contains_key("default");
            for (offset, name) in names.iter().enumerate() {
                if records(kind, inventory).contains_key(name) {
                    return Err(SiteError::RecordExists {
                        kind,
                        name: name.clone(),
                    });
                }
                let mut node = Node::new(name.clone());
                if default_profile {
                    node.profiles = vec!["default".into()];
                }
                patch.apply(&mut node, Some(offset))?;
                if kind == Kind::Node {
                    patch.apply_node_only(&mut node);
                }
                records_mut(kind, inventory).insert(name.clone(), node);
            }
            Ok(())
        })?;
        Ok(names)
    }

    /// Applies `patch` to existing records; how many were changed.
    pub fn set_records(&self, kind: Kind, selection: &Selection, patch: &Patch) -> Result<usize> {
        if matches!(selection, Selection::Patterns(p) if p.is_empty()) {
            return Err(SiteError::NothingSelected { kind });
        }
        self.store.update(|inventory| -> Result<usize> {
            let names = match selection {
                Selection::All => records(kind, inventory).keys().cloned().collect(),
                Selection::Patterns(patterns) => expand(patterns)?,
            };
            for name in &names {
                let node = record_mut(kind, inventory, name)?;
                patch.apply(node, None)?;
                if kind == Kind::Node {
                    patch.apply_node_only(node);
                }
            }
            Ok(names.len())
        })
    }

    /// Deletes records. A profile that a node or profile outside the deletion uses is refused.
    /// The names deleted.
    pub fn delete_records(&self, kind: Kind, patterns: &[String]) -> Result<Vec<String>> {
        let names = expand(patterns)?;
        self.store.update(|inventory| -> Result<()> {
            for name in &names {
                if !records(kind, inventory).contains_key(name) {
                    return Err(SiteError::RecordNotFound {
                        kind,
                        name: name.clone(),
                    });
                }
                if kind == Kind::Profile {
                    let users = profile_users(inventory, name, &names);
                    if !users.is_empty() {
                        return Err(SiteError::ProfileInUse {
                            profile: name.clone(),
                            users,
                        });
                    }
                }
            }
            for name in &names {
                records_mut(kind, inventory).remove(name);
            }
            Ok(())
        })?;
        Ok(names)
    }

    /// Clears fields named as `node show --all` lists them (`image`, `kernel.args`,
    /// `network-devices.ib`, `tags.rack`); each must be set on every record named.
    pub fn unset_fields(
        &self,
        kind: Kind,
        patterns: &[String],
        fields: &[String],
    ) -> Result<usize> {
        let names = expand(patterns)?;
        self.store.update(|inventory| -> Result<()> {
            for name in &names {
                let node = record_mut(kind, inventory, name)?;
                let mut value =
                    serde_json::to_value(&*node).map_err(|source| SiteError::BadRecord {
                        name: name.clone(),
                        source,
                    })?;
                for field in fields {
                    if !remove_path(&mut value, field) {
                        return Err(SiteError::FieldNotSet {
                            kind,
                            name: name.clone(),
                            field: field.clone(),
                        });
                    }
                }
                let mut cleared: Node =
                    serde_json::from_value(value).map_err(|source| SiteError::BadRecord {
                        name: name.clone(),
                        source,
                    })?;
                cleared.id.clone_from(name);
                *node = cleared;
            }
            Ok(())
        })?;
        Ok(names.len())
    }

    /// Replaces the records `names` with `edited` (what `edit` read back from the editor):
    /// records left out are deleted, new ones added. Checked as a whole before writing.
    pub fn replace_records(
        &self,
        kind: Kind,
        names: &[String],
        edited: BTreeMap<String, Node>,
    ) -> Result<()> {
        self.store.update(|inventory| -> Result<()> {
            let of_kind = records_mut(kind, inventory);
            for name in names {
                of_kind.remove(name);
            }
            for (name, mut node) in edited {
                node.id.clone_from(&name);
                of_kind.insert(name, node);
            }
            if kind == Kind::Profile {
                for name in names {
                    if !inventory.profiles.contains_key(name) {
                        let users = profile_users(inventory, name, &[]);
                        if !users.is_empty() {
                            return Err(SiteError::ProfileInUse {
                                profile: name.clone(),
                                users,
                            });
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Reads a map of node name to fields: creates missing nodes, and lays the given fields
    /// over existing ones (objects merge key by key, anything else is replaced).
    pub fn import_nodes(
        &self,
        incoming: BTreeMap<String, serde_json::Value>,
    ) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        self.store.update(|inventory| -> Result<()> {
            for (id, fields) in incoming {
                let mut value = match inventory.nodes.get(&id) {
                    Some(node) => {
                        report.updated += 1;
                        serde_json::to_value(node).map_err(|source| SiteError::BadRecord {
                            name: id.clone(),
                            source,
                        })?
                    }
                    None => {
                        report.created += 1;
                        serde_json::Value::Object(Default::default())
                    }
                };
                overlay_json(&mut value, fields);
                let mut node: Node =
                    serde_json::from_value(value).map_err(|source| SiteError::BadRecord {
                        name: id.clone(),
                        source,
                    })?;
                node.id.clone_from(&id);
                inventory.nodes.insert(id, node);
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// Adds the profiles and nodes of another tool's inventory (a Warewulf `nodes.conf`). The
    /// shipped `default` profile, untouched, gives way to an imported one; an existing record
    /// is replaced only with `force`.
    pub fn import_inventory(&self, imported: &Inventory, force: bool) -> Result<()> {
        self.store.update(|inventory| -> Result<()> {
            let shipped = Inventory::shipped();
            if imported.profiles.contains_key("default")
                && inventory.profiles.get("default") == shipped.profiles.get("default")
            {
                inventory.profiles.remove("default");
            }
            for kind in [Kind::Profile, Kind::Node] {
                for (id, record) in records(kind, imported) {
                    let existing = records_mut(kind, inventory);
                    if existing.contains_key(id) && !force {
                        return Err(SiteError::ImportConflict {
                            kind,
                            name: id.clone(),
                        });
                    }
                    existing.insert(id.clone(), record.clone());
                }
            }
            Ok(())
        })
    }

    /// Records of a kind matching `patterns` (all when empty): nodes merged with their
    /// profiles, secrets masked.
    pub fn list_records(&self, kind: Kind, patterns: &[String]) -> Result<Vec<Node>> {
        Ok(match kind {
            Kind::Node => self
                .merged_nodes(patterns)?
                .into_iter()
                .map(|m| m.node.redacted())
                .collect(),
            Kind::Profile => {
                let inventory = self.inventory()?;
                chosen(&inventory.profiles, patterns)?
                    .cloned()
                    .map(Node::redacted)
                    .collect()
            }
        })
    }

    /// The nodes matching `patterns` (all when empty), merged with their profiles, secrets
    /// and all: for views that decide themselves what to show.
    pub(crate) fn merged_nodes(&self, patterns: &[String]) -> Result<Vec<Merged>> {
        let inventory = self.inventory()?;
        Ok(wulf_core::merge::merge_all(
            chosen(&inventory.nodes, patterns)?,
            &inventory.profiles,
        ))
    }

    /// One record, secrets masked: a node merged with its profiles, a profile as it is.
    pub fn show_record(&self, kind: Kind, name: &str) -> Result<RecordView> {
        let inventory = self.inventory_of(&[name])?;
        let record =
            records(kind, &inventory)
                .get(name)
                .ok_or_else(|| SiteError::RecordNotFound {
                    kind,
                    name: name.to_owned(),
                })?;
        Ok(match kind {
            Kind::Node => {
                let merged = merge(record, &inventory.profiles);
                RecordView {
                    record: merged.node.redacted(),
                    applied: merged.applied,
                    missing: merged.missing,
                }
            }
            Kind::Profile => RecordView {
                record: record.clone().redacted(),
                applied: Vec::new(),
                missing: Vec::new(),
            },
        })
    }

    /// Every field of a node with where its value comes from.
    pub fn field_sources(&self, name: &str) -> Result<Vec<FieldSource>> {
        let inventory = self.inventory_of(&[name])?;
        let node = inventory
            .nodes
            .get(name)
            .ok_or_else(|| SiteError::RecordNotFound {
                kind: Kind::Node,
                name: name.to_owned(),
            })?;
        Ok(field_sources(node, &inventory.profiles))
    }

    /// Records as stored (unmerged), by name: all of a kind when `patterns` is empty; each name
    /// must exist.
    pub fn stored_records(
        &self,
        kind: Kind,
        patterns: &[String],
    ) -> Result<BTreeMap<String, Node>> {
        let inventory = self.store.load()?;
        let wanted = expand(patterns)?;
        if wanted.is_empty() {
            return Ok(records(kind, &inventory).clone());
        }
        wanted
            .into_iter()
            .map(|name| {
                let node = records(kind, &inventory)
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| SiteError::RecordNotFound {
                        kind,
                        name: name.clone(),
                    })?;
                Ok((name, node))
            })
            .collect()
    }
}

/// Records (other than those in `except`) that list `profile`, negated or not.
fn profile_users(inventory: &Inventory, profile: &str, except: &[String]) -> Vec<String> {
    inventory
        .nodes
        .iter()
        .chain(&inventory.profiles)
        .filter(|(_, n)| {
            n.profiles
                .iter()
                .any(|p| p.trim_start_matches('~') == profile)
        })
        .map(|(id, _)| id.clone())
        .filter(|id| !except.contains(id))
        .collect()
}

/// Removes a dotted path from a record's JSON form; `false` when it was not set.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (
            parent
                .split('.')
                .try_fold(&mut *value, |v, key| v.get_mut(key)),
            last,
        ),
        None => (Some(value), path),
    };
    parent
        .and_then(|p| p.as_object_mut())
        .and_then(|map| map.remove(last))
        .is_some()
}

/// Lays `incoming` over `existing`: objects merge key by key, anything else is replaced.
fn overlay_json(existing: &mut serde_json::Value, incoming: serde_json::Value) {
    match (existing, incoming) {
        (serde_json::Value::Object(existing), serde_json::Value::Object(incoming)) => {
            for (key, value) in incoming {
                overlay_json(
                    existing.entry(key).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (existing, incoming) => *existing = incoming,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SiteOptions;

    pub(crate) fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let site = Site::open(SiteOptions {
            state: dir.path().to_path_buf(),
            config: None,
            embedded: &[],
            agent: b"",
            stage1: b"",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        (dir, site)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)))
    }

    #[test]
    fn new_nodes_get_the_default_profile_and_counted_addresses() {
        let (_dir, site) = site();
        let patch = Patch {
            ipaddr: Some("10.0.0.9".into()),
            ..Patch::default()
        };
        let added = ok(site.add_records(Kind::Node, &names(&["n[1-3]"]), &patch));
        assert_eq!(added, names(&["n1", "n2", "n3"]));
        let stored = ok(site.stored_records(Kind::Node, &[]));
        assert_eq!(stored["n3"].profiles, names(&["default"]));
        assert_eq!(
            stored["n3"].network_devices["default"].ipaddr,
            "10.0.0.11".parse().ok()
        );
        let explicit = Patch {
            profiles: Some(Vec::new()),
            ..Patch::default()
        };
        ok(site.add_records(Kind::Node, &names(&["bare"]), &explicit));
        assert!(
            ok(site.stored_records(Kind::Node, &names(&["bare"])))["bare"]
                .profiles
                .is_empty()
        );
        assert!(matches!(
            site.add_records(Kind::Node, &names(&["n2"]), &Patch::default()),
            Err(SiteError::RecordExists { .. })
        ));
        // A bad address in a patch names the field and changes nothing.
        let bad = Patch {
            ipaddr: Some("10.0.0.300".into()),
            ..Patch::default()
        };
        assert!(matches!(
            site.add_records(Kind::Node, &names(&["n9"]), &bad),
            Err(SiteError::BadValue { .. })
        ));
        assert_eq!(ok(site.stored_records(Kind::Node, &[])).len(), 4);
    }

    #[test]
    fn a_profile_in_use_is_not_deleted() {
        let (_dir, site) = site();
        ok(site.add_records(Kind::Profile, &names(&["gpu"]), &Patch::default()));
        let uses_gpu = Patch {
            profiles: Some(names(&["default", "~gpu"])),
            ..Patch::default()
        };
        ok(site.add_records(Kind::Node, &names(&["n1"]), &uses_gpu));
        let refused = site.delete_records(Kind::Profile, &names(&["gpu"]));
        assert!(
            matches!(&refused, Err(SiteError::ProfileInUse { users, .. }) if users == &names(&["n1"])),
            "{refused:?}"
        );
        ok(site.delete_records(Kind::Node, &names(&["n1"])));
        ok(site.delete_records(Kind::Profile, &names(&["gpu"])));
        assert!(matches!(
            site.delete_records(Kind::Profile, &names(&["gpu"])),
            Err(SiteError::RecordNotFound { .. })
        ));
    }

    #[test]
    fn set_unset_and_import_change_only_what_they_name() {
        let (_dir, site) = site();
        ok(site.add_records(Kind::Node, &names(&["n1", "n2"]), &Patch::default()));
        let image = Patch {
            image: Some("rocky".into()),
            tagadd: names(&["rack=1"]),
            ..Patch::default()
        };
        assert_eq!(ok(site.set_records(Kind::Node, &Selection::All, &image)), 2);
        assert!(matches!(
            site.set_records(Kind::Node, &Selection::Patterns(Vec::new()), &image),
            Err(SiteError::NothingSelected { .. })
        ));
        ok(site.unset_fields(Kind::Node, &names(&["n1"]), &names(&["tags.rack"])));
        assert!(matches!(
            site.unset_fields(Kind::Node, &names(&["n1"]), &names(&["tags.rack"])),
            Err(SiteError::FieldNotSet { .. })
        ));
        let incoming = serde_json::from_str(r#"{"n2": {"comment": "x"}, "n3": {"image": "alma"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok(site.import_nodes(incoming)),
            ImportReport {
                created: 1,
                updated: 1
            }
        );
        let stored = ok(site.stored_records(Kind::Node, &[]));
        assert!(stored["n1"].tags.is_empty());
        assert_eq!(stored["n2"].image.as_deref(), Some("rocky"));
        assert_eq!(stored["n2"].comment.as_deref(), Some("x"));
        assert_eq!(stored["n3"].image.as_deref(), Some("alma"));
        let view = ok(site.show_record(Kind::Node, "n2"));
        assert_eq!(view.applied, names(&["default"]));
    }
}

/// One stored record as the API serves it: unmerged and merged, secrets masked, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedRecord {
    /// As stored, secrets masked.
    pub stored: Node,
    pub view: RecordView,
    /// Changes whenever the stored record does (its secrets included); an `If-Match` value.
    pub etag: String,
}

impl Site {
    /// A record's version: a keyed hash of its stored form, so it changes with a BMC password
    /// too, yet cannot be used to guess one.
    fn record_etag(&self, node: &Node) -> Result<String> {
        let key = self.agent_key()?;
        let text = serde_json::to_vec(node).map_err(|source| SiteError::BadRecord {
            name: node.id.clone(),
            source,
        })?;
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(b"wulf record etag\0");
        hash.update(&*key);
        hash.update(node.id.as_bytes());
        hash.update(b"\0");
        hash.update(&text);
        Ok(hex::encode(&hash.finalize()[..16]))
    }

    /// One stored record, as stored and merged, with its version: all from one read of the
    /// store, so the version is the view's. (Records of inventory backends are not stored
    /// here, so they have no version to edit against.)
    pub fn versioned_record(&self, kind: Kind, name: &str) -> Result<VersionedRecord> {
        let inventory = self.store.load()?;
        let mut stored = records(kind, &inventory)
            .get(name)
            .cloned()
            .ok_or_else(|| SiteError::RecordNotFound {
                kind,
                name: name.to_owned(),
            })?;
        stored.id = name.to_owned();
        let view = match kind {
            Kind::Node => {
                let merged = merge(&stored, &inventory.profiles);
                RecordView {
                    record: merged.node.redacted(),
                    applied: merged.applied,
                    missing: merged.missing,
                }
            }
            Kind::Profile => RecordView {
                record: stored.clone().redacted(),
                applied: Vec::new(),
                missing: Vec::new(),
            },
        };
        Ok(VersionedRecord {
            etag: self.record_etag(&stored)?,
            stored: stored.redacted(),
            view,
        })
    }

    fn check_version(&self, kind: Kind, node: &Node, if_match: Option<&str>) -> Result<()> {
        let Some(expected) = if_match else {
            return Ok(());
        };
        let current = self.record_etag(node)?;
        if expected == "*" || expected == current {
            Ok(())
        } else {
            Err(SiteError::VersionMismatch {
                kind,
                name: node.id.clone(),
                current,
            })
        }
    }

    /// Applies `patch` to one record if it is still at version `if_match` (any version when
    /// `None`); checked and written under the store's lock, so no concurrent edit is lost.
    /// The new version.
    pub fn update_record(
        &self,
        kind: Kind,
        name: &str,
        patch: &Patch,
        if_match: Option<&str>,
    ) -> Result<String> {
        self.store.update(|inventory| -> Result<String> {
            let node = record_mut(kind, inventory, name)?;
            node.id = name.to_owned();
            self.check_version(kind, node, if_match)?;
            patch.apply(node, None)?;
            if kind == Kind::Node {
                patch.apply_node_only(node);
            }
            self.record_etag(node)
        })
    }

    /// Deletes one record if it is still at version `if_match`, by [`Site::delete_records`]'
    /// rules.
    pub fn delete_record(&self, kind: Kind, name: &str, if_match: Option<&str>) -> Result<()> {
        self.store.update(|inventory| -> Result<()> {
            let node = record_mut(kind, inventory, name)?;
            node.id = name.to_owned();
            self.check_version(kind, node, if_match)?;
            if kind == Kind::Profile {
                let users = profile_users(inventory, name, &[]);
                if !users.is_empty() {
                    return Err(SiteError::ProfileInUse {
                        profile: name.to_owned(),
                        users,
                    });
                }
            }
            records_mut(kind, inventory).remove(name);
            Ok(())
        })
    }
}
