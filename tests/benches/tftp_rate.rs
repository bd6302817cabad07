//! TFTP transfer speed: wulf's TFTP server against Debian's `tftpd-hpa` (in.tftpd) on the same
//! files over loopback: a 1 MiB and a 30 MiB file, blksize 1468, windowsize 1, 4 and 16.
//! tftpd-hpa has no windowsize (RFC 7440): it answers without it and the client falls back to
//! lock-step, so its row is the windowsize-1 baseline for every wulf row.
//!
//! Run with `cargo bench -p wulf-tests --bench tftp_rate`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wulf_tests::{Wulf, free_udp_port, require_file};

const BLKSIZE: usize = 1468;

/// Client timeouts (a block never came): each costs the client's 500 ms wait.
static OUT_OF_ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TIMEOUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
            OUT_OF_ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// MiB/s for `file`: best of 3.
fn speed(server: SocketAddr, file: &str, size: usize, windowsize: u16) -> f64 {
    (0..3)
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

fn main() {
    require_file("/usr/sbin/in.tftpd", "tftpd-hpa");
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

    let hpa_port = free_udp_port();
    let mut hpa = Command::new("/usr/sbin/in.tftpd")
        .args([
            "--foreground",
            "--listen",
            "--address",
            &format!("127.0.0.1:{hpa_port}"),
            "--secure",
            root.path().to_str().unwrap_or_default(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("in.tftpd: {e}"));
    let hpa_addr: SocketAddr = format!("127.0.0.1:{hpa_port}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));

    println!(
        "blksize {BLKSIZE}, loopback, best of 3; tftpd-hpa does not do windowsize (lock-step)"
    );
    println!();
    println!(
        "{:>10}  {:>10}  {:>12}  {:>16}  {:>8}",
        "file", "windowsize", "wulf MiB/s", "tftpd-hpa MiB/s", "ratio"
    );
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
    drop(served);
    let _ = hpa.kill();
    let _ = hpa.wait();
}
