//! `wulf image exec|shell`: a command inside an image, in namespaces of its own. A Debian
//! package installed with apt-get (from this machine's Debian mirror) is in the rebuilt
//! initramfs; a failing command, a bind and a read-only look change nothing; `--network none`
//! leaves only loopback; the command is PID 1 of its own PID namespace.

use std::path::Path;
use std::process::Command;

use wulf_tests::oci::run;
use wulf_tests::{Wulf, debian, require_command};

fn built_sha(wulf: &Wulf, name: &str) -> String {
    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "show", name, "--json"])).unwrap();
    show["build"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The paths in image `name`'s rootfs.
fn rootfs_paths(wulf: &Wulf, name: &str) -> String {
    run(Command::new("tar")
        .arg("-tf")
        .arg(wulf.path().join(format!("images/{name}/rootfs.tar"))))
}

/// The tree of a small image with a real shell, `dir/name`: busybox and `applets`.
fn busybox_tree(dir: &Path, name: &str, applets: &[&str]) -> std::path::PathBuf {
    require_command("busybox", "busybox-static");
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// Image `bb`: busybox, a few applets and an `/etc/motd`.
fn busybox_image(wulf: &Wulf, dir: &Path) {
    let root = busybox_tree(
        dir,
        "bb",
        &["sh", "cat", "echo", "test", "ls", "grep", "cut", "touch"],
    );
    std::fs::write(root.join("etc/motd"), "image\n").unwrap();
    wulf.ok(&["image", "import", root.to_str().unwrap(), "bb"]);
}

#[test]
fn a_package_installed_with_apt_is_in_the_rebuilt_initramfs() {
    require_command("cpio", "cpio");
    let tree = debian::tree("bookworm-systemd", &["systemd", "systemd-sysv"]);
    let wulf = Wulf::new();
    wulf.ok(&["image", "import", tree.to_str().unwrap(), "deb"]);
    let before = built_sha(&wulf, "deb");
    let out = wulf.run(&[
        "image",
        "exec",
        "deb",
        "--",
        "sh",
        "-c",
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends hello && hello",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, world!"));
    assert!(
        stderr.contains("image `deb` changed: packed and built again"),
        "{stderr}"
    );
    let after = built_sha(&wulf, "deb");
    assert_ne!(before, after);
    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "show", "deb", "--json"])).unwrap();
    let initramfs = wulf
        .path()
        .join("images/deb")
        .join(show["build"]["file"].as_str().unwrap());
    let listing = run(Command::new("sh")
        .arg("-c")
        .arg(format!("zcat {} | cpio -t --quiet", initramfs.display())));
    assert!(
        listing.lines().any(|l| l == "usr/bin/hello"),
        "no usr/bin/hello"
    );
}

#[test]
fn what_does_not_succeed_or_change_nothing_leaves_the_image_as_it_was() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    busybox_image(&wulf, scratch.path());
    let sha = built_sha(&wulf, "bb");
    let paths = rootfs_paths(&wulf, "bb");

    // A failing command: its exit code, and nothing kept.
    let out = wulf.run(&[
        "image",
        "exec",
        "bb",
        "--",
        "sh",
        "-c",
        "touch /etc/new; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exited with 3: image `bb` unchanged"),
        "{stderr}"
    );
    assert!(!rootfs_paths(&wulf, "bb").contains("etc/new"));

    // A bind: the host's file is there, the mount point is not left behind.
    let host = scratch.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("greeting"), "from the host\n").unwrap();
    let bind = format!("{}:/mnt/host", host.display());
    let seen = wulf.ok(&[
        "image",
        "exec",
        "bb",
        "--bind",
        &bind,
        "--",
        "cat",
        "/mnt/host/greeting",
    ]);
    assert_eq!(seen, "from the host\n");

    // Its own PID namespace (the command is PID 1), /proc mounted, only loopback without a
    // network.
    let pid = wulf.ok(&["image", "exec", "bb", "--", "sh", "-c", "echo $$"]);
    assert_eq!(pid.trim(), "1");
    let links = wulf.ok(&[
        "image",
        "exec",
        "bb",
        "--network",
        "none",
        "--",
        "cat",
        "/proc/net/dev",
    ]);
    let names: Vec<&str> = links
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "{links}");

    assert_eq!(
        rootfs_paths(&wulf, "bb"),
        paths,
        "the image's files did not move"
    );
    assert_eq!(built_sha(&wulf, "bb"), sha);

    // A change is kept and built.
    wulf.ok(&[
        "image",
        "exec",
        "bb",
        "--",
        "sh",
        "-c",
        "echo changed > /etc/motd",
    ]);
    assert_ne!(built_sha(&wulf, "bb"), sha);
    assert_eq!(
        wulf.ok(&["image", "exec", "bb", "--", "cat", "/etc/motd"]),
        "changed\n"
    );

    // What a build killed mid-way left behind goes at the next build.
    let stale = wulf.path().join("images/bb/.initramfs.tmp-999999999");
    std::fs::write(&stale, "half an archive").unwrap();
    wulf.ok(&["image", "build", "bb"]);
    assert!(!stale.exists(), "the dead build's temp file is swept");

    let err = wulf.fails(&["image", "exec", "nope", "--", "true"]);
    assert!(err.contains("nope"), "{err}");
    let err = wulf.fails(&["image", "exec", "bb", "--bind", "relative", "--", "true"]);
    assert!(err.contains("absolute paths"), "{err}");
}

/// A busybox image whose accounts are `passwd` and `group`.
fn image_with_accounts(wulf: &Wulf, dir: &Path, name: &str, passwd: &str, group: &str) {
    let root = busybox_tree(dir, name, &["sh"]);
    std::fs::create_dir_all(root.join("home")).unwrap();
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
    std::fs::write(root.join("home/shared"), "team file\n").unwrap();
    std::os::unix::fs::chown(root.join("home/shared"), Some(2), Some(1234)).unwrap();
    wulf.ok(&["image", "import", root.to_str().unwrap(), name]);
}

fn host_id(database: &str, name: &str) -> u32 {
    run(Command::new("getent").args([database, name]))
        .split(':')
        .nth(2)
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {database} {name} on this host"))
}

#[test]
fn syncuser_gives_the_image_the_hosts_ids_and_reowns_its_files() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    let (users, daemon) = (host_id("group", "users"), host_id("passwd", "daemon"));
    assert_ne!(users, 1234);
    image_with_accounts(
        &wulf,
        scratch.path(),
        "acc",
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2:daemon:/:/bin/sh\n",
        "root:x:0:\ndaemon:x:2:\nusers:x:1234:\n",
    );
    let sha = built_sha(&wulf, "acc");
    let report: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "syncuser", "acc", "--json"])).unwrap();
    let changes = report["changes"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        changes
            .iter()
            .find(|c| c["kind"] == kind && c["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {report:#}"))
            .clone()
    };
    assert_eq!(find("group", "users")["image"], 1234);
    assert_eq!(find("group", "users")["host"], users);
    assert_eq!(find("user", "daemon")["image"], 2);
    assert_eq!(find("user", "daemon")["host"], daemon);
    assert!(
        find("user", "bin")["image"].is_null(),
        "the host's users are added"
    );
    assert_eq!(report["written"], false);
    assert_eq!(built_sha(&wulf, "acc"), sha, "a report writes nothing");

    let said = wulf.ok(&["image", "syncuser", "acc", "--write"]);
    assert!(said.contains("file(s) re-owned"), "{said}");
    let owner = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(wulf.path().join("images/acc/rootfs.tar"))
        .arg("home/shared"));
    assert!(
        owner.contains(&format!(" {daemon}/{users} ")),
        "home/shared is {owner}"
    );
    let group = wulf.ok(&["image", "exec", "acc", "--", "busybox", "cat", "/etc/group"]);
    assert!(group.contains(&format!("users:x:{users}:")), "{group}");
    assert_ne!(built_sha(&wulf, "acc"), sha, "rebuilt");
    let again = wulf.ok(&["image", "syncuser", "acc"]);
    assert!(again.contains("agrees with this host"), "{again}");

    // An id the image gives to a name the host lacks: a conflict, and nothing written.
    image_with_accounts(
        &wulf,
        scratch.path(),
        "clash",
        "root:x:0:0:root:/root:/bin/sh\n",
        &format!("root:x:0:\nmine:x:{users}:\n"),
    );
    let sha = built_sha(&wulf, "clash");
    let err = wulf.fails(&["image", "syncuser", "clash", "--write"]);
    assert!(
        err.contains(&format!(
            "the image's group `mine` has id {users}, which is the host's `users`"
        )),
        "{err}"
    );
    assert_eq!(built_sha(&wulf, "clash"), sha);
}
