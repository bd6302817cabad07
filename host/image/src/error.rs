//! What can go wrong with an image, said so that the admin knows what to fix.

use std::io;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The input (a reference, an archive, a layer, a name) is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error("no image named `{0}`: `wulf image list` shows the images there are")]
    NotFound(String),
    #[error("image `{0}` already exists: use --force to replace it")]
    Exists(String),
    /// The registry refused or could not be reached.
    #[error("{0}")]
    Registry(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] wulf_core::ExtensionError),
}

impl ImageError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    pub fn at(path: &Path) -> impl FnOnce(io::Error) -> ImageError {
        ImageError::io(path.display().to_string())
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
