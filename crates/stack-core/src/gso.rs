//! Software segmentation and checksumming: what a device without offloads needs done
//! before a frame can go on a wire (`validate_xmit_skb` -> `skb_gso_segment` ->
//! `inet_gso_segment` -> `tcp_gso_segment`, and `skb_checksum_help`).
//!
//! The stack builds TSO super-packets and `CHECKSUM_PARTIAL` segments only when its
//! device offers the offloads (see [`crate::stack::Offloads`]). Anything that stands for
//! a real wire between such a device and a peer that sees frames one by one (the
//! simulated link, the seeded impairment layer in front of a TAP) runs frames through
//! [`skb_gso_segment`] first, as the kernel does for a device without the feature: a
//! super-packet becomes MSS-sized TCP segments with their own IP IDs, sequence numbers,
//! flags and checksums; a partial checksum is completed.
//!
//! Inside the stack the same code serves a forwarded super-packet (or one of our own
//! routed to another device): `dev_queue_xmit` segments it for a device without TSO,
//! as `validate_xmit_skb` does, and `ip_finish_output_gso` segments one whose segments
//! exceed the MTU before fragmenting them (`skb_gso_segment_ip`, at the network
//! header).

use crate::skb::{IpSummed, Skb, SkbPool};
use crate::wire::checksum;
use crate::wire::ethernet::ethertype;
use crate::wire::ipv4::protocol;

/// Why a frame could not be made wire-ready. The caller drops it and counts it, as the
/// kernel counts a failed `validate_xmit_skb` in the device's `tx_dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoError {
    /// Headers that cannot be parsed, or offsets outside the frame.
    Malformed,
    /// A super-packet that is not TCP over IPv4, the only kind the stack builds.
    Unsupported,
}

/// Ethernet header, without and with one 802.1Q tag.
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;

/// Where the headers of a TCP/IPv4 Ethernet frame are, from the start of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFrameHeaders {
    /// Start of the IPv4 header: Ethernet (+4 with an 802.1Q tag).
    pub l3_offset: usize,
    /// Start of the TCP header: Ethernet (+4 with an 802.1Q tag) + IPv4 IHL*4.
    pub l4_offset: usize,
    /// End of the TCP header (+ data offset*4): the `hdr_len` of a GSO_TCPV4 frame,
    /// the prefix every segment repeats.
    pub hdr_len: usize,
    /// The TCP CWR flag is set.
    pub cwr: bool,
}

/// Why [`tcp_frame_headers`] could not find the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The frame ends inside a header.
    Truncated,
    /// Not IPv4 (after at most one VLAN tag), or IPv4 with a bad version/IHL.
    NotIpv4,
    /// IPv4, but not TCP.
    NotTcp,
    /// A TCP data offset under 5 words.
    BadTcpHeader,
}

/// Find the TCP header of an Ethernet frame carrying TCP/IPv4, at most one 802.1Q tag
/// in between. Each header is bounds-checked before it is read; IPv4 fragments are
/// refused (a fragment has no TCP header to speak of, and GSO never makes them).
pub fn tcp_frame_headers(frame: &[u8]) -> Result<TcpFrameHeaders, HeaderError> {
    let be16 = |at: usize| -> Result<u16, HeaderError> {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(HeaderError::Truncated)
    };
    let mut l2 = ETH_HLEN;
    let mut ethertype = be16(12)?;
    if ethertype == ethertype::VLAN {
        ethertype = be16(ETH_HLEN + 2)?;
        l2 += VLAN_HLEN;
    }
    if ethertype != ethertype::IPV4 {
        return Err(HeaderError::NotIpv4);
    }
    tcp_headers_at(frame, l2)
}

/// The TCP/IPv4 headers of `frame` whose IPv4 header starts at `l2` (0 for a packet
/// with `data` at the network header), checked as [`tcp_frame_headers`] checks them.
fn tcp_headers_at(frame: &[u8], l2: usize) -> Result<TcpFrameHeaders, HeaderError> {
    let ip = frame.get(l2..l2 + 20).ok_or(HeaderError::Truncated)?;
    let (version, ihl) = (ip[0] >> 4, usize::from(ip[0] & 0x0f) * 4);
    if version != 4 || ihl < 20 {
        return Err(HeaderError::NotIpv4);
    }
    // MF set or a non-zero fragment offset.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || ip[9] != protocol::TCP {
        return Err(HeaderError::NotTcp);
    }
    let l4 = l2 + ihl;
    let tcp = frame.get(l4..l4 + 20).ok_or(HeaderError::Truncated)?;
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 {
        return Err(HeaderError::BadTcpHeader);
    }
    let end = l4 + doff;
    if end > frame.len() {
        return Err(HeaderError::Truncated);
    }
    Ok(TcpFrameHeaders {
        l3_offset: l2,
        l4_offset: l4,
        hdr_len: end,
        cwr: tcp[13] & 0x80 != 0,
    })
}

/// Make `skb` (`data` at the Ethernet header) wire-ready and push the result to `out`:
/// a super-packet (`gso_size > 0`) becomes its segments, a `CHECKSUM_PARTIAL` frame gets
/// its checksum, anything else is passed on as it is.
pub fn skb_gso_segment(skb: Skb, pool: &SkbPool, out: &mut Vec<Skb>) -> Result<(), GsoError> {
    if skb.gso_size > 0 {
        let h = tcp_frame_headers(skb.data()).map_err(gso_error)?;
        return tcp_gso_segment(&skb, h, pool, out);
    }
    if let Some((field, csum)) =
        skb_checksum_help(&skb, 0, skb.len()).map_err(|()| GsoError::Malformed)?
    {
        let mut skb = skb;
        skb.data_mut()[field..field + 2].copy_from_slice(&csum.to_be_bytes());
        skb.ip_summed = IpSummed::None;
        out.push(skb);
        return Ok(());
    }
    out.push(skb);
    Ok(())
}

/// [`skb_gso_segment`] for a super-packet with `data` at the IPv4 header, as
/// `ip_finish_output_gso` calls it before fragmenting segments that do not fit: the
/// segments start at their IPv4 headers too.
pub(crate) fn skb_gso_segment_ip(
    skb: &Skb,
    pool: &SkbPool,
    out: &mut Vec<Skb>,
) -> Result<(), GsoError> {
    let h = tcp_headers_at(skb.data(), 0).map_err(gso_error)?;
    let first = out.len();
    tcp_gso_segment(skb, h, pool, out)?;
    for seg in &mut out[first..] {
        seg.reset_network_header();
    }
    Ok(())
}

fn gso_error(e: HeaderError) -> GsoError {
    match e {
        HeaderError::Truncated | HeaderError::BadTcpHeader => GsoError::Malformed,
        HeaderError::NotIpv4 | HeaderError::NotTcp => GsoError::Unsupported,
    }
}

/// `skb_checksum_help`: for a `CHECKSUM_PARTIAL` skb, the final transport checksum and
/// where it goes (an offset from `data`); `None` for any other skb. The checksum field
/// already holds the pseudo-header sum (the offload contract, as virtio-net's
/// NEEDS_CSUM), so the checksum of `csum_start..end` is the final value. `csum_start`
/// counts from `head`, like the kernel's `skb->csum_start`, and must not lie before
/// `data + min_start` (e.g. inside the IP header); the field must lie before `end`.
pub(crate) fn skb_checksum_help(
    skb: &Skb,
    min_start: usize,
    end: usize,
) -> Result<Option<(usize, u16)>, ()> {
    let IpSummed::Partial {
        csum_start,
        csum_offset,
    } = skb.ip_summed
    else {
        return Ok(None);
    };
    let start = usize::from(csum_start)
        .checked_sub(skb.data_offset())
        .filter(|&s| s >= min_start)
        .ok_or(())?;
    let field = start + usize::from(csum_offset);
    if field + 2 > end {
        return Err(());
    }
    let covered = skb.data().get(start..end).ok_or(())?;
    // A computed 0 is sent as 0xffff (the kernel's CSUM_MANGLED_0): for UDP a zero
    // means "no checksum" (RFC 768); for TCP both forms verify.
    let csum = match checksum::checksum(covered) {
        0 => 0xffff,
        c => c,
    };
    Ok(Some((field, csum)))
}

/// [`skb_gso_segment`] for a caller that stands for a wire: a frame that cannot be made
/// wire-ready is dropped (logged), as `validate_xmit_skb` drops it.
pub fn validate_xmit(skb: Skb, pool: &SkbPool, out: &mut Vec<Skb>) {
    if let Err(e) = skb_gso_segment(skb, pool, out) {
        tracing::debug!(?e, "frame not wire-ready, dropped");
    }
}

/// `tcp_gso_segment` with `inet_gso_segment` around it: cut the payload into
/// `gso_size` pieces, each behind a copy of the headers with its own IPv4 total length,
/// ID (incremented per segment, as `inet_gso_segment` does) and header checksum, TCP
/// sequence number and full checksum. CWR stays on the first segment only; FIN and PSH
/// only on the last (RFC 3168 6.1.2 and the kernel's `tcp_gso_segment`).
fn tcp_gso_segment(
    skb: &Skb,
    h: TcpFrameHeaders,
    pool: &SkbPool,
    out: &mut Vec<Skb>,
) -> Result<(), GsoError> {
    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const CWR: u8 = 0x80;
    let frame = skb.data();
    let (l3, l4, hdr_len) = (h.l3_offset, h.l4_offset, h.hdr_len);
    let (ihl, thl) = (l4 - l3, hdr_len - l4);
    let ip_total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
    if l3 + ip_total != frame.len() {
        return Err(GsoError::Malformed);
    }
    let mss = usize::from(skb.gso_size);
    let payload = &frame[hdr_len..];
    let src = [
        frame[l3 + 12],
        frame[l3 + 13],
        frame[l3 + 14],
        frame[l3 + 15],
    ];
    let dst = [
        frame[l3 + 16],
        frame[l3 + 17],
        frame[l3 + 18],
        frame[l3 + 19],
    ];
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let flags = frame[l4 + 13];
    let n = payload.len().div_ceil(mss).max(1);
    let headroom = skb.data_offset();
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let mut seg = pool.alloc(headroom + hdr_len + chunk.len());
        seg.reserve(headroom);
        let buf = seg.put(hdr_len + chunk.len());
        buf[..hdr_len].copy_from_slice(&frame[..hdr_len]);
        buf[hdr_len..].copy_from_slice(chunk);
        // IPv4: length, ID, header checksum.
        let ip = &mut buf[l3..l4];
        ip[2..4].copy_from_slice(&((ihl + thl + chunk.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        ip[10..12].fill(0);
        let hc = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&hc.to_be_bytes());
        // TCP: sequence number, flags, checksum over pseudo-header, header and payload.
        let tcp = &mut buf[l4..];
        let seq = seq0.wrapping_add((i * mss) as u32);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        let mut f = flags;
        if i > 0 {
            f &= !CWR;
        }
        if i + 1 < n {
            f &= !(FIN | PSH);
        }
        tcp[13] = f;
        tcp[16..18].fill(0);
        let pseudo = checksum::pseudo_header_sum(
            src.into(),
            dst.into(),
            protocol::TCP,
            (thl + chunk.len()) as u16,
        );
        let tc = !checksum::fold(checksum::combine(pseudo, checksum::sum(tcp)));
        tcp[16..18].copy_from_slice(&tc.to_be_bytes());
        seg.copy_metadata_from(skb);
        out.push(seg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::wire::ethernet::EthernetRepr;
    use crate::wire::ipv4::{Ipv4Options, Ipv4Packet, Ipv4Repr};
    use crate::wire::tcp::{TcpFlags, TcpPacket, TcpRepr};
    use crate::wire::MacAddr;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// A TSO super-packet as the stack's output path leaves it: Ethernet, IPv4 with
    /// the whole length, TCP with the partial checksum, `gso_size` set.
    fn super_packet(payload: &[u8], gso_size: u16, flags: TcpFlags) -> Skb {
        let tcp = TcpRepr {
            src_port: 7,
            dst_port: 40000,
            seq: 0xffff_f000,
            ack: 1,
            flags,
            window: 512,
            timestamps: Some((1, 2)),
            ..Default::default()
        };
        let ip = Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: protocol::TCP,
            ttl: 64,
            tos: 0,
            ident: 0xfffe,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: tcp.header_len() + payload.len(),
            options: Ipv4Options::default(),
        };
        let eth = EthernetRepr {
            dst: MacAddr([2, 0, 192, 0, 2, 1]),
            src: MacAddr([2, 0, 192, 0, 2, 2]),
            vlan: None,
            ethertype: ethertype::IPV4,
        };
        let (el, il, tl) = (eth.header_len(), ip.header_len(), tcp.header_len());
        let pool = SkbPool::default();
        let mut skb = pool.alloc_tx(el + il + tl + payload.len());
        let buf = skb.put(el + il + tl + payload.len());
        eth.emit(buf);
        ip.emit(&mut buf[el..]);
        buf[el + il + tl..].copy_from_slice(payload);
        tcp.emit_csum_partial(&mut buf[el + il..], payload.len(), SRC, DST);
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + el + il) as u16,
            csum_offset: 16,
        };
        skb.gso_size = gso_size;
        skb
    }

    #[test]
    fn a_super_packet_becomes_valid_wire_segments() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let flags = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags::CWR;
        let skb = super_packet(&payload, 1448, flags);
        let mut out = Vec::new();
        skb_gso_segment(skb, &SkbPool::default(), &mut out).unwrap();
        assert_eq!(out.len(), 7, "10000 bytes in 1448-byte segments");
        let mut joined = Vec::new();
        for (i, seg) in out.iter().enumerate() {
            assert!(seg.len() <= 14 + 1500, "segment {i} fits the MTU");
            assert_eq!(seg.ip_summed, IpSummed::None);
            let ip = Ipv4Packet::new_checked(&seg.data()[14..]).unwrap();
            assert!(ip.verify_checksum(), "segment {i}: IPv4 header checksum");
            assert_eq!(usize::from(ip.total_len()), seg.len() - 14);
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(i as u16));
            let tcp = TcpPacket::new_checked(&seg.data()[34..]).unwrap();
            assert!(tcp.verify_checksum(SRC, DST), "segment {i}: TCP checksum");
            assert_eq!(
                tcp.seq_number(),
                0xffff_f000u32.wrapping_add(1448 * i as u32),
                "sequence numbers wrap like the kernel's"
            );
            let f = tcp.flags();
            let last = i == 6;
            assert_eq!(f.contains(TcpFlags::FIN), last, "segment {i}: FIN");
            assert_eq!(f.contains(TcpFlags::PSH), last, "segment {i}: PSH");
            assert_eq!(f.contains(TcpFlags::CWR), i == 0, "segment {i}: CWR");
            assert!(f.contains(TcpFlags::ACK));
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let payload = b"hello, wire".to_vec();
        let mut skb = super_packet(&payload, 0, TcpFlags::ACK);
        skb.gso_size = 0;
        let mut out = Vec::new();
        skb_gso_segment(skb, &SkbPool::default(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let tcp = TcpPacket::new_checked(&out[0].data()[34..]).unwrap();
        assert!(tcp.verify_checksum(SRC, DST));
        assert_eq!(tcp.payload(), &payload[..]);
    }

    #[test]
    fn a_plain_frame_passes_untouched() {
        let pool = SkbPool::default();
        let skb = pool.from_slice(0, &[0xab; 60]);
        let mut out = Vec::new();
        skb_gso_segment(skb, &pool, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data(), &[0xab; 60][..]);
    }

    #[test]
    fn a_truncated_super_packet_is_an_error() {
        let skb = super_packet(&[1; 3000], 1000, TcpFlags::ACK);
        let mut short = skb.clone();
        short.trim(skb.len() - 100);
        let mut out = Vec::new();
        assert_eq!(
            skb_gso_segment(short, &SkbPool::default(), &mut out),
            Err(GsoError::Malformed),
            "IPv4 length disagrees with the frame"
        );
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            gso in 0u16..600,
            start in 0u16..500,
            offset in 0u16..40,
        ) {
            let pool = SkbPool::default();
            let mut skb = pool.from_slice(0, &bytes);
            skb.gso_size = gso;
            if start % 2 == 0 {
                skb.ip_summed = IpSummed::Partial { csum_start: start, csum_offset: offset };
            }
            let mut out = Vec::new();
            let _ = skb_gso_segment(skb, &pool, &mut out);
        }
    }
}
