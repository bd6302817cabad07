use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use super::*;

/// One newc entry, as `wulf`'s packer and the kernel's own tools write them.
fn entry(out: &mut Vec<u8>, name: &str, mode: u32, ino: u32, nlink: u32, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        1_700_000_000,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn trailer(out: &mut Vec<u8>) {
    entry(out, "TRAILER!!!", 0, 0, 1, b"");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap_or_else(|e| panic!("{e}"));
    encoder.finish().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_image_then_an_overlay_unpack_like_the_kernel_does() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut image = Vec::new();
    entry(&mut image, ".", 0o040_755, 1, 2, b"");
    entry(&mut image, "usr", 0o040_755, 2, 2, b"");
    entry(&mut image, "usr/lib", 0o040_755, 3, 2, b"");
    // Merged /usr, with an absolute target: it must lead inside the root.
    entry(&mut image, "lib", 0o120_777, 4, 1, b"/usr/lib");
    entry(&mut image, "lib/libc.so", 0o100_755, 5, 1, b"ELF...");
    entry(&mut image, "etc/hostname", 0o100_644, 6, 1, b"image\n");
    entry(&mut image, "bin/sh", 0o104_755, 7, 2, b"#!shell");
    entry(&mut image, "bin/dash", 0o104_755, 7, 2, b"");
    entry(&mut image, "../escape", 0o100_644, 8, 1, b"no");
    trailer(&mut image);
    let mut overlay = Vec::new();
    entry(&mut overlay, "etc/hostname", 0o100_600, 1, 1, b"n0001\n");
    entry(&mut overlay, "init", 0o100_755, 2, 1, b"#!/bin/sh\n");
    trailer(&mut overlay);
    // Two gzip members, as a node's archive of shared and own segments is.
    let mut both = gzip(&image);
    both.extend(gzip(&overlay));

    let stats = unpack(&both[..], root.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.skipped, 1, "the entry climbing out is left out");
    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap_or_default();
    assert_eq!(read("usr/lib/libc.so"), "ELF...");
    assert_eq!(read("etc/hostname"), "n0001\n", "the later archive wins");
    assert_eq!(read("init"), "#!/bin/sh\n");
    assert!(
        !root
            .path()
            .parent()
            .unwrap_or(root.path())
            .join("escape")
            .exists()
    );
    let meta =
        |p: &str| std::fs::metadata(root.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(meta("etc/hostname").permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta("bin/sh").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/sh").ino(), meta("bin/dash").ino(), "a hard link");
    assert_eq!(read("bin/dash"), "#!shell");
    assert_eq!(meta("etc/hostname").mtime(), 1_700_000_000);
    assert_eq!(
        meta("usr").mtime(),
        1_700_000_000,
        "directory times are set last"
    );
}

#[test]
fn zstd_and_plain_archives_unpack_and_garbage_is_named() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut archive = Vec::new();
    entry(&mut archive, "a/b/c.txt", 0o100_644, 1, 1, b"zstd!");
    trailer(&mut archive);
    let compressed = zstd_frames(&archive);
    unpack(&compressed[..], root.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(root.path().join("a/b/c.txt")).unwrap_or_default(),
        "zstd!"
    );
    unpack(&archive[..], root.path()).unwrap_or_else(|e| panic!("{e}"));

    let error = unpack(&b"PK\x03\x04 a zip file"[..], root.path())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("not a gzip, zstd or cpio archive (it starts with [50, 4b, 03, 04, 20, 61])")
    );
    let mut cut = gzip(&archive);
    cut.truncate(cut.len() - 12);
    assert!(
        unpack(&cut[..], root.path()).is_err(),
        "a cut archive is an error"
    );
}

/// `data` as two zstd frames (ruzstd's encoder), to check that every frame is read.
fn zstd_frames(data: &[u8]) -> Vec<u8> {
    let (a, b) = data.split_at(data.len() / 2);
    let mut out = ruzstd::encoding::compress_to_vec(a, ruzstd::encoding::CompressionLevel::Fastest);
    out.extend(ruzstd::encoding::compress_to_vec(
        b,
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    out
}
