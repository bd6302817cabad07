//! `wulf image` through the real binary, against real peers: images built by hand as OCI
//! layouts, pushed by `skopeo` to Debian's `docker-registry`, archived by `skopeo` and `tar`,
//! and the built initramfs unpacked by GNU `cpio`.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use wulf_tests::oci::{Item, LayerCompression, Layout, Registry, run, tar_of};
use wulf_tests::{Wulf, require_command};

/// A two-layer image with what real images have: a whiteout, an opaque directory, a symlink,
/// a hard link, setuid, owners, a device node, a FIFO, a long path, missing parent
/// directories, two kernels (one reached through a symlink), a gzip and a zstd layer.
pub(crate) fn fixture_layout(dir: &Path) -> PathBuf {
    fixture_layout_with(dir, LayerCompression::Zstd)
}

/// The fixture with its second layer compressed as `second`.
fn fixture_layout_with(dir: &Path, second: LayerCompression) -> PathBuf {
    let long = format!("usr/share/{}/file", "x".repeat(120));
    let mut layout = Layout::new(dir);
    layout.layer(
        &[
            Item::dir("bin"),
            Item::owned("bin/sh", 0o755, 0, 0, "#!shell"),
            Item::hardlink("bin/sh2", "bin/sh"),
            Item::symlink("bin/ash", "sh"),
            Item::dir("etc"),
            Item::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            Item::owned("etc/shadow", 0o640, 0, 42, "root:*:19000:0:99999:7:::\n"),
            Item::file("etc/hosts-old", "old"),
            Item::owned("home/user/file", 0o600, 1000, 1000, "mine"),
            Item::dir("usr"),
            Item::dir("usr/bin"),
            Item::owned("usr/bin/su", 0o4755, 0, 0, "su binary"),
            Item::dir("usr/share"),
            Item::dir("usr/share/doc"),
            Item::dir("usr/share/doc/pkg"),
            Item::file("usr/share/doc/pkg/README", "docs"),
            Item::dir("opt"),
            Item::dir("opt/dir"),
            Item::file("opt/dir/old", "old"),
            Item::dir("dev"),
            Item::CharDevice {
                path: "dev/null".into(),
                major: 1,
                minor: 3,
            },
            Item::Fifo {
                path: "run/fifo".into(),
            },
            Item::dir("boot"),
            Item::file("boot/vmlinuz-6.1.0-40-amd64", "KERNEL-6.1"),
            Item::file("boot/vmlinuz-5.10.0-30-amd64", "KERNEL-5.10"),
            Item::symlink(
                "lib/modules/6.1.0-40-amd64/vmlinuz",
                "../../../boot/vmlinuz-6.1.0-40-amd64",
            ),
        ],
        LayerCompression::Gzip,
    );
    layout.layer(
        &[
            Item::file("etc/.wh.hosts-old", ""),
            Item::file("opt/dir/.wh..wh..opq", ""),
            Item::file("opt/dir/new", "new"),
            Item::file(
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
            ),
            Item::file(&long, "deep"),
            Item::file("etc/motd", "welcome\n"),
        ],
        second,
    );
    layout.finish("v1")
}

/// `path kind mode uid:gid detail` for every entry under `root`, sorted.
fn tree(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, inodes: &mut HashMap<u64, String>) {
        let mut children: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for path in children {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let rel = if rel.len() > 60 {
                format!("{}...{}", &rel[..20], &rel[rel.len() - 10..])
            } else {
                rel
            };
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let (kind, detail) = if ft.is_dir() {
                ("d", String::new())
            } else if ft.is_symlink() {
                (
                    "l",
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                )
            } else if ft.is_char_device() {
                (
                    "c",
                    format!("{}:{}", (m.rdev() >> 8) & 0xfff, m.rdev() & 0xff),
                )
            } else if ft.is_fifo() {
                ("p", String::new())
            } else if let Some(first) = inodes.get(&m.ino()) {
                ("h", format!("same file as {first}"))
            } else {
                if m.nlink() > 1 {
                    inodes.insert(m.ino(), rel.clone());
                }
                (
                    "f",
                    format!(
                        "{:?}",
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                    ),
                )
            };
            let mode = if ft.is_symlink() {
                String::from("----")
            } else {
                format!("{:04o}", m.mode() & 0o7777)
            };
            out.push(
                format!("{rel} {kind} {mode} {}:{} {detail}", m.uid(), m.gid())
                    .trim_end()
                    .to_string(),
            );
            if ft.is_dir() {
                walk(root, &path, out, inodes);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out, &mut HashMap::new());
    out.join("\n")
}

fn show(wulf: &Wulf, name: &str) -> serde_json::Value {
    serde_json::from_str(&wulf.ok(&["image", "show", name, "--json"])).unwrap()
}

fn built_sha(wulf: &Wulf, name: &str) -> String {
    show(wulf, name)["build"]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn initramfs(wulf: &Wulf, name: &str) -> PathBuf {
    let file = show(wulf, name)["build"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    wulf.path().join("images").join(name).join(file)
}

/// Unpacks a built initramfs with GNU cpio, as root would on a node.
fn unpack(archive: &Path, into: &Path) {
    require_command("cpio", "cpio");
    std::fs::create_dir_all(into).unwrap();
    let decompress = if archive.extension().is_some_and(|e| e == "zst") {
        "zstd -dc"
    } else {
        "gzip -dc"
    };
    run(Command::new("sh").current_dir(into).args([
        "-c",
        &format!(
            "{decompress} '{}' | cpio -idm --quiet --no-absolute-filenames",
            archive.display()
        ),
    ]));
}

#[test]
fn an_oci_layout_imports_and_builds_into_an_initramfs_equal_to_its_rootfs() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    let wulf = Wulf::new();
    let out = wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "base",
    ]);
    assert!(
        out.contains("imported oci:") && out.contains("built image `base`"),
        "{out}"
    );

    let unpacked = scratch.path().join("unpacked");
    unpack(&initramfs(&wulf, "base"), &unpacked);
    insta::assert_snapshot!(tree(&unpacked), @r##"
    bin d 0755 0:0
    bin/ash l ---- 0:0 -> sh
    bin/sh f 0755 0:0 "#!shell"
    bin/sh2 h 0755 0:0 same file as bin/sh
    boot d 0755 0:0
    boot/vmlinuz-5.10.0-30-amd64 f 0644 0:0 "KERNEL-5.10"
    boot/vmlinuz-6.1.0-40-amd64 f 0644 0:0 "KERNEL-6.1"
    dev d 0755 0:0
    dev/null c 0666 0:0 1:3
    etc d 0755 0:0
    etc/motd f 0644 0:0 "welcome\n"
    etc/passwd f 0644 0:0 "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    etc/shadow f 0640 0:42 "root:*:19000:0:99999:7:::\n"
    home d 0755 0:0
    home/user d 0755 0:0
    home/user/file f 0600 1000:1000 "mine"
    lib d 0755 0:0
    lib/modules d 0755 0:0
    lib/modules/6.1.0-40-amd64 d 0755 0:0
    lib/modules/6.1.0-40-amd64/vmlinuz l ---- 0:0 -> ../../../boot/vmlinuz-6.1.0-40-amd64
    opt d 0755 0:0
    opt/dir d 0755 0:0
    opt/dir/new f 0644 0:0 "new"
    run d 0755 0:0
    run/fifo p 0600 0:0
    usr d 0755 0:0
    usr/bin d 0755 0:0
    usr/bin/su f 4755 0:0 "su binary"
    usr/share d 0755 0:0
    usr/share/doc d 0755 0:0
    usr/share/doc/pkg d 0755 0:0
    usr/share/doc/pkg/README f 0644 0:0 "docs"
    usr/share/xxxxxxxxxx...xxxxxxxxxx d 0755 0:0
    usr/share/xxxxxxxxxx...xxxxx/file f 0644 0:0 "deep"
    "##);

    // Kernels: found where distributions put them, the highest plain one by default.
    let kernels: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "kernels", "base", "--json"])).unwrap();
    let defaults: Vec<_> = kernels
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["default"] == true)
        .map(|k| k["version"].as_str().unwrap())
        .collect();
    assert_eq!(defaults, ["6.1.0-40"]);
    let kernel = wulf.path().join("images/base/kernels/vmlinuz-6.1.0-40");
    assert_eq!(std::fs::read_to_string(kernel).unwrap(), "KERNEL-6.1");

    // A rebuild that changes nothing gives the same bytes; zstd is readable by zstd(1).
    let first = built_sha(&wulf, "base");
    wulf.ok(&["image", "build", "base"]);
    assert_eq!(built_sha(&wulf, "base"), first);
    require_command("zstd", "zstd");
    wulf.ok(&["image", "build", "base", "--compression", "zstd"]);
    let zst = initramfs(&wulf, "base");
    assert!(zst.to_string_lossy().ends_with(".img.zst"), "{zst:?}");
    let again = scratch.path().join("zstd");
    unpack(&zst, &again);
    assert_eq!(tree(&again), tree(&unpacked));
    // The old archive is gone once the new one is in place.
    let archives = std::fs::read_dir(wulf.path().join("images/base"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("initramfs-")
        })
        .count();
    assert_eq!(archives, 1);
}

#[test]
fn every_source_of_the_same_image_builds_the_same_bytes() {
    require_command("skopeo", "skopeo");
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    let wulf = Wulf::new();
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "from-layout",
    ]);
    let expected = built_sha(&wulf, "from-layout");

    // oci-archive: the layout in a tar, found by content when given as a plain path.
    let oci_archive = scratch.path().join("image.oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_archive)
        .arg("."));
    wulf.ok(&[
        "image",
        "import",
        &oci_archive.display().to_string(),
        "from-oci-archive",
    ]);

    // docker-archive, written by skopeo (uncompressed layers, Docker's manifest.json). Docker
    // formats have no zstd, so skopeo gets the same tree with both layers in gzip: the layer
    // compression must not change the image.
    let gzip_layout =
        fixture_layout_with(&scratch.path().join("gzip-layout"), LayerCompression::Gzip);
    let docker_archive = scratch.path().join("image.docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:v1", gzip_layout.display()),
        &format!("docker-archive:{}:test/img:v1", docker_archive.display()),
    ]));
    wulf.ok(&[
        "image",
        "import",
        &format!("docker-archive:{}", docker_archive.display()),
        "from-docker-archive",
    ]);

    // A real registry over plain HTTP, pushed by skopeo.
    let registry = Registry::start();
    registry.push(&layout, "v1", "test/img:v1");
    let out = wulf.ok(&[
        "image",
        "import",
        &format!("docker://{}/test/img:v1", registry.addr),
        "--insecure-http",
    ]);
    assert!(
        out.contains("as image `img:v1`"),
        "the default name is the last component: {out}"
    );

    for name in ["from-oci-archive", "from-docker-archive", "img:v1"] {
        assert_eq!(built_sha(&wulf, name), expected, "{name}");
    }
    let meta = show(&wulf, "img:v1");
    assert_eq!(meta["platform"], "linux/amd64");
    assert!(meta["digest"].as_str().unwrap().starts_with("sha256:"));

    // Layers are cached by digest: a second pull of the same image downloads nothing new
    // and gives the same image.
    wulf.ok(&[
        "image",
        "import",
        &format!("docker://{}/test/img:v1", registry.addr),
        "again",
        "--insecure-http",
    ]);
    assert_eq!(built_sha(&wulf, "again"), expected);
}

/// What is left in the images directory: a failed import must leave no trace.
fn images_dir(wulf: &Wulf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(wulf.path().join("images"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn registry_failures_are_named_and_change_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    let registry = Registry::start();
    registry.push(&layout, "v1", "test/img:v1");
    let wulf = Wulf::new();
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "keep",
    ]);
    let kept = built_sha(&wulf, "keep");

    let err = wulf.fails(&[
        "image",
        "import",
        "docker://127.0.0.1:1/test/img:v1",
        "x",
        "--insecure-http",
    ]);
    assert!(
        err.contains("cannot fetch the manifest of 127.0.0.1:1/test/img:v1")
            && err.to_lowercase().contains("connect"),
        "{err}"
    );

    let err = wulf.fails(&[
        "image",
        "import",
        &format!("docker://{}/test/img:nope", registry.addr),
        "x",
        "--insecure-http",
    ]);
    assert!(
        err.contains("cannot fetch the manifest") && err.contains("manifest unknown"),
        "{err}"
    );

    let err = wulf.fails(&["image", "import", "docker://UPPER/Case:tag", "x"]);
    assert!(err.contains("not a valid image reference"), "{err}");

    // Corrupt a layer inside the registry's storage: the digest check catches it.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let stored = registry.blob_file(layer);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let err = wulf.fails(&[
        "image",
        "import",
        &format!("docker://{}/test/img:v1", registry.addr),
        "keep",
        "--force",
        "--insecure-http",
    ]);
    assert!(
        err.contains(&format!("cannot fetch layer 1 ({layer})"))
            && err.to_lowercase().contains("digest"),
        "{err}"
    );

    // The image that was there is untouched, and no partial import is left behind.
    assert_eq!(built_sha(&wulf, "keep"), kept);
    assert_eq!(images_dir(&wulf), ["keep"]);
    let blobs: Vec<_> = std::fs::read_dir(wulf.path().join("cache/blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        blobs
            .iter()
            .all(|b| !b.to_string_lossy().contains("partial")),
        "{blobs:?}"
    );
}

#[test]
fn hostile_and_broken_layers_are_refused_with_nothing_written() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    let import = |name: &str, layout: &Path| {
        wulf.fails(&[
            "image",
            "import",
            &format!("oci:{}:v1", layout.display()),
            name,
        ])
    };

    let mut parent = Layout::new(&scratch.path().join("parent"));
    parent.layer(
        &[Item::RawPath {
            path: "etc/../../escape".into(),
            content: b"x".to_vec(),
        }],
        LayerCompression::Gzip,
    );
    let err = import("parent", &parent.finish("v1"));
    assert!(
        err.contains("layer 1") && err.contains("\"etc/../../escape\" has a `..` component"),
        "{err}"
    );

    let mut through = Layout::new(&scratch.path().join("through"));
    through.layer(&[Item::symlink("etc", "/host/etc")], LayerCompression::Gzip);
    through.layer(&[Item::file("etc/passwd", "owned")], LayerCompression::Gzip);
    let err = import("through", &through.finish("v1"));
    assert!(
        err.contains(
            "layer 2: entry etc/passwd would be written through the symlink etc -> /host/etc"
        ),
        "{err}"
    );

    let mut link = Layout::new(&scratch.path().join("link"));
    link.layer(
        &[Item::hardlink("bin/x", "../../etc/shadow")],
        LayerCompression::Gzip,
    );
    let err = import("link", &link.finish("v1"));
    assert!(
        err.contains("hard link bin/x") && err.contains("`..`"),
        "{err}"
    );

    // Truncated: the blob's digest matches what the manifest says, but the gzip stream ends early.
    let mut truncated = Layout::new(&scratch.path().join("truncated"));
    let tar = tar_of(&[Item::file("bin/sh", &"x".repeat(100_000))]);
    let gz = wulf_tests::oci::compress(&tar, LayerCompression::Gzip);
    truncated.raw_layer(&tar, &gz[..gz.len() / 2], LayerCompression::Gzip);
    let err = import("truncated", &truncated.finish("v1"));
    assert!(
        err.contains("layer 1") && err.contains("is corrupt or truncated"),
        "{err}"
    );

    // Tampered: a blob whose bytes no longer match its digest.
    let mut tampered = Layout::new(&scratch.path().join("tampered"));
    let digest = tampered.layer(&[Item::file("bin/sh", "sh")], LayerCompression::Gzip);
    let dir = tampered.finish("v1");
    std::fs::write(
        dir.join("blobs/sha256").join(&digest[7..]),
        b"not the layer",
    )
    .unwrap();
    let err = import("tampered", &dir);
    assert!(
        err.contains(&format!(
            "but the manifest says {digest}: the blob is corrupt"
        )),
        "{err}"
    );

    let err = wulf.fails(&["image", "import", &format!("oci:{}:v2", dir.display()), "x"]);
    assert!(
        err.contains("has no image tagged \"v2\"; its tags: v1"),
        "{err}"
    );

    let not_root = scratch.path().join("empty-dir");
    std::fs::create_dir_all(&not_root).unwrap();
    let err = wulf.fails(&["image", "import", &not_root.display().to_string()]);
    assert!(
        err.contains("does not look like a root filesystem: it has no bin/sh"),
        "{err}"
    );

    let err = wulf.fails(&[
        "image",
        "import",
        &format!("oci:{}:v1", dir.display()),
        "bad/name",
    ]);
    assert!(
        err.contains("image name \"bad/name\" is not valid"),
        "{err}"
    );

    assert!(images_dir(&wulf).is_empty(), "{:?}", images_dir(&wulf));
}

#[test]
fn images_are_listed_copied_renamed_and_deleted_with_their_users_in_mind() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    let wulf = Wulf::new();
    let source = format!("oci:{}:v1", layout.display());
    wulf.ok(&["image", "import", &source, "rocky"]);
    let err = wulf.fails(&["image", "import", &source, "rocky"]);
    assert!(
        err.contains("image `rocky` already exists: use --force to replace it"),
        "{err}"
    );

    wulf.ok(&["profile", "add", "compute", "--image", "rocky"]);
    wulf.ok(&["node", "add", "n1", "--profile", "compute"]);
    wulf.ok(&[
        "node",
        "add",
        "n2",
        "--image",
        "rocky",
        "--kernelversion",
        "5.10",
    ]);

    let list = wulf.ok(&["image", "list"]);
    let row = list
        .lines()
        .find(|l| l.trim_start().starts_with("rocky"))
        .unwrap();
    assert!(row.contains(" 2 ") && row.contains("6.1.0-40"), "{list}");
    let kernels = wulf.ok(&["image", "kernels"]);
    assert!(
        kernels
            .lines()
            .any(|l| l.contains("5.10.0-30") && l.trim_end().ends_with('1')),
        "n2 uses 5.10:\n{kernels}"
    );

    let err = wulf.fails(&["image", "delete", "rocky"]);
    assert!(
        err.contains("image `rocky` is used by profile compute, n1, n2"),
        "{err}"
    );

    wulf.ok(&["image", "copy", "rocky", "rocky-test"]);
    assert_eq!(built_sha(&wulf, "rocky-test"), built_sha(&wulf, "rocky"));
    let out = wulf.ok(&["image", "rename", "rocky", "rocky-9"]);
    assert!(out.contains("now using `rocky-9`: n2, compute"), "{out}");
    let node: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n1", "--json"])).unwrap();
    assert_eq!(node["image"], "rocky-9", "{node}");

    // A rename whose inventory write fails (a hand edit broke the file) is undone whole: the
    // image keeps its name, the records and the file are as they were.
    let nodes = wulf.path().join("nodes.toml");
    let good = std::fs::read_to_string(&nodes).unwrap();
    let broken = format!(
        "{good}\n[nodes.n3.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n\
         [nodes.n4.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:01\"\n"
    );
    std::fs::write(&nodes, &broken).unwrap();
    let err = wulf.fails(&["image", "rename", "rocky-9", "alma"]);
    assert!(
        err.contains("image `rocky-9` was renamed back")
            && err.contains("node `n4`: `network-devices.default.hwaddr` = \"aa:bb:cc:dd:ee:01\": node `n3` has this address too"),
        "{err}"
    );
    assert_eq!(images_dir(&wulf), ["rocky-9", "rocky-test"]);
    assert_eq!(std::fs::read_to_string(&nodes).unwrap(), broken);
    std::fs::write(&nodes, &good).unwrap();

    wulf.ok(&["image", "delete", "rocky-test"]);
    let err = wulf.fails(&["image", "show", "rocky-test"]);
    assert!(err.contains("no image named `rocky-test`"), "{err}");
    assert_eq!(images_dir(&wulf), ["rocky-9"]);

    // --force over an existing image with a broken source keeps the old image.
    let before = built_sha(&wulf, "rocky-9");
    let mut broken = Layout::new(&scratch.path().join("broken"));
    broken.layer(
        &[Item::RawPath {
            path: "../x".into(),
            content: vec![],
        }],
        LayerCompression::Gzip,
    );
    let broken = broken.finish("v1");
    wulf.fails(&[
        "image",
        "import",
        &format!("oci:{}:v1", broken.display()),
        "rocky-9",
        "--force",
    ]);
    assert_eq!(built_sha(&wulf, "rocky-9"), before);
    assert_eq!(images_dir(&wulf), ["rocky-9"]);
}

#[test]
fn a_chroot_directory_imports_with_excludes_applied_at_build() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("chroot");
    for dir in ["bin", "boot", "etc/warewulf", "var/cache/big"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("bin/sh"), "sh").unwrap();
    std::fs::hard_link(root.join("bin/sh"), root.join("bin/bash")).unwrap();
    std::os::unix::fs::symlink("sh", root.join("bin/dash")).unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.12.0-1-amd64"), "kernel").unwrap();
    std::fs::write(root.join("var/cache/big/blob"), "cache").unwrap();
    std::fs::write(
        root.join("etc/warewulf/excludes"),
        "# not on nodes\n/boot/\n/var/cache/*\n",
    )
    .unwrap();
    let wulf = Wulf::new();
    wulf.ok(&["image", "import", &root.display().to_string()]);
    let unpacked = scratch.path().join("unpacked");
    unpack(&initramfs(&wulf, "chroot"), &unpacked);
    let listing = tree(&unpacked);
    let paths: Vec<&str> = listing
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/bash",
            "bin/dash",
            "bin/sh",
            "boot",
            "etc",
            "etc/warewulf",
            "etc/warewulf/excludes",
            "var",
            "var/cache"
        ]
    );
    assert!(
        listing.contains("bin/sh h 0644 0:0 same file as bin/bash"),
        "{listing}"
    );
    // The kernel is excluded from the initramfs but still served from the image.
    assert_eq!(show(&wulf, "chroot")["default_kernel"], "6.12.0-1");
}

#[test]
fn image_transform_plugins_strip_and_customize_the_built_image() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    let wulf = Wulf::new();
    wulf.write(
        "wulf.toml",
        r#"
[plugin.customize.config]
root-password-hash = "$6$wulf$abcdefghijklmnopqrstuv"
files = [
    { path = "/etc/motd", content = "managed by wulf\n" },
    { path = "/etc/wulf/site.conf", content = "site = test\n", mode = 0o600, uid = 7 },
]
"#,
    );
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "img",
        "--no-build",
    ]);
    let out = wulf.ok(&[
        "image",
        "build",
        "img",
        "--transform",
        "strip-docs,customize",
    ]);
    assert!(out.contains("built image `img`"), "{out}");
    assert_eq!(
        show(&wulf, "img")["build"]["transforms"],
        serde_json::json!(["strip-docs", "customize"])
    );

    let unpacked = scratch.path().join("unpacked");
    unpack(&initramfs(&wulf, "img"), &unpacked);
    let listing = tree(&unpacked);
    assert!(!listing.contains("usr/share/doc/pkg/README"), "{listing}");
    assert!(
        listing.contains("etc/motd f 0644 0:0 \"managed by wulf\\n\""),
        "{listing}"
    );
    assert!(
        listing.contains(
            "etc/shadow f 0640 0:42 \"root:$6$wulf$abcdefghijklmnopqrstuv:19000:0:99999:7:::\\n\""
        ),
        "{listing}"
    );
    assert!(
        listing.contains("etc/wulf d 0755 0:0"),
        "parents of added files are created: {listing}"
    );
    assert!(
        listing.contains("etc/wulf/site.conf f 0600 7:0 \"site = test\\n\""),
        "{listing}"
    );

    // The transforms are remembered: a plain rebuild gives the same bytes.
    let sha = built_sha(&wulf, "img");
    wulf.ok(&["image", "build", "img"]);
    assert_eq!(built_sha(&wulf, "img"), sha);

    // A transform that fails stops the build, names the plugin, and keeps the last archive.
    wulf.write(
        "wulf.toml",
        "[plugin.customize.config]\nroot-password-hash = \"hunter2\"\n",
    );
    let err = wulf.fails(&["image", "build", "img"]);
    assert!(
        err.contains("building image `img`")
            && err.contains("plugin `customize`")
            && err.contains("not a crypt(3) hash"),
        "{err}"
    );
    assert_eq!(built_sha(&wulf, "img"), sha);
    assert!(initramfs(&wulf, "img").exists());

    let err = wulf.fails(&["image", "build", "img", "--transform", "no-such-plugin"]);
    assert!(err.contains("--transform no-such-plugin"), "{err}");
    wulf.ok(&["image", "build", "img", "--transform", ""]);
    assert_eq!(
        show(&wulf, "img")["build"]["transforms"],
        serde_json::Value::Null
    );
}

#[test]
fn a_multi_platform_image_is_resolved_for_the_requested_platform() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = fixture_layout(&scratch.path().join("layout"));
    wulf_tests::oci::make_multi_arch(&layout, "v1");
    let registry = Registry::start();
    require_command("skopeo", "skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/multi/img:v1", registry.addr),
    ]));
    let wulf = Wulf::new();
    let reference = format!("docker://{}/multi/img:v1", registry.addr);
    wulf.ok(&[
        "image",
        "import",
        &reference,
        "host",
        "--insecure-http",
        "--no-build",
    ]);
    assert_eq!(show(&wulf, "host")["platform"], "linux/amd64");
    wulf.ok(&[
        "image",
        "import",
        &reference,
        "arm",
        "--insecure-http",
        "--no-build",
        "--platform",
        "linux/arm64/v8",
    ]);
    assert_eq!(show(&wulf, "arm")["platform"], "linux/arm64/v8");
    let err = wulf.fails(&[
        "image",
        "import",
        &reference,
        "rv",
        "--insecure-http",
        "--platform",
        "linux/riscv64",
    ]);
    assert!(
        err.contains(
            "has no image for platform linux/riscv64; it has: linux/amd64, linux/arm64/v8"
        ),
        "{err}"
    );
    // The same from the layout itself.
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "arm-layout",
        "--no-build",
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(show(&wulf, "arm-layout")["platform"], "linux/arm64/v8");
    assert_eq!(
        show(&wulf, "arm")["digest"],
        show(&wulf, "arm-layout")["digest"]
    );
}
