//! Checks an inventory before it is written: names, addresses, references, and addresses that
//! two nodes claim at once. Every error names the record, the field and the value.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::hwaddr::HwAddr;
use crate::inventory::Inventory;
use crate::merge::merge_all;
use crate::node::Node;

pub use crate::record_error::{RecordKind, ValidationError};

/// Names of nodes, profiles and networks: Warewulf's characters, no leading punctuation.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

const NAME_RULE: &str =
    "use letters, digits, `.`, `_`, `:` and `-` (at most 63), starting with a letter or digit";

struct Checker<'a> {
    kind: RecordKind,
    id: &'a str,
    profiles: &'a BTreeMap<String, Node>,
}

impl Checker<'_> {
    fn fail(
        &self,
        field: impl Into<String>,
        value: &str,
        reason: impl Into<String>,
    ) -> ValidationError {
        ValidationError {
            kind: self.kind,
            id: self.id.to_owned(),
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn record(&self, id: &str, node: &Node) -> Result<(), ValidationError> {
        if !valid_name(id) {
            return Err(self.fail("name", id, NAME_RULE));
        }
        for profile in &node.profiles {
            let name = profile.strip_prefix('~').unwrap_or(profile);
            if !self.profiles.contains_key(name) {
                return Err(self.fail(
                    "profiles",
                    profile,
                    format!("profile `{name}` does not exist (see `wulf profile list`)"),
                ));
            }
        }
        // Addresses are typed: a record that holds one was parsed when it was read.
        for (net, dev) in &node.network_devices {
            let field = |name: &str| format!("network-devices.{net}.{name}");
            if !valid_name(net) {
                return Err(self.fail(format!("network-devices.{net}"), net, NAME_RULE));
            }
            if let Some(len) = dev.prefixlen6.filter(|l| *l > 128) {
                return Err(self.fail(
                    field("prefixlen6"),
                    &len.to_string(),
                    "an IPv6 prefix is 0 to 128 bits",
                ));
            }
            if let Some(mtu) = dev.mtu.filter(|m| !(68..=65535).contains(m)) {
                return Err(self.fail(field("mtu"), &mtu.to_string(), "an MTU is 68 to 65535"));
            }
        }
        if let Some(key) = node.tags.keys().find(|k| k.is_empty()) {
            return Err(self.fail("tags", key, "a tag needs a name"));
        }
        Ok(())
    }
}

/// Checks one record on its own (names, addresses, profile references against `profiles`):
/// what a record from an inventory backend must pass before it is served.
pub fn check_record(
    kind: RecordKind,
    id: &str,
    record: &Node,
    profiles: &BTreeMap<String, Node>,
) -> Result<(), ValidationError> {
    let checker = Checker { kind, id, profiles };
    checker.record(id, record)?;
    if kind == RecordKind::Profile && (record.discoverable.is_some() || record.asset_key.is_some())
    {
        let field = if record.discoverable.is_some() {
            "discoverable"
        } else {
            "asset-key"
        };
        return Err(checker.fail(field, "set", "belongs on nodes only"));
    }
    Ok(())
}

/// Checks every record, then that no hardware or IP address belongs to two nodes.
pub fn validate(inventory: &Inventory) -> Result<(), ValidationError> {
    for (id, profile) in &inventory.profiles {
        check_record(RecordKind::Profile, id, profile, &inventory.profiles)?;
    }
    let mut hwaddrs: HashMap<HwAddr, &str> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut bmc_ips: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut bmcs: HashMap<(Ipv4Addr, Option<u16>, Option<String>), &str> = HashMap::new();
    let merged_nodes = merge_all(inventory.nodes.values(), &inventory.profiles);
    for ((id, node), merged) in inventory.nodes.iter().zip(merged_nodes) {
        let checker = Checker {
            kind: RecordKind::Node,
            id,
            profiles: &inventory.profiles,
        };
        checker.record(id, node)?;
        let merged = merged.node;
        for (net, dev) in &merged.network_devices {
            if let Some(hwaddr) = dev.hwaddr
                && let Some(other) = hwaddrs.insert(hwaddr, id)
                && other != id
            {
                return Err(checker.fail(
                    format!("network-devices.{net}.hwaddr"),
                    &hwaddr.to_string(),
                    format!("node `{other}` has this address too"),
                ));
            }
            if let Some(ip) = dev.ipaddr
                && let Some(other) = ips
                    .insert(ip, id)
                    .or_else(|| bmc_ips.get(&ip).copied())
                    .filter(|other| *other != id)
            {
                return Err(checker.fail(
                    format!("network-devices.{net}.ipaddr"),
                    &ip.to_string(),
                    format!("node `{other}` has this address too"),
                ));
            }
        }
        if let Some(ip) = merged.ipmi.ipaddr {
            // Several BMCs may share an address on different ports, or one Redfish service
            // many systems; a BMC and a node's own interface may not.
            let key = (ip, merged.ipmi.port, merged.ipmi.system_id.clone());
            let clash = ips
                .get(&ip)
                .copied()
                .filter(|other| *other != id)
                .map(|other| format!("node `{other}` has this address too"))
                .or_else(|| {
                    bmcs.insert(key, id)
                        .filter(|other| *other != id)
                        .map(|other| {
                            format!("node `{other}`'s BMC has this address too (give them different ports or system ids)")
                        })
                });
            if let Some(reason) = clash {
                return Err(checker.fail("ipmi.ipaddr", &ip.to_string(), reason));
            }
            bmc_ips.insert(ip, id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NetDevice;

    fn inventory(text: &str) -> Inventory {
        Inventory::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first error of reading or checking `text`: a value that is not an address is
    /// refused on reading, a rule across records on checking; both name record and field.
    fn error(text: &str) -> String {
        match Inventory::from_toml(text) {
            Err(e) => e.to_string(),
            Ok(inventory) => validate(&inventory)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn accepts_a_sound_inventory() {
        let mut inv = inventory("[profiles.default]\n[nodes.n1]\nprofiles = [\"default\"]\n");
        inv.nodes.get_mut("n1").map(|n| {
            n.network_devices.insert(
                "default".into(),
                NetDevice {
                    hwaddr: "AA-bb-cc-dd-ee-01".parse().ok(),
                    ipaddr: "10.0.0.1".parse().ok(),
                    netmask: "255.255.0.0".parse().ok(),
                    ..NetDevice::default()
                },
            )
        });
        assert_eq!(validate(&inv), Ok(()));
    }

    #[test]
    fn errors_name_record_field_and_value() {
        insta::assert_snapshot!(error("[nodes.n1.network-devices.default]\nhwaddr = \"aa:bb\"\n"), @r#"node `n1`: `network-devices.default.hwaddr` = "aa:bb": not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff"#);
        insta::assert_snapshot!(error("[nodes.n1.network-devices.default]\nipaddr = \"10.0.0.300\"\n"), @r#"node `n1`: `network-devices.default.ipaddr` = "10.0.0.300": not an IPv4 address"#);
        insta::assert_snapshot!(error("[nodes.n1.network-devices.default]\nnetmask = \"255.0.255.0\"\n"), @r#"node `n1`: `network-devices.default.netmask` = "255.0.255.0": not a netmask like 255.255.255.0"#);
        insta::assert_snapshot!(error("[nodes.n1.network-devices.default]\nprefixlen6 = 129\n"), @r#"node `n1`: `network-devices.default.prefixlen6` = "129": an IPv6 prefix is 0 to 128 bits"#);
        insta::assert_snapshot!(error("[nodes.n1]\nprofiles = [\"gpu\"]\n"), @r#"node `n1`: `profiles` = "gpu": profile `gpu` does not exist (see `wulf profile list`)"#);
        insta::assert_snapshot!(error("[nodes.\"n 1\"]\n"), @r#"node `n 1`: `name` = "n 1": use letters, digits, `.`, `_`, `:` and `-` (at most 63), starting with a letter or digit"#);
        insta::assert_snapshot!(error("[nodes.n1.ipmi]\nipaddr = \"bmc1\"\n"), @r#"node `n1`: `ipmi.ipaddr` = "bmc1": not an IPv4 address"#);
        insta::assert_snapshot!(error("[profiles.p]\ndiscoverable = true\n"), @r#"profile `p`: `discoverable` = "set": belongs on nodes only"#);
        insta::assert_snapshot!(error("[nodes.n1.network-devices.a]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n[nodes.n2.network-devices.b]\nhwaddr = \"AA:BB:CC:DD:EE:01\"\n"), @r#"node `n2`: `network-devices.b.hwaddr` = "aa:bb:cc:dd:ee:01": node `n1` has this address too"#);
        insta::assert_snapshot!(error("[nodes.n1.network-devices.a]\nipaddr = \"10.0.0.1\"\n[nodes.n2.ipmi]\nipaddr = \"10.0.0.1\"\n"), @r#"node `n2`: `ipmi.ipaddr` = "10.0.0.1": node `n1` has this address too"#);
    }
}
