//! `wulf-core`'s [`InventoryBackend`] over a wasm plugin.

use std::sync::Arc;

use wulf_core::extension::BackendRecord;
use wulf_core::record_error::RecordKind;
use wulf_core::{ExtensionError, HwAddr, InventoryBackend};

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
        self.plugin.call("inventory", |store| {
            let instance = pre.instantiate(&mut *store)?;
            f(instance.wulf_plugin_backend(), store)
        })
    }
}

impl InventoryBackend for WasmInventoryBackend {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn list_nodes(&self) -> Result<Vec<BackendRecord>, ExtensionError> {
        let nodes = self.call(|guest, store| guest.call_list_nodes(store))?;
        Ok(nodes
            .into_iter()
            .map(|n| node_from_wit(RecordKind::Node, n))
            .collect())
    }

    fn list_profiles(&self) -> Result<Vec<BackendRecord>, ExtensionError> {
        let profiles = self.call(|guest, store| guest.call_list_profiles(store))?;
        Ok(profiles
            .into_iter()
            .map(|n| node_from_wit(RecordKind::Profile, n))
            .collect())
    }

    fn lookup_hwaddr(&self, hwaddr: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError> {
        let wanted = hwaddr.to_string();
        Ok(self
            .call(|guest, store| guest.call_lookup_hwaddr(store, &wanted))?
            .map(|n| node_from_wit(RecordKind::Node, n)))
    }

    fn accept_discovered(&self, hwaddr: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError> {
        let offered = hwaddr.to_string();
        Ok(self
            .call(|guest, store| guest.call_accept_discovered(store, &offered))?
            .map(|n| node_from_wit(RecordKind::Node, n)))
    }
}
