//! `resolv`: `/etc/resolv.conf`, as Warewulf's overlay writes it: name servers from network
//! tags whose key starts with `DNS` (`DNS1`, `DNS2`, ...; `DNSSEARCH` is the search list),
//! primary network first; the plugin config fills in when no tag does. With no name server
//! at all the image's own file is left alone.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
}

pub struct Resolv;

impl OverlayGenerator for Resolv {
    fn generate(node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let mut devices: Vec<_> = node.network_devices.iter().collect();
        devices.sort_by_key(|d| !d.primary);
        let (mut servers, mut search) = (Vec::new(), Vec::new());
        for dev in devices {
            let mut tags: Vec<_> = dev.tags.iter().collect();
            tags.sort_by(|a, b| a.key.cmp(&b.key));
            for tag in tags {
                let key = tag.key.to_ascii_uppercase();
                if key == "DNSSEARCH" {
                    search.extend(
                        tag.value
                            .split([',', ' '])
                            .filter(|s| !s.is_empty())
                            .map(String::from),
                    );
                } else if key.starts_with("DNS") {
                    servers.extend(
                        tag.value
                            .split([',', ' '])
                            .filter(|s| !s.is_empty())
                            .map(String::from),
                    );
                }
            }
        }
        if servers.is_empty() {
            servers = config.nameservers;
        }
        if search.is_empty() {
            search = config.search;
        }
        servers.dedup();
        if servers.is_empty() {
            return Ok(Vec::new());
        }
        for s in &servers {
            if s.parse::<std::net::IpAddr>().is_err() {
                return Err(PluginError::InvalidInput(format!(
                    "name server {s:?} of node {} is not an IP address",
                    node.id
                )));
            }
        }
        let mut text = String::from("# written by wulf (resolv overlay)\n");
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        for s in servers.iter().take(3) {
            text.push_str(&format!("nameserver {s}\n"));
        }
        Ok(vec![File::text("/etc/resolv.conf", text).into()])
    }
}

wulf_sdk::register_overlay_generator!(Resolv);

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_sdk::{NetDevice, Tag};

    #[test]
    fn tags_win_over_config_and_bad_addresses_are_refused() {
        wulf_sdk::testing::set_config(serde_json::json!({"nameservers": ["9.9.9.9"]}));
        let mut node = Node::new("n1");
        assert_eq!(
            Resolv::generate(&node, &Server::new("h", 1)).unwrap_or_default()[0].text(),
            Some("# written by wulf (resolv overlay)\nnameserver 9.9.9.9\n")
        );
        let mut dev = NetDevice::new("default");
        dev.tags = vec![
            Tag::new("DNS1", "10.0.0.53"),
            Tag::new("DNSSEARCH", "hpc.example,example"),
        ];
        node.network_devices = vec![dev];
        let files = Resolv::generate(&node, &Server::new("h", 1)).unwrap_or_default();
        assert_eq!(
            files[0].text(),
            Some(
                "# written by wulf (resolv overlay)\nsearch hpc.example example\nnameserver 10.0.0.53\n"
            )
        );
        node.network_devices[0].tags = vec![Tag::new("DNS", "not-an-ip")];
        assert!(Resolv::generate(&node, &Server::new("h", 1)).is_err());
        wulf_sdk::testing::set_config(serde_json::json!({}));
        node.network_devices.clear();
        assert!(
            Resolv::generate(&node, &Server::new("h", 1))
                .unwrap_or_default()
                .is_empty()
        );
    }
}
