//! Site overlays: one directory tree per overlay under `<state>/overlays/<name>/`. Files
//! ending in `.ww` are templates; everything else is copied with its mode and owner.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{OverlayError, Result};

/// One file of an overlay tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Absolute inside the node, without `.ww` for templates.
    pub path: String,
    /// Relative to the overlay directory, as stored.
    pub source: String,
    pub kind: SourceKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Directory,
    File(Vec<u8>),
    Template(String),
    Symlink(String),
}

/// The overlay directory of a state directory.
#[derive(Debug, Clone)]
pub struct OverlayStore {
    dir: PathBuf,
}

/// Overlay names: letters, digits, `_`, `-`, `.`; not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OverlayError::BadName {
            name: name.to_owned(),
        })
    }
}

impl OverlayStore {
    pub fn new(state: &wulf_core::StateDir) -> Self {
        OverlayStore {
            dir: state.root().join("overlays"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.path(name).is_dir()
    }

    /// Site overlay names, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(OverlayError::io(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| OverlayError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && validate_name(&name).is_ok() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolves a path inside an overlay (absolute or relative, no `..`).
    pub fn file_path(&self, overlay: &str, path: &str) -> Result<PathBuf> {
        validate_name(overlay)?;
        let clean: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if clean.contains(&"..") || clean.is_empty() {
            return Err(OverlayError::BadPath {
                path: path.to_owned(),
            });
        }
        Ok(self.path(overlay).join(clean.join("/")))
    }

    /// Every file of an overlay, sorted by path.
    pub fn files(&self, name: &str) -> Result<Vec<SourceFile>> {
        let root = self.path(name);
        if !root.is_dir() {
            return Err(OverlayError::NotFound(name.to_owned()));
        }
        let mut out = Vec::new();
        walk(&root, &root, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| OverlayError::io(dir, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| OverlayError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = fs::symlink_metadata(&path).map_err(|e| OverlayError::io(&path, e))?;
        let ft = meta.file_type();
        let (target, kind) = if ft.is_dir() {
            (format!("/{rel}"), SourceKind::Directory)
        } else if ft.is_symlink() {
            let link = fs::read_link(&path).map_err(|e| OverlayError::io(&path, e))?;
            (
                format!("/{rel}"),
                SourceKind::Symlink(link.to_string_lossy().into_owned()),
            )
        } else if ft.is_file() {
            let bytes = fs::read(&path).map_err(|e| OverlayError::io(&path, e))?;
            match rel.strip_suffix(".ww") {
                Some(stem) => {
                    let text = String::from_utf8(bytes).map_err(|_| OverlayError::NotUtf8 {
                        path: path.to_path_buf(),
                    })?;
                    (format!("/{stem}"), SourceKind::Template(text))
                }
                None => (format!("/{rel}"), SourceKind::File(bytes)),
            }
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file in an overlay");
            continue;
        };
        out.push(SourceFile {
            path: target,
            source: rel,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if ft.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// A hash of everything in an overlay that can change its output.
pub fn hash_files(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.source.as_bytes());
        h.update([0]);
        h.update(format!("{:o}:{}:{}", f.mode, f.uid, f.gid).as_bytes());
        match &f.kind {
            SourceKind::Directory => h.update(b"d"),
            SourceKind::File(b) => {
                h.update(b"f");
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
            SourceKind::Template(t) => {
                h.update(b"t");
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            SourceKind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
            }
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}
