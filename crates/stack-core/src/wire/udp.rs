//! UDP (RFC 768).
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |   Source Port   |    Dest Port    |
//! +--------+--------+--------+--------+
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! ```
//!
//! The view's buffer may be longer than the datagram: [`UdpPacket::payload`] and the
//! checksum stop at the Length field, as `__udp4_lib_rcv` trims to `ulen` in Linux.

use core::fmt;

use super::checksum;
use super::ipv4::protocol;
use super::{Error, Ipv4Addr, Result};

pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A read/write view of a UDP datagram held in `T`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without checking; accessors may panic if the Length field disagrees with
    /// the buffer.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wrap after [`UdpPacket::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// In order: buffer below 8 bytes is `Truncated`; a Length field below 8 (it counts
    /// the header, RFC 768) is `Malformed`; a Length field past the buffer is
    /// `Truncated` (Linux `__udp4_lib_rcv`: `ulen > skb->len` is a short packet).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ulen = usize::from(self.len());
        if ulen < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if ulen > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT.start)
    }

    /// The Length field: header plus data.
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    /// True if the Length field says there is no data.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// `8..Length`.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Verify over the pseudo-header and `..Length`. A transmitted checksum of zero
    /// means the sender computed none and always verifies (RFC 768 "Checksum"; Linux
    /// accepts it too, `udp4_csum_init` with `uh->check == 0`).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, protocol::UDP, len),
            checksum::sum(&self.buffer.as_ref()[..usize::from(len)]),
        );
        checksum::fold(s) == 0xffff
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.write_u16(field::SRC_PORT.start, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.write_u16(field::DST_PORT.start, v);
    }

    pub fn set_len(&mut self, v: u16) {
        self.write_u16(field::LENGTH.start, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    /// Compute the checksum over the pseudo-header and `..Length`. A computed zero is
    /// sent as 0xffff, since zero on the wire means "no checksum" (RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, protocol::UDP, len),
            checksum::sum(&self.buffer.as_ref()[..usize::from(len)]),
        );
        let c = match !checksum::fold(s) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    /// `8..Length`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for UdpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(e) = self.check_len() {
            return write!(f, "UdpPacket({e}, {} bytes)", self.as_bytes().len());
        }
        f.debug_struct("UdpPacket")
            .field("src_port", &self.src_port())
            .field("dst_port", &self.dst_port())
            .field("len", &self.len())
            .field("checksum", &format_args!("{:#06x}", self.checksum()))
            .finish()
    }
}

/// A decoded UDP header. The length and checksum are derived when emitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Decode the ports. Re-checks lengths (safe on an unchecked view); does NOT verify
    /// the checksum, which needs the IP addresses (`UdpPacket::verify_checksum`).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &UdpPacket<&T>) -> Result<UdpRepr> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the 8-byte header with Length = 8 + `payload_len` and checksum 0 (to be
    /// filled later, by [`UdpPacket::fill_checksum`] or by a device offload).
    ///
    /// # Panics
    /// If `buf` is shorter than 8 bytes or the datagram would exceed 65535 bytes.
    pub fn emit_header(&self, buf: &mut [u8], payload_len: usize) {
        assert!(buf.len() >= HEADER_LEN, "udp: buffer too short");
        let len = u16::try_from(HEADER_LEN + payload_len).expect("udp: datagram over 65535");
        let mut p = UdpPacket::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
    }

    /// Write the header and fill the checksum. `buf` holds 8 bytes of header space
    /// followed by the `payload_len` bytes of payload, already in place.
    ///
    /// # Panics
    /// If `buf` is shorter than `8 + payload_len` or that exceeds 65535.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize, src: Ipv4Addr, dst: Ipv4Addr) {
        let total = HEADER_LEN + payload_len;
        assert!(buf.len() >= total, "udp: buffer too short for payload");
        self.emit_header(buf, payload_len);
        UdpPacket::new_unchecked(&mut buf[..total]).fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    /// A DNS-style query 0x1234 -> 53 carrying "hi!", checksum worked out by hand over
    /// pseudo-header c0a8 0001 c0a8 00c7 0011 000b and header+data
    /// 1234 0035 000b 0000 6869 2100: sum 0x21e11, folded 0x1e13, inverted 0xe1ec.
    const DATAGRAM: [u8; 11] = [
        0x12, 0x34, 0x00, 0x35, 0x00, 0x0b, 0xe1, 0xec, b'h', b'i', b'!',
    ];

    #[test]
    fn known_datagram() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 0x1234);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 11);
        assert_eq!(p.payload(), b"hi!");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(192, 168, 0, 198)));
        let r = UdpRepr::parse(&p).unwrap();
        let mut out = [0u8; 11];
        out[8..].copy_from_slice(b"hi!");
        r.emit(&mut out, 3, SRC, DST);
        assert_eq!(out, DATAGRAM);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = DATAGRAM;
        b[6] = 0;
        b[7] = 0;
        assert!(UdpPacket::new_checked(&b[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_sent_as_ffff() {
        // Choose the data word so that the sum before inversion is 0xffff.
        let mut b = [0u8; 10];
        let r = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        r.emit_header(&mut b, 2);
        let partial = checksum::fold(checksum::combine(
            checksum::pseudo_header_sum(SRC, DST, protocol::UDP, 10),
            checksum::sum(&b),
        ));
        b[8..].copy_from_slice(&(!partial).to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        b[5] = 12;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        // Longer buffer than Length (link padding): fine, payload stops at Length.
        let mut long = DATAGRAM.to_vec();
        long.extend_from_slice(&[0; 5]);
        let p = UdpPacket::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload(), b"hi!");
        assert!(p.verify_checksum(SRC, DST));
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            src_port in any::<u16>(),
            dst_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            src in any::<u32>(),
            dst in any::<u32>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = UdpRepr { src_port, dst_port };
            let mut buf = vec![0u8; HEADER_LEN + payload.len()];
            buf[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut buf, payload.len(), src, dst);
            let p = UdpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_ne!(p.checksum(), 0);
            prop_assert!(p.verify_checksum(src, dst));
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert_eq!(UdpRepr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..40),
            fix_len in any::<bool>(),
        ) {
            // Half the cases get a plausible Length so the accessors are exercised.
            if fix_len && data.len() >= HEADER_LEN {
                let l = HEADER_LEN + usize::from(data[0]) % (data.len() - HEADER_LEN + 1);
                data[4..6].copy_from_slice(&(l as u16).to_be_bytes());
            }
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.is_empty());
                let _ = (p.payload(), p.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
                let _ = format!("{p:?}");
                prop_assert!(UdpRepr::parse(&p).is_ok());
            }
            let unchecked = UdpPacket::new_unchecked(&data[..]);
            let _ = UdpRepr::parse(&unchecked);
            let _ = format!("{unchecked:?}");
        }
    }
}
