//! TCP (RFC 9293), after net/ipv4/tcp*.c. This module holds the socket (`struct
//! tcp_sock`), the connection tables (`inet_hashinfo`: established hash and listening
//! hash) and the socket calls; `input` is `tcp_v4_rcv` and the state machine, `output`
//! is `tcp_sendmsg` / `tcp_write_xmit` / `tcp_transmit_skb`, `timer` the retransmission,
//! delayed-ACK, persist and TIME_WAIT timers, `cong` the congestion control.
//!
//! Sequence numbers are compared modulo 2^32 ([`seq_lt`] and friends, RFC 9293 3.4).

mod cong;
mod input;
mod isn;
mod output;
mod syncookies;
mod timer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use cong::CongState;
pub use cong::CongestionControl;

use crate::ipv4::SendError;
use crate::skb::Skb;
use crate::sock::Sock;
use crate::stack::{Event, SocketId, Stack};
use crate::time::{Duration, Instant};

/// Connection states (RFC 9293 section 3.3.2; Linux `TCP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    Closed,
    Listen,
    SynSent,
    SynRecv,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

/// Which halves `tcp_shutdown` closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// `a < b` in sequence space.
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

pub fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

pub fn seq_ge(a: u32, b: u32) -> bool {
    seq_le(b, a)
}

/// Default MSS when the peer sends none (RFC 9293 3.7.1: 536).
pub const DEFAULT_MSS: u16 = 536;
/// Initial window in segments (RFC 6928).
pub const INIT_CWND: u32 = 10;
/// Socket buffer defaults. Linux autotunes up to `tcp_rmem[2]`/`tcp_wmem[2]`; we start at
/// sizes that fill a fast local link. The receive side is larger: the window must cover
/// not only the path's RTT but the times the stack thread is not scheduled, which on a
/// busy CPU can be a millisecond. With 1 MiB a kernel sender was window-limited 25% of
/// a bulk transfer here (`ss -ti`: rwnd_limited), with 4 MiB 13%, and the rate rose
/// from 9.0 to 10.5 Gb/s. It is a limit, not an allocation: a connection holds what the
/// peer sent and the application has not read.
pub const DEFAULT_SNDBUF: usize = 1 << 20;
pub const DEFAULT_RCVBUF: usize = 4 << 20;
/// `tcp_fin_timeout` and TIME_WAIT length (`TCP_TIMEWAIT_LEN`).
pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
pub const TIME_WAIT_LEN: Duration = Duration::from_secs(60);
/// `tcp_retries2` and `tcp_syn_retries`.
pub const RETRIES2: u32 = 15;
pub const SYN_RETRIES: u32 = 6;
/// Most SYN_RECV children a listener keeps (`tcp_max_syn_backlog`).
pub const MAX_SYN_BACKLOG: usize = 256;

/// One segment of the write queue: `skb.data()` is its payload; SYN and FIN each take
/// one sequence number (`TCP_SKB_CB`).
#[derive(Debug)]
pub(crate) struct TxSeg {
    pub seq: u32,
    pub end_seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub skb: Skb,
    /// First transmission time, for RTT samples (Karn: none once retransmitted).
    pub sent: Option<Instant>,
    pub retransmitted: bool,
    /// Marked lost (RTO or fast retransmit) and not yet retransmitted.
    pub lost: bool,
    /// Covered by a SACK block from the peer (RFC 2018).
    pub sacked: bool,
    /// Time of the latest transmission (RACK's `xmit_ts`, RFC 8985).
    pub xmit_at: Option<Instant>,
    /// Order of the latest transmission among all of the socket's: RACK's "sent
    /// after", exact even when several segments leave in the same clock tick.
    pub xmit_order: u64,
}

impl TxSeg {
    /// A data segment at `seq` holding `skb`'s bytes, not sent yet.
    pub(crate) fn new(seq: u32, skb: Skb) -> TxSeg {
        TxSeg {
            seq,
            end_seq: seq.wrapping_add(skb.len() as u32),
            syn: false,
            fin: false,
            skb,
            sent: None,
            retransmitted: false,
            lost: false,
            sacked: false,
            xmit_at: None,
            xmit_order: 0,
        }
    }

    fn payload_len(&self) -> usize {
        self.skb.len()
    }
}

/// `struct tcp_sock`, trimmed to what this stack implements.
#[derive(Debug)]
pub(crate) struct TcpSock {
    /// On the timer queue's dirty list (see [`TimerQueue`]).
    timer_dirty: bool,
    /// The deadline this socket is filed under in the timer queue, if any.
    timer_queued: Option<Instant>,
    pub state: TcpState,
    pub local: Option<SocketAddrV4>,
    pub remote: Option<SocketAddrV4>,
    pub reuseaddr: bool,
    pub nodelay: bool,
    /// Whether the socket is in the established hash.
    pub hashed: bool,
    /// `sk_dst_cache`: the route to `remote`, valid while the FIB generation matches.
    pub dst_cache: Option<crate::ipv4::DstCache>,

    // Listener.
    pub backlog: usize,
    pub accept_q: VecDeque<usize>,
    pub syn_q_len: usize,
    /// The listener that created this socket, while it is not yet accepted.
    pub parent: Option<usize>,

    // Send sequence space (RFC 9293 3.3.1).
    pub iss: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub snd_wnd: u32,
    pub snd_wl1: u32,
    pub snd_wl2: u32,
    pub max_window: u32,
    /// Shift the peer applies to its window (from its SYN).
    pub snd_wscale: u8,
    pub write_queue: VecDeque<TxSeg>,
    /// Payload bytes in the write queue.
    pub wq_bytes: usize,
    pub sndbuf: usize,
    /// The user shut down writing; a FIN goes after the queued data.
    pub fin_queued: bool,
    pub mss: u16,

    // Receive sequence space.
    pub irs: u32,
    pub rcv_nxt: u32,
    /// Window advertised last, and `rcv_nxt` then (`rcv_wup`).
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
    pub rcv_wscale: u8,
    pub rcvq: VecDeque<Skb>,
    pub rcvq_bytes: usize,
    pub ooo: BTreeMap<u32, Skb>,
    pub ooo_bytes: usize,
    /// Buffer memory (truesize) of rcvq + ooo, bounded by 2 * rcvbuf.
    pub rmem: usize,
    pub rcvbuf: usize,
    pub fin_received: bool,
    pub shut_rd: bool,

    // Options.
    pub ts_ok: bool,
    pub ts_recent: u32,
    pub sack_ok: bool,
    pub wscale_ok: bool,
    /// A duplicate segment to report in the next ACK (D-SACK, RFC 2883).
    pub dsack: Option<(u32, u32)>,
    /// Sequence of the most recent out-of-order segment: its block goes first.
    pub last_ooo: u32,

    // RTT and retransmission (RFC 6298).
    pub srtt_us: Option<u64>,
    pub rttvar_us: u64,
    pub rto: Duration,
    pub backoff: u32,
    pub retransmits: u32,
    pub rto_timer: Option<Instant>,

    // Delayed ACK.
    pub ack_pending: bool,
    pub delack_timer: Option<Instant>,
    pub quickack: u32,
    pub segs_unacked: u32,

    // Zero-window probing.
    pub persist_timer: Option<Instant>,
    pub probes: u32,

    // Congestion control (RFC 5681, RFC 6582).
    pub cwnd: u32,
    pub ssthresh: u32,
    pub cwnd_cnt: u32,
    pub dupacks: u32,
    pub recovery: Option<u32>,
    pub cc: CongState,

    /// TIME_WAIT or orphaned FIN_WAIT_2 end.
    pub tw_timer: Option<Instant>,

    // Keepalive (RFC 1122 4.2.3.6) and TCP_USER_TIMEOUT (RFC 5482).
    pub keepalive: Option<Keepalive>,
    pub ka_timer: Option<Instant>,
    pub ka_probes_out: u32,
    pub last_rcv: Instant,
    pub user_timeout: Option<Duration>,
    /// When the current run of retransmissions started.
    pub retrans_stamp: Option<Instant>,

    pub err: Option<SendError>,
    pub read_signalled: bool,
    pub want_write: bool,
    /// `close()` was called: the stack finishes the connection and frees the socket.
    pub orphan: bool,
    pub linger_zero: bool,
    /// RFC 5961 challenge ACK rate limit: (window start, count).
    pub challenge: (Instant, u32),
    /// When the last ACK to an out-of-window bare ACK went out.
    pub last_oow_ack: Option<Instant>,
    /// RACK (RFC 8985): send time and RTT of the most recently sent segment known
    /// delivered, and the smallest RTT seen (for the reordering window).
    pub rack_xmit: Option<Instant>,
    pub rack_rtt_us: u64,
    /// Transmissions so far, and the order of the newest delivered one.
    pub tx_counter: u64,
    pub rack_order: u64,
    pub min_rtt_us: Option<u64>,
    /// RACK's reordering window, in quarters of the minimum RTT (RFC 8985 6.2.4).
    pub reo_wnd_mult: u32,
    pub dsacks_seen: u32,
    /// Tail loss probe (RFC 8985 section 7): when it fires, and `snd_nxt` when the last
    /// probe went out (one probe per flight).
    pub tlp_timer: Option<Instant>,
    pub tlp_high_seq: Option<u32>,
}

impl TcpSock {
    fn new(now: Instant) -> Self {
        TcpSock {
            timer_dirty: false,
            timer_queued: None,
            state: TcpState::Closed,
            local: None,
            remote: None,
            reuseaddr: false,
            nodelay: false,
            hashed: false,
            dst_cache: None,
            backlog: 0,
            accept_q: VecDeque::new(),
            syn_q_len: 0,
            parent: None,
            iss: 0,
            snd_una: 0,
            snd_nxt: 0,
            snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            max_window: 0,
            snd_wscale: 0,
            write_queue: VecDeque::new(),
            wq_bytes: 0,
            sndbuf: DEFAULT_SNDBUF,
            fin_queued: false,
            mss: DEFAULT_MSS,
            irs: 0,
            rcv_nxt: 0,
            rcv_wnd: 0,
            rcv_wup: 0,
            rcv_wscale: 0,
            rcvq: VecDeque::new(),
            rcvq_bytes: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            rmem: 0,
            rcvbuf: DEFAULT_RCVBUF,
            fin_received: false,
            shut_rd: false,
            ts_ok: false,
            ts_recent: 0,
            sack_ok: false,
            wscale_ok: false,
            dsack: None,
            last_ooo: 0,
            srtt_us: None,
            rttvar_us: 0,
            rto: timer::INITIAL_RTO,
            backoff: 0,
            retransmits: 0,
            rto_timer: None,
            ack_pending: false,
            delack_timer: None,
            quickack: 16,
            segs_unacked: 0,
            persist_timer: None,
            probes: 0,
            cwnd: INIT_CWND,
            ssthresh: u32::MAX,
            cwnd_cnt: 0,
            dupacks: 0,
            recovery: None,
            cc: CongState::default(),
            tw_timer: None,
            keepalive: None,
            ka_timer: None,
            ka_probes_out: 0,
            last_rcv: now,
            user_timeout: None,
            retrans_stamp: None,
            err: None,
            read_signalled: false,
            want_write: false,
            orphan: false,
            linger_zero: false,
            challenge: (now, 0),
            last_oow_ack: None,
            rack_xmit: None,
            rack_rtt_us: 0,
            tx_counter: 0,
            rack_order: 0,
            min_rtt_us: None,
            reo_wnd_mult: 1,
            dsacks_seen: 0,
            tlp_timer: None,
            tlp_high_seq: None,
        }
    }

    /// Segments sent and not yet acknowledged, minus those marked lost and not yet
    /// resent (`tcp_packets_in_flight`).
    pub fn in_flight(&self) -> u32 {
        self.in_flight_up_to(u32::MAX)
    }

    /// [`TcpSock::in_flight`], counting no further than `limit`.
    pub fn in_flight_up_to(&self, limit: u32) -> u32 {
        let mut n = 0;
        for seg in &self.write_queue {
            if seq_ge(seg.seq, self.snd_nxt) || n >= limit {
                break;
            }
            if !seg.lost && !seg.sacked {
                n += 1;
            }
        }
        n
    }

    /// A read found the receive queue empty: `Ok(())` is the end of the stream; the
    /// error is the pending `sk_err` (reported once), or why there is nothing yet
    /// (which re-arms the readable signal).
    fn recv_empty(&mut self) -> Result<(), SendError> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        if self.fin_received || self.shut_rd {
            return Ok(());
        }
        self.read_signalled = false;
        Err(match self.state {
            TcpState::Listen | TcpState::Closed => SendError::NotConnected,
            _ => SendError::WouldBlock,
        })
    }

    /// Append a data segment holding `skb`'s bytes to the write queue.
    pub(crate) fn queue_data(&mut self, skb: Skb) {
        let seq = self.write_queue.back().map_or(self.snd_nxt, |t| t.end_seq);
        self.write_queue.push_back(TxSeg::new(seq, skb));
    }

    /// Nagle (RFC 896, RFC 1122 4.2.3.4): hold the unsent segment at `idx` back if it
    /// is small and the last one queued while data is unacknowledged
    /// (`in_flight_data`), unless TCP_NODELAY or it carries the SYN or FIN.
    pub(crate) fn nagle_defers(&self, idx: usize, in_flight_data: bool) -> bool {
        let seg = &self.write_queue[idx];
        seg.payload_len() < usize::from(self.mss)
            && idx + 1 == self.write_queue.len()
            && !seg.fin
            && !seg.syn
            && !self.nodelay
            && in_flight_data
    }

    /// How many unsent segments from `idx` (which the caller has already decided to send)
    /// go out together as one TSO super-packet (`tcp_tso_segs` with `tcp_write_xmit`'s
    /// limits): all but the last must be full-sized (a GSO packet's segments all carry
    /// `gso_size` bytes but the last), every one must fit the peer's window and the
    /// congestion window's room, the payload `gso_max` bytes, and a short segment at
    /// the queue's tail is held back by Nagle as it would be alone.
    pub(crate) fn tso_segs(&self, idx: usize, in_flight: u32, gso_max: usize) -> usize {
        let mss = usize::from(self.mss);
        let room = self.cwnd.saturating_sub(in_flight).max(1) as usize;
        let wnd_end = self.snd_una.wrapping_add(self.snd_wnd);
        let first = &self.write_queue[idx];
        if first.syn || first.fin || first.payload_len() != mss {
            return 1;
        }
        let mut count = 1;
        let mut bytes = mss;
        while count < room {
            let Some(next) = self.write_queue.get(idx + count) else {
                break;
            };
            let len = next.payload_len();
            if next.syn || len == 0 || bytes + len > gso_max || !seq_le(next.end_seq, wnd_end) {
                break;
            }
            // The batch's first segment is unacknowledged data by then.
            if self.nagle_defers(idx + count, true) {
                break;
            }
            count += 1;
            bytes += len;
            if len < mss || next.fin {
                break;
            }
        }
        count
    }

    /// `tcp_fragment`: split the unsent segment at `idx` after `len` payload bytes.
    pub(crate) fn tcp_fragment(&mut self, idx: usize, len: usize, pool: &crate::skb::SkbPool) {
        let Some(seg) = self.write_queue.get_mut(idx) else {
            return;
        };
        if len == 0 || len >= seg.skb.len() {
            return;
        }
        let tail_bytes = &seg.skb.data()[len..];
        let mut skb = pool.alloc(tail_bytes.len());
        skb.put(tail_bytes.len()).copy_from_slice(tail_bytes);
        let tail = TxSeg {
            seq: seg.seq.wrapping_add(len as u32),
            end_seq: seg.end_seq,
            syn: false,
            fin: seg.fin,
            skb,
            sent: None,
            retransmitted: false,
            lost: false,
            sacked: false,
            xmit_at: seg.xmit_at,
            xmit_order: seg.xmit_order,
        };
        seg.skb.trim(len);
        seg.fin = false;
        seg.end_seq = seg.seq.wrapping_add(len as u32);
        self.write_queue.insert(idx + 1, tail);
    }

    /// The window scale we offer: enough for the receive buffer (`tcp_select_initial_window`).
    fn choose_rcv_wscale(rcvbuf: usize) -> u8 {
        let mut shift = 0u8;
        while shift < 14 && (65535usize << shift) < rcvbuf {
            shift += 1;
        }
        shift
    }

    /// Whether the socket has nothing left to do once orphaned.
    fn is_dead(&self) -> bool {
        self.state == TcpState::Closed
    }
}

/// The connection tables (`tcp_hashinfo`).
#[derive(Debug, Default)]
pub struct TcpTable {
    /// Established hash: (local, remote) -> socket.
    ehash: HashMap<(SocketAddrV4, SocketAddrV4), usize>,
    /// Bound and listening sockets by local port.
    bhash: HashMap<u16, Vec<usize>>,
    /// RFC 6528 secret.
    isn_key: (u64, u64),
    /// Every TCP socket's earliest timer, so that finding the next deadline and the
    /// sockets due costs O(log n) in the number of sockets rather than a scan of all
    /// of them (what the kernel's timer wheel buys it). See [`TimerQueue`].
    pub(crate) timers: TimerQueue,
}

/// A min-heap of (deadline, socket) with lazy deletion, fed by the sockets that were
/// touched: `Stack::tcp_sock_mut` marks a socket dirty (anything reached through it
/// may have moved a timer), and [`Stack::tcp_flush_timers`] re-files each dirty socket
/// under its new earliest timer. A heap entry is live while it matches the socket's
/// `timer_queued`; any other is stale and dropped when it reaches the top.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
}

impl TcpTable {
    pub fn connections(&self) -> usize {
        self.ehash.len()
    }
}

/// SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT; Linux's defaults are
/// 2 h, 75 s and 9 (RFC 1122 4.2.3.6 requires an idle time of at least two hours by
/// default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            probes: 9,
        }
    }
}

/// Read and write readiness of a TCP socket (what `poll()` would report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpReadiness {
    pub readable: bool,
    pub writable: bool,
    /// Peer closed (FIN received) or the connection is gone.
    pub hup: bool,
    pub error: bool,
}

impl Stack {
    pub(crate) fn tcp_sock(&self, id: SocketId) -> Option<&TcpSock> {
        match self.sk.socks.get(id.0) {
            Some(Sock::Tcp(s)) => Some(s),
            _ => None,
        }
    }

    /// The socket, for changing it: it goes on the timer queue's dirty list, to be
    /// filed again under its earliest timer by [`Stack::tcp_flush_timers`].
    pub(crate) fn tcp_sock_mut(&mut self, id: SocketId) -> Option<&mut TcpSock> {
        match self.sk.socks.get_mut(id.0) {
            Some(Sock::Tcp(s)) => {
                if !s.timer_dirty {
                    s.timer_dirty = true;
                    self.sk.tcp.timers.dirty.push(id.0);
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// `__sk_dst_check` + `ip_route_connect`: the socket's route to its peer, looked up
    /// again only when the FIB changed since it was cached.
    pub(crate) fn tcp_dst(&mut self, id: SocketId) -> Option<crate::ipv4::Rtable> {
        let gen = self.ipv4.fib.generation();
        let s = self.tcp_sock(id)?;
        let remote = *s.remote?.ip();
        if let Some(rt) = s.dst_cache.and_then(|c| c.check(remote, gen)) {
            return Some(rt);
        }
        let rt = self.ip_route_output(remote).ok()?;
        self.tcp_sock_mut(id)?.dst_cache = Some(crate::ipv4::DstCache::new(remote, rt, gen));
        Some(rt)
    }

    pub(crate) fn tcp_init_table(&mut self) {
        self.sk.tcp.isn_key = (self.rng.next_u64(), self.rng.next_u64());
    }

    /// A new, closed TCP socket.
    pub fn tcp_socket(&mut self) -> SocketId {
        let now = self.now;
        SocketId(self.sk.socks.insert(Sock::Tcp(Box::new(TcpSock::new(now)))))
    }

    pub fn tcp_state(&self, id: SocketId) -> Option<TcpState> {
        self.tcp_sock(id).map(|s| s.state)
    }

    pub fn tcp_local_addr(&self, id: SocketId) -> Option<SocketAddrV4> {
        self.tcp_sock(id)?.local
    }

    pub fn tcp_peer_addr(&self, id: SocketId) -> Option<SocketAddrV4> {
        self.tcp_sock(id)?.remote
    }

    pub fn tcp_set_nodelay(&mut self, id: SocketId, on: bool) -> Result<(), SendError> {
        self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?.nodelay = on;
        Ok(())
    }

    pub fn tcp_set_reuseaddr(&mut self, id: SocketId, on: bool) -> Result<(), SendError> {
        self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?.reuseaddr = on;
        Ok(())
    }

    /// SO_SNDBUF / SO_RCVBUF (before connecting, so the window scale can follow).
    pub fn tcp_set_buffers(
        &mut self,
        id: SocketId,
        sndbuf: Option<usize>,
        rcvbuf: Option<usize>,
    ) -> Result<(), SendError> {
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if let Some(b) = sndbuf {
            s.sndbuf = b.max(4096);
        }
        if let Some(b) = rcvbuf {
            s.rcvbuf = b.max(4096);
        }
        Ok(())
    }

    /// SO_LINGER with a zero timeout: close sends RST and discards everything.
    pub fn tcp_set_linger_zero(&mut self, id: SocketId, on: bool) -> Result<(), SendError> {
        self.tcp_sock_mut(id)
            .ok_or(SendError::BadSocket)?
            .linger_zero = on;
        Ok(())
    }

    /// SO_KEEPALIVE (`None` turns it off).
    pub fn tcp_set_keepalive(
        &mut self,
        id: SocketId,
        ka: Option<Keepalive>,
    ) -> Result<(), SendError> {
        let now = self.now;
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        s.keepalive = ka;
        s.ka_probes_out = 0;
        s.ka_timer = ka.map(|k| s.last_rcv.max(now) + k.idle);
        Ok(())
    }

    /// TCP_USER_TIMEOUT: give up when sent data stays unacknowledged this long.
    pub fn tcp_set_user_timeout(
        &mut self,
        id: SocketId,
        t: Option<Duration>,
    ) -> Result<(), SendError> {
        self.tcp_sock_mut(id)
            .ok_or(SendError::BadSocket)?
            .user_timeout = t;
        Ok(())
    }

    pub fn tcp_set_congestion(
        &mut self,
        id: SocketId,
        cc: CongestionControl,
    ) -> Result<(), SendError> {
        self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?.cc = CongState::new(cc);
        Ok(())
    }

    /// What `poll()` would say.
    pub fn tcp_poll(&self, id: SocketId) -> TcpReadiness {
        let Some(s) = self.tcp_sock(id) else {
            return TcpReadiness {
                hup: true,
                error: true,
                ..Default::default()
            };
        };
        let connected = matches!(s.state, TcpState::Established | TcpState::CloseWait);
        TcpReadiness {
            readable: !s.rcvq.is_empty()
                || s.fin_received
                || s.err.is_some()
                || !s.accept_q.is_empty(),
            writable: connected && s.wq_bytes < s.sndbuf,
            hup: s.fin_received || s.state == TcpState::Closed,
            error: s.err.is_some(),
        }
    }

    /// `inet_bind` for TCP.
    pub fn tcp_bind(
        &mut self,
        id: SocketId,
        addr: SocketAddrV4,
    ) -> Result<SocketAddrV4, SendError> {
        let s = self.tcp_sock(id).ok_or(SendError::BadSocket)?;
        if s.local.is_some() || s.state != TcpState::Closed {
            return Err(SendError::InvalidInput);
        }
        let reuse = s.reuseaddr;
        let ip = *addr.ip();
        if !(ip.is_unspecified() || self.ipv4.fib.is_local(ip)) {
            return Err(SendError::AddrNotAvailable);
        }
        let port = if addr.port() == 0 {
            self.tcp_ephemeral_port(None)?
        } else {
            if self.tcp_bind_conflict(addr.port(), ip, reuse) {
                return Err(SendError::AddrInUse);
            }
            addr.port()
        };
        let local = SocketAddrV4::new(ip, port);
        self.tcp_sock_mut(id).expect("checked").local = Some(local);
        self.sk.tcp.bhash.entry(port).or_default().push(id.0);
        Ok(local)
    }

    /// `inet_csk_bind_conflict`: another socket on the port with an overlapping address
    /// conflicts unless both set SO_REUSEADDR and the other is not listening.
    fn tcp_bind_conflict(&self, port: u16, ip: Ipv4Addr, reuse: bool) -> bool {
        let Some(keys) = self.sk.tcp.bhash.get(&port) else {
            return false;
        };
        keys.iter().any(|&k| {
            let Some(Sock::Tcp(o)) = self.sk.socks.get(k) else {
                return false;
            };
            let oip = *o.local.expect("bound").ip();
            let overlap = ip.is_unspecified() || oip.is_unspecified() || ip == oip;
            overlap && !(reuse && o.reuseaddr && o.state != TcpState::Listen)
        })
    }

    /// RFC 6056 section 3.3.1 for a connection to `remote`: any port whose 4-tuple is
    /// unused will do (`__inet_hash_connect`), so many connections can share a port.
    fn tcp_ephemeral_port(
        &mut self,
        remote: Option<(Ipv4Addr, SocketAddrV4)>,
    ) -> Result<u16, SendError> {
        use crate::udp::{EPHEMERAL_HIGH, EPHEMERAL_LOW};
        let count = u32::from(EPHEMERAL_HIGH - EPHEMERAL_LOW) + 1;
        let start = self.rng.next_u32() % count;
        for i in 0..count {
            let port = EPHEMERAL_LOW + ((start + i) % count) as u16;
            let free = match remote {
                None => !self.sk.tcp.bhash.contains_key(&port),
                Some((src, r)) => {
                    // Not bound by anyone for listening or explicitly, and the 4-tuple
                    // unused.
                    let bound_explicitly =
                        self.sk.tcp.bhash.get(&port).is_some_and(|v| !v.is_empty());
                    let key = (SocketAddrV4::new(src, port), r);
                    !bound_explicitly
                        && (!self.sk.tcp.ehash.contains_key(&key)
                            || self.tcp_tw_reusable(key).is_some())
                }
            };
            if free {
                return Ok(port);
            }
        }
        Err(SendError::AddrNotAvailable)
    }

    /// `tcp_twsk_unique`: a TIME_WAIT connection on `key` may be taken over by a new
    /// outgoing one once it has waited a second and used timestamps: the peer's PAWS
    /// then tells the new connection's segments from the old one's (RFC 6191, Linux's
    /// `tcp_tw_reuse`). Returns the TIME_WAIT socket and the lowest safe new ISN.
    fn tcp_tw_reusable(&self, key: (SocketAddrV4, SocketAddrV4)) -> Option<(SocketId, u32)> {
        let &k = self.sk.tcp.ehash.get(&key)?;
        let s = self.tcp_sock(SocketId(k))?;
        // The timer fires TIME_WAIT_LEN after entry: a second in means now + LEN >= fire + 1 s.
        let old_enough = self.now + TIME_WAIT_LEN >= s.tw_timer? + Duration::from_secs(1);
        (s.state == TcpState::TimeWait && s.ts_ok && old_enough)
            .then(|| (SocketId(k), s.snd_nxt.wrapping_add(65535 + 2)))
    }

    /// `inet_listen`.
    pub fn tcp_listen(&mut self, id: SocketId, backlog: usize) -> Result<(), SendError> {
        let s = self.tcp_sock(id).ok_or(SendError::BadSocket)?;
        match s.state {
            TcpState::Closed | TcpState::Listen => {}
            _ => return Err(SendError::InvalidInput),
        }
        if s.local.is_none() {
            self.tcp_bind(id, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let s = self.tcp_sock_mut(id).expect("checked");
        s.state = TcpState::Listen;
        // Linux clamps to somaxconn (4096).
        s.backlog = backlog.clamp(1, 4096);
        Ok(())
    }

    /// `inet_accept`: a connected child, or `Ok(None)` when none is waiting.
    pub fn tcp_accept(
        &mut self,
        id: SocketId,
    ) -> Result<Option<(SocketId, SocketAddrV4)>, SendError> {
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if s.state != TcpState::Listen {
            return Err(SendError::InvalidInput);
        }
        let Some(child) = s.accept_q.pop_front() else {
            s.read_signalled = false;
            return Ok(None);
        };
        if s.accept_q.is_empty() {
            s.read_signalled = false;
        }
        let c = self
            .tcp_sock_mut(SocketId(child))
            .expect("accepted child exists");
        c.parent = None;
        let remote = c.remote.expect("connected child has a peer");
        Ok(Some((SocketId(child), remote)))
    }

    /// `tcp_v4_connect`: start the three-way handshake. A `Writable` event follows when
    /// it completes; a failure is reported by the next call (and a `Readable` event).
    pub fn tcp_v4_connect(
        &mut self,
        now: Instant,
        id: SocketId,
        peer: SocketAddrV4,
    ) -> Result<(), SendError> {
        self.now = now;
        let s = self.tcp_sock(id).ok_or(SendError::BadSocket)?;
        match s.state {
            TcpState::Closed => {}
            TcpState::SynSent => return Err(SendError::WouldBlock),
            _ => return Err(SendError::InvalidInput),
        }
        let bound = s.local;
        if peer.port() == 0
            || peer.ip().is_unspecified()
            || peer.ip().is_broadcast()
            || peer.ip().is_multicast()
        {
            return Err(SendError::InvalidInput);
        }
        let rt = self.ip_route_output(*peer.ip())?;
        let local = match bound {
            Some(l) => {
                let src = if l.ip().is_unspecified() {
                    rt.src
                } else {
                    *l.ip()
                };
                let local = SocketAddrV4::new(src, l.port());
                if self.sk.tcp.ehash.contains_key(&(local, peer))
                    && self.tcp_tw_reusable((local, peer)).is_none()
                {
                    return Err(SendError::AddrInUse);
                }
                local
            }
            None => {
                let port = self.tcp_ephemeral_port(Some((rt.src, peer)))?;
                SocketAddrV4::new(rt.src, port)
            }
        };
        let mut iss = self.tcp_isn(local, peer);
        if let Some((tw, floor)) = self.tcp_tw_reusable((local, peer)) {
            // Take the 4-tuple over from TIME_WAIT, starting beyond the old connection's
            // sequence space so its stray segments cannot be mistaken for ours.
            self.tcp_set_closed(tw);
            self.tcp_reap(tw);
            if seq_lt(iss, floor) {
                iss = floor;
            }
        }
        let mss = (rt.mtu.saturating_sub(40)).min(usize::from(u16::MAX)) as u16;
        let s = self.tcp_sock_mut(id).expect("checked");
        s.local = Some(local);
        s.remote = Some(peer);
        s.iss = iss;
        s.snd_una = iss;
        s.snd_nxt = iss;
        s.mss = mss;
        s.rcv_wscale = TcpSock::choose_rcv_wscale(s.rcvbuf);
        s.state = TcpState::SynSent;
        self.sk.tcp.ehash.insert((local, peer), id.0);
        self.tcp_sock_mut(id).expect("checked").hashed = true;
        self.snmp.tcp.active_opens += 1;
        self.tcp_queue_control(id, true, false);
        self.tcp_write_xmit(id);
        self.process_backlog();
        Ok(())
    }

    /// `tcp_sendmsg`: queue as much of `data` as the send buffer takes and push it out.
    /// `Err(WouldBlock)` when the buffer is full (a `Writable` event follows).
    pub fn tcp_sendmsg(
        &mut self,
        now: Instant,
        id: SocketId,
        data: &[u8],
    ) -> Result<usize, SendError> {
        self.now = now;
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if let Some(e) = s.err.take() {
            return Err(e);
        }
        match s.state {
            TcpState::Established | TcpState::CloseWait => {}
            TcpState::SynSent | TcpState::SynRecv => return Err(SendError::WouldBlock),
            _ => return Err(SendError::BrokenPipe),
        }
        if s.fin_queued {
            return Err(SendError::BrokenPipe);
        }
        let room = s.sndbuf.saturating_sub(s.wq_bytes);
        if room == 0 {
            s.want_write = true;
            return Err(SendError::WouldBlock);
        }
        let n = room.min(data.len());
        self.tcp_append(id, &data[..n]);
        self.tcp_write_xmit(id);
        self.process_backlog();
        Ok(n)
    }

    /// `tcp_recvmsg`: copy queued data into `buf`. `Ok(0)` is end of stream (the peer's
    /// FIN), `Err(WouldBlock)` means nothing yet.
    pub fn tcp_recvmsg(
        &mut self,
        now: Instant,
        id: SocketId,
        buf: &mut [u8],
        peek: bool,
    ) -> Result<usize, SendError> {
        self.now = now;
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if s.rcvq.is_empty() {
            s.recv_empty()?;
            return Ok(0);
        }
        let (copied, freed) = crate::skb::copy_from_queue(&mut s.rcvq, buf, peek);
        if peek {
            return Ok(copied);
        }
        s.rmem -= freed;
        s.rcvq_bytes -= copied;
        self.tcp_recv_done(id);
        Ok(copied)
    }

    /// [`Stack::tcp_recvmsg`] without the copy: the next in-order data as the skb it came
    /// in (at most `max` bytes of it; the rest stays queued), for a caller that keeps
    /// received data as skbs, as `tcp_read_sock` hands skbs to its actor. `Ok(None)` is
    /// the end of the stream; errors are those of `tcp_recvmsg`. The skb's buffer is no
    /// longer charged to this socket's receive memory once it is handed out: the caller
    /// bounds what it holds.
    pub fn tcp_recv_skb(
        &mut self,
        now: Instant,
        id: SocketId,
        max: usize,
    ) -> Result<Option<Skb>, SendError> {
        self.now = now;
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        let Some(front) = s.rcvq.front_mut() else {
            s.recv_empty()?;
            return Ok(None);
        };
        if max == 0 {
            return Err(SendError::WouldBlock);
        }
        let skb = if front.len() <= max {
            let skb = s.rcvq.pop_front().expect("front exists");
            s.rmem -= skb.end();
            skb
        } else {
            // Part of it: a clone (sharing the buffer) trimmed to `max`, the rest stays.
            let mut part = front.clone();
            part.trim(max);
            let _ = front.pull(max);
            part
        };
        s.rcvq_bytes -= skb.len();
        self.tcp_recv_done(id);
        Ok(Some(skb))
    }

    /// After a read took data: re-arm the readable signal once the queue is empty,
    /// send a window update if reading opened the window (`tcp_cleanup_rbuf`), and run
    /// what that looped back.
    fn tcp_recv_done(&mut self, id: SocketId) {
        if let Some(s) = self.tcp_sock_mut(id) {
            if s.rcvq.is_empty() && !s.fin_received {
                s.read_signalled = false;
            }
        }
        self.tcp_cleanup_rbuf(id);
        self.process_backlog();
    }

    /// Bytes ready to read.
    pub fn tcp_rcvq_bytes(&self, id: SocketId) -> usize {
        self.tcp_sock(id).map_or(0, |s| s.rcvq_bytes)
    }

    /// Bytes queued to send and not yet acknowledged.
    pub fn tcp_sendq_bytes(&self, id: SocketId) -> usize {
        self.tcp_sock(id).map_or(0, |s| s.wq_bytes)
    }

    /// `tcp_shutdown`.
    pub fn tcp_shutdown(
        &mut self,
        now: Instant,
        id: SocketId,
        how: Shutdown,
    ) -> Result<(), SendError> {
        self.now = now;
        let s = self.tcp_sock_mut(id).ok_or(SendError::BadSocket)?;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            s.shut_rd = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            match s.state {
                TcpState::Established | TcpState::CloseWait | TcpState::SynRecv => {
                    self.tcp_send_fin(id);
                }
                TcpState::SynSent | TcpState::Listen | TcpState::Closed => {
                    return Err(SendError::NotConnected);
                }
                _ => {}
            }
        }
        self.process_backlog();
        Ok(())
    }

    /// `tcp_close`: the application lets go of the socket. Unread data or SO_LINGER 0
    /// reset the connection (RFC 2525 2.17, as Linux); otherwise a FIN follows the queued
    /// data and the stack finishes the connection on its own.
    pub fn tcp_close(&mut self, now: Instant, id: SocketId) {
        self.now = now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        s.orphan = true;
        match s.state {
            TcpState::Listen => {
                // Children not yet accepted are reset, as inet_csk_listen_stop does.
                let children: Vec<usize> = s.accept_q.drain(..).collect();
                for c in children {
                    self.tcp_abort_inner(SocketId(c), true);
                }
                self.tcp_set_closed(id);
            }
            TcpState::Closed | TcpState::SynSent => self.tcp_set_closed(id),
            _ => {
                let unread = s.rcvq_bytes > 0 || !s.ooo.is_empty();
                if unread || s.linger_zero {
                    self.tcp_abort_inner(id, true);
                } else if matches!(
                    s.state,
                    TcpState::Established | TcpState::CloseWait | TcpState::SynRecv
                ) {
                    self.tcp_send_fin(id);
                }
            }
        }
        self.tcp_reap(id);
        self.process_backlog();
    }

    /// Reset the connection now (SO_LINGER 0 close, or `abort`).
    pub fn tcp_abort(&mut self, now: Instant, id: SocketId) {
        self.now = now;
        self.tcp_abort_inner(id, true);
        self.tcp_reap(id);
        self.process_backlog();
    }

    fn tcp_abort_inner(&mut self, id: SocketId, send_rst: bool) {
        let Some(s) = self.tcp_sock(id) else { return };
        let synchronized = !matches!(
            s.state,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent
        );
        if send_rst && synchronized {
            self.tcp_send_active_reset(id);
        }
        self.tcp_set_closed(id);
        if let Some(s) = self.tcp_sock_mut(id) {
            s.orphan = true;
        }
        self.tcp_reap(id);
    }

    /// `tcp_done` / `tcp_set_state(TCP_CLOSE)`: unhash, drop queues and timers.
    pub(crate) fn tcp_set_closed(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let was_established = matches!(s.state, TcpState::Established | TcpState::CloseWait);
        s.state = TcpState::Closed;
        s.write_queue.clear();
        s.wq_bytes = 0;
        s.ooo.clear();
        s.ooo_bytes = 0;
        s.rto_timer = None;
        s.tlp_timer = None;
        s.delack_timer = None;
        s.persist_timer = None;
        s.tw_timer = None;
        let key = (s.local, s.remote, s.hashed);
        s.hashed = false;
        if was_established {
            self.snmp.tcp.curr_estab = self.snmp.tcp.curr_estab.saturating_sub(1);
        }
        if let (Some(l), Some(r), true) = key {
            if self.sk.tcp.ehash.get(&(l, r)) == Some(&id.0) {
                self.sk.tcp.ehash.remove(&(l, r));
            }
        }
        self.tcp_wake(id, true, true);
    }

    /// Free an orphaned socket that has finished (`inet_csk_destroy_sock`).
    pub(crate) fn tcp_reap(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock(id) else { return };
        if !(s.orphan && s.is_dead()) {
            return;
        }
        let port = s.local.map(|l| l.port());
        if let Some(p) = port {
            if let Some(v) = self.sk.tcp.bhash.get_mut(&p) {
                v.retain(|&k| k != id.0);
                if v.is_empty() {
                    self.sk.tcp.bhash.remove(&p);
                }
            }
        }
        self.sk.socks.remove(id.0);
    }

    /// Tell the driver about readiness (`sk_data_ready` / `sk_write_space`).
    pub(crate) fn tcp_wake(&mut self, id: SocketId, readable: bool, writable: bool) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.orphan {
            return;
        }
        let signal_read = readable && !s.read_signalled;
        if signal_read {
            s.read_signalled = true;
        }
        if writable {
            s.want_write = false;
        }
        if signal_read {
            self.sk.events.push_back(Event::Readable(id));
        }
        if writable {
            self.sk.events.push_back(Event::Writable(id));
        }
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    fn tcp_isn(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let clock = (self.now.total_micros() / 4) as u32;
        clock.wrapping_add(isn::secure_hash(self.sk.tcp.isn_key, local, remote))
    }
}
