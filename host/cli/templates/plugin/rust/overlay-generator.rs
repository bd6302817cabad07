//! {{name}}: a wulf overlay generator. Writes /etc/motd for every node.

use wulf_sdk::{File, FileEntry, Node, OverlayGenerator, PluginError, Server};

/// Settings from `[plugin.{{name}}.config]` in wulf.toml (defaults in plugin.toml).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Config {
    greeting: Option<String>,
}

pub struct Plugin;

impl OverlayGenerator for Plugin {
    fn generate(node: &Node, _server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let greeting = config.greeting.as_deref().unwrap_or("Welcome to");
        wulf_sdk::log::info(&format!("writing /etc/motd for {}", node.id));
        Ok(vec![
            File::text("/etc/motd", format!("{greeting} {}\n", node.id)).into(),
        ])
    }
}

wulf_sdk::register_overlay_generator!(Plugin);
