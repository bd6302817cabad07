//! End to end: a QEMU virtual machine netboots from `wulf serve`. Real firmware (SeaBIOS and
//! the iPXE ROM of Debian's `ipxe-qemu`), a real Debian kernel, an image pushed by `skopeo` to
//! Debian's `docker-registry` and imported from it, overlays from the first-party plugins.
//!
//! The node must come up with what wulf gave it: its init prints a marker line with the
//! hostname (hostname overlay), the address (network overlay) and a line of `/etc/hosts`
//! (hosts generator, a shared segment), then powers off. Software emulation only (KVM does
//! not run guests here); a boot takes 15-35 s.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wulf_tests::netns::Netns;
use wulf_tests::oci::{Item, LayerCompression, Layout, Registry, run};
use wulf_tests::{Wulf, require_command, require_file, workspace};

pub(crate) const MAC: &str = "52:54:00:12:34:56";
pub(crate) const MARKER: &str = "WULF-E2E-NODE-UP";
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// The virtio network driver and what it needs, in load order (Debian's kernel has them as
/// modules).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "mountpoint",
    "mkdir",
    "cat",
    "echo",
    "ip",
    "hostname",
    "insmod",
    "poweroff",
    "sleep",
    "tar",
    "switch_root",
    "ls",
    "grep",
    "cut",
    "sed",
    "uname",
    "sync",
    "test",
    "[",
    "tr",
    "head",
];

/// A Debian kernel and the virtio modules, from the archive, cached under `target/`.
struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    modules: Vec<(String, PathBuf)>,
}

fn debian_kernel() -> Kernel {
    // Both netboot tests want it, in parallel: one downloads, the other waits.
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = workspace().join("target/e2e-kernel");
    let root = cache.join("root");
    if !root.join("boot").is_dir() {
        std::fs::create_dir_all(&cache).unwrap();
        let depends = || {
            Command::new("apt-cache")
                .args(["depends", "linux-image-amd64"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let mut depends = depends();
        if !depends.contains("linux-image-6") {
            wulf_tests::apt_update();
            depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
        }
        let package = depends
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Depends: ")
                    .filter(|p| p.starts_with("linux-image-6"))
            })
            .unwrap_or_else(|| {
                panic!("no kernel package in `apt-cache depends linux-image-amd64`:\n{depends}")
            })
            .to_string();
        run(Command::new("apt-get")
            .current_dir(&cache)
            .args(["download", "-q", &package]));
        let deb = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap_or_else(|| panic!("apt-get download {package} left no .deb"));
        let staging = cache.join(format!("root.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&staging));
        std::fs::rename(&staging, &root).unwrap();
        let _ = std::fs::remove_file(&deb);
    }
    let vmlinuz = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .expect("vmlinuz in the kernel package");
    let version = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let mut all = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&root.join("lib/modules").join(&version), &mut all);
    let modules = MODULES
        .iter()
        .filter_map(|m| {
            all.iter()
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n == format!("{m}.ko").as_str())
                })
                .map(|p| (m.to_string(), p.clone()))
        })
        .collect();
    Kernel {
        version,
        vmlinuz,
        modules,
    }
}

/// A small node image: static busybox, the kernel in /boot, the virtio modules and an init.d
/// script loading them, and /sbin/init printing the marker, then powering off (or, with
/// `wulf.hold` on the kernel command line, staying up until its BMC powers it off).
fn node_image(dir: &Path, kernel: &Kernel) -> PathBuf {
    let mut layout = Layout::new(dir);
    layout.layer(&node_items(kernel), LayerCompression::Gzip);
    layout.finish("v1")
}

/// The e2e node's root filesystem: busybox, the kernel and its network driver, and an init
/// that prints the marker line.
fn node_items(kernel: &Kernel) -> Vec<Item> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut items = vec![
        Item::dir("bin"),
        Item::Dir {
            path: "dev".into(),
            mode: 0o755,
        },
        Item::CharDevice {
            path: "dev/console".into(),
            major: 5,
            minor: 1,
        },
        Item::CharDevice {
            path: "dev/null".into(),
            major: 1,
            minor: 3,
        },
        Item::dir("etc"),
        Item::dir("proc"),
        Item::dir("sys"),
        Item::dir("run"),
        Item::dir("tmp"),
        Item::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            content: busybox,
        },
    ];
    for applet in APPLETS {
        items.push(Item::symlink(&format!("bin/{applet}"), "busybox"));
    }
    items.push(Item::File {
        path: format!("boot/vmlinuz-{}", kernel.version),
        mode: 0o644,
        uid: 0,
        gid: 0,
        content: std::fs::read(&kernel.vmlinuz).unwrap(),
    });
    let mut load = String::from("#!/bin/sh\n# e2e image: the virtio network driver\n");
    for (name, path) in &kernel.modules {
        let rel = format!("lib/modules/{}/{name}.ko", kernel.version);
        items.push(Item::File {
            path: rel.clone(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            content: std::fs::read(path).unwrap(),
        });
        load.push_str(&format!("insmod /{rel} 2>/dev/null\n"));
    }
    items.push(Item::owned("warewulf/init.d/10-virtio", 0o755, 0, 0, &load));
    items.push(Item::owned(
        "sbin/init",
        0o755,
        0,
        0,
        &format!(
            "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do [ -f /run/wulf-agent/manifest ] && break; sleep 1; done\nAGENT=missing; [ -f /run/wulf-agent/manifest ] && AGENT=synced\n[ $AGENT = synced ] || cat /var/log/wulf-agent.log\nADDR=$(ip -4 -o addr show | grep -v ' lo ' | sed 's/.*inet \\([0-9./]*\\).*/\\1/' | head -n 1)\nHOSTS=$(grep \" $(hostname) \" /etc/hosts | head -n 1)\necho \"{MARKER} hostname=$(hostname) addr=$ADDR hosts=[$HOSTS] motd=[$(cat /etc/motd)] agent=$AGENT\"\nsync\nmountpoint -q /proc || mount -t proc proc /proc\nif grep -q wulf.hold /proc/cmdline; then while :; do sleep 60; done; fi\npoweroff -f\n"
        ),
    ));
    items
}

/// The e2e node's root filesystem as a directory (a chroot, as Warewulf keeps images).
pub(crate) fn node_chroot(dir: &Path) {
    prerequisites();
    wulf_tests::oci::write_tree(dir, &node_items(&debian_kernel()));
}

/// Boots a VM (`prefix` runs qemu, e.g. inside a network namespace; `net` are its network
/// options) and returns its serial output; panics with the log and the node's status when the
/// marker does not come.
pub(crate) fn boot(
    prefix: &[&str],
    net: &[&str],
    what: &str,
    http: std::net::SocketAddr,
    log: &Path,
) -> String {
    let started = Instant::now();
    let mut command = Command::new(prefix.first().copied().unwrap_or("qemu-system-x86_64"));
    if !prefix.is_empty() {
        command.args(&prefix[1..]).arg("qemu-system-x86_64");
    }
    let mut child = command
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .args(net)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64: {e}"));
    let demo = std::env::var_os("WULF_DEMO").is_some();
    let mut shown = 0;
    loop {
        if demo {
            // Show the node's console as it boots.
            let serial = std::fs::read(log).unwrap_or_default();
            if serial.len() > shown {
                eprint!("{}", String::from_utf8_lossy(&serial[shown..]));
                shown = serial.len();
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut serial = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut serial));
    if !serial.contains(MARKER) {
        let mut status = Command::new(prefix.first().copied().unwrap_or("curl"));
        if !prefix.is_empty() {
            status.args(&prefix[1..]).arg("curl");
        }
        let status = status
            .args(["-s", &format!("http://{http}/status")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "the node did not come up within {:?} ({what}).\n--- wulf /status ---\n{status}\n--- serial console ---\n{serial}",
            started.elapsed()
        );
    }
    eprintln!(
        "netboot ({what}): marker after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    serial
}

/// Checks the marker line: everything in it came from wulf.
pub(crate) fn expect_marker(serial: &str, addr: &str) {
    let line = serial.lines().find(|l| l.contains(MARKER)).unwrap();
    assert!(line.contains("hostname=n0001"), "{line}");
    assert!(line.contains(&format!("addr={addr}/24")), "{line}");
    assert!(
        line.contains(&format!("hosts=[{addr} n0001 n0001-default n0001-eth0]")),
        "{line}"
    );
    assert!(
        line.contains("motd=[provisioned by wulf for n0001]"),
        "{line}"
    );
    // Not systemd: the agent was started from /warewulf/init.d and synced the runtime overlay.
    assert!(line.contains("agent=synced"), "{line}");
}

/// The VM's node: its MAC, a static address on `eth0` and the gateway.
pub(crate) fn add_node(wulf: &Wulf, ipaddr: &str, gateway: &str) {
    wulf.ok(&[
        "node",
        "add",
        "n0001",
        "--profile",
        "default",
        "--hwaddr",
        MAC,
        "--netdev",
        "eth0",
        "--ipaddr",
        ipaddr,
        "--netmask",
        "255.255.255.0",
        "--gateway",
        gateway,
    ]);
}

/// The packages every netboot needs.
fn prerequisites() {
    for (command, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("skopeo", "skopeo"),
        ("curl", "curl"),
    ] {
        require_command(command, package);
    }
    require_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");
}

/// What every variant needs: the packages, the kernel, the image through a real registry, a
/// site overlay and the default profile.
pub(crate) fn prepare(scratch: &Path) -> Wulf {
    prerequisites();
    let kernel = debian_kernel();
    assert!(
        kernel.modules.iter().any(|(m, _)| m == "virtio_net"),
        "virtio_net.ko not found for {}",
        kernel.version
    );
    let layout = node_image(&scratch.join("layout"), &kernel);
    let registry = Registry::start();
    registry.push(&layout, "v1", "e2e/node:v1");
    let wulf = Wulf::new();
    wulf.ok(&[
        "image",
        "import",
        &format!("docker://{}/e2e/node:v1", registry.addr),
        "node",
        "--insecure-http",
    ]);
    wulf.ok(&["overlay", "create", "e2e"]);
    wulf.write(
        "overlays/e2e/etc/motd.ww",
        "provisioned by wulf for {{ node.id }}\n",
    );
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--image",
        "node",
        "--system-overlays",
        "wwinit,hostname,network,e2e,agent",
        "--runtime-overlays",
        "hosts",
        "--kernelargs",
        "console=ttyS0,panic=-1,loglevel=4",
    ]);
    wulf
}

#[test]
fn a_virtual_machine_netboots_from_wulf_over_http_and_tftp() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = prepare(scratch.path());
    add_node(&wulf, "10.0.2.15", "10.0.2.2");

    // TFTP hands out a script that chains to the node's iPXE script over HTTP.
    let tftp_root = scratch.path().join("tftp");
    std::fs::create_dir_all(&tftp_root).unwrap();
    let served = wulf.serve(&[
        "--http-addr",
        "127.0.0.1:0",
        "--tftp-addr",
        "127.0.0.1:0",
        "--tftp-root",
        tftp_root.to_str().unwrap(),
    ]);
    let (http, tftp) = (served.http, served.tftp.expect("TFTP is on"));
    std::fs::write(tftp_root.join("boot.ipxe"), format!("#!ipxe\necho wulf e2e: script from wulf's TFTP\nchain http://10.0.2.2:{}/ipxe/${{mac}}\n", http.port())).unwrap();

    let device = format!("virtio-net-pci,netdev=n0,mac={MAC}");
    let bootfile = format!(
        "user,id=n0,bootfile=http://10.0.2.2:{}/ipxe/{MAC}",
        http.port()
    );
    let serial = boot(
        &[],
        &["-boot", "n", "-netdev", &bootfile, "-device", &device],
        "user network, HTTP",
        http,
        &scratch.path().join("serial-http.log"),
    );
    expect_marker(&serial, "10.0.2.15");
    let bootfile = format!(
        "user,id=n0,bootfile=tftp://10.0.2.2:{}/boot.ipxe",
        tftp.port()
    );
    let serial = boot(
        &[],
        &["-boot", "n", "-netdev", &bootfile, "-device", &device],
        "user network, TFTP then HTTP",
        http,
        &scratch.path().join("serial-tftp.log"),
    );
    assert!(serial.contains("script from wulf's TFTP"), "{serial}");
    expect_marker(&serial, "10.0.2.15");

    let status = Command::new("curl")
        .args(["-s", &format!("http://{http}/status")])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["nodes"]["n0001"]["stage"], "runtime", "{status}");
}

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pxe_firmware_gets_dhcp_from_dnsmasq_configured_by_wulf_and_tftp_from_wulf_on_port_69() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this test needs root (a network namespace, a tap device, ports 67 and 69); it does not skip"
    );
    require_command("dnsmasq", "dnsmasq-base");
    require_command("ip", "iproute2");
    require_file("/usr/lib/ipxe/undionly.kpxe", "ipxe");
    require_file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    let scratch = tempfile::tempdir().unwrap();
    let wulf = prepare(scratch.path());
    add_node(&wulf, "10.99.0.15", "10.99.0.1");

    let ns = Netns::with_tap("wulf-e2e");
    let exec = ["ip", "netns", "exec", ns.name.as_str()];

    // The DHCP configuration is wulf's own.
    let dhcp_conf = scratch.path().join("dnsmasq.conf");
    wulf.ok(&[
        "configure",
        "dhcp",
        "--format",
        "dnsmasq",
        "--server-ip",
        "10.99.0.1",
        "--interface",
        "tap0",
        "--output",
        dhcp_conf.to_str().unwrap(),
    ]);
    let conf = std::fs::read_to_string(&dhcp_conf).unwrap();
    assert!(
        conf.contains(&format!("dhcp-host={MAC},10.99.0.15,n0001,infinite")),
        "{conf}"
    );
    let _dnsmasq = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
            ])
            .arg(format!("--conf-file={}", dhcp_conf.display()))
            .arg(format!(
                "--dhcp-leasefile={}",
                scratch.path().join("leases").display()
            ))
            .arg(format!(
                "--pid-file={}",
                scratch.path().join("dnsmasq.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // wulf serves HTTP on 9873 and TFTP on 69 (the iPXE binaries from Debian's ipxe package).
    let served = wulf.serve_in(
        &exec,
        &[
            "--http-addr",
            "10.99.0.1:9873",
            "--tftp-addr",
            "10.99.0.1:69",
            "--tftp-root",
            "/usr/lib/ipxe",
        ],
    );
    let http = served.http;
    let tap = [
        "-boot",
        "n",
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
    ];

    // BIOS: the NIC's boot ROM is iPXE, which asks dnsmasq and goes straight to HTTP.
    let device = format!("virtio-net-pci,netdev=n0,mac={MAC}");
    let mut net: Vec<&str> = tap.to_vec();
    net.extend(["-device", device.as_str()]);
    let serial = boot(
        &exec,
        &net,
        "BIOS, DHCP from dnsmasq",
        http,
        &scratch.path().join("serial-bios.log"),
    );
    expect_marker(&serial, "10.99.0.15");

    // UEFI: OVMF's own PXE (no iPXE ROM on the NIC) gets snponly.efi from wulf's TFTP on port
    // 69, then iPXE asks dnsmasq again and continues over HTTP.
    let vars = scratch.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let device = format!("virtio-net-pci,netdev=n0,mac={MAC},romfile=,bootindex=1");
    let code = "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".to_string();
    let vars = format!("if=pflash,format=raw,file={}", vars.display());
    let mut net: Vec<&str> = vec!["-machine", "q35", "-drive", &code, "-drive", &vars];
    net.extend(tap);
    net.extend(["-device", device.as_str()]);
    let serial = boot(
        &exec,
        &net,
        "UEFI PXE, TFTP on port 69",
        http,
        &scratch.path().join("serial-uefi.log"),
    );
    expect_marker(&serial, "10.99.0.15");
}
