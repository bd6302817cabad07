//! Unpacking an initramfs into a directory as the kernel unpacks it into its root: newc cpio
//! archives one after another (gzip, zstd or plain), later entries replacing earlier ones,
//! hard links by inode, owners, modes and file times kept, directory times set last.
//!
//! Paths resolve inside the target as if it were `/` (`openat2` with `RESOLVE_IN_ROOT`): an
//! image's absolute symlinks (`/lib -> /usr/lib`) lead where they will on the node, and no
//! entry can write outside the target.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

/// What was unpacked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries left out (a path leaving the root, an unsupported type).
    pub skipped: u64,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

const GZIP: [u8; 2] = [0x1f, 0x8b];
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const NEWC: &[u8; 6] = b"070701";
const NEWC_CRC: &[u8; 6] = b"070702";

/// Decompressed frames of zstd, one after another (`ruzstd` reads one frame at a time).
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another may follow.
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let mut source = decoder.into_inner();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.decoder = Some(
                ruzstd::decoding::StreamingDecoder::new(source)
                    .map_err(|e| invalid(format!("zstd: {e}")))?,
            );
        }
    }
}

/// The archive `reader` carries, decompressed by its first bytes (gzip, zstd or none).
pub fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader.fill_buf()?;
    if head.starts_with(&GZIP) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&ZSTD) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| invalid(format!("zstd: {e}")))?;
        Ok(Box::new(ZstdFrames {
            decoder: Some(decoder),
        }))
    } else if head.starts_with(&NEWC[..5]) || head.is_empty() {
        Ok(Box::new(reader))
    } else {
        Err(invalid(format!(
            "not a gzip, zstd or cpio archive (it starts with {:02x?})",
            &head[..head.len().min(6)]
        )))
    }
}

/// Unpacks the (compressed) archives `reader` carries into `root`.
pub fn unpack(reader: impl Read, root: &Path) -> io::Result<Stats> {
    let mut unpacker = Unpacker::new(root)?;
    let mut reader = Counting {
        inner: decompressed(reader)?,
        at: 0,
    };
    unpacker.archives(&mut reader)?;
    unpacker.finish();
    Ok(unpacker.stats)
}

struct Counting<R> {
    inner: R,
    at: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl<R: Read> Counting<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut *self).take(n), &mut io::sink())?;
        if copied == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Skips to the next multiple of 4.
    fn align(&mut self) -> io::Result<()> {
        self.skip((4 - self.at % 4) % 4)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    dev: (u32, u32),
    rdev: (u32, u32),
    namesize: u32,
}

fn parse_header(raw: &[u8; 110]) -> io::Result<Header> {
    if &raw[..6] != NEWC && &raw[..6] != NEWC_CRC {
        return Err(invalid(format!(
            "not a newc cpio header (magic {:?})",
            String::from_utf8_lossy(&raw[..6])
        )));
    }
    let field = |i: usize| -> io::Result<u32> {
        let hex = &raw[6 + i * 8..6 + (i + 1) * 8];
        std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "a bad cpio header field {:?}",
                    String::from_utf8_lossy(hex)
                ))
            })
    };
    Ok(Header {
        ino: field(0)?,
        mode: field(1)?,
        uid: field(2)?,
        gid: field(3)?,
        nlink: field(4)?,
        mtime: field(5)?,
        size: field(6)?,
        dev: (field(7)?, field(8)?),
        rdev: (field(9)?, field(10)?),
        namesize: field(11)?,
    })
}

/// A path inside the root, without `.`, empty or `..` components; `None` for one that climbs.
fn clean(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

const S_IFMT: u32 = 0o170_000;

struct Unpacker {
    root: OwnedFd,
    /// The first path of each (device, inode) with more than one link.
    links: HashMap<(u32, u32, u32), String>,
    /// Directories and their times, set once everything is in (files created in a directory
    /// change its time).
    dirs: Vec<(String, u32)>,
    /// The last parent directory opened.
    parent: Option<(String, Rc<OwnedFd>)>,
    /// Only root may give files away; anyone else unpacks them as their own.
    chown: bool,
    stats: Stats,
}

impl Unpacker {
    fn new(root: &Path) -> io::Result<Unpacker> {
        let root = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        Ok(Unpacker {
            root,
            links: HashMap::new(),
            dirs: Vec::new(),
            parent: None,
            chown: rustix::process::geteuid().is_root(),
            stats: Stats::default(),
        })
    }

    /// Every archive of the stream, to its end.
    fn archives<R: Read>(&mut self, reader: &mut Counting<R>) -> io::Result<()> {
        loop {
            let mut raw = [0u8; 110];
            // Zero padding may sit between archives.
            let mut first = [0u8; 1];
            loop {
                if reader.read(&mut first)? == 0 {
                    return Ok(());
                }
                if first[0] != 0 {
                    break;
                }
            }
            raw[0] = first[0];
            reader.read_exact(&mut raw[1..]).map_err(|e| {
                invalid(format!(
                    "a cpio header cut short at byte {}: {e}",
                    reader.at
                ))
            })?;
            let header = parse_header(&raw)?;
            let mut name = vec![0u8; header.namesize as usize];
            reader.read_exact(&mut name)?;
            reader.align()?;
            let name =
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(&name)).into_owned();
            if name == "TRAILER!!!" {
                reader.skip(u64::from(header.size))?;
                reader.align()?;
                // Hard links do not reach across archives.
                self.links.clear();
                continue;
            }
            self.entry(&header, &name, reader)
                .map_err(|e| io::Error::new(e.kind(), format!("/{name}: {e}")))?;
            reader.align()?;
        }
    }

    fn entry<R: Read>(&mut self, h: &Header, name: &str, data: &mut Counting<R>) -> io::Result<()> {
        self.stats.entries += 1;
        let Some(path) = clean(name).filter(|p| !p.is_empty()) else {
            if clean(name).is_none() {
                self.stats.skipped += 1;
            }
            return data.skip(u64::from(h.size));
        };
        let file_type = h.mode & S_IFMT;
        let mode = Mode::from_raw_mode(h.mode & 0o7777);
        if file_type != FileType::RegularFile.as_raw_mode() {
            self.parent = None;
        }
        let (dir_path, base) = match path.rsplit_once('/') {
            Some((dir, base)) => (dir.to_owned(), base.to_owned()),
            None => (String::new(), path.clone()),
        };
        let parent = self.parent_dir(&dir_path)?;
        let owner = (
            Some(rustix::fs::Uid::from_raw(h.uid)),
            Some(rustix::fs::Gid::from_raw(h.gid)),
        );
        let mtime = times(h.mtime);
        match FileType::from_raw_mode(h.mode) {
            FileType::Directory => {
                replace(&parent, &base, true)?;
                match rustix::fs::mkdirat(&parent, base.as_str(), mode) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                self.set_owner(&parent, &base, owner)?;
                rustix::fs::chmodat(&parent, base.as_str(), mode, AtFlags::empty())?;
                self.dirs.push((path, h.mtime));
                data.skip(u64::from(h.size))
            }
            FileType::RegularFile => {
                let key = (h.dev.0, h.dev.1, h.ino);
                if h.nlink >= 2 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        replace(&parent, &base, false)?;
                        let (first_dir, first_base) = match first.rsplit_once('/') {
                            Some((d, b)) => (d.to_owned(), b.to_owned()),
                            None => (String::new(), first.clone()),
                        };
                        let first_parent = self.open_dir(&first_dir)?;
                        rustix::fs::linkat(
                            &first_parent,
                            first_base.as_str(),
                            &parent,
                            base.as_str(),
                            AtFlags::empty(),
                        )?;
                        return data.skip(u64::from(h.size));
                    }
                    self.links.insert(key, path.clone());
                }
                replace(&parent, &base, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    base.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::TRUNC
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut file = std::fs::File::from(fd);
                let copied = io::copy(&mut (&mut *data).take(u64::from(h.size)), &mut file)?;
                if copied != u64::from(h.size) {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                file.flush()?;
                self.stats.bytes += copied;
                if self.chown {
                    rustix::fs::fchown(&file, owner.0, owner.1)?;
                }
                // After chown, which clears set-user-ID bits.
                rustix::fs::fchmod(&file, mode)?;
                rustix::fs::futimens(&file, &mtime)?;
                Ok(())
            }
            FileType::Symlink => {
                let mut target = Vec::with_capacity(h.size as usize);
                (&mut *data)
                    .take(u64::from(h.size))
                    .read_to_end(&mut target)?;
                replace(&parent, &base, false)?;
                let target = String::from_utf8_lossy(&target).into_owned();
                rustix::fs::symlinkat(target.as_str(), &parent, base.as_str())?;
                self.set_owner(&parent, &base, owner)?;
                rustix::fs::utimensat(&parent, base.as_str(), &mtime, AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            kind @ (FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket) => {
                replace(&parent, &base, false)?;
                let dev = rustix::fs::makedev(h.rdev.0, h.rdev.1);
                match rustix::fs::mknodat(&parent, base.as_str(), kind, mode, dev) {
                    Ok(()) => {}
                    // Device nodes need root; the node's devtmpfs has them anyway.
                    Err(rustix::io::Errno::PERM) if !self.chown => {
                        self.stats.skipped += 1;
                        return data.skip(u64::from(h.size));
                    }
                    Err(e) => return Err(e.into()),
                }
                self.set_owner(&parent, &base, owner)?;
                rustix::fs::chmodat(&parent, base.as_str(), mode, AtFlags::empty())?;
                data.skip(u64::from(h.size))
            }
            FileType::Unknown => {
                self.stats.skipped += 1;
                data.skip(u64::from(h.size))
            }
        }
    }

    /// Gives `base` in `parent` the entry's owner (not following a symlink), when root.
    fn set_owner(
        &self,
        parent: &OwnedFd,
        base: &str,
        (uid, gid): (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>),
    ) -> io::Result<()> {
        if self.chown {
            rustix::fs::chownat(parent, base, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    /// The directory `dir` (relative to the root, resolved inside it), made when missing.
    fn open_dir(&self, dir: &str) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let path = if dir.is_empty() { "." } else { dir };
        match rustix::fs::openat2(&self.root, path, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        // Make it one level at a time, each resolved inside the root.
        let mut made = String::new();
        for part in dir.split('/') {
            if !made.is_empty() {
                made.push('/');
            }
            made.push_str(part);
            match rustix::fs::mkdirat(&self.root, made.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                // A symlinked parent: make the level through openat2 of its parent.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
                    let (up, base) = made.rsplit_once('/').unwrap_or(("", made.as_str()));
                    let up = rustix::fs::openat2(
                        &self.root,
                        if up.is_empty() { "." } else { up },
                        flags,
                        Mode::empty(),
                        resolve,
                    )?;
                    match rustix::fs::mkdirat(&up, base, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(rustix::fs::openat2(
            &self.root,
            path,
            flags,
            Mode::empty(),
            resolve,
        )?)
    }

    /// [`Unpacker::open_dir`], kept for the entries that follow in the same directory.
    fn parent_dir(&mut self, dir: &str) -> io::Result<Rc<OwnedFd>> {
        if let Some((cached, fd)) = &self.parent
            && cached == dir
        {
            return Ok(Rc::clone(fd));
        }
        let fd = Rc::new(self.open_dir(dir)?);
        self.parent = Some((dir.to_owned(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Directory times, last (deepest first, so a parent's time is not changed after).
    fn finish(&mut self) {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mtime) in std::mem::take(&mut self.dirs) {
            let fd = rustix::fs::openat2(
                &self.root,
                path.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            );
            if let Ok(fd) = fd {
                let _ = rustix::fs::futimens(&fd, &times(mtime));
            }
        }
    }
}

/// An entry's time as both access and modification time.
fn times(mtime: u32) -> Timestamps {
    let time = Timespec {
        tv_sec: i64::from(mtime),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// Clears the way for a new entry `name` in `parent`, as the kernel does: what is there goes
/// unless both are directories (a non-empty directory stays, and the new entry fails on it).
fn replace(parent: &OwnedFd, name: &str, is_dir: bool) -> io::Result<()> {
    let existing = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match (existing, is_dir) {
        (FileType::Directory, true) => Ok(()),
        (FileType::Directory, false) => {
            let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
            Ok(())
        }
        _ => match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

#[cfg(test)]
mod tests;
