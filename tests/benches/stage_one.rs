//! Large images to a node: a 2 GiB image (incompressible, so the bytes on the wire are the
//! image's) fetched from `wulf serve` the way iPXE does it, one `GET` on one connection (curl,
//! as the baseline), against stage one's parallel `Range` requests with the SHA-256 check
//! (`wulf_stage1::fetch`, the code a node runs) with 1, 4 and 8 streams, and stage one's whole
//! path: fetched, checked and unpacked into a tmpfs (`/dev/shm`).
//!
//! iPXE checks nothing; `curl | sha256sum` shows what the check alone costs.
//!
//! Run with `cargo bench -p wulf-tests --bench stage_one`. Loopback only: this kernel has no
//! `netem`, and a QEMU guest under TCG measures its emulated CPU, not the transfer (the suite's
//! VM unpacks at 5-6 MiB/s). `WULF_BENCH_IMAGE_MIB` sets the image size (default 2048).

// A benchmark stops at the first thing that goes wrong, as the suite's tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use wulf_stage1::fetch;
use wulf_tests::{Wulf, best_of, require_command};

const RUNS: usize = 3;
const MAC: &str = "52:54:00:00:5e:01";

/// `mib` MiB of incompressible files under `dir` (xorshift: fast, and no compressor finds a
/// pattern in it).
fn incompressible_tree(dir: &std::path::Path, mib: u64) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "big\n").unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/sh"), "#!/bin/false\n").unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for file in 0..mib.div_ceil(32) {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(data.join(format!("{file:04}"))).unwrap(),
        );
        for _ in 0..32.min(mib - file * 32) {
            for word in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            out.write_all(&block).unwrap();
        }
    }
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / f64::from(1 << 20)
}

fn main() {
    require_command("curl", "curl");
    let mib: u64 = std::env::var("WULF_BENCH_IMAGE_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2048);
    let wulf = Wulf::new();
    let tree = wulf.path().join("tree");
    println!("writing a {mib} MiB image tree...");
    incompressible_tree(&tree, mib);
    wulf.ok(&[
        "image",
        "import",
        tree.to_str().unwrap(),
        "big",
        "--no-build",
    ]);
    std::fs::remove_dir_all(&tree).unwrap();
    wulf.ok(&["image", "build", "big", "--compression", "none"]);
    wulf.ok(&["node", "add", "n1", "--image", "big", "--hwaddr", MAC]);
    let server = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let authority = server.http.to_string();
    let target = format!("/image/{MAC}?assetkey=");
    let url = format!("http://{authority}{target}");

    let size: u64 = String::from_utf8_lossy(
        &Command::new("curl")
            .args(["-sfI", &url])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_owned())
    })
    .and_then(|v| v.parse().ok())
    .expect("the image's length");
    println!(
        "image: {} MiB on the wire; best of {RUNS} runs, loopback, {} cores",
        size >> 20,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let single = best_of(RUNS, || {
        let status = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &url])
            .status()
            .unwrap();
        assert!(status.success());
    });
    println!(
        "{:<52} {:>6.2} s {:>7.0} MiB/s  1.00x",
        "one GET, one stream (curl, as iPXE fetches)",
        single.as_secs_f64(),
        rate(size, single)
    );

    let hashed = best_of(RUNS, || {
        let status = Command::new("sh")
            .args(["-c", &format!("curl -sf '{url}' | sha256sum >/dev/null")])
            .status()
            .unwrap();
        assert!(status.success());
    });
    println!(
        "{:<52} {:>6.2} s {:>7.0} MiB/s  {:.2}x",
        "one GET, checked (curl | sha256sum)",
        hashed.as_secs_f64(),
        rate(size, hashed),
        single.as_secs_f64() / hashed.as_secs_f64()
    );

    for streams in [1, 4, 8] {
        let took = best_of(RUNS, || {
            let mut download = fetch::Download::start(
                &authority,
                &target,
                fetch::Options {
                    streams,
                    ..fetch::Options::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                download.verify().unwrap(),
                "the server gives the image's hash"
            );
        });
        println!(
            "{:<52} {:>6.2} s {:>7.0} MiB/s  {:.2}x",
            format!("stage one: {streams} stream(s) of 8 MiB ranges, verified"),
            took.as_secs_f64(),
            rate(size, took),
            single.as_secs_f64() / took.as_secs_f64()
        );
        wulf_tests::report(
            "stage_one",
            &format!(
                "a {} MiB image fetched by stage one, {streams} stream(s), verified",
                size >> 20
            ),
            &format!("{:.2} s", took.as_secs_f64()),
            &format!("{:.2} s one unchecked GET (as iPXE)", single.as_secs_f64()),
            &format!("{:.2}x", single.as_secs_f64() / took.as_secs_f64()),
            "",
        );
    }

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let took = best_of(RUNS, || {
        let root = shm.path().join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut download = fetch::Download::start(&authority, &target, fetch::Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        wulf_stage1::unpack::unpack(&mut download, &root).unwrap();
        assert!(download.verify().unwrap());
    });
    println!(
        "{:<52} {:>6.2} s {:>7.0} MiB/s  {:.2}x",
        "stage one: 4 streams, verified, unpacked",
        took.as_secs_f64(),
        rate(size, took),
        single.as_secs_f64() / took.as_secs_f64()
    );
    drop(server);
}
