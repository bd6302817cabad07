//! An imported image's root filesystem, kept as one flattened, sorted, uncompressed tar.
//!
//! A tar keeps what a plain directory would lose without root: owners, device nodes, setuid
//! bits and hard links are entries, not filesystem state. Entries are sorted with parents
//! before children ([`sort_key`]), so reading it front to back is already the order an
//! initramfs needs, and the same tree always gives the same bytes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use wulf_core::extension::{EntryKind, ImageEntry};

use crate::error::{EntryError, ImageError, Result};

/// The order of entries: component by component, so `a/b` comes right after `a` and before
/// `a-b` (a `/` sorts before every other byte).
pub fn sort_key(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

/// The parent directory of a relative path (`""` for top-level entries).
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// Normalizes a path from an archive: no leading `/` or `./`, no trailing `/`, no `.`
/// components. `None` for the root itself; an error for `..` anywhere.
pub fn normalize(raw: &str) -> std::result::Result<Option<String>, EntryError> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(EntryError::DotDot {
                    path: raw.to_owned(),
                });
            }
            other => parts.push(other),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// An entry of a tar file and where its data starts.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// `path` is relative and normalized.
    pub entry: ImageEntry,
    pub data_offset: u64,
}

/// Converts a tar header to an entry. `Ok(None)` for the root directory and for headers that
/// carry no file (PAX globals).
pub fn entry_from_tar<R: Read>(
    e: &tar::Entry<'_, R>,
) -> std::result::Result<Option<TarEntry>, EntryError> {
    let raw_path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
    let header = e.header();
    let link = || {
        e.link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| EntryError::NoLinkTarget {
                path: raw_path.clone(),
            })
    };
    let bad_header = |field: &'static str| {
        let path = raw_path.clone();
        move |source: io::Error| EntryError::BadHeader {
            path,
            field,
            source,
        }
    };
    let device = |kind: fn(u32, u32) -> EntryKind| -> std::result::Result<EntryKind, EntryError> {
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        Ok(kind(major, minor))
    };
    use tar::EntryType as T;
    let kind = match header.entry_type() {
        T::Regular | T::Continuous => EntryKind::Regular,
        T::Directory => EntryKind::Directory,
        T::Symlink => EntryKind::Symlink(link()?),
        T::Link => EntryKind::Hardlink(link()?),
        T::Char => device(|major, minor| EntryKind::CharDevice { major, minor })?,
        T::Block => device(|major, minor| EntryKind::BlockDevice { major, minor })?,
        T::Fifo => EntryKind::Fifo,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(None),
        T::GNUSparse => return Err(EntryError::Sparse { path: raw_path }),
        kind => {
            return Err(EntryError::UnsupportedType {
                path: raw_path,
                kind,
            });
        }
    };
    let Some(path) = normalize(&raw_path)? else {
        return Ok(None);
    };
    let size = if kind == EntryKind::Regular {
        e.size()
    } else {
        0
    };
    let entry = ImageEntry {
        path,
        kind,
        mode: header.mode().map_err(bad_header("mode"))? & 0o7777,
        uid: header.uid().map_err(bad_header("uid"))? as u32,
        gid: header.gid().map_err(bad_header("gid"))? as u32,
        mtime: header.mtime().unwrap_or(0),
        size,
    };
    Ok(Some(TarEntry {
        entry,
        data_offset: e.raw_file_position(),
    }))
}

/// Every entry of a tar file, reading headers only (data is skipped with seeks).
pub fn scan(path: &Path) -> Result<Vec<TarEntry>> {
    let file = File::open(path).map_err(ImageError::at(path))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(64 * 1024, file));
    let mut out = Vec::new();
    let entries = archive.entries_with_seek().map_err(ImageError::at(path))?;
    for e in entries {
        let e = e.map_err(ImageError::at(path))?;
        match entry_from_tar(&e) {
            Ok(Some(entry)) => out.push(entry),
            Ok(None) => {}
            Err(source) => {
                return Err(ImageError::BadEntry {
                    archive: path.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Access to the data of a tar file's entries. Reads in offset order stay buffered; anything
/// else seeks.
#[derive(Debug)]
pub struct DataReader {
    path: PathBuf,
    file: BufReader<File>,
    pos: u64,
}

impl DataReader {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(DataReader {
            path: path.to_owned(),
            file: BufReader::with_capacity(
                256 * 1024,
                File::open(path).map_err(ImageError::at(path))?,
            ),
            pos: 0,
        })
    }

    /// The tar file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of `size` bytes at `offset`; the caller reads all of it.
    pub fn at(&mut self, offset: u64, size: u64) -> Result<io::Take<&mut BufReader<File>>> {
        if offset != self.pos {
            let delta = offset as i64 - self.pos as i64;
            self.file
                .seek_relative(delta)
                .map_err(ImageError::at(&self.path))?;
        }
        self.pos = offset + size;
        Ok((&mut self.file).take(size))
    }

    pub fn read(&mut self, offset: u64, size: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size as usize);
        let path = self.path.clone();
        let n = self
            .at(offset, size)?
            .read_to_end(&mut out)
            .map_err(ImageError::at(&path))?;
        if n as u64 != size {
            return Err(ImageError::Truncated {
                what: format!("{} at offset {offset}", path.display()),
                expected: size,
                got: n as u64,
            });
        }
        Ok(out)
    }
}

/// Writes a rootfs tar. Entries must come in [`sort_key`] order, parents first.
pub struct RootfsWriter {
    path: PathBuf,
    builder: tar::Builder<BufWriter<File>>,
    pub entries: u64,
    pub bytes: u64,
}

impl std::fmt::Debug for RootfsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootfsWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RootfsWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(ImageError::at(path))?;
        let mut builder = tar::Builder::new(BufWriter::with_capacity(256 * 1024, file));
        builder.follow_symlinks(false);
        Ok(RootfsWriter {
            path: path.to_owned(),
            builder,
            entries: 0,
            bytes: 0,
        })
    }

    pub fn append(&mut self, entry: &ImageEntry, data: &mut dyn Read) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(u64::from(entry.uid));
        header.set_gid(u64::from(entry.gid));
        header.set_mtime(entry.mtime);
        header.set_size(0);
        let io = ImageError::io(format!("{}: writing {}", self.path.display(), entry.path));
        let result = match &entry.kind {
            EntryKind::Regular => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.size);
                self.bytes += entry.size;
                self.builder.append_data(&mut header, &entry.path, data)
            }
            EntryKind::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                self.builder
                    .append_data(&mut header, &entry.path, io::empty())
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                self.builder.append_link(&mut header, &entry.path, target)
            }
            EntryKind::Hardlink(target) => {
                header.set_entry_type(tar::EntryType::Link);
                self.builder.append_link(&mut header, &entry.path, target)
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                header.set_entry_type(if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                header
                    .set_device_major(*major)
                    .map_err(ImageError::io(entry.path.clone()))?;
                header
                    .set_device_minor(*minor)
                    .map_err(ImageError::io(entry.path.clone()))?;
                self.builder
                    .append_data(&mut header, &entry.path, io::empty())
            }
            EntryKind::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                self.builder
                    .append_data(&mut header, &entry.path, io::empty())
            }
            // tar has no socket type, and a socket left in a tree is a stale leftover.
            EntryKind::Socket => return Ok(()),
        };
        result.map_err(io)?;
        self.entries += 1;
        Ok(())
    }

    /// Finishes the archive and fsyncs it.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let file = self
            .builder
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(ImageError::at(&path))?;
        file.sync_all().map_err(ImageError::at(&path))
    }
}

/// Copies `size` bytes from a reader into a writer, failing if fewer arrive.
pub fn copy_exact(from: &mut dyn Read, to: &mut dyn Write, size: u64, what: &str) -> Result<()> {
    let copied = io::copy(&mut from.take(size), to).map_err(ImageError::io(what.to_owned()))?;
    if copied != size {
        return Err(ImageError::Truncated {
            what: what.to_owned(),
            expected: size,
            got: copied,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_sort_before_their_children_and_siblings_after_subtrees() {
        let mut paths = vec!["a-b", "a/b/c", "a", "a/b", "b", "a.d", "a/c"];
        paths.sort_by_key(|p| sort_key(p));
        assert_eq!(paths, ["a", "a/b", "a/b/c", "a/c", "a-b", "a.d", "b"]);
    }

    #[test]
    fn normalize_strips_and_refuses_parent_components() {
        assert_eq!(normalize("./usr/bin/").unwrap().as_deref(), Some("usr/bin"));
        assert_eq!(
            normalize("/etc//passwd").unwrap().as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(normalize("./").unwrap(), None);
        assert!(
            normalize("usr/../../etc")
                .unwrap_err()
                .to_string()
                .contains("`..`")
        );
    }
}
