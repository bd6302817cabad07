//! Boot storm: N simulated nodes at once, each fetching what a netbooting node fetches from
//! `wulf serve` (iPXE script, kernel, image, system and runtime overlays, one connection per
//! file as iPXE does) over loopback. Baseline, in the same run: nginx (Debian's, `sendfile
//! on`) serving the very same bytes at the same paths as static files. Also the peak memory
//! (VmHWM) of the wulf process.
//!
//! Run with `cargo bench -p wulf-tests --bench boot_storm`. Targets (issue: boot server): at
//! least 80% of nginx's throughput, wulf's RSS under 100 MiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use wulf_tests::{Wulf, require_command};

const NODES: usize = 1000;
const IMAGE_MIB: usize = 8;

fn mac(n: usize) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", n >> 8, n & 0xff)
}

/// Deterministic, incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One HTTP/1.0 GET; returns the body length, panicking on anything but 200 or a read error.
fn get(addr: SocketAddr, path: &str) -> u64 {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut head = Vec::new();
    let mut body_started = false;
    loop {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{path} from {addr}: {e} after {total} bytes"));
        if n == 0 {
            break;
        }
        if body_started {
            total += n as u64;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(
                    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
                    "{path}: {}",
                    String::from_utf8_lossy(&head[..i])
                );
                total += (head.len() - i - 4) as u64;
                body_started = true;
            }
        }
    }
    total
}

/// `nodes` simulated nodes at once; returns (seconds, bytes).
fn storm(addr: SocketAddr, nodes: usize) -> (f64, u64) {
    let started = Instant::now();
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let m = mac(n);
                    ["ipxe", "kernel", "image", "system", "runtime"]
                        .iter()
                        .map(|stage| get(addr, &format!("/{stage}/{m}")))
                        .sum::<u64>()
                })
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let bytes = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("a simulated node failed"))
        })
        .sum();
    (started.elapsed().as_secs_f64(), bytes)
}

fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    require_command("nginx", "nginx");
    let wulf = Wulf::new();
    // Every simulated node connects from this one loopback address.
    wulf.write(
        "wulf.toml",
        "[server]\nmax-connections-per-peer = 1000000\n",
    );
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    // An image: a 1 MiB kernel and IMAGE_MIB of incompressible files.
    let root = scratch.path().join("rootfs");
    for dir in ["bin", "boot", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(root.join("bin/sh"), b"#!sh").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("boot/vmlinuz-6.1.0-1-amd64"), noise(1 << 20, 1))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..IMAGE_MIB {
        std::fs::write(root.join(format!("data/{i}")), noise(1 << 20, i as u64 + 2))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    wulf.ok(&[
        "image",
        "import",
        root.to_str().unwrap_or_default(),
        "storm",
    ]);
    let mut nodes = String::from(
        "[profiles.default]\nimage = \"storm\"\nsystem-overlays = [\"wwinit\", \"hostname\", \"network\"]\nruntime-overlays = [\"hosts\"]\n\n",
    );
    for n in 0..NODES {
        nodes.push_str(&format!("[nodes.n{n:04}]\nprofiles = [\"default\"]\n[nodes.n{n:04}.network-devices.default]\nhwaddr = \"{}\"\nipaddr = \"10.0.{}.{}\"\nnetmask = \"255.255.0.0\"\n\n", mac(n), n >> 8, n & 0xff));
    }
    wulf.write("nodes.toml", &nodes);
    wulf.ok(&["overlay", "build"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let wulf_addr = served.http;

    // nginx gets the same bytes at the same paths.
    let docroot = scratch.path().join("www");
    for stage in ["ipxe", "kernel", "image", "system", "runtime"] {
        std::fs::create_dir_all(docroot.join(stage)).unwrap_or_else(|e| panic!("{e}"));
    }
    let fetch = |path: &str| -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-s", "--fail", &format!("http://{wulf_addr}{path}")])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{path}");
        out.stdout
    };
    std::fs::write(
        docroot.join("kernel.bin"),
        fetch(&format!("/kernel/{}", mac(0))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        docroot.join("image.bin"),
        fetch(&format!("/image/{}", mac(0))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for n in 0..NODES {
        let m = mac(n);
        std::fs::write(docroot.join("ipxe").join(&m), fetch(&format!("/ipxe/{m}")))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(docroot.join("kernel.bin"), docroot.join("kernel").join(&m))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(docroot.join("image.bin"), docroot.join("image").join(&m))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            docroot.join("system").join(&m),
            fetch(&format!("/system/{m}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            docroot.join("runtime").join(&m),
            fetch(&format!("/runtime/{m}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let nginx = wulf_tests::nginx::Nginx::start(
        &docroot,
        "tcp_nopush on;\n  default_type application/octet-stream;",
    );
    let nginx_addr = nginx.addr;
    // Same bytes from both.
    assert_eq!(
        get(nginx_addr, &format!("/image/{}", mac(7))),
        get(wulf_addr, &format!("/image/{}", mac(7)))
    );

    println!("wulf on {wulf_addr}, nginx on {nginx_addr}");
    println!(
        "{NODES} nodes in the inventory; each simulated node fetches script, kernel (1 MiB), image (~{IMAGE_MIB} MiB), system and runtime overlays; 2 cores"
    );
    println!();
    println!(
        "{:>6}  {:>14}  {:>14}  {:>10}",
        "nodes", "wulf MiB/s", "nginx MiB/s", "wulf/nginx"
    );
    for n in [100, NODES] {
        // Warm both once, then the best of two.
        let best = |addr| {
            (0..2)
                .map(|_| storm(addr, n))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((1.0, 0))
        };
        let (wt, wb) = best(wulf_addr);
        let (nt, nb) = best(nginx_addr);
        assert_eq!(wb, nb, "both sent the same bytes");
        let (w, x) = (wb as f64 / wt / 1048576.0, nb as f64 / nt / 1048576.0);
        println!(
            "{n:>6}  {w:>14.0}  {x:>14.0}  {:>9.0}%   (target >= 80%)",
            100.0 * w / x
        );
    }
    println!();
    println!(
        "wulf serve peak RSS (VmHWM): {:.1} MiB (target < 100 MiB)",
        vm_hwm(served.pid()) as f64 / 1024.0
    );
    drop(nginx);
}
