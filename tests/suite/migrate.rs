//! `wulf import warewulf --from DIR`: a fixture Warewulf 4.x install (nodes.conf with legacy
//! keys, warewulf.conf, three site overlays of Go templates, Warewulf's own `wwinit` beside
//! them as 4.4 and 4.5 keep it, one chroot image) imported in one command. The templates'
//! expected outputs are written by hand from Go's `text/template` rules.

use std::path::{Path, PathBuf};

use wulf_tests::Wulf;

use crate::netboot::{self, MAC};

const NODES_CONF: &str = r#"WW_INTERNAL: 45
nodeprofiles:
  default:
    comment: compute nodes
    cluster name: alpha
    container name: node
    system overlay:
    - wwinit
    - wwclient
    - hostname
    - debian.interfaces
    - site-motd
    - site-cluster
    - site-slurm
    runtime overlay:
    - hosts
    kernel:
      args: console=ttyS0 panic=-1 loglevel=4
    tags:
      rack: r12
nodes:
  n0001:
    profiles:
    - default
    network devices:
      default:
        device: eth0
        hwaddr: MAC
        ipaddr: 10.0.2.15
        netmask: 255.255.255.0
        gateway: 10.0.2.2
  n0002:
    profiles:
    - default
    cluster name: beta
    ipmi:
      ipaddr: 10.9.0.2
      username: admin
    network devices:
      default:
        device: eth0
        hwaddr: 52:54:00:12:34:57
        ipaddr: 10.0.2.16
        netmask: 255.255.255.0
"#;

const WAREWULF_CONF: &str = r#"WW_INTERNAL: 45
ipaddr: 10.0.2.2
netmask: 255.255.255.0
network: 10.0.2.0
warewulf:
  port: 9873
  secure: false
  update interval: 60
  autobuild overlays: true
  host overlay: true
dhcp:
  enabled: true
  range start: 10.0.2.100
  range end: 10.0.2.150
tftp:
  enabled: true
  tftproot: /var/lib/tftpboot
nfs:
  enabled: true
  export paths:
  - path: /home
    export options: rw,sync,no_subtree_check
    mount options: defaults
    mount: true
paths:
  wwoverlaydir: ROOT/var/lib/warewulf/overlays
  wwchrootdir: ROOT/var/lib/warewulf/chroots
"#;

// `secure: false`: QEMU's user network translates the VM's source ports, so its root-owned
// agent cannot show a privileged port, in Warewulf or in wulf.

/// `(overlay, path in rootfs, content)`.
const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "site-motd",
        "etc/motd.ww",
        "{{- /* wwdoc: the message of the day */ -}}\nprovisioned by wulf for {{ .Id }}\n",
    ),
    (
        "site-cluster",
        "etc/cluster/nodes.ww",
        "# {{ .ClusterName }} nodes, from {{ .Ipaddr }}\n\
{{ range $node := .AllNodes -}}\n\
{{ $node.Id }} {{ $node.ClusterName }}{{ range $name, $dev := $node.NetDevs }} {{ $name }}={{ $dev.Ipaddr }}{{ end }}\n\
{{ end -}}\n\
rack={{ .Tags.rack | upper }} row={{ .Tags.row | default \"none\" }}\n\
{{ if .Ipmi.Ipaddr }}bmc={{ .Ipmi.Ipaddr }}{{ else }}no bmc{{ end }}\n\
{{ printf \"%s/%s\" .Id (index .NetDevs \"default\").Device }}\n",
    ),
    (
        "site-cluster",
        "etc/cluster/munge.key.ww",
        "{{ Include \"munge.key\" }}",
    ),
    (
        "site-slurm",
        "etc/slurm/slurm.conf.ww",
        "ClusterName={{ .ClusterName }}\nSlurmctldHost={{ .Ipaddr }}\n\
{{- range .AllNodes }}\n\
{{- if eq .ClusterName $.ClusterName }}\n\
NodeName={{ .Id }} NodeAddr={{ .NetDevs.default.Ipaddr }}\n\
{{- end }}\n\
{{- end }}\n",
    ),
    (
        "site-slurm",
        "etc/slurm/gres.conf.ww",
        "{{ define \"gpu\" }}Name=gpu File=/dev/nvidia0{{ end }}\n{{ template \"gpu\" }}\n",
    ),
];

/// A Warewulf install below `root`; `chroot` fills the image `node`.
fn warewulf_site(root: &Path, chroot: impl FnOnce(&Path)) -> PathBuf {
    let etc = root.join("etc/warewulf");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("nodes.conf"), NODES_CONF.replace("MAC", MAC)).unwrap();
    std::fs::write(
        etc.join("warewulf.conf"),
        WAREWULF_CONF.replace("ROOT", &root.display().to_string()),
    )
    .unwrap();
    std::fs::write(etc.join("munge.key"), "secret-key\n").unwrap();
    let overlays = root.join("var/lib/warewulf/overlays");
    for (overlay, path, content) in TEMPLATES {
        let file = overlays.join(overlay).join("rootfs").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let slurm = overlays.join("site-slurm/rootfs/etc/slurm");
    std::fs::write(slurm.join("cgroup.conf"), "ConstrainCores=yes\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        slurm.join("cgroup.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("slurm.conf", slurm.join("current")).unwrap();
    // Warewulf's own overlay, where 4.4 and 4.5 keep it: not a site overlay.
    let wwinit = overlays.join("wwinit/rootfs");
    std::fs::create_dir_all(&wwinit).unwrap();
    std::fs::write(wwinit.join("init"), "#!/bin/sh\n").unwrap();
    chroot(&root.join("var/lib/warewulf/chroots/node/rootfs"));
    etc
}

/// An image Warewulf would accept: a shell and little else.
fn small_chroot(rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "image\n").unwrap();
}

/// Everything below the state directory, for "nothing was written".
fn state_listing(wulf: &Wulf) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(wulf.path(), wulf.path(), &mut out);
    out.sort();
    out
}

const NODES_N0001: &str = "# alpha nodes, from 10.0.2.2\nn0001 alpha default=10.0.2.15\nn0002 beta default=10.0.2.16\nrack=R12 row=none\nno bmc\nn0001/eth0\n";

#[test]
fn a_warewulf_site_imports_in_one_command_and_its_templates_render_as_in_warewulf() {
    wulf_tests::require_command("busybox", "busybox-static");
    let scratch = tempfile::tempdir().unwrap();
    let from = warewulf_site(scratch.path(), small_chroot);
    let from = from.to_str().unwrap();
    let wulf = Wulf::new();
    wulf.ok(&["node", "list"]);
    let before = state_listing(&wulf);

    // The dry run: one report, nothing written.
    let dry = wulf.ok(&["import", "warewulf", "--from", from, "--dry-run"]);
    for expected in [
        "mapped: nodes.conf: profile `default`: system overlay `wwclient` -> `agent`",
        "mapped: warewulf.conf: ipaddr 10.0.2.2, warewulf.port 9873 -> [server] http-addr",
        "mapped: nodes.conf: network overlays debian.interfaces -> [plugin.network] write = init",
        "mapped: overlay `site-slurm`: 6 file(s), 1 template(s) translated, 1 not",
        "mapped: image `node`:",
        "mapped: Warewulf's own overlays in ",
        "not mapped: warewulf.conf: warewulf.update interval: wulf-agent waits on the server",
        "not mapped: warewulf.conf: dhcp.enabled: wulf's DHCP server is left off (the range 10.0.2.100-10.0.2.150 is written, commented)",
        "untranslated: overlay `site-slurm`: etc/slurm/gres.conf.ww line 1: {{ define }}",
        "untranslated: overlay `site-slurm`: etc/slurm/gres.conf.ww is not installed; its Go template is kept in",
        "dry run: would import 1 profile(s), 2 node(s), 3 overlay(s) (4 template(s) translated, 1 not), 1 image(s) and",
    ] {
        assert!(dry.contains(expected), "{expected}\n--- report ---\n{dry}");
    }
    assert_eq!(state_listing(&wulf), before, "a dry run wrote something");
    let json: serde_json::Value = serde_json::from_str(&wulf.ok(&[
        "import",
        "warewulf",
        "--from",
        from,
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["nodes"], serde_json::json!(["n0001", "n0002"]));
    assert_eq!(json["written"], false);

    // The import, then a build of every overlay.
    let out = wulf.ok(&["import", "warewulf", "--from", from]);
    assert!(
        out.contains("imported 1 profile(s), 2 node(s), 3 overlay(s)"),
        "{out}"
    );
    wulf.ok(&["overlay", "build"]);
    let render = |overlay: &str, path: &str, node: &str| {
        wulf.ok(&["overlay", "render", overlay, path, "--node", node])
    };
    assert_eq!(
        render("site-motd", "/etc/motd", "n0001"),
        "provisioned by wulf for n0001\n"
    );
    assert_eq!(
        render("site-cluster", "/etc/cluster/nodes", "n0001"),
        NODES_N0001
    );
    assert!(
        render("site-cluster", "/etc/cluster/nodes", "n0002")
            .ends_with("rack=R12 row=none\nbmc=10.9.0.2\nn0002/eth0\n")
    );
    assert_eq!(
        render("site-cluster", "/etc/cluster/munge.key", "n0001"),
        "secret-key"
    );
    assert_eq!(
        render("site-slurm", "/etc/slurm/slurm.conf", "n0002"),
        "ClusterName=beta\nSlurmctldHost=10.0.2.2\nNodeName=n0002 NodeAddr=10.0.2.16\n"
    );

    // Files keep their mode, links stay links; the untranslated template is kept aside.
    let slurm = wulf.path().join("overlays/site-slurm/etc/slurm");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(slurm.join("cgroup.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_link(slurm.join("current")).unwrap(),
        Path::new("slurm.conf")
    );
    assert!(!slurm.join("gres.conf.ww").exists());
    let kept = std::fs::read_to_string(
        wulf.path()
            .join("import/warewulf/site-slurm/etc/slurm/gres.conf.ww"),
    )
    .unwrap();
    assert!(kept.starts_with("# wulf import warewulf: this Go template did not translate"));
    assert!(!wulf.path().join("overlays/wwinit").exists());

    // Records, legacy keys included; the configuration; the image.
    let n1: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["node", "show", "n0001", "--json"])).unwrap();
    let n1 = if n1.is_array() { n1[0].clone() } else { n1 };
    assert_eq!(
        n1["kernel"]["args"],
        serde_json::json!(["console=ttyS0", "panic=-1", "loglevel=4"]),
        "{n1}"
    );
    assert_eq!(n1["image"], "node", "{n1}");
    let config = std::fs::read_to_string(wulf.path().join("wulf.toml")).unwrap();
    assert!(config.contains("http-addr = \"10.0.2.2:9873\""), "{config}");
    assert!(config.contains("write = [\"init\"]"), "{config}");
    assert!(wulf.ok(&["image", "list"]).contains("node"));

    // Again: everything conflicts, nothing changes; --force replaces.
    let listing = state_listing(&wulf);
    let err = wulf.fails(&["import", "warewulf", "--from", from]);
    assert!(
        err.contains("already exists") && err.contains("nothing was imported"),
        "{err}"
    );
    assert_eq!(state_listing(&wulf), listing);
    wulf.ok(&["import", "warewulf", "--from", from, "--force"]);
    assert!(wulf.path().join("wulf.toml.before-import").exists());
}

#[test]
fn bad_warewulf_inputs_get_one_message_and_write_nothing() {
    wulf_tests::require_command("busybox", "busybox-static");
    let scratch = tempfile::tempdir().unwrap();
    let wulf = Wulf::new();
    wulf.ok(&["node", "list"]);
    let before = state_listing(&wulf);
    let site = |name: &str| {
        let root = scratch.path().join(name);
        warewulf_site(&root, small_chroot)
    };
    let import = |from: &Path| {
        wulf.redact(&wulf.fails(&["import", "warewulf", "--from", from.to_str().unwrap()]))
    };
    let one_line = |err: &str| {
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(state_listing(&wulf), before, "{err}");
    };

    let missing = scratch.path().join("nowhere/etc/warewulf");
    let err = import(&missing);
    assert!(
        err.contains("cannot read") && err.contains("nowhere"),
        "{err}"
    );
    one_line(&err);

    let broken = site("yaml");
    std::fs::write(broken.join("nodes.conf"), "nodes: [n1\n").unwrap();
    let err = import(&broken);
    assert!(
        err.contains("nodes.conf: not YAML as Warewulf writes it"),
        "{err}"
    );
    one_line(&err);

    let unknown = site("unknown");
    let conf = std::fs::read_to_string(unknown.join("warewulf.conf")).unwrap();
    std::fs::write(
        unknown.join("warewulf.conf"),
        conf.replace("  port: 9873", "  prot: 9873"),
    )
    .unwrap();
    let err = import(&unknown);
    assert!(
        err.contains(
            "warewulf.conf: `warewulf.prot` is no setting Warewulf 4.4-4.7 knows; fix or remove it"
        ),
        "{err}"
    );
    one_line(&err);

    let typo = site("typo");
    let nodes = std::fs::read_to_string(typo.join("nodes.conf")).unwrap();
    std::fs::write(
        typo.join("nodes.conf"),
        nodes.replace("cluster name: beta", "clustre name: beta"),
    )
    .unwrap();
    let err = import(&typo);
    assert!(
        err.contains("node `n0002`: `clustre name` is no key Warewulf 4.4-4.7 knows"),
        "{err}"
    );
    one_line(&err);

    let clash = site("clash");
    std::fs::rename(
        clash.join("../../var/lib/warewulf/overlays/site-motd"),
        clash.join("../../var/lib/warewulf/overlays/network"),
    )
    .unwrap();
    let err = import(&clash);
    assert!(
        err.contains("overlay `network` has the name of a wulf plugin"),
        "{err}"
    );
    one_line(&err);

    wulf.ok(&["node", "add", "n0002"]);
    let before = state_listing(&wulf);
    let err = import(&site("taken"));
    assert!(
        err.contains("node `n0002` already exists; pass --force"),
        "{err}"
    );
    assert_eq!(state_listing(&wulf), before);
}

#[test]
fn a_node_boots_from_an_imported_warewulf_site() {
    let scratch = tempfile::tempdir().unwrap();
    let from = warewulf_site(scratch.path(), netboot::node_chroot);
    let wulf = Wulf::new();
    wulf.ok(&["import", "warewulf", "--from", from.to_str().unwrap()]);
    wulf.ok(&["overlay", "build"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--tftp-addr", "127.0.0.1:0"]);
    let http = served.http;
    let device = format!("virtio-net-pci,netdev=n0,mac={MAC}");
    let bootfile = format!(
        "user,id=n0,bootfile=http://10.0.2.2:{}/ipxe/{MAC}",
        http.port()
    );
    let serial = netboot::boot(
        &[],
        &["-boot", "n", "-netdev", &bootfile, "-device", &device],
        "imported from Warewulf",
        http,
        &scratch.path().join("serial.log"),
    );
    // Hostname, address, hosts, the site template's motd and the agent (wwclient's heir).
    netboot::expect_marker(&serial, "10.0.2.15");
}
