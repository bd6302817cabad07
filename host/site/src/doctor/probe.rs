//! What `doctor` asks of the host itself, read-only: sockets bound to a port and the process
//! holding each, this host's IPv4 addresses, free disk space, the clock's synchronisation and
//! whether this process may bind a privileged port. Everything comes from /proc and statvfs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Transport of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A socket bound to a port: a TCP listener, or any UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bound {
    pub addr: IpAddr,
    pub inode: u64,
}

/// The process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`: the executable's name, at most 15 bytes.
    pub name: String,
}

/// Sockets of `proto` bound to `port` whose address overlaps `addr` (a wildcard on either side
/// overlaps everything), from `/proc/net/{tcp,tcp6,udp,udp6}`.
pub(crate) fn bound(proto: Proto, port: u16, addr: IpAddr) -> Vec<Bound> {
    let tables = match proto {
        Proto::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => ["/proc/net/udp", "/proc/net/udp6"],
    };
    tables
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_table(&text, proto))
        .filter(|(bound_port, socket)| *bound_port == port && overlaps(socket.addr, addr))
        .map(|(_, socket)| socket)
        .collect()
}

/// `(port, socket)` for every bound socket of one /proc/net table: TCP in state LISTEN (0A),
/// UDP in any state.
fn parse_table(text: &str, proto: Proto) -> Vec<(u16, Bound)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if proto == Proto::Tcp && *state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            Some((
                u16::from_str_radix(port, 16).ok()?,
                Bound {
                    addr: parse_ip(ip)?,
                    inode: inode.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// The kernel prints addresses as the hex of their 32-bit words in host byte order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// The processes holding the socket `inode`; empty when none is visible (another user's
/// processes need root to see).
pub(crate) fn holders(inode: u64) -> Vec<Holder> {
    let target = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_default();
            out.push(Holder { pid, name });
        }
    }
    out
}

/// The IPv4 addresses of this host's interfaces (the kernel's local routes).
pub(crate) fn local_ipv4() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/proc/net/fib_trie")
        .map(|text| parse_fib_trie(&text))
        .unwrap_or_default()
}

/// In `/proc/net/fib_trie` a local address is a leaf line (`|-- 10.0.0.1`) followed by
/// `/32 host LOCAL`.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf = None;
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-', '\t']);
        if let Ok(addr) = line.trim().parse::<Ipv4Addr>() {
            leaf = Some(addr);
        } else if line.trim() == "/32 host LOCAL"
            && let Some(addr) = leaf
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

/// Free bytes for an unprivileged writer and the file system's size, of the file system that
/// holds `path` or, when it does not exist yet, its nearest existing parent.
pub(crate) fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

/// Whether this process may bind `port`: root, `CAP_NET_BIND_SERVICE`, or a port at or above
/// the kernel's `ip_unprivileged_port_start`.
pub(crate) fn may_bind(port: u16) -> bool {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    port >= start || has_net_bind_capability()
}

fn has_net_bind_capability() -> bool {
    const CAP_NET_BIND_SERVICE: u32 = 10;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_BIND_SERVICE) != 0)
}

/// Whether the system clock is synchronised to a time source, as systemd sees it: `None` when
/// that cannot be told (no systemd running, as in a container or chroot).
pub(crate) fn clock_synchronized() -> Option<bool> {
    let output = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listeners_from_proc_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2691 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0016 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n";
        let found = parse_table(tcp, Proto::Tcp);
        assert_eq!(
            found,
            vec![(
                9873,
                Bound {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    inode: 4242
                }
            )],
            "only the LISTEN socket"
        );
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  10: 00000000000000000000000000000000:0045 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n\
  11: 0000000000000000FFFF00000100007F:1B39 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 98 2 0000000000000000 0\n";
        let found = parse_table(udp6, Proto::Udp);
        assert_eq!(found[0].0, 69);
        assert_eq!(found[0].1.addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(
            found[1],
            (
                6969,
                Bound {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    inode: 98
                }
            ),
            "v4-mapped addresses read as IPv4"
        );
    }

    #[test]
    fn finds_local_addresses_in_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.0\n           /24 link UNICAST\n        |-- 10.0.2.15\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n     |-- 10.0.2.15\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(trie),
            vec![Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::LOCALHOST]
        );
    }

    #[test]
    fn sees_its_own_listener_and_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = bound(Proto::Tcp, port, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // Another test may listen on the same port number over IPv6 at the same moment.
        assert!(
            found
                .iter()
                .any(|b| holders(b.inode).iter().any(|h| h.pid == std::process::id())),
            "{found:?}"
        );
        assert!(
            bound(Proto::Tcp, port, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).is_empty(),
            "another specific address does not overlap"
        );
    }
}
