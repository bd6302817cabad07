//! Overlay errors, naming the overlay, the file and the line where there is one.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no overlay named `{0}`: not a directory under overlays/ nor an overlay-generator plugin (`wulf overlay list` shows them)"
    )]
    NotFound(String),
    #[error("overlay `{overlay}`, file {file}: {message}")]
    Template {
        overlay: String,
        file: String,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("overlay `{overlay}` for node `{node}`: {source}")]
    Plugin {
        overlay: String,
        node: String,
        #[source]
        source: wulf_core::ExtensionError,
    },
}

impl OverlayError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        OverlayError::Io {
            context: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;
