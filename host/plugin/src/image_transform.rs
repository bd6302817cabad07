//! `wulf-core`'s [`ImageTransform`] over a wasm plugin. Unlike the other worlds, one store
//! lives for a whole build (the transform keeps state between batches); each call re-arms the
//! deadline, and after any failure the run refuses further calls.

use std::sync::Arc;

use wasmtime::Store;
use wulf_core::extension::{EntryAction, ImageEntry, TransformRun};
use wulf_core::{ExtensionError, ImageTransform, OverlayFile};

use crate::bindings::transform::ImageTransform as Bindings;
use crate::bindings::wit;
use crate::conversion::{action_from_wit, entry_to_wit};
use crate::host_state::HostState;
use crate::runtime::LoadedPlugin;

/// An image-transform plugin.
#[derive(Clone)]
pub struct WasmImageTransform {
    plugin: Arc<LoadedPlugin>,
}

impl WasmImageTransform {
    /// `None` when the plugin implements another world.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Option<Self> {
        plugin.transform_pre()?;
        Some(WasmImageTransform { plugin })
    }
}

impl ImageTransform for WasmImageTransform {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn start(&self, image: &str) -> Result<Box<dyn TransformRun>, ExtensionError> {
        let plugin = &self.plugin;
        let pre = plugin
            .transform_pre()
            .ok_or_else(|| plugin.host_error("not an image transform"))?;
        let mut store = plugin.new_store(&format!("image {image}"))?;
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Err(plugin.classify(&store, e)),
        };
        let mut run = WasmTransformRun {
            plugin: plugin.clone(),
            store,
            instance,
            failed: false,
        };
        run.call(|bindings, store| bindings.wulf_plugin_transform().call_begin(store, image))?;
        Ok(Box::new(run))
    }
}

struct WasmTransformRun {
    plugin: Arc<LoadedPlugin>,
    store: Store<HostState>,
    instance: Bindings,
    failed: bool,
}

impl WasmTransformRun {
    fn call<T>(
        &mut self,
        f: impl FnOnce(
            &Bindings,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<T, wit::PluginError>>,
    ) -> Result<T, ExtensionError> {
        if self.failed {
            return Err(self
                .plugin
                .host_error("an earlier call of this build failed"));
        }
        self.plugin.arm_deadline(&mut self.store);
        let outcome = f(&self.instance, &mut self.store);
        let result = self.plugin.finish_call(&self.store, outcome);
        self.failed = result.is_err();
        result
    }

    fn accept_action(&self, action: EntryAction) -> Result<EntryAction, ExtensionError> {
        match action {
            EntryAction::Replace(file) => {
                let mut files = self.plugin.accept_overlay_files(vec![file])?;
                Ok(EntryAction::Replace(files.remove(0)))
            }
            other => Ok(other),
        }
    }
}

impl TransformRun for WasmTransformRun {
    fn filter(&mut self, entries: &[ImageEntry]) -> Result<Vec<EntryAction>, ExtensionError> {
        let entries: Vec<_> = entries.iter().map(entry_to_wit).collect();
        let count = entries.len();
        let actions =
            self.call(|b, store| b.wulf_plugin_transform().call_filter(store, &entries))?;
        if actions.len() != count {
            self.failed = true;
            return Err(ExtensionError::InvalidOutput {
                plugin: self.plugin.name().to_string(),
                message: format!("{} actions for {count} entries", actions.len()),
            });
        }
        actions
            .into_iter()
            .map(|a| self.accept_action(action_from_wit(a)))
            .collect()
    }

    fn rewrite(
        &mut self,
        entry: &ImageEntry,
        content: Vec<u8>,
    ) -> Result<EntryAction, ExtensionError> {
        let entry = entry_to_wit(entry);
        let action = self.call(|b, store| {
            b.wulf_plugin_transform()
                .call_rewrite(store, &entry, &content)
        })?;
        match action_from_wit(action) {
            EntryAction::WantContent => Err(ExtensionError::InvalidOutput {
                plugin: self.plugin.name().to_string(),
                message: "`rewrite` answered want-content".into(),
            }),
            other => self.accept_action(other),
        }
    }

    fn finish(&mut self) -> Result<Vec<OverlayFile>, ExtensionError> {
        let files = self.call(|b, store| b.wulf_plugin_transform().call_finish(store))?;
        self.plugin.accept_files(files)
    }
}
