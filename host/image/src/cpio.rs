//! A writer for the `newc` cpio format, the one the kernel unpacks into its initramfs.
//!
//! Each entry is a 110-byte ASCII header, the NUL-terminated name padded to four bytes, then
//! the data padded to four bytes. Inodes are renumbered from 1 so that the same tree always
//! gives the same bytes; hard links share an inode and the data travels with the first link
//! (both the kernel and GNU cpio link later, empty entries to it).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use wulf_core::extension::EntryKind;

/// File-type bits of `st_mode`.
pub mod mode {
    pub const REGULAR: u32 = 0o100000;
    pub const DIRECTORY: u32 = 0o040000;
    pub const SYMLINK: u32 = 0o120000;
    pub const CHAR_DEVICE: u32 = 0o020000;
    pub const BLOCK_DEVICE: u32 = 0o060000;
    pub const FIFO: u32 = 0o010000;
    pub const SOCKET: u32 = 0o140000;
    pub const PERMISSIONS: u32 = 0o7777;
}

/// The metadata of one entry, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Relative to the archive root, without a leading `/`.
    pub path: &'a str,
    pub kind: &'a EntryKind,
    /// Permission bits only (`0o7777`); the type comes from `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl<'a> Entry<'a> {
    /// An entry owned by root, with time 0 (what wulf's own archives hold).
    pub fn root(path: &'a str, kind: &'a EntryKind, mode: u32) -> Self {
        Entry {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}

/// A newc archive being written to `out`.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    /// Hard-link targets already written, by path, with their inode and link count.
    links: HashMap<String, (u32, u32)>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
            links: HashMap::new(),
        }
    }

    /// Bytes written so far (uncompressed).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Declares that `path` has `nlink` names, so its header carries the right link count and
    /// its inode is kept for the hard links that follow. Call before appending `path`.
    pub fn expect_links(&mut self, path: &str, nlink: u32) {
        self.links.insert(path.to_owned(), (0, nlink));
    }

    /// Appends an entry whose data (for regular files) is `size` bytes read from `data`.
    pub fn append(&mut self, entry: &Entry<'_>, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let perms = entry.mode & mode::PERMISSIONS;
        let (file_type, body, rdev): (u32, Body<'_>, (u32, u32)) = match entry.kind {
            EntryKind::Regular => (mode::REGULAR, Body::Reader(size), (0, 0)),
            EntryKind::Directory => (mode::DIRECTORY, Body::Bytes(b""), (0, 0)),
            EntryKind::Symlink(target) => (mode::SYMLINK, Body::Bytes(target.as_bytes()), (0, 0)),
            EntryKind::CharDevice { major, minor } => {
                (mode::CHAR_DEVICE, Body::Bytes(b""), (*major, *minor))
            }
            EntryKind::BlockDevice { major, minor } => {
                (mode::BLOCK_DEVICE, Body::Bytes(b""), (*major, *minor))
            }
            EntryKind::Fifo => (mode::FIFO, Body::Bytes(b""), (0, 0)),
            EntryKind::Socket => (mode::SOCKET, Body::Bytes(b""), (0, 0)),
            EntryKind::Hardlink(target) => {
                let Some(&(ino, nlink)) = self.links.get(target.as_str()).filter(|l| l.0 != 0)
                else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "hard link {} points to {target}, which is not in the archive before it",
                            entry.path
                        ),
                    ));
                };
                let header = Header {
                    ino,
                    mode: mode::REGULAR | perms,
                    uid: entry.uid,
                    gid: entry.gid,
                    nlink,
                    mtime: entry.mtime,
                    size: 0,
                    rdev: (0, 0),
                };
                return self.write_entry(entry.path, &header, Body::Bytes(b""), data);
            }
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut nlink = if file_type == mode::DIRECTORY { 2 } else { 1 };
        if let Some(link) = self.links.get_mut(entry.path) {
            link.0 = ino;
            nlink = link.1;
        }
        let size = match body {
            Body::Reader(size) => size,
            Body::Bytes(bytes) => bytes.len() as u64,
        };
        let header = Header {
            ino,
            mode: file_type | perms,
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime: entry.mtime,
            size,
            rdev,
        };
        self.write_entry(entry.path, &header, body, data)
    }

    /// Appends a regular file held in memory.
    pub fn append_bytes(&mut self, entry: &Entry<'_>, bytes: &[u8]) -> io::Result<()> {
        self.append(entry, bytes.len() as u64, &mut &bytes[..])
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let header = Header {
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        };
        self.write_entry("TRAILER!!!", &header, Body::Bytes(b""), &mut io::empty())?;
        Ok(self.out)
    }

    fn write_entry(
        &mut self,
        path: &str,
        header: &Header,
        body: Body<'_>,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        if header.size > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is larger than 4 GiB, the limit of the newc format"),
            ));
        }
        let mtime = u32::try_from(header.mtime).unwrap_or(u32::MAX);
        let name_size = path.len() + 1;
        let mut head = Vec::with_capacity(110 + name_size + 3);
        head.extend_from_slice(b"070701");
        for field in [
            header.ino,
            header.mode,
            header.uid,
            header.gid,
            header.nlink,
            mtime,
            header.size as u32,
            0,
            0,
            header.rdev.0,
            header.rdev.1,
            name_size as u32,
            0,
        ] {
            write_hex(&mut head, field);
        }
        head.extend_from_slice(path.as_bytes());
        head.push(0);
        head.resize(head.len() + pad4(head.len() as u64), 0);
        self.out.write_all(&head)?;
        self.written += head.len() as u64;

        match body {
            Body::Bytes(bytes) => self.out.write_all(bytes)?,
            Body::Reader(size) => {
                let copied = io::copy(&mut data.take(size), &mut self.out)?;
                if copied != size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{path}: expected {size} bytes of data, got {copied}"),
                    ));
                }
            }
        }
        let padding = pad4(header.size);
        self.out.write_all(&[0; 3][..padding])?;
        self.written += header.size + padding as u64;
        Ok(())
    }
}

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u64,
    size: u64,
    rdev: (u32, u32),
}

enum Body<'a> {
    Bytes(&'a [u8]),
    Reader(u64),
}

fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

fn write_hex(out: &mut Vec<u8>, value: u32) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        out.push(DIGITS[((value >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str, kind: &'a EntryKind, mode: u32) -> Entry<'a> {
        Entry::root(path, kind, mode)
    }

    #[test]
    fn headers_names_and_data_are_padded_to_four_bytes() {
        let mut w = CpioWriter::new(Vec::new());
        w.append_bytes(&entry("a", &EntryKind::Regular, 0o644), b"hello")
            .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        // 110 + "a\0" = 112, already aligned; then 5 data bytes + 3 padding.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..117], b"hello");
        assert_eq!(&out[117..120], &[0, 0, 0]);
        assert_eq!(&out[120..126], b"070701");
        assert_eq!(out.len() % 4, 0);
        // ino 1, mode 0o100644, nlink 1, size 5.
        assert_eq!(&out[6..14], b"00000001");
        assert_eq!(&out[14..22], b"000081A4");
        assert_eq!(&out[38..46], b"00000001");
        assert_eq!(&out[54..62], b"00000005");
    }

    #[test]
    fn hard_links_share_the_inode_and_carry_no_data() {
        let mut w = CpioWriter::new(Vec::new());
        w.expect_links("bin/a", 2);
        w.append_bytes(&entry("bin/a", &EntryKind::Regular, 0o755), b"x")
            .unwrap();
        let link = EntryKind::Hardlink("bin/a".into());
        w.append_bytes(&entry("bin/b", &link, 0o755), b"").unwrap();
        let out = w.finish().unwrap();
        let second = 110 + 6 + 4; // header, "bin/a\0" (116 is aligned), data padded to 4
        assert_eq!(&out[second + 6..second + 14], b"00000001", "same inode");
        assert_eq!(&out[second + 38..second + 46], b"00000002", "nlink");
        assert_eq!(&out[second + 54..second + 62], b"00000000", "no data");
    }

    #[test]
    fn a_hard_link_to_nothing_is_refused() {
        let mut w = CpioWriter::new(Vec::new());
        let link = EntryKind::Hardlink("missing".into());
        let err = w.append_bytes(&entry("b", &link, 0o644), b"").unwrap_err();
        assert!(err.to_string().contains("points to missing"), "{err}");
    }
}
