//! Kernels inside an image, found where distributions put them, as Warewulf looks for them.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A kernel found in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// Absolute path inside the image, e.g. `/boot/vmlinuz-6.1.0-40-amd64`.
    pub path: String,
    /// `6.1.0-40`, parsed from the path.
    pub version: String,
    /// The extracted file's name in the image directory.
    pub file: String,
    pub size: u64,
    /// Of the kernel file: its strong ETag when served.
    #[serde(default)]
    pub sha256: String,
}

impl Kernel {
    /// Debug and rescue kernels are never the default.
    pub fn is_special(&self) -> bool {
        let p = self.path.to_ascii_lowercase();
        p.contains("rescue") || p.contains("debug")
    }
}

/// Whether `path` (relative, as in the rootfs) is where a kernel lives. Patterns from
/// Warewulf: `/boot/Image-*`, `/boot/vmlinuz-*`, `/lib/modules/*/vmlinuz[.gz]`.
pub fn is_kernel_path(path: &str) -> bool {
    let path = path.strip_prefix("usr/").unwrap_or(path);
    if let Some(name) = path.strip_prefix("boot/") {
        return !name.contains('/')
            && (name.starts_with("vmlinuz-") || name.starts_with("Image-"))
            && !name.ends_with(".hmac");
    }
    if let Some(rest) = path.strip_prefix("lib/modules/") {
        let mut parts = rest.split('/');
        let (Some(dir), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        return !dir.is_empty() && (name == "vmlinuz" || name == "vmlinuz.gz");
    }
    false
}

/// The version in a kernel path: the first `\d+\.\d+\.\d+(-[\d.]+)?`.
pub fn version_of(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    };
    for start in 0..b.len() {
        if start > 0 && b[start - 1].is_ascii_digit() {
            continue;
        }
        let Some(mut i) = digits(start) else { continue };
        let mut ok = true;
        for _ in 0..2 {
            if i < b.len() && b[i] == b'.' {
                match digits(i + 1) {
                    Some(j) => i = j,
                    None => ok = false,
                }
            } else {
                ok = false;
            }
            if !ok {
                break;
            }
        }
        if !ok {
            continue;
        }
        if i + 1 < b.len() && b[i] == b'-' && b[i + 1].is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            while j > i + 1 && b[j - 1] == b'.' {
                j -= 1;
            }
            i = j;
        }
        return Some(path[start..i].to_owned());
    }
    None
}

/// Compares versions numerically, field by field (`6.10.0` > `6.9.12`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let fields = |v: &str| -> Vec<u64> {
        v.split(['.', '-'])
            .map(|f| f.parse().unwrap_or(0))
            .collect()
    };
    fields(a).cmp(&fields(b))
}

/// The default kernel: the highest version that is not debug or rescue.
pub fn default_kernel(kernels: &[Kernel]) -> Option<&Kernel> {
    kernels
        .iter()
        .filter(|k| !k.is_special())
        .max_by(|a, b| compare_versions(&a.version, &b.version).then_with(|| b.path.cmp(&a.path)))
}

/// The kernel for a node's `kernel.version` override: an absolute path in the image, or a
/// version prefix (`6.1` picks the highest `6.1.*`). No override means the default.
pub fn select<'a>(kernels: &'a [Kernel], wanted: Option<&str>) -> Option<&'a Kernel> {
    match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        None => default_kernel(kernels),
        Some(path) if path.starts_with('/') => kernels.iter().find(|k| k.path == path),
        Some(prefix) => kernels
            .iter()
            .filter(|k| k.version.starts_with(prefix))
            .max_by(|a, b| compare_versions(&a.version, &b.version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(path: &str) -> Kernel {
        Kernel {
            path: path.into(),
            version: version_of(path).unwrap(),
            file: String::new(),
            size: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn kernel_paths_are_recognized() {
        for yes in [
            "boot/vmlinuz-6.1.0-40-amd64",
            "boot/Image-6.1",
            "lib/modules/5.14.0-1/vmlinuz",
            "usr/lib/modules/6.8.0/vmlinuz.gz",
        ] {
            assert!(is_kernel_path(yes), "{yes}");
        }
        for no in [
            "boot/config-6.1.0",
            "boot/vmlinuz-6.1.0.hmac",
            "lib/modules/6.1/kernel/vmlinuz",
            "boot/grub/vmlinuz-1",
        ] {
            assert!(!is_kernel_path(no), "{no}");
        }
    }

    #[test]
    fn versions_are_parsed_like_warewulf() {
        assert_eq!(
            version_of("/boot/vmlinuz-6.1.0-40-amd64").as_deref(),
            Some("6.1.0-40")
        );
        assert_eq!(
            version_of("/lib/modules/5.14.0-427.13.1.el9_4.x86_64/vmlinuz").as_deref(),
            Some("5.14.0-427.13.1")
        );
        assert_eq!(version_of("/boot/vmlinuz-linux"), None);
    }

    #[test]
    fn the_default_is_the_highest_plain_kernel_and_overrides_pick_by_prefix_or_path() {
        let kernels = vec![
            kernel("/boot/vmlinuz-6.9.12-1"),
            kernel("/boot/vmlinuz-6.10.0-1"),
            kernel("/boot/vmlinuz-6.11.0-1-rescue"),
            kernel("/boot/vmlinuz-5.10.0-30"),
        ];
        assert_eq!(default_kernel(&kernels).unwrap().version, "6.10.0-1");
        assert_eq!(select(&kernels, Some("6.9")).unwrap().version, "6.9.12-1");
        assert_eq!(
            select(&kernels, Some("/boot/vmlinuz-5.10.0-30"))
                .unwrap()
                .version,
            "5.10.0-30"
        );
        assert!(select(&kernels, Some("4.")).is_none());
    }
}
