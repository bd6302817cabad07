//! Builders for the files a plugin returns.

use crate::{FileContent, FileEntry};

/// A file, directory or symlink to return from a plugin, built fluently and converted into a
/// [`FileEntry`] with `.into()`.
///
/// ```
/// use wulf_sdk::{File, FileEntry};
/// let motd: FileEntry = File::text("/etc/motd", "welcome\n").into();
/// let key: FileEntry = File::bytes("/etc/ssh/key", vec![1, 2]).mode(0o600).into();
/// let link: FileEntry = File::symlink("/etc/localtime", "/usr/share/zoneinfo/UTC").into();
/// assert_eq!(key.mode, 0o600);
/// # let _ = (motd, link);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    entry: FileEntry,
}

impl File {
    /// A regular file with text content, mode `0644`, owned by root.
    pub fn text(path: impl Into<String>, content: impl Into<String>) -> Self {
        Self::bytes(path, content.into().into_bytes())
    }

    /// A regular file with binary content, mode `0644`, owned by root.
    pub fn bytes(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Self::new(path.into(), 0o644, FileContent::Regular(content.into()))
    }

    /// A directory, mode `0755`, owned by root.
    pub fn dir(path: impl Into<String>) -> Self {
        Self::new(path.into(), 0o755, FileContent::Directory)
    }

    /// A symbolic link at `path` pointing to `target`, mode `0777`.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path.into(), 0o777, FileContent::Symlink(target.into()))
    }

    fn new(path: String, mode: u32, content: FileContent) -> Self {
        File {
            entry: FileEntry {
                path,
                mode,
                uid: 0,
                gid: 0,
                content,
            },
        }
    }

    /// Sets the permission bits (`0o600`, `0o755`, ...).
    pub fn mode(mut self, mode: u32) -> Self {
        self.entry.mode = mode;
        self
    }

    /// Sets the owner and group ids.
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.entry.uid = uid;
        self.entry.gid = gid;
        self
    }

    /// The finished entry.
    pub fn build(self) -> FileEntry {
        self.entry
    }
}

impl From<File> for FileEntry {
    fn from(file: File) -> Self {
        file.entry
    }
}

impl FileEntry {
    /// The content as text, for regular files that hold UTF-8.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            FileContent::Regular(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_kind_mode_and_owner() {
        let f: FileEntry = File::text("/etc/hostname", "n1\n").owner(5, 6).into();
        assert_eq!(
            (f.mode, f.uid, f.gid, f.text()),
            (0o644, 5, 6, Some("n1\n"))
        );
        let d = File::dir("/var/empty").mode(0o700).build();
        assert_eq!((d.mode, d.content), (0o700, FileContent::Directory));
        let l = File::symlink("/a", "b").build();
        assert_eq!(l.content, FileContent::Symlink("b".into()));
        assert_eq!(l.text(), None);
    }
}
