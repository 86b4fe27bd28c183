//! The device layer: the device table (`struct net_device`, `dev_get_by_index`), its
//! addresses (`struct in_ifaddr`), `netif_receive_skb` on ingress and `dev_queue_xmit`
//! -> qdisc -> TX ring on egress (net/core/dev.c, net/ethernet/eth.c,
//! net/ipv4/devinet.c).
//!
//! Every device has its own qdisc, TX ring and counters (`ip -s link`). The driver takes
//! frames with [`Stack::poll_transmit`], which says which device each is for. When a
//! device's ring fills, its queue is stopped (`netif_stop_queue`) and packets wait in
//! its qdisc; when the driver has taken a quarter of the ring, the queue wakes
//! (`netif_wake_queue`) and `qdisc_run` moves packets on.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::gso;
use crate::ipv4::route::prefix_mask;
use crate::neigh::NeighTable;
use crate::qdisc::PfifoFast;
use crate::skb::{IpSummed, PktType, Skb, SkbPool};
use crate::snmp::DevStats;
use crate::stack::Stack;
use crate::wire::ethernet::{self, ethertype, EthernetFrame, EthernetRepr};
use crate::wire::MacAddr;

/// Largest GSO packet, IPv4 header included (`GSO_MAX_SIZE` is 65536; an IPv4 total
/// length field stops at 65535).
pub const GSO_MAX_SIZE: usize = 65535;

/// Default TX ring size in frames.
pub const DEFAULT_TX_RING: usize = 256;

/// ifindex of the loopback device, as in Linux (`skb.ifindex` of looped-back packets).
pub const LOOPBACK_IFINDEX: u32 = DeviceId::LOOPBACK.0;

/// The loopback device's MTU, as Linux's `lo` (`LOOPBACK_MTU`).
pub const LOOPBACK_MTU: usize = 65536;

/// Device offloads (`NETIF_F_*`), as the driver negotiated them with the device (for a
/// TAP: `IFF_VNET_HDR` + `TUNSETOFFLOAD`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// `NETIF_F_HW_CSUM`: the device fills in TCP checksums of `CHECKSUM_PARTIAL` skbs.
    pub csum: bool,
    /// `NETIF_F_TSO`: the device cuts TCP super-packets (`gso_size` set) into segments.
    /// Needs `csum`, as in the kernel (`netdev_fix_features`).
    pub tso: bool,
}

impl Offloads {
    /// What a driver that has both may ask for.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso: true,
    };
}

/// A device of a stack, by its interface index (`dev->ifindex`). Indices are never
/// reused while the stack runs, as in Linux.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

impl DeviceId {
    /// `lo`, which every stack has (ifindex 1, as in Linux).
    pub const LOOPBACK: DeviceId = DeviceId(1);
    /// The Ethernet device that [`Stack::new`] makes for a host (ifindex 2, like
    /// `eth0` on a Linux box).
    pub const ETH0: DeviceId = DeviceId(2);

    pub fn ifindex(self) -> u32 {
        self.0
    }
}

impl core::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "if{}", self.0)
    }
}

/// What a device is (`dev->type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Ethernet,
    Loopback,
}

/// A new Ethernet device (what the driver knows when it registers one).
#[derive(Clone, Debug)]
pub struct NetDeviceConfig {
    /// Interface name (`IFNAMSIZ`: at most 15 bytes), as `ip link` shows it.
    pub name: String,
    pub mac: MacAddr,
    /// Largest IP packet (L3 MTU), 1500 on Ethernet.
    pub mtu: usize,
    /// What the device does for us (`dev->features`).
    pub offloads: Offloads,
}

impl NetDeviceConfig {
    pub fn new(name: &str, mac: MacAddr) -> Self {
        NetDeviceConfig {
            name: name.to_owned(),
            mac,
            mtu: 1500,
            offloads: Offloads::default(),
        }
    }
}

/// One IPv4 address of a device (`struct in_ifaddr`, `ip addr add ADDR/PREFIX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl IfAddr {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        IfAddr { addr, prefix_len }
    }

    pub fn mask(&self) -> u32 {
        prefix_mask(self.prefix_len)
    }

    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The subnet broadcast (`ifa_broadcast`); none for /31 and /32 (RFC 3021).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix_len < 31).then(|| Ipv4Addr::from(u32::from(self.addr) | !self.mask()))
    }

    /// Whether `ip` is on this address's subnet (`inet_ifa_match`).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }
}

impl core::fmt::Display for IfAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why an address or device change was refused (the errno `ip` would print).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevError {
    /// No such device (ENODEV).
    NoDevice,
    /// The address is already on the device (EEXIST).
    Exists,
    /// The address is not on the device (EADDRNOTAVAIL).
    NoAddress,
    /// Prefix over 32, or an address no interface may have (EINVAL).
    Invalid,
}

impl core::fmt::Display for DevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DevError::NoDevice => "Cannot find device",
            DevError::Exists => "Address already assigned",
            DevError::NoAddress => "Cannot assign requested address",
            DevError::Invalid => "Invalid argument",
        })
    }
}

impl std::error::Error for DevError {}

/// A packet tap (`AF_PACKET` socket, `ptype_all`): gets a clone of every frame, both
/// directions, into a bounded ring; when the ring is full new frames are dropped for it.
#[derive(Debug)]
pub struct PacketTap {
    ring: VecDeque<Skb>,
    capacity: usize,
    /// Frames the tap missed because its ring was full (`tp_drops`).
    pub drops: u64,
}

/// Identifies a packet tap of a stack: its device and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapId(pub DeviceId, pub usize);

/// A network device (`struct net_device`).
#[derive(Debug)]
pub struct NetDevice {
    pub id: DeviceId,
    pub name: String,
    pub kind: DeviceKind,
    pub mac: MacAddr,
    /// Largest IP packet (L3 MTU).
    pub mtu: usize,
    /// `dev->features`: TSO only together with checksum offload.
    pub offloads: Offloads,
    /// IPv4 addresses, primary first (`in_device->ifa_list`).
    pub(crate) addrs: Vec<IfAddr>,
    pub(crate) qdisc: PfifoFast,
    tx_ring: VecDeque<Skb>,
    tx_ring_size: usize,
    stopped: bool,
    taps: Vec<PacketTap>,
    /// This device's counters (`ip -s link`).
    pub stats: DevStats,
}

impl NetDevice {
    fn new(id: DeviceId, kind: DeviceKind, cfg: NetDeviceConfig) -> Self {
        NetDevice {
            id,
            name: cfg.name,
            kind,
            mac: cfg.mac,
            mtu: cfg.mtu,
            // TSO without checksum offload is dropped, as `netdev_fix_features` does
            // ("Dropping TSO features since no CSUM feature").
            offloads: Offloads {
                csum: cfg.offloads.csum,
                tso: cfg.offloads.tso && cfg.offloads.csum,
            },
            addrs: Vec::new(),
            qdisc: PfifoFast::default(),
            tx_ring: VecDeque::with_capacity(DEFAULT_TX_RING),
            tx_ring_size: DEFAULT_TX_RING,
            stopped: false,
            taps: Vec::new(),
            stats: DevStats::default(),
        }
    }

    /// The device's IPv4 addresses, primary first.
    pub fn addrs(&self) -> &[IfAddr] {
        &self.addrs
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

    /// Frames waiting in the qdisc and on the TX ring.
    pub fn tx_pending(&self) -> usize {
        self.qdisc.len() + self.tx_ring.len()
    }

    /// `inet_select_addr`: the source for a packet out of this device to `dst`: the
    /// primary address of the subnet `dst` is on, else the device's primary address.
    pub fn select_addr(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addrs
            .iter()
            .find(|a| a.contains(dst))
            .or(self.addrs.first())
            .map(|a| a.addr)
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

/// The link layer's state: the devices, one ARP table for all of them (keyed by device
/// and address, as `arp_tbl`), and the loopback device's receive backlog.
#[derive(Debug)]
pub(crate) struct Link {
    pub devs: Devices,
    pub neigh: NeighTable,
    /// Packets `loopback_xmit` queued for `process_backlog`.
    pub backlog: VecDeque<Skb>,
}

impl Link {
    pub fn new(neigh: NeighTable) -> Link {
        Link {
            devs: Devices::new(),
            neigh,
            backlog: VecDeque::new(),
        }
    }

    /// `eth_type_trans` and the device's receive half of `__netif_receive_skb_core`:
    /// count the frame, classify it by destination MAC, give the taps a clone, move an
    /// 802.1Q tag into `vlan_tci` (`skb_vlan_untag`), and drop (counted) what is not
    /// ours: another host's MAC, a VLAN we do not have. What comes back has `data` at the
    /// network header and `protocol` set, for the handler of its EtherType.
    pub fn eth_type_trans(
        &mut self,
        now: crate::time::Instant,
        dev: DeviceId,
        mut skb: Skb,
    ) -> Option<Skb> {
        skb.tstamp = now;
        skb.ifindex = dev.0;
        let Some(d) = self.devs.get_mut(dev) else {
            tracing::warn!(%dev, "drop: frame for a device the stack does not have");
            return None;
        };
        d.stats.rx_packets += 1;
        d.stats.rx_bytes += skb.len() as u64;
        let Ok(repr) = EthernetFrame::new_checked(skb.data()).and_then(|f| EthernetRepr::parse(&f))
        else {
            d.stats.rx_errors += 1;
            tracing::trace!("drop: runt or undecodable Ethernet frame");
            return None;
        };
        skb.reset_mac_header();
        skb.pkt_type = if repr.dst == d.mac {
            PktType::Host
        } else if repr.dst.is_broadcast() {
            PktType::Broadcast
        } else if repr.dst.is_multicast() {
            PktType::Multicast
        } else {
            PktType::OtherHost
        };
        if !d.taps.is_empty() {
            d.deliver_to_taps(&skb);
        }
        if skb.pull(repr.header_len()).is_err() {
            d.stats.rx_errors += 1;
            return None;
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
            d.stats.rx_otherhost += 1;
            tracing::trace!("drop: PACKET_OTHERHOST");
            return None;
        }
        skb.reset_network_header();
        Some(skb)
    }

    /// A frame of an EtherType nobody handles (`rx_nohandler`).
    pub fn no_handler(&mut self, dev: DeviceId, ethertype: u16) {
        if let Some(d) = self.devs.get_mut(dev) {
            d.stats.rx_nohandler += 1;
        }
        tracing::trace!(ethertype, "drop: no protocol handler");
    }

    /// Push the Ethernet header and queue the frame on `dev` (`dev_hard_header` +
    /// `dev_queue_xmit`). `data` is at the network header.
    pub fn dev_hard_header_xmit(
        &mut self,
        now: crate::time::Instant,
        pool: &SkbPool,
        dev: DeviceId,
        mut skb: Skb,
        dst: MacAddr,
        proto: u16,
    ) {
        let Some(d) = self.devs.get_mut(dev) else {
            return;
        };
        let repr = EthernetRepr {
            dst,
            src: d.mac,
            vlan: None,
            ethertype: proto,
        };
        skb.protocol = proto;
        match skb.push(repr.header_len()) {
            Ok(hdr) => repr.emit(hdr),
            Err(_) => {
                // Every egress skb is allocated with MAX_HEADER of headroom; a packet
                // that lost it is a bug upstream, counted rather than trusted.
                d.stats.tx_dropped += 1;
                tracing::warn!("drop: no headroom for the Ethernet header");
                return;
            }
        }
        self.dev_queue_xmit(now, pool, dev, skb);
    }

    /// Queue a complete frame (`data` at the Ethernet header) on `dev`'s qdisc and run
    /// it. What the device cannot do is done first in software (`validate_xmit_skb`):
    /// a GSO super-packet for a device without TSO is cut into its segments (buffers
    /// from `pool`), a partial checksum for a device without checksum offload is
    /// completed.
    #[tracing::instrument(level = "trace", name = "dev_queue_xmit", skip_all, fields(dev = dev.0, len = skb.len()))]
    pub fn dev_queue_xmit(
        &mut self,
        now: crate::time::Instant,
        pool: &SkbPool,
        dev: DeviceId,
        skb: Skb,
    ) {
        debug_assert!(skb.len() >= ethernet::HEADER_LEN);
        let Some(d) = self.devs.get_mut(dev) else {
            return;
        };
        let partial = matches!(skb.ip_summed, IpSummed::Partial { .. });
        if (skb.gso_size > 0 && !d.offloads.tso) || (partial && !d.offloads.csum) {
            // `netif_needs_gso` -> `skb_gso_segment`, or `skb_checksum_help`. Linux does
            // this as the qdisc hands the packet to the driver; here it happens before
            // the qdisc, so the qdisc and the taps see the segments (the taps see them
            // in Linux too, `dev_queue_xmit_nit` runs after `validate_xmit_skb`).
            let owner = skb.owner_w().cloned();
            let mut segs = Vec::new();
            if let Err(e) = gso::skb_gso_segment(skb, pool, &mut segs) {
                d.stats.tx_dropped += 1;
                tracing::trace!(?e, "drop: validate_xmit_skb failed");
                return;
            }
            for mut seg in segs {
                if let Some(owner) = &owner {
                    if seg.owner_w().is_none() {
                        seg.set_owner_w(owner);
                    }
                }
                dev_queue_xmit_one(d, now, seg);
            }
            return;
        }
        dev_queue_xmit_one(d, now, skb);
    }

    /// The next frame of any device's TX ring, devices taking turns.
    pub fn poll_transmit(&mut self) -> Option<(DeviceId, Skb)> {
        let n = self.devs.slots.len();
        for i in 0..n {
            let at = (self.devs.tx_cursor + i) % n;
            let Some(Some(d)) = self.devs.slots.get_mut(at) else {
                continue;
            };
            if let Some(skb) = dev_xmit_one(d) {
                self.devs.tx_cursor = at + 1;
                return Some((d.id, skb));
            }
        }
        None
    }
}

/// The device table (`dev_base_head` and the ifindex hash of one netns).
#[derive(Debug)]
pub struct Devices {
    /// Indexed by ifindex; slot 0 is never used.
    slots: Vec<Option<NetDevice>>,
    /// Where `poll_transmit` looks first, so no device's ring starves the others.
    tx_cursor: usize,
}

impl Devices {
    /// A table with the loopback device only.
    pub(crate) fn new() -> Self {
        let lo = NetDevice::new(
            DeviceId::LOOPBACK,
            DeviceKind::Loopback,
            NetDeviceConfig {
                name: "lo".to_owned(),
                mac: MacAddr::ZERO,
                mtu: LOOPBACK_MTU,
                offloads: Offloads::default(),
            },
        );
        Devices {
            slots: vec![None, Some(lo)],
            tx_cursor: 0,
        }
    }

    pub fn get(&self, id: DeviceId) -> Option<&NetDevice> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: DeviceId) -> Option<&mut NetDevice> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    /// `dev_get_by_name`.
    pub fn by_name(&self, name: &str) -> Option<&NetDevice> {
        self.iter().find(|d| d.name == name)
    }

    /// Every device, by ifindex.
    pub fn iter(&self) -> impl Iterator<Item = &NetDevice> {
        self.slots.iter().flatten()
    }

    fn register(&mut self, kind: DeviceKind, cfg: NetDeviceConfig) -> DeviceId {
        let id = DeviceId(self.slots.len() as u32);
        self.slots.push(Some(NetDevice::new(id, kind, cfg)));
        id
    }

    /// The first Ethernet device (the one a host's broadcasts leave by when no route
    /// names a device).
    pub fn first_ethernet(&self) -> Option<&NetDevice> {
        self.iter().find(|d| d.kind == DeviceKind::Ethernet)
    }
}

impl Stack {
    /// Register an Ethernet device (`register_netdevice`); it gets the next ifindex.
    /// It has no address until [`Stack::addr_add`] gives it one.
    pub fn add_device(&mut self, cfg: NetDeviceConfig) -> DeviceId {
        let id = self.link.devs.register(DeviceKind::Ethernet, cfg);
        // A route cached before may now have a better device.
        self.ipv4.fib.touch();
        id
    }

    /// The device table.
    pub fn devices(&self) -> &Devices {
        &self.link.devs
    }

    /// One device. Panics on an id this stack never gave out (a driver bug).
    pub fn device(&self, id: DeviceId) -> &NetDevice {
        self.link.devs.get(id).expect("a DeviceId from this stack")
    }

    /// `dev_set_mtu` (`ip link set DEV mtu N`): cached routes pick up the new MTU.
    pub fn set_mtu(&mut self, id: DeviceId, mtu: usize) -> Result<(), DevError> {
        // 68: the smallest MTU IPv4 allows (RFC 791, `ETH_MIN_MTU`).
        if !(68..=65535).contains(&mtu) {
            return Err(DevError::Invalid);
        }
        self.link.devs.get_mut(id).ok_or(DevError::NoDevice)?.mtu = mtu;
        self.ipv4.fib.touch();
        Ok(())
    }

    /// Ingress entry point: one Ethernet frame received on `dev`, `data` at the
    /// Ethernet header: the link layer takes it in ([`Link::eth_type_trans`]), then the
    /// protocol handler of its EtherType gets it: `arp_rcv` or `ip_rcv`.
    #[tracing::instrument(level = "trace", name = "netif_receive_skb", skip_all, fields(dev = dev.0, len = skb.len()))]
    pub fn netif_receive_skb(&mut self, now: crate::time::Instant, dev: DeviceId, skb: Skb) {
        self.now = now;
        let Some(skb) = self.link.eth_type_trans(now, dev, skb) else {
            return;
        };
        match skb.protocol {
            ethertype::IPV4 => self.ip_rcv(skb),
            ethertype::ARP => self.arp_rcv(dev, skb),
            _ => self.link.no_handler(dev, skb.protocol),
        }
        self.process_backlog();
        self.tcp_flush_timers();
    }

    /// Push the Ethernet header and queue the frame on `dev` (`dev_hard_header` +
    /// `dev_queue_xmit`). `data` is at the network header.
    pub(crate) fn dev_hard_header_xmit(
        &mut self,
        dev: DeviceId,
        skb: Skb,
        dst: MacAddr,
        proto: u16,
    ) {
        self.link
            .dev_hard_header_xmit(self.now, &self.pool, dev, skb, dst, proto);
    }

    /// The next frame for a wire and the device it leaves by (`data` at the Ethernet
    /// header), as a NIC takes a descriptor off its TX ring. Devices take turns, one
    /// frame each. Wakes a stopped queue once a quarter of its ring is free.
    pub fn poll_transmit(&mut self, now: crate::time::Instant) -> Option<(DeviceId, Skb)> {
        self.now = now;
        self.link.poll_transmit()
    }

    /// The next frame for `dev`'s wire only, for a driver that runs a loop per device.
    pub fn poll_transmit_dev(&mut self, now: crate::time::Instant, dev: DeviceId) -> Option<Skb> {
        self.now = now;
        dev_xmit_one(self.link.devs.get_mut(dev)?)
    }

    /// Frames waiting in qdiscs and on TX rings, all devices together.
    pub fn tx_pending(&self) -> usize {
        self.link.devs.iter().map(NetDevice::tx_pending).sum()
    }

    /// Open a packet tap on `dev` that sees every frame in both directions (like
    /// tcpdump's AF_PACKET socket), keeping at most `capacity` frames until read.
    pub fn packet_tap_open(&mut self, dev: DeviceId, capacity: usize) -> Option<TapId> {
        let d = self.link.devs.get_mut(dev)?;
        d.taps.push(PacketTap {
            ring: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            drops: 0,
        });
        Some(TapId(dev, d.taps.len() - 1))
    }

    /// The next captured frame of a tap (`data` at the Ethernet header; `pkt_type` tells
    /// the direction).
    pub fn packet_tap_recv(&mut self, tap: TapId) -> Option<Skb> {
        self.link
            .devs
            .get_mut(tap.0)?
            .taps
            .get_mut(tap.1)?
            .ring
            .pop_front()
    }

    pub fn packet_tap_drops(&self, tap: TapId) -> u64 {
        self.link
            .devs
            .get(tap.0)
            .and_then(|d| d.taps.get(tap.1))
            .map_or(0, |t| t.drops)
    }
}

/// One wire-ready frame onto `d`'s taps and qdisc (`__dev_xmit_skb`).
fn dev_queue_xmit_one(d: &mut NetDevice, now: crate::time::Instant, mut skb: Skb) {
    skb.reset_mac_header();
    skb.ifindex = d.id.0;
    if !d.taps.is_empty() {
        let mut seen = skb.clone();
        seen.pkt_type = PktType::Outgoing;
        // The time it was sent, as `dev_queue_xmit_nit` stamps its clone
        // (`net_timestamp_set`); the skb's own tstamp is its arrival, or nothing.
        seen.tstamp = now;
        d.deliver_to_taps(&seen);
    }
    if let Err(dropped) = d.qdisc.enqueue(skb) {
        d.stats.tx_dropped += 1;
        tracing::trace!("drop: qdisc full");
        drop(dropped);
        return;
    }
    qdisc_run(d);
}

/// `__qdisc_run`: move packets from the qdisc to the TX ring until it is empty or the
/// ring is full, stopping the queue in the latter case.
fn qdisc_run(d: &mut NetDevice) {
    while !d.stopped {
        let Some(skb) = d.qdisc.dequeue() else {
            break;
        };
        // `ndo_start_xmit`: place on the ring.
        d.tx_ring.push_back(skb);
        if d.tx_ring.len() >= d.tx_ring_size {
            d.stopped = true;
            d.stats.tx_queue_stopped += 1;
        }
    }
}

/// Take one frame off `d`'s TX ring, waking its queue when a quarter is free.
fn dev_xmit_one(d: &mut NetDevice) -> Option<Skb> {
    let skb = d.tx_ring.pop_front()?;
    d.stats.tx_packets += 1;
    d.stats.tx_bytes += skb.len() as u64;
    if d.stopped && d.tx_ring.len() <= d.tx_ring_size * 3 / 4 {
        d.stopped = false;
        qdisc_run(d);
    }
    Some(skb)
}
