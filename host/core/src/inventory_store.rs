//! The built-in inventory store: one TOML file in the state directory.
//!
//! Reads need no lock (writes replace the file atomically); every write is a locked
//! read-modify-write, so concurrent commands never lose each other's edits. What is read is
//! checked: a hand-edited file with a bad address or a duplicate MAC is refused, naming the
//! file, the record and the field, instead of yielding a node that silently never boots.

use std::path::PathBuf;

use crate::atomic_file::{WriteLock, write_atomic};
use crate::inventory::{Inventory, ParseError, SerializeError};
use crate::inventory_cache::{CacheKey, InventoryCache};
use crate::state_dir::{STATE_VERSION, StateDir};
use crate::validation::{ValidationError, validate};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid inventory: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path} is empty, which would drop every node and profile; if it was truncated, restore it from a backup; to keep no records, put a comment line in it"
    )]
    Empty { path: PathBuf },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<ValidationError>,
    },
    /// An edit whose result breaks a rule; nothing was written.
    #[error(transparent)]
    Refused(Box<ValidationError>),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serialize(#[from] SerializeError),
}

impl StoreError {
    /// The record and field at fault, when the file was read but refused.
    pub fn validation(&self) -> Option<&ValidationError> {
        match self {
            StoreError::Invalid { source, .. } | StoreError::Refused(source) => Some(source),
            _ => None,
        }
    }
}

/// The first line of every inventory wulf writes, so that even one with no records is not an
/// empty file.
const HEADER: &str =
    "# wulf inventory: edit with `wulf node` and `wulf profile`, or by hand (checked on load)\n";

/// The inventory file of a state directory.
#[derive(Debug, Clone)]
pub struct InventoryStore {
    path: PathBuf,
    lock: PathBuf,
    state: StateDir,
    cache: InventoryCache,
}

impl InventoryStore {
    pub fn new(state: &StateDir) -> Self {
        InventoryStore {
            path: state.nodes_file(),
            lock: state.lock_file(),
            state: state.clone(),
            cache: InventoryCache::new(state.cache_dir().join("inventory.json")),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The current inventory, checked; the shipped one ([`Inventory::shipped`]) when nothing
    /// was stored yet. A checked copy of an unchanged file comes from the cache.
    pub fn load(&self) -> Result<Inventory, StoreError> {
        let Some(text) = self.read()? else {
            return Ok(Inventory::shipped());
        };
        let key = CacheKey::of(&text);
        if let Some(inventory) = {
            let _span = tracing::debug_span!("inventory cache").entered();
            self.cache.get(&key)
        } {
            return Ok(inventory);
        }
        let inventory = self.parse(&text)?;
        validate(&inventory).map_err(|source| StoreError::Invalid {
            path: self.path.clone(),
            source: Box::new(source),
        })?;
        self.cache.put(&key, &inventory, &self.path);
        Ok(inventory)
    }

    /// The current inventory's profiles and, of its nodes, only those named in `nodes` (the
    /// ones that exist): what a command about a node or two needs. From the cache, only these
    /// records are read; 10,000 other nodes cost a scan, not a parse.
    pub fn load_some(&self, nodes: &[&str]) -> Result<Inventory, StoreError> {
        let wanted: std::collections::HashSet<&str> = nodes.iter().copied().collect();
        let Some(text) = self.read()? else {
            let mut shipped = Inventory::shipped();
            shipped.nodes.retain(|id, _| wanted.contains(id.as_str()));
            return Ok(shipped);
        };
        let key = CacheKey::of(&text);
        if let Some(inventory) = {
            let _span = tracing::debug_span!("inventory cache", nodes = nodes.len()).entered();
            self.cache.get_some(&key, nodes)
        } {
            return Ok(inventory);
        }
        let mut inventory = self.load()?;
        inventory.nodes.retain(|id, _| wanted.contains(id.as_str()));
        Ok(inventory)
    }

    /// The file's bytes (checked as UTF-8 only when parsed); `None` when nothing was stored
    /// yet.
    fn read(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The inventory as stored, parsed but not checked: what an edit starts from, so an
    /// edit can repair a file that a hand edit broke.
    fn load_unchecked(&self) -> Result<Inventory, StoreError> {
        let Some(text) = self.read()? else {
            return Ok(Inventory::shipped());
        };
        // A cached copy is of this very text, and checked too.
        match self.cache.get(&CacheKey::of(&text)) {
            Some(inventory) => Ok(inventory),
            None => self.parse(&text),
        }
    }

    fn parse(&self, text: &[u8]) -> Result<Inventory, StoreError> {
        let text = std::str::from_utf8(text).map_err(|e| StoreError::Parse {
            path: self.path.clone(),
            message: format!("not UTF-8 text ({e})"),
        })?;
        // wulf never writes an empty file (see [`HEADER`]): one is a truncated write or a
        // slip of the shell, not a wish to drop every node.
        if text.trim().is_empty() {
            return Err(StoreError::Empty {
                path: self.path.clone(),
            });
        }
        Inventory::from_toml(text).map_err(|e| match e {
            ParseError::Syntax(message) => StoreError::Parse {
                path: self.path.clone(),
                message,
            },
            ParseError::Record(source) => StoreError::Invalid {
                path: self.path.clone(),
                source: Box::new(source),
            },
        })
    }

    /// Applies `edit` under the write lock, checks the result and stores it atomically.
    /// Nothing is written when `edit` fails or the result is invalid.
    pub fn update<R, E: From<StoreError>>(
        &self,
        edit: impl FnOnce(&mut Inventory) -> Result<R, E>,
    ) -> Result<R, E> {
        let _lock = WriteLock::acquire(&self.lock).map_err(|source| StoreError::Write {
            path: self.lock.clone(),
            source,
        })?;
        let new_state = !self.path.exists();
        let mut inventory = self.load_unchecked()?;
        let result = edit(&mut inventory)?;
        inventory.assign_ids();
        validate(&inventory).map_err(|e| StoreError::Refused(Box::new(e)))?;
        let text = format!("{HEADER}{}", inventory.to_toml().map_err(StoreError::from)?);
        write_atomic(&self.path, text.as_bytes()).map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.cache
            .put(&CacheKey::of(text.as_bytes()), &inventory, &self.path);
        // A state this wulf starts is in its layout.
        if new_state && !self.state.version_file().exists() {
            self.state
                .set_version(STATE_VERSION)
                .map_err(|source| StoreError::Write {
                    path: self.state.version_file(),
                    source,
                })?;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Node;

    fn store() -> (tempfile::TempDir, InventoryStore) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = InventoryStore::new(&StateDir::new(dir.path()));
        (dir, store)
    }

    #[test]
    fn update_round_trips_and_failed_edits_write_nothing() {
        let (dir, store) = store();
        assert_eq!(store.load().ok(), Some(Inventory::shipped()));
        store
            .update(|inv| {
                inv.nodes.insert(
                    "n1".into(),
                    Node {
                        profiles: vec!["default".into()],
                        ..Node::default()
                    },
                );
                Ok::<_, StoreError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let before = std::fs::read(dir.path().join("nodes.toml")).unwrap_or_default();
        let failed = store.update(|inv| {
            inv.nodes.clear();
            Err::<(), _>(StoreError::Parse {
                path: "x".into(),
                message: "refused".into(),
            })
        });
        assert!(failed.is_err());
        let invalid = store.update(|inv| {
            inv.nodes.insert("bad name".into(), Node::default());
            Ok::<_, StoreError>(())
        });
        assert!(matches!(invalid, Err(StoreError::Refused(_))));
        assert_eq!(
            std::fs::read(dir.path().join("nodes.toml")).unwrap_or_default(),
            before
        );
        assert_eq!(store.load().map(|i| i.nodes.len()).ok(), Some(1));
    }

    #[test]
    fn the_checked_copy_follows_hand_edits_and_never_admits_a_bad_one() {
        let (dir, store) = store();
        let path = dir.path().join("nodes.toml");
        let cached = dir.path().join("cache/inventory.json");
        std::fs::write(&path, "[nodes.n1]\ncomment = \"one\"\n").unwrap_or_else(|e| panic!("{e}"));
        let first = store.load().unwrap_or_else(|e| panic!("{e}"));
        assert!(cached.exists());
        // A hit gives what a parse gives.
        assert_eq!(store.load().ok(), Some(first));
        // Same length, new content: seen.
        std::fs::write(&path, "[nodes.n1]\ncomment = \"two\"\n").unwrap_or_else(|e| panic!("{e}"));
        let comment = store
            .load()
            .ok()
            .and_then(|i| i.nodes["n1"].comment.clone());
        assert_eq!(comment.as_deref(), Some("two"));
        // A bad edit is refused although a checked copy of the last good file exists.
        std::fs::write(&path, "[nodes.n1]\nprofiles = [\"missing\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.load().is_err());
        // An edit through the store leaves a copy of what it wrote.
        store
            .update(|inv| {
                inv.nodes.clear();
                inv.nodes.insert("n2".into(), Node::default());
                Ok::<_, StoreError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read(&path).unwrap_or_default();
        let loaded = InventoryCache::new(cached).get(&CacheKey::of(&text));
        assert_eq!(
            loaded.map(|i| i.nodes.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["n2".to_string()])
        );
    }

    #[test]
    fn an_empty_file_is_refused_and_no_records_is_not_an_empty_file() {
        let (dir, store) = store();
        let path = dir.path().join("nodes.toml");
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.load(), Err(StoreError::Empty { .. })));
        std::fs::write(&path, " \n\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.load(), Err(StoreError::Empty { .. })));
        std::fs::write(&path, "# no nodes yet\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load().map(|i| i.nodes.len()).ok(), Some(0));
        store
            .update(|inv| {
                inv.nodes.clear();
                inv.profiles.clear();
                Ok::<_, StoreError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load().map(|i| i.profiles.len()).ok(), Some(0));
    }

    #[test]
    fn a_hand_edited_file_is_refused_on_load_and_repaired_by_an_edit() {
        let (dir, store) = store();
        std::fs::write(
            dir.path().join("nodes.toml"),
            "[nodes.n1.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n\
             [nodes.n2.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let error = store.load().err().unwrap_or_else(|| panic!("loaded"));
        let field = error.validation().map(|v| (v.record(), v.field.clone()));
        assert_eq!(
            field,
            Some((
                "node `n2`".to_string(),
                "network-devices.default.hwaddr".to_string()
            ))
        );
        store
            .update(|inv| {
                inv.nodes.remove("n2");
                Ok::<_, StoreError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load().map(|i| i.nodes.len()).ok(), Some(1));
    }
}
