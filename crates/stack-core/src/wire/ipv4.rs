//! IPv4 headers (RFC 791 section 3.1) and their options.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (0..40 bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The view's buffer may be longer than the datagram (Ethernet pads short frames to 60
//! bytes): [`Ipv4Packet::payload`] stops at Total Length, as `ip_rcv_core` trims the skb
//! to `tot_len` in Linux.

use core::fmt;

use super::checksum;
use super::{Error, Ipv4Addr, Result};

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Option type octets (RFC 791 section 3.1 "Options"; RFC 2113 for Router Alert).
pub mod option_kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const RECORD_ROUTE: u8 = 7;
    pub const TIMESTAMP: u8 = 68;
    pub const SECURITY: u8 = 130;
    pub const LSRR: u8 = 131;
    pub const STREAM_ID: u8 = 136;
    pub const SSRR: u8 = 137;
    pub const ROUTER_ALERT: u8 = 148;
}

/// A header without options (IHL = 5).
pub const MIN_HEADER_LEN: usize = 20;
/// The largest header IHL can describe (15 words).
pub const MAX_HEADER_LEN: usize = 60;
/// Room for options: [`MAX_HEADER_LEN`] - [`MIN_HEADER_LEN`].
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - MIN_HEADER_LEN;

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const OPTIONS_START: usize = 20;
}

/// Bits of the flags/fragment-offset word (RFC 791 section 3.1 "Flags").
const FLAG_RESERVED: u16 = 0x8000;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 datagram held in `T`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap without checking; accessors may panic if the header is inconsistent with the
    /// buffer. Use [`Ipv4Packet::new_checked`] for untrusted input, or call
    /// [`Ipv4Packet::check_len`] to tell the failure cases apart.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wrap after [`Ipv4Packet::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validate the header against the buffer, checking in this order (the first failure
    /// is returned, so a caller can count each case as Linux's `ip_rcv_core` does):
    ///
    /// 1. buffer shorter than 20 bytes: `Truncated`;
    /// 2. version is not 4: `Malformed`;
    /// 3. IHL below 5 (RFC 791: "the minimum value for a correct header is 5"): `Malformed`;
    /// 4. buffer shorter than IHL * 4: `Truncated`;
    /// 5. Total Length below IHL * 4: `Malformed`;
    /// 6. buffer shorter than Total Length: `Truncated`.
    ///
    /// The checksum is not checked: see [`Ipv4Packet::verify_checksum`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        if self.ihl() < 5 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes past Total Length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Internet Header Length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated Services code point (RFC 2474): the upper 6 bits of the TOS octet.
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit Congestion Notification (RFC 3168): the lower 2 bits of the TOS octet.
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// The whole second octet (Linux's `iph->tos`).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        self.read_u16(field::TOTAL_LEN.start)
    }

    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT.start)
    }

    /// The reserved flag bit, which RFC 791 says must be zero.
    pub fn reserved_flag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG.start) & FLAG_RESERVED != 0
    }

    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG.start) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG.start) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units, RFC 791 section 3.1).
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLAGS_FRAG.start) & FRAG_OFFSET_MASK) * 8
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    pub fn src(&self) -> Ipv4Addr {
        self.read_ip(field::SRC.start)
    }

    pub fn dst(&self) -> Ipv4Addr {
        self.read_ip(field::DST.start)
    }

    /// The option bytes (`20..header_len`), padding included. Walk them with
    /// [`options_iter`].
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS_START..self.header_len()]
    }

    /// `header_len..total_len`: trailing link-layer padding is excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// True if the header checksum verifies: the one's-complement sum of the header,
    /// checksum field included, is all ones (RFC 791 "Header Checksum"; RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buffer.as_ref()[..self.header_len()])) == 0xffff
    }

    /// A fragment is any datagram with MF set or a non-zero offset (RFC 791 section 2.3;
    /// Linux `ip_is_fragment`).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
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

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Version 4 and IHL = `header_len / 4` (`header_len` a multiple of 4 in 20..=60).
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::TOTAL_LEN.start, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT.start, ident);
    }

    /// Write the flags and the fragment offset, given in bytes. The offset is stored in
    /// 8-byte units (RFC 791), so its low 3 bits are dropped; the reserved bit is cleared.
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset / 8) & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.write_u16(field::FLAGS_FRAG.start, v);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the TTL and adjust the header checksum incrementally (RFC 1624 eqn. 3 over
    /// the TTL/protocol word), so the rest of the header need not be summed again.
    pub fn set_ttl_update_checksum(&mut self, ttl: u8) {
        let b = self.buffer.as_ref();
        let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        let new = u16::from_be_bytes([ttl, b[field::PROTOCOL]]);
        let csum = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl);
        self.set_checksum(csum);
    }

    /// `ip_decrease_ttl`: one hop less, checksum adjusted incrementally; returns the new
    /// TTL. The caller has made sure the TTL is above 1 (RFC 1812 section 5.3.1).
    pub fn decrease_ttl(&mut self) -> u8 {
        let ttl = self.ttl().saturating_sub(1);
        self.set_ttl_update_checksum(ttl);
        ttl
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    pub fn set_checksum(&mut self, csum: u16) {
        self.write_u16(field::CHECKSUM.start, csum);
    }

    /// Recompute the header checksum over `..header_len` (RFC 791 "Header Checksum": the
    /// field is taken as zero while summing). To adjust it after changing one field (the
    /// TTL on forwarding) use [`checksum::update16`] instead, as `ip_decrease_ttl` does.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    pub fn set_src(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    pub fn set_dst(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS_START..hl]
    }

    /// `header_len..total_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }

    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Ipv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(e) = self.check_len() {
            return write!(f, "Ipv4Packet({e}, {} bytes)", self.buffer.as_ref().len());
        }
        f.debug_struct("Ipv4Packet")
            .field("src", &self.src())
            .field("dst", &self.dst())
            .field("protocol", &self.protocol())
            .field("ttl", &self.ttl())
            .field("total_len", &self.total_len())
            .field("ident", &self.ident())
            .field("df", &self.dont_frag())
            .field("mf", &self.more_frags())
            .field("frag_offset", &self.frag_offset())
            .finish()
    }
}

/// One IPv4 option (RFC 791 section 3.1 "Options").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Option<'a> {
    /// End of Option List (type 0): the walk stops here; what follows is padding.
    End,
    /// No Operation (type 1).
    Nop,
    /// Record Route (type 7). `pointer` is 1-based from the option's type octet, so the
    /// first free slot is `data[pointer - 4..]`.
    RecordRoute { pointer: u8, data: &'a [u8] },
    /// Internet Timestamp (type 68). `overflow` and `flags` are the two nibbles of the
    /// fourth octet; `data` is the timestamp (and address) slots.
    Timestamp {
        pointer: u8,
        overflow: u8,
        flags: u8,
        data: &'a [u8],
    },
    /// Router Alert (type 148, RFC 2113), value 0 = "router shall examine packet".
    RouterAlert(u16),
    /// Any other option: `data` excludes the type and length octets.
    Other { kind: u8, data: &'a [u8] },
}

/// Walk option bytes (see [`Ipv4OptionsIter`]).
pub fn options_iter(opts: &[u8]) -> Ipv4OptionsIter<'_> {
    Ipv4OptionsIter {
        rest: opts,
        done: false,
    }
}

/// Iterator over IPv4 options, after Linux `ip_options_compile`: yields
/// `Err(Malformed)` (and then stops) on a length octet below 2, an option running past
/// the end, a Record Route shorter than 3 bytes or with a pointer below 4, a Timestamp
/// shorter than 4 bytes or with a pointer below 5, or a Router Alert whose length is not
/// 4 (RFC 2113 section 2.1). Stops after yielding `End`.
#[derive(Clone, Debug)]
pub struct Ipv4OptionsIter<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Ipv4OptionsIter<'a> {
    fn fail(&mut self) -> Option<Result<Ipv4Option<'a>>> {
        self.done = true;
        Some(Err(Error::Malformed))
    }
}

impl<'a> Iterator for Ipv4OptionsIter<'a> {
    type Item = Result<Ipv4Option<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.rest;
        let kind = *rest.first()?;
        match kind {
            option_kind::END => {
                self.done = true;
                return Some(Ok(Ipv4Option::End));
            }
            option_kind::NOP => {
                self.rest = &rest[1..];
                return Some(Ok(Ipv4Option::Nop));
            }
            _ => {}
        }
        // Every other option is type, length, data (RFC 791 "case 2").
        let Some(&len) = rest.get(1) else {
            return self.fail();
        };
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            return self.fail();
        }
        let body = &rest[2..len];
        self.rest = &rest[len..];
        let opt = match kind {
            option_kind::RECORD_ROUTE => {
                // ip_options_compile: optlen < 3 or pointer < 4 is a parameter problem.
                match body.split_first() {
                    Some((&pointer, data)) if pointer >= 4 => {
                        Ipv4Option::RecordRoute { pointer, data }
                    }
                    _ => return self.fail(),
                }
            }
            option_kind::TIMESTAMP => {
                // ip_options_compile: optlen < 4 or pointer < 5 is a parameter problem.
                if body.len() < 2 || body[0] < 5 {
                    return self.fail();
                }
                Ipv4Option::Timestamp {
                    pointer: body[0],
                    overflow: body[1] >> 4,
                    flags: body[1] & 0x0f,
                    data: &body[2..],
                }
            }
            option_kind::ROUTER_ALERT => {
                if body.len() != 2 {
                    return self.fail();
                }
                Ipv4Option::RouterAlert(u16::from_be_bytes([body[0], body[1]]))
            }
            _ => Ipv4Option::Other { kind, data: body },
        };
        Some(Ok(opt))
    }
}

/// Up to 40 bytes of raw option bytes, stored inline (no heap).
#[derive(Clone, Copy)]
pub struct Ipv4Options {
    len: u8,
    bytes: [u8; MAX_OPTIONS_LEN],
}

impl Ipv4Options {
    /// Copy `bytes`; `Malformed` if longer than 40 (IHL cannot describe more). The
    /// content is not validated: use [`Ipv4Options::iter`].
    pub fn new(bytes: &[u8]) -> Result<Ipv4Options> {
        if bytes.len() > MAX_OPTIONS_LEN {
            return Err(Error::Malformed);
        }
        let mut o = Ipv4Options::default();
        o.bytes[..bytes.len()].copy_from_slice(bytes);
        o.len = bytes.len() as u8;
        Ok(o)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length on the wire: padded with End (zero) bytes to a multiple of 4.
    pub fn padded_len(&self) -> usize {
        (usize::from(self.len) + 3) & !3
    }

    pub fn iter(&self) -> Ipv4OptionsIter<'_> {
        options_iter(self.as_bytes())
    }
}

impl Default for Ipv4Options {
    fn default() -> Self {
        Ipv4Options {
            len: 0,
            bytes: [0; MAX_OPTIONS_LEN],
        }
    }
}

impl PartialEq for Ipv4Options {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Ipv4Options {}

impl fmt::Debug for Ipv4Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ipv4Options({:02x?})", self.as_bytes())
    }
}

/// A decoded IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// In bytes; a multiple of 8.
    pub frag_offset: u16,
    /// Bytes after the header (Total Length - header length).
    pub payload_len: usize,
    pub options: Ipv4Options,
}

impl Ipv4Repr {
    /// Decode a header. Re-runs [`Ipv4Packet::check_len`] (so an unchecked view is safe)
    /// but does NOT verify the checksum or the option contents: `ip_rcv` checks those
    /// separately so it can count them (InHdrErrors, InCsumErrors).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Result<Ipv4Repr> {
        packet.check_len()?;
        Ok(Ipv4Repr {
            src: packet.src(),
            dst: packet.dst(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            options: Ipv4Options::new(packet.options())?,
        })
    }

    /// 20 plus the options padded to a multiple of 4.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.padded_len()
    }

    /// Total Length: header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Write the header into `buf[..self.header_len()]`, with Total Length =
    /// `header_len + payload_len` and a correct checksum. The payload is not touched.
    ///
    /// # Panics
    /// If `buf` is shorter than the header, or the datagram would exceed 65535 bytes
    /// (callers refuse such sends with EMSGSIZE before building them).
    pub fn emit(&self, buf: &mut [u8]) {
        let hl = self.header_len();
        assert!(buf.len() >= hl, "ipv4: buffer too short");
        let total = u16::try_from(hl + self.payload_len).expect("ipv4: datagram over 65535");
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..hl]);
        p.set_header_len(hl);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_flags_and_frag_offset(self.dont_frag, self.more_frags, self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        let opts = p.options_mut();
        let n = self.options.len();
        opts[..n].copy_from_slice(self.options.as_bytes());
        // Pad with End of Option List octets (RFC 791: "the internet header padding is
        // used to ensure that the internet header ends on a 32 bit boundary").
        opts[n..].fill(option_kind::END);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A UDP datagram header (the classic example whose checksum is 0xb861), with
    /// Total Length 0x73 = 115.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn datagram() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.resize(115, 0xab);
        v
    }

    #[test]
    fn parse_known_header() {
        let buf = datagram();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 115);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 95);
        assert!(p.options().is_empty());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 95);
        let mut out = [0u8; 20];
        r.emit(&mut out);
        assert_eq!(out, HEADER);
    }

    #[test]
    fn trailing_padding_excluded() {
        let mut buf = datagram();
        buf.extend_from_slice(&[0; 10]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 95);
    }

    #[test]
    fn check_len_order() {
        let good = datagram();
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        // Version is checked before IHL.
        b[0] = 0x64;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        // IHL 15 = 60 bytes of header in a 40-byte buffer.
        let mut b = good[..40].to_vec();
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        // Total length below the header length.
        let mut b = good.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        // Total length past the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&good[..114]).unwrap_err(),
            Error::Truncated
        );
        // check_len on an unchecked view gives the same answers.
        assert_eq!(
            Ipv4Packet::new_unchecked(&good[..114]).check_len(),
            Err(Error::Truncated)
        );
        assert!(Ipv4Packet::new_checked(&good[..]).is_ok());
    }

    #[test]
    fn bad_checksum_detected() {
        let mut buf = datagram();
        buf[8] = 63;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        // Incremental TTL decrement (ip_decrease_ttl) agrees with recomputation.
        let before = p.checksum();
        let old = u16::from_be_bytes([p.ttl(), p.protocol()]);
        p.set_ttl(62);
        let new = u16::from_be_bytes([p.ttl(), p.protocol()]);
        p.set_checksum(checksum::update16(before, old, new));
        assert!(p.verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let mut buf = datagram();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_flags_and_frag_offset(false, true, 1480);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        p.set_flags_and_frag_offset(false, false, 65528);
        assert_eq!(p.frag_offset(), 65528);
        assert!(p.is_fragment());
    }

    #[test]
    fn options_walk() {
        // NOP, Router Alert, Record Route with room for 2 addresses (one filled),
        // Timestamp (flag 1: address + time), End, padding.
        let opts = [
            1, 148, 4, 0, 0, // NOP, RA
            7, 11, 8, 10, 0, 0, 1, 0, 0, 0, 0, // RR, pointer 8
            68, 12, 5, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, // TS, pointer 5, oflw 0 flg 1
            0, 0, 0, 0, 0,
        ];
        let got: Vec<_> = options_iter(&opts).collect();
        assert_eq!(
            got,
            vec![
                Ok(Ipv4Option::Nop),
                Ok(Ipv4Option::RouterAlert(0)),
                Ok(Ipv4Option::RecordRoute {
                    pointer: 8,
                    data: &[10, 0, 0, 1, 0, 0, 0, 0]
                }),
                Ok(Ipv4Option::Timestamp {
                    pointer: 5,
                    overflow: 0,
                    flags: 1,
                    data: &[0; 8]
                }),
                Ok(Ipv4Option::End),
            ]
        );
        let other: Vec<_> = options_iter(&[130, 4, 0xaa, 0xbb]).collect();
        assert_eq!(
            other,
            vec![Ok(Ipv4Option::Other {
                kind: 130,
                data: &[0xaa, 0xbb]
            })]
        );
    }

    #[test]
    fn options_errors() {
        let bad: &[&[u8]] = &[
            &[130],          // no length octet
            &[130, 1],       // length < 2
            &[130, 0],       // length 0
            &[130, 5, 0, 0], // past the end
            &[7, 2],         // RR without pointer
            &[7, 3, 3],      // RR pointer < 4
            &[68, 3, 5],     // TS shorter than 4
            &[68, 4, 4, 0],  // TS pointer < 5
            &[148, 3, 0],    // RA length != 4
            &[148, 6, 0, 0, 0, 0],
        ];
        for opts in bad {
            let got: Vec<_> = options_iter(opts).collect();
            assert_eq!(got.last(), Some(&Err(Error::Malformed)), "{opts:?}");
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
        }
        // After a NOP the error still surfaces, and iteration ends there.
        let got: Vec<_> = options_iter(&[1, 130, 9, 0, 1, 1, 1]).collect();
        assert_eq!(got, vec![Ok(Ipv4Option::Nop), Err(Error::Malformed)]);
    }

    #[test]
    fn repr_with_options_pads() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 22),
            protocol: 2,
            ttl: 1,
            tos: 0xc0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: 8,
            options: Ipv4Options::new(&[148, 4, 0, 0, 1]).unwrap(),
        };
        assert_eq!(repr.header_len(), 28);
        let mut buf = vec![0xffu8; 36];
        repr.emit(&mut buf);
        assert_eq!(buf[0], 0x47);
        assert_eq!(&buf[20..28], &[148, 4, 0, 0, 1, 0, 0, 0]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.options.as_bytes(), &[148, 4, 0, 0, 1, 0, 0, 0]);
        assert_eq!(r.payload_len, 8);
        assert!(Ipv4Options::new(&[1; 41]).is_err());
        assert!(Ipv4Options::new(&[1; 40]).is_ok());
    }

    fn repr_strategy() -> impl Strategy<Value = Ipv4Repr> {
        (
            (
                any::<u32>(),
                any::<u32>(),
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
            ),
            (any::<u16>(), any::<bool>(), any::<bool>(), 0u16..8192),
            // Whole words, so the parsed (padded) options equal the emitted ones.
            (0usize..=10).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 4)),
            0usize..1000,
        )
            .prop_map(
                |((src, dst, protocol, ttl, tos), (ident, df, mf, off), opts, payload_len)| {
                    Ipv4Repr {
                        src: src.into(),
                        dst: dst.into(),
                        protocol,
                        ttl,
                        tos,
                        ident,
                        dont_frag: df,
                        more_frags: mf,
                        frag_offset: off * 8,
                        payload_len,
                        options: Ipv4Options::new(&opts).unwrap(),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn repr_round_trip(repr in repr_strategy()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf);
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        }

        /// ip_decrease_ttl's incremental update equals a full recomputation, for every
        /// header and TTL (RFC 1624: eqn. 3 never yields the 0xffff "negative zero").
        #[test]
        fn decrease_ttl_matches_a_full_recompute(mut repr in repr_strategy(), ttl in 2u8..=255) {
            repr.ttl = ttl;
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf);
            let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
            prop_assert_eq!(p.decrease_ttl(), ttl - 1);
            prop_assert_eq!(p.ttl(), ttl - 1);
            prop_assert!(p.verify_checksum());
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
            p.set_ttl_update_checksum(ttl);
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&buf[..])).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..80),
            fix in any::<bool>(),
        ) {
            // Half the cases get version 4 and a Total Length within the buffer, so that
            // new_checked succeeds often enough to exercise the accessors.
            if fix && data.len() >= MIN_HEADER_LEN {
                data[0] = 0x40 | (data[0] & 0x0f);
                let total = usize::from(data[2]) % (data.len() + 1);
                data[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            }
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.ihl(), p.dscp(), p.ecn(), p.tos(), p.total_len());
                let _ = (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset(), p.ttl());
                let _ = (p.protocol(), p.checksum(), p.src(), p.dst(), p.reserved_flag());
                let _ = (p.verify_checksum(), p.is_fragment(), p.payload());
                let _ = format!("{p:?}");
                for o in options_iter(p.options()) {
                    let _ = o;
                }
                let r = Ipv4Repr::parse(&p).unwrap();
                prop_assert_eq!(r.header_len(), p.header_len());
            }
            let _ = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&data[..]));
            let _ = format!("{:?}", Ipv4Packet::new_unchecked(&data[..]));
        }

        #[test]
        fn options_iter_never_panics(data in proptest::collection::vec(any::<u8>(), 0..48)) {
            let mut consumed = 0;
            for o in options_iter(&data) {
                consumed += 1;
                prop_assert!(consumed <= data.len());
                if o.is_err() {
                    break;
                }
            }
        }
    }
}
