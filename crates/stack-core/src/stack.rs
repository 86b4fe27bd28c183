//! `Stack`: one network namespace's worth of state (devices, routes, neighbours,
//! sockets), driven sans-IO: a host with one Ethernet device, or a router with many.
//!
//! The driver (stack-async, or a test) feeds frames in with [`Stack::netif_receive_skb`],
//! takes frames out with [`Stack::poll_transmit`], calls [`Stack::handle_timeout`] when
//! [`Stack::poll_timeout`] says so, and reacts to [`Stack::poll_event`]. Every entry point
//! takes `now`; nothing inside reads a clock.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::dev::{DeviceId, Devices, IfAddr, NetDeviceConfig};
use crate::icmp::IcmpState;
use crate::inetpeer::InetPeers;
use crate::ipv4::defrag::{Defrag, DefragParms};
use crate::ipv4::route::{Fib, FibEntry, Table};
use crate::ipv4::Ipv4Conf;
use crate::neigh::{NeighParms, NeighTable};
use crate::netfilter::Netfilter;
use crate::ping::PingTable;
use crate::rand::Rng;
use crate::skb::{Skb, SkbPool};
use crate::snmp::Snmp;
use crate::sock::Sock;
use crate::tcp::TcpTable;
use crate::time::Instant;
use crate::udp::UdpTable;
use crate::wire::MacAddr;
use slab::Slab;

/// ifindex of the loopback device, as in Linux.
pub const LOOPBACK_IFINDEX: u32 = DeviceId::LOOPBACK.0;

/// What a host is: one Ethernet device (`eth0`, [`DeviceId::ETH0`]) with one address,
/// and perhaps a default route. [`Stack::new`] builds it; a router builds its devices
/// with [`Stack::with_conf`] and [`Stack::add_device`] instead.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Device MTU (IP packet size), 1500 on Ethernet.
    pub mtu: usize,
    /// `net.ipv4.ip_forward`: off by default, as in Linux.
    pub ip_forward: bool,
    /// What the device does for us (`dev->features`); none by default, so a stack on a
    /// plain link computes every checksum and sends wire-size frames.
    pub offloads: Offloads,
}

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

impl StackConfig {
    pub fn new(mac: MacAddr, addr: Ipv4Addr, prefix_len: u8) -> Self {
        StackConfig {
            mac,
            addr,
            prefix_len,
            gateway: None,
            mtu: 1500,
            ip_forward: false,
            offloads: Offloads::default(),
        }
    }

    /// The MAC ustack uses when none is given: locally administered (RFC 7042 section
    /// 2.1), `02:00:` followed by the IPv4 address, so it is stable and easy to spot.
    pub fn default_mac(addr: Ipv4Addr) -> MacAddr {
        let o = addr.octets();
        MacAddr([0x02, 0x00, o[0], o[1], o[2], o[3]])
    }
}

/// Handle of a socket inside the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub usize);

/// Something the driver must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A socket has messages to read (`sk_data_ready`).
    Readable(SocketId),
    /// A socket can send again, or finished connecting (`sk_write_space`).
    Writable(SocketId),
}

pub struct Stack {
    /// `net.ipv4.*` settings of the namespace.
    pub(crate) conf: Ipv4Conf,
    pub(crate) pool: SkbPool,
    pub(crate) rng: Rng,
    /// The `now` of the entry point being run (the kernel's `jiffies`).
    pub(crate) now: Instant,
    pub(crate) snmp: Snmp,
    /// The device table (`lo` and the Ethernet devices).
    pub(crate) devs: Devices,
    /// The ARP table of every device, keyed by (device, address) like `arp_tbl`.
    pub(crate) neigh: NeighTable,
    pub(crate) fib: Fib,
    pub(crate) nf: Netfilter,
    pub(crate) icmp: IcmpState,
    /// Per-peer rate-limiter state (`net->ipv4.peers`): ICMP errors, `ip_error`,
    /// redirects.
    pub(crate) peers: InetPeers,
    /// Every socket, all protocols (`struct sock`s).
    pub(crate) socks: Slab<Sock>,
    pub(crate) ping: PingTable,
    pub(crate) udp: UdpTable,
    pub(crate) tcp: TcpTable,
    pub(crate) ip_ident: u16,
    /// IPv4 reassembly queues (`ipq`s).
    pub(crate) defrag: Defrag,
    /// The loopback device's receive backlog.
    pub(crate) backlog: VecDeque<Skb>,
    pub(crate) events: VecDeque<Event>,
}

impl core::fmt::Debug for Stack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("conf", &self.conf)
            .field(
                "devices",
                &self.devs.iter().map(|d| &d.name).collect::<Vec<_>>(),
            )
            .field("neigh", &self.neigh.len())
            .field("tx_pending", &self.tx_pending())
            .finish()
    }
}

impl Stack {
    /// A host with `config`, started at `now`, all randomness drawn from `seed`: `lo`,
    /// `eth0` with the address, the default route if a gateway is given. Queues a
    /// gratuitous ARP announcing the address.
    pub fn new(config: StackConfig, now: Instant, seed: u64) -> Stack {
        let mut config = config;
        if config.prefix_len > 32 {
            tracing::warn!(
                prefix_len = config.prefix_len,
                "prefix length over 32, using 32"
            );
            config.prefix_len = 32;
        }
        let conf = Ipv4Conf {
            ip_forward: config.ip_forward,
            ..Ipv4Conf::default()
        };
        let mut stack = Stack::with_conf(conf, now, seed);
        let eth0 = stack.add_device(NetDeviceConfig {
            name: "eth0".to_owned(),
            mac: config.mac,
            mtu: config.mtu,
            offloads: config.offloads,
        });
        debug_assert_eq!(eth0, DeviceId::ETH0);
        if let Err(err) = stack.addr_add(eth0, IfAddr::new(config.addr, config.prefix_len)) {
            tracing::warn!(%err, addr = %config.addr, "address not added");
        }
        if let Some(gw) = config.gateway {
            // Installed as given (`onlink`): a host's gateway is trusted to be on the link.
            let route = FibEntry::unicast(Ipv4Addr::UNSPECIFIED, 0, Some(gw), eth0);
            if let Err(err) = stack.fib.insert(Table::Main, route) {
                tracing::warn!(?err, %gw, "default route not installed");
            }
        }
        stack
    }

    /// A stack with only the loopback device and the `net.ipv4` settings `conf`:
    /// add devices with [`Stack::add_device`], addresses with [`Stack::addr_add`] and
    /// routes with [`Stack::route_add`] (a router, or a host with several links).
    pub fn with_conf(conf: Ipv4Conf, now: Instant, seed: u64) -> Stack {
        let mut rng = Rng::new(seed);
        let neigh_seed = rng.next_u64();
        let mut stack = Stack {
            conf,
            pool: SkbPool::default(),
            ip_ident: rng.next_u32() as u16,
            rng,
            now,
            snmp: Snmp::default(),
            devs: Devices::new(),
            neigh: NeighTable::new(NeighParms::default(), now, neigh_seed),
            fib: Fib::default(),
            nf: Netfilter::default(),
            icmp: IcmpState::new(now),
            peers: InetPeers::default(),
            socks: Slab::new(),
            defrag: Defrag::new(DefragParms::default()),
            ping: PingTable::default(),
            udp: UdpTable::default(),
            tcp: TcpTable::default(),
            backlog: VecDeque::new(),
            events: VecDeque::new(),
        };
        stack.tcp_init_table();
        stack
    }

    /// The `net.ipv4` settings in force.
    pub fn conf(&self) -> &Ipv4Conf {
        &self.conf
    }

    /// Change `net.ipv4` settings (`sysctl -w`), e.g. turn forwarding on.
    pub fn conf_mut(&mut self) -> &mut Ipv4Conf {
        &mut self.conf
    }

    /// The pool that RX buffers should come from.
    pub fn pool(&self) -> &SkbPool {
        &self.pool
    }

    pub fn fib(&self) -> &Fib {
        &self.fib
    }

    pub fn fib_mut(&mut self) -> &mut Fib {
        &mut self.fib
    }

    pub fn neigh(&self) -> &NeighTable {
        &self.neigh
    }

    /// `ip neigh flush [dev DEV]`: forget the ARP entries (of `dev`); packets waiting for
    /// resolution are dropped and counted. Returns how many entries went.
    pub fn neigh_flush(&mut self, dev: Option<DeviceId>) -> usize {
        self.neigh.flush(dev)
    }

    /// The rate-limiter state kept for peer `addr` (`inet_peer`), if any.
    pub fn inet_peer(&self, addr: Ipv4Addr) -> Option<crate::inetpeer::InetPeer> {
        self.peers.lookup(addr).copied()
    }

    /// The netfilter hooks, to register rules on.
    pub fn netfilter_mut(&mut self) -> &mut Netfilter {
        &mut self.nf
    }

    /// All counters, with the neighbour table's gauges filled in.
    pub fn snmp(&self) -> Snmp {
        let mut s = self.snmp.clone();
        s.ip.forwarding = if self.conf.ip_forward { 1 } else { 2 };
        // The `Dev` section sums the Ethernet devices (`ip -s link` has each one).
        for d in self.devs.iter() {
            if d.kind == crate::dev::DeviceKind::Ethernet {
                s.dev.add(&d.stats);
            }
        }
        s.ip.default_ttl = u64::from(crate::ipv4::DEFAULT_TTL);
        let n = &self.neigh.stats;
        s.arp.entries = self.neigh.len() as u64;
        s.arp.res_failed = n.res_failed;
        s.arp.unresolved_discards = n.unresolved_discards;
        s.arp.unres_qlen = self.neigh.unres_qlen() as u64;
        s.arp.unres_qlen_max = n.unres_qlen_max;
        s.arp.table_fulls = n.table_fulls;
        let d = &self.defrag.stats;
        s.ip.reasm_reqds = d.reasm_reqds;
        s.ip.reasm_oks = d.reasm_oks;
        s.ip.reasm_fails = d.reasm_fails;
        s.ip.reasm_timeout = d.reasm_timeout;
        s.ip_ext.reasm_overlaps = d.reasm_overlaps;
        s
    }

    /// When [`Stack::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.neigh.poll_timeout(),
            self.defrag.poll_timeout(),
            self.tcp_poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Bytes held by IPv4 reassembly queues (bounded by `ipfrag_high_thresh`).
    pub fn defrag_mem(&self) -> usize {
        self.defrag.mem()
    }

    /// Run every timer due at `now`.
    #[tracing::instrument(level = "trace", name = "handle_timeout", skip_all)]
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let mut actions = Vec::new();
        self.neigh.on_timer(now, &mut actions);
        self.run_neigh_actions(actions);
        if self.defrag.poll_timeout().is_some_and(|t| t <= now) {
            self.ip_expire();
        }
        self.tcp_on_timer(now);
        self.process_backlog();
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
