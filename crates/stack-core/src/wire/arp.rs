//! ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses only.
//!
//! ```text
//!  0        2        4    5    6        8           14       18          24       28
//!  +--------+--------+----+----+--------+-----------+--------+-----------+--------+
//!  | htype  | ptype  |hlen|plen|  op    | sender MAC| sndr IP| target MAC| tgt IP |
//!  +--------+--------+----+----+--------+-----------+--------+-----------+--------+
//! ```
//!
//! RFC 826 "Packet Reception": a packet whose hardware or protocol type (or address
//! lengths) we do not speak is discarded, which here is `Error::Unsupported`.

use super::{Error, Ipv4Addr, MacAddr, Result};

/// Length of an Ethernet/IPv4 ARP packet (Ethernet pads it to 46 bytes on the wire; the
/// padding is not part of the packet).
pub const PACKET_LEN: usize = 28;

/// `ar$hrd` for Ethernet (RFC 826; IANA "Hardware Types").
pub const HTYPE_ETHERNET: u16 = 1;
/// `ar$pro`: the EtherType of IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// `ar$op` (RFC 826; RARP and InARP codes fall into `Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
    Other(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> ArpOp {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => ArpOp::Other(other),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(op: ArpOp) -> u16 {
        match op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Other(v) => v,
        }
    }
}

/// A read/write view of an ARP packet held in `T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap without checking; accessors may panic if the buffer is short.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wrap after [`ArpPacket::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` below 28 bytes; `Unsupported` unless Ethernet (1) / IPv4 (0x0800) with
    /// 6- and 4-byte addresses (RFC 826 "Packet Reception": the receiver checks
    /// `ar$hrd`, `ar$hln`, `ar$pro` and `ar$pln` before anything else).
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.htype() != HTYPE_ETHERNET
            || self.ptype() != PTYPE_IPV4
            || self.hlen() != 6
            || self.plen() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn htype(&self) -> u16 {
        self.read_u16(field::HTYPE.start)
    }

    pub fn ptype(&self) -> u16 {
        self.read_u16(field::PTYPE.start)
    }

    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn op(&self) -> ArpOp {
        ArpOp::from(self.read_u16(field::OPER.start))
    }

    pub fn sender_mac(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        self.read_ip(field::SPA.start)
    }

    pub fn target_mac(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        self.read_ip(field::TPA.start)
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn read_ip(&self, at: usize) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Write the fixed Ethernet/IPv4 type and length fields.
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    pub fn set_op(&mut self, op: ArpOp) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(op).to_be_bytes());
    }

    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(mac.as_bytes());
    }

    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    pub fn set_target_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(mac.as_bytes());
    }

    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// A decoded Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Decode; re-checks the view, so it is safe on an unchecked one too.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr> {
        packet.check_len()?;
        Ok(ArpRepr {
            op: packet.op(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        })
    }

    /// Always [`PACKET_LEN`].
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Write the 28-byte packet into `buf[..28]`.
    ///
    /// # Panics
    /// If `buf` is shorter than 28 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(buf.len() >= PACKET_LEN, "arp: buffer too short");
        let mut p = ArpPacket::new_unchecked(&mut buf[..PACKET_LEN]);
        p.set_ethernet_ipv4();
        p.set_op(self.op);
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// "Who has 192.168.1.1? Tell 192.168.1.100", as sent by a Linux host (the target
    /// hardware address of a request is zero, RFC 826 leaves it unspecified).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0xc0, 0xa8, 0x01, 0x64, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01, // target
    ];

    #[test]
    fn parse_real_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            ArpRepr {
                op: ArpOp::Request,
                sender_mac: MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]),
                sender_ip: Ipv4Addr::new(192, 168, 1, 100),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(192, 168, 1, 1),
            }
        );
        let mut out = [0u8; 28];
        r.emit(&mut out);
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn check_errors() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        // Ethernet pads ARP to 46 bytes: trailing bytes are fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert!(ArpPacket::new_checked(&padded[..]).is_ok());
        for (at, val) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[at] = val;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).unwrap_err(),
                Error::Unsupported,
                "byte {at}"
            );
        }
    }

    #[test]
    fn op_conversions() {
        assert_eq!(ArpOp::from(1), ArpOp::Request);
        assert_eq!(ArpOp::from(2), ArpOp::Reply);
        assert_eq!(ArpOp::from(3), ArpOp::Other(3));
        assert_eq!(u16::from(ArpOp::Reply), 2);
    }

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            op in any::<u16>().prop_map(ArpOp::from),
            sender_mac in mac(), sender_ip in ip(), target_mac in mac(), target_ip in ip(),
        ) {
            let repr = ArpRepr { op, sender_mac, sender_ip, target_mac, target_ip };
            let mut buf = [0u8; PACKET_LEN];
            repr.emit(&mut buf);
            let p = ArpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ArpRepr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (p.op(), p.sender_mac(), p.sender_ip(), p.target_mac(), p.target_ip());
            }
            let _ = ArpRepr::parse(&ArpPacket::new_unchecked(&data[..]));
        }

        #[test]
        fn valid_header_any_body_parses(body in any::<[u8; 20]>()) {
            let mut b = REQUEST;
            b[8..].copy_from_slice(&body);
            prop_assert!(ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()).is_ok());
        }
    }
}
