//! Files produced for a node's overlay (by a template or a generator plugin), and the checks
//! every such file passes before the host packs it.

use std::fmt;

/// What an overlay file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Regular(Vec<u8>),
    Directory,
    Symlink(String),
}

/// One file of an overlay. `path` is absolute inside the node's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: FileContent,
}

impl OverlayFile {
    /// Bytes this file adds to an archive (content or link target).
    pub fn size(&self) -> u64 {
        match &self.content {
            FileContent::Regular(bytes) => bytes.len() as u64,
            FileContent::Directory => 0,
            FileContent::Symlink(target) => target.len() as u64,
        }
    }

    /// One line for listings: `path mode uid:gid size` and the kind.
    pub fn listing(&self) -> String {
        let kind = match &self.content {
            FileContent::Regular(_) => "file".to_string(),
            FileContent::Directory => "dir".to_string(),
            FileContent::Symlink(target) => format!("-> {target}"),
        };
        format!(
            "{} {:04o} {}:{} {} {kind}",
            self.path,
            self.mode,
            self.uid,
            self.gid,
            self.size()
        )
    }
}

/// Why a returned path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {path:?} is not absolute")]
    NotAbsolute { path: String },
    #[error("path {path:?} is empty or names the root")]
    Root { path: String },
    #[error("path {path:?} contains `..`")]
    ParentComponent { path: String },
    #[error("path {path:?} contains a NUL byte or backslash")]
    BadCharacter { path: String },
    #[error("mode {mode:#o} of {path:?} has bits beyond permissions, setuid, setgid and sticky")]
    BadMode { path: String, mode: u32 },
    #[error("path {path:?} is {len} bytes long; a node's kernel takes at most {PATH_MAX}")]
    TooLong { path: String, len: usize },
    #[error(
        "path {path:?} has a name of {len} bytes; a node's filesystem takes at most {NAME_MAX}"
    )]
    NameTooLong { path: String, len: usize },
    #[error(
        "the link target of {path:?} is {len} bytes long; a node's kernel takes at most {PATH_MAX}"
    )]
    TargetTooLong { path: String, len: usize },
}

/// The longest path a node's kernel resolves, in bytes (Linux's PATH_MAX less the NUL).
pub const PATH_MAX: usize = 4095;

/// The longest name in a path, in bytes (NAME_MAX of every Linux filesystem a node uses).
pub const NAME_MAX: usize = 255;

/// A path short enough to show in an error: the start of a long one, then its length.
fn shown(path: &str) -> String {
    const SHOWN: usize = 64;
    if path.len() <= SHOWN {
        return path.to_owned();
    }
    let mut end = SHOWN;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &path[..end])
}

/// Normalizes and checks an overlay path: absolute, no `..`, no NUL or backslash, not the root
/// itself, no longer than [`PATH_MAX`] with no name longer than [`NAME_MAX`]. Repeated slashes
/// and `.` components are folded. Returns the clean path.
pub fn clean_path(path: &str) -> Result<String, PathError> {
    let err_path = || shown(path);
    if path.contains('\0') || path.contains('\\') {
        return Err(PathError::BadCharacter { path: err_path() });
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute { path: err_path() });
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentComponent { path: err_path() }),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(PathError::Root { path: err_path() });
    }
    if let Some(long) = parts.iter().find(|p| p.len() > NAME_MAX) {
        return Err(PathError::NameTooLong {
            path: err_path(),
            len: long.len(),
        });
    }
    let clean = format!("/{}", parts.join("/"));
    if clean.len() > PATH_MAX {
        return Err(PathError::TooLong {
            path: err_path(),
            len: clean.len(),
        });
    }
    Ok(clean)
}

/// Checks one file: its path (see [`clean_path`]) and its mode (permission bits, setuid,
/// setgid and sticky only: the kind comes from the content, so device nodes cannot be made).
pub fn validate(file: &OverlayFile) -> Result<OverlayFile, PathError> {
    let path = clean_path(&file.path)?;
    if file.mode & !0o7777 != 0 {
        return Err(PathError::BadMode {
            path,
            mode: file.mode,
        });
    }
    if let FileContent::Symlink(target) = &file.content
        && target.len() > PATH_MAX
    {
        return Err(PathError::TargetTooLong {
            path,
            len: target.len(),
        });
    }
    Ok(OverlayFile {
        path,
        ..file.clone()
    })
}

impl fmt::Display for OverlayFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.listing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_fold_and_refuse_escapes() {
        assert_eq!(clean_path("//etc/./hosts"), Ok("/etc/hosts".to_string()));
        assert!(matches!(
            clean_path("etc/hosts"),
            Err(PathError::NotAbsolute { .. })
        ));
        assert!(matches!(
            clean_path("/etc/../../x"),
            Err(PathError::ParentComponent { .. })
        ));
        assert!(matches!(
            clean_path("/.."),
            Err(PathError::ParentComponent { .. })
        ));
        assert!(matches!(clean_path("/"), Err(PathError::Root { .. })));
        assert!(matches!(
            clean_path("/a\0b"),
            Err(PathError::BadCharacter { .. })
        ));
    }

    #[test]
    fn paths_fit_a_node_kernel() {
        let name = "n".repeat(NAME_MAX);
        assert!(clean_path(&format!("/etc/{name}")).is_ok());
        let error = clean_path(&format!("/etc/{name}n"));
        assert!(matches!(
            error,
            Err(PathError::NameTooLong { len: 256, .. })
        ));
        let deep = format!("/{name}").repeat(16);
        assert_eq!(clean_path(&deep[..PATH_MAX]).map(|p| p.len()), Ok(PATH_MAX));
        let error = clean_path(&deep).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "path \"/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...\" is 4096 bytes long; a node's kernel takes at most 4095"
            )
        );
    }

    #[test]
    fn modes_cannot_carry_file_types() {
        let mut file = OverlayFile {
            path: "/dev/sda".into(),
            mode: 0o060_660,
            uid: 0,
            gid: 0,
            content: FileContent::Regular(Vec::new()),
        };
        assert!(matches!(validate(&file), Err(PathError::BadMode { .. })));
        file.mode = 0o4755;
        assert_eq!(validate(&file).map(|f| f.mode), Ok(0o4755));
        assert_eq!(file.listing(), "/dev/sda 4755 0:0 0 file");
    }
}
