//! ICMP for IPv4 (RFC 792).
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |     Type      |     Code      |           Checksum            |
//! +---------------+---------------+-------------------------------+
//! |        rest of header (identifier/sequence, MTU, pointer)     |
//! +---------------------------------------------------------------+
//! |  data: echo payload, or the offending datagram's IP header    |
//! |  plus its first bytes (RFC 792; RFC 1812 section 4.3.2.3)     |
//! +---------------------------------------------------------------+
//! ```
//!
//! The view's buffer must be exactly the ICMP message (the IP payload): the checksum
//! covers all of it.

use core::fmt;

use super::checksum;
use super::{Error, Result};

/// Message types (RFC 792; RFC 1122 section 3.2.2).
pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// Destination Unreachable codes (RFC 792; 6..=13 from RFC 1122 section 3.2.2.1 and
/// RFC 1812 section 5.2.7.1).
pub mod unreach_code {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// "Fragmentation needed and DF set"; carries the next-hop MTU (RFC 1191 section 4).
    pub const FRAG_NEEDED: u8 = 4;
    pub const SRC_ROUTE_FAILED: u8 = 5;
    pub const NET_UNKNOWN: u8 = 6;
    pub const HOST_UNKNOWN: u8 = 7;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time Exceeded codes (RFC 792).
pub mod time_exceeded_code {
    pub const TTL: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// Type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ: Range<usize> = 6..8;
    /// RFC 1191 section 4: the low half of the (formerly unused) rest of header.
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    /// RFC 792 Parameter Problem: the octet where the error was detected.
    pub const POINTER: usize = 4;
}

/// A read/write view of an ICMP message held in `T`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wrap without checking; accessors may panic below 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wrap after [`Icmpv4Packet::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` below the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for Echo, Timestamp and Information messages).
    pub fn echo_ident(&self) -> u16 {
        self.read_u16(field::ECHO_IDENT.start)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        self.read_u16(field::ECHO_SEQ.start)
    }

    /// Next-hop MTU of a "fragmentation needed" Destination Unreachable (RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        self.read_u16(field::NEXT_HOP_MTU.start)
    }

    /// Pointer of a Parameter Problem (RFC 792).
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// Bytes 4..8 as one word (a Redirect's gateway address, for instance).
    pub fn rest_of_header(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::REST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Everything after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The checksum covers the whole message, header included (RFC 792).
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_echo_seq(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
    }

    /// Recompute the checksum over the whole buffer, with the field taken as zero.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Icmpv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.check_len().is_err() {
            return write!(
                f,
                "Icmpv4Packet(truncated, {} bytes)",
                self.as_bytes().len()
            );
        }
        f.debug_struct("Icmpv4Packet")
            .field("type", &self.msg_type())
            .field("code", &self.code())
            .field("rest", &format_args!("{:#010x}", self.rest_of_header()))
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// A decoded ICMP message. For the error messages `data` is the quoted original IP
/// header plus the leading bytes of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// `next_hop_mtu` is meaningful for [`unreach_code::FRAG_NEEDED`] (RFC 1191) and 0
    /// otherwise.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
    /// Code 0 ("pointer indicates the error", RFC 792).
    ParamProblem {
        pointer: u8,
        data: &'a [u8],
    },
    /// Everything else, kept whole so it can be counted or re-emitted unchanged.
    Other {
        msg_type: u8,
        code: u8,
        rest: u32,
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Decode by type. Re-checks the length (safe on an unchecked view); does NOT verify
    /// the checksum (`icmp_rcv` counts that separately as InCsumErrors).
    ///
    /// Messages whose code RFC 792 fixes at 0 (Echo, Parameter Problem) but which carry
    /// another code decode as `Other`, so nothing is lost. For Destination Unreachable
    /// the unused upper half of the rest of header (RFC 1191 section 4) is not kept.
    /// Whether the quoted datagram is long enough to use is the handler's business
    /// (`icmp_unreach` wants at least an IP header).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &'a Icmpv4Packet<&'a T>) -> Result<Self> {
        packet.check_len()?;
        let data = packet.payload();
        let code = packet.code();
        Ok(match (packet.msg_type(), code) {
            (msg_type::ECHO_REQUEST, 0) => Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            },
            (msg_type::ECHO_REPLY, 0) => Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            },
            (msg_type::DST_UNREACHABLE, _) => Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu: packet.next_hop_mtu(),
                data,
            },
            (msg_type::TIME_EXCEEDED, _) => Icmpv4Repr::TimeExceeded { code, data },
            (msg_type::PARAM_PROBLEM, 0) => Icmpv4Repr::ParamProblem {
                pointer: packet.pointer(),
                data,
            },
            (msg_type, code) => Icmpv4Repr::Other {
                msg_type,
                code,
                rest: packet.rest_of_header(),
                data,
            },
        })
    }

    /// The message type this repr emits.
    pub fn msg_type(&self) -> u8 {
        match self {
            Icmpv4Repr::EchoRequest { .. } => msg_type::ECHO_REQUEST,
            Icmpv4Repr::EchoReply { .. } => msg_type::ECHO_REPLY,
            Icmpv4Repr::DstUnreachable { .. } => msg_type::DST_UNREACHABLE,
            Icmpv4Repr::TimeExceeded { .. } => msg_type::TIME_EXCEEDED,
            Icmpv4Repr::ParamProblem { .. } => msg_type::PARAM_PROBLEM,
            Icmpv4Repr::Other { msg_type, .. } => *msg_type,
        }
    }

    /// True for the error messages RFC 1122 section 3.2.2 says must never be answered
    /// with another ICMP error.
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            msg_type::DST_UNREACHABLE
                | msg_type::SOURCE_QUENCH
                | msg_type::REDIRECT
                | msg_type::TIME_EXCEEDED
                | msg_type::PARAM_PROBLEM
        )
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. }
            | Icmpv4Repr::EchoReply { data, .. }
            | Icmpv4Repr::DstUnreachable { data, .. }
            | Icmpv4Repr::TimeExceeded { data, .. }
            | Icmpv4Repr::ParamProblem { data, .. }
            | Icmpv4Repr::Other { data, .. } => data,
        }
    }

    /// Header plus data.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data().len()
    }

    /// Write header, data and checksum into `buf[..self.buffer_len()]`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Self::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        assert!(buf.len() >= len, "icmpv4: buffer too short");
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..len]);
        let (code, rest) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq, .. }
            | Icmpv4Repr::EchoReply { ident, seq, .. } => {
                (0, (u32::from(ident) << 16) | u32::from(seq))
            }
            Icmpv4Repr::DstUnreachable {
                code, next_hop_mtu, ..
            } => (code, u32::from(next_hop_mtu)),
            Icmpv4Repr::TimeExceeded { code, .. } => (code, 0),
            Icmpv4Repr::ParamProblem { pointer, .. } => (0, u32::from(pointer) << 24),
            Icmpv4Repr::Other { code, rest, .. } => (code, rest),
        };
        p.set_msg_type(self.msg_type());
        p.set_code(code);
        p.set_rest_of_header(rest);
        p.payload_mut().copy_from_slice(self.data());
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Echo Request ident 0x1234 seq 1 with payload "abcdefgh". Checksum worked out by
    /// hand: 0800 + 1234 + 0001 + 6162 + 6364 + 6566 + 6768 = abca (end-around carry),
    /// inverted 5435.
    const ECHO: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, // header
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, // "abcdefgh"
    ];

    #[test]
    fn known_echo_request() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0x5435);
        let r = Icmpv4Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq: 1,
                data: b"abcdefgh"
            }
        );
        let mut out = [0u8; 16];
        r.emit(&mut out);
        assert_eq!(out, ECHO);
    }

    #[test]
    fn echo_reply_checksum_incremental() {
        // Turning a request into a reply changes only the type word (0x0800 -> 0x0000),
        // as Linux's icmp_echo does.
        let mut b = ECHO;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(msg_type::ECHO_REPLY);
        let c = checksum::update16(p.checksum(), 0x0800, 0x0000);
        p.set_checksum(c);
        assert!(p.verify_checksum());
        assert!(matches!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&b[..]).unwrap()),
            Ok(Icmpv4Repr::EchoReply { seq: 1, .. })
        ));
    }

    #[test]
    fn errors_and_other_types() {
        assert_eq!(
            Icmpv4Packet::new_checked(&ECHO[..7]).unwrap_err(),
            Error::Truncated
        );
        let hdr_only = Icmpv4Packet::new_checked(&ECHO[..8]).unwrap();
        assert!(hdr_only.payload().is_empty());

        let quoted = [0x45u8; 28];
        let frag_needed = Icmpv4Repr::DstUnreachable {
            code: unreach_code::FRAG_NEEDED,
            next_hop_mtu: 1400,
            data: &quoted,
        };
        let mut buf = vec![0u8; frag_needed.buffer_len()];
        frag_needed.emit(&mut buf);
        assert_eq!(&buf[..8], &[3, 4, buf[2], buf[3], 0, 0, 0x05, 0x78]);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(Icmpv4Repr::parse(&p).unwrap().is_error());

        let pp = Icmpv4Repr::ParamProblem {
            pointer: 20,
            data: &quoted,
        };
        pp.emit(&mut buf);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.pointer(), 20);
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), pp);

        // An echo with a non-zero code is kept whole as Other.
        let mut b = ECHO;
        b[1] = 7;
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(matches!(
            Icmpv4Repr::parse(&p),
            Ok(Icmpv4Repr::Other {
                msg_type: 8,
                code: 7,
                rest: 0x1234_0001,
                ..
            })
        ));
    }

    /// An owned description of a repr, so proptest can generate and shrink it.
    #[derive(Clone, Debug)]
    struct Case {
        variant: u8,
        a: u16,
        b: u16,
        code: u8,
        rest: u32,
        other_type: u8,
        data: Vec<u8>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            0u8..6,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u32>(),
            // Types that no other variant claims.
            prop_oneof![Just(4u8), Just(5), Just(13), Just(14), 15u8..=255],
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(variant, a, b, code, rest, other_type, data)| Case {
                variant,
                a,
                b,
                code,
                rest,
                other_type,
                data,
            })
    }

    fn build(c: &Case) -> Icmpv4Repr<'_> {
        let data = &c.data[..];
        match c.variant {
            0 => Icmpv4Repr::EchoRequest {
                ident: c.a,
                seq: c.b,
                data,
            },
            1 => Icmpv4Repr::EchoReply {
                ident: c.a,
                seq: c.b,
                data,
            },
            2 => Icmpv4Repr::DstUnreachable {
                code: c.code,
                next_hop_mtu: c.a,
                data,
            },
            3 => Icmpv4Repr::TimeExceeded { code: c.code, data },
            4 => Icmpv4Repr::ParamProblem {
                pointer: c.code,
                data,
            },
            _ => Icmpv4Repr::Other {
                msg_type: c.other_type,
                code: c.code,
                rest: c.rest,
                data,
            },
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(c in case()) {
            let repr = build(&c);
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf);
            let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.verify_checksum());
                let _ = (p.echo_ident(), p.echo_seq(), p.rest_of_header(), p.payload());
                let _ = (p.next_hop_mtu(), p.pointer());
                let _ = format!("{p:?}");
                let r = Icmpv4Repr::parse(&p).unwrap();
                prop_assert_eq!(r.buffer_len(), data.len());
            }
            let unchecked = Icmpv4Packet::new_unchecked(&data[..]);
            let _ = Icmpv4Repr::parse(&unchecked);
            let _ = format!("{unchecked:?}");
        }
    }
}
