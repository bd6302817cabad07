//! Overlay errors, naming the overlay, the file and the line where there is one.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay name {name:?} is not valid: use letters, digits, `_`, `-` and `.`")]
    BadName { name: String },
    #[error("path {path:?} must name a file inside the overlay, without `..`")]
    BadPath { path: String },
    #[error("template {} is not UTF-8", .path.display())]
    NotUtf8 { path: std::path::PathBuf },
    #[error("{}: not an overlay index", .path.display())]
    BadIndex {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the overlay index cannot be written as JSON")]
    SerializeIndex(#[source] serde_json::Error),
    #[error("packing an overlay archive")]
    Pack(#[source] std::io::Error),
    #[error("{}: not an OpenSSH private key", .path.display())]
    NotAHostKey {
        path: std::path::PathBuf,
        #[source]
        source: ssh_key::Error,
    },
    #[error("{}: {reason}", .path.display())]
    UnusableHostKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{action} the {kind} host key")]
    HostKey {
        action: &'static str,
        kind: &'static str,
        #[source]
        source: ssh_key::Error,
    },
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
    #[error("overlay `{overlay}`, files shared by every node: {message}")]
    Shared { overlay: String, message: String },
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
