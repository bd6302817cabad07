//! One module per top-level command.

pub mod plugin;
pub mod serve;
