//! What each node last fetched, and what its agent last said, for `/status` and
//! `wulf node status`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// The boot stage last served (empty when only its agent was heard from).
    pub stage: String,
    pub sent: String,
    pub ipaddr: String,
    /// Unix seconds.
    pub last_seen: u64,
    /// The ETags of the kernel, image and system overlay last sent to the node: what it boots.
    #[serde(skip)]
    pub served: Served,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
}

/// The ETags last sent per boot stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub kernel: String,
    pub image: String,
    pub system: String,
}

/// The node's agent as last heard from; `in_sync` and `reboot_needed` are filled in when the
/// status is read, against what the node would get now.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AgentStatus {
    /// Unix seconds.
    pub last_seen: u64,
    pub ipaddr: String,
    pub boot_id: String,
    /// The ETags of what the node booted: kernel, image, system overlay.
    pub booted: BTreeMap<String, String>,
    /// The runtime overlay's ETag as last applied by the agent.
    pub applied: String,
    pub in_sync: bool,
    /// `kernel`, `image`, `system`: what changed since the node booted.
    pub reboot_needed: Vec<String>,
}

/// Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
}

impl StatusBoard {
    /// A boot stage was served; `etag` is what was sent.
    pub fn record(&self, node: &str, stage: &str, sent: &str, ipaddr: String, etag: &str) {
        // A poisoned lock still holds a consistent map: entries are updated field by field
        // under it, with nothing that can panic in between.
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let status = nodes.entry(node.to_string()).or_default();
        status.stage = stage.to_string();
        status.sent = sent.to_string();
        status.ipaddr = ipaddr;
        status.last_seen = now();
        match stage {
            "kernel" => status.served.kernel = etag.to_owned(),
            "image" => status.served.image = etag.to_owned(),
            "system" => status.served.system = etag.to_owned(),
            _ => {}
        }
    }

    /// The node's agent checked in.
    pub fn record_agent(&self, node: &str, agent: AgentStatus) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node.to_string()).or_default().agent = Some(AgentStatus {
            last_seen: now(),
            ..agent
        });
    }

    /// What was last served to `node` for its kernel, image and system overlay.
    pub fn served(&self, node: &str) -> Served {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|s| s.served.clone())
            .unwrap_or_default()
    }

    pub fn all(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
