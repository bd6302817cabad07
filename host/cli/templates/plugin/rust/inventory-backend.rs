//! {{name}}: a wulf inventory backend. Serves the nodes listed in its configuration:
//! `[plugin.{{name}}.config] nodes = { n001 = "aa:bb:cc:dd:ee:01" }` (node id = MAC).

use std::collections::BTreeMap;

use wulf_sdk::{InventoryBackend, NetDevice, Node, PluginError};

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Config {
    nodes: BTreeMap<String, String>,
}

pub struct Plugin;

impl InventoryBackend for Plugin {
    fn list_nodes() -> Result<Vec<Node>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        Ok(config
            .nodes
            .iter()
            .map(|(id, mac)| Node {
                network_devices: vec![NetDevice {
                    hwaddr: Some(mac.to_ascii_lowercase()),
                    primary: true,
                    ..NetDevice::new("default")
                }],
                ..Node::new(id)
            })
            .collect())
    }
}

wulf_sdk::register_inventory_backend!(Plugin);
