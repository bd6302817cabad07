//! `wulf overlay` through the real binary: site overlays with templates, generator plugins,
//! per-node archives unpacked by GNU cpio, and rebuilds decided by content.

use std::path::Path;
use std::process::Command;

use wulf_tests::oci::{Item, LayerCompression, run};
use wulf_tests::{Wulf, require_command};

const NODES: &str = r#"
[profiles.default]
system-overlays = ["motd", "hostname"]
runtime-overlays = ["users"]
[profiles.default.network-devices.default]
netmask = "255.255.255.0"

[nodes.n1]
profiles = ["default"]
[nodes.n1.network-devices.default]
hwaddr = "aa:00:00:00:00:01"
ipaddr = "10.0.0.1"

[nodes.n2]
profiles = ["default"]
[nodes.n2.network-devices.default]
hwaddr = "aa:00:00:00:00:02"
ipaddr = "10.0.0.2"
"#;

fn setup() -> Wulf {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    wulf.ok(&["overlay", "create", "motd"]);
    wulf.ok(&["overlay", "create", "users"]);
    wulf.write(
        "overlays/motd/etc/motd.ww",
        "Welcome to {{ node.id }} ({{ node.network_devices.default.ipaddr }}/{{ node.network_devices.default.netmask | prefix }})\n",
    );
    wulf.write("overlays/motd/etc/issue", "plain file\n");
    wulf.write(
        "overlays/motd/etc/split.ww",
        "{{ file('a.conf') }}\nid={{ node.id }}\n{{ file('b.link') }}{{ softlink('/etc/a.conf') }}\n",
    );
    wulf.write(
        "overlays/users/etc/peers.ww",
        "{% for n in cluster.nodes %}{{ n.network_devices.default.ipaddr }} {{ n.id }}\n{% endfor %}",
    );
    wulf.ok(&["overlay", "chmod", "motd", "/etc/issue", "600"]);
    wulf
}

fn index(wulf: &Wulf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(wulf.path().join("provision/index.json")).unwrap())
        .unwrap()
}

/// The files of `node`'s own segments under `provision/nodes/` (in one of its 256 directories).
fn own_segments(wulf: &Wulf, node: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(shards) = std::fs::read_dir(wulf.path().join("provision/nodes")) else {
        return found;
    };
    for shard in shards {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{node}.")) {
                found.push(name);
            }
        }
    }
    found
}

fn build(wulf: &Wulf, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["overlay", "build", "--json"];
    full.extend_from_slice(args);
    serde_json::from_str(&wulf.ok(&full)).unwrap()
}

/// Unpacks a node's archive (all segments, in order) with GNU cpio.
fn unpack(wulf: &Wulf, node: &str, kind: &str, into: &Path) {
    require_command("cpio", "cpio");
    std::fs::create_dir_all(into).unwrap();
    let segments = index(wulf)["nodes"][node][kind]["segments"].clone();
    for segment in segments.as_array().unwrap() {
        let file = wulf
            .path()
            .join("provision")
            .join(segment.as_str().unwrap());
        run(Command::new("sh").current_dir(into).args([
            "-c",
            &format!(
                "gzip -dc '{}' | cpio -idmu --quiet --no-absolute-filenames",
                file.display()
            ),
        ]));
    }
}

#[test]
fn templates_render_per_node_into_archives_cpio_unpacks() {
    let wulf = setup();
    assert_eq!(
        wulf.ok(&["overlay", "render", "motd", "/etc/motd", "--node", "n2"]),
        "Welcome to n2 (10.0.0.2/24)\n"
    );

    let list = wulf.ok(&["overlay", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("motd") && l.contains("site") && l.trim_end().ends_with('2')),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("hostname") && l.contains("plugin")),
        "{list}"
    );

    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1", "n2"]));

    let scratch = tempfile::tempdir().unwrap();
    let system = scratch.path().join("system");
    unpack(&wulf, "n1", "system", &system);
    let read = |p: &str| std::fs::read_to_string(system.join(p)).unwrap();
    assert_eq!(read("etc/motd"), "Welcome to n1 (10.0.0.1/24)\n");
    assert_eq!(read("etc/hostname"), "n1\n", "from the hostname plugin");
    assert_eq!(read("etc/a.conf"), "id=n1\n");
    assert_eq!(
        std::fs::read_link(system.join("etc/b.link")).unwrap(),
        Path::new("/etc/a.conf")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(system.join("etc/issue"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );

    let runtime = scratch.path().join("runtime");
    unpack(&wulf, "n2", "runtime", &runtime);
    assert_eq!(
        std::fs::read_to_string(runtime.join("etc/peers")).unwrap(),
        "10.0.0.1 n1\n10.0.0.2 n2\n"
    );
}

#[test]
fn rebuilds_follow_content_not_time() {
    let wulf = setup();
    build(&wulf, &[]);
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!([]));
    assert_eq!(report["unchanged"], 4);

    // One node's record changes: its system archive is rebuilt; the runtime list reads the
    // whole cluster, so every node's runtime archive follows.
    wulf.ok(&["node", "set", "n1", "--ipaddr", "10.0.0.11"]);
    let before = index(&wulf);
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1", "n2"]));
    let after = index(&wulf);
    assert_ne!(
        before["nodes"]["n1"]["system"],
        after["nodes"]["n1"]["system"]
    );
    assert_eq!(
        before["nodes"]["n2"]["system"], after["nodes"]["n2"]["system"],
        "n2's system archive is untouched"
    );
    assert_ne!(
        before["nodes"]["n2"]["runtime"],
        after["nodes"]["n2"]["runtime"]
    );

    // A comment-only change to n2 (not in any template's view but in its record) rebuilds n2 only.
    wulf.ok(&["node", "set", "n2", "--comment", "rack 4"]);
    let before = index(&wulf);
    build(&wulf, &["n2"]);
    let after = index(&wulf);
    assert_eq!(before["nodes"]["n1"], after["nodes"]["n1"]);
    assert_ne!(
        before["nodes"]["n2"]["system"],
        after["nodes"]["n2"]["system"]
    );
    // A whole build that finds nothing to do knows it from a note of the last whole build's
    // inputs; a change built for one node, then undone, must not make the note true again.
    build(&wulf, &[]);
    wulf.ok(&["node", "set", "n1", "--ipaddr", "10.0.0.12"]);
    build(&wulf, &["n1"]);
    wulf.ok(&["node", "set", "n1", "--ipaddr", "10.0.0.11"]);
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1"]));
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!([]));
    assert_eq!(report["unchanged"], 4);

    // An overlay source changes: every node using it is rebuilt, even with old mtimes.
    wulf.write("overlays/motd/etc/issue", "changed\n");
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1", "n2"]));
    // A plugin's config changes: the nodes using it are rebuilt.
    wulf.write(
        "wulf.toml",
        "[plugin.hostname.config]\ndomain = \"hpc.example\"\n",
    );
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1", "n2"]));
    assert_eq!(
        report["unchanged"], 2,
        "the runtime lists do not use hostname"
    );
    // Old segments are removed once nothing refers to them.
    assert_eq!(
        own_segments(&wulf, "n1").len(),
        2,
        "one system and one runtime archive"
    );
}

#[test]
fn template_and_plugin_failures_are_named_and_build_nothing() {
    let wulf = setup();
    wulf.write(
        "overlays/motd/etc/broken.ww",
        "ok\n{{ node.no_such_field }}\n",
    );
    let err = wulf.fails(&["overlay", "build"]);
    assert!(
        err.contains("overlay `motd`, file etc/broken.ww: line 2:")
            && err.contains("rendering for node n1"),
        "{err}"
    );
    assert!(
        own_segments(&wulf, "n1").is_empty(),
        "nothing of a failed node is built"
    );
    std::fs::remove_file(wulf.path().join("overlays/motd/etc/broken.ww")).unwrap();

    wulf.write("overlays/motd/etc/syntax.ww", "{% for x in %}\n");
    let err = wulf.fails(&["overlay", "build"]);
    assert!(
        err.contains("overlay `motd`, file etc/syntax.ww: line 1:"),
        "{err}"
    );
    std::fs::remove_file(wulf.path().join("overlays/motd/etc/syntax.ww")).unwrap();

    wulf.ok(&["node", "set", "n2", "--system-overlays", "motd,nope"]);
    let err = wulf.fails(&["overlay", "build"]);
    assert!(err.contains("no overlay named `nope`"), "{err}");

    let err = wulf.fails(&["overlay", "delete", "motd"]);
    assert!(
        err.contains("overlay `motd` is used by profile default, n1, n2"),
        "{err}"
    );
    let err = wulf.fails(&["overlay", "import", "motd", "/etc/hostname", "../escape"]);
    assert!(err.contains("without `..`"), "{err}");
    let err = wulf.fails(&["overlay", "chmod", "motd", "/etc/issue", "999"]);
    assert!(err.contains("not an octal mode"), "{err}");
}

#[test]
fn a_new_node_gets_the_shipped_default_profile_and_its_overlays() {
    let wulf = Wulf::new();
    wulf.ok(&[
        "node",
        "add",
        "n1",
        "--hwaddr",
        "aa:bb:cc:dd:ee:01",
        "--ipaddr",
        "10.0.0.1",
        "--netmask",
        "255.255.255.0",
    ]);
    insta::assert_snapshot!(wulf.ok(&["profile", "show", "default"]), @r#"
    # profile default
    comment = "This profile is given to every new node"
    system-overlays = ["wwinit", "hostname", "hosts", "resolv", "network", "fstab", "ssh-host-keys", "agent"]
    runtime-overlays = ["ssh-authorized-keys"]
    "#);
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1"]));
    let scratch = tempfile::tempdir().unwrap();
    unpack(&wulf, "n1", "system", scratch.path());
    for path in [
        "init",
        "warewulf/config",
        "etc/hostname",
        "etc/hosts",
        "etc/systemd/network",
        "etc/fstab",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_rsa_key.pub",
        "usr/sbin/wulf-agent",
        "etc/systemd/system/multi-user.target.wants/wulf-agent.service",
        "etc/wulf/agent.conf",
        "etc/wulf/agent.credential",
    ] {
        // Links point into the node's root, not this one's.
        assert!(
            std::fs::symlink_metadata(scratch.path().join(path)).is_ok(),
            "{path} missing"
        );
    }
    // The agent is the static binary, and only root reads the node's credential.
    let agent = std::fs::read(scratch.path().join("usr/sbin/wulf-agent")).unwrap();
    assert!(agent.starts_with(b"\x7fELF"), "not an executable");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(scratch.path().join("etc/wulf/agent.credential"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("etc/hostname")).unwrap(),
        "n1\n"
    );
}

#[test]
fn templates_read_files_of_the_node_image() {
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
        "users",
    ]);
    wulf.ok(&["node", "add", "n1", "--hwaddr", "aa:bb:cc:dd:ee:01"]);
    wulf.ok(&["overlay", "create", "users"]);
    wulf.write(
        "overlays/users/etc/passwd.ww",
        "{{ include_from(node.image, \"/etc/passwd\") }}admin:x:1000:1000::/home/admin:/bin/sh\n",
    );
    wulf.write(
        "overlays/users/etc/shell.ww",
        "{{ include_from(\"base\", \"/bin/ash\") }}\n",
    );
    insta::assert_snapshot!(
        wulf.ok(&["overlay", "render", "users", "etc/passwd.ww", "--node", "n1"]),
        @"
    root:x:0:0::/root:/bin/sh
    user:x:1000:1000::/home/user:/bin/sh
    admin:x:1000:1000::/home/admin:/bin/sh
    "
    );
    assert_eq!(build(&wulf, &[])["built"], serde_json::json!(["n1"]));
    let out = scratch.path().join("out");
    unpack(&wulf, "n1", "system", &out);
    assert_eq!(
        std::fs::read_to_string(out.join("etc/shell")).unwrap(),
        "#!shell\n",
        "links are followed inside the image"
    );
    assert_eq!(build(&wulf, &[])["built"], serde_json::json!([]));
    // Another image under the same name changes what the templates read: n1 is rebuilt.
    let mut other = wulf_tests::oci::Layout::new(&scratch.path().join("other"));
    other.layer(
        &[
            Item::file("etc/passwd", "root:x:0:0::/root:/bin/bash\n"),
            Item::file("bin/ash", "#!other"),
        ],
        LayerCompression::Gzip,
    );
    let other = other.finish("v2");
    wulf.ok(&[
        "image",
        "import",
        &format!("oci:{}:v2", other.display()),
        "base",
        "--force",
    ]);
    assert_eq!(build(&wulf, &[])["built"], serde_json::json!(["n1"]));

    wulf.write(
        "overlays/users/etc/shell.ww",
        "{{ include_from(\"base\", \"/etc/nothing\") }}\n",
    );
    insta::assert_snapshot!(wulf.fails(&["overlay", "build"]), @r#"
    error: node `n1`: overlay `users`, file etc/shell.ww: line 1: include_from("base", "/etc/nothing"): /etc/nothing is not a file in image `base` (or a link to one) (rendering for node n1)
    error: the overlays of 1 node(s) could not be built (the others were); their last built archives, if any, are still served
    "#);
    wulf.write(
        "overlays/users/etc/shell.ww",
        "{{ include_from(\"base\", \"/../etc/passwd\") }}\n",
    );
    insta::assert_snapshot!(wulf.fails(&["overlay", "build"]), @r#"
    error: node `n1`: overlay `users`, file etc/shell.ww: line 1: include_from("base", "/../etc/passwd"): "/../etc/passwd": give an absolute path inside the image, without `..` (rendering for node n1)
    error: the overlays of 1 node(s) could not be built (the others were); their last built archives, if any, are still served
    "#);
}

#[test]
fn a_shared_file_follows_only_the_fields_its_plugin_reads() {
    let wulf = Wulf::new();
    let profile = "[profiles.default]\nsystem-overlays = [\"hostname\", \"hosts\"]\n\
                   [profiles.default.network-devices.default]\nnetmask = \"255.255.255.0\"\n";
    let nodes = |comment: &str, ip1: u8| {
        format!(
            "{profile}[nodes.n1]\nprofiles = [\"default\"]\ncomment = \"{comment}\"\n\
             [nodes.n1.network-devices.default]\nipaddr = \"10.0.0.{ip1}\"\n\
             [nodes.n2]\nprofiles = [\"default\"]\n\
             [nodes.n2.network-devices.default]\nipaddr = \"10.0.0.2\"\n"
        )
    };
    let hosts_segment = |node: &str| {
        index(&wulf)["nodes"][node]["system"]["segments"][0]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["plugin", "show", "hosts", "--json"])).unwrap();
    assert_eq!(
        show["shared_files"],
        "cluster (fields: primary-network, network-devices, ipmi)"
    );
    wulf.write("nodes.toml", &nodes("rack 1", 1));
    build(&wulf, &[]);
    let first = hosts_segment("n2");
    let hosts_input = index(&wulf)["shared"]["hosts"]["input"].clone();

    // `hosts` reads the networks and the IPMI address: a comment changes n1's own archive only.
    wulf.write("nodes.toml", &nodes("rack 7", 1));
    assert_eq!(build(&wulf, &[])["built"], serde_json::json!(["n1"]));
    assert_eq!(index(&wulf)["shared"]["hosts"]["input"], hosts_input);
    assert_eq!(hosts_segment("n1"), first);

    // An address is read: the hosts file is made again. Built for n1 alone, n2 keeps naming
    // the segment it was built with, which stays on disk until no archive names it.
    wulf.write("nodes.toml", &nodes("rack 7", 11));
    assert_eq!(build(&wulf, &["n1"])["built"], serde_json::json!(["n1"]));
    let second = hosts_segment("n1");
    assert_ne!(second, first);
    assert_eq!(hosts_segment("n2"), first);
    assert!(wulf.path().join("provision").join(&first).is_file());
    assert_eq!(build(&wulf, &[])["built"], serde_json::json!(["n2"]));
    assert_eq!(hosts_segment("n2"), second);
    assert!(!wulf.path().join("provision").join(&first).exists());
    let root = tempfile::tempdir().unwrap();
    unpack(&wulf, "n2", "system", root.path());
    let hosts = std::fs::read_to_string(root.path().join("etc/hosts")).unwrap();
    assert!(hosts.contains("10.0.0.11 n1 n1-default"), "{hosts}");
}

#[test]
fn a_changed_shared_file_reassembles_archives_without_rendering_them_again() {
    let wulf = Wulf::new();
    let node = |n: u32| {
        format!(
            "[nodes.n{n}]\nprofiles = [\"default\"]\n[nodes.n{n}.network-devices.default]\n\
             hwaddr = \"aa:00:00:00:00:0{n}\"\nipaddr = \"10.0.0.{n}\"\n"
        )
    };
    let profile = "[profiles.default]\nsystem-overlays = [\"hostname\", \"hosts\"]\n\
                   [profiles.default.network-devices.default]\nnetmask = \"255.255.255.0\"\n";
    wulf.write("nodes.toml", &format!("{profile}{}{}", node(1), node(2)));
    build(&wulf, &[]);
    let before = index(&wulf)["nodes"]["n2"]["system"].clone();

    // A node added changes every hosts file: the shared segment is made again, and each
    // node's archive is that segment and its own, which is not rendered again.
    wulf.write(
        "nodes.toml",
        &format!("{profile}{}{}{}", node(1), node(2), node(3)),
    );
    let report = build(&wulf, &[]);
    assert_eq!(report["built"], serde_json::json!(["n1", "n2", "n3"]));
    let after = index(&wulf)["nodes"]["n2"]["system"].clone();
    let segments = |archive: &serde_json::Value| -> Vec<String> {
        archive["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let (old, new) = (segments(&before), segments(&after));
    assert_eq!(old.len(), 2, "{old:?}");
    assert_eq!(old.last(), new.last(), "n2's own segment is kept");
    assert_ne!(old[0], new[0], "the shared hosts segment is new");
    assert_ne!(before["sha256"], after["sha256"]);
    let root = tempfile::tempdir().unwrap();
    unpack(&wulf, "n2", "system", root.path());
    let hosts = std::fs::read_to_string(root.path().join("etc/hosts")).unwrap();
    assert!(hosts.contains("10.0.0.3"), "{hosts}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/hostname"))
            .unwrap()
            .trim(),
        "n2"
    );
}

#[test]
fn archives_of_the_per_node_directory_layout_move_as_their_nodes_are_rebuilt() {
    let wulf = setup();
    build(&wulf, &[]);
    // Lay n1's archives out as wulf did before the 256 directories: `nodes/<id>/<kind>-...`.
    let provision = wulf.path().join("provision");
    let mut index = index(&wulf);
    let old_dir = provision.join("nodes/n1");
    std::fs::create_dir_all(&old_dir).unwrap();
    for kind in ["system", "runtime"] {
        let segments = index["nodes"]["n1"][kind]["segments"]
            .as_array_mut()
            .unwrap();
        let own = segments.last_mut().unwrap();
        let name = own.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let legacy = format!("nodes/n1/{}", name.trim_start_matches("n1."));
        std::fs::rename(
            provision.join(own.as_str().unwrap()),
            provision.join(&legacy),
        )
        .unwrap();
        *own = serde_json::json!(legacy);
    }
    std::fs::write(
        provision.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    // Served as they are until n1 changes; then its new archives go where every node's do,
    // and the old directory is gone.
    assert_eq!(
        build(&wulf, &["--force", "n2"])["built"],
        serde_json::json!(["n2"])
    );
    assert_eq!(std::fs::read_dir(&old_dir).unwrap().count(), 2);
    wulf.ok(&["node", "set", "n1", "--comment", "moved", "-y"]);
    let built = build(&wulf, &[]);
    assert!(
        built["built"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("n1")),
        "{built}"
    );
    assert!(!old_dir.exists());
    assert_eq!(own_segments(&wulf, "n1").len(), 2);
    let root = tempfile::tempdir().unwrap();
    unpack(&wulf, "n1", "runtime", root.path());
}
