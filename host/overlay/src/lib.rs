//! wulf's overlays: the files a node gets on top of its image.
//!
//! Site overlays are directory trees whose `.ww` files are minijinja templates ([`source`],
//! [`template`]); an overlay name may instead be an overlay-generator plugin. A node's system
//! and runtime lists are rendered in order, later overlays winning ([`render`]), and packed
//! into per-node archives rebuilt only when their inputs change ([`archive`]).

pub mod archive;
pub mod error;
pub mod go_template;
pub mod host_keys;
pub mod render;
pub mod source;
pub mod template;

pub use archive::{ArchiveStore, Kind, Report};
pub use error::OverlayError;
pub use host_keys::HostKeys;
pub use render::Renderer;
pub use source::OverlayStore;
