//! SipHash-2-4 (Aumasson and Bernstein, 2012) of a connection's 4-tuple under a secret
//! key: the F() of RFC 6528, so initial sequence numbers cannot be predicted by anyone
//! who does not know the key, while each 4-tuple's ISNs still advance with the clock.

use std::net::SocketAddrV4;

fn rotl(x: u64, b: u32) -> u64 {
    x.rotate_left(b)
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = rotl(v[1], 13) ^ v[0];
    v[0] = rotl(v[0], 32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = rotl(v[3], 16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = rotl(v[3], 21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = rotl(v[1], 17) ^ v[2];
    v[2] = rotl(v[2], 32);
}

/// SipHash-2-4 of `data` (whole 8-byte words plus a tail) under `key`.
pub fn siphash24(key: (u64, u64), data: &[u8]) -> u64 {
    let mut v = [
        key.0 ^ 0x736f_6d65_7073_6575,
        key.1 ^ 0x646f_7261_6e64_6f6d,
        key.0 ^ 0x6c79_6765_6e65_7261,
        key.1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let tail = chunks.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

pub fn secure_hash(key: (u64, u64), local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&local.ip().octets());
    buf[4..8].copy_from_slice(&remote.ip().octets());
    buf[8..10].copy_from_slice(&local.port().to_be_bytes());
    buf[10..12].copy_from_slice(&remote.port().to_be_bytes());
    siphash24(key, &buf) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        // The paper's test vector: key 00..0f, message 00..0e.
        let key = (
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        );
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(key, &msg), 0xa129_ca61_49be_45e5);
    }
}
