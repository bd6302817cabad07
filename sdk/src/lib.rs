//! `wulf-sdk`: write wulf plugins in Rust.
//!
//! A plugin is a `cdylib` crate built with `cargo build --target wasm32-wasip2`. It depends on
//! this crate only, implements one trait and registers it with one macro:
//!
//! | world               | trait                 | macro                           |
//! |---------------------|-----------------------|---------------------------------|
//! | `overlay-generator` | [`OverlayGenerator`]  | [`register_overlay_generator!`] |
//! | `overlay-generator` | [`ClusterOverlayGenerator`] (shared files read the [`Cluster`] a page at a time, at any size) | [`register_cluster_overlay_generator!`] |
//! | `inventory-backend` | [`InventoryBackend`]  | [`register_inventory_backend!`] |
//! | `image-transform`   | [`ImageTransform`]    | [`register_image_transform!`]   |
//!
//! The same code compiles for the host target, so plugin logic is unit-tested with a plain
//! `cargo test`: [`log`] then writes to stderr and [`config`] reads what
//! [`testing::set_config`] stored.
//!
//! This crate owns the guest bindings of the WIT package `wulf:plugin@0.1.0`; nothing else in
//! the workspace may depend on it except plugins.

#![warn(missing_docs)]

extern crate self as wulf_sdk;

mod cluster;
mod file;
mod node;
mod traits;

pub mod log;
pub mod testing;

pub use cluster::Cluster;
pub use file::File;
#[doc(hidden)]
pub use traits::{__ClusterAdapter, __InventoryAdapter, __OverlayAdapter, __TransformAdapter};
pub use traits::{
    Action, ClusterOverlayGenerator, Entry, EntryKind, ImageTransform, InventoryBackend,
    OverlayGenerator,
};

/// The WIT API version this SDK builds plugins against.
pub const API_VERSION: &str = "0.1.0";

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    //! Generated bindings, one module per world. The shared `types` and `host` interfaces are
    //! generated once, in `overlay`, and reused by the others.
    pub mod overlay {
        wit_bindgen::generate!({
            world: "overlay-generator",
            path: "../wit/v0.1",
            pub_export_macro: true,
            export_macro_name: "__export_overlay_generator",
            default_bindings_module: "::wulf_sdk::bindings::overlay",
            runtime_path: "::wulf_sdk::__rt",
            additional_derives: [PartialEq, Eq],
        });
    }
    pub mod cluster {
        wit_bindgen::generate!({
            world: "cluster-overlay-generator",
            path: "../wit/v0.1",
            pub_export_macro: true,
            export_macro_name: "__export_cluster_overlay_generator",
            default_bindings_module: "::wulf_sdk::bindings::cluster",
            runtime_path: "::wulf_sdk::__rt",
            with: {
                "wulf:plugin/types@0.1.0": crate::bindings::overlay::wulf::plugin::types,
                "wulf:plugin/host@0.1.0": crate::bindings::overlay::wulf::plugin::host,
            },
        });
    }
    pub mod inventory {
        wit_bindgen::generate!({
            world: "inventory-backend",
            path: "../wit/v0.1",
            pub_export_macro: true,
            export_macro_name: "__export_inventory_backend",
            default_bindings_module: "::wulf_sdk::bindings::inventory",
            runtime_path: "::wulf_sdk::__rt",
            with: {
                "wulf:plugin/types@0.1.0": crate::bindings::overlay::wulf::plugin::types,
                "wulf:plugin/host@0.1.0": crate::bindings::overlay::wulf::plugin::host,
            },
        });
    }
    pub mod transform {
        wit_bindgen::generate!({
            world: "image-transform",
            path: "../wit/v0.1",
            pub_export_macro: true,
            export_macro_name: "__export_image_transform",
            default_bindings_module: "::wulf_sdk::bindings::transform",
            runtime_path: "::wulf_sdk::__rt",
            additional_derives: [PartialEq, Eq],
            with: {
                "wulf:plugin/types@0.1.0": crate::bindings::overlay::wulf::plugin::types,
                "wulf:plugin/host@0.1.0": crate::bindings::overlay::wulf::plugin::host,
            },
        });
    }
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use bindings::overlay::wulf::plugin::types::{
    Disk, FileContent, FileEntry, Filesystem, Ipmi, Kernel, NetDevice, Node, Partition,
    PluginError, Resource, Server, Tag,
};

/// This plugin's configuration: the `[config]` table of its `plugin.toml`, overlaid with the
/// site configuration, deserialized into `T`.
///
/// ```
/// # fn main() -> Result<(), wulf_sdk::PluginError> {
/// #[derive(serde::Deserialize)]
/// struct Config {
///     domain: Option<String>,
/// }
/// # wulf_sdk::testing::set_config(serde_json::json!({ "domain": "hpc.example" }));
/// let config: Config = wulf_sdk::config()?;
/// assert_eq!(config.domain.as_deref(), Some("hpc.example"));
/// # Ok(())
/// # }
/// ```
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, PluginError> {
    let text = raw_config();
    // The error names the field, not the text: a config may hold secrets (host keys).
    serde_json::from_str(&text).map_err(|e| PluginError::Config(e.to_string()))
}

#[cfg(target_arch = "wasm32")]
fn raw_config() -> String {
    bindings::overlay::wulf::plugin::host::config()
}

#[cfg(not(target_arch = "wasm32"))]
fn raw_config() -> String {
    testing::config_json()
}

impl Tag {
    /// A tag from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Looks `key` up in a tag list.
pub fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}

/// The README's examples, compiled and run as doctests so they never rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
