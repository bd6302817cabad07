//! The wasm plugin runtime: the only crate that links wasmtime.
//!
//! It owns the engine, per-plugin limits (epoch deadlines, memory caps, output caps), the
//! manifest format, the registry of embedded and installed plugins, the on-disk compile cache
//! and the WIT bindings, and implements `wulf-core`'s extension traits over components, so no
//! other crate sees a wasm type. It depends on `wulf-core` only.

mod bindings;
pub mod cache;
pub mod component_check;
mod conversion;
mod engine;
mod guest_output;
mod host_state;
mod image_transform;
mod inventory_backend;
pub mod manifest;
mod overlay_generator;
pub mod registry;
mod runtime;
mod virtual_clock;

pub use cache::Origin;
pub use image_transform::WasmImageTransform;
pub use inventory_backend::WasmInventoryBackend;
pub use manifest::{API_VERSION, Manifest, World};
pub use overlay_generator::WasmOverlayGenerator;
pub use registry::{EmbeddedPlugin, Listing, Registry, RegistryError, Source};
pub use runtime::{LoadError, LoadedPlugin, PluginPackage, Runtime};
