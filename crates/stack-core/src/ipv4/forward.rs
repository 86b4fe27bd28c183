//! IPv4 forwarding, after Linux 5.10's net/ipv4/ip_forward.c (`ip_forward`,
//! `ip_forward_finish`, `ip_exceeds_mtu`) and the parts of net/ipv4/route.c it calls
//! (`ip_rt_send_redirect`, and `ip_error` for packets the input route refused), with
//! RFC 1812 sections 5.2 and 5.3 as the rule book.
//!
//! ```text
//!  ip_route_input ─► ip_forward: PACKET_HOST? ─ TTL > 1? ─ fits the MTU or DF clear?
//!        │              │ no: drop    │ no: time exceeded   │ no: frag needed (mtu)
//!        │              ▼
//!        │           ip_decrease_ttl ─► redirect? ─► FORWARD hook ─► ip_forward_finish
//!        │                                                              │
//!        └─► ip_error (no route / unreachable / blackhole)        ip_output (fragments,
//!                                                                  GSO, neighbour)
//! ```
//!
//! Forwarding is off by default (`net.ipv4.ip_forward = 0`); a router turns it on in its
//! [`super::Ipv4Conf`].

use std::net::Ipv4Addr;

use super::input::DstError;
use super::output::gso_fits;
use super::Rtable;
use crate::inetpeer::{elapsed, micros};
use crate::netfilter::{NfHook, Verdict};
use crate::skb::{PktType, Skb};
use crate::stack::Stack;
use crate::wire::icmpv4::{msg_type, time_exceeded_code, unreach_code};
use crate::wire::ipv4::{self, option_kind, Ipv4Option, Ipv4Packet};

/// `ip_rt_redirect_number`: redirects to one peer before it is deemed to ignore them.
pub const IP_RT_REDIRECT_NUMBER: u32 = 9;
/// `ip_rt_redirect_load` (HZ / 50): the first back-off between redirects to a peer; the
/// n-th redirect waits `load << n` after the one before.
pub const IP_RT_REDIRECT_LOAD_US: u64 = 20_000;
/// `ip_rt_redirect_silence` ((HZ / 50) << (9 + 1), 20.48 s): once this long has passed
/// without a packet that deserved a redirect, the peer's count starts again.
pub const IP_RT_REDIRECT_SILENCE_US: u64 = IP_RT_REDIRECT_LOAD_US << (IP_RT_REDIRECT_NUMBER + 1);
/// `ip_rt_error_cost` (HZ): what one unreachable from `ip_error` costs a peer's bucket.
pub const IP_RT_ERROR_COST_US: u64 = 1_000_000;
/// `ip_rt_error_burst` (5 * HZ): the most a peer's bucket holds for `ip_error`.
pub const IP_RT_ERROR_BURST_US: u64 = 5 * IP_RT_ERROR_COST_US;

/// ICMP redirect codes (RFC 792).
const ICMP_REDIR_HOST: u8 = 1;

/// `ip_tos2prio` (net/ipv4/route.c): the pfifo_fast priority of each TOS value
/// (`IPTOS_TOS(tos) >> 1`): best effort, bulk (max-throughput), interactive
/// (low-delay) and interactive bulk; the ECN/min-cost bit does not matter.
const IP_TOS2PRIO: [u32; 16] = [0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4];

/// `rt_tos2priority`: `skb->priority` for a packet with this TOS octet.
pub fn rt_tos2priority(tos: u8) -> u32 {
    IP_TOS2PRIO[usize::from((tos & 0x1e) >> 1)]
}

/// `ip_exceeds_mtu`: whether a packet (`data` at the IPv4 header) may not leave by a
/// device of `mtu` as it is: over the MTU with DF set, where a GSO super-packet counts
/// by the size of its segments (`skb_gso_validate_network_len`).
fn ip_exceeds_mtu(skb: &Skb, mtu: usize) -> bool {
    if skb.len() <= mtu {
        return false;
    }
    if !Ipv4Packet::new_unchecked(skb.data()).dont_frag() {
        return false;
    }
    !(skb.gso_size > 0 && gso_fits(skb, mtu))
}

/// Whether the options hold a loose or strict source route (`opt->srr`).
fn has_source_route(options: &[u8]) -> bool {
    ipv4::options_iter(options).any(|o| {
        matches!(
            o,
            Ok(Ipv4Option::Other {
                kind: option_kind::LSRR | option_kind::SSRR,
                ..
            })
        )
    })
}

impl Stack {
    /// `ip_forward`: a packet for another host (`data` at the IPv4 header, the header
    /// valid) that `ip_route_input` routed out by `rt`. The checks come in the kernel's
    /// order; each refusal has the kernel's counter and ICMP error.
    #[tracing::instrument(level = "trace", name = "ip_forward", skip_all)]
    pub(crate) fn ip_forward(&mut self, mut skb: Skb, rt: Rtable, redirect: bool) {
        // Only frames sent to our MAC are forwarded; a unicast datagram in a link-layer
        // broadcast is not ours to route (RFC 1812 section 5.3.4).
        if skb.pkt_type != PktType::Host {
            self.snmp.ip.in_discards += 1;
            tracing::trace!(pkt_type = ?skb.pkt_type, "drop: not PACKET_HOST");
            return;
        }
        let ip = Ipv4Packet::new_unchecked(skb.data());
        // RFC 1812 section 5.3.1: a packet whose TTL would reach zero is discarded and
        // its sender told (time exceeded in transit); Linux's `too_many_hops` counts it
        // in InHdrErrors.
        if ip.ttl() <= 1 {
            self.snmp.ip.in_hdr_errors += 1;
            self.icmp_send(&skb, msg_type::TIME_EXCEEDED, time_exceeded_code::TTL, 0);
            return;
        }
        // (Strict source routes never get here: `ip_rcv_options` drops source-routed
        // packets, as Linux with `accept_source_route = 0`.)
        let srr = has_source_route(ip.options());
        // `ip_dst_mtu_maybe_forward` with `ip_forward_use_pmtu = 0`: the device MTU.
        let mtu = rt.mtu;
        if ip_exceeds_mtu(&skb, mtu) {
            // RFC 1191 section 4: tell the sender the next hop's MTU.
            self.snmp.ip.frag_fails += 1;
            self.icmp_send(
                &skb,
                msg_type::DST_UNREACHABLE,
                unreach_code::FRAG_NEEDED,
                mtu as u32,
            );
            return;
        }
        // `skb_cow` + `ip_decrease_ttl`: our own copy if the buffer is shared (a packet
        // tap holds a clone), then TTL - 1 with an incremental checksum (RFC 1624).
        let tos = {
            let mut ip = Ipv4Packet::new_unchecked(skb.data_mut());
            ip.decrease_ttl();
            ip.tos()
        };
        // After the decrement, so the redirect quotes the header as it is forwarded.
        if redirect && !srr {
            self.ip_rt_send_redirect(&skb, &rt);
        }
        if self.ipv4.conf.ip_fwd_update_priority {
            skb.priority = rt_tos2priority(tos);
        }
        if self
            .nf
            .nf_hook(NfHook::Forward, &mut skb, &mut self.snmp.nf)
            == Verdict::Drop
        {
            return;
        }
        self.ip_forward_finish(skb, rt);
    }

    /// `ip_forward_finish`: count the datagram (`IPSTATS_MIB_OUTFORWDATAGRAMS`, the
    /// "ForwDatagrams" of /proc/net/snmp, and its octets, which `ip_output` counts once
    /// more, as Linux 5.10 does) and send it (`dst_output` -> `ip_output`).
    #[tracing::instrument(level = "trace", name = "ip_forward_finish", skip_all)]
    fn ip_forward_finish(&mut self, mut skb: Skb, rt: Rtable) {
        self.snmp.ip.forw_datagrams += 1;
        self.snmp.ip_ext.out_octets += skb.len() as u64;
        skb.reset_network_header();
        // Failures past this point (a POST_ROUTING drop, a fragment that cannot be
        // made) are counted where they happen.
        let _ = self.ip_output(skb, rt);
    }

    /// `ip_rt_send_redirect` (RFC 1812 section 5.2.7.2): tell the sender of `skb` that
    /// the route's next hop, on its own link, is the better first hop: an ICMP redirect
    /// for the host (type 5 code 1) carrying that gateway. Per peer, redirects back off
    /// exponentially (`ip_rt_redirect_load << n_redirects`); after
    /// `ip_rt_redirect_number` of them the peer is taken to ignore redirects and gets no
    /// more until `ip_rt_redirect_silence` passes without a packet that deserved one.
    /// The packet is forwarded either way.
    fn ip_rt_send_redirect(&mut self, skb: &Skb, rt: &Rtable) {
        // IN_DEV_TX_REDIRECTS of the output device.
        if !self.ipv4.conf.send_redirects {
            return;
        }
        let src = Ipv4Packet::new_unchecked(skb.data()).src();
        let now = micros(self.now);
        let peer = self.ipv4.peers.get(self.now, src);
        if elapsed(now, peer.rate_last) > IP_RT_REDIRECT_SILENCE_US {
            peer.rate_tokens = 0;
            peer.n_redirects = 0;
        }
        if peer.n_redirects >= IP_RT_REDIRECT_NUMBER {
            // Ignored redirects: remember when the last redirected packet was seen.
            peer.rate_last = now;
            tracing::trace!(%src, "redirect suppressed: peer ignores redirects");
            return;
        }
        let backoff = IP_RT_REDIRECT_LOAD_US << peer.n_redirects;
        if peer.n_redirects != 0 && elapsed(now, peer.rate_last) <= backoff {
            tracing::trace!(%src, "redirect suppressed: load limit");
            return;
        }
        peer.rate_last = now;
        peer.n_redirects += 1;
        // `rt_nexthop`: the gateway, or the destination itself on a direct route.
        let gw: Ipv4Addr = rt.nexthop;
        self.icmp_send(skb, msg_type::REDIRECT, ICMP_REDIR_HOST, u32::from(gw));
    }

    /// `ip_error`: the input route refused the packet (`dst.error`). Not forwarding,
    /// only a counter (RFC 1122 section 3.3.4.2 lets a host drop what is not for it).
    /// Forwarding: no route is InNoRoutes and ICMP net unreachable, an `unreachable`
    /// route ICMP host unreachable, a `blackhole` nothing at all; the ICMP is limited
    /// per source by a token bucket in its `inet_peer` (`ip_rt_error_cost` a message,
    /// `ip_rt_error_burst` at most), before `icmp_send`'s own limits.
    #[tracing::instrument(level = "trace", name = "ip_error", skip_all)]
    pub(crate) fn ip_error(&mut self, skb: Skb, err: DstError) {
        if !self.ipv4.conf.ip_forward {
            match err {
                DstError::HostUnreach => self.snmp.ip.in_addr_errors += 1,
                DstError::NetUnreach => self.snmp.ip_ext.in_no_routes += 1,
                DstError::Inval => {}
            }
            tracing::trace!(?err, "drop: not for us, forwarding off");
            return;
        }
        let code = match err {
            DstError::Inval => {
                tracing::trace!("drop: blackhole route");
                return;
            }
            DstError::HostUnreach => unreach_code::HOST,
            DstError::NetUnreach => {
                self.snmp.ip_ext.in_no_routes += 1;
                unreach_code::NET
            }
        };
        let src = Ipv4Packet::new_unchecked(skb.data()).src();
        let now = micros(self.now);
        let peer = self.ipv4.peers.get(self.now, src);
        peer.rate_tokens =
            (peer.rate_tokens + elapsed(now, peer.rate_last)).min(IP_RT_ERROR_BURST_US);
        peer.rate_last = now;
        if peer.rate_tokens < IP_RT_ERROR_COST_US {
            tracing::trace!(%src, "unreachable not sent: ip_error rate limit");
            return;
        }
        peer.rate_tokens -= IP_RT_ERROR_COST_US;
        self.icmp_send(&skb, msg_type::DST_UNREACHABLE, code, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tos_maps_to_the_kernels_priorities() {
        // Best effort, min-cost (ECN bit ignored), max-throughput, max-reliability,
        // low-delay, low-delay + max-throughput; precedence bits do not matter.
        let cases = [
            (0x00, 0),
            (0x02, 0),
            (0x08, 2),
            (0x04, 0),
            (0x10, 6),
            (0x18, 4),
            (0xc0 | 0x10, 6),
        ];
        for (tos, prio) in cases {
            assert_eq!(rt_tos2priority(tos), prio, "tos {tos:#04x}");
        }
    }

    #[test]
    fn the_silence_is_twenty_point_four_eight_seconds() {
        assert_eq!(IP_RT_REDIRECT_SILENCE_US, 20_480_000);
    }

    #[test]
    fn source_routes_are_recognised() {
        assert!(has_source_route(&[131, 7, 4, 0, 0, 0, 0, 0]));
        assert!(has_source_route(&[1, 137, 3, 4, 0]));
        assert!(!has_source_route(&[7, 7, 4, 0, 0, 0, 0, 0]));
        assert!(!has_source_route(&[]));
    }
}
