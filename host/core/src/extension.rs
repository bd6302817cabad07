//! The extension points. Built-in providers and wasm plugins implement the same traits, so no
//! caller knows (or cares) whether a provider is native code or a sandboxed component.

use std::fmt;

use crate::hwaddr::HwAddr;
use crate::node::Node;
use crate::overlay_file::OverlayFile;
use crate::record_error::ValidationError;

/// The provisioning host as nodes see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Server {
    pub hostname: String,
    pub ipaddr: Option<String>,
    pub netmask: Option<String>,
    pub network: Option<String>,
    pub ipaddr6: Option<String>,
    pub prefixlen6: Option<u8>,
    pub port: u16,
}

/// Which limit a plugin call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The wall-clock deadline of one call.
    Time { millis: u64 },
    /// The linear-memory cap.
    Memory { bytes: u64 },
    /// The cap on the total size of what a call returns.
    Output { bytes: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Time { millis } => write!(f, "time limit of {millis} ms"),
            Limit::Memory { bytes } => write!(f, "memory limit of {} MiB", bytes >> 20),
            Limit::Output { bytes } => write!(f, "output limit of {} MiB", bytes >> 20),
        }
    }
}

/// A failed call into a provider, saying whose fault it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// The provider ran and reported an error of its own.
    #[error("plugin `{plugin}` returned an error: {message}")]
    Guest { plugin: String, message: String },
    /// The provider crashed (a trap: panic, unreachable, bad memory access).
    #[error("plugin `{plugin}` crashed: {message}")]
    Trap { plugin: String, message: String },
    /// The provider was stopped at one of its limits.
    #[error("plugin `{plugin}` was stopped: it exceeded its {limit}")]
    Limit { plugin: String, limit: Limit },
    /// The provider returned something the host refuses (an escaping path, say).
    #[error("plugin `{plugin}` returned invalid output: {message}")]
    InvalidOutput { plugin: String, message: String },
    /// The host could not run the provider at all.
    #[error("plugin `{plugin}` could not be run: {message}")]
    Host { plugin: String, message: String },
}

impl ExtensionError {
    /// The provider at fault.
    pub fn plugin(&self) -> &str {
        match self {
            ExtensionError::Guest { plugin, .. }
            | ExtensionError::Trap { plugin, .. }
            | ExtensionError::Limit { plugin, .. }
            | ExtensionError::InvalidOutput { plugin, .. }
            | ExtensionError::Host { plugin, .. } => plugin,
        }
    }
}

/// Renders overlay files for nodes. Returned files are already validated
/// ([`crate::overlay_file::validate`]) and within the provider's output cap.
pub trait OverlayGenerator: Send + Sync {
    /// The provider's name, as overlay lists refer to it.
    fn name(&self) -> &str;

    /// Files for one merged node.
    fn generate(&self, node: &Node, server: &Server) -> Result<Vec<OverlayFile>, ExtensionError>;

    /// Files shared by every node, computed once from all merged nodes (in name order; shared,
    /// so a plugin that reads them a page at a time needs no copy of its own).
    fn generate_shared(
        &self,
        nodes: &std::sync::Arc<[Node]>,
        server: &Server,
    ) -> Result<Vec<OverlayFile>, ExtensionError>;

    /// What [`OverlayGenerator::generate_shared`] depends on, so it is called only when needed.
    fn shared(&self) -> Shared {
        Shared::Cluster
    }

    /// A generator for one build, which may keep state between its calls (a plugin's warm
    /// instances) and drops it when the build is done; `None`: use this one.
    fn for_build(&self) -> Option<std::sync::Arc<dyn OverlayGenerator>> {
        None
    }
}

/// What an overlay generator's shared files depend on (its manifest's `shared` and
/// `shared-fields` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shared {
    /// Every node: called again whenever any node changes (the default).
    #[default]
    Cluster,
    /// These fields of every node (and its id): called with records holding only them, again
    /// only when one of them changes on some node.
    Fields(crate::node_fields::NodeFields),
    /// Only the plugin and its config: called with no nodes, again only when those change.
    Config,
    /// The plugin makes no shared files: never called.
    None,
}

/// As a manifest says it: `cluster`, `cluster (fields: network-devices, ipmi)`, `config`, `none`.
impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shared::Cluster => f.write_str("cluster"),
            Shared::Fields(fields) => write!(f, "cluster (fields: {fields})"),
            Shared::Config => f.write_str("config"),
            Shared::None => f.write_str("none"),
        }
    }
}

/// One record a backend returned: typed, or refused with the field that did not read (a MAC
/// that is no MAC, say), so one bad record never hides the others.
pub type BackendRecord = Result<Node, ValidationError>;

/// A source of nodes and profiles besides the built-in store. Records are unmerged.
pub trait InventoryBackend: Send + Sync {
    fn name(&self) -> &str;
    fn list_nodes(&self) -> Result<Vec<BackendRecord>, ExtensionError>;
    fn list_profiles(&self) -> Result<Vec<BackendRecord>, ExtensionError>;
    /// The node that owns `hwaddr`.
    fn lookup_hwaddr(&self, hwaddr: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError>;
    /// Offers an unknown hardware address; `Some` if the backend took it as that node.
    fn accept_discovered(&self, hwaddr: &HwAddr) -> Result<Option<BackendRecord>, ExtensionError>;
}

/// The kind of an image entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    Directory,
    Symlink(String),
    Hardlink(String),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// An image entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
}

/// What a transform decided about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAction {
    Keep,
    Drop,
    /// Call [`TransformRun::rewrite`] with the entry's content.
    WantContent,
    Replace(OverlayFile),
}

/// Rewrites images while they are built.
pub trait ImageTransform: Send + Sync {
    fn name(&self) -> &str;
    /// Starts one build of `image`; the run sees every entry in order.
    fn start(&self, image: &str) -> Result<Box<dyn TransformRun>, ExtensionError>;
}

/// One build's pass of an [`ImageTransform`] over the entries of an image.
pub trait TransformRun: Send {
    /// One action per entry, in order.
    fn filter(&mut self, entries: &[ImageEntry]) -> Result<Vec<EntryAction>, ExtensionError>;
    /// Decides on an entry given its content; never answers [`EntryAction::WantContent`].
    fn rewrite(
        &mut self,
        entry: &ImageEntry,
        content: Vec<u8>,
    ) -> Result<EntryAction, ExtensionError>;
    /// Files to add after the last entry.
    fn finish(&mut self) -> Result<Vec<OverlayFile>, ExtensionError>;
}
