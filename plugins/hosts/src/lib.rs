//! `hosts`: one `/etc/hosts` for the whole cluster, as Warewulf's `hosts` overlay writes it:
//! the server as `warewulf`, then per node and network `<ip> <node>-<network>`, the primary
//! network also under the node's own name, and `<node>-<device>` when the device is named.
//! It is the same file for every node, so it is made once (`generate-shared`) and sent as a
//! shared segment. The nodes are read from the host a page at a time (the
//! `cluster-overlay-generator` world), so 100,000 nodes fit the default memory limit: the plugin
//! holds one page of records and the file it writes.

use wulf_sdk::{Cluster, ClusterOverlayGenerator, File, FileEntry, Node, PluginError, Server};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

pub struct Hosts;

fn names(names: &[String], domain: Option<&str>) -> String {
    let mut out: Vec<String> = Vec::new();
    if let Some(domain) = domain {
        out.extend(names.iter().map(|n| format!("{n}.{domain}")));
    }
    out.extend(names.iter().cloned());
    out.join(" ")
}

impl ClusterOverlayGenerator for Hosts {
    fn generate(_node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        Ok(Vec::new())
    }

    fn generate_shared(cluster: &Cluster, server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let domain = config.domain.as_deref();
        let mut v4 = String::from("127.0.0.1 localhost localhost.localdomain\n");
        let mut v6 = String::from("::1 localhost ip6-localhost ip6-loopback\n");
        if let Some(ip) = &server.ipaddr {
            v4.push_str(&format!(
                "{ip} {} warewulf wulf\n",
                names(std::slice::from_ref(&server.hostname), domain)
            ));
        }
        if let Some(ip) = &server.ipaddr6 {
            v6.push_str(&format!(
                "{ip} {} warewulf wulf\n",
                names(std::slice::from_ref(&server.hostname), domain)
            ));
        }
        // In name order, as the host sends them.
        for node in cluster.nodes() {
            let primary = node.primary_device().map(|d| d.name.clone());
            for dev in &node.network_devices {
                let mut aliases = Vec::new();
                if Some(&dev.name) == primary.as_ref() {
                    aliases.push(node.id.clone());
                }
                aliases.push(format!("{}-{}", node.id, dev.name));
                if let Some(device) = &dev.device
                    && device != &dev.name
                {
                    aliases.push(format!("{}-{device}", node.id));
                }
                if let Some(ip) = &dev.ipaddr {
                    v4.push_str(&format!("{ip} {}\n", names(&aliases, domain)));
                }
                if let Some(ip) = &dev.ipaddr6 {
                    v6.push_str(&format!("{ip} {}\n", names(&aliases, domain)));
                }
            }
            if let Some(ip) = &node.ipmi.ipaddr {
                v4.push_str(&format!(
                    "{ip} {}\n",
                    names(&[format!("{}-ipmi", node.id)], domain)
                ));
            }
        }
        let mut text =
            String::from("# /etc/hosts written by wulf (hosts overlay): do not edit on the node\n");
        text.push_str(&v4);
        text.push('\n');
        text.push_str(&v6);
        for line in &config.extra {
            text.push_str(line);
            text.push('\n');
        }
        Ok(vec![File::text("/etc/hosts", text).into()])
    }
}

wulf_sdk::register_cluster_overlay_generator!(Hosts);

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_sdk::NetDevice;

    #[test]
    fn every_node_on_every_network() {
        wulf_sdk::testing::set_config(
            serde_json::json!({"domain": "hpc", "extra": ["10.9.9.9 nas"]}),
        );
        let mut n = Node::new("n1");
        let mut eth = NetDevice::new("default");
        eth.ipaddr = Some("10.0.0.1".into());
        eth.primary = true;
        let mut ib = NetDevice::new("ib");
        ib.ipaddr = Some("10.1.0.1".into());
        ib.device = Some("ib0".into());
        n.network_devices = vec![eth, ib];
        let mut server = Server::new("head", 9873);
        server.ipaddr = Some("10.0.0.254".into());
        let files = Hosts::generate_shared(&Cluster::from(vec![n]), &server)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let text = files[0].text().unwrap_or_default();
        assert!(
            text.contains("10.0.0.254 head.hpc head warewulf wulf\n"),
            "{text}"
        );
        assert!(
            text.contains("10.0.0.1 n1.hpc n1-default.hpc n1 n1-default\n"),
            "{text}"
        );
        assert!(
            text.contains("10.1.0.1 n1-ib.hpc n1-ib0.hpc n1-ib n1-ib0\n"),
            "{text}"
        );
        assert!(text.ends_with("10.9.9.9 nas\n"), "{text}");
    }
}
