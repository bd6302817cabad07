//! `network`: a node's network configuration for whatever the image runs, as Warewulf's
//! `systemd.networkd`, `systemd.netname` and `NetworkManager` overlays render it.
//!
//! Per network device: a `.link` file naming the interface by MAC (when `device` is set), a
//! `.network` file, `.netdev` files for VLANs and bonds, and a NetworkManager keyfile.
//! Device types come from the device's `type`: `ethernet` (default), `infiniband`, `vlan`
//! (tags `vlan-id` and `parent`, or a `parent.id` device name) and `bond` (tag `mode`; members
//! are devices tagged `master=<bond device>`). IPv4 and IPv6 addresses, gateways, MTU and
//! `DNS*` tags are applied. At boot, `/warewulf/init.d/40-network` enables systemd-networkd
//! when the image has it and no NetworkManager; in images with neither it configures the
//! static addresses with `ip`.

use wulf_sdk::{File, FileEntry, NetDevice, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "all")]
    write: Vec<String>,
}

fn all() -> Vec<String> {
    vec!["networkd".into(), "networkmanager".into(), "init".into()]
}

pub struct Network;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Ethernet,
    Infiniband,
    Vlan { id: u16, parent: String },
    Bond { mode: String },
}

struct Dev<'a> {
    net: &'a NetDevice,
    kind: Kind,
    /// The interface name on the node, when known.
    iface: Option<String>,
    /// The bond this device is a member of.
    master: Option<String>,
    dns: Vec<String>,
}

fn kind_of(node: &Node, d: &NetDevice) -> Result<Kind, PluginError> {
    let bad =
        |m: String| PluginError::InvalidInput(format!("node {}, network {}: {m}", node.id, d.name));
    Ok(match d.device_type.as_deref().unwrap_or("ethernet") {
        "ethernet" | "" => Kind::Ethernet,
        "infiniband" | "ib" => Kind::Infiniband,
        "bond" => Kind::Bond {
            mode: d.tag("mode").unwrap_or("active-backup").to_string(),
        },
        "vlan" => {
            let from_name = d.device.as_deref().and_then(|n| n.rsplit_once('.'));
            let id = d
                .tag("vlan-id")
                .or(from_name.map(|(_, id)| id))
                .ok_or_else(|| {
                    bad("a vlan needs a `vlan-id` tag or a device named <parent>.<id>".into())
                })?;
            let id: u16 = id
                .parse()
                .ok()
                .filter(|i| (1..4095).contains(i))
                .ok_or_else(|| bad(format!("vlan id {id:?} is not 1-4094")))?;
            let parent = d
                .tag("parent")
                .or(from_name.map(|(p, _)| p))
                .ok_or_else(|| {
                    bad("a vlan needs a `parent` tag or a device named <parent>.<id>".into())
                })?;
            Kind::Vlan {
                id,
                parent: parent.to_string(),
            }
        }
        other => {
            return Err(bad(format!(
                "type {other:?} is not ethernet, infiniband, vlan or bond"
            )));
        }
    })
}

fn dns_of(d: &NetDevice) -> Vec<String> {
    let mut tags: Vec<_> = d
        .tags
        .iter()
        .filter(|t| {
            t.key.to_ascii_uppercase().starts_with("DNS")
                && !t.key.eq_ignore_ascii_case("DNSSEARCH")
        })
        .collect();
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    tags.iter()
        .flat_map(|t| {
            t.value
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .collect()
}

fn v4(d: &NetDevice) -> Option<String> {
    Some(format!(
        "{}/{}",
        d.ipaddr.as_ref()?,
        d.prefix_len().unwrap_or(24)
    ))
}

fn v6(d: &NetDevice) -> Option<String> {
    Some(format!(
        "{}/{}",
        d.ipaddr6.as_ref()?,
        d.prefixlen6.unwrap_or(64)
    ))
}

fn networkd(devs: &[Dev<'_>], out: &mut Vec<FileEntry>) {
    for d in devs {
        let net = &d.net.name;
        if let (Some(mac), Some(iface)) = (&d.net.hwaddr, &d.iface)
            && matches!(d.kind, Kind::Ethernet | Kind::Infiniband)
        {
            out.push(File::text(format!("/etc/systemd/network/10-wulf-{net}.link"), format!("# wulf: name the {net} interface by its MAC\n[Match]\nMACAddress={mac}\n\n[Link]\nName={iface}\n")).into());
        }
        match &d.kind {
            Kind::Vlan { id, .. } => {
                if let Some(iface) = &d.iface {
                    out.push(
                        File::text(
                            format!("/etc/systemd/network/20-wulf-{net}.netdev"),
                            format!("[NetDev]\nName={iface}\nKind=vlan\n\n[VLAN]\nId={id}\n"),
                        )
                        .into(),
                    );
                }
            }
            Kind::Bond { mode } => {
                if let Some(iface) = &d.iface {
                    out.push(
                        File::text(
                            format!("/etc/systemd/network/20-wulf-{net}.netdev"),
                            format!("[NetDev]\nName={iface}\nKind=bond\n\n[Bond]\nMode={mode}\n"),
                        )
                        .into(),
                    );
                }
            }
            _ => {}
        }
        let mut text = String::from("[Match]\n");
        match (&d.iface, &d.net.hwaddr) {
            (Some(iface), _) => text.push_str(&format!("Name={iface}\n")),
            (None, Some(mac)) => text.push_str(&format!("MACAddress={mac}\n")),
            (None, None) => continue,
        }
        if let Some(mtu) = d.net.mtu {
            text.push_str(&format!("\n[Link]\nMTUBytes={mtu}\n"));
        }
        text.push_str("\n[Network]\n");
        if let Some(master) = &d.master {
            text.push_str(&format!("Bond={master}\n"));
        } else {
            if let Some(a) = v4(d.net) {
                text.push_str(&format!("Address={a}\n"));
            }
            if let Some(gw) = &d.net.gateway {
                text.push_str(&format!("Gateway={gw}\n"));
            }
            if let Some(a) = v6(d.net) {
                text.push_str(&format!("Address={a}\n"));
            }
            if let Some(gw) = &d.net.gateway6 {
                text.push_str(&format!("Gateway={gw}\n"));
            }
            if d.net.ipaddr.is_none() && d.net.ipaddr6.is_none() {
                text.push_str("LinkLocalAddressing=no\n");
            }
            for dns in &d.dns {
                text.push_str(&format!("DNS={dns}\n"));
            }
        }
        for vlan in devs.iter().filter(
            |v| matches!(&v.kind, Kind::Vlan { parent, .. } if Some(parent) == d.iface.as_ref()),
        ) {
            if let Some(name) = &vlan.iface {
                text.push_str(&format!("VLAN={name}\n"));
            }
        }
        out.push(File::text(format!("/etc/systemd/network/30-wulf-{net}.network"), text).into());
    }
}

fn networkmanager(devs: &[Dev<'_>], out: &mut Vec<FileEntry>) {
    for d in devs {
        let net = &d.net.name;
        let kind = match &d.kind {
            Kind::Ethernet => "ethernet",
            Kind::Infiniband => "infiniband",
            Kind::Vlan { .. } => "vlan",
            Kind::Bond { .. } => "bond",
        };
        let mut t = format!("[connection]\nid=wulf-{net}\ntype={kind}\nautoconnect=true\n");
        if let Some(iface) = &d.iface {
            t.push_str(&format!("interface-name={iface}\n"));
        }
        if let Some(master) = &d.master {
            t.push_str(&format!("master={master}\nslave-type=bond\n"));
        }
        match &d.kind {
            Kind::Ethernet | Kind::Infiniband => {
                t.push_str(&format!("\n[{kind}]\n"));
                if let Some(mac) = &d.net.hwaddr {
                    t.push_str(&format!("mac-address={mac}\n"));
                }
                if let Some(mtu) = d.net.mtu {
                    t.push_str(&format!("mtu={mtu}\n"));
                }
            }
            Kind::Vlan { id, parent } => {
                t.push_str(&format!("\n[vlan]\nid={id}\nparent={parent}\n"))
            }
            Kind::Bond { mode } => t.push_str(&format!("\n[bond]\nmode={mode}\n")),
        }
        if d.master.is_none() {
            match v4(d.net) {
                Some(a) => {
                    t.push_str(&format!("\n[ipv4]\nmethod=manual\naddress1={a}"));
                    if let Some(gw) = &d.net.gateway {
                        t.push_str(&format!(",{gw}"));
                    }
                    t.push('\n');
                    if !d.dns.is_empty() {
                        t.push_str(&format!("dns={};\n", d.dns.join(";")));
                    }
                }
                None => t.push_str("\n[ipv4]\nmethod=disabled\n"),
            }
            match v6(d.net) {
                Some(a) => {
                    t.push_str(&format!("\n[ipv6]\nmethod=manual\naddress1={a}"));
                    if let Some(gw) = &d.net.gateway6 {
                        t.push_str(&format!(",{gw}"));
                    }
                    t.push('\n');
                }
                None => t.push_str("\n[ipv6]\nmethod=ignore\n"),
            }
        }
        out.push(
            File::text(
                format!("/etc/NetworkManager/system-connections/wulf-{net}.nmconnection"),
                t,
            )
            .mode(0o600)
            .into(),
        );
    }
}

/// What `/warewulf/init.d/40-network` does first, before the image's init runs: leaves an
/// image with NetworkManager to it (it reads the keyfiles above), enables systemd-networkd in
/// an image that has it (Debian ships it disabled, and a `.network` file alone does nothing),
/// as `systemctl enable` would; only an image with neither gets static addresses with `ip`.
const INIT_PROLOGUE: &str = r#"#!/bin/sh
# wulf: bring the node's network up with what the image has.
if command -v NetworkManager >/dev/null 2>&1; then
    exit 0
fi
for units in /usr/lib/systemd/system /lib/systemd/system; do
    [ -f "$units/systemd-networkd.service" ] || continue
    wants=/etc/systemd/system
    mkdir -p "$wants/multi-user.target.wants" "$wants/sockets.target.wants" "$wants/network-online.target.wants"
    ln -sf "$units/systemd-networkd.service" "$wants/multi-user.target.wants/systemd-networkd.service"
    ln -sf "$units/systemd-networkd.service" "$wants/dbus-org.freedesktop.network1.service"
    ln -sf "$units/systemd-networkd.socket" "$wants/sockets.target.wants/systemd-networkd.socket"
    if [ -f "$units/systemd-networkd-wait-online.service" ]; then
        ln -sf "$units/systemd-networkd-wait-online.service" "$wants/network-online.target.wants/systemd-networkd-wait-online.service"
    fi
    echo "wulf: systemd-networkd configures the network"
    exit 0
done
"#;

/// The boot-time script: a network manager the image has, else static addresses with `ip`.
fn init_script(devs: &[Dev<'_>]) -> String {
    let mut s = String::from(INIT_PROLOGUE);
    s.push_str("by_mac() {\n    for dev in /sys/class/net/*; do\n        [ \"$(cat \"$dev/address\" 2>/dev/null)\" = \"$1\" ] && { echo \"${dev##*/}\"; return; }\n    done\n}\n");
    for d in devs
        .iter()
        .filter(|d| matches!(d.kind, Kind::Ethernet | Kind::Infiniband) && d.master.is_none())
    {
        let Some(mac) = &d.net.hwaddr else { continue };
        s.push_str(&format!(
            "iface=$(by_mac {mac})\nif [ -n \"$iface\" ]; then\n"
        ));
        if let Some(mtu) = d.net.mtu {
            s.push_str(&format!("    ip link set \"$iface\" mtu {mtu}\n"));
        }
        s.push_str("    ip link set \"$iface\" up\n");
        if let Some(a) = v4(d.net) {
            s.push_str(&format!("    ip addr add {a} dev \"$iface\"\n"));
        }
        if let Some(a) = v6(d.net) {
            s.push_str(&format!("    ip -6 addr add {a} dev \"$iface\"\n"));
        }
        if let Some(gw) = &d.net.gateway {
            s.push_str(&format!(
                "    ip route add default via {gw} dev \"$iface\" 2>/dev/null\n"
            ));
        }
        s.push_str(&format!("    echo \"wulf: {} is $iface\"\nelse\n    echo \"wulf: no interface has MAC {mac} ({})\" >&2\nfi\n", d.net.name, d.net.name));
    }
    s
}

impl OverlayGenerator for Network {
    fn generate(node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        for w in &config.write {
            if !["networkd", "networkmanager", "init"].contains(&w.as_str()) {
                return Err(PluginError::Config(format!(
                    "write: {w:?} is not networkd, networkmanager or init"
                )));
            }
        }
        let mut devs = Vec::new();
        for net in &node.network_devices {
            devs.push(Dev {
                kind: kind_of(node, net)?,
                iface: net.device.clone(),
                master: net.tag("master").map(String::from),
                dns: dns_of(net),
                net,
            });
        }
        let mut out = Vec::new();
        if config.write.iter().any(|w| w == "networkd") {
            networkd(&devs, &mut out);
        }
        if config.write.iter().any(|w| w == "networkmanager") {
            networkmanager(&devs, &mut out);
        }
        if config.write.iter().any(|w| w == "init") && !devs.is_empty() {
            out.push(
                File::text("/warewulf/init.d/40-network", init_script(&devs))
                    .mode(0o755)
                    .into(),
            );
        }
        Ok(out)
    }
}

wulf_sdk::register_overlay_generator!(Network);

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_sdk::Tag;

    fn dev(name: &str, device: &str, kind: &str) -> NetDevice {
        let mut d = NetDevice::new(name);
        d.device = Some(device.into());
        d.device_type = Some(kind.into());
        d
    }

    #[test]
    fn vlans_and_bonds_from_tags_and_bad_ones_refused() {
        wulf_sdk::testing::set_config(serde_json::json!({}));
        let mut node = Node::new("n1");
        let mut eth0 = dev("default", "eth0", "ethernet");
        eth0.hwaddr = Some("aa:00:00:00:00:01".into());
        eth0.ipaddr = Some("10.0.0.1".into());
        eth0.netmask = Some("255.255.0.0".into());
        eth0.gateway = Some("10.0.0.254".into());
        eth0.tags = vec![Tag::new("DNS1", "10.0.0.53")];
        let mut vlan = dev("storage", "eth0.100", "vlan");
        vlan.ipaddr = Some("10.100.0.1".into());
        let mut bond = dev("data", "bond0", "bond");
        bond.tags = vec![Tag::new("mode", "802.3ad")];
        bond.ipaddr = Some("10.2.0.1".into());
        let mut m1 = dev("data1", "eth1", "ethernet");
        m1.hwaddr = Some("aa:00:00:00:00:02".into());
        m1.tags = vec![Tag::new("master", "bond0")];
        node.network_devices = vec![eth0, vlan, bond, m1];
        let files =
            Network::generate(&node, &Server::new("h", 1)).unwrap_or_else(|e| panic!("{e:?}"));
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.path == p)
                .and_then(|f| f.text())
                .unwrap_or_else(|| panic!("no {p}"))
                .to_string()
        };
        assert_eq!(
            get("/etc/systemd/network/30-wulf-default.network"),
            "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.0.1/16\nGateway=10.0.0.254\nDNS=10.0.0.53\nVLAN=eth0.100\n"
        );
        assert_eq!(
            get("/etc/systemd/network/20-wulf-storage.netdev"),
            "[NetDev]\nName=eth0.100\nKind=vlan\n\n[VLAN]\nId=100\n"
        );
        assert_eq!(
            get("/etc/systemd/network/30-wulf-data1.network"),
            "[Match]\nName=eth1\n\n[Network]\nBond=bond0\n"
        );
        assert!(
            get("/etc/NetworkManager/system-connections/wulf-data.nmconnection")
                .contains("[bond]\nmode=802.3ad\n")
        );
        assert!(
            get("/etc/NetworkManager/system-connections/wulf-data1.nmconnection")
                .contains("master=bond0\nslave-type=bond\n")
        );
        assert!(
            get("/warewulf/init.d/40-network").contains("ip addr add 10.0.0.1/16 dev \"$iface\"")
        );

        node.network_devices = vec![dev("bad", "eth9", "vlan")];
        let err = Network::generate(&node, &Server::new("h", 1))
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(
            err.contains("node n1, network bad: a vlan needs a `vlan-id` tag"),
            "{err}"
        );
    }
}
