//! The first-party plugins, built by `build.rs` and compiled into the binary.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
