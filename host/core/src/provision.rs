//! What the node-facing edges ask of the application layer: the inventory as served, what a
//! node gets at each boot stage, discovery, and overlay builds. The boot server holds an
//! `Arc<dyn Provisioner>` and never sees how any of it is done (plugins, stores, rules).

use std::path::PathBuf;
use std::time::Duration;

use crate::hwaddr::HwAddr;
use crate::inventory::Inventory;
use crate::node::Node;

/// A cause from a layer the edge does not know.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and its causes on one line, each cause said once (a message that already holds
/// its cause's text does not repeat it): what logs and front ends show.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

/// The iPXE binary each PXE firmware gets over TFTP, as `wulf configure dhcp` and the built-in
/// DHCP hand them out: (firmware, file in the TFTP root, whether a site needs it).
pub const IPXE_FIRMWARES: &[(&str, &str, bool)] = &[
    ("x86-64 BIOS", "undionly.kpxe", true),
    ("x86-64 UEFI", "snponly.efi", true),
    ("arm64 UEFI", "arm64-efi/snponly.efi", false),
];

/// The iPXE binary for a PXE client's architecture (DHCP option 93, RFC 4578 and IANA's
/// registry): BIOS, x86-64 UEFI (7 and 9 are both used for it), arm64 UEFI; `None` for the
/// rest.
pub fn ipxe_binary(architecture: u16) -> Option<&'static str> {
    let firmware = match architecture {
        0 => "x86-64 BIOS",
        7 | 9 => "x86-64 UEFI",
        11 => "arm64 UEFI",
        _ => return None,
    };
    IPXE_FIRMWARES
        .iter()
        .find(|(name, _, _)| *name == firmware)
        .map(|(_, file, _)| *file)
}

/// The files a node fetches over HTTP, one per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootStage {
    Kernel,
    /// The first stage of a two-stage boot: its `/init` and the kernel's network drivers.
    Stage1,
    Image,
    System,
    Runtime,
}

impl BootStage {
    pub fn as_str(self) -> &'static str {
        match self {
            BootStage::Kernel => "kernel",
            BootStage::Stage1 => "stage1",
            BootStage::Image => "image",
            BootStage::System => "system",
            BootStage::Runtime => "runtime",
        }
    }

    /// Whether the stage is a per-node overlay archive.
    pub fn is_overlay(self) -> bool {
        matches!(self, BootStage::System | BootStage::Runtime)
    }
}

impl std::fmt::Display for BootStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to send for one stage: files streamed back to back, and a strong ETag for the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    pub parts: Vec<PathBuf>,
    pub etag: String,
}

/// The inventory as the boot server serves it, with the backend records that were refused.
#[derive(Debug, Default)]
pub struct ServedInventory {
    pub inventory: Inventory,
    /// Records a backend returned that are not served, each with its reason.
    pub rejected: Vec<RejectedRecord>,
}

/// A record from an inventory backend that failed validation or collides with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inventory backend `{backend}`: {reason}")]
pub struct RejectedRecord {
    pub backend: String,
    /// The node or profile name the backend gave.
    pub record: String,
    pub reason: String,
}

/// What an overlay build did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildSummary {
    /// Nodes whose archives were written.
    pub built: usize,
    /// Archives whose inputs had not changed.
    pub unchanged: usize,
    /// Nodes that could not be built; their last archives, if any, are still served.
    pub failed: Vec<NodeFailure>,
    pub took: Duration,
}

impl BuildSummary {
    /// Whether every node asked for was built (or was already current).
    pub fn all_built(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A node whose overlays could not be built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
}

/// Why a node cannot get what it asked for, or why a build or load failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("node `{node}` has no image: set one with `wulf node set {node} --image <name>`")]
    NoImage { node: String },
    #[error("node `{node}` uses image `{image}`, which cannot be served")]
    ImageUnavailable {
        node: String,
        image: String,
        #[source]
        source: BoxError,
    },
    #[error("image `{image}` has no kernel{} (node `{node}`): see `wulf image kernels {image}`", match .wanted { Some(w) => format!(" matching {w:?}"), None => String::new() })]
    NoKernel {
        node: String,
        image: String,
        wanted: Option<String>,
    },
    #[error("image `{image}` is not built (node `{node}`): run `wulf image build {image}`")]
    ImageNotBuilt { node: String, image: String },
    #[error("node `{node}` has no {stage} overlay")]
    NoOverlay { node: String, stage: BootStage },
    #[error("building the overlays of {}", match .node { Some(n) => format!("node `{n}`"), None => "the cluster".into() })]
    Build {
        node: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("the inventory cannot be loaded")]
    Inventory {
        #[source]
        source: BoxError,
    },
    #[error("discovery of {hwaddr} failed")]
    Discovery {
        hwaddr: HwAddr,
        #[source]
        source: BoxError,
    },
    #[error("the node agents' key cannot be read or made")]
    AgentKey {
        #[source]
        source: BoxError,
    },
    #[error("stage one's archive cannot be written")]
    Stage1 {
        #[source]
        source: BoxError,
    },
}

impl ProvisionError {
    /// The node asked for something that is not there (as opposed to a failure of ours).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            ProvisionError::NoImage { .. }
                | ProvisionError::ImageUnavailable { .. }
                | ProvisionError::NoKernel { .. }
                | ProvisionError::ImageNotBuilt { .. }
                | ProvisionError::NoOverlay { .. }
        )
    }
}

/// The iPXE template a node boots with: its own `ipxe-template`; else `stage-one` when its
/// built image is larger than `stage_one_above` bytes (0: never), which iPXE and firmware do
/// not load whole; else `default`.
pub fn ipxe_template(node: &Node, image_size: Option<u64>, stage_one_above: u64) -> &str {
    match node.ipxe_template.as_deref() {
        Some(name) => name,
        None if stage_one_above > 0 && image_size.is_some_and(|s| s > stage_one_above) => {
            "stage-one"
        }
        None => "default",
    }
}

/// The application layer as the node-facing edges use it. Every method may block (plugin
/// calls, file I/O): async callers run them on a blocking thread.
pub trait Provisioner: Send + Sync {
    /// The inventory to serve: the built-in store and every backend's valid records.
    fn load_inventory(&self) -> Result<ServedInventory, ProvisionError>;

    /// A stamp of what [`Provisioner::load_inventory`] reads from disk; it changes when the
    /// inventory should be loaded again.
    fn inventory_stamp(&self) -> u64;

    /// Whether records come from backend plugins too (which have no file to watch).
    fn has_backends(&self) -> bool;

    /// A node no loaded record has: asks the backends by hardware address (merged, valid).
    fn lookup_hwaddr(&self, hwaddr: &HwAddr) -> Result<Option<Node>, ProvisionError>;

    /// Gives an unknown hardware address to a node waiting to be discovered; the id of the
    /// node that took it, if any.
    fn discover(&self, hwaddr: &HwAddr) -> Result<Option<String>, ProvisionError>;

    /// The iPXE template `node` (merged) boots with ([`ipxe_template`]). Cheap (one small
    /// file read): the script cache asks it inline, on a miss only.
    fn ipxe_template(&self, node: &Node) -> String;

    /// A stamp of what [`Provisioner::ipxe_template`] reads besides the node (the images'
    /// builds, the site's threshold): scripts rendered before it changed may be stale.
    /// Cheap (a directory listing); asked at most once a second.
    fn ipxe_inputs_stamp(&self) -> u64;

    /// What `node` (merged) gets at a stage. An overlay stage answers with the archive last
    /// built ([`ProvisionError::NoOverlay`] when there is none); it never builds.
    fn boot_file(&self, node: &Node, stage: BootStage) -> Result<BootFile, ProvisionError>;

    /// Builds overlays incrementally: one node's, or every node's (`None`).
    fn build_overlays(&self, node: Option<&str>) -> Result<BuildSummary, ProvisionError>;

    /// A stamp of every overlay build input besides the inventory (sources, plugins, keys,
    /// images, the site config): when it changes, archives may be stale.
    fn overlay_inputs_stamp(&self) -> u64;

    /// Forget cached stamps (SIGHUP): the next check reads everything again.
    fn forget(&self);

    /// A stamp of the built overlay archives: it changes whenever a build replaced any.
    fn archives_stamp(&self) -> u64;

    /// The key every node agent's credential is derived from (`wulf-agent`'s protocol).
    fn agent_key(&self) -> Result<std::sync::Arc<[u8]>, ProvisionError>;

    /// Which of `booted`'s stages (kernel, image, system) `node` would now get differently
    /// from the ETag it booted; an empty ETag is unknown and never counts.
    fn changed_since_boot(&self, node: &Node, booted: &[(BootStage, String)]) -> Vec<BootStage>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_images_boot_in_two_stages_unless_the_node_says_otherwise() {
        let node = Node::new("n001");
        assert_eq!(ipxe_template(&node, Some(1000), 1000), "default");
        assert_eq!(ipxe_template(&node, Some(1001), 1000), "stage-one");
        assert_eq!(
            ipxe_template(&node, None, 1000),
            "default",
            "an unbuilt image"
        );
        assert_eq!(
            ipxe_template(&node, Some(1 << 40), 0),
            "default",
            "0 never chooses two stages"
        );
        let mut pinned = node.clone();
        pinned.ipxe_template = Some("default".into());
        assert_eq!(ipxe_template(&pinned, Some(1 << 40), 1000), "default");
        pinned.ipxe_template = Some("stage-one".into());
        assert_eq!(ipxe_template(&pinned, Some(1), 1000), "stage-one");
    }
}
