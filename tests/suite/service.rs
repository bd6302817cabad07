//! wulf as a service: the shipped systemd unit (verified and scored by systemd's own tools),
//! readiness over the `sd_notify` protocol, man pages and shell completions from the flags,
//! a first start that is quiet and says what to do next, and the inventory as Ansible reads
//! it (`ansible-inventory`, Debian's `ansible-core`).
//!
//! Here the unit is verified and scored; `package.rs` starts it under systemd, as the package
//! installs it, in a booted Debian root.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wulf_tests::oci::run;
use wulf_tests::{Wulf, require_command, workspace, wulf_bin};

/// The shipped unit, with ExecStart pointing at the binary under test, in `dir`.
fn unit_in(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(workspace().join("host/cli/dist/wulf.service")).unwrap();
    assert!(
        shipped.contains("ExecStart=/usr/bin/wulf serve"),
        "{shipped}"
    );
    let unit = dir.join("wulf.service");
    std::fs::write(
        &unit,
        shipped.replace("/usr/bin/wulf", &wulf_bin().display().to_string()),
    )
    .unwrap();
    unit
}

#[test]
fn the_shipped_unit_verifies_and_systemd_rates_it_hardened() {
    require_command("systemd-analyze", "systemd");
    require_command("man", "man-db");
    let scratch = tempfile::tempdir().unwrap();
    let unit = unit_in(scratch.path());
    let text = std::fs::read_to_string(&unit).unwrap();
    for setting in [
        "Type=notify",
        "ExecReload=/bin/sh -c 'kill -HUP \"$$MAINPID\"'",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "StateDirectory=wulf",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            text.lines().any(|l| l == setting),
            "the unit lacks {setting}"
        );
    }
    // Its Documentation= names man pages: the ones `wulf man` writes.
    let man = scratch.path().join("man");
    Wulf::new().ok(&["man", "--out", man.join("man1").to_str().unwrap()]);
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man));
    let said = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let score: f64 = said
        .lines()
        .find_map(|l| l.split("exposure level for wulf.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    // systemd's scale: 0 is locked down, 10 is exposed; "OK" is below 4.5.
    assert!(score < 4.5, "exposure {score}:\n{said}");
    eprintln!("wulf.service: verified, exposure {score}");
}

#[test]
fn serve_tells_systemd_it_is_ready_once_it_serves() {
    let scratch = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    for (name, address) in [
        ("path", scratch.path().join("notify").display().to_string()),
        (
            "abstract",
            format!("@wulf-test-notify-{}", std::process::id()),
        ),
    ] {
        let socket = match address.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr =
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                        .unwrap();
                UnixDatagram::bind_addr(&addr).unwrap()
            }
            None => UnixDatagram::bind(&address).unwrap(),
        };
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut serve = wulf
            .command(&[
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--no-tftp",
                "--api-addr",
                "127.0.0.1:0",
            ])
            .env("NOTIFY_SOCKET", &address)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut message = vec![0u8; 4096];
        let got = socket.recv(&mut message);
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        let n = got.unwrap_or_else(|e| panic!("{name}: no word from wulf serve: {e}"));
        let message = String::from_utf8_lossy(&message[..n]).into_owned();
        assert!(message.lines().any(|l| l == "READY=1"), "{name}: {message}");
        // Ready means serving: the address it names is the one it printed.
        let printed = String::from_utf8_lossy(&out.stdout);
        let http = printed
            .lines()
            .find_map(|l| l.strip_prefix("wulf: HTTP on http://"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{printed}"));
        assert!(
            message.contains(&format!("STATUS=serving HTTP on {http}")),
            "{name}: {message}"
        );
    }
}

#[test]
fn a_first_start_is_quiet_and_says_what_to_do_next() {
    let wulf = Wulf::new();
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("serve.log");
    let empty = scratch.path().join("no-ipxe-here");
    std::fs::create_dir_all(&empty).unwrap();
    let mut serve = wulf
        .command(&[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--tftp-addr",
            "127.0.0.1:0",
            "--tftp-root",
            empty.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    {
        use std::io::BufRead as _;
        let stdout = serve.stdout.take().unwrap();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let last = line.contains("has no iPXE binaries");
            lines.push(line);
            if last {
                break;
            }
        }
    }
    // The plugins load in the background after the startup lines: give them the time.
    std::thread::sleep(Duration::from_secs(3));
    let _ = serve.kill();
    let _ = serve.wait();
    let said = lines.join("\n");
    assert!(
        said.contains("wulf: next: no nodes yet: `wulf node add"),
        "{said}"
    );
    assert!(said.contains("`apt-get install ipxe`"), "{said}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.trim().is_empty(),
        "a first start logs nothing at the default level, but:\n{logged}"
    );
    // The SSH host keys were made all the same.
    assert!(wulf.path().join("keys").is_dir());
}

#[test]
fn man_pages_and_shell_completions_come_from_the_flags() {
    let wulf = Wulf::new();
    let scratch = tempfile::tempdir().unwrap();
    let man = scratch.path().join("man1");
    wulf.ok(&["man", "--out", man.to_str().unwrap()]);
    for page in ["wulf.1", "wulf-serve.1", "wulf-power.1", "wulf-node-add.1"] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let power = std::fs::read_to_string(man.join("wulf-power.1")).unwrap();
    assert!(power.contains("stagger"), "{power}");

    let bash = wulf.ok(&["completions", "bash"]);
    let file = scratch.path().join("wulf.bash");
    std::fs::write(&file, bash).unwrap();
    let registered = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p wulf", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&registered.stdout).contains("-F _wulf wulf"),
        "{registered:?}"
    );
    for shell in ["zsh", "fish"] {
        let script = wulf.ok(&["completions", shell]);
        assert!(script.contains("power"), "{shell}: {script}");
    }
    let bad = wulf.fails(&["completions", "tcsh"]);
    assert!(bad.contains("tcsh"), "{bad}");
}

#[test]
fn ansible_reads_the_inventory_as_a_dynamic_inventory_without_secrets() {
    require_command("ansible-inventory", "ansible-core");
    let wulf = Wulf::new();
    wulf.ok(&["profile", "add", "gpu", "--tagadd", "accel=a100"]);
    wulf.ok(&[
        "node",
        "add",
        "n[01-03]",
        "--ipaddr",
        "10.0.0.1",
        "--netdev",
        "eth0",
        "--cluster",
        "c1",
        "--ipmiaddr",
        "10.9.0.1",
        "--ipmipass",
        "hunter2",
    ]);
    wulf.ok(&["node", "set", "n03", "--profile", "default,gpu"]);
    let script = wulf.path().join("inventory.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' node list --ansible\n",
            wulf_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let listed = Command::new("ansible-inventory")
        .arg("-i")
        .arg(&script)
        .arg("--list")
        .env("WULF_STATE_DIR", wulf.path())
        .env("ANSIBLE_LOCAL_TEMP", wulf.path().join("ansible-tmp"))
        .env("ANSIBLE_HOME", wulf.path().join("ansible-home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{stderr}");
    // Ansible says so when it could not use an inventory source; it must not have to.
    assert!(!stderr.contains("WARNING"), "{stderr}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !text.contains("hunter2") && !text.contains("password"),
        "{text}"
    );
    let seen: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hosts = |group: &str| -> Vec<String> {
        seen[group]["hosts"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(hosts("profile_default"), ["n01", "n02", "n03"]);
    assert_eq!(hosts("profile_gpu"), ["n03"]);
    assert_eq!(hosts("tag_accel_a100"), ["n03"]);
    assert_eq!(hosts("cluster_c1"), ["n01", "n02", "n03"]);
    let n02 = &seen["_meta"]["hostvars"]["n02"];
    assert_eq!(n02["ansible_host"], "10.0.0.2", "{n02}");
    assert_eq!(n02["network_devices"]["default"]["device"], "eth0", "{n02}");
    assert_eq!(n02["ipmi"]["ipaddr"], "10.9.0.2", "{n02}");
    let refused = wulf.fails(&["profile", "list", "--ansible"]);
    assert!(refused.contains("wulf node list --ansible"), "{refused}");
}
