//! Conveniences on the node record.

use crate::{Ipmi, Kernel, NetDevice, Node, Server, tag};

impl Node {
    /// An empty node record with this id; handy in tests.
    pub fn new(id: impl Into<String>) -> Self {
        Node {
            id: id.into(),
            comment: None,
            cluster: None,
            profiles: Vec::new(),
            image: None,
            ipxe_template: None,
            system_overlays: Vec::new(),
            runtime_overlays: Vec::new(),
            init: None,
            root: None,
            kernel: Kernel {
                version: None,
                args: Vec::new(),
            },
            primary_network: None,
            network_devices: Vec::new(),
            ipmi: Ipmi::default(),
            tags: Vec::new(),
            resources: Vec::new(),
            disks: Vec::new(),
            filesystems: Vec::new(),
            asset_key: None,
            discoverable: false,
        }
    }

    /// The value of a node tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        tag(&self.tags, key)
    }

    /// The primary network device: the one the host marked primary, else the first.
    pub fn primary_device(&self) -> Option<&NetDevice> {
        self.network_devices
            .iter()
            .find(|d| d.primary)
            .or_else(|| self.network_devices.first())
    }

    /// A free-form resource, parsed from its JSON.
    pub fn resource(&self, name: &str) -> Option<serde_json::Value> {
        self.resources
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| serde_json::from_str(&r.json).ok())
    }
}

impl Server {
    /// A server record with only a hostname and HTTP port; handy in tests.
    pub fn new(hostname: impl Into<String>, port: u16) -> Self {
        Server {
            hostname: hostname.into(),
            ipaddr: None,
            netmask: None,
            network: None,
            ipaddr6: None,
            prefixlen6: None,
            port,
        }
    }
}

impl NetDevice {
    /// An empty device on the named network; handy in tests.
    pub fn new(name: impl Into<String>) -> Self {
        NetDevice {
            name: name.into(),
            device_type: None,
            onboot: None,
            device: None,
            hwaddr: None,
            ipaddr: None,
            netmask: None,
            gateway: None,
            ipaddr6: None,
            prefixlen6: None,
            gateway6: None,
            mtu: None,
            primary: false,
            tags: Vec::new(),
        }
    }

    /// The value of a network tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        tag(&self.tags, key)
    }

    /// The IPv4 prefix length from the netmask, when both are valid.
    pub fn prefix_len(&self) -> Option<u8> {
        let mask: std::net::Ipv4Addr = self.netmask.as_deref()?.parse().ok()?;
        let bits = u32::from(mask);
        (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones() as u8)
    }
}

// A generated type: `Default` cannot be derived on it from here.
#[allow(clippy::derivable_impls)]
impl Default for Ipmi {
    fn default() -> Self {
        Ipmi {
            username: None,
            password: None,
            ipaddr: None,
            gateway: None,
            netmask: None,
            port: None,
            interface: None,
            escape_char: None,
            write: None,
            template: None,
            tags: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tag;

    #[test]
    fn primary_device_and_prefix() {
        let mut node = Node::new("n1");
        assert!(node.primary_device().is_none());
        let mut a = NetDevice::new("a");
        a.netmask = Some("255.255.252.0".into());
        let mut b = NetDevice::new("b");
        b.primary = true;
        b.netmask = Some("255.0.255.0".into());
        node.network_devices = vec![a, b];
        assert_eq!(node.primary_device().map(|d| d.name.as_str()), Some("b"));
        assert_eq!(node.network_devices[0].prefix_len(), Some(22));
        assert_eq!(node.network_devices[1].prefix_len(), None);
        node.tags.push(Tag::new("k", "v"));
        assert_eq!(node.tag("k"), Some("v"));
    }
}
