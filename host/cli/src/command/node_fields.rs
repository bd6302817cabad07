//! The field flags `node add|set` and `profile add|set` share, with `wwctl`'s names. They
//! become a [`Patch`], whose rules (`UNSET`, counting addresses up) live in `wulf-site`.

use clap::Args;
use wulf_site::Patch;

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct FieldArgs {
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
    /// iPXE template: `default`, `stage-one` (a two-stage boot) or a site template in <state>/ipxe
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
    /// The ipmitool command template: a file name in <state>/bmc
    #[arg(long)]
    pub ipmitemplate: Option<String>,
    /// How the BMC is driven: ipmi (ipmitool, the default) or redfish
    #[arg(long)]
    pub ipmidriver: Option<String>,
    /// Redfish: https (the default) or http
    #[arg(long)]
    pub ipmischeme: Option<String>,
    /// Redfish: verify the BMC's TLS certificate (default true)
    #[arg(long)]
    pub ipmitlsverify: Option<bool>,
    /// Redfish: the system's id under /redfish/v1/Systems, when the BMC has several
    #[arg(long)]
    pub ipmisystemid: Option<String>,
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
pub(crate) struct NodeOnlyArgs {
    /// Asset key the node must present
    #[arg(long)]
    pub asset: Option<String>,
    /// May take the MAC of an unknown machine that boots
    #[arg(short = 'e', long)]
    pub discoverable: Option<bool>,
}

impl FieldArgs {
    /// The change these flags ask for; `node_only` adds the node-only flags.
    pub(crate) fn patch(&self, node_only: Option<&NodeOnlyArgs>) -> Patch {
        let node_only = node_only.cloned().unwrap_or_default();
        Patch {
            profiles: self.profiles.clone(),
            comment: self.comment.clone(),
            cluster: self.cluster.clone(),
            image: self.image.clone(),
            ipxe: self.ipxe.clone(),
            system_overlays: self.system_overlays.clone(),
            runtime_overlays: self.runtime_overlays.clone(),
            init: self.init.clone(),
            root: self.root.clone(),
            kernelversion: self.kernelversion.clone(),
            kernelargs: self.kernelargs.clone(),
            primarynet: self.primarynet.clone(),
            netname: self.netname.clone(),
            net_type: self.net_type.clone(),
            onboot: self.onboot,
            netdev: self.netdev.clone(),
            hwaddr: self.hwaddr.clone(),
            ipaddr: self.ipaddr.clone(),
            netmask: self.netmask.clone(),
            gateway: self.gateway.clone(),
            ipaddr6: self.ipaddr6.clone(),
            prefixlen6: self.prefixlen6.clone(),
            gateway6: self.gateway6.clone(),
            mtu: self.mtu.clone(),
            ipmiuser: self.ipmiuser.clone(),
            ipmipass: self.ipmipass.clone(),
            ipmiaddr: self.ipmiaddr.clone(),
            ipmigateway: self.ipmigateway.clone(),
            ipmimask: self.ipmimask.clone(),
            ipmiport: self.ipmiport.clone(),
            ipmiinterface: self.ipmiinterface.clone(),
            ipmiescapechar: self.ipmiescapechar.clone(),
            ipmiwrite: self.ipmiwrite,
            ipmitemplate: self.ipmitemplate.clone(),
            ipmidriver: self.ipmidriver.clone(),
            ipmischeme: self.ipmischeme.clone(),
            ipmitlsverify: self.ipmitlsverify,
            ipmisystemid: self.ipmisystemid.clone(),
            tagadd: self.tagadd.clone(),
            tagdel: self.tagdel.clone(),
            nettagadd: self.nettagadd.clone(),
            nettagdel: self.nettagdel.clone(),
            ipmitagadd: self.ipmitagadd.clone(),
            ipmitagdel: self.ipmitagdel.clone(),
            netdel: self.netdel,
            asset: node_only.asset,
            discoverable: node_only.discoverable,
        }
    }
}
