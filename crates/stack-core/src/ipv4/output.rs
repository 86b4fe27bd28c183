//! IPv4 egress: `ip_route_output` -> `ip_queue_xmit` -> `__ip_local_out` (LOCAL_OUT) ->
//! `ip_output` (POST_ROUTING) -> `ip_finish_output` -> `ip_finish_output2` ->
//! neighbour output (net/ipv4/ip_output.c, route.c).

use std::net::Ipv4Addr;

use super::fragment;
use super::route::{FibEntry, RouteType};
use super::{IpParams, Rtable, SendError};
use crate::dev::DeviceId;
use crate::dev::LOOPBACK_IFINDEX;
use crate::gso;
use crate::netfilter::{NfHook, Verdict};
use crate::skb::Skb;
use crate::stack::Stack;
use crate::wire::ethernet::ethertype;
use crate::wire::ipv4::{Ipv4Options, Ipv4Packet, Ipv4Repr};
use crate::wire::MacAddr;

/// Largest IPv4 datagram (RFC 791 total length is 16 bits).
pub const IP_MAX_PACKET: usize = 65535;

/// How many looped-back packets may wait (`netdev_max_backlog`).
pub const LOOPBACK_BACKLOG: usize = 1000;

impl Stack {
    /// The route for a packet a socket originates to `dst` ([`Stack::ip_route_output_key`]),
    /// a failure counted in OutNoRoutes as the sending paths (`ip_queue_xmit`,
    /// `udp_sendmsg`, `ping_v4_sendmsg`) count it.
    pub(crate) fn ip_route_output(&mut self, dst: Ipv4Addr) -> Result<Rtable, SendError> {
        let rt = self.ip_route_output_key(dst);
        if rt.is_err() {
            self.snmp.ip.out_no_routes += 1;
        }
        rt
    }

    /// `ip_route_output_key`: the route for a packet we originate to `dst`, counting
    /// nothing (ICMP's own lookups, `icmp_route_lookup`, fail silently). The device
    /// comes from the FIB entry, the source from its `src` or the device's address for
    /// the next hop (`inet_select_addr`), the MTU from the device.
    pub(crate) fn ip_route_output_key(&self, dst: Ipv4Addr) -> Result<Rtable, SendError> {
        if dst.is_broadcast() || dst.is_multicast() {
            // Limited broadcast and multicast leave by the device the FIB would use
            // for them (the default route's), else the first Ethernet device.
            let dev = self
                .ipv4
                .fib
                .fib_lookup(dst)
                .map(|e| e.oif)
                .or_else(|| self.link.devs.first_ethernet().map(|d| d.id));
            let Some(dev) = dev else {
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
                mtu: self.dev_mtu(dev),
                gateway: false,
            });
        }
        let Some(e) = self.ipv4.fib.fib_lookup(dst).copied() else {
            return Err(SendError::NetUnreachable);
        };
        match e.rtype {
            RouteType::Unicast | RouteType::Local | RouteType::Broadcast => {
                Ok(self.rt_from_fib(&e, dst))
            }
            RouteType::Unreachable | RouteType::Blackhole => Err(SendError::HostUnreachable),
        }
    }

    /// The `rtable` a FIB entry gives a packet to `dst` (`rt_set_nexthop`): the entry's
    /// device, the next hop (its gateway, or `dst` itself), the source (the entry's
    /// `src`, else `inet_select_addr` of the device for the next hop) and the MTU (the
    /// device's; a local route's packets never meet a wire). Output and forwarding
    /// routes are made here alike.
    pub(crate) fn rt_from_fib(&self, e: &FibEntry, dst: Ipv4Addr) -> Rtable {
        let nexthop = e.gateway.unwrap_or(dst);
        Rtable {
            rtype: e.rtype,
            dev: e.oif,
            nexthop,
            src: e
                .prefsrc
                .unwrap_or_else(|| self.inet_select_addr(e.oif, nexthop)),
            mtu: if e.rtype == RouteType::Local {
                IP_MAX_PACKET
            } else {
                self.dev_mtu(e.oif)
            },
            gateway: e.gateway.is_some(),
        }
    }

    /// The MTU of device `dev` (0 for one the stack does not have: nothing fits).
    fn dev_mtu(&self, dev: DeviceId) -> usize {
        self.link.devs.get(dev).map_or(0, |d| d.mtu)
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
        self.ipv4.ip_ident = self.ipv4.ip_ident.wrapping_add(1);
        self.ipv4.ip_ident
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

    /// `ip_finish_output` (`__ip_finish_output`): a GSO super-packet goes to
    /// `ip_finish_output_gso`, a packet over the MTU to `ip_fragment`, the rest on.
    #[tracing::instrument(level = "trace", name = "ip_finish_output", skip_all)]
    fn ip_finish_output(&mut self, skb: Skb, rt: Rtable) -> Result<(), SendError> {
        if skb.gso_size > 0 {
            return self.ip_finish_output_gso(skb, rt);
        }
        if skb.len() <= rt.mtu {
            self.ip_finish_output2(skb, rt);
            return Ok(());
        }
        self.ip_fragment(skb, rt)
    }

    /// `ip_finish_output_gso`: a super-packet whose segments fit the MTU
    /// (`skb_gso_validate_network_len`) goes on whole; the device, or
    /// `validate_xmit_skb` in software for a device without TSO (see
    /// [`crate::dev::Link::dev_queue_xmit`]), cuts it. Looped back to ourselves it is delivered
    /// whole, as GRO would. Otherwise (a GRO'd packet forwarded to a smaller MTU with DF
    /// clear) it is segmented here and each segment goes through `ip_fragment`.
    #[tracing::instrument(level = "trace", name = "ip_finish_output_gso", skip_all)]
    fn ip_finish_output_gso(&mut self, skb: Skb, rt: Rtable) -> Result<(), SendError> {
        if rt.rtype == RouteType::Local || gso_fits(&skb, rt.mtu) {
            self.ip_finish_output2(skb, rt);
            return Ok(());
        }
        let mut segs = Vec::new();
        if let Err(e) = gso::skb_gso_segment_ip(&skb, &self.pool, &mut segs) {
            // Linux frees the packet and returns -ENOMEM, counting nothing.
            tracing::trace!(?e, "drop: GSO packet that cannot be segmented");
            return Err(SendError::NoBufferSpace);
        }
        let mut ret = Ok(());
        for mut seg in segs {
            if let Some(owner) = skb.owner_w() {
                seg.set_owner_w(owner);
            }
            // Every segment goes through ip_fragment, even one that fits (Linux then
            // makes it a single "fragment", counted in FragOKs and FragCreates).
            let r = self.ip_fragment(seg, rt);
            if ret.is_ok() {
                ret = r;
            }
        }
        ret
    }

    /// `ip_fragment` + `ip_do_fragment` (RFC 791 section 3.2): cut the datagram into
    /// pieces that fit `rt.mtu`, counted in FragOKs / FragCreates. A datagram with DF
    /// set may not be cut: FragFails, and its sender (ourselves, through loopback, for
    /// our own packets) is told the MTU (RFC 1191 section 4).
    #[tracing::instrument(level = "trace", name = "ip_fragment", skip_all)]
    fn ip_fragment(&mut self, skb: Skb, rt: Rtable) -> Result<(), SendError> {
        // Linux asks only whether DF is set (and `ignore_df` clear, which no packet of
        // ours sets): callers come here with a packet over the MTU, or with a segment
        // of a super-packet, which is refused with DF even if it alone would fit.
        if Ipv4Packet::new_checked(skb.data()).is_ok_and(|ip| ip.dont_frag()) {
            self.snmp.ip.frag_fails += 1;
            tracing::trace!("drop: DF set, cannot fragment");
            self.icmp_send(
                &skb,
                crate::wire::icmpv4::msg_type::DST_UNREACHABLE,
                crate::wire::icmpv4::unreach_code::FRAG_NEEDED,
                rt.mtu as u32,
            );
            return Err(SendError::MessageTooLong);
        }
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
                self.link.neigh.neigh_resolve_output(
                    self.now,
                    rt.dev,
                    rt.nexthop,
                    skb,
                    &mut actions,
                );
                self.run_neigh_actions(actions);
            }
        }
    }

    /// The loopback device's `ndo_start_xmit` -> `netif_rx`: our own packet comes back in
    /// through `ip_rcv` once the current entry point has finished.
    #[tracing::instrument(level = "trace", name = "loopback_xmit", skip_all)]
    fn loopback_xmit(&mut self, mut skb: Skb) {
        let lo = self
            .link
            .devs
            .get_mut(DeviceId::LOOPBACK)
            .expect("lo is always there");
        if self.link.backlog.len() >= LOOPBACK_BACKLOG {
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
        self.link.backlog.push_back(skb);
    }

    /// `process_backlog` for the loopback device. Bounded by the backlog limit per call
    /// so a packet that loops (an error about an error) cannot spin forever.
    pub(crate) fn process_backlog(&mut self) {
        for _ in 0..LOOPBACK_BACKLOG {
            let Some(skb) = self.link.backlog.pop_front() else {
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
        // `arp_error_report` -> `dst_link_failure` -> `ipv4_send_dest_unreach`: no IP
        // counter (the neighbour table counts ResFailed). A forwarded packet waits in
        // the queue as it would have left (TTL decremented), and is quoted so; the
        // error goes to its remote sender from our address towards it.
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dev::DeviceId;
    use crate::ipv4::DEFAULT_TTL;
    use crate::skb::IpSummed;
    use crate::stack::{Offloads, StackConfig};
    use crate::time::Instant;
    use crate::wire::ethernet::{EthernetFrame, EthernetRepr};
    use crate::wire::ipv4::protocol;
    use crate::wire::tcp::{TcpFlags, TcpPacket, TcpRepr};

    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER_MAC: MacAddr = MacAddr([2, 0xaa, 0, 0, 0, 1]);

    /// A host whose device has `offloads`, PEER resolved, the gratuitous ARP taken.
    fn host(offloads: Offloads) -> Stack {
        let mut cfg = StackConfig::new(StackConfig::default_mac(US), US, 24);
        cfg.offloads = offloads;
        let mut s = Stack::new(cfg, Instant::ZERO, 5);
        while s.poll_transmit(Instant::ZERO).is_some() {}
        let mut actions = Vec::new();
        s.link.neigh.update(
            Instant::ZERO,
            DeviceId::ETH0,
            PEER,
            PEER_MAC,
            true,
            true,
            &mut actions,
        );
        s
    }

    /// What `tcp_output_gso` makes for a TSO device: 3 x 1448 bytes, partial checksum.
    fn local_super_packet(s: &mut Stack) -> (Skb, Vec<u8>) {
        let payload: Vec<u8> = (0..3 * 1448u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: 7,
            ack: 9,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 100,
            timestamps: Some((1, 2)),
            ..Default::default()
        };
        let hl = repr.header_len();
        let mut skb = s.pool.alloc_tx(hl + payload.len());
        let buf = skb.put(hl + payload.len());
        buf[hl..].copy_from_slice(&payload);
        repr.emit_csum_partial(buf, payload.len(), US, PEER);
        skb.reset_transport_header();
        skb.ip_summed = IpSummed::Partial {
            csum_start: skb.data_offset() as u16,
            csum_offset: 16,
        };
        skb.gso_size = 1448;
        skb.gso_segs = 3;
        (skb, payload)
    }

    fn params() -> IpParams {
        IpParams {
            src: US,
            dst: PEER,
            protocol: protocol::TCP,
            tos: 0,
            ttl: DEFAULT_TTL,
            dont_frag: true,
        }
    }

    #[test]
    fn a_local_super_packet_to_a_device_without_tso_leaves_as_wire_segments() {
        let mut s = host(Offloads::default());
        let (skb, payload) = local_super_packet(&mut s);
        let rt = s.ip_route_output(PEER).unwrap();
        s.ip_queue_xmit(skb, &rt, params()).unwrap();
        let frames: Vec<Skb> = std::iter::from_fn(|| s.poll_transmit(Instant::ZERO))
            .map(|(_, f)| f)
            .collect();
        assert_eq!(frames.len(), 3, "validate_xmit_skb cut it in software");
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!((f.gso_size, f.ip_summed), (0, IpSummed::None));
            let eth = EthernetFrame::new_checked(f.data()).unwrap();
            assert_eq!(EthernetRepr::parse(&eth).unwrap().dst, PEER_MAC);
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum() && ip.dont_frag());
            assert!(usize::from(ip.total_len()) <= 1500);
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(US, PEER), "segment {i}: full checksum");
            assert_eq!(tcp.seq_number(), 7 + 1448 * i as u32);
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        assert_eq!(s.snmp().ip.frag_oks, 0);
        // The gratuitous ARP, then the three segments.
        assert_eq!(s.device(DeviceId::ETH0).stats.tx_packets, 1 + 3);
    }

    #[test]
    fn a_local_super_packet_passes_whole_to_a_tso_device() {
        let mut s = host(Offloads::ALL);
        let (skb, _) = local_super_packet(&mut s);
        let len = skb.len();
        let rt = s.ip_route_output(PEER).unwrap();
        s.ip_queue_xmit(skb, &rt, params()).unwrap();
        let frames: Vec<Skb> = std::iter::from_fn(|| s.poll_transmit(Instant::ZERO))
            .map(|(_, f)| f)
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].gso_size, frames[0].len()), (1448, 14 + 20 + len));
    }

    #[test]
    fn segments_over_the_mtu_with_df_fail_each_as_ip_finish_output_gso() {
        let mut s = host(Offloads::ALL);
        let (skb, _) = local_super_packet(&mut s);
        let mut rt = s.ip_route_output(PEER).unwrap();
        // A route whose MTU the segments (20 + 32 + 1448) do not fit.
        rt.mtu = 1400;
        assert_eq!(
            s.ip_queue_xmit(skb, &rt, params()),
            Err(SendError::MessageTooLong)
        );
        assert!(
            s.poll_transmit(Instant::ZERO).is_none(),
            "nothing on the wire"
        );
        s.process_backlog();
        let snmp = s.snmp();
        // Segmented, then ip_fragment refuses each DF segment and tells the sender
        // (ourselves, through loopback) the MTU.
        assert_eq!((snmp.ip.frag_fails, snmp.ip.frag_oks), (3, 0));
        assert_eq!(snmp.icmp.out_dest_unreachs, 3);
        assert_eq!(snmp.icmp.in_dest_unreachs, 3);
    }
}
