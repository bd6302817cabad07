//! `wulf-agent`, the static binary `wulf` ships to nodes, against a real `wulf serve`: it
//! follows its node's runtime overlay within seconds (writes, removals, hooks), survives the
//! server restarting, and reports what the node booted so `wulf node status` says when a reboot
//! is needed. The agent endpoint takes only the node's own credential: none, a malformed one,
//! another node's, a forged or a stale signature are refused, and a body is signed for one node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wulf_agent::proto::{self, Answer, Authorization, Covered, Credential};
use wulf_tests::{Wulf, agent_bin, free_tcp_port, wait_for};

/// A node's agent, run as on a node but with a scratch root, stopped when dropped.
struct Agent {
    child: Child,
    root: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// What the agent printed, stdout then stderr.
    fn log(&self) -> String {
        let err = self.log.with_file_name("agent.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

/// The credential `wulf` gives `node` in its system overlay.
fn credential(wulf: &Wulf, node: &str) -> String {
    wulf.ok(&[
        "overlay",
        "render",
        "agent",
        "/etc/wulf/agent.credential",
        "--node",
        node,
    ])
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_owned()
}

/// Starts the shipped agent for `node` against `server`, applying under `dir/root`.
fn start_agent(wulf: &Wulf, node: &str, server: &str, dir: &Path) -> Agent {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(dir.join("credential"), credential(wulf, node)).unwrap();
    let config = dir.join("agent.conf");
    std::fs::write(
        &config,
        format!(
            "node = {node}\nserver = {server}\ncredential = {}\nwait = 20\njitter = 0\nstate = {}\n\
             hook = /etc/motd : echo ran >> {}\n",
            dir.join("credential").display(),
            dir.join("run").display(),
            dir.join("hook.log").display()
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let child = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", agent_bin().display()));
    Agent { child, root, log }
}

/// `wulf node status --json` from `server`: node `id`'s entry.
fn status(wulf: &Wulf, server: &str, id: &str) -> Value {
    let all: Value =
        serde_json::from_str(&wulf.ok(&["node", "status", "--server", server, "--json"])).unwrap();
    all["nodes"][id].clone()
}

/// A site with one node whose runtime overlay has a site overlay `motd`, and a small image.
fn site(dir: &Path) -> Wulf {
    let wulf = Wulf::new();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("boot")).unwrap();
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("boot/vmlinuz-6.1.0-1-amd64"), "kernel").unwrap();
    std::fs::write(rootfs.join("bin/sh"), "sh").unwrap();
    wulf.ok(&["image", "import", rootfs.to_str().unwrap(), "base"]);
    wulf.ok(&["overlay", "create", "motd"]);
    wulf.write("overlays/motd/etc/motd", "first\n");
    wulf.write("overlays/motd/etc/old.conf", "going\n");
    wulf.ok(&[
        "node",
        "add",
        "n1",
        "--hwaddr",
        "aa:bb:cc:00:00:01",
        "--image",
        "base",
        "--runtime-overlays",
        "motd",
    ]);
    wulf.ok(&["node", "add", "n2", "--hwaddr", "aa:bb:cc:00:00:02"]);
    wulf
}

#[test]
fn an_agent_follows_its_overlay_survives_a_restart_and_says_when_to_reboot() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = site(scratch.path());
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let mut served = Some(wulf.serve(&["--http-addr", &addr, "--no-tftp"]));
    // The node boots: its firmware fetches the kernel, the image and the system overlay.
    for stage in ["kernel", "image", "system"] {
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("http://{addr}/{stage}/aa:bb:cc:00:00:01"))
            .status()
            .unwrap();
        assert!(out.success(), "{stage}");
    }
    // ... and the kernel unpacks its runtime overlay into the root.
    let runtime = Command::new("curl")
        .args(["-sf", &format!("http://{addr}/runtime/aa:bb:cc:00:00:01")])
        .output()
        .unwrap();
    let root = scratch.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let entries = wulf_agent::cpio::read_archive(&runtime.stdout).unwrap();
    wulf_agent::apply::apply(&root, &entries, &Default::default()).unwrap();
    assert!(root.join("etc/old.conf").exists());
    assert!(root.join("warewulf/runtime.manifest").exists());

    // A file leaves the overlay before the agent's first sync: the overlay's own manifest
    // tells the agent it was there.
    std::fs::remove_file(wulf.path().join("overlays/motd/etc/old.conf")).unwrap();
    let agent = start_agent(&wulf, "n1", &addr, scratch.path());
    let motd = agent.root.join("etc/motd");
    wait_for(
        "the first sync, with the removal",
        Duration::from_secs(30),
        || agent.log(),
        || (!agent.root.join("etc/old.conf").exists()).then_some(()),
    );
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "first\n");
    assert!(
        agent.log().contains("1 removed (/etc/old.conf)"),
        "{}",
        agent.log()
    );

    // A change to the overlay reaches the node without a poll interval: the agent's request is
    // parked and woken by the rebuild.
    wulf.write("overlays/motd/etc/motd", "second\n");
    wait_for(
        "the edit on the node",
        Duration::from_secs(15),
        || agent.log(),
        || (std::fs::read_to_string(&motd).ok()? == "second\n").then_some(()),
    );
    let hooks = std::fs::read_to_string(scratch.path().join("hook.log")).unwrap();
    assert_eq!(
        hooks.lines().count(),
        1,
        "the motd hook ran for the change only: {hooks}"
    );
    let node = wait_for(
        "the agent's check-in",
        Duration::from_secs(10),
        || agent.log(),
        || {
            let node = status(&wulf, &addr, "n1");
            (node["agent"]["in_sync"] == true).then_some(node)
        },
    );
    assert_eq!(
        node["agent"]["reboot_needed"],
        serde_json::json!([]),
        "{node}"
    );
    for stage in ["kernel", "image", "system"] {
        assert!(
            !node["agent"]["booted"][stage].as_str().unwrap().is_empty(),
            "{node}"
        );
    }

    // The server restarts (same port): the agent retries, applies the next change, and tells
    // the new server what the node booted.
    served.take();
    served = Some(wulf.serve(&["--http-addr", &addr, "--no-tftp"]));
    wulf.write("overlays/motd/etc/motd", "third\n");
    wait_for(
        "a change after the restart",
        Duration::from_secs(45),
        || agent.log(),
        || (std::fs::read_to_string(&motd).ok()? == "third\n").then_some(()),
    );
    // The image changes (rebuilt with another compression): the node runs the old one.
    wulf.ok(&["image", "build", "base", "--compression", "zstd"]);
    wait_for(
        "reboot needed",
        Duration::from_secs(20),
        || format!("{}\n{}", status(&wulf, &addr, "n1"), agent.log()),
        || {
            let node = status(&wulf, &addr, "n1");
            (node["agent"]["reboot_needed"] == serde_json::json!(["image"])
                && node["agent"]["in_sync"] == true)
                .then_some(node)
        },
    );
    let table = wulf.ok(&["node", "status", "--server", &addr]);
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("n1 "))
        .unwrap();
    assert!(
        line.contains("in sync") && line.contains("yes (image)"),
        "{table}"
    );
    wait_for(
        "the agent gauges",
        Duration::from_secs(10),
        String::new,
        || {
            let metrics = Command::new("curl")
                .args(["-s", &format!("http://{addr}/metrics")])
                .output()
                .ok()?;
            let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
            (metrics.contains("wulf_nodes_reboot_needed 1")
                && metrics.contains("wulf_agents_waiting 1"))
            .then_some(())
        },
    );
    drop(served);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_agent_endpoint_takes_only_the_nodes_own_credential() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = site(scratch.path());
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let server = served.http.to_string();
    let n1 = Credential::from_hex(&credential(&wulf, "n1")).unwrap();
    let n2 = Credential::from_hex(&credential(&wulf, "n2")).unwrap();
    let target = proto::RUNTIME_PATH;
    let get = |authorization: Option<String>| {
        let headers: Vec<(&str, String)> = authorization
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        wulf_agent::http::get(&server, target, &headers, Duration::from_secs(20), false).unwrap()
    };
    let sign = |credential: &Credential, node: &str, ts: u64| {
        Authorization::sign(credential, node, "GET", target, ts, Covered::default())
    };

    let auth = sign(&n1, "n1", now());
    let ok = get(Some(auth.header_value()));
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let answer = Answer {
        request: auth.signature(),
        status: 200,
        etag: ok.header("etag").unwrap(),
        booted: ok.header(proto::BOOTED_HEADER).unwrap_or_default(),
        body: &ok.body,
    };
    let signature = ok.header(proto::SIGNATURE_HEADER).unwrap();
    assert!(n1.verify_response(&answer, signature));
    assert!(
        !n2.verify_response(&answer, signature),
        "signed for n1 only"
    );
    let another = sign(&n1, "n1", now() + 1);
    let replayed = Answer {
        request: another.signature(),
        ..answer
    };
    assert!(
        !n1.verify_response(&replayed, signature),
        "bound to its request"
    );

    let header = |a: Authorization| Some(a.header_value());
    let refused = [
        ("none", None, "no `Authorization"),
        (
            "malformed",
            Some("Wulf-Agent node=n1".to_owned()),
            "malformed",
        ),
        (
            "another node's credential",
            header(sign(&n2, "n1", now())),
            "does not match",
        ),
        (
            "a forged signature",
            Some(format!(
                "Wulf-Agent node=n1, ts={}, sig={}",
                now(),
                "00".repeat(32)
            )),
            "does not match",
        ),
        (
            "a stale request",
            header(sign(&n1, "n1", now() - 3600)),
            "off the server's",
        ),
        // Said as a bad signature: nobody learns which nodes exist.
        (
            "an unknown node",
            header(sign(&n1, "n9", now())),
            "does not match",
        ),
    ];
    for (what, authorization, says) in refused {
        let response = get(authorization);
        let body = String::from_utf8_lossy(&response.body);
        assert_eq!(response.status, 401, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
        assert!(response.header(proto::SIGNATURE_HEADER).is_none(), "{what}");
    }
    // A request whose covered header was edited on the way.
    let edited = wulf_agent::http::get(
        &server,
        target,
        &[
            ("Authorization", auth.header_value()),
            ("If-None-Match", "\"0000\"".into()),
        ],
        Duration::from_secs(20),
        false,
    )
    .unwrap();
    assert_eq!(edited.status, 401);
    // n2, with its own credential, gets its own overlay, not n1's.
    let theirs = get(Some(sign(&n2, "n2", now()).header_value()));
    assert_eq!(theirs.status, 200);
    assert_ne!(theirs.header("etag"), ok.header("etag"));
    // The legacy route stays as Warewulf has it.
    let legacy = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{server}/runtime/aa:bb:cc:00:00:01"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&legacy.stdout), "200");
}

#[test]
fn in_secure_mode_agents_connect_from_privileged_ports() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = site(scratch.path());
    wulf.write("wulf.toml", "[server]\nsecure = true\n");
    let conf = wulf.ok(&[
        "overlay",
        "render",
        "agent",
        "/etc/wulf/agent.conf",
        "--node",
        "n1",
    ]);
    assert!(conf.contains("privileged-port = yes\n"), "{conf}");
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let n1 = Credential::from_hex(&credential(&wulf, "n1")).unwrap();
    let target = proto::RUNTIME_PATH;
    let ask = |privileged: bool| {
        let auth = Authorization::sign(&n1, "n1", "GET", target, now(), Covered::default());
        wulf_agent::http::get(
            &served.http.to_string(),
            target,
            &[("Authorization", auth.header_value())],
            Duration::from_secs(20),
            privileged,
        )
        .unwrap()
    };
    let refused = ask(false);
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // The tests run as root, as the agent does on a node.
    assert_eq!(ask(true).status, 200);
}
