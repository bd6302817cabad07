//! wulf's core: the domain model (nodes, profiles, merge rules), the site configuration, the
//! inventory store and the extension-point traits that plugins and built-ins implement.
//!
//! No async, no wasmtime, no HTTP: everything else depends on this crate, and it depends on
//! nothing of ours.

pub mod address;
pub mod atomic_file;
pub mod bmc;
pub mod boot_status;
pub mod config;
pub mod extension;
pub mod hostlist;
pub mod hwaddr;
pub mod inventory;
mod inventory_cache;
pub mod inventory_store;
pub mod merge;
pub mod node;
pub mod node_fields;
pub mod overlay_file;
pub mod plugin_stats;
pub mod provision;
pub mod record_error;
pub mod secret;
pub mod sorted_map;
pub mod stamp;
pub mod state_dir;
pub mod validation;
pub mod warewulf_import;

pub use config::{Config, Limits};
pub use extension::{ExtensionError, ImageTransform, InventoryBackend, OverlayGenerator, Server};
pub use hwaddr::HwAddr;
pub use inventory::Inventory;
pub use inventory_store::{InventoryStore, StoreError};
pub use node::Node;
pub use overlay_file::{FileContent, OverlayFile};
pub use provision::{BootFile, BootStage, ProvisionError, Provisioner};
pub use state_dir::StateDir;
