//! Keeping served overlay archives current. A build reads the inventory, the overlay sources,
//! the plugins, the host keys and the images; when any of them changes, the next overlay
//! request runs one incremental build for the whole cluster (content hashes decide which nodes
//! are rebuilt, so a no-change check of 10,000 nodes costs well under a second). Requests
//! arriving meanwhile wait for it: one build at a time, never one per request.
//!
//! What changed is told by the inventory snapshot's generation and a stamp of the watched
//! directories (paths, sizes, mtimes, inodes, modes), taken at most once a second.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a stamp of the watched directories is trusted.
const STAMP_TTL: Duration = Duration::from_secs(1);

/// (inventory generation, directory stamp).
type Inputs = (u64, u64);

pub struct Freshness {
    watched: Vec<PathBuf>,
    stamp: Mutex<Option<(Instant, u64)>>,
    /// The inputs of the last cluster-wide check.
    checked: Mutex<Option<Inputs>>,
    /// Held while a check runs.
    pub(crate) running: tokio::sync::Mutex<()>,
}

impl Freshness {
    /// Watches `dirs` (recursively; missing ones are fine).
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Freshness {
            watched: dirs,
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
        let stamp = stamp(&self.watched);
        *cached = Some((Instant::now(), stamp));
        stamp
    }
}

/// A hash of `paths` and everything under them (names, sizes, mtimes, inodes, modes,
/// owners): it changes when a file is added, removed, replaced or edited.
pub(crate) fn stamp(paths: &[PathBuf]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        walk(path, &mut hasher);
    }
    hasher.finish()
}

fn walk(path: &Path, hasher: &mut impl Hasher) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    path.hash(hasher);
    (
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.mode(),
        meta.uid(),
        meta.gid(),
    )
        .hash(hasher);
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            walk(&child, hasher);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_additions_and_generations_are_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let overlay = dir.path().join("overlays/motd");
        std::fs::create_dir_all(&overlay).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(overlay.join("etc.ww"), "a").unwrap_or_else(|e| panic!("{e}"));
        let fresh = Freshness::new(vec![dir.path().join("overlays"), dir.path().join("gone")]);
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
