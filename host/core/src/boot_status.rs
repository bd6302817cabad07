//! What each node last fetched, failed to fetch, and what its agent last said: the boot server
//! records it, `/status`, `wulf node status`, the API and the dashboard read it, and listeners
//! (the API's event stream) hear every step as it happens.
//!
//! Bounded by design: a node keeps its latest step per stage (its boot trace), not a log, so a
//! 10,000-node boot storm costs the same memory as one boot of each node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A boot's steps, in the order a node takes them; an agent's check-in comes last.
pub const STAGES: [&str; 8] = [
    "dhcp", "ipxe", "kernel", "stage1", "image", "system", "runtime", "agent",
];

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Served (being sent, or answered).
    Ok,
    /// Refused or failed; the reason says why.
    Error,
    /// An address no node has.
    Unknown,
}

/// One step of a boot, as listeners hear it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEvent {
    /// Counts up from 1 for the life of the server.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: u64,
    /// `None` for an address no node has.
    pub node: Option<String>,
    pub mac: Option<String>,
    pub stage: String,
    pub file: String,
    /// The size of what is sent (0 for a refusal).
    pub bytes: u64,
    pub result: Outcome,
    pub reason: Option<String>,
}

/// A node's latest step at one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub stage: String,
    pub file: String,
    pub bytes: u64,
    pub result: Outcome,
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub at: u64,
}

/// A node's last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFailure {
    pub stage: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// The boot stage last served (empty when only its agent was heard from).
    pub stage: String,
    pub sent: String,
    pub ipaddr: String,
    /// Unix seconds.
    pub last_seen: u64,
    /// The last failure, until the same stage is served again.
    #[serde(default)]
    pub error: Option<BootFailure>,
    /// The latest step at each stage, in boot order.
    #[serde(default)]
    pub trace: Vec<TraceEntry>,
    /// The ETags of the kernel, image and system overlay last sent to the node: what it boots.
    #[serde(skip)]
    pub served: Served,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
}

impl NodeStatus {
    /// Records the latest step at its stage, in place: a storm of repeated requests
    /// allocates nothing once a node has been seen at a stage.
    fn step(
        &mut self,
        stage: &str,
        file: &str,
        bytes: u64,
        result: Outcome,
        reason: Option<&str>,
        at: u64,
    ) {
        let slot = match self.trace.iter().position(|e| e.stage == stage) {
            Some(at) => &mut self.trace[at],
            None => {
                let rank = |stage: &str| STAGES.iter().position(|s| *s == stage);
                self.trace.push(TraceEntry {
                    stage: stage.to_owned(),
                    file: String::new(),
                    bytes: 0,
                    result,
                    reason: None,
                    at,
                });
                self.trace.sort_by_key(|e| rank(&e.stage));
                let Some(at) = self.trace.iter().position(|e| e.stage == stage) else {
                    return;
                };
                &mut self.trace[at]
            }
        };
        file.clone_into(&mut slot.file);
        slot.bytes = bytes;
        slot.result = result;
        slot.reason = reason.map(str::to_owned);
        slot.at = at;
    }

    /// The node's status entry, made the first time it is seen.
    fn of<'a>(nodes: &'a mut BTreeMap<String, NodeStatus>, node: &str) -> &'a mut NodeStatus {
        if !nodes.contains_key(node) {
            nodes.insert(node.to_owned(), NodeStatus::default());
        }
        // Inserted just above when it was missing.
        nodes.get_mut(node).unwrap_or_else(|| unreachable!())
    }
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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

/// A file on its way to a node.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub node: &'a str,
    pub mac: &'a crate::HwAddr,
    pub stage: &'a str,
    pub file: &'a str,
    pub bytes: u64,
    pub peer: std::net::IpAddr,
    /// What was sent, to tell later whether the node runs what it would get now.
    pub etag: &'a str,
}

/// Unix seconds.
pub fn now() -> u64 {
    now_ms() / 1000
}

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One listener: whether it wants events now (someone reads them), and what it does with one.
struct Listener {
    wants: Box<dyn Fn() -> bool + Send + Sync>,
    hear: Box<dyn Fn(&BootEvent) + Send + Sync>,
}

#[derive(Default)]
pub struct StatusBoard {
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
    seq: AtomicU64,
    listeners: RwLock<Vec<Listener>>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl StatusBoard {
    /// `hear` gets every step from now on while `wants` says someone reads them, on the
    /// thread that records the step: neither may block (a channel send, not I/O).
    pub fn listen(
        &self,
        wants: impl Fn() -> bool + Send + Sync + 'static,
        hear: impl Fn(&BootEvent) + Send + Sync + 'static,
    ) {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Listener {
                wants: Box::new(wants),
                hear: Box::new(hear),
            });
    }

    /// A file is being sent.
    pub fn delivered(&self, d: Delivery<'_>) {
        let at = now_ms();
        {
            // A poisoned lock still holds a consistent map: entries are updated field by field
            // under it, with nothing that can panic in between.
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let status = NodeStatus::of(&mut nodes, d.node);
            d.stage.clone_into(&mut status.stage);
            d.file.clone_into(&mut status.sent);
            if status.ipaddr.parse() != Ok(d.peer) {
                status.ipaddr = d.peer.to_string();
            }
            status.last_seen = at / 1000;
            if status.error.as_ref().is_some_and(|e| e.stage == d.stage) {
                status.error = None;
            }
            status.step(d.stage, d.file, d.bytes, Outcome::Ok, None, at);
            match d.stage {
                "kernel" => d.etag.clone_into(&mut status.served.kernel),
                "image" => d.etag.clone_into(&mut status.served.image),
                "system" => d.etag.clone_into(&mut status.served.system),
                _ => {}
            }
        }
        self.publish(|| BootEvent {
            seq: 0,
            at,
            node: Some(d.node.to_owned()),
            mac: Some(d.mac.to_string()),
            stage: d.stage.to_owned(),
            file: d.file.to_owned(),
            bytes: d.bytes,
            result: Outcome::Ok,
            reason: None,
        });
    }

    /// A node's request at `stage` was refused or failed.
    pub fn failed(&self, node: &str, mac: &str, stage: &str, reason: &str) {
        let at = now_ms();
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let status = NodeStatus::of(&mut nodes, node);
            status.last_seen = at / 1000;
            status.error = Some(BootFailure {
                stage: stage.to_owned(),
                reason: reason.to_owned(),
                at,
            });
            status.step(stage, "", 0, Outcome::Error, Some(reason), at);
        }
        self.publish(|| BootEvent {
            seq: 0,
            at,
            node: Some(node.to_owned()),
            mac: Some(mac.to_owned()),
            stage: stage.to_owned(),
            file: String::new(),
            bytes: 0,
            result: Outcome::Error,
            reason: Some(reason.to_owned()),
        });
    }

    /// An address no node has asked for something; only listeners hear of it (the boot server
    /// counts them), so unknown clients cannot grow the board.
    pub fn unknown(&self, mac: &str, stage: &str) {
        self.publish(|| BootEvent {
            seq: 0,
            at: now_ms(),
            node: None,
            mac: Some(mac.to_owned()),
            stage: stage.to_owned(),
            file: String::new(),
            bytes: 0,
            result: Outcome::Unknown,
            reason: None,
        });
    }

    /// The node's agent checked in.
    pub fn record_agent(&self, node: &str, agent: AgentStatus) {
        let at = now_ms();
        let ipaddr = agent.ipaddr.clone();
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let status = NodeStatus::of(&mut nodes, node);
            status.step("agent", "", 0, Outcome::Ok, None, at);
            status.agent = Some(AgentStatus {
                last_seen: at / 1000,
                ..agent
            });
        }
        self.publish(|| BootEvent {
            seq: 0,
            at,
            node: Some(node.to_owned()),
            mac: None,
            stage: "agent".to_owned(),
            file: format!("check-in from {ipaddr}"),
            bytes: 0,
            result: Outcome::Ok,
            reason: None,
        });
    }

    /// Makes the event only when a listener wants it: a storm with no dashboard or event
    /// stream open pays nothing.
    fn publish(&self, event: impl FnOnce() -> BootEvent) {
        let listeners = self.listeners.read().unwrap_or_else(|p| p.into_inner());
        if !listeners.iter().any(|l| (l.wants)()) {
            return;
        }
        let mut event = event();
        event.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        for listener in listeners.iter().filter(|l| (l.wants)()) {
            (listener.hear)(&event);
        }
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

/// The running boot server as the admin-facing edges see it.
pub trait BootMonitor: Send + Sync {
    /// Every node's status, its agent's completed against what the node would get now.
    /// Blocking: it may look files up.
    fn statuses(&self) -> BTreeMap<String, NodeStatus>;
    /// The board, to listen to.
    fn board(&self) -> &StatusBoard;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn delivery<'a>(stage: &'a str, file: &'a str) -> Delivery<'a> {
        static MAC: std::sync::LazyLock<crate::HwAddr> = std::sync::LazyLock::new(|| {
            crate::HwAddr::parse("52:54:00:00:00:01").unwrap_or_else(|e| panic!("{e}"))
        });
        Delivery {
            node: "n001",
            mac: &MAC,
            stage,
            file,
            bytes: 42,
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
            etag: "e1",
        }
    }

    #[test]
    fn a_trace_keeps_the_latest_step_per_stage_in_boot_order() {
        let board = StatusBoard::default();
        board.delivered(delivery("kernel", "vmlinuz"));
        board.delivered(delivery("ipxe", "ipxe script"));
        board.failed("n001", "52:54:00:00:00:01", "system", "plugin trapped");
        board.delivered(delivery("kernel", "vmlinuz-2"));
        let status = &board.all()["n001"];
        let stages: Vec<_> = status.trace.iter().map(|e| e.stage.as_str()).collect();
        assert_eq!(stages, ["ipxe", "kernel", "system"]);
        assert_eq!(status.trace[1].file, "vmlinuz-2");
        assert_eq!(
            status.error.as_ref().map(|e| e.reason.as_str()),
            Some("plugin trapped")
        );
        assert_eq!(status.served.kernel, "e1");
        // Serving the failed stage again clears the failure.
        board.delivered(delivery("system", "system.img"));
        assert_eq!(board.all()["n001"].error, None);
    }

    #[test]
    fn listeners_hear_each_step_numbered_and_unknown_clients_leave_no_record() {
        let board = StatusBoard::default();
        board.delivered(delivery("ipxe", "ipxe script")); // before anyone listens
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&heard);
        board.listen(
            || true,
            move |e| {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.clone())
            },
        );
        board.delivered(delivery("kernel", "vmlinuz"));
        board.unknown("52:54:00:99:99:99", "ipxe");
        board.failed("n001", "52:54:00:00:00:01", "image", "no image");
        let heard = heard.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let seen: Vec<_> = heard
            .iter()
            .map(|e| (e.seq, e.node.as_deref(), e.stage.as_str(), e.result))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Some("n001"), "kernel", Outcome::Ok),
                (2, None, "ipxe", Outcome::Unknown),
                (3, Some("n001"), "image", Outcome::Error),
            ]
        );
        assert_eq!(heard[2].reason.as_deref(), Some("no image"));
        assert_eq!(board.all().len(), 1);
    }
}
