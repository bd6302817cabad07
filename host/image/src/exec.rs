//! Running a command inside an unpacked image (`wulf image exec|shell`), as Warewulf's
//! `wwctl image exec` does: the image's tree as `/` in new mount, PID, UTS and IPC namespaces,
//! with `/proc`, `/sys`, `/dev`, a fresh `/run`, the host's `resolv.conf` and the binds asked
//! for; the host's network, or none. Nothing mounted there outlives the command, and mount
//! points that had to be made are removed again, so they never end up in the image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::error::{ImageError, Result};

/// The network a command in an image gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's (package managers reach their mirrors), as Warewulf always does.
    #[default]
    Host,
    /// A network namespace of its own with nothing in it.
    None,
}

/// A host path made visible inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute, inside the image.
    pub target: String,
}

impl std::str::FromStr for Bind {
    type Err = String;

    /// `SRC[:DST]`; DST defaults to SRC.
    fn from_str(text: &str) -> std::result::Result<Bind, String> {
        let (source, target) = text.split_once(':').unwrap_or((text, text));
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!("{text:?}: expected SRC[:DST] with absolute paths"));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(format!("{text:?}: the target may not contain `..`"));
        }
        Ok(Bind {
            source: PathBuf::from(source),
            target: target.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub binds: Vec<Bind>,
    pub network: Network,
}

/// Mounts inside the new namespaces, then `chroot`: `$1` is the image's root, then pairs of
/// bind source and target, `--`, and the command.
const ENTER: &str = r#"set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
if [ -n "$WULF_RESOLV" ]; then mount --bind "$WULF_RESOLV" "$root/etc/resolv.conf"; fi
while [ "$1" != "--" ]; do
    mount --rbind "$1" "$root$2"
    shift 2
done
shift
exec chroot "$root" "$@"
"#;

/// What was made in the image for the run, to take away after.
enum Made {
    Dir(PathBuf),
    File(PathBuf),
}

/// Makes `path` exist as a directory (or, with `file`, a file), noting it when it was made.
fn ensure(path: &Path, file: bool, made: &mut Vec<Made>) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && fs::symlink_metadata(parent).is_err()
    {
        ensure(parent, false, made)?;
    }
    if file {
        fs::write(path, b"").map_err(ImageError::at(path))?;
        made.push(Made::File(path.to_owned()));
    } else {
        fs::create_dir(path).map_err(ImageError::at(path))?;
        made.push(Made::Dir(path.to_owned()));
    }
    Ok(())
}

/// What a command in an image came to.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    pub status: ExitStatus,
    /// Whether the tree changed (mount points made for the run do not count).
    pub changed: bool,
}

/// Runs `command` with `root` as `/` (see the module docs). Root only.
pub fn run_in(root: &Path, command: &[String], options: &RunOptions) -> Result<Ran> {
    let mut made = Vec::new();
    let result = (|| {
        for dir in ["proc", "sys", "dev", "run"] {
            ensure(&root.join(dir), false, &mut made)?;
        }
        // The host's resolver, over the image's file (not over a link: that would land
        // wherever it points on the host).
        let resolv = root.join("etc/resolv.conf");
        let host_resolv = Path::new("/etc/resolv.conf");
        let use_resolv = host_resolv.is_file()
            && fs::symlink_metadata(root.join("etc")).is_ok_and(|m| m.is_dir())
            && !fs::symlink_metadata(&resolv).is_ok_and(|m| m.file_type().is_symlink());
        if use_resolv {
            ensure(&resolv, true, &mut made)?;
        }
        let mut args: Vec<String> = Vec::new();
        for bind in &options.binds {
            let target = root.join(bind.target.trim_start_matches('/'));
            let is_dir = fs::metadata(&bind.source)
                .map_err(ImageError::at(&bind.source))?
                .is_dir();
            ensure(&target, !is_dir, &mut made)?;
            args.push(bind.source.display().to_string());
            args.push(bind.target.clone());
        }
        let mut unshare = Command::new("unshare");
        unshare.args([
            "--mount",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--propagation",
            "private",
        ]);
        if options.network == Network::None {
            unshare.arg("--net");
        }
        unshare
            .args(["sh", "-c", ENTER, "wulf-image-exec"])
            .arg(root)
            .args(&args)
            .arg("--")
            .args(command)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        if let Some(term) = std::env::var_os("TERM") {
            unshare.env("TERM", term);
        }
        if use_resolv {
            unshare.env("WULF_RESOLV", host_resolv);
        }
        let before = wulf_core::stamp::tree_stamp(&[root.to_path_buf()]);
        let status = unshare
            .status()
            .map_err(ImageError::io("running unshare"))?;
        Ok(Ran {
            status,
            changed: wulf_core::stamp::tree_stamp(&[root.to_path_buf()]) != before,
        })
    })();
    // Deepest first.
    for made in made.iter().rev() {
        let _ = match made {
            Made::Dir(path) => fs::remove_dir(path),
            Made::File(path) => fs::remove_file(path),
        };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_read_as_src_or_src_dst() {
        let bind: Bind = "/srv/data:/mnt/data"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bind.source, PathBuf::from("/srv/data"));
        assert_eq!(bind.target, "/mnt/data");
        let same: Bind = "/opt/x".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(same.target, "/opt/x");
        assert!("relative:/x".parse::<Bind>().is_err());
        assert!("/a:/../etc".parse::<Bind>().is_err());
    }
}
