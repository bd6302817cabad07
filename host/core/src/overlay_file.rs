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
}

/// Normalizes and checks an overlay path: absolute, no `..`, no NUL or backslash, not the root
/// itself. Repeated slashes and `.` components are folded. Returns the clean path.
pub fn clean_path(path: &str) -> Result<String, PathError> {
    let err_path = || path.to_string();
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
    Ok(format!("/{}", parts.join("/")))
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
