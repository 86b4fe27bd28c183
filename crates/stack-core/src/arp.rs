//! ARP (RFC 826), after net/ipv4/arp.c: `arp_rcv`/`arp_process` on ingress,
//! `arp_solicit` for the neighbour layer's probes, `arp_send` for replies and the
//! gratuitous announcement at start.

use std::net::Ipv4Addr;

use crate::dev::DeviceId;
use crate::neigh::NeighAction;
use crate::skb::{PktType, Skb};
use crate::stack::Stack;
use crate::wire::arp::{self, ArpOp, ArpPacket, ArpRepr};
use crate::wire::ethernet::ethertype;
use crate::wire::MacAddr;

impl Stack {
    /// `arp_rcv`: validate and hand to `arp_process`. `data` is at the ARP header.
    #[tracing::instrument(level = "trace", name = "arp_rcv", skip_all)]
    pub(crate) fn arp_rcv(&mut self, dev: DeviceId, skb: Skb) {
        let repr = match ArpPacket::new_checked(skb.data()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(r) => r,
            Err(e) => {
                self.snmp.arp.in_errors += 1;
                tracing::trace!(error = %e, "drop: bad ARP packet");
                return;
            }
        };
        // RFC 826 does not forbid these, but no host may claim them (arp_process
        // drops multicast senders and targets as Linux does).
        if repr.sender_ip.is_multicast()
            || repr.target_ip.is_multicast()
            || repr.sender_mac.is_multicast()
        {
            self.snmp.arp.in_errors += 1;
            return;
        }
        self.arp_process(dev, skb.pkt_type, repr);
    }

    /// `arp_process`: answer requests for any of our addresses (`arp_ignore=0`, the
    /// weak host model), learn the sender on the device it came from.
    #[tracing::instrument(level = "trace", name = "arp_process", skip_all)]
    fn arp_process(&mut self, dev: DeviceId, pkt_type: PktType, arp: ArpRepr) {
        let Some(our_mac) = self.link.devs.get(dev).map(|d| d.mac) else {
            return;
        };
        if self.ipv4.fib.is_local(arp.sender_ip) {
            // Someone claims one of our addresses (or it is our own frame looped back).
            if arp.sender_mac != our_mac {
                self.snmp.arp.in_errors += 1;
                tracing::warn!(
                    mac = %arp.sender_mac,
                    "address conflict: another host claims {}", arp.sender_ip
                );
            }
            return;
        }
        let mut actions = Vec::new();
        match arp.op {
            ArpOp::Request => {
                self.snmp.arp.in_requests += 1;
                let for_us = self.ipv4.fib.is_local(arp.target_ip);
                if for_us && !arp.sender_ip.is_unspecified() {
                    // The asker will talk to us: remember it (neigh_event_ns), STALE.
                    self.link.neigh.update(
                        self.now,
                        dev,
                        arp.sender_ip,
                        arp.sender_mac,
                        false,
                        true,
                        &mut actions,
                    );
                } else if !arp.sender_ip.is_unspecified() {
                    // Gratuitous or for someone else: refresh only what we know.
                    self.link.neigh.update(
                        self.now,
                        dev,
                        arp.sender_ip,
                        arp.sender_mac,
                        false,
                        false,
                        &mut actions,
                    );
                }
                if for_us {
                    // Reply straight to the asker's hardware address (RFC 826 "swap").
                    self.arp_send(
                        dev,
                        ArpOp::Reply,
                        arp.target_ip,
                        arp.sender_ip,
                        arp.sender_mac,
                        arp.sender_mac,
                    );
                }
            }
            ArpOp::Reply => {
                self.snmp.arp.in_replies += 1;
                // A reply unicast to us answers our probe and confirms reachability;
                // a broadcast one only refreshes (arp_process: NUD_REACHABLE vs STALE).
                let solicited = pkt_type == PktType::Host;
                self.link.neigh.update(
                    self.now,
                    dev,
                    arp.sender_ip,
                    arp.sender_mac,
                    solicited,
                    false,
                    &mut actions,
                );
            }
            ArpOp::Other(_) => {
                self.snmp.arp.in_errors += 1;
            }
        }
        self.run_neigh_actions(actions);
    }

    /// `arp_solicit`: ask on `dev` who has `target`, broadcast or unicast to a known
    /// address, from the device's address on `target`'s subnet (`inet_select_addr`).
    pub(crate) fn arp_solicit(&mut self, dev: DeviceId, target: Ipv4Addr, dst: Option<MacAddr>) {
        let src = self.inet_select_addr(dev, target);
        match dst {
            Some(mac) => self.arp_send(dev, ArpOp::Request, src, target, mac, mac),
            None => self.arp_send(
                dev,
                ArpOp::Request,
                src,
                target,
                MacAddr::BROADCAST,
                MacAddr::ZERO,
            ),
        }
    }

    /// Announce `addr` on `dev` with a gratuitous ARP request (sender = target = us),
    /// as Linux does when an address comes up, so peers refresh stale caches.
    pub(crate) fn arp_announce(&mut self, dev: DeviceId, addr: Ipv4Addr) {
        self.arp_send(
            dev,
            ArpOp::Request,
            addr,
            addr,
            MacAddr::BROADCAST,
            MacAddr::ZERO,
        );
    }

    /// `arp_send`: build and queue one ARP packet.
    #[tracing::instrument(level = "trace", name = "arp_send", skip_all)]
    fn arp_send(
        &mut self,
        dev: DeviceId,
        op: ArpOp,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
        eth_dst: MacAddr,
        target_mac: MacAddr,
    ) {
        let Some(sender_mac) = self.link.devs.get(dev).map(|d| d.mac) else {
            return;
        };
        let repr = ArpRepr {
            op,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        };
        let mut skb = self.pool.alloc_tx(arp::PACKET_LEN);
        repr.emit(skb.put(arp::PACKET_LEN));
        skb.reset_network_header();
        match op {
            ArpOp::Reply => self.snmp.arp.out_replies += 1,
            _ => self.snmp.arp.out_requests += 1,
        }
        self.dev_hard_header_xmit(dev, skb, eth_dst, ethertype::ARP);
    }

    /// Carry out what the neighbour table asked for.
    pub(crate) fn run_neigh_actions(&mut self, actions: Vec<NeighAction>) {
        for action in actions {
            match action {
                NeighAction::Solicit { dev, target, dst } => self.arp_solicit(dev, target, dst),
                NeighAction::Xmit { dev, skb, mac } => {
                    self.dev_hard_header_xmit(dev, skb, mac, ethertype::IPV4)
                }
                NeighAction::Unreachable { skb, .. } => self.ipv4_link_failure(skb),
            }
        }
    }
}
