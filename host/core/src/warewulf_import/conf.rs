//! `warewulf.conf` (Warewulf 4.4-4.7) read into a `wulf.toml` and the directories of the site
//! overlays and images. What maps is written with the Warewulf key it came from; what does
//! not is reported with what to do; a key Warewulf does not have stops the import.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_norway::Value;

use super::{ImportError, NETWORK_OVERLAYS, boolean, text};

/// What `warewulf.conf` gave.
#[derive(Debug, Clone)]
pub struct ServerConf {
    /// The `wulf.toml` to write.
    pub toml: String,
    pub mapped: Vec<String>,
    pub unmapped: Vec<String>,
    /// `paths.wwoverlaydir`: the site's overlays (and, before 4.6, the distribution's).
    pub overlay_dir: PathBuf,
    /// `paths.wwchrootdir`: the images, `<name>/rootfs` each.
    pub chroot_dir: PathBuf,
}

const DEFAULT_OVERLAY_DIR: &str = "/var/lib/warewulf/overlays";
const DEFAULT_CHROOT_DIR: &str = "/var/lib/warewulf/chroots";

/// Every key of warewulf.conf by section (`""`: the top level), as Warewulf 4.4-4.7 read them.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "WW_INTERNAL",
            "comment",
            "ipaddr",
            "netmask",
            "network",
            "fqdn",
            "ipaddr6",
            "prefixlen6",
            "warewulf",
            "api",
            "dhcp",
            "tftp",
            "nfs",
            "ssh",
            "image mounts",
            "container mounts",
            "paths",
            "wwclient",
        ],
    ),
    (
        "warewulf",
        &[
            "port",
            "tls port",
            "secure",
            "secure files",
            "tls",
            "update interval",
            "autobuild overlays",
            "host overlay",
            "syslog",
            "datastore",
            "grubboot",
            "systemd name",
        ],
    ),
    ("api", &["enabled", "tls", "allowed subnets"]),
    (
        "dhcp",
        &[
            "enabled",
            "template",
            "range start",
            "range end",
            "range6 start",
            "range6 end",
            "systemd name",
        ],
    ),
    ("tftp", &["enabled", "tftproot", "systemd name", "ipxe"]),
    ("nfs", &["enabled", "export paths", "systemd name"]),
    ("ssh", &["key types"]),
    (
        "paths",
        &[
            "bindir",
            "sysconfdir",
            "localstatedir",
            "cachedir",
            "ipxesource",
            "srvdir",
            "firewallddir",
            "systemddir",
            "datadir",
            "wwoverlaydir",
            "wwchrootdir",
            "wwprovisiondir",
            "wwclientdir",
            "wwfilesdir",
        ],
    ),
    ("wwclient", &["port"]),
];

fn check_keys(top: &serde_norway::Mapping) -> Result<(), ImportError> {
    let mut unknown = Vec::new();
    let known = |section: &str| KNOWN.iter().find(|(s, _)| *s == section).map(|(_, k)| *k);
    for (key, value) in top {
        let key = key.as_str().unwrap_or_default();
        if !known("").unwrap_or_default().contains(&key) {
            unknown.push(format!("`{key}`"));
            continue;
        }
        if let (Some(keys), Value::Mapping(section)) = (known(key), value) {
            for (inner, _) in section {
                let inner = inner.as_str().unwrap_or_default();
                if !keys.contains(&inner) {
                    unknown.push(format!("`{key}.{inner}`"));
                }
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ImportError {
        file: "warewulf.conf",
        message: format!(
            "{} {} no setting Warewulf 4.4-4.7 knows; fix or remove {}",
            unknown.join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
            if unknown.len() == 1 { "it" } else { "them" },
        ),
    })
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Reads `warewulf.conf`; `network_overlays` are the network overlays `nodes.conf` names,
/// which decide what the `network` plugin writes.
pub fn read(yaml: &str, network_overlays: &BTreeSet<String>) -> Result<ServerConf, ImportError> {
    let bad = |message: String| ImportError {
        file: "warewulf.conf",
        message,
    };
    let root: Value = serde_norway::from_str(yaml)
        .map_err(|e| bad(format!("not YAML as Warewulf writes it: {e}")))?;
    let Value::Mapping(top) = &root else {
        return Err(bad("the top level is not a mapping".into()));
    };
    check_keys(top)?;
    let mut mapped = Vec::new();
    let mut unmapped = Vec::new();
    let mut toml = String::from(
        "# Written by `wulf import warewulf` from warewulf.conf; each setting names the key it came from.\n",
    );
    let ww = &root["warewulf"];

    // The server: Warewulf's address (perhaps CIDR) and port are where nodes fetch from.
    let ipaddr = text(&root["ipaddr"]);
    let (address, cidr_prefix) = match ipaddr.as_deref().map(|a| a.split_once('/')) {
        Some(Some((a, p))) => (Some(a.to_owned()), p.parse::<u32>().ok()),
        Some(None) => (ipaddr.clone(), None),
        None => (None, None),
    };
    if let Some(a) = &address
        && a.parse::<Ipv4Addr>().is_err()
    {
        return Err(bad(format!(
            "ipaddr = {a:?} is not an IPv4 address (or address/prefix)"
        )));
    }
    let port = match text(&ww["port"]) {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad(format!("warewulf.port = {p:?} is not a port number")))?,
        None => 9873,
    };
    toml.push_str("\n[server]\n");
    match &address {
        Some(a) => {
            toml.push_str(&format!(
                "http-addr = {}  # ipaddr, warewulf.port\n",
                toml_str(&format!("{a}:{port}"))
            ));
            mapped.push(format!(
                "warewulf.conf: ipaddr {a}, warewulf.port {port} -> [server] http-addr"
            ));
        }
        None => unmapped.push(
            "warewulf.conf: no ipaddr; wulf serves on its default address (set [server] http-addr)"
                .into(),
        ),
    }
    if let Some(secure) = boolean(&ww["secure"]) {
        toml.push_str(&format!("secure = {secure}  # warewulf.secure\n"));
        mapped.push("warewulf.conf: warewulf.secure -> [server] secure".into());
    }
    let tftp = &root["tftp"];
    if let Some(enabled) = boolean(&tftp["enabled"]) {
        toml.push_str(&format!("tftp = {enabled}  # tftp.enabled\n"));
        mapped.push("warewulf.conf: tftp.enabled -> [server] tftp".into());
    }
    let paths = &root["paths"];
    if let Some(ipxe) = text(&paths["ipxesource"]) {
        toml.push_str(&format!(
            "tftp-root = {}  # paths.ipxesource\n",
            toml_str(&ipxe)
        ));
        mapped.push("warewulf.conf: paths.ipxesource -> [server] tftp-root (wulf serves the iPXE binaries from there)".into());
    }
    if text(&tftp["tftproot"]).is_some() {
        unmapped.push("warewulf.conf: tftp.tftproot is not needed: wulf's TFTP server serves the iPXE binaries where they are".into());
    }
    if !tftp["ipxe"].is_null() {
        unmapped.push("warewulf.conf: tftp.ipxe is not needed: wulf picks the iPXE binary for each firmware (see `wulf doctor`)".into());
    }

    // DHCP: Warewulf configured dhcpd; wulf's own server needs an interface named.
    let dhcp = &root["dhcp"];
    if boolean(&dhcp["enabled"]) == Some(true) {
        let start = text(&dhcp["range start"]);
        let end = text(&dhcp["range end"]);
        toml.push_str("\n# Warewulf configured dhcpd. wulf's own DHCP server can take its place: name the\n# interface it answers on and uncomment (or keep dhcpd and run `wulf configure dhcp`).\n# [dhcp]\n# mode = \"full\"\n# interfaces = [\"eth1\"]\n");
        if let (Some(s), Some(e)) = (&start, &end) {
            toml.push_str(&format!(
                "# range = {}  # dhcp.range start, dhcp.range end\n",
                toml_str(&format!("{s}-{e}"))
            ));
        }
        unmapped.push(format!(
            "warewulf.conf: dhcp.enabled: wulf's DHCP server is left off{}; name the interface under [dhcp] in wulf.toml to turn it on, or keep dhcpd and run `wulf configure dhcp`",
            match (&start, &end) {
                (Some(s), Some(e)) => format!(" (the range {s}-{e} is written, commented)"),
                _ => String::new(),
            }
        ));
    }
    if text(&dhcp["template"]).is_some_and(|t| t == "static") {
        unmapped.push("warewulf.conf: dhcp.template static: wulf's full DHCP mode always gives known nodes their inventory address".into());
    }
    if text(&dhcp["range6 start"]).is_some() {
        unmapped.push("warewulf.conf: dhcp.range6: wulf's DHCP server is IPv4 only".into());
    }

    // What the network plugin writes, from the overlays the nodes named.
    let mut write: Vec<&str> = NETWORK_OVERLAYS
        .iter()
        .filter(|(ww, _)| network_overlays.contains(*ww))
        .map(|(_, wulf)| *wulf)
        .collect();
    write.sort_unstable();
    write.dedup();
    if !write.is_empty() {
        let from: Vec<&str> = network_overlays.iter().map(String::as_str).collect();
        toml.push_str(&format!(
            "\n[plugin.network.config]\nwrite = [{}]  # overlays {}\n",
            write
                .iter()
                .map(|w| toml_str(w))
                .collect::<Vec<_>>()
                .join(", "),
            from.join(", ")
        ));
        mapped.push(format!(
            "nodes.conf: network overlays {} -> [plugin.network] write = {}",
            from.join(", "),
            write.join(", ")
        ));
    }

    // NFS: before 4.6 an export could say nodes mount it; from 4.6 mounts are in resources.
    let nfs = &root["nfs"];
    if boolean(&nfs["enabled"]) != Some(false)
        && let Value::Sequence(exports) = &nfs["export paths"]
    {
        let mut mounts = Vec::new();
        for export in exports {
            let Some(path) = text(&export["path"]) else {
                continue;
            };
            if boolean(&export["mount"]) == Some(true) {
                let options = text(&export["mount options"]).unwrap_or_else(|| "defaults".into());
                mounts.push(format!(
                    "{{ path = {}, options = {} }}",
                    toml_str(&path),
                    toml_str(&options)
                ));
                mapped.push(format!(
                    "warewulf.conf: nfs.export paths {path} (mount) -> [plugin.fstab] nfs-exports"
                ));
            } else {
                unmapped.push(format!(
                    "warewulf.conf: nfs.export paths {path}: the export itself is the host's (wulf does not write /etc/exports); nodes mount it through resources.fstab"
                ));
            }
        }
        if !mounts.is_empty() {
            toml.push_str(&format!(
                "\n[plugin.fstab.config]\nnfs-exports = [{}]  # nfs.export paths\n",
                mounts.join(", ")
            ));
        }
    }

    // Settings wulf does not need or does another way.
    let notes: &[(&Value, &str)] = &[
        (
            &ww["update interval"],
            "warewulf.update interval: wulf-agent waits on the server and gets a change within seconds, no polling",
        ),
        (
            &ww["autobuild overlays"],
            "warewulf.autobuild overlays: wulf builds a node's overlays when they are asked for and their inputs changed",
        ),
        (
            &ww["host overlay"],
            "warewulf.host overlay: `wulf configure dhcp|tftp` write the host's files",
        ),
        (
            &ww["grubboot"],
            "warewulf.grubboot: wulf boots nodes through iPXE only",
        ),
        (
            &ww["tls"],
            "warewulf.tls: wulf's API has its own TLS ([api] tls)",
        ),
        (
            &ww["tls port"],
            "warewulf.tls port: wulf's API listens on [api] addr",
        ),
        (
            &root["api"],
            "api: wulf's API ([api]) uses tokens (`wulf token create`), not allowed subnets",
        ),
        (
            &root["ssh"],
            "ssh.key types: wulf makes ed25519, ecdsa and rsa host keys (`wulf configure ssh`)",
        ),
        (
            &root["image mounts"],
            "image mounts: `wulf image exec --bind SRC[:DST]` binds per command; the host's resolv.conf is always there",
        ),
        (
            &root["container mounts"],
            "container mounts: `wulf image exec --bind SRC[:DST]` binds per command; the host's resolv.conf is always there",
        ),
        (
            &root["wwclient"],
            "wwclient.port: wulf-agent talks to the server's HTTP port",
        ),
        (
            &root["ipaddr6"],
            "ipaddr6: wulf serves nodes over IPv4 here",
        ),
    ];
    for (value, note) in notes {
        if !value.is_null() {
            unmapped.push(format!("warewulf.conf: {note}"));
        }
    }
    if let Some(prefix) = cidr_prefix
        && prefix > 32
    {
        return Err(bad(format!("ipaddr has the prefix /{prefix}")));
    }
    Ok(ServerConf {
        toml,
        mapped,
        unmapped,
        overlay_dir: text(&paths["wwoverlaydir"])
            .unwrap_or_else(|| DEFAULT_OVERLAY_DIR.into())
            .into(),
        chroot_dir: text(&paths["wwchrootdir"])
            .unwrap_or_else(|| DEFAULT_CHROOT_DIR.into())
            .into(),
    })
}

/// The directories when there is no warewulf.conf: Warewulf's defaults.
pub fn default_dirs() -> (PathBuf, PathBuf) {
    (DEFAULT_OVERLAY_DIR.into(), DEFAULT_CHROOT_DIR.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
WW_INTERNAL: 45
ipaddr: 10.0.0.254/16
netmask: 255.255.0.0
warewulf:
  port: 9873
  secure: false
  update interval: 60
dhcp:
  enabled: true
  range start: 10.0.1.10
  range end: 10.0.1.99
tftp:
  enabled: true
  tftproot: /var/lib/tftpboot
nfs:
  export paths:
  - path: /home
    export options: rw,sync
    mount options: defaults,noatime
    mount: true
  - path: /opt
    mount: false
paths:
  wwoverlaydir: /srv/ww/overlays
"#;

    #[test]
    fn settings_map_to_wulf_toml_and_the_rest_is_reported() {
        let networks: BTreeSet<String> = ["NetworkManager".to_string()].into();
        let conf = read(CONF, &networks).unwrap_or_else(|e| panic!("{e}"));
        let parsed: toml::Table =
            toml::from_str(&conf.toml).unwrap_or_else(|e| panic!("{e}\n{}", conf.toml));
        assert_eq!(
            parsed["server"]["http-addr"].as_str(),
            Some("10.0.0.254:9873")
        );
        assert_eq!(parsed["server"]["secure"].as_bool(), Some(false));
        assert_eq!(
            parsed["plugin"]["network"]["config"]["write"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(
            parsed["plugin"]["fstab"]["config"]["nfs-exports"][0]["options"].as_str(),
            Some("defaults,noatime")
        );
        assert!(parsed.get("dhcp").is_none(), "{}", conf.toml);
        assert!(
            conf.toml.contains("# range = \"10.0.1.10-10.0.1.99\""),
            "{}",
            conf.toml
        );
        assert_eq!(conf.overlay_dir, PathBuf::from("/srv/ww/overlays"));
        assert_eq!(conf.chroot_dir, PathBuf::from(DEFAULT_CHROOT_DIR));
        let unmapped = conf.unmapped.join("\n");
        for expected in ["update interval", "dhcp.enabled", "tftp.tftproot", "/opt"] {
            assert!(unmapped.contains(expected), "{expected}: {unmapped}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_stop_the_import() {
        let err = read("warewulf:\n  prot: 9873\nnfss: {}\n", &BTreeSet::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`warewulf.prot`, `nfss` are no setting Warewulf 4.4-4.7 knows; fix or remove them"
        );
        let err = read("ipaddr: 10.0.0\n", &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("10.0.0"), "{err}");
        let err = read("warewulf:\n  port: http\n", &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("warewulf.port"), "{err}");
    }
}
