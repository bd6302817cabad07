//! `wulf-agent`: runs on a booted node and keeps its runtime overlay in sync with `wulf serve`.
//!
//! It long-polls the node's runtime overlay by ETag (a change reaches it within a second, an
//! idle node costs the server one parked request), checks the body's signature, applies it file
//! by file ([`apply`]), removes what left the overlay, runs the hooks whose paths changed, and
//! reports what the node booted so the server can say when a reboot is needed. Every request is
//! signed with the node's credential ([`proto`]).

pub mod apply;
pub mod config;
pub mod cpio;
pub mod http;
pub mod proto;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::Config;
use proto::{Authorization, Booted, Credential};

/// `N` bytes from the kernel's randomness (zeros if it cannot be read): no seeding, no crate.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut random, &mut bytes);
    }
    bytes
}

/// The runtime overlay's own list of its paths, as the kernel unpacked it at boot.
pub const BOOT_MANIFEST: &str = "warewulf/runtime.manifest";

/// What one exchange with the server came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The overlay changed and was applied.
    Applied(apply::Applied),
    /// Nothing changed within the wait.
    Unchanged,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SyncError {
    /// The server could not be reached or answered garbage: try again soon.
    Transport(std::io::Error),
    /// The server refused the node (401/403): its message.
    Refused(u16, String),
    /// Anything else the server said.
    Server(u16, String),
    /// The body's signature is missing or wrong: nothing was applied.
    Unsigned,
    /// The archive could not be read or applied.
    Apply(std::io::Error),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Transport(e) => write!(f, "cannot reach the server: {e}"),
            SyncError::Refused(status, message) => {
                write!(f, "the server refused this node ({status}): {message}")
            }
            SyncError::Server(status, message) => {
                write!(f, "the server answered {status}: {message}")
            }
            SyncError::Unsigned => write!(
                f,
                "the runtime overlay's signature does not match this node's credential: not applied"
            ),
            SyncError::Apply(e) => write!(f, "applying the runtime overlay failed: {e}"),
        }
    }
}

impl std::error::Error for SyncError {}

/// The agent's state between exchanges.
#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    credential: Credential,
    /// Where the overlay goes: `/`, or a directory in tests.
    root: PathBuf,
    /// The ETag last applied.
    etag: Option<String>,
    /// What the last apply placed, kept in `<state>/manifest`.
    manifest: BTreeSet<String>,
    /// What the node booted, as the server first told it.
    booted: Booted,
    boot_id: String,
    /// Which of the configured servers answered last.
    server: usize,
}

impl Agent {
    /// An agent for `config`, applying under `root`.
    pub fn new(config: Config, root: &Path) -> Result<Agent, String> {
        let credential = std::fs::read_to_string(&config.credential)
            .map_err(|e| format!("cannot read {}: {e}", config.credential.display()))
            .and_then(|text| {
                Credential::from_hex(&text)
                    .ok_or_else(|| format!("{} holds no credential", config.credential.display()))
            })?;
        // What the last apply placed; after a boot, what the boot-time runtime overlay held
        // (it lists itself), so a file that left it before this first sync is removed too.
        let manifest = std::fs::read_to_string(config.state.join("manifest"))
            .or_else(|_| std::fs::read_to_string(root.join(BOOT_MANIFEST)))
            .map(|t| apply::parse_manifest(&t))
            .unwrap_or_default();
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_owned())
            .unwrap_or_default();
        // `<boot id>\n<report>`: a report from another boot does not count.
        let booted = std::fs::read_to_string(config.state.join("booted"))
            .ok()
            .and_then(|text| {
                let (id, report) = text.split_once('\n')?;
                (id == boot_id)
                    .then(|| Booted::parse(report.trim()))
                    .flatten()
            })
            .unwrap_or_default();
        Ok(Agent {
            config,
            credential,
            root: root.to_path_buf(),
            etag: None,
            manifest,
            booted,
            boot_id,
            server: 0,
        })
    }

    /// The server in use.
    pub fn server(&self) -> &str {
        &self.config.servers[self.server % self.config.servers.len()]
    }

    /// Moves on to the next configured server, after a failure.
    pub fn next_server(&mut self) {
        self.server = (self.server + 1) % self.config.servers.len();
    }

    /// One long-poll: waits up to `wait` for the runtime overlay to differ from the one last
    /// applied, and applies it. Every answer, "not modified" too, must carry this node's
    /// signature over this request.
    pub fn sync(&mut self, wait: Duration) -> Result<Outcome, SyncError> {
        let target = format!("{}?wait={}", proto::RUNTIME_PATH, wait.as_secs());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let if_none_match = self.etag.clone().unwrap_or_default();
        let booted = if self.booted.is_empty() {
            String::new()
        } else {
            self.booted.header_value()
        };
        let covered = proto::Covered {
            if_none_match: &if_none_match,
            booted: &booted,
        };
        let auth = Authorization::sign(
            &self.credential,
            &self.config.node,
            "GET",
            &target,
            now,
            covered,
        );
        let mut headers = vec![("Authorization", auth.header_value())];
        if !if_none_match.is_empty() {
            headers.push(("If-None-Match", if_none_match.clone()));
        }
        if !booted.is_empty() {
            headers.push((proto::BOOTED_HEADER, booted.clone()));
        }
        if !self.boot_id.is_empty() {
            headers.push((proto::BOOT_ID_HEADER, self.boot_id.clone()));
        }
        let server = self.server().to_owned();
        let response = http::get(
            &server,
            &target,
            &headers,
            wait + Duration::from_secs(30),
            self.config.privileged_port,
        )
        .map_err(SyncError::Transport)?;
        let message = || String::from_utf8_lossy(&response.body).trim().to_owned();
        match response.status {
            200 | 304 => {}
            401 | 403 => return Err(SyncError::Refused(response.status, message())),
            status => return Err(SyncError::Server(status, message())),
        }
        let etag = response.header("etag").unwrap_or_default();
        let answer_booted = response.header(proto::BOOTED_HEADER).unwrap_or_default();
        let answer = proto::Answer {
            request: auth.signature(),
            status: response.status,
            etag,
            booted: answer_booted,
            body: &response.body,
        };
        let signed = response
            .header(proto::SIGNATURE_HEADER)
            .is_some_and(|sig| self.credential.verify_response(&answer, sig));
        if !signed {
            return Err(SyncError::Unsigned);
        }
        // An ETag is sent back in a header: letters, digits and quotes only.
        if !etag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'"') {
            return Err(SyncError::Server(
                response.status,
                format!("a bad ETag {etag:?}"),
            ));
        }
        if self.booted.is_empty()
            && let Some(told) = Booted::parse(answer_booted).filter(|b| !b.is_empty())
        {
            let _ = std::fs::create_dir_all(&self.config.state);
            let _ = std::fs::write(
                self.config.state.join("booted"),
                format!("{}\n{}\n", self.boot_id, told.header_value()),
            );
            self.booted = told;
        }
        if response.status == 304 {
            return Ok(Outcome::Unchanged);
        }
        let entries = cpio::read_archive(&response.body).map_err(SyncError::Apply)?;
        let (applied, manifest) =
            apply::apply(&self.root, &entries, &self.manifest).map_err(SyncError::Apply)?;
        self.manifest = manifest;
        let _ = std::fs::create_dir_all(&self.config.state);
        std::fs::write(
            self.config.state.join("manifest"),
            apply::manifest_text(&self.manifest),
        )
        .map_err(SyncError::Apply)?;
        self.etag = Some(etag.to_owned()).filter(|e| !e.is_empty());
        Ok(Outcome::Applied(applied))
    }

    /// The hooks whose patterns match a changed path, each once, in configuration order.
    pub fn hooks_for(&self, applied: &apply::Applied) -> Vec<&config::Hook> {
        self.config
            .hooks
            .iter()
            .filter(|hook| {
                applied
                    .written
                    .iter()
                    .chain(&applied.removed)
                    .any(|path| config::glob(&hook.pattern, &format!("/{path}")))
            })
            .collect()
    }

    /// The ETag of the runtime overlay last applied, as the server sent it (quoted).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }
}
