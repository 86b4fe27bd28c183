//! SYN cookies (RFC 4987 section 3.6; Linux net/ipv4/syncookies.c): when the SYN queue
//! is full, answer a SYN without keeping any state, encoding what the connection needs
//! in our initial sequence number, and rebuild the connection from the ACK that echoes
//! it. A SYN flood then costs memory for nothing but the bounded SYN queue, and
//! legitimate clients still connect.
//!
//! Cookie layout (32 bits): `t` (5 bits, a counter of 64 s periods) | MSS index (3 bits)
//! | 24-bit keyed hash of the 4-tuple, the client's ISN and `t`. With timestamps, our
//! TSval also carries the client's window scale and SACK-permitted (`cookie_init_timestamp`).

use std::net::SocketAddrV4;

use super::isn::siphash24;
use crate::stack::Stack;

/// MSS values a cookie can say (`msstab`): common path MTUs.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1360, 1400, 1440, 1448, 1460];

/// Cookies older than this many 64 s periods are refused (`MAX_SYNCOOKIE_AGE` is 2).
const MAX_AGE: u32 = 2;

/// Options the client asked for, carried in the low bits of our timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOpts {
    pub wscale: Option<u8>,
    pub sack: bool,
}

fn period(now_secs: u64) -> u32 {
    ((now_secs / 64) & 0x1f) as u32
}

fn hash(
    key: (u64, u64),
    local: SocketAddrV4,
    remote: SocketAddrV4,
    client_isn: u32,
    t: u32,
) -> u32 {
    let mut buf = [0u8; 20];
    buf[..4].copy_from_slice(&local.ip().octets());
    buf[4..8].copy_from_slice(&remote.ip().octets());
    buf[8..10].copy_from_slice(&local.port().to_be_bytes());
    buf[10..12].copy_from_slice(&remote.port().to_be_bytes());
    buf[12..16].copy_from_slice(&client_isn.to_be_bytes());
    buf[16..20].copy_from_slice(&t.to_be_bytes());
    (siphash24((key.1, key.0), &buf) & 0x00ff_ffff) as u32
}

impl Stack {
    /// `cookie_v4_init_sequence`: our ISN for a SYN we keep no state for, and the MSS it
    /// promises (the largest table entry not above the client's).
    pub(crate) fn cookie_v4_init_sequence(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        client_isn: u32,
        mss: u16,
    ) -> (u32, u16) {
        let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
        let t = period(self.now.total_micros() / 1_000_000);
        let h = hash(self.sk.tcp.isn_key, local, remote, client_isn, t);
        ((t << 27) | ((idx as u32) << 24) | h, MSS_TABLE[idx])
    }

    /// `cookie_v4_check`: the MSS if `cookie` is one we made for this 4-tuple and ISN
    /// recently.
    pub(crate) fn cookie_v4_check(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        client_isn: u32,
        cookie: u32,
    ) -> Option<u16> {
        let t = cookie >> 27;
        let idx = ((cookie >> 24) & 0x7) as usize;
        let now_t = period(self.now.total_micros() / 1_000_000);
        let age = now_t.wrapping_sub(t) & 0x1f;
        if age >= MAX_AGE {
            return None;
        }
        (hash(self.sk.tcp.isn_key, local, remote, client_isn, t) == cookie & 0x00ff_ffff)
            .then_some(MSS_TABLE[idx])
    }
}

/// Our TSval for a cookie SYN-ACK: the clock with the low 6 bits replaced by the
/// options (bit 5: present, bit 4: SACK, bits 0-3: window scale or 15 for none).
pub fn cookie_init_timestamp(ts_now: u32, opts: CookieOpts) -> u32 {
    let ws = u32::from(opts.wscale.map_or(15, |w| w.min(14)));
    let ts = (ts_now & !0x3f) | 0x20 | (u32::from(opts.sack) << 4) | ws;
    // The low bits may put it ahead of the clock; the connection's later timestamps come
    // from the clock, and a peer's PAWS would drop them as older. Step back one period
    // so it never runs ahead (as Linux's cookie_init_timestamp does).
    if (ts.wrapping_sub(ts_now) as i32) > 0 {
        ts.wrapping_sub(0x40)
    } else {
        ts
    }
}

/// Read the options back from the TSecr the client echoes.
pub fn cookie_decode_timestamp(tsecr: u32) -> Option<CookieOpts> {
    if tsecr & 0x20 == 0 {
        return None;
    }
    let ws = (tsecr & 0xf) as u8;
    Some(CookieOpts {
        wscale: (ws != 15).then_some(ws),
        sack: tsecr & 0x10 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_carries_options() {
        for opts in [
            CookieOpts {
                wscale: Some(7),
                sack: true,
            },
            CookieOpts {
                wscale: None,
                sack: false,
            },
            CookieOpts {
                wscale: Some(0),
                sack: false,
            },
        ] {
            for now in [0xdead_beef_u32, 0xdead_bec0, 0xdead_beff, 5] {
                let ts = cookie_init_timestamp(now, opts);
                assert!(
                    (now.wrapping_sub(ts) as i32) >= 0,
                    "never ahead of the clock"
                );
                assert!(now.wrapping_sub(ts) < 128, "and at most two periods behind");
                assert_eq!(cookie_decode_timestamp(ts), Some(opts));
            }
        }
        assert_eq!(cookie_decode_timestamp(0x1f), None);
    }
}
