//! `Stack`: one network namespace's worth of state (devices, routes, neighbours,
//! sockets), driven sans-IO: a host with one Ethernet device, or a router with many.
//!
//! The driver (stack-async, or a test) feeds frames in with [`Stack::netif_receive_skb`],
//! takes frames out with [`Stack::poll_transmit`], calls [`Stack::handle_timeout`] when
//! [`Stack::poll_timeout`] says so, and reacts to [`Stack::poll_event`]. Every entry point
//! takes `now`; nothing inside reads a clock.

use std::net::Ipv4Addr;

use crate::dev::{DeviceId, IfAddr, Link, NetDeviceConfig};
use crate::ipv4::route::{Fib, FibEntry, Table};
use crate::ipv4::{Ipv4, Ipv4Conf};
use crate::neigh::{NeighParms, NeighTable};
use crate::netfilter::Netfilter;
use crate::rand::Rng;
use crate::skb::SkbPool;
use crate::snmp::Snmp;
use crate::sock::Transport;
use crate::time::Instant;
use crate::wire::MacAddr;

// Where these types live now; re-exported here, where callers have always found them.
pub use crate::dev::Offloads;
pub use crate::sock::{Event, SocketId};

pub use crate::dev::LOOPBACK_IFINDEX;

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

/// One network namespace (`struct net`): each layer's state in a struct of its own, as
/// the kernel keeps `net->ipv4`, `net->nf` and the device list apart. This file only
/// wires them together; the protocol logic lives in the layers' modules.
pub struct Stack {
    /// The `now` of the entry point being run (the kernel's `jiffies`).
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    /// Buffers for everything the stack builds (and the driver's RX buffers).
    pub(crate) pool: SkbPool,
    pub(crate) snmp: Snmp,
    /// The link layer: devices, the ARP table, `lo`'s backlog (dev.rs, neigh.rs,
    /// arp.rs).
    pub(crate) link: Link,
    /// IPv4: settings, FIB, reassembly, IP IDs, ICMP and per-peer limits (ipv4/,
    /// icmp.rs, inetpeer.rs).
    pub(crate) ipv4: Ipv4,
    /// The netfilter hooks (netfilter.rs).
    pub(crate) nf: Netfilter,
    /// The transport layer: every socket and the protocols' tables (sock.rs, ping.rs,
    /// udp.rs, tcp/).
    pub(crate) sk: Transport,
}

impl core::fmt::Debug for Stack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("conf", &self.ipv4.conf)
            .field(
                "devices",
                &self.link.devs.iter().map(|d| &d.name).collect::<Vec<_>>(),
            )
            .field("neigh", &self.link.neigh.len())
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
            if let Err(err) = stack.ipv4.fib.insert(Table::Main, route) {
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
        let ip_ident = rng.next_u32() as u16;
        let mut stack = Stack {
            now,
            rng,
            pool: SkbPool::default(),
            snmp: Snmp::default(),
            link: Link::new(NeighTable::new(NeighParms::default(), now, neigh_seed)),
            ipv4: Ipv4::new(conf, now, ip_ident),
            nf: Netfilter::default(),
            sk: Transport::default(),
        };
        stack.tcp_init_table();
        stack
    }

    /// The `net.ipv4` settings in force.
    pub fn conf(&self) -> &Ipv4Conf {
        &self.ipv4.conf
    }

    /// Change `net.ipv4` settings (`sysctl -w`), e.g. turn forwarding on.
    pub fn conf_mut(&mut self) -> &mut Ipv4Conf {
        &mut self.ipv4.conf
    }

    /// The pool that RX buffers should come from.
    pub fn pool(&self) -> &SkbPool {
        &self.pool
    }

    pub fn fib(&self) -> &Fib {
        &self.ipv4.fib
    }

    pub fn fib_mut(&mut self) -> &mut Fib {
        &mut self.ipv4.fib
    }

    pub fn neigh(&self) -> &NeighTable {
        &self.link.neigh
    }

    /// `ip neigh flush [dev DEV]`: forget the ARP entries (of `dev`); packets waiting for
    /// resolution are dropped and counted. Returns how many entries went.
    pub fn neigh_flush(&mut self, dev: Option<DeviceId>) -> usize {
        self.link.neigh.flush(dev)
    }

    /// The rate-limiter state kept for peer `addr` (`inet_peer`), if any.
    pub fn inet_peer(&self, addr: Ipv4Addr) -> Option<crate::inetpeer::InetPeer> {
        self.ipv4.peers.lookup(addr).copied()
    }

    /// The netfilter hooks, to register rules on.
    pub fn netfilter_mut(&mut self) -> &mut Netfilter {
        &mut self.nf
    }

    /// All counters, with the neighbour table's gauges filled in.
    pub fn snmp(&self) -> Snmp {
        let mut s = self.snmp.clone();
        s.ip.forwarding = if self.ipv4.conf.ip_forward { 1 } else { 2 };
        // The `Dev` section sums the Ethernet devices (`ip -s link` has each one).
        for d in self.link.devs.iter() {
            if d.kind == crate::dev::DeviceKind::Ethernet {
                s.dev.add(&d.stats);
            }
        }
        s.ip.default_ttl = u64::from(crate::ipv4::DEFAULT_TTL);
        let n = &self.link.neigh.stats;
        s.arp.entries = self.link.neigh.len() as u64;
        s.arp.res_failed = n.res_failed;
        s.arp.unresolved_discards = n.unresolved_discards;
        s.arp.unres_qlen = self.link.neigh.unres_qlen() as u64;
        s.arp.unres_qlen_max = n.unres_qlen_max;
        s.arp.table_fulls = n.table_fulls;
        let d = &self.ipv4.frags.stats;
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
            self.link.neigh.poll_timeout(),
            self.ipv4.frags.poll_timeout(),
            self.tcp_poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Bytes held by IPv4 reassembly queues (bounded by `ipfrag_high_thresh`).
    pub fn defrag_mem(&self) -> usize {
        self.ipv4.frags.mem()
    }

    /// Run every timer due at `now`.
    #[tracing::instrument(level = "trace", name = "handle_timeout", skip_all)]
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let mut actions = Vec::new();
        self.link.neigh.on_timer(now, &mut actions);
        self.run_neigh_actions(actions);
        if self.ipv4.frags.poll_timeout().is_some_and(|t| t <= now) {
            self.ip_expire();
        }
        self.tcp_on_timer(now);
        self.process_backlog();
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.sk.events.pop_front()
    }
}
