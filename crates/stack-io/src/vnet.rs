//! `struct virtio_net_hdr`: the offload metadata a TAP attached with `IFF_VNET_HDR`
//! puts in front of every frame, both ways (include/uapi/linux/virtio_net.h, virtio
//! spec 1.x section 5.1.6 "Device Operation").
//!
//! ```text
//!  0       1        2          4          6            8             10
//!  +-------+--------+----------+----------+------------+-------------+
//!  | flags |gso_type| hdr_len  | gso_size | csum_start | csum_offset |
//!  +-------+--------+----------+----------+------------+-------------+
//! ```
//!
//! The 16-bit fields are in the *legacy* virtio byte order, the host's, unless the fd was
//! switched with TUNSETVNETLE/BE (`tun_is_little_endian` in drivers/net/tun_vnet.h falls
//! back to `virtio_legacy_is_little_endian`, which is true on a little-endian host). We
//! never switch it, so "native" is right; on x86 and arm64 that is little-endian.
//!
//! Nothing here does I/O: [`VnetHdr::parse`] and [`VnetHdr::emit`] are the two
//! directions, and [`tcp_frame_headers`] finds where a TCP/IPv4 frame's payload
//! starts, which both GSO directions need.

use std::fmt;

/// `sizeof(struct virtio_net_hdr)`: the size tun uses unless TUNSETVNETHDRSZ changed it.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is not finished; the field at
/// `csum_start + csum_offset` holds the pseudo-header sum and whoever consumes the frame
/// must add the one's complement sum of the bytes from `csum_start` to the end.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (the kernel sets it for
/// CHECKSUM_UNNECESSARY skbs, `virtio_net_hdr_from_skb(.., has_data_valid = true, ..)`).
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: may be or'ed into a TCP GSO type (the super-packet had CWR
/// set; only the first segment keeps it).
pub const GSO_ECN: u8 = 0x80;

/// One `virtio_net_hdr`, fields in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet to the end of TCP) of a GSO frame. The kernel
    /// only *hints* here when it sends: it puts `skb_headlen(skb)` (the linear part),
    /// which may run into the payload, so a reader must not trust it as a header length.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame (the MSS).
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the frame (the Ethernet header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// Fewer than [`VNET_HDR_LEN`] bytes.
    Truncated,
    /// A flag bit we do not know (tun only ever sends NEEDS_CSUM or DATA_VALID).
    UnknownFlags(u8),
}

impl fmt::Display for VnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VnetError::Truncated => write!(f, "virtio_net_hdr truncated"),
            VnetError::UnknownFlags(fl) => write!(f, "virtio_net_hdr has unknown flags {fl:#x}"),
        }
    }
}

impl std::error::Error for VnetError {}

impl VnetHdr {
    /// Read the header at the start of `buf`. Checks only the header itself; whether its
    /// offsets fit the frame behind it is the caller's business, since it depends on
    /// what the caller will do with them ([`VnetHdr::csum_fits`]).
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, VnetError> {
        let b: &[u8; VNET_HDR_LEN] = buf
            .get(..VNET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(VnetError::Truncated)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let hdr = VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        };
        if hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(VnetError::UnknownFlags(hdr.flags));
        }
        Ok(hdr)
    }

    /// Write the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`VNET_HDR_LEN`]: a programming error.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        self.emit(&mut b);
        b
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    pub fn data_valid(&self) -> bool {
        self.flags & F_DATA_VALID != 0
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// Whether the checksum field (`csum_start + csum_offset`, two bytes) lies inside a
    /// frame of `frame_len` bytes: the check `skb_partial_csum_set` makes in the kernel
    /// (net/core/skbuff.c) before it trusts the offsets.
    pub fn csum_fits(&self, frame_len: usize) -> bool {
        usize::from(self.csum_start) + usize::from(self.csum_offset) + 2 <= frame_len
    }
}

/// The header parser is the core's: the software GSO path needs the same answer.
pub use stack_core::gso::{tcp_frame_headers, HeaderError, TcpFrameHeaders};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_emit_round_trip() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let bytes = hdr.to_bytes();
        assert_eq!(VnetHdr::parse(&bytes), Ok(hdr));
        assert!(hdr.needs_csum() && !hdr.data_valid());
        assert_eq!(hdr.gso_kind(), GSO_TCPV4);
        // Extra bytes behind the header (the frame) are not its business.
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0xaa; 60]);
        assert_eq!(VnetHdr::parse(&long), Ok(hdr));
    }

    #[test]
    fn fields_are_little_endian_on_this_host() {
        // What tun writes on x86 (and every little-endian host): legacy virtio order.
        if cfg!(target_endian = "little") {
            let bytes = [1, 1, 0x42, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0];
            let hdr = VnetHdr::parse(&bytes).unwrap();
            assert_eq!(hdr.hdr_len, 0x42);
            assert_eq!(hdr.gso_size, 1448);
            assert_eq!(hdr.csum_start, 34);
            assert_eq!(hdr.csum_offset, 16);
            assert_eq!(hdr.to_bytes(), bytes);
        }
    }

    #[test]
    fn short_or_strange_headers_are_refused() {
        assert_eq!(VnetHdr::parse(&[]), Err(VnetError::Truncated));
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(VnetError::Truncated));
        assert_eq!(VnetHdr::parse(&[0; 10]), Ok(VnetHdr::default()));
        let mut b = [0; 10];
        b[0] = 4;
        assert_eq!(VnetHdr::parse(&b), Err(VnetError::UnknownFlags(4)));
        b[0] = F_DATA_VALID;
        assert!(VnetHdr::parse(&b).unwrap().data_valid());
    }

    #[test]
    fn csum_offsets_must_lie_in_the_frame() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(hdr.csum_fits(42), "UDP header ends at 42: field at 40..42");
        assert!(!hdr.csum_fits(41));
        let huge = VnetHdr {
            csum_start: u16::MAX,
            csum_offset: u16::MAX,
            ..hdr
        };
        assert!(!huge.csum_fits(65535), "no u16 overflow");
    }

    fn tcp_frame(vlan: bool, ihl_words: u8, doff_words: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; usize::from(ihl_words) * 4];
        ip[0] = 0x40 | ihl_words;
        ip[6] = 0x40; // DF
        ip[9] = 6; // TCP
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; usize::from(doff_words) * 4];
        tcp[12] = doff_words << 4;
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(0x5a, payload));
        f
    }

    fn l2_l3_l4_header_len(frame: &[u8]) -> Result<usize, HeaderError> {
        tcp_frame_headers(frame).map(|h| h.hdr_len)
    }

    #[test]
    fn header_length_of_tcp_over_ipv4() {
        assert_eq!(l2_l3_l4_header_len(&tcp_frame(false, 5, 5, 100)), Ok(54));
        assert_eq!(l2_l3_l4_header_len(&tcp_frame(false, 5, 8, 0)), Ok(66));
        assert_eq!(l2_l3_l4_header_len(&tcp_frame(true, 5, 8, 10)), Ok(70));
        assert_eq!(l2_l3_l4_header_len(&tcp_frame(false, 15, 15, 1)), Ok(134));
        let h = tcp_frame_headers(&tcp_frame(true, 6, 5, 0)).unwrap();
        assert_eq!((h.l4_offset, h.hdr_len, h.cwr), (42, 62, false));
        let mut cwr = tcp_frame(false, 5, 5, 0);
        cwr[34 + 13] = 0x80 | 0x10;
        assert!(tcp_frame_headers(&cwr).unwrap().cwr);
    }

    #[test]
    fn header_length_refuses_what_it_cannot_read() {
        let good = tcp_frame(false, 5, 8, 0);
        for cut in 0..good.len() {
            assert_eq!(
                l2_l3_l4_header_len(&good[..cut]),
                Err(HeaderError::Truncated),
                "cut at {cut}"
            );
        }
        let vlan = tcp_frame(true, 5, 5, 0);
        assert_eq!(
            l2_l3_l4_header_len(&vlan[..15]),
            Err(HeaderError::Truncated)
        );

        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(l2_l3_l4_header_len(&arp), Err(HeaderError::NotIpv4));
        let mut v6 = good.clone();
        v6[14] = 0x65;
        assert_eq!(l2_l3_l4_header_len(&v6), Err(HeaderError::NotIpv4));
        let mut short_ihl = good.clone();
        short_ihl[14] = 0x44;
        assert_eq!(l2_l3_l4_header_len(&short_ihl), Err(HeaderError::NotIpv4));
        let mut udp = good.clone();
        udp[14 + 9] = 17;
        assert_eq!(l2_l3_l4_header_len(&udp), Err(HeaderError::NotTcp));
        let mut frag = good.clone();
        frag[14 + 6] = 0x20; // MF
        assert_eq!(l2_l3_l4_header_len(&frag), Err(HeaderError::NotTcp));
        let mut doff = good.clone();
        doff[34 + 12] = 0x40;
        assert_eq!(l2_l3_l4_header_len(&doff), Err(HeaderError::BadTcpHeader));
        // TCP options claimed past the end of the frame.
        let mut opts = tcp_frame(false, 5, 5, 0);
        opts[34 + 12] = 0xf0;
        assert_eq!(l2_l3_l4_header_len(&opts), Err(HeaderError::Truncated));
    }
}
