//! The inventory as an Ansible dynamic inventory (`ansible-inventory -i SCRIPT --list`): a
//! group per profile applied, cluster, image and tag, each node's merged record as its host
//! variables with `ansible_host` set to its primary address, and no secrets.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::Site;
use crate::error::Result;

impl Site {
    /// The nodes matching `patterns` (all when empty) in Ansible's `--list` format.
    pub fn ansible_inventory(&self, patterns: &[String]) -> Result<Value> {
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut hostvars = Map::new();
        for merged in self.merged_nodes(patterns)? {
            let mut node = merged.node;
            // Never to Ansible, not even masked.
            node.ipmi.password = None;
            let id = node.id.clone();
            let mut join = |prefix: &str, name: &str| {
                groups
                    .entry(group_name(prefix, name))
                    .or_default()
                    .insert(id.clone());
            };
            for profile in &merged.applied {
                join("profile", profile);
            }
            if let Some(cluster) = &node.cluster {
                join("cluster", cluster);
            }
            if let Some(image) = &node.image {
                join("image", image);
            }
            for (key, value) in &node.tags {
                join("tag", &format!("{key}_{value}"));
            }
            let address = node
                .primary_network()
                .and_then(|device| node.network_devices.get(device))
                .and_then(|device| device.ipaddr);
            let mut vars = ansible_names(serde_json::to_value(&node).unwrap_or(Value::Null));
            if let Value::Object(fields) = &mut vars {
                if let Some(address) = address {
                    fields.insert("ansible_host".into(), Value::String(address.to_string()));
                }
                fields.insert("wulf_profiles".into(), json!(merged.applied));
            }
            hostvars.insert(id, vars);
        }
        let mut out = Map::new();
        let mut children: Vec<String> = groups.keys().cloned().collect();
        children.push("ungrouped".into());
        let grouped: BTreeSet<&String> = groups.values().flatten().collect();
        let ungrouped: Vec<&String> = hostvars.keys().filter(|h| !grouped.contains(h)).collect();
        out.insert("all".into(), json!({ "children": children }));
        out.insert("ungrouped".into(), json!({ "hosts": ungrouped }));
        for (name, hosts) in &groups {
            out.insert(name.clone(), json!({ "hosts": hosts }));
        }
        out.insert("_meta".into(), json!({ "hostvars": hostvars }));
        Ok(Value::Object(out))
    }
}

/// The record's field names as Ansible variables (`network-devices` → `network_devices`),
/// in the record and in its IPMI, kernel and network-device sections; names the admin chose
/// (devices, tags) stay as they are.
fn ansible_names(record: Value) -> Value {
    fn snake(fields: Map<String, Value>) -> Map<String, Value> {
        fields
            .into_iter()
            .map(|(key, value)| (key.replace('-', "_"), value))
            .collect()
    }
    let Value::Object(fields) = record else {
        return record;
    };
    let mut fields = snake(fields);
    for section in ["ipmi", "kernel"] {
        if let Some(Value::Object(inner)) = fields.remove(section) {
            fields.insert(section.into(), Value::Object(snake(inner)));
        }
    }
    if let Some(Value::Object(devices)) = fields.remove("network_devices") {
        let devices = devices
            .into_iter()
            .map(|(name, device)| match device {
                Value::Object(inner) => (name, Value::Object(snake(inner))),
                other => (name, other),
            })
            .collect();
        fields.insert("network_devices".into(), Value::Object(devices));
    }
    Value::Object(fields)
}

/// A group name Ansible accepts without warnings: letters, digits and underscores, not
/// starting with a digit.
fn group_name(prefix: &str, name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{cleaned}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_become_variables_and_the_admins_names_stay() {
        let record = json!({"network-devices": {"ib-0": {"ipaddr6": "fd00::1", "prefix-len": 64}},
                            "tags": {"rack-row": "a"}, "ipmi": {"tls-verify": false}});
        assert_eq!(
            ansible_names(record),
            json!({"network_devices": {"ib-0": {"ipaddr6": "fd00::1", "prefix_len": 64}},
                   "tags": {"rack-row": "a"}, "ipmi": {"tls_verify": false}})
        );
    }

    #[test]
    fn group_names_are_ansible_identifiers() {
        assert_eq!(group_name("tag", "rack_r-1.a"), "tag_rack_r_1_a");
        assert_eq!(group_name("profile", "gpu"), "profile_gpu");
    }
}
