//! BMCs end to end, against real peers: OpenIPMI's `ipmi_sim` as a LAN BMC whose power
//! commands start and stop a QEMU virtual machine that netboots from `wulf serve`, driven by
//! `ipmitool`; sushy-tools' Redfish emulator (from PyPI, in a virtualenv cached under
//! `target/test-cache`) over HTTPS with a self-signed certificate, alone and behind a session
//! service; 200 emulated Redfish systems plus a hung, a closed and a wrongly-keyed BMC at once.

use std::io::BufRead as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use wulf_tests::oci::run;
use wulf_tests::{Wulf, free_tcp_port, free_udp_port, require_command, wait_for, workspace};

use crate::netboot::{self, BOOT_TIMEOUT, Killed, MAC, MARKER};

/// `wulf <args> --json` for a BMC command: whether it succeeded, each node's result by name,
/// and stderr.
fn bmc_json(wulf: &Wulf, args: &[&str]) -> (bool, Vec<Value>, String) {
    let mut full = args.to_vec();
    full.push("--json");
    let out: Output = wulf.run(&full);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wulf {args:?} --json gave no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), results, stderr)
}

fn result_of<'a>(results: &'a [Value], node: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no result for {node} in {results:?}"))
}

/// The power state `wulf power status` reports for one node, when it reports one.
fn power_state(wulf: &Wulf, node: &str) -> Option<String> {
    let (_, results, _) = bmc_json(wulf, &["power", "status", node]);
    result_of(&results, node)["state"]
        .as_str()
        .map(str::to_owned)
}

/// The processes under `pid` (children, grandchildren, ...), with their command lines.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parents: Vec<(u32, u32, String)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if let Some(parent) = parent {
            parents.push((child, parent, cmdline));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _, cmdline) in parents.iter().filter(|(_, p, _)| *p == parent) {
            found.push((*child, cmdline.clone()));
            frontier.push(*child);
        }
    }
    found
}

/// One `ipmi_sim` BMC on 127.0.0.1 with user `admin`, password `secret`. With a `machine`
/// (its `startcmd`), power on starts it as the BMC's child and power off kills it; `sol` is
/// the TCP port of the machine's serial port, which the BMC connects to Serial over LAN.
pub(crate) struct IpmiSim {
    process: Killed,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl IpmiSim {
    pub(crate) fn start(dir: &Path, machine: Option<(&str, u16)>) -> IpmiSim {
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let port = free_udp_port();
        std::fs::write(
            dir.join("emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        let auths = "none md2 md5 straight";
        let mut conf = format!(
            "name \"wulf-test-bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback {auths}\n    allowed_auths_user {auths}\n    allowed_auths_operator {auths}\n    allowed_auths_admin {auths}\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  user 2 true \"admin\" \"secret\" admin 10 {auths}\n"
        );
        if let Some((command, sol)) = machine {
            // The VM's own connection to its BMC (QEMU's ipmi-bmc-extern): without it,
            // ipmi_sim refuses power control; with it, reset resets the VM.
            conf.push_str(&format!(
                "  serial 15 127.0.0.1 {} codec VM\n  startcmd \"{command}\"\n  startnow false\n  poweroff_wait 2\n  kill_wait 2\n  sol \"tcp:127.0.0.1:{sol}\" 115200\n",
                machine_port(dir)
            ));
        }
        std::fs::write(dir.join("lan.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("ipmi_sim.log")).unwrap();
        let process = Killed(
            Command::new("ipmi_sim")
                .arg("-c")
                .arg(dir.join("lan.conf"))
                .arg("-f")
                .arg(dir.join("emu"))
                .arg("-s")
                .arg(dir.join("state"))
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("ipmi_sim: {e}")),
        );
        let sim = IpmiSim {
            process,
            port,
            dir: dir.to_owned(),
        };
        wait_for(
            "ipmi_sim answering ipmitool",
            Duration::from_secs(20),
            || sim.log(),
            || {
                Command::new("ipmitool")
                    .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    .args(["-U", "admin", "-P", "secret", "chassis", "power", "status"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
        );
        sim
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ipmi_sim.log")).unwrap_or_default()
    }

    /// The QEMU processes this BMC runs.
    fn machines(&self) -> Vec<(u32, String)> {
        descendants(self.process.0.id())
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("qemu-system"))
            .collect()
    }
}

/// The TCP port a BMC's VM connects to (kept with the BMC's files, chosen once).
fn machine_port(dir: &Path) -> u16 {
    let file = dir.join("vm-port");
    if let Some(port) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        return port;
    }
    let port = free_tcp_port();
    std::fs::write(&file, port.to_string()).unwrap();
    port
}

/// n0001's console log so far (none until `wulf serve` has attached to it).
fn console_log(wulf: &Wulf) -> String {
    String::from_utf8_lossy(&wulf.run(&["node", "console", "n0001", "--log"]).stdout).into_owned()
}

/// Everything a failed IPMI check should show.
fn ipmi_context(wulf: &Wulf, sim: &IpmiSim, scratch: &Path, serve_log: &Path) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    format!(
        "--- wulf node console --log ---\n{}\n--- VM serial (QEMU's own log) ---\n{}\n--- ipmi_sim ---\n{}\n--- wulf serve ---\n{}",
        console_log(wulf),
        read(&scratch.join("serial.log")),
        sim.log(),
        read(serve_log)
    )
}

#[test]
fn ipmi_power_boots_and_stops_a_virtual_machine_and_its_console_is_logged() {
    require_command("ipmi_sim", "openipmi");
    require_command("ipmitool", "ipmitool");
    let scratch = tempfile::tempdir().unwrap();
    let wulf = netboot::prepare(scratch.path());
    netboot::add_node(&wulf, "10.0.2.15", "10.0.2.2");
    wulf.write("wulf.toml", "[console]\nlog = true\n");
    let serve_log = scratch.path().join("serve.log");
    let served = wulf.serve_logged(&["--http-addr", "127.0.0.1:0", "--no-tftp"], &serve_log);

    // The BMC's machine: a VM that netboots from wulf, its serial port a TCP socket the BMC
    // connects Serial over LAN to (QEMU keeps its own copy in serial.log, for diagnosis).
    let sol = free_tcp_port();
    let bmc_dir = scratch.path().join("bmc");
    std::fs::create_dir_all(&bmc_dir).unwrap();
    let machine = format!(
        "qemu-system-x86_64 -accel tcg -m 512 -display none -monitor none -boot n \
         -netdev user,id=n0,bootfile=http://10.0.2.2:{http}/ipxe/{MAC} \
         -device virtio-net-pci,netdev=n0,mac={MAC} \
         -chardev socket,id=bmc,host=127.0.0.1,port={vm},reconnect=1 \
         -device ipmi-bmc-extern,id=bmc0,chardev=bmc -device isa-ipmi-kcs,bmc=bmc0 \
         -chardev socket,id=s0,host=127.0.0.1,port={sol},server=on,wait=off,logfile={serial} \
         -serial chardev:s0",
        http = served.http.port(),
        vm = machine_port(&bmc_dir),
        serial = scratch.path().join("serial.log").display(),
    );
    let sim = IpmiSim::start(&bmc_dir, Some((&machine, sol)));
    // A second BMC, whose password the inventory has wrong, and an address nothing answers.
    let other = IpmiSim::start(&scratch.path().join("other-bmc"), None);
    let port = sim.port.to_string();
    let ipmi = |node: &str, addr: &str, port: &str, password: &str| {
        wulf.ok(&[
            "node",
            "set",
            node,
            "--ipmiaddr",
            addr,
            "--ipmiport",
            port,
            "--ipmiuser",
            "admin",
            "--ipmipass",
            password,
            "--ipmiinterface",
            "lanplus",
            "--ipmitagadd",
            "cipher=3",
        ]);
    };
    wulf.ok(&["node", "add", "n0002", "n0003"]);
    ipmi("n0001", "127.0.0.1", &port, "secret");
    ipmi(
        "n0002",
        "127.0.0.1",
        &other.port.to_string(),
        "not-the-password",
    );
    ipmi("n0003", "127.0.0.3", &free_udp_port().to_string(), "secret");
    // The node stays up after its marker until its BMC powers it off.
    wulf.ok(&[
        "node",
        "set",
        "n0001",
        "--kernelargs",
        "console=ttyS0,panic=-1,loglevel=4,wulf.hold",
    ]);
    let context = || ipmi_context(&wulf, &sim, scratch.path(), &serve_log);

    assert_eq!(power_state(&wulf, "n0001").as_deref(), Some("off"));
    assert!(sim.machines().is_empty());

    // Power on boots the VM from wulf; its console reaches the log `wulf serve` keeps.
    let (ok, results, stderr) = bmc_json(&wulf, &["power", "on", "n0001"]);
    assert!(ok, "{stderr}\n{results:?}");
    assert_eq!(results[0]["ok"], true);
    // ipmi_sim answers, then starts its machine.
    wait_for(
        "the BMC's VM running",
        Duration::from_secs(10),
        context,
        || (sim.machines().len() == 1).then_some(()),
    );
    assert_eq!(power_state(&wulf, "n0001").as_deref(), Some("on"));
    let console = wait_for(
        "the node's marker in its console log",
        BOOT_TIMEOUT,
        context,
        || {
            let log = console_log(&wulf);
            log.contains(MARKER).then_some(log)
        },
    );
    let line = console.lines().find(|l| l.contains(MARKER)).unwrap();
    assert!(line.contains("hostname=n0001 addr=10.0.2.15/24"), "{line}");
    assert!(console.contains("[wulf "), "wulf's own notes: {console}");

    // While serve logs the console it holds the BMC's one SOL session, and `wulf node
    // console` shares it: the output as it comes; `~.` at a line start leaves.
    let watched = scratch.path().join("viewer.out");
    let mut viewer = Killed(
        wulf.command(&["node", "console", "n0001"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&watched).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    wait_for(
        "the shared console's greeting",
        Duration::from_secs(10),
        || read(&watched),
        || {
            read(&watched)
                .contains("[wulf: console attached]")
                .then_some(())
        },
    );

    // Reset goes to the VM through its BMC: it boots again, in the same process, and both
    // the log and the viewer see it.
    let qemu = sim.machines();
    let (ok, _, stderr) = bmc_json(&wulf, &["power", "reset", "n0001"]);
    assert!(ok, "{stderr}");
    wait_for(
        "a second boot after power reset",
        BOOT_TIMEOUT,
        context,
        || {
            let log = console_log(&wulf);
            (log.matches(MARKER).count() >= 2).then_some(())
        },
    );
    assert_eq!(sim.machines(), qemu, "reset must not start another VM");
    wait_for(
        "the second boot's marker on the shared console",
        Duration::from_secs(10),
        || read(&watched),
        || read(&watched).contains(MARKER).then_some(()),
    );
    {
        use std::io::Write as _;
        let mut keys = viewer.0.stdin.take().unwrap();
        keys.write_all(b"\n~.").unwrap();
    }
    let left = wait_for(
        "the viewer leaving on ~.",
        Duration::from_secs(10),
        || read(&watched),
        || viewer.0.try_wait().ok().flatten(),
    );
    assert!(left.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut viewer.0.stderr.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("[left n0001's console]"), "{said}");

    // Off stops the VM; status follows it.
    let (ok, _, stderr) = bmc_json(&wulf, &["power", "off", "n0001"]);
    assert!(ok, "{stderr}");
    wait_for(
        "the VM gone after power off",
        Duration::from_secs(30),
        context,
        || sim.machines().is_empty().then_some(()),
    );
    assert_eq!(power_state(&wulf, "n0001").as_deref(), Some("off"));

    // Three BMCs at once: one answers, one refuses the password, one is not there. Each node
    // gets its own result, and the exit names the failed ones and why.
    let (ok, results, stderr) =
        bmc_json(&wulf, &["power", "status", "n000[1-3]", "--timeout", "20s"]);
    assert!(!ok);
    assert_eq!(result_of(&results, "n0001")["state"], "off", "{results:?}");
    assert_eq!(
        result_of(&results, "n0002")["error"]["kind"],
        "auth",
        "{results:?}"
    );
    assert_eq!(
        result_of(&results, "n0003")["error"]["kind"],
        "unreachable",
        "{results:?}"
    );
    assert!(
        stderr.contains("2 of 3 nodes failed: n0002 (auth), n0003 (unreachable)"),
        "{stderr}"
    );
    let table = wulf.run(&["power", "status", "n0002"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("FAILED (auth)"), "{text}");
    // No password in any output.
    for out in [text.to_string(), stderr, format!("{results:?}"), context()] {
        assert!(!out.contains("not-the-password"), "{out}");
    }
}

/// sushy-tools' emulator, from PyPI into a virtualenv kept under `target/test-cache` (the
/// package index is the only thing it needs, once).
fn sushy_venv() -> PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let venv = wulf_tests::test_cache().join("sushy-venv");
    // A virtualenv cannot move (its scripts name its path), so it is made in place and marked
    // complete last; an unmarked one is a broken earlier try.
    let complete = venv.join("wulf-complete");
    if complete.exists() {
        return venv;
    }
    require_command("python3", "python3");
    let _ = std::fs::remove_dir_all(&venv);
    let make = || {
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !make() {
        // Debian keeps ensurepip in its own package.
        let _ = std::fs::remove_dir_all(&venv);
        let version = run(Command::new("python3").args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ]));
        let _ = Command::new("apt-get")
            .args(["-q", "-y", "install", "python3-venv"])
            .arg(format!("python{}-venv", version.trim()))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        assert!(
            make(),
            "python3 -m venv fails even after apt-get install python3-venv"
        );
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "sushy-tools"])
        .output()
        .unwrap_or_else(|e| panic!("pip: {e}"));
    assert!(
        pip.status.success(),
        "pip install sushy-tools failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    std::fs::write(&complete, "").unwrap();
    venv
}

/// A self-signed certificate for 127.0.0.1 and its key.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    require_command("openssl", "openssl");
    let (cert, key) = (dir.join("bmc.pem"), dir.join("bmc.key"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=bmc.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// The UUID of emulated system `i`.
fn system_uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// sushy-tools' emulator with its fake driver: `systems` powered-off systems (ids from
/// [`system_uuid`]), user `admin` with password `pw`; HTTPS when given a certificate.
struct Sushy {
    _process: Killed,
    port: u16,
    scheme: &'static str,
    dir: PathBuf,
}

impl Sushy {
    fn start(dir: &Path, systems: usize, tls: Option<&(PathBuf, PathBuf)>) -> Sushy {
        let venv = sushy_venv();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        // bcrypt at its lowest cost: the emulator checks the hash on every request.
        let htpasswd = run(Command::new(venv.join("bin/python")).args([
            "-c",
            "import bcrypt; print('admin:' + bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode())",
        ]));
        std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
        let fake: Vec<String> = (1..=systems)
            .map(|i| {
                format!(
                    "{{'uuid': '{}', 'name': 'sys{i:03}', 'power_state': 'Off', 'nics': [{{'mac': '52:54:01:00:{:02x}:{:02x}', 'ip': '10.1.{}.{}'}}]}}",
                    system_uuid(i),
                    i / 256,
                    i % 256,
                    i / 256,
                    i % 256
                )
            })
            .collect();
        std::fs::write(
            dir.join("sushy.conf"),
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_STATE_DIR = '{}'\nSUSHY_EMULATOR_FAKE_SYSTEMS = [\n{}\n]\n",
                dir.join("htpasswd").display(),
                dir.join("state").display(),
                fake.join(",\n")
            ),
        )
        .unwrap();
        let port = free_tcp_port();
        let mut command = Command::new(venv.join("bin/sushy-emulator"));
        command
            .args(["--fake", "-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("--config")
            .arg(dir.join("sushy.conf"));
        if let Some((cert, key)) = tls {
            command
                .arg("--ssl-certificate")
                .arg(cert)
                .arg("--ssl-key")
                .arg(key);
        }
        let log = std::fs::File::create(dir.join("sushy.log")).unwrap();
        let process = Killed(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("sushy-emulator: {e}")),
        );
        let sushy = Sushy {
            _process: process,
            port,
            scheme: if tls.is_some() { "https" } else { "http" },
            dir: dir.to_owned(),
        };
        wait_for(
            "sushy-emulator answering",
            Duration::from_secs(30),
            || sushy.log(),
            || sushy.get("/redfish/v1/Systems").ok(),
        );
        sushy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sushy.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// What the emulator says, as its own client sees it.
    fn get(&self, path: &str) -> Result<Value, String> {
        require_command("curl", "curl");
        let out = Command::new("curl")
            .args(["-sSk", "-u", "admin:pw", "--max-time", "10"])
            .arg(self.url(path))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }
}

/// A Redfish node's BMC fields, as `wulf node set` flags.
fn redfish_flags(port: u16, system: Option<&str>, password: &str) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--ipmidriver",
        "redfish",
        "--ipmiaddr",
        "127.0.0.1",
        "--ipmiuser",
        "admin",
    ]
    .map(str::to_owned)
    .to_vec();
    flags.extend(["--ipmiport".into(), port.to_string()]);
    flags.extend(["--ipmipass".into(), password.to_owned()]);
    if let Some(system) = system {
        flags.extend(["--ipmisystemid".into(), system.to_owned()]);
    }
    flags
}

fn node_set(wulf: &Wulf, node: &str, flags: &[String]) {
    let mut args = vec!["node", "set", node];
    args.extend(flags.iter().map(String::as_str));
    wulf.ok(&args);
}

#[test]
fn redfish_power_and_one_time_pxe_against_sushy_tools_over_verified_tls_and_sessions() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("sushy");
    std::fs::create_dir_all(&dir).unwrap();
    let cert = self_signed(scratch.path());
    let sushy = Sushy::start(&dir, 2, Some(&cert));
    let (one, two) = (system_uuid(1), system_uuid(2));
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "rf1", "rfany", "rfbad"]);
    node_set(&wulf, "rf1", &redfish_flags(sushy.port, Some(&one), "pw"));
    node_set(&wulf, "rfany", &redfish_flags(sushy.port, None, "pw"));
    node_set(
        &wulf,
        "rfbad",
        &redfish_flags(sushy.port, Some(&two), "wrong-pw"),
    );

    // The BMC's self-signed certificate is refused until the node's record says otherwise.
    let (ok, results, _) = bmc_json(&wulf, &["power", "status", "rf1"]);
    assert!(!ok);
    assert_eq!(results[0]["error"]["kind"], "tls", "{results:?}");
    let message = results[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("tls-verify = false"), "{message}");
    wulf.ok(&[
        "node",
        "set",
        "rf1",
        "rfany",
        "rfbad",
        "--ipmitlsverify",
        "false",
    ]);
    assert_eq!(power_state(&wulf, "rf1").as_deref(), Some("off"));

    // Power on; the emulator applies it after a while, as hardware does.
    let (ok, _, stderr) = bmc_json(&wulf, &["power", "on", "rf1"]);
    assert!(ok, "{stderr}");
    let system = format!("/redfish/v1/Systems/{one}");
    wait_for(
        "rf1 powered on in the emulator",
        Duration::from_secs(60),
        || sushy.log(),
        || (sushy.get(&system).ok()?["PowerState"] == "On").then_some(()),
    );
    assert_eq!(power_state(&wulf, "rf1").as_deref(), Some("on"));

    // One-time network boot: the override is in the emulator's state, and the node restarts.
    let (ok, results, stderr) = bmc_json(&wulf, &["node", "boot-once", "pxe", "rf1"]);
    assert!(ok, "{stderr}");
    assert!(
        results[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("power cycle")),
        "{results:?}"
    );
    let seen = sushy.get(&system).unwrap();
    assert_eq!(seen["Boot"]["BootSourceOverrideTarget"], "Pxe", "{seen}");

    // A wrong password, and a BMC with two systems and no system id: clear, per node.
    let (ok, results, stderr) = bmc_json(&wulf, &["power", "status", "rfbad", "rfany"]);
    assert!(!ok);
    assert_eq!(result_of(&results, "rfbad")["error"]["kind"], "auth");
    let any = &result_of(&results, "rfany")["error"];
    assert!(
        any["message"]
            .as_str()
            .is_some_and(|m| m.contains("--ipmisystemid")),
        "{any}"
    );
    assert!(!stderr.contains("wrong-pw") && !format!("{results:?}").contains("wrong-pw"));

    // The emulator offers no serial console (no SerialConsole on the system or its manager).
    let console = wulf.fails(&["node", "console", "rf1"]);
    assert!(console.contains("offers no serial console"), "{console}");

    // Off, seen by the emulator.
    let (ok, _, stderr) = bmc_json(&wulf, &["power", "off", "rf1"]);
    assert!(ok, "{stderr}");
    wait_for(
        "rf1 powered off in the emulator",
        Duration::from_secs(60),
        || sushy.log(),
        || (sushy.get(&system).ok()?["PowerState"] == "Off").then_some(()),
    );

    // A BMC with a session service (this one refuses anything without a session token):
    // wulf logs in, works with the token, and logs out.
    let mut front = Killed(
        Command::new(sushy_venv().join("bin/python"))
            .arg(workspace().join("tests/data/redfish_sessions.py"))
            .arg(sushy.url(""))
            .args(["admin", "pw"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(front.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let front_port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the session front said {line:?}"));
    wulf.ok(&["node", "add", "rfsession"]);
    let mut flags = redfish_flags(front_port, Some(&two), "pw");
    flags.extend(["--ipmischeme".into(), "http".into()]);
    node_set(&wulf, "rfsession", &flags);
    assert_eq!(power_state(&wulf, "rfsession").as_deref(), Some("off"));
    let stats = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{front_port}/front/stats")])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["opened"], 1, "{stats}");
    assert_eq!(stats["closed"], 1, "{stats}");
    assert_eq!(stats["refused"], 0, "{stats}");
    assert!(stats["forwarded"].as_u64() >= Some(2), "{stats}");
}

#[test]
fn two_hundred_bmcs_at_fanout_32_each_get_a_result_and_nothing_hangs_past_the_timeout() {
    let scratch = tempfile::tempdir().unwrap();
    let sushy = Sushy::start(scratch.path(), 201, None);
    let wulf = Wulf::new();
    // 200 nodes, one emulated system each; then one with a wrong password, a BMC that
    // accepts connections and never answers, and one whose port is closed.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_tcp_port();
    let mut yaml = String::new();
    let mut node = |name: &str, port: u16, system: &str, password: &str| {
        yaml.push_str(&format!(
            "{name}:\n  ipmi:\n    driver: redfish\n    scheme: http\n    ipaddr: 127.0.0.1\n    port: {port}\n    username: admin\n    password: {password}\n    system-id: \"{system}\"\n"
        ));
    };
    for i in 1..=200 {
        node(&format!("r{i:03}"), sushy.port, &system_uuid(i), "pw");
    }
    node("wrongpw", sushy.port, &system_uuid(201), "nope");
    node("hung", hung.local_addr().unwrap().port(), "1", "pw");
    node("closed", closed, "1", "pw");
    wulf.write("bmcs.yaml", &yaml);
    let file = wulf.path().join("bmcs.yaml");
    wulf.ok(&["node", "import", file.to_str().unwrap()]);

    let (ok, results, stderr) = bmc_json(
        &wulf,
        &[
            "power",
            "on",
            "r[001-200]",
            "wrongpw",
            "hung",
            "closed",
            "--fanout",
            "32",
            "--timeout",
            "10s",
        ],
    );
    assert!(!ok);
    assert_eq!(results.len(), 203, "{stderr}");
    let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).collect();
    assert_eq!(failed.len(), 3, "{failed:?}\n{}", sushy.log());
    assert_eq!(result_of(&results, "wrongpw")["error"]["kind"], "auth");
    assert_eq!(result_of(&results, "hung")["error"]["kind"], "timeout");
    assert_eq!(
        result_of(&results, "closed")["error"]["kind"],
        "unreachable"
    );
    assert!(
        stderr.contains(
            "3 of 203 nodes failed: wrongpw (auth), hung (timeout), closed (unreachable)"
        ),
        "{stderr}"
    );
    // Every one of the 200 systems is on, as the emulator sees it.
    wait_for(
        "all 200 systems on in the emulator",
        Duration::from_secs(90),
        || sushy.log(),
        || {
            (1..=200)
                .all(|i| {
                    sushy
                        .get(&format!("/redfish/v1/Systems/{}", system_uuid(i)))
                        .is_ok_and(|s| s["PowerState"] == "On")
                })
                .then_some(())
        },
    );

    // Staggered: 25 nodes per second, so node i starts no earlier than wave i/25.
    let (ok, results, stderr) =
        bmc_json(&wulf, &["power", "off", "r[001-100]", "--stagger", "25/1s"]);
    assert!(ok, "{stderr}");
    for (i, result) in results.iter().enumerate() {
        let started = result["started_s"].as_f64().unwrap();
        let wave = (i / 25) as f64;
        assert!(
            started >= wave - 0.001,
            "node {i} started at {started} s: {result}"
        );
    }
    drop(hung);
}

#[test]
fn bad_bmc_input_is_refused_naming_what_to_fix() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n1", "n2"]);
    let refused = |args: &[&str], expect: &str| {
        let error = wulf.fails(args);
        assert!(error.contains(expect), "wulf {args:?}: {error}");
    };
    refused(&["power", "on", "n1", "--stagger", "0/5s"], "at least 1");
    refused(&["power", "on", "n1", "--stagger", "50"], "N/INTERVAL");
    refused(&["power", "on", "n1", "--fanout", "0"], "--fanout 0");
    refused(&["power", "on", "n1", "--timeout", "0s"], "above zero");
    refused(&["power", "on", "nosuch"], "nosuch");
    refused(&["power", "bounce", "n1"], "bounce");
    refused(&["node", "set", "n1", "--ipmidriver", "bogus"], "bogus");
    refused(&["node", "set", "n1", "--ipmischeme", "ftp"], "ftp");
    refused(
        &["node", "set", "n1", "--ipmiaddr", "10.0.0.300"],
        "10.0.0.300",
    );
    refused(&["node", "console", "n1", "--log"], "[console] log = true");

    // A node without a BMC address: not configured, said per node, and the exit says so.
    let (ok, results, stderr) = bmc_json(&wulf, &["power", "status", "n1"]);
    assert!(!ok);
    assert_eq!(results[0]["error"]["kind"], "not-configured", "{results:?}");
    assert!(stderr.contains("n1 (not-configured)"), "{stderr}");
    let console = wulf.fails(&["node", "console", "n1"]);
    assert!(console.contains("--ipmiaddr"), "{console}");

    // The password is masked wherever wulf shows a record, and kept in the inventory.
    wulf.ok(&[
        "node",
        "set",
        "n2",
        "--ipmiaddr",
        "10.9.0.2",
        "--ipmipass",
        "hunter2",
    ]);
    for args in [
        &["node", "show", "n2"][..],
        &["node", "list", "--ipmi"],
        &["node", "list", "--json"],
    ] {
        let out = wulf.ok(args);
        assert!(!out.contains("hunter2"), "wulf {args:?}: {out}");
    }
    let show = wulf.ok(&["node", "show", "n2"]);
    assert!(show.contains("password = \"********\""), "{show}");
    let stored = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap();
    assert!(stored.contains("hunter2"));
}
