//! A stack with several Ethernet devices: addresses, ARP and routes per device, the
//! source address and device a packet leaves by, rp_filter, per-device counters. Exact
//! frames, virtual time.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use stack_core::dev::DevError;
use stack_core::ipv4::fib_frontend::{RouteError, RouteSpec};
use stack_core::ipv4::route::{RouteProto, RouteType, Table};
use stack_core::ipv4::{Ipv4Conf, RpFilter};
use stack_core::neigh::NudState;
use stack_core::skb::Skb;
use stack_core::wire::arp::{ArpOp, ArpRepr};
use stack_core::wire::checksum;
use stack_core::wire::ethernet::{ethertype, EthernetFrame, EthernetRepr};
use stack_core::wire::icmpv4::Icmpv4Repr;
use stack_core::wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use stack_core::wire::MacAddr;
use stack_core::{DeviceId, IfAddr, Instant, NetDeviceConfig, SendError, Stack};

use common::{arp_from, datagram, eth_from, icmp, parse_arp, parse_eth_arp};

const T0: Instant = Instant::ZERO;
const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xa, 1]);
const B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xb, 1]);
/// Hosts on each side.
const HA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const HB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const HA_MAC: MacAddr = MacAddr([2, 0xaa, 0, 0, 0, 10]);
const HB_MAC: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 10]);

/// `lo`, `a0` (192.0.2.1/24) and `b0` (198.51.100.1/24), transmit rings emptied of the
/// gratuitous ARPs.
fn two_devices(conf: Ipv4Conf) -> (Stack, DeviceId, DeviceId) {
    let mut s = Stack::with_conf(conf, T0, 9);
    let a = s.add_device(NetDeviceConfig::new("a0", A_MAC));
    let b = s.add_device(NetDeviceConfig::new("b0", B_MAC));
    assert_eq!(
        (a, b),
        (DeviceId(2), DeviceId(3)),
        "ifindex in order after lo"
    );
    s.addr_add(a, IfAddr::new(A_ADDR, 24)).unwrap();
    s.addr_add(b, IfAddr::new(B_ADDR, 24)).unwrap();
    let garps: Vec<(DeviceId, ArpRepr)> = drain(&mut s)
        .into_iter()
        .map(|(d, f)| (d, parse_arp(&f)))
        .collect();
    assert_eq!(garps.len(), 2);
    assert_eq!((garps[0].0, garps[0].1.sender_ip), (a, A_ADDR));
    assert_eq!((garps[1].0, garps[1].1.sender_ip), (b, B_ADDR));
    (s, a, b)
}

fn drain(s: &mut Stack) -> Vec<(DeviceId, Skb)> {
    std::iter::from_fn(|| s.poll_transmit(T0)).collect()
}

fn arp_req(from_mac: MacAddr, from_ip: Ipv4Addr, target: Ipv4Addr) -> Skb {
    arp_from(
        ArpOp::Request,
        (from_mac, from_ip),
        MacAddr::BROADCAST,
        (MacAddr::ZERO, target),
    )
}

fn arp_reply(from_mac: MacAddr, from_ip: Ipv4Addr, to_mac: MacAddr, to_ip: Ipv4Addr) -> Skb {
    arp_from(ArpOp::Reply, (from_mac, from_ip), to_mac, (to_mac, to_ip))
}

fn echo(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Skb {
    let req = icmp(&Icmpv4Repr::EchoRequest {
        ident: 7,
        seq: 1,
        data: b"ping",
    });
    let ip = datagram(src, dst, protocol::ICMP, 64, true, 1, &req);
    eth_from(src_mac, dst_mac, ethertype::IPV4, &ip)
}

/// (Ethernet header, IP header) of an IPv4 frame, checking the header checksum.
fn parse_ip(skb: &Skb) -> (EthernetRepr, Ipv4Repr, Vec<u8>) {
    let f = EthernetFrame::new_checked(skb.data()).unwrap();
    let e = EthernetRepr::parse(&f).unwrap();
    assert_eq!(e.ethertype, ethertype::IPV4);
    let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
    assert!(ip.verify_checksum());
    let payload = ip.payload().to_vec();
    (e, Ipv4Repr::parse(&ip).unwrap(), payload)
}

#[test]
fn arp_is_answered_on_the_device_asked_with_its_own_mac() {
    let (mut s, a, b) = two_devices(Ipv4Conf::default());
    s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, B_ADDR));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    let (dev, frame) = &out[0];
    assert_eq!(*dev, b);
    let (e, reply) = parse_eth_arp(frame);
    assert_eq!((e.src, e.dst), (B_MAC, HB_MAC));
    assert_eq!(
        (reply.op, reply.sender_ip, reply.sender_mac, reply.target_ip),
        (ArpOp::Reply, B_ADDR, B_MAC, HB)
    );
    // The asker is learnt on b0 only.
    assert_eq!(
        s.neigh().lookup(b, HB),
        Some((NudState::Stale, Some(HB_MAC)))
    );
    assert_eq!(s.neigh().lookup(a, HB), None);
    // arp_ignore=0 (Linux's default): a0's address is answered on b0 too, with b0's MAC.
    s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, A_ADDR));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b);
    let (_, reply) = parse_eth_arp(&out[0].1);
    assert_eq!((reply.sender_ip, reply.sender_mac), (A_ADDR, B_MAC));
    // Counters are per device.
    assert_eq!(s.device(b).stats.rx_packets, 2);
    assert_eq!(s.device(a).stats.rx_packets, 0);
    assert_eq!(
        s.device(b).stats.tx_packets,
        3,
        "gratuitous ARP and two replies"
    );
    assert_eq!(s.device(a).stats.tx_packets, 1);
    assert_eq!(
        s.snmp().dev.rx_packets,
        2,
        "the Dev section sums the devices"
    );
}

#[test]
fn a_packet_leaves_by_its_routes_device_from_that_devices_address() {
    let (mut s, a, b) = two_devices(Ipv4Conf::default());
    let id = s.ping_open();
    s.ping_sendmsg(T0, id, HB, 1, b"x").unwrap();
    // Resolution first: a broadcast request on b0 from b0's address.
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b);
    let (e, req) = parse_eth_arp(&out[0].1);
    assert_eq!((e.src, e.dst), (B_MAC, MacAddr::BROADCAST));
    assert_eq!((req.sender_ip, req.target_ip), (B_ADDR, HB));
    s.netif_receive_skb(T0, b, arp_reply(HB_MAC, HB, B_MAC, B_ADDR));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b);
    let (e, ip, _) = parse_ip(&out[0].1);
    assert_eq!((e.src, e.dst), (B_MAC, HB_MAC));
    assert_eq!((ip.src, ip.dst, ip.protocol), (B_ADDR, HB, protocol::ICMP));
    // The other side's host gets a0's address as source, and its ARP goes out of a0.
    s.ping_sendmsg(T0, id, HA, 2, b"x").unwrap();
    let out = drain(&mut s);
    assert_eq!(out[0].0, a);
    assert_eq!(parse_arp(&out[0].1).sender_ip, A_ADDR);
    // A UDP socket bound to the wildcard gets the source of the route's device.
    let u = s.udp_socket();
    let local = s.udp_connect(u, SocketAddrV4::new(HA, 53)).unwrap();
    assert_eq!(*local.ip(), A_ADDR);
}

#[test]
fn echo_to_either_address_is_answered_where_it_came_in() {
    let (mut s, _a, b) = two_devices(Ipv4Conf::default());
    s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, B_ADDR));
    drain(&mut s);
    // To a0's address through b0 (the weak host model): answered from a0's address,
    // out of b0, the way back to the asker.
    s.netif_receive_skb(T0, b, echo(HB_MAC, B_MAC, HB, A_ADDR));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b);
    let (e, ip, icmp) = parse_ip(&out[0].1);
    assert_eq!((e.src, e.dst), (B_MAC, HB_MAC));
    assert_eq!((ip.src, ip.dst), (A_ADDR, HB));
    assert_eq!(icmp[0], 0, "echo reply");
    assert_eq!(checksum::checksum(&icmp), 0);
    // Our own address as a source from the wire is a martian.
    let before = s.snmp().ip_ext.in_martians;
    s.netif_receive_skb(T0, b, echo(HB_MAC, B_MAC, A_ADDR, B_ADDR));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.snmp().ip_ext.in_martians, before + 1);
}

#[test]
fn strict_rp_filter_drops_sources_routed_elsewhere_loose_only_unroutable() {
    // (mode, a spoofed source from a0's subnet arriving on b0 is answered, packets the
    // filter dropped). An unroutable source is never answered (no route back for the
    // reply); what tells the modes apart there is whether the filter counted it.
    for (mode, spoofed_answered, filtered) in [
        (RpFilter::Off, true, 0),
        (RpFilter::Loose, true, 1),
        (RpFilter::Strict, false, 2),
    ] {
        let conf = Ipv4Conf {
            rp_filter: mode,
            ..Ipv4Conf::default()
        };
        let (mut s, _a, b) = two_devices(conf);
        s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, B_ADDR));
        drain(&mut s);
        s.netif_receive_skb(T0, b, echo(HB_MAC, B_MAC, HA, B_ADDR));
        let answered = !drain(&mut s).is_empty();
        assert_eq!(answered, spoofed_answered, "{mode:?}: spoofed source");
        s.netif_receive_skb(
            T0,
            b,
            echo(HB_MAC, B_MAC, Ipv4Addr::new(203, 0, 113, 9), B_ADDR),
        );
        assert!(drain(&mut s).is_empty(), "{mode:?}: unroutable source");
        assert_eq!(
            s.snmp().tcp_ext.ip_reverse_path_filter,
            filtered,
            "{mode:?}: IPReversePathFilter"
        );
        // A legitimate source passes every mode.
        s.netif_receive_skb(T0, b, echo(HB_MAC, B_MAC, HB, B_ADDR));
        assert_eq!(drain(&mut s).len(), 1, "{mode:?}: legitimate source");
    }
}

#[test]
fn route_add_finds_the_gateways_device_and_refuses_what_ip_route_refuses() {
    let (mut s, a, b) = two_devices(Ipv4Conf::default());
    let net = Ipv4Addr::new(203, 0, 113, 0);
    let gw = Ipv4Addr::new(198, 51, 100, 254);
    let e = s.route_add(RouteSpec::via(net, 24, gw)).unwrap();
    assert_eq!((e.oif, e.gateway, e.proto), (b, Some(gw), RouteProto::Boot));
    assert_eq!(
        s.route_add(RouteSpec::via(net, 24, gw)),
        Err(RouteError::Exists)
    );
    assert_eq!(
        s.route_add(RouteSpec::via(net, 24, Ipv4Addr::new(203, 0, 113, 1))),
        Err(RouteError::GatewayUnreachable),
        "a gateway must be on a connected subnet"
    );
    assert_eq!(
        s.route_add(RouteSpec {
            dev: Some(a),
            ..RouteSpec::via(net, 24, gw)
        }),
        Err(RouteError::GatewayUnreachable),
        "... of the device named"
    );
    assert_eq!(
        s.route_add(RouteSpec::via(Ipv4Addr::new(203, 0, 113, 1), 24, gw)),
        Err(RouteError::HostBitsSet)
    );
    assert_eq!(
        s.route_add(RouteSpec::via(net, 24, B_ADDR)),
        Err(RouteError::GatewayUnreachable),
        "our own address is no gateway"
    );
    // A second route with a higher metric through a0 waits behind the first.
    let backup = RouteSpec {
        metric: 100,
        ..RouteSpec::via(net, 24, Ipv4Addr::new(192, 0, 2, 254))
    };
    assert_eq!(s.route_add(backup).unwrap().oif, a);
    let target = Ipv4Addr::new(203, 0, 113, 77);
    assert_eq!(s.fib().fib_lookup(target).unwrap().oif, b);
    s.route_del(RouteSpec::via(net, 24, gw)).unwrap();
    assert_eq!(
        s.fib().fib_lookup(target).unwrap().oif,
        a,
        "the backup takes over"
    );
    assert_eq!(
        s.route_del(RouteSpec::via(net, 24, gw)),
        Err(RouteError::NotFound)
    );
    // The new route is used at once, and so is its removal: cached routes are stale.
    let u = s.udp_socket();
    s.udp_connect(u, SocketAddrV4::new(target, 9)).unwrap();
    s.udp_sendmsg(T0, u, None, b"x", false).unwrap();
    let out = drain(&mut s);
    assert_eq!(out[0].0, a);
    assert_eq!(
        parse_arp(&out[0].1).target_ip,
        Ipv4Addr::new(192, 0, 2, 254)
    );
    s.route_del(backup).unwrap();
    assert_eq!(
        s.udp_sendmsg(T0, u, None, b"x", false),
        Err(SendError::NetUnreachable)
    );
}

#[test]
fn addresses_bring_and_take_their_routes() {
    let (mut s, a, _b) = two_devices(Ipv4Conf::default());
    let kinds = |s: &Stack| {
        s.fib()
            .routes()
            .into_iter()
            .filter(|(_, e)| e.oif == a)
            .map(|(t, e)| (t, e.prefix, e.prefix_len, e.rtype))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(&s),
        vec![
            (Table::Local, A_ADDR, 32, RouteType::Local),
            (
                Table::Local,
                Ipv4Addr::new(192, 0, 2, 255),
                32,
                RouteType::Broadcast
            ),
            (
                Table::Main,
                Ipv4Addr::new(192, 0, 2, 0),
                24,
                RouteType::Unicast
            ),
        ]
    );
    // A second address on the subnet is secondary: only its local route.
    let second = Ipv4Addr::new(192, 0, 2, 2);
    s.addr_add(a, IfAddr::new(second, 24)).unwrap();
    assert_eq!(kinds(&s).len(), 4);
    assert_eq!(
        s.addr_add(a, IfAddr::new(second, 24)),
        Err(DevError::Exists)
    );
    assert_eq!(
        s.addr_add(a, IfAddr::new(Ipv4Addr::new(127, 0, 0, 2), 8)),
        Err(DevError::Invalid)
    );
    assert_eq!(
        s.addr_add(DeviceId(9), IfAddr::new(second, 24)),
        Err(DevError::NoDevice)
    );
    // Removing the primary keeps the subnet (the secondary still has it).
    s.addr_del(a, A_ADDR).unwrap();
    assert!(!s.fib().is_local(A_ADDR));
    assert!(s.fib().is_local(second));
    assert!(s.fib().fib_lookup(HA).is_some());
    s.addr_del(a, second).unwrap();
    assert_eq!(kinds(&s), vec![]);
    assert!(s.fib().fib_lookup(HA).is_none());
    assert_eq!(s.addr_del(a, second), Err(DevError::NoAddress));
    let id = s.ping_open();
    assert_eq!(
        s.ping_sendmsg(T0, id, HA, 1, b"x"),
        Err(SendError::NetUnreachable)
    );
}

#[test]
fn neighbours_are_per_device_and_flush_forgets_them() {
    let (mut s, a, b) = two_devices(Ipv4Conf::default());
    s.netif_receive_skb(T0, a, arp_req(HA_MAC, HA, A_ADDR));
    s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, B_ADDR));
    drain(&mut s);
    let seen: Vec<(DeviceId, Ipv4Addr)> = s
        .neigh()
        .entries()
        .into_iter()
        .map(|(d, ip, _, _)| (d, ip))
        .collect();
    assert_eq!(seen, vec![(a, HA), (b, HB)]);
    assert_eq!(s.neigh_flush(Some(b)), 1);
    assert!(s.neigh().lookup(b, HB).is_none());
    assert!(s.neigh().lookup(a, HA).is_some());
}

#[test]
fn mtu_comes_from_the_route_device() {
    let (mut s, _a, b) = two_devices(Ipv4Conf::default());
    s.set_mtu(b, 1400).unwrap();
    assert_eq!(s.set_mtu(b, 20), Err(DevError::Invalid));
    s.netif_receive_skb(T0, b, arp_req(HB_MAC, HB, B_ADDR));
    drain(&mut s);
    let u = s.udp_socket();
    s.udp_connect(u, SocketAddrV4::new(HB, 9)).unwrap();
    // 1400 - 20 - 8 fits unfragmented with DF; one more byte is fragmented.
    s.udp_sendmsg(T0, u, None, &[0u8; 1372], false).unwrap();
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert!(parse_ip(&out[0].1).1.dont_frag);
    s.udp_sendmsg(T0, u, None, &[0u8; 1373], false).unwrap();
    let out = drain(&mut s);
    assert_eq!(out.len(), 2, "fragmented at b0's MTU");
    assert!(out.iter().all(|(d, f)| *d == b && f.len() <= 14 + 1400));
}
