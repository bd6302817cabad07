//! Every first-party overlay plugin through the real binary, for a realistic cluster: several
//! profiles, two networks, a VLAN, a bond, IPv6 and IPMI. The node's built archive is
//! unpacked by GNU cpio and listed as `path mode uid:gid` with contents.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use wulf_tests::oci::run;
use wulf_tests::{Wulf, require_command};

const CLUSTER: &str = r#"
[profiles.default]
system-overlays = ["wwinit", "hostname", "hosts", "resolv", "network", "fstab", "ssh-host-keys", "ssh-authorized-keys"]
image = "rocky-9"
root = "tmpfs"
primary-network = "default"
[profiles.default.network-devices.default]
netmask = "255.255.255.0"
gateway = "10.0.0.254"
tags = { DNS1 = "10.0.0.53", DNSSEARCH = "hpc.example" }

[profiles.gpu]
tags = { ssh-key-ops = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@gpu" }
resources = { fstab = [{ spec = "nas:/scratch", file = "/scratch", mntops = "rw,hard" }] }

[nodes.n001]
profiles = ["default", "gpu"]
[nodes.n001.network-devices.default]
device = "eth0"
hwaddr = "aa:00:00:00:00:01"
ipaddr = "10.0.0.1"
ipaddr6 = "fd00::1"
prefixlen6 = 64
[nodes.n001.network-devices.storage]
type = "vlan"
device = "eth0.100"
ipaddr = "10.100.0.1"
netmask = "255.255.0.0"
mtu = 9000
[nodes.n001.network-devices.data]
type = "bond"
device = "bond0"
ipaddr = "10.2.0.1"
netmask = "255.255.255.0"
tags = { mode = "802.3ad" }
[nodes.n001.network-devices.data1]
device = "eth1"
hwaddr = "aa:00:00:00:01:01"
tags = { master = "bond0" }
[nodes.n001.ipmi]
ipaddr = "10.10.0.1"
netmask = "255.255.0.0"
username = "admin"
password = "secret"

[nodes.n002]
profiles = ["default"]
[nodes.n002.network-devices.default]
device = "eth0"
hwaddr = "aa:00:00:00:00:02"
ipaddr = "10.0.0.2"
"#;

/// The unpacked tree as `path mode uid:gid` and contents; host keys, which are random, are
/// checked against the host's copies in `keys` and named instead.
fn listing(root: &Path, host: &str, keys: &Path) -> String {
    fn walk(root: &Path, dir: &Path, keys: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let head = format!("/{rel} {:04o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            if m.is_dir() {
                out.push(format!("{head} dir"));
                walk(root, &path, keys, out);
            } else if m.file_type().is_symlink() {
                out.push(format!(
                    "{head} -> {}",
                    std::fs::read_link(&path).unwrap().display()
                ));
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                // /init and run-init are long scripts checked by their own tests; show their size.
                if rel == "init" || rel == "warewulf/run-init" {
                    out.push(format!("{head} ({} lines of sh)", text.lines().count()));
                } else if let Some(name) = rel.strip_prefix("etc/ssh/ssh_host_") {
                    let name = format!("ssh_host_{name}");
                    let on_host = std::fs::read_to_string(keys.join(&name)).unwrap();
                    assert_eq!(text, on_host, "{rel}");
                    out.push(format!("{head} (the host's keys/{name})"));
                } else {
                    out.push(format!(
                        "{head}\n{}",
                        text.lines()
                            .map(|l| format!("    {l}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, keys, &mut out);
    out.join("\n").replace(host, "[HOST]")
}

#[test]
fn first_party_overlays_render_what_warewulf_renders() {
    require_command("cpio", "cpio");
    let wulf = Wulf::new();
    wulf.write("nodes.toml", CLUSTER);
    wulf.write(
        "wulf.toml",
        r#"
[server]
http-addr = "10.0.0.254:9873"

[plugin.fstab.config]
nfs-exports = [{ path = "/home" }]

[plugin.ssh-authorized-keys.config]
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdmin admin@head"]
"#,
    );
    let report: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["overlay", "build", "--json"])).unwrap();
    assert_eq!(report["built"], serde_json::json!(["n001", "n002"]));
    assert_eq!(
        report["shared_segments"], 2,
        "hosts and the host keys are computed once for the cluster"
    );

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wulf.path().join("provision/index.json")).unwrap())
            .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for segment in index["nodes"]["n001"]["system"]["segments"]
        .as_array()
        .unwrap()
    {
        let file = wulf
            .path()
            .join("provision")
            .join(segment.as_str().unwrap());
        run(Command::new("sh").current_dir(scratch.path()).args([
            "-c",
            &format!(
                "gzip -dc '{}' | cpio -idmu --quiet --no-absolute-filenames",
                file.display()
            ),
        ]));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    insta::assert_snapshot!(
        "n001_system_overlay",
        listing(scratch.path(), &host, &wulf.path().join("keys"))
    );
}
