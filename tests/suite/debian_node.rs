//! A real distribution, netbooted: Debian bookworm made by `debootstrap` (systemd, udev,
//! openssh-server, iproute2, dbus and Debian's kernel; the tree is kept under the test cache),
//! imported with `wulf image import <dir>`, booted in QEMU over HTTP with the default profile's
//! overlays, and checked from outside over `ssh` through a slirp `hostfwd`, with root's key from
//! the `ssh-authorized-keys` overlay and the cluster's host key pinned from `wulf configure ssh`.
//!
//! The booted node is one VM for the whole test binary ([`node`]): tests that need a running
//! node share it. Software emulation: reaching multi-user takes 1.5-2.5 min.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use wulf_tests::oci::run;
use wulf_tests::{Wulf, debian, free_tcp_port, require_command, require_file, test_cache};

const MAC: &str = "52:54:00:de:b1:01";
const ADDR: &str = "10.0.2.15";
/// How long the node may take to answer ssh, from power-on.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// The image's tree: what a diskless Debian node runs, and (`etc/warewulf/excludes`) what of it
/// a node does not need in RAM: docs, apt's caches, the installer's initrd, and kernel modules
/// for sound, graphics, media, wireless and the like.
pub(crate) fn debian_tree() -> PathBuf {
    let include = [
        "systemd",
        "systemd-sysv",
        "udev",
        "dbus",
        "linux-image-amd64",
        "openssh-server",
        "iproute2",
        "netbase",
        "kmod",
    ];
    debian::tree_with("bookworm-node-v1", &include, |tree| {
        let mut excludes = String::from(
            "# Not needed on a diskless test node.\n/boot/initrd.img-*\n/usr/share/doc/\n\
             /usr/share/man/\n/usr/share/locale/\n/var/cache/apt/\n/var/lib/apt/lists/\n",
        );
        for dir in [
            "sound",
            "drivers/gpu",
            "drivers/media",
            "drivers/net/wireless",
            "drivers/infiniband",
            "drivers/staging",
            "drivers/bluetooth",
            "drivers/iio",
            "drivers/isdn",
            "net/wireless",
            "net/mac80211",
            "net/bluetooth",
        ] {
            excludes.push_str(&format!("/usr/lib/modules/*/kernel/{dir}\n"));
        }
        std::fs::create_dir_all(tree.join("etc/warewulf")).unwrap();
        std::fs::write(tree.join("etc/warewulf/excludes"), excludes).unwrap();
    })
}

/// The booted node and how to reach it.
pub(crate) struct Node {
    pub wulf: Wulf,
    /// `127.0.0.1:<port>` forwards to the node's port 22.
    ssh_port: u16,
    /// root's private key; its public half is the node's `ssh-key-test` tag.
    key: PathBuf,
    /// The cluster's host keys as `known_hosts` for `[127.0.0.1]:<port>`.
    known_hosts: PathBuf,
    serial: PathBuf,
    /// `wulf serve`'s HTTP address.
    pub http: std::net::SocketAddr,
    /// Seconds from power-on until ssh answered.
    pub booted_in: f64,
}

impl Node {
    /// `ssh root@node <command>`, checking the host key against the cluster's.
    pub(crate) fn ssh(&self, command: &str) -> Output {
        self.ssh_with(&self.key, command)
    }

    /// `ssh root@node <command>` with the private key `key`.
    pub(crate) fn ssh_with(&self, key: &Path, command: &str) -> Output {
        Command::new("ssh")
            .args(["-p", &self.ssh_port.to_string(), "-i"])
            .arg(key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "HostKeyAlgorithms=ssh-ed25519",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "-o",
            ])
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["root@127.0.0.1", command])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running ssh: {e}"))
    }

    /// `ssh root@node <command>`, expected to succeed: its stdout.
    pub(crate) fn ok(&self, command: &str) -> String {
        let out = self.ssh(command);
        assert!(
            out.status.success(),
            "`{command}` on the node failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ssh root@node <command>`: what it printed, whatever its exit status.
    pub(crate) fn text(&self, command: &str) -> String {
        let out = self.ssh(command);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `wulf serve`'s log (`-v`) so far.
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.wulf.path().join("test/serve.log")).unwrap_or_default()
    }

    /// The node's serial console so far.
    pub(crate) fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }
}

/// The one booted node of this test binary, booted by the first test that asks.
pub(crate) fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(boot)
}

/// Everything the VM and the server need, run from a thread that lives as long as the test
/// binary: `wulf serve` and QEMU die with it (`setpriv --pdeathsig` ties them to that thread).
fn boot() -> Node {
    for (command, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("setpriv", "util-linux"),
    ] {
        require_command(command, package);
    }
    require_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");
    let tree = debian_tree();
    // The state of a node that outlives every test: under the test cache, the last run's
    // removed first.
    let runs = test_cache().join("debian-node");
    let _ = std::fs::remove_dir_all(&runs);
    std::fs::create_dir_all(&runs).unwrap();
    let wulf = Wulf::new_in(&runs);
    let scratch = wulf.path().join("test");
    std::fs::create_dir_all(&scratch).unwrap();

    let started = Instant::now();
    wulf.ok(&["image", "import", tree.to_str().unwrap(), "debian"]);
    eprintln!(
        "debian node: image imported and built in {:.0?}",
        started.elapsed()
    );
    let key = scratch.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "wulf-test", "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    wulf.ok(&[
        "node",
        "add",
        "n0001",
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
        "--tagadd",
        &format!("ssh-key-test={}", public.trim()),
        "--runtime-overlays",
        "ssh-authorized-keys,site",
    ]);
    // A site file in the runtime overlay, which a test takes away while the node runs.
    wulf.ok(&["overlay", "create", "site"]);
    wulf.write("overlays/site/etc/wulf-test/marker", "boot-time\n");
    // Another node, for /etc/hosts.
    wulf.ok(&["node", "add", "n0002", "--ipaddr", "10.0.2.16"]);
    let keys: Value = serde_json::from_str(&wulf.ok(&["configure", "ssh", "--json"])).unwrap();
    let ssh_port = free_tcp_port();
    let known_hosts = scratch.join("known_hosts");
    let known: String = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("[127.0.0.1]:{ssh_port} {}\n", k["public"].as_str().unwrap()))
        .collect();
    std::fs::write(&known_hosts, known).unwrap();
    wulf.ok(&["overlay", "build"]);

    let serial = scratch.join("serial.log");
    let (sender, receiver) = std::sync::mpsc::channel();
    let state = wulf.path().to_path_buf();
    let serial_log = serial.clone();
    std::thread::Builder::new()
        .name("debian-node".into())
        .spawn(move || {
            let server = Wulf::at(&state).serve_logged_in(
                &["setpriv", "--pdeathsig", "KILL"],
                &["-v", "--http-addr", "127.0.0.1:0", "--no-tftp"],
                &state.join("test/serve.log"),
            );
            let http = server.http;
            let qemu = qemu(http.port(), ssh_port, &serial_log);
            let _ = sender.send(http);
            // Keeps the server and the VM (and this thread, their parent) for the binary's life.
            keep(server, qemu);
        })
        .unwrap();
    let http = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the server and the VM start");
    let powered_on = Instant::now();
    let node = Node {
        wulf,
        http,
        ssh_port,
        key,
        known_hosts,
        serial,
        booted_in: 0.0,
    };
    loop {
        if node.ssh("true").status.success() {
            break;
        }
        if powered_on.elapsed() > BOOT_TIMEOUT {
            let status = Command::new("curl")
                .args(["-s", &format!("http://{http}/status")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "the Debian node did not answer ssh within {BOOT_TIMEOUT:?}\n--- /status ---\n\
                 {status}\n--- serial console ---\n{}",
                node.console()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let booted_in = powered_on.elapsed().as_secs_f64();
    eprintln!("debian node: ssh answered {booted_in:.0} s after power-on");
    Node { booted_in, ..node }
}

/// The VM: BIOS, iPXE from the NIC's ROM, the node's script from wulf over slirp, port 22
/// forwarded to `ssh_port`, the serial console to `serial`.
fn qemu(http_port: u16, ssh_port: u16, serial: &Path) -> Child {
    let netdev = format!(
        "user,id=n0,bootfile=http://10.0.2.2:{http_port}/ipxe/{MAC},\
         hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    );
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

/// Parks the calling thread for good, holding what it started.
fn keep<T>(held: T, mut qemu: Child) -> ! {
    let _ = qemu.wait();
    let _held = held;
    loop {
        std::thread::park();
    }
}

#[test]
fn a_real_debian_reaches_multi_user_with_what_wulf_gave_it() {
    let node = node();
    // Multi-user is reached, and nothing failed.
    let state = node.ssh("systemctl is-system-running --wait");
    let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
    let failed = node.ok("systemctl --failed --plain --no-legend --no-pager");
    assert!(
        state == "running" && failed.trim().is_empty(),
        "system {state}; failed units:\n{failed}\n--- console ---\n{}",
        node.console()
    );
    assert_eq!(
        node.ok("systemctl is-active multi-user.target").trim(),
        "active"
    );
    // The hostname from the node record.
    assert_eq!(node.ok("hostname").trim(), "n0001");
    // The static address on the interface with the node's MAC, named as the record says, by
    // systemd-networkd, which the network overlay enabled.
    let links = node.ok("ip -o link show");
    let line = links
        .lines()
        .find(|l| l.contains(MAC))
        .unwrap_or_else(|| panic!("no interface has {MAC}:\n{links}"));
    assert!(line.contains(" eth0: "), "{line}");
    let addr = node.ok("ip -o -4 addr show dev eth0");
    assert!(addr.contains(&format!("inet {ADDR}/24")), "{addr}");
    assert_eq!(
        node.ok("systemctl is-active systemd-networkd").trim(),
        "active"
    );
    // /etc/hosts lists the cluster.
    let hosts = node.ok("cat /etc/hosts");
    for entry in [format!("{ADDR} n0001"), "10.0.2.16 n0002".to_owned()] {
        assert!(
            hosts.lines().any(|l| l.starts_with(&entry)),
            "{entry}:\n{hosts}"
        );
    }
    // root's key came in the runtime overlay without loosening /root (0700, as in the image).
    assert_eq!(node.ok("stat -c %a /root").trim(), "700");
    // sshd runs with the cluster's host key (ssh itself pinned it; the fingerprint too).
    assert_eq!(node.ok("systemctl is-active ssh").trim(), "active");
    let keys: Value = serde_json::from_str(&node.wulf.ok(&["configure", "ssh", "--json"])).unwrap();
    let ed25519 = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["type"] == "ed25519")
        .unwrap();
    let on_node = node.ok("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
    assert!(
        on_node.contains(ed25519["fingerprint"].as_str().unwrap()),
        "{on_node} vs {ed25519}"
    );
    eprintln!(
        "debian node: multi-user, network, hosts and sshd checked ({:.0} s to ssh)",
        node.booted_in
    );
}

#[test]
fn the_running_node_follows_its_runtime_overlay_and_knows_when_to_reboot() {
    let node = node();
    // ssh may answer before the last units (the agent, after network-online) have started.
    node.ssh("systemctl is-system-running --wait");
    assert_eq!(node.ok("systemctl is-active wulf-agent").trim(), "active");
    assert_eq!(node.ok("cat /etc/wulf-test/marker"), "boot-time\n");

    // A second admin key, and a site file taken away, while the node runs.
    let scratch = tempfile::tempdir().unwrap();
    let second = scratch.path().join("id_second");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "second", "-f"])
        .arg(&second));
    let public = std::fs::read_to_string(second.with_extension("pub")).unwrap();
    let changed = Instant::now();
    node.wulf.ok(&[
        "node",
        "set",
        "n0001",
        "--tagadd",
        &format!("ssh-key-second={}", public.trim()),
    ]);
    std::fs::remove_file(node.wulf.path().join("overlays/site/etc/wulf-test/marker")).unwrap();
    wulf_tests::wait_for(
        "the new key and the removal on the running node",
        Duration::from_secs(60),
        || {
            format!(
                "--- the agent's journal ---\n{}\n--- wulf serve ---\n{}",
                node.text("journalctl -u wulf-agent --no-pager -o short-precise"),
                node.server_log()
            )
        },
        || {
            let out = node.ssh_with(&second, "test ! -e /etc/wulf-test/marker && echo applied");
            (String::from_utf8_lossy(&out.stdout).trim() == "applied").then_some(())
        },
    );
    let latency = changed.elapsed().as_secs_f64();
    let journal = node.ok("journalctl -u wulf-agent --no-pager -o cat");
    assert!(
        journal.contains("removed (/etc/wulf-test/marker)"),
        "{journal}"
    );
    eprintln!("debian node: the change was live on the node {latency:.1} s later (no reboot)");

    // The image changes (built again with another compression): the node runs the old one.
    node.wulf
        .ok(&["image", "build", "debian", "--compression", "zstd"]);
    let server = node.http.to_string();
    wulf_tests::wait_for(
        "reboot needed for the new image",
        Duration::from_secs(60),
        || node.wulf.ok(&["node", "status", "--server", &server]),
        || {
            let all: Value = serde_json::from_str(
                &node
                    .wulf
                    .ok(&["node", "status", "--server", &server, "--json"]),
            )
            .ok()?;
            let agent = &all["nodes"]["n0001"]["agent"];
            (agent["reboot_needed"] == serde_json::json!(["image"]) && agent["in_sync"] == true)
                .then_some(())
        },
    );
}
