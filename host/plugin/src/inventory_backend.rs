//! `wulf-core`'s [`InventoryBackend`] over a wasm plugin.

use std::sync::Arc;

use wulf_core::{ExtensionError, InventoryBackend, Node};

use crate::conversion::node_from_wit;
use crate::runtime::LoadedPlugin;

/// An inventory-backend plugin, callable from any thread.
#[derive(Clone)]
pub struct WasmInventoryBackend {
    plugin: Arc<LoadedPlugin>,
}

impl WasmInventoryBackend {
    /// `None` when the plugin implements another world.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Option<Self> {
        plugin.inventory_pre()?;
        Some(WasmInventoryBackend { plugin })
    }

    fn call<T>(
        &self,
        f: impl FnOnce(
            &crate::bindings::inventory::exports::wulf::plugin::backend::Guest,
            &mut wasmtime::Store<crate::host_state::HostState>,
        ) -> wasmtime::Result<Result<T, crate::bindings::wit::PluginError>>,
    ) -> Result<T, ExtensionError> {
        let pre = self
            .plugin
            .inventory_pre()
            .ok_or_else(|| self.plugin.host_error("not an inventory backend"))?;
        self.plugin.call(|store| {
            let instance = pre.instantiate(&mut *store)?;
            f(instance.wulf_plugin_backend(), store)
        })
    }
}

impl InventoryBackend for WasmInventoryBackend {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn list_nodes(&self) -> Result<Vec<Node>, ExtensionError> {
        let nodes = self.call(|guest, store| guest.call_list_nodes(store))?;
        Ok(nodes.into_iter().map(node_from_wit).collect())
    }

    fn list_profiles(&self) -> Result<Vec<Node>, ExtensionError> {
        let profiles = self.call(|guest, store| guest.call_list_profiles(store))?;
        Ok(profiles.into_iter().map(node_from_wit).collect())
    }

    fn lookup_hwaddr(&self, hwaddr: &str) -> Result<Option<Node>, ExtensionError> {
        Ok(self
            .call(|guest, store| guest.call_lookup_hwaddr(store, hwaddr))?
            .map(node_from_wit))
    }

    fn accept_discovered(&self, hwaddr: &str) -> Result<Option<Node>, ExtensionError> {
        Ok(self
            .call(|guest, store| guest.call_accept_discovered(store, hwaddr))?
            .map(node_from_wit))
    }
}
