//! Admin access tokens for the API and the dashboard: scoped, expiring, stored hashed.
//!
//! A token is `wulf_<id>_<secret>`: the id finds the record, the secret (32 random bytes) is
//! checked against its SHA-256, so the file holds nothing that opens the API. A slow password
//! hash buys nothing for 256 random bits. Revoking deletes the record; the file is read on every
//! check, so a revocation or expiry takes effect at the next request, in any process.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::Site;
use crate::error::{Result, SiteError};

/// What a token may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// See nodes, profiles, images, overlays, plugins, status and boot events.
    Read,
    /// Change nodes, profiles, images and overlays.
    Write,
    /// Power nodes, one-time netboot, read their consoles.
    Power,
    /// Manage tokens; everything else too.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Power, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Power => "power",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope> {
        let text = text.trim();
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| SiteError::BadValue {
                field: "scope".into(),
                value: text.into(),
                reason: "expected read, write, power or admin".into(),
            })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token as stored and listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    /// Who or what it is for; audit lines name it.
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; `None`: never.
    pub expires: Option<u64>,
}

impl TokenInfo {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Who audit lines say did something: `token <id> (<name>)`.
    pub fn who(&self) -> String {
        format!("token {} ({})", self.id, self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// SHA-256 of the secret, hex.
    hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// Why a token was refused. The API answers 401 to each without saying which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("not a wulf token (expected wulf_<id>_<secret>)")]
    Malformed,
    #[error("unknown or revoked token")]
    Unknown,
    #[error("the token has expired")]
    Expired,
}

const PREFIX: &str = "wulf_";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn digest(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Equal in time that depends only on the length, so a guess learns nothing from the clock.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Site {
    fn tokens_file(&self) -> PathBuf {
        self.state.root().join("api").join("tokens.json")
    }

    fn read_tokens(&self) -> Result<TokenFile> {
        let path = self.tokens_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SiteError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(source) => Err(SiteError::Io { path, source }),
        }
    }

    /// Changes the token file under the state directory's write lock.
    fn update_tokens<T>(&self, change: impl FnOnce(&mut TokenFile) -> Result<T>) -> Result<T> {
        let path = self.tokens_file();
        let _lock = wulf_core::atomic_file::WriteLock::acquire(&self.state.lock_file())
            .map_err(SiteError::io(&self.state.lock_file()))?;
        let mut file = self.read_tokens()?;
        let out = change(&mut file)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(SiteError::io(dir))?;
            let _ =
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        let text = serde_json::to_vec_pretty(&file).map_err(|source| SiteError::Io {
            path: path.clone(),
            source: std::io::Error::other(source),
        })?;
        wulf_core::atomic_file::write_atomic_mode(&path, &text, 0o600)
            .map_err(SiteError::io(&path))?;
        Ok(out)
    }

    /// Makes a token; its secret is in the returned string only, shown once.
    pub fn create_token(
        &self,
        name: &str,
        scopes: BTreeSet<Scope>,
        lifetime: Option<Duration>,
        by: &str,
    ) -> Result<(String, TokenInfo)> {
        if scopes.is_empty() {
            return Err(SiteError::BadValue {
                field: "scope".into(),
                value: String::new(),
                reason: "give at least one of read, write, power, admin".into(),
            });
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(SiteError::BadValue {
                field: "name".into(),
                value: name.into(),
                reason: "1 to 64 printable characters, saying who or what uses the token".into(),
            });
        }
        let id = hex::encode(wulf_agent::random_bytes::<6>());
        let secret = hex::encode(wulf_agent::random_bytes::<32>());
        let created = unix_now();
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_owned(),
            scopes,
            created,
            expires: lifetime.map(|l| created.saturating_add(l.as_secs())),
        };
        self.update_tokens(|file| {
            file.tokens.push(StoredToken {
                info: info.clone(),
                hash: digest(&secret),
            });
            Ok(())
        })?;
        self.audit(
            by,
            "token.create",
            &format!("{id} ({}, scopes {})", info.name, scope_list(&info.scopes)),
            "ok",
        );
        Ok((format!("{PREFIX}{id}_{secret}"), info))
    }

    /// Every token, expired ones too (marked by their `expires`).
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        Ok(self
            .read_tokens()?
            .tokens
            .into_iter()
            .map(|t| t.info)
            .collect())
    }

    /// Deletes a token by id (the `<id>` of `wulf_<id>_…`, as `token list` shows it).
    pub fn revoke_token(&self, id: &str, by: &str) -> Result<TokenInfo> {
        let revoked = self.update_tokens(|file| {
            let at = file
                .tokens
                .iter()
                .position(|t| t.info.id == id)
                .ok_or_else(|| SiteError::BadValue {
                    field: "id".into(),
                    value: id.into(),
                    reason: "no such token (see `wulf token list`)".into(),
                })?;
            Ok(file.tokens.remove(at).info)
        })?;
        self.audit(
            by,
            "token.revoke",
            &format!("{id} ({})", revoked.name),
            "ok",
        );
        Ok(revoked)
    }

    /// The token a bearer presents, if it is one of ours and alive.
    pub fn authenticate(&self, presented: &str) -> Result<TokenInfo, TokenRefused> {
        let (id, secret) = presented
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(TokenRefused::Malformed)?;
        let file = self.read_tokens().map_err(|error| {
            tracing::error!(error = %crate::error_chain(&error), "cannot read the API tokens");
            TokenRefused::Unknown
        })?;
        let stored = file
            .tokens
            .iter()
            .find(|t| t.info.id == id)
            .ok_or(TokenRefused::Unknown)?;
        if !same(digest(secret).as_bytes(), stored.hash.as_bytes()) {
            return Err(TokenRefused::Unknown);
        }
        if stored.info.expires.is_some_and(|at| at <= unix_now()) {
            return Err(TokenRefused::Expired);
        }
        Ok(stored.info.clone())
    }
}

/// A token's lifetime: `90m`, `12h`, `30d`, `8w` (a bare number is days).
pub fn parse_lifetime(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "m" => 60,
        "h" => 3600,
        "" | "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.checked_mul(unit).map(Duration::from_secs)
}

/// `read,write`.
pub fn scope_list(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let site = Site::open(crate::SiteOptions {
            state: dir.path().to_path_buf(),
            config: None,
            embedded: &[],
            agent: &[],
            stage1: &[],
        })
        .unwrap_or_else(|e| panic!("{e}"));
        (dir, site)
    }

    #[test]
    fn a_token_is_checked_by_its_secret_and_stored_hashed() {
        let (dir, site) = site();
        let (token, info) = site
            .create_token("ci", BTreeSet::from([Scope::Read]), None, "test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(site.authenticate(&token), Ok(info.clone()));
        let stored = std::fs::read_to_string(dir.path().join("api/tokens.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let secret = token.rsplit('_').next().unwrap_or_default();
        assert!(!stored.contains(secret), "{stored}");
        let mut forged = token.clone();
        forged.pop();
        forged.push('x');
        assert_eq!(site.authenticate(&forged), Err(TokenRefused::Unknown));
        assert_eq!(site.authenticate("Bearer x"), Err(TokenRefused::Malformed));
        assert!(info.allows(Scope::Read) && !info.allows(Scope::Write));
        site.revoke_token(&info.id, "test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(site.authenticate(&token), Err(TokenRefused::Unknown));
    }

    #[test]
    fn an_expired_token_is_refused_and_admin_allows_everything() {
        let (_dir, site) = site();
        let (token, info) = site
            .create_token(
                "old",
                BTreeSet::from([Scope::Admin]),
                Some(Duration::ZERO),
                "test",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(site.authenticate(&token), Err(TokenRefused::Expired));
        assert!(Scope::ALL.iter().all(|s| info.allows(*s)));
        assert!(
            site.create_token("x", BTreeSet::new(), None, "test")
                .is_err()
        );
        assert!(
            site.create_token(" ", BTreeSet::from([Scope::Read]), None, "test")
                .is_err()
        );
        assert_eq!(
            parse_lifetime("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_lifetime("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_lifetime("7"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_lifetime("soon"), None);
        assert_eq!(parse_lifetime("5y"), None);
    }
}
