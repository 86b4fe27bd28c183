//! IPv4 fragmentation on output: `ip_fragment` / `ip_do_fragment` (net/ipv4/ip_output.c),
//! after RFC 791 section 3.2 "Fragmentation" (the procedure) and section 3.1 (the fields).
//!
//! ```text
//!   original:  | hdr + all options |  payload 0 .. N                                     |
//!   first:     | hdr + all options |  0 .. k0         |            MF
//!   others:    | hdr + copied opts |  k0 .. k1        |            MF
//!   last:      | hdr + copied opts |  kn .. N         |            MF as in the original
//! ```
//!
//! Every fragment but the last carries a multiple of 8 payload bytes, since the offset
//! field counts 8-byte units. A datagram that is itself a fragment (forwarded) is cut the
//! same way: each piece adds the original offset, and the original's MF survives on the
//! last piece, so the final receiver sees one consistent set.
//!
//! Pure: the caller (`ip_finish_output`) counts FragOKs / FragCreates / FragFails and sends
//! ICMP "fragmentation needed" (RFC 1191) when DF forbids cutting.

use crate::gso;
use crate::skb::{Skb, SkbPool};
use crate::wire::ipv4::{self, option_kind, Ipv4Packet};

/// Why `ip_fragment` produced nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragError {
    /// DF is set and the datagram is larger than the MTU: the caller answers EMSGSIZE
    /// (local sender) or ICMP "fragmentation needed and DF set" (forwarding, RFC 1191).
    DontFragment,
    /// The MTU cannot hold the header plus 8 payload bytes (RFC 791 requires every
    /// module to forward 68-byte datagrams without further fragmentation, section 3.2).
    MtuTooSmall,
    /// The skb does not hold a valid IPv4 header and payload, its options do not parse,
    /// an offset would not fit the 13-bit field, or its checksum-offload offsets are out
    /// of range.
    Malformed,
}

/// The copied flag of an option type octet (RFC 791 section 3.1: "the copied flag
/// indicates that this option is copied into all fragments on fragmentation").
const IPOPT_COPY: u8 = 0x80;

/// The largest byte offset the 13-bit Fragment Offset field can express.
const MAX_FRAG_OFFSET: usize = 0x1fff * 8;

/// Split `skb` (data at a complete, valid IPv4 header; network header set) into
/// fragments of at most `mtu` bytes each, appended to `out`.
///
/// A datagram that already fits is pushed as a single clone (no copy), DF or not. On an
/// error `out` is left as it was.
///
/// Each fragment is a fresh buffer from `pool.alloc_tx` (so `MAX_HEADER` bytes of
/// headroom remain for the link layer), data and network header at its IPv4 header,
/// with the original's `protocol`, `priority`, `mark`, `ifindex`, `pkt_type`, `vlan_tci`
/// and `tstamp` (Linux `ip_copy_metadata`). A `CHECKSUM_PARTIAL` transport checksum is
/// completed in software first (`skb_checksum_help`): no device can finish a checksum
/// over bytes spread across several frames.
pub fn ip_fragment(
    skb: &Skb,
    mtu: usize,
    pool: &SkbPool,
    out: &mut Vec<Skb>,
) -> Result<(), FragError> {
    let data = skb.data();
    let ip = Ipv4Packet::new_checked(data).map_err(|_| FragError::Malformed)?;
    let total_len = usize::from(ip.total_len());
    if total_len <= mtu {
        let mut one = skb.clone();
        // Anything past Total Length is not part of the datagram.
        one.trim(total_len);
        out.push(one);
        return Ok(());
    }
    if ip.dont_frag() {
        return Err(FragError::DontFragment);
    }
    let hlen = ip.header_len();
    if mtu < hlen + 8 {
        return Err(FragError::MtuTooSmall);
    }

    // The header of every fragment after the first: the fixed 20 bytes plus only the
    // options marked "copied" (RFC 791 section 3.2, step 3 of the procedure).
    let mut rest_hdr = [0u8; ipv4::MAX_HEADER_LEN];
    rest_hdr[..ipv4::MIN_HEADER_LEN].copy_from_slice(&data[..ipv4::MIN_HEADER_LEN]);
    let rest_opts = ip_options_fragment(ip.options(), &mut rest_hdr[ipv4::MIN_HEADER_LEN..])?;
    let rest_hlen = ipv4::MIN_HEADER_LEN + rest_opts;

    // Where the checksum goes, as a position in the IP payload.
    let csum_patch = gso::skb_checksum_help(skb, hlen, total_len)
        .map_err(|()| FragError::Malformed)?
        .map(|(field, csum)| (field - hlen, csum.to_be_bytes()));

    let base = usize::from(ip.frag_offset());
    let orig_mf = ip.more_frags();
    let payload = ip.payload();
    let payload_len = payload.len();

    // Plan first, so that an offset overflow leaves `out` untouched.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < payload_len {
        let hl = if pos == 0 { hlen } else { rest_hlen };
        // Largest multiple of 8 that fits beside this fragment's header.
        let room = (mtu - hl) & !7;
        let len = room.min(payload_len - pos);
        if base + pos > MAX_FRAG_OFFSET {
            return Err(FragError::Malformed);
        }
        pieces.push((pos, len));
        pos += len;
    }

    out.reserve(pieces.len());
    for &(pos, len) in &pieces {
        let first = pos == 0;
        let last = pos + len == payload_len;
        let hdr: &[u8] = if first {
            &data[..hlen]
        } else {
            &rest_hdr[..rest_hlen]
        };
        let flen = hdr.len() + len;
        let mut frag = pool.alloc_tx(flen);
        let buf = frag.put(flen);
        buf[..hdr.len()].copy_from_slice(hdr);
        let body = &mut buf[hdr.len()..];
        body.copy_from_slice(&payload[pos..pos + len]);
        if let Some((at, bytes)) = csum_patch {
            for (k, b) in bytes.iter().enumerate() {
                if let Some(i) = (at + k).checked_sub(pos).filter(|&i| i < len) {
                    body[i] = *b;
                }
            }
        }
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_header_len(hdr.len());
        // flen <= mtu and, the datagram being valid, <= 65535.
        p.set_total_len(flen as u16);
        // A fragment of a fragment keeps the original MF on its last piece (RFC 791
        // section 3.2: "MF ... copied from the long datagram" for the last fragment).
        p.set_flags_and_frag_offset(false, !last || orig_mf, (base + pos) as u16);
        p.fill_checksum();
        frag.reset_network_header();
        frag.copy_metadata_from(skb);
        out.push(frag);
    }
    Ok(())
}

/// `ip_options_fragment`: write the options of `opts` whose copied flag is set into
/// `dst`, padded with End octets to a multiple of 4; returns the padded length.
///
/// Linux overwrites the non-copied options with NOPs in place and keeps the header
/// length; RFC 791 describes dropping them, which leaves more room for payload.
fn ip_options_fragment(opts: &[u8], dst: &mut [u8]) -> Result<usize, FragError> {
    let mut n = 0;
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            option_kind::END => break,
            // Single-octet NOP: not copied, and alignment is redone below.
            option_kind::NOP => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1).ok_or(FragError::Malformed)?);
                let opt = opts.get(i..i + len).ok_or(FragError::Malformed)?;
                if len < 2 {
                    return Err(FragError::Malformed);
                }
                if kind & IPOPT_COPY != 0 {
                    dst.get_mut(n..n + len)
                        .ok_or(FragError::Malformed)?
                        .copy_from_slice(opt);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = (n + 3) & !3;
    dst.get_mut(n..padded)
        .ok_or(FragError::Malformed)?
        .fill(option_kind::END);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skb::{IpSummed, PktType, MAX_HEADER};
    use crate::time::Instant;
    use crate::wire::checksum;
    use crate::wire::ipv4::{protocol, Ipv4Options, Ipv4Repr};
    use crate::wire::Ipv4Addr;

    fn repr(payload_len: usize, opts: &[u8]) -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            payload_len,
            options: Ipv4Options::new(opts).unwrap(),
        }
    }

    /// A datagram of `r` whose payload byte i is `i as u8`, in an skb with headroom.
    fn datagram(pool: &SkbPool, r: &Ipv4Repr) -> Skb {
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v);
        let hl = r.header_len();
        for (i, b) in v[hl..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut skb = pool.from_slice(MAX_HEADER, &v);
        skb.reset_network_header();
        skb
    }

    /// (offset, payload length, MF, header length), checking each header on the way.
    fn layout(frags: &[Skb]) -> Vec<(u16, usize, bool, usize)> {
        frags
            .iter()
            .map(|f| {
                let p = Ipv4Packet::new_checked(f.data()).unwrap();
                assert!(p.verify_checksum());
                assert_eq!(usize::from(p.total_len()), f.len());
                assert!(!p.dont_frag());
                assert_eq!(f.network_header_offset(), Some(f.data_offset()));
                assert!(f.headroom() >= MAX_HEADER);
                (
                    p.frag_offset(),
                    p.payload().len(),
                    p.more_frags(),
                    p.header_len(),
                )
            })
            .collect()
    }

    /// The payloads of `frags`, concatenated in offset order.
    fn joined(frags: &[Skb]) -> Vec<u8> {
        let mut v: Vec<(u16, Vec<u8>)> = frags
            .iter()
            .map(|f| {
                let p = Ipv4Packet::new_checked(f.data()).unwrap();
                (p.frag_offset(), p.payload().to_vec())
            })
            .collect();
        v.sort_by_key(|e| e.0);
        v.into_iter().flat_map(|e| e.1).collect()
    }

    #[test]
    fn three_fragments_at_1500_like_linux() {
        let pool = SkbPool::default();
        let mut skb = datagram(&pool, &repr(3000, &[]));
        skb.protocol = 0x0800;
        skb.priority = 6;
        skb.mark = 0x42;
        skb.ifindex = 2;
        skb.pkt_type = PktType::Outgoing;
        skb.tstamp = Instant::from_millis(7);
        let mut out = Vec::new();
        ip_fragment(&skb, 1500, &pool, &mut out).unwrap();
        assert_eq!(
            layout(&out),
            vec![
                (0, 1480, true, 20),
                (1480, 1480, true, 20),
                (2960, 40, false, 20)
            ]
        );
        let total: Vec<u16> = out
            .iter()
            .map(|f| Ipv4Packet::new_unchecked(f.data()).total_len())
            .collect();
        assert_eq!(total, vec![1500, 1500, 60]);
        let orig = Ipv4Packet::new_checked(skb.data()).unwrap();
        assert_eq!(joined(&out), orig.payload());
        for f in &out {
            let p = Ipv4Packet::new_unchecked(f.data());
            assert_eq!((p.ident(), p.ttl(), p.protocol()), (0x1234, 64, 17));
            assert_eq!((p.src(), p.dst()), (orig.src(), orig.dst()));
            assert_eq!((f.protocol, f.priority, f.mark), (0x0800, 6, 0x42));
            assert_eq!((f.ifindex, f.pkt_type), (2, PktType::Outgoing));
            assert_eq!(f.tstamp, Instant::from_millis(7));
        }
    }

    #[test]
    fn only_copied_options_follow_the_first_fragment() {
        let pool = SkbPool::default();
        // Record Route (not copied), NOP, Security (copied), Timestamp (not copied),
        // Router Alert (copied): 7 + 1 + 4 + 8 + 4 = 24 bytes, header 44.
        let opts = [
            7, 7, 4, 0, 0, 0, 0, // RR
            1, // NOP
            130, 4, 0xaa, 0xbb, // Security
            68, 8, 5, 0, 0, 0, 0, 0, // Timestamp
            148, 4, 0, 0, // Router Alert
        ];
        let r = repr(3000, &opts);
        assert_eq!(r.header_len(), 44);
        let skb = datagram(&pool, &r);
        let mut out = Vec::new();
        ip_fragment(&skb, 1500, &pool, &mut out).unwrap();
        // First: (1500 - 44) & !7 = 1456. Others: header 20 + 8 = 28, (1500 - 28) & !7 = 1472.
        assert_eq!(
            layout(&out),
            vec![
                (0, 1456, true, 44),
                (1456, 1472, true, 28),
                (2928, 72, false, 28)
            ]
        );
        assert_eq!(
            Ipv4Packet::new_unchecked(out[0].data()).options(),
            &skb.data()[20..44]
        );
        for f in &out[1..] {
            assert_eq!(
                Ipv4Packet::new_unchecked(f.data()).options(),
                &[130, 4, 0xaa, 0xbb, 148, 4, 0, 0]
            );
        }
        assert_eq!(
            joined(&out),
            Ipv4Packet::new_unchecked(skb.data()).payload()
        );

        // Only non-copied options: later fragments shrink to 20 bytes; a copied option
        // of odd length is padded with End.
        let skb = datagram(&pool, &repr(100, &[7, 7, 4, 0, 0, 0, 0, 1]));
        let mut out = Vec::new();
        ip_fragment(&skb, 60, &pool, &mut out).unwrap();
        let l = layout(&out);
        assert_eq!(l[0], (0, 32, true, 28));
        assert!(l[1..].iter().all(|e| e.3 == 20));
        let skb = datagram(&pool, &repr(100, &[130, 3, 9, 1]));
        let mut out = Vec::new();
        ip_fragment(&skb, 60, &pool, &mut out).unwrap();
        assert_eq!(
            Ipv4Packet::new_unchecked(out[1].data()).options(),
            &[130, 3, 9, 0]
        );
    }

    #[test]
    fn dont_fragment_and_small_mtu_refused() {
        let pool = SkbPool::default();
        let mut r = repr(3000, &[]);
        r.dont_frag = true;
        let skb = datagram(&pool, &r);
        let mut out = vec![skb.clone()];
        assert_eq!(
            ip_fragment(&skb, 1500, &pool, &mut out),
            Err(FragError::DontFragment)
        );
        assert_eq!(out.len(), 1, "out untouched on error");
        // DF that fits is simply passed on.
        out.clear();
        ip_fragment(&skb, 3020, &pool, &mut out).unwrap();
        assert_eq!(out.len(), 1);

        let skb = datagram(&pool, &repr(100, &[]));
        out.clear();
        assert_eq!(
            ip_fragment(&skb, 27, &pool, &mut out),
            Err(FragError::MtuTooSmall)
        );
        assert!(out.is_empty());
        // 8 payload bytes per fragment is the floor (RFC 791's 68 = 60 + 8).
        ip_fragment(&skb, 28, &pool, &mut out).unwrap();
        let l = layout(&out);
        assert_eq!(l.len(), 13);
        assert!(l[..12].iter().all(|e| e.1 == 8 && e.2));
        assert_eq!(l[12], (96, 4, false, 20));
    }

    #[test]
    fn refragmenting_a_fragment_keeps_offset_and_mf() {
        let pool = SkbPool::default();
        // A middle fragment (MF set) at offset 1480, 1480 bytes, through a 576 link.
        let mut r = repr(1480, &[]);
        r.more_frags = true;
        r.frag_offset = 1480;
        let skb = datagram(&pool, &r);
        let mut out = Vec::new();
        ip_fragment(&skb, 576, &pool, &mut out).unwrap();
        assert_eq!(
            layout(&out),
            vec![
                (1480, 552, true, 20),
                (2032, 552, true, 20),
                (2584, 376, true, 20)
            ]
        );
        // The last fragment of a datagram: only its last piece has MF clear.
        r.more_frags = false;
        let skb = datagram(&pool, &r);
        out.clear();
        ip_fragment(&skb, 576, &pool, &mut out).unwrap();
        let mf: Vec<bool> = layout(&out).iter().map(|e| e.2).collect();
        assert_eq!(mf, vec![true, true, false]);
        assert_eq!(
            joined(&out),
            Ipv4Packet::new_unchecked(skb.data()).payload()
        );
    }

    #[test]
    fn offset_past_the_field_is_malformed() {
        let pool = SkbPool::default();
        let mut r = repr(1000, &[]);
        r.frag_offset = 65000;
        let skb = datagram(&pool, &r);
        let mut out = Vec::new();
        assert_eq!(
            ip_fragment(&skb, 300, &pool, &mut out),
            Err(FragError::Malformed)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_datagram_that_fits_is_a_clone() {
        let pool = SkbPool::default();
        let skb = datagram(&pool, &repr(1480, &[]));
        let mut out = Vec::new();
        ip_fragment(&skb, 1500, &pool, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].is_cloned());
        assert_eq!(out[0].data().as_ptr(), skb.data().as_ptr());
        assert_eq!(out[0].data(), skb.data());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let pool = SkbPool::default();
        let mut out = Vec::new();
        for bad in [&[0x45u8, 0, 0][..], &[0x60; 40][..]] {
            let skb = pool.from_slice(MAX_HEADER, bad);
            assert_eq!(
                ip_fragment(&skb, 68, &pool, &mut out),
                Err(FragError::Malformed)
            );
        }
        // An option whose length runs past the header.
        let skb = datagram(&pool, &repr(200, &[130, 9, 0, 0]));
        assert_eq!(
            ip_fragment(&skb, 68, &pool, &mut out),
            Err(FragError::Malformed)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn partial_checksum_is_completed_before_cutting() {
        let pool = SkbPool::default();
        let r = repr(3000, &[]);
        let mut skb = datagram(&pool, &r);
        // A UDP header whose checksum field holds the pseudo-header sum (the offload
        // contract), then CHECKSUM_PARTIAL pointing at it.
        let udp_len = 3000u16;
        let seed = checksum::fold(checksum::pseudo_header_sum(
            r.src,
            r.dst,
            protocol::UDP,
            udp_len,
        ));
        let d = skb.data_mut();
        d[20..22].copy_from_slice(&1000u16.to_be_bytes());
        d[22..24].copy_from_slice(&2000u16.to_be_bytes());
        d[24..26].copy_from_slice(&udp_len.to_be_bytes());
        d[26..28].copy_from_slice(&seed.to_be_bytes());
        let start = (skb.data_offset() + 20) as u16;
        skb.ip_summed = IpSummed::Partial {
            csum_start: start,
            csum_offset: 6,
        };
        let mut out = Vec::new();
        ip_fragment(&skb, 1500, &pool, &mut out).unwrap();
        assert!(out.iter().all(|f| f.ip_summed == IpSummed::None));
        let udp = joined(&out);
        let sum = checksum::combine(
            checksum::pseudo_header_sum(r.src, r.dst, protocol::UDP, udp_len),
            checksum::sum(&udp),
        );
        assert_eq!(checksum::fold(sum), 0xffff, "UDP checksum verifies");
        // Offsets outside the datagram are refused.
        skb.ip_summed = IpSummed::Partial {
            csum_start: start,
            csum_offset: 2999,
        };
        out.clear();
        assert_eq!(
            ip_fragment(&skb, 1500, &pool, &mut out),
            Err(FragError::Malformed)
        );
    }
}
