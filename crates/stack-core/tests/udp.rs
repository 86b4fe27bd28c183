//! UDP sockets on a whole host: exact datagrams in and out, in virtual time.

use stack_core::DeviceId;
use std::net::{Ipv4Addr, SocketAddrV4};

mod common;
use common::*;

use stack_core::skb::Skb;
use stack_core::wire::ethernet::ethertype;
use stack_core::wire::icmpv4::{msg_type, unreach_code, Icmpv4Packet, Icmpv4Repr};
use stack_core::wire::ipv4::{protocol, Ipv4Packet};
use stack_core::wire::udp::{UdpPacket, UdpRepr};
use stack_core::wire::MacAddr;
use stack_core::{Event, Instant, SendError, Stack};

fn udp_bytes(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload.len()];
    buf[8..].copy_from_slice(payload);
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(&mut buf, payload.len(), *src.ip(), *dst.ip());
    buf
}

fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Skb {
    let src = SocketAddrV4::new(PEER, sport);
    let dst = SocketAddrV4::new(US, dport);
    let u = udp_bytes(src, dst, payload);
    eth(US_MAC, ethertype::IPV4, &ipv4(PEER, US, protocol::UDP, &u))
}

fn us(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(US, port)
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(PEER, port)
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// (source, destination, payload) of a UDP frame the stack sent, checking checksums.
fn parse_udp(skb: &Skb) -> (SocketAddrV4, SocketAddrV4, Vec<u8>, bool) {
    let (_, payload) = parse_eth(skb);
    let ip = Ipv4Packet::new_checked(&payload[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.protocol(), protocol::UDP);
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_ne!(u.checksum(), 0, "we always send a checksum");
    assert!(u.verify_checksum(ip.src(), ip.dst()));
    (
        SocketAddrV4::new(ip.src(), u.src_port()),
        SocketAddrV4::new(ip.dst(), u.dst_port()),
        u.payload().to_vec(),
        ip.dont_frag(),
    )
}

fn recv(s: &mut Stack, id: stack_core::SocketId) -> Option<(SocketAddrV4, Vec<u8>)> {
    s.udp_recvmsg(id, false)
        .unwrap()
        .map(|d| (d.from, d.payload().to_vec()))
}

#[test]
fn delivers_to_the_bound_socket_and_counts_on_read() {
    let mut s = stack();
    let id = s.udp_socket();
    assert_eq!(s.udp_bind(id, any(7)).unwrap(), any(7));
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, udp_frame(5000, 7, b"hello"));
    assert_eq!(s.poll_event(), Some(Event::Readable(id)));
    assert_eq!(s.snmp().udp.in_datagrams, 0, "Linux counts at recvmsg");
    let peeked = s.udp_recvmsg(id, true).unwrap().unwrap();
    assert_eq!(peeked.payload(), b"hello");
    assert_eq!(recv(&mut s, id), Some((peer(5000), b"hello".to_vec())));
    assert_eq!(recv(&mut s, id), None);
    assert_eq!(s.snmp().udp.in_datagrams, 1);
    // Empty datagrams are datagrams too.
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, udp_frame(5000, 7, b""));
    assert_eq!(recv(&mut s, id), Some((peer(5000), vec![])));
}

#[test]
fn closed_port_answers_port_unreachable() {
    let mut s = stack();
    learn_peer(&mut s);
    let frame = udp_frame(5000, 9999, b"anyone?");
    let sent_ip = frame.data()[14..].to_vec();
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, frame);
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let (_, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!((ip.src, ip.dst), (US, PEER));
    let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        (p.msg_type(), p.code()),
        (msg_type::DST_UNREACHABLE, unreach_code::PORT)
    );
    assert_eq!(p.payload(), &sent_ip[..], "quotes the whole datagram");
    assert_eq!(s.snmp().udp.no_ports, 1);
}

#[test]
fn checksum_and_length_checks() {
    let mut s = stack();
    let id = s.udp_socket();
    s.udp_bind(id, any(7)).unwrap();
    let good = udp_bytes(peer(1), us(7), b"data");

    let mut bad = good.clone();
    bad[6] ^= 0x01;
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::UDP, &bad),
        ),
    );
    assert_eq!(s.snmp().udp.in_csum_errors, 1);

    let mut zero = good.clone();
    zero[6] = 0;
    zero[7] = 0;
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::UDP, &zero),
        ),
    );
    assert_eq!(
        recv(&mut s, id).unwrap().1,
        b"data",
        "RFC 768: zero means no checksum"
    );

    let mut long = good.clone();
    long[4..6].copy_from_slice(&100u16.to_be_bytes());
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::UDP, &long),
        ),
    );
    assert_eq!(
        s.snmp().udp.in_errors,
        2,
        "csum error + length beyond IP payload"
    );

    // A UDP length shorter than the IP payload: the tail is not part of the datagram.
    let mut short = udp_bytes(peer(1), us(7), b"da");
    short.extend_from_slice(b"TRAILER");
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::UDP, &short),
        ),
    );
    assert_eq!(recv(&mut s, id).unwrap().1, b"da");
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::UDP, &good[..5]),
        ),
    );
    assert_eq!(s.snmp().udp.in_errors, 3, "shorter than a header");
    assert_eq!(recv(&mut s, id), None);
}

#[test]
fn sends_with_checksum_df_and_ephemeral_port() {
    let mut s = stack();
    learn_peer(&mut s);
    let id = s.udp_socket();
    assert_eq!(
        s.udp_sendmsg(Instant::ZERO, id, Some(peer(53)), b"query", false),
        Ok(5)
    );
    let local = s.udp_local_addr(id).unwrap();
    assert!((32768..=60999).contains(&local.port()));
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let (src, dst, payload, df) = parse_udp(&out[0]);
    assert_eq!(
        (src, dst, &payload[..]),
        (us(local.port()), peer(53), &b"query"[..])
    );
    assert!(df, "IP_PMTUDISC_WANT sets DF when the datagram fits");
    assert_eq!(s.snmp().udp.out_datagrams, 1);
    assert_eq!(
        s.udp_sendmsg(Instant::ZERO, id, None, b"x", false),
        Err(SendError::DestAddrRequired)
    );
    assert_eq!(
        s.udp_sendmsg(Instant::ZERO, id, Some(peer(0)), b"x", false),
        Err(SendError::InvalidInput)
    );
    let big = vec![0u8; 65508];
    assert_eq!(
        s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), &big, false),
        Err(SendError::MessageTooLong)
    );
}

#[test]
fn connected_socket_beats_wildcard_and_gets_refused() {
    let mut s = stack();
    learn_peer(&mut s);
    let wild = s.udp_socket();
    s.udp_set_reuseaddr(wild, true).unwrap();
    s.udp_bind(wild, any(4000)).unwrap();
    let conn = s.udp_socket();
    s.udp_set_reuseaddr(conn, true).unwrap();
    s.udp_bind(conn, us(4000)).unwrap();
    assert_eq!(s.udp_connect(conn, peer(5000)).unwrap(), us(4000));
    assert_eq!(s.udp_peer_addr(conn), Some(peer(5000)));

    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        udp_frame(5000, 4000, b"to conn"),
    );
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        udp_frame(5001, 4000, b"to wild"),
    );
    assert_eq!(recv(&mut s, conn).unwrap().1, b"to conn");
    assert_eq!(recv(&mut s, wild).unwrap().1, b"to wild");

    // The peer's port is closed: it answers port unreachable quoting our datagram.
    s.udp_sendmsg(Instant::ZERO, conn, None, b"ping", false)
        .unwrap();
    let sent = drain(&mut s, Instant::ZERO).pop().unwrap();
    let quoted = &sent.data()[14..];
    let err = icmp(&Icmpv4Repr::DstUnreachable {
        code: unreach_code::PORT,
        next_hop_mtu: 0,
        data: quoted,
    });
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::ICMP, &err),
        ),
    );
    while s.poll_event().is_some() {}
    assert_eq!(
        s.udp_recvmsg(conn, false).unwrap_err(),
        SendError::ConnectionRefused
    );
    assert!(
        s.udp_recvmsg(conn, false).unwrap().is_none(),
        "reported once"
    );
    let e: std::io::Error = SendError::ConnectionRefused.into();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    // The unconnected socket on the same port is not told (Linux without IP_RECVERR).
    assert!(s.udp_recvmsg(wild, false).unwrap().is_none());
}

#[test]
fn bind_rules() {
    let mut s = stack();
    let a = s.udp_socket();
    s.udp_bind(a, any(53)).unwrap();
    let b = s.udp_socket();
    assert_eq!(s.udp_bind(b, us(53)), Err(SendError::AddrInUse));
    assert_eq!(
        s.udp_bind(b, SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 53)),
        Err(SendError::AddrNotAvailable)
    );
    s.udp_bind(b, us(54)).unwrap();
    assert_eq!(
        s.udp_bind(b, us(55)),
        Err(SendError::InvalidInput),
        "already bound"
    );
    s.udp_close(a);
    let c = s.udp_socket();
    s.udp_bind(c, us(53)).unwrap();
    let mut ports = std::collections::HashSet::new();
    for _ in 0..50 {
        let e = s.udp_socket();
        let l = s.udp_bind(e, any(0)).unwrap();
        assert!(ports.insert(l.port()), "ephemeral ports are distinct");
    }
}

#[test]
fn msg_more_and_cork_build_one_datagram() {
    let mut s = stack();
    learn_peer(&mut s);
    let id = s.udp_socket();
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), b"hel", true)
        .unwrap();
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(10)), b"lo ", true)
        .unwrap();
    assert!(
        drain(&mut s, Instant::ZERO).is_empty(),
        "nothing leaves while corked"
    );
    s.udp_sendmsg(Instant::ZERO, id, None, b"world", false)
        .unwrap();
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let (_, dst, payload, _) = parse_udp(&out[0]);
    assert_eq!(
        (dst, &payload[..]),
        (peer(9), &b"hello world"[..]),
        "first destination wins"
    );

    s.udp_set_cork(Instant::ZERO, id, true).unwrap();
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), b"a", false)
        .unwrap();
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), b"b", false)
        .unwrap();
    assert!(drain(&mut s, Instant::ZERO).is_empty());
    s.udp_set_cork(Instant::ZERO, id, false).unwrap();
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(parse_udp(&out[0]).2, b"ab");
}

#[test]
fn receive_buffer_is_bounded() {
    let mut s = stack();
    let id = s.udp_socket();
    s.udp_bind(id, any(9)).unwrap();
    s.udp_set_rcvbuf(id, 2048).unwrap();
    for _ in 0..100 {
        s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, udp_frame(1, 9, b"flood"));
    }
    // Each datagram is charged its whole buffer; these test frames own exactly their
    // 14 + 20 + 8 + 5 bytes, so 2048 bytes of rcvbuf hold 43 of them.
    let queued = s.udp_rcvq_len(id);
    assert_eq!(queued, 2048 / 47);
    assert_eq!(s.snmp().udp.rcvbuf_errors, (100 - queued) as u64);
    assert_eq!(s.udp_drops(id), (100 - queued) as u64);
    while recv(&mut s, id).is_some() {}
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, udp_frame(1, 9, b"after"));
    assert_eq!(
        recv(&mut s, id).unwrap().1,
        b"after",
        "room again once read"
    );
}

#[test]
fn send_buffer_blocks_until_the_device_frees_skbs() {
    let mut s = stack();
    learn_peer(&mut s);
    let id = s.udp_socket();
    s.udp_set_sndbuf(id, 8 * 1024).unwrap();
    let mut sent = 0;
    let err = loop {
        match s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), b"x", false) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, SendError::WouldBlock);
    assert!(
        (4..=5).contains(&sent),
        "8 KiB of 2 KiB buffers, sent {sent}"
    );
    assert!(s.snmp().udp.sndbuf_errors >= 1);
    let buf = s.udp_send_buffer(id).unwrap();
    assert!(!buf.has_room());
    // The device writes the frames and frees them: room again.
    drop(drain(&mut s, Instant::ZERO));
    assert!(buf.has_room());
    assert_eq!(buf.used(), 0);
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(9)), b"x", false)
        .unwrap();
}

#[test]
fn broadcast_needs_so_broadcast_and_reaches_every_wildcard_socket() {
    let mut s = stack();
    let a = s.udp_socket();
    s.udp_set_reuseaddr(a, true).unwrap();
    s.udp_bind(a, any(67)).unwrap();
    let b = s.udp_socket();
    s.udp_set_reuseaddr(b, true).unwrap();
    s.udp_bind(b, any(67)).unwrap();
    let bcast = Ipv4Addr::new(192, 0, 2, 255);
    let u = udp_bytes(peer(68), SocketAddrV4::new(bcast, 67), b"discover");
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            MacAddr::BROADCAST,
            ethertype::IPV4,
            &ipv4(PEER, bcast, protocol::UDP, &u),
        ),
    );
    assert_eq!(recv(&mut s, a).unwrap().1, b"discover");
    assert_eq!(recv(&mut s, b).unwrap().1, b"discover");

    let c = s.udp_socket();
    let to = SocketAddrV4::new(bcast, 67);
    assert_eq!(
        s.udp_sendmsg(Instant::ZERO, c, Some(to), b"x", false),
        Err(SendError::AccessDenied)
    );
    s.udp_set_broadcast(c, true).unwrap();
    s.udp_sendmsg(Instant::ZERO, c, Some(to), b"x", false)
        .unwrap();
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(parse_eth(&out[0]).0.dst, MacAddr::BROADCAST);
}

#[test]
fn large_datagrams_leave_as_fragments() {
    let mut s = stack();
    learn_peer(&mut s);
    let id = s.udp_socket();
    let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    s.udp_sendmsg(Instant::ZERO, id, Some(peer(7)), &data, false)
        .unwrap();
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 3);
    let mut offsets = Vec::new();
    for f in &out {
        let (_, payload) = parse_eth(f);
        let ip = Ipv4Packet::new_checked(&payload[..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(!ip.dont_frag());
        assert!(ip.total_len() <= 1500);
        offsets.push((ip.frag_offset(), ip.more_frags()));
    }
    assert_eq!(offsets, vec![(0, true), (1480, true), (2960, false)]);
    let snmp = s.snmp();
    assert_eq!((snmp.ip.frag_oks, snmp.ip.frag_creates), (1, 3));
}

/// Fragments of one UDP datagram from the peer, as the kernel would send them.
fn peer_fragments(ident: u16, dport: u16, payload: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let u = udp_bytes(peer(5000), us(dport), payload);
    let whole = ipv4(PEER, US, protocol::UDP, &u);
    let mut ip = whole.clone();
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6] &= !0x40; // clear DF
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.fill_checksum();
    let pool = stack_core::SkbPool::default();
    let mut skb = pool.from_slice(64, &ip);
    skb.reset_network_header();
    let mut frags = Vec::new();
    stack_core::ipv4::fragment::ip_fragment(&skb, mtu, &pool, &mut frags).unwrap();
    frags.iter().map(|f| f.data().to_vec()).collect()
}

#[test]
fn fragments_in_any_order_are_reassembled() {
    let mut s = stack();
    let id = s.udp_socket();
    s.udp_bind(id, any(7)).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let mut frags = peer_fragments(1, 7, &data, 1500);
    assert_eq!(frags.len(), 4);
    frags.reverse();
    let dup = frags[1].clone();
    frags.insert(2, dup);
    for f in &frags {
        s.netif_receive_skb(
            Instant::ZERO,
            DeviceId::ETH0,
            eth(US_MAC, ethertype::IPV4, f),
        );
    }
    assert_eq!(recv(&mut s, id), Some((peer(5000), data)));
    let snmp = s.snmp();
    assert_eq!(
        (snmp.ip.reasm_reqds, snmp.ip.reasm_oks, snmp.ip.reasm_fails),
        (5, 1, 0)
    );
    assert_eq!(s.defrag_mem(), 0);
}

#[test]
fn overlapping_fragments_drop_the_datagram() {
    let mut s = stack();
    let id = s.udp_socket();
    s.udp_bind(id, any(7)).unwrap();
    let frags = peer_fragments(2, 7, &[0xaa; 3000], 1500);
    // A forged middle piece overlapping the first (teardrop-style): offset 8 bytes.
    let mut evil = frags[1].clone();
    evil[6..8].copy_from_slice(&(0x2000u16 | 1).to_be_bytes());
    Ipv4Packet::new_unchecked(&mut evil[..]).fill_checksum();
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, ethertype::IPV4, &frags[0]),
    );
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, ethertype::IPV4, &evil),
    );
    for f in &frags[1..] {
        s.netif_receive_skb(
            Instant::ZERO,
            DeviceId::ETH0,
            eth(US_MAC, ethertype::IPV4, f),
        );
    }
    assert_eq!(recv(&mut s, id), None);
    let snmp = s.snmp();
    assert_eq!(snmp.ip_ext.reasm_overlaps, 1);
    assert!(snmp.ip.reasm_fails >= 1);
}

#[test]
fn reassembly_timeout_sends_time_exceeded() {
    let mut s = stack();
    learn_peer(&mut s);
    let frags = peer_fragments(3, 7, &[1; 3000], 1500);
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, ethertype::IPV4, &frags[0]),
    );
    let due = s.poll_timeout().unwrap();
    assert_eq!(due, Instant::from_secs(30), "30 s reassembly timeout");
    s.handle_timeout(due);
    let out = drain(&mut s, due);
    assert_eq!(out.len(), 1);
    let (_, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!(ip.dst, PEER);
    let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!((p.msg_type(), p.code()), (msg_type::TIME_EXCEEDED, 1));
    let snmp = s.snmp();
    assert_eq!((snmp.ip.reasm_timeout, snmp.ip.reasm_fails), (1, 1));
}
