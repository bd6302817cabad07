//! The built-in DHCP service: a ProxyDHCP that answers PXE clients with boot options only,
//! beside the site's DHCP server, or a full DHCP server that leases addresses too (each node's
//! from the inventory, a range for discovery). Packets are decoded and encoded by `dhcproto`;
//! which client gets what is decided here, in [`Responder::answer`], which knows nothing of
//! sockets.
//!
//! Only known nodes (and unknown ones a discoverable node or a backend takes, by the
//! application layer's discovery) are answered; everyone else is ignored, counted and traced.
//! It listens on the configured interfaces only (`SO_BINDTODEVICE`), never on others.

mod leases;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::net::UdpSocket;
use wulf_core::boot_status::Delivery;
use wulf_core::{HwAddr, Node};

use crate::http::AppState;

pub use leases::Leases;

/// How the service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Proxy,
    Full,
}

/// What `wulf serve` runs the service with.
#[derive(Debug, Clone)]
pub struct DhcpSettings {
    pub mode: Mode,
    pub interfaces: Vec<String>,
    /// The address clients are sent to; `None`: each interface's own.
    pub server_ip: Option<Ipv4Addr>,
    /// Full mode: addresses for clients the inventory has none for.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    pub lease: Duration,
    /// Full mode: where leases are kept across restarts.
    pub leases_file: PathBuf,
}

/// The DHCP server port, and the PXE boot server port UEFI clients ask again on.
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
const PXE_PORT: u16 = 4011;
/// Relay chains longer than this are a loop or an attack (RFC 1542 suggests 16).
const MAX_HOPS: u8 = 16;

/// One interface as the service sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// The interface's own address: the server identifier clients answer to.
    pub server: Ipv4Addr,
    /// The address clients are sent to for TFTP and HTTP (`server-ip`, else `server`).
    pub next_server: Ipv4Addr,
    /// The interface's own network, for dynamic leases.
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl Interface {
    /// The network's own and broadcast addresses, never leased.
    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask))
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask) == u32::from(self.network)
    }
}

/// Why a packet got no answer, as traces and `/metrics` count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ignored {
    Malformed,
    NotARequest,
    NotEthernet,
    TooManyHops,
    Relayed,
    UnknownClient,
    NotPxe,
    UnsupportedArchitecture,
    NotForUs,
    NoAddress,
    Unhandled,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Malformed => "malformed",
            Ignored::NotARequest => "not a request",
            Ignored::NotEthernet => "not ethernet",
            Ignored::TooManyHops => "too many hops",
            Ignored::Relayed => "relayed (relays are not supported)",
            Ignored::UnknownClient => "unknown client",
            Ignored::NotPxe => "not a PXE client",
            Ignored::UnsupportedArchitecture => "unsupported client architecture",
            Ignored::NotForUs => "for another server",
            Ignored::NoAddress => "no address to give",
            Ignored::Unhandled => "message type not handled",
        }
    }
}

/// An answer and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: Message,
    pub to: SocketAddrV4,
    /// For traces: `proxy offer: snponly.efi`, `ack 10.0.0.5`.
    pub what: String,
    pub node: String,
    /// A PXE or iPXE client: a step of a boot, for the node's trace (an operating system
    /// renewing its lease is not).
    pub boot: bool,
}

/// What a client asked, decoded once.
struct Request<'a> {
    message: &'a Message,
    kind: MessageType,
    hwaddr: HwAddr,
    /// Option 60 starts with `PXEClient`.
    pxe: bool,
    /// Option 77 is `iPXE`: a chainloaded iPXE, to be sent to its script.
    ipxe: bool,
    architecture: u16,
}

/// Decides answers. Pure but for the node lookup and the leases it is given.
pub struct Responder<'a> {
    pub mode: Mode,
    pub interface: Interface,
    pub http_port: u16,
    /// The known node with this hardware address; with `true`, one discovery may give it
    /// (which writes the inventory: only for a network boot's first packet).
    pub node: &'a dyn Fn(&HwAddr, bool) -> Option<Arc<Node>>,
    /// Addresses the inventory gives nodes: never leased from the range.
    pub reserved: &'a dyn Fn(Ipv4Addr) -> bool,
    pub leases: Option<&'a Leases>,
    pub lease: Duration,
}

impl Responder<'_> {
    /// The answer to one datagram that arrived on `port` from `from`.
    pub fn answer(&self, datagram: &[u8], port: u16, from: SocketAddr) -> Result<Reply, Ignored> {
        let message = decode(datagram).ok_or(Ignored::Malformed)?;
        let request = parse(&message)?;
        let may_discover = request.kind == MessageType::Discover
            && port == SERVER_PORT
            && (request.pxe || request.ipxe);
        let node = (self.node)(&request.hwaddr, false)
            .or_else(|| {
                may_discover
                    .then(|| (self.node)(&request.hwaddr, true))
                    .flatten()
            })
            .ok_or(Ignored::UnknownClient)?;
        match (self.mode, request.kind, port) {
            (Mode::Proxy, MessageType::Discover, SERVER_PORT) => {
                self.boot_reply(&request, &node, MessageType::Offer, None, broadcast())
            }
            // A UEFI client asks the boot server again, on 4011, once it has its address.
            (Mode::Proxy, MessageType::Request, PXE_PORT) => {
                let to = match from {
                    SocketAddr::V4(v4) => v4,
                    SocketAddr::V6(_) => return Err(Ignored::Malformed),
                };
                self.boot_reply(&request, &node, MessageType::Ack, None, to)
            }
            (Mode::Proxy, _, _) => Err(Ignored::Unhandled),
            (Mode::Full, MessageType::Discover, SERVER_PORT) => {
                let address = self.address_for(&request, &node, true)?;
                self.boot_reply(
                    &request,
                    &node,
                    MessageType::Offer,
                    Some(address),
                    broadcast(),
                )
            }
            (Mode::Full, MessageType::Request, SERVER_PORT) => {
                if let Some(DhcpOption::ServerIdentifier(server)) =
                    message.opts().get(OptionCode::ServerIdentifier)
                    && *server != self.interface.server
                {
                    return Err(Ignored::NotForUs);
                }
                let address = self.address_for(&request, &node, false)?;
                let wanted = match message.opts().get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                    _ => message.ciaddr(),
                };
                if wanted != address.ip {
                    return Ok(self.nak(&request, &node));
                }
                if address.leased
                    && let Some(leases) = self.leases
                {
                    leases.confirm(&request.hwaddr, address.ip, self.lease);
                }
                self.boot_reply(
                    &request,
                    &node,
                    MessageType::Ack,
                    Some(address),
                    broadcast(),
                )
            }
            (Mode::Full, MessageType::Release, SERVER_PORT) => {
                if let Some(leases) = self.leases {
                    leases.release(&request.hwaddr, message.ciaddr());
                }
                Err(Ignored::Unhandled)
            }
            _ => Err(Ignored::Unhandled),
        }
    }

    /// The address `node` gets: its inventory address on the interface with this MAC, else
    /// a lease from the range (held for the offer, confirmed by the request).
    fn address_for(
        &self,
        request: &Request<'_>,
        node: &Node,
        offer: bool,
    ) -> Result<Assigned, Ignored> {
        if let Some(device) = node
            .network_devices
            .values()
            .find(|d| d.hwaddr == Some(request.hwaddr))
            && let Some(ip) = device.ipaddr
        {
            return Ok(Assigned {
                ip,
                netmask: device
                    .netmask
                    .map(|m| m.addr())
                    .unwrap_or(self.interface.netmask),
                gateway: device.gateway,
                leased: false,
            });
        }
        let leases = self.leases.ok_or(Ignored::NoAddress)?;
        let reserved = |ip: Ipv4Addr| {
            !self.interface.contains(ip)
                || ip == self.interface.server
                || ip == self.interface.network
                || ip == self.interface.broadcast()
                || (self.reserved)(ip)
        };
        let ip = if offer {
            leases.offer(&request.hwaddr, self.lease, &reserved)
        } else {
            leases.current(&request.hwaddr)
        }
        .ok_or(Ignored::NoAddress)?;
        Ok(Assigned {
            ip,
            netmask: self.interface.netmask,
            gateway: None,
            leased: true,
        })
    }

    /// An offer or an acknowledgement: the boot file for the client, and in full mode its
    /// address.
    fn boot_reply(
        &self,
        request: &Request<'_>,
        node: &Node,
        kind: MessageType,
        address: Option<Assigned>,
        to: SocketAddrV4,
    ) -> Result<Reply, Ignored> {
        let server = self.interface.next_server;
        let boot_file = if request.ipxe {
            // Hyphens: iPXE escapes the colons of a MAC in a URL path.
            Some(format!(
                "http://{server}:{}/ipxe/{}",
                self.http_port,
                request.hwaddr.to_string().replace(':', "-")
            ))
        } else if request.pxe {
            Some(
                wulf_core::provision::ipxe_binary(request.architecture)
                    .ok_or(Ignored::UnsupportedArchitecture)?
                    .to_owned(),
            )
        } else {
            None
        };
        if self.mode == Mode::Proxy && boot_file.is_none() {
            return Err(Ignored::NotPxe);
        }
        let asked = request.message;
        let mut reply = reply_to(asked);
        reply
            .set_flags(asked.flags())
            .set_ciaddr(if to.port() == CLIENT_PORT {
                Ipv4Addr::UNSPECIFIED
            } else {
                asked.ciaddr()
            });
        let mut options = dhcproto::v4::DhcpOptions::default();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(self.interface.server));
        if let Some(address) = address {
            reply.set_yiaddr(address.ip);
            options.insert(DhcpOption::SubnetMask(address.netmask));
            if let Some(gateway) = address.gateway {
                options.insert(DhcpOption::Router(vec![gateway]));
            }
            let seconds = u32::try_from(self.lease.as_secs()).unwrap_or(u32::MAX);
            options.insert(DhcpOption::AddressLeaseTime(seconds));
        }
        if let Some(file) = &boot_file {
            reply.set_siaddr(server).set_fname_str(file);
            options.insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
            options.insert(DhcpOption::BootfileName(file.clone().into_bytes()));
        }
        if request.pxe {
            options.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            // PXE discovery control, bit 3: boot the file named here; no boot server
            // discovery, no menu.
            options.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            if let Some(DhcpOption::ClientMachineIdentifier(guid)) =
                asked.opts().get(OptionCode::ClientMachineIdentifier)
            {
                options.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
            }
        }
        reply.set_opts(options);
        let mut what = match (kind, address) {
            (MessageType::Offer, Some(a)) => format!("offer {}", a.ip),
            (MessageType::Ack, Some(a)) => format!("ack {}", a.ip),
            (MessageType::Offer, None) => "proxy offer".to_owned(),
            _ => "proxy ack".to_owned(),
        };
        if let Some(file) = &boot_file {
            what.push_str(&format!(": {file}"));
        }
        Ok(Reply {
            message: reply,
            to,
            what,
            node: node.id.clone(),
            boot: request.pxe || request.ipxe,
        })
    }

    fn nak(&self, request: &Request<'_>, node: &Node) -> Reply {
        let mut reply = reply_to(request.message);
        reply.set_flags(Flags::default().set_broadcast());
        let mut options = dhcproto::v4::DhcpOptions::default();
        options.insert(DhcpOption::MessageType(MessageType::Nak));
        options.insert(DhcpOption::ServerIdentifier(self.interface.server));
        reply.set_opts(options);
        Reply {
            message: reply,
            to: broadcast(),
            what: "nak: not its address".to_owned(),
            node: node.id.clone(),
            boot: request.pxe || request.ipxe,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Assigned {
    ip: Ipv4Addr,
    netmask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    /// From the range (kept in the lease file), not the inventory.
    leased: bool,
}

/// The fixed header, then the magic cookie, then options (RFC 2131).
const HEADER: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A datagram as a message, or `None`. `dhcproto` checks neither the magic cookie nor the
/// hardware address length, and asserts (panics, in debug builds) on some option lengths:
/// those are checked here first, and a panic still left in the decoder drops the packet.
pub fn decode(datagram: &[u8]) -> Option<Message> {
    if datagram.len() < HEADER + MAGIC.len()
        || datagram[HEADER..HEADER + 4] != MAGIC
        || datagram[2] > 16
    {
        return None;
    }
    let mut at = HEADER + MAGIC.len();
    while let Some(&code) = datagram.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let len = usize::from(*datagram.get(at + 1)?);
                // Client network interface (94) is 3 bytes; client FQDN (81) at least 3.
                if (code == 94 && len != 3) || (code == 81 && len < 3) {
                    return None;
                }
                at += 2 + len;
            }
        }
    }
    std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(datagram)).ok())
        .ok()
        .flatten()
}

/// A reply's header: the request's transaction and client, as both clients match them.
fn reply_to(asked: &Message) -> Message {
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(asked.htype())
        .set_xid(asked.xid())
        .set_chaddr(asked.chaddr())
        .set_giaddr(asked.giaddr());
    reply
}

fn broadcast() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
}

fn parse(message: &Message) -> Result<Request<'_>, Ignored> {
    if message.opcode() != Opcode::BootRequest {
        return Err(Ignored::NotARequest);
    }
    if message.hops() > MAX_HOPS {
        return Err(Ignored::TooManyHops);
    }
    if !message.giaddr().is_unspecified() {
        return Err(Ignored::Relayed);
    }
    let chaddr = message.chaddr();
    if message.hlen() != 6 || chaddr.len() < 6 {
        return Err(Ignored::NotEthernet);
    }
    let hwaddr = client_hwaddr(chaddr).ok_or(Ignored::NotEthernet)?;
    let kind = message.opts().msg_type().ok_or(Ignored::Malformed)?;
    let pxe = matches!(
        message.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"PXEClient")
    );
    let ipxe = matches!(
        message.opts().get(OptionCode::UserClass),
        Some(DhcpOption::UserClass(class)) if user_class_is_ipxe(class)
    );
    let architecture = match message.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(arch)) => u16::from(*arch),
        _ => 0,
    };
    Ok(Request {
        message,
        kind,
        hwaddr,
        pxe,
        ipxe,
        architecture,
    })
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients prefix each class with its
/// length.
fn user_class_is_ipxe(class: &[u8]) -> bool {
    class == b"iPXE" || class.get(1..) == Some(b"iPXE".as_slice())
}

/// Encodes a reply.
pub fn encode(message: &Message) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(548);
    message.encode(&mut Encoder::new(&mut bytes)).ok()?;
    Some(bytes)
}

/// What was answered and ignored, for `/metrics`.
#[derive(Debug, Default)]
pub struct DhcpCounters {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl DhcpCounters {
    fn count(&self, outcome: &'static str, detail: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((outcome, detail))
            .or_default() += 1;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP wulf_dhcp_packets_total DHCP packets answered (by reply) and ignored (by reason).\n# TYPE wulf_dhcp_packets_total counter\n",
        );
        for ((outcome, detail), n) in counts.iter() {
            let label = if *outcome == "answered" {
                "reply"
            } else {
                "reason"
            };
            out.push_str(&format!(
                "wulf_dhcp_packets_total{{outcome=\"{outcome}\",{label}=\"{detail}\"}} {n}\n"
            ));
        }
        out
    }
}

/// The interface's first IPv4 address and network.
fn interface_address(name: &str) -> std::io::Result<Interface> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    for ifaddr in addrs {
        if ifaddr.interface_name != name {
            continue;
        }
        let (Some(address), Some(netmask)) = (ifaddr.address, ifaddr.netmask) else {
            continue;
        };
        let (Some(address), Some(netmask)) = (address.as_sockaddr_in(), netmask.as_sockaddr_in())
        else {
            continue;
        };
        let (ip, mask) = (address.ip(), netmask.ip());
        return Ok(Interface {
            server: ip,
            next_server: ip,
            network: Ipv4Addr::from(u32::from(ip) & u32::from(mask)),
            netmask: mask,
        });
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("interface {name} has no IPv4 address (or does not exist)"),
    ))
}

/// A UDP socket on `port` that sees only `interface`'s traffic and may broadcast.
fn bind(interface: &str, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves DHCP on every configured interface until a socket fails.
pub(crate) async fn serve(
    app: Arc<AppState>,
    settings: DhcpSettings,
    http_port: u16,
) -> std::io::Result<()> {
    let leases = match settings.mode {
        Mode::Full => Some(Arc::new(Leases::open(
            settings.leases_file.clone(),
            settings.range,
        )?)),
        Mode::Proxy => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for name in &settings.interfaces {
        let mut interface = interface_address(name)?;
        if let Some(server) = settings.server_ip {
            interface.next_server = server;
        }
        if let Some((first, last)) = settings.range
            && (!interface.contains(first) || !interface.contains(last))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "[dhcp] range {first}-{last} is not in {name}'s network {}/{}",
                    interface.network,
                    wulf_core::address::Netmask::from_addr(interface.netmask)
                        .map_or(0, |m| m.prefix())
                ),
            ));
        }
        let mut ports = vec![SERVER_PORT];
        if settings.mode == Mode::Proxy {
            ports.push(PXE_PORT);
        }
        for port in ports {
            let socket = bind(name, port).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("DHCP on {name} port {port}: {e} (another DHCP server on this host?)"),
                )
            })?;
            tracing::info!(interface = %name, port, server = %interface.server, mode = ?settings.mode, "answering DHCP");
            let service = Service {
                app: Arc::clone(&app),
                mode: settings.mode,
                interface,
                http_port,
                leases: leases.clone(),
                lease: settings.lease,
                port,
            };
            tasks.spawn(listen(socket, service));
        }
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(std::io::Error::other(error)),
        None => std::future::pending().await,
    }
}

/// What one socket's loop answers with.
#[derive(Clone)]
struct Service {
    app: Arc<AppState>,
    mode: Mode,
    interface: Interface,
    http_port: u16,
    leases: Option<Arc<Leases>>,
    lease: Duration,
    /// The port the socket listens on.
    port: u16,
}

async fn listen(socket: UdpSocket, service: Service) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let datagram = buf[..n].to_vec();
        let Service {
            app,
            mode,
            interface,
            http_port,
            leases,
            lease,
            port,
        } = service.clone();
        // Discovery and backends block: off the async workers.
        let answered = tokio::task::spawn_blocking(move || {
            let snapshot = app.index.snapshot();
            let lookup = |hwaddr: &HwAddr, discover: bool| -> Option<Arc<Node>> {
                if let Some(node) = snapshot.lookup(hwaddr) {
                    return Some(Arc::clone(node));
                }
                if !discover || (!snapshot.discoverable && !app.provisioner.has_backends()) {
                    return None;
                }
                app.index
                    .find_unknown(hwaddr)
                    .ok()
                    .flatten()
                    .map(|(node, _)| node)
            };
            // Every address the inventory gives a node or its BMC: never leased to another.
            let taken: std::collections::HashSet<Ipv4Addr> = match mode {
                Mode::Full => snapshot
                    .nodes
                    .values()
                    .flat_map(|n| {
                        n.network_devices
                            .values()
                            .filter_map(|d| d.ipaddr)
                            .chain(n.ipmi.ipaddr)
                    })
                    .collect(),
                Mode::Proxy => Default::default(),
            };
            let reserved = |ip: Ipv4Addr| taken.contains(&ip);
            let responder = Responder {
                mode,
                interface,
                http_port,
                node: &lookup,
                reserved: &reserved,
                leases: leases.as_deref(),
                lease,
            };
            let answer = responder.answer(&datagram, port, from);
            record(&app, &datagram, &answer);
            answer
        })
        .await
        .map_err(std::io::Error::other)?;
        let Ok(reply) = answered else {
            continue;
        };
        let Some(bytes) = encode(&reply.message) else {
            continue;
        };
        if let Err(error) = socket.send_to(&bytes, reply.to).await {
            tracing::warn!(to = %reply.to, %error, "cannot send a DHCP reply");
        }
    }
}

/// Traces an answer or why there was none, counts it, and puts it in the node's boot trace.
fn record(app: &AppState, datagram: &[u8], answer: &Result<Reply, Ignored>) {
    // The client's address straight from the header (not a second decode).
    let hwaddr = datagram
        .get(28..34)
        .filter(|_| datagram.get(2) == Some(&6))
        .and_then(client_hwaddr);
    let mac = hwaddr.map(|h| h.to_string()).unwrap_or_default();
    match answer {
        Ok(reply) => {
            tracing::info!(node = %reply.node, %mac, to = %reply.to, "DHCP {}", reply.what);
            app.dhcp.count("answered", reply_kind(&reply.message));
            let client = [reply.message.yiaddr(), reply.message.ciaddr()]
                .into_iter()
                .find(|ip| !ip.is_unspecified())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            if reply.boot
                && let Some(hwaddr) = hwaddr
            {
                app.status.delivered(Delivery {
                    node: &reply.node,
                    mac: &hwaddr,
                    stage: "dhcp",
                    file: &reply.what,
                    bytes: 0,
                    peer: std::net::IpAddr::V4(client),
                    etag: "",
                });
            }
        }
        Err(reason) => {
            tracing::debug!(%mac, reason = reason.as_str(), "DHCP packet ignored");
            app.dhcp.count("ignored", reason.as_str());
            if *reason == Ignored::UnknownClient {
                app.status.unknown(&mac, "dhcp");
            }
        }
    }
}

/// The Ethernet address at the start of a `chaddr`.
fn client_hwaddr(chaddr: &[u8]) -> Option<HwAddr> {
    let bytes: [u8; 6] = chaddr.get(..6)?.try_into().ok()?;
    Some(HwAddr::from(bytes))
}

fn reply_kind(message: &Message) -> &'static str {
    match message.opts().msg_type() {
        Some(MessageType::Offer) => "offer",
        Some(MessageType::Ack) => "ack",
        Some(MessageType::Nak) => "nak",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
