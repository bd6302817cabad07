//! One module per top-level command.

pub mod configure;
pub mod image;
pub mod import;
pub mod node;
pub mod node_fields;
pub mod overlay;
pub mod plugin;
pub mod serve;
pub mod status;
