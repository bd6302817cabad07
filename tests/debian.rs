//! Real Debian trees made by `debootstrap` for tests that install into or boot a distribution,
//! built once and kept under the test cache (a tree takes a minute to fetch, a copy seconds),
//! and booted with systemd as the init of namespaces of their own ([`Booted`]). The mirror is
//! the one this machine's apt sources name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::oci::run;
use crate::{require_command, test_cache, wait_for};

/// The release the trees are made of.
pub const SUITE: &str = "bookworm";

/// One tree is made at a time: two tests asking for the same one wait for the first.
static BUILDING: Mutex<()> = Mutex::new(());

/// The first mirror this machine's apt sources list for [`SUITE`]: deb822 `.sources` files
/// and one-line `.list` files.
pub fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822_mirror(&text),
            Some("list") => one_line_mirror(&text),
            _ => None,
        };
        if let Some(uri) = found {
            return uri;
        }
    }
    panic!("no apt source on this machine lists a `deb` mirror for {SUITE} (read {files:?})")
}

fn deb822_mirror(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let types = field("Types")?;
        let suites = field("Suites")?;
        (types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == SUITE))
        .then(|| field("URIs"))
        .flatten()
        .and_then(|uris| uris.split_whitespace().next())
        .map(str::to_owned)
    })
}

fn one_line_mirror(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Options: `[arch=amd64 signed-by=...]`.
            while !uri.ends_with(']') {
                uri = words.next()?;
            }
            uri = words.next()?;
        }
        (words.next()? == SUITE).then(|| uri.to_owned())
    })
}

/// A `debootstrap --variant=minbase` tree of [`SUITE`] with `include` added, under the test
/// cache as `name`: made on first use, kept for later runs. Treat it as read-only; work in a
/// [`copy`].
pub fn tree(name: &str, include: &[&str]) -> PathBuf {
    tree_with(name, include, |_| {})
}

/// Like [`tree`], with `finish` run on the new tree before it is kept (name a changed
/// `finish` differently: a kept tree is not made again).
pub fn tree_with(name: &str, include: &[&str], finish: impl FnOnce(&Path)) -> PathBuf {
    require_command("debootstrap", "debootstrap");
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let cache = test_cache().join("debootstrap");
    let done = cache.join(name);
    if done.join("usr/bin/dpkg").exists() {
        return done;
    }
    let partial = cache.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display()));
    let mut debootstrap = Command::new("debootstrap");
    debootstrap.arg("--variant=minbase");
    if !include.is_empty() {
        debootstrap.arg(format!("--include={}", include.join(",")));
    }
    let started = std::time::Instant::now();
    let out = debootstrap
        .args([SUITE, partial.to_str().unwrap_or_default(), &mirror()])
        .output()
        .unwrap_or_else(|e| panic!("running debootstrap: {e}"));
    assert!(
        out.status.success(),
        "debootstrap {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    finish(&partial);
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&partial, &done).unwrap_or_else(|e| panic!("{}: {e}", done.display()));
    eprintln!(
        "debootstrap: made {} in {:.0?} (kept for later runs)",
        done.display(),
        started.elapsed()
    );
    done
}

/// A writable copy of `tree` at `to` (which must not exist), owners, modes and devices kept.
pub fn copy(tree: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(tree).arg(to));
}

/// A tree running systemd as PID 1 of its own PID, mount, network, UTS, IPC and cgroup
/// namespaces: a container made with util-linux alone, where units start, sandbox and notify as
/// on a machine (the tree needs `systemd` and `systemd-sysv`). Its network is its own loopback.
/// Killed with everything in it when dropped.
pub struct Booted {
    unshare: Child,
    /// systemd's PID as this machine sees it.
    init: u32,
}

/// Run by `sh` in the new namespaces with the tree as `$1`: the tree becomes `/` by
/// `pivot_root` (systemd sets up its units' mount sandboxes only on a real root mount), with
/// its own /proc, /run and /tmp.
const BOOT: &str = r#"set -e
mount --bind "$1" "$1"
mount --rbind /sys "$1/sys"
mount -t proc proc "$1/proc"
mount -t tmpfs tmpfs "$1/run"
mount -t tmpfs tmpfs "$1/tmp"
cd "$1"
mkdir -p .old-root
pivot_root . .old-root
umount -l /.old-root
rmdir /.old-root
exec /usr/bin/env container=wulf-test /lib/systemd/systemd --system
"#;

impl Booted {
    /// Boots `root` and waits until systemd has started its units.
    pub fn boot(root: &Path) -> Booted {
        require_command("nsenter", "util-linux");
        let unshare = Command::new("unshare")
            .args([
                "--pid", "--mount", "--net", "--uts", "--ipc", "--cgroup", "--fork",
            ])
            .args(["sh", "-c", BOOT, "boot"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running unshare: {e}"));
        let parent = unshare.id();
        let init = wait_for(
            "systemd to start in the container",
            Duration::from_secs(30),
            || format!("unshare {parent}"),
            || {
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse::<u32>()
                    .ok()
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|comm| comm.trim() == "systemd")
                    })
            },
        );
        let booted = Booted { unshare, init };
        wait_for(
            "systemd to reach its default target",
            Duration::from_secs(90),
            || booted.text(&["systemctl", "list-jobs", "--no-pager"]),
            || {
                let state = booted.text(&["systemctl", "is-system-running"]);
                ["running", "degraded"]
                    .contains(&state.trim())
                    .then_some(())
            },
        );
        booted
    }

    /// `args` to run inside, as root, with the container's namespaces and root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args([
                "--target",
                &self.init.to_string(),
                "--all",
                "--root",
                "--wd",
            ])
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env_remove("WULF_STATE_DIR")
            .env_remove("WULF_CONFIG")
            .env_remove("NOTIFY_SOCKET");
        command
    }

    /// `args` run inside.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running nsenter: {e}"))
    }

    /// `args` run inside: stdout and stderr, whatever the exit status.
    pub fn text(&self, args: &[&str]) -> String {
        let out = self.run(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `args` run inside, expected to succeed: their stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // PID 1 of a PID namespace takes every process in it along.
        let _ = Command::new("kill")
            .args(["-KILL", &self.init.to_string()])
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mirrors_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            deb822_mirror(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n";
        assert_eq!(
            one_line_mirror(list).as_deref(),
            Some("http://one.example/debian")
        );
        assert_eq!(
            one_line_mirror("deb http://x.example/debian trixie main\n"),
            None
        );
    }
}
