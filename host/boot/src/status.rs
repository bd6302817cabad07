//! What each node last fetched, for `/status` and `wulf node status`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub stage: String,
    pub sent: String,
    pub ipaddr: String,
    /// Unix seconds.
    pub last_seen: u64,
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
}

impl StatusBoard {
    pub fn record(&self, node: &str, stage: &str, sent: &str, ipaddr: String) {
        let last_seen = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let status = NodeStatus {
            stage: stage.to_string(),
            sent: sent.to_string(),
            ipaddr,
            last_seen,
        };
        // Entries are replaced whole; a poisoned lock still holds a consistent map.
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), status);
    }

    pub fn all(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
