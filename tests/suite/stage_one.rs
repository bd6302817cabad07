//! A two-stage boot of a real Debian, through faults: the node's iPXE script is `stage-one`,
//! so iPXE loads the kernel, the system overlay and `wulf-stage1`, which brings up the network
//! with the node's address, fetches the image in parallel ranges and switches root into it.
//!
//! Between the VM and `wulf serve` sits a TCP relay of this test's own that spoils the
//! download twice: it flips one byte of the first attempt's image (stage one must notice by the
//! hash and start again), and 30 MiB into the second attempt it has the test kill the server
//! (SIGKILL) and start it again on the same port (stage one must ask for the ranges again
//! until it is back). The node must still reach multi-user with its hostname and address.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use wulf_tests::{Wulf, free_tcp_port, require_command, require_file, test_cache};

const MAC: &str = "52:54:00:de:b1:05";
const ADDR: &str = "10.0.2.15";
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);
/// Image bytes of the second attempt after which the server is killed.
const KILL_AFTER: u64 = 30 << 20;

/// What the relay does to the traffic, and what it saw.
#[derive(Default)]
struct Faults {
    /// First ranges of the image seen (`bytes=0-`): one per stage-one attempt.
    attempts: AtomicU64,
    corrupted: AtomicBool,
    /// Image bytes relayed during the second attempt.
    second_attempt_bytes: AtomicU64,
    kill_sent: AtomicBool,
    kill: Mutex<Option<mpsc::Sender<()>>>,
}

/// Relays `listener`'s connections to `upstream`, spoiling image downloads as [`Faults`] says.
fn relay(listener: TcpListener, upstream: SocketAddr, faults: Arc<Faults>) {
    for client in listener.incoming().flatten() {
        let faults = Arc::clone(&faults);
        std::thread::spawn(move || {
            // The server is down (being restarted): the client sees a closed connection.
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            connection(client, server, &faults);
        });
    }
}

fn connection(client: TcpStream, server: TcpStream, faults: &Faults) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Client to server: the request's head tells what it is.
    let (head_tx, head_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        let mut head = Vec::new();
        let mut sent_head = false;
        while let Ok(n) = client_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !sent_head {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
                    sent_head = true;
                }
            }
            if server_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let head = head_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default();
    let image = head.starts_with("GET /image/");
    let attempt = if image && head.contains("Range: bytes=0-") {
        faults.attempts.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        faults.attempts.load(Ordering::SeqCst)
    };
    let corrupt = image && attempt == 1 && !faults.corrupted.swap(true, Ordering::SeqCst);
    let (mut server_in, mut client_out) = (server, client);
    let mut buf = [0u8; 16 << 10];
    let mut body_at: Option<u64> = None;
    let mut head_bytes = Vec::new();
    while let Ok(n) = server_in.read(&mut buf) {
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        // Where this chunk's body bytes start, and how much body came before them.
        let (start, before) = match body_at {
            Some(seen) => (0, seen),
            None => {
                head_bytes.extend_from_slice(chunk);
                match head_bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) => (end + 4 - (head_bytes.len() - n), 0),
                    None => (n + 1, 0), // still in the head
                }
            }
        };
        if start <= n {
            // Flip the byte 100 bytes into the body.
            if corrupt && before <= 100 && 100 < before + (n - start) as u64 {
                chunk[start + (100 - before) as usize] ^= 0x55;
            }
            body_at = Some(before + (n - start) as u64);
        }
        if image && attempt == 2 {
            let total = faults
                .second_attempt_bytes
                .fetch_add(n as u64, Ordering::SeqCst)
                + n as u64;
            if total > KILL_AFTER
                && !faults.kill_sent.swap(true, Ordering::SeqCst)
                && let Some(kill) = faults.kill.lock().unwrap().as_ref()
            {
                let _ = kill.send(());
            }
        }
        if client_out.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client_out.shutdown(std::net::Shutdown::Both);
}

fn qemu(port: u16, serial: &Path) -> Child {
    let netdev = format!("user,id=n0,bootfile=http://10.0.2.2:{port}/ipxe/{MAC}");
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-m", "3072", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-boot", "n"])
        .args(["-netdev", &netdev])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(serial).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64: {e}"))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_debian_node_boots_through_stage_one_despite_a_corrupt_download_and_a_server_restart() {
    for (command, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("setpriv", "util-linux"),
    ] {
        require_command(command, package);
    }
    require_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");
    let tree = crate::debian_node::debian_tree();
    let runs = test_cache().join("stage-one-node");
    let _ = std::fs::remove_dir_all(&runs);
    std::fs::create_dir_all(&runs).unwrap();
    let wulf = Wulf::new_in(&runs);
    let scratch = wulf.path().join("test");
    std::fs::create_dir_all(&scratch).unwrap();

    wulf.ok(&["image", "import", tree.to_str().unwrap(), "debian"]);
    let image: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "show", "debian", "--json"])).unwrap();
    assert!(
        image["build"]["stage1"][0]["modules"].as_u64().unwrap_or(0) > 10,
        "the build gathers the kernel's network drivers for stage one: {image}"
    );
    wulf.ok(&[
        "node",
        "add",
        "n0005",
        "--image",
        "debian",
        "--hwaddr",
        MAC,
        "--netdev",
        "eth0",
        "--ipaddr",
        ADDR,
        "--netmask",
        "255.255.255.0",
        "--gateway",
        "10.0.2.2",
        "--kernelargs",
        "console=ttyS0",
        "--ipxe",
        "stage-one",
    ]);
    wulf.ok(&["overlay", "build"]);

    let http_port = free_tcp_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let serve_args = ["-v", "--http-addr", http_addr.as_str(), "--no-tftp"];
    let mut server = Some(wulf.serve_logged_in(&[], &serve_args, &scratch.join("serve-1.log")));

    let (kill_tx, kill_rx) = mpsc::channel();
    let faults = Arc::new(Faults {
        kill: Mutex::new(Some(kill_tx)),
        ..Faults::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let upstream: SocketAddr = http_addr.parse().unwrap();
    {
        let faults = Arc::clone(&faults);
        std::thread::spawn(move || relay(listener, upstream, faults));
    }
    let serial = scratch.join("serial.log");
    let _vm = KillOnDrop(qemu(relay_port, &serial));
    let console =
        || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let started = Instant::now();
    let mut restarted = false;
    loop {
        if !restarted && kill_rx.try_recv().is_ok() {
            drop(server.take()); // SIGKILL, mid-download
            std::thread::sleep(Duration::from_secs(2));
            server = Some(wulf.serve_logged_in(&[], &serve_args, &scratch.join("serve-2.log")));
            restarted = true;
        }
        if console().contains("n0005 login:") {
            break;
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "the node did not reach a login prompt in {BOOT_TIMEOUT:?}\n--- console ---\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = console();
    let stage_one: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("wulf-stage1:"))
        .collect();
    let said = |what: &str| stage_one.iter().any(|l| l.contains(what));
    assert!(
        said(&format!("eth0 is up with {ADDR}/24 via 10.0.2.2")),
        "stage one brings up the booting interface with the node's address:\n{}",
        stage_one.join("\n")
    );
    assert!(
        said("attempt 1 of 5 failed: image:") && said("the download was corrupted"),
        "the flipped byte is caught by the hash:\n{}",
        stage_one.join("\n")
    );
    assert!(restarted, "the second attempt reached {KILL_AFTER} bytes");
    assert!(
        said("asking again in"),
        "ranges cut by the killed server are asked again:\n{}",
        stage_one.join("\n")
    );
    assert!(
        said("fetched and verified") && said("switching root to the image"),
        "{}",
        stage_one.join("\n")
    );
    assert!(
        !said("attempt 2 of 5 failed"),
        "the restart is ridden out within the second attempt:\n{}",
        stage_one.join("\n")
    );
    eprintln!(
        "stage one, as the node's console showed it:\n{}",
        stage_one.join("\n")
    );
    assert!(console.contains("wulf: provisioning n0005 from image debian"));
    assert!(console.contains("Reached target") && console.contains("Multi-User System"));

    // The restarted server heard stage one's last steps.
    let status = Command::new("curl")
        .args(["-sf", &format!("http://{http_addr}/status")])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let trace = status["nodes"]["n0005"]["trace"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stage1 = trace.iter().find(|t| t["stage"] == "stage1");
    assert_eq!(
        stage1.map(|t| t["file"].clone()),
        Some("stage one: switch-root".into()),
        "{status}"
    );
    drop(server);
}
