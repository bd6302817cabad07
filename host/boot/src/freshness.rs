//! Keeping served overlay archives current. A build reads the inventory, the overlay sources,
//! the plugins, the host keys and the images; when any of them changes, the next overlay
//! request runs one incremental build for the whole cluster (content hashes decide which nodes
//! are rebuilt, so a no-change check of 10,000 nodes costs well under a second). Requests
//! arriving meanwhile wait for it: one build at a time, never one per request.
//!
//! What changed is told by the inventory snapshot's generation and a stamp of the watched
//! directories (paths, sizes, mtimes, inodes, modes), taken at most once a second. A check in
//! which some node could not be built is tried again after a back-off (5 s, doubling to 5
//! minutes) even when nothing changed, so a node whose plugin failed once is not left behind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wulf_core::Provisioner;

/// How long a stamp of the watched inputs is trusted.
const STAMP_TTL: Duration = Duration::from_secs(1);

/// (inventory generation, input stamp).
type Inputs = (u64, u64);

/// The first wait before a failed check is tried again, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The last check: its inputs, and when to try again if it failed.
#[derive(Debug, Clone, Copy)]
struct Checked {
    inputs: Inputs,
    retry: Option<(Instant, Duration)>,
}

pub struct Freshness {
    provisioner: Arc<dyn Provisioner>,
    stamp: Mutex<Option<(Instant, u64)>>,
    /// The last cluster-wide check.
    checked: Mutex<Option<Checked>>,
    /// Held while a check runs.
    pub(crate) running: tokio::sync::Mutex<()>,
}

impl Freshness {
    /// Watches the build inputs `provisioner` names.
    pub fn new(provisioner: Arc<dyn Provisioner>) -> Self {
        Freshness {
            provisioner,
            stamp: Mutex::new(None),
            checked: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The current inputs, if they differ from those of the last check or its retry is due.
    pub(crate) fn changed(&self, generation: u64) -> Option<Inputs> {
        let inputs = (generation, self.stamp());
        let checked = *self.checked.lock().unwrap_or_else(|p| p.into_inner());
        match checked {
            Some(c) if c.inputs == inputs => c
                .retry
                .is_some_and(|(at, _)| Instant::now() >= at)
                .then_some(inputs),
            _ => Some(inputs),
        }
    }

    /// Records a finished check. A failed one (some node not built) is not tried on every
    /// request, but again after a back-off that doubles while the same inputs keep failing.
    pub(crate) fn checked(&self, inputs: Inputs, ok: bool) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        let retry = (!ok).then(|| {
            let wait = match *checked {
                Some(Checked {
                    inputs: previous,
                    retry: Some((_, wait)),
                }) if previous == inputs => (wait * 2).min(RETRY_MAX),
                _ => RETRY_FIRST,
            };
            (Instant::now() + wait, wait)
        });
        *checked = Some(Checked { inputs, retry });
    }

    /// Forgets the last check (SIGHUP): the next overlay request checks every archive.
    pub fn forget(&self) {
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn stamp(&self) -> u64 {
        let mut cached = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, stamp)) = *cached
            && at.elapsed() < STAMP_TTL
        {
            return stamp;
        }
        let stamp = self.provisioner.overlay_inputs_stamp();
        *cached = Some((Instant::now(), stamp));
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use wulf_core::provision::{BuildSummary, ServedInventory};
    use wulf_core::{BootFile, BootStage, HwAddr, Node, ProvisionError};

    /// A provisioner whose build inputs are a directory tree; nothing else is asked of it.
    struct Watched(Vec<PathBuf>);

    impl Provisioner for Watched {
        fn load_inventory(&self) -> Result<ServedInventory, ProvisionError> {
            Ok(ServedInventory::default())
        }
        fn inventory_stamp(&self) -> u64 {
            0
        }
        fn has_backends(&self) -> bool {
            false
        }
        fn lookup_hwaddr(&self, _: &HwAddr) -> Result<Option<Node>, ProvisionError> {
            Ok(None)
        }
        fn discover(&self, _: &HwAddr) -> Result<Option<String>, ProvisionError> {
            Ok(None)
        }
        fn ipxe_template(&self, _: &Node) -> String {
            "default".into()
        }
        fn ipxe_inputs_stamp(&self) -> u64 {
            0
        }
        fn boot_file(&self, node: &Node, stage: BootStage) -> Result<BootFile, ProvisionError> {
            Err(ProvisionError::NoOverlay {
                node: node.id.clone(),
                stage,
            })
        }
        fn build_overlays(&self, _: Option<&str>) -> Result<BuildSummary, ProvisionError> {
            Ok(BuildSummary::default())
        }
        fn overlay_inputs_stamp(&self) -> u64 {
            wulf_core::stamp::tree_stamp(&self.0)
        }
        fn forget(&self) {}
        fn archives_stamp(&self) -> u64 {
            0
        }
        fn agent_key(&self) -> Result<Arc<[u8]>, ProvisionError> {
            Ok(Arc::from(&[0u8; 32][..]))
        }
        fn changed_since_boot(&self, _: &Node, _: &[(BootStage, String)]) -> Vec<BootStage> {
            Vec::new()
        }
    }

    #[test]
    fn edits_additions_and_generations_are_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let overlay = dir.path().join("overlays/motd");
        std::fs::create_dir_all(&overlay).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(overlay.join("etc.ww"), "a").unwrap_or_else(|e| panic!("{e}"));
        let fresh = Freshness::new(Arc::new(Watched(vec![
            dir.path().join("overlays"),
            dir.path().join("gone"),
        ])));
        let first = fresh.changed(1).unwrap_or_else(|| panic!("never checked"));
        fresh.checked(first, true);
        assert_eq!(fresh.changed(1), None);
        assert!(
            fresh.changed(2).is_some(),
            "an inventory reload is a change"
        );

        // A failed check is tried again once its back-off passes, with the same inputs.
        fresh.checked(first, false);
        assert_eq!(fresh.changed(1), None, "not on every request");
        let due = |fresh: &Freshness, ago: Duration| {
            let mut checked = fresh.checked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Checked {
                retry: Some((at, _)),
                ..
            }) = checked.as_mut()
            {
                *at -= ago;
            }
        };
        due(&fresh, RETRY_FIRST);
        assert_eq!(fresh.changed(1), Some(first), "the retry is due");
        fresh.checked(first, false);
        let wait = fresh
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .and_then(|c| c.retry)
            .map(|(_, wait)| wait);
        assert_eq!(wait, Some(RETRY_FIRST * 2), "the back-off doubles");
        fresh.checked(first, true);
        due(&fresh, RETRY_MAX);
        assert_eq!(fresh.changed(1), None, "a good check is not retried");

        std::fs::write(overlay.join("etc.ww"), "bb").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(overlay.join("new"), "").unwrap_or_else(|e| panic!("{e}"));
        *fresh.stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
        assert!(fresh.changed(1).is_some(), "an edited overlay is a change");
    }
}
