//! The audit log: who changed what, and when, through the API (and token management from any
//! front end). One JSON line per change, appended to `<state>/api/audit.log` (root-only) and
//! logged under the `audit` tracing target, so the journal has it too.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Site;

/// One audit line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at: u64,
    /// `token <id> (<name>)`, or the local user.
    pub who: String,
    /// `node.update`, `power.on`, `token.create`, …
    pub action: String,
    /// What it was done to: a node, an image, a token id.
    pub subject: String,
    /// `ok`, or what went wrong.
    pub outcome: String,
}

impl Site {
    pub fn audit_log(&self) -> PathBuf {
        self.state.root().join("api").join("audit.log")
    }

    /// Records a change. A log that cannot be written is an error in the server's log, not a
    /// failed change: the change has happened by the time it is audited.
    pub fn audit(&self, who: &str, action: &str, subject: &str, outcome: &str) {
        let entry = AuditEntry {
            at: wulf_core::boot_status::now_ms(),
            who: who.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome: outcome.to_owned(),
        };
        tracing::info!(target: "audit", who, action, subject, outcome, "audit");
        let path = self.audit_log();
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            // One write of a whole line to an O_APPEND file: concurrent writers never interleave.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?
                .write_all(&line)
        })();
        if let Err(error) = written {
            tracing::error!(path = %path.display(), %error, "cannot write the audit log");
        }
    }
}
