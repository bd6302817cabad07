//! Stamps of directory trees: a hash of names, sizes, mtimes, inodes, modes and owners that
//! changes when a file is added, removed, replaced or edited. What long-running processes use
//! to tell that the files behind a cache changed, without reading them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// A stamp of `paths` and everything under them (missing paths are fine).
pub fn tree_stamp(paths: &[PathBuf]) -> u64 {
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
    fn edits_additions_and_removals_change_the_stamp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = vec![dir.path().to_path_buf(), dir.path().join("missing")];
        std::fs::write(dir.path().join("a"), "1").unwrap_or_else(|e| panic!("{e}"));
        let first = tree_stamp(&root);
        assert_eq!(first, tree_stamp(&root));
        std::fs::write(dir.path().join("a"), "22").unwrap_or_else(|e| panic!("{e}"));
        let edited = tree_stamp(&root);
        assert_ne!(first, edited);
        std::fs::write(dir.path().join("b"), "").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(edited, tree_stamp(&root));
    }
}
