//! The provisioning routes of `wulf serve` with curl: kernel, image, system and runtime
//! overlays and Warewulf's `/provision` dispatcher; ranges, conditional requests, `HEAD`,
//! asset keys, on-demand overlay builds and concurrent downloads.

use std::process::Command;

use wulf_tests::{Wulf, require_command};

const MAC: &str = "aa:00:00:00:00:01";
const MAC2: &str = "aa-00-00-00-00-02";

/// `curl` returning (status, headers, body bytes).
pub(crate) fn curl(args: &[&str]) -> (u32, String, Vec<u8>) {
    require_command("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            headers.to_str().unwrap(),
            "-o",
            body.to_str().unwrap(),
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        code,
        std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header(headers: &str, name: &str) -> String {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn nodes_get_their_kernel_image_and_overlays_with_ranges_and_validators() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = crate::cli_image::fixture_layout(&scratch.path().join("layout"));
    let wulf = Wulf::new();
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "base",
    ]);
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--image",
        "base",
        "--system-overlays",
        "wwinit,hostname",
        "--runtime-overlays",
        "hosts",
    ]);
    wulf.ok(&[
        "node",
        "add",
        "n1",
        "--hwaddr",
        MAC,
        "--ipaddr",
        "10.0.0.1",
        "--profile",
        "default",
    ]);
    wulf.ok(&[
        "node",
        "add",
        "n2",
        "--hwaddr",
        MAC2,
        "--profile",
        "default",
        "--kernelversion",
        "5.10",
        "--asset",
        "tag-42",
    ]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let base = format!("http://{}", served.http);

    // The kernel the image's default selection picks, and a node's override.
    let (code, headers, body) = curl(&[&format!("{base}/kernel/{MAC}")]);
    assert_eq!((code, body.as_slice()), (200, &b"KERNEL-6.1"[..]));
    let etag = header(&headers, "etag");
    assert_eq!(etag.len(), 66, "a quoted sha256: {headers}");
    let (code, _, body) = curl(&[&format!("{base}/kernel/{MAC2}?assetkey=tag-42")]);
    assert_eq!((code, body.as_slice()), (200, &b"KERNEL-5.10"[..]));

    // Asset keys, unknown and malformed addresses.
    let (code, _, body) = curl(&[&format!("{base}/kernel/{MAC2}")]);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).trim()),
        (401, "asset key mismatch")
    );
    let (code, _, _) = curl(&[&format!("{base}/kernel/{MAC2}?assetkey=wrong")]);
    assert_eq!(code, 401);
    let (code, _, body) = curl(&[&format!("{base}/image/aa:00:00:00:00:99")]);
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    let (code, _, _) = curl(&[&format!("{base}/image/not-a-mac")]);
    assert_eq!(code, 400);
    let (code, _, _) = curl(&[
        &format!("{base}/image/{MAC}/../../etc/passwd"),
        "--path-as-is",
    ]);
    assert_eq!(code, 404);

    // The image: whole, ranges, validators, HEAD.
    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["image", "show", "base", "--json"])).unwrap();
    let file = wulf
        .path()
        .join("images/base")
        .join(show["build"]["file"].as_str().unwrap());
    let whole = std::fs::read(&file).unwrap();
    let url = format!("{base}/image/{MAC}");
    let (code, headers, body) = curl(&[&url]);
    assert_eq!(code, 200);
    assert!(body == whole, "the image as built");
    let etag = header(&headers, "etag");
    assert_eq!(
        etag,
        format!("\"{}\"", show["build"]["sha256"].as_str().unwrap())
    );
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    let (code, headers, body) = curl(&["-r", "0-99", &url]);
    assert_eq!((code, body.as_slice()), (206, &whole[..100]));
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-99/{}", whole.len())
    );
    let (code, _, body) = curl(&["-H", "Range: bytes=-10", &url]);
    assert_eq!((code, body.as_slice()), (206, &whole[whole.len() - 10..]));
    let (code, headers, _) = curl(&["-H", &format!("Range: bytes={}-", whole.len()), &url]);
    assert_eq!(
        (code, header(&headers, "content-range")),
        (416, format!("bytes */{}", whole.len()))
    );
    let (code, _, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!((code, body.len()), (304, 0));
    let (code, _, body) = curl(&["-H", "If-None-Match: \"other\"", &url]);
    assert_eq!((code, body.len()), (200, whole.len()));
    let (code, _, _) = curl(&[
        "-H",
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        &url,
    ]);
    assert_eq!(code, 304);
    let (code, headers, _) = curl(&["-I", &url]);
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-length"), whole.len().to_string());

    // Overlays are built on first request; the system overlay carries the node's hostname.
    assert!(!wulf.path().join("provision/index.json").exists());
    let (code, _, system) = curl(&[&format!("{base}/system/{MAC}")]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&system));
    let listing = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.gz"), &system).unwrap();
        let out = Command::new("sh")
            .current_dir(dir.path())
            .args(["-c", "gzip -dc s.gz | cpio -t --quiet"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        listing.lines().any(|l| l == "etc/hostname") && listing.lines().any(|l| l == "init"),
        "{listing}"
    );
    let (code, _, runtime) = curl(&[&format!("{base}/provision/{MAC}?stage=runtime")]);
    assert_eq!(code, 200);
    assert!(!runtime.is_empty());
    let (code, _, _) = curl(&[&format!("{base}/provision/{MAC}?stage=bogus")]);
    assert_eq!(code, 400);
    let (code, _, body) = curl(&[&format!("{base}/provision/{MAC}")]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("#!ipxe"));

    // Eight downloads at once all get the whole image.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&[&url]))
        })
        .collect();
    for h in handles {
        let (code, _, body) = h.join().unwrap();
        assert_eq!(code, 200);
        assert!(body == whole);
    }

    let (_, _, status) = curl(&[&format!("{base}/status")]);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(
        status["nodes"]["n1"]["stage"], "image",
        "the last thing n1 fetched: {status}"
    );
    assert!(
        status["nodes"]["n1"]["sent"]
            .as_str()
            .unwrap()
            .starts_with("initramfs-"),
        "{status}"
    );
    assert_eq!(
        status["nodes"]["n2"]["sent"], "vmlinuz-5.10.0-30",
        "{status}"
    );

    let (code, _, metrics) = curl(&[&format!("{base}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("wulf_http_requests_total{stage=\"image\",code=\"206\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wulf_http_requests_total{stage=\"kernel\",code=\"401\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wulf_overlay_builds_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("wulf_nodes 2\n"), "{metrics}");

    // The same through the CLI.
    let server = served.http.to_string();
    let table = wulf.ok(&["node", "status", "--server", &server]);
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("n2"))
        .unwrap_or_default();
    assert!(
        row.contains("kernel")
            && row.contains("vmlinuz-5.10.0-30")
            && row.contains("127.0.0.1")
            && row.contains("s ago"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "status", "--json", "--server", &server])).unwrap();
    assert_eq!(json["nodes"]["n1"]["stage"], "image");
    drop(served);
    let err = wulf.fails(&["node", "status", "--server", "127.0.0.1:1"]);
    assert!(
        err.contains("cannot reach wulf serve at 127.0.0.1:1"),
        "{err}"
    );
}

/// The decompressed text of a served overlay (all its gzip segments).
pub(crate) fn overlay_text(url: &str) -> String {
    let (code, _, body) = curl(&[url]);
    assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut text)
        .unwrap();
    String::from_utf8_lossy(&text).into_owned()
}

/// Fetches `url` until its overlay contains `wanted` (the server checks its inputs at most
/// once a second and polls the inventory file).
pub(crate) fn wait_for_overlay(url: &str, wanted: &str, context: impl Fn() -> String) -> String {
    wulf_tests::wait_for(
        &format!("{url} containing {wanted:?}"),
        std::time::Duration::from_secs(20),
        || format!("last:\n{}\n{}", overlay_text(url), context()),
        || Some(overlay_text(url)).filter(|text| text.contains(wanted)),
    )
}

#[test]
fn stale_overlays_are_rebuilt_when_sources_or_nodes_change() {
    let wulf = Wulf::new();
    wulf.ok(&["overlay", "create", "motd"]);
    wulf.write("overlays/motd/etc/motd.ww", "v1 {{ node.comment }}\n");
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--system-overlays",
        "motd,hostname",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC, "--comment", "first"]);
    wulf.ok(&["overlay", "build"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let url = format!("http://{}/system/{MAC}", served.http);
    assert!(overlay_text(&url).contains("v1 first"));

    // An edited overlay source, then an edited node: both rebuilt on the next request.
    wulf.write("overlays/motd/etc/motd.ww", "v2 {{ node.comment }}\n");
    wait_for_overlay(&url, "v2 first", String::new);
    wulf.ok(&["node", "set", "n1", "--comment", "second"]);
    wait_for_overlay(&url, "v2 second", String::new);
    let built: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["overlay", "build", "--json"])).unwrap();
    assert_eq!(
        built["built"],
        serde_json::json!([]),
        "the server left nothing stale"
    );

    // A broken template: the last good archive stays in service, and the error is logged.
    wulf.write("overlays/motd/etc/motd.ww", "v3 {{ node.nope }}\n");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(overlay_text(&url).contains("v2 second"));
}

#[test]
fn secure_mode_sends_runtime_overlays_to_privileged_ports_only() {
    if !nix_is_root() {
        eprintln!(
            "SKIPPED secure_mode_sends_runtime_overlays_to_privileged_ports_only: binding a source port below 1024 needs root"
        );
        return;
    }
    let wulf = Wulf::new();
    wulf.write("wulf.toml", "[server]\nsecure = true\n");
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--image",
        "none",
        "--system-overlays",
        "hostname",
        "--runtime-overlays",
        "hosts",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let base = format!("http://{}", served.http);
    let (code, _, script) = curl(&[&format!("{base}/ipxe/{MAC}")]);
    let script = String::from_utf8_lossy(&script);
    assert_eq!(code, 200);
    assert!(
        !script.contains("runtime"),
        "scripts skip the runtime overlay in secure mode:\n{script}"
    );
    let (code, _, body) = curl(&[&format!("{base}/runtime/{MAC}")]);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = curl(&["--local-port", "700-900", &format!("{base}/runtime/{MAC}")]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(overlay_text(&format!("{base}/system/{MAC}")).contains("n1"));
    let (_, _, metrics) = curl(&[&format!("{base}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("wulf_plugin_calls_total{plugin=\"hostname\",outcome=\"ok\"} 1\n")
            && metrics.contains("wulf_plugin_call_seconds_count{plugin=\"hosts\"} 2\n"),
        "plugin calls are counted (hosts: generate and generate-shared; hostname, `shared = \"none\"`: generate only):\n{metrics}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

/// A state with an image whose initramfs is about 8 MiB (incompressible data) and a node
/// `n1` booting it.
fn big_image_node(scratch: &std::path::Path) -> Wulf {
    let root = scratch.join("rootfs");
    for dir in ["bin", "boot", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("bin/sh"), "#!sh").unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-1-amd64"), "KERNEL").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("data/blob"), noise).unwrap();
    let wulf = Wulf::new();
    wulf.ok(&["image", "import", root.to_str().unwrap(), "big"]);
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "--image",
        "big",
        "--system-overlays",
        "hostname",
        "--runtime-overlays",
        "hosts",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", MAC]);
    wulf
}

#[test]
fn transfers_in_flight_survive_reloads_and_builds_follow_the_config() {
    require_command("curl", "curl");
    let scratch = tempfile::tempdir().unwrap();
    let wulf = big_image_node(scratch.path());
    let log = scratch.path().join("serve.log");
    let served = wulf.serve_logged(&["-v", "--http-addr", "127.0.0.1:0", "--no-tftp"], &log);
    let image = format!("http://{}/image/{MAC}", served.http);
    let whole = curl(&[&image]).2;
    assert!(whole.len() > 8 << 20, "{}", whole.len());

    // A slow download (about 4 s), and meanwhile: SIGHUP, a config edit, an inventory edit.
    let out = scratch.path().join("slow");
    let mut slow = Command::new("curl")
        .args(["-s", "--fail", "--limit-rate", "2M", "-o"])
        .arg(&out)
        .arg(&image)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    run_kill_hup(served.pid());
    wulf.write(
        "wulf.toml",
        "[plugin.hosts.config]\nextra = [\"10.9.9.9 from-the-config\"]\n",
    );
    wulf.ok(&["node", "set", "n1", "--comment", "edited mid-transfer"]);
    run_kill_hup(served.pid());
    assert!(
        slow.wait().unwrap().success(),
        "the download in flight failed"
    );
    assert!(
        std::fs::read(&out).unwrap() == whole,
        "the download in flight is whole and unchanged"
    );
    // The server's builds read the edited wulf.toml.
    wait_for_overlay(
        &format!("http://{}/runtime/{MAC}", served.http),
        "10.9.9.9 from-the-config",
        || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("the server said:\n{log}")
        },
    );
}

/// Under `max-image-streams = 1`, a second image request waits (counted in `/metrics`) until
/// the first image is sent, while scripts, kernels and `HEAD`s are answered at once.
#[test]
fn images_past_max_image_streams_wait_their_turn_and_nothing_else_does() {
    use std::io::{Read as _, Write as _};
    require_command("curl", "curl");
    let scratch = tempfile::tempdir().unwrap();
    let wulf = big_image_node(scratch.path());
    wulf.write("wulf.toml", "[server]\nmax-image-streams = 1\n");
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let base = format!("http://{}", served.http);
    let whole = curl(&[&format!("{base}/image/{MAC}")]).2;
    assert!(whole.len() > 8 << 20, "{}", whole.len());
    let metrics = || String::from_utf8(curl(&[&format!("{base}/metrics")]).2).unwrap();
    assert_eq!(
        wulf_tests::metric(&metrics(), "wulf_image_streams_limit"),
        1
    );

    // The first node's image: a reader with a small window that stops after the headers, so
    // its stream stays open with most of the image unsent.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&served.http.into()).unwrap();
    let mut first = std::net::TcpStream::from(socket);
    write!(first, "GET /image/{MAC} HTTP/1.0\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // The second waits for its turn.
    let second_out = scratch.path().join("second");
    let mut second = Command::new("curl")
        .args(["-s", "--fail", "-o"])
        .arg(&second_out)
        .arg(format!("{base}/image/{MAC}"))
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while wulf_tests::metric(&metrics(), "wulf_image_streams_waiting") < 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the second image request is not queued:\n{}",
            metrics()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(wulf_tests::metric(&metrics(), "wulf_image_streams"), 1);
    // Everything else is answered meanwhile.
    for stage in ["ipxe", "kernel", "system", "runtime"] {
        let (code, _, _) = curl(&[&format!("{base}/{stage}/{MAC}")]);
        assert_eq!(code, 200, "{stage} while an image waits");
    }
    let (code, headers, _) = curl(&["-I", &format!("{base}/image/{MAC}")]);
    assert_eq!(code, 200, "HEAD of the image while one waits");
    assert_eq!(header(&headers, "content-length"), whole.len().to_string());
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second image was sent while the first still held the only place"
    );

    // The first is read to its end; then the second goes out, whole.
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    let body = rest
        .split_at(rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4)
        .1;
    assert!(body == whole.as_slice(), "the first image is whole");
    assert!(second.wait().unwrap().success());
    assert!(
        std::fs::read(&second_out).unwrap() == whole,
        "the second image is whole"
    );
    let text = metrics();
    assert_eq!(
        wulf_tests::metric(&text, "wulf_image_stream_waits_total"),
        1
    );
    assert_eq!(wulf_tests::metric(&text, "wulf_image_streams_waiting"), 0);
    assert_eq!(wulf_tests::metric(&text, "wulf_image_streams"), 0);
}

fn run_kill_hup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
