//! Whole-host tests: a `Stack` driven in virtual time by frames a fake peer builds, with
//! the exact frames the stack sends back checked field by field.

use stack_core::DeviceId;
use std::net::Ipv4Addr;

mod common;
use common::*;

use stack_core::netfilter::{NfHook, Verdict};
use stack_core::ping::PingMsgKind;
use stack_core::skb::Skb;
use stack_core::wire::arp::{ArpOp, ArpRepr};
use stack_core::wire::ethernet::{ethertype, EthernetRepr, VlanTag};
use stack_core::wire::icmpv4::{msg_type, unreach_code, Icmpv4Packet, Icmpv4Repr};
use stack_core::wire::ipv4::{protocol, Ipv4Packet};
use stack_core::wire::MacAddr;
use stack_core::{Duration, Event, Instant, Stack};

#[test]
fn answers_arp_requests_for_its_address_only() {
    let mut s = stack();
    let t = Instant::from_millis(1);
    s.netif_receive_skb(
        t,
        DeviceId::ETH0,
        arp_frame(ArpOp::Request, MacAddr::BROADCAST, MacAddr::ZERO, US),
    );
    let out = drain(&mut s, t);
    assert_eq!(out.len(), 1);
    let (e, _) = parse_eth(&out[0]);
    assert_eq!((e.dst, e.src), (PEER_MAC, US_MAC));
    let reply = parse_arp(&out[0]);
    assert_eq!(
        reply,
        ArpRepr {
            op: ArpOp::Reply,
            sender_mac: US_MAC,
            sender_ip: US,
            target_mac: PEER_MAC,
            target_ip: PEER,
        }
    );
    // The asker is remembered (STALE), so a reply to it needs no resolution.
    assert_eq!(
        s.neigh().lookup(DeviceId::ETH0, PEER).unwrap().1,
        Some(PEER_MAC)
    );

    let other = Ipv4Addr::new(192, 0, 2, 77);
    s.netif_receive_skb(
        t,
        DeviceId::ETH0,
        arp_frame(ArpOp::Request, MacAddr::BROADCAST, MacAddr::ZERO, other),
    );
    assert!(
        drain(&mut s, t).is_empty(),
        "no reply for someone else's address"
    );
    let snmp = s.snmp();
    assert_eq!((snmp.arp.in_requests, snmp.arp.out_replies), (2, 1));
}

#[test]
fn echo_reply_waits_for_arp_then_matches_the_request() {
    let mut s = stack();
    let t0 = Instant::from_millis(10);
    let data: Vec<u8> = (0..56).collect();
    s.netif_receive_skb(t0, DeviceId::ETH0, echo_request(1, &data));
    // We do not know the peer's MAC yet: the reply is queued and ARP asks.
    let out = drain(&mut s, t0);
    assert_eq!(out.len(), 1);
    let req = parse_arp(&out[0]);
    assert_eq!(
        (req.op, req.target_ip, req.sender_ip),
        (ArpOp::Request, PEER, US)
    );
    assert_eq!(parse_eth(&out[0]).0.dst, MacAddr::BROADCAST);
    assert_eq!(s.snmp().arp.unres_qlen, 1);

    let t1 = t0 + Duration::from_millis(1);
    answer_arp(&mut s, t1);
    let out = drain(&mut s, t1);
    assert_eq!(out.len(), 1, "the queued reply leaves on resolution");
    let (e, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!((e.dst, e.src), (PEER_MAC, US_MAC));
    assert_eq!((ip.src, ip.dst, ip.ttl), (US, PEER, 64));
    let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        Icmpv4Repr::parse(&p).unwrap(),
        Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq: 1,
            data: &data
        }
    );
    // Now resolved: the next echo is answered at once.
    s.netif_receive_skb(t1, DeviceId::ETH0, echo_request(2, b"x"));
    let out = drain(&mut s, t1);
    assert_eq!(out.len(), 1);
    let snmp = s.snmp();
    assert_eq!((snmp.icmp.in_echos, snmp.icmp.out_echo_reps), (2, 2));
    assert_eq!((snmp.ip.in_receives, snmp.ip.in_delivers), (2, 2));
    assert_eq!(snmp.arp.unres_qlen, 0);
}

#[test]
fn largest_unfragmented_echo_and_link_padding() {
    let mut s = stack();
    learn_peer(&mut s);
    let data = vec![0xab; 1472];
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, echo_request(9, &data));
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 14 + 1500);
    // A short echo padded to the Ethernet minimum: the padding is not echoed.
    let mut padded = echo_request(10, b"hi").data().to_vec();
    padded.resize(60, 0xee);
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, Skb::from_vec(padded));
    let out = drain(&mut s, Instant::ZERO);
    let (_, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!(ip.payload_len, 8 + 2);
    assert_eq!(&bytes[8..], b"hi");
}

#[test]
fn bad_ipv4_headers_are_counted_like_linux() {
    let mut s = stack();
    let good = ipv4(
        PEER,
        US,
        protocol::ICMP,
        &icmp(&Icmpv4Repr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"abcd",
        }),
    );
    let send = |s: &mut Stack, ip: Vec<u8>| {
        s.netif_receive_skb(
            Instant::ZERO,
            DeviceId::ETH0,
            eth(US_MAC, ethertype::IPV4, &ip),
        )
    };

    send(&mut s, good[..10].to_vec()); // truncated header
    let mut bad_csum = good.clone();
    bad_csum[10] ^= 0xff;
    send(&mut s, bad_csum);
    let mut ihl3 = good.clone();
    ihl3[0] = 0x43;
    send(&mut s, ihl3);
    let mut v6 = good.clone();
    v6[0] = 0x65;
    send(&mut s, v6);
    let mut too_long = good.clone();
    too_long[2..4].copy_from_slice(&200u16.to_be_bytes());
    let mut p = Ipv4Packet::new_unchecked(&mut too_long[..]);
    p.fill_checksum();
    send(&mut s, too_long);
    let mut too_short = good.clone();
    too_short[2..4].copy_from_slice(&10u16.to_be_bytes());
    let mut p = Ipv4Packet::new_unchecked(&mut too_short[..]);
    p.fill_checksum();
    send(&mut s, too_short);

    let snmp = s.snmp();
    assert_eq!(snmp.ip.in_receives, 6);
    assert_eq!(
        snmp.ip.in_hdr_errors, 5,
        "truncated, csum, ihl, version, short total"
    );
    assert_eq!(snmp.ip_ext.in_csum_errors, 1);
    assert_eq!(snmp.ip_ext.in_truncated_pkts, 1);
    assert_eq!(snmp.ip.in_delivers, 0);
    assert!(drain(&mut s, Instant::ZERO).is_empty());
}

#[test]
fn icmp_bad_checksum_and_unknown_protocol() {
    let mut s = stack();
    learn_peer(&mut s);
    let mut req = icmp(&Icmpv4Repr::EchoRequest {
        ident: 1,
        seq: 1,
        data: b"abcd",
    });
    req[2] ^= 0x55;
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::ICMP, &req),
        ),
    );
    assert!(drain(&mut s, Instant::ZERO).is_empty());

    let unknown = ipv4(PEER, US, 253, b"experimental payload");
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, ethertype::IPV4, &unknown),
    );
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let (_, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!((ip.src, ip.dst), (US, PEER));
    let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        (p.msg_type(), p.code()),
        (msg_type::DST_UNREACHABLE, unreach_code::PROTOCOL)
    );
    assert_eq!(
        &p.payload()[..unknown.len()],
        &unknown[..],
        "quotes the datagram"
    );

    let snmp = s.snmp();
    assert_eq!((snmp.icmp.in_csum_errors, snmp.icmp.in_errors), (1, 1));
    assert_eq!(snmp.ip.in_unknown_protos, 1);
    assert_eq!(snmp.icmp.out_dest_unreachs, 1);
}

#[test]
fn frames_not_for_us_are_filtered() {
    let mut s = stack();
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, Skb::from_vec(vec![1, 2, 3]));
    let other_mac = MacAddr([2, 9, 9, 9, 9, 9]);
    let mut f = echo_request(1, b"x");
    f.data_mut()[..6].copy_from_slice(&other_mac.0);
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, f);
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, 0x88b5, b"local experimental"),
    );
    // Tagged for VLAN 5, which we do not have.
    let repr = EthernetRepr {
        dst: US_MAC,
        src: PEER_MAC,
        vlan: Some(VlanTag {
            pcp: 0,
            dei: false,
            vid: 5,
        }),
        ethertype: ethertype::ARP,
    };
    let mut buf = vec![0u8; repr.header_len() + 28];
    repr.emit(&mut buf);
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, Skb::from_vec(buf));
    // Not for our IP, forwarding off: InAddrErrors, no ICMP.
    let req = icmp(&Icmpv4Repr::EchoRequest {
        ident: 1,
        seq: 1,
        data: b"",
    });
    let elsewhere = ipv4(PEER, Ipv4Addr::new(203, 0, 113, 9), protocol::ICMP, &req);
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        eth(US_MAC, ethertype::IPV4, &elsewhere),
    );

    let snmp = s.snmp();
    assert_eq!(snmp.dev.rx_packets, 5);
    assert_eq!(snmp.dev.rx_errors, 1);
    assert_eq!(snmp.dev.rx_otherhost, 2);
    assert_eq!(snmp.dev.rx_nohandler, 1);
    assert_eq!(snmp.ip.in_addr_errors, 1);
    assert!(drain(&mut s, Instant::ZERO).is_empty());
}

#[test]
fn ping_socket_round_trip() {
    let mut s = stack();
    let sock = s.ping_open();
    let ident = s.ping_ident(sock).unwrap();
    s.ping_sendmsg(Instant::ZERO, sock, PEER, 1, b"hello")
        .unwrap();
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(parse_arp(&out[0]).target_ip, PEER, "resolution first");
    answer_arp(&mut s, Instant::from_millis(1));
    let out = drain(&mut s, Instant::from_millis(1));
    assert_eq!(out.len(), 1, "the first echo was queued, not dropped");
    let (_, ip, bytes) = parse_icmp(&out[0]);
    assert_eq!((ip.src, ip.dst), (US, PEER));
    let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        (p.msg_type(), p.echo_ident(), p.echo_seq()),
        (msg_type::ECHO_REQUEST, ident, 1)
    );

    // The peer answers.
    let reply = icmp(&Icmpv4Repr::EchoReply {
        ident,
        seq: 1,
        data: b"hello",
    });
    s.netif_receive_skb(
        Instant::from_millis(2),
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::ICMP, &reply),
        ),
    );
    assert_eq!(s.poll_event(), Some(Event::Readable(sock)));
    let msg = s.ping_recvmsg(sock).unwrap();
    assert_eq!(
        (msg.from, msg.seq, msg.kind, &msg.payload[..]),
        (PEER, 1, PingMsgKind::EchoReply, &b"hello"[..])
    );
    assert!(s.ping_recvmsg(sock).is_none());
    // A reply for another identifier is not ours.
    let stray = icmp(&Icmpv4Repr::EchoReply {
        ident: ident.wrapping_add(1),
        seq: 1,
        data: b"",
    });
    s.netif_receive_skb(
        Instant::from_millis(3),
        DeviceId::ETH0,
        eth(
            US_MAC,
            ethertype::IPV4,
            &ipv4(PEER, US, protocol::ICMP, &stray),
        ),
    );
    assert!(s.poll_event().is_none());
    s.ping_close(sock);
    assert!(s.ping_sendmsg(Instant::ZERO, sock, PEER, 2, b"").is_err());
}

#[test]
fn unanswered_arp_reports_host_unreachable_to_the_socket() {
    let mut s = stack();
    let nobody = Ipv4Addr::new(192, 0, 2, 99);
    let sock = s.ping_open();
    let mut now = Instant::ZERO;
    let mut probes = 0;
    for seq in 0..150u16 {
        s.ping_sendmsg(now, sock, nobody, seq, b"x").unwrap();
        if let Some(t) = s.poll_timeout() {
            if t <= now {
                s.handle_timeout(now);
            }
        }
        probes += drain(&mut s, now).len();
        now += Duration::from_millis(10);
    }
    let snmp = s.snmp();
    assert_eq!(
        snmp.arp.unres_qlen_max, 101,
        "pending queue bounded at unres_qlen"
    );
    assert_eq!(snmp.arp.unresolved_discards, 150 - 101);
    assert!(probes >= 2);
    while now < Instant::from_secs(4) {
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        drain(&mut s, now);
        now += Duration::from_millis(100);
    }
    let snmp = s.snmp();
    assert_eq!(snmp.arp.res_failed, 1);
    assert_eq!(snmp.arp.unres_qlen, 0);
    let mut errors = 0;
    while let Some(msg) = s.ping_recvmsg(sock) {
        assert_eq!(
            msg.kind,
            PingMsgKind::Error {
                icmp_type: 3,
                icmp_code: 1
            }
        );
        assert_eq!(msg.from, US);
        assert_eq!(
            msg.kind.io_error_kind(),
            Some(std::io::ErrorKind::HostUnreachable)
        );
        errors += 1;
    }
    assert_eq!(
        errors, 101,
        "every queued echo reported Destination Host Unreachable"
    );
}

#[test]
fn netfilter_local_in_drop_is_counted_and_silences_the_reply() {
    let mut s = stack();
    learn_peer(&mut s);
    s.netfilter_mut().register(
        NfHook::LocalIn,
        0,
        Box::new(|_, skb| {
            if skb.data().get(9) == Some(&protocol::ICMP) {
                Verdict::Drop
            } else {
                Verdict::Accept
            }
        }),
    );
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, echo_request(1, b"x"));
    assert!(drain(&mut s, Instant::ZERO).is_empty());
    assert_eq!(s.snmp().nf.local_in, 1);
    assert_eq!(s.snmp().icmp.in_echos, 0);
}

#[test]
fn tx_ring_stops_and_wakes() {
    let mut s = stack();
    learn_peer(&mut s);
    for i in 0..300 {
        s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, echo_request(i, b"x"));
    }
    let snmp = s.snmp();
    assert_eq!(snmp.dev.tx_queue_stopped, 1, "256-slot ring filled once");
    assert!(s.device(DeviceId::ETH0).queue_stopped());
    assert_eq!(s.tx_pending(), 300, "the rest waits in the qdisc");
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 300);
    let seqs: Vec<u16> = out
        .iter()
        .map(|f| {
            Icmpv4Packet::new_checked(parse_icmp(f).2)
                .unwrap()
                .echo_seq()
        })
        .collect();
    assert_eq!(
        seqs,
        (0..300).collect::<Vec<_>>(),
        "order kept through stop/wake"
    );
    assert!(!s.device(DeviceId::ETH0).queue_stopped());
}

#[test]
fn packet_tap_sees_both_directions() {
    let mut s = stack();
    learn_peer(&mut s);
    let tap = s.packet_tap_open(DeviceId::ETH0, 8).unwrap();
    s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, echo_request(1, b"x"));
    let out = drain(&mut s, Instant::ZERO);
    let captured: Vec<Skb> = std::iter::from_fn(|| s.packet_tap_recv(tap)).collect();
    assert_eq!(captured.len(), 2, "echo in, echo reply out");
    assert_eq!(captured[0].pkt_type, stack_core::skb::PktType::Host);
    assert_eq!(captured[1].pkt_type, stack_core::skb::PktType::Outgoing);
    assert_eq!(captured[1].data(), out[0].data());
}

/// The TCP timer queue: with many sockets, the next deadline is the earliest of them,
/// exactly the due ones fire, and closed sockets leave nothing behind that fires.
#[test]
fn tcp_timers_fire_in_deadline_order_among_many_sockets() {
    use std::net::SocketAddrV4;
    let ms = Duration::from_millis;
    let mut s = stack();
    learn_peer(&mut s);
    // 300 connects, one per millisecond: SYN retransmission timers at 1 s + i ms.
    let mut ids = Vec::new();
    for i in 0..300u64 {
        let now = Instant::ZERO + ms(i);
        let id = s.tcp_socket();
        s.tcp_v4_connect(now, id, SocketAddrV4::new(PEER, 8000 + i as u16))
            .expect("connect");
        ids.push(id);
    }
    let syns = |out: &[Skb]| {
        out.iter()
            .filter(|f| {
                let f = f.data();
                let ihl = usize::from(f[14] & 0x0f) * 4;
                f[12..14] == [0x08, 0x00] && f[23] == protocol::TCP && f[14 + ihl + 13] == 0x02
            })
            .count()
    };
    assert_eq!(syns(&drain(&mut s, Instant::ZERO + ms(300))), 300);
    assert_eq!(s.poll_timeout(), Some(Instant::ZERO + ms(1000)));
    // Close every odd one: their timers must not fire.
    for id in ids.iter().skip(1).step_by(2) {
        s.tcp_abort(Instant::ZERO + ms(300), *id);
    }
    drain(&mut s, Instant::ZERO + ms(300));
    // At 1.1 s the first 101 are due, of which 51 are still open.
    let t = Instant::ZERO + ms(1100);
    assert!(s.poll_timeout().is_some_and(|d| d <= t));
    s.handle_timeout(t);
    assert_eq!(syns(&drain(&mut s, t)), 51);
    // The next is the one opened at 102 ms (101 is closed).
    assert_eq!(s.poll_timeout(), Some(Instant::ZERO + ms(1102)));
    // Everything else by 1.3 s: 150 retransmitted SYNs in all, none twice.
    let t = Instant::ZERO + ms(1300);
    s.handle_timeout(t);
    assert_eq!(syns(&drain(&mut s, t)), 150 - 51);
    // Backed off to 2 s from when each fired: the next round starts at 1.1 s + 2 s.
    assert_eq!(s.poll_timeout(), Some(Instant::ZERO + ms(3100)));
}
