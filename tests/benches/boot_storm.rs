//! Boot storm: thousands of simulated nodes at once, each fetching what a netbooting node
//! fetches from `wulf serve` (iPXE script, kernel, image, system and runtime overlays, one
//! connection per file as iPXE does) over loopback, from one async client process. Baseline,
//! in the same run: nginx (Debian's, `sendfile on`, its open-file cache on) serving the very
//! same bytes at the same paths as static files.
//!
//! `wulf serve` runs under an open-file limit of 20,000, so 10,000 clients at once leave it no
//! room for a descriptor per transfer besides the connection's: transfers of one file share
//! one. Reported: throughput against nginx, failed transfers, the time to the first byte of
//! `/ipxe` (p50, p99), and wulf's memory (idle, peak during the storm) and open files.
//!
//! Then admission control: 1,000 image streams at once while 16 probes fetch iPXE scripts,
//! with no limit and under `[server] max-image-streams`, reporting the scripts' latency, the
//! images' throughput and the queueing `/metrics` counted.
//!
//! Run with `cargo bench -p wulf-tests --bench boot_storm` (`WULF_BENCH_STORM=1000,10000`
//! chooses the storm sizes). Targets (issue: performance round two): zero failures and at
//! least nginx's throughput at 10,000 clients; RSS under 100 MiB; p99 script latency under
//! 100 ms while 1,000 images stream.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wulf_tests::{Wulf, metric, percentile, require_command};

const NODES: usize = 10_000;
const IMAGE_MIB: usize = 8;
const OPEN_FILES: u64 = 20_000;
const STAGES: [&str; 5] = ["ipxe", "kernel", "image", "system", "runtime"];
const IMAGE_STREAMS: usize = 1_000;
const PROBES: usize = 16;
const ADMISSION_SECONDS: u64 = 6;

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

/// One HTTP/1.0 GET: the body's length and the time to the response's first byte (from
/// before the connection was opened). A response that stalls for a minute is a failure.
async fn get(addr: SocketAddr, path: &str) -> Result<(u64, Duration), String> {
    get_body(addr, path, None).await
}

async fn get_body(
    addr: SocketAddr,
    path: &str,
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(u64, Duration), String> {
    tokio::time::timeout(STALL, exchange(addr, path, &mut keep))
        .await
        .map_err(|_| format!("{path}: no answer in {STALL:?}"))?
}

const STALL: Duration = Duration::from_secs(60);

async fn exchange(
    addr: SocketAddr,
    path: &str,
    keep: &mut Option<&mut Vec<u8>>,
) -> Result<(u64, Duration), String> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect for {path}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut first_byte = None;
    let mut body: Option<u64> = None;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("{path}: {e} after {} bytes", body.unwrap_or(0)))?;
        first_byte.get_or_insert_with(|| started.elapsed());
        if n == 0 {
            break;
        }
        match &mut body {
            Some(total) => {
                *total += n as u64;
                if let Some(keep) = keep {
                    keep.extend_from_slice(&buf[..n]);
                }
            }
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                        return Err(format!("{path}: {}", String::from_utf8_lossy(&head[..i])));
                    }
                    body = Some((head.len() - i - 4) as u64);
                    if let Some(keep) = keep {
                        keep.extend_from_slice(&head[i + 4..]);
                    }
                }
            }
        }
    }
    match (body, first_byte) {
        (Some(bytes), Some(ttfb)) => Ok((bytes, ttfb)),
        _ => Err(format!(
            "{path}: the connection closed before the headers ended"
        )),
    }
}

struct Storm {
    seconds: f64,
    bytes: u64,
    failures: Vec<String>,
    /// Time to the first byte of each node's `/ipxe`.
    script_ttfb: Vec<Duration>,
}

/// `nodes` simulated nodes at once, each fetching its five files in turn.
async fn storm(addr: SocketAddr, nodes: usize) -> Storm {
    let started = Instant::now();
    let tasks: Vec<_> = (0..nodes)
        .map(|n| {
            tokio::spawn(async move {
                let m = mac(n);
                let (mut bytes, mut ttfb) = (0, Duration::ZERO);
                for stage in STAGES {
                    let (b, t) = get(addr, &format!("/{stage}/{m}")).await?;
                    bytes += b;
                    if stage == "ipxe" {
                        ttfb = t;
                    }
                }
                Ok::<_, String>((bytes, ttfb))
            })
        })
        .collect();
    let mut result = Storm {
        seconds: 0.0,
        bytes: 0,
        failures: Vec::new(),
        script_ttfb: Vec::with_capacity(nodes),
    };
    for task in tasks {
        match task.await {
            Ok(Ok((bytes, ttfb))) => {
                result.bytes += bytes;
                result.script_ttfb.push(ttfb);
            }
            Ok(Err(e)) => result.failures.push(e),
            Err(e) => result.failures.push(e.to_string()),
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A line of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Samples a process's resident memory and open files while it lives: (peak RSS KiB, peak
/// open files), returned when `stop` is set.
fn sample(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut rss, mut files) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            rss = rss.max(status_kib(pid, "VmRSS:"));
            files = files.max(open_files(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        (rss, files)
    })
}

/// This process may hold as many sockets as the storm needs.
fn raise_own_open_files() {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={OPEN_FILES}:{OPEN_FILES}"),
        ])
        .status()
        .unwrap_or_else(|e| panic!("prlimit: {e}"));
    assert!(
        status.success(),
        "prlimit could not raise the open-file limit"
    );
}

struct Admission {
    script_latency: Vec<Duration>,
    image_bytes: u64,
    images: u64,
    seconds: f64,
    failures: Vec<String>,
}

/// `IMAGE_STREAMS` clients fetching images over and over, and `PROBES` fetching scripts,
/// for `ADMISSION_SECONDS`.
async fn streams_and_scripts(addr: SocketAddr) -> Admission {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let streams: Vec<_> = (0..IMAGE_STREAMS)
        .map(|n| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut bytes, mut images) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    bytes += get(addr, &format!("/image/{}", mac(n))).await?.0;
                    images += 1;
                }
                Ok::<_, String>((bytes, images))
            })
        })
        .collect();
    let probes: Vec<_> = (0..PROBES)
        .map(|p| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut latency = Vec::new();
                let mut n = p;
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    get(addr, &format!("/ipxe/{}", mac(n % NODES))).await?;
                    latency.push(asked.elapsed());
                    n += PROBES;
                }
                Ok::<_, String>(latency)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(ADMISSION_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = Admission {
        script_latency: Vec::new(),
        image_bytes: 0,
        images: 0,
        seconds: 0.0,
        failures: Vec::new(),
    };
    for probe in probes {
        match probe.await.map_err(|e| e.to_string()) {
            Ok(Ok(latency)) => result.script_latency.extend(latency),
            Ok(Err(e)) | Err(e) => result.failures.push(e),
        }
    }
    for stream in streams {
        match stream.await.map_err(|e| e.to_string()) {
            Ok(Ok((bytes, images))) => {
                result.image_bytes += bytes;
                result.images += images;
            }
            Ok(Err(e)) | Err(e) => result.failures.push(e),
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

fn metrics(addr: SocketAddr) -> String {
    let out = Command::new("curl")
        .args(["-s", "--fail", &format!("http://{addr}/metrics")])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failures(failures: &[String]) -> String {
    match failures.first() {
        None => "0".into(),
        Some(first) => format!("{} (first: {first})", failures.len()),
    }
}

fn main() {
    require_command("nginx", "nginx");
    require_command("prlimit", "util-linux");
    raise_own_open_files();
    let sizes: Vec<usize> = std::env::var("WULF_BENCH_STORM")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().unwrap_or_else(|e| panic!("{n}: {e}")))
                .collect()
        })
        .unwrap_or_else(|| vec![1_000, NODES]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let wulf = Wulf::new();
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
        nodes.push_str(&format!("[nodes.n{n:05}]\nprofiles = [\"default\"]\n[nodes.n{n:05}.network-devices.default]\nhwaddr = \"{}\"\nipaddr = \"10.0.{}.{}\"\nnetmask = \"255.255.0.0\"\n\n", mac(n), n >> 8, n & 0xff));
    }
    wulf.write("nodes.toml", &nodes);
    wulf.ok(&["overlay", "build"]);
    // Every simulated node connects from one loopback address.
    let config = |streams: Option<usize>| {
        let limit = streams.map_or(String::new(), |n| format!("max-image-streams = {n}\n"));
        wulf.write(
            "wulf.toml",
            &format!("[server]\nmax-connections-per-peer = 1000000\n{limit}"),
        );
    };
    config(None);
    let limit = format!("--nofile={OPEN_FILES}:{OPEN_FILES}");
    let serve = || {
        wulf.serve_in(
            &["prlimit", &limit, "--"],
            &["--http-addr", "127.0.0.1:0", "--no-tftp"],
        )
    };
    let served = serve();
    let wulf_addr = served.http;

    // nginx gets the same bytes at the same paths.
    let docroot = scratch.path().join("www");
    for stage in STAGES {
        std::fs::create_dir_all(docroot.join(stage)).unwrap_or_else(|e| panic!("{e}"));
    }
    let fetch = |path: String| async move {
        let mut body = Vec::new();
        get_body(wulf_addr, &path, Some(&mut body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        body
    };
    for shared in ["kernel", "image"] {
        let body = runtime.block_on(fetch(format!("/{shared}/{}", mac(0))));
        std::fs::write(docroot.join(format!("{shared}.bin")), body)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    runtime.block_on(async {
        for n in 0..NODES {
            let m = mac(n);
            for own in ["ipxe", "system", "runtime"] {
                let body = fetch(format!("/{own}/{m}")).await;
                std::fs::write(docroot.join(own).join(&m), body).unwrap_or_else(|e| panic!("{e}"));
            }
            for shared in ["kernel", "image"] {
                std::os::unix::fs::symlink(
                    docroot.join(format!("{shared}.bin")),
                    docroot.join(shared).join(&m),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    });
    let nginx = wulf_tests::nginx::Nginx::start(
        &docroot,
        "tcp_nopush on;\n  default_type application/octet-stream;\n  open_file_cache max=1000 inactive=20s;",
    );
    let nginx_addr = nginx.addr;
    let idle_kib = status_kib(served.pid(), "VmRSS:");

    println!("wulf on {wulf_addr} (open-file limit {OPEN_FILES}), nginx on {nginx_addr}");
    println!(
        "{NODES} nodes in the inventory; each simulated node fetches script, kernel (1 MiB), image (~{IMAGE_MIB} MiB), system and runtime overlays, one connection each; one async client process; 2 cores"
    );
    println!();
    println!(
        "{:>6}  {:>10} {:>10} {:>7}  {:>8} {:>8}  {:>10} {:>10}  {:>9}",
        "nodes",
        "wulf MiB/s",
        "nginx",
        "ratio",
        "failed",
        "(nginx)",
        "ipxe p50",
        "p99 ms",
        "nginx p99"
    );
    let mut storm_peak = (0, 0);
    for &n in &sizes {
        // The best of two each, alternating.
        let mut best: [Option<Storm>; 2] = [None, None];
        for _ in 0..2 {
            for (i, addr) in [wulf_addr, nginx_addr].into_iter().enumerate() {
                let stop = Arc::new(AtomicBool::new(false));
                let sampler = (i == 0).then(|| sample(served.pid(), Arc::clone(&stop)));
                let run = runtime.block_on(storm(addr, n));
                stop.store(true, Ordering::Relaxed);
                if let Some(sampler) = sampler {
                    let (rss, files) = sampler.join().unwrap_or_default();
                    storm_peak = (storm_peak.0.max(rss), storm_peak.1.max(files));
                }
                let better = best[i].as_ref().is_none_or(|b| {
                    (run.failures.len(), run.seconds) < (b.failures.len(), b.seconds)
                });
                if better {
                    best[i] = Some(run);
                }
            }
        }
        let [Some(mut w), Some(mut x)] = best else {
            unreachable!("two runs each")
        };
        let (wr, xr) = (
            w.bytes as f64 / w.seconds / 1048576.0,
            x.bytes as f64 / x.seconds / 1048576.0,
        );
        println!(
            "{n:>6}  {wr:>10.0} {xr:>10.0} {:>6.0}%  {:>8} {:>8}  {:>10.1} {:>10.1}  {:>9.1}",
            100.0 * wr / xr,
            w.failures.len(),
            x.failures.len(),
            ms(percentile(&mut w.script_ttfb, 0.5)),
            ms(percentile(&mut w.script_ttfb, 0.99)),
            ms(percentile(&mut x.script_ttfb, 0.99)),
        );
        wulf_tests::report(
            "boot_storm",
            &format!("boot storm, {n} nodes at once (5 files each)"),
            &format!(
                "{wr:.0} MiB/s, {} failed, `/ipxe` p99 {:.0} ms",
                w.failures.len(),
                ms(percentile(&mut w.script_ttfb, 0.99))
            ),
            &format!(
                "nginx {xr:.0} MiB/s, {} failed, p99 {:.0} ms",
                x.failures.len(),
                ms(percentile(&mut x.script_ttfb, 0.99))
            ),
            &format!("{:.0}%", 100.0 * wr / xr),
            if n >= NODES {
                ">= 100%, no failures"
            } else {
                ""
            },
        );
        for (who, run) in [("wulf", &w), ("nginx", &x)] {
            if !run.failures.is_empty() {
                println!("        {who} failed: {}", failures(&run.failures));
            }
        }
    }
    println!(
        "        (targets at 10,000: no failures, wulf/nginx >= 100%; ipxe = time to first byte)"
    );
    println!();
    println!(
        "wulf serve RSS: idle {:.1} MiB, peak during the storms {:.1} MiB, after {:.1} MiB (target < 100 MiB); peak open files {} of {OPEN_FILES}",
        idle_kib as f64 / 1024.0,
        storm_peak.0 as f64 / 1024.0,
        status_kib(served.pid(), "VmRSS:") as f64 / 1024.0,
        storm_peak.1,
    );
    wulf_tests::report(
        "boot_storm",
        &format!("`wulf serve` RSS, {NODES} nodes: idle, peak in the storms"),
        &format!(
            "{:.0} MiB, {:.0} MiB",
            idle_kib as f64 / 1024.0,
            storm_peak.0 as f64 / 1024.0
        ),
        "",
        "",
        "< 100 MiB",
    );
    drop(nginx);
    drop(served);
    let mut unlimited_p99 = Duration::ZERO;

    println!();
    println!(
        "Admission control: {IMAGE_STREAMS} clients fetching images over and over while {PROBES} probes fetch iPXE scripts, {ADMISSION_SECONDS} s each"
    );
    println!(
        "{:>18}  {:>10} {:>10} {:>10}  {:>11}  {:>8}  {:>22}",
        "max-image-streams",
        "script p50",
        "p99 ms",
        "max ms",
        "image MiB/s",
        "failed",
        "queued: waits, mean/max"
    );
    for streams in [None, Some(64), Some(16)] {
        config(streams);
        let served = serve();
        let mut run = runtime.block_on(streams_and_scripts(served.http));
        let text = metrics(served.http);
        let waits = metric(&text, "wulf_image_stream_waits_total");
        let seconds_of = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (total, max) = (
            seconds_of("wulf_image_stream_wait_seconds_total "),
            seconds_of("wulf_image_stream_wait_seconds_max "),
        );
        println!(
            "{:>18}  {:>10.1} {:>10.1} {:>10.1}  {:>11.0}  {:>8}  {:>8} {:>6.0}/{:.0} ms",
            streams.map_or("none".to_string(), |n| n.to_string()),
            ms(percentile(&mut run.script_latency, 0.5)),
            ms(percentile(&mut run.script_latency, 0.99)),
            ms(percentile(&mut run.script_latency, 1.0)),
            run.image_bytes as f64 / run.seconds / 1048576.0,
            run.failures.len(),
            waits,
            1e3 * total / (waits.max(1) as f64),
            1e3 * max,
        );
        if !run.failures.is_empty() {
            println!("        failed: {}", failures(&run.failures));
        }
        let p99 = percentile(&mut run.script_latency, 0.99);
        match streams {
            None => unlimited_p99 = p99,
            Some(limit) => wulf_tests::report(
                "boot_storm",
                &format!(
                    "`/ipxe` p99 while {IMAGE_STREAMS} images stream, max-image-streams = {limit}"
                ),
                &format!("{:.0} ms ({waits} waited, longest {:.1} s)", ms(p99), max),
                &format!("{:.0} ms with no limit", ms(unlimited_p99)),
                &format!(
                    "{:.0}x faster",
                    unlimited_p99.as_secs_f64() / p99.as_secs_f64().max(1e-6)
                ),
                "< 100 ms",
            ),
        }
        println!(
            "        ({} images, {} scripts)",
            run.images,
            run.script_latency.len()
        );
    }
    println!("        (target: script p99 < 100 ms under a limit)");
}
