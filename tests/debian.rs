//! Real Debian trees made by `debootstrap` for tests that install into or boot a distribution,
//! built once and kept under the test cache (a tree takes a minute to fetch, a copy seconds).
//! The mirror is the one this machine's apt sources name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{require_command, test_cache};

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
    let out = Command::new("cp")
        .arg("-a")
        .arg(tree)
        .arg(to)
        .output()
        .unwrap_or_else(|e| panic!("running cp: {e}"));
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        tree.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
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
