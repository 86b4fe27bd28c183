//! UDP (RFC 768), after net/ipv4/udp.c: `udp_sendmsg` with corking (`ip_append_data`
//! semantics) and a per-socket route cache, `udp_rcv` with the kernel's lookup scoring
//! (a connected 4-tuple beats a wildcard bind), a receive queue bounded in bytes
//! (`sk_rcvbuf`), `udp_err` turning ICMP errors into `sk_err` on connected sockets, and
//! RFC 6056 ephemeral ports.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::ipv4::route::RouteType;
use crate::ipv4::{DstCache, IpParams, SendError, DEFAULT_TTL};
use crate::skb::{IpSummed, SendBuffer, Skb, WmemCounter};
use crate::sock::Sock;
use crate::stack::{Event, SocketId, Stack};
use crate::time::Instant;
use crate::wire::icmpv4::{msg_type, unreach_code};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::udp::{self, UdpPacket, UdpRepr};

/// Largest UDP payload in one IPv4 datagram: 65535 - 20 - 8.
pub const MAX_PAYLOAD: usize = 65507;
/// `net.core.rmem_default` / `wmem_default`.
pub const DEFAULT_RCVBUF: usize = 212_992;
pub const DEFAULT_SNDBUF: usize = 212_992;
/// `net.ipv4.ip_local_port_range`.
pub const EPHEMERAL_LOW: u16 = 32768;
pub const EPHEMERAL_HIGH: u16 = 60999;

/// A received datagram: `skb.data()` is the payload.
#[derive(Debug)]
pub struct UdpDatagram {
    /// The sender.
    pub from: SocketAddrV4,
    /// The address it was sent to (ours, or a broadcast address).
    pub to: Ipv4Addr,
    pub skb: Skb,
}

impl UdpDatagram {
    pub fn payload(&self) -> &[u8] {
        self.skb.data()
    }
}

/// Data appended while corked, sent as one datagram on uncork (`udp_push_pending_frames`).
#[derive(Debug)]
struct Cork {
    dst: SocketAddrV4,
    data: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct UdpSock {
    local: Option<SocketAddrV4>,
    peer: Option<SocketAddrV4>,
    reuseaddr: bool,
    broadcast: bool,
    rcvbuf: usize,
    /// Bytes (truesize) in the receive queue (`sk_rmem_alloc`).
    rmem: usize,
    rcvq: VecDeque<UdpDatagram>,
    wmem: WmemCounter,
    /// `sk_err`: reported once by the next call.
    err: Option<SendError>,
    cork: bool,
    pending: Option<Cork>,
    signalled: bool,
    /// `sk_dst_cache` for the connected peer, valid while the FIB generation matches.
    dst_cache: Option<DstCache>,
    drops: u64,
}

/// The UDP socket hash: sockets by local port (`udp_table`).
#[derive(Debug, Default)]
pub struct UdpTable {
    ports: HashMap<u16, Vec<usize>>,
}

impl UdpTable {
    pub fn bound_ports(&self) -> usize {
        self.ports.len()
    }
}

fn addrs_overlap(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// `compute_score`: how well socket `s` matches a datagram, `None` if it does not.
fn compute_score(s: &UdpSock, saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr) -> Option<u32> {
    let local = s.local?;
    let mut score = 1;
    if !local.ip().is_unspecified() {
        if *local.ip() != daddr {
            return None;
        }
        score += 4;
    }
    if let Some(peer) = s.peer {
        if *peer.ip() != saddr || peer.port() != sport {
            return None;
        }
        score += 8;
    }
    Some(score)
}

impl Stack {
    /// A new, unbound UDP socket.
    pub fn udp_socket(&mut self) -> SocketId {
        let key = self.sk.socks.insert(Sock::Udp(Box::new(UdpSock {
            local: None,
            peer: None,
            reuseaddr: false,
            broadcast: false,
            rcvbuf: DEFAULT_RCVBUF,
            rmem: 0,
            rcvq: VecDeque::new(),
            wmem: SendBuffer::new(DEFAULT_SNDBUF),
            err: None,
            cork: false,
            pending: None,
            signalled: false,
            dst_cache: None,
            drops: 0,
        })));
        SocketId(key)
    }

    /// `inet_bind` + `udp_v4_get_port`: port 0 picks an ephemeral port.
    pub fn udp_bind(
        &mut self,
        id: SocketId,
        addr: SocketAddrV4,
    ) -> Result<SocketAddrV4, SendError> {
        let s = self.udp_sock(id).ok_or(SendError::BadSocket)?;
        if s.local.is_some() {
            return Err(SendError::InvalidInput);
        }
        let ip = *addr.ip();
        if !(ip.is_unspecified()
            || self.ipv4.fib.is_local(ip)
            || self.ipv4.fib.is_broadcast(ip)
            || ip.is_multicast())
        {
            return Err(SendError::AddrNotAvailable);
        }
        let port = if addr.port() == 0 {
            self.udp_ephemeral_port(ip, s.reuseaddr)?
        } else {
            if self.udp_port_conflict(addr.port(), ip, s.reuseaddr) {
                return Err(SendError::AddrInUse);
            }
            addr.port()
        };
        let local = SocketAddrV4::new(ip, port);
        self.udp_sock_mut(id).expect("checked").local = Some(local);
        self.sk.udp.ports.entry(port).or_default().push(id.0);
        Ok(local)
    }

    fn udp_port_conflict(&self, port: u16, ip: Ipv4Addr, reuse: bool) -> bool {
        let Some(keys) = self.sk.udp.ports.get(&port) else {
            return false;
        };
        keys.iter().any(|&k| {
            let Some(Sock::Udp(o)) = self.sk.socks.get(k) else {
                return false;
            };
            let oip = *o.local.expect("hashed sockets are bound").ip();
            addrs_overlap(ip, oip) && !(reuse && o.reuseaddr)
        })
    }

    /// RFC 6056 section 3.3.1 (Algorithm 1): start at a random port in the range and
    /// take the next free one, so ports are hard to guess but every free one is found.
    fn udp_ephemeral_port(&mut self, ip: Ipv4Addr, reuse: bool) -> Result<u16, SendError> {
        let count = u32::from(EPHEMERAL_HIGH - EPHEMERAL_LOW) + 1;
        let start = self.rng.next_u32() % count;
        for i in 0..count {
            let port = EPHEMERAL_LOW + ((start + i) % count) as u16;
            if !self.udp_port_conflict(port, ip, reuse) {
                return Ok(port);
            }
        }
        Err(SendError::AddrInUse)
    }

    fn udp_autobind(&mut self, id: SocketId) -> Result<SocketAddrV4, SendError> {
        match self.udp_sock(id).ok_or(SendError::BadSocket)?.local {
            Some(l) => Ok(l),
            None => self.udp_bind(id, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    /// `ip4_datagram_connect`: fix the peer (and the source address, from the route).
    pub fn udp_connect(
        &mut self,
        id: SocketId,
        peer: SocketAddrV4,
    ) -> Result<SocketAddrV4, SendError> {
        self.udp_sock(id).ok_or(SendError::BadSocket)?;
        let rt = self.ip_route_output(*peer.ip())?;
        if rt.rtype == RouteType::Broadcast && !self.udp_sock(id).expect("checked").broadcast {
            return Err(SendError::AccessDenied);
        }
        let local = self.udp_autobind(id)?;
        let gen = self.ipv4.fib.generation();
        let s = self.udp_sock_mut(id).expect("checked");
        s.peer = Some(peer);
        s.dst_cache = Some(DstCache::new(*peer.ip(), rt, gen));
        Ok(if local.ip().is_unspecified() {
            SocketAddrV4::new(rt.src, local.port())
        } else {
            local
        })
    }

    /// `udp_disconnect` (connect to AF_UNSPEC): forget the peer.
    pub fn udp_disconnect(&mut self, id: SocketId) -> Result<(), SendError> {
        let s = self.udp_sock_mut(id).ok_or(SendError::BadSocket)?;
        s.peer = None;
        s.dst_cache = None;
        Ok(())
    }

    pub fn udp_local_addr(&self, id: SocketId) -> Option<SocketAddrV4> {
        self.udp_sock(id)?.local
    }

    pub fn udp_peer_addr(&self, id: SocketId) -> Option<SocketAddrV4> {
        self.udp_sock(id)?.peer
    }

    /// SO_REUSEADDR: share a port with other sockets that set it too (before bind).
    pub fn udp_set_reuseaddr(&mut self, id: SocketId, on: bool) -> Result<(), SendError> {
        self.udp_sock_mut(id).ok_or(SendError::BadSocket)?.reuseaddr = on;
        Ok(())
    }

    /// SO_BROADCAST: allow sending to broadcast addresses.
    pub fn udp_set_broadcast(&mut self, id: SocketId, on: bool) -> Result<(), SendError> {
        self.udp_sock_mut(id).ok_or(SendError::BadSocket)?.broadcast = on;
        Ok(())
    }

    /// SO_RCVBUF, in bytes of buffer (truesize) like Linux's accounting.
    pub fn udp_set_rcvbuf(&mut self, id: SocketId, bytes: usize) -> Result<(), SendError> {
        self.udp_sock_mut(id).ok_or(SendError::BadSocket)?.rcvbuf = bytes.max(2048);
        Ok(())
    }

    /// SO_SNDBUF.
    pub fn udp_set_sndbuf(&mut self, id: SocketId, bytes: usize) -> Result<(), SendError> {
        let s = self.udp_sock(id).ok_or(SendError::BadSocket)?;
        s.wmem.set_limit(bytes.max(2048));
        Ok(())
    }

    /// The socket's send buffer, for a driver to wait on room.
    pub fn udp_send_buffer(&self, id: SocketId) -> Option<WmemCounter> {
        Some(self.udp_sock(id)?.wmem.clone())
    }

    /// Datagrams the socket dropped because its receive buffer was full.
    pub fn udp_drops(&self, id: SocketId) -> u64 {
        self.udp_sock(id).map_or(0, |s| s.drops)
    }

    /// UDP_CORK: while on, sends are appended into one pending datagram; turning it off
    /// sends it (`udp_push_pending_frames`).
    pub fn udp_set_cork(&mut self, now: Instant, id: SocketId, on: bool) -> Result<(), SendError> {
        self.now = now;
        let s = self.udp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if !on && s.pending.is_some() && !s.wmem.has_room() {
            // Keep the corked datagram and the cork until it can be sent.
            return Err(SendError::WouldBlock);
        }
        s.cork = on;
        if !on {
            if let Some(cork) = s.pending.take() {
                self.udp_send_skb(id, cork.dst, &cork.data)?;
                self.process_backlog();
            }
        }
        Ok(())
    }

    pub fn udp_close(&mut self, id: SocketId) {
        let Some(s) = self.udp_sock(id) else { return };
        if let Some(local) = s.local {
            if let Some(keys) = self.sk.udp.ports.get_mut(&local.port()) {
                keys.retain(|&k| k != id.0);
                if keys.is_empty() {
                    self.sk.udp.ports.remove(&local.port());
                }
            }
        }
        self.sk.socks.remove(id.0);
    }

    /// `udp_sendmsg`: send `data` to `dst` (or the connected peer). With `more`
    /// (MSG_MORE) or UDP_CORK on, the data is appended to a pending datagram instead.
    /// `Err(WouldBlock)` when the send buffer is full: wait on
    /// [`Stack::udp_send_buffer`] and retry.
    #[tracing::instrument(level = "trace", name = "udp_sendmsg", skip_all)]
    pub fn udp_sendmsg(
        &mut self,
        now: Instant,
        id: SocketId,
        dst: Option<SocketAddrV4>,
        data: &[u8],
        more: bool,
    ) -> Result<usize, SendError> {
        self.now = now;
        let s = self.udp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if let Some(e) = s.err.take() {
            return Err(e);
        }
        let corked = s.cork || more;
        if !corked && !s.wmem.has_room() {
            // Refuse before touching anything, so a retry sends exactly this data once.
            self.snmp.udp.sndbuf_errors += 1;
            return Err(SendError::WouldBlock);
        }
        if let Some(cork) = s.pending.as_mut() {
            // ip_append_data: a corked datagram keeps its first destination.
            if cork.data.len() + data.len() > MAX_PAYLOAD {
                s.pending = None;
                return Err(SendError::MessageTooLong);
            }
            cork.data.extend_from_slice(data);
            if corked {
                return Ok(data.len());
            }
            let cork = s.pending.take().expect("present");
            self.udp_send_skb(id, cork.dst, &cork.data)?;
            self.process_backlog();
            return Ok(data.len());
        }
        let dst = dst.or(s.peer).ok_or(SendError::DestAddrRequired)?;
        if dst.port() == 0 {
            return Err(SendError::InvalidInput);
        }
        if data.len() > MAX_PAYLOAD {
            return Err(SendError::MessageTooLong);
        }
        self.udp_autobind(id)?;
        if corked {
            let s = self.udp_sock_mut(id).expect("checked");
            s.pending = Some(Cork {
                dst,
                data: data.to_vec(),
            });
            return Ok(data.len());
        }
        let res = self.udp_send_skb(id, dst, data);
        self.process_backlog();
        res.map(|()| data.len())
    }

    /// `udp_send_skb`: route (cached for the connected peer), build header and checksum,
    /// charge the send buffer, hand to `ip_queue_xmit`.
    fn udp_send_skb(
        &mut self,
        id: SocketId,
        dst: SocketAddrV4,
        data: &[u8],
    ) -> Result<(), SendError> {
        let gen = self.ipv4.fib.generation();
        let s = self.udp_sock(id).ok_or(SendError::BadSocket)?;
        if !s.wmem.has_room() {
            self.snmp.udp.sndbuf_errors += 1;
            return Err(SendError::WouldBlock);
        }
        let local = s.local.expect("autobound");
        let (broadcast_ok, cached) = (s.broadcast, s.dst_cache);
        let rt = match cached.and_then(|c| c.check(*dst.ip(), gen)) {
            Some(rt) => rt,
            None => {
                let rt = self.ip_route_output(*dst.ip())?;
                let s = self.udp_sock_mut(id).expect("checked");
                if s.peer.is_some_and(|p| p.ip() == dst.ip()) {
                    s.dst_cache = Some(DstCache::new(*dst.ip(), rt, gen));
                }
                rt
            }
        };
        if rt.rtype == RouteType::Broadcast && !broadcast_ok {
            return Err(SendError::AccessDenied);
        }
        let src = if local.ip().is_unspecified() {
            rt.src
        } else {
            *local.ip()
        };
        let len = udp::HEADER_LEN + data.len();
        let mut skb = self.pool.alloc_tx(len);
        let buf = skb.put(len);
        buf[udp::HEADER_LEN..].copy_from_slice(data);
        UdpRepr {
            src_port: local.port(),
            dst_port: dst.port(),
        }
        .emit(buf, data.len(), src, *dst.ip());
        skb.reset_transport_header();
        skb.set_owner_w(&self.udp_sock(id).expect("checked").wmem);
        // IP_PMTUDISC_WANT, Linux's default: DF when it fits, fragments when it does not.
        let params = IpParams {
            src,
            dst: *dst.ip(),
            protocol: ipv4::protocol::UDP,
            tos: 0,
            ttl: DEFAULT_TTL,
            dont_frag: len + ipv4::MIN_HEADER_LEN <= rt.mtu,
        };
        match self.ip_queue_xmit(skb, &rt, params) {
            Ok(()) => {
                self.snmp.udp.out_datagrams += 1;
                Ok(())
            }
            // A full queue below us is a drop the sender is not told about, as Linux's
            // udp_send_skb does without IP_RECVERR: counted, and the call succeeds.
            Err(SendError::NoBufferSpace) => {
                self.snmp.udp.sndbuf_errors += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `udp_recvmsg`: the next datagram, or the pending socket error (once).
    /// `Ok(None)` when nothing is queued. `peek` leaves it queued (MSG_PEEK).
    pub fn udp_recvmsg(
        &mut self,
        id: SocketId,
        peek: bool,
    ) -> Result<Option<UdpDatagram>, SendError> {
        let s = self.udp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if let Some(e) = s.err.take() {
            return Err(e);
        }
        let d = if peek {
            s.rcvq.front().map(|d| UdpDatagram {
                from: d.from,
                to: d.to,
                skb: d.skb.clone(),
            })
        } else {
            let d = s.rcvq.pop_front();
            if let Some(d) = &d {
                s.rmem -= d.skb.end();
            }
            d
        };
        if s.rcvq.is_empty() {
            s.signalled = false;
        }
        if d.is_some() && !peek {
            // Linux counts InDatagrams when the application reads (udp_recvmsg).
            self.snmp.udp.in_datagrams += 1;
        }
        Ok(d)
    }

    /// Datagrams waiting in the socket's receive queue.
    pub fn udp_rcvq_len(&self, id: SocketId) -> usize {
        self.udp_sock(id).map_or(0, |s| s.rcvq.len())
    }

    /// `__udp4_lib_lookup`: the best-scoring socket for a datagram.
    fn udp_lookup(
        &self,
        saddr: Ipv4Addr,
        sport: u16,
        daddr: Ipv4Addr,
        dport: u16,
    ) -> Option<usize> {
        let keys = self.sk.udp.ports.get(&dport)?;
        let mut best: Option<(u32, usize)> = None;
        for &k in keys {
            let Some(Sock::Udp(s)) = self.sk.socks.get(k) else {
                continue;
            };
            if let Some(score) = compute_score(s, saddr, sport, daddr) {
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, k));
                }
            }
        }
        best.map(|(_, k)| k)
    }

    /// `udp_rcv` / `__udp4_lib_rcv`: `data` at the UDP header, network header set.
    #[tracing::instrument(level = "trace", name = "udp_rcv", skip_all)]
    pub(crate) fn udp_rcv(&mut self, mut skb: Skb, broadcast: bool) {
        let Some((saddr, daddr)) = skb
            .network_header()
            .and_then(|h| Ipv4Packet::new_checked(h).ok())
            .map(|ip| (ip.src(), ip.dst()))
        else {
            return;
        };
        let (sport, dport, ulen) = match UdpPacket::new_checked(skb.data()) {
            Ok(p) => {
                // As tcp_v4_rcv: DATA_VALID or CHECKSUM_PARTIAL needs no software check.
                if skb.ip_summed == IpSummed::None && !p.verify_checksum(saddr, daddr) {
                    self.snmp.udp.in_csum_errors += 1;
                    self.snmp.udp.in_errors += 1;
                    tracing::trace!("drop: bad UDP checksum");
                    return;
                }
                (p.src_port(), p.dst_port(), usize::from(p.len()))
            }
            Err(_) => {
                // Shorter than its header, or a length field beyond the IP payload
                // ("short_packet" in __udp4_lib_rcv).
                self.snmp.udp.in_errors += 1;
                tracing::trace!("drop: bad UDP length");
                return;
            }
        };
        // The UDP length may be shorter than the IP payload: trailing bytes are not ours.
        skb.trim(ulen);
        let from = SocketAddrV4::new(saddr, sport);
        if broadcast {
            // __udp4_lib_mcast_deliver: every matching socket gets a copy.
            let keys: Vec<usize> = self
                .sk
                .udp
                .ports
                .get(&dport)
                .map(|k| {
                    k.iter()
                        .copied()
                        .filter(|&k| match self.sk.socks.get(k) {
                            Some(Sock::Udp(s)) => {
                                s.local
                                    .is_some_and(|l| l.ip().is_unspecified() || *l.ip() == daddr)
                                    && s.peer.is_none_or(|p| p == from)
                            }
                            _ => false,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                self.snmp.udp.no_ports += 1;
                return;
            }
            if skb.pull(udp::HEADER_LEN).is_err() {
                return;
            }
            for k in keys {
                self.udp_queue_rcv_skb(SocketId(k), from, daddr, skb.clone());
            }
            return;
        }
        let Some(k) = self.udp_lookup(saddr, sport, daddr, dport) else {
            self.snmp.udp.no_ports += 1;
            // RFC 1122 4.1.3.1: port unreachable when no socket listens.
            self.icmp_send(&skb, msg_type::DST_UNREACHABLE, unreach_code::PORT, 0);
            return;
        };
        if skb.pull(udp::HEADER_LEN).is_err() {
            return;
        }
        self.udp_queue_rcv_skb(SocketId(k), from, daddr, skb);
    }

    /// `__udp_queue_rcv_skb`: charge the receive buffer or drop.
    fn udp_queue_rcv_skb(&mut self, id: SocketId, from: SocketAddrV4, to: Ipv4Addr, skb: Skb) {
        let Some(s) = self.udp_sock_mut(id) else {
            return;
        };
        let truesize = skb.end();
        if s.rmem + truesize > s.rcvbuf {
            s.drops += 1;
            self.snmp.udp.rcvbuf_errors += 1;
            self.snmp.udp.in_errors += 1;
            tracing::trace!("drop: receive buffer full");
            return;
        }
        s.rmem += truesize;
        s.rcvq.push_back(UdpDatagram { from, to, skb });
        if !s.signalled {
            s.signalled = true;
            self.sk.events.push_back(Event::Readable(id));
        }
    }

    /// `__udp4_lib_err`: an ICMP error quoting a datagram we sent from `local` to
    /// `remote`. As in Linux without IP_RECVERR, only hard errors (port or protocol
    /// unreachable, RFC 1122 4.1.3.3) on connected sockets become `sk_err`.
    pub(crate) fn udp_err(&mut self, local: SocketAddrV4, remote: SocketAddrV4, t: u8, code: u8) {
        let Some(k) = self.udp_lookup(*remote.ip(), remote.port(), *local.ip(), local.port())
        else {
            return;
        };
        let id = SocketId(k);
        let Some(s) = self.udp_sock_mut(id) else {
            return;
        };
        if s.peer.is_none() {
            return;
        }
        let err = match (t, code) {
            (msg_type::DST_UNREACHABLE, unreach_code::PORT | unreach_code::PROTOCOL) => {
                SendError::ConnectionRefused
            }
            _ => return,
        };
        s.err = Some(err);
        if !s.signalled {
            s.signalled = true;
            self.sk.events.push_back(Event::Readable(id));
        }
    }
}
