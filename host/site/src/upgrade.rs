//! `wulf upgrade`: a state directory written by an earlier wulf brought to this release's
//! layout ([`STATE_VERSION`]), one migration per version, after a backup of what they change.
//!
//! A state newer than this wulf is refused by [`Site::open`]; an older one still opens (every
//! migration so far leaves a layout this release reads) and `wulf doctor` says an upgrade is
//! due.

use std::path::PathBuf;

use serde::Serialize;
use wulf_core::state_dir::{STATE_VERSION, Version};

use crate::Site;
use crate::error::{Result, SiteError};

/// What an upgrade did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    pub from: u32,
    pub to: u32,
    /// What each migration changes, in order.
    pub steps: Vec<String>,
    /// Copies of the files the migrations change, when they ran.
    pub backup: Option<PathBuf>,
}

/// One step forward: from `to - 1` to `to`.
struct Migration {
    to: u32,
    /// What it changes, for the report.
    what: &'static str,
    /// Files (relative to the state directory) it changes: backed up first.
    touches: &'static [&'static str],
    run: fn(&Site) -> Result<()>,
}

const MIGRATIONS: &[Migration] = &[Migration {
    to: 2,
    what: "nodes.toml rewritten in this release's form (MACs as aa:bb:cc:dd:ee:ff, addresses checked, the header); the overlay build index dropped, so the next `wulf overlay build` writes every archive again with the runtime manifest wulf-agent reads",
    touches: &["nodes.toml", "provision/index.json"],
    run: |site| {
        site.store.update(|_| Ok::<_, SiteError>(()))?;
        let index = site.archives.index_path();
        match std::fs::remove_file(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SiteError::io(&index)(e)),
            _ => Ok(()),
        }
    },
}];

impl Site {
    /// The state's layout version; a new state is at [`STATE_VERSION`].
    pub fn state_version(&self) -> Result<u32> {
        let file = self.state.version_file();
        match self.state.version().map_err(SiteError::io(&file))? {
            Version::New => Ok(STATE_VERSION),
            Version::At(v) => Ok(v),
        }
    }

    /// Migrates the state to [`STATE_VERSION`] (with `dry_run`, says how and writes nothing).
    pub fn upgrade(&self, dry_run: bool) -> Result<UpgradeReport> {
        let from = self.state_version()?;
        let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| m.to > from).collect();
        let mut report = UpgradeReport {
            from,
            to: STATE_VERSION,
            steps: pending
                .iter()
                .map(|m| format!("{} -> {}: {}", m.to - 1, m.to, m.what))
                .collect(),
            backup: None,
        };
        if dry_run || pending.is_empty() {
            return Ok(report);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let backup = self
            .state
            .root()
            .join("backups")
            .join(format!("state-version-{from}-{stamp}"));
        for rel in pending.iter().flat_map(|m| m.touches) {
            let source = self.state.root().join(rel);
            if !source.exists() {
                continue;
            }
            let copy = backup.join(rel);
            if let Some(parent) = copy.parent() {
                std::fs::create_dir_all(parent).map_err(SiteError::io(parent))?;
            }
            std::fs::copy(&source, &copy).map_err(SiteError::io(&copy))?;
        }
        report.backup = Some(backup);
        for migration in pending {
            (migration.run)(self)?;
            let file = self.state.version_file();
            self.state
                .set_version(migration.to)
                .map_err(SiteError::io(&file))?;
        }
        Ok(report)
    }
}

/// Refuses a state written by a newer wulf: its layout may mean something this one gets wrong.
pub(crate) fn check_version(state: &wulf_core::StateDir) -> Result<()> {
    let file = state.version_file();
    match state.version().map_err(SiteError::io(&file))? {
        Version::At(found) if found > STATE_VERSION => Err(SiteError::StateTooNew {
            path: state.root().to_path_buf(),
            found,
            supported: STATE_VERSION,
        }),
        _ => Ok(()),
    }
}
