//! IPv4 ingress: `ip_rcv` -> PRE_ROUTING -> `ip_rcv_finish` -> `ip_route_input` ->
//! `ip_local_deliver` (LOCAL_IN), or `ip_forward` / `ip_error` (in [`super::forward`])
//! (net/ipv4/ip_input.c, route.c).

use std::net::Ipv4Addr;

use super::defrag::DefragOutcome;
use super::route::RouteType;
use super::{RpFilter, Rtable};
use crate::dev::DeviceId;
use crate::dev::LOOPBACK_IFINDEX;
use crate::netfilter::{NfHook, Verdict};
use crate::skb::{PktType, Skb};
use crate::stack::Stack;
use crate::wire::checksum;
use crate::wire::icmpv4::{msg_type, time_exceeded_code, unreach_code};
use crate::wire::ipv4::{self, Ipv4Option, Ipv4Packet};

/// Where `ip_route_input` sends a packet (`dst_input` target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputRoute {
    /// `ip_local_deliver`; `broadcast` when it came to a broadcast or multicast address.
    Local { broadcast: bool },
    /// `ip_forward` by this route; `redirect` is `IPSKB_DOREDIRECT` (`__mkroute_input`).
    Forward { rt: Rtable, redirect: bool },
    /// `ip_error` with this `dst.error`.
    Error(DstError),
    /// A multicast group we have not joined: counted in InAddrErrors, dropped.
    NotJoined,
    /// Martian source or destination: dropped silently.
    Martian,
    /// The source failed the reverse-path filter: dropped silently.
    RpFilter,
}

/// The `dst.error` of an input route that `ip_error` handles (`ip_route_input_slow`'s
/// `no_route` path: the errno of `fib_lookup`, or EHOSTUNREACH when not forwarding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DstError {
    /// EHOSTUNREACH: forwarding is off, or an `unreachable` route (`fib_props`).
    HostUnreach,
    /// ENETUNREACH: forwarding, and no route at all.
    NetUnreach,
    /// EINVAL: a `blackhole` route; dropped without a word.
    Inval,
}

impl Stack {
    /// `ip_rcv` + `ip_rcv_core`: validate the header (RFC 791 section 3.1, RFC 1122
    /// section 3.2.1), trim link-layer padding, then PRE_ROUTING. `data` is at the IPv4
    /// header. Each reason to drop has the counter Linux uses for it.
    #[tracing::instrument(level = "trace", name = "ip_rcv", skip_all, fields(len = skb.len()))]
    pub(crate) fn ip_rcv(&mut self, mut skb: Skb) {
        self.snmp.ip.in_receives += 1;
        self.snmp.ip_ext.in_octets += skb.len() as u64;
        if skb.pkt_type == PktType::OtherHost {
            return;
        }
        let data = skb.data();
        if data.len() < ipv4::MIN_HEADER_LEN {
            return self.ip_hdr_error("truncated header");
        }
        let (version, ihl) = (data[0] >> 4, usize::from(data[0] & 0x0f) * 4);
        if version != 4 || ihl < ipv4::MIN_HEADER_LEN {
            return self.ip_hdr_error("bad version or IHL");
        }
        if data.len() < ihl {
            return self.ip_hdr_error("header longer than packet");
        }
        if checksum::checksum(&data[..ihl]) != 0 {
            self.snmp.ip_ext.in_csum_errors += 1;
            return self.ip_hdr_error("bad header checksum");
        }
        let total_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if data.len() < total_len {
            self.snmp.ip_ext.in_truncated_pkts += 1;
            tracing::trace!("drop: total length beyond the frame");
            return;
        }
        if total_len < ihl {
            return self.ip_hdr_error("total length shorter than header");
        }
        // Ethernet pads short frames: the IP total length is the truth (pskb_trim_rcsum).
        skb.trim(total_len);
        skb.set_transport_header(ihl);
        if self
            .nf
            .nf_hook(NfHook::PreRouting, &mut skb, &mut self.snmp.nf)
            == Verdict::Drop
        {
            return;
        }
        self.ip_rcv_finish(skb);
    }

    fn ip_hdr_error(&mut self, why: &'static str) {
        self.snmp.ip.in_hdr_errors += 1;
        tracing::trace!(reason = why, "drop: IPv4 header error");
    }

    /// `ip_rcv_finish`: route the packet, process options, dispatch (`dst_input`).
    #[tracing::instrument(level = "trace", name = "ip_rcv_finish", skip_all)]
    fn ip_rcv_finish(&mut self, skb: Skb) {
        let ip = Ipv4Packet::new_unchecked(skb.data());
        let (src, dst, has_options) = (ip.src(), ip.dst(), ip.header_len() > ipv4::MIN_HEADER_LEN);
        let route = self.ip_route_input(src, dst, skb.ifindex);
        if has_options && !self.ip_rcv_options(&skb) {
            return;
        }
        match route {
            InputRoute::Local { broadcast } => {
                if broadcast {
                    if dst.is_multicast() {
                        self.snmp.ip_ext.in_mcast_pkts += 1;
                    } else {
                        self.snmp.ip_ext.in_bcast_pkts += 1;
                    }
                }
                self.ip_local_deliver(skb, broadcast)
            }
            InputRoute::Forward { rt, redirect } => self.ip_forward(skb, rt, redirect),
            InputRoute::Error(err) => self.ip_error(skb, err),
            InputRoute::NotJoined => {
                self.snmp.ip.in_addr_errors += 1;
                tracing::trace!(%dst, "drop: multicast group not joined");
            }
            InputRoute::Martian => {
                self.snmp.ip_ext.in_martians += 1;
                tracing::trace!(%src, %dst, "drop: martian address");
            }
            InputRoute::RpFilter => {
                self.snmp.tcp_ext.ip_reverse_path_filter += 1;
                tracing::trace!(%src, %dst, "drop: reverse path filter");
            }
        }
    }

    /// `ip_route_input_noref` / `ip_route_input_slow`: what to do with a packet from `src`
    /// to `dst` that came in on device `ifindex`.
    #[tracing::instrument(level = "trace", name = "ip_route_input", skip_all, fields(%dst))]
    pub(crate) fn ip_route_input(&self, src: Ipv4Addr, dst: Ipv4Addr, ifindex: u32) -> InputRoute {
        // Martian sources (RFC 1812 section 5.3.7): multicast, limited broadcast, or one
        // of our own addresses arriving from the wire (loopback is a separate path).
        if src.is_multicast() || src.is_broadcast() || src.octets()[0] == 127 {
            return InputRoute::Martian;
        }
        if dst.is_broadcast() || (src.is_unspecified() && dst.is_unspecified()) {
            return InputRoute::Local { broadcast: true };
        }
        if dst.is_multicast() {
            // Every host is a member of 224.0.0.1 (RFC 1112 section 4); we join no
            // other group yet.
            return if dst == Ipv4Addr::new(224, 0, 0, 1) {
                InputRoute::Local { broadcast: true }
            } else {
                InputRoute::NotJoined
            };
        }
        if dst.is_unspecified() || dst.octets()[0] == 127 {
            return InputRoute::Martian;
        }
        let from_wire = ifindex != LOOPBACK_IFINDEX;
        // Our own address as source is only legitimate on loopback (fib_validate_source).
        if from_wire && self.ipv4.fib.is_local(src) {
            return InputRoute::Martian;
        }
        if from_wire && !src.is_unspecified() && !self.rp_filter_ok(src, DeviceId(ifindex)) {
            return InputRoute::RpFilter;
        }
        match self.ipv4.fib.fib_lookup(dst) {
            Some(e) if e.rtype == RouteType::Local => InputRoute::Local { broadcast: false },
            Some(e) if e.rtype == RouteType::Broadcast => InputRoute::Local { broadcast: true },
            // Not forwarding: whatever the lookup said, EHOSTUNREACH.
            _ if !self.ipv4.conf.ip_forward => InputRoute::Error(DstError::HostUnreach),
            Some(e) if e.rtype == RouteType::Unicast => {
                let in_dev = DeviceId(ifindex);
                let redirect = from_wire && self.mkroute_input_redirect(src, in_dev, e);
                InputRoute::Forward {
                    rt: self.rt_from_fib(e, dst),
                    redirect,
                }
            }
            // fib_props: a blackhole route fails the lookup with EINVAL, an unreachable
            // one with EHOSTUNREACH; no route at all is ENETUNREACH.
            Some(e) if e.rtype == RouteType::Blackhole => InputRoute::Error(DstError::Inval),
            Some(_) => InputRoute::Error(DstError::HostUnreach),
            None => InputRoute::Error(DstError::NetUnreach),
        }
    }

    /// Whether a packet from `src` that came in on `in_dev` and leaves by route `e`
    /// earns its sender a redirect (`IPSKB_DOREDIRECT`, set in `__mkroute_input`;
    /// RFC 1812 section 5.2.7.2): it leaves by the device it came in on, that device
    /// sends redirects, the sender is directly connected there (`fib_validate_source`
    /// returning 1: the route back to `src` is a direct route out of `in_dev`), and with
    /// `shared_media` off the sender and the new gateway share one of the device's
    /// subnets (`inet_addr_onlink`).
    fn mkroute_input_redirect(
        &self,
        src: Ipv4Addr,
        in_dev: DeviceId,
        e: &super::route::FibEntry,
    ) -> bool {
        if e.oif != in_dev || !self.ipv4.conf.send_redirects {
            return false;
        }
        let Some(dev) = self.link.devs.get(in_dev) else {
            return false;
        };
        // __fib_validate_source: the reverse route, or failing that a connected subnet
        // of the device (its lookup restricted to `in_dev`), must have no gateway.
        let direct = match self.ipv4.fib.fib_lookup(src) {
            Some(back) if back.rtype == RouteType::Unicast && back.oif == in_dev => {
                back.gateway.is_none()
            }
            _ => dev.addrs.iter().any(|a| a.contains(src)),
        };
        if !direct {
            return false;
        }
        self.ipv4.conf.shared_media
            || dev
                .addrs
                .iter()
                .any(|a| a.contains(src) && e.gateway.is_none_or(|gw| a.contains(gw)))
    }

    /// `fib_validate_source` with `rp_filter` (RFC 3704): strict wants the route back
    /// to `src` to leave by `in_dev`, loose wants some route back at all.
    fn rp_filter_ok(&self, src: Ipv4Addr, in_dev: DeviceId) -> bool {
        match self.ipv4.conf.rp_filter {
            RpFilter::Off => true,
            RpFilter::Loose => self
                .ipv4
                .fib
                .fib_lookup(src)
                .is_some_and(|e| e.rtype == RouteType::Unicast),
            RpFilter::Strict => self
                .ipv4
                .fib
                .fib_lookup(src)
                .is_some_and(|e| e.rtype == RouteType::Unicast && e.oif == in_dev),
        }
    }

    /// `ip_rcv_options`: validate options (`ip_options_compile`); source-routed packets
    /// are refused as with Linux's default `accept_source_route = 0`. Returns whether
    /// the packet goes on.
    #[tracing::instrument(level = "trace", name = "ip_rcv_options", skip_all)]
    fn ip_rcv_options(&mut self, skb: &Skb) -> bool {
        let ip = Ipv4Packet::new_unchecked(skb.data());
        for opt in ipv4::options_iter(ip.options()) {
            match opt {
                Err(_) => {
                    self.snmp.ip.in_hdr_errors += 1;
                    // RFC 1122 3.2.2.5: parameter problem, pointing at the options.
                    self.icmp_send(skb, msg_type::PARAM_PROBLEM, 0, 20 << 24);
                    return false;
                }
                // LSRR (131) and SSRR (137).
                Ok(Ipv4Option::Other {
                    kind: 131 | 137, ..
                }) => {
                    self.snmp.ip.in_discards += 1;
                    tracing::trace!("drop: source-routed packet");
                    return false;
                }
                Ok(_) => {}
            }
        }
        true
    }

    /// `ip_local_deliver`: reassemble, then LOCAL_IN.
    #[tracing::instrument(level = "trace", name = "ip_local_deliver", skip_all)]
    fn ip_local_deliver(&mut self, mut skb: Skb, broadcast: bool) {
        let ip = Ipv4Packet::new_unchecked(skb.data());
        if ip.more_frags() || ip.frag_offset() != 0 {
            // Expire old queues first, so a late fragment cannot join a dead datagram.
            if self
                .ipv4
                .frags
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.ip_expire();
            }
            skb = match self.ipv4.frags.ip_defrag(self.now, skb) {
                DefragOutcome::Complete(whole) => whole,
                DefragOutcome::Queued | DefragOutcome::Dropped => return,
            };
        }
        if self
            .nf
            .nf_hook(NfHook::LocalIn, &mut skb, &mut self.snmp.nf)
            == Verdict::Drop
        {
            return;
        }
        self.ip_local_deliver_finish(skb, broadcast);
    }

    /// `ip_expire`: reassembly timed out; if fragment zero had arrived, tell the sender
    /// (RFC 792 time exceeded, code 1; RFC 1122 3.3.2 sends it only then).
    pub(crate) fn ip_expire(&mut self) {
        let mut expired = Vec::new();
        self.ipv4.frags.on_timer(self.now, &mut expired);
        for first in expired {
            self.icmp_send(
                &first,
                msg_type::TIME_EXCEEDED,
                time_exceeded_code::REASSEMBLY,
                0,
            );
        }
    }

    /// `ip_local_deliver_finish` + `ip_protocol_deliver_rcu`: strip the IP header and
    /// hand the packet to its transport protocol.
    #[tracing::instrument(level = "trace", name = "ip_local_deliver_finish", skip_all)]
    fn ip_local_deliver_finish(&mut self, mut skb: Skb, broadcast: bool) {
        let ihl = Ipv4Packet::new_unchecked(skb.data()).header_len();
        let protocol = skb.data()[9];
        if skb.pull(ihl).is_err() {
            self.snmp.ip.in_hdr_errors += 1;
            return;
        }
        skb.reset_transport_header();
        match protocol {
            ipv4::protocol::ICMP => {
                self.snmp.ip.in_delivers += 1;
                self.icmp_rcv(skb, broadcast);
            }
            ipv4::protocol::TCP => {
                self.snmp.ip.in_delivers += 1;
                self.tcp_v4_rcv(skb, broadcast);
            }
            ipv4::protocol::UDP => {
                self.snmp.ip.in_delivers += 1;
                self.udp_rcv(skb, broadcast);
            }
            _ => {
                self.snmp.ip.in_unknown_protos += 1;
                tracing::trace!(protocol, "drop: no handler for protocol");
                // RFC 1122 3.2.2.1: protocol unreachable (icmp_send skips broadcasts).
                self.icmp_send(&skb, msg_type::DST_UNREACHABLE, unreach_code::PROTOCOL, 0);
            }
        }
    }
}
