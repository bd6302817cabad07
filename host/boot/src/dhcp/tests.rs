use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{
    Architecture, DhcpOption, DhcpOptions, Flags, Message, MessageType, OptionCode,
};
use dhcproto::{Decodable, Decoder};
use wulf_core::{HwAddr, Node};

use super::*;

const KNOWN: &str = "52:54:00:00:00:01";
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn node() -> Arc<Node> {
    let mut node: Node = toml::from_str(
        "[network-devices.default]\nhwaddr = \"52:54:00:00:00:01\"\nipaddr = \"10.0.0.15\"\nnetmask = \"255.255.255.0\"\ngateway = \"10.0.0.254\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    node.id = "n001".into();
    Arc::new(node)
}

fn interface() -> Interface {
    Interface {
        server: SERVER,
        next_server: SERVER,
        network: Ipv4Addr::new(10, 0, 0, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
    }
}

fn discover(mac: &str, kind: MessageType, options: Vec<DhcpOption>) -> Vec<u8> {
    let hwaddr: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or(0))
        .collect();
    let mut message = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &hwaddr,
    );
    message
        .set_xid(0x1234)
        .set_flags(Flags::default().set_broadcast());
    let mut opts = DhcpOptions::default();
    opts.insert(DhcpOption::MessageType(kind));
    for option in options {
        opts.insert(option);
    }
    message.set_opts(opts);
    encode(&message).unwrap_or_default()
}

fn pxe(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        DhcpOption::ClientMachineIdentifier(vec![
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ]),
    ]
}

fn answer(
    mode: Mode,
    leases: Option<&Leases>,
    datagram: &[u8],
    port: u16,
) -> Result<Reply, Ignored> {
    let lookup = |hwaddr: &HwAddr, _discover: bool| (hwaddr.to_string() == KNOWN).then(node);
    let reserved = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 15);
    Responder {
        mode,
        interface: interface(),
        http_port: 9873,
        node: &lookup,
        reserved: &reserved,
        leases,
        lease: Duration::from_secs(600),
    }
    .answer(datagram, port, SocketAddr::from(([10, 0, 0, 15], 68)))
}

fn option(message: &Message, code: OptionCode) -> Option<&DhcpOption> {
    message.opts().get(code)
}

#[test]
fn a_proxy_offer_names_the_ipxe_binary_for_the_firmware_and_no_address() {
    for (arch, file) in [
        (0, "undionly.kpxe"),
        (7, "snponly.efi"),
        (9, "snponly.efi"),
        (11, "arm64-efi/snponly.efi"),
    ] {
        let reply = answer(
            Mode::Proxy,
            None,
            &discover(KNOWN, MessageType::Discover, pxe(arch)),
            67,
        )
        .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        let m = &reply.message;
        assert_eq!(
            m.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "a proxy gives no address"
        );
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(m.xid(), 0x1234);
        assert_eq!(m.fname_str().and_then(Result::ok), Some(file), "{arch}");
        assert_eq!(
            option(m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Offer))
        );
        assert_eq!(
            option(m, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            option(m, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert!(
            matches!(option(m, OptionCode::ClientMachineIdentifier), Some(DhcpOption::ClientMachineIdentifier(g)) if g.len() == 17)
        );
        assert_eq!(
            reply.to,
            "255.255.255.255:68"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(reply.node, "n001");
    }
}

#[test]
fn ipxe_is_sent_to_its_script_and_other_clients_are_ignored_with_a_reason() {
    let mut options = pxe(0);
    options.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let reply = answer(
        Mode::Proxy,
        None,
        &discover(KNOWN, MessageType::Discover, options),
        67,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        reply.message.fname_str().and_then(Result::ok),
        Some("http://10.0.0.1:9873/ipxe/52-54-00-00-00-01")
    );
    let cases = [
        (
            discover("52:54:00:99:99:99", MessageType::Discover, pxe(0)),
            Ignored::UnknownClient,
        ),
        (
            discover(KNOWN, MessageType::Discover, vec![]),
            Ignored::NotPxe,
        ),
        (
            discover(KNOWN, MessageType::Discover, pxe(2)),
            Ignored::UnsupportedArchitecture,
        ),
        (
            discover(KNOWN, MessageType::Request, pxe(0)),
            Ignored::Unhandled,
        ),
        (b"\x01\x01\x06".to_vec(), Ignored::Malformed),
        (Vec::new(), Ignored::Malformed),
    ];
    for (datagram, reason) in cases {
        assert_eq!(answer(Mode::Proxy, None, &datagram, 67).err(), Some(reason));
    }
    // A reply is not a request; a packet that went around 17 relays is dropped.
    let mut reply = Message::decode(&mut Decoder::new(&discover(
        KNOWN,
        MessageType::Discover,
        pxe(0),
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    reply.set_opcode(dhcproto::v4::Opcode::BootReply);
    assert_eq!(
        answer(Mode::Proxy, None, &encode(&reply).unwrap_or_default(), 67).err(),
        Some(Ignored::NotARequest)
    );
    reply
        .set_opcode(dhcproto::v4::Opcode::BootRequest)
        .set_hops(17);
    assert_eq!(
        answer(Mode::Proxy, None, &encode(&reply).unwrap_or_default(), 67).err(),
        Some(Ignored::TooManyHops)
    );
}

#[test]
fn a_uefi_client_asking_the_boot_server_on_4011_gets_an_ack_back_to_its_port() {
    let reply = answer(
        Mode::Proxy,
        None,
        &discover(KNOWN, MessageType::Request, pxe(7)),
        4011,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        option(&reply.message, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Ack))
    );
    assert_eq!(
        reply.to,
        "10.0.0.15:68".parse().unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(
        reply.message.fname_str().and_then(Result::ok),
        Some("snponly.efi")
    );
}

#[test]
fn full_mode_gives_a_node_its_inventory_address_and_naks_any_other() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let leases =
        Leases::open(dir.path().join("leases.json"), None).unwrap_or_else(|e| panic!("{e}"));
    let offer = answer(
        Mode::Full,
        Some(&leases),
        &discover(KNOWN, MessageType::Discover, pxe(0)),
        67,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let m = &offer.message;
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 15));
    assert_eq!(
        option(m, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        option(m, OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)]))
    );
    assert_eq!(
        option(m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(m.fname_str().and_then(Result::ok), Some("undionly.kpxe"));
    let mut request = pxe(0);
    request.push(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 15)));
    request.push(DhcpOption::ServerIdentifier(SERVER));
    let ack = answer(
        Mode::Full,
        Some(&leases),
        &discover(KNOWN, MessageType::Request, request),
        67,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        option(&ack.message, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Ack))
    );
    // Not its address: NAK. Another server chosen: not ours to answer.
    let wrong = vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 99))];
    let nak = answer(
        Mode::Full,
        Some(&leases),
        &discover(KNOWN, MessageType::Request, wrong),
        67,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        option(&nak.message, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Nak))
    );
    let other = vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2))];
    assert_eq!(
        answer(
            Mode::Full,
            Some(&leases),
            &discover(KNOWN, MessageType::Request, other),
            67
        )
        .err(),
        Some(Ignored::NotForUs)
    );
}

#[test]
fn dynamic_leases_skip_inventory_addresses_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("dhcp/leases.json");
    let range = Some((Ipv4Addr::new(10, 0, 0, 14), Ipv4Addr::new(10, 0, 0, 17)));
    let reserved = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 15);
    let mac =
        |n: u8| HwAddr::parse(&format!("52:54:00:00:01:{n:02x}")).unwrap_or_else(|e| panic!("{e}"));
    let lease = Duration::from_secs(600);
    let leases = Leases::open(file.clone(), range).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        leases.offer(&mac(1), lease, &reserved),
        Some(Ipv4Addr::new(10, 0, 0, 14))
    );
    assert_eq!(
        leases.offer(&mac(2), lease, &reserved),
        Some(Ipv4Addr::new(10, 0, 0, 16))
    );
    leases.confirm(&mac(2), Ipv4Addr::new(10, 0, 0, 16), lease);
    drop(leases);
    // A restarted server keeps what it leased.
    let leases = Leases::open(file.clone(), range).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leases.current(&mac(2)), Some(Ipv4Addr::new(10, 0, 0, 16)));
    assert_eq!(
        leases.offer(&mac(2), lease, &reserved),
        Some(Ipv4Addr::new(10, 0, 0, 16))
    );
    assert_eq!(
        leases.offer(&mac(3), lease, &reserved),
        Some(Ipv4Addr::new(10, 0, 0, 17))
    );
    assert_eq!(
        leases.offer(&mac(4), lease, &reserved),
        None,
        "the range is used up"
    );
    leases.release(&mac(3), Ipv4Addr::new(10, 0, 0, 17));
    assert_eq!(
        leases.offer(&mac(4), lease, &reserved),
        Some(Ipv4Addr::new(10, 0, 0, 17))
    );
    // A lease that ran out is another client's to take; its old holder gets another address,
    // never the one now held.
    let leases2 = Leases::open(
        dir.path().join("other.json"),
        Some((Ipv4Addr::new(10, 0, 0, 20), Ipv4Addr::new(10, 0, 0, 21))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let nothing = |_: Ipv4Addr| false;
    assert_eq!(
        leases2.offer(&mac(1), Duration::ZERO, &nothing),
        Some(Ipv4Addr::new(10, 0, 0, 20))
    );
    assert_eq!(
        leases2.offer(&mac(2), lease, &nothing),
        Some(Ipv4Addr::new(10, 0, 0, 20))
    );
    assert_eq!(leases2.current(&mac(1)), None, "its old address is taken");
    assert_eq!(
        leases2.offer(&mac(1), lease, &nothing),
        Some(Ipv4Addr::new(10, 0, 0, 21))
    );
    std::fs::write(&file, "{not json").unwrap_or_else(|e| panic!("{e}"));
    let error = Leases::open(file, range)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("not a lease file"), "{error}");
}

/// Fuzz target: whatever arrives, the responder answers or ignores it, never panics. Runs in
/// every `cargo test` (`WULF_FUZZ_CASES` for more cases).
#[test]
fn fuzz_hostile_datagrams_never_panic() {
    use proptest::prelude::*;
    let cases = std::env::var("WULF_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let valid = discover(KNOWN, MessageType::Discover, pxe(7));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let leases = Leases::open(
        dir.path().join("l.json"),
        Some((Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 110))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..700),
        proptest::collection::vec((0..700usize, any::<u8>()), 0..40),
        0..700usize,
    );
    let result = runner.run(&strategy, |(random, flips, cut)| {
        // Random bytes, and a valid request with bytes changed and cut short (truncated or
        // overflowing options, wrong magic, huge hops, bad lengths).
        let mut mutated = valid.clone();
        for (at, byte) in flips {
            if let Some(b) = mutated.get_mut(at) {
                *b = byte;
            }
        }
        mutated.truncate(cut.max(1));
        for datagram in [random, mutated] {
            for mode in [Mode::Proxy, Mode::Full] {
                for port in [67, 4011] {
                    let _ = answer(mode, Some(&leases), &datagram, port);
                }
            }
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn only_a_network_boot_may_discover_a_node() {
    let asked = std::cell::RefCell::new(Vec::new());
    let lookup = |hwaddr: &HwAddr, discover: bool| {
        asked.borrow_mut().push((hwaddr.to_string(), discover));
        None
    };
    let nothing = |_: Ipv4Addr| false;
    let responder = Responder {
        mode: Mode::Proxy,
        interface: interface(),
        http_port: 9873,
        node: &lookup,
        reserved: &nothing,
        leases: None,
        lease: Duration::from_secs(600),
    };
    let from = SocketAddr::from(([10, 0, 0, 50], 68));
    let laptop = "52:54:00:aa:aa:aa";
    // A laptop's plain DISCOVER and a REQUEST are looked up, never discovered.
    for datagram in [
        discover(laptop, MessageType::Discover, vec![]),
        discover(laptop, MessageType::Request, pxe(7)),
    ] {
        assert_eq!(
            responder.answer(&datagram, 67, from).err(),
            Some(Ignored::UnknownClient)
        );
    }
    assert!(
        asked.borrow().iter().all(|(_, discover)| !discover),
        "{:?}",
        asked.borrow()
    );
    // A PXE firmware's DISCOVER may take a discoverable node.
    let _ = responder.answer(&discover(laptop, MessageType::Discover, pxe(7)), 67, from);
    assert_eq!(asked.borrow().last(), Some(&(laptop.to_owned(), true)));
}
