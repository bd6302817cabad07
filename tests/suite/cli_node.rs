//! `wulf node ...` and `wulf profile ...` through the real binary.

use std::process::Stdio;

use serde_json::json;
use wulf_tests::Wulf;

#[test]
fn add_set_list_show_delete() {
    let wulf = Wulf::new();
    wulf.ok(&[
        "profile",
        "set",
        "default",
        "-O",
        "wwinit,hostname",
        "-A",
        "quiet",
        "--netmask",
        "255.255.255.0",
    ]);
    insta::assert_snapshot!(wulf.ok(&["node", "add", "n[001-003]", "--ipaddr", "10.0.0.1", "--ipmiaddr", "10.1.0.10"]), @"added 3 node(s): n001 .. n003");
    wulf.ok(&[
        "node",
        "set",
        "n002",
        "--hwaddr",
        "AA-BB-CC-DD-EE-02",
        "--tagadd",
        "rack=r1,role=gpu",
        "-N",
        "eth0",
    ]);
    wulf.ok(&["node", "set", "n00[1-3]", "--cluster", "c1"]);
    insta::assert_snapshot!(wulf.ok(&["node", "list"]), @"
    NODE NAME  PROFILES  NETWORK
    n001       default   10.0.0.1
    n002       default   10.0.0.2
    n003       default   10.0.0.3
    ");
    insta::assert_snapshot!(wulf.ok(&["node", "list", "--net", "n002"]), @"
    NODE NAME  NETWORK  HWADDR             IPADDR    GATEWAY  DEVICE
    n002       default  aa:bb:cc:dd:ee:02  10.0.0.2  --       eth0
    ");
    insta::assert_snapshot!(wulf.ok(&["node", "list", "--ipmi"]), @"
    NODE NAME  IPMI IPADDR  IPMI PORT  IPMI USERNAME  IPMI INTERFACE
    n001       10.1.0.10    --         --             --
    n002       10.1.0.11    --         --             --
    n003       10.1.0.12    --         --             --
    ");
    insta::assert_snapshot!(wulf.ok(&["node", "show", "n002"]), @r#"
    # node n002 (profiles applied: default)
    profiles = ["default"]
    cluster = "c1"
    system-overlays = ["wwinit", "hostname"]
    runtime-overlays = ["ssh-authorized-keys"]

    [kernel]
    args = ["quiet"]

    [network-devices.default]
    device = "eth0"
    hwaddr = "aa:bb:cc:dd:ee:02"
    ipaddr = "10.0.0.2"
    netmask = "255.255.255.0"

    [ipmi]
    ipaddr = "10.1.0.11"

    [tags]
    rack = "r1"
    role = "gpu"
    "#);
    let json: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "list", "--json"])).unwrap_or_default();
    assert_eq!(
        json["n002"]["network-devices"]["default"]["hwaddr"],
        "aa:bb:cc:dd:ee:02"
    );
    assert_eq!(json["n003"]["cluster"], "c1");

    wulf.ok(&[
        "node",
        "set",
        "n002",
        "--tagdel",
        "role",
        "--ipmiaddr",
        "UNSET",
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n002", "--json"])).unwrap_or_default();
    assert_eq!(shown["tags"], serde_json::json!({"rack": "r1"}));
    assert!(shown["ipmi"].get("ipaddr").is_none(), "{shown}");

    insta::assert_snapshot!(wulf.ok(&["node", "show", "--all", "n001"]), @"
    NODE  FIELD                            PROFILE  VALUE
    n001  cluster                          --       c1
    n001  ipmi.ipaddr                      --       10.1.0.10
    n001  kernel.args                      default  quiet
    n001  network-devices.default.ipaddr   --       10.0.0.1
    n001  network-devices.default.netmask  default  255.255.255.0
    n001  profiles                         --       default
    n001  runtime-overlays                 default  ssh-authorized-keys
    n001  system-overlays                  default  wwinit,hostname
    ");
    insta::assert_snapshot!(wulf.ok(&["node", "delete", "n003", "--yes"]), @"deleted 1 node(s): n003");
    insta::assert_snapshot!(wulf.ok(&["profile", "list"]), @"
    PROFILE NAME  PROFILES  NETWORK
    default       --        --
    ");
}

#[test]
fn bad_input_changes_nothing() {
    let wulf = Wulf::new();
    wulf.ok(&[
        "node",
        "add",
        "n1",
        "--hwaddr",
        "aa:bb:cc:dd:ee:01",
        "--ipaddr",
        "10.0.0.1",
    ]);
    let before = std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default();
    let errors: Vec<String> = [
        &["node", "add", "n2", "--hwaddr", "aa:bb:cc:dd:ee"][..],
        &["node", "add", "n2", "--hwaddr", "AA:BB:CC:DD:EE:01"],
        &["node", "add", "n2", "--ipaddr", "10.0.0.1"],
        &["node", "add", "n2", "--ipaddr", "10.0.0.256"],
        &["node", "add", "n2", "--netmask", "255.0.255.0"],
        &["node", "add", "n2", "--mtu", "big"],
        &["node", "add", "n2", "--profile", "gpu"],
        &["node", "add", "bad name"],
        &["node", "add", "n[5-"],
        &["node", "add", "n1"],
        &["node", "set", "n9", "--image", "x"],
        &["node", "set"],
        &["node", "add", "n2", "--tagadd", "novalue"],
        &["node", "delete", "n1"],
        &["profile", "delete", "default", "--yes"],
        &["profile", "add", "p", "--discoverable", "true"],
    ]
    .iter()
    .map(|args| wulf.fails(args))
    .collect();
    insta::assert_snapshot!(errors.join(""), @r#"
    error: --hwaddr "aa:bb:cc:dd:ee": not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff
    error: node `n2`: `network-devices.default.hwaddr` = "aa:bb:cc:dd:ee:01": node `n1` has this address too
    error: node `n2`: `network-devices.default.ipaddr` = "10.0.0.1": node `n1` has this address too
    error: --ipaddr "10.0.0.256": not an IPv4 address
    error: --netmask "255.0.255.0": not a netmask like 255.255.255.0
    error: --mtu "big": not a number
    error: node `n2`: `profiles` = "gpu": profile `gpu` does not exist (see `wulf profile list`)
    error: node `bad name`: `name` = "bad name": use letters, digits, `.`, `_`, `:` and `-` (at most 63), starting with a letter or digit
    error: hostlist "n[5-": `[` is never closed
    error: node `n1` already exists (change it with `wulf node set`)
    error: node `n9` does not exist (add it with `wulf node add`)
    error: which nodes? name them (hostlists work) or pass --all
    error: --tagadd "novalue": expected key=value
    error: deleting 1 node(s) needs confirmation: pass --yes
    error: profile `default` is used by n1; take it off them first
    error: unexpected argument '--discoverable' found

      tip: to pass '--discoverable' as a value, use '-- --discoverable'

    Usage: wulf profile add <NAMES>...

    For more information, try '--help'.
    "#);
    assert_eq!(
        std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default(),
        before,
        "nothing was written"
    );
}

/// Many `wulf node set` processes at once, each adding its own tag: every edit survives.
#[test]
fn concurrent_edits_are_never_lost() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n1"]);
    let children: Vec<_> = (0..24)
        .map(|i| {
            wulf.command(&["node", "set", "n1", "--tagadd", &format!("k{i}=v{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let shown: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n1", "--json"])).unwrap_or_default();
    let tags = shown["tags"].as_object().map(|t| t.len()).unwrap_or(0);
    assert_eq!(tags, 24, "{shown}");
}

/// A writer killed at any moment leaves the old file or the new one, never a torn one.
#[test]
fn a_killed_writer_never_leaves_a_broken_inventory() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n[0001-2000]", "--ipaddr", "10.0.0.1"]);
    for round in 0..20 {
        let mut child = wulf
            .command(&[
                "node",
                "set",
                "--all",
                "--comment",
                &format!("round {round}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(std::time::Duration::from_millis(5 + round * 3));
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap_or_default();
        let inventory = wulf_core::Inventory::from_toml(&text)
            .unwrap_or_else(|e| panic!("round {round}: torn inventory: {e}"));
        assert_eq!(inventory.nodes.len(), 2000, "round {round}");
    }
}

/// A node defined only in a CSV file, served by the first-party `csv-inventory` backend
/// through a granted directory, is listed, shown, and found by MAC by the boot server.
#[test]
fn nodes_from_the_csv_backend() {
    let wulf = Wulf::new();
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = data.path().display().to_string();
    std::fs::write(
        data.path().join("nodes.csv"),
        "id,hwaddr,ipaddr,profiles\nc001,AA-BB-CC-00-00-01,10.9.0.1,default\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let package = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifest =
        std::fs::read_to_string(wulf_tests::workspace().join("plugins/csv-inventory/plugin.toml"))
            .unwrap_or_default()
            .replace("/etc/wulf/inventory", &dir);
    std::fs::write(package.path().join("plugin.toml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        wulf_tests::fixture_wasm("wulf-plugin-csv-inventory"),
        package.path().join("plugin.wasm"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wulf.write(
        "wulf.toml",
        &format!("[plugins]\nbackends = [\"csv-inventory\"]\n[plugin.csv-inventory]\ngrant-read-dirs = [\"{dir}\"]\n"),
    );
    wulf.ok(&["plugin", "install", &package.path().display().to_string()]);
    wulf.ok(&["profile", "set", "default", "--image", "rocky-9"]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", "aa:bb:cc:00:00:99"]);

    insta::assert_snapshot!(wulf.ok(&["node", "list"]), @"
    NODE NAME  PROFILES  NETWORK
    c001       default   10.9.0.1
    n1         default   --
    ");
    let shown: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "c001", "--json"])).unwrap_or_default();
    assert_eq!(
        shown["image"], "rocky-9",
        "merged with the built-in profile: {shown}"
    );
    insta::assert_snapshot!(wulf.ok(&["plugin", "test", "csv-inventory"]), @"
    NODE  HWADDRS            PROFILES
    c001  aa:bb:cc:00:00:01  default
    ");

    // The boot server finds it by MAC.
    let serving = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let script = std::process::Command::new("curl")
        .args([
            "-s",
            &format!("http://{}/ipxe/aa-bb-cc-00-00-01", serving.http),
        ])
        .output();
    drop(serving);
    let script =
        String::from_utf8_lossy(&script.map(|o| o.stdout).unwrap_or_default()).into_owned();
    assert!(
        script.starts_with("#!ipxe\necho wulf: c001 (aa:bb:cc:00:00:01) image rocky-9"),
        "{script}"
    );

    // Without the grant, the backend fails loudly instead of silently serving nothing.
    wulf.write("wulf.toml", "[plugins]\nbackends = [\"csv-inventory\"]\n");
    let error = wulf.fails(&["node", "list"]);
    assert!(
        error.contains("asks to read") && error.contains("does not grant"),
        "{error}"
    );
}

/// A realistic Warewulf nodes.conf (profiles, two networks, IPMI, tags, legacy keys) migrates
/// in one command, and what cannot be mapped is reported.
#[test]
fn warewulf_nodes_conf_imports() {
    let wulf = Wulf::new();
    let conf = wulf_tests::workspace()
        .join("tests/data/nodes.conf")
        .display()
        .to_string();
    let dry = wulf.run(&["import", "warewulf", &conf, "--dry-run"]);
    assert!(dry.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&dry.stdout), @r#"
    [profiles.compute]
    profiles = ["default"]
    cluster = "cluster01"
    image = "rocky-9"

    [profiles.compute.network-devices.default]
    netmask = "255.255.252.0"
    gateway = "10.0.0.254"
    mtu = 9000

    [profiles.compute.network-devices.ib]
    type = "infiniband"
    netmask = "255.255.0.0"

    [profiles.compute.ipmi]
    username = "admin"
    password = "calvin"
    netmask = "255.255.255.0"
    write = true

    [profiles.default]
    comment = "This profile is automatically included for each node"
    ipxe-template = "default"
    system-overlays = ["wwinit", "agent", "fstab", "hostname", "ssh-host-keys", "network"]
    runtime-overlays = ["hosts", "ssh-authorized-keys"]
    init = "/sbin/init"
    root = "initramfs"

    [profiles.default.kernel]
    args = ["quiet", "crashkernel=no", "net.ifnames=1"]

    [profiles.default.ipmi]
    template = "ipmitool.tmpl"

    [[profiles.default.resources.fstab]]
    file = "/home"
    mntops = "defaults,nofail"
    spec = "warewulf:/home"
    vfstype = "nfs"

    [profiles.gpu]
    profiles = ["compute"]

    [profiles.gpu.kernel]
    args = ["console=ttyS0,115200", "quiet", "nouveau.modeset=0"]

    [profiles.gpu.tags]
    IPXEMenuEntry = "imgextract"

    [nodes.g0001]
    profiles = ["gpu"]
    comment = "first GPU node"
    asset-key = "ASSET-0101"

    [nodes.g0001.network-devices.default]
    device = "eth0"
    hwaddr = "aa:bb:cc:00:01:01"
    ipaddr = "10.0.1.1"
    ipaddr6 = "fd00::101"
    prefixlen6 = 64

    [nodes.g0001.network-devices.default.tags]
    DNS1 = "10.0.0.254"

    [nodes.g0001.ipmi]
    ipaddr = "10.1.1.1"

    [nodes.n0001]
    profiles = ["compute"]
    primary-network = "default"

    [nodes.n0001.network-devices.default]
    device = "eth0"
    hwaddr = "aa:bb:cc:00:00:01"
    ipaddr = "10.0.0.1"

    [nodes.n0001.network-devices.ib]
    device = "ib0"
    hwaddr = "aa:bb:cc:10:00:01"
    ipaddr = "10.10.0.1"

    [nodes.n0001.ipmi]
    ipaddr = "10.1.0.1"

    [nodes.n0001.tags]
    rack = "r01"

    [nodes.spare]
    profiles = ["compute"]
    discoverable = true

    [nodes.spare.network-devices.default]
    device = "eth0"
    "#);
    insta::assert_snapshot!(String::from_utf8_lossy(&dry.stderr), @"
    mapped: profile `default`: runtime overlay `ssh.authorized_keys` -> `ssh-authorized-keys` (root's authorized_keys)
    mapped: profile `default`: system overlay `wwclient` -> `agent` (wulf-agent keeps the runtime overlay in sync)
    mapped: profile `default`: system overlay `ssh.host_keys` -> `ssh-host-keys` (the cluster's SSH host keys)
    mapped: profile `default`: system overlay `systemd.netname` -> `network` (.link files naming interfaces by MAC)
    mapped: profile `default`: system overlay `NetworkManager` -> `network` (NetworkManager and systemd-networkd configuration)
    not mapped: node `g0001`: `tagsdel` has no wulf equivalent
    dry run: would import 3 profile(s) and 3 node(s); nothing written
    ");
    assert!(
        !wulf.path().join("nodes.toml").exists(),
        "a dry run writes nothing"
    );

    let out = wulf.run(&["import", "warewulf", &conf]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!(wulf.ok(&["node", "list", "--net"]), @"
    NODE NAME  NETWORK  HWADDR             IPADDR     GATEWAY     DEVICE
    g0001      default  aa:bb:cc:00:01:01  10.0.1.1   10.0.0.254  eth0
    g0001      ib       --                 --         --          --
    n0001      default  aa:bb:cc:00:00:01  10.0.0.1   10.0.0.254  eth0
    n0001      ib       aa:bb:cc:10:00:01  10.10.0.1  --          ib0
    spare      default  --                 --         10.0.0.254  eth0
    spare      ib       --                 --         --          --
    ");
    insta::assert_snapshot!(wulf.ok(&["node", "show", "g0001"]), @r#"
    # node g0001 (profiles applied: default, compute, gpu)
    profiles = ["gpu"]
    comment = "first GPU node"
    cluster = "cluster01"
    image = "rocky-9"
    ipxe-template = "default"
    system-overlays = ["wwinit", "agent", "fstab", "hostname", "ssh-host-keys", "network"]
    runtime-overlays = ["hosts", "ssh-authorized-keys"]
    init = "/sbin/init"
    root = "initramfs"
    asset-key = "ASSET-0101"

    [kernel]
    args = ["quiet", "crashkernel=no", "net.ifnames=1", "console=ttyS0,115200", "quiet", "nouveau.modeset=0"]

    [network-devices.default]
    device = "eth0"
    hwaddr = "aa:bb:cc:00:01:01"
    ipaddr = "10.0.1.1"
    netmask = "255.255.252.0"
    gateway = "10.0.0.254"
    ipaddr6 = "fd00::101"
    prefixlen6 = 64
    mtu = 9000

    [network-devices.default.tags]
    DNS1 = "10.0.0.254"

    [network-devices.ib]
    type = "infiniband"
    netmask = "255.255.0.0"

    [ipmi]
    username = "admin"
    password = "********"
    ipaddr = "10.1.1.1"
    netmask = "255.255.255.0"
    write = true
    template = "ipmitool.tmpl"

    [tags]
    IPXEMenuEntry = "imgextract"

    [[resources.fstab]]
    file = "/home"
    mntops = "defaults,nofail"
    spec = "warewulf:/home"
    vfstype = "nfs"
    "#);
    // `show` masks the BMC password; the inventory keeps it.
    let stored = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap_or_default();
    assert!(stored.contains(r#"password = "calvin""#), "{stored}");
    insta::assert_snapshot!(wulf.redact(&wulf.fails(&["import", "warewulf", &conf])), @"error: profile `compute` already exists; pass --force to replace it (nothing was imported)");
    wulf.ok(&["import", "warewulf", &conf, "--force"]);

    let bad = wulf.path().join("bad.conf");
    std::fs::write(&bad, "nodes: [unclosed\n").unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(wulf.redact(&wulf.fails(&["import", "warewulf", &bad.display().to_string()])), @"error: [STATE]/bad.conf: not YAML as Warewulf writes it: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 8");
}

#[test]
fn export_and_import_round_trip() {
    let wulf = Wulf::new();
    wulf.ok(&[
        "node", "add", "n[1-2]", "--ipaddr", "10.0.0.1", "--tagadd", "rack=r1",
    ]);
    let exported = wulf.ok(&["node", "export", "n1"]);
    insta::assert_snapshot!(exported, @"
    n1:
      profiles:
      - default
      network-devices:
        default:
          ipaddr: 10.0.0.1
      tags:
        rack: r1
    ");
    let json: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "export", "--json"])).unwrap_or_default();
    assert_eq!(json.as_object().map(|m| m.len()), Some(2));

    // Fields given are written onto existing nodes; new names are created; null clears.
    let file = wulf.path().join("edit.yaml");
    let edit = "n1:\n  image: rocky-9\n  tags:\n    role: gpu\nn3:\n  profiles: [default]\n  network-devices:\n    default:\n      ipaddr: 10.0.0.3\nn2:\n  network-devices:\n    default:\n      ipaddr: ~\n";
    std::fs::write(&file, edit).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(wulf.ok(&["node", "import", &file.display().to_string()]), @"imported 3 node(s): 1 created, 2 updated");
    let n1: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n1", "--json"])).unwrap_or_default();
    assert_eq!(
        (
            n1["image"].as_str(),
            n1["tags"]["rack"].as_str(),
            n1["tags"]["role"].as_str()
        ),
        (Some("rocky-9"), Some("r1"), Some("gpu"))
    );
    let n2: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n2", "--json"])).unwrap_or_default();
    assert!(
        n2["network-devices"]["default"].get("ipaddr").is_none(),
        "{n2}"
    );

    let before = std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default();
    // A null inside a free-form resource cannot be stored as TOML: refused, nothing lost.
    std::fs::write(
        &file,
        "n1:\n  resources:\n    fstab:\n      - spec: x\n        opts: ~\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&["node", "import", &file.display().to_string()]);
    assert!(
        error.contains("cannot be stored as TOML") && error.contains("nothing was written"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default(),
        before,
        "nothing was written"
    );
    std::fs::write(&file, "n1:\n  colour: red\n").unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&["node", "import", &file.display().to_string()]);
    assert!(
        error.contains("node `n1`") && error.contains("unknown field `colour`"),
        "{error}"
    );
    std::fs::write(
        &file,
        "n4:\n  network-devices:\n    default:\n      ipaddr: 10.0.0.1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&["node", "import", &file.display().to_string()]);
    assert!(error.contains("node `n1` has this address too"), "{error}");
    assert_eq!(
        std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default(),
        before,
        "nothing was written"
    );
}

#[test]
fn unset_and_edit() {
    let wulf = Wulf::new();
    wulf.ok(&["profile", "set", "default", "-A", "quiet"]);
    wulf.ok(&[
        "node",
        "add",
        "n[1-2]",
        "--ipaddr",
        "10.0.0.1",
        "--gateway",
        "10.0.0.254",
        "--image",
        "rocky",
        "--tagadd",
        "rack=r1",
    ]);
    wulf.ok(&[
        "node",
        "set",
        "n1",
        "--netname",
        "ib",
        "--ipaddr",
        "10.10.0.1",
    ]);
    insta::assert_snapshot!(wulf.ok(&["node", "unset", "n[1-2]", "-f", "image", "-f", "network-devices.default.gateway", "-f", "tags.rack"]), @"unset image, network-devices.default.gateway, tags.rack on 2 node(s)");
    wulf.ok(&["node", "unset", "n1", "-f", "network-devices.ib"]);
    let n1: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n1", "--json"])).unwrap_or_default();
    assert_eq!((n1.get("image"), n1.get("tags")), (None, None), "{n1}");
    assert_eq!(
        n1["network-devices"].as_object().map(|m| m.len()),
        Some(1),
        "{n1}"
    );
    assert!(
        n1["network-devices"]["default"].get("gateway").is_none(),
        "{n1}"
    );
    insta::assert_snapshot!(wulf.fails(&["node", "unset", "n1", "-f", "image"]), @"error: node `n1` has no `image` set (see `wulf node show n1`)");

    // $EDITOR is a real program: sed rewrites the image; a broken edit changes nothing.
    let edit = |script: &str| {
        wulf.command(&["node", "edit", "n1"])
            .env("EDITOR", script)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    wulf.ok(&["node", "set", "n1", "--image", "rocky"]);
    let out = edit("sed -i s/rocky/debian/");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n1: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n1", "--json"])).unwrap_or_default();
    assert_eq!(n1["image"], "debian");
    let before = std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default();
    let out = edit("sed -i s/10.0.0.1/10.0.0.2/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has this address too"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = edit("sed -i s/image/colour/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field `colour`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(wulf.path().join("nodes.toml")).unwrap_or_default(),
        before,
        "nothing was written"
    );
    assert_eq!(
        String::from_utf8_lossy(&edit("true").stdout).trim(),
        "no changes"
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n[0001-3000]", "--ipaddr", "10.1.0.1"]);
    let mut child = wulf
        .command(&["node", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("NODE"), "{first}");
    // The reader is gone (as `| head -1` goes): the rest meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// Warewulf scripts keep working: `-y` wherever wwctl takes it, `container` for `image`.
#[test]
fn wwctl_habits_carry_over() {
    let wulf = Wulf::new();
    wulf.ok(&["node", "add", "n1"]);
    wulf.ok(&["profile", "add", "p1"]);
    wulf.ok(&["node", "set", "-y", "n1", "--comment", "set by a script"]);
    wulf.ok(&["profile", "set", "--yes", "p1", "--comment", "p"]);
    assert!(wulf.ok(&["node", "show", "n1"]).contains("set by a script"));
    assert!(wulf.ok(&["container", "list"]).contains("IMAGE"));
    let error = wulf.fails(&["container", "delete", "nope", "-y"]);
    assert!(error.contains("no image named `nope`"), "{error}");
    wulf.ok(&["node", "delete", "-y", "n1"]);
    wulf.ok(&["profile", "delete", "-y", "p1"]);
}

#[test]
fn one_record_reads_from_the_checked_copy_and_never_a_stale_one() {
    let wulf = Wulf::new();
    let nodes = |comment: &str| {
        format!(
            "[profiles.default]\nimage = \"rocky-9\"\n\
             [nodes.n1]\nprofiles = [\"default\"]\ncomment = \"{comment}\"\n\
             [nodes.n2]\nprofiles = [\"default\"]\n"
        )
    };
    let comment = |node: &str| {
        let shown: serde_json::Value =
            serde_json::from_str(&wulf.ok(&["node", "show", node, "--json"])).unwrap();
        (shown["comment"].clone(), shown["image"].clone())
    };
    wulf.write("nodes.toml", &nodes("first"));
    assert_eq!(comment("n1"), (json!("first"), json!("rocky-9")));
    let cache = wulf.path().join("cache/inventory.json");
    assert!(cache.is_file(), "the checked copy is written");

    // A hand edit is read, not the copy of the text before it.
    wulf.write("nodes.toml", &nodes("second"));
    assert_eq!(comment("n1"), (json!("second"), json!("rocky-9")));
    // A torn copy is a miss, not an error.
    let text = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &text[..text.len() / 2]).unwrap();
    assert_eq!(comment("n1"), (json!("second"), json!("rocky-9")));
    assert_eq!(comment("n2").1, json!("rocky-9"));
    insta::assert_snapshot!(wulf.fails(&["node", "show", "n3"]), @"error: node `n3` does not exist (add it with `wulf node add`)");
    insta::assert_snapshot!(wulf.ok(&["profile", "show", "default"]), @r#"
    # profile default
    image = "rocky-9"
    "#);
}
