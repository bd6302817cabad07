//! `wulf-core`'s [`OverlayGenerator`] over a wasm plugin.

use std::sync::Arc;

use wulf_core::{ExtensionError, Node, OverlayFile, OverlayGenerator, Server};

use crate::conversion::{node_to_wit, server_to_wit};
use crate::runtime::LoadedPlugin;

/// An overlay-generator plugin, callable from any thread.
#[derive(Clone)]
pub struct WasmOverlayGenerator {
    plugin: Arc<LoadedPlugin>,
}

impl WasmOverlayGenerator {
    /// `None` when the plugin implements another world.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Option<Self> {
        plugin.overlay_pre()?;
        Some(WasmOverlayGenerator { plugin })
    }
}

impl OverlayGenerator for WasmOverlayGenerator {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn shared(&self) -> wulf_core::extension::Shared {
        self.plugin.manifest.shared
    }

    fn generate(&self, node: &Node, server: &Server) -> Result<Vec<OverlayFile>, ExtensionError> {
        let pre = self
            .plugin
            .overlay_pre()
            .ok_or_else(|| self.plugin.host_error("not an overlay generator"))?;
        let (node, server) = (node_to_wit(node), server_to_wit(server));
        let files = self.plugin.call(|store| {
            let instance = pre.instantiate(&mut *store)?;
            instance
                .wulf_plugin_generator()
                .call_generate(&mut *store, &node, &server)
        })?;
        self.plugin.accept_files(files)
    }

    fn generate_shared(
        &self,
        nodes: &[Node],
        server: &Server,
    ) -> Result<Vec<OverlayFile>, ExtensionError> {
        let pre = self
            .plugin
            .overlay_pre()
            .ok_or_else(|| self.plugin.host_error("not an overlay generator"))?;
        let nodes: Vec<_> = nodes.iter().map(node_to_wit).collect();
        let server = server_to_wit(server);
        let files = self.plugin.call(|store| {
            let instance = pre.instantiate(&mut *store)?;
            instance
                .wulf_plugin_generator()
                .call_generate_shared(&mut *store, &nodes, &server)
        })?;
        self.plugin.accept_files(files)
    }
}
