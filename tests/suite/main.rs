//! All black-box and integration tests, in one binary.

// A failed unwrap in a test is a test failure with a backtrace: exactly what is wanted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod api;
mod bmc;
mod build_memory;
mod cli_configure;
mod cli_image;
mod cli_node;
mod cli_overlay;
mod cli_plugin;
mod debian_node;
mod dhcp;
mod doctor;
mod hardening;
mod image_exec;
mod migrate;
mod netboot;
mod overlay_plugins;
mod package;
mod plugin_runtime;
mod polyglot;
mod serve;
mod serve_files;
mod service;
mod site_layer;
mod stage_one;
mod state_upgrade;
