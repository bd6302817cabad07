//! Reading an overlay archive as the kernel does: gzip members, each a newc cpio ending in
//! `TRAILER!!!`, one after another.

use std::io::{self, Read};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
}

/// One entry: its path relative to `/`, permission bits, owner and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: Kind,
}

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// No overlay file is this large; a header claiming more is corrupt.
const MAX_FILE: usize = 1 << 30;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Every entry of a compressed archive, in order (a path may come twice: the later entry is
/// the one that counts, as when the kernel unpacks them).
pub fn read_archive(compressed: &[u8]) -> io::Result<Vec<Entry>> {
    let mut data = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed).read_to_end(&mut data)?;
    read_newc(&data)
}

/// The entries of concatenated newc archives.
pub fn read_newc(data: &[u8]) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        // Padding between archives.
        while at < data.len() && data[at] == 0 {
            at += 1;
        }
        if at >= data.len() {
            return Ok(entries);
        }
        if at % 4 != 0 {
            return Err(invalid(format!(
                "a cpio header at byte {at} is not 4-aligned"
            )));
        }
        let header = data
            .get(at..at + 110)
            .ok_or_else(|| invalid(format!("a truncated cpio header at byte {at}")))?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(invalid(format!("no newc cpio magic at byte {at}")));
        }
        let field = |i: usize| -> io::Result<u32> {
            let hex = std::str::from_utf8(&header[6 + i * 8..6 + i * 8 + 8])
                .map_err(|_| invalid("a non-ASCII cpio header".into()))?;
            u32::from_str_radix(hex, 16).map_err(|_| invalid(format!("bad cpio field {hex:?}")))
        };
        let (mode, uid, gid) = (field(1)?, field(2)?, field(3)?);
        let size = field(6)? as usize;
        let name_size = field(11)? as usize;
        if size > MAX_FILE || name_size == 0 || name_size > 4096 {
            return Err(invalid(format!("an implausible cpio entry at byte {at}")));
        }
        let name_at = at + 110;
        let raw_name = data
            .get(name_at..name_at + name_size - 1)
            .ok_or_else(|| invalid("a truncated cpio name".into()))?;
        let name = std::str::from_utf8(raw_name)
            .map_err(|_| invalid("a non-UTF-8 path in the archive".into()))?
            .to_owned();
        let data_at = (name_at + name_size + 3) & !3;
        let content = data
            .get(data_at..data_at + size)
            .ok_or_else(|| invalid(format!("{name}: truncated content")))?;
        at = (data_at + size + 3) & !3;
        if name == "TRAILER!!!" {
            continue;
        }
        let path = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        if path.is_empty() || path == "." {
            continue;
        }
        if path
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(invalid(format!("{name:?} is not a plain path")));
        }
        let kind = match mode & S_IFMT {
            S_IFDIR => Kind::Directory,
            S_IFREG => Kind::File(content.to_vec()),
            S_IFLNK => Kind::Symlink(
                String::from_utf8(content.to_vec())
                    .map_err(|_| invalid(format!("{name}: a non-UTF-8 link target")))?,
            ),
            other => {
                return Err(invalid(format!(
                    "{name}: file type {other:o} has no place in an overlay"
                )));
            }
        };
        entries.push(Entry {
            path,
            mode: mode & 0o7777,
            uid,
            gid,
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A newc archive of `entries` (path, mode with type, content).
    pub(crate) fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &str, mode: u32, content: &[u8]| {
            let header = format!(
                "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1,
                0,
                0,
                1,
                0,
                content.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(content);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (name, mode, content) in entries {
            push(name, *mode, content);
        }
        push("TRAILER!!!", 0, b"");
        out
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn reads_concatenated_members() {
        let mut archive = gzip(&newc(&[
            ("etc", 0o040755, b""),
            ("etc/hosts", 0o100644, b"x\n"),
        ]));
        archive.extend(gzip(&newc(&[
            ("etc/motd", 0o100600, b"hi"),
            ("etc/link", 0o120777, b"motd"),
        ])));
        let entries = read_archive(&archive).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["etc", "etc/hosts", "etc/motd", "etc/link"]);
        assert_eq!(entries[1].kind, Kind::File(b"x\n".to_vec()));
        assert_eq!(entries[2].mode, 0o600);
        assert_eq!(entries[3].kind, Kind::Symlink("motd".into()));
    }

    #[test]
    fn refuses_what_does_not_belong_in_an_overlay() {
        for (name, mode) in [("etc/../../x", 0o100644), ("dev/sda", 0o060644)] {
            let err = read_newc(&newc(&[(name, mode, b"")])).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}: {err}");
        }
        assert!(read_newc(b"garbage").is_err());
    }
}
