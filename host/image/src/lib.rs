//! wulf's images: import from OCI registries, OCI layouts, image archives and chroot
//! directories; layers flattened into one rootfs without root; the rootfs packed into a
//! compressed newc initramfs on every core; kernels found inside the image.
//!
//! The pipeline, each step in its own module:
//! [`source`]/[`registry`] -> layer blobs -> [`flatten`] -> `rootfs.tar` -> [`pack`] (with
//! excludes and image-transform plugins) -> [`cpio`] -> [`compress`] -> `initramfs-<hash>.img.gz`.

pub mod chroot;
pub mod compress;
pub mod cpio;
pub mod error;
pub mod exec;
pub mod flatten;
pub mod kernel;
pub mod oci;
pub mod pack;
pub mod registry;
pub mod rootfs;
pub mod source;
pub mod stage1;
pub mod store;
pub mod users;

pub use compress::Compression;
pub use error::{EntryError, ImageError};
pub use kernel::Kernel;
pub use oci::Platform;
pub use registry::RegistryOptions;
pub use source::Source;
pub use store::{ImageFiles, ImageMeta, ImageStore, ImportBuild, ImportOptions};

/// Reports the progress of long steps (downloads, unpacking, packing). The CLI draws bars;
/// tests and the server pass [`NoProgress`].
pub trait Progress: Send + Sync {
    /// A new step; `total` in its own unit (bytes or entries) when known.
    fn start(&self, step: &str, total: Option<u64>);
    fn advance(&self, amount: u64);
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
