//! A chroot directory (or an Apptainer sandbox) -> a rootfs tar, as Warewulf imports them.
//! The walk stays on one filesystem and never follows symlinks.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use wulf_core::extension::{EntryKind, ImageEntry};

use crate::Progress;
use crate::error::{EntryError, ImageError, Result};
use crate::flatten::Flattened;
use crate::rootfs::{RootfsWriter, sort_key};

/// Writes the tree under `root` to the rootfs tar at `out`.
pub fn import_dir(root: &Path, out: &Path, progress: &dyn Progress) -> Result<Flattened> {
    let sh = root.join("bin/sh");
    if fs::symlink_metadata(&sh).is_err() {
        return Err(ImageError::NotAnImage {
            path: root.to_owned(),
            reason: "does not look like a root filesystem: it has no bin/sh",
        });
    }
    let device = fs::metadata(root).map_err(ImageError::at(root))?.dev();
    let mut writer = RootfsWriter::create(out)?;
    let mut walk = Walk {
        device,
        writer: &mut writer,
        links: HashMap::new(),
        progress,
    };
    progress.start("copying the directory", None);
    walk.dir(root, "")?;
    progress.finish();
    let flattened = Flattened {
        entries: writer.entries,
        bytes: writer.bytes,
    };
    writer.finish()?;
    Ok(flattened)
}

struct Walk<'a> {
    device: u64,
    writer: &'a mut RootfsWriter,
    /// (device, inode) of files with several names -> the first name written.
    links: HashMap<(u64, u64), String>,
    progress: &'a dyn Progress,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &str) -> Result<()> {
        let mut children = Vec::new();
        for child in fs::read_dir(dir).map_err(ImageError::at(dir))? {
            let child = child.map_err(ImageError::at(dir))?;
            let name = child
                .file_name()
                .into_string()
                .map_err(|name| ImageError::BadEntry {
                    archive: dir.display().to_string(),
                    source: EntryError::NotUtf8 { name },
                })?;
            children.push(name);
        }
        children.sort_by_key(|name| sort_key(name));
        for name in children {
            let path = dir.join(&name);
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(ImageError::at(&path))?;
            let ft = meta.file_type();
            let mut entry = ImageEntry {
                path: rel.clone(),
                kind: EntryKind::Regular,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: u64::try_from(meta.mtime()).unwrap_or(0),
                size: 0,
            };
            self.progress.advance(1);
            if ft.is_dir() {
                entry.kind = EntryKind::Directory;
                self.writer.append(&entry, &mut std::io::empty())?;
                if meta.dev() == self.device {
                    self.dir(&path, &rel)?;
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(ImageError::at(&path))?;
                entry.kind = EntryKind::Symlink(target.to_string_lossy().into_owned());
                self.writer.append(&entry, &mut std::io::empty())?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key) {
                        entry.kind = EntryKind::Hardlink(first.clone());
                        self.writer.append(&entry, &mut std::io::empty())?;
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                entry.size = meta.len();
                let mut file = File::open(&path).map_err(ImageError::at(&path))?;
                self.writer.append(&entry, &mut file)?;
            } else {
                let (major, minor) = split_rdev(meta.rdev());
                entry.kind = if ft.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else if ft.is_block_device() {
                    EntryKind::BlockDevice { major, minor }
                } else if ft.is_fifo() {
                    EntryKind::Fifo
                } else {
                    tracing::warn!(path = %path.display(), "skipping a socket");
                    continue;
                };
                self.writer.append(&entry, &mut std::io::empty())?;
            }
        }
        Ok(())
    }
}

/// glibc's `major()`/`minor()` encoding of `st_rdev`.
fn split_rdev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::split_rdev;

    #[test]
    fn rdev_splits_like_glibc() {
        // /dev/null is 1:3, /dev/sda1 8:1, a large minor 259:65536.
        assert_eq!(split_rdev(0x103), (1, 3));
        assert_eq!(split_rdev(0x801), (8, 1));
        // 65536 has no bits in the low byte of the minor.
        let big = (259u64 << 8) | ((65536u64 & !0xff) << 12);
        assert_eq!(split_rdev(big), (259, 65536));
    }
}
