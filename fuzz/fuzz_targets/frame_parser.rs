//! Feed arbitrary bytes through every wire parser the receive path uses, in the order
//! the stack would: Ethernet, then ARP or IPv4 by EtherType, then ICMP, UDP or TCP by
//! protocol. Parsing must never panic, and every repr that parses must survive
//! emit -> parse unchanged (so `emit` and `parse` agree on every field).

#![no_main]

use libfuzzer_sys::fuzz_target;
use stack_core::wire::arp::{ArpPacket, ArpRepr};
use stack_core::wire::ethernet::{ethertype, EthernetFrame, EthernetRepr};
use stack_core::wire::icmpv4::{Icmpv4Packet, Icmpv4Repr};
use stack_core::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use stack_core::wire::tcp::{self, TcpPacket, TcpRepr};
use stack_core::wire::udp::{UdpPacket, UdpRepr};
use stack_core::wire::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let _ = (frame.dst(), frame.src(), frame.vlan(), frame.header_len());
    if let Ok(repr) = EthernetRepr::parse(&frame) {
        let mut buf = [0u8; 18];
        repr.emit(&mut buf);
        let again =
            EthernetFrame::new_checked(&buf[..repr.header_len()]).expect("emitted ethernet");
        assert_eq!(EthernetRepr::parse(&again), Ok(repr));
    }
    match frame.inner_ethertype() {
        ethertype::ARP => arp(frame.payload()),
        ethertype::IPV4 => ip(frame.payload()),
        _ => {}
    }
});

fn arp(data: &[u8]) {
    let Ok(packet) = ArpPacket::new_checked(data) else {
        return;
    };
    let repr = ArpRepr::parse(&packet).expect("checked arp parses");
    let mut buf = [0u8; 28];
    repr.emit(&mut buf);
    let again = ArpPacket::new_checked(&buf[..]).expect("emitted arp");
    assert_eq!(ArpRepr::parse(&again), Ok(repr));
}

fn ip(data: &[u8]) {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.verify_checksum(),
        packet.is_fragment(),
        packet.dscp(),
        packet.ecn(),
    );
    for opt in ipv4::options_iter(packet.options()) {
        if opt.is_err() {
            break;
        }
    }
    let repr = Ipv4Repr::parse(&packet).expect("checked ipv4 parses");
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    let again = Ipv4Packet::new_checked(&buf[..]).expect("emitted ipv4");
    assert!(again.verify_checksum());
    assert_eq!(Ipv4Repr::parse(&again), Ok(repr));

    let (src, dst, payload) = (packet.src(), packet.dst(), packet.payload());
    match packet.protocol() {
        ipv4::protocol::ICMP => icmp(payload),
        ipv4::protocol::UDP => udp(payload, src, dst),
        ipv4::protocol::TCP => tcp(payload, src, dst),
        _ => {}
    }
}

fn icmp(data: &[u8]) {
    let Ok(packet) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.verify_checksum(),
        packet.echo_ident(),
        packet.echo_seq(),
    );
    let repr = Icmpv4Repr::parse(&packet).expect("checked icmp parses");
    let _ = repr.is_error();
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    let again = Icmpv4Packet::new_checked(&buf[..]).expect("emitted icmp");
    assert!(again.verify_checksum());
    assert_eq!(Icmpv4Repr::parse(&again), Ok(repr));
}

fn udp(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(packet) = UdpPacket::new_checked(data) else {
        return;
    };
    let _ = packet.verify_checksum(src, dst);
    let repr = UdpRepr::parse(&packet).expect("checked udp parses");
    let payload = packet.payload();
    let mut buf = vec![0u8; 8 + payload.len()];
    buf[8..].copy_from_slice(payload);
    repr.emit(&mut buf, payload.len(), src, dst);
    let again = UdpPacket::new_checked(&buf[..]).expect("emitted udp");
    assert!(again.verify_checksum(src, dst));
    assert_eq!(UdpRepr::parse(&again), Ok(repr));
}

fn tcp(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(packet) = TcpPacket::new_checked(data) else {
        return;
    };
    let _ = packet.verify_checksum(src, dst);
    for opt in tcp::options_iter(packet.options()) {
        if opt.is_err() {
            break;
        }
    }
    let repr = TcpRepr::parse(&packet).expect("checked tcp parses");
    let hl = repr.header_len();
    assert!(hl <= tcp::MAX_HEADER_LEN);
    let payload = packet.payload();
    let mut buf = vec![0u8; hl + payload.len()];
    buf[hl..].copy_from_slice(payload);
    repr.emit(&mut buf, payload.len(), src, dst);
    let again = TcpPacket::new_checked(&buf[..]).expect("emitted tcp");
    assert!(again.verify_checksum(src, dst));
    assert!(tcp::options_iter(again.options()).all(|o| o.is_ok()));
    // SACK blocks that do not fit beside the other options are dropped on emit.
    let mut expected = repr;
    expected.sack_blocks.truncate(repr.sack_blocks_emitted());
    assert_eq!(TcpRepr::parse(&again), Ok(expected));
}
