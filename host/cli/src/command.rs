//! One module per top-level command.

pub(crate) mod configure;
pub(crate) mod doctor;
pub(crate) mod image;
pub(crate) mod import;
pub(crate) mod node;
pub(crate) mod node_fields;
pub(crate) mod overlay;
pub(crate) mod plugin;
pub(crate) mod plugin_new;
pub(crate) mod power;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod upgrade;
