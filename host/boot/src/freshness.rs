//! Keeping served overlay archives current. A build reads the inventory, the overlay sources,
//! the plugins, the host keys and the images; when any of them changes, the next overlay
//! request runs one incremental build for the whole cluster (content hashes decide which nodes
//! are rebuilt, so a no-change check of 10,000 nodes costs well under a second). Requests
//! arriving meanwhile wait for it: one build at a time, never one per request.
//!
//! What changed is told by the inventory snapshot's generation and a stamp of the watched
//! directories (paths, sizes, mtimes, inodes, modes), taken at most once a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wulf_core::Provisioner;

/// How long a stamp of the watched inputs is trusted.
const STAMP_TTL: Duration = Duration::from_secs(1);

/// (inventory generation, input stamp).
type Inputs = (u64, u64);

pub struct Freshness {
    provisioner: Arc<dyn Provisioner>,
    stamp: Mutex<Option<(Instant, u64)>>,
    /// The inputs of the last cluster-wide check.
    checked: Mutex<Option<Inputs>>,
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

    /// The current inputs, if they differ from those of the last check.
    pub(crate) fn changed(&self, generation: u64) -> Option<Inputs> {
        let inputs = (generation, self.stamp());
        let checked = *self.checked.lock().unwrap_or_else(|p| p.into_inner());
        (checked != Some(inputs)).then_some(inputs)
    }

    /// Records a finished check (successful or not: a broken overlay is reported once per
    /// change, not rebuilt on every request).
    pub(crate) fn checked(&self, inputs: Inputs) {
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(inputs);
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
        fresh.checked(first);
        assert_eq!(fresh.changed(1), None);
        assert!(
            fresh.changed(2).is_some(),
            "an inventory reload is a change"
        );

        std::fs::write(overlay.join("etc.ww"), "bb").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(overlay.join("new"), "").unwrap_or_else(|e| panic!("{e}"));
        *fresh.stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
        assert!(fresh.changed(1).is_some(), "an edited overlay is a change");
    }
}
