//! A change to node and profile records, field by field, with `wwctl`'s field names: what
//! `node add|set` and `profile add|set` apply (and, later, the API's PATCH bodies). Only fields
//! that are given change anything; `UNSET` (or `UNDEF`, `DELETE`, `--`) clears a value; IPv4
//! addresses count up across the nodes of a hostlist.

use std::net::Ipv4Addr;

use wulf_core::address::{IPV4_RULE, IPV6_RULE, NETMASK_RULE};
use wulf_core::hwaddr::HWADDR_RULE;
use wulf_core::node::Node;
use wulf_core::secret::Secret;

use crate::error::{Result, SiteError};

/// Field changes. The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Patch {
    /// Profiles, in order (comma-separated; `~name` removes an inherited one)
    pub profiles: Option<Vec<String>>,
    pub comment: Option<String>,
    pub cluster: Option<String>,
    /// Image to boot
    pub image: Option<String>,
    /// iPXE template name
    pub ipxe: Option<String>,
    /// System overlays (comma-separated)
    pub system_overlays: Option<Vec<String>>,
    /// Runtime overlays (comma-separated)
    pub runtime_overlays: Option<Vec<String>>,
    pub init: Option<String>,
    /// Root: initramfs, tmpfs, or a device
    pub root: Option<String>,
    /// Kernel version prefix or path inside the image
    pub kernelversion: Option<String>,
    /// Kernel arguments (comma-separated)
    pub kernelargs: Option<Vec<String>>,
    /// The primary network
    pub primarynet: Option<String>,
    /// Which network device the network flags change
    pub netname: String,
    /// Network device type (ethernet, infiniband, bond, vlan)
    pub net_type: Option<String>,
    pub onboot: Option<bool>,
    /// Interface name on the node (eth0)
    pub netdev: Option<String>,
    /// MAC address
    pub hwaddr: Option<String>,
    /// IPv4 address; increments across a hostlist on `add`
    pub ipaddr: Option<String>,
    pub netmask: Option<String>,
    pub gateway: Option<String>,
    pub ipaddr6: Option<String>,
    pub prefixlen6: Option<String>,
    pub gateway6: Option<String>,
    pub mtu: Option<String>,
    pub ipmiuser: Option<String>,
    pub ipmipass: Option<String>,
    /// BMC IPv4 address; increments across a hostlist on `add`
    pub ipmiaddr: Option<String>,
    pub ipmigateway: Option<String>,
    pub ipmimask: Option<String>,
    pub ipmiport: Option<String>,
    pub ipmiinterface: Option<String>,
    pub ipmiescapechar: Option<String>,
    pub ipmiwrite: Option<bool>,
    /// The ipmitool command template, a file name in `<state>/bmc`
    pub ipmitemplate: Option<String>,
    /// How the BMC is driven: ipmi (ipmitool) or redfish
    pub ipmidriver: Option<String>,
    /// Redfish: https or http
    pub ipmischeme: Option<String>,
    /// Redfish: verify the BMC's TLS certificate
    pub ipmitlsverify: Option<bool>,
    /// Redfish: the system id under /redfish/v1/Systems
    pub ipmisystemid: Option<String>,
    /// Add node tags (key=value, comma-separated)
    pub tagadd: Vec<String>,
    /// Remove node tags (comma-separated keys)
    pub tagdel: Vec<String>,
    /// Add tags to the network device (key=value)
    pub nettagadd: Vec<String>,
    pub nettagdel: Vec<String>,
    /// Add IPMI tags (key=value)
    pub ipmitagadd: Vec<String>,
    pub ipmitagdel: Vec<String>,
    /// Remove the network device named by --netname
    pub netdel: bool,
    /// Asset key the node must present
    pub asset: Option<String>,
    /// May take the MAC of an unknown machine that boots
    pub discoverable: Option<bool>,
}

fn bad(flag: &str, value: &str, reason: &str) -> SiteError {
    SiteError::BadValue {
        field: flag.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn is_unset(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "UNSET" | "UNDEF" | "DELETE" | "--"
    )
}

fn text(target: &mut Option<String>, value: &Option<String>) {
    if let Some(value) = value {
        *target = (!is_unset(value)).then(|| value.clone());
    }
}

fn number<T: std::str::FromStr>(
    target: &mut Option<T>,
    value: &Option<String>,
    flag: &str,
) -> Result<()> {
    parsed(target, value, flag, "not a number")
}

/// Sets a typed field from its text; `what` says what the text should have been.
fn parsed<T: std::str::FromStr>(
    target: &mut Option<T>,
    value: &Option<String>,
    flag: &str,
    what: &str,
) -> Result<()> {
    if let Some(value) = value {
        *target = if is_unset(value) {
            None
        } else {
            Some(value.parse().map_err(|_| bad(flag, value, what))?)
        };
    }
    Ok(())
}

fn list(target: &mut Vec<String>, value: &Option<Vec<String>>) {
    if let Some(items) = value {
        *target = items
            .iter()
            .filter(|i| !i.is_empty() && !is_unset(i))
            .cloned()
            .collect();
    }
}

fn tags(
    target: &mut wulf_core::node::Tags,
    add: &[String],
    del: &[String],
    flag: &str,
) -> Result<()> {
    for pair in add {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(flag, pair, "expected key=value"))?;
        if key.is_empty() {
            return Err(bad(flag, pair, "the key is empty"));
        }
        target.insert(key.to_string(), value.to_string());
    }
    for key in del {
        target.remove(key);
    }
    Ok(())
}

/// `base` plus `offset`, for auto-incremented addresses across a hostlist.
fn increment(base: &str, offset: usize, flag: &str) -> Result<String> {
    let ip: Ipv4Addr = base
        .parse()
        .map_err(|_| bad(flag, base, "not an IPv4 address"))?;
    let next = u32::try_from(offset)
        .ok()
        .and_then(|offset| u32::from(ip).checked_add(offset))
        .ok_or_else(|| {
            bad(
                flag,
                base,
                &format!("plus {offset} runs past 255.255.255.255"),
            )
        })?;
    Ok(Ipv4Addr::from(next).to_string())
}

impl Patch {
    /// Applies the given flags to `node`; `offset` is its position in a hostlist (for address
    /// auto-increment, used by `add`).
    /// Applies the fields given to `node`; `offset` is the node's place in a hostlist being
    /// added, by which `ipaddr` and `ipmiaddr` count up.
    pub fn apply(&self, node: &mut Node, offset: Option<usize>) -> Result<()> {
        list(&mut node.profiles, &self.profiles);
        text(&mut node.comment, &self.comment);
        text(&mut node.cluster, &self.cluster);
        text(&mut node.image, &self.image);
        text(&mut node.ipxe_template, &self.ipxe);
        list(&mut node.system_overlays, &self.system_overlays);
        list(&mut node.runtime_overlays, &self.runtime_overlays);
        text(&mut node.init, &self.init);
        text(&mut node.root, &self.root);
        text(&mut node.kernel.version, &self.kernelversion);
        list(&mut node.kernel.args, &self.kernelargs);
        text(&mut node.primary_network, &self.primarynet);
        tags(&mut node.tags, &self.tagadd, &self.tagdel, "tagadd")?;

        let ipmi = &mut node.ipmi;
        text(&mut ipmi.username, &self.ipmiuser);
        if let Some(pass) = &self.ipmipass {
            ipmi.password = (!is_unset(pass)).then(|| Secret::new(pass.clone()));
        }
        let ipmiaddr = match (&self.ipmiaddr, offset) {
            (Some(base), Some(offset)) if !is_unset(base) => {
                Some(increment(base, offset, "ipmiaddr")?)
            }
            (value, _) => value.clone(),
        };
        parsed(&mut ipmi.ipaddr, &ipmiaddr, "ipmiaddr", IPV4_RULE)?;
        parsed(
            &mut ipmi.gateway,
            &self.ipmigateway,
            "ipmigateway",
            IPV4_RULE,
        )?;
        parsed(&mut ipmi.netmask, &self.ipmimask, "ipmimask", NETMASK_RULE)?;
        number(&mut ipmi.port, &self.ipmiport, "ipmiport")?;
        text(&mut ipmi.interface, &self.ipmiinterface);
        text(&mut ipmi.escape_char, &self.ipmiescapechar);
        text(&mut ipmi.template, &self.ipmitemplate);
        parsed(
            &mut ipmi.driver,
            &self.ipmidriver,
            "ipmidriver",
            "expected ipmi or redfish",
        )?;
        parsed(
            &mut ipmi.scheme,
            &self.ipmischeme,
            "ipmischeme",
            "expected https or http",
        )?;
        if let Some(verify) = self.ipmitlsverify {
            ipmi.tls_verify = Some(verify);
        }
        text(&mut ipmi.system_id, &self.ipmisystemid);
        if let Some(write) = self.ipmiwrite {
            ipmi.write = Some(write);
        }
        tags(
            &mut ipmi.tags,
            &self.ipmitagadd,
            &self.ipmitagdel,
            "ipmitagadd",
        )?;

        if self.netdel {
            node.network_devices.remove(self.netname());
            return Ok(());
        }
        if !self.touches_network() {
            return Ok(());
        }
        let dev = node
            .network_devices
            .get_or_insert_with(self.netname().to_owned(), Default::default);
        text(&mut dev.device_type, &self.net_type);
        if let Some(onboot) = self.onboot {
            dev.onboot = Some(onboot);
        }
        text(&mut dev.device, &self.netdev);
        parsed(&mut dev.hwaddr, &self.hwaddr, "hwaddr", HWADDR_RULE)?;
        let ipaddr = match (&self.ipaddr, offset) {
            (Some(base), Some(offset)) if !is_unset(base) => {
                Some(increment(base, offset, "ipaddr")?)
            }
            (value, _) => value.clone(),
        };
        parsed(&mut dev.ipaddr, &ipaddr, "ipaddr", IPV4_RULE)?;
        parsed(&mut dev.netmask, &self.netmask, "netmask", NETMASK_RULE)?;
        parsed(&mut dev.gateway, &self.gateway, "gateway", IPV4_RULE)?;
        parsed(&mut dev.ipaddr6, &self.ipaddr6, "ipaddr6", IPV6_RULE)?;
        number(&mut dev.prefixlen6, &self.prefixlen6, "prefixlen6")?;
        parsed(&mut dev.gateway6, &self.gateway6, "gateway6", IPV6_RULE)?;
        number(&mut dev.mtu, &self.mtu, "mtu")?;
        tags(&mut dev.tags, &self.nettagadd, &self.nettagdel, "nettagadd")?;
        Ok(())
    }

    /// The node-only fields; a profile refuses them.
    pub fn apply_node_only(&self, node: &mut Node) {
        text(&mut node.asset_key, &self.asset);
        if let Some(discoverable) = self.discoverable {
            node.discoverable = discoverable.then_some(true);
        }
    }

    /// The network device the network fields change: `default` unless named.
    fn netname(&self) -> &str {
        if self.netname.is_empty() {
            "default"
        } else {
            &self.netname
        }
    }

    fn touches_network(&self) -> bool {
        self.net_type.is_some()
            || self.onboot.is_some()
            || self.netdev.is_some()
            || self.hwaddr.is_some()
            || self.ipaddr.is_some()
            || self.netmask.is_some()
            || self.gateway.is_some()
            || self.ipaddr6.is_some()
            || self.prefixlen6.is_some()
            || self.gateway6.is_some()
            || self.mtu.is_some()
            || !self.nettagadd.is_empty()
            || !self.nettagdel.is_empty()
    }
}
