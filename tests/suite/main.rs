//! All black-box and integration tests, in one binary.

mod cli_node;
mod cli_plugin;
mod plugin_runtime;
mod serve;
