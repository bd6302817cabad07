//! The state directory: everything wulf keeps lives below one root.

use std::path::{Path, PathBuf};

/// Paths inside the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The site configuration used when `--config` is not given.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("wulf.toml")
    }

    /// The inventory: nodes and profiles.
    pub fn nodes_file(&self) -> PathBuf {
        self.root.join("nodes.toml")
    }

    /// Taken by every command that writes state.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Installed plugins, one directory each.
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Compiled plugins and other rebuildable files.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
}
