//! Helpers shared by the whole-host tests: a fake peer that builds frames, and parsers
//! that check every checksum of what the stack sends.
#![allow(dead_code)]

use stack_core::DeviceId;
use std::net::Ipv4Addr;

use stack_core::skb::Skb;
use stack_core::wire::arp::{ArpOp, ArpPacket, ArpRepr};
use stack_core::wire::checksum;
use stack_core::wire::ethernet::{ethertype, EthernetFrame, EthernetRepr};
use stack_core::wire::icmpv4::Icmpv4Repr;
use stack_core::wire::ipv4::{protocol, Ipv4Options, Ipv4Packet, Ipv4Repr};
use stack_core::wire::MacAddr;
use stack_core::{Instant, Stack, StackConfig};

pub const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PEER_MAC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
pub const US_MAC: MacAddr = MacAddr([0x02, 0x00, 192, 0, 2, 2]);

pub fn stack() -> Stack {
    let mut s = Stack::new(
        StackConfig::new(StackConfig::default_mac(US), US, 24),
        Instant::ZERO,
        42,
    );
    // The gratuitous ARP sent at start.
    let garp = s
        .poll_transmit_dev(Instant::ZERO, DeviceId::ETH0)
        .expect("gratuitous ARP");
    let arp = parse_arp(&garp);
    assert_eq!(
        (arp.op, arp.sender_ip, arp.target_ip, arp.sender_mac),
        (ArpOp::Request, US, US, US_MAC)
    );
    assert!(s.poll_transmit_dev(Instant::ZERO, DeviceId::ETH0).is_none());
    s
}

/// An Ethernet frame from the peer to `dst`.
pub fn eth(dst: MacAddr, proto: u16, payload: &[u8]) -> Skb {
    eth_from(PEER_MAC, dst, proto, payload)
}

/// An Ethernet frame from `src` to `dst`.
pub fn eth_from(src: MacAddr, dst: MacAddr, proto: u16, payload: &[u8]) -> Skb {
    let repr = EthernetRepr {
        dst,
        src,
        vlan: None,
        ethertype: proto,
    };
    let mut buf = vec![0u8; repr.header_len() + payload.len()];
    repr.emit(&mut buf);
    buf[repr.header_len()..].copy_from_slice(payload);
    Skb::from_vec(buf)
}

/// An IPv4 datagram: TTL 64, DF, ident 7.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    datagram(src, dst, proto, 64, true, 7, payload)
}

/// An IPv4 datagram (no options, not a fragment) carrying `payload`.
pub fn datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    df: bool,
    ident: u16,
    payload: &[u8],
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src,
        dst,
        protocol: proto,
        ttl,
        tos: 0,
        ident,
        dont_frag: df,
        more_frags: false,
        frag_offset: 0,
        payload_len: payload.len(),
        options: Ipv4Options::default(),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    buf[repr.header_len()..].copy_from_slice(payload);
    buf
}

pub fn icmp(repr: &Icmpv4Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    buf
}

pub fn echo_request(seq: u16, data: &[u8]) -> Skb {
    let req = icmp(&Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq,
        data,
    });
    eth(
        US_MAC,
        ethertype::IPV4,
        &ipv4(PEER, US, protocol::ICMP, &req),
    )
}

/// An ARP message from the peer.
pub fn arp_frame(op: ArpOp, dst: MacAddr, target_mac: MacAddr, target_ip: Ipv4Addr) -> Skb {
    arp_from(op, (PEER_MAC, PEER), dst, (target_mac, target_ip))
}

/// An ARP message from `sender` (MAC, IP) about `target`, in a frame to `dst`.
pub fn arp_from(
    op: ArpOp,
    sender: (MacAddr, Ipv4Addr),
    dst: MacAddr,
    target: (MacAddr, Ipv4Addr),
) -> Skb {
    let repr = ArpRepr {
        op,
        sender_mac: sender.0,
        sender_ip: sender.1,
        target_mac: target.0,
        target_ip: target.1,
    };
    let mut buf = [0u8; 28];
    repr.emit(&mut buf);
    eth_from(sender.0, dst, ethertype::ARP, &buf)
}

pub fn parse_eth(skb: &Skb) -> (EthernetRepr, Vec<u8>) {
    let f = EthernetFrame::new_checked(skb.data()).expect("valid Ethernet");
    (EthernetRepr::parse(&f).unwrap(), f.payload().to_vec())
}

pub fn parse_arp(skb: &Skb) -> ArpRepr {
    parse_eth_arp(skb).1
}

/// (eth, ARP) of an ARP frame.
pub fn parse_eth_arp(skb: &Skb) -> (EthernetRepr, ArpRepr) {
    let (e, payload) = parse_eth(skb);
    assert_eq!(e.ethertype, ethertype::ARP);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(&payload[..]).unwrap()).unwrap();
    (e, arp)
}

/// (eth, ip header fields, ICMP bytes) of an IPv4/ICMP frame, checking both checksums.
pub fn parse_icmp(skb: &Skb) -> (EthernetRepr, Ipv4Repr, Vec<u8>) {
    let (e, payload) = parse_eth(skb);
    assert_eq!(e.ethertype, ethertype::IPV4);
    let ip = Ipv4Packet::new_checked(&payload[..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ip.protocol(), protocol::ICMP);
    let icmp_bytes = ip.payload().to_vec();
    assert_eq!(checksum::checksum(&icmp_bytes), 0, "ICMP checksum");
    (e, Ipv4Repr::parse(&ip).unwrap(), icmp_bytes)
}

pub fn drain(s: &mut Stack, now: Instant) -> Vec<Skb> {
    std::iter::from_fn(|| s.poll_transmit_dev(now, DeviceId::ETH0)).collect()
}

/// The peer asks for our address, as a real peer does before its first packet; we learn
/// its address from the request (and answer it).
pub fn learn_peer(s: &mut Stack) {
    s.netif_receive_skb(
        Instant::ZERO,
        DeviceId::ETH0,
        arp_frame(ArpOp::Request, MacAddr::BROADCAST, MacAddr::ZERO, US),
    );
    let out = drain(s, Instant::ZERO);
    assert_eq!(parse_arp(&out[0]).op, ArpOp::Reply);
}

/// Resolve PEER by answering the stack's ARP request.
pub fn answer_arp(s: &mut Stack, now: Instant) {
    s.netif_receive_skb(
        now,
        DeviceId::ETH0,
        arp_frame(ArpOp::Reply, US_MAC, US_MAC, US),
    );
}

/// Deterministic pseudo-random bytes (xorshift32), so a transfer's content is checked,
/// not just its length.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8
        })
        .collect()
}
