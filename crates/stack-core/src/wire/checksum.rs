//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the one's-complement of the one's-complement sum of the data taken as
//! big-endian 16-bit words. One's-complement addition is addition modulo 0xffff (with
//! 0xffff standing for "negative zero"), and since 2^16 ≡ 1 (mod 0xffff) so are 2^32 and
//! 2^64: a sum may be accumulated in wider words with the carries wrapped back in
//! ("end-around carry", RFC 1071 section 2(B)) and folded to 16 bits only at the end.
//!
//! Partial sums ([`sum`], [`pseudo_header_sum`]) are `u32`s that are neither folded nor
//! inverted, so that pieces (pseudo-header, header, payload) can be [`combine`]d in any
//! order (RFC 1071 section 2(A), commutativity and associativity) before one final
//! [`fold`].

use super::Ipv4Addr;

/// One's-complement sum of `data` as big-endian 16-bit words, padded with a zero byte if
/// its length is odd (RFC 1071 section 4.1). Neither folded nor inverted.
///
/// Works 8 bytes at a time in a `u64` accumulator with end-around carry (RFC 1071 section
/// 2(B): the sum may be computed in a wider word and folded afterwards).
pub fn sum(data: &[u8]) -> u32 {
    // Two independent accumulators let the two additions of a 16-byte step overlap.
    let mut a: u64 = 0;
    let mut b: u64 = 0;
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        let (x, y) = c.split_at(8);
        a = add_carry64(a, u64::from_be_bytes(x.try_into().unwrap_or([0; 8])));
        b = add_carry64(b, u64::from_be_bytes(y.try_into().unwrap_or([0; 8])));
    }
    let mut acc = add_carry64(a, b);
    let rest = chunks.remainder();
    // The remainder starts at an even offset, so 16-bit word alignment is preserved.
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc = add_carry64(acc, u64::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [last] = words.remainder() {
        acc = add_carry64(acc, u64::from(*last) << 8);
    }
    // Fold 64 -> 32 bits, keeping the value modulo 0xffff.
    let folded = (acc >> 32) + (acc & 0xffff_ffff);
    let folded = (folded >> 32) + (folded & 0xffff_ffff);
    folded as u32
}

#[inline(always)]
fn add_carry64(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Fold a partial sum to 16 bits by adding the carries back in. Not inverted: the result
/// is 0 only for a sum of 0, otherwise in `1..=0xffff`.
pub fn fold(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// One's-complement addition of two partial sums (end-around carry, RFC 1071 section 2(B)).
pub fn combine(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// The Internet checksum of `data`: `!fold(sum(data))`, to be stored big-endian.
///
/// A receiver verifies by summing the data *with* the stored checksum: the folded sum is
/// then 0xffff (RFC 1071 section 1, step (3)).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the TCP/UDP pseudo-header: source and destination address, a zero byte,
/// the protocol number and the transport length (RFC 768 "Fields"; RFC 9293 section 3.1).
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let word = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    word(s[0], s[1])
        + word(s[2], s[3])
        + word(d[0], d[1])
        + word(d[2], d[3])
        + u32::from(protocol)
        + u32::from(len)
}

/// Incrementally update checksum `csum` when a 16-bit field changes from `old` to `new`.
///
/// RFC 1624 section 3, eqn. 3: `HC' = ~(~HC + ~m + m')`. Unlike RFC 1141's
/// `HC' = HC + m - m'` this never produces 0xffff ("negative zero") from a header whose
/// true checksum is 0x0000. It equals a full recomputation whenever the covered data is
/// not all zero (an all-zero block's true checksum is 0xffff, which no update can tell
/// apart from 0x0000); every real IP/TCP/UDP header has a non-zero word.
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// [`update16`] for a 32-bit field (an IPv4 address, a TCP sequence number): both halves
/// are updated at once (RFC 1624 section 3).
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious definition: one 16-bit word at a time, folding as we go.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for w in data.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            let lo = w.get(1).copied().map(u32::from).unwrap_or(0);
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after folding).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured IPv4 header whose checksum field (0xb861) is correct.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&hdr)), 0xffff);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn odd_length_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(fold(sum(&[0xab])), 0xab00);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn all_ones_large() {
        // Many carries: every 64-bit step overflows.
        let data = vec![0xffu8; 4097];
        assert_eq!(fold(sum(&data)), naive_sum(&data));
    }

    #[test]
    fn pseudo_header() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6, 0x01, 0x02]);
        assert_eq!(
            fold(pseudo_header_sum(src, dst, 6, 0x0102)),
            fold(sum(&bytes))
        );
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555, m' = 0x3285 gives 0x0000, where
        // RFC 1141's equation wrongly gives 0xffff.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn fast_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(fold(sum(&data)), naive_sum(&data));
        }

        #[test]
        fn sum_splits_at_even_offsets(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..100,
        ) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(fold(combine(sum(a), sum(b))), fold(sum(&data)));
        }

        #[test]
        fn filled_checksum_verifies(mut data in proptest::collection::vec(any::<u8>(), 2..100)) {
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(fold(sum(&data)), 0xffff);
        }

        #[test]
        fn update16_matches_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 3..30),
            idx in 2usize..30,
            new in any::<u16>(),
        ) {
            // Word 0 stands for the checksum field, word 1 is kept non-zero (as the version
            // field of an IP header is), see the note on `update16`.
            words[1] |= 1;
            let idx = idx % (words.len() - 2) + 2;
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            words[0] = 0;
            let before = checksum(&bytes(&words));
            let old = words[idx];
            words[idx] = new;
            let after = checksum(&bytes(&words));
            prop_assert_eq!(update16(before, old, new), after);
        }

        #[test]
        fn update32_matches_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 4..30),
            idx in 2usize..30,
            new in any::<u32>(),
        ) {
            words[1] |= 1;
            let idx = idx % (words.len() - 3) + 2;
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            words[0] = 0;
            let before = checksum(&bytes(&words));
            let old = (u32::from(words[idx]) << 16) | u32::from(words[idx + 1]);
            words[idx] = (new >> 16) as u16;
            words[idx + 1] = new as u16;
            let after = checksum(&bytes(&words));
            prop_assert_eq!(update32(before, old, new), after);
        }
    }
}
