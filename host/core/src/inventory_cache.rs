//! A checked copy of the inventory beside the state's cache, so that a command need not parse
//! and check `nodes.toml` again when nothing changed.
//!
//! Parsing and checking 10,000 records of TOML costs a command most of its time; the same
//! records read back as JSON take a fraction of it. The copy is keyed by a hash of the exact
//! text it was read from and by the binary that read it (a newer wulf may read the same text
//! differently), and only an inventory that passed [`crate::validation::validate`] is stored,
//! so a hit is as good as a checked parse. Anything else (a missing, stale, torn or unreadable
//! copy) is a miss, and the caller parses the text as before: the cache can make wulf faster,
//! never wrong.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::inventory::Inventory;

/// The file's first line starts with this, then the key.
const MAGIC: &str = "wulf-inventory-cache-1";

/// The validated copy of one inventory file.
#[derive(Debug, Clone)]
pub(crate) struct InventoryCache {
    path: PathBuf,
}

/// What a cached copy must match: the text it was read from, and the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey(String);

impl CacheKey {
    pub(crate) fn of(text: &[u8]) -> CacheKey {
        let digest = Sha256::digest(text);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        CacheKey(format!("{MAGIC} {hex} {}", build_identity()))
    }
}

/// This binary, as the file system knows it: a rebuilt or upgraded wulf is a new reader.
/// Asked once per process (a write reads and then stores).
fn build_identity() -> &'static str {
    static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(identify)
}

fn identify() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match std::fs::metadata("/proc/self/exe") {
        Ok(meta) => format!(
            "{version}/{}:{}:{}:{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ),
        // Without /proc nothing can tell two builds of one version apart: never hit.
        Err(_) => format!("{version}/unknown-{}", std::process::id()),
    }
}

impl InventoryCache {
    pub(crate) fn new(path: PathBuf) -> Self {
        InventoryCache { path }
    }

    /// The cached inventory, when it was stored for `key`.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Inventory> {
        self.read(key, |json| serde_json::from_slice(json))
    }

    /// The cached inventory's profiles and the nodes of `nodes` it holds, when it was stored
    /// for `key`; the other nodes are skipped over, not read.
    pub(crate) fn get_some(&self, key: &CacheKey, nodes: &[&str]) -> Option<Inventory> {
        /// The stored inventory with each node left as its text.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Partial<'a> {
            profiles: BTreeMap<String, crate::Node>,
            #[serde(borrow)]
            nodes: BTreeMap<Cow<'a, str>, &'a RawValue>,
        }
        self.read(key, |json| {
            let partial: Partial = serde_json::from_slice(json)?;
            let mut inventory = Inventory {
                profiles: partial.profiles,
                nodes: BTreeMap::new(),
            };
            for id in nodes {
                if let Some(raw) = partial.nodes.get(*id) {
                    let node = serde_json::from_str(raw.get())?;
                    inventory.nodes.insert((*id).to_owned(), node);
                }
            }
            Ok(inventory)
        })
    }

    /// The copy's inventory as `parse` reads it from the JSON after the key line, when the
    /// copy was stored for `key`.
    fn read(
        &self,
        key: &CacheKey,
        parse: impl FnOnce(&[u8]) -> serde_json::Result<Inventory>,
    ) -> Option<Inventory> {
        let bytes = std::fs::read(&self.path).ok()?;
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        if &bytes[..newline] != key.0.as_bytes() {
            return None;
        }
        match parse(&bytes[newline + 1..]) {
            Ok(mut inventory) => {
                inventory.assign_ids();
                Some(inventory)
            }
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "inventory cache unreadable; parsing the inventory");
                None
            }
        }
    }

    /// Stores `inventory`, which must have been checked, for `key`. The copy is readable by
    /// whoever can read `source` (it holds the same secrets). A failure only costs the next
    /// command a parse, so it is logged, not returned.
    pub(crate) fn put(&self, key: &CacheKey, inventory: &Inventory, source: &Path) {
        if let Err(error) = self.write(key, inventory, source) {
            tracing::debug!(path = %self.path.display(), %error, "inventory cache not written");
        }
    }

    fn write(&self, key: &CacheKey, inventory: &Inventory, source: &Path) -> std::io::Result<()> {
        let mode = std::fs::metadata(source).map_or(0o600, |m| m.mode() & 0o644);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?;
            let mut out = std::io::BufWriter::new(file);
            out.write_all(key.0.as_bytes())?;
            out.write_all(b"\n")?;
            serde_json::to_writer(&mut out, inventory)?;
            out.flush()?;
            // No fsync: a copy torn by a crash fails its parse and is a miss.
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        Inventory::from_toml(
            "[profiles.default]\nimage = \"rocky\"\n[profiles.default.ipmi]\npassword = \"hunter2\"\n\
             [profiles.default.resources.fstab]\nmounts = [{ path = \"/home\", opts = [1, 2.5, true] }]\n\
             [nodes.n1]\nprofiles = [\"default\"]\n\
             [nodes.n1.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\nipaddr = \"10.0.0.1\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_stored_copy_reads_back_equal_for_its_key_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("nodes.toml");
        std::fs::write(&source, "x").unwrap_or_else(|e| panic!("{e}"));
        let cache = InventoryCache::new(dir.path().join("cache/inventory.json"));
        let key = CacheKey::of(b"text one");
        assert!(cache.get(&key).is_none());
        let inventory = inventory();
        cache.put(&key, &inventory, &source);
        assert_eq!(cache.get(&key), Some(inventory));
        assert!(cache.get(&CacheKey::of(b"text two")).is_none());
    }

    #[test]
    fn some_nodes_read_back_with_every_profile() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("nodes.toml");
        std::fs::write(&source, "x").unwrap_or_else(|e| panic!("{e}"));
        let cache = InventoryCache::new(dir.path().join("inventory.json"));
        let key = CacheKey::of(b"text");
        let mut inventory = inventory();
        let mut n2 = inventory.nodes["n1"].clone();
        n2.id = "n2".into();
        n2.comment = Some("the other".into());
        inventory.nodes.insert("n2".into(), n2);
        cache.put(&key, &inventory, &source);

        let some = cache
            .get_some(&key, &["n2", "n9"])
            .unwrap_or_else(|| panic!("a hit"));
        assert_eq!(some.profiles, inventory.profiles);
        assert_eq!(some.nodes.keys().collect::<Vec<_>>(), ["n2"]);
        assert_eq!(some.nodes["n2"], inventory.nodes["n2"]);
        assert!(
            cache
                .get_some(&key, &[])
                .is_some_and(|i| i.nodes.is_empty())
        );
        assert!(cache.get_some(&CacheKey::of(b"other"), &["n2"]).is_none());
    }

    #[test]
    fn a_torn_copy_is_a_miss_and_the_copy_keeps_the_sources_readers() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("nodes.toml");
        std::fs::write(&source, "x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("inventory.json");
        let cache = InventoryCache::new(path.clone());
        let key = CacheKey::of(b"text");
        cache.put(&key, &inventory(), &source);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o777, 0o600);
        let full = std::fs::read(&path).unwrap_or_default();
        std::fs::write(&path, &full[..full.len() - 10]).unwrap_or_else(|e| panic!("{e}"));
        assert!(cache.get(&key).is_none());
        assert!(cache.get_some(&key, &["n1"]).is_none());
    }
}
