//! `wulf configure dhcp`: configurations dnsmasq itself accepts, and clear errors.

use std::process::Command;

use wulf_tests::{Wulf, require_command};

fn cluster() -> Wulf {
    let wulf = Wulf::new();
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--netmask",
        "255.255.255.0",
        "--primarynet",
        "default",
    ]);
    wulf.ok(&[
        "node",
        "add",
        "n[01-02]",
        "--profile",
        "default",
        "--ipaddr",
        "10.0.0.11",
    ]);
    wulf.ok(&["node", "set", "n01", "--hwaddr", "AA:BB:CC:00:00:01"]);
    wulf.ok(&["node", "set", "n02", "--hwaddr", "aa:bb:cc:00:00:02"]);
    wulf.ok(&[
        "node",
        "set",
        "n02",
        "--netname",
        "ib",
        "--hwaddr",
        "aa:bb:cc:00:01:02",
        "--ipaddr",
        "10.1.0.12",
    ]);
    wulf
}

#[test]
fn dnsmasq_accepts_what_wulf_writes() {
    require_command("dnsmasq", "dnsmasq-base");
    let wulf = cluster();
    let out = wulf.ok(&[
        "configure",
        "dhcp",
        "--show",
        "--server-ip",
        "10.0.0.1",
        "--range",
        "10.0.0.100,10.0.0.199",
        "--gateway",
        "10.0.0.254",
        "--ipv6-prefix",
        "fd00::",
    ]);
    assert!(
        out.contains(
            "dhcp-boot=tag:ipxe,http://10.0.0.1:9873/ipxe/${mac:hexhyp}?assetkey=${asset}"
        ),
        "{out}"
    );
    assert!(
        out.contains("dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,,10.0.0.1"),
        "{out}"
    );
    assert!(out.contains("dhcp-host=aa:bb:cc:00:00:01,10.0.0.11,n01,infinite\ndhcp-host=aa:bb:cc:00:00:02,10.0.0.12,n02,infinite\n"), "{out}");
    assert!(!out.contains("10.1.0.12"), "other subnets stay out: {out}");
    assert!(out.contains("enable-ra"), "{out}");

    let file = wulf.path().join("wulf-dnsmasq.conf");
    let written = wulf.ok(&[
        "configure",
        "dhcp",
        "--server-ip",
        "10.0.0.1",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(written.contains("2 static host(s)"), "{written}");
    let check = Command::new("dnsmasq")
        .arg("--test")
        .arg(format!("--conf-file={}", file.display()))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "dnsmasq --test: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let isc = wulf.ok(&[
        "configure",
        "dhcp",
        "--format",
        "isc",
        "--show",
        "--server-ip",
        "10.0.0.1",
    ]);
    assert!(
        isc.contains("subnet 10.0.0.0 netmask 255.255.255.0 {")
            && isc.contains(
                "host n01 {\n    hardware ethernet aa:bb:cc:00:00:01;\n    fixed-address 10.0.0.11;"
            ),
        "{isc}"
    );
}

#[test]
fn bad_dhcp_input_is_refused() {
    let wulf = cluster();
    let err = wulf.fails(&["configure", "dhcp", "--show"]);
    assert!(err.contains("pass --server-ip"), "{err}");
    let err = wulf.fails(&[
        "configure",
        "dhcp",
        "--show",
        "--server-ip",
        "10.0.0.1",
        "--range",
        "10.0.1.5,10.0.1.9",
    ]);
    assert!(
        err.contains("is not an ascending range inside 10.0.0.0/24"),
        "{err}"
    );
    let err = wulf.fails(&[
        "configure",
        "dhcp",
        "--show",
        "--server-ip",
        "10.0.0.1",
        "--netmask",
        "255.0.255.0",
    ]);
    assert!(err.contains("is not a netmask"), "{err}");
}
