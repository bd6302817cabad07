//! iPXE script rate: how many `/ipxe/<mac>` requests a second `wulf serve` answers for a
//! 10,000-node inventory, over keep-alive connections on loopback (64 clients, each asking for
//! a different node every time). Baseline, in the same run: nginx (Debian's) serving the very
//! same scripts as static files at the same paths, to the same clients.
//!
//! Run with `cargo bench -p wulf-tests --bench ipxe_rate`. Target (issue: boot server): 20,000
//! requests a second on 2 cores.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wulf_tests::{Wulf, require_command};

const NODES: usize = 10_000;
const CLIENTS: usize = 64;
const SECONDS: f64 = 4.0;

fn mac(n: usize) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        n >> 16,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// Keep-alive GETs of `/ipxe/<mac>` for different nodes until `stop`; counts responses, and
/// returns the latency of each one asked while `measuring`.
fn client(
    addr: SocketAddr,
    first: usize,
    [stop, measuring]: [Arc<AtomicBool>; 2],
    done: Arc<AtomicU64>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut n = first;
    let mut line = String::new();
    let mut body = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        write!(
            writer,
            "GET /ipxe/{} HTTP/1.1\r\nHost: 10.0.0.1:9873\r\n\r\n",
            mac(n % NODES)
        )
        .unwrap_or_else(|e| panic!("{e}"));
        line.clear();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
        let mut length = 0usize;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("{e}"));
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{e}"));
        done.fetch_add(1, Ordering::Relaxed);
        if measuring.load(Ordering::Relaxed) {
            latencies.push(asked.elapsed());
        }
        n += 7919;
    }
    latencies
}

/// Requests a second from `CLIENTS` keep-alive connections over `SECONDS`, and the 99th
/// percentile of their latency.
fn rate(addr: SocketAddr) -> (f64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let flags = [Arc::clone(&stop), Arc::clone(&measuring)];
            let done = Arc::clone(&done);
            std::thread::spawn(move || client(addr, c * 131, flags, done))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    measuring.store(true, Ordering::Relaxed);
    let (start_count, started) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(SECONDS));
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_else(|_| panic!("a client failed")))
        .collect();
    (
        count as f64 / elapsed,
        wulf_tests::percentile(&mut latencies, 0.99),
    )
}

fn main() {
    require_command("nginx", "nginx");
    require_command("curl", "curl");
    let wulf = Wulf::new();
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut nodes = String::from(
        "[profiles.default]\nimage = \"rocky-9\"\nkernel = { args = [\"quiet\", \"crashkernel=no\"] }\n\n",
    );
    for n in 0..NODES {
        nodes.push_str(&format!(
            "[nodes.n{n:05}]\nprofiles = [\"default\"]\n[nodes.n{n:05}.network-devices.default]\nhwaddr = \"{}\"\n\n",
            mac(n)
        ));
    }
    wulf.write("nodes.toml", &nodes);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let wulf_addr = served.http;

    // nginx serves the same scripts, as wulf rendered them, at the same paths.
    let docroot = scratch.path().join("www/ipxe");
    std::fs::create_dir_all(&docroot).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..NODES {
        let m = mac(n);
        let out = Command::new("curl")
            .args([
                "-s",
                "--fail",
                "-H",
                "Host: 10.0.0.1:9873",
                &format!("http://{wulf_addr}/ipxe/{m}"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{m}");
        std::fs::write(docroot.join(&m), out.stdout).unwrap_or_else(|e| panic!("{e}"));
        if n == 0 {
            println!(
                "script size: {} bytes",
                std::fs::metadata(docroot.join(&m)).map_or(0, |m| m.len())
            );
        }
    }
    let nginx = wulf_tests::nginx::Nginx::start(
        &scratch.path().join("www"),
        "keepalive_requests 1000000;\n  default_type text/plain;\n  open_file_cache max=20000;",
    );
    let nginx_addr = nginx.addr;

    println!(
        "{NODES} nodes; {CLIENTS} keep-alive clients, each asking for another node every time; best of 2 runs of {SECONDS} s; 2 cores shared by server and clients"
    );
    let best = |addr| {
        (0..2)
            .map(|_| rate(addr))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or_default()
    };
    let (w, wp) = best(wulf_addr);
    let (x, xp) = best(nginx_addr);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "wulf {w:>9.0} req/s (p99 {:.2} ms)   nginx {x:>9.0} req/s (p99 {:.2} ms)   wulf/nginx {:>4.0}%   (target >= 100%)",
        ms(wp),
        ms(xp),
        100.0 * w / x
    );
    wulf_tests::report(
        "ipxe_rate",
        &format!("`/ipxe/<mac>` requests a second, {NODES} nodes, {CLIENTS} keep-alive clients"),
        &format!("{w:.0}/s, p99 {:.2} ms", ms(wp)),
        &format!("nginx {x:.0}/s, p99 {:.2} ms (static files)", ms(xp)),
        &format!("{:.0}%", 100.0 * w / x),
        ">= 100%",
    );
    drop(nginx);
}
