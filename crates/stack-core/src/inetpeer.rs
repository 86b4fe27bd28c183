//! Long-lived per-peer state (net/ipv4/inetpeer.c): one `inet_peer` per remote address,
//! shared by every rate limiter that Linux keys on the peer.
//!
//! Three users read and write the same two fields, exactly as in Linux 5.10, so they
//! interact the same way:
//!
//! * `icmpv4_xrlim_allow` (icmp.c, `inet_peer_xrlim_allow`): a token bucket of ICMP
//!   errors to the peer, 1 s a message (`icmp_ratelimit`), burst 6;
//! * `ip_error` (route.c): a token bucket of unreachables about the peer's packets,
//!   `ip_rt_error_cost` = 1 s a message, `ip_rt_error_burst` = 5 s;
//! * `ip_rt_send_redirect` (route.c): exponential back-off of redirects to the peer
//!   (`n_redirects`, `ip_rt_redirect_load` << n, silenced after `ip_rt_redirect_number`).
//!
//! All three use `rate_last`; the two buckets also share `rate_tokens`. So an
//! unreachable that `ip_error` lets through costs the peer's bucket twice (once there,
//! once in `icmp_send`), and a redirect moves `rate_last` for the error bucket too.
//!
//! The table is bounded (the kernel bounds its inetpeer tree by memory pressure,
//! `inet_peer_threshold`); when full, the peer quiet the longest goes.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::time::Instant;

/// Peers kept at most.
pub const INET_PEER_MAX: usize = 1024;

/// How far before its creation a new peer's `rate_last` lies (`inet_getpeer`: "60*HZ is
/// arbitrary, but chosen enough high so that the first calculation of tokens is at its
/// maximum").
const FRESH_AGE_US: i64 = 60_000_000;

/// One peer (`struct inet_peer`). Times are microseconds on the stack's clock, signed
/// so that a fresh peer's `rate_last` may lie before the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetPeer {
    /// Token bucket contents in microseconds (`rate_tokens`, jiffies in Linux).
    pub rate_tokens: u64,
    /// Last time a limiter looked at the peer (`rate_last`).
    pub rate_last: i64,
    /// Redirects sent since the last silence (`n_redirects`).
    pub n_redirects: u32,
}

impl InetPeer {
    /// `inet_peer_xrlim_allow`: add the time since `rate_last` to the bucket, cap it at
    /// `XRLIM_BURST_FACTOR` (6) x `timeout`, and spend `timeout` if there is that much.
    pub fn xrlim_allow(&mut self, now: Instant, timeout_us: u64) -> bool {
        const XRLIM_BURST_FACTOR: u64 = 6;
        let now = micros(now);
        let mut token = self.rate_tokens + elapsed(now, self.rate_last);
        self.rate_last = now;
        token = token.min(XRLIM_BURST_FACTOR * timeout_us);
        let allow = token >= timeout_us;
        if allow {
            token -= timeout_us;
        }
        self.rate_tokens = token;
        allow
    }
}

/// `now - then` in microseconds, zero if `then` is later.
pub(crate) fn elapsed(now: i64, then: i64) -> u64 {
    now.saturating_sub(then).max(0) as u64
}

/// An [`Instant`] as the signed microseconds [`InetPeer`] keeps.
pub(crate) fn micros(t: Instant) -> i64 {
    t.total_micros().min(i64::MAX as u64) as i64
}

/// The peers of one stack (`net->ipv4.peers`).
#[derive(Debug, Default)]
pub struct InetPeers {
    peers: HashMap<Ipv4Addr, InetPeer>,
}

impl InetPeers {
    /// `inet_getpeer_v4(base, addr, 0, create = 1)`: the peer for `addr`, made if new.
    pub fn get(&mut self, now: Instant, addr: Ipv4Addr) -> &mut InetPeer {
        if !self.peers.contains_key(&addr) && self.peers.len() >= INET_PEER_MAX {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(a, p)| (p.rate_last, u32::from(**a)))
                .map(|(a, _)| *a)
            {
                self.peers.remove(&oldest);
            }
        }
        self.peers.entry(addr).or_insert(InetPeer {
            rate_tokens: 0,
            rate_last: micros(now) - FRESH_AGE_US,
            n_redirects: 0,
        })
    }

    /// The peer for `addr`, if the table has one.
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&InetPeer> {
        self.peers.get(&addr)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn a_fresh_peer_has_a_full_bucket_then_one_token_a_second() {
        let mut t = InetPeers::default();
        let now = Instant::ZERO;
        let sent = (0..10)
            .filter(|_| t.get(now, A).xrlim_allow(now, 1_000_000))
            .count();
        assert_eq!(sent, 6, "burst of XRLIM_BURST_FACTOR");
        let later = Instant::from_millis(999);
        assert!(!t.get(later, A).xrlim_allow(later, 1_000_000));
        // 999 ms were credited at `later`; one more millisecond makes a token.
        let t1 = Instant::from_millis(1000);
        assert!(t.get(t1, A).xrlim_allow(t1, 1_000_000));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_quietest() {
        let mut t = InetPeers::default();
        for i in 0..INET_PEER_MAX as u32 {
            let now = Instant::from_micros(u64::from(i) + 1);
            t.get(now, Ipv4Addr::from(0x0a00_0000 + i))
                .xrlim_allow(now, 1);
        }
        assert_eq!(t.len(), INET_PEER_MAX);
        t.get(Instant::from_secs(9), A);
        assert_eq!(t.len(), INET_PEER_MAX);
        assert!(t.lookup(Ipv4Addr::from(0x0a00_0000)).is_none());
        assert!(t.lookup(Ipv4Addr::from(0x0a00_0001)).is_some());
    }
}
