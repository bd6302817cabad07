//! Node and profile records, as stored and as merged.
//!
//! A profile is the same record as a node without the node-only fields (`discoverable`,
//! `asset-key`); [`Node`] serves both so merging is one function.

use std::collections::BTreeMap;

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::address::{self, Netmask};
use crate::hwaddr::HwAddr;
use crate::secret::Secret;
use crate::sorted_map::SortedMap;

/// A string map (Warewulf's tags): a few entries, kept compactly.
pub type Tags = SortedMap<String, String>;

/// A node or profile record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Node {
    /// The node or profile name; the key of its table in the store.
    #[serde(skip)]
    pub id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipxe_template: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_overlays: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runtime_overlays: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Kernel::is_empty")]
    pub kernel: Kernel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_network: Option<String>,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub network_devices: SortedMap<String, NetDevice>,
    #[serde(skip_serializing_if = "Ipmi::is_empty")]
    pub ipmi: Ipmi,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub tags: Tags,
    /// Free-form resources (fstab entries, users, ...), any JSON-compatible value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub disks: BTreeMap<String, Disk>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filesystems: BTreeMap<String, Filesystem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discoverable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Kernel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl Kernel {
    fn is_empty(&self) -> bool {
        self == &Kernel::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NetDevice {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hwaddr: Option<HwAddr>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv4"
    )]
    pub ipaddr: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<Netmask>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv4"
    )]
    pub gateway: Option<Ipv4Addr>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv6"
    )]
    pub ipaddr6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefixlen6: Option<u8>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv6"
    )]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Ipmi {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv4"
    )]
    pub ipaddr: Option<Ipv4Addr>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "address::ipv4"
    )]
    pub gateway: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<Netmask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escape_char: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// How the BMC is driven: IPMI through `ipmitool` (the default) or Redfish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<BmcDriver>,
    /// Redfish only: `https` (the default) or `http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedfishScheme>,
    /// Redfish only: whether the BMC's TLS certificate is verified (the default) or accepted
    /// whatever it is (self-signed BMC certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Redfish only: the system's id under `/redfish/v1/Systems`, when the BMC has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub tags: Tags,
}

impl Ipmi {
    fn is_empty(&self) -> bool {
        self == &Ipmi::default()
    }
}

/// How a node's BMC is driven.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcDriver {
    /// IPMI over LAN through `ipmitool`.
    #[default]
    Ipmi,
    /// Redfish over HTTPS.
    Redfish,
}

impl std::str::FromStr for BmcDriver {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "ipmi" | "ipmitool" => Ok(BmcDriver::Ipmi),
            "redfish" => Ok(BmcDriver::Redfish),
            _ => Err("expected `ipmi` or `redfish`".into()),
        }
    }
}

/// The scheme of a Redfish BMC's URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedfishScheme {
    #[default]
    Https,
    Http,
}

impl std::str::FromStr for RedfishScheme {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "https" => Ok(RedfishScheme::Https),
            "http" => Ok(RedfishScheme::Http),
            _ => Err("expected `https` or `http`".into()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Disk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wipe_table: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, Partition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Partition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wipe_partition_entry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub should_exist: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Filesystem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wipe_filesystem: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
}

impl Node {
    /// Whether a request that gave `given` (`?assetkey=`) may have this node's files: any
    /// request when the node has no asset key, else only one that gives it.
    pub fn accepts_asset_key(&self, given: Option<&str>) -> bool {
        match self.asset_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => given == Some(key),
            None => true,
        }
    }

    /// This record as it may be shown: secrets (the BMC password) replaced by a mask.
    pub fn redacted(mut self) -> Node {
        if self.ipmi.password.is_some() {
            self.ipmi.password = Some(Secret::masked());
        }
        self
    }

    /// An empty record with this name.
    pub fn new(id: impl Into<String>) -> Self {
        Node {
            id: id.into(),
            ..Node::default()
        }
    }

    /// The name of the primary network device: `primary-network` when it names a device,
    /// else the lexically first device (Warewulf's rule).
    pub fn primary_network(&self) -> Option<&str> {
        self.primary_network
            .as_deref()
            .filter(|name| self.network_devices.contains_key(*name))
            .or_else(|| self.network_devices.keys().next().map(String::as_str))
    }

    /// Every hardware address of this node's devices.
    pub fn hwaddrs(&self) -> impl Iterator<Item = HwAddr> + '_ {
        self.network_devices.values().filter_map(|d| d.hwaddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_network_falls_back_to_the_first_device() {
        let mut node = Node::new("n1");
        assert_eq!(node.primary_network(), None);
        node.network_devices
            .insert("ib".into(), NetDevice::default());
        node.network_devices
            .insert("default".into(), NetDevice::default());
        assert_eq!(node.primary_network(), Some("default"));
        node.primary_network = Some("ib".into());
        assert_eq!(node.primary_network(), Some("ib"));
        node.primary_network = Some("missing".into());
        assert_eq!(node.primary_network(), Some("default"));
    }

    #[test]
    fn toml_round_trip_keeps_every_field_and_rejects_unknown_keys() {
        let text = r#"
profiles = ["default"]
image = "rocky-9"
system-overlays = ["wwinit", "hostname"]
kernel = { args = ["quiet"] }
tags = { rack = "r1" }
resources = { fstab = [{ spec = "head:/home", file = "/home" }] }
[network-devices.default]
type = "ethernet"
hwaddr = "aa:bb:cc:dd:ee:01"
ipaddr = "10.0.0.1"
[ipmi]
ipaddr = "10.1.0.1"
write = true
"#;
        let node: Node = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            node.network_devices["default"].device_type.as_deref(),
            Some("ethernet")
        );
        let again: Node =
            toml::from_str(&toml::to_string(&node).unwrap_or_default()).unwrap_or_default();
        assert_eq!(node, again);
        let err = toml::from_str::<Node>("colour = \"red\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
