//! The device layer: `netif_receive_skb` on ingress, `dev_queue_xmit` -> qdisc -> TX ring
//! on egress (net/core/dev.c, net/ethernet/eth.c).
//!
//! The TX ring is what the driver (stack-io via stack-async) takes frames from with
//! [`Stack::poll_transmit`]. When it fills, the queue is stopped (`netif_stop_queue`) and
//! packets wait in the qdisc; when the driver has taken a quarter of the ring, the queue
//! wakes (`netif_wake_queue`) and `qdisc_run` moves packets on.

use std::collections::VecDeque;

use crate::qdisc::PfifoFast;
use crate::skb::{PktType, Skb};
use crate::stack::{Offloads, Stack};
use crate::wire::ethernet::{self, ethertype, EthernetFrame, EthernetRepr};
use crate::wire::MacAddr;

/// Largest GSO packet, IPv4 header included (`GSO_MAX_SIZE` is 65536; an IPv4 total
/// length field stops at 65535).
pub const GSO_MAX_SIZE: usize = 65535;

/// Default TX ring size in frames.
pub const DEFAULT_TX_RING: usize = 256;

/// A packet tap (`AF_PACKET` socket, `ptype_all`): gets a clone of every frame, both
/// directions, into a bounded ring; when the ring is full new frames are dropped for it.
#[derive(Debug)]
pub struct PacketTap {
    ring: VecDeque<Skb>,
    capacity: usize,
    /// Frames the tap missed because its ring was full (`tp_drops`).
    pub drops: u64,
}

/// Identifies a packet tap of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapId(pub usize);

/// The one network device of a stack.
#[derive(Debug)]
pub struct NetDevice {
    pub ifindex: u32,
    pub mac: MacAddr,
    /// Largest IP packet (L3 MTU).
    pub mtu: usize,
    /// `dev->features`: TSO only together with checksum offload.
    pub offloads: Offloads,
    pub(crate) qdisc: PfifoFast,
    tx_ring: VecDeque<Skb>,
    tx_ring_size: usize,
    stopped: bool,
    taps: Vec<PacketTap>,
}

impl NetDevice {
    pub fn new(ifindex: u32, mac: MacAddr, mtu: usize) -> Self {
        NetDevice {
            ifindex,
            mac,
            mtu,
            offloads: Offloads::default(),
            qdisc: PfifoFast::default(),
            tx_ring: VecDeque::with_capacity(DEFAULT_TX_RING),
            tx_ring_size: DEFAULT_TX_RING,
            stopped: false,
            taps: Vec::new(),
        }
    }

    /// The device with `offloads`; TSO without checksum offload is dropped, as
    /// `netdev_fix_features` does ("Dropping TSO features since no CSUM feature").
    pub fn with_offloads(mut self, offloads: Offloads) -> Self {
        self.offloads = Offloads {
            csum: offloads.csum,
            tso: offloads.tso && offloads.csum,
        };
        self
    }

    /// `gso_max_size` for TCP: the payload one super-packet may carry, so that the IPv4
    /// datagram stays within 65535 bytes with the largest TCP header.
    pub fn gso_max_payload(&self) -> usize {
        if self.offloads.tso {
            GSO_MAX_SIZE - 20 - 60
        } else {
            0
        }
    }

    pub fn queue_stopped(&self) -> bool {
        self.stopped
    }

    pub fn tx_ring_len(&self) -> usize {
        self.tx_ring.len()
    }

    fn deliver_to_taps(&mut self, skb: &Skb) {
        for tap in &mut self.taps {
            if tap.ring.len() < tap.capacity {
                tap.ring.push_back(skb.clone());
            } else {
                tap.drops += 1;
            }
        }
    }
}

impl Stack {
    /// Ingress entry point: one Ethernet frame, `data` at the Ethernet header.
    ///
    /// `eth_type_trans` classifies the frame by destination MAC, packet taps get a clone,
    /// an 802.1Q tag is moved into `vlan_tci` (`skb_vlan_untag`), frames for another MAC or
    /// an unknown VLAN are dropped (the MAC filter), and the rest go to the protocol
    /// handler of their EtherType: `arp_rcv` or `ip_rcv`.
    #[tracing::instrument(level = "trace", name = "netif_receive_skb", skip_all, fields(len = skb.len()))]
    pub fn netif_receive_skb(&mut self, now: crate::time::Instant, mut skb: Skb) {
        self.now = now;
        skb.tstamp = now;
        skb.ifindex = self.dev.ifindex;
        let stats = &mut self.snmp.dev;
        stats.rx_packets += 1;
        stats.rx_bytes += skb.len() as u64;

        let repr =
            match EthernetFrame::new_checked(skb.data()).and_then(|f| EthernetRepr::parse(&f)) {
                Ok(r) => r,
                Err(_) => {
                    stats.rx_errors += 1;
                    tracing::trace!("drop: runt or undecodable Ethernet frame");
                    return;
                }
            };
        skb.reset_mac_header();
        skb.pkt_type = if repr.dst == self.dev.mac {
            PktType::Host
        } else if repr.dst.is_broadcast() {
            PktType::Broadcast
        } else if repr.dst.is_multicast() {
            PktType::Multicast
        } else {
            PktType::OtherHost
        };
        if !self.dev.taps.is_empty() {
            self.dev.deliver_to_taps(&skb);
        }
        if skb.pull(repr.header_len()).is_err() {
            self.snmp.dev.rx_errors += 1;
            return;
        }
        skb.protocol = repr.ethertype;
        if let Some(tag) = repr.vlan {
            skb.vlan_tci = Some(tag.to_tci());
            // No VLAN devices: only priority-tagged frames (VID 0, IEEE 802.1Q-2018
            // 6.9.1) belong to the untagged device; others are someone else's.
            if tag.vid != 0 {
                skb.pkt_type = PktType::OtherHost;
            }
        }
        if skb.pkt_type == PktType::OtherHost {
            self.snmp.dev.rx_otherhost += 1;
            tracing::trace!("drop: PACKET_OTHERHOST");
            return;
        }
        skb.reset_network_header();
        match skb.protocol {
            ethertype::IPV4 => self.ip_rcv(skb),
            ethertype::ARP => self.arp_rcv(skb),
            _ => {
                self.snmp.dev.rx_nohandler += 1;
                tracing::trace!(ethertype = skb.protocol, "drop: no protocol handler");
            }
        }
        self.process_backlog();
    }

    /// Push the Ethernet header and queue the frame (`dev_hard_header` + `dev_queue_xmit`).
    /// `data` is at the network header.
    pub(crate) fn dev_hard_header_xmit(&mut self, mut skb: Skb, dst: MacAddr, proto: u16) {
        let repr = EthernetRepr {
            dst,
            src: self.dev.mac,
            vlan: None,
            ethertype: proto,
        };
        skb.protocol = proto;
        match skb.push(repr.header_len()) {
            Ok(hdr) => repr.emit(hdr),
            Err(_) => {
                // Every egress skb is allocated with MAX_HEADER of headroom; a packet
                // that lost it is a bug upstream, counted rather than trusted.
                self.snmp.dev.tx_dropped += 1;
                tracing::warn!("drop: no headroom for the Ethernet header");
                return;
            }
        }
        self.dev_queue_xmit(skb);
    }

    /// Queue a complete frame (`data` at the Ethernet header) on the qdisc and run it.
    #[tracing::instrument(level = "trace", name = "dev_queue_xmit", skip_all, fields(len = skb.len()))]
    pub(crate) fn dev_queue_xmit(&mut self, mut skb: Skb) {
        debug_assert!(skb.len() >= ethernet::HEADER_LEN);
        skb.reset_mac_header();
        skb.ifindex = self.dev.ifindex;
        if !self.dev.taps.is_empty() {
            let mut seen = skb.clone();
            seen.pkt_type = PktType::Outgoing;
            self.dev.deliver_to_taps(&seen);
        }
        if let Err(dropped) = self.dev.qdisc.enqueue(skb) {
            self.snmp.dev.tx_dropped += 1;
            tracing::trace!("drop: qdisc full");
            drop(dropped);
            return;
        }
        self.qdisc_run();
    }

    /// `__qdisc_run`: move packets from the qdisc to the TX ring until it is empty or the
    /// ring is full, stopping the queue in the latter case.
    #[tracing::instrument(level = "trace", name = "qdisc_run", skip_all)]
    fn qdisc_run(&mut self) {
        let dev = &mut self.dev;
        while !dev.stopped {
            let Some(skb) = dev.qdisc.dequeue() else {
                break;
            };
            // `ndo_start_xmit`: place on the ring.
            dev.tx_ring.push_back(skb);
            if dev.tx_ring.len() >= dev.tx_ring_size {
                dev.stopped = true;
                self.snmp.dev.tx_queue_stopped += 1;
            }
        }
    }

    /// The next frame for the wire (`data` at the Ethernet header), as a NIC takes a
    /// descriptor off its TX ring. Wakes a stopped queue once a quarter of the ring is free.
    pub fn poll_transmit(&mut self, now: crate::time::Instant) -> Option<Skb> {
        self.now = now;
        let skb = self.dev.tx_ring.pop_front()?;
        self.snmp.dev.tx_packets += 1;
        self.snmp.dev.tx_bytes += skb.len() as u64;
        if self.dev.stopped && self.dev.tx_ring.len() <= self.dev.tx_ring_size * 3 / 4 {
            self.dev.stopped = false;
            self.qdisc_run();
        }
        Some(skb)
    }

    /// Frames waiting in the qdisc and on the TX ring.
    pub fn tx_pending(&self) -> usize {
        self.dev.qdisc.len() + self.dev.tx_ring.len()
    }

    /// Open a packet tap that sees every frame in both directions (like tcpdump's
    /// AF_PACKET socket), keeping at most `capacity` frames until read.
    pub fn packet_tap_open(&mut self, capacity: usize) -> TapId {
        self.dev.taps.push(PacketTap {
            ring: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            drops: 0,
        });
        TapId(self.dev.taps.len() - 1)
    }

    /// The next captured frame of a tap (`data` at the Ethernet header; `pkt_type` tells
    /// the direction).
    pub fn packet_tap_recv(&mut self, tap: TapId) -> Option<Skb> {
        self.dev.taps.get_mut(tap.0)?.ring.pop_front()
    }

    pub fn packet_tap_drops(&self, tap: TapId) -> u64 {
        self.dev.taps.get(tap.0).map_or(0, |t| t.drops)
    }
}
