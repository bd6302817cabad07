//! What a DHCP server must know of the cluster to send PXE firmware to wulf: the address nodes
//! reach this host on, and a static entry for every node interface with a MAC and an IPv4
//! address inside the boot network. The configuration text itself is the front end's.

use std::net::{IpAddr, Ipv4Addr};

use wulf_core::address::Netmask;

use crate::Site;
use crate::error::{Result, SiteError};

/// One static DHCP entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// The node's id for its primary network's interface, `<id>-<network>` for the others.
    pub name: String,
    pub hwaddr: wulf_core::HwAddr,
    pub ipaddr: Ipv4Addr,
}

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub network: Ipv4Addr,
    pub netmask: Netmask,
}

impl Ipv4Net {
    /// The network of `addr` under `netmask`.
    pub fn of(addr: Ipv4Addr, netmask: Netmask) -> Ipv4Net {
        Ipv4Net {
            network: Ipv4Addr::from(u32::from(addr) & u32::from(netmask.addr())),
            netmask,
        }
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.netmask.addr()) == u32::from(self.network)
    }
}

impl Site {
    /// The IPv4 address nodes reach this host on: `explicit`, else the HTTP listen address
    /// when it is a specific one.
    pub fn server_ipv4(&self, explicit: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        match (explicit, self.config().server.http_addr.ip()) {
            (Some(ip), _) => Ok(ip),
            (None, IpAddr::V4(ip)) if !ip.is_unspecified() => Ok(ip),
            _ => Err(SiteError::NoServerAddress),
        }
    }

    /// A static entry for every node interface with a MAC and an IPv4 address in `net`, in
    /// node order.
    pub fn dhcp_hosts(&self, net: Ipv4Net) -> Result<Vec<DhcpHost>> {
        let mut hosts = Vec::new();
        for node in self.inventory()?.merged_nodes() {
            let primary = node.primary_network().map(str::to_string);
            for (network, dev) in &node.network_devices {
                let (Some(mac), Some(ip)) = (dev.hwaddr, dev.ipaddr) else {
                    continue;
                };
                if !net.contains(ip) {
                    continue;
                }
                let name = if primary.as_deref() == Some(network.as_str()) {
                    node.id.clone()
                } else {
                    format!("{}-{network}", node.id)
                };
                hosts.push(DhcpHost {
                    name,
                    hwaddr: mac,
                    ipaddr: ip,
                });
            }
        }
        Ok(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Patch};

    #[test]
    fn hosts_are_the_interfaces_inside_the_boot_network() {
        let (_dir, site) = crate::records::tests::site();
        let mask = |text: &str| Netmask::parse(text);
        assert_eq!(mask("255.0.255.0"), None);
        let boot = Ipv4Net::of(
            "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            mask("255.255.255.0").unwrap_or_else(|| panic!("a netmask")),
        );
        let patch = Patch {
            hwaddr: Some("AA:BB:CC:DD:EE:01".into()),
            ipaddr: Some("10.0.0.11".into()),
            ..Patch::default()
        };
        site.add_records(Kind::Node, &["n1".into()], &patch)
            .unwrap_or_else(|e| panic!("{e}"));
        let ib = Patch {
            netname: "ib".into(),
            hwaddr: Some("aa:bb:cc:dd:ee:02".into()),
            ipaddr: Some("10.0.0.12".into()),
            ..Patch::default()
        };
        site.set_records(Kind::Node, &crate::Selection::All, &ib)
            .unwrap_or_else(|e| panic!("{e}"));
        let outside = Patch {
            netname: "mgmt".into(),
            hwaddr: Some("aa:bb:cc:dd:ee:03".into()),
            ipaddr: Some("192.168.0.3".into()),
            ..Patch::default()
        };
        site.set_records(Kind::Node, &crate::Selection::All, &outside)
            .unwrap_or_else(|e| panic!("{e}"));
        let hosts = site.dhcp_hosts(boot).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["n1", "n1-ib"]);
        assert_eq!(hosts[0].hwaddr.to_string(), "aa:bb:cc:dd:ee:01");
        assert!(matches!(
            site.server_ipv4(None),
            Err(SiteError::NoServerAddress)
        ));
    }
}
