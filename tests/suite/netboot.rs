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

use wulf_tests::oci::{Item, LayerCompression, Layout, Registry, run};
use wulf_tests::{Wulf, require_command, require_file, workspace};

const MAC: &str = "52:54:00:12:34:56";
const MARKER: &str = "WULF-E2E-NODE-UP";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
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
    let cache = workspace().join("target/e2e-kernel");
    let root = cache.join("root");
    if !root.join("boot").is_dir() {
        std::fs::create_dir_all(&cache).unwrap();
        let depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
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
        let staging = cache.join("root.partial");
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
/// script loading them, and /sbin/init printing the marker.
fn node_image(dir: &Path, kernel: &Kernel) -> PathBuf {
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
            "#!/bin/sh\nADDR=$(ip -4 -o addr show | grep -v ' lo ' | sed 's/.*inet \\([0-9./]*\\).*/\\1/' | head -n 1)\nHOSTS=$(grep \" $(hostname) \" /etc/hosts | head -n 1)\necho \"{MARKER} hostname=$(hostname) addr=$ADDR hosts=[$HOSTS] motd=[$(cat /etc/motd)]\"\nsync\npoweroff -f\n"
        ),
    ));
    let mut layout = Layout::new(dir);
    layout.layer(&items, LayerCompression::Gzip);
    layout.finish("v1")
}

/// Boots the VM with `bootfile` and returns its serial output; panics with the log and the
/// node's status when the marker does not come.
fn boot(bootfile: &str, http: std::net::SocketAddr, log: &Path) -> String {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-boot",
            "n",
        ])
        .args(["-netdev", &format!("user,id=n0,bootfile={bootfile}")])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64: {e}"));
    loop {
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
        let status = Command::new("curl")
            .args(["-s", &format!("http://{http}/status")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "the node did not come up within {:?} (bootfile {bootfile}).\n--- wulf /status ---\n{status}\n--- serial console ---\n{serial}",
            started.elapsed()
        );
    }
    eprintln!(
        "netboot via {bootfile}: marker after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    serial
}

#[test]
fn a_virtual_machine_netboots_from_wulf_over_http_and_tftp() {
    for (command, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("skopeo", "skopeo"),
        ("curl", "curl"),
    ] {
        require_command(command, package);
    }
    require_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");
    let kernel = debian_kernel();
    assert!(
        kernel.modules.iter().any(|(m, _)| m == "virtio_net"),
        "virtio_net.ko not found for {}",
        kernel.version
    );

    // The image goes through a real registry.
    let scratch = tempfile::tempdir().unwrap();
    let layout = node_image(&scratch.path().join("layout"), &kernel);
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
        "add",
        "default",
        "--image",
        "node",
        "--system-overlays",
        "wwinit,hostname,network,e2e",
        "--runtime-overlays",
        "hosts",
        "--kernelargs",
        "console=ttyS0",
        "--kernelargs",
        "panic=-1",
        "--kernelargs",
        "loglevel=4",
    ]);
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
        "10.0.2.15",
        "--netmask",
        "255.255.255.0",
        "--gateway",
        "10.0.2.2",
    ]);

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

    let expect = |serial: &str| {
        let line = serial.lines().find(|l| l.contains(MARKER)).unwrap();
        assert!(line.contains("hostname=n0001"), "{line}");
        assert!(line.contains("addr=10.0.2.15/24"), "{line}");
        assert!(
            line.contains("hosts=[10.0.2.15 n0001 n0001-default n0001-eth0]"),
            "{line}"
        );
        assert!(
            line.contains("motd=[provisioned by wulf for n0001]"),
            "{line}"
        );
    };
    let log = scratch.path().join("serial-http.log");
    expect(&boot(
        &format!("http://10.0.2.2:{}/ipxe/{MAC}", http.port()),
        http,
        &log,
    ));
    let log = scratch.path().join("serial-tftp.log");
    let serial = boot(
        &format!("tftp://10.0.2.2:{}/boot.ipxe", tftp.port()),
        http,
        &log,
    );
    assert!(serial.contains("script from wulf's TFTP"), "{serial}");
    expect(&serial);

    let status = Command::new("curl")
        .args(["-s", &format!("http://{http}/status")])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["nodes"]["n0001"]["stage"], "runtime", "{status}");
}
