//! `wulf serve` through the real binary: HTTP with curl, TFTP with curl and with a raw client
//! of ours for what curl cannot do (the PXE tsize probe, windows, write requests, garbage).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use wulf_tests::{Serving, Wulf, require_command};

struct Served {
    /// Keeps the server running for the test; stops it when dropped.
    _serving: Serving,
    http: SocketAddr,
    tftp: SocketAddr,
    _wulf: Wulf,
    _root: tempfile::TempDir,
}

const NODES: &str = r#"
[profiles.default]
image = "rocky-9"
kernel = { args = ["quiet"] }
[nodes.n001]
profiles = ["default"]
[nodes.n001.network-devices.default]
hwaddr = "aa:bb:cc:dd:ee:01"
[nodes.n001.network-devices.ib]
hwaddr = "aa:bb:cc:dd:ee:11"
"#;

/// A deterministic file of `len` bytes.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn serve() -> Served {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.path().join("undionly.kpxe"), payload(300_000))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.path().join("exact.bin"), payload(1024)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.path().join("big.bin"), payload(70_000 * 512 + 3))
        .unwrap_or_else(|e| panic!("{e}"));
    let root_arg = root.path().display().to_string();
    let serving = wulf.serve(&[
        "--http-addr",
        "127.0.0.1:0",
        "--tftp-addr",
        "127.0.0.1:0",
        "--tftp-root",
        &root_arg,
    ]);
    let tftp = serving.tftp.unwrap_or_else(|| panic!("TFTP is off"));
    Served {
        http: serving.http,
        tftp,
        _serving: serving,
        _wulf: wulf,
        _root: root,
    }
}

fn curl(args: &[&str]) -> (u32, String) {
    require_command("curl", "curl");
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn http_serves_scripts_by_any_interface_and_tracks_status() {
    let s = serve();
    let url = |path: &str| format!("http://{}{path}", s.http);
    let (code, script) = curl(&[&url("/ipxe/AA-BB-CC-DD-EE-11")]);
    assert_eq!(code, 200);
    assert!(
        script.starts_with("#!ipxe\necho wulf: n001 (aa:bb:cc:dd:ee:11) image rocky-9"),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "wwid=aa:bb:cc:dd:ee:11 wulf.server={} quiet",
            s.http
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("set base http://{}", s.http)),
        "{script}"
    );

    let (code, script) = curl(&[&url("/ipxe/aa:bb:cc:dd:ee:99")]);
    assert_eq!(code, 200);
    assert!(script.contains("not a known node"), "{script}");
    let (code, body) = curl(&[&url("/ipxe/not-a-mac")]);
    assert_eq!(
        (code, body.trim()),
        (
            400,
            "\"not-a-mac\" is not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff"
        )
    );
    assert_eq!(curl(&[&url("/ipxe/../../etc/passwd")]).0, 404);
    assert_eq!(curl(&[&url("/nothing")]).0, 404);

    let (code, status) = curl(&[&url("/status")]);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    assert_eq!(status["nodes"]["n001"]["stage"], "ipxe");
    assert_eq!(status["nodes"]["n001"]["ipaddr"], "127.0.0.1");
    assert!(
        status["nodes"].get("aa:bb:cc:dd:ee:99").is_none(),
        "unknown machines are not nodes"
    );
}

#[test]
fn a_reload_during_the_first_start_does_not_stop_the_server() {
    // A new state directory: the first start makes the cluster's SSH keys, the slow part.
    let wulf = Wulf::new();
    std::fs::remove_dir(wulf.path()).unwrap();
    let mut child = wulf
        .command(&[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--no-tftp",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // serve makes the state directory once SIGHUP is its own; from then on, hang up as
    // `systemctl reload` would, again and again, until it serves.
    wulf_tests::wait_for(
        "the state directory",
        std::time::Duration::from_secs(30),
        String::new,
        || wulf.path().exists().then_some(()),
    );
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut stdout, &mut line).is_ok_and(|n| n > 0) {
            if let Some(rest) = line.strip_prefix("wulf: HTTP on http://") {
                let _ = sender.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            line.clear();
        }
    });
    let mut hangups = 0;
    let http = loop {
        if let Ok(http) = receiver.try_recv() {
            break http;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve died after {hangups} SIGHUP(s)"
        );
        let _ = Command::new("kill").args(["-HUP", &pid]).status();
        hangups += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(hangups > 0);
    let (code, _) = curl(&[&format!("http://{http}/status")]);
    assert_eq!(code, 200);
    assert!(child.try_wait().unwrap().is_none());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn inventory_edits_are_picked_up_while_serving() {
    let s = serve();
    let url = format!("http://{}/ipxe/aa:bb:cc:dd:ee:02", s.http);
    assert!(curl(&[&url]).1.contains("not a known node"));
    let edited =
        format!("{NODES}\n[nodes.n002.network-devices.default]\nhwaddr = \"aa:bb:cc:dd:ee:02\"\n");
    s._wulf.write("nodes.toml", &edited);
    wait_for(&url, "echo wulf: n002");
}

#[test]
fn tftp_serves_real_clients() {
    let s = serve();
    for blksize in ["512", "1468", "8192"] {
        let out = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        let path = out.path().display().to_string();
        let url = format!("tftp://{}/undionly.kpxe", s.tftp);
        require_command("curl", "curl");
        let status = Command::new("curl")
            .args(["-s", "--tftp-blksize", blksize, "-o", &path, &url])
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "curl tftp blksize {blksize}: {status}");
        assert_eq!(
            std::fs::read(out.path()).unwrap_or_default(),
            payload(300_000),
            "blksize {blksize}"
        );
    }
    let missing = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("tftp://{}/nope", s.tftp)])
        .status();
    assert_eq!(
        missing.ok().and_then(|s| s.code()),
        Some(68),
        "curl's code for TFTP file not found"
    );
}

#[test]
fn tftp_serves_tftp_hpa_and_atftp() {
    require_command("tftp", "tftp-hpa");
    require_command("atftp", "atftp");
    let s = serve();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (host, port) = (s.tftp.ip().to_string(), s.tftp.port().to_string());

    // tftp-hpa, with and without a block size option.
    for (name, extra) in [("hpa-plain", ""), ("hpa-blksize", "blksize 1428\n")] {
        let out = dir.path().join(name);
        let script = format!("{extra}binary\nget big.bin {}\nquit\n", out.display());
        let mut child = Command::new("tftp")
            .args([&host, &port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("tftp: {e}"));
        use std::io::Write as _;
        child
            .stdin
            .take()
            .map(|mut i| i.write_all(script.as_bytes()));
        let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "tftp-hpa {name}: {status}");
        assert!(
            std::fs::read(&out).unwrap_or_default() == payload(70_000 * 512 + 3),
            "tftp-hpa {name}: content"
        );
    }

    // atftp, plain and with blksize/tsize/windowsize-free options it sends itself.
    for (name, options) in [
        ("atftp-plain", vec![]),
        (
            "atftp-blksize",
            vec!["--option", "blksize 8192", "--option", "tsize 0"],
        ),
    ] {
        let out = dir.path().join(name);
        let status = Command::new("atftp")
            .args(&options)
            .args([
                "-g",
                "-r",
                "undionly.kpxe",
                "-l",
                out.to_str().unwrap_or_default(),
                &host,
                &port,
            ])
            .status()
            .unwrap_or_else(|e| panic!("atftp: {e}"));
        assert!(status.success(), "atftp {name}: {status}");
        assert_eq!(
            std::fs::read(&out).unwrap_or_default(),
            payload(300_000),
            "atftp {name}"
        );
    }
    let out = dir.path().join("missing");
    let status = Command::new("atftp")
        .args([
            "-g",
            "-r",
            "nope",
            "-l",
            out.to_str().unwrap_or_default(),
            &host,
            &port,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !status.status.success(),
        "atftp must fail on a missing file"
    );
}

/// A minimal TFTP client speaking raw packets.
struct Raw {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    fn new(server: SocketAddr) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        Raw { socket, server }
    }

    fn request(&self, opcode: u8, name: &str, options: &[(&str, &str)]) {
        let mut packet = vec![0, opcode];
        for field in [name, "octet"]
            .into_iter()
            .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
        {
            packet.extend_from_slice(field.as_bytes());
            packet.push(0);
        }
        self.socket
            .send_to(&packet, self.server)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (len, from) = self
            .socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer: {e}"));
        buf.truncate(len);
        (buf, from)
    }

    fn send(&self, to: SocketAddr, packet: &[u8]) {
        self.socket
            .send_to(packet, to)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Reads a whole file after the request was sent; ACKs every `window`-th block (and the
    /// last), and acknowledges the first block twice to check duplicates cause no resend storm.
    /// Blocks resent after a timeout are dropped; a skipped block fails the test.
    fn download(&self, window: usize, first: Option<(Vec<u8>, SocketAddr)>) -> Vec<u8> {
        let mut data = Vec::new();
        let mut expected: u16 = 1;
        let mut pending = first;
        let mut blksize = 512;
        let mut since_ack = 0;
        loop {
            let (packet, from) = pending.take().unwrap_or_else(|| self.recv());
            match packet[1] {
                6 => {
                    let fields: Vec<&[u8]> = packet[2..].split(|b| *b == 0).collect();
                    if let Some(i) = fields.iter().position(|f| *f == b"blksize") {
                        blksize = std::str::from_utf8(fields[i + 1])
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(512);
                    }
                    self.send(from, &[0, 4, 0, 0]);
                }
                3 => {
                    let block = u16::from_be_bytes([packet[2], packet[3]]);
                    // A window the server sent again because our ACK came after its timeout
                    // (a busy machine can hold this thread past the 20 ms floor): we have
                    // those blocks, so we drop them, as RFC 7440 clients do. A block past
                    // the one expected would be a gap, which loopback never makes.
                    let behind = expected.wrapping_sub(block);
                    if (1..=window.max(1) as u16 * 2).contains(&behind) {
                        continue;
                    }
                    assert_eq!(block, expected, "no block is skipped on loopback");
                    data.extend_from_slice(&packet[4..]);
                    let last = packet.len() - 4 < blksize;
                    since_ack += 1;
                    if last || since_ack == window {
                        let ack = [0, 4, packet[2], packet[3]];
                        self.send(from, &ack);
                        if block == 1 {
                            self.send(from, &ack);
                        }
                        since_ack = 0;
                    }
                    if last {
                        return data;
                    }
                    expected = expected.wrapping_add(1);
                }
                other => panic!("unexpected packet type {other}: {packet:?}"),
            }
        }
    }
}

fn error_code(packet: &[u8]) -> Option<u16> {
    (packet.len() >= 4 && packet[1] == 5).then(|| u16::from_be_bytes([packet[2], packet[3]]))
}

#[test]
fn tftp_pxe_probe_then_abort_then_retry() {
    let s = serve();
    let client = Raw::new(s.tftp);
    client.request(1, "undionly.kpxe", &[("tsize", "0"), ("blksize", "1456")]);
    let (oack, from) = client.recv();
    assert_eq!(&oack[..2], &[0, 6]);
    let text = String::from_utf8_lossy(&oack[2..]).replace('\0', " ");
    assert_eq!(text.trim(), "blksize 1456 tsize 300000");
    // The ROM learned the size; it aborts and asks again from the same port.
    client.send(from, b"\x00\x05\x00\x08size probe\0");
    client.request(1, "undionly.kpxe", &[("tsize", "0"), ("blksize", "1456")]);
    assert_eq!(client.download(1, None), payload(300_000));
}

#[test]
fn tftp_windows_wraparound_and_exact_multiples() {
    let s = serve();
    for window in ["4", "16"] {
        let client = Raw::new(s.tftp);
        client.request(
            1,
            "undionly.kpxe",
            &[("blksize", "1468"), ("windowsize", window)],
        );
        assert_eq!(
            client.download(window.parse().unwrap_or(1), None),
            payload(300_000),
            "window {window}"
        );
    }
    // 1024 bytes in 512-byte blocks: the transfer ends with an empty block.
    let client = Raw::new(s.tftp);
    client.request(1, "exact.bin", &[]);
    assert_eq!(client.download(1, None), payload(1024));
    // More than 65535 blocks of 512 bytes: block numbers wrap around.
    let client = Raw::new(s.tftp);
    client.request(1, "big.bin", &[("windowsize", "16")]);
    assert_eq!(client.download(16, None).len(), 70_000 * 512 + 3);
}

#[test]
fn tftp_refuses_writes_traversal_and_garbage() {
    let s = serve();
    let client = Raw::new(s.tftp);
    client.request(2, "undionly.kpxe", &[]);
    assert_eq!(error_code(&client.recv().0), Some(2), "write request");
    for name in ["../etc/passwd", "/../../etc/passwd", "a/./b", "a\\b"] {
        client.request(1, name, &[]);
        assert_eq!(error_code(&client.recv().0), Some(2), "{name}");
    }
    client.request(1, "missing.efi", &[]);
    assert_eq!(error_code(&client.recv().0), Some(1));
    for garbage in [
        &b"\x00"[..],
        b"\x00\x01",
        b"\x00\x09xyz\0",
        b"\x00\x01no-mode",
        b"\xff\xff\xff\xff",
    ] {
        client.send(s.tftp, garbage);
        assert_eq!(error_code(&client.recv().0), Some(4), "{garbage:?}");
    }
    // Still serving.
    client.request(1, "exact.bin", &[]);
    assert_eq!(client.download(1, None), payload(1024));
}

/// Fetches `url` until the body contains `wanted`.
fn wait_for(url: &str, wanted: &str) -> String {
    let started = Instant::now();
    loop {
        let (_, body) = curl(&[url]);
        if body.contains(wanted) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never answered {wanted:?}; last:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unknown_macs_are_discovered_onto_discoverable_nodes() {
    let s = serve();
    s._wulf.write(
        "nodes.toml",
        &format!(
            "{NODES}\n[nodes.spare2]\nprofiles = [\"default\"]\ndiscoverable = true\n\n[nodes.spare1]\nprofiles = [\"default\"]\ndiscoverable = true\nprimary-network = \"boot\"\n[nodes.spare1.network-devices.boot]\ndevice = \"eth1\"\n"
        ),
    );
    let url = |mac: &str| format!("http://{}/ipxe/{mac}", s.http);
    // Nodes are taken in id order; the MAC goes on the primary network device.
    wait_for(&url("aa:bb:cc:00:00:99"), "echo wulf: spare1");
    let stored = std::fs::read_to_string(s._wulf.path().join("nodes.toml")).unwrap_or_default();
    let spare1 = stored
        .split("[nodes.spare1]")
        .nth(1)
        .unwrap_or_default()
        .split("[nodes.spare2]")
        .next()
        .unwrap_or_default();
    assert!(
        spare1.contains("[nodes.spare1.network-devices.boot]")
            && spare1.contains("hwaddr = \"aa:bb:cc:00:00:99\"")
            && !spare1.contains("discoverable"),
        "{stored}"
    );
    // The next unknown machine gets the next node (on a `default` device), then none is left.
    assert!(
        curl(&[&url("AA-BB-CC-00-00-98")])
            .1
            .contains("echo wulf: spare2")
    );
    assert!(
        curl(&[&url("aa:bb:cc:00:00:97")])
            .1
            .contains("not a known node")
    );
    // A discovered machine keeps its node, and the files follow the script.
    assert!(
        curl(&[&url("aa:bb:cc:00:00:99")])
            .1
            .contains("echo wulf: spare1")
    );
    let (code, _) = curl(&[&format!("http://{}/kernel/aa:bb:cc:00:00:97", s.http)]);
    assert_eq!(code, 404, "no node left for a third machine");
    let status: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{}/status", s.http)]).1)
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.to_string().contains("spare2"), "{status}");
}

#[test]
fn scripts_follow_template_edits_and_node_changes() {
    let s = serve();
    let url = format!("http://{}/ipxe/aa:bb:cc:dd:ee:01", s.http);
    assert!(curl(&[&url]).1.contains("quiet"));
    // A site template replaces the built-in one; the cached script is dropped.
    s._wulf.write(
        "ipxe/default.ipxe",
        "#!ipxe\necho site template for {{ id }} args {{ kernel_args }}\n",
    );
    wait_for(&url, "site template for n001 args quiet");
    s._wulf.write(
        "nodes.toml",
        &NODES.replace("args = [\"quiet\"]", "args = [\"console=ttyS0\"]"),
    );
    wait_for(&url, "site template for n001 args console=ttyS0");
}

/// Sends raw bytes on one connection and reads until the server closes it.
fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(request).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http_connections_keep_alive_pipeline_and_refuse_malformed_requests() {
    let s = serve();
    // Two pipelined requests, then one that asks to close: three answers, in order.
    let answers = raw_http(
        s.http,
        b"GET /ipxe/aa:bb:cc:dd:ee:01 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ipxe/aa:bb:cc:dd:ee:99 HTTP/1.1\r\nHost: x\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = answers
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"],
        "{answers}"
    );
    assert!(answers.contains("echo wulf: n001"), "{answers}");
    // HTTP/1.0 closes after one answer.
    let answer = raw_http(s.http, b"GET /status HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // Malformed requests get 4xx and the connection closes; the server goes on.
    for (request, status) in [
        (&b"BLAH\x01 / HTTP/1.1\r\n\r\n"[..], "400"),
        (
            b"GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "411",
        ),
        (
            b"GET /status HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "413",
        ),
        (b"GET /status HTTP/1.1\r\nContent-Length: x\r\n\r\n", "400"),
        // Two lengths that disagree (request smuggling through a proxy in front).
        (
            b"GET /status HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
            "400",
        ),
        // The same length twice is one length.
        (
            b"GET /status HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            "200",
        ),
        (
            b"GET /kernel/../../etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n",
            "404",
        ),
    ] {
        let answer = raw_http(s.http, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    let huge = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(raw_http(s.http, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    assert_eq!(curl(&[&format!("http://{}/status", s.http)]).0, 200);
}
