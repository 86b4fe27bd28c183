//! IPv4 forwarding as Linux 5.10 does it: a router stack with three Ethernet devices,
//! each linked to a host stack, in virtual time ([`sim::Net`]). Every frame asserted on
//! is parsed with the wire views and its checksums checked.
//!
//! ```text
//!   A 10.0.1.10 ── r0 10.0.1.1 ┐
//!   B 10.0.2.10 ── r1 10.0.2.1 ├ router (ip_forward = 1)
//!   C 10.0.3.10 ── r2 10.0.3.1 ┘  (r2 and C: MTU 1400)
//! ```

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use stack_core::dev::DeviceId;
use stack_core::ipv4::fib_frontend::RouteSpec;
use stack_core::ipv4::route::{FibEntry, RouteType, Table};
use stack_core::ipv4::Ipv4Conf;
use stack_core::netfilter::{NfHook, Verdict};
use stack_core::ping::PingMsgKind;
use stack_core::sim::{Captured, LinkId, Net};
use stack_core::skb::{IpSummed, Skb};
use stack_core::tcp::TcpState;
use stack_core::wire::arp::{ArpOp, ArpRepr};
use stack_core::wire::checksum;
use stack_core::wire::ethernet::{ethertype, EthernetFrame, EthernetRepr};
use stack_core::wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use stack_core::wire::tcp::{TcpFlags, TcpPacket, TcpRepr};
use stack_core::wire::udp::{UdpPacket, UdpRepr};
use stack_core::wire::MacAddr;
use stack_core::{
    Duration, IfAddr, Instant, NetDeviceConfig, Offloads, SendError, SocketId, Stack, StackConfig,
};

use common::{datagram, eth_from, parse_arp, parse_eth_arp, pattern};

const R: usize = 0;
const A: usize = 1;
const B: usize = 2;
const C: usize = 3;
const HOSTS: [usize; 3] = [A, B, C];

const R0: DeviceId = DeviceId(2);
const R1: DeviceId = DeviceId(3);
const R2: DeviceId = DeviceId(4);
const ETH0: DeviceId = DeviceId::ETH0;

const R_IP: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 1, 1),
    Ipv4Addr::new(10, 0, 2, 1),
    Ipv4Addr::new(10, 0, 3, 1),
];
const R_MAC: [MacAddr; 3] = [
    MacAddr([2, 0, 0, 0, 1, 1]),
    MacAddr([2, 0, 0, 0, 2, 1]),
    MacAddr([2, 0, 0, 0, 3, 1]),
];
const H_IP: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 1, 10),
    Ipv4Addr::new(10, 0, 2, 10),
    Ipv4Addr::new(10, 0, 3, 10),
];
const SMALL_MTU: usize = 1400;
/// Where nothing is routed.
const UNROUTED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

/// The router and the three hosts, each link captured.
struct Topo {
    net: Net,
    /// Link of host A, B, C (index 0, 1, 2).
    links: [LinkId; 3],
}

/// Offloads of the three router devices and of hosts A, B, C.
#[derive(Clone, Copy, Default)]
struct Offl {
    router: [Offloads; 3],
    hosts: [Offloads; 3],
}

fn side(host: usize) -> usize {
    host - 1
}

fn host_mac(host: usize) -> MacAddr {
    StackConfig::default_mac(H_IP[side(host)])
}

fn topology(offl: Offl, conf: Ipv4Conf) -> Topo {
    let mut net = Net::new();
    let mut router = Stack::with_conf(conf, Instant::ZERO, 0x707);
    for (i, name) in ["r0", "r1", "r2"].into_iter().enumerate() {
        let dev = router.add_device(NetDeviceConfig {
            mtu: if i == 2 { SMALL_MTU } else { 1500 },
            offloads: offl.router[i],
            ..NetDeviceConfig::new(name, R_MAC[i])
        });
        assert_eq!(dev, [R0, R1, R2][i]);
        router.addr_add(dev, IfAddr::new(R_IP[i], 24)).unwrap();
    }
    assert_eq!(net.add(router), R);
    for i in 0..3 {
        let mut cfg = StackConfig::new(StackConfig::default_mac(H_IP[i]), H_IP[i], 24);
        cfg.gateway = Some(R_IP[i]);
        cfg.offloads = offl.hosts[i];
        if i == 2 {
            cfg.mtu = SMALL_MTU;
        }
        assert_eq!(
            net.add(Stack::new(cfg, Instant::ZERO, 100 + i as u64)),
            i + 1
        );
    }
    let links = [
        net.link((R, R0), (A, ETH0)),
        net.link((R, R1), (B, ETH0)),
        net.link((R, R2), (C, ETH0)),
    ];
    for l in links {
        net.capture(l);
    }
    net.settle_now();
    let mut t = Topo { net, links };
    // Only the gratuitous ARPs so far, one each way on every link.
    for l in links {
        let garps: Vec<ArpRepr> = t.take(l).iter().map(|c| parse_arp(&c.frame)).collect();
        assert_eq!(garps.len(), 2);
        assert!(garps.iter().all(|a| a.sender_ip == a.target_ip));
    }
    t
}

fn router() -> Topo {
    topology(Offl::default(), forwarding())
}

fn forwarding() -> Ipv4Conf {
    Ipv4Conf {
        ip_forward: true,
        ..Ipv4Conf::default()
    }
}

impl Topo {
    fn take(&mut self, link: LinkId) -> Vec<Captured> {
        self.net.captured(link)
    }

    /// The IPv4 frames `link` carried since the last look, with who received each.
    fn ip(&mut self, link: LinkId) -> Vec<(Captured, IpFrame)> {
        self.take(link)
            .into_iter()
            .filter_map(|c| ip(&c.frame).map(|f| (c, f)))
            .collect()
    }

    fn stack(&mut self, i: usize) -> &mut Stack {
        &mut self.net.stacks[i]
    }

    /// An echo request from `host`'s ping socket `sock`, sent now; nothing moves until
    /// the next settle.
    fn ping(&mut self, host: usize, sock: SocketId, to: Ipv4Addr, seq: u16, data: &[u8]) {
        let now = self.net.now;
        self.stack(host)
            .ping_sendmsg(now, sock, to, seq, data)
            .unwrap();
    }

    /// Everything that can happen without time moving (the links have no delay).
    fn settle(&mut self) {
        self.net.settle_now();
        assert_eq!(self.net.in_flight(), 0);
    }
}

/// An IPv4 frame, checked: Ethernet header, IPv4 header with a valid checksum and a
/// total length that is the frame's.
#[derive(Clone, Debug)]
struct IpFrame {
    eth: EthernetRepr,
    ip: Ipv4Repr,
    /// The IPv4 datagram, header included.
    raw: Vec<u8>,
    /// Its payload.
    payload: Vec<u8>,
}

fn ip(skb: &Skb) -> Option<IpFrame> {
    let f = EthernetFrame::new_checked(skb.data()).unwrap();
    let eth = EthernetRepr::parse(&f).unwrap();
    if eth.ethertype != ethertype::IPV4 {
        return None;
    }
    let p = Ipv4Packet::new_checked(f.payload()).expect("valid IPv4");
    assert!(p.verify_checksum(), "IPv4 header checksum: {p:?}");
    assert_eq!(usize::from(p.total_len()), f.payload().len(), "no padding");
    Some(IpFrame {
        eth,
        ip: Ipv4Repr::parse(&p).unwrap(),
        raw: f.payload().to_vec(),
        payload: p.payload().to_vec(),
    })
}

/// (type, code, rest of header, data) of an ICMP message, its checksum checked.
fn icmp(f: &IpFrame) -> (u8, u8, u32, Vec<u8>) {
    assert_eq!(f.ip.protocol, protocol::ICMP);
    assert_eq!(checksum::checksum(&f.payload), 0, "ICMP checksum");
    let p = &f.payload;
    (
        p[0],
        p[1],
        u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        p[8..].to_vec(),
    )
}

/// The UDP payload of a whole (unfragmented) datagram, its checksum checked.
fn udp(f: &IpFrame) -> (u16, u16, Vec<u8>) {
    assert_eq!(f.ip.protocol, protocol::UDP);
    let u = UdpPacket::new_checked(&f.payload[..]).unwrap();
    assert!(u.verify_checksum(f.ip.src, f.ip.dst), "UDP checksum");
    (u.src_port(), u.dst_port(), u.payload().to_vec())
}

/// `frame` with the TTL and header checksum bytes masked, to compare two headers that
/// should differ only there.
fn masked(raw: &[u8]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v[8] = 0;
    v[10] = 0;
    v[11] = 0;
    v
}

/// An Ethernet frame from `src` to `dst` carrying `ip` (a whole datagram).
fn frame(src: MacAddr, dst: MacAddr, ip: &[u8]) -> Skb {
    eth_from(src, dst, ethertype::IPV4, ip)
}

/// An IPv4 datagram carrying UDP `payload` from `src` to `dst`:9.
fn udp_datagram(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, df: bool, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[8..].copy_from_slice(payload);
    UdpRepr {
        src_port: 4000,
        dst_port: 9,
    }
    .emit(&mut l4, payload.len(), src, dst);
    datagram(src, dst, protocol::UDP, ttl, df, 0x4242, &l4)
}

/// Frames on `link` that the router sent / that the host sent.
fn from_router(caps: &[(Captured, IpFrame)]) -> Vec<IpFrame> {
    caps.iter()
        .filter(|(c, _)| c.from.is_some_and(|p| p.0 == R))
        .map(|(_, f)| f.clone())
        .collect()
}

fn to_router(caps: &[(Captured, IpFrame)]) -> Vec<IpFrame> {
    caps.iter()
        .filter(|(c, _)| c.to.0 == R)
        .map(|(_, f)| f.clone())
        .collect()
}

#[test]
fn echo_and_udp_cross_the_router_between_every_pair_of_hosts() {
    let mut t = router();
    let mut pairs = 0;
    let mut fwd_bytes = 0;
    for x in HOSTS {
        for y in HOSTS {
            if x == y {
                continue;
            }
            pairs += 1;
            let (xi, yi) = (side(x), side(y));
            // ICMP echo, x -> y and back.
            let sock = t.stack(x).ping_open();
            let data = pattern(56, (x * 10 + y) as u32);
            t.ping(x, sock, H_IP[yi], 1, &data);
            t.settle();
            let reply = t.stack(x).ping_recvmsg(sock).expect("echo reply");
            assert_eq!(reply.kind, PingMsgKind::EchoReply);
            assert_eq!((reply.from, reply.seq, reply.ttl), (H_IP[yi], 1, 63));
            assert_eq!(reply.payload, data);
            let on_x = t.ip(t.links[xi]);
            let on_y = t.ip(t.links[yi]);
            // x's link: request in (TTL 64, to the router's MAC of x's side), reply out
            // (TTL 63, from that MAC).
            let (req_in, rep_out) = (to_router(&on_x), from_router(&on_x));
            assert_eq!((req_in.len(), rep_out.len()), (1, 1), "{x}->{y}");
            let (req_out, rep_in) = (from_router(&on_y), to_router(&on_y));
            assert_eq!((req_out.len(), rep_in.len()), (1, 1), "{x}->{y}");
            for (inn, out, ii, oi) in [
                (&req_in[0], &req_out[0], xi, yi),
                (&rep_in[0], &rep_out[0], yi, xi),
            ] {
                assert_eq!((inn.eth.src, inn.eth.dst), (host_mac(ii + 1), R_MAC[ii]));
                assert_eq!((out.eth.src, out.eth.dst), (R_MAC[oi], host_mac(oi + 1)));
                assert_eq!((inn.ip.src, inn.ip.dst), (H_IP[ii], H_IP[oi]));
                assert_eq!((inn.ip.ttl, out.ip.ttl), (64, 63), "one hop, one TTL");
                // Everything else is the same datagram, and the checksum is what an
                // RFC 1624 update of the TTL word gives.
                assert_eq!(masked(&inn.raw), masked(&out.raw));
                let old = u16::from_be_bytes([inn.raw[10], inn.raw[11]]);
                let new = u16::from_be_bytes([out.raw[10], out.raw[11]]);
                let word = |ttl: u8| u16::from_be_bytes([ttl, protocol::ICMP]);
                assert_eq!(new, checksum::update16(old, word(64), word(63)));
                assert_eq!(icmp(out).3, data);
                fwd_bytes += out.raw.len();
            }

            // UDP, x -> y:7 and the answer back.
            let srv = t.stack(y).udp_socket();
            t.stack(y)
                .udp_bind(srv, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7))
                .unwrap();
            let cli = t.stack(x).udp_socket();
            let msg = pattern(200, (x * 7 + y) as u32);
            let now = t.net.now;
            t.stack(x)
                .udp_sendmsg(now, cli, Some(SocketAddrV4::new(H_IP[yi], 7)), &msg, false)
                .unwrap();
            t.settle();
            let d = t
                .stack(y)
                .udp_recvmsg(srv, false)
                .unwrap()
                .expect("datagram");
            assert_eq!(*d.from.ip(), H_IP[xi]);
            assert_eq!(d.payload(), &msg[..]);
            let now = t.net.now;
            t.stack(y)
                .udp_sendmsg(now, srv, Some(d.from), b"pong", false)
                .unwrap();
            t.settle();
            let back = t.stack(x).udp_recvmsg(cli, false).unwrap().expect("reply");
            assert_eq!(back.from, SocketAddrV4::new(H_IP[yi], 7));
            assert_eq!(back.payload(), b"pong");
            let out_y = from_router(&t.ip(t.links[yi]));
            assert_eq!(out_y.len(), 1);
            assert_eq!(out_y[0].ip.ttl, 63);
            assert_eq!(udp(&out_y[0]).2, msg);
            fwd_bytes += out_y[0].raw.len();
            let out_x = from_router(&t.ip(t.links[xi]));
            assert_eq!(out_x.len(), 1);
            assert_eq!(udp(&out_x[0]).2, b"pong");
            fwd_bytes += out_x[0].raw.len();
            t.stack(y).udp_close(srv);
            t.stack(x).udp_close(cli);
        }
    }
    assert_eq!(pairs, 6);
    let s = t.stack(R).snmp();
    // Four datagrams a pair, each received once and forwarded once; nothing for the
    // router itself.
    assert_eq!(s.ip.forw_datagrams, 24);
    assert_eq!(s.ip.in_receives, 24);
    assert_eq!(
        s.ip.out_requests, 24,
        "Linux 5.10 counts forwards in OutRequests"
    );
    assert_eq!(s.ip.in_delivers, 0);
    assert_eq!(s.icmp.out_msgs, 0);
    assert_eq!((s.ip.in_hdr_errors, s.ip.in_addr_errors), (0, 0));
    assert_eq!(s.ip.frag_oks, 0);
    // Octets: in once; out twice, in ip_forward_finish and again in ip_output, as
    // Linux 5.10 counts IPSTATS_MIB_OUTOCTETS for a forwarded datagram.
    assert_eq!(s.ip_ext.in_octets, fwd_bytes as u64);
    assert_eq!(s.ip_ext.out_octets, 2 * fwd_bytes as u64);
}

#[test]
fn arp_is_per_side_each_host_knows_the_router_mac_of_its_link() {
    let mut t = router();
    for x in HOSTS {
        let sock = t.stack(x).ping_open();
        let y = if x == C { A } else { x + 1 };
        t.ping(x, sock, H_IP[side(y)], 1, b"hi");
        t.settle();
        assert!(t.stack(x).ping_recvmsg(sock).is_some());
    }
    for x in HOSTS {
        let i = side(x);
        let entries: Vec<_> = t
            .stack(x)
            .neigh()
            .entries()
            .into_iter()
            .map(|(d, ip, _, mac)| (d, ip, mac))
            .collect();
        assert_eq!(
            entries,
            vec![(ETH0, R_IP[i], Some(R_MAC[i]))],
            "host {x} talks to the router only, by its MAC on that link"
        );
    }
    let seen: Vec<_> = t
        .stack(R)
        .neigh()
        .entries()
        .into_iter()
        .map(|(d, ip, state, mac)| (d, ip, state.is_valid(), mac))
        .collect();
    assert_eq!(
        seen,
        vec![
            (R0, H_IP[0], true, Some(host_mac(A))),
            (R1, H_IP[1], true, Some(host_mac(B))),
            (R2, H_IP[2], true, Some(host_mac(C))),
        ]
    );
    // On each link every ARP packet is between the host and that side's router
    // address and MAC: the host asks for its gateway, the router asks (or answers)
    // from the device of that link.
    for x in HOSTS {
        let i = side(x);
        let arps: Vec<(bool, EthernetRepr, ArpRepr)> = t
            .take(t.links[i])
            .into_iter()
            .filter(|c| ip(&c.frame).is_none())
            .map(|c| {
                let (e, a) = parse_eth_arp(&c.frame);
                (c.from == Some((R, [R0, R1, R2][i])), e, a)
            })
            .collect();
        assert!(arps.len() >= 2, "a request and its reply on link {i}");
        for (from_r, e, a) in &arps {
            let (me, peer) = if *from_r {
                ((R_IP[i], R_MAC[i]), H_IP[i])
            } else {
                ((H_IP[i], host_mac(x)), R_IP[i])
            };
            assert_eq!(
                (a.sender_ip, a.sender_mac, e.src),
                (me.0, me.1, me.1),
                "{a:?}"
            );
            assert_eq!(a.target_ip, peer, "{a:?}");
        }
    }
}

#[test]
fn ttl_one_is_time_exceeded_from_the_input_device_address_quoting_the_datagram() {
    let mut t = router();
    // Let the router learn A (its ARP request for 10.0.1.1).
    let sock = t.stack(A).ping_open();
    t.ping(A, sock, H_IP[1], 1, b"x");
    t.settle();
    t.ip(t.links[0]);
    t.ip(t.links[1]);
    let before = t.stack(R).snmp();

    // A short datagram with TTL 1: quoted whole (RFC 792 wants header + 8 bytes).
    let short = udp_datagram(H_IP[0], H_IP[1], 1, false, b"");
    assert_eq!(short.len(), 28);
    // A long one: quoted up to 576 bytes of ICMP datagram (RFC 1812 4.3.2.3).
    let long = udp_datagram(H_IP[0], H_IP[1], 1, true, &pattern(1000, 3));
    for dgram in [&short, &long] {
        t.net.inject((R, R0), frame(host_mac(A), R_MAC[0], dgram));
        t.settle();
    }
    let back = from_router(&t.ip(t.links[0]));
    assert_eq!(back.len(), 2);
    for (f, orig) in back.iter().zip([&short, &long]) {
        assert_eq!((f.eth.src, f.eth.dst), (R_MAC[0], host_mac(A)));
        assert_eq!(
            (f.ip.src, f.ip.dst),
            (R_IP[0], H_IP[0]),
            "from r0's address"
        );
        assert_eq!((f.ip.ttl, f.ip.tos), (64, 0xc0));
        let (ty, code, rest, quote) = icmp(f);
        assert_eq!((ty, code, rest), (11, 0, 0), "time exceeded in transit");
        let want = orig.len().min(576 - 20 - 8);
        assert_eq!(
            quote,
            orig[..want].to_vec(),
            "the datagram as it came, TTL 1"
        );
        assert_eq!(&quote[..28], &orig[..28], "header + 8 bytes");
    }
    assert!(t.ip(t.links[1]).is_empty(), "nothing forwarded");
    let s = t.stack(R).snmp();
    assert_eq!(
        s.ip.in_hdr_errors - before.ip.in_hdr_errors,
        2,
        "too_many_hops"
    );
    assert_eq!(s.icmp.out_time_excds - before.icmp.out_time_excds, 2);
    assert_eq!(s.ip.forw_datagrams, before.ip.forw_datagrams);
    assert_eq!(t.stack(A).snmp().icmp.in_time_excds, 2);

    // From a source the router has no route back to: the error cannot be sent, and
    // icmp_send's failed lookup counts nothing (not OutNoRoutes).
    let stray = udp_datagram(Ipv4Addr::new(198, 18, 0, 1), H_IP[1], 1, false, b"");
    t.net.inject((R, R0), frame(host_mac(A), R_MAC[0], &stray));
    t.settle();
    assert!(from_router(&t.ip(t.links[0])).is_empty());
    let s2 = t.stack(R).snmp();
    assert_eq!(s2.ip.in_hdr_errors - s.ip.in_hdr_errors, 1);
    assert_eq!(
        (s2.ip.out_no_routes, s2.icmp.out_msgs),
        (0, s.icmp.out_msgs)
    );
}

#[test]
fn no_route_is_net_unreachable_limited_per_source_like_ip_error() {
    let mut t = router();
    let sock = t.stack(A).ping_open();
    // Five at one instant. ip_error's bucket (5 s) and icmp_send's (6 s) are one
    // inet_peer's tokens: each unreachable sent costs 2 s, so two go out, the third is
    // refused by icmp_send (OutRateLimitHost), the rest by ip_error.
    for seq in 0..5 {
        t.ping(A, sock, UNROUTED, seq, b"x");
    }
    t.settle();
    let check = |t: &mut Topo, want: &[u16]| {
        let back = from_router(&t.ip(t.links[0]));
        let seqs: Vec<u16> = back
            .iter()
            .map(|f| {
                assert_eq!((f.ip.src, f.ip.dst), (R_IP[0], H_IP[0]));
                let (ty, code, _, quote) = icmp(f);
                assert_eq!((ty, code), (3, 0), "net unreachable");
                let q = Ipv4Packet::new_unchecked(&quote[..]);
                assert_eq!((q.dst(), q.ttl()), (UNROUTED, 64));
                u16::from_be_bytes([quote[26], quote[27]])
            })
            .collect();
        assert_eq!(seqs, want);
    };
    check(&mut t, &[0, 1]);
    let s = t.stack(R).snmp();
    assert_eq!(s.ip_ext.in_no_routes, 5);
    assert_eq!(s.icmp.out_dest_unreachs, 2);
    assert_eq!(s.icmp.out_rate_limit_host, 1);
    assert_eq!(s.ip.forw_datagrams, 0);
    assert_eq!(s.ip.in_addr_errors, 0);
    let msg = t.stack(A).ping_recvmsg(sock).unwrap();
    assert_eq!(msg.from, R_IP[0]);
    assert_eq!(
        msg.kind,
        PingMsgKind::Error {
            icmp_type: 3,
            icmp_code: 0
        }
    );
    // One second later the bucket has 1 s: ip_error spends it, icmp_send finds none.
    let peer = t.net.stacks[R].inet_peer(H_IP[0]).unwrap();
    assert_eq!(peer.rate_tokens, 0);
    t.net.advance(Duration::from_secs(1));
    t.ping(A, sock, UNROUTED, 5, b"x");
    t.settle();
    check(&mut t, &[]);
    assert_eq!(t.stack(R).snmp().icmp.out_rate_limit_host, 2);
    // Two seconds after that, enough for both.
    t.net.advance(Duration::from_secs(2));
    t.ping(A, sock, UNROUTED, 6, b"x");
    t.settle();
    check(&mut t, &[6]);
    // Another source has a bucket of its own.
    let sock_b = t.stack(B).ping_open();
    t.ping(B, sock_b, UNROUTED, 9, b"x");
    t.settle();
    assert_eq!(from_router(&t.ip(t.links[1])).len(), 1);
    assert_eq!(t.stack(R).snmp().ip_ext.in_no_routes, 8);
}

#[test]
fn unreachable_and_blackhole_routes_and_forwarding_off_follow_ip_error() {
    let mut t = router();
    let unreach = Ipv4Addr::new(198, 18, 0, 0);
    let hole = Ipv4Addr::new(198, 19, 0, 0);
    for (prefix, rtype) in [
        (unreach, RouteType::Unreachable),
        (hole, RouteType::Blackhole),
    ] {
        t.stack(R)
            .fib_mut()
            .insert(
                Table::Main,
                FibEntry {
                    rtype,
                    ..FibEntry::unicast(prefix, 16, None, R1)
                },
            )
            .unwrap();
    }
    let sock = t.stack(A).ping_open();
    t.ping(A, sock, Ipv4Addr::new(198, 18, 0, 1), 1, b"x");
    t.ping(A, sock, Ipv4Addr::new(198, 19, 0, 1), 2, b"x");
    t.settle();
    let back = from_router(&t.ip(t.links[0]));
    assert_eq!(back.len(), 1, "the blackhole says nothing");
    let (ty, code, _, _) = icmp(&back[0]);
    assert_eq!((ty, code), (3, 1), "host unreachable");
    let s = t.stack(R).snmp();
    // Forwarding on, ip_error counts only ENETUNREACH.
    assert_eq!((s.ip.in_addr_errors, s.ip_ext.in_no_routes), (0, 0));
    assert_eq!(s.icmp.out_dest_unreachs, 1);
    assert!(t.ip(t.links[1]).is_empty());

    // Forwarding off: every packet not for us is EHOSTUNREACH, counted, unanswered.
    let mut t = topology(Offl::default(), Ipv4Conf::default());
    let sock = t.stack(A).ping_open();
    t.ping(A, sock, H_IP[1], 1, b"x");
    t.ping(A, sock, UNROUTED, 2, b"x");
    t.settle();
    assert!(from_router(&t.ip(t.links[0])).is_empty());
    assert!(t.ip(t.links[1]).is_empty());
    let s = t.stack(R).snmp();
    assert_eq!((s.ip.in_addr_errors, s.ip_ext.in_no_routes), (2, 0));
    assert_eq!((s.ip.forw_datagrams, s.icmp.out_msgs), (0, 0));
    assert_eq!(s.ip.forwarding, 2);
}

#[test]
fn a_host_that_never_answers_arp_is_host_unreachable_after_three_probes() {
    let mut t = router();
    let nobody = Ipv4Addr::new(10, 0, 2, 99);
    let sock = t.stack(A).ping_open();
    let t0 = t.net.now;
    t.stack(A)
        .ping_sendmsg(t0, sock, nobody, 1, b"anyone")
        .unwrap();
    let deadline = t0 + Duration::from_secs(10);
    assert!(t
        .net
        .run_until(deadline, |n| n.stacks[A].snmp().icmp.in_dest_unreachs == 1));
    // Three broadcast probes on B's link, a second apart, from r1.
    let probes: Vec<(Instant, ArpRepr, EthernetRepr)> = t
        .take(t.links[1])
        .into_iter()
        .map(|c| {
            let (e, a) = parse_eth_arp(&c.frame);
            (c.at, a, e)
        })
        .collect();
    let times: Vec<Duration> = probes.iter().map(|p| p.0 - t0).collect();
    assert_eq!(
        times,
        vec![
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]
    );
    for (_, a, e) in &probes {
        assert_eq!((e.src, e.dst), (R_MAC[1], MacAddr::BROADCAST));
        assert_eq!(
            (a.op, a.sender_ip, a.sender_mac, a.target_ip),
            (ArpOp::Request, R_IP[1], R_MAC[1], nobody)
        );
    }
    // Then, at 3 s, host unreachable to A from r0's address, quoting the packet as it
    // was forwarded (TTL 63).
    let back: Vec<(Captured, IpFrame)> = t.ip(t.links[0]);
    let errs: Vec<&(Captured, IpFrame)> = back.iter().filter(|(c, _)| c.to == (A, ETH0)).collect();
    assert_eq!(errs.len(), 1);
    let (c, f) = errs[0];
    assert_eq!(c.at - t0, Duration::from_secs(3));
    assert_eq!((f.ip.src, f.ip.dst), (R_IP[0], H_IP[0]));
    let (ty, code, _, quote) = icmp(f);
    assert_eq!((ty, code), (3, 1));
    let q = Ipv4Packet::new_checked(&quote[..]).unwrap();
    assert_eq!((q.src(), q.dst(), q.ttl()), (H_IP[0], nobody, 63));
    assert!(
        q.verify_checksum(),
        "the quoted header is the forwarded one"
    );
    let msg = t.stack(A).ping_recvmsg(sock).unwrap();
    assert_eq!((msg.from, msg.seq), (R_IP[0], 1));
    assert_eq!(
        msg.kind,
        PingMsgKind::Error {
            icmp_type: 3,
            icmp_code: 1
        }
    );
    let s = t.stack(R).snmp();
    assert_eq!(s.ip.forw_datagrams, 1);
    assert_eq!(s.arp.res_failed, 1);
    assert_eq!(s.icmp.out_dest_unreachs, 1);
    assert_eq!(s.ip.out_discards, 0, "arp_error_report counts no IP drop");
}

#[test]
fn df_over_the_1400_link_is_frag_needed_and_the_rest_is_fragmented_again() {
    let mut t = router();
    let sock = t.stack(A).ping_open();
    // 1472 bytes of echo data: a 1500-byte datagram, DF set (fits A's link).
    t.ping(A, sock, H_IP[2], 1, &pattern(1472, 1));
    t.settle();
    let on_a = t.ip(t.links[0]);
    let sent = to_router(&on_a);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ip.dont_frag);
    let back = from_router(&on_a);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].ip.src, back[0].ip.dst), (R_IP[0], H_IP[0]));
    let (ty, code, rest, quote) = icmp(&back[0]);
    assert_eq!((ty, code), (3, 4), "fragmentation needed and DF set");
    assert_eq!(rest & 0xffff, 1400, "next-hop MTU (RFC 1191)");
    assert_eq!(quote, sent[0].raw[..548].to_vec());
    assert!(t.ip(t.links[2]).is_empty());
    let msg = t.stack(A).ping_recvmsg(sock).unwrap();
    assert_eq!(
        msg.kind,
        PingMsgKind::Error {
            icmp_type: 3,
            icmp_code: 4
        }
    );
    let s = t.stack(R).snmp();
    assert_eq!((s.ip.frag_fails, s.ip.forw_datagrams), (1, 0));
    assert_eq!(s.icmp.out_dest_unreachs, 1);

    // 3000 bytes of UDP: A cuts it at 1500 (DF clear), the router cuts the two big
    // fragments again at 1400, and C puts it back together.
    let srv = t.stack(C).udp_socket();
    t.stack(C)
        .udp_bind(srv, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9))
        .unwrap();
    let cli = t.stack(A).udp_socket();
    let data = pattern(3000, 9);
    let now = t.net.now;
    t.stack(A)
        .udp_sendmsg(now, cli, Some(SocketAddrV4::new(H_IP[2], 9)), &data, false)
        .unwrap();
    t.settle();
    let got = t
        .stack(C)
        .udp_recvmsg(srv, false)
        .unwrap()
        .expect("reassembled");
    assert_eq!(got.payload(), &data[..], "byte-identical");
    let into: Vec<(u16, usize, bool)> = to_router(&t.ip(t.links[0]))
        .iter()
        .map(|f| (f.ip.frag_offset, f.payload.len(), f.ip.more_frags))
        .collect();
    assert_eq!(
        into,
        vec![(0, 1480, true), (1480, 1480, true), (2960, 48, false)]
    );
    let out = from_router(&t.ip(t.links[2]));
    let layout: Vec<(u16, usize, bool)> = out
        .iter()
        .map(|f| {
            assert_eq!(f.ip.ttl, 63, "every fragment has the decremented TTL");
            assert!(!f.ip.dont_frag);
            assert!(f.raw.len() <= 1400);
            assert_eq!((f.eth.src, f.eth.dst), (R_MAC[2], host_mac(C)));
            (f.ip.frag_offset, f.payload.len(), f.ip.more_frags)
        })
        .collect();
    assert_eq!(
        layout,
        vec![
            (0, 1376, true),
            (1376, 104, true),
            (1480, 1376, true),
            (2856, 104, true),
            (2960, 48, false),
        ]
    );
    let idents: Vec<u16> = out.iter().map(|f| f.ip.ident).collect();
    assert!(idents.iter().all(|&i| i == idents[0]), "one datagram");
    let s = t.stack(R).snmp();
    assert_eq!(s.ip.forw_datagrams, 3, "three fragments in, each forwarded");
    assert_eq!((s.ip.frag_oks, s.ip.frag_creates), (2, 4));
    assert_eq!(s.ip.frag_fails, 1);
    assert_eq!(s.ip.reasm_reqds, 0, "a router does not reassemble");
    assert_eq!(t.stack(C).snmp().ip.reasm_oks, 1);
}

/// Offloads where A and B and their router devices do TSO, C and r2 nothing.
fn tso_offl() -> Offl {
    let none = Offloads::default();
    Offl {
        router: [Offloads::ALL, Offloads::ALL, none],
        hosts: [Offloads::ALL, Offloads::ALL, none],
    }
}

/// A TCP connection from A to `dst`:80 carrying `data`, read at the far end.
fn tcp_transfer(t: &mut Topo, dst: usize, data: &[u8]) {
    let l = t.stack(dst).tcp_socket();
    t.stack(dst)
        .tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .unwrap();
    t.stack(dst).tcp_listen(l, 4).unwrap();
    let c = t.stack(A).tcp_socket();
    let now = t.net.now;
    t.stack(A)
        .tcp_v4_connect(now, c, SocketAddrV4::new(H_IP[side(dst)], 80))
        .unwrap();
    t.settle();
    assert_eq!(t.stack(A).tcp_state(c), Some(TcpState::Established));
    let (child, _) = t.stack(dst).tcp_accept(l).unwrap().expect("accepted");
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = t.net.now + Duration::from_secs(60);
    while got.len() < data.len() {
        assert!(
            t.net.now < deadline,
            "stalled at {} of {}",
            got.len(),
            data.len()
        );
        let now = t.net.now;
        if sent < data.len() {
            match t.stack(A).tcp_sendmsg(now, c, &data[sent..]) {
                Ok(n) => sent += n,
                Err(SendError::WouldBlock) => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        loop {
            match t.stack(dst).tcp_recvmsg(now, child, &mut buf, false) {
                Ok(0) => panic!("EOF"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        t.net.advance(Duration::from_millis(1));
    }
    assert!(got == data, "byte-identical");
}

#[test]
fn tcp_super_packets_go_whole_to_tso_and_as_wire_segments_to_the_rest() {
    let mut t = topology(tso_offl(), forwarding());
    let data = pattern(300_000, 77);
    tcp_transfer(&mut t, B, &data);
    let into = t.ip(t.links[0]);
    let out = t.ip(t.links[1]);
    let n_supers_in = into
        .iter()
        .filter(|(c, f)| c.to.0 == R && c.frame.gso_size > 0 && f.raw.len() > 1500)
        .count();
    assert!(n_supers_in > 0, "A sends super-packets");
    // r1 and B have TSO: the super-packets cross whole, TTL 63, partial checksum.
    let supers_out: Vec<&(Captured, IpFrame)> = out
        .iter()
        .filter(|(c, _)| c.from == Some((R, R1)))
        .filter(|(c, _)| c.frame.gso_size > 0)
        .collect();
    assert_eq!(
        supers_out.len(),
        n_supers_in,
        "every super-packet forwarded whole"
    );
    let supers_in: Vec<&IpFrame> = into
        .iter()
        .filter(|(c, _)| c.to.0 == R && c.frame.gso_size > 0)
        .map(|(_, f)| f)
        .collect();
    for ((c, f), orig) in supers_out.iter().zip(&supers_in) {
        assert!(f.raw.len() > 1500);
        assert_eq!(f.ip.ttl, 63);
        assert_eq!(masked(&f.raw), masked(&orig.raw), "the same super-packet");
        // The TCP checksum is still the partial one (the pseudo-header sum) for B's
        // device to finish.
        assert!(matches!(c.frame.ip_summed, IpSummed::Partial { .. }));
        let tcp_len = f.payload.len() as u16;
        let partial = checksum::fold(checksum::pseudo_header_sum(
            f.ip.src,
            f.ip.dst,
            protocol::TCP,
            tcp_len,
        ));
        assert_eq!(
            TcpPacket::new_checked(&f.payload[..]).unwrap().checksum(),
            partial
        );
    }
    // Counted once each (ForwDatagrams counts skbs, as Linux counts a GRO'd packet).
    let forwarded = into.iter().filter(|(c, _)| c.to.0 == R).count()
        + out.iter().filter(|(c, _)| c.to.0 == R).count();
    assert_eq!(t.stack(R).snmp().ip.forw_datagrams, forwarded as u64);

    // To C (no TSO, MTU 1400): A still sends super-packets (C's MSS makes their
    // segments fit), the router cuts them into checksummed wire-size segments.
    let before = t.stack(R).snmp();
    let r2_before = t.stack(R).device(R2).stats.tx_packets;
    let data = pattern(300_000, 78);
    tcp_transfer(&mut t, C, &data);
    let into: Vec<(Captured, IpFrame)> = t
        .ip(t.links[0])
        .into_iter()
        .filter(|(c, f)| c.to.0 == R && f.ip.dst == H_IP[2])
        .collect();
    let raw_c = t.take(t.links[2]);
    let sent_on_r2 = raw_c.iter().filter(|c| c.from == Some((R, R2))).count();
    let on_c: Vec<(Captured, IpFrame)> = raw_c
        .into_iter()
        .filter_map(|c| ip(&c.frame).map(|f| (c, f)))
        .collect();
    let out = from_router(&on_c);
    // Each super-packet leaves as its segments, with consecutive IP IDs
    // (inet_gso_segment) and sequence numbers; anything else leaves as it came.
    let mut want = Vec::new();
    let mut supers = 0;
    for (c, f) in &into {
        let p = TcpPacket::new_checked(&f.payload[..]).unwrap();
        let (len, mss) = (p.payload().len(), usize::from(c.frame.gso_size));
        let n = if mss > 0 { len.div_ceil(mss) } else { 1 };
        if mss > 0 {
            supers += 1;
            assert!(20 + p.header_len() + mss <= SMALL_MTU, "segments fit r2");
        }
        for k in 0..n {
            let seq = p.seq_number().wrapping_add((k * mss) as u32);
            want.push((f.ip.ident.wrapping_add(k as u16), seq));
        }
    }
    assert!(supers > 0, "A sent super-packets towards C");
    let got: Vec<(u16, u32)> = out
        .iter()
        .map(|f| {
            assert!(f.raw.len() <= SMALL_MTU, "wire size");
            assert_eq!((f.ip.ttl, f.eth.src), (63, R_MAC[2]));
            let p = TcpPacket::new_checked(&f.payload[..]).unwrap();
            assert!(p.verify_checksum(f.ip.src, f.ip.dst), "full TCP checksum");
            (f.ip.ident, p.seq_number())
        })
        .collect();
    assert_eq!(got, want);
    // r2 counts frames, as the wire carries them (ARP included).
    assert_eq!(
        t.stack(R).device(R2).stats.tx_packets - r2_before,
        sent_on_r2 as u64
    );
    assert!(
        out.len() > into.len(),
        "more segments leave than super-packets came"
    );
    let s = t.stack(R).snmp();
    assert_eq!(
        s.ip.forw_datagrams - before.ip.forw_datagrams,
        (into.len() + to_router(&on_c).len()) as u64,
        "each super-packet counted once"
    );
    assert_eq!(s.ip.frag_oks, 0, "segments fit: nothing fragmented");
}

/// A TCP/IPv4 super-packet: `segs` segments of `mss` bytes, DF as given.
fn super_packet(df: bool, mss: usize, segs: usize) -> (Skb, Vec<u8>) {
    let payload = pattern(mss * segs, 5);
    let tcp = TcpRepr {
        src_port: 5555,
        dst_port: 80,
        seq: 1000,
        ack: 1,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window: 1000,
        ..Default::default()
    };
    let hl = tcp.header_len();
    let mut l4 = vec![0u8; hl + payload.len()];
    l4[hl..].copy_from_slice(&payload);
    tcp.emit(&mut l4, payload.len(), H_IP[0], H_IP[2]);
    let dgram = datagram(H_IP[0], H_IP[2], protocol::TCP, 64, df, 0x100, &l4);
    let mut skb = frame(host_mac(A), R_MAC[0], &dgram);
    skb.gso_size = mss as u16;
    skb.gso_segs = segs as u16;
    (skb, payload)
}

#[test]
fn a_gro_packet_too_big_for_the_next_link_is_segmented_then_fragmented() {
    let mut t = topology(tso_offl(), forwarding());
    // Teach the router A's and C's MACs.
    for x in [A, C] {
        let sock = t.stack(x).ping_open();
        let to = if x == A { H_IP[2] } else { H_IP[0] };
        t.ping(x, sock, to, 1, b"x");
        t.settle();
    }
    for l in t.links {
        t.take(l);
    }
    let before = t.stack(R).snmp();
    // DF clear, 3 x 1448: each segment (1488 bytes) is over r2's 1400.
    let (skb, payload) = super_packet(false, 1448, 3);
    t.net.inject((R, R0), skb);
    t.settle();
    let on_c = t.ip(t.links[2]);
    let out = from_router(&on_c);
    let layout: Vec<(u16, u16, usize, bool)> = out
        .iter()
        .map(|f| {
            assert_eq!(f.ip.ttl, 63);
            assert!(f.raw.len() <= SMALL_MTU);
            (
                f.ip.ident,
                f.ip.frag_offset,
                f.payload.len(),
                f.ip.more_frags,
            )
        })
        .collect();
    // inet_gso_segment gives the segments consecutive IDs; each is cut 1376 + 92.
    assert_eq!(
        layout,
        vec![
            (0x100, 0, 1376, true),
            (0x100, 1376, 92, false),
            (0x101, 0, 1376, true),
            (0x101, 1376, 92, false),
            (0x102, 0, 1376, true),
            (0x102, 1376, 92, false),
        ]
    );
    // Put each segment together again: a valid TCP segment, in sequence.
    let mut joined = Vec::new();
    for (k, pair) in out.chunks(2).enumerate() {
        let mut seg = pair[0].payload.clone();
        seg.extend_from_slice(&pair[1].payload);
        let p = TcpPacket::new_checked(&seg[..]).unwrap();
        assert!(p.verify_checksum(H_IP[0], H_IP[2]));
        assert_eq!(p.seq_number(), 1000 + 1448 * k as u32);
        assert_eq!(
            p.flags().contains(TcpFlags::PSH),
            k == 2,
            "PSH on the last only"
        );
        joined.extend_from_slice(p.payload());
    }
    assert_eq!(joined, payload);
    // C has no such connection: it resets each segment, through the router.
    let resets = to_router(&on_c);
    assert_eq!(resets.len(), 3);
    for f in &resets {
        let p = TcpPacket::new_checked(&f.payload[..]).unwrap();
        assert!(p.flags().contains(TcpFlags::RST));
    }
    let s = t.stack(R).snmp();
    assert_eq!(s.ip.forw_datagrams - before.ip.forw_datagrams, 1 + 3);
    assert_eq!(s.ip.frag_oks - before.ip.frag_oks, 3);
    assert_eq!(s.ip.frag_creates - before.ip.frag_creates, 6);

    // (The resets went on to A.)
    let resets_to_a = from_router(&t.ip(t.links[0]));
    assert_eq!(resets_to_a.len(), 3);
    assert!(resets_to_a.iter().all(|f| f.ip.ttl == 63));

    // With DF set the segments may not be cut: frag needed, with r2's MTU.
    let (skb, _) = super_packet(true, 1448, 3);
    t.net.inject((R, R0), skb);
    t.settle();
    assert!(t.ip(t.links[2]).is_empty());
    let back = from_router(&t.ip(t.links[0]));
    assert_eq!(back.len(), 1);
    let (ty, code, rest, _) = icmp(&back[0]);
    assert_eq!((ty, code, rest & 0xffff), (3, 4, 1400));
    let s2 = t.stack(R).snmp();
    assert_eq!(s2.ip.frag_fails - s.ip.frag_fails, 1);
    // DF set, but the segments fit (gso_size 1000): forwarded, cut in software.
    let (skb, _) = super_packet(true, 1000, 3);
    t.net.inject((R, R0), skb);
    t.settle();
    let out = from_router(&t.ip(t.links[2]));
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|f| f.ip.dont_frag && f.raw.len() == 20 + 20 + 1000));
}

/// G's address on the network behind it (203.0.113.0/24), in the redirect tests.
const BEHIND_G: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// Gateway G of the redirect tests: `g0` (`mac`, `ip`/24), the device to link, and `g1`
/// ([`BEHIND_G`]/24) on no link.
fn gateway(ip: Ipv4Addr, mac: MacAddr) -> (Stack, DeviceId) {
    let mut g = Stack::with_conf(Ipv4Conf::default(), Instant::ZERO, 2);
    let g0 = g.add_device(NetDeviceConfig::new("g0", mac));
    g.addr_add(g0, IfAddr::new(ip, 24)).unwrap();
    let g1 = g.add_device(NetDeviceConfig::new("g1", MacAddr([2, 0, 0, 0, 9, 1])));
    g.addr_add(g1, IfAddr::new(BEHIND_G, 24)).unwrap();
    (g, g0)
}

/// The router (stack and device), host A (10.0.1.10, gateway [`R_IP`]`[0]`) and G (stack
/// and device) on one captured segment, settled, the start-up frames taken. Returns (net,
/// router, A, G, segment): the three as indices in `net.stacks`.
fn router_a_and_g(
    (r, r0): (Stack, DeviceId),
    (g, g0): (Stack, DeviceId),
) -> (Net, usize, usize, usize, LinkId) {
    let mut net = Net::new();
    let mut a_cfg = StackConfig::new(host_mac(A), H_IP[0], 24);
    a_cfg.gateway = Some(R_IP[0]);
    let (ri, ai, gi) = (
        net.add(r),
        net.add(Stack::new(a_cfg, Instant::ZERO, 3)),
        net.add(g),
    );
    let seg = net.segment(&[(ri, r0), (ai, ETH0), (gi, g0)]);
    net.capture(seg);
    net.settle_now();
    net.captured(seg);
    (net, ri, ai, gi, seg)
}

#[test]
fn redirect_when_the_packet_leaves_by_the_link_it_came_in_on() {
    // A, the router and a second gateway G on one segment; 203.0.113.0/24 is behind G.
    let g_ip = Ipv4Addr::new(10, 0, 1, 254);
    let behind = BEHIND_G;
    let g_mac = MacAddr([2, 0, 0, 0, 1, 0xfe]);
    let mut r = Stack::with_conf(forwarding(), Instant::ZERO, 1);
    let r0 = r.add_device(NetDeviceConfig::new("r0", R_MAC[0]));
    r.addr_add(r0, IfAddr::new(R_IP[0], 24)).unwrap();
    r.route_add(RouteSpec::via(Ipv4Addr::new(203, 0, 113, 0), 24, g_ip))
        .unwrap();
    let (g, g0) = gateway(g_ip, g_mac);
    let (mut net, ri, ai, gi, seg) = router_a_and_g((r, r0), (g, g0));
    let sock = net.stacks[ai].ping_open();

    // A ping every 50 ms for 12 s. Redirects back off 40, 80, ... ms after each other
    // (ip_rt_redirect_load << n); after the ninth, A is taken to ignore them.
    let mut pings = 0u16;
    let mut redirect_at = Vec::new();
    let t0 = net.now;
    let send = |net: &mut Net, pings: &mut u16, redirect_at: &mut Vec<u64>| {
        let now = net.now;
        net.stacks[ai]
            .ping_sendmsg(now, sock, behind, *pings, b"x")
            .unwrap();
        *pings += 1;
        net.settle_now();
        for c in net.captured(seg) {
            let Some(f) = ip(&c.frame) else { continue };
            if c.from == Some((ri, r0))
                && c.to == (ai, ETH0)
                && f.ip.protocol == protocol::ICMP
                && f.payload[0] == 5
            {
                let (ty, code, gw, quote) = icmp(&f);
                assert_eq!((ty, code), (5, 1), "redirect for the host");
                assert_eq!(Ipv4Addr::from(gw), g_ip, "the better first hop");
                assert_eq!((f.ip.src, f.ip.dst, c.to), (R_IP[0], H_IP[0], (ai, ETH0)));
                let q = Ipv4Packet::new_checked(&quote[..]).unwrap();
                assert_eq!(
                    (q.dst(), q.ttl()),
                    (behind, 63),
                    "quotes the forwarded header"
                );
                redirect_at.push((c.at - t0).as_millis() as u64);
            }
            if c.from == Some((ri, r0)) && f.ip.dst == behind && c.to == (gi, g0) {
                // The packet still goes on, to G's MAC.
                assert_eq!((f.eth.dst, f.ip.ttl), (g_mac, 63));
            }
        }
    };
    while net.now < t0 + Duration::from_secs(12) {
        send(&mut net, &mut pings, &mut redirect_at);
        net.advance(Duration::from_millis(50));
    }
    assert_eq!(
        redirect_at,
        vec![0, 50, 150, 350, 700, 1350, 2650, 5250, 10400],
        "the first and then after 40, 80, 160, ... ms; none after the ninth"
    );
    // 20.40 s of quiet is not yet ip_rt_redirect_silence (20.48 s); each suppressed
    // redirect restarts the silence.
    net.advance(Duration::from_millis(20_400 - 50));
    send(&mut net, &mut pings, &mut redirect_at);
    assert_eq!(redirect_at.len(), 9);
    net.advance(Duration::from_millis(20_500));
    let resumed = net.now;
    send(&mut net, &mut pings, &mut redirect_at);
    assert_eq!(
        redirect_at.len(),
        10,
        "silence over: the count starts again"
    );
    assert_eq!(
        *redirect_at.last().unwrap(),
        (resumed - t0).as_millis() as u64
    );

    // Every ping was forwarded (and answered by G directly); ten redirects.
    net.advance(Duration::from_millis(10));
    let replies = std::iter::from_fn(|| net.stacks[ai].ping_recvmsg(sock))
        .filter(|m| m.kind == PingMsgKind::EchoReply && m.from == behind)
        .count();
    assert_eq!(replies, usize::from(pings));
    let s = net.stacks[ri].snmp();
    assert_eq!(s.ip.forw_datagrams, u64::from(pings));
    assert_eq!(s.icmp.out_redirects, 10);
    assert_eq!(s.icmp.out_msgs, 10);
    assert_eq!(net.stacks[ai].snmp().icmp.in_redirects, 10);
    assert!(s.render().contains("OutRedirects"));
}

/// Router r0 = 10.0.1.1/24 and 10.0.9.1/24, A = 10.0.1.10 (gateway the router), G =
/// 10.0.9.254 in front of 203.0.113.0/24, all on one segment; `conf` for the router.
/// Returns (net, router, A, link, A's ping socket).
fn secondary_subnet(conf: Ipv4Conf) -> (Net, usize, usize, LinkId, SocketId) {
    let g_ip = Ipv4Addr::new(10, 0, 9, 254);
    let mut r = Stack::with_conf(conf, Instant::ZERO, 1);
    let r0 = r.add_device(NetDeviceConfig::new("r0", R_MAC[0]));
    r.addr_add(r0, IfAddr::new(R_IP[0], 24)).unwrap();
    r.addr_add(r0, IfAddr::new(Ipv4Addr::new(10, 0, 9, 1), 24))
        .unwrap();
    r.route_add(RouteSpec::via(Ipv4Addr::new(203, 0, 113, 0), 24, g_ip))
        .unwrap();
    let (mut g, g0) = gateway(g_ip, MacAddr([2, 0, 0, 0, 9, 0xfe]));
    g.route_add(RouteSpec::dev(Ipv4Addr::new(10, 0, 1, 0), 24, g0))
        .unwrap();
    let (mut net, ri, ai, _gi, seg) = router_a_and_g((r, r0), (g, g0));
    let sock = net.stacks[ai].ping_open();
    let now = net.now;
    net.stacks[ai]
        .ping_sendmsg(now, sock, BEHIND_G, 1, b"x")
        .unwrap();
    let deadline = net.now + Duration::from_secs(2);
    assert!(net.run_until(deadline, |n| n.in_flight() == 0));
    (net, ri, ai, seg, sock)
}

#[test]
fn redirects_follow_send_redirects_and_shared_media() {
    // shared_media on (Linux's default): the sender is on-link, so it is redirected
    // even to a gateway on another subnet of the link (RFC 1620).
    let (mut net, ri, ai, _seg, sock) = secondary_subnet(forwarding());
    assert_eq!(net.stacks[ri].snmp().icmp.out_redirects, 1);
    assert_eq!(net.stacks[ai].snmp().icmp.in_redirects, 1);
    assert!(net.stacks[ai]
        .ping_recvmsg(sock)
        .is_some_and(|m| m.kind == PingMsgKind::EchoReply));
    // shared_media off: sender and gateway share no subnet (inet_addr_onlink): none.
    let (mut net, ri, ai, _seg, sock) = secondary_subnet(Ipv4Conf {
        shared_media: false,
        ..forwarding()
    });
    assert_eq!(net.stacks[ri].snmp().icmp.out_redirects, 0);
    assert_eq!(
        net.stacks[ri].snmp().ip.forw_datagrams,
        1,
        "the request; G answers A directly"
    );
    assert!(net.stacks[ai]
        .ping_recvmsg(sock)
        .is_some_and(|m| m.kind == PingMsgKind::EchoReply));
    // send_redirects off: none either, and still forwarded.
    let (net, ri, _ai, _seg, _sock) = secondary_subnet(Ipv4Conf {
        send_redirects: false,
        ..forwarding()
    });
    assert_eq!(net.stacks[ri].snmp().icmp.out_redirects, 0);
}

#[test]
fn the_forward_hook_drops_before_forw_datagrams_is_counted() {
    let mut t = router();
    t.stack(R).netfilter_mut().register(
        NfHook::Forward,
        0,
        Box::new(|_hook, skb: &mut Skb| {
            let ip = Ipv4Packet::new_unchecked(skb.data());
            if ip.dst() == Ipv4Addr::new(10, 0, 2, 10) {
                Verdict::Drop
            } else {
                Verdict::Accept
            }
        }),
    );
    let sock = t.stack(A).ping_open();
    t.ping(A, sock, H_IP[1], 1, b"x");
    t.ping(A, sock, H_IP[2], 2, b"x");
    t.settle();
    assert!(t.ip(t.links[1]).is_empty());
    assert_eq!(from_router(&t.ip(t.links[2])).len(), 1);
    let s = t.stack(R).snmp();
    assert_eq!(s.nf.forward, 1);
    // The one to C and C's reply.
    assert_eq!(s.ip.forw_datagrams, 2);
}

/// A frame to the router's MAC that is not PACKET_HOST (an Ethernet broadcast carrying
/// a unicast datagram for another host) is not forwarded.
#[test]
fn only_packets_sent_to_our_mac_are_forwarded() {
    let mut t = router();
    let dgram = udp_datagram(H_IP[0], H_IP[1], 64, false, b"bcast");
    t.net
        .inject((R, R0), frame(host_mac(A), MacAddr::BROADCAST, &dgram));
    t.settle();
    assert!(t.ip(t.links[1]).is_empty());
    let s = t.stack(R).snmp();
    assert_eq!((s.ip.in_discards, s.ip.forw_datagrams), (1, 0));
}

#[test]
fn forwarded_priority_comes_from_the_tos_like_rt_tos2priority() {
    for (update, tos, prio) in [
        (true, 0x00, 0),
        (true, 0x10, 6),
        (true, 0x08, 2),
        (true, 0x18, 4),
        (false, 0x10, 0),
    ] {
        let mut t = topology(
            Offl::default(),
            Ipv4Conf {
                ip_fwd_update_priority: update,
                ..forwarding()
            },
        );
        let tap = t.stack(R).packet_tap_open(R1, 16).unwrap();
        let mut dgram = udp_datagram(H_IP[0], H_IP[1], 64, false, b"tos");
        let mut p = Ipv4Packet::new_unchecked(&mut dgram[..]);
        p.set_tos(tos);
        p.fill_checksum();
        t.net.inject((R, R0), frame(host_mac(A), R_MAC[0], &dgram));
        t.settle();
        let out: Vec<Skb> = std::iter::from_fn(|| t.stack(R).packet_tap_recv(tap))
            .filter(|s| ip(s).is_some_and(|f| f.ip.dst == H_IP[1]))
            .collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].priority, prio, "update {update}, tos {tos:#04x}");
        assert_eq!(ip(&out[0]).unwrap().ip.tos, tos);
    }
}
