//! The Debian package, as `host/cli/dist/build-deb` makes it with `cargo deb`: its fields and
//! files; installed with `dpkg -i` into a Debian root (debootstrap, kept under the test cache)
//! booted with systemd in namespaces of its own, where `systemctl start wulf` returns once it
//! serves, `/status` answers, `wulf doctor` sees its ports held by wulf and reload keeps it up;
//! and installed into another copy, run (`wulf --version`, `wulf doctor`), removed and purged
//! without leaving a file behind.
//!
//! The package is made from the debug binary under test (`--profile dev --no-build`): the same
//! files a release build packs, without a second build of the workspace.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wulf_tests::oci::run;
use wulf_tests::{debian, require_command, test_cache, workspace};

/// Builds the package; installs cargo-deb under the test cache when it is missing.
fn build_deb() -> PathBuf {
    let cargo_deb = test_cache().join("cargo-deb");
    let path = format!(
        "{}:{}",
        cargo_deb.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let said = run(Command::new(workspace().join("host/cli/dist/build-deb"))
        .args(["--profile", "dev", "--no-build", "--fast"])
        .env("PATH", path)
        .env("CARGO_INSTALL_ROOT", &cargo_deb));
    let deb = said
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("build-deb named no package:\n{said}"));
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

/// `chroot <root> <args>`: whether it succeeded, stdout and stderr together.
fn in_root(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove("WULF_STATE_DIR")
        .env_remove("WULF_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("chroot: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every path below `root`, relative, but dpkg's own records and logs.
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if ["var/lib/dpkg", "var/log", "var/cache", "proc", "tmp"]
                .iter()
                .any(|skip| relative == *skip || relative.starts_with(&format!("{skip}/")))
            {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
            out.insert(relative);
        }
    }
    out
}

/// The package installed in a copy of `tree` at `root`, booted: the service under systemd.
fn served(tree: &Path, root: &Path, deb: &Path) {
    debian::copy(tree, root);
    std::fs::copy(deb, root.join("tmp/wulf.deb")).unwrap();
    let (installed, said) = in_root(root, &["dpkg", "-i", "/tmp/wulf.deb"]);
    assert!(installed, "dpkg -i:\n{said}");
    let booted = debian::Booted::boot(root);
    assert_eq!(
        booted.text(&["systemctl", "is-enabled", "wulf"]).trim(),
        "disabled",
        "the package does not enable the service: the admin checks the host first"
    );
    // Type=notify: `start` returns once wulf said READY=1, so it already answers.
    booted.ok(&["systemctl", "start", "wulf"]);
    let show = |property: &str| {
        booted
            .ok(&["systemctl", "show", "wulf", "--value", "-p", property])
            .trim()
            .to_owned()
    };
    assert_eq!(show("ActiveState"), "active");
    assert_eq!(show("StatusText"), "serving HTTP on 0.0.0.0:9873");
    let status: Value =
        serde_json::from_str(&booted.ok(&["wulf", "node", "status", "--json"])).unwrap();
    assert_eq!(status, serde_json::json!({"nodes": {}}));

    let doctor = booted.run(&["wulf", "doctor", "--json"]);
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = |name: &str| crate::doctor::find(report["checks"].as_array().unwrap(), name);
    let pid = show("MainPID");
    for (name, port) in [("http", "0.0.0.0:9873/tcp"), ("tftp", "0.0.0.0:69/udp")] {
        assert_eq!(
            check(name)["message"],
            format!("{port}: wulf serves it (pid {pid})"),
            "{report:#}"
        );
    }
    assert_eq!(check("config")["message"], "/etc/wulf/wulf.toml");

    // Reload is SIGHUP: the same process keeps serving.
    booted.ok(&["systemctl", "reload", "wulf"]);
    assert_eq!(show("MainPID"), pid);
    assert_eq!(show("ActiveState"), "active");
    // The journal gets plain lines.
    let journal = booted.ok(&["journalctl", "-u", "wulf", "--no-pager", "-o", "cat"]);
    assert!(
        journal.contains("wulf: HTTP on http://0.0.0.0:9873"),
        "{journal}"
    );
    assert!(
        !journal.contains('\x1b'),
        "colour codes in the journal:\n{journal}"
    );
    booted.ok(&["systemctl", "stop", "wulf"]);
    assert_eq!(show("ActiveState"), "inactive");
}

#[test]
fn the_debian_package_installs_runs_doctor_and_purges_cleanly() {
    require_command("dpkg-deb", "dpkg");
    require_command("unshare", "util-linux");
    let deb = build_deb();

    let field = |name: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), "wulf");
    assert_eq!(field("Recommends").trim(), "ipxe");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for file in [
        "./usr/bin/wulf",
        "./usr/lib/systemd/system/wulf.service",
        "./etc/wulf/wulf.toml",
        "./usr/share/bash-completion/completions/wulf",
        "./usr/share/zsh/vendor-completions/_wulf",
        "./usr/share/fish/vendor_completions.d/wulf.fish",
        "./usr/share/man/man1/wulf.1.gz",
        "./usr/share/man/man1/wulf-doctor.1.gz",
        "./usr/share/doc/wulf/copyright",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(file)),
            "{file} is not in the package:\n{contents}"
        );
    }

    let tree = debian::tree("bookworm-systemd", &["systemd", "systemd-sysv"]);
    let scratch = tempfile::tempdir().unwrap();
    served(&tree, &scratch.path().join("served"), &deb);

    let root = scratch.path().join("root");
    debian::copy(&tree, &root);
    let before = files(&root);
    std::fs::copy(&deb, root.join("tmp/wulf.deb")).unwrap();

    let (installed, said) = in_root(&root, &["dpkg", "-i", "/tmp/wulf.deb"]);
    assert!(installed, "dpkg -i:\n{said}");
    assert!(said.contains("`wulf doctor`"), "{said}");
    let conffiles = std::fs::read_to_string(root.join("var/lib/dpkg/info/wulf.conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/wulf/wulf.toml");

    let (ok, version) = in_root(&root, &["wulf", "--version"]);
    assert!(ok, "{version}");
    assert_eq!(
        version.trim(),
        format!("wulf {}", env!("CARGO_PKG_VERSION")),
        "{version}"
    );

    // doctor as root on the installed paths, in a network namespace of its own (its ports are
    // that namespace's) with a /proc of its own. The iPXE binaries are only recommended, so
    // the TFTP root fails: exactly what doctor is for.
    let doctor = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(&root)
        .args(["wulf", "doctor", "--json"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove("WULF_STATE_DIR")
        .env_remove("WULF_CONFIG")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor in the root printed no JSON ({e}): {}",
            String::from_utf8_lossy(&doctor.stderr)
        )
    });
    assert!(!doctor.status.success(), "{report:#}");
    let check = |name: &str| crate::doctor::find(report["checks"].as_array().unwrap(), name);
    assert_eq!(
        check("config")["message"],
        "/etc/wulf/wulf.toml",
        "{report:#}"
    );
    assert!(
        check("state")["message"]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/wulf,"),
        "{report:#}"
    );
    for name in ["http", "tftp", "plugins"] {
        assert_eq!(check(name)["health"], "ok", "{report:#}");
    }
    assert_eq!(check("tftp")["message"], "0.0.0.0:69/udp is free");
    assert_eq!(check("tftp-root")["health"], "fail", "{report:#}");
    assert!(
        check("tftp-root")["fix"]
            .as_str()
            .unwrap()
            .contains("apt-get install ipxe")
    );
    assert_eq!(report["fail"], 1, "{report:#}");

    // Removed: the program goes, the admin's configuration stays (a conffile).
    let (removed, said) = in_root(&root, &["dpkg", "-r", "wulf"]);
    assert!(removed, "dpkg -r:\n{said}");
    assert!(!root.join("usr/bin/wulf").exists());
    assert!(root.join("etc/wulf/wulf.toml").exists());
    // Purged: nothing of it is left, not even what wulf made on its own.
    let (purged, said) = in_root(&root, &["dpkg", "--purge", "wulf"]);
    assert!(purged, "dpkg --purge:\n{said}");
    let after = files(&root);
    let left: Vec<&String> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind after purge: {left:?}");
    let (known, _) = in_root(&root, &["dpkg", "-s", "wulf"]);
    assert!(!known, "dpkg still knows wulf after purge");
}
