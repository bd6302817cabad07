//! The state directory: everything wulf keeps lives below one root.

use std::path::{Path, PathBuf};

/// The layout this wulf writes. 1 is the first release's (no `state-version` file); each
/// later number has a migration in `wulf upgrade`.
pub const STATE_VERSION: u32 = 2;

/// What `state-version` says of a state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Nothing there yet: it will be made at [`STATE_VERSION`].
    New,
    /// The number in `state-version`, or 1 for a state without one.
    At(u32),
}

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

    /// `state-version`: the layout the state is in, one number.
    pub fn version_file(&self) -> PathBuf {
        self.root.join("state-version")
    }

    /// The layout the state is in: a state with an inventory but no `state-version` is the
    /// first release's.
    pub fn version(&self) -> std::io::Result<Version> {
        match std::fs::read_to_string(self.version_file()) {
            Ok(text) => text.trim().parse().map(Version::At).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: {:?} is not a number",
                        self.version_file().display(),
                        text.trim()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(if self.nodes_file().exists() {
                    Version::At(1)
                } else {
                    Version::New
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Records that the state is at `version`.
    pub fn set_version(&self, version: u32) -> std::io::Result<()> {
        crate::atomic_file::write_atomic(&self.version_file(), format!("{version}\n").as_bytes())
    }

    /// Compiled plugins and other rebuildable files.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
}
