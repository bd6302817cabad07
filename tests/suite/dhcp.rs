//! wulf's own DHCP with real firmware, in a network namespace with a tap device: SeaBIOS with
//! QEMU's iPXE ROM and OVMF's own UEFI PXE client boot the busybox image through wulf's
//! ProxyDHCP beside a plain dnsmasq (addresses only), and through wulf's full DHCP with no
//! other DHCP server, across a restart of wulf in the middle of a boot.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wulf_tests::{Serving, Wulf, require_command, require_file, wait_for};

use crate::netboot::{Killed, MAC, add_node, boot, expect_marker, prepare};
use wulf_tests::netns::Netns;

/// A namespace with `tap0` at 10.99.0.1/24, as the PXE test has it.
fn namespace() -> Netns {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this test needs root (a network namespace, a tap device, ports 67, 69 and 4011); it does not skip"
    );
    require_command("ip", "iproute2");
    require_file("/usr/lib/ipxe/undionly.kpxe", "ipxe");
    require_file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    Netns::with_tap("wulf-dhcp")
}

/// The busybox node n0001 at 10.99.0.15, wulf answering DHCP on `tap0` with `dhcp` settings,
/// and the namespace.
fn site(dhcp: &str) -> (tempfile::TempDir, Wulf, Netns) {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = prepare(scratch.path());
    add_node(&wulf, "10.99.0.15", "10.99.0.1");
    wulf.write(
        "wulf.toml",
        &format!("[dhcp]\ninterfaces = [\"tap0\"]\n{dhcp}"),
    );
    (scratch, wulf, namespace())
}

fn serve(wulf: &Wulf, ns: &Netns) -> Serving {
    wulf.serve_in(
        &["ip", "netns", "exec", &ns.name],
        &[
            "--http-addr",
            "10.99.0.1:9873",
            "--tftp-addr",
            "10.99.0.1:69",
            "--tftp-root",
            "/usr/lib/ipxe",
        ],
    )
}

/// QEMU's arguments for BIOS (the NIC's iPXE ROM) and for OVMF's own UEFI PXE (no ROM).
fn firmware(scratch: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let tap = [
        "-boot",
        "n",
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
    ]
    .map(String::from);
    let mut bios = tap.to_vec();
    bios.extend([
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={MAC}"),
    ]);
    let vars = scratch.join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let mut uefi: Vec<String> = vec![
        "-machine".into(),
        "q35".into(),
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    uefi.extend(tap);
    uefi.extend([
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={MAC},romfile=,bootindex=1"),
    ]);
    (bios, uefi)
}

/// The node's boot trace as the boot server's `/status` has it.
fn trace(ns: &Netns) -> Vec<Value> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "curl",
            "-s",
            "http://10.99.0.1:9873/status",
        ])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let status: Value = serde_json::from_slice(&out).unwrap_or_default();
    status["nodes"]["n0001"]["trace"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The node's DHCP step.
fn dhcp_step(ns: &Netns) -> Option<Value> {
    trace(ns).into_iter().find(|e| e["stage"] == "dhcp")
}

#[test]
fn proxy_dhcp_beside_a_plain_dhcp_server_boots_bios_and_uefi_pxe() {
    require_command("dnsmasq", "dnsmasq-base");
    let (scratch, wulf, ns) = site("mode = \"proxy\"\n");
    // The site's DHCP server: addresses only, no boot options. It shares port 67 with wulf
    // (both bind it with SO_REUSEADDR, as dnsmasq does with --bind-interfaces).
    let _dnsmasq = Killed(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--user=root", "--port=0"])
            .args(["--bind-interfaces", "--interface=tap0"])
            .arg("--dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0")
            .arg(format!("--dhcp-host={MAC},10.99.0.15"))
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
    let served = serve(&wulf, &ns);
    let exec = ["ip", "netns", "exec", ns.name.as_str()];
    let (bios, uefi) = firmware(scratch.path());
    let bios: Vec<&str> = bios.iter().map(String::as_str).collect();
    let uefi: Vec<&str> = uefi.iter().map(String::as_str).collect();

    let serial = boot(
        &exec,
        &bios,
        "BIOS iPXE ROM, ProxyDHCP",
        served.http,
        &scratch.path().join("serial-bios.log"),
    );
    expect_marker(&serial, "10.99.0.15");
    let step = dhcp_step(&ns).expect("a DHCP step in the node's trace");
    assert!(
        step["file"]
            .as_str()
            .unwrap()
            .contains("proxy offer: http://10.99.0.1:9873/ipxe/52-54-00-12-34-56"),
        "{step}"
    );

    let serial = boot(
        &exec,
        &uefi,
        "OVMF UEFI PXE, ProxyDHCP",
        served.http,
        &scratch.path().join("serial-uefi.log"),
    );
    expect_marker(&serial, "10.99.0.15");
    let metrics = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "curl",
            "-s",
            "http://10.99.0.1:9873/metrics",
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        wulf_tests::metric(
            &metrics,
            "wulf_dhcp_packets_total{outcome=\"answered\",reply=\"offer\"}"
        ) >= 2,
        "{metrics}"
    );
}

#[test]
fn full_dhcp_alone_boots_bios_and_uefi_and_a_restart_mid_boot_keeps_the_address() {
    let (scratch, wulf, ns) = site("mode = \"full\"\nrange = \"10.99.0.100-10.99.0.110\"\n");
    let served = serve(&wulf, &ns);
    let exec = ["ip", "netns", "exec", ns.name.as_str()];
    let (bios, uefi) = firmware(scratch.path());
    let bios: Vec<&str> = bios.iter().map(String::as_str).collect();
    let serial = boot(
        &exec,
        &bios,
        "BIOS iPXE ROM, wulf's DHCP",
        served.http,
        &scratch.path().join("serial-bios.log"),
    );
    expect_marker(&serial, "10.99.0.15");
    let step = dhcp_step(&ns).expect("a DHCP step in the node's trace");
    assert!(
        step["file"].as_str().unwrap().starts_with("ack 10.99.0.15"),
        "{step}"
    );

    // UEFI, with wulf restarted mid-boot: once the chainloaded iPXE has its address and
    // script URL from wulf, while it waits for IPv6 autoconfiguration before fetching (no
    // transfer is cut: a TFTP or HTTP transfer does not survive its server). The restarted
    // server answers the same address and the node boots. A fresh server first, so the trace
    // holds only this boot.
    drop(served);
    let served = serve(&wulf, &ns);
    let http = served.http;
    let log = scratch.path().join("serial-uefi.log");
    let ns_name = ns.name.clone();
    let booting = std::thread::spawn(move || {
        let exec = ["ip", "netns", "exec", ns_name.as_str()];
        let uefi: Vec<&str> = uefi.iter().map(String::as_str).collect();
        boot(
            &exec,
            &uefi,
            "OVMF UEFI PXE, wulf's DHCP, restarted",
            http,
            &log,
        )
    });
    wait_for(
        "iPXE's address and script from wulf's DHCP",
        Duration::from_secs(150),
        String::new,
        || {
            dhcp_step(&ns).filter(|s| {
                s["file"].as_str().is_some_and(|f| {
                    f.starts_with("ack 10.99.0.15") && f.contains("/ipxe/52-54-00-12-34-56")
                })
            })
        },
    );
    drop(served);
    let _served = serve(&wulf, &ns);
    let serial = booting.join().unwrap();
    expect_marker(&serial, "10.99.0.15");
    let stages: Vec<Value> = trace(&ns).into_iter().map(|e| e["stage"].clone()).collect();
    assert!(
        stages.contains(&Value::from("ipxe")) && stages.contains(&Value::from("image")),
        "the restarted server served the rest of the boot: {stages:?}"
    );
    let leases = std::fs::read_to_string(wulf.path().join("dhcp/leases.json")).unwrap_or_default();
    assert!(
        !leases.contains("10.99.0.15"),
        "an inventory address is never leased from the range: {leases}"
    );
}
