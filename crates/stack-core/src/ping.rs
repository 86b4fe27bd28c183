//! ICMP echo ("ping") sockets, after Linux's unprivileged `SOCK_DGRAM`/`IPPROTO_ICMP`
//! sockets (net/ipv4/ping.c): a socket owns an echo identifier, `ping_sendmsg` sends
//! echo requests with it, `ping_rcv` queues the matching replies, `ping_err` queues the
//! ICMP errors about its requests.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Ipv4Addr;

use crate::ipv4::{IpParams, SendError, DEFAULT_TTL};
use crate::skb::Skb;
use crate::sock::Sock;
use crate::stack::{Event, SocketId, Stack};
use crate::time::Instant;
use crate::wire::icmpv4::{self, msg_type, unreach_code, Icmpv4Packet, Icmpv4Repr};
use crate::wire::ipv4::{self, Ipv4Packet};

/// Messages a ping socket keeps before dropping new ones (its receive buffer).
pub const PING_RCVQ_LEN: usize = 256;

/// What a ping socket receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingMsg {
    /// Who answered: the echoing host, or the host reporting an error.
    pub from: Ipv4Addr,
    pub ident: u16,
    pub seq: u16,
    /// TTL of the reply (0 for errors).
    pub ttl: u8,
    /// Echoed data (empty for errors).
    pub payload: Vec<u8>,
    pub kind: PingMsgKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingMsgKind {
    EchoReply,
    /// An ICMP error about one of our requests.
    Error {
        icmp_type: u8,
        icmp_code: u8,
    },
}

impl PingMsgKind {
    /// The error a socket call would report for it (`icmp_err_convert`), if any.
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match *self {
            PingMsgKind::EchoReply => None,
            PingMsgKind::Error {
                icmp_type: msg_type::DST_UNREACHABLE,
                icmp_code,
            } => Some(match icmp_code {
                unreach_code::NET | unreach_code::NET_UNKNOWN => io::ErrorKind::NetworkUnreachable,
                unreach_code::PORT | unreach_code::PROTOCOL => io::ErrorKind::ConnectionRefused,
                unreach_code::FRAG_NEEDED => io::ErrorKind::InvalidInput,
                _ => io::ErrorKind::HostUnreachable,
            }),
            PingMsgKind::Error { .. } => Some(io::ErrorKind::HostUnreachable),
        }
    }

    /// ping(8)'s wording for an error.
    pub fn describe(&self) -> &'static str {
        match *self {
            PingMsgKind::EchoReply => "Echo Reply",
            PingMsgKind::Error {
                icmp_type,
                icmp_code,
            } => match (icmp_type, icmp_code) {
                (msg_type::DST_UNREACHABLE, unreach_code::NET) => "Destination Net Unreachable",
                (msg_type::DST_UNREACHABLE, unreach_code::HOST) => "Destination Host Unreachable",
                (msg_type::DST_UNREACHABLE, unreach_code::PROTOCOL) => {
                    "Destination Protocol Unreachable"
                }
                (msg_type::DST_UNREACHABLE, unreach_code::PORT) => "Destination Port Unreachable",
                (msg_type::DST_UNREACHABLE, unreach_code::FRAG_NEEDED) => "Frag needed",
                (msg_type::DST_UNREACHABLE, _) => "Destination Unreachable",
                (msg_type::TIME_EXCEEDED, 0) => "Time to live exceeded",
                (msg_type::TIME_EXCEEDED, _) => "Frag reassembly time exceeded",
                (msg_type::PARAM_PROBLEM, _) => "Parameter problem",
                _ => "ICMP error",
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct PingSock {
    ident: u16,
    rcvq: VecDeque<PingMsg>,
    /// A Readable event is outstanding (cleared when the queue is drained).
    signalled: bool,
    drops: u64,
}

/// Ping sockets by echo identifier (the sockets themselves are in the socket table).
#[derive(Debug, Default)]
pub struct PingTable {
    by_ident: HashMap<u16, usize>,
}

impl PingTable {
    pub fn len(&self) -> usize {
        self.by_ident.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ident.is_empty()
    }
}

impl Stack {
    /// Open a ping socket with a random, unused identifier.
    pub fn ping_open(&mut self) -> SocketId {
        let ident = loop {
            let candidate = self.rng.next_u32() as u16;
            if !self.sk.ping.by_ident.contains_key(&candidate) {
                break candidate;
            }
        };
        let key = self.sk.socks.insert(Sock::Ping(PingSock {
            ident,
            rcvq: VecDeque::new(),
            signalled: false,
            drops: 0,
        }));
        self.sk.ping.by_ident.insert(ident, key);
        SocketId(key)
    }

    pub fn ping_ident(&self, id: SocketId) -> Option<u16> {
        self.ping_sock(id).map(|s| s.ident)
    }

    /// Messages the socket dropped because its queue was full.
    pub fn ping_drops(&self, id: SocketId) -> u64 {
        self.ping_sock(id).map_or(0, |s| s.drops)
    }

    pub fn ping_close(&mut self, id: SocketId) {
        if let Some(ident) = self.ping_ident(id) {
            self.sk.socks.remove(id.0);
            self.sk.ping.by_ident.remove(&ident);
        }
    }

    /// `ping_v4_sendmsg`: send one echo request (RFC 792) with the socket's identifier.
    #[tracing::instrument(level = "trace", name = "ping_sendmsg", skip_all)]
    pub fn ping_sendmsg(
        &mut self,
        now: Instant,
        id: SocketId,
        dst: Ipv4Addr,
        seq: u16,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.now = now;
        let ident = self.ping_ident(id).ok_or(SendError::BadSocket)?;
        if dst.is_unspecified() {
            return Err(SendError::InvalidInput);
        }
        let rt = self.ip_route_output(dst)?;
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq,
            data: payload,
        };
        let len = repr.buffer_len();
        if len + ipv4::MIN_HEADER_LEN > crate::ipv4::output::IP_MAX_PACKET {
            return Err(SendError::MessageTooLong);
        }
        let mut skb = self.pool.alloc_tx(len);
        repr.emit(skb.put(len));
        skb.reset_transport_header();
        let params = IpParams {
            src: rt.src,
            dst,
            protocol: ipv4::protocol::ICMP,
            tos: 0,
            ttl: DEFAULT_TTL,
            // IP_PMTUDISC_WANT: DF when it fits, fragmented when it does not.
            dont_frag: len + ipv4::MIN_HEADER_LEN <= rt.mtu,
        };
        let res = self.ip_queue_xmit(skb, &rt, params);
        if res.is_ok() {
            self.snmp.icmp.out_msgs += 1;
            self.snmp.icmp.out_echos += 1;
        } else {
            self.snmp.icmp.out_errors += 1;
        }
        self.process_backlog();
        res
    }

    /// The next message for the socket (`ping_recvmsg`).
    pub fn ping_recvmsg(&mut self, id: SocketId) -> Option<PingMsg> {
        let s = self.ping_sock_mut(id)?;
        let msg = s.rcvq.pop_front();
        if s.rcvq.is_empty() {
            s.signalled = false;
        }
        msg
    }

    /// `ping_rcv`: an echo reply; `data` at the ICMP header.
    #[tracing::instrument(level = "trace", name = "ping_rcv", skip_all)]
    pub(crate) fn ping_rcv(&mut self, skb: &Skb) {
        let Ok(p) = Icmpv4Packet::new_checked(skb.data()) else {
            return;
        };
        let Some(ip) = skb
            .network_header()
            .and_then(|h| Ipv4Packet::new_checked(h).ok())
        else {
            return;
        };
        let ident = p.echo_ident();
        let msg = PingMsg {
            from: ip.src(),
            ident,
            seq: p.echo_seq(),
            ttl: ip.ttl(),
            payload: p.payload().to_vec(),
            kind: PingMsgKind::EchoReply,
        };
        self.ping_queue(ident, msg);
    }

    /// `ping_err`: an ICMP error quoting one of our echo requests.
    #[tracing::instrument(level = "trace", name = "ping_err", skip_all)]
    pub(crate) fn ping_err(
        &mut self,
        from: Ipv4Addr,
        _orig_dst: Ipv4Addr,
        ident: u16,
        seq: u16,
        icmp_type: u8,
        icmp_code: u8,
    ) {
        let msg = PingMsg {
            from,
            ident,
            seq,
            ttl: 0,
            payload: Vec::new(),
            kind: PingMsgKind::Error {
                icmp_type,
                icmp_code,
            },
        };
        self.ping_queue(ident, msg);
    }

    fn ping_queue(&mut self, ident: u16, msg: PingMsg) {
        let Some(&key) = self.sk.ping.by_ident.get(&ident) else {
            tracing::trace!(ident, "drop: no ping socket for identifier");
            return;
        };
        let Some(s) = self.ping_sock_mut(SocketId(key)) else {
            return;
        };
        if s.rcvq.len() >= PING_RCVQ_LEN {
            s.drops += 1;
            return;
        }
        s.rcvq.push_back(msg);
        if !s.signalled {
            s.signalled = true;
            self.sk.events.push_back(Event::Readable(SocketId(key)));
        }
    }
}

/// Length of an echo request with `payload` bytes of data.
pub fn echo_len(payload: usize) -> usize {
    icmpv4::HEADER_LEN + payload
}
