//! Image build: a real root filesystem packed into a gzip and a zstd initramfs by
//! `wulf image build`, side by side in one run with the classic pipelines
//! `find . | cpio -o -H newc | pigz` and `... | zstd -T0` at the same compression levels.
//! Also shows what the `strip-docs` transform saves on that image.
//!
//! Run with `cargo bench -p wulf-tests --bench image_build`. The rootfs is a Debian bookworm
//! `debootstrap --variant=minbase` with a kernel and its modules (about 750 MB), made once in
//! `target/bench-rootfs` (needs root and the Debian mirror of this machine's apt sources);
//! `WULF_BENCH_ROOTFS=<dir>` uses another tree. Target (issue: images): gzip at least 1.5x
//! faster than the pigz pipeline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use wulf_tests::{Wulf, best_of, require_command, workspace};

const RUNS: usize = 2;

fn rootfs() -> PathBuf {
    if let Some(dir) = std::env::var_os("WULF_BENCH_ROOTFS") {
        return PathBuf::from(dir);
    }
    let dir = workspace().join("target/bench-rootfs/bookworm");
    if dir.join("bin/sh").exists()
        && dir
            .join("boot")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    {
        return dir;
    }
    require_command("debootstrap", "debootstrap");
    println!("making the benchmark rootfs with debootstrap (once, about a minute)...");
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=linux-image-amd64",
            "bookworm",
        ])
        .arg(&dir)
        .arg(wulf_tests::debian::mirror())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("debootstrap: {e}"));
    assert!(
        status.success(),
        "debootstrap failed; set WULF_BENCH_ROOTFS to any root filesystem tree instead"
    );
    dir
}

fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .current_dir(dir)
        .args(["-c", script])
        .status()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(status.success(), "{script} failed");
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn show(wulf: &Wulf) -> serde_json::Value {
    serde_json::from_str(&wulf.ok(&["image", "show", "bench", "--json"])).unwrap_or_default()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn main() {
    for (cmd, pkg) in [("cpio", "cpio"), ("pigz", "pigz"), ("zstd", "zstd")] {
        require_command(cmd, pkg);
    }
    let root = rootfs();
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = scratch.path();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let wulf = Wulf::new();
    let started = Instant::now();
    wulf.ok(&[
        "image",
        "import",
        &root.display().to_string(),
        "bench",
        "--no-build",
    ]);
    let import = started.elapsed();
    let meta = show(&wulf);
    println!(
        "rootfs {}: {} entries, {:.0} MiB; imported in {:.2} s; {cores} cores",
        root.display(),
        meta["entries"],
        mib(meta["size"].as_u64().unwrap_or(0)),
        import.as_secs_f64()
    );

    let pigz_out = out.join("pigz.img.gz");
    let pigz = best_of(RUNS, || {
        sh(
            &root,
            &format!(
                "find . | cpio -o -H newc --quiet | pigz -6 > {}",
                pigz_out.display()
            ),
        )
    });
    let zstd_out = out.join("zstd.img.zst");
    let zstd = best_of(RUNS, || {
        sh(
            &root,
            &format!(
                "find . | cpio -o -H newc --quiet | zstd -q -3 -T0 > {}",
                zstd_out.display()
            ),
        )
    });

    let build = |args: &[&str]| {
        let mut full = vec!["image", "build", "bench"];
        full.extend_from_slice(args);
        best_of(RUNS, || {
            wulf.ok(&full);
        })
    };
    let ours_gzip = build(&["--compression", "gzip", "--level", "6"]);
    let gzip_size = show(&wulf)["build"]["size"].as_u64().unwrap_or(0);
    let gzip_entries = show(&wulf)["build"]["entries"].as_u64().unwrap_or(0);
    let gzip_uncompressed = show(&wulf)["build"]["uncompressed"].as_u64().unwrap_or(0);
    let ours_zstd = build(&["--compression", "zstd", "--level", "3"]);
    let zstd_size = show(&wulf)["build"]["size"].as_u64().unwrap_or(0);

    println!();
    println!("{:<44} {:>8} {:>10}", "gzip -6", "seconds", "MiB");
    println!(
        "{:<44} {:>8.2} {:>10.1}",
        "find | cpio -o -H newc | pigz -6 (baseline)",
        pigz.as_secs_f64(),
        mib(size(&pigz_out))
    );
    println!(
        "{:<44} {:>8.2} {:>10.1}",
        "wulf image build --compression gzip",
        ours_gzip.as_secs_f64(),
        mib(gzip_size)
    );
    println!(
        "{:<44} {:>8.2}x   (target >= 1.5x)",
        "speedup over the pigz pipeline",
        pigz.as_secs_f64() / ours_gzip.as_secs_f64()
    );
    println!();
    println!("{:<44} {:>8} {:>10}", "zstd -3", "seconds", "MiB");
    println!(
        "{:<44} {:>8.2} {:>10.1}",
        "find | cpio -o -H newc | zstd -T0 (baseline)",
        zstd.as_secs_f64(),
        mib(size(&zstd_out))
    );
    println!(
        "{:<44} {:>8.2} {:>10.1}",
        "wulf image build --compression zstd",
        ours_zstd.as_secs_f64(),
        mib(zstd_size)
    );
    println!(
        "{:<44} {:>8.2}x",
        "speedup over the zstd pipeline",
        zstd.as_secs_f64() / ours_zstd.as_secs_f64()
    );
    println!(
        "{:<44} {:>8.2}x",
        "wulf zstd over the pigz pipeline",
        pigz.as_secs_f64() / ours_zstd.as_secs_f64()
    );

    for (measure, ours, theirs, baseline) in [
        (
            "image build, gzip -6",
            ours_gzip,
            pigz,
            "find | cpio | pigz -6",
        ),
        (
            "image build, zstd -3",
            ours_zstd,
            zstd,
            "find | cpio | zstd -T0",
        ),
    ] {
        wulf_tests::report(
            "image_build",
            &format!("{measure}, debootstrap rootfs"),
            &format!("{:.2} s", ours.as_secs_f64()),
            &format!("{:.2} s `{baseline}`", theirs.as_secs_f64()),
            &format!("{:.2}x faster", theirs.as_secs_f64() / ours.as_secs_f64()),
            ">= 2x",
        );
    }

    // What the strip-docs transform saves on this image.
    wulf.ok(&[
        "image",
        "build",
        "bench",
        "--compression",
        "gzip",
        "--level",
        "6",
        "--transform",
        "strip-docs",
    ]);
    let stripped = show(&wulf)["build"].clone();
    println!();
    println!(
        "strip-docs: {} -> {} archive entries, {:.1} -> {:.1} MiB uncompressed, {:.1} -> {:.1} MiB gzip ({:.1}% smaller)",
        gzip_entries,
        stripped["entries"],
        mib(gzip_uncompressed),
        mib(stripped["uncompressed"].as_u64().unwrap_or(0)),
        mib(gzip_size),
        mib(stripped["size"].as_u64().unwrap_or(0)),
        100.0 * (1.0 - stripped["size"].as_f64().unwrap_or(0.0) / gzip_size.max(1) as f64)
    );
}
