//! The first-party plugins and the node agent, built by `build.rs` and compiled into the binary.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
