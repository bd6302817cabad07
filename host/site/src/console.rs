//! Console logs kept by `wulf serve` (`[console] log = true`): one capture per node whose
//! BMC offers a console, reconnecting when it drops, started and stopped as nodes come and go.
//! A BMC serves one console session at a time, so each logged console is shared through a
//! socket beside its log (`<node>.sock`, owner only): `wulf node console` attaches there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wulf_bmc::console::{ConsoleLog, ConsoleSession, ConsoleShare, Stopper, log_files};
use wulf_core::bmc::BmcTarget;

use crate::Site;
use crate::error::{Result, SiteError};
use crate::records::Kind;

/// How often the set of captured nodes follows the inventory.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How long a dropped console waits before it is attached again...
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// ...doubling up to this while attaching fails or sessions end this quickly.
const RETRY_AT_MOST: Duration = Duration::from_secs(30);
const SHORT_SESSION: Duration = Duration::from_secs(30);

/// One node's capture thread.
struct Capture {
    stop: Arc<AtomicBool>,
    session: Arc<Mutex<Option<Stopper>>>,
}

impl Capture {
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(stopper) = *self.session.lock().unwrap_or_else(|p| p.into_inner()) {
            stopper.stop();
        }
    }
}

impl Site {
    /// Where console logs are kept.
    pub fn console_dir(&self) -> PathBuf {
        self.config().console.dir.clone()
    }

    /// The console log being written for `node` (older ones are rotated beside it).
    pub fn console_log_path(&self, node: &str) -> PathBuf {
        wulf_bmc::console::log_path(&self.console_dir(), node)
    }

    /// A node's console log files, oldest first; the node must exist.
    pub fn console_logs(&self, node: &str) -> Result<Vec<PathBuf>> {
        if !self.inventory_of(&[node])?.nodes.contains_key(node) {
            return Err(SiteError::RecordNotFound {
                kind: Kind::Node,
                name: node.to_owned(),
            });
        }
        Ok(log_files(&self.console_dir(), node))
    }

    /// Keeps a log of every node's console until `stop` is set (run on a thread of its own).
    /// Nodes without a BMC console (no address, Redfish) are skipped, said once.
    pub fn keep_console_logs(self: &Arc<Self>, stop: &AtomicBool) {
        let mut captures: BTreeMap<String, Capture> = BTreeMap::new();
        let mut skipped: BTreeMap<String, String> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            self.refresh();
            let wanted = match self.console_nodes(&mut skipped) {
                Ok(wanted) => wanted,
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "console logs: the inventory does not load");
                    std::thread::sleep(RECONCILE_EVERY);
                    continue;
                }
            };
            captures.retain(|node, capture| {
                let keep = wanted.contains(node);
                if !keep {
                    capture.stop();
                }
                keep
            });
            for node in wanted {
                captures
                    .entry(node.clone())
                    .or_insert_with(|| self.start_capture(node));
            }
            let until = std::time::Instant::now() + RECONCILE_EVERY;
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for capture in captures.values() {
            capture.stop();
        }
    }

    /// Nodes whose console can be captured now.
    fn console_nodes(&self, skipped: &mut BTreeMap<String, String>) -> Result<Vec<String>> {
        let mut wanted = Vec::new();
        for merged in self.merged_nodes(&[])? {
            let node = merged.node.id.clone();
            let reason = match BmcTarget::of(&merged.node) {
                Ok(target) if target.driver == wulf_core::node::BmcDriver::Ipmi => {
                    wanted.push(node);
                    continue;
                }
                Ok(_) => "logs are kept of IPMI consoles; its BMC is Redfish (`wulf node console` \
                          attaches where that BMC offers a serial console)"
                    .to_owned(),
                Err(error) => error.to_string(),
            };
            if skipped.get(&node) != Some(&reason) {
                tracing::info!(node = %node, "no console log: {reason}");
                skipped.insert(node, reason);
            }
        }
        Ok(wanted)
    }

    fn start_capture(self: &Arc<Self>, node: String) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Mutex::new(None));
        let capture = Capture {
            stop: Arc::clone(&stop),
            session: Arc::clone(&session),
        };
        let site = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("console {node}"))
            .spawn(move || site.capture(&node, &stop, &session))
            .map_err(|e| tracing::error!("console log thread: {e}"))
            .ok();
        capture
    }

    /// Attaches to `node`'s console and copies it into its log, again whenever it drops.
    fn capture(&self, node: &str, stop: &AtomicBool, session: &Mutex<Option<Stopper>>) {
        let config = self.config().console.clone();
        let mut log = match ConsoleLog::open(&config.dir, node, config.max_bytes, config.keep) {
            Ok(log) => log,
            Err(error) => {
                tracing::error!(node, dir = %config.dir.display(), "console log: {error}");
                return;
            }
        };
        // The console is shared with `wulf node console` through a socket beside the log.
        let share = Arc::new(ConsoleShare::default());
        let socket = wulf_bmc::console::socket_path(&config.dir, node);
        let listener = ConsoleShare::bind(&socket)
            .map_err(
                |e| tracing::warn!(node, socket = %socket.display(), "console not shared: {e}"),
            )
            .ok();
        std::thread::scope(|scope| {
            if let Some(listener) = &listener {
                scope.spawn(|| share.serve(listener, stop));
            }
            self.attach_repeatedly(node, stop, session, &mut log, &share);
        });
        share.viewers.close();
        let _ = std::fs::remove_file(&socket);
    }

    fn attach_repeatedly(
        &self,
        node: &str,
        stop: &AtomicBool,
        session: &Mutex<Option<Stopper>>,
        log: &mut ConsoleLog,
        share: &ConsoleShare,
    ) {
        // A BMC that keeps refusing is said once per distinct reason, not every retry, and
        // retried less and less often while sessions keep ending as soon as they start.
        let mut last_error = None;
        let mut retry = RETRY_AFTER;
        while !stop.load(Ordering::SeqCst) {
            let attached = self
                .console_command(node)
                .map_err(|e| crate::error_chain(&e))
                .and_then(|command| ConsoleSession::start(&command).map_err(|e| e.to_string()));
            match attached {
                Ok(mut running) => {
                    let began = std::time::Instant::now();
                    *session.lock().unwrap_or_else(|p| p.into_inner()) = Some(running.stopper());
                    share.type_into(Some(&running));
                    note(log, share, "console attached");
                    tracing::debug!(node, "console attached");
                    if let Err(error) = running.copy_to(log, &share.viewers) {
                        tracing::warn!(node, "console log: {error}");
                    }
                    running.stop();
                    share.type_into(None);
                    *session.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    let _ = log.note("console detached");
                    share.viewers.note("console detached; attaching again");
                    if began.elapsed() > SHORT_SESSION {
                        last_error = None;
                        retry = RETRY_AFTER;
                    } else {
                        retry = (retry * 2).min(RETRY_AT_MOST);
                    }
                }
                Err(error) if last_error.as_ref() != Some(&error) => {
                    tracing::warn!(
                        node,
                        "console: {error} (retrying in {} s, then less often)",
                        retry.as_secs()
                    );
                    note(log, share, &format!("console unavailable: {error}"));
                    last_error = Some(error);
                    retry = (retry * 2).min(RETRY_AT_MOST);
                }
                Err(_) => retry = (retry * 2).min(RETRY_AT_MOST),
            }
            let until = std::time::Instant::now() + retry;
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The socket through which `wulf serve` shares `node`'s logged console.
    pub fn console_socket_path(&self, node: &str) -> PathBuf {
        wulf_bmc::console::socket_path(&self.console_dir(), node)
    }
}

/// A line of wulf's own, in the log and to the viewers.
fn note(log: &mut ConsoleLog, share: &ConsoleShare, what: &str) {
    let _ = log.note(what);
    share.viewers.note(what);
}
