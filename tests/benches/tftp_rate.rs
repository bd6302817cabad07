//! TFTP transfer speed: wulf's TFTP server against Debian's `tftpd-hpa` (in.tftpd) on the same
//! files, a 1 MiB and a 30 MiB file at blksize 1468, over two links:
//!
//! - loopback, windowsize 1, 4 and 16;
//! - two network namespaces joined by a veth pair, the servers in one and the client in the
//!   other, with 0.5 ms of delay each way and 0.1 % loss each way, windowsize 1, 8, 32 and 64.
//!   This kernel has no `netem` qdisc, so the delay and the loss are a userspace delay line
//!   ([`DelayLine`]) at the client's end of the link: a UDP relay that holds every datagram
//!   0.5 ms and drops one in a thousand, in both directions, keeping TFTP's transfer ports (the
//!   client talks to the relay's port as if it were the server's).
//!
//! tftpd-hpa has no windowsize (RFC 7440): it answers without it and the client falls back to
//! lock-step, so its row is the windowsize-1 baseline for every wulf row. The client
//! acknowledges again on a duplicate or out-of-order block, as tftp-hpa's and iPXE's do, and
//! on its own 500 ms timeout.
//!
//! Run with `cargo bench -p wulf-tests --bench tftp_rate` (as root: it makes the namespaces).
//! Targets (issue: performance round two): on the lossy link, windowsize 32 at least 8x
//! tftpd-hpa and windowsize 1 no slower.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wulf_tests::netns::Netns;
use wulf_tests::{Wulf, free_udp_port, require_command, require_file};

const BLKSIZE: usize = 1468;

/// Client timeouts (a block never came): each costs the client's 500 ms wait.
static OUT_OF_ORDER: AtomicU64 = AtomicU64::new(0);
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// One read with options; returns the bytes received, checking every block arrives in order.
fn fetch(server: SocketAddr, file: &str, windowsize: u16) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rrq = vec![0, 1];
    for part in [
        file,
        "octet",
        "blksize",
        &BLKSIZE.to_string(),
        "tsize",
        "0",
        "windowsize",
        &windowsize.to_string(),
    ] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    socket
        .send_to(&rrq, server)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 65536];
    let (n, peer) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut window = 1u16;
    let mut blksize = 512usize;
    let mut expected: u16 = 1;
    let mut received = 0usize;
    let ack = |block: u16| [0, 4, (block >> 8) as u8, block as u8];
    match u16::from_be_bytes([buf[0], buf[1]]) {
        6 => {
            let fields: Vec<&[u8]> = buf[2..n].split(|b| *b == 0).collect();
            for pair in fields.chunks(2) {
                if let [k, v] = pair {
                    let v: usize = std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    match &*String::from_utf8_lossy(k).to_ascii_lowercase() {
                        "blksize" => blksize = v,
                        "windowsize" => window = v as u16,
                        _ => {}
                    }
                }
            }
            socket
                .send_to(&ack(0), peer)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        3 => {
            // No options: this is block 1 of a plain 512-byte lock-step transfer.
            received += n - 4;
            socket
                .send_to(&ack(1), peer)
                .unwrap_or_else(|e| panic!("{e}"));
            if n - 4 < blksize {
                return received;
            }
            expected = 2;
        }
        other => panic!(
            "{file}: opcode {other}: {}",
            String::from_utf8_lossy(&buf[4..n])
        ),
    }
    let mut in_window = 0u16;
    loop {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => {
                // A lost packet: ask again from the last block we have.
                TIMEOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                socket
                    .send_to(&ack(expected.wrapping_sub(1)), peer)
                    .unwrap_or_else(|e| panic!("{e}"));
                in_window = 0;
                continue;
            }
        };
        if u16::from_be_bytes([buf[0], buf[1]]) != 3 {
            panic!("{file}: unexpected packet {:?}", &buf[..n.min(16)]);
        }
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        if block != expected {
            // A duplicate (our ACK was lost) or a gap (a block was): say where we are.
            OUT_OF_ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            socket
                .send_to(&ack(expected.wrapping_sub(1)), peer)
                .unwrap_or_else(|e| panic!("{e}"));
            in_window = 0;
            continue;
        }
        received += n - 4;
        expected = expected.wrapping_add(1);
        in_window += 1;
        let last = n - 4 < blksize;
        if last || in_window == window {
            socket
                .send_to(&ack(block), peer)
                .unwrap_or_else(|e| panic!("{e}"));
            in_window = 0;
        }
        if last {
            return received;
        }
    }
}

/// Where a datagram from `source` goes, if anywhere.
type Route = Box<dyn Fn(SocketAddr, &[u8]) -> Option<SocketAddr> + Send>;

/// A lossy link with delay, in user space: datagrams from the client to `listen` go to the
/// server (its request to `server`, the rest to the transfer port it answered from), and the
/// server's back to the client from `listen`; each one is held `delay` and one in `1/loss` is
/// dropped, in both directions. One client at a time (a new request starts over). Started
/// inside the client's namespace: it listens on that namespace's loopback and reaches the
/// server over the veth.
struct DelayLine {
    listen: SocketAddr,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DelayLine {
    fn start(server: SocketAddr, delay: Duration, loss: f64) -> DelayLine {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let back = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
        for socket in [&front, &back] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let listen = front.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Where each side's datagrams go: the client's address, the server's transfer port.
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let transfer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let (front, back) = (Arc::new(front), Arc::new(back));

        // One direction: receive, stamp, and a sender thread that releases each datagram when
        // its time comes (the delay is constant, so arrival order is release order).
        let direction = |from: Arc<UdpSocket>, to: Arc<UdpSocket>, seed: u64, route: Route| {
            let (queue, held) = mpsc::channel::<(Instant, SocketAddr, Vec<u8>)>();
            let (stop, dropped) = (Arc::clone(&stop), Arc::clone(&dropped));
            std::thread::spawn(move || {
                let mut rng = seed;
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, source)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    // xorshift64: a fixed seed, so runs drop alike.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if (rng % 1_000_000) as f64 / 1_000_000.0 < loss {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(dest) = route(source, &buf[..n]) {
                        let _ = queue.send((Instant::now() + delay, dest, buf[..n].to_vec()));
                    }
                }
            });
            std::thread::spawn(move || {
                for (due, dest, datagram) in held {
                    // Sleep most of the wait, spin the rest: sleeps overshoot by ~50 µs.
                    while let Some(left) = due.checked_duration_since(Instant::now()) {
                        if left > Duration::from_micros(150) {
                            std::thread::sleep(left - Duration::from_micros(100));
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    let _ = to.send_to(&datagram, dest);
                }
            });
        };
        let (c, t) = (Arc::clone(&client), Arc::clone(&transfer));
        direction(
            Arc::clone(&front),
            Arc::clone(&back),
            0x9e37_79b9_7f4a_7c15,
            Box::new(move |source, datagram| {
                // A read request starts a transfer: to the server's well-known port.
                if datagram.starts_with(&[0, 1]) {
                    *c.lock().ok()? = Some(source);
                    *t.lock().ok()? = None;
                    return Some(server);
                }
                *t.lock().ok()?
            }),
        );
        let (c, t) = (Arc::clone(&client), Arc::clone(&transfer));
        direction(
            back,
            front,
            0xd1b5_4a32_d192_ed03,
            Box::new(move |source, _| {
                t.lock().ok()?.get_or_insert(source);
                *c.lock().ok()?
            }),
        );
        DelayLine {
            listen,
            dropped,
            stop,
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// MiB/s for `file`: best of `runs`.
fn speed(server: SocketAddr, file: &str, size: usize, windowsize: u16) -> f64 {
    best_of(3, server, file, size, windowsize)
}

fn best_of(runs: usize, server: SocketAddr, file: &str, size: usize, windowsize: u16) -> f64 {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(
                fetch(server, file, windowsize),
                size,
                "{file} from {server}"
            );
            size as f64 / started.elapsed().as_secs_f64() / 1048576.0
        })
        .fold(0.0, f64::max)
}

/// A table's title and column names.
fn table_header(title: &str) {
    println!("{title}");
    println!();
    println!(
        "{:>10}  {:>10}  {:>12}  {:>16}  {:>8}",
        "file", "windowsize", "wulf MiB/s", "tftpd-hpa MiB/s", "ratio"
    );
}

/// Debian's tftpd-hpa serving `root` at `addr`, run under `prefix` (e.g. `ip netns exec NS`).
fn tftpd_hpa(prefix: &[&str], addr: SocketAddr, root: &std::path::Path) -> std::process::Child {
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg("/usr/sbin/in.tftpd");
            command
        }
        None => Command::new("/usr/sbin/in.tftpd"),
    };
    command
        .args([
            "--foreground",
            "--listen",
            "--address",
            &addr.to_string(),
            "--secure",
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("in.tftpd: {e}"))
}

fn main() {
    require_file("/usr/sbin/in.tftpd", "tftpd-hpa");
    require_command("ip", "iproute2");
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = [("1mib.bin", 1usize << 20), ("30mib.bin", 30 << 20)];
    for (name, size) in files {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.path().join(name), data).unwrap_or_else(|e| panic!("{e}"));
    }
    // tftpd-hpa drops privileges to this user; the files must be readable by it.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));

    let wulf = Wulf::new();
    let tftp_port = free_udp_port();
    let served = wulf.serve(&[
        "--http-addr",
        "127.0.0.1:0",
        "--tftp-addr",
        &format!("127.0.0.1:{tftp_port}"),
        "--tftp-root",
        root.path().to_str().unwrap_or_default(),
    ]);
    let wulf_addr: SocketAddr = format!("127.0.0.1:{tftp_port}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));

    let hpa_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut hpa = tftpd_hpa(&[], hpa_addr, root.path());
    std::thread::sleep(Duration::from_millis(300));

    table_header(&format!(
        "blksize {BLKSIZE}, loopback, best of 3; tftpd-hpa does not do windowsize (lock-step)"
    ));
    for (name, size) in files {
        let baseline = speed(hpa_addr, name, size, 1);
        for windowsize in [1, 4, 16] {
            let ours = speed(wulf_addr, name, size, windowsize);
            println!(
                "{name:>10}  {windowsize:>10}  {ours:>12.1}  {baseline:>16.1}  {:>7.2}x   timeouts {} out-of-order {}",
                ours / baseline,
                TIMEOUTS.swap(0, std::sync::atomic::Ordering::Relaxed),
                OUT_OF_ORDER.swap(0, std::sync::atomic::Ordering::Relaxed)
            );
        }
    }

    // The lossy link: one run each (a 30 MiB lock-step transfer takes half a minute), with
    // both servers moved into a namespace of their own (one state serves once at a time).
    drop(served);
    let _ = hpa.kill();
    let _ = hpa.wait();
    let (far, near) = Netns::pair("wulf-tftp", "10.213.0.1/30", "10.213.0.2/30");
    let (wulf_addr, hpa_addr): (SocketAddr, SocketAddr) = (
        SocketAddr::from(([10, 213, 0, 1], 6969)),
        SocketAddr::from(([10, 213, 0, 1], 6970)),
    );
    let served = wulf.serve_in(
        &far.exec(),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--tftp-addr",
            &wulf_addr.to_string(),
            "--tftp-root",
            root.path().to_str().unwrap_or_default(),
        ],
    );
    let mut hpa = tftpd_hpa(&far.exec(), hpa_addr, root.path());
    std::thread::sleep(Duration::from_millis(300));
    let delay = Duration::from_micros(500);
    let loss = 0.001;
    println!();
    table_header(&format!(
        "blksize {BLKSIZE}, two network namespaces joined by a veth pair, through a userspace delay line: 0.5 ms each way, 0.1 % loss each way (no netem in this kernel), one run each"
    ));
    near.inside(|| {
        for (name, size) in files {
            let line = DelayLine::start(hpa_addr, delay, loss);
            let baseline = best_of(1, line.listen, name, size, 1);
            let hpa_dropped = line.dropped.swap(0, Ordering::Relaxed);
            let hpa_timeouts = TIMEOUTS.swap(0, Ordering::Relaxed);
            OUT_OF_ORDER.store(0, Ordering::Relaxed);
            drop(line);
            for windowsize in [1, 8, 32, 64] {
                let line = DelayLine::start(wulf_addr, delay, loss);
                let ours = best_of(1, line.listen, name, size, windowsize);
                println!(
                    "{name:>10}  {windowsize:>10}  {ours:>12.2}  {baseline:>16.2}  {:>7.2}x   dropped {} (tftpd-hpa {hpa_dropped}), client timeouts {} (tftpd-hpa {hpa_timeouts})",
                    ours / baseline,
                    line.dropped.load(Ordering::Relaxed),
                    TIMEOUTS.swap(0, Ordering::Relaxed),
                );
                OUT_OF_ORDER.store(0, Ordering::Relaxed);
                let target = match windowsize {
                    1 => ">= 1x",
                    32 => ">= 8x",
                    _ => "",
                };
                wulf_tests::report(
                    "tftp_rate",
                    &format!(
                        "TFTP {name}, windowsize {windowsize}, namespaces 1 ms RTT apart, 0.1 % loss each way"
                    ),
                    &format!("{ours:.2} MiB/s"),
                    &format!("tftpd-hpa {baseline:.2} MiB/s (lock-step)"),
                    &format!("{:.1}x", ours / baseline),
                    target,
                );
            }
        }
    });

    drop(served);
    let _ = hpa.kill();
    let _ = hpa.wait();
}
