//! The cluster's SSH host keys: one set for every node, generated once on the host as
//! `wwctl configure ssh` does, so nodes keep their identity across reboots and users' `known_hosts`
//! need one entry per key type for the whole cluster.
//!
//! The keys live in `<state>/keys` as OpenSSH files (`ssh_host_<type>_key`, mode 0600, and
//! `.pub`). A plugin whose manifest asks for the `ssh-host-keys` capability gets them in its
//! config; the first-party `ssh-host-keys` overlay writes them to `/etc/ssh`.

use std::path::{Path, PathBuf};

use ssh_key::private::RsaKeypair;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey};

use crate::OverlayError;

/// The key types generated, in the order `sshd` offers them.
pub const TYPES: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

fn algorithm(kind: &str) -> Algorithm {
    match kind {
        "ed25519" => Algorithm::Ed25519,
        "ecdsa" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        _ => Algorithm::Rsa { hash: None },
    }
}

/// One host key pair, as OpenSSH files hold them.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// `ed25519`, `ecdsa` or `rsa`.
    pub kind: &'static str,
    /// The OpenSSH private key file.
    pub private: String,
    /// The `.pub` line.
    pub public: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// The cluster's key set.
#[derive(Debug, Clone)]
pub struct HostKeys {
    pub dir: PathBuf,
    pub keys: Vec<HostKey>,
}

impl HostKeys {
    /// The key directory of a state directory.
    pub fn dir_in(state: &Path) -> PathBuf {
        state.join("keys")
    }

    /// Reads the key set in `dir`, generating the types that are missing (all of them, the
    /// first time). Returns the set and the types generated now.
    pub fn ensure(
        dir: &Path,
        comment: &str,
    ) -> Result<(HostKeys, Vec<&'static str>), OverlayError> {
        let path = |kind: &str| dir.join(format!("ssh_host_{kind}_key"));
        // Two processes (the server and a command) must not each generate a different set.
        let _lock = if TYPES.iter().any(|k| !path(k).exists()) {
            Some(lock(dir)?)
        } else {
            None
        };
        let mut keys = Vec::new();
        let mut generated = Vec::new();
        for kind in TYPES {
            let path = path(kind);
            let key = match std::fs::read_to_string(&path) {
                Ok(text) => read_key(kind, &path, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    generated.push(kind);
                    generate(kind, &path, comment)?
                }
                Err(e) => return Err(OverlayError::io(&path, e)),
            };
            keys.push(key);
        }
        Ok((
            HostKeys {
                dir: dir.to_path_buf(),
                keys,
            },
            generated,
        ))
    }

    /// Replaces every key with a new one (`wulf configure ssh --regenerate`).
    pub fn regenerate(dir: &Path, comment: &str) -> Result<HostKeys, OverlayError> {
        let _lock = lock(dir)?;
        let mut keys = Vec::new();
        for kind in TYPES {
            keys.push(generate(
                kind,
                &dir.join(format!("ssh_host_{kind}_key")),
                comment,
            )?);
        }
        Ok(HostKeys {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// What a plugin with the `ssh-host-keys` capability finds under `host-keys` in its config:
    /// `{"ed25519": {"private": …, "public": …}, …}`.
    pub fn to_json(&self) -> serde_json::Value {
        self.keys
            .iter()
            .map(|k| {
                (
                    k.kind.to_string(),
                    serde_json::json!({"private": k.private, "public": k.public}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Creates the key directory (0700) and takes its lock.
fn lock(dir: &Path) -> Result<wulf_core::atomic_file::WriteLock, OverlayError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| OverlayError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| OverlayError::io(dir, e))?;
    let lock = dir.join(".lock");
    wulf_core::atomic_file::WriteLock::acquire(&lock).map_err(|e| OverlayError::io(&lock, e))
}

fn read_key(kind: &'static str, path: &Path, text: &str) -> Result<HostKey, OverlayError> {
    let invalid = |reason: String| OverlayError::UnusableHostKey {
        path: path.to_path_buf(),
        reason,
    };
    let key = PrivateKey::from_openssh(text).map_err(|source| OverlayError::NotAHostKey {
        path: path.to_path_buf(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(invalid(
            "is encrypted: nodes need it in the clear, as sshd reads it".into(),
        ));
    }
    let expected = algorithm(kind);
    if std::mem::discriminant(&key.algorithm()) != std::mem::discriminant(&expected) {
        return Err(invalid(format!(
            "holds a {} key, expected {kind}",
            key.algorithm()
        )));
    }
    describe(kind, &key)
}

fn generate(kind: &'static str, path: &Path, comment: &str) -> Result<HostKey, OverlayError> {
    let failed = |source| OverlayError::HostKey {
        action: "generating",
        kind,
        source,
    };
    let mut key = match algorithm(kind) {
        // ssh-keygen's size, not the crate's 4096 bits, which take twice as long to make.
        Algorithm::Rsa { .. } => RsaKeypair::random(&mut OsRng, 3072)
            .map(PrivateKey::from)
            .map_err(failed)?,
        algorithm => PrivateKey::random(&mut OsRng, algorithm).map_err(failed)?,
    };
    key.set_comment(comment);
    let described = describe(kind, &key)?;
    wulf_core::atomic_file::write_atomic_mode(path, described.private.as_bytes(), 0o600)
        .map_err(|e| OverlayError::io(path, e))?;
    let public = PathBuf::from(format!("{}.pub", path.display()));
    wulf_core::atomic_file::write_atomic(&public, described.public.as_bytes())
        .map_err(|e| OverlayError::io(&public, e))?;
    Ok(described)
}

fn describe(kind: &'static str, key: &PrivateKey) -> Result<HostKey, OverlayError> {
    let failed = |source| OverlayError::HostKey {
        action: "encoding",
        kind,
        source,
    };
    let private = key.to_openssh(LineEnding::LF).map_err(failed)?.to_string();
    let public = key.public_key().to_openssh().map_err(failed)? + "\n";
    Ok(HostKey {
        kind,
        private,
        public,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
    })
}
