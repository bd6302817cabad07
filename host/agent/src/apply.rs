//! Applying a runtime overlay to a live root: each file written beside its target (a new file,
//! root's alone until done) and renamed over it (a reader sees the old file or the new one,
//! never half), modes and owners as the archive says, unchanged files left alone, and what left
//! the overlay since the last apply (the manifest) removed. A file that left the overlay is
//! removed even where the image has one of its own: the image's copy comes back at the next
//! boot.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::cpio::{Entry, Kind};

/// What an apply did, by path relative to the root.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

/// Applies `entries` under `root`. `previous` lists what the last apply placed; those no longer
/// in `entries` are removed first (deepest first; directories only once empty), so a path may
/// change from directory to file. A path listed twice takes its last entry, as when the kernel
/// unpacks the segments one after another. Returns what happened and the new manifest.
pub fn apply(
    root: &Path,
    entries: &[Entry],
    previous: &BTreeSet<String>,
) -> io::Result<(Applied, BTreeSet<String>)> {
    let last: std::collections::BTreeMap<&str, &Entry> =
        entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let manifest: BTreeSet<String> = last.keys().map(|p| (*p).to_owned()).collect();
    let mut applied = Applied::default();
    let gone: Vec<&String> = previous.difference(&manifest).collect();
    for gone in gone.into_iter().rev() {
        let target = root.join(gone);
        let removed = match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => fs::remove_dir(&target).is_ok(),
            Ok(_) => fs::remove_file(&target).map(|()| true)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if removed {
            applied.removed.push(gone.clone());
        }
    }
    // Sorted by path: a directory comes before what it holds.
    for entry in last.values() {
        let target = root.join(&entry.path);
        let changed = match &entry.kind {
            Kind::Directory => directory(&target, entry)?,
            Kind::File(content) => file(&target, entry, content)?,
            Kind::Symlink(to) => symlink(&target, entry, to)?,
        };
        if changed {
            applied.written.push(entry.path.clone());
        } else {
            applied.unchanged += 1;
        }
    }
    Ok((applied, manifest))
}

fn owned_as(meta: &fs::Metadata, entry: &Entry) -> bool {
    meta.uid() == entry.uid && meta.gid() == entry.gid
}

fn directory(target: &Path, entry: &Entry) -> io::Result<bool> {
    match fs::symlink_metadata(target) {
        Ok(meta)
            if meta.is_dir()
                && meta.permissions().mode() & 0o7777 == entry.mode
                && owned_as(&meta, entry) =>
        {
            return Ok(false);
        }
        Ok(meta) if meta.is_dir() => {}
        // A link to a directory (`/lib` on a merged-/usr system) already is one: replacing it
        // would cut the system in half. The kernel keeps it too.
        Ok(meta) if meta.file_type().is_symlink() && target.is_dir() => return Ok(false),
        Ok(_) => {
            fs::remove_file(target)?;
            fs::create_dir(target)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(target)?,
        Err(e) => return Err(e),
    }
    std::os::unix::fs::chown(target, Some(entry.uid), Some(entry.gid))?;
    fs::set_permissions(target, fs::Permissions::from_mode(entry.mode))?;
    Ok(true)
}

/// A new temporary name beside `target`, in the same directory (so the rename is atomic).
fn beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.wulf-agent.{}",
        hex::encode(crate::random_bytes::<6>())
    ))
}

/// A path that is a directory is removed when empty, so a directory can become a file.
fn clear_directory(target: &Path) -> io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(target),
        _ => Ok(()),
    }
}

fn file(target: &Path, entry: &Entry, content: &[u8]) -> io::Result<bool> {
    if let Ok(meta) = fs::symlink_metadata(target)
        && meta.is_file()
        && meta.permissions().mode() & 0o7777 == entry.mode
        && owned_as(&meta, entry)
        && meta.len() == content.len() as u64
        && fs::read(target)? == content
    {
        return Ok(false);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    clear_directory(target)?;
    let temp = beside(target);
    let written = (|| {
        // New: O_EXCL never opens an existing file nor follows a planted link. Readable by
        // root only until it has its owner and mode.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        out.write_all(content)?;
        // Owner first: chown clears set-id bits, the mode then sets them.
        std::os::unix::fs::fchown(&out, Some(entry.uid), Some(entry.gid))?;
        out.set_permissions(fs::Permissions::from_mode(entry.mode))?;
        out.sync_all()?;
        fs::rename(&temp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map(|()| true)
}

fn symlink(target: &Path, entry: &Entry, to: &str) -> io::Result<bool> {
    if let Ok(existing) = fs::read_link(target)
        && existing == Path::new(to)
        && fs::symlink_metadata(target).is_ok_and(|m| owned_as(&m, entry))
    {
        return Ok(false);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    clear_directory(target)?;
    let temp = beside(target);
    std::os::unix::fs::symlink(to, &temp)?;
    let linked = std::os::unix::fs::lchown(&temp, Some(entry.uid), Some(entry.gid))
        .and_then(|()| fs::rename(&temp, target));
    if linked.is_err() {
        let _ = fs::remove_file(&temp);
    }
    linked.map(|()| true)
}

/// The manifest's text form: one path per line.
pub fn manifest_text(manifest: &BTreeSet<String>) -> String {
    manifest.iter().map(|p| format!("{p}\n")).collect()
}

pub fn parse_manifest(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> (u32, u32) {
        let meta = fs::metadata("/proc/self").unwrap();
        (meta.uid(), meta.gid())
    }

    fn entry(path: &str, mode: u32, kind: Kind) -> Entry {
        let (uid, gid) = uid();
        Entry {
            path: path.into(),
            mode,
            uid,
            gid,
            kind,
        }
    }

    #[test]
    fn writes_changes_keeps_the_unchanged_and_removes_what_left() {
        let root = tempfile::tempdir().unwrap();
        let first = vec![
            entry("etc", 0o755, Kind::Directory),
            entry("etc/motd", 0o644, Kind::File(b"one\n".to_vec())),
            entry("etc/old", 0o600, Kind::File(b"old\n".to_vec())),
            entry("etc/gone.d", 0o755, Kind::Directory),
            entry("etc/gone.d/x", 0o644, Kind::File(b"x".to_vec())),
            entry("etc/link", 0o777, Kind::Symlink("motd".into())),
        ];
        let (done, manifest) = apply(root.path(), &first, &BTreeSet::new()).unwrap();
        assert_eq!(done.written.len(), 6);
        assert_eq!(fs::read(root.path().join("etc/link")).unwrap(), b"one\n");
        let mode = fs::metadata(root.path().join("etc/old"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        // A file the admin left alone on the node, not from the overlay, stays.
        fs::write(root.path().join("etc/local"), "mine").unwrap();

        let second = vec![
            entry("etc", 0o755, Kind::Directory),
            entry("etc/motd", 0o644, Kind::File(b"two\n".to_vec())),
            entry("etc/link", 0o777, Kind::Symlink("motd".into())),
        ];
        let (done, manifest) = apply(root.path(), &second, &manifest).unwrap();
        assert_eq!(done.written, ["etc/motd"]);
        assert_eq!(done.unchanged, 2);
        assert_eq!(done.removed, ["etc/old", "etc/gone.d/x", "etc/gone.d"]);
        assert!(!root.path().join("etc/old").exists());
        assert!(!root.path().join("etc/gone.d").exists());
        assert_eq!(
            fs::read_to_string(root.path().join("etc/local")).unwrap(),
            "mine"
        );
        assert_eq!(manifest_text(&manifest), "etc\netc/link\netc/motd\n");
        assert_eq!(parse_manifest(&manifest_text(&manifest)), manifest);
        // No temporary files are left beside the targets.
        let names: Vec<_> = fs::read_dir(root.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("wulf-agent")), "{names:?}");
    }

    #[test]
    fn a_link_to_a_directory_stays_and_types_may_change() {
        let root = tempfile::tempdir().unwrap();
        // A merged-/usr system: /lib is a link to usr/lib.
        fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
        let first = vec![
            entry("lib", 0o755, Kind::Directory),
            entry("lib/x.conf", 0o644, Kind::File(b"x".to_vec())),
            entry("etc", 0o755, Kind::Directory),
            entry("etc/thing", 0o755, Kind::Directory),
            entry("etc/thing/a", 0o644, Kind::File(b"a".to_vec())),
            // Listed twice (two segments): the last one counts.
            entry("etc/twice", 0o644, Kind::File(b"first".to_vec())),
            entry("etc/twice", 0o600, Kind::File(b"second".to_vec())),
        ];
        let (_, manifest) = apply(root.path(), &first, &BTreeSet::new()).unwrap();
        assert!(
            fs::symlink_metadata(root.path().join("lib"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(root.path().join("usr/lib/x.conf")).unwrap(), b"x");
        assert_eq!(fs::read(root.path().join("etc/twice")).unwrap(), b"second");
        // The directory becomes a file.
        let second = vec![
            entry("etc", 0o755, Kind::Directory),
            entry("etc/thing", 0o644, Kind::File(b"now a file".to_vec())),
        ];
        let (done, _) = apply(root.path(), &second, &manifest).unwrap();
        assert_eq!(
            fs::read(root.path().join("etc/thing")).unwrap(),
            b"now a file"
        );
        assert!(done.removed.contains(&"etc/thing/a".to_owned()), "{done:?}");
    }

    #[test]
    fn a_mode_change_alone_is_applied() {
        let root = tempfile::tempdir().unwrap();
        let a = vec![entry("key", 0o644, Kind::File(b"k".to_vec()))];
        let (_, manifest) = apply(root.path(), &a, &BTreeSet::new()).unwrap();
        let b = vec![entry("key", 0o600, Kind::File(b"k".to_vec()))];
        let (done, _) = apply(root.path(), &b, &manifest).unwrap();
        assert_eq!(done.written, ["key"]);
        let mode = fs::metadata(root.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
    }
}
