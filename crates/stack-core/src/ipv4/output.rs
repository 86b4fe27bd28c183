//! IPv4 egress: `ip_route_output` -> `ip_queue_xmit` -> `__ip_local_out` (LOCAL_OUT) ->
//! `ip_output` (POST_ROUTING) -> `ip_finish_output` -> `ip_finish_output2` ->
//! neighbour output (net/ipv4/ip_output.c, route.c).

use std::net::Ipv4Addr;

use super::fragment;
use super::route::RouteType;
use super::{IpParams, Rtable, SendError};
use crate::dev::DeviceId;
use crate::netfilter::{NfHook, Verdict};
use crate::skb::Skb;
use crate::stack::{Stack, LOOPBACK_IFINDEX};
use crate::wire::ethernet::ethertype;
use crate::wire::ipv4::{Ipv4Options, Ipv4Packet, Ipv4Repr};
use crate::wire::MacAddr;

/// Largest IPv4 datagram (RFC 791 total length is 16 bits).
pub const IP_MAX_PACKET: usize = 65535;

/// How many looped-back packets may wait (`netdev_max_backlog`).
pub const LOOPBACK_BACKLOG: usize = 1000;

impl Stack {
    /// `ip_route_output_key`: the route for a packet we originate to `dst`. The
    /// device comes from the FIB entry, the source from its `src` or the device's
    /// address for the next hop (`inet_select_addr`), the MTU from the device.
    pub(crate) fn ip_route_output(&mut self, dst: Ipv4Addr) -> Result<Rtable, SendError> {
        if dst.is_broadcast() || dst.is_multicast() {
            // Limited broadcast and multicast leave by the device the FIB would use
            // for them (the default route's), else the first Ethernet device.
            let dev = self
                .fib
                .fib_lookup(dst)
                .map(|e| e.oif)
                .or_else(|| self.devs.first_ethernet().map(|d| d.id));
            let Some(dev) = dev else {
                self.snmp.ip.out_no_routes += 1;
                return Err(SendError::NetUnreachable);
            };
            return Ok(Rtable {
                rtype: if dst.is_broadcast() {
                    RouteType::Broadcast
                } else {
                    RouteType::Unicast
                },
                dev,
                nexthop: dst,
                src: self.inet_select_addr(dev, dst),
                mtu: self.devs.get(dev).map_or(0, |d| d.mtu),
                gateway: false,
            });
        }
        let Some(e) = self.fib.fib_lookup(dst).copied() else {
            self.snmp.ip.out_no_routes += 1;
            return Err(SendError::NetUnreachable);
        };
        match e.rtype {
            RouteType::Unicast | RouteType::Local | RouteType::Broadcast => {
                let nexthop = e.gateway.unwrap_or(dst);
                let mtu = if e.rtype == RouteType::Local {
                    IP_MAX_PACKET
                } else {
                    self.devs.get(e.oif).map_or(0, |d| d.mtu)
                };
                Ok(Rtable {
                    rtype: e.rtype,
                    dev: e.oif,
                    nexthop,
                    src: e
                        .prefsrc
                        .unwrap_or_else(|| self.inet_select_addr(e.oif, nexthop)),
                    mtu,
                    gateway: e.gateway.is_some(),
                })
            }
            RouteType::Unreachable | RouteType::Blackhole => {
                self.snmp.ip.out_no_routes += 1;
                Err(SendError::HostUnreachable)
            }
        }
    }

    /// `ip_queue_xmit` / `ip_build_and_send_pkt`: push the IPv4 header in front of the
    /// transport data (`data` at the transport header) and send it on `rt`.
    #[tracing::instrument(level = "trace", name = "ip_queue_xmit", skip_all, fields(dst = %p.dst))]
    pub(crate) fn ip_queue_xmit(
        &mut self,
        mut skb: Skb,
        rt: &Rtable,
        p: IpParams,
    ) -> Result<(), SendError> {
        let payload_len = skb.len();
        let repr = Ipv4Repr {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol,
            ttl: p.ttl,
            tos: p.tos,
            ident: self.ip_select_ident(),
            dont_frag: p.dont_frag,
            more_frags: false,
            frag_offset: 0,
            payload_len,
            options: Ipv4Options::default(),
        };
        if payload_len + repr.header_len() > IP_MAX_PACKET {
            return Err(SendError::MessageTooLong);
        }
        match skb.push(repr.header_len()) {
            Ok(hdr) => repr.emit(hdr),
            Err(_) => {
                self.snmp.ip.out_discards += 1;
                return Err(SendError::NoBufferSpace);
            }
        }
        skb.reset_network_header();
        skb.protocol = ethertype::IPV4;
        self.ip_local_out(skb, rt)
    }

    /// Per-packet IP identification (`ip_select_ident`). RFC 6864 only needs IDs unique
    /// per source/destination/protocol within the reassembly lifetime; a counter started
    /// at a random value does that without leaking a global sequence from time zero.
    fn ip_select_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    /// `__ip_local_out` + `dst_output`: LOCAL_OUT, then the route's output function.
    #[tracing::instrument(level = "trace", name = "ip_local_out", skip_all)]
    fn ip_local_out(&mut self, mut skb: Skb, rt: &Rtable) -> Result<(), SendError> {
        if self
            .nf
            .nf_hook(NfHook::LocalOut, &mut skb, &mut self.snmp.nf)
            == Verdict::Drop
        {
            return Err(SendError::PermissionDenied);
        }
        self.ip_output(skb, *rt)
    }

    /// `ip_output`: count, POST_ROUTING, `ip_finish_output`.
    #[tracing::instrument(level = "trace", name = "ip_output", skip_all)]
    pub(crate) fn ip_output(&mut self, mut skb: Skb, rt: Rtable) -> Result<(), SendError> {
        self.snmp.ip.out_requests += 1;
        self.snmp.ip_ext.out_octets += skb.len() as u64;
        if self
            .nf
            .nf_hook(NfHook::PostRouting, &mut skb, &mut self.snmp.nf)
            == Verdict::Drop
        {
            return Err(SendError::PermissionDenied);
        }
        self.ip_finish_output(skb, rt)
    }

    /// `ip_finish_output`: packets over the MTU need `ip_fragment`.
    #[tracing::instrument(level = "trace", name = "ip_finish_output", skip_all)]
    fn ip_finish_output(&mut self, skb: Skb, rt: Rtable) -> Result<(), SendError> {
        if skb.len() <= rt.mtu {
            self.ip_finish_output2(skb, rt);
            return Ok(());
        }
        if skb.gso_size > 0 {
            // A TSO super-packet (ip_finish_output_gso): the device cuts it, so what must
            // fit the MTU is each segment (skb_gso_validate_network_len). Looped back
            // to ourselves it is delivered whole, as GRO would.
            let tso = self.devs.get(rt.dev).is_some_and(|d| d.offloads.tso);
            if rt.rtype == RouteType::Local || (tso && gso_fits(&skb, rt.mtu)) {
                self.ip_finish_output2(skb, rt);
                return Ok(());
            }
            self.snmp.ip.out_discards += 1;
            tracing::trace!("drop: GSO packet the device cannot send");
            return Err(SendError::MessageTooLong);
        }
        // ip_fragment (RFC 791 3.2). DF set means the sender asked us not to: EMSGSIZE.
        let mut frags = Vec::new();
        if let Err(e) = fragment::ip_fragment(&skb, rt.mtu, &self.pool, &mut frags) {
            self.snmp.ip.frag_fails += 1;
            tracing::trace!(?e, "drop: cannot fragment");
            return Err(SendError::MessageTooLong);
        }
        self.snmp.ip.frag_oks += 1;
        self.snmp.ip.frag_creates += frags.len() as u64;
        for mut frag in frags {
            // The fragments stand for the socket's datagram now (ip_do_fragment moves
            // skb->sk to each): charge them to its send buffer.
            if let Some(owner) = skb.owner_w() {
                frag.set_owner_w(owner);
            }
            self.ip_finish_output2(frag, rt);
        }
        Ok(())
    }

    /// `ip_finish_output2`: pick the link-layer destination: broadcast, the multicast
    /// mapping (RFC 1112 section 6.4), loopback for our own addresses, or the neighbour
    /// table for everything else.
    #[tracing::instrument(level = "trace", name = "ip_finish_output2", skip_all)]
    fn ip_finish_output2(&mut self, skb: Skb, rt: Rtable) {
        match rt.rtype {
            RouteType::Local => self.loopback_xmit(skb),
            RouteType::Broadcast => {
                self.snmp.ip_ext.out_bcast_pkts += 1;
                self.dev_hard_header_xmit(rt.dev, skb, MacAddr::BROADCAST, ethertype::IPV4)
            }
            _ if rt.nexthop.is_multicast() => {
                self.snmp.ip_ext.out_mcast_pkts += 1;
                let mac = MacAddr::from_ipv4_multicast(rt.nexthop);
                self.dev_hard_header_xmit(rt.dev, skb, mac, ethertype::IPV4)
            }
            _ => {
                let mut actions = Vec::new();
                self.neigh
                    .resolve_output(self.now, rt.dev, rt.nexthop, skb, &mut actions);
                self.run_neigh_actions(actions);
            }
        }
    }

    /// The loopback device's `ndo_start_xmit` -> `netif_rx`: our own packet comes back in
    /// through `ip_rcv` once the current entry point has finished.
    #[tracing::instrument(level = "trace", name = "loopback_xmit", skip_all)]
    fn loopback_xmit(&mut self, mut skb: Skb) {
        let lo = self
            .devs
            .get_mut(DeviceId::LOOPBACK)
            .expect("lo is always there");
        if self.backlog.len() >= LOOPBACK_BACKLOG {
            lo.stats.tx_dropped += 1;
            self.snmp.ip.out_discards += 1;
            return;
        }
        // What lo sends it receives (`ip -s link show lo` counts both).
        lo.stats.tx_packets += 1;
        lo.stats.tx_bytes += skb.len() as u64;
        lo.stats.rx_packets += 1;
        lo.stats.rx_bytes += skb.len() as u64;
        skb.ifindex = LOOPBACK_IFINDEX;
        self.backlog.push_back(skb);
    }

    /// `process_backlog` for the loopback device. Bounded by the backlog limit per call
    /// so a packet that loops (an error about an error) cannot spin forever.
    pub(crate) fn process_backlog(&mut self) {
        for _ in 0..LOOPBACK_BACKLOG {
            let Some(skb) = self.backlog.pop_front() else {
                return;
            };
            self.ip_rcv(skb);
        }
    }

    /// `ipv4_link_failure`: the neighbour of a queued packet never answered; tell its
    /// sender (for our own packets that sender is us, and the error reaches the socket
    /// through loopback like any ICMP error).
    #[tracing::instrument(level = "trace", name = "ipv4_link_failure", skip_all)]
    pub(crate) fn ipv4_link_failure(&mut self, skb: Skb) {
        self.snmp.ip.out_discards += 1;
        if Ipv4Packet::new_checked(skb.data()).is_ok() {
            self.icmp_send(
                &skb,
                crate::wire::icmpv4::msg_type::DST_UNREACHABLE,
                crate::wire::icmpv4::unreach_code::HOST,
                0,
            );
        }
    }
}

/// Whether every segment of GSO packet `skb` (`data` at the IPv4 header) fits `mtu`:
/// the network and transport headers plus `gso_size` (`skb_gso_validate_network_len`).
pub(crate) fn gso_fits(skb: &Skb, mtu: usize) -> bool {
    let data = skb.data();
    let Some(&vihl) = data.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let Some(&doff) = data.get(ihl + 12) else {
        return false;
    };
    let thl = usize::from(doff >> 4) * 4;
    ihl + thl + usize::from(skb.gso_size) <= mtu
}
