//! `doctor`: the host checked the way an admin would before booting nodes, each finding with
//! how to fix it. Read-only but for what `wulf serve` does at start anyway: the plugins the site
//! uses are loaded (compiled into the cache, the cluster's SSH host keys generated if a plugin
//! wants them), so a plugin that would not load is found here and not at the first boot.

mod probe;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use wulf_core::Node;
use wulf_overlay::Kind;

use crate::Site;
use probe::Proto;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Warn,
    Fail,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warn => "warn",
            Health::Fail => "fail",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `config`, `state`, `http`, `tftp`, `tftp-root`, `dhcp`, `nodes`,
    /// `images`, `overlays`, `plugins`, `clock`.
    pub check: &'static str,
    pub health: Health,
    pub message: String,
    /// What to do about it; `None` when nothing needs doing.
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, message: impl Into<String>) -> Check {
        Check {
            check,
            health: Health::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            health: Health::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            health: Health::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the checks may be told.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// The DHCP server's configuration; by default the files `wulf configure dhcp` writes.
    pub dhcp_config: Option<PathBuf>,
}

/// Where `wulf configure dhcp` writes, for dnsmasq and ISC dhcpd, and dnsmasq's main file.
const DHCP_CONFIGS: &[&str] = &[
    "/etc/dnsmasq.d/wulf.conf",
    "/etc/dhcp/dhcpd.conf",
    "/etc/dnsmasq.conf",
];

/// Free space below which the state directory fails (an image build needs its size twice),
/// and below which it warns.
const DISK_FAIL: u64 = 1 << 30;
const DISK_WARN: u64 = 5 << 30;

/// At most this many names are listed in one message.
const NAMES_SHOWN: usize = 5;

impl Site {
    /// The TFTP address `wulf serve` binds unless told otherwise, `None` when TFTP is off:
    /// `server.tftp-addr`, else the HTTP address's IP on port 69 as root, 6969 otherwise.
    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        let server = &self.config().server;
        let port = if rustix::process::geteuid().is_root() {
            69
        } else {
            6969
        };
        server.tftp.then(|| {
            server
                .tftp_addr
                .unwrap_or_else(|| SocketAddr::new(server.http_addr.ip(), port))
        })
    }

    /// Every check, in the order an admin would go through them.
    pub fn doctor(&self, options: &DoctorOptions) -> Vec<Check> {
        let config = self.config();
        let mut checks = vec![self.check_config(), self.check_state()];
        if let Ok(version) = self.state_version()
            && version < wulf_core::state_dir::STATE_VERSION
        {
            checks.push(Check::warn(
                "state",
                format!(
                    "state-version {version}: written by an earlier wulf (this one writes {})",
                    wulf_core::state_dir::STATE_VERSION
                ),
                "run `wulf upgrade` (it backs up what it changes first)",
            ));
        }
        checks.push(check_port(
            "http",
            Proto::Tcp,
            config.server.http_addr,
            "stop it, or choose another `server.http-addr` in the site configuration",
        ));
        match self.tftp_addr() {
            Some(addr) => {
                checks.push(check_port(
                    "tftp",
                    Proto::Udp,
                    addr,
                    "stop its TFTP server (dnsmasq: drop `enable-tftp`; wulf serves the iPXE \
                     binaries itself), or set `server.tftp-addr`, or `server.tftp = false`",
                ));
                checks.push(check_tftp_root(&config.server.tftp_root));
            }
            None => checks.push(Check::ok("tftp", "off (`server.tftp = false`)")),
        }
        checks.push(self.check_dhcp(options.dhcp_config.as_deref()));
        match self.inventory() {
            Ok(inventory) => {
                let nodes = inventory.merged_nodes();
                checks.push(check_nodes(&nodes));
                checks.push(self.check_images(&nodes));
                checks.push(self.check_overlays(&nodes));
            }
            Err(error) => checks.push(Check::fail(
                "nodes",
                format!(
                    "the inventory does not load: {}",
                    crate::error_chain(&error)
                ),
                "fix the record it names (`wulf node edit`), or the backend plugin",
            )),
        }
        checks.push(self.check_plugins());
        checks.push(self.check_clock());
        checks
    }

    fn check_config(&self) -> Check {
        let file = self.config_file();
        match self.config().source {
            Some(_) => Check::ok("config", file.display().to_string()),
            None => Check::ok(
                "config",
                format!("built-in defaults ({} is absent)", file.display()),
            ),
        }
    }

    fn check_state(&self) -> Check {
        let root = self.state.root();
        let space = probe::disk_space(root);
        let free = space.map_or(String::new(), |(free, total)| {
            format!(", {} free of {}", gib(free), gib(total))
        });
        if root.exists()
            && rustix::fs::access(
                root,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .is_err()
        {
            return Check::fail(
                "state",
                format!("{} is not writable by this user{free}", root.display()),
                "run as root (the packaged service's state is root's), or choose \
                 `--state-dir`",
            );
        }
        let Some((available, total)) = space else {
            return Check::warn(
                "state",
                format!("cannot tell the free space of {}", root.display()),
                "check it with `df`",
            );
        };
        let message = format!("{}{free}", root.display());
        if available < DISK_FAIL {
            Check::fail(
                "state",
                message,
                "free space: an image build writes its rootfs and initramfs here \
                 (`wulf image delete` drops unused images)",
            )
        } else if available < DISK_WARN || available < total / 20 {
            Check::warn(
                "state",
                message,
                "an image build needs about twice the image's size free",
            )
        } else if !root.exists() {
            Check::ok("state", format!("{message} (created on first use)"))
        } else {
            Check::ok("state", message)
        }
    }

    fn check_dhcp(&self, given: Option<&Path>) -> Check {
        let dhcp = self.config().dhcp.clone();
        if dhcp.mode != wulf_core::config::DhcpMode::Off {
            let mode = match dhcp.mode {
                wulf_core::config::DhcpMode::Full => "full DHCP",
                _ => "ProxyDHCP",
            };
            let missing: Vec<&str> = dhcp
                .interfaces
                .iter()
                .map(String::as_str)
                .filter(|i| !Path::new("/sys/class/net").join(i).exists())
                .collect();
            return if missing.is_empty() {
                Check::ok(
                    "dhcp",
                    format!(
                        "wulf serve answers {mode} on {}",
                        dhcp.interfaces.join(", ")
                    ),
                )
            } else {
                Check::fail(
                    "dhcp",
                    format!("[dhcp] interfaces: no interface {}", missing.join(", ")),
                    "name interfaces this host has (`ip -br link`) in [dhcp] interfaces",
                )
            };
        }
        let candidates: Vec<PathBuf> = match given {
            Some(path) => vec![path.to_path_buf()],
            None => DHCP_CONFIGS.iter().map(PathBuf::from).collect(),
        };
        let port = self.config().server.http_addr.port();
        let configure = "`wulf configure dhcp --netmask MASK` writes one for dnsmasq \
                         (`--format isc` for ISC dhcpd)";
        let found = candidates.iter().find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            Some((path, ipxe_url(&text)))
        });
        let Some((path, url)) = found else {
            let list = candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!("no DHCP configuration found ({list})");
            return if given.is_some() {
                Check::fail("dhcp", message, "check the path given to --dhcp-config")
            } else {
                Check::warn(
                    "dhcp",
                    message,
                    format!(
                        "{configure}; a DHCP server elsewhere must send PXE firmware to this \
                         host's TFTP and iPXE to http://THIS-HOST:{port}/ipxe/${{mac:hexhyp}}"
                    ),
                )
            };
        };
        let file = path.display();
        let Some((host, url_port)) = url else {
            return Check::warn(
                "dhcp",
                format!("{file} sends iPXE clients to no wulf URL (no http://…/ipxe/)"),
                configure,
            );
        };
        let redo = "run `wulf configure dhcp` again, then restart the DHCP server";
        if url_port != port {
            return Check::fail(
                "dhcp",
                format!("{file} sends iPXE to port {url_port}; wulf serves HTTP on {port}"),
                redo,
            );
        }
        let http = self.config().server.http_addr.ip();
        let ours = match (host.parse::<IpAddr>(), http) {
            (Ok(ip), http) if !http.is_unspecified() => ip == http,
            (Ok(IpAddr::V4(ip)), _) => probe::local_ipv4().contains(&ip),
            // A name, or IPv6: not told apart here.
            _ => true,
        };
        if ours {
            Check::ok("dhcp", format!("{file} sends iPXE to http://{host}:{port}"))
        } else {
            Check::fail(
                "dhcp",
                format!("{file} sends iPXE to {host}, which is not an address wulf serves on"),
                redo,
            )
        }
    }

    fn check_images(&self, nodes: &[Node]) -> Check {
        let mut users: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
        for node in nodes {
            if let Some(image) = node.image.as_deref() {
                users.entry(image).or_default().push(node);
            }
        }
        if users.is_empty() {
            return match self.images.list() {
                Ok(images) if !images.is_empty() => Check::ok(
                    "images",
                    format!("{} image(s), none used yet", images.len()),
                ),
                _ => Check::warn(
                    "images",
                    "no images",
                    "`wulf image import docker://REPO:TAG NAME` (or a directory or archive)",
                ),
            };
        }
        let mut missing = Vec::new();
        let mut unbuilt = Vec::new();
        let mut kernelless = Vec::new();
        for (image, users) in &users {
            let meta = match self.images.get(image) {
                Ok(meta) => meta,
                Err(_) => {
                    missing.push(format!("`{image}` (used by {})", ids(users)));
                    continue;
                }
            };
            if meta.build.is_none() {
                unbuilt.push(image.to_string());
            }
            let without: Vec<&Node> = users
                .iter()
                .copied()
                .filter(|n| {
                    wulf_image::kernel::select(&meta.kernels, n.kernel.version.as_deref()).is_none()
                })
                .collect();
            if !without.is_empty() {
                kernelless.push(format!("`{image}` for {}", ids(&without)));
            }
        }
        if !missing.is_empty() {
            Check::fail(
                "images",
                format!("missing: {}", missing.join("; ")),
                "`wulf image import SOURCE NAME`, or point the nodes at another image",
            )
        } else if !kernelless.is_empty() {
            Check::fail(
                "images",
                format!("no kernel {}", kernelless.join("; ")),
                "install a kernel in the image (e.g. linux-image-amd64) and import it again, \
                 or set the nodes' kernel.version to one `wulf image kernels` lists",
            )
        } else if !unbuilt.is_empty() {
            Check::warn(
                "images",
                format!("not built: {}", unbuilt.join(", ")),
                format!(
                    "`wulf image build {}`; else the first node to boot waits for the build",
                    unbuilt[0]
                ),
            )
        } else {
            Check::ok(
                "images",
                format!("{} image(s) used, built, each with a kernel", users.len()),
            )
        }
    }

    fn check_overlays(&self, nodes: &[Node]) -> Check {
        let generators = self.generator_plugins().unwrap_or_default();
        let mut unknown: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
        for node in nodes {
            for name in Kind::ALL.iter().flat_map(|k| k.list(node)) {
                if !self.overlay_exists(name, &generators) {
                    unknown.entry(name).or_default().push(node);
                }
            }
        }
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|(name, users)| format!("`{name}` (used by {})", ids(users)))
                .collect();
            return Check::fail(
                "overlays",
                format!("no such overlay: {}", list.join("; ")),
                "`wulf overlay create NAME`, install the generator plugin, or remove it from \
                 the nodes and profiles (`wulf node set NODE --system-overlays …`)",
            );
        }
        let index = match self.archives.index() {
            Ok(index) => index,
            Err(error) => {
                return Check::fail(
                    "overlays",
                    crate::error_chain(&error),
                    "`wulf overlay build` writes it again",
                );
            }
        };
        let unbuilt: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                Kind::ALL.iter().any(|k| {
                    !k.list(n).is_empty()
                        && index.nodes.get(&n.id).is_none_or(|a| !a.contains_key(k))
                })
            })
            .collect();
        if unbuilt.is_empty() {
            let with = nodes
                .iter()
                .filter(|n| Kind::ALL.iter().any(|k| !k.list(n).is_empty()))
                .count();
            Check::ok(
                "overlays",
                format!("built for the {with} node(s) with overlays"),
            )
        } else {
            Check::warn(
                "overlays",
                format!("not built for {}", ids(&unbuilt)),
                "`wulf overlay build`; else each node's first boot waits for its build",
            )
        }
    }

    fn check_plugins(&self) -> Check {
        let loaded = match self.load_used_plugins() {
            Ok(loaded) => loaded,
            Err(error) => {
                return Check::fail(
                    "plugins",
                    crate::error_chain(&error),
                    "check the plugin directory (`wulf plugin list`)",
                );
            }
        };
        let failed: Vec<String> = loaded
            .iter()
            .filter_map(|(name, result)| {
                result
                    .as_ref()
                    .err()
                    .map(|e| format!("{name}: {}", crate::error_chain(e)))
            })
            .collect();
        let backends = &self.config().plugins.backends;
        let absent: Vec<&String> = backends
            .iter()
            .filter(|b| !loaded.iter().any(|(name, _)| name == *b))
            .collect();
        if !failed.is_empty() {
            Check::fail(
                "plugins",
                failed.join("; "),
                "grant what it asks in the site configuration (`[plugin.NAME]`), or \
                 `wulf plugin disable NAME`",
            )
        } else if !absent.is_empty() {
            Check::fail(
                "plugins",
                format!(
                    "`plugins.backends` names {}, not installed or disabled",
                    absent
                        .iter()
                        .map(|b| format!("`{b}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "`wulf plugin install DIR` (or `wulf plugin enable NAME`), or drop it from \
                 `plugins.backends`",
            )
        } else {
            Check::ok("plugins", format!("{} plugin(s) load", loaded.len()))
        }
    }

    fn check_clock(&self) -> Check {
        let now = SystemTime::now();
        let ahead = std::fs::read_dir(self.state.root())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                let by = modified.duration_since(now).ok()?;
                (by > Duration::from_secs(60)).then(|| (e.path(), by))
            })
            .max_by_key(|(_, by)| *by);
        if let Some((path, by)) = ahead {
            return Check::fail(
                "clock",
                format!(
                    "the clock is behind the state directory: {} was written {}s from now",
                    path.display(),
                    by.as_secs()
                ),
                "set the time (`timedatectl set-ntp true`, or chrony); builds compare times",
            );
        }
        match probe::clock_synchronized() {
            Some(true) => Check::ok("clock", "synchronised"),
            Some(false) => Check::warn(
                "clock",
                "not synchronised to a time source",
                "`timedatectl set-ntp true` (systemd-timesyncd), or install chrony",
            ),
            None => Check::warn(
                "clock",
                "cannot tell whether the clock is synchronised (systemd is not running here)",
                "make sure a time source (chrony, ntpsec, systemd-timesyncd) keeps it",
            ),
        }
    }
}

fn check_port(check: &'static str, proto: Proto, addr: SocketAddr, fix: &str) -> Check {
    let port = addr.port();
    let what = format!("{addr}/{}", proto.as_str());
    let bound = probe::bound(proto, port, addr.ip());
    if let Some(socket) = bound.first() {
        let holders = probe::holders(socket.inode);
        if let Some(us) = holders.iter().find(|h| h.name == "wulf") {
            return Check::ok(check, format!("{what}: wulf serves it (pid {})", us.pid));
        }
        let by = if holders.is_empty() {
            "another process (run as root to see which)".to_owned()
        } else {
            holders
                .iter()
                .map(|h| format!("{} (pid {})", h.name, h.pid))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Check::fail(
            check,
            format!("{what} is taken by {by} on {}", socket.addr),
            fix,
        );
    }
    if !probe::may_bind(port) {
        return Check::fail(
            check,
            format!("{what} is free, but this user may not bind port {port}"),
            "run `wulf serve` as root or as the packaged wulf.service (it has \
             CAP_NET_BIND_SERVICE), or choose a port from 1024 up",
        );
    }
    Check::ok(check, format!("{what} is free"))
}

/// The iPXE binaries per firmware, as `wulf configure dhcp` hands them out.
fn check_tftp_root(root: &Path) -> Check {
    if !root.is_dir() {
        return Check::fail(
            "tftp-root",
            format!("{} does not exist", root.display()),
            "`apt-get install ipxe`, or set `server.tftp-root` to a directory of iPXE binaries",
        );
    }
    let mut present = Vec::new();
    let mut absent = Vec::new();
    let mut needed_absent = Vec::new();
    for &(firmware, file, needed) in crate::IPXE_FIRMWARES {
        if root.join(file).is_file() {
            present.push(format!("{firmware} {file}"));
        } else {
            absent.push(format!("{firmware} ({file})"));
            if needed {
                needed_absent.push(file);
            }
        }
    }
    let mut message = format!("{}: {}", root.display(), present.join(", "));
    if present.is_empty() {
        message = format!("{} has no iPXE binaries", root.display());
    }
    if !absent.is_empty() {
        message.push_str(&format!("; none for {}", absent.join(", ")));
    }
    let fix = "`apt-get install ipxe`, or copy iPXE builds into it";
    match needed_absent.len() {
        0 => Check::ok("tftp-root", message),
        2 => Check::fail("tftp-root", message, fix),
        _ => Check::warn("tftp-root", message, fix),
    }
}

fn check_nodes(nodes: &[Node]) -> Check {
    if nodes.is_empty() {
        return Check::warn(
            "nodes",
            "no nodes",
            "`wulf node add n001 --hwaddr MAC --ipaddr IP`, `wulf node import FILE` or \
             `wulf import warewulf`",
        );
    }
    let no_mac: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.network_devices.values().all(|d| d.hwaddr.is_none()))
        .collect();
    let no_image: Vec<&Node> = nodes.iter().filter(|n| n.image.is_none()).collect();
    let mut problems = Vec::new();
    if !no_mac.is_empty() {
        problems.push(format!("no hardware address: {}", ids(&no_mac)));
    }
    if !no_image.is_empty() {
        problems.push(format!("no image: {}", ids(&no_image)));
    }
    if problems.is_empty() {
        return Check::ok(
            "nodes",
            format!(
                "{} node(s), each with a hardware address and an image",
                nodes.len()
            ),
        );
    }
    let example = no_mac
        .first()
        .or(no_image.first())
        .map_or("NODE", |n| &n.id);
    Check::warn(
        "nodes",
        format!("{} node(s); {}", nodes.len(), problems.join("; ")),
        format!(
            "`wulf node set {example} --hwaddr MAC` (or let it be discovered), \
             `wulf node set {example} --image NAME` (or on a profile)"
        ),
    )
}

/// The first node ids of a list, and how many more.
fn ids(nodes: &[&Node]) -> String {
    let mut text = nodes
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| n.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > NAMES_SHOWN {
        text.push_str(&format!(" and {} more", nodes.len() - NAMES_SHOWN));
    }
    text
}

/// The host and port of the first `http://HOST:PORT/ipxe/` in a DHCP configuration.
fn ipxe_url(text: &str) -> Option<(String, u16)> {
    text.match_indices("http://").find_map(|(at, _)| {
        let rest = &text[at + "http://".len()..];
        let (authority, path) = rest.split_once('/')?;
        if !path.starts_with("ipxe/") {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse().ok()?)
            }
            _ => (authority, 80),
        };
        Some((host.trim_matches(['[', ']']).to_owned(), port))
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ipxe_url_of_dnsmasq_and_isc_configurations() {
        let dnsmasq =
            "dhcp-boot=tag:ipxe,http://10.0.0.1:9873/ipxe/${mac:hexhyp}?assetkey=${asset}\n";
        assert_eq!(ipxe_url(dnsmasq), Some(("10.0.0.1".into(), 9873)));
        let isc = "  filename \"http://head.cluster/ipxe/${mac:hexhyp}\";\n";
        assert_eq!(ipxe_url(isc), Some(("head.cluster".into(), 80)));
        let v6 = "http://[fd00::1]:8080/ipxe/x";
        assert_eq!(ipxe_url(v6), Some(("fd00::1".into(), 8080)));
        assert_eq!(ipxe_url("http://10.0.0.1:9873/status"), None);
    }

    #[test]
    fn tftp_root_needs_both_x86_firmwares() {
        let dir = tempfile::tempdir().unwrap();
        let fail = check_tftp_root(dir.path());
        assert_eq!(fail.health, Health::Fail, "{fail:?}");
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap();
        let warn = check_tftp_root(dir.path());
        assert_eq!(warn.health, Health::Warn, "{warn:?}");
        assert!(
            warn.message.contains("x86-64 UEFI (snponly.efi)"),
            "{warn:?}"
        );
        std::fs::write(dir.path().join("snponly.efi"), b"x").unwrap();
        let ok = check_tftp_root(dir.path());
        assert_eq!(ok.health, Health::Ok, "{ok:?}");
        assert!(ok.message.contains("none for arm64 UEFI"), "{ok:?}");
        let missing = check_tftp_root(&dir.path().join("absent"));
        assert!(missing.fix.unwrap().contains("apt-get install ipxe"));
    }

    #[test]
    fn a_port_taken_by_another_process_fails_and_names_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let check = check_port("http", Proto::Tcp, addr, "stop it");
        assert_eq!(check.health, Health::Fail, "{check:?}");
        assert!(
            check
                .message
                .contains(&format!("(pid {})", std::process::id())),
            "{check:?}"
        );
        drop(listener);
        let free = check_port("http", Proto::Tcp, addr, "stop it");
        assert_eq!(free.health, Health::Ok, "{free:?}");
    }
}
