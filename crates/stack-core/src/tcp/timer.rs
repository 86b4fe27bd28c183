//! TCP timers (net/ipv4/tcp_timer.c): retransmission (RFC 6298 with Karn's backoff),
//! delayed ACK, zero-window persist, and the TIME_WAIT / orphaned FIN_WAIT_2 end.

use super::{TcpState, RETRIES2, SYN_RETRIES};
use crate::ipv4::SendError;
use crate::sock::Sock;
use crate::stack::{SocketId, Stack};
use crate::time::{Duration, Instant};

/// RFC 6298 2.1: 1 s before any RTT sample.
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Linux's `TCP_RTO_MIN` (RFC 6298 says 1 s; every major stack uses less).
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// `TCP_RTO_MAX`.
pub const MAX_RTO: Duration = Duration::from_secs(120);
/// `TCP_DELACK_MIN`.
pub const DELACK: Duration = Duration::from_millis(40);

impl super::TcpSock {
    /// The earliest of this socket's timers.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        [
            self.rto_timer,
            self.delack_timer,
            self.persist_timer,
            self.tw_timer,
            self.ka_timer,
            self.tlp_timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Stack {
    /// The earliest TCP timer of any socket: the top of the timer queue, or a socket
    /// touched since the last flush. May be early (a stale entry at the top, which the
    /// next `tcp_on_timer` drops), never late.
    pub(crate) fn tcp_poll_timeout(&self) -> Option<Instant> {
        let q = &self.sk.tcp.timers;
        let top = q.heap.peek().map(|e| e.0 .0);
        let dirty = q
            .dirty
            .iter()
            .filter_map(|&k| match self.sk.socks.get(k) {
                Some(Sock::Tcp(t)) => t.next_timer(),
                _ => None,
            })
            .min();
        top.into_iter().chain(dirty).min()
    }

    /// File every socket touched since the last flush under its earliest timer, and
    /// drop the stale entries at the top of the queue.
    pub(crate) fn tcp_flush_timers(&mut self) {
        let q = &mut self.sk.tcp.timers;
        for k in q.dirty.drain(..) {
            let Some(Sock::Tcp(s)) = self.sk.socks.get_mut(k) else {
                continue;
            };
            s.timer_dirty = false;
            let next = s.next_timer();
            if next != s.timer_queued {
                s.timer_queued = next;
                if let Some(t) = next {
                    q.heap.push(std::cmp::Reverse((t, k)));
                }
            }
        }
        let socks = &self.sk.socks;
        let live = |t: Instant, k: usize| matches!(socks.get(k), Some(Sock::Tcp(s)) if s.timer_queued == Some(t));
        // A timer that moves later (the RTO, re-armed by every ACK) leaves its old entry
        // behind; stale entries sink to the top only when their time comes. Keep the
        // heap within a few times the sockets, whatever the rate of ACKs.
        if q.heap.len() > 4 * socks.len() + 1024 {
            q.heap.retain(|e| live(e.0 .0, e.0 .1));
        }
        while let Some(&std::cmp::Reverse((t, k))) = q.heap.peek() {
            if live(t, k) {
                break;
            }
            q.heap.pop();
        }
    }

    /// Run every due TCP timer.
    pub(crate) fn tcp_on_timer(&mut self, now: Instant) {
        self.tcp_flush_timers();
        let mut due = Vec::new();
        while let Some(&std::cmp::Reverse((t, k))) = self.sk.tcp.timers.heap.peek() {
            if t > now {
                break;
            }
            self.sk.tcp.timers.heap.pop();
            if let Some(Sock::Tcp(s)) = self.sk.socks.get_mut(k) {
                if s.timer_queued == Some(t) {
                    s.timer_queued = None;
                    due.push(k);
                }
            }
        }
        for k in due {
            let id = SocketId(k);
            // Through `tcp_sock_mut`: the socket is dirty again, and filed under its
            // next timer by the flush below.
            if self.tcp_sock_mut(id).is_none() {
                continue;
            }
            self.tcp_timers(id, now);
            self.tcp_reap(id);
        }
        self.tcp_flush_timers();
    }

    fn tcp_timers(&mut self, id: SocketId, now: Instant) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.tw_timer.is_some_and(|t| t <= now) {
            s.tw_timer = None;
            // TIME_WAIT over, or an orphan waited too long in FIN_WAIT_2.
            self.tcp_set_closed(id);
            return;
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        if s.delack_timer.is_some_and(|t| t <= now) {
            s.delack_timer = None;
            if s.ack_pending {
                self.tcp_send_ack(id);
            }
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        if s.persist_timer.is_some_and(|t| t <= now) {
            s.persist_timer = None;
            self.tcp_probe_timer(id, now);
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        if s.tlp_timer.is_some_and(|t| t <= now) {
            s.tlp_timer = None;
            self.tcp_send_loss_probe(id, now);
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        if s.rto_timer.is_some_and(|t| t <= now) {
            s.rto_timer = None;
            self.tcp_retransmit_timer(id, now);
        }
        if let Some(s) = self.tcp_sock_mut(id) {
            if s.ka_timer.is_some_and(|t| t <= now) {
                s.ka_timer = None;
                self.tcp_keepalive_timer(id, now);
            }
        }
    }

    /// `tcp_keepalive_timer`: after `idle` without hearing from the peer, probe every
    /// `interval`; after `probes` unanswered probes the connection is dead (ETIMEDOUT).
    fn tcp_keepalive_timer(&mut self, id: SocketId, now: Instant) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let Some(ka) = s.keepalive else { return };
        if !matches!(
            s.state,
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait2
        ) {
            return;
        }
        // Data in flight has its own timer; keepalive is for idle connections.
        if s.snd_una != s.snd_nxt {
            s.ka_timer = Some(now + ka.idle);
            return;
        }
        let idle_until = s.last_rcv + ka.idle;
        if now < idle_until && s.ka_probes_out == 0 {
            s.ka_timer = Some(idle_until);
            return;
        }
        if s.ka_probes_out >= ka.probes {
            s.err = Some(SendError::TimedOut);
            self.tcp_abort_timeout(id);
            return;
        }
        s.ka_probes_out += 1;
        s.ka_timer = Some(now + ka.interval);
        self.tcp_send_probe(id);
    }

    /// `tcp_retransmit_timer`: RFC 6298 5.4-5.7 — resend the earliest unacknowledged
    /// segment, double the RTO, collapse the window to one segment (RFC 5681 3.1); give
    /// up with ETIMEDOUT after `tcp_retries2` (or `tcp_syn_retries` for a SYN).
    fn tcp_retransmit_timer(&mut self, id: SocketId, now: Instant) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.snd_una == s.snd_nxt {
            return;
        }
        let limit = if matches!(s.state, TcpState::SynSent | TcpState::SynRecv) {
            SYN_RETRIES
        } else {
            RETRIES2
        };
        let started = *s.retrans_stamp.get_or_insert(now);
        let user_timed_out = s
            .user_timeout
            .is_some_and(|t| now.saturating_duration_since(started) >= t);
        if s.retransmits >= limit || user_timed_out {
            s.err = Some(SendError::TimedOut);
            let synsent = s.state == TcpState::SynSent;
            if synsent {
                self.snmp.tcp.attempt_fails += 1;
            }
            self.tcp_abort_timeout(id);
            return;
        }
        s.retransmits += 1;
        s.backoff += 1;
        s.rto = (s.rto * 2).min(MAX_RTO);
        let ssthresh = s.cong_ssthresh();
        s.ssthresh = ssthresh;
        s.cwnd = 1;
        s.cwnd_cnt = 0;
        s.recovery = None;
        s.dupacks = 0;
        s.cong_on_timeout();
        // tcp_enter_loss: everything in flight is presumed lost.
        let nxt = s.snd_nxt;
        for seg in s.write_queue.iter_mut() {
            if super::seq_lt(seg.seq, nxt) {
                seg.lost = true;
            }
        }
        s.rto_timer = Some(now + s.rto);
        self.snmp.tcp_ext.tcp_timeouts += 1;
        self.tcp_write_xmit(id);
    }

    /// `tcp_send_loss_probe` (RFC 8985 7.3): the flight went quiet for about two RTTs.
    /// Send one segment to draw an ACK whose SACK information lets fast recovery
    /// repair a lost tail, instead of waiting for the RTO: new data if the windows
    /// allow, else the last segment sent again.
    fn tcp_send_loss_probe(&mut self, id: SocketId, now: Instant) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.snd_una == s.snd_nxt || s.recovery.is_some() || s.tlp_high_seq.is_some() {
            return;
        }
        s.tlp_high_seq = Some(s.snd_nxt);
        let wnd_end = s.snd_una.wrapping_add(s.snd_wnd);
        let new_data = s
            .write_queue
            .iter()
            .position(|t| super::seq_ge(t.seq, s.snd_nxt))
            .filter(|&i| super::seq_le(s.write_queue[i].end_seq, wnd_end));
        if new_data.is_none() {
            // Retransmit the last segment sent.
            let nxt = s.snd_nxt;
            let Some(last) = s
                .write_queue
                .iter_mut()
                .rev()
                .find(|t| super::seq_lt(t.seq, nxt))
            else {
                return;
            };
            if last.sacked {
                return;
            }
            last.lost = true;
        }
        // One segment beyond the congestion window, as the RFC allows.
        s.cwnd += 1;
        self.snmp.tcp_ext.tcp_loss_probes += 1;
        self.tcp_write_xmit(id);
        if let Some(s) = self.tcp_sock_mut(id) {
            s.cwnd = s.cwnd.saturating_sub(1).max(1);
            s.rto_timer = Some(now + s.rto);
        }
    }

    /// Give up on the connection after too many retransmissions.
    fn tcp_abort_timeout(&mut self, id: SocketId) {
        if let Some(Sock::Tcp(s)) = self.sk.socks.get(id.0) {
            if let Some(p) = s.parent {
                if let Some(Sock::Tcp(l)) = self.sk.socks.get_mut(p) {
                    l.syn_q_len = l.syn_q_len.saturating_sub(1);
                }
                if let Some(Sock::Tcp(s)) = self.sk.socks.get_mut(id.0) {
                    s.orphan = true;
                }
            }
        }
        self.tcp_send_active_reset(id);
        self.tcp_set_closed(id);
    }

    /// `tcp_probe_timer`: the peer's window is zero and nothing is in flight; probe it
    /// with backoff (RFC 9293 3.8.6.1) so a lost window update cannot deadlock us.
    fn tcp_probe_timer(&mut self, id: SocketId, now: Instant) {
        let pool = self.pool.clone();
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.write_queue.is_empty() || s.snd_una != s.snd_nxt {
            s.probes = 0;
            return;
        }
        s.probes += 1;
        let backoff = s.rto * (1 << s.probes.min(10));
        s.persist_timer = Some(now + backoff.min(MAX_RTO));
        if s.snd_wnd > 0 {
            // The window is open, but less than the next segment: send what fits
            // (`tcp_write_wakeup`), which is also the sender's SWS override (RFC 1122
            // 4.2.3.4: send after a timeout even if it is small).
            let avail = s.snd_wnd as usize;
            if let Some(head) = s.write_queue.front() {
                if head.skb.len() > avail && !head.syn {
                    s.tcp_fragment(0, avail, &pool);
                }
            }
            s.persist_timer = None;
            self.tcp_write_xmit(id);
            return;
        }
        self.tcp_send_probe(id);
    }
}
