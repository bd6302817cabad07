//! What hostile plugins, hostile peers and unlucky admins used to break, through the real
//! binary: each finding of the hardening review has its regression test here.

use wulf_tests::{Wulf, fixture_dir, plugin_dir};

use crate::serve_files::{curl, overlay_text, wait_for_overlay};

const NODES: &str = r#"
[profiles.default]
system-overlays = ["unruly", "site"]
[nodes.n001]
profiles = ["default"]
[nodes.n001.network-devices.default]
hwaddr = "aa:00:00:00:01:01"
[nodes.n002]
profiles = ["default"]
[nodes.n002.network-devices.default]
hwaddr = "aa:00:00:00:01:02"
[nodes.n003]
profiles = ["default"]
[nodes.n003.network-devices.default]
hwaddr = "aa:00:00:00:01:03"
"#;

/// A site with the `unruly` fixture installed and three nodes listing it.
fn unruly_site() -> Wulf {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    install(&wulf, "unruly");
    wulf.ok(&["overlay", "create", "site"]);
    wulf.write("overlays/site/etc/motd.ww", "first motd of {{ node.id }}\n");
    wulf
}

fn install(wulf: &Wulf, name: &str) {
    let dir = plugin_dir(&fixture_dir(name), &format!("wulf-fixture-{name}"));
    wulf.ok(&["plugin", "install", &dir.path().display().to_string()]);
}

fn test_unruly(wulf: &Wulf, site_config: &str) -> (bool, String) {
    wulf.write("wulf.toml", site_config);
    let out = wulf.run(&["plugin", "test", "unruly", "--node", "n001"]);
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

#[test]
fn plugins_sleep_on_a_virtual_clock_and_spinning_on_it_meets_the_deadline() {
    let wulf = unruly_site();
    // 20 s of sleep under a 2 s limit: the sleep is virtual, the call returns at once, and
    // the plugin sees 20 s pass on a clock that started at the Unix epoch.
    let (ok, out) = test_unruly(
        &wulf,
        "[plugin.unruly]\nlimits = { timeout-ms = 2000 }\nconfig = { sleep-ms = 20000 }\n",
    );
    assert!(ok, "{out}");
    let slept = wulf.ok(&[
        "overlay",
        "render",
        "unruly",
        "/etc/slept",
        "--node",
        "n001",
    ]);
    assert_eq!(slept, "slept 20000 ms; wall clock at start: 0 s\n");

    // Waiting for real time to pass is a busy loop, which the deadline stops.
    let (ok, out) = test_unruly(
        &wulf,
        "[plugin.unruly]\nlimits = { timeout-ms = 300 }\nconfig = { wait-for-clock-ms = 1000 }\n",
    );
    assert!(!ok);
    assert_eq!(
        out,
        "error: plugin `unruly` was stopped: it exceeded its time limit of 300 ms\n"
    );
}

#[test]
fn a_flood_of_stderr_is_cut_to_its_tail() {
    let wulf = unruly_site();
    let (ok, out) = test_unruly(&wulf, "[plugin.unruly.config]\nstderr-kib = 64\n");
    assert!(!ok);
    assert!(
        out.starts_with("error: plugin `unruly` crashed: wasm trap: wasm `unreachable` instruction executed; its stderr: ... "),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(": last words of n001"),
        "the panic message is kept: {out}"
    );
    assert!(out.len() < 5000, "{} bytes of error", out.len());
}

#[test]
fn paths_longer_than_a_node_takes_are_refused() {
    let wulf = unruly_site();
    let (ok, out) = test_unruly(&wulf, "[plugin.unruly.config]\npath-len = 1048576\n");
    assert!(!ok);
    insta::assert_snapshot!(out, @r#"error: plugin `unruly` returned invalid output: path "/ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp..." is 1048576 bytes long; a node's kernel takes at most 4095"#);
    let (ok, out) = test_unruly(&wulf, "[plugin.unruly.config]\nname-len = 256\n");
    assert!(!ok);
    insta::assert_snapshot!(out, @r#"error: plugin `unruly` returned invalid output: path "/etc/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn..." has a name of 256 bytes; a node's filesystem takes at most 255"#);
    let (ok, out) = test_unruly(
        &wulf,
        "[plugin.unruly.config]\nname-len = 255\npath-len = 4095\n",
    );
    assert!(ok, "the longest allowed are fine: {out}");
}

#[test]
fn outputs_over_128_mib_meet_the_output_limit_not_a_crash() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    install(&wulf, "bloated");
    let config = |limit: u32| {
        format!(
            "[plugin.bloated]\nconfig = {{ size-mib = 140 }}\nlimits = {{ memory-mib = 1024, output-mib = {limit}, timeout-ms = 60000 }}\n"
        )
    };
    wulf.write("wulf.toml", &config(129));
    insta::assert_snapshot!(
        wulf.fails(&["plugin", "test", "bloated", "--node", "n001"]),
        @"error: plugin `bloated` was stopped: it exceeded its output limit of 129 MiB"
    );
    wulf.write("wulf.toml", &config(200));
    let listing = wulf.ok(&["plugin", "test", "bloated", "--node", "n001"]);
    assert!(
        listing.starts_with("/var/big 0644 0:0 146800640 file"),
        "{listing}"
    );
}

/// The files of a node's system overlay as served, decompressed and concatenated.
fn served_system(http: std::net::SocketAddr, mac: &str) -> String {
    overlay_text(&format!("http://{http}/system/{mac}"))
}

/// [`served_system`] once it holds `wanted`.
fn served_system_with(http: std::net::SocketAddr, mac: &str, wanted: &str) -> String {
    wait_for_overlay(&format!("http://{http}/system/{mac}"), wanted, String::new)
}

#[test]
fn a_failing_node_does_not_stop_the_others() {
    let wulf = unruly_site();
    wulf.ok(&["overlay", "build"]);

    // The CLI: n002's plugin fails; n001 and n003 get the new motd; the command fails naming
    // n002, and n002 keeps its last archive.
    wulf.write(
        "overlays/site/etc/motd.ww",
        "second motd of {{ node.id }}\n",
    );
    wulf.write(
        "wulf.toml",
        "[plugin.unruly.config]\nfail-node = \"n002\"\n",
    );
    let out = wulf.run(&["overlay", "build", "--json"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["built"], serde_json::json!(["n001", "n003"]));
    assert_eq!(
        report["failed"],
        serde_json::json!([{"node": "n002", "error": "overlay `unruly` for node `n002`: plugin `unruly` returned an error: refuses n002 on purpose"}])
    );
    insta::assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: the overlays of 1 node(s) could not be built (the others were); their last built archives, if any, are still served"
    );
    let text = wulf.fails(&["overlay", "build"]);
    assert!(
        text.starts_with("error: node `n002`: overlay `unruly` for node `n002`: plugin `unruly` returned an error: refuses n002 on purpose\n"),
        "{text}"
    );

    // The server: a change that fails one node still serves the others' new archives, and the
    // failing node its last one.
    let serving = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    wulf.write("overlays/site/etc/motd.ww", "third motd of {{ node.id }}\n");
    served_system_with(serving.http, "aa:00:00:00:01:01", "third motd of n001");
    let n002 = served_system(serving.http, "aa:00:00:00:01:02");
    assert!(n002.contains("first motd of n002"), "{n002}");
    let n003 = served_system(serving.http, "aa:00:00:00:01:03");
    assert!(n003.contains("third motd of n003"), "{n003}");

    // The plugin mended, n002 catches up.
    wulf.write("wulf.toml", "");
    let n002 = served_system_with(serving.http, "aa:00:00:00:01:02", "third motd of n002");
    assert!(n002.contains("etc/unruly"), "{n002}");
}

/// A small image tree with `mib` MiB of incompressible data, so packing it takes a while.
fn slow_tree(dir: &std::path::Path, mib: usize, seed: u64) -> std::path::PathBuf {
    let root = dir.join(format!("tree-{seed}"));
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-1-amd64"), "kernel").unwrap();
    std::fs::write(root.join("bin/sh"), format!("sh {seed}")).unwrap();
    let mut x = seed | 1;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("bin/noise"), data).unwrap();
    root
}

/// `wulf image import --force <tree> img`, running.
fn reimport(wulf: &Wulf, tree: &std::path::Path) -> std::process::Child {
    wulf.command(&["image", "import", "--force", tree.to_str().unwrap(), "img"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The image's status and ETag as served to node `mac`.
fn image_head(http: std::net::SocketAddr, mac: &str) -> (u32, String) {
    let (code, headers, _) = curl(&["-I", &format!("http://{http}/image/{mac}")]);
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (code, etag)
}

#[test]
fn a_forced_reimport_serves_the_old_image_until_the_new_one_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001]\nimage = \"img\"\n[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n",
    );
    let first = slow_tree(dir.path(), 1, 1);
    wulf.ok(&["image", "import", first.to_str().unwrap(), "img"]);
    let serving = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let mac = "aa:00:00:00:01:01";
    let (code, old_etag) = image_head(serving.http, mac);
    assert_eq!(code, 200);

    // A replacement that is killed while it builds: the old image still serves, unchanged,
    // and the next import sweeps what the dead one left.
    let second = slow_tree(dir.path(), 64, 2);
    let mut import = reimport(&wulf, &second);
    let staging = wulf
        .path()
        .join(format!("images/.import-img-{}", import.id()));
    wulf_tests::wait_for(
        "the import's build, beside the image",
        std::time::Duration::from_secs(60),
        String::new,
        || {
            std::fs::read_dir(&staging)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("initramfs"))
                .then_some(())
        },
    );
    assert_eq!(image_head(serving.http, mac), (200, old_etag.clone()));
    import.kill().unwrap();
    import.wait().unwrap();
    assert_eq!(image_head(serving.http, mac), (200, old_etag.clone()));
    assert!(staging.exists(), "what the killed import left");

    // A replacement that completes: every request meanwhile is answered, the old image until
    // the swap, then the new one.
    let mut import = reimport(&wulf, &second);
    let mut seen = Vec::new();
    while import.try_wait().unwrap().is_none() {
        seen.push(image_head(serving.http, mac));
    }
    assert!(import.wait().unwrap().success());
    assert!(!staging.exists(), "the dead import's staging is swept");
    let (code, new_etag) = image_head(serving.http, mac);
    assert_eq!(code, 200);
    assert_ne!(new_etag, old_etag);
    assert!(seen.len() > 1, "requests during the import: {seen:?}");
    for (code, etag) in &seen {
        assert_eq!(*code, 200, "{seen:?}");
        assert!(*etag == old_etag || *etag == new_etag, "{seen:?}");
    }
}

#[test]
fn a_broken_hand_edit_of_the_inventory_keeps_the_last_good_one_serving() {
    let wulf = Wulf::new();
    let good = "[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n\
                [nodes.n002.network-devices.default]\nhwaddr = \"aa:00:00:00:01:02\"\n";
    wulf.write("nodes.toml", good);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let serving = wulf.serve_logged(&["--http-addr", "127.0.0.1:0", "--no-tftp"], &log);
    let script = |mac: &str| {
        let (code, _, body) = curl(&[&format!("http://{}/ipxe/{mac}", serving.http)]);
        (code, String::from_utf8_lossy(&body).into_owned())
    };
    let says = |what: &str| {
        wulf_tests::wait_for(
            what,
            std::time::Duration::from_secs(10),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(what)
                    .then_some(())
            },
        )
    };
    assert!(script("aa:00:00:00:01:02").1.contains("n002"));

    // A duplicate MAC: refused on load, named; both nodes still boot as themselves.
    wulf.write(
        "nodes.toml",
        &format!("{good}[nodes.n003.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n"),
    );
    says(
        "nodes.toml: node `n003`: `network-devices.default.hwaddr` = \"aa:00:00:00:01:01\": node `n001` has this address too",
    );
    assert!(script("aa:00:00:00:01:01").1.contains("n001"));
    assert!(script("aa:00:00:00:01:02").1.contains("n002"));
    insta::assert_snapshot!(
        wulf.redact(&wulf.fails(&["node", "list"])),
        @r#"error: [STATE]/nodes.toml: node `n003`: `network-devices.default.hwaddr` = "aa:00:00:00:01:01": node `n001` has this address too"#
    );

    // An empty file: refused, the nodes stay.
    wulf.write("nodes.toml", "");
    says("nodes.toml is empty, which would drop every node and profile");
    assert!(script("aa:00:00:00:01:02").1.contains("n002"));
    insta::assert_snapshot!(
        wulf.redact(&wulf.fails(&["node", "list"])),
        @"error: [STATE]/nodes.toml is empty, which would drop every node and profile; if it was truncated, restore it from a backup; to keep no records, put a comment line in it"
    );

    // Mended: the new inventory serves.
    wulf.write(
        "nodes.toml",
        "[nodes.n009.network-devices.default]\nhwaddr = \"aa:00:00:00:01:09\"\n",
    );
    wulf_tests::wait_for(
        "the mended inventory",
        std::time::Duration::from_secs(10),
        || script("aa:00:00:00:01:09").1,
        || script("aa:00:00:00:01:09").1.contains("n009").then_some(()),
    );
    assert!(
        script("aa:00:00:00:01:02")
            .1
            .contains("is not a known node")
    );
}

/// A TFTP read request for `name` with `options`.
fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut packet = vec![0, 1];
    for field in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    packet
}

/// `curl` fetching `url` over TFTP: whether it got the whole file.
fn tftp_fetch(url: &str, len: usize, from: &str) -> bool {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "--interface", from, "-o"])
        .arg(out.path())
        .arg(url)
        .status()
        .unwrap();
    status.success() && std::fs::metadata(out.path()).map(|m| m.len()).ok() == Some(len as u64)
}

#[test]
fn silent_tftp_requests_cannot_keep_pxe_down() {
    wulf_tests::require_command("curl", "curl");
    let wulf = Wulf::new();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("undionly.kpxe"), vec![7u8; 100_000]).unwrap();
    let serving = wulf.serve(&[
        "--http-addr",
        "127.0.0.1:0",
        "--tftp-addr",
        "127.0.0.1:0",
        "--tftp-root",
        root.path().to_str().unwrap(),
    ]);
    let server = serving.tftp.unwrap();

    // A long timeout is not granted: the OACK leaves it out (the server's own applies).
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    probe
        .send_to(
            &rrq("undionly.kpxe", &[("timeout", "255"), ("tsize", "0")]),
            server,
        )
        .unwrap();
    let mut buf = [0u8; 1024];
    let (len, _) = probe.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..len],
        b"\x00\x06tsize\x00100000\x00",
        "an OACK with tsize only"
    );

    // 1,200 spoofed-looking requests asking for the longest timeout, from 150 addresses and
    // never answered: more than every slot.
    let silent: Vec<std::net::UdpSocket> = (0..1200)
        .map(|i| {
            let socket = std::net::UdpSocket::bind(format!("127.0.1.{}:0", 1 + i % 150)).unwrap();
            socket
                .send_to(
                    &rrq("undionly.kpxe", &[("timeout", "255"), ("blksize", "1468")]),
                    server,
                )
                .unwrap();
            socket
        })
        .collect();
    // A real client still boots, from a fresh address and from a flooding one.
    let url = format!("tftp://{server}/undionly.kpxe");
    assert!(tftp_fetch(&url, 100_000, "127.0.0.1"), "a fresh address");
    assert!(
        tftp_fetch(&url, 100_000, "127.0.1.7"),
        "an address that also floods"
    );
    drop(silent);
}

/// `/metrics` value of `name`.
fn metric(http: std::net::SocketAddr, name: &str) -> u64 {
    let (_, _, body) = curl(&[&format!("http://{http}/metrics")]);
    wulf_tests::metric(&String::from_utf8_lossy(&body), name)
}

#[test]
fn idle_connections_past_the_open_file_limit_do_not_stop_http() {
    wulf_tests::require_command("prlimit", "util-linux");
    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n",
    );
    // The common default of 1,024 open files, which the server cannot raise.
    let serving = wulf.serve_in(
        &["prlimit", "--nofile=1024:1024", "--"],
        &["--http-addr", "127.0.0.1:0", "--no-tftp"],
    );
    assert_eq!(metric(serving.http, "wulf_http_connections_limit"), 768);
    // 2,000 connections that never send a byte.
    let idle: Vec<std::net::TcpStream> = (0..2000)
        .map(|_| std::net::TcpStream::connect(serving.http).unwrap())
        .collect();
    let (code, _, body) = curl(&[
        "--max-time",
        "10",
        &format!("http://{}/ipxe/aa:00:00:00:01:01", serving.http),
    ]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("n001"));
    assert!(metric(serving.http, "wulf_http_connections_shed_total") >= 1000);
    assert!(metric(serving.http, "wulf_http_connections") <= 768);
    drop(idle);
}

#[test]
fn one_address_cannot_take_every_connection() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001]\nimage = \"img\"\n[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n",
    );
    wulf.write("wulf.toml", "[server]\nmax-connections-per-peer = 8\n");
    let tree = slow_tree(dir.path(), 24, 3);
    wulf.ok(&["image", "import", tree.to_str().unwrap(), "img"]);
    let serving = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let from = |ip: &str| connect_from(ip, serving.http);
    let get = |stream: &mut std::net::TcpStream, path: &str| {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .unwrap();
    };
    let status = |stream: &mut std::net::TcpStream| {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 12];
        match stream.read_exact(&mut head) {
            Ok(()) => String::from_utf8_lossy(&head[9..12]).into_owned(),
            Err(e) => format!("no answer: {e}"),
        }
    };

    // Eight slow requests from one address: a ninth from it takes the place of the one idle
    // longest.
    // Eight requests still arriving from one address, whose heads (from .2) or bodies (from
    // .4) never end: a ninth from the same address takes the place of the one idle longest.
    let partial_head: &[u8] = b"GET /ipxe/aa:00:00:00:01:01 HTTP/1.1\r\n";
    let partial_body: &[u8] =
        b"GET /ipxe/aa:00:00:00:01:01 HTTP/1.1\r\ncontent-length: 1000\r\n\r\nabc";
    for (address, request) in [("127.0.0.2", partial_head), ("127.0.0.4", partial_body)] {
        let slow: Vec<std::net::TcpStream> = (0..8)
            .map(|_| {
                let mut s = from(address);
                s.write_all(request).unwrap();
                s
            })
            .collect();
        let mut ninth = from(address);
        get(&mut ninth, "/ipxe/aa:00:00:00:01:01");
        assert_eq!(status(&mut ninth), "200", "{address}");
        // One of the eight was closed to make room; the others are open.
        let closed = wulf_tests::wait_for(
            "a slow connection closed",
            std::time::Duration::from_secs(10),
            String::new,
            || {
                let closed = slow
                    .iter()
                    .filter(|s| {
                        s.set_nonblocking(true).unwrap();
                        let mut stream: &std::net::TcpStream = s;
                        matches!(stream.read(&mut [0u8; 16]), Ok(0))
                    })
                    .count();
                (closed > 0).then_some(closed)
            },
        );
        assert_eq!(closed, 1, "{address}");
    }

    // Eight downloads from another address that do not read (busy): a ninth from it is
    // refused with 503; other addresses are still served.
    let mut busy: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut s = from("127.0.0.3");
            get(&mut s, "/image/aa:00:00:00:01:01");
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut ninth = from("127.0.0.3");
    get(&mut ninth, "/ipxe/aa:00:00:00:01:01");
    assert_eq!(status(&mut ninth), "503");
    let mut other = from("127.0.0.1");
    get(&mut other, "/ipxe/aa:00:00:00:01:01");
    assert_eq!(status(&mut other), "200");
    assert_eq!(
        metric(serving.http, "wulf_http_connections_refused_total"),
        1
    );
    // The busy downloads are whole when read.
    for stream in &mut busy {
        assert_eq!(status(stream), "200");
    }
}

/// A TCP connection to `to` from address `ip`.
fn connect_from(ip: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

#[test]
fn overlays_name_the_port_serve_listens_on_and_the_cli_agrees() {
    let wulf = Wulf::new();
    wulf.write(
        "nodes.toml",
        "[nodes.n001]\nsystem-overlays = [\"wwinit\"]\n[nodes.n001.network-devices.default]\nhwaddr = \"aa:00:00:00:01:01\"\n",
    );
    wulf.write("wulf.toml", "[server]\nhttp-addr = \"127.0.0.1:9873\"\n");
    wulf.ok(&["overlay", "build"]);
    let serving = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let port = serving.http.port();
    let system = served_system(serving.http, "aa:00:00:00:01:01");
    assert!(
        system.contains(&format!("WWSERVERPORT='{port}'")),
        "{system}"
    );
    // The CLI builds what the server built: nothing to do.
    let report: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["overlay", "build", "--json"])).unwrap();
    assert_eq!(report["built"], serde_json::json!([]), "{report}");
    drop(serving);
    // With the server gone, the configured port again.
    wulf.ok(&["overlay", "build"]);
    let config = wulf.ok(&[
        "overlay",
        "render",
        "wwinit",
        "/warewulf/config",
        "--node",
        "n001",
    ]);
    assert!(config.contains("WWSERVERPORT='9873'"), "{config}");
}

#[test]
fn a_cold_start_compiles_plugins_on_many_threads_without_tripping_over_temp_files() {
    let wulf = Wulf::new();
    let mut nodes = String::from(
        "[profiles.default]\nsystem-overlays = [\"wwinit\", \"hostname\", \"hosts\", \"network\", \"fstab\", \"ssh-host-keys\", \"ssh-authorized-keys\"]\n",
    );
    for n in 0..64 {
        nodes.push_str(&format!(
            "[nodes.n{n:03}]\nprofiles = [\"default\"]\n[nodes.n{n:03}.network-devices.default]\nhwaddr = \"aa:00:00:00:02:{n:02x}\"\n"
        ));
    }
    wulf.write("nodes.toml", &nodes);
    // Several processes at once, each compiling every plugin into one empty cache.
    let runs: Vec<std::process::Child> = (0..3)
        .map(|_| {
            wulf.command(&["overlay", "build", "--force"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("cannot cache"), "{stderr}");
    }
    let leftovers: Vec<_> = walk(&wulf.path().join("cache"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
