//! `hostname`: the node's `/etc/hostname`, as Warewulf's overlay of the same name writes it.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    domain: Option<String>,
}

/// The generator; public so benchmarks can call it natively.
pub struct Hostname;

impl OverlayGenerator for Hostname {
    fn generate(node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let name = match config.domain {
            Some(domain) => format!("{}.{domain}", node.id),
            None => node.id.clone(),
        };
        Ok(vec![
            File::text("/etc/hostname", format!("{name}\n")).into(),
        ])
    }
}

wulf_sdk::register_overlay_generator!(Hostname);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_node_id_with_an_optional_domain() {
        wulf_sdk::testing::set_config(serde_json::json!({}));
        let files = Hostname::generate(&Node::new("n001"), &Server::new("head", 9873))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files, vec![File::text("/etc/hostname", "n001\n").build()]);
        wulf_sdk::testing::set_config(serde_json::json!({"domain": "hpc.example"}));
        let files = Hostname::generate(&Node::new("n001"), &Server::new("head", 9873))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files[0].text(), Some("n001.hpc.example\n"));
    }
}
