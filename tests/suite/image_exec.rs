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

/// A small image with a real shell: busybox and a few applets.
fn busybox_image(wulf: &Wulf, dir: &Path) {
    require_command("busybox", "busybox-static");
    let root = dir.join("bb");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "test", "ls", "grep", "cut", "touch"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
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

    let err = wulf.fails(&["image", "exec", "nope", "--", "true"]);
    assert!(err.contains("nope"), "{err}");
    let err = wulf.fails(&["image", "exec", "bb", "--bind", "relative", "--", "true"]);
    assert!(err.contains("absolute paths"), "{err}");
}
