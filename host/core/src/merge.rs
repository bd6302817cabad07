//! Warewulf's merge rules: a node's effective record from its profiles and itself.
//!
//! Profiles expand depth-first in order (a profile's own profiles before it), each at most once
//! (which also breaks cycles); `~name` in a list removes `name` from the merged list. Scalars:
//! the later non-empty value wins and the node wins last. Lists append. Maps merge per key.
//! `comment` is never inherited; `profiles` stays the node's own list.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::node::{Disk, Filesystem, Ipmi, Kernel, NetDevice, Node, Partition};

/// A node merged with its profiles, plus what the merge had to say.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub node: Node,
    /// The profiles applied, in order.
    pub applied: Vec<String>,
    /// Profiles named but not defined (Warewulf warns and goes on).
    pub missing: Vec<String>,
}

/// Merges `node` with the profiles it names, looked up in `profiles`.
pub fn merge(node: &Node, profiles: &BTreeMap<String, Node>) -> Merged {
    finish(node, &base(&node.profiles, profiles))
}

/// Merges many nodes, merging each distinct profile list once (clusters have thousands of
/// nodes and a handful of profile lists), spread over the machine's cores for large sets.
pub fn merge_all<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    profiles: &BTreeMap<String, Node>,
) -> Vec<Merged> {
    const PER_THREAD: usize = 2_000;
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(nodes.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return merge_chunk(&nodes, profiles);
    }
    let chunk = nodes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| scope.spawn(move || merge_chunk(part, profiles)))
            .collect();
        // A merge thread only panics on a bug (it does no I/O); surface it rather than hide it.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn merge_chunk(nodes: &[&Node], profiles: &BTreeMap<String, Node>) -> Vec<Merged> {
    let mut bases: HashMap<&[String], Merged> = HashMap::new();
    nodes
        .iter()
        .map(|node| {
            let base = bases
                .entry(&node.profiles)
                .or_insert_with(|| base(&node.profiles, profiles));
            finish(node, base)
        })
        .collect()
}

/// The profiles of a profile list, expanded and merged, before any node is applied.
fn base(names: &[String], profiles: &BTreeMap<String, Node>) -> Merged {
    let mut expansion = Expansion::default();
    expansion.visit_list(names, profiles);
    let applied: Vec<String> = expansion
        .order
        .into_iter()
        .filter(|name| !expansion.negated.contains(name))
        .collect();
    let mut merged = Node::default();
    for name in &applied {
        if let Some(profile) = profiles.get(name) {
            overlay_record(&mut merged, profile);
        }
    }
    Merged {
        node: merged,
        applied,
        missing: expansion.missing,
    }
}

/// Applies `node` on top of its merged profiles.
fn finish(node: &Node, base: &Merged) -> Merged {
    let mut merged = base.node.clone();
    merged.id = node.id.clone();
    overlay_record(&mut merged, node);
    merged.comment = node.comment.clone();
    merged.profiles = node.profiles.clone();
    merged.discoverable = node.discoverable;
    merged.asset_key = node.asset_key.clone();
    negate(&mut merged.system_overlays);
    negate(&mut merged.runtime_overlays);
    negate(&mut merged.kernel.args);
    // Merged records are held for as long as a server runs: no room grown by the merge (a
    // node's own device added to its profile's doubles the vector; 6.7 MB at 10,000 nodes).
    merged.network_devices.shrink_to_fit();
    for device in merged.network_devices.values_mut() {
        device.tags.shrink_to_fit();
    }
    merged.tags.shrink_to_fit();
    Merged {
        node: merged,
        applied: base.applied.clone(),
        missing: base.missing.clone(),
    }
}

#[derive(Default)]
struct Expansion {
    order: Vec<String>,
    seen: BTreeSet<String>,
    negated: BTreeSet<String>,
    missing: Vec<String>,
}

impl Expansion {
    fn visit_list(&mut self, names: &[String], profiles: &BTreeMap<String, Node>) {
        for name in names {
            match name.strip_prefix('~') {
                Some(negated) => {
                    self.negated.insert(negated.to_string());
                }
                None => self.visit(name, profiles),
            }
        }
    }

    fn visit(&mut self, name: &str, profiles: &BTreeMap<String, Node>) {
        if !self.seen.insert(name.to_string()) {
            return;
        }
        match profiles.get(name) {
            Some(profile) => {
                self.visit_list(&profile.profiles, profiles);
                self.order.push(name.to_string());
            }
            None => self.missing.push(name.to_string()),
        }
    }
}

/// Removes every `~x` token and every `x` it names.
fn negate(list: &mut Vec<String>) {
    let removed: BTreeSet<String> = list
        .iter()
        .filter_map(|item| item.strip_prefix('~'))
        .map(str::to_string)
        .collect();
    list.retain(|item| !item.starts_with('~') && !removed.contains(item));
}

fn set<T: Clone + NonEmpty>(dst: &mut Option<T>, src: &Option<T>) {
    if let Some(value) = src.as_ref().filter(|v| v.non_empty()) {
        *dst = Some(value.clone());
    }
}

trait NonEmpty {
    fn non_empty(&self) -> bool;
}

impl NonEmpty for String {
    fn non_empty(&self) -> bool {
        !self.is_empty()
    }
}

macro_rules! always_non_empty {
    ($($t:ty),*) => { $(impl NonEmpty for $t { fn non_empty(&self) -> bool { true } })* };
}
always_non_empty!(
    bool,
    u8,
    u16,
    u32,
    u64,
    crate::hwaddr::HwAddr,
    crate::address::Netmask,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    crate::node::BmcDriver,
    crate::node::RedfishScheme
);

impl NonEmpty for crate::secret::Secret {
    fn non_empty(&self) -> bool {
        !self.expose().is_empty()
    }
}

fn merge_map<V: Default>(
    dst: &mut BTreeMap<String, V>,
    src: &BTreeMap<String, V>,
    each: impl Fn(&mut V, &V),
) {
    for (key, value) in src {
        each(dst.entry(key.clone()).or_default(), value);
    }
}

fn overlay_record(dst: &mut Node, src: &Node) {
    set(&mut dst.cluster, &src.cluster);
    set(&mut dst.image, &src.image);
    set(&mut dst.ipxe_template, &src.ipxe_template);
    dst.system_overlays
        .extend(src.system_overlays.iter().cloned());
    dst.runtime_overlays
        .extend(src.runtime_overlays.iter().cloned());
    set(&mut dst.init, &src.init);
    set(&mut dst.root, &src.root);
    overlay_kernel(&mut dst.kernel, &src.kernel);
    set(&mut dst.primary_network, &src.primary_network);
    for (name, device) in &src.network_devices {
        overlay_netdev(
            dst.network_devices
                .get_or_insert_with(name.clone(), NetDevice::default),
            device,
        );
    }
    overlay_ipmi(&mut dst.ipmi, &src.ipmi);
    dst.tags
        .extend(src.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    dst.resources
        .extend(src.resources.iter().map(|(k, v)| (k.clone(), v.clone())));
    merge_map(&mut dst.disks, &src.disks, overlay_disk);
    merge_map(&mut dst.filesystems, &src.filesystems, overlay_filesystem);
}

fn overlay_kernel(dst: &mut Kernel, src: &Kernel) {
    set(&mut dst.version, &src.version);
    dst.args.extend(src.args.iter().cloned());
}

fn overlay_netdev(dst: &mut NetDevice, src: &NetDevice) {
    set(&mut dst.device_type, &src.device_type);
    set(&mut dst.onboot, &src.onboot);
    set(&mut dst.device, &src.device);
    set(&mut dst.hwaddr, &src.hwaddr);
    set(&mut dst.ipaddr, &src.ipaddr);
    set(&mut dst.netmask, &src.netmask);
    set(&mut dst.gateway, &src.gateway);
    set(&mut dst.ipaddr6, &src.ipaddr6);
    set(&mut dst.prefixlen6, &src.prefixlen6);
    set(&mut dst.gateway6, &src.gateway6);
    set(&mut dst.mtu, &src.mtu);
    dst.tags
        .extend(src.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
}

fn overlay_ipmi(dst: &mut Ipmi, src: &Ipmi) {
    set(&mut dst.username, &src.username);
    set(&mut dst.password, &src.password);
    set(&mut dst.ipaddr, &src.ipaddr);
    set(&mut dst.gateway, &src.gateway);
    set(&mut dst.netmask, &src.netmask);
    set(&mut dst.port, &src.port);
    set(&mut dst.interface, &src.interface);
    set(&mut dst.escape_char, &src.escape_char);
    set(&mut dst.write, &src.write);
    set(&mut dst.template, &src.template);
    set(&mut dst.driver, &src.driver);
    set(&mut dst.scheme, &src.scheme);
    set(&mut dst.tls_verify, &src.tls_verify);
    set(&mut dst.system_id, &src.system_id);
    dst.tags
        .extend(src.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
}

fn overlay_disk(dst: &mut Disk, src: &Disk) {
    set(&mut dst.wipe_table, &src.wipe_table);
    merge_map(&mut dst.partitions, &src.partitions, overlay_partition);
}

fn overlay_partition(dst: &mut Partition, src: &Partition) {
    set(&mut dst.number, &src.number);
    set(&mut dst.size_mib, &src.size_mib);
    set(&mut dst.start_mib, &src.start_mib);
    set(&mut dst.type_guid, &src.type_guid);
    set(&mut dst.guid, &src.guid);
    set(&mut dst.wipe_partition_entry, &src.wipe_partition_entry);
    set(&mut dst.should_exist, &src.should_exist);
    set(&mut dst.resize, &src.resize);
}

fn overlay_filesystem(dst: &mut Filesystem, src: &Filesystem) {
    set(&mut dst.format, &src.format);
    set(&mut dst.path, &src.path);
    set(&mut dst.wipe_filesystem, &src.wipe_filesystem);
    set(&mut dst.label, &src.label);
    set(&mut dst.uuid, &src.uuid);
    dst.options.extend(src.options.iter().cloned());
    set(&mut dst.mount_options, &src.mount_options);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str, f: impl FnOnce(&mut Node)) -> (String, Node) {
        let mut node = Node::new(id);
        f(&mut node);
        (id.to_string(), node)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nested_profiles_expand_depth_first_and_cycles_stop() {
        let profiles = BTreeMap::from([
            profile("base", |p| {
                p.profiles = strings(&["net"]);
                p.image = Some("rocky".into());
                p.system_overlays = strings(&["wwinit"]);
                p.comment = Some("base comment".into());
            }),
            profile("net", |p| {
                p.profiles = strings(&["base"]);
                p.system_overlays = strings(&["network"]);
                p.image = Some("debian".into());
            }),
            profile("gpu", |p| {
                p.system_overlays = strings(&["cuda", "~network"]);
                p.kernel.args = strings(&["quiet", "nouveau.modeset=0"]);
            }),
        ]);
        let mut node = Node::new("n1");
        node.profiles = strings(&["base", "gpu", "nope"]);
        node.kernel.args = strings(&["~quiet"]);
        let merged = merge(&node, &profiles);
        assert_eq!(merged.applied, strings(&["net", "base", "gpu"]));
        assert_eq!(merged.missing, strings(&["nope"]));
        assert_eq!(merged.node.image.as_deref(), Some("rocky"));
        assert_eq!(merged.node.system_overlays, strings(&["wwinit", "cuda"]));
        assert_eq!(merged.node.kernel.args, strings(&["nouveau.modeset=0"]));
        assert_eq!(merged.node.comment, None);
        assert_eq!(merged.node.profiles, node.profiles);
    }

    #[test]
    fn merge_all_matches_merge() {
        let profiles = BTreeMap::from([
            profile("a", |p| p.kernel.args = strings(&["x", "y"])),
            profile("b", |p| p.profiles = strings(&["a"])),
        ]);
        // Enough nodes to take the threaded path on a multi-core machine.
        let nodes: Vec<Node> = (0..5_000)
            .map(|i| {
                let mut n = Node::new(format!("n{i}"));
                n.profiles = if i % 2 == 0 {
                    strings(&["b"])
                } else {
                    strings(&["a", "~b"])
                };
                n.kernel.args = strings(&["~x", &format!("z{i}")]);
                n
            })
            .collect();
        let all = merge_all(&nodes, &profiles);
        for (node, merged) in nodes.iter().zip(&all) {
            assert_eq!(merged, &merge(node, &profiles));
        }
        assert_eq!(all[2].node.kernel.args, strings(&["y", "z2"]));
    }

    #[test]
    fn negated_profile_is_dropped_even_when_included_by_another() {
        let profiles = BTreeMap::from([
            profile("p1", |p| p.init = Some("/sbin/p1".into())),
            profile("p2", |p| p.profiles = strings(&["p1"])),
        ]);
        let mut node = Node::new("n1");
        node.profiles = strings(&["p2", "~p1"]);
        let merged = merge(&node, &profiles);
        assert_eq!(merged.applied, strings(&["p2"]));
        assert_eq!(merged.node.init, None);
    }

    #[test]
    fn maps_merge_per_key_and_the_node_wins_scalars() {
        let profiles = BTreeMap::from([profile("default", |p| {
            p.network_devices.insert(
                "default".into(),
                NetDevice {
                    netmask: "255.255.0.0".parse().ok(),
                    mtu: Some(9000),
                    ..NetDevice::default()
                },
            );
            p.tags.insert("rack".into(), "r1".into());
            p.tags.insert("role".into(), "compute".into());
            p.cluster = Some("c1".into());
        })]);
        let mut node = Node::new("n1");
        node.profiles = strings(&["default"]);
        node.network_devices.insert(
            "default".into(),
            NetDevice {
                ipaddr: "10.0.0.5".parse().ok(),
                mtu: Some(1500),
                ..NetDevice::default()
            },
        );
        node.tags.insert("rack".into(), "r7".into());
        node.cluster = Some(String::new());
        let merged = merge(&node, &profiles).node;
        let dev = &merged.network_devices["default"];
        assert_eq!(
            (
                dev.netmask.map(|m| m.to_string()),
                dev.ipaddr.map(|i| i.to_string()),
                dev.mtu
            ),
            (
                Some("255.255.0.0".to_string()),
                Some("10.0.0.5".to_string()),
                Some(1500)
            )
        );
        assert_eq!(merged.tags["rack"], "r7");
        assert_eq!(merged.tags["role"], "compute");
        assert_eq!(
            merged.cluster.as_deref(),
            Some("c1"),
            "an empty node value does not win"
        );
    }
}

/// Where a merged value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Set on the node itself.
    Node,
    /// From this profile.
    Profile(String),
    /// Set by profiles and by the node; the node's value won.
    Superseded,
    /// A list with entries from several records, in order (`--` is the node).
    Combined(Vec<String>),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Node => f.write_str("--"),
            Source::Profile(name) => f.write_str(name),
            Source::Superseded => f.write_str("SUPERSEDED"),
            Source::Combined(names) => f.write_str(&names.join(",")),
        }
    }
}

/// One field of a merged node with its value and source (`node show --all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSource {
    /// Dotted path, e.g. `network-devices.default.ipaddr`.
    pub field: String,
    /// The value; lists and structured values as JSON.
    pub value: String,
    pub source: Source,
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                if prefix == "resources" {
                    out.insert(path, value.clone());
                } else {
                    flatten(&path, value, out);
                }
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn flat(node: &Node) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(node).unwrap_or_default(),
        &mut out,
    );
    out
}

/// Every field of the merged node, with the record it came from.
pub fn field_sources(node: &Node, profiles: &BTreeMap<String, Node>) -> Vec<FieldSource> {
    let merged = merge(node, profiles);
    let own = flat(node);
    let contributors: Vec<(String, BTreeMap<String, serde_json::Value>)> = merged
        .applied
        .iter()
        .filter_map(|name| Some((name.clone(), flat(profiles.get(name)?))))
        .collect();
    // Values are for showing: the BMC password is masked.
    flat(&merged.node.redacted())
        .into_iter()
        .map(|(field, value)| {
            let from_profiles: Vec<&String> = contributors
                .iter()
                .filter(|(_, f)| f.contains_key(&field))
                .map(|(name, _)| name)
                .collect();
            let on_node = own.contains_key(&field) && field != "profiles";
            let source = match (&value, from_profiles.as_slice(), on_node) {
                (serde_json::Value::Array(_), names, _)
                    if names.len() + usize::from(on_node) > 1 =>
                {
                    let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                    if on_node {
                        all.push("--".into());
                    }
                    Source::Combined(all)
                }
                (_, [], _) => Source::Node,
                (_, _, true) => Source::Superseded,
                (_, names, false) => {
                    Source::Profile(names.last().map(|n| n.to_string()).unwrap_or_default())
                }
            };
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            FieldSource {
                field,
                value,
                source,
            }
        })
        .collect()
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use crate::node::NetDevice;

    #[test]
    fn every_field_knows_its_source() {
        let mut base = Node::new("base");
        base.image = Some("rocky".into());
        base.kernel.args = vec!["quiet".into()];
        base.network_devices.insert(
            "default".into(),
            NetDevice {
                netmask: "255.255.0.0".parse().ok(),
                ..NetDevice::default()
            },
        );
        let mut gpu = Node::new("gpu");
        gpu.cluster = Some("c1".into());
        gpu.kernel.args = vec!["nouveau.modeset=0".into()];
        let profiles = BTreeMap::from([("base".to_string(), base), ("gpu".to_string(), gpu)]);
        let mut node = Node::new("n1");
        node.profiles = vec!["base".into(), "gpu".into()];
        node.cluster = Some("c2".into());
        node.kernel.args = vec!["console=ttyS0".into()];
        node.network_devices.insert(
            "default".into(),
            NetDevice {
                ipaddr: "10.0.0.1".parse().ok(),
                ..NetDevice::default()
            },
        );
        let rows: Vec<String> = field_sources(&node, &profiles)
            .iter()
            .map(|f| format!("{} {} {}", f.field, f.source, f.value))
            .collect();
        assert_eq!(
            rows,
            [
                "cluster SUPERSEDED c2",
                "image base rocky",
                "kernel.args base,gpu,-- quiet,nouveau.modeset=0,console=ttyS0",
                "network-devices.default.ipaddr -- 10.0.0.1",
                "network-devices.default.netmask base 255.255.0.0",
                "profiles -- base,gpu",
            ]
        );
    }
}
