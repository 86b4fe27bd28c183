//! TCP ingress (net/ipv4/tcp_ipv4.c, tcp_input.c, tcp_minisocks.c): `tcp_v4_rcv`
//! demultiplexes like `__inet_lookup_skb` (established hash, then listeners), listeners
//! answer SYNs with a child in SYN_RECV (`tcp_conn_request`), and
//! `tcp_rcv_state_process` runs the RFC 9293 section 3.10.7 event processing with the
//! RFC 5961 defences and RFC 7323 PAWS. `tcp_rcv_established` takes the common case —
//! an in-order segment on an established connection — without the slow path's checks.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{seq_ge, seq_gt, seq_le, seq_lt, syncookies, TcpSock, TcpState, MAX_SYN_BACKLOG};
use crate::skb::{IpSummed, Skb};
use crate::sock::Sock;
use crate::stack::{SocketId, Stack};
use crate::time::{Duration, Instant};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{TcpFlags, TcpPacket, TcpRepr};

/// RFC 5961 section 7: at most this many challenge ACKs per second per socket
/// (Linux's `tcp_challenge_ack_limit` is global; per socket is stricter on no one).
const CHALLENGE_ACK_LIMIT: u32 = 100;

/// Linux's `tcp_invalid_ratelimit`.
const OOW_RATELIMIT: Duration = Duration::from_millis(500);

impl Stack {
    /// `tcp_v4_rcv`: `data` at the TCP header, network header set.
    #[tracing::instrument(level = "trace", name = "tcp_v4_rcv", skip_all)]
    pub(crate) fn tcp_v4_rcv(&mut self, mut skb: Skb, broadcast: bool) {
        let Some((src, dst)) = skb
            .network_header()
            .and_then(|h| Ipv4Packet::new_checked(h).ok())
            .map(|ip| (ip.src(), ip.dst()))
        else {
            return;
        };
        self.snmp.tcp.in_segs += 1;
        if broadcast {
            // TCP is unicast only (RFC 1122 4.2.3.10).
            return;
        }
        let (repr, hlen) = match TcpPacket::new_checked(skb.data()) {
            Ok(p) => {
                // A checksum the device verified (DATA_VALID) or one a local sender left
                // to the device (CHECKSUM_PARTIAL: the kernel on a TAP with TSO, or our
                // own loopback) needs no software check (`skb_csum_unnecessary`).
                if skb.ip_summed == IpSummed::None && !p.verify_checksum(src, dst) {
                    self.snmp.tcp.in_csum_errors += 1;
                    self.snmp.tcp.in_errs += 1;
                    tracing::trace!("drop: bad TCP checksum");
                    return;
                }
                match TcpRepr::parse(&p) {
                    Ok(r) => (r, p.header_len()),
                    Err(_) => {
                        self.snmp.tcp.in_errs += 1;
                        return;
                    }
                }
            }
            Err(_) => {
                self.snmp.tcp.in_errs += 1;
                return;
            }
        };
        let f = repr.flags;
        // Flag combinations no stack sends (scans and attacks): SYN with FIN or RST, and
        // segments with none of SYN, ACK, RST (null, xmas), as tcp_validate_incoming and
        // the listener path drop them.
        if (f.contains(TcpFlags::SYN) && (f.contains(TcpFlags::FIN) || f.contains(TcpFlags::RST)))
            || !(f.contains(TcpFlags::SYN)
                || f.contains(TcpFlags::ACK)
                || f.contains(TcpFlags::RST))
        {
            self.snmp.tcp.in_errs += 1;
            tracing::trace!(flags = ?f, "drop: impossible flag combination");
            return;
        }
        if skb.pull(hlen).is_err() {
            return;
        }
        let local = SocketAddrV4::new(dst, repr.dst_port);
        let remote = SocketAddrV4::new(src, repr.src_port);
        if let Some(&k) = self.sk.tcp.ehash.get(&(local, remote)) {
            let id = SocketId(k);
            if self.tcp_state(id) == Some(TcpState::TimeWait) {
                self.tcp_timewait_state_process(id, &repr, skb.len());
            } else {
                self.tcp_rcv_established(id, &repr, skb);
                self.tcp_reap(id);
            }
            return;
        }
        if let Some(l) = self.tcp_lookup_listener(dst, repr.dst_port) {
            self.tcp_listen_rcv(l, src, dst, &repr, skb);
            return;
        }
        let seg_len = skb.len() as u32
            + u32::from(f.contains(TcpFlags::SYN))
            + u32::from(f.contains(TcpFlags::FIN));
        self.tcp_v4_send_reset(src, dst, &repr, seg_len);
    }

    /// `__inet_lookup_listener`: an exact address beats the wildcard.
    fn tcp_lookup_listener(&self, dst: Ipv4Addr, port: u16) -> Option<SocketId> {
        let keys = self.sk.tcp.bhash.get(&port)?;
        let mut best = None;
        for &k in keys {
            let Some(Sock::Tcp(s)) = self.sk.socks.get(k) else {
                continue;
            };
            if s.state != TcpState::Listen {
                continue;
            }
            let ip = *s.local.expect("listeners are bound").ip();
            if ip == dst {
                return Some(SocketId(k));
            }
            if ip.is_unspecified() {
                best = Some(SocketId(k));
            }
        }
        best
    }

    /// A segment for a listener (`tcp_v4_do_rcv` in TCP_LISTEN): a SYN makes a child in
    /// SYN_RECV (`tcp_conn_request`); anything with ACK gets a reset; RST is ignored.
    fn tcp_listen_rcv(
        &mut self,
        l: SocketId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        seg: &TcpRepr,
        skb: Skb,
    ) {
        let f = seg.flags;
        if f.contains(TcpFlags::RST) {
            return;
        }
        if f.contains(TcpFlags::ACK) {
            if !f.contains(TcpFlags::SYN) && self.tcp_cookie_accept(l, src, dst, seg, skb) {
                return;
            }
            self.tcp_v4_send_reset(src, dst, seg, 0);
            return;
        }
        if !f.contains(TcpFlags::SYN) {
            return;
        }
        let (backlog, accepted, syn_q) = {
            let s = self.tcp_sock(l).expect("listener");
            (s.backlog, s.accept_q.len(), s.syn_q_len)
        };
        if accepted >= backlog {
            // The accept queue is full: drop the SYN, the client retries (Linux does the
            // same when syncookies are not in use).
            self.snmp.tcp_ext.listen_overflows += 1;
            self.snmp.tcp_ext.listen_drops += 1;
            return;
        }
        let local = SocketAddrV4::new(dst, seg.dst_port);
        let remote = SocketAddrV4::new(src, seg.src_port);
        let rt = match self.ip_route_output(src) {
            Ok(rt) => rt,
            Err(_) => return,
        };
        if syn_q >= MAX_SYN_BACKLOG.max(backlog) {
            // SYN queue full (a flood, or a burst): answer statelessly with a cookie
            // (tcp_syncookies=1: only on overflow, as Linux).
            self.tcp_send_synack_cookie(local, remote, seg, rt.mtu);
            return;
        }
        let iss = self.tcp_isn(local, remote);
        let mut c = self.tcp_child(l, local, remote, iss);
        c.irs = seg.seq;
        c.rcv_nxt = seg.seq.wrapping_add(1);
        c.rcv_wup = c.rcv_nxt;
        Self::tcp_apply_syn_options(&mut c, seg, rt.mtu);
        c.snd_wnd = u32::from(seg.window);
        c.snd_wl1 = seg.seq;
        c.snd_wl2 = iss;
        let id = self.tcp_hash_child(l, c);
        self.tcp_queue_control(id, true, false);
        self.tcp_write_xmit(id);
    }

    /// A SYN_RECV child of listener `l` for `remote`, inheriting the listener's options
    /// (`inet_csk_clone_lock`), with our initial sequence number `iss`.
    fn tcp_child(
        &self,
        l: SocketId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: u32,
    ) -> TcpSock {
        let p = self.tcp_sock(l).expect("listener");
        let mut c = TcpSock::new(self.now);
        c.state = TcpState::SynRecv;
        c.local = Some(local);
        c.remote = Some(remote);
        c.parent = Some(l.0);
        c.nodelay = p.nodelay;
        c.rcvbuf = p.rcvbuf;
        c.sndbuf = p.sndbuf;
        c.cc = p.cc;
        c.keepalive = p.keepalive;
        c.iss = iss;
        c.snd_una = iss;
        c.snd_nxt = iss;
        c
    }

    /// Put a new child in the socket table and the established hash, counted against
    /// its listener's SYN queue (`inet_ehash_nolisten`).
    fn tcp_hash_child(&mut self, l: SocketId, mut c: TcpSock) -> SocketId {
        let key = (c.local.expect("set"), c.remote.expect("set"));
        c.hashed = true;
        let id = SocketId(self.sk.socks.insert(Sock::Tcp(Box::new(c))));
        self.sk.tcp.ehash.insert(key, id.0);
        // Filed in the timer queue (its SYN-ACK retransmission timer) by the next flush.
        let _ = self.tcp_sock_mut(id);
        self.tcp_sock_mut(l).expect("listener").syn_q_len += 1;
        self.snmp.tcp.passive_opens += 1;
        id
    }

    /// Negotiate MSS, window scaling, SACK and timestamps from a SYN (RFC 9293 3.7.1,
    /// RFC 7323, RFC 2018): each only if the peer offered it.
    fn tcp_apply_syn_options(s: &mut TcpSock, seg: &TcpRepr, mtu: usize) {
        let our_mss = mtu.saturating_sub(40).min(65535) as u16;
        let peer_mss = seg.mss.unwrap_or(super::DEFAULT_MSS);
        s.mss = our_mss.min(peer_mss).max(64);
        if let Some(ws) = seg.window_scale {
            s.wscale_ok = true;
            // RFC 7323 2.3: a shift over 14 is treated as 14.
            s.snd_wscale = ws.min(14);
            s.rcv_wscale = TcpSock::choose_rcv_wscale(s.rcvbuf);
        } else {
            s.snd_wscale = 0;
            s.rcv_wscale = 0;
        }
        s.sack_ok = seg.sack_permitted;
        if let Some((tsval, _)) = seg.timestamps {
            s.ts_ok = true;
            s.ts_recent = tsval;
        }
        if s.ts_ok {
            // Timestamps take 12 bytes of every segment.
            s.mss = s.mss.saturating_sub(12).max(64);
        }
    }

    /// `tcp_oow_rate_limited` (`tcp_invalid_ratelimit`, 500 ms): may we answer another
    /// out-of-window bare ACK on this socket now?
    fn tcp_oow_allowed(&mut self, id: SocketId) -> bool {
        let now = self.now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return false;
        };
        match s.last_oow_ack {
            Some(t) if now.saturating_duration_since(t) < OOW_RATELIMIT => false,
            _ => {
                s.last_oow_ack = Some(now);
                true
            }
        }
    }

    /// RFC 5961 section 7: a challenge ACK, rate limited.
    fn tcp_send_challenge_ack(&mut self, id: SocketId) {
        let now = self.now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if now.saturating_duration_since(s.challenge.0) >= Duration::from_secs(1) {
            s.challenge = (now, 0);
        }
        if s.challenge.1 >= CHALLENGE_ACK_LIMIT {
            return;
        }
        s.challenge.1 += 1;
        self.snmp.tcp_ext.tcp_challenge_ack += 1;
        self.tcp_send_ack(id);
    }

    /// `tcp_rcv_established`: the header-prediction fast path (Van Jacobson's, as in
    /// Linux): on an established connection, the next expected segment carrying only
    /// ACK (and PSH), the same window, no SACK blocks and a fresh timestamp is either a
    /// pure ACK for new data or in-order data acknowledging nothing new. Those skip the
    /// slow path's checks; everything else goes to `tcp_rcv_state_process`.
    fn tcp_rcv_established(&mut self, id: SocketId, seg: &TcpRepr, skb: Skb) {
        let now = self.now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let flags_ok = seg.flags == TcpFlags::ACK || seg.flags == (TcpFlags::ACK | TcpFlags::PSH);
        let ts_ok = match (s.ts_ok, seg.timestamps) {
            (true, Some((tsval, _))) => seq_ge(tsval, s.ts_recent),
            (false, None) => true,
            _ => false,
        };
        let predicted = s.state == TcpState::Established
            && flags_ok
            && seg.seq == s.rcv_nxt
            && (u32::from(seg.window) << s.snd_wscale) == s.snd_wnd
            && seg.sack_blocks.is_empty()
            && ts_ok
            && s.recovery.is_none()
            && s.ooo.is_empty()
            && seq_le(seg.ack, s.snd_nxt);
        if !predicted {
            return self.tcp_rcv_state_process(id, seg, skb);
        }
        let len = skb.len();
        let new_ack = seq_gt(seg.ack, s.snd_una);
        if len == 0 {
            if !new_ack {
                // A duplicate ACK needs the slow path's bookkeeping.
                return self.tcp_rcv_state_process(id, seg, skb);
            }
            // Fast path 1: a pure ACK for new data (the sender's steady state).
            s.last_rcv = now;
            if let Some((tsval, _)) = seg.timestamps {
                s.ts_recent = tsval;
            }
            s.snd_wl1 = seg.seq;
            s.snd_wl2 = seg.ack;
            if let Some(ka) = s.keepalive {
                s.ka_timer = Some(now + ka.idle);
            }
            self.snmp.tcp_ext.tcp_hp_acks += 1;
            self.tcp_ack_advance(id, seg.ack);
            self.tcp_write_xmit(id);
            return;
        }
        let room = s.rcv_wup.wrapping_add(s.rcv_wnd).wrapping_sub(s.rcv_nxt) as usize;
        if new_ack || len > room || s.rmem + skb.end() > 2 * s.rcvbuf {
            return self.tcp_rcv_state_process(id, seg, skb);
        }
        // Fast path 2: in-order data, nothing new acknowledged (the receiver's steady
        // state): straight onto the receive queue.
        s.last_rcv = now;
        if let Some((tsval, _)) = seg.timestamps {
            s.ts_recent = tsval;
        }
        s.rcv_nxt = s.rcv_nxt.wrapping_add(len as u32);
        s.rcvq_bytes += len;
        s.rmem += skb.end();
        // A GRO/GSO super-packet stands for `gso_segs` segments (tcp_measure_rcv_mss
        // looks at gso_size): "every second full segment" counts them.
        s.segs_unacked += u32::from(skb.gso_segs.max(1));
        s.rcvq.push_back(skb);
        s.ack_pending = true;
        if let Some(ka) = s.keepalive {
            s.ka_timer = Some(now + ka.idle);
        }
        self.snmp.tcp_ext.tcp_hp_hits += 1;
        self.tcp_wake(id, true, false);
        self.tcp_ack_snd_check(id);
    }

    /// `tcp_rcv_state_process`: everything but LISTEN and TIME_WAIT.
    fn tcp_rcv_state_process(&mut self, id: SocketId, seg: &TcpRepr, skb: Skb) {
        let Some(state) = self.tcp_state(id) else {
            return;
        };
        if state == TcpState::SynSent {
            self.tcp_rcv_synsent_state_process(id, seg);
            return;
        }
        let f = seg.flags;
        let seg_len = skb.len() as u32;
        let now = self.now;
        let s = self.tcp_sock_mut(id).expect("exists");
        // Anything from the peer proves it alive (keepalive restarts its idle clock).
        s.last_rcv = now;
        s.ka_probes_out = 0;
        if let Some(ka) = s.keepalive {
            s.ka_timer = Some(now + ka.idle);
        }

        // PAWS (RFC 7323 5.3): a timestamp older than the last one seen is a segment from
        // an old incarnation of the sequence space.
        if s.ts_ok && !f.contains(TcpFlags::RST) {
            if let Some((tsval, _)) = seg.timestamps {
                if seq_lt(tsval, s.ts_recent) {
                    self.snmp.tcp_ext.paws_estab += 1;
                    self.tcp_send_ack(id);
                    return;
                }
            }
        }

        // 1. Sequence number check (RFC 9293 3.10.7.4, first).
        let rcv_wnd = s.rcv_wup.wrapping_add(s.rcv_wnd).wrapping_sub(s.rcv_nxt);
        let rcv_wnd = if seq_lt(s.rcv_wup.wrapping_add(s.rcv_wnd), s.rcv_nxt) {
            0
        } else {
            rcv_wnd
        };
        let seg_end = seg
            .seq
            .wrapping_add(seg_len)
            .wrapping_add(u32::from(f.contains(TcpFlags::FIN)));
        let acceptable = if seg_len == 0 && !f.contains(TcpFlags::FIN) {
            if rcv_wnd == 0 {
                seg.seq == s.rcv_nxt
            } else {
                // A keepalive or zero-window probe (seq = rcv_nxt - 1) fails this test
                // on purpose: the answer to an unacceptable segment is an ACK.
                seq_ge(seg.seq, s.rcv_nxt) && seq_lt(seg.seq, s.rcv_nxt.wrapping_add(rcv_wnd))
            }
        } else if rcv_wnd == 0 {
            // A zero window still accepts the ACK and FIN at rcv_nxt.
            seg.seq == s.rcv_nxt
        } else {
            let wnd_end = s.rcv_nxt.wrapping_add(rcv_wnd);
            (seq_ge(seg.seq, s.rcv_nxt) && seq_lt(seg.seq, wnd_end))
                || (seq_gt(seg_end, s.rcv_nxt) && seq_le(seg_end, wnd_end))
                || (seq_lt(seg.seq, s.rcv_nxt) && seq_gt(seg_end, s.rcv_nxt))
        };
        if !acceptable {
            if f.contains(TcpFlags::RST) {
                return;
            }
            if f.contains(TcpFlags::SYN) {
                // RFC 5961 4.2: a SYN is challenged whatever its sequence number, and
                // the challenge is counted and rate limited (Linux's syn_challenge).
                self.snmp.tcp.in_errs += 1;
                self.tcp_send_challenge_ack(id);
                return;
            }
            // RFC 9293 3.10.7.4: an unacceptable segment is answered with an ACK. Data
            // (a retransmission we already have) is answered at once; a bare ACK out of
            // the window at most every 500 ms (`tcp_oow_rate_limited`), so a stream of
            // forged ACKs cannot make us send one for each.
            if seg_len > 0 || f.contains(TcpFlags::FIN) || self.tcp_oow_allowed(id) {
                // Data we already have: say so with a D-SACK (RFC 2883), so the sender
                // learns its retransmission was spurious (`tcp_send_dupack`).
                let s = self.tcp_sock_mut(id).expect("exists");
                if s.sack_ok && seg_len > 0 && seq_le(seg_end, s.rcv_nxt) {
                    s.dsack = Some((seg.seq, seg.seq.wrapping_add(seg_len)));
                    self.snmp.tcp_ext.tcp_dsack_old_sent += 1;
                }
                self.tcp_send_ack(id);
            }
            return;
        }

        // 2. RST (RFC 5961 3.2): only exactly at rcv_nxt resets; elsewhere in the window
        // it earns a challenge ACK.
        if f.contains(TcpFlags::RST) {
            if seg.seq == s.rcv_nxt {
                self.tcp_reset(id);
            } else {
                self.tcp_send_challenge_ack(id);
            }
            return;
        }

        // Remember the newest timestamp for echoing (RFC 7323 4.3).
        if s.ts_ok {
            if let Some((tsval, _)) = seg.timestamps {
                if seq_le(seg.seq, s.rcv_nxt) && seq_ge(tsval, s.ts_recent) {
                    s.ts_recent = tsval;
                }
            }
        }

        // 4. SYN in a synchronized state (RFC 5961 4.2): challenge ACK.
        if f.contains(TcpFlags::SYN) {
            if state == TcpState::SynRecv && seg.seq == s.irs {
                // A retransmitted SYN: our SYN-ACK was lost; send it again.
                if let Some(first) = s.write_queue.front_mut() {
                    if first.syn {
                        first.lost = true;
                    }
                }
                self.tcp_write_xmit(id);
                return;
            }
            self.tcp_send_challenge_ack(id);
            return;
        }

        // 5. ACK.
        if !f.contains(TcpFlags::ACK) {
            return;
        }
        if state == TcpState::SynRecv {
            if seq_lt(s.snd_una, seg.ack) && seq_le(seg.ack, s.snd_nxt) {
                self.tcp_synrecv_established(id);
            } else {
                let (local, remote) = (s.local.expect("set"), s.remote.expect("set"));
                self.tcp_v4_send_reset(*remote.ip(), *local.ip(), seg, seg_len);
                return;
            }
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        // RFC 5961 5.2: ACKs for data never sent, or older than the window could have
        // reached, are answered and dropped.
        if seq_gt(seg.ack, s.snd_nxt) {
            self.tcp_send_challenge_ack(id);
            return;
        }
        if seq_lt(seg.ack, s.snd_una.wrapping_sub(s.max_window.max(65535))) {
            self.tcp_send_challenge_ack(id);
            return;
        }
        self.tcp_ack(id, seg, seg_len);
        let Some(state) = self.tcp_state(id) else {
            return;
        };
        if state == TcpState::Closed {
            return;
        }

        // 7. Segment text.
        if seg_len > 0 {
            if matches!(
                state,
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
            ) {
                self.tcp_data_queue(id, seg.seq, skb);
            } else {
                // After the peer's FIN: data beyond it is ignored (RFC 9293).
                self.tcp_send_ack(id);
            }
        }

        // 8. FIN (only once everything before it has arrived).
        if f.contains(TcpFlags::FIN) {
            let s = self.tcp_sock_mut(id).expect("exists");
            let fin_seq = seg.seq.wrapping_add(seg_len);
            if fin_seq == s.rcv_nxt && !s.fin_received {
                self.tcp_fin(id);
            } else if !s.fin_received {
                // FIN after a hole: the data before it is queued out of order; the
                // FIN is seen again when the peer retransmits.
                self.tcp_send_ack(id);
            }
        }
        self.tcp_ack_snd_check(id);
        self.tcp_write_xmit(id);
    }

    /// SYN_SENT processing (RFC 9293 3.10.7.3).
    fn tcp_rcv_synsent_state_process(&mut self, id: SocketId, seg: &TcpRepr) {
        let f = seg.flags;
        let s = self.tcp_sock_mut(id).expect("exists");
        if f.contains(TcpFlags::ACK) && (seq_le(seg.ack, s.iss) || seq_gt(seg.ack, s.snd_nxt)) {
            if !f.contains(TcpFlags::RST) {
                let (local, remote) = (s.local.expect("set"), s.remote.expect("set"));
                self.tcp_v4_send_reset(*remote.ip(), *local.ip(), seg, 0);
            }
            return;
        }
        if f.contains(TcpFlags::RST) {
            if f.contains(TcpFlags::ACK) {
                // Connection refused.
                s.err = Some(crate::ipv4::SendError::ConnectionRefused);
                self.snmp.tcp.attempt_fails += 1;
                self.tcp_set_closed(id);
            }
            return;
        }
        if !f.contains(TcpFlags::SYN) {
            return;
        }
        let Some(mtu) = self.tcp_dst(id).map(|rt| rt.mtu) else {
            return;
        };
        let s = self.tcp_sock_mut(id).expect("exists");
        s.irs = seg.seq;
        s.rcv_nxt = seg.seq.wrapping_add(1);
        s.rcv_wup = s.rcv_nxt;
        Self::tcp_apply_syn_options(s, seg, mtu);
        if f.contains(TcpFlags::ACK) {
            // Our SYN is acknowledged: established. The window in a SYN is not scaled.
            s.snd_wnd = u32::from(seg.window);
            s.max_window = s.snd_wnd;
            s.snd_wl1 = seg.seq;
            s.snd_wl2 = seg.ack;
            self.tcp_ack_advance(id, seg.ack);
            let s = self.tcp_sock_mut(id).expect("exists");
            s.state = TcpState::Established;
            self.snmp.tcp.curr_estab += 1;
            self.tcp_send_ack(id);
            self.tcp_wake(id, false, true);
            self.tcp_write_xmit(id);
        } else {
            // Simultaneous open (RFC 9293 figure 7): SYN_RECV, answer with SYN-ACK.
            s.state = TcpState::SynRecv;
            s.snd_wnd = u32::from(seg.window);
            if let Some(first) = s.write_queue.front_mut() {
                first.lost = true;
            }
            self.tcp_write_xmit(id);
        }
    }

    /// The handshake's last ACK arrived: the child goes to its listener's accept queue.
    fn tcp_synrecv_established(&mut self, id: SocketId) {
        let s = self.tcp_sock_mut(id).expect("exists");
        s.state = TcpState::Established;
        let parent = s.parent;
        self.snmp.tcp.curr_estab += 1;
        match parent {
            Some(p) => {
                if let Some(Sock::Tcp(l)) = self.sk.socks.get_mut(p) {
                    l.syn_q_len = l.syn_q_len.saturating_sub(1);
                    l.accept_q.push_back(id.0);
                }
                self.tcp_wake(SocketId(p), true, false);
            }
            None => self.tcp_wake(id, false, true),
        }
    }

    /// A valid RST: the connection is reset (ECONNRESET, or ECONNREFUSED in SYN_SENT).
    fn tcp_reset(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let state = s.state;
        s.err = Some(match state {
            TcpState::SynSent => crate::ipv4::SendError::ConnectionRefused,
            TcpState::CloseWait => crate::ipv4::SendError::BrokenPipe,
            _ => crate::ipv4::SendError::ConnectionReset,
        });
        let parent = s.parent;
        if parent.is_some() {
            s.orphan = true;
        }
        if matches!(state, TcpState::Established | TcpState::CloseWait) {
            self.snmp.tcp.estab_resets += 1;
        }
        // A child that never got accepted just disappears from its listener.
        if let Some(p) = parent {
            if let Some(Sock::Tcp(l)) = self.sk.socks.get_mut(p) {
                l.accept_q.retain(|&c| c != id.0);
                if state == TcpState::SynRecv {
                    l.syn_q_len = l.syn_q_len.saturating_sub(1);
                }
            }
        }
        self.tcp_set_closed(id);
    }

    /// `tcp_ack`: process the acknowledgment field: window update, newly acked data,
    /// RTT, congestion control, duplicate ACKs and fast retransmit (RFC 5681 3.2,
    /// NewReno per RFC 6582).
    fn tcp_ack(&mut self, id: SocketId, seg: &TcpRepr, seg_len: u32) {
        let now = self.now;
        let s = self.tcp_sock_mut(id).expect("exists");
        let ack = seg.ack;
        let window = u32::from(seg.window) << s.snd_wscale;
        let prior_una = s.snd_una;
        // Window update (RFC 9293 3.10.7.4, fifth, "SND.WL1/WL2" rule).
        let window_changed = window != s.snd_wnd;
        if seq_lt(s.snd_wl1, seg.seq) || (s.snd_wl1 == seg.seq && seq_le(s.snd_wl2, ack)) {
            s.snd_wnd = window;
            s.snd_wl1 = seg.seq;
            s.snd_wl2 = ack;
            s.max_window = s.max_window.max(window);
            if window > 0 {
                s.persist_timer = None;
                s.probes = 0;
            }
        }
        let dsacks_before = s.dsacks_seen;
        let new_sacks = if s.sack_ok {
            s.tcp_sacktag(now, ack, &seg.sack_blocks)
        } else {
            0
        };
        let new_dsacks = u64::from(s.dsacks_seen - dsacks_before);
        if seq_gt(ack, prior_una) {
            // New data acknowledged; the RTT sample (Karn: never from a retransmitted
            // segment) is taken there too.
            self.tcp_ack_advance(id, ack);
        } else if ack == prior_una
            && seg_len == 0
            && !seg.flags.contains(TcpFlags::FIN)
            && (!window_changed || new_sacks > 0)
            && s.snd_una != s.snd_nxt
        {
            // A duplicate ACK (RFC 5681 section 2).
            s.dupacks += 1;
            if s.recovery.is_some() {
                if !s.sack_ok {
                    // Each further dupack means a segment left the network (inflation).
                    s.cwnd += 1;
                }
            } else if s.dupacks == 3 || (s.sack_ok && s.tcp_mark_lost() > 0) {
                // Fast retransmit and enter fast recovery (RFC 6582 3.2 step 2; with
                // SACK, RFC 6675 section 5: cwnd = ssthresh, the pipe does the rest).
                let ssthresh = s.cong_ssthresh();
                s.ssthresh = ssthresh;
                s.recovery = Some(s.snd_nxt);
                if let Some(head) = s.write_queue.iter_mut().find(|t| !t.sacked) {
                    head.lost = true;
                }
                if s.sack_ok {
                    s.cwnd = ssthresh;
                    s.tcp_mark_lost();
                    self.snmp.tcp_ext.tcp_sack_recovery += 1;
                } else {
                    s.cwnd = ssthresh + 3;
                    self.snmp.tcp_ext.tcp_reno_recovery += 1;
                }
            }
        }
        self.snmp.tcp_ext.tcp_dsack_recv += new_dsacks;
        let s = self.tcp_sock_mut(id).expect("exists");
        if s.recovery.is_some() && s.sack_ok && new_sacks > 0 {
            s.tcp_mark_lost();
        }
        // RACK (RFC 8985) on every ACK: time-based loss detection, which also catches
        // a lost retransmission that would otherwise wait for the RTO.
        if s.sack_ok && s.rack_detect_loss(now) > 0 && s.recovery.is_none() {
            let ssthresh = s.cong_ssthresh();
            s.ssthresh = ssthresh;
            s.cwnd = ssthresh;
            s.recovery = Some(s.snd_nxt);
            self.snmp.tcp_ext.tcp_sack_recovery += 1;
        }
        let s = self.tcp_sock_mut(id).expect("exists");
        // Our FIN acknowledged: the closing states move on.
        let fin_acked = s.fin_queued && s.snd_una == s.snd_nxt && s.write_queue.is_empty();
        if fin_acked {
            match s.state {
                TcpState::FinWait1 => {
                    s.state = TcpState::FinWait2;
                    if s.orphan {
                        s.tw_timer = Some(now + super::FIN_TIMEOUT);
                    }
                }
                TcpState::Closing => self.tcp_time_wait(id),
                TcpState::LastAck => {
                    self.tcp_set_closed(id);
                }
                _ => {}
            }
        }
    }

    /// Remove fully acknowledged segments, sample the RTT, grow the window, restart or
    /// stop the retransmission timer (`tcp_clean_rtx_queue`).
    fn tcp_ack_advance(&mut self, id: SocketId, ack: u32) {
        let now = self.now;
        let s = self.tcp_sock_mut(id).expect("exists");
        let mut acked_segs = 0u32;
        let mut acked_bytes = 0usize;
        let mut rtt_sample = None;
        let mut delivered = Vec::new();
        while let Some(seg) = s.write_queue.front_mut() {
            if seq_le(seg.end_seq, ack) {
                if let (Some(t), false) = (seg.sent, seg.retransmitted) {
                    rtt_sample = Some(now.saturating_duration_since(t));
                }
                if !seg.sacked {
                    delivered.push((seg.xmit_at, seg.xmit_order, seg.retransmitted));
                }
                acked_bytes += seg.skb.len();
                acked_segs += 1;
                s.write_queue.pop_front();
            } else if seq_lt(seg.seq, ack) {
                // Partly acknowledged: trim it (tcp_trim_head).
                let n = ack.wrapping_sub(seg.seq) as usize;
                let n_payload = n.saturating_sub(usize::from(seg.syn)).min(seg.skb.len());
                let _ = seg.skb.pull(n_payload);
                if seg.syn {
                    seg.syn = false;
                }
                seg.seq = ack;
                acked_bytes += n_payload;
                break;
            } else {
                break;
            }
        }
        s.snd_una = ack;
        if seq_lt(s.snd_nxt, ack) {
            s.snd_nxt = ack;
        }
        s.wq_bytes = s.wq_bytes.saturating_sub(acked_bytes);
        s.dupacks = 0;
        s.retransmits = 0;
        s.retrans_stamp = None;
        s.backoff = 0;
        if let Some(rtt) = rtt_sample {
            s.rtt_update(rtt);
        }
        for (xmit, order, retransmitted) in delivered {
            s.rack_update(now, xmit, order, retransmitted);
        }
        // NewReno (RFC 6582 3.2 steps 3-4): a partial ACK retransmits the next hole; a
        // full ACK ends recovery with cwnd = ssthresh.
        if let Some(recover) = s.recovery {
            if seq_ge(ack, recover) {
                s.recovery = None;
                s.cwnd = s.ssthresh.min(s.in_flight() + 1).max(2);
            } else if s.sack_ok {
                // RFC 6675: the scoreboard says what is lost; the window stays ssthresh.
                s.tcp_mark_lost();
                if let Some(head) = s.write_queue.front_mut() {
                    if !head.sacked && !head.retransmitted {
                        head.lost = true;
                    }
                }
            } else {
                if let Some(head) = s.write_queue.front_mut() {
                    head.lost = true;
                }
                s.cwnd = s.cwnd.saturating_sub(acked_segs).max(1) + 1;
            }
        } else {
            s.cong_avoid(now, acked_segs);
        }
        s.rto_timer = if s.snd_una == s.snd_nxt {
            None
        } else {
            Some(now + s.rto)
        };
        // A new flight: the next probe may go once this one goes quiet.
        if s.tlp_high_seq.is_some_and(|h| seq_ge(ack, h)) {
            s.tlp_high_seq = None;
        }
        s.tlp_timer = None;
        s.arm_tlp(now);
        let wake = s.want_write && s.wq_bytes < s.sndbuf / 2;
        if wake {
            self.tcp_wake(id, false, true);
        }
    }

    /// Queue received data: in order onto the receive queue (then anything the
    /// out-of-order queue now continues), ahead of a hole into the out-of-order queue
    /// (`tcp_data_queue`, `tcp_ofo_queue`).
    fn tcp_data_queue(&mut self, id: SocketId, seq: u32, mut skb: Skb) {
        let s = self.tcp_sock_mut(id).expect("exists");
        // Trim what we already have.
        if seq_lt(seq, s.rcv_nxt) {
            let dup = s.rcv_nxt.wrapping_sub(seq) as usize;
            if dup >= skb.len() {
                // Entirely old: a retransmission; ACK at once (it may mean our ACK was
                // lost), reporting the duplicate (D-SACK, RFC 2883).
                if s.sack_ok {
                    s.dsack = Some((seq, seq.wrapping_add(skb.len() as u32)));
                    self.snmp.tcp_ext.tcp_dsack_old_sent += 1;
                }
                self.tcp_send_ack(id);
                return;
            }
            let _ = skb.pull(dup);
        }
        let seq = if seq_lt(seq, s.rcv_nxt) {
            s.rcv_nxt
        } else {
            seq
        };
        // Never beyond the window we offered.
        let right = s.rcv_wup.wrapping_add(s.rcv_wnd);
        let room = right.wrapping_sub(seq) as usize;
        if seq_ge(seq, right) {
            self.tcp_send_ack(id);
            return;
        }
        skb.trim(room);
        let truesize = skb.end();
        if s.rmem + truesize > 2 * s.rcvbuf {
            // Buffer memory exhausted (a peer sending tiny segments): drop, the sender
            // retransmits once the application has read (tcp_try_rmem_schedule).
            self.snmp.tcp_ext.tcp_rcvq_drop += 1;
            self.tcp_send_ack(id);
            return;
        }
        if seq == s.rcv_nxt {
            s.rcv_nxt = s.rcv_nxt.wrapping_add(skb.len() as u32);
            s.rcvq_bytes += skb.len();
            s.rmem += truesize;
            let segs = u32::from(skb.gso_segs.max(1));
            s.rcvq.push_back(skb);
            // Anything queued out of order that now fits?
            while let Some((&oseq, _)) = s.ooo.first_key_value() {
                if seq_gt(oseq, s.rcv_nxt) {
                    break;
                }
                let (_, mut o) = s.ooo.pop_first().expect("non-empty");
                s.ooo_bytes -= o.len();
                let end = oseq.wrapping_add(o.len() as u32);
                if seq_le(end, s.rcv_nxt) {
                    s.rmem -= o.end();
                    continue;
                }
                let _ = o.pull(s.rcv_nxt.wrapping_sub(oseq) as usize);
                s.rcv_nxt = end;
                s.rcvq_bytes += o.len();
                s.rcvq.push_back(o);
            }
            s.segs_unacked += segs;
            s.ack_pending = true;
            let had_ooo = !s.ooo.is_empty();
            self.tcp_wake(id, true, false);
            if had_ooo {
                self.tcp_send_ack(id);
            }
        } else {
            // Out of order: keep it (bounded by rmem above) and ACK at once so the
            // sender sees the duplicate ACKs it needs (RFC 5681 4.2).
            if s.ooo.contains_key(&seq) {
                if s.sack_ok {
                    s.dsack = Some((seq, seq.wrapping_add(skb.len() as u32)));
                }
            } else {
                s.ooo_bytes += skb.len();
                s.rmem += truesize;
                s.last_ooo = seq;
                s.ooo.insert(seq, skb);
            }
            self.tcp_send_ack(id);
        }
    }

    /// The peer's FIN, in order (`tcp_fin`).
    fn tcp_fin(&mut self, id: SocketId) {
        let s = self.tcp_sock_mut(id).expect("exists");
        s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
        s.fin_received = true;
        match s.state {
            TcpState::Established => s.state = TcpState::CloseWait,
            TcpState::FinWait1 => {
                // Our FIN not yet acknowledged: simultaneous close.
                s.state = TcpState::Closing;
            }
            TcpState::FinWait2 => {
                self.tcp_send_ack(id);
                self.tcp_time_wait(id);
                self.tcp_wake(id, true, false);
                return;
            }
            _ => {}
        }
        self.tcp_send_ack(id);
        self.tcp_wake(id, true, false);
    }

    /// Enter TIME_WAIT for 2 MSL (Linux: 60 s).
    pub(crate) fn tcp_time_wait(&mut self, id: SocketId) {
        let now = self.now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        s.state = TcpState::TimeWait;
        s.rto_timer = None;
        s.tlp_timer = None;
        s.delack_timer = None;
        s.persist_timer = None;
        s.tw_timer = Some(now + super::TIME_WAIT_LEN);
        s.write_queue.clear();
        s.wq_bytes = 0;
    }

    /// `tcp_timewait_state_process`: re-ACK a retransmitted FIN; a new SYN may reuse the
    /// 4-tuple once its sequence number is beyond the old connection's (RFC 9293
    /// 3.6.1 via RFC 6191's spirit); other segments get an ACK, RST ends it early.
    fn tcp_timewait_state_process(&mut self, id: SocketId, seg: &TcpRepr, len: usize) {
        let f = seg.flags;
        let Some(s) = self.tcp_sock(id) else { return };
        if f.contains(TcpFlags::RST) {
            // RFC 1337: ignore RSTs in TIME_WAIT (Linux's default tcp_rfc1337=0 kills
            // the socket; both are allowed, the kernel's choice is kept).
            self.tcp_set_closed(id);
            self.tcp_reap(id);
            return;
        }
        if f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::ACK) && seq_gt(seg.seq, s.rcv_nxt) {
            let (local, remote) = (s.local.expect("set"), s.remote.expect("set"));
            self.tcp_set_closed(id);
            self.tcp_reap(id);
            if let Some(l) = self.tcp_lookup_listener(*local.ip(), local.port()) {
                let pool = self.pool.clone();
                self.tcp_listen_rcv(l, *remote.ip(), *local.ip(), seg, pool.alloc(0));
            }
            return;
        }
        if f.contains(TcpFlags::FIN) || len > 0 {
            self.tcp_send_ack(id);
        }
    }

    /// Decide between an immediate and a delayed ACK (`__tcp_ack_snd_check`): ACK every
    /// second full segment (RFC 5681 4.2), at once in quick-ACK mode, else within 40 ms.
    fn tcp_ack_snd_check(&mut self, id: SocketId) {
        let now = self.now;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if !s.ack_pending {
            return;
        }
        if s.segs_unacked >= 2 || s.quickack > 0 {
            s.quickack = s.quickack.saturating_sub(1);
            self.tcp_send_ack(id);
        } else if s.delack_timer.is_none() {
            s.delack_timer = Some(now + super::timer::DELACK);
        }
    }
}

impl TcpSock {
    /// `tcp_sacktag_write_queue`: mark segments the peer holds out of order. Returns how
    /// many were newly marked. A block at or below the cumulative ACK is a D-SACK report
    /// (RFC 2883) and marks nothing.
    fn tcp_sacktag(
        &mut self,
        now: Instant,
        ack: u32,
        blocks: &crate::wire::tcp::SackBlocks,
    ) -> u32 {
        let mut newly = 0;
        let mut delivered = Vec::new();
        // D-SACK (RFC 2883): a first block at or below the cumulative ACK reports a
        // duplicate, i.e. one of our retransmissions was not needed.
        if let Some(&(_, right)) = blocks.iter().next() {
            if seq_le(right, ack) {
                self.reo_wnd_mult = (self.reo_wnd_mult + 1).min(16);
                self.dsacks_seen += 1;
            }
        }
        for &(left, right) in blocks.iter() {
            if seq_le(right, ack) || seq_gt(right, self.snd_nxt) || !seq_lt(left, right) {
                continue;
            }
            for t in self.write_queue.iter_mut() {
                if seq_ge(t.seq, right) {
                    break;
                }
                if !t.sacked && seq_ge(t.seq, left) && seq_le(t.end_seq, right) {
                    t.sacked = true;
                    t.lost = false;
                    newly += 1;
                    delivered.push((t.xmit_at, t.xmit_order, t.retransmitted));
                }
            }
        }
        for (xmit, order, retransmitted) in delivered {
            self.rack_update(now, xmit, order, retransmitted);
        }
        newly
    }

    /// RFC 8985 6.2 step 2: a segment was delivered (acked or SACKed); remember the
    /// newest send time delivered and its RTT. A retransmitted segment whose RTT is
    /// below the minimum was acknowledged for its original transmission: ignored.
    pub(crate) fn rack_update(
        &mut self,
        now: Instant,
        xmit: Option<Instant>,
        order: u64,
        retransmitted: bool,
    ) {
        let Some(xmit) = xmit else { return };
        let rtt = now.saturating_duration_since(xmit).as_micros() as u64;
        if retransmitted && self.min_rtt_us.is_some_and(|m| rtt < m) {
            return;
        }
        // RFC 8985 `RACK_sent_after`, by transmission order rather than time and
        // sequence: exact even for segments sent in the same clock tick.
        if order > self.rack_order {
            self.rack_xmit = Some(xmit);
            self.rack_order = order;
            self.rack_rtt_us = rtt;
        }
    }

    /// RFC 8985 6.2 step 5: a retransmitted segment sent before the newest delivered
    /// one, and outstanding longer than that one's RTT plus the reordering window, was
    /// lost again. Counting SACKs above it cannot tell (they were counted already), so
    /// without this only the RTO would resend it. Returns how many were newly marked.
    pub(crate) fn rack_detect_loss(&mut self, now: Instant) -> u32 {
        if self.rack_xmit.is_none() {
            return 0;
        }
        // RFC 8985 6.2.4: a quarter of the minimum RTT, widened by each round that
        // D-SACK showed a retransmission was spurious (reordering, not loss), but never
        // beyond the smoothed RTT.
        let quarter = self.min_rtt_us.unwrap_or(0) / 4;
        let reo_wnd =
            (quarter * u64::from(self.reo_wnd_mult)).min(self.srtt_us.unwrap_or(u64::MAX));
        let nxt = self.snd_nxt;
        let mut newly = 0;
        for t in self.write_queue.iter_mut() {
            if seq_ge(t.seq, nxt) {
                break;
            }
            let Some(x) = t.xmit_at else { continue };
            // Only retransmissions: first transmissions stay with the DupThresh rule.
            // Applied to everything, this RACK (without RFC 8985's reordering timer and
            // its finer window adaptation) traded fewer timeouts under loss for more
            // spurious retransmissions under reordering in the impairment scenarios;
            // for a lost retransmission it only helps.
            if t.sacked || t.lost || !t.retransmitted || t.xmit_order >= self.rack_order {
                continue;
            }
            let deadline = x + Duration::from_micros(self.rack_rtt_us + reo_wnd);
            if deadline <= now {
                t.lost = true;
                newly += 1;
            }
        }
        newly
    }

    /// DupThresh: 3 (RFC 5681), lowered for a small flight by Early Retransmit (RFC
    /// 5827: with fewer than four segments outstanding, one less than their number),
    /// since a window of two or three can never produce three duplicate ACKs and every
    /// loss would otherwise cost an RTO; at the ~5-segment windows a 5% loss rate allows,
    /// that is most losses.
    pub(crate) fn dup_thresh(&self) -> u32 {
        let outstanding = self
            .write_queue
            .iter()
            .take_while(|t| seq_lt(t.seq, self.snd_nxt))
            .count() as u32;
        // RFC 5827 2.1: only when nothing new can be sent, because there is nothing
        // or the peer's window forbids it; otherwise new data brings its own SACKs.
        let next_unsent = self
            .write_queue
            .iter()
            .enumerate()
            .find(|(_, t)| seq_ge(t.seq, self.snd_nxt));
        let blocked = match next_unsent {
            None => true,
            Some((i, t)) => {
                let no_window = seq_gt(t.end_seq, self.snd_una.wrapping_add(self.snd_wnd));
                // Held back by Nagle is not ready either (Linux's tcp_may_send_now).
                let nagle = t.skb.len() < usize::from(self.mss)
                    && i + 1 == self.write_queue.len()
                    && !t.fin
                    && !self.nodelay;
                no_window || nagle
            }
        };
        if outstanding < 4 && blocked {
            outstanding.saturating_sub(1).max(1)
        } else {
            3
        }
    }

    /// RFC 6675 section 4 `IsLost` with DupThresh = 3: an unSACKed segment with three
    /// SACKed segments above it is lost. Returns how many were newly marked.
    pub(crate) fn tcp_mark_lost(&mut self) -> u32 {
        let thresh = self.dup_thresh();
        let nxt = self.snd_nxt;
        let mut sacked_above = 0;
        let mut newly = 0;
        for t in self.write_queue.iter_mut().rev() {
            if seq_ge(t.seq, nxt) {
                continue;
            }
            if t.sacked {
                sacked_above += 1;
            } else if sacked_above >= thresh && !t.lost && !t.retransmitted {
                t.lost = true;
                newly += 1;
            }
        }
        newly
    }

    /// Arm the tail loss probe (RFC 8985 7.2). Only with
    /// SACK, outside fast recovery and RTO recovery (Linux's TCP_CA_Open), and one probe
    /// per flight.
    pub(crate) fn arm_tlp(&mut self, now: Instant) {
        if !self.sack_ok
            || self.recovery.is_some()
            || self.retransmits > 0
            || self.tlp_high_seq.is_some()
            || self.snd_una == self.snd_nxt
            || self.state != TcpState::Established
        {
            self.tlp_timer = None;
            return;
        }
        let Some(srtt) = self.srtt_us else { return };
        // Linux's tcp_schedule_loss_probe: 2 SRTT plus the peer's worst-case delayed
        // ACK when a single segment is out (else 2 ms), and no later than the RTO would
        // fire: a first timeout is then taken by the probe, which does not collapse the
        // window.
        let extra = if self.in_flight_up_to(2) == 1 {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(2)
        };
        let pto_at = now + Duration::from_micros(2 * srtt) + extra;
        self.tlp_timer = Some(match self.rto_timer {
            Some(rto_at) if rto_at < pto_at => rto_at,
            _ => pto_at,
        });
    }

    /// RFC 6298 section 2: SRTT, RTTVAR and RTO from a new sample; RTO floored at
    /// Linux's 200 ms and capped at 120 s.
    pub(crate) fn rtt_update(&mut self, rtt: Duration) {
        let r = rtt.as_micros() as u64;
        self.min_rtt_us = Some(self.min_rtt_us.map_or(r, |m| m.min(r)));
        match self.srtt_us {
            None => {
                self.srtt_us = Some(r);
                self.rttvar_us = r / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(r);
                self.rttvar_us = (3 * self.rttvar_us + diff) / 4;
                self.srtt_us = Some((7 * srtt + r) / 8);
            }
        }
        let srtt = self.srtt_us.unwrap_or(r);
        let rto = Duration::from_micros(srtt + (4 * self.rttvar_us).max(1000));
        self.rto = rto.clamp(super::timer::MIN_RTO, super::timer::MAX_RTO);
    }
}

impl Stack {
    /// A SYN-ACK whose ISN is a SYN cookie; nothing is remembered.
    fn tcp_send_synack_cookie(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr,
        mtu: usize,
    ) {
        let our_mss = mtu.saturating_sub(40).min(65535) as u16;
        let want = seg.mss.unwrap_or(super::DEFAULT_MSS).min(our_mss);
        let (cookie, mss) = self.cookie_v4_init_sequence(local, remote, seg.seq, want);
        let rcv_wscale = TcpSock::choose_rcv_wscale(super::DEFAULT_RCVBUF);
        let ts_now = (self.now.total_micros() / 1000) as u32;
        let mut repr = TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq: cookie,
            ack: seg.seq.wrapping_add(1),
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 65535,
            mss: Some(mss),
            ..Default::default()
        };
        // Window scaling and SACK can only be remembered through the timestamp, so they
        // are offered only when the client uses timestamps (as Linux).
        if let Some((tsval, _)) = seg.timestamps {
            let opts = syncookies::CookieOpts {
                wscale: seg.window_scale,
                sack: seg.sack_permitted,
            };
            repr.timestamps = Some((syncookies::cookie_init_timestamp(ts_now, opts), tsval));
            if seg.window_scale.is_some() {
                repr.window_scale = Some(rcv_wscale);
            }
            repr.sack_permitted = seg.sack_permitted;
        }
        self.snmp.tcp_ext.syncookies_sent += 1;
        self.tcp_output_segment(local, remote, &repr, &[]);
    }

    /// `cookie_v4_check` + `tcp_get_cookie_sock`: an ACK for a listener with no child
    /// may complete a cookie handshake. Returns whether the segment was consumed.
    fn tcp_cookie_accept(
        &mut self,
        l: SocketId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        seg: &TcpRepr,
        skb: Skb,
    ) -> bool {
        let local = SocketAddrV4::new(dst, seg.dst_port);
        let remote = SocketAddrV4::new(src, seg.src_port);
        let client_isn = seg.seq.wrapping_sub(1);
        let cookie = seg.ack.wrapping_sub(1);
        let Some(mss) = self.cookie_v4_check(local, remote, client_isn, cookie) else {
            if self.snmp.tcp_ext.syncookies_sent > 0 {
                self.snmp.tcp_ext.syncookies_failed += 1;
            }
            return false;
        };
        self.snmp.tcp_ext.syncookies_recv += 1;
        let (backlog, accepted) = {
            let p = self.tcp_sock(l).expect("listener");
            (p.backlog, p.accept_q.len())
        };
        if accepted >= backlog {
            self.snmp.tcp_ext.listen_overflows += 1;
            self.snmp.tcp_ext.listen_drops += 1;
            return true;
        }
        let mut c = self.tcp_child(l, local, remote, cookie);
        c.snd_nxt = cookie.wrapping_add(1);
        c.irs = client_isn;
        c.rcv_nxt = seg.seq;
        c.rcv_wup = seg.seq;
        c.mss = mss;
        if let Some((tsval, tsecr)) = seg.timestamps {
            if let Some(opts) = syncookies::cookie_decode_timestamp(tsecr) {
                c.ts_ok = true;
                c.ts_recent = tsval;
                c.mss = c.mss.saturating_sub(12);
                c.sack_ok = opts.sack;
                if let Some(ws) = opts.wscale {
                    c.wscale_ok = true;
                    c.snd_wscale = ws.min(14);
                    c.rcv_wscale = TcpSock::choose_rcv_wscale(super::DEFAULT_RCVBUF);
                }
            }
        }
        // The SYN-ACK advertised 65535 unscaled; that is the edge we offered.
        c.rcv_wnd = 65535;
        c.snd_wl1 = client_isn;
        let id = self.tcp_hash_child(l, c);
        // The ACK completes the handshake (and may carry data): process it as SYN_RECV.
        self.tcp_rcv_state_process(id, seg, skb);
        true
    }
}
