//! What a use-case can refuse or fail at. Each variant names its subject; causes are chained
//! with `#[source]`, never repeated in the message.

use wulf_core::config::ConfigError;
use wulf_core::hostlist::HostlistError;
use wulf_core::validation::RecordKind;
use wulf_core::{ExtensionError, StoreError};
use wulf_image::ImageError;
use wulf_overlay::OverlayError;
use wulf_plugin::{LoadError, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hostlist(#[from] HostlistError),
    #[error("{} `{name}` already exists (change it with `wulf {} set`)", .kind.noun(), .kind.noun())]
    RecordExists { kind: RecordKind, name: String },
    #[error("{} `{name}` does not exist (add it with `wulf {} add`)", .kind.noun(), .kind.noun())]
    RecordNotFound { kind: RecordKind, name: String },
    #[error("{} `{name}` was changed by someone else (its version is now {current}); read it again and retry", .kind.noun())]
    VersionMismatch {
        kind: RecordKind,
        name: String,
        current: String,
    },
    #[error("which {}s? name them (hostlists work) or pass --all", .kind.noun())]
    NothingSelected { kind: RecordKind },
    #[error("{} `{name}` already exists; pass --force to replace it (nothing was imported)", .kind.noun())]
    ImportConflict { kind: RecordKind, name: String },
    #[error("profile `{profile}` is used by {}; take it off them first", .users.join(", "))]
    ProfileInUse { profile: String, users: Vec<String> },
    #[error("{} `{name}` has no `{field}` set (see `wulf {} show {name}`)", .kind.noun(), .kind.noun())]
    FieldNotSet {
        kind: RecordKind,
        name: String,
        field: String,
    },
    #[error("--{field} {value:?}: {reason}")]
    BadValue {
        field: String,
        value: String,
        reason: String,
    },
    #[error("node `{name}` in the import: its fields are not a node record")]
    BadRecord {
        name: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    PluginLoad(#[from] LoadError),
    #[error("plugin `{plugin}` is not {wanted}")]
    WrongWorld {
        plugin: String,
        wanted: &'static str,
    },
    #[error("inventory backend `{backend}` failed")]
    Backend {
        backend: String,
        #[source]
        source: ExtensionError,
    },
    #[error(transparent)]
    Plugin(#[from] ExtensionError),
    #[error("the cluster's SSH host keys cannot be read or made")]
    HostKeys(#[source] OverlayError),
    #[error("the node agents' key {path} cannot be read or made: {message}")]
    AgentKey {
        path: std::path::PathBuf,
        message: String,
    },

    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{what} needs root (it makes namespaces, mounts and keeps the image's owners)")]
    NeedsRoot { what: &'static str },
    #[error("--transform {name}")]
    UnknownTransform {
        name: String,
        #[source]
        source: RegistryError,
    },
    #[error("image `{image}` is used by {}: point them at another image first", .users.join(", "))]
    ImageInUse { image: String, users: Vec<String> },
    #[error("building image `{image}`")]
    ImageBuild {
        image: String,
        #[source]
        source: Box<ImageError>,
    },
    #[error("image `{from}` was renamed back: the inventory could not be rewritten to `{to}`")]
    RenameRolledBack {
        from: String,
        to: String,
        #[source]
        source: Box<SiteError>,
    },

    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error("overlay `{name}` already exists")]
    OverlayExists { name: String },
    #[error("no site overlay named `{name}`: create it with `wulf overlay create {name}`")]
    OverlayNotFound { name: String },
    #[error("overlay `{name}` is used by {}: remove it from their lists first, or use --force", .users.join(", "))]
    OverlayInUse { name: String, users: Vec<String> },
    #[error("overlay `{overlay}` renders no {file} for node `{node}`; it renders: {}", .rendered.join(", "))]
    NotRendered {
        overlay: String,
        file: String,
        node: String,
        rendered: Vec<String>,
    },
    #[error(
        "which address do nodes reach this host on? pass --server-ip, or set server.http-addr in wulf.toml"
    )]
    NoServerAddress,
    #[error("node `{node}`'s BMC")]
    Bmc {
        node: String,
        #[source]
        source: wulf_core::bmc::BmcError,
    },
    #[error(
        "{path} is at state-version {found}, written by a newer wulf; this one knows up to {supported}: run the newer wulf, or restore a backup made before its upgrade"
    )]
    StateTooNew {
        path: std::path::PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot read {path}: {source}")]
    WarewulfRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source} (nothing was imported)")]
    WarewulfFile {
        path: std::path::PathBuf,
        source: wulf_core::warewulf_import::ImportError,
    },
    #[error("{what} `{name}` {why} (nothing was imported)")]
    MigrationConflict {
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<wulf_core::inventory::UnknownNode> for SiteError {
    fn from(e: wulf_core::inventory::UnknownNode) -> Self {
        SiteError::RecordNotFound {
            kind: RecordKind::Node,
            name: e.id,
        }
    }
}

impl SiteError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SiteError + '_ {
        move |source| SiteError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = SiteError> = std::result::Result<T, E>;
