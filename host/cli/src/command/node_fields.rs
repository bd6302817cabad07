//! The field flags `node add|set` and `profile add|set` share, with `wwctl`'s names, and how
//! they change a record. Only flags that were given change anything; `UNSET` clears a value.

use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};
use clap::Args;
use wulf_core::node::Node;

#[derive(Debug, Clone, Default, Args)]
pub struct FieldArgs {
    /// Profiles, in order (comma-separated; `~name` removes an inherited one)
    #[arg(short = 'P', long = "profile", value_delimiter = ',')]
    pub profiles: Option<Vec<String>>,
    #[arg(long)]
    pub comment: Option<String>,
    #[arg(short = 'c', long)]
    pub cluster: Option<String>,
    /// Image to boot
    #[arg(long)]
    pub image: Option<String>,
    /// iPXE template name
    #[arg(long)]
    pub ipxe: Option<String>,
    /// System overlays (comma-separated)
    #[arg(short = 'O', long, value_delimiter = ',')]
    pub system_overlays: Option<Vec<String>>,
    /// Runtime overlays (comma-separated)
    #[arg(short = 'R', long, value_delimiter = ',')]
    pub runtime_overlays: Option<Vec<String>>,
    #[arg(short = 'i', long)]
    pub init: Option<String>,
    /// Root: initramfs, tmpfs, or a device
    #[arg(long)]
    pub root: Option<String>,
    /// Kernel version prefix or path inside the image
    #[arg(long)]
    pub kernelversion: Option<String>,
    /// Kernel arguments (comma-separated)
    #[arg(short = 'A', long, value_delimiter = ',')]
    pub kernelargs: Option<Vec<String>>,
    /// The primary network
    #[arg(short = 'p', long)]
    pub primarynet: Option<String>,
    /// Which network device the network flags change
    #[arg(long, default_value = "default")]
    pub netname: String,
    /// Network device type (ethernet, infiniband, bond, vlan)
    #[arg(short = 'T', long = "type")]
    pub net_type: Option<String>,
    #[arg(long)]
    pub onboot: Option<bool>,
    /// Interface name on the node (eth0)
    #[arg(short = 'N', long)]
    pub netdev: Option<String>,
    /// MAC address
    #[arg(short = 'H', long)]
    pub hwaddr: Option<String>,
    /// IPv4 address; increments across a hostlist on `add`
    #[arg(short = 'I', long)]
    pub ipaddr: Option<String>,
    #[arg(short = 'M', long)]
    pub netmask: Option<String>,
    #[arg(short = 'G', long)]
    pub gateway: Option<String>,
    #[arg(long)]
    pub ipaddr6: Option<String>,
    #[arg(long)]
    pub prefixlen6: Option<String>,
    #[arg(long)]
    pub gateway6: Option<String>,
    #[arg(long)]
    pub mtu: Option<String>,
    #[arg(long)]
    pub ipmiuser: Option<String>,
    #[arg(long)]
    pub ipmipass: Option<String>,
    /// BMC IPv4 address; increments across a hostlist on `add`
    #[arg(long)]
    pub ipmiaddr: Option<String>,
    #[arg(long)]
    pub ipmigateway: Option<String>,
    #[arg(long)]
    pub ipmimask: Option<String>,
    #[arg(long)]
    pub ipmiport: Option<String>,
    #[arg(long)]
    pub ipmiinterface: Option<String>,
    #[arg(long)]
    pub ipmiescapechar: Option<String>,
    #[arg(long)]
    pub ipmiwrite: Option<bool>,
    /// Add node tags (key=value, comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub tagadd: Vec<String>,
    /// Remove node tags (comma-separated keys)
    #[arg(long, value_delimiter = ',')]
    pub tagdel: Vec<String>,
    /// Add tags to the network device (key=value)
    #[arg(long, value_delimiter = ',')]
    pub nettagadd: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub nettagdel: Vec<String>,
    /// Add IPMI tags (key=value)
    #[arg(long, value_delimiter = ',')]
    pub ipmitagadd: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub ipmitagdel: Vec<String>,
    /// Remove the network device named by --netname
    #[arg(long)]
    pub netdel: bool,
}

/// Node-only flags.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeOnlyArgs {
    /// Asset key the node must present
    #[arg(long)]
    pub asset: Option<String>,
    /// May take the MAC of an unknown machine that boots
    #[arg(short = 'e', long)]
    pub discoverable: Option<bool>,
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
) -> anyhow::Result<()> {
    if let Some(value) = value {
        *target = if is_unset(value) {
            None
        } else {
            Some(
                value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--{flag} {value:?}: not a number"))?,
            )
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
) -> anyhow::Result<()> {
    for pair in add {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--{flag} {pair:?}: expected key=value"))?;
        if key.is_empty() {
            bail!("--{flag} {pair:?}: the key is empty");
        }
        target.insert(key.to_string(), value.to_string());
    }
    for key in del {
        target.remove(key);
    }
    Ok(())
}

/// `base` plus `offset`, for auto-incremented addresses across a hostlist.
pub fn increment(base: &str, offset: usize, flag: &str) -> anyhow::Result<String> {
    let ip: Ipv4Addr = base
        .parse()
        .map_err(|_| anyhow::anyhow!("--{flag} {base:?}: not an IPv4 address"))?;
    let next = u32::from(ip)
        .checked_add(offset as u32)
        .with_context(|| format!("--{flag} {base:?} + {offset} runs past 255.255.255.255"))?;
    Ok(Ipv4Addr::from(next).to_string())
}

impl FieldArgs {
    /// Applies the given flags to `node`; `offset` is its position in a hostlist (for address
    /// auto-increment, used by `add`).
    pub fn apply(&self, node: &mut Node, offset: Option<usize>) -> anyhow::Result<()> {
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
        text(&mut ipmi.password, &self.ipmipass);
        let ipmiaddr = match (&self.ipmiaddr, offset) {
            (Some(base), Some(offset)) if !is_unset(base) => {
                Some(increment(base, offset, "ipmiaddr")?)
            }
            (value, _) => value.clone(),
        };
        text(&mut ipmi.ipaddr, &ipmiaddr);
        text(&mut ipmi.gateway, &self.ipmigateway);
        text(&mut ipmi.netmask, &self.ipmimask);
        number(&mut ipmi.port, &self.ipmiport, "ipmiport")?;
        text(&mut ipmi.interface, &self.ipmiinterface);
        text(&mut ipmi.escape_char, &self.ipmiescapechar);
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
            node.network_devices.remove(&self.netname);
            return Ok(());
        }
        if !self.touches_network() {
            return Ok(());
        }
        let dev = node
            .network_devices
            .entry(self.netname.clone())
            .or_default();
        text(&mut dev.device_type, &self.net_type);
        if let Some(onboot) = self.onboot {
            dev.onboot = Some(onboot);
        }
        text(&mut dev.device, &self.netdev);
        text(
            &mut dev.hwaddr,
            &self
                .hwaddr
                .as_ref()
                .map(|h| h.to_ascii_lowercase().replace('-', ":")),
        );
        let ipaddr = match (&self.ipaddr, offset) {
            (Some(base), Some(offset)) if !is_unset(base) => {
                Some(increment(base, offset, "ipaddr")?)
            }
            (value, _) => value.clone(),
        };
        text(&mut dev.ipaddr, &ipaddr);
        text(&mut dev.netmask, &self.netmask);
        text(&mut dev.gateway, &self.gateway);
        text(&mut dev.ipaddr6, &self.ipaddr6);
        number(&mut dev.prefixlen6, &self.prefixlen6, "prefixlen6")?;
        text(&mut dev.gateway6, &self.gateway6);
        number(&mut dev.mtu, &self.mtu, "mtu")?;
        tags(&mut dev.tags, &self.nettagadd, &self.nettagdel, "nettagadd")?;
        Ok(())
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

impl NodeOnlyArgs {
    pub fn apply(&self, node: &mut Node) {
        text(&mut node.asset_key, &self.asset);
        if let Some(discoverable) = self.discoverable {
            node.discoverable = discoverable.then_some(true);
        }
    }
}
