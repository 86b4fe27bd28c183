//! TCP headers (RFC 9293 section 3.1) and options: MSS (RFC 9293 section 3.2), window
//! scale and timestamps (RFC 7323), SACK (RFC 2018).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |     |A|C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrv|E|W|C|R|C|S|S|Y|I|            Window             |
//! |       |     | |R|E|G|K|H|T|N|N|                               |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options (0..40 bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! TCP has no length field: the view's buffer must be exactly the segment (the IP
//! payload), because the checksum and [`TcpPacket::payload`] run to its end.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use super::checksum;
use super::ipv4::protocol;
use super::{Error, Ipv4Addr, Result};

/// A header without options (Data Offset = 5).
pub const MIN_HEADER_LEN: usize = 20;
/// The largest header Data Offset can describe.
pub const MAX_HEADER_LEN: usize = 60;
/// Room for options.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - MIN_HEADER_LEN;

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// Option lengths fixed by their RFCs.
mod option_len {
    pub const MSS: usize = 4;
    pub const WINDOW_SCALE: usize = 3;
    pub const SACK_PERMITTED: usize = 2;
    pub const TIMESTAMPS: usize = 10;
    /// Kind and length in front of the SACK blocks (RFC 2018 section 3).
    pub const SACK_BASE: usize = 2;
    pub const SACK_PER_BLOCK: usize = 8;
}

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    /// Data offset (high nibble), reserved bits and flags.
    pub const OFF_FLAGS: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS_START: usize = 20;
}

/// The 12 bits after Data Offset: 3 reserved bits, AE and the 8 control bits
/// (RFC 9293 section 3.1; RFC 3168 for ECE/CWR).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x001);
    pub const SYN: TcpFlags = TcpFlags(0x002);
    pub const RST: TcpFlags = TcpFlags(0x004);
    pub const PSH: TcpFlags = TcpFlags(0x008);
    pub const ACK: TcpFlags = TcpFlags(0x010);
    pub const URG: TcpFlags = TcpFlags(0x020);
    pub const ECE: TcpFlags = TcpFlags(0x040);
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// Accurate ECN (formerly the experimental NS bit of RFC 3540).
    pub const AE: TcpFlags = TcpFlags(0x100);
    /// Every bit the field can hold.
    pub const MASK: u16 = 0x0fff;

    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// All bits of `other` are set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any bit of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    /// `SYN|ACK`; unnamed bits as hex; `(none)` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 9] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
            (TcpFlags::AE, "AE"),
        ];
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let mut rest = self.0;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let r = if first { Ok(()) } else { f.write_str("|") };
            first = false;
            r
        };
        for (flag, name) in NAMES {
            if self.contains(flag) {
                sep(f)?;
                f.write_str(name)?;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            sep(f)?;
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A read/write view of a TCP segment held in `T`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without checking; accessors may panic if Data Offset disagrees with the buffer.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wrap after [`TcpPacket::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// In order: buffer below 20 bytes is `Truncated`; Data Offset below 5 is `Malformed`
    /// (RFC 9293 section 3.1: the header is at least 5 words; Linux `tcp_v4_rcv`
    /// `th->doff < sizeof(struct tcphdr) / 4`); a header longer than the buffer is
    /// `Truncated`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > len {
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

    pub fn seq_number(&self) -> u32 {
        self.read_u32(field::SEQ.start)
    }

    pub fn ack_number(&self) -> u32 {
        self.read_u32(field::ACK.start)
    }

    /// Data Offset in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }

    /// The 12 bits after Data Offset (reserved bits included, so nothing is lost).
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.read_u16(field::OFF_FLAGS.start) & TcpFlags::MASK)
    }

    pub fn window_len(&self) -> u16 {
        self.read_u16(field::WINDOW.start)
    }

    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    pub fn urgent_at(&self) -> u16 {
        self.read_u16(field::URGENT.start)
    }

    /// `20..header_len`; walk with [`options_iter`].
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS_START..self.header_len()]
    }

    /// `header_len..`: the rest of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Segment length for the pseudo-header, if it fits the 16-bit field.
    fn pseudo_len(&self) -> Option<u16> {
        u16::try_from(self.buffer.as_ref().len()).ok()
    }

    /// Verify over the pseudo-header (RFC 9293 section 3.1 "Checksum"), header and
    /// payload. A zero checksum is not special in TCP.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let Some(len) = self.pseudo_len() else {
            return false;
        };
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, protocol::TCP, len),
            checksum::sum(self.buffer.as_ref()),
        );
        checksum::fold(s) == 0xffff
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn read_u32(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.write(field::SRC_PORT.start, &v.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.write(field::DST_PORT.start, &v.to_be_bytes());
    }

    pub fn set_seq_number(&mut self, v: u32) {
        self.write(field::SEQ.start, &v.to_be_bytes());
    }

    pub fn set_ack_number(&mut self, v: u32) {
        self.write(field::ACK.start, &v.to_be_bytes());
    }

    /// Data Offset = `len / 4` (`len` a multiple of 4 in 20..=60); flags are kept.
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[field::OFF_FLAGS.start] = (b[field::OFF_FLAGS.start] & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Data Offset is kept.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let off = self.read_u16(field::OFF_FLAGS.start) & !TcpFlags::MASK;
        let v = off | (flags.0 & TcpFlags::MASK);
        self.write(field::OFF_FLAGS.start, &v.to_be_bytes());
    }

    pub fn set_window_len(&mut self, v: u16) {
        self.write(field::WINDOW.start, &v.to_be_bytes());
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.write(field::CHECKSUM.start, &v.to_be_bytes());
    }

    pub fn set_urgent_at(&mut self, v: u16) {
        self.write(field::URGENT.start, &v.to_be_bytes());
    }

    /// Compute the checksum over pseudo-header, header and payload (the whole buffer).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        // Beyond 65535 bytes no IPv4 datagram can carry the segment; the value written
        // is then meaningless but harmless.
        let len = self.pseudo_len().unwrap_or(u16::MAX);
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, protocol::TCP, len),
            checksum::sum(self.buffer.as_ref()),
        );
        self.set_checksum(!checksum::fold(s));
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS_START..hl]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }

    fn write(&mut self, at: usize, bytes: &[u8]) {
        self.buffer.as_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for TcpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(e) = self.check_len() {
            return write!(f, "TcpPacket({e}, {} bytes)", self.as_bytes().len());
        }
        f.debug_struct("TcpPacket")
            .field("src_port", &self.src_port())
            .field("dst_port", &self.dst_port())
            .field("seq", &self.seq_number())
            .field("ack", &self.ack_number())
            .field("flags", &self.flags())
            .field("window", &self.window_len())
            .field("options_len", &self.options().len())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Up to four SACK blocks `(left edge, right edge)`, stored inline (no heap). Four is the
/// most a 40-byte option space can hold (RFC 2018 section 3).
#[derive(Clone, Copy, Default)]
pub struct SackBlocks {
    len: u8,
    blocks: [(u32, u32); SackBlocks::MAX],
}

impl SackBlocks {
    pub const MAX: usize = 4;

    pub const fn new() -> SackBlocks {
        SackBlocks {
            len: 0,
            blocks: [(0, 0); SackBlocks::MAX],
        }
    }

    /// The first four of `blocks`.
    pub fn from_slice(blocks: &[(u32, u32)]) -> SackBlocks {
        let mut s = SackBlocks::new();
        for &b in blocks.iter().take(Self::MAX) {
            s.push(b);
        }
        s
    }

    /// Append; false (and nothing stored) when already full.
    pub fn push(&mut self, block: (u32, u32)) -> bool {
        let n = usize::from(self.len);
        if n == Self::MAX {
            return false;
        }
        self.blocks[n] = block;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn iter(&self) -> core::slice::Iter<'_, (u32, u32)> {
        self.as_slice().iter()
    }

    /// Keep only the first `n` blocks.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n.min(Self::MAX) as u8);
    }

    /// Decode `n * 8` bytes of edges; `None` if not a whole number of 1..=4 blocks.
    fn decode(bytes: &[u8]) -> Option<SackBlocks> {
        if bytes.is_empty() || bytes.len() % option_len::SACK_PER_BLOCK != 0 {
            return None;
        }
        if bytes.len() / option_len::SACK_PER_BLOCK > Self::MAX {
            return None;
        }
        let mut s = SackBlocks::new();
        for b in bytes.chunks_exact(option_len::SACK_PER_BLOCK) {
            let left = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let right = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            s.push((left, right));
        }
        Some(s)
    }
}

impl PartialEq for SackBlocks {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SackBlocks {}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'s> IntoIterator for &'s SackBlocks {
    type Item = &'s (u32, u32);
    type IntoIter = core::slice::Iter<'s, (u32, u32)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of Option List: the walk stops here.
    End,
    Nop,
    /// Maximum Segment Size (RFC 9293 section 3.2), length 4.
    Mss(u16),
    /// Window scale shift count (RFC 7323 section 2), length 3. Not clamped: RFC 7323
    /// section 2.3 says to use 14 for larger values, which is the TCP layer's job.
    WindowScale(u8),
    /// SACK-Permitted (RFC 2018 section 2), length 2.
    SackPermitted,
    /// SACK blocks (RFC 2018 section 3), length 2 + 8n for n in 1..=4, decoded.
    Sack(SackBlocks),
    /// Timestamps (RFC 7323 section 3), length 10.
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    /// Any other kind: `data` excludes the kind and length octets.
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

/// Walk option bytes (see [`TcpOptionsIter`]).
pub fn options_iter(opts: &[u8]) -> TcpOptionsIter<'_> {
    TcpOptionsIter {
        rest: opts,
        done: false,
    }
}

/// Strict iterator over TCP options: yields `Err(Malformed)` (then stops) for a missing
/// length octet, a length below 2, an option running past the end, or a known option
/// with the wrong length (MSS 4, window scale 3, SACK-Permitted 2, timestamps 10, SACK
/// 2 + 8n with 1 <= n <= 4). Stops after yielding `End`.
///
/// [`TcpRepr::parse`] does not use it: it is lenient the way Linux is (see there).
#[derive(Clone, Debug)]
pub struct TcpOptionsIter<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for TcpOptionsIter<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let opt = match next_option(self.rest)? {
            Ok((raw, rest)) => {
                self.rest = rest;
                if raw == RawOption::End {
                    self.done = true;
                }
                decode_option(raw)
            }
            Err(e) => Err(e),
        };
        if opt.is_err() {
            self.done = true;
        }
        Some(opt)
    }
}

/// A raw option before its length is judged: `End`, `Nop`, or `(kind, body)`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawOption<'a> {
    End,
    Nop,
    Tlv(u8, &'a [u8]),
}

/// Split the next option off `rest`. `None` at the end of the bytes; `Err(Malformed)` for
/// a missing or silly length octet or an option running past the end (RFC 9293 section
/// 3.1: every option but End and NOP is kind, length, data).
fn next_option(rest: &[u8]) -> Option<Result<(RawOption<'_>, &[u8])>> {
    let kind = *rest.first()?;
    match kind {
        option_kind::END => return Some(Ok((RawOption::End, &rest[rest.len()..]))),
        option_kind::NOP => return Some(Ok((RawOption::Nop, &rest[1..]))),
        _ => {}
    }
    let Some(&len) = rest.get(1) else {
        return Some(Err(Error::Malformed));
    };
    let len = usize::from(len);
    if len < 2 || len > rest.len() {
        return Some(Err(Error::Malformed));
    }
    Some(Ok((RawOption::Tlv(kind, &rest[2..len]), &rest[len..])))
}

/// Judge a raw option's length against its kind.
fn decode_option(raw: RawOption<'_>) -> Result<TcpOption<'_>> {
    let (kind, body) = match raw {
        RawOption::End => return Ok(TcpOption::End),
        RawOption::Nop => return Ok(TcpOption::Nop),
        RawOption::Tlv(kind, body) => (kind, body),
    };
    let len = body.len() + 2;
    let bad_len = |want: usize| {
        if len == want {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
    };
    Ok(match kind {
        option_kind::MSS => {
            bad_len(option_len::MSS)?;
            TcpOption::Mss(u16::from_be_bytes([body[0], body[1]]))
        }
        option_kind::WINDOW_SCALE => {
            bad_len(option_len::WINDOW_SCALE)?;
            TcpOption::WindowScale(body[0])
        }
        option_kind::SACK_PERMITTED => {
            bad_len(option_len::SACK_PERMITTED)?;
            TcpOption::SackPermitted
        }
        option_kind::TIMESTAMPS => {
            bad_len(option_len::TIMESTAMPS)?;
            TcpOption::Timestamps {
                tsval: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                tsecr: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
            }
        }
        option_kind::SACK => TcpOption::Sack(SackBlocks::decode(body).ok_or(Error::Malformed)?),
        kind => TcpOption::Unknown { kind, data: body },
    })
}

/// A decoded TCP header with the options the stack uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The raw Window field (unscaled).
    pub window: u16,
    pub urgent: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_blocks: SackBlocks,
    /// `(TSval, TSecr)`.
    pub timestamps: Option<(u32, u32)>,
}

impl TcpRepr {
    /// Decode the header and options. Re-checks lengths (safe on an unchecked view);
    /// does NOT verify the checksum, which needs the IP addresses.
    ///
    /// Options are read the way Linux `tcp_parse_options` reads them, never failing the
    /// segment: parsing stops at End, at a length octet below 2 ("silly options") or at
    /// an option running past the header ("don't parse partial options"); a known
    /// option with the wrong length is skipped; a repeated option overrides the earlier
    /// one. Every option present is reported whatever the flags: Linux honours MSS,
    /// window scale and SACK-Permitted only on a SYN, which is for the TCP layer to
    /// apply. Use [`options_iter`] for a strict walk.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &TcpPacket<&T>) -> Result<TcpRepr> {
        packet.check_len()?;
        let mut repr = TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window_len(),
            urgent: packet.urgent_at(),
            ..TcpRepr::default()
        };
        let mut rest = packet.options();
        while let Some(Ok((raw, tail))) = next_option(rest) {
            rest = tail;
            match decode_option(raw) {
                Ok(TcpOption::End) => break,
                Ok(TcpOption::Mss(v)) => repr.mss = Some(v),
                Ok(TcpOption::WindowScale(v)) => repr.window_scale = Some(v),
                Ok(TcpOption::SackPermitted) => repr.sack_permitted = true,
                Ok(TcpOption::Sack(blocks)) => repr.sack_blocks = blocks,
                Ok(TcpOption::Timestamps { tsval, tsecr }) => {
                    repr.timestamps = Some((tsval, tsecr))
                }
                Ok(TcpOption::Nop | TcpOption::Unknown { .. }) | Err(_) => {}
            }
        }
        Ok(repr)
    }

    /// Bytes of options before SACK blocks, laid out as Linux `tcp_options_write` does.
    fn fixed_options_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() {
            // SACK-Permitted, if any, shares the timestamps' word instead of two NOPs.
            n += 12;
        } else if self.sack_permitted {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4;
        }
        n
    }

    /// How many SACK blocks fit after the other options (Linux
    /// `tcp_established_options`: the most recent blocks come first and the rest are
    /// dropped when option space runs out).
    pub fn sack_blocks_emitted(&self) -> usize {
        let room = MAX_OPTIONS_LEN - self.fixed_options_len();
        // Blocks are preceded by NOP, NOP, kind, length.
        let fit = room.saturating_sub(4) / option_len::SACK_PER_BLOCK;
        self.sack_blocks.len().min(fit)
    }

    /// Options length, a multiple of 4 and at most 40.
    pub fn options_len(&self) -> usize {
        let n = self.sack_blocks_emitted();
        let sack = if n > 0 {
            4 + n * option_len::SACK_PER_BLOCK
        } else {
            0
        };
        self.fixed_options_len() + sack
    }

    /// 20 plus the options; never more than 60.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options_len()
    }

    /// Write header, options and checksum. `buf` holds [`Self::header_len`] bytes of
    /// header space followed by `payload_len` bytes of payload already in place; the
    /// checksum covers the pseudo-header (`src`, `dst`), header and payload.
    ///
    /// Options are NOP-padded to 32-bit words in Linux's order: MSS; SACK-Permitted +
    /// timestamps (or NOP, NOP + timestamps); NOP, NOP + SACK-Permitted when there are
    /// no timestamps; NOP + window scale; NOP, NOP + SACK blocks (as many as fit).
    ///
    /// # Panics
    /// If `buf` is shorter than `header_len() + payload_len` or that exceeds 65535.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize, src: Ipv4Addr, dst: Ipv4Addr) {
        let mut p = self.emit_header(buf, payload_len);
        p.fill_checksum(src, dst);
    }

    /// [`TcpRepr::emit`] for a device that computes the checksum (`CHECKSUM_PARTIAL`):
    /// the checksum field gets only the folded pseudo-header sum over the whole segment
    /// length, uncomplemented, as `__tcp_v4_send_check` leaves it. The device (or
    /// `skb_checksum_help`) sums from the TCP header to the end and stores the
    /// complement at offset 16; for a GSO super-packet the segmentation code adjusts the
    /// sum for each segment's length.
    ///
    /// # Panics
    /// As [`TcpRepr::emit`].
    pub fn emit_csum_partial(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        let mut p = self.emit_header(buf, payload_len);
        let len = (self.header_len() + payload_len) as u16;
        let sum = checksum::pseudo_header_sum(src, dst, protocol::TCP, len);
        p.set_checksum(checksum::fold(sum));
    }

    /// Header and options, checksum field zero.
    fn emit_header<'b>(&self, buf: &'b mut [u8], payload_len: usize) -> TcpPacket<&'b mut [u8]> {
        const NOP: u8 = option_kind::NOP;
        let hl = self.header_len();
        let total = hl + payload_len;
        assert!(buf.len() >= total, "tcp: buffer too short");
        assert!(total <= usize::from(u16::MAX), "tcp: segment over 65535");
        let mut p = TcpPacket::new_unchecked(&mut buf[..total]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq);
        p.set_ack_number(self.ack);
        p.write(field::OFF_FLAGS.start, &[0, 0]);
        p.set_header_len(hl);
        p.set_flags(self.flags);
        p.set_window_len(self.window);
        p.set_urgent_at(self.urgent);

        let opts = p.options_mut();
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            opts[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[option_kind::MSS, option_len::MSS as u8, m[0], m[1]]);
        }
        if let Some((tsval, tsecr)) = self.timestamps {
            if self.sack_permitted {
                put(&[
                    option_kind::SACK_PERMITTED,
                    option_len::SACK_PERMITTED as u8,
                ]);
            } else {
                put(&[NOP, NOP]);
            }
            put(&[option_kind::TIMESTAMPS, option_len::TIMESTAMPS as u8]);
            put(&tsval.to_be_bytes());
            put(&tsecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[
                NOP,
                NOP,
                option_kind::SACK_PERMITTED,
                option_len::SACK_PERMITTED as u8,
            ]);
        }
        if let Some(shift) = self.window_scale {
            put(&[
                NOP,
                option_kind::WINDOW_SCALE,
                option_len::WINDOW_SCALE as u8,
                shift,
            ]);
        }
        let n = self.sack_blocks_emitted();
        if n > 0 {
            let len = option_len::SACK_BASE + n * option_len::SACK_PER_BLOCK;
            put(&[NOP, NOP, option_kind::SACK, len as u8]);
            for &(left, right) in &self.sack_blocks.as_slice()[..n] {
                put(&left.to_be_bytes());
                put(&right.to_be_bytes());
            }
        }
        debug_assert_eq!(at, hl - MIN_HEADER_LEN);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A SYN laid out byte for byte as Linux 5.10 sends one (MSS 1460, SACK-Permitted,
    /// timestamps, window scale 7; window 64240). Checksum 0x4a0a computed independently
    /// of this crate for 10.0.0.1 -> 10.0.0.2.
    const SYN: [u8; 40] = [
        0xa3, 0xc4, 0x00, 0x50, // 41924 -> 80
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // doff 10, SYN, window 64240
        0x4a, 0x0a, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, 0x08, 0x0a, // SACK-Permitted, timestamps
        0x00, 0x01, 0xe2, 0x40, // TSval 123456
        0x00, 0x00, 0x00, 0x00, // TSecr 0
        0x01, 0x03, 0x03, 0x07, // NOP, window scale 7
    ];

    fn syn_repr() -> TcpRepr {
        TcpRepr {
            src_port: 41924,
            dst_port: 80,
            seq: 0x1234_5678,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack_blocks: SackBlocks::new(),
            timestamps: Some((123_456, 0)),
        }
    }

    #[test]
    fn known_syn() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        assert!(p.payload().is_empty());
        let opts: Vec<_> = options_iter(p.options()).collect();
        assert_eq!(
            opts,
            vec![
                Ok(TcpOption::Mss(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps {
                    tsval: 123_456,
                    tsecr: 0
                }),
                Ok(TcpOption::Nop),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
        assert_eq!(TcpRepr::parse(&p).unwrap(), syn_repr());
        let mut out = [0u8; 40];
        syn_repr().emit(&mut out, 0, SRC, DST);
        assert_eq!(out, SYN);
    }

    #[test]
    fn flags_debug() {
        assert_eq!(format!("{:?}", TcpFlags::SYN | TcpFlags::ACK), "SYN|ACK");
        assert_eq!(
            format!("{:?}", TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK),
            "FIN|PSH|ACK"
        );
        assert_eq!(format!("{:?}", TcpFlags(0)), "(none)");
        assert_eq!(format!("{:?}", TcpFlags(0x802)), "SYN|0x800");
        let mut f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::ACK) && !f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(f.intersects(TcpFlags::SYN | TcpFlags::FIN));
        f.remove(TcpFlags::SYN);
        assert_eq!(f, TcpFlags::ACK);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            TcpPacket::new_checked(&SYN[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            TcpPacket::new_checked(&SYN[..39]).unwrap_err(),
            Error::Truncated
        );
        b[12] = 0xf0;
        let mut long = b.to_vec();
        long.resize(60, 0);
        assert!(TcpPacket::new_checked(&long[..]).is_ok());
        assert_eq!(
            TcpPacket::new_checked(&long[..59]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn strict_option_errors() {
        let bad: &[&[u8]] = &[
            &[2],                      // no length octet
            &[2, 1],                   // length < 2
            &[30, 0],                  // length 0
            &[2, 4, 5],                // past the end
            &[2, 3, 5],                // MSS length 3
            &[3, 4, 1, 1],             // WS length 4
            &[4, 3, 0],                // SACK-Permitted length 3
            &[8, 8, 0, 0, 0, 0, 0, 0], // TS length 8
            &[5, 2],                   // SACK without blocks
            &[5, 6, 0, 0, 0, 0],       // SACK half a block
        ];
        for opts in bad {
            let got: Vec<_> = options_iter(opts).collect();
            assert_eq!(got.last(), Some(&Err(Error::Malformed)), "{opts:?}");
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1, "{opts:?}");
        }
        let got: Vec<_> = options_iter(&[1, 1, 99, 3, 7, 0, 2, 4]).collect();
        assert_eq!(
            got,
            vec![
                Ok(TcpOption::Nop),
                Ok(TcpOption::Nop),
                Ok(TcpOption::Unknown {
                    kind: 99,
                    data: &[7]
                }),
                Ok(TcpOption::End),
            ]
        );
    }

    /// A segment with `opts` as its (4-aligned) options, for parse tests.
    fn segment(opts: &[u8]) -> Vec<u8> {
        let mut b = SYN[..20].to_vec();
        b.extend_from_slice(opts);
        b.resize(20 + opts.len().div_ceil(4) * 4, 0);
        b[12] = (((b.len() / 4) as u8) << 4) | (b[12] & 0x0f);
        b
    }

    #[test]
    fn lenient_parse_like_linux() {
        // Bad-length MSS is skipped, the timestamps after it still count.
        let b = segment(&[2, 3, 5, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let r = TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(r.mss, None);
        assert_eq!(r.timestamps, Some((1, 2)));
        // A silly length stops the walk but not the segment.
        let b = segment(&[3, 3, 9, 2, 1, 2, 4, 5, 0xb4]);
        let r = TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(r.window_scale, Some(9));
        assert_eq!(r.mss, None);
        // Running past the end stops too.
        let b = segment(&[4, 2, 2, 40]);
        let r = TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()).unwrap();
        assert!(r.sack_permitted && r.mss.is_none());
    }

    #[test]
    fn sack_blocks_layout_and_truncation() {
        let mut r = TcpRepr {
            flags: TcpFlags::ACK,
            timestamps: Some((7, 8)),
            sack_blocks: SackBlocks::from_slice(&[(1, 2), (3, 4), (5, 6), (7, 8)]),
            ..TcpRepr::default()
        };
        // Timestamps take 12 bytes, so 3 of the 4 blocks fit: 20 + 12 + 4 + 24 = 60.
        assert_eq!(r.sack_blocks_emitted(), 3);
        assert_eq!(r.header_len(), 60);
        let mut buf = vec![0u8; 60];
        r.emit(&mut buf, 0, SRC, DST);
        assert_eq!(&buf[20..24], &[1, 1, 8, 10]);
        assert_eq!(&buf[32..36], &[1, 1, 5, 26]);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        let parsed = TcpRepr::parse(&p).unwrap();
        assert_eq!(parsed.sack_blocks.as_slice(), &[(1, 2), (3, 4), (5, 6)]);
        assert!(options_iter(p.options()).all(|o| o.is_ok()));
        // Without timestamps all four fit: 20 + 4 + 32 = 56.
        r.timestamps = None;
        assert_eq!(r.header_len(), 56);
        // SACK-Permitted alone is NOP, NOP, 4, 2.
        let r = TcpRepr {
            sack_permitted: true,
            ..TcpRepr::default()
        };
        let mut buf = vec![0u8; 24];
        r.emit(&mut buf, 0, SRC, DST);
        assert_eq!(&buf[20..24], &[1, 1, 4, 2]);
        assert!(SackBlocks::from_slice(&[(0, 0); 5]).len() == 4);
    }

    #[test]
    fn payload_checksummed() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            flags: TcpFlags::PSH | TcpFlags::ACK,
            ..TcpRepr::default()
        };
        let mut buf = vec![0u8; 25];
        buf[20..].copy_from_slice(b"hello");
        r.emit(&mut buf, 5, SRC, DST);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(SRC, DST));
        buf[24] ^= 1;
        assert!(!TcpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    fn repr_strategy() -> impl Strategy<Value = TcpRepr> {
        (
            (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
            (0..=TcpFlags::MASK, any::<u16>(), any::<u16>()),
            (
                proptest::option::of(any::<u16>()),
                proptest::option::of(any::<u8>()),
                any::<bool>(),
                proptest::collection::vec(any::<(u32, u32)>(), 0..=4),
                proptest::option::of(any::<(u32, u32)>()),
            ),
        )
            .prop_map(
                |((src_port, dst_port, seq, ack), (flags, window, urgent), opts)| {
                    let (mss, window_scale, sack_permitted, sack, timestamps) = opts;
                    TcpRepr {
                        src_port,
                        dst_port,
                        seq,
                        ack,
                        flags: TcpFlags(flags),
                        window,
                        urgent,
                        mss,
                        window_scale,
                        sack_permitted,
                        sack_blocks: SackBlocks::from_slice(&sack),
                        timestamps,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            repr in repr_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<u32>(),
            dst in any::<u32>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let hl = repr.header_len();
            prop_assert!(hl <= MAX_HEADER_LEN && hl % 4 == 0);
            let mut buf = vec![0u8; hl + payload.len()];
            buf[hl..].copy_from_slice(&payload);
            repr.emit(&mut buf, payload.len(), src, dst);
            let p = TcpPacket::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum(src, dst));
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert!(options_iter(p.options()).all(|o| o.is_ok()));
            // Blocks that did not fit are dropped, as Linux does.
            let mut expected = repr;
            expected.sack_blocks.truncate(repr.sack_blocks_emitted());
            prop_assert_eq!(TcpRepr::parse(&p).unwrap(), expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..80),
            fix_offset in any::<bool>(),
        ) {
            // Half the cases get a Data Offset that fits, so the options get walked.
            if fix_offset && data.len() >= MIN_HEADER_LEN {
                let words = (5 + usize::from(data[13]) % 11).min(data.len() / 4);
                data[12] = ((words as u8) << 4) | (data[12] & 0x0f);
            }
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
                let _ = (p.header_len(), p.flags(), p.window_len(), p.checksum(), p.urgent_at());
                let _ = (p.options(), p.payload(), p.verify_checksum(SRC, DST));
                let _ = format!("{p:?} {:?}", p.flags());
                for o in options_iter(p.options()) {
                    let _ = o;
                }
                let r = TcpRepr::parse(&p).unwrap();
                prop_assert!(r.header_len() <= MAX_HEADER_LEN);
            }
            let unchecked = TcpPacket::new_unchecked(&data[..]);
            let _ = TcpRepr::parse(&unchecked);
            let _ = format!("{unchecked:?}");
            for o in options_iter(&data) {
                let _ = o;
            }
        }
    }
}
