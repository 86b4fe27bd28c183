//! IPv4 (net/ipv4/): routing, ingress (`ip_rcv` .. `ip_local_deliver`), forwarding
//! (`ip_forward`, `ip_error`), egress (`ip_queue_xmit` .. `ip_finish_output2`).

pub mod defrag;
pub mod devinet;
pub mod fib_frontend;
pub mod forward;
pub mod fragment;
pub mod input;
pub mod output;
pub mod route;

use std::io;
use std::net::Ipv4Addr;

use crate::dev::DeviceId;
use route::RouteType;

/// Linux's default TTL (`net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// IPv4's state in a namespace (`struct netns_ipv4`): the settings, the FIB, the
/// reassembly queues, the IP ID counter, ICMP's limiter and the per-peer table.
#[derive(Debug)]
pub(crate) struct Ipv4 {
    pub conf: Ipv4Conf,
    pub fib: route::Fib,
    /// Reassembly queues (`net->ipv4.frags`, `ipq`s).
    pub frags: defrag::Defrag,
    pub ip_ident: u16,
    pub icmp: crate::icmp::IcmpState,
    /// Per-peer rate-limiter state (`net->ipv4.peers`): ICMP errors, `ip_error`,
    /// redirects.
    pub peers: crate::inetpeer::InetPeers,
}

impl Ipv4 {
    pub fn new(conf: Ipv4Conf, now: crate::time::Instant, ip_ident: u16) -> Ipv4 {
        Ipv4 {
            conf,
            fib: route::Fib::default(),
            frags: defrag::Defrag::new(defrag::DefragParms::default()),
            ip_ident,
            icmp: crate::icmp::IcmpState::new(now),
            peers: crate::inetpeer::InetPeers::default(),
        }
    }
}

/// Reverse-path filtering of a packet's source (`net.ipv4.conf.all.rp_filter`, RFC 3704).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RpFilter {
    /// 0, the kernel's default: no source validation.
    #[default]
    Off,
    /// 1: the route back to the source must leave by the device the packet came in on.
    Strict,
    /// 2: some route back to the source must exist.
    Loose,
}

/// The `net.ipv4` sysctls the stack follows, with Linux's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Conf {
    /// `net.ipv4.ip_forward`: off by default, as in Linux.
    pub ip_forward: bool,
    /// `net.ipv4.conf.all.rp_filter`.
    pub rp_filter: RpFilter,
    /// `net.ipv4.conf.all.send_redirects`: on by default, as in Linux.
    pub send_redirects: bool,
    /// `net.ipv4.conf.all.shared_media` (RFC 1620): on by default, as in Linux. When
    /// off, a redirect is sent only if the sender and the new gateway share a subnet of
    /// the device (`inet_addr_onlink`).
    pub shared_media: bool,
    /// `net.ipv4.ip_forward_update_priority`: a forwarded packet's `skb->priority` (its
    /// pfifo_fast band) comes from its TOS (`rt_tos2priority`). On by default, as in
    /// Linux.
    pub ip_fwd_update_priority: bool,
}

impl Default for Ipv4Conf {
    fn default() -> Self {
        Ipv4Conf {
            ip_forward: false,
            rp_filter: RpFilter::Off,
            send_redirects: true,
            shared_media: true,
            ip_fwd_update_priority: true,
        }
    }
}

/// The result of a route lookup (`struct rtable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtable {
    pub rtype: RouteType,
    /// The device the packet leaves by (`dst->dev`); for a local route, the device
    /// holding the address (delivery goes through loopback).
    pub dev: DeviceId,
    /// The address to resolve on the link: the gateway, or the destination itself.
    pub nexthop: Ipv4Addr,
    /// Source address for packets we originate on this route.
    pub src: Ipv4Addr,
    /// Path MTU (the device MTU until PMTU discovery lands).
    pub mtu: usize,
    /// Whether the next hop is a gateway (`rt_uses_gateway`), not the destination.
    pub gateway: bool,
}

/// `sk_dst_cache`: a socket's route to one destination, trusted while the FIB
/// generation it was looked up under is current (`__sk_dst_check`); any route, address
/// or MTU change bumps the generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DstCache {
    dst: Ipv4Addr,
    rt: Rtable,
    generation: u64,
}

impl DstCache {
    pub fn new(dst: Ipv4Addr, rt: Rtable, generation: u64) -> DstCache {
        DstCache {
            dst,
            rt,
            generation,
        }
    }

    /// The cached route, if it is for `dst` and the FIB is still at `generation`.
    pub fn check(&self, dst: Ipv4Addr, generation: u64) -> Option<Rtable> {
        (self.dst == dst && self.generation == generation).then_some(self.rt)
    }
}

/// Why a packet could not be sent; each maps to the errno Linux returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No route (ENETUNREACH).
    NetUnreachable,
    /// Route says unreachable (EHOSTUNREACH).
    HostUnreachable,
    /// Larger than the path allows with DF, or than an IPv4 datagram (EMSGSIZE).
    MessageTooLong,
    /// Dropped by a LOCAL_OUT or POST_ROUTING rule (EPERM).
    PermissionDenied,
    /// A queue was full (ENOBUFS).
    NoBufferSpace,
    /// The socket handle does not exist (EBADF).
    BadSocket,
    /// An argument is not acceptable (EINVAL).
    InvalidInput,
    /// The port (and address) is taken (EADDRINUSE).
    AddrInUse,
    /// Not one of our addresses (EADDRNOTAVAIL).
    AddrNotAvailable,
    /// No destination and not connected (EDESTADDRREQ).
    DestAddrRequired,
    /// The send buffer is full; try again when it drains (EAGAIN).
    WouldBlock,
    /// The peer answered port unreachable (ECONNREFUSED).
    ConnectionRefused,
    /// Broadcast without SO_BROADCAST (EACCES).
    AccessDenied,
    /// Not connected (ENOTCONN).
    NotConnected,
    /// Writing after shutdown or after the peer reset (EPIPE).
    BrokenPipe,
    /// The peer reset the connection (ECONNRESET).
    ConnectionReset,
    /// Retransmissions gave up (ETIMEDOUT).
    TimedOut,
}

impl SendError {
    /// The Linux errno of this error.
    pub fn errno(self) -> i32 {
        match self {
            SendError::NetUnreachable => 101,
            SendError::HostUnreachable => 113,
            SendError::MessageTooLong => 90,
            SendError::PermissionDenied => 1,
            SendError::NoBufferSpace => 105,
            SendError::BadSocket => 9,
            SendError::InvalidInput => 22,
            SendError::AddrInUse => 98,
            SendError::AddrNotAvailable => 99,
            SendError::DestAddrRequired => 89,
            SendError::WouldBlock => 11,
            SendError::ConnectionRefused => 111,
            SendError::AccessDenied => 13,
            SendError::NotConnected => 107,
            SendError::BrokenPipe => 32,
            SendError::ConnectionReset => 104,
            SendError::TimedOut => 110,
        }
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        // The same error a Linux socket call returns, so `kind()` and the message
        // match what users see from std/tokio sockets.
        io::Error::from_raw_os_error(e.errno())
    }
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&io::Error::from(*self), f)
    }
}

impl std::error::Error for SendError {}

/// Header fields for `ip_queue_xmit`.
#[derive(Clone, Copy, Debug)]
pub struct IpParams {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub tos: u8,
    pub ttl: u8,
    pub dont_frag: bool,
}
