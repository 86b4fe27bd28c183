//! ICMPv4 (RFC 792, RFC 1122 section 3.2.2), after net/ipv4/icmp.c: `icmp_rcv` dispatches
//! by type, `icmp_echo` answers pings, `icmp_unreach` hands errors to the socket they
//! concern, and `icmp_send` generates errors under the kernel's rules and rate limits.

use std::net::Ipv4Addr;

use crate::dev::LOOPBACK_IFINDEX;
use crate::ipv4::route::RouteType;
use crate::ipv4::{IpParams, DEFAULT_TTL};
use crate::skb::{PktType, Skb};
use crate::stack::Stack;
use crate::time::{Duration, Instant};
use crate::wire::checksum;
use crate::wire::icmpv4::{self, msg_type, Icmpv4Packet, Icmpv4Repr};
use crate::wire::ipv4::{self, Ipv4Packet};

/// Types that are rate limited (`net.ipv4.icmp_ratemask` default 0x1818: destination
/// unreachable, source quench, time exceeded, parameter problem).
const RATEMASK: u32 = 0x1818;
/// `net.ipv4.icmp_msgs_per_sec` and `icmp_msgs_burst`.
const GLOBAL_PER_SEC: u64 = 1000;
const GLOBAL_BURST: u64 = 50;
/// `net.ipv4.icmp_ratelimit`: 1 s per message per destination, in the destination's
/// `inet_peer` bucket (burst 6, `XRLIM_BURST_FACTOR`; see [`crate::inetpeer`]).
const HOST_INTERVAL: Duration = Duration::from_secs(1);
/// Errors quote at most what fits in a 576-byte datagram (RFC 1812 section 4.3.2.3).
const ERR_MAX_LEN: usize = 576;
/// `IPTOS_PREC_INTERNETCONTROL`: errors travel at network-control precedence.
const TOS_INTERNETCONTROL: u8 = 0xc0;

/// ICMP sender state: the global rate limiter (the per-destination one lives in the
/// destination's [`crate::inetpeer::InetPeer`], shared with `ip_error` and redirects).
#[derive(Debug)]
pub struct IcmpState {
    /// Global token bucket (`icmp_global_allow`): tokens and last refill.
    global_tokens: u64,
    global_stamp: Instant,
    /// `net.ipv4.icmp_echo_ignore_broadcasts` (default on).
    pub echo_ignore_broadcasts: bool,
}

impl IcmpState {
    pub fn new(now: Instant) -> Self {
        IcmpState {
            global_tokens: GLOBAL_BURST,
            global_stamp: now,
            echo_ignore_broadcasts: true,
        }
    }

    /// `icmp_global_allow`: refill at GLOBAL_PER_SEC, spend one.
    fn global_allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.global_stamp).as_micros() as u64;
        let refill = elapsed * GLOBAL_PER_SEC / 1_000_000;
        if refill > 0 {
            self.global_tokens = (self.global_tokens + refill).min(GLOBAL_BURST);
            self.global_stamp = now;
        }
        if self.global_tokens == 0 {
            return false;
        }
        self.global_tokens -= 1;
        true
    }
}

/// Whether an error of type `t`, code `code` is rate limited (the negation of
/// `icmpv4_mask_allow`): only the types of `icmp_ratemask`, and never "fragmentation
/// needed" ("Don't limit PMTU discovery", RFC 1191 needs those to get through).
fn icmpv4_mask_limits(t: u8, code: u8) -> bool {
    if t == msg_type::DST_UNREACHABLE && code == icmpv4::unreach_code::FRAG_NEEDED {
        return false;
    }
    t < 32 && RATEMASK & (1 << t) != 0
}

/// Whether `t` is an ICMP error (as opposed to a query), RFC 1122 3.2.2.
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg_type::DST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

/// The header fields of a quoted datagram: (header length, destination, protocol), if
/// the quote holds a plausible IPv4 header and the 8 bytes after it.
fn quoted_header(quoted: &[u8]) -> Option<(usize, Ipv4Addr, u8)> {
    let first = *quoted.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || quoted.len() < ihl + 8 {
        return None;
    }
    let dst = Ipv4Addr::new(quoted[16], quoted[17], quoted[18], quoted[19]);
    Some((ihl, dst, quoted[9]))
}

impl Stack {
    /// `icmp_rcv`: `data` at the ICMP header.
    #[tracing::instrument(level = "trace", name = "icmp_rcv", skip_all)]
    pub(crate) fn icmp_rcv(&mut self, skb: Skb, broadcast: bool) {
        self.snmp.icmp.in_msgs += 1;
        let packet = match Icmpv4Packet::new_checked(skb.data()) {
            Ok(p) => p,
            Err(_) => {
                self.snmp.icmp.in_errors += 1;
                return;
            }
        };
        if !packet.verify_checksum() {
            self.snmp.icmp.in_csum_errors += 1;
            self.snmp.icmp.in_errors += 1;
            tracing::trace!("drop: bad ICMP checksum");
            return;
        }
        let t = packet.msg_type();
        match t {
            msg_type::ECHO_REQUEST => self.snmp.icmp.in_echos += 1,
            msg_type::ECHO_REPLY => self.snmp.icmp.in_echo_reps += 1,
            msg_type::DST_UNREACHABLE => self.snmp.icmp.in_dest_unreachs += 1,
            msg_type::TIME_EXCEEDED => self.snmp.icmp.in_time_excds += 1,
            msg_type::PARAM_PROBLEM => self.snmp.icmp.in_parm_probs += 1,
            // Counted, then ignored: a host would update its route to the destination
            // (icmp_redirect -> ip_rt_redirect); ustack keeps its routes as configured.
            msg_type::REDIRECT => self.snmp.icmp.in_redirects += 1,
            _ => {}
        }
        if broadcast {
            // RFC 1122 3.2.2.6: echo to a broadcast address may be ignored (Linux's
            // default); nothing but queries is accepted on broadcast (icmp_rcv).
            if self.ipv4.icmp.echo_ignore_broadcasts || t != msg_type::ECHO_REQUEST {
                return;
            }
        }
        match t {
            msg_type::ECHO_REQUEST => self.icmp_echo(skb),
            msg_type::ECHO_REPLY => self.ping_rcv(&skb),
            msg_type::DST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM => self.icmp_unreach(&skb),
            _ => tracing::trace!(msg_type = t, "ignore: ICMP type not handled"),
        }
    }

    /// `icmp_echo` + `icmp_reply`: turn the request into the reply in place (RFC 792:
    /// same identifier, sequence and data; type 0) with an incremental checksum update,
    /// and send it back from the address it was sent to.
    #[tracing::instrument(level = "trace", name = "icmp_echo", skip_all)]
    fn icmp_echo(&mut self, mut skb: Skb) {
        let Some(iph) = skb
            .network_header()
            .and_then(|h| Ipv4Packet::new_checked(h).ok())
        else {
            return;
        };
        let (req_src, req_dst, tos) = (iph.src(), iph.dst(), iph.tos());
        let hdr = skb.data_mut();
        let old = u16::from_be_bytes([hdr[0], hdr[1]]);
        hdr[0] = msg_type::ECHO_REPLY;
        let new = u16::from_be_bytes([hdr[0], hdr[1]]);
        let csum = u16::from_be_bytes([hdr[2], hdr[3]]);
        hdr[2..4].copy_from_slice(&checksum::update16(csum, old, new).to_be_bytes());
        let rt = match self.ip_route_output_key(req_src) {
            Ok(rt) => rt,
            Err(_) => {
                self.snmp.icmp.out_errors += 1;
                return;
            }
        };
        // Fresh skb state for egress: keep the bytes, forget the ingress metadata.
        skb.pkt_type = PktType::Host;
        skb.priority = 0;
        let params = IpParams {
            src: req_dst,
            dst: req_src,
            protocol: ipv4::protocol::ICMP,
            tos,
            ttl: DEFAULT_TTL,
            dont_frag: false,
        };
        match self.ip_queue_xmit(skb, &rt, params) {
            Ok(()) => {
                self.snmp.icmp.out_msgs += 1;
                self.snmp.icmp.out_echo_reps += 1;
            }
            Err(_) => self.snmp.icmp.out_errors += 1,
        }
    }

    /// `icmp_unreach` / `icmp_err` dispatch: find the protocol of the quoted datagram
    /// and let its error handler tell the socket (RFC 1122 3.2.2.1: the transport layer
    /// must be told).
    #[tracing::instrument(level = "trace", name = "icmp_unreach", skip_all)]
    fn icmp_unreach(&mut self, skb: &Skb) {
        let Ok(packet) = Icmpv4Packet::new_checked(skb.data()) else {
            return;
        };
        let (t, code) = (packet.msg_type(), packet.code());
        let from = skb
            .network_header()
            .and_then(|h| Ipv4Packet::new_checked(h).ok())
            .map(|ip| ip.src());
        let quoted = packet.payload();
        // RFC 792: the quote is the original IP header plus at least 8 bytes; its total
        // length field describes the original, not the quote, so only the header is
        // checked here.
        let Some((ihl, inner_dst, inner_proto)) = quoted_header(quoted) else {
            self.snmp.icmp.in_errors += 1;
            return;
        };
        let Some(from) = from else { return };
        let l4 = &quoted[ihl..];
        if inner_proto == ipv4::protocol::UDP {
            // The quote's source was us; its ports identify the socket (udp_err).
            let inner_src = Ipv4Addr::new(quoted[12], quoted[13], quoted[14], quoted[15]);
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            self.udp_err(
                std::net::SocketAddrV4::new(inner_src, sport),
                std::net::SocketAddrV4::new(inner_dst, dport),
                t,
                code,
            );
        } else if inner_proto == ipv4::protocol::ICMP && l4[0] == msg_type::ECHO_REQUEST {
            let ident = u16::from_be_bytes([l4[4], l4[5]]);
            let seq = u16::from_be_bytes([l4[6], l4[7]]);
            self.ping_err(from, inner_dst, ident, seq, t, code);
        }
    }

    /// `icmp_send` (`__icmp_send`): send an ICMP error about `skb_in` (whose network
    /// header must be set) to its source, unless RFC 1122 section 3.2.2 forbids it:
    /// no errors about ICMP errors, non-first fragments, or datagrams to or from
    /// broadcast/multicast addresses; rate limited per destination and globally.
    #[tracing::instrument(level = "trace", name = "icmp_send", skip_all)]
    pub(crate) fn icmp_send(&mut self, skb_in: &Skb, t: u8, code: u8, info: u32) {
        let Some(nh) = skb_in.network_header() else {
            return;
        };
        let Ok(iph) = Ipv4Packet::new_checked(nh) else {
            return;
        };
        let (src, dst) = (iph.src(), iph.dst());
        if skb_in.pkt_type != PktType::Host
            || dst.is_broadcast()
            || dst.is_multicast()
            || self.ipv4.fib.is_broadcast(dst)
        {
            return;
        }
        if iph.frag_offset() != 0 {
            return;
        }
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
            return;
        }
        if iph.protocol() == ipv4::protocol::ICMP {
            let l4 = iph.payload();
            // An error about an ICMP error could loop forever (RFC 1122 3.2.2).
            if l4.is_empty() || is_error(l4[0]) {
                return;
            }
        }
        let rt = match self.ip_route_output_key(src) {
            Ok(rt) => rt,
            Err(_) => return,
        };
        // Rate limits, only for the types of `icmp_ratemask` (icmpv4_mask_allow), and
        // never for errors about or to ourselves (loopback): the global bucket
        // (icmpv4_global_allow), then the destination's inet_peer bucket
        // (icmpv4_xrlim_allow).
        if icmpv4_mask_limits(t, code)
            && rt.rtype != RouteType::Local
            && skb_in.ifindex != LOOPBACK_IFINDEX
        {
            if !self.ipv4.icmp.global_allow(self.now) {
                self.snmp.icmp.out_rate_limit_global += 1;
                return;
            }
            if !self
                .ipv4
                .peers
                .get(self.now, src)
                .xrlim_allow(self.now, HOST_INTERVAL.as_micros() as u64)
            {
                self.snmp.icmp.out_rate_limit_host += 1;
                return;
            }
        }
        // Source: the address the offending packet was sent to if it is ours, else
        // the address of the outgoing route (inet_select_addr).
        let our_src = if self.ipv4.fib.is_local(dst) {
            dst
        } else {
            rt.src
        };
        let quote_len = nh
            .len()
            .min(usize::from(iph.total_len()))
            .min(ERR_MAX_LEN - ipv4::MIN_HEADER_LEN - icmpv4::HEADER_LEN);
        let data = &nh[..quote_len];
        let repr = match t {
            msg_type::DST_UNREACHABLE => Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu: info as u16,
                data,
            },
            msg_type::TIME_EXCEEDED => Icmpv4Repr::TimeExceeded { code, data },
            msg_type::PARAM_PROBLEM => Icmpv4Repr::ParamProblem {
                pointer: (info >> 24) as u8,
                data,
            },
            _ => Icmpv4Repr::Other {
                msg_type: t,
                code,
                rest: info,
                data,
            },
        };
        let len = repr.buffer_len();
        let mut skb = self.pool.alloc_tx(len);
        repr.emit(skb.put(len));
        skb.reset_transport_header();
        skb.priority = 6; // TC_PRIO_INTERACTIVE: band 0, like control traffic.
        let params = IpParams {
            src: our_src,
            dst: src,
            protocol: ipv4::protocol::ICMP,
            tos: (iph.tos() & 0x1e) | TOS_INTERNETCONTROL,
            ttl: DEFAULT_TTL,
            dont_frag: false,
        };
        match self.ip_queue_xmit(skb, &rt, params) {
            Ok(()) => {
                self.snmp.icmp.out_msgs += 1;
                match t {
                    msg_type::DST_UNREACHABLE => self.snmp.icmp.out_dest_unreachs += 1,
                    msg_type::TIME_EXCEEDED => self.snmp.icmp.out_time_excds += 1,
                    msg_type::PARAM_PROBLEM => self.snmp.icmp.out_parm_probs += 1,
                    msg_type::REDIRECT => self.snmp.icmp.out_redirects += 1,
                    _ => {}
                }
            }
            Err(_) => self.snmp.icmp.out_errors += 1,
        }
    }
}
