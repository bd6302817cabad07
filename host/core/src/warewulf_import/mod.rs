//! Migration from Warewulf v4: reads a `nodes.conf` (YAML) and maps its profiles and nodes onto
//! wulf records, legacy keys included (`container name`, flat `kernel args`, flat `ipmi *`,
//! `keys`, netdev `default`/`primary`). Whatever cannot be mapped is reported, never dropped
//! silently; a key Warewulf itself does not know is an error. [`conf`] does the same for
//! `warewulf.conf`.

pub mod conf;

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value;

use crate::node::{Disk, Filesystem, NetDevice, Node, Partition, Tags};

/// The records read and what could not be mapped.
#[derive(Debug, Default)]
pub struct Imported {
    pub profiles: BTreeMap<String, Node>,
    pub nodes: BTreeMap<String, Node>,
    /// `profile `p`: ...` / `node `n`: ...` lines for what became something else.
    pub mapped: Vec<String>,
    /// `profile `p`: ...` / `node `n`: ...` lines for everything left behind.
    pub unmapped: Vec<String>,
    /// Warewulf's network overlays the records name (`NetworkManager`, `systemd.networkd`,
    /// `ifcfg`, `debian.interfaces`): which configuration the `network` plugin writes.
    pub network_overlays: BTreeSet<String>,
}

/// The overlays Warewulf's distribution ships: not site overlays, whatever directory they are
/// found in (4.4 and 4.5 keep them beside the site's).
pub fn is_distribution_overlay(name: &str) -> Option<(Option<&'static str>, &'static str)> {
    OVERLAYS
        .iter()
        .find(|(ww, _, _)| *ww == name)
        .map(|(_, wulf, what)| (*wulf, *what))
}

/// Warewulf's distribution overlays and the first-party plugins that do their job:
/// (Warewulf's name, wulf's, what it writes). `None`: nothing in wulf does it, and why.
const OVERLAYS: &[(&str, Option<&str>, &str)] = &[
    ("wwinit", Some("wwinit"), "init, mounts and init.d scripts"),
    (
        "wwclient",
        Some("agent"),
        "wulf-agent keeps the runtime overlay in sync",
    ),
    ("hostname", Some("hostname"), "/etc/hostname"),
    ("hosts", Some("hosts"), "/etc/hosts"),
    ("fstab", Some("fstab"), "/etc/fstab from the fstab resource"),
    ("resolv", Some("resolv"), "/etc/resolv.conf"),
    (
        "ssh.host_keys",
        Some("ssh-host-keys"),
        "the cluster's SSH host keys",
    ),
    (
        "ssh.authorized_keys",
        Some("ssh-authorized-keys"),
        "root's authorized_keys",
    ),
    (
        "NetworkManager",
        Some("network"),
        "NetworkManager and systemd-networkd configuration",
    ),
    (
        "systemd.networkd",
        Some("network"),
        "systemd-networkd and NetworkManager configuration",
    ),
    (
        "systemd.netname",
        Some("network"),
        ".link files naming interfaces by MAC",
    ),
    (
        "udev.netname",
        Some("network"),
        ".link files naming interfaces by MAC",
    ),
    (
        "ifcfg",
        Some("network"),
        "networkd, NetworkManager and init.d configuration (no ifcfg files)",
    ),
    (
        "debian.interfaces",
        Some("network"),
        "networkd, NetworkManager and init.d configuration (no /etc/network/interfaces)",
    ),
    (
        "ifupdown",
        Some("network"),
        "networkd, NetworkManager and init.d configuration (no /etc/network/interfaces)",
    ),
    (
        "wicked",
        Some("network"),
        "networkd, NetworkManager and init.d configuration (no wicked files)",
    ),
    (
        "netplan",
        Some("network"),
        "systemd-networkd configuration, which netplan would have rendered",
    ),
    ("sfdisk", None, "disk provisioning is not supported yet"),
    ("mkfs", None, "disk provisioning is not supported yet"),
    ("mkswap", None, "disk provisioning is not supported yet"),
    (
        "localusers",
        None,
        "a site overlay can ship /etc/passwd additions; `wulf image syncuser` aligns ids",
    ),
    (
        "syncuser",
        None,
        "`wulf image syncuser --write` merges the host's accounts into the image instead",
    ),
    (
        "debug",
        None,
        "a diagnostic overlay; `wulf plugin test` and `wulf overlay render` show what a node gets",
    ),
    ("host", None, "configures the Warewulf server itself"),
    (
        "generic",
        None,
        "Warewulf's base files; wulf's plugins write their own",
    ),
    ("ignition", None, "disk provisioning is not supported yet"),
    ("issue", None, "a site overlay can ship /etc/issue"),
    ("localtime", None, "a site overlay can ship /etc/localtime"),
];

/// A file that is not what Warewulf writes: nothing of it is imported. The caller names the
/// file's path.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ImportError {
    pub file: &'static str,
    pub message: String,
}

impl ImportError {
    fn nodes(message: impl Into<String>) -> ImportError {
        ImportError {
            file: "nodes.conf",
            message: message.into(),
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && !is_unset(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_unset(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "unset" | "undef" | "delete" | "--" | "nil" | "0.0.0.0"
    )
}

/// Warewulf's WWbool: a bool, or a string like yes/no/true/false/1/0.
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" => Some(true),
            "false" | "no" | "n" | "0" | "off" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
}

/// Kernel arguments: a list, or a legacy string split on whitespace, never inside quotes
/// (`console=ttyS0,115200 quiet foo="a b"` is three arguments; commas belong to them).
fn kernel_args(value: &Value) -> Vec<String> {
    let Value::String(line) = value else {
        return list(value);
    };
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

fn list(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().filter_map(text).collect(),
        Value::String(s) => s
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn tags(value: &Value) -> Tags {
    match value {
        Value::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
            .collect(),
        _ => Tags::new(),
    }
}

fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

struct Mapper<'a> {
    record: String,
    mapped: &'a mut Vec<String>,
    unmapped: &'a mut Vec<String>,
    network_overlays: &'a mut BTreeSet<String>,
    /// Keys Warewulf does not have: the import stops on them.
    unknown: &'a mut Vec<String>,
}

impl Mapper<'_> {
    /// Warewulf's `dracut` template boots through a dracut initramfs that fetches the image:
    /// wulf's two-stage boot does that job.
    fn ipxe_template(&mut self, name: Option<String>) -> Option<String> {
        match name.as_deref() {
            Some("dracut") => {
                self.mapped.push(format!(
                    "{}: ipxe template `dracut` -> `stage-one` (stage one fetches the image, no dracut needed in it)",
                    self.record
                ));
                Some("stage-one".into())
            }
            _ => name,
        }
    }

    /// Overlay names: Warewulf's distribution overlays become the plugins that do their job
    /// (once each), those nothing does are left out and reported; site overlays stay.
    fn overlays(&mut self, key: &str, value: &Value) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in list(value) {
            if NETWORK_OVERLAYS.iter().any(|(ww, _)| *ww == name) {
                self.network_overlays.insert(name.clone());
            }
            let wulf = match OVERLAYS.iter().find(|(ww, _, _)| *ww == name) {
                Some((_, Some(wulf), what)) => {
                    if *wulf != name {
                        self.mapped.push(format!(
                            "{}: {key} `{name}` -> `{wulf}` ({what})",
                            self.record
                        ));
                    }
                    (*wulf).to_owned()
                }
                Some((_, None, why)) => {
                    self.skip(&format!("{key} {name}"), &format!("is left out: {why}"));
                    continue;
                }
                None => name,
            };
            if !names.contains(&wulf) {
                names.push(wulf);
            }
        }
        names
    }

    fn unknown(&mut self, key: &str) {
        self.unknown.push(format!("{}: `{key}`", self.record));
    }

    fn skip(&mut self, key: &str, why: &str) {
        self.unmapped
            .push(format!("{}: `{key}` {why}", self.record));
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str, value: &Value) -> Option<T> {
        let raw = text(value)?;
        let parsed = raw.parse().ok();
        if parsed.is_none() {
            self.skip(key, &format!("= {raw:?} is not a number"));
        }
        parsed
    }

    /// An address field: one that does not parse is reported, not imported.
    fn address<T: std::str::FromStr>(&mut self, key: &str, value: &Value, what: &str) -> Option<T> {
        let raw = text(value)?;
        let parsed = raw.parse().ok();
        if parsed.is_none() {
            self.skip(key, &format!("= {raw:?} is not {what}"));
        }
        parsed
    }

    fn record(&mut self, id: &str, value: &Value) -> Node {
        let mut node = Node::new(id);
        let Value::Mapping(map) = value else {
            self.skip("(record)", "is not a mapping");
            return node;
        };
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            match key {
                "profiles" => node.profiles = list(value),
                "comment" => node.comment = text(value),
                "cluster name" => node.cluster = text(value),
                "image name" | "container name" => node.image = text(value),
                "ipxe template" => node.ipxe_template = self.ipxe_template(text(value)),
                "runtime overlay" => node.runtime_overlays = self.overlays(key, value),
                "system overlay" => node.system_overlays = self.overlays(key, value),
                "init" => node.init = text(value),
                "root" => node.root = text(value),
                "primary network" => node.primary_network = text(value),
                "discoverable" => node.discoverable = boolean(value).filter(|b| *b),
                "asset key" => node.asset_key = text(value),
                "kernel" => self.kernel(&mut node, value),
                "kernel args" => node.kernel.args = kernel_args(value),
                "kernel version" | "kernel override" => node.kernel.version = text(value),
                "ipmi" => self.ipmi(&mut node, value),
                "network devices" => self.netdevs(&mut node, value),
                "tags" | "keys" => node.tags.extend(tags(value)),
                "resources" => {
                    if let Value::Mapping(resources) = value {
                        for (name, value) in resources {
                            if let Some(name) = text(name) {
                                node.resources.insert(name, json(value));
                            }
                        }
                    }
                }
                "disks" => self.disks(&mut node, value),
                "filesystems" => self.filesystems(&mut node, value),
                flat if flat.starts_with("ipmi ") => {
                    self.ipmi_field(&mut node, &flat["ipmi ".len()..], value)
                }
                "tagsdel" => self.skip(key, "has no wulf equivalent"),
                other => self.unknown(other),
            }
        }
        node
    }

    fn kernel(&mut self, node: &mut Node, value: &Value) {
        let Value::Mapping(map) = value else { return };
        for (key, value) in map {
            match key.as_str().unwrap_or_default() {
                "version" | "override" => node.kernel.version = text(value),
                "args" => node.kernel.args = kernel_args(value),
                other => self.unknown(&format!("kernel.{other}")),
            }
        }
    }

    fn ipmi(&mut self, node: &mut Node, value: &Value) {
        let Value::Mapping(map) = value else { return };
        for (key, value) in map {
            self.ipmi_field(node, key.as_str().unwrap_or_default(), value);
        }
    }

    fn ipmi_field(&mut self, node: &mut Node, key: &str, value: &Value) {
        let ipmi = &mut node.ipmi;
        match key {
            "username" | "user name" | "user" => ipmi.username = text(value),
            "password" => ipmi.password = text(value).map(crate::secret::Secret::new),
            "ipaddr" => ipmi.ipaddr = self.address("ipmi.ipaddr", value, "an IPv4 address"),
            "gateway" => ipmi.gateway = self.address("ipmi.gateway", value, "an IPv4 address"),
            "netmask" => ipmi.netmask = self.address("ipmi.netmask", value, "a netmask"),
            "port" => ipmi.port = self.number("ipmi.port", value),
            "interface" => ipmi.interface = text(value),
            "escapechar" => ipmi.escape_char = text(value),
            "write" => ipmi.write = boolean(value),
            "template" => ipmi.template = text(value),
            "tags" => ipmi.tags.extend(tags(value)),
            "vlan" | "bit-rate" => self.skip(&format!("ipmi.{key}"), "has no wulf equivalent"),
            other => self.unknown(&format!("ipmi.{other}")),
        }
    }

    fn netdevs(&mut self, node: &mut Node, value: &Value) {
        let Value::Mapping(map) = value else { return };
        for (name, value) in map {
            let Some(name) = text(name) else { continue };
            let mut dev = NetDevice::default();
            let Value::Mapping(fields) = value else {
                continue;
            };
            for (key, value) in fields {
                let key = key.as_str().unwrap_or_default();
                let field = format!("network devices.{name}.{key}");
                match key {
                    "type" => dev.device_type = text(value),
                    "onboot" => dev.onboot = boolean(value),
                    "device" => dev.device = text(value),
                    "hwaddr" => dev.hwaddr = self.address(&field, value, "a MAC address"),
                    "ipaddr" => dev.ipaddr = self.address(&field, value, "an IPv4 address"),
                    "netmask" => dev.netmask = self.address(&field, value, "a netmask"),
                    "gateway" => dev.gateway = self.address(&field, value, "an IPv4 address"),
                    "ipaddr6" => dev.ipaddr6 = self.address(&field, value, "an IPv6 address"),
                    "prefixlen6" => {
                        dev.prefixlen6 =
                            self.number(&format!("network devices.{name}.prefixlen6"), value)
                    }
                    "gateway6" => dev.gateway6 = self.address(&field, value, "an IPv6 address"),
                    "mtu" => dev.mtu = self.number(&format!("network devices.{name}.mtu"), value),
                    "tags" => dev.tags.extend(tags(value)),
                    "default" | "primary" => {
                        if boolean(value) == Some(true) && node.primary_network.is_none() {
                            node.primary_network = Some(name.clone());
                        }
                    }
                    other => self.unknown(&format!("network devices.{name}.{other}")),
                }
            }
            node.network_devices.insert(name, dev);
        }
    }

    fn disks(&mut self, node: &mut Node, value: &Value) {
        let Value::Mapping(map) = value else { return };
        for (device, value) in map {
            let Some(device) = text(device) else { continue };
            let mut disk = Disk {
                wipe_table: boolean(&value["wipe_table"]),
                ..Disk::default()
            };
            if let Value::Mapping(parts) = &value["partitions"] {
                for (label, p) in parts {
                    let Some(label) = text(label) else { continue };
                    let partition = Partition {
                        number: text(&p["number"]).and_then(|n| n.parse().ok()),
                        size_mib: text(&p["size_mib"]).and_then(|n| n.parse().ok()),
                        start_mib: text(&p["start_mib"]).and_then(|n| n.parse().ok()),
                        type_guid: text(&p["type_guid"]),
                        guid: text(&p["guid"]),
                        wipe_partition_entry: boolean(&p["wipe_partition_entry"]),
                        should_exist: boolean(&p["should_exist"]),
                        resize: boolean(&p["resize"]),
                    };
                    disk.partitions.insert(label, partition);
                }
            }
            node.disks.insert(device, disk);
        }
    }

    fn filesystems(&mut self, node: &mut Node, value: &Value) {
        let Value::Mapping(map) = value else { return };
        for (device, f) in map {
            let Some(device) = text(device) else { continue };
            let fs = Filesystem {
                format: text(&f["format"]),
                path: text(&f["path"]),
                wipe_filesystem: boolean(&f["wipe_filesystem"]),
                label: text(&f["label"]),
                uuid: text(&f["uuid"]),
                options: list(&f["options"]),
                mount_options: text(&f["mount_options"]),
            };
            node.filesystems.insert(device, fs);
        }
    }
}

/// Reads a Warewulf `nodes.conf`.
pub fn import(yaml: &str) -> Result<Imported, ImportError> {
    let root: Value = serde_norway::from_str(yaml)
        .map_err(|e| ImportError::nodes(format!("not YAML as Warewulf writes it: {e}")))?;
    let Value::Mapping(top) = &root else {
        return Err(ImportError::nodes("the top level is not a mapping"));
    };
    let mut imported = Imported::default();
    let mut unknown = Vec::new();
    for (key, value) in top {
        let (is_profile, noun) = match key.as_str() {
            Some("nodeprofiles") => (true, "profile"),
            Some("nodes") => (false, "node"),
            // The format's version, which Warewulf writes and wulf does not need.
            Some("WW_INTERNAL") => continue,
            Some(other) => {
                unknown.push(format!("top level: `{other}`"));
                continue;
            }
            None => continue,
        };
        let Value::Mapping(records) = value else {
            continue;
        };
        for (id, record) in records {
            let Some(id) = text(id) else { continue };
            let mut mapper = Mapper {
                record: format!("{noun} `{id}`"),
                mapped: &mut imported.mapped,
                unmapped: &mut imported.unmapped,
                network_overlays: &mut imported.network_overlays,
                unknown: &mut unknown,
            };
            let node = mapper.record(&id, record);
            if is_profile {
                imported.profiles.insert(id, node);
            } else {
                imported.nodes.insert(id, node);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(ImportError::nodes(format!(
            "{} {} no key Warewulf 4.4-4.7 knows; fix or remove {}",
            unknown.join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
            if unknown.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(imported)
}

/// Warewulf's network overlays and what the `network` plugin writes in their place.
pub const NETWORK_OVERLAYS: &[(&str, &str)] = &[
    ("NetworkManager", "networkmanager"),
    ("systemd.networkd", "networkd"),
    // EL's NetworkManager reads keyfiles; ifcfg files are its legacy format.
    ("ifcfg", "networkmanager"),
    // ifupdown runs from init scripts, as the plugin's init.d fallback does.
    ("debian.interfaces", "init"),
    ("ifupdown", "init"),
    ("wicked", "networkmanager"),
    ("netplan", "networkd"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_kernel_args_split_on_whitespace_only_and_keep_quotes() {
        let line = Value::String("console=ttyS0,115200  quiet foo=\"a b\" bar='c d'".into());
        assert_eq!(
            kernel_args(&line),
            ["console=ttyS0,115200", "quiet", "foo=\"a b\"", "bar='c d'"]
        );
        let listed = Value::Sequence(vec![Value::String("console=ttyS0,115200".into())]);
        assert_eq!(kernel_args(&listed), ["console=ttyS0,115200"]);
    }

    #[test]
    fn distribution_overlays_become_plugins_once_and_site_overlays_stay() {
        let imported = import(
            "nodeprofiles:\n  default:\n    system overlay: [wwinit, wwclient, NetworkManager, systemd.netname, syncuser, mysite]\n    runtime overlay: ssh.authorized_keys,hosts\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let default = &imported.profiles["default"];
        assert_eq!(
            default.system_overlays,
            ["wwinit", "agent", "network", "mysite"]
        );
        assert_eq!(default.runtime_overlays, ["ssh-authorized-keys", "hosts"]);
        assert!(
            imported
                .mapped
                .iter()
                .any(|l| l.contains("`NetworkManager` -> `network`")),
            "{:?}",
            imported.mapped
        );
        assert!(
            imported
                .unmapped
                .iter()
                .any(|l| l.contains("syncuser") && l.contains("wulf image syncuser")),
            "{:?}",
            imported.unmapped
        );
    }

    #[test]
    fn the_dracut_template_becomes_the_two_stage_boot() {
        let imported = import(
            "nodes:\n  gpu01:\n    ipxe template: dracut\n  n01:\n    ipxe template: mine\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            imported.nodes["gpu01"].ipxe_template.as_deref(),
            Some("stage-one")
        );
        assert_eq!(imported.nodes["n01"].ipxe_template.as_deref(), Some("mine"));
        assert!(
            imported
                .mapped
                .iter()
                .any(|l| l.contains("`dracut` -> `stage-one`")),
            "{:?}",
            imported.mapped
        );
    }
}
