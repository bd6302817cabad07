//! The node's interface brought up with an address and a default route, over rtnetlink (what
//! `ip link set up`, `ip addr add` and `ip route add default` send), with no tool in the
//! initramfs.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, netlink::SocketAddrNetlink};

/// An IPv4 setting for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl Ipv4 {
    /// From an address and a dotted netmask (`255.255.255.0`) or a prefix length (`24`).
    pub fn parse(addr: &str, netmask: &str, gateway: Option<&str>) -> Result<Ipv4, String> {
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix = match netmask.parse::<u8>() {
            Ok(prefix) if prefix <= 32 => prefix,
            _ => {
                let mask: Ipv4Addr = netmask
                    .parse()
                    .map_err(|_| format!("{netmask:?} is not a netmask"))?;
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(format!("{netmask:?} is not a contiguous netmask"));
                }
                bits.leading_ones() as u8
            }
        };
        let gateway = gateway
            .filter(|g| !g.is_empty())
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| format!("{g:?} is not an IPv4 gateway"))
            })
            .transpose()?
            .filter(|g| !g.is_unspecified());
        Ok(Ipv4 {
            addr,
            prefix,
            gateway,
        })
    }
}

/// The interface with hardware address `mac` (lowercase, colons), waiting up to `wait` for
/// it to appear; `poll` runs between looks (it loads drivers).
pub fn find_interface(
    sysfs: &Path,
    mac: &str,
    wait: Duration,
    mut poll: impl FnMut(),
) -> Option<String> {
    let started = Instant::now();
    loop {
        poll();
        if let Ok(entries) = std::fs::read_dir(sysfs.join("class/net")) {
            for entry in entries.flatten() {
                let address = std::fs::read_to_string(entry.path().join("address"))
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                if address == mac {
                    return Some(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if started.elapsed() >= wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// One rtnetlink request, built field by field in the kernel's layout.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Message {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Message { bytes }
    }

    fn put(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len() as u16;
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(data);
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
        self
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
        &self.bytes
    }
}

/// Sends `message` and waits for the kernel's answer: `Ok` for an acknowledgement.
fn request(socket: &std::os::fd::OwnedFd, message: &mut Message, what: &str) -> io::Result<()> {
    rustix::net::sendto(
        socket,
        message.finish(),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;
    let mut buf = [0u8; 4096];
    let (n, _) = rustix::net::recv(socket, &mut buf[..], RecvFlags::empty())?;
    let answer = &buf[..n];
    if answer.len() < 20 {
        return Err(io::Error::other(format!("{what}: a short netlink answer")));
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::other(format!(
            "{what}: an unexpected netlink answer (type {kind})"
        )));
    }
    let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    if code == 0 {
        Ok(())
    } else {
        let errno = io::Error::from_raw_os_error(-code);
        Err(io::Error::new(errno.kind(), format!("{what}: {errno}")))
    }
}

/// Brings `interface` up with `ip`: the link, its address and, with a gateway, a default route.
pub fn configure(sysfs: &Path, interface: &str, ip: &Ipv4) -> io::Result<()> {
    let index: i32 =
        std::fs::read_to_string(sysfs.join("class/net").join(interface).join("ifindex"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{interface} has no interface index")))?;
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    rustix::net::bind(&socket, &SocketAddrNetlink::new(0, 0))?;

    // ifinfomsg: family, pad, type, index, flags, change.
    let mut link = Message::new(RTM_NEWLINK, 0, 1);
    link.put(&[0, 0, 0, 0])
        .put(&index.to_ne_bytes())
        .put(&IFF_UP.to_ne_bytes())
        .put(&IFF_UP.to_ne_bytes());
    request(&socket, &mut link, &format!("bringing {interface} up"))?;

    // ifaddrmsg: family, prefix length, flags, scope, index.
    let mut addr = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, 2);
    addr.put(&[AF_INET, ip.prefix, 0, RT_SCOPE_UNIVERSE])
        .put(&index.to_ne_bytes())
        .attr(IFA_LOCAL, &ip.addr.octets())
        .attr(IFA_ADDRESS, &ip.addr.octets());
    request(
        &socket,
        &mut addr,
        &format!("adding {}/{} to {interface}", ip.addr, ip.prefix),
    )?;

    if let Some(gateway) = ip.gateway {
        // rtmsg: family, dst len, src len, tos, table, protocol, scope, type, flags.
        let mut route = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, 3);
        route
            .put(&[
                AF_INET,
                0,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_BOOT,
                RT_SCOPE_UNIVERSE,
                RTN_UNICAST,
            ])
            .put(&0u32.to_ne_bytes())
            .attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        request(
            &socket,
            &mut route,
            &format!("adding a default route via {gateway}"),
        )?;
    }
    Ok(())
}

/// Brings the loopback interface up.
pub fn loopback_up(sysfs: &Path) -> io::Result<()> {
    configure(
        sysfs,
        "lo",
        &Ipv4 {
            addr: Ipv4Addr::LOCALHOST,
            prefix: 8,
            gateway: None,
        },
    )
}

/// Waits up to `wait` for `interface` to report a carrier.
pub fn wait_for_carrier(sysfs: &Path, interface: &str, wait: Duration) -> bool {
    let started = Instant::now();
    let carrier = sysfs.join("class/net").join(interface).join("carrier");
    loop {
        if std::fs::read_to_string(&carrier).is_ok_and(|c| c.trim() == "1") {
            return true;
        }
        if started.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_netmasks_and_prefixes() {
        let ip = Ipv4::parse("10.0.2.15", "255.255.255.0", Some("10.0.2.2"));
        assert_eq!(
            ip,
            Ok(Ipv4 {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            })
        );
        assert_eq!(
            Ipv4::parse("10.0.2.15", "16", Some("0.0.0.0")).map(|i| (i.prefix, i.gateway)),
            Ok((16, None))
        );
        assert!(Ipv4::parse("10.0.2.15", "255.0.255.0", None).is_err());
        assert!(Ipv4::parse("node1", "24", None).is_err());
    }
}
