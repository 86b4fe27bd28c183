//! TCP egress (net/ipv4/tcp_output.c): the write queue, `tcp_write_xmit` under the
//! congestion window, the peer's window and Nagle, and `tcp_transmit_skb`, which builds
//! the header and options and hands the segment to `ip_queue_xmit`.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{seq_ge, seq_gt, seq_le, seq_lt, TcpState, TxSeg};
use crate::ipv4::{IpParams, Rtable, DEFAULT_TTL};
use crate::skb::IpSummed;
use crate::stack::{SocketId, Stack};
use crate::wire::ipv4::protocol;
use crate::wire::tcp::{SackBlocks, TcpFlags, TcpRepr};

/// What `tcp_transmit_skb` puts on the wire for one segment.
struct Segment<'a> {
    seq: u32,
    flags: TcpFlags,
    /// The payload, in pieces laid end to end (a super-packet's are its segments').
    payload: &'a [&'a [u8]],
    /// TSO: payload bytes per segment on the wire; 0 for an ordinary segment.
    gso_size: usize,
}

impl Stack {
    /// Queue a SYN or FIN (each takes one sequence number).
    pub(crate) fn tcp_queue_control(&mut self, id: SocketId, syn: bool, fin: bool) {
        let pool = self.pool.clone();
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let seq = s.write_queue.back().map_or(s.snd_nxt, |t| t.end_seq);
        // A FIN rides on the last unsent data segment when there is one (tcp_send_fin).
        if fin {
            if let Some(last) = s.write_queue.back_mut() {
                if !last.fin && !last.syn && seq_ge(last.seq, s.snd_nxt) {
                    last.fin = true;
                    last.end_seq = last.end_seq.wrapping_add(1);
                    return;
                }
            }
        }
        let mut seg = TxSeg::new(seq, pool.alloc(0));
        seg.end_seq = seq.wrapping_add(1);
        (seg.syn, seg.fin) = (syn, fin);
        s.write_queue.push_back(seg);
    }

    /// `tcp_sendmsg` proper: copy `data` into MSS-sized skbs at the tail of the write
    /// queue, filling the last unsent one first.
    pub(crate) fn tcp_append(&mut self, id: SocketId, mut data: &[u8]) {
        let pool = self.pool.clone();
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let mss = usize::from(s.mss);
        s.wq_bytes += data.len();
        if let Some(last) = s.write_queue.back_mut() {
            if !last.fin && !last.syn && seq_ge(last.seq, s.snd_nxt) && last.skb.len() < mss {
                let n = (mss - last.skb.len()).min(data.len());
                if let Ok(buf) = last.skb.try_put(n) {
                    buf.copy_from_slice(&data[..n]);
                    last.end_seq = last.end_seq.wrapping_add(n as u32);
                    data = &data[n..];
                }
            }
        }
        // Runs of full segments share one large buffer (Linux fills page frags the same
        // way): each segment's skb is a clone narrowed to its bytes, so a 64 KB write
        // costs one allocation, not 45, and freeing the acknowledged segments touches
        // one buffer's reference count, not 45 cold ones.
        while data.len() >= 2 * mss {
            let nseg = (data.len() / mss).min(crate::skb::LARGE_BUF_SIZE / mss);
            let bytes = nseg * mss;
            let mut chunk = pool.alloc(bytes);
            chunk.put(bytes).copy_from_slice(&data[..bytes]);
            for k in 0..nseg {
                let mut skb = chunk.clone();
                let _ = skb.pull(k * mss);
                skb.trim(mss);
                s.queue_data(skb);
            }
            data = &data[bytes..];
        }
        while !data.is_empty() {
            let n = mss.min(data.len());
            let mut skb = pool.alloc(mss.max(n));
            skb.put(n).copy_from_slice(&data[..n]);
            s.queue_data(skb);
            data = &data[n..];
        }
    }

    /// `tcp_send_fin`: queue a FIN after the data and move to the closing states.
    pub(crate) fn tcp_send_fin(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        if s.fin_queued {
            return;
        }
        s.fin_queued = true;
        let was_established = matches!(s.state, TcpState::Established | TcpState::CloseWait);
        s.state = match s.state {
            TcpState::CloseWait => TcpState::LastAck,
            _ => TcpState::FinWait1,
        };
        // Leaving ESTABLISHED / CLOSE_WAIT: no longer in CurrEstab (tcp_set_closed only
        // counts sockets still in those states, so an orderly close is counted here).
        if was_established {
            self.snmp.tcp.curr_estab = self.snmp.tcp.curr_estab.saturating_sub(1);
        }
        self.tcp_queue_control(id, false, true);
        self.tcp_write_xmit(id);
    }

    /// `tcp_write_xmit`: retransmit what is marked lost, then send new segments while
    /// the congestion window, the peer's receive window and Nagle (RFC 896 / RFC 1122
    /// 4.2.3.4) allow; arm the retransmission or persist timer.
    pub(crate) fn tcp_write_xmit(&mut self, id: SocketId) {
        let now = self.now;
        let gso_max = self
            .tcp_dst(id)
            .and_then(|rt| self.link.devs.get(rt.dev))
            .map_or(0, |d| d.gso_max_payload());
        let mut in_flight_now = None;
        let mut lost_scan = 0;
        loop {
            let Some(s) = self.tcp_sock_mut(id) else {
                return;
            };
            if matches!(
                s.state,
                TcpState::Closed | TcpState::Listen | TcpState::TimeWait
            ) {
                return;
            }
            // Counted once per call and kept up to date below: every segment sent adds
            // one (a lost one was not counted; a new one was not in flight), so the
            // write queue is walked once, not once per segment.
            let in_flight = *in_flight_now.get_or_insert_with(|| s.in_flight());
            if in_flight >= s.cwnd {
                break;
            }
            // Lost segments first (tcp_xmit_retransmit_queue), scanning on from the
            // last one sent: the queue does not change during this loop.
            let lost = s
                .write_queue
                .range(lost_scan..)
                .take_while(|t| seq_lt(t.seq, s.snd_nxt))
                .position(|t| t.lost)
                .map(|i| lost_scan + i);
            lost_scan = lost.map_or(s.write_queue.len(), |i| i + 1);
            let idx = match lost {
                Some(i) => i,
                None => {
                    // The first unsent segment: the queue is in sequence order.
                    let i = s.write_queue.partition_point(|t| seq_lt(t.seq, s.snd_nxt));
                    if i == s.write_queue.len() {
                        break;
                    }
                    let seg = &s.write_queue[i];
                    // The peer's window (RFC 9293 3.8.6.2.1): a segment must fit, except
                    // that the SYN is always sent.
                    let wnd_end = s.snd_una.wrapping_add(s.snd_wnd);
                    let fits = seg.syn
                        || seq_le(seg.end_seq, wnd_end)
                        || (seg.payload_len() == 0 && seg.fin);
                    if !fits {
                        if s.snd_una == s.snd_nxt && s.persist_timer.is_none() {
                            // Nothing in flight to bring a window update: probe (3.8.6.1).
                            s.persist_timer = Some(now + s.rto);
                        }
                        break;
                    }
                    if s.nagle_defers(i, s.snd_una != s.snd_nxt) {
                        break;
                    }
                    i
                }
            };
            // With TSO, new data leaves as one super-packet of up to `gso_max_payload`
            // bytes: the following full-sized segments join this one while the window,
            // cwnd and Nagle would have sent them now anyway (`tcp_tso_should_defer`
            // aside). The write queue keeps its MSS-sized skbs, so SACK, RACK and
            // retransmission see exactly what they would without TSO; only the wire
            // carries fewer, larger frames.
            let count = if lost.is_none() && gso_max > 0 {
                s.tso_segs(idx, in_flight, gso_max)
            } else {
                1
            };
            let mut retrans_segs = 0;
            for seg in s.write_queue.range_mut(idx..idx + count) {
                let retrans = seg.lost || seg.sent.is_some();
                retrans_segs += u64::from(retrans);
                if retrans {
                    seg.retransmitted = true;
                    seg.sent = None;
                } else {
                    seg.sent = Some(now);
                }
                seg.lost = false;
                seg.xmit_at = Some(now);
                s.tx_counter += 1;
                seg.xmit_order = s.tx_counter;
                if seq_gt(seg.end_seq, s.snd_nxt) {
                    s.snd_nxt = seg.end_seq;
                }
            }
            if s.rto_timer.is_none() {
                s.rto_timer = Some(now + s.rto);
            }
            s.arm_tlp(now);
            s.persist_timer = None;
            in_flight_now = Some(in_flight + count as u32);
            self.snmp.tcp.retrans_segs += retrans_segs;
            self.tcp_transmit_seg(id, idx, count);
        }
    }

    /// `tcp_transmit_skb` for `count` consecutive write-queue segments from `idx`: one
    /// segment, or a TSO super-packet whose payload is theirs end to end.
    fn tcp_transmit_seg(&mut self, id: SocketId, idx: usize, count: usize) {
        let Some(s) = self.tcp_sock(id) else { return };
        let seg = &s.write_queue[idx];
        let last = &s.write_queue[idx + count - 1];
        let mut flags = TcpFlags::ACK;
        if seg.syn {
            flags = if s.state == TcpState::SynSent {
                TcpFlags::SYN
            } else {
                TcpFlags::SYN | TcpFlags::ACK
            };
        }
        if last.fin {
            flags |= TcpFlags::FIN;
        }
        if !last.skb.is_empty() && idx + count == s.write_queue.len() {
            flags |= TcpFlags::PSH;
        }
        // The payload is copied behind fresh headers; the write queue keeps its skbs for
        // retransmission (see docs/architecture.md).
        let seq = seg.seq;
        let mss = usize::from(s.mss);
        if count == 1 {
            let skb = seg.skb.clone();
            self.tcp_transmit_skb(
                id,
                Segment {
                    seq,
                    flags,
                    payload: &[skb.data()],
                    gso_size: 0,
                },
            );
            return;
        }
        let skbs: Vec<_> = s
            .write_queue
            .range(idx..idx + count)
            .map(|t| t.skb.clone())
            .collect();
        let payload: Vec<&[u8]> = skbs.iter().map(|b| b.data()).collect();
        self.tcp_transmit_skb(
            id,
            Segment {
                seq,
                flags,
                payload: &payload,
                gso_size: mss,
            },
        );
    }

    /// Build and send one segment: header, options, checksum (`tcp_transmit_skb`).
    fn tcp_transmit_skb(&mut self, id: SocketId, seg: Segment<'_>) {
        let now = self.now;
        // The MSS we announce is what our link takes (RFC 9293 3.7.1: MTU minus the
        // fixed headers), not the effective segment size after options.
        let Some(rt) = self.tcp_dst(id) else {
            return;
        };
        let link_mtu = self.link.devs.get(rt.dev).map_or(rt.mtu, |d| d.mtu);
        let adv_mss = link_mtu.saturating_sub(40).min(65535) as u16;
        let Some(s) = self.tcp_sock_mut(id) else {
            return;
        };
        let (Some(local), Some(remote)) = (s.local, s.remote) else {
            return;
        };
        let syn = seg.flags.contains(TcpFlags::SYN);
        let window = if syn {
            // RFC 7323 2.2: the window in a SYN is never scaled.
            s.rcv_wnd = Self::tcp_free_space(s).min(65535) as u32;
            s.rcv_wnd.min(65535) as u16
        } else {
            let w = Self::tcp_select_window(s);
            (w >> s.rcv_wscale).min(65535) as u16
        };
        let ack = if seg.flags.contains(TcpFlags::ACK) {
            s.rcv_nxt
        } else {
            0
        };
        let mut repr = TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq: seg.seq,
            ack,
            flags: seg.flags,
            window,
            ..Default::default()
        };
        let ts_val = (now.total_micros() / 1000) as u32;
        if syn {
            repr.mss = Some(adv_mss);
            repr.window_scale = Some(s.rcv_wscale);
            repr.sack_permitted = true;
            repr.timestamps = Some((
                ts_val,
                if s.state == TcpState::SynSent {
                    0
                } else {
                    s.ts_recent
                },
            ));
        } else {
            if s.ts_ok {
                repr.timestamps = Some((ts_val, s.ts_recent));
            }
            if s.sack_ok {
                repr.sack_blocks = Self::tcp_sack_blocks(s);
            }
        }
        if seg.flags.contains(TcpFlags::ACK) {
            // This segment carries the ACK: no delayed ACK is owed any more.
            s.ack_pending = false;
            s.delack_timer = None;
            s.segs_unacked = 0;
        }
        // Options must not push a full segment over the MTU: SACK blocks are what varies,
        // so fewer of them go out (tcp_current_mss counts them against the MSS instead;
        // the effect on the wire is the same: no segment needs fragmenting).
        let per_seg = if seg.gso_size > 0 {
            seg.gso_size
        } else {
            seg.payload.iter().map(|p| p.len()).sum()
        };
        while !repr.sack_blocks.is_empty() && 20 + repr.header_len() + per_seg > rt.mtu {
            let n = repr.sack_blocks_emitted();
            repr.sack_blocks.truncate(n.saturating_sub(1));
        }
        self.tcp_output_gso(&rt, local, remote, &repr, seg.payload, seg.gso_size);
    }

    /// Put a header in front of `payload` and send it from `local` to `remote`.
    pub(crate) fn tcp_output_segment(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        repr: &TcpRepr,
        payload: &[u8],
    ) {
        let Ok(rt) = self.ip_route_output(*remote.ip()) else {
            return;
        };
        self.tcp_output_gso(&rt, local, remote, repr, &[payload], 0);
    }

    /// Put a header in front of the `payload` pieces and send them from `local` to
    /// `remote`: one segment, or with `gso_size > 0` a TSO super-packet the device cuts
    /// into `gso_size`-byte segments (each counted in OutSegs, as the kernel counts
    /// `tcp_skb_pcount`). With checksum offload the checksum is left to the device.
    fn tcp_output_gso(
        &mut self,
        rt: &Rtable,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        repr: &TcpRepr,
        payload: &[&[u8]],
        gso_size: usize,
    ) {
        let hlen = repr.header_len();
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut skb = self.pool.alloc_tx(hlen + len);
        let buf = skb.put(hlen + len);
        let mut at = hlen;
        for piece in payload {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        let segs = if gso_size > 0 && len > gso_size {
            len.div_ceil(gso_size)
        } else {
            1
        };
        if self.link.devs.get(rt.dev).is_some_and(|d| d.offloads.csum) {
            repr.emit_csum_partial(buf, len, *local.ip(), *remote.ip());
            skb.reset_transport_header();
            skb.ip_summed = IpSummed::Partial {
                csum_start: skb.data_offset() as u16,
                csum_offset: 16,
            };
            if segs > 1 {
                skb.gso_size = gso_size as u16;
                skb.gso_segs = segs as u16;
            }
        } else {
            debug_assert_eq!(segs, 1, "TSO without checksum offload");
            repr.emit(buf, len, *local.ip(), *remote.ip());
            skb.reset_transport_header();
        }
        self.snmp.tcp.out_segs += segs as u64;
        if repr.flags.contains(TcpFlags::RST) {
            self.snmp.tcp.out_rsts += 1;
        }
        let params = IpParams {
            src: *local.ip(),
            dst: *remote.ip(),
            protocol: protocol::TCP,
            tos: 0,
            ttl: DEFAULT_TTL,
            dont_frag: true,
        };
        let _ = self.ip_queue_xmit(skb, rt, params);
    }

    /// The SACK blocks of an ACK (RFC 2018 section 4): a D-SACK block first if a
    /// duplicate arrived (RFC 2883), then the out-of-order ranges, the one holding the
    /// most recent segment first. The wire layer keeps as many as fit.
    fn tcp_sack_blocks(s: &mut super::TcpSock) -> SackBlocks {
        let mut blocks = SackBlocks::default();
        if let Some(d) = s.dsack.take() {
            blocks.push(d);
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for (&seq, skb) in &s.ooo {
            let end = seq.wrapping_add(skb.len() as u32);
            match ranges.last_mut() {
                Some(last) if seq_le(seq, last.1) => {
                    if seq_gt(end, last.1) {
                        last.1 = end;
                    }
                }
                _ => ranges.push((seq, end)),
            }
        }
        if let Some(i) = ranges
            .iter()
            .position(|&(l, r)| seq_ge(s.last_ooo, l) && seq_lt(s.last_ooo, r))
        {
            let recent = ranges.remove(i);
            ranges.insert(0, recent);
        }
        for r in ranges {
            if !blocks.push(r) {
                break;
            }
        }
        blocks
    }

    /// `tcp_send_ack`: a bare ACK with the current window.
    pub(crate) fn tcp_send_ack(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock(id) else { return };
        if matches!(
            s.state,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent
        ) {
            return;
        }
        let seq = s.snd_nxt;
        self.tcp_transmit_skb(
            id,
            Segment {
                seq,
                flags: TcpFlags::ACK,
                payload: &[],
                gso_size: 0,
            },
        );
    }

    /// A zero-window probe: an ACK one byte below `snd_una` that the peer must answer
    /// with its current window (`tcp_xmit_probe_skb`).
    pub(crate) fn tcp_send_probe(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock(id) else { return };
        let seq = s.snd_una.wrapping_sub(1);
        self.tcp_transmit_skb(
            id,
            Segment {
                seq,
                flags: TcpFlags::ACK,
                payload: &[],
                gso_size: 0,
            },
        );
    }

    /// `tcp_send_active_reset`: abort with RST at `snd_nxt`.
    pub(crate) fn tcp_send_active_reset(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock(id) else { return };
        let (Some(local), Some(remote)) = (s.local, s.remote) else {
            return;
        };
        let repr = TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq: s.snd_nxt,
            ack: s.rcv_nxt,
            flags: TcpFlags::RST | TcpFlags::ACK,
            ..Default::default()
        };
        self.tcp_output_segment(local, remote, &repr, &[]);
    }

    /// `tcp_v4_send_reset`: answer a segment no connection wants (RFC 9293 3.10.7.1):
    /// with its ACK number as our sequence if it had one, else with an ACK of it.
    pub(crate) fn tcp_v4_send_reset(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        seg: &TcpRepr,
        seg_len: u32,
    ) {
        if seg.flags.contains(TcpFlags::RST)
            || dst.is_broadcast()
            || dst.is_multicast()
            || self.ipv4.fib.is_broadcast(dst)
        {
            return;
        }
        let local = SocketAddrV4::new(dst, seg.dst_port);
        let remote = SocketAddrV4::new(src, seg.src_port);
        let repr = if seg.flags.contains(TcpFlags::ACK) {
            TcpRepr {
                src_port: local.port(),
                dst_port: remote.port(),
                seq: seg.ack,
                flags: TcpFlags::RST,
                ..Default::default()
            }
        } else {
            TcpRepr {
                src_port: local.port(),
                dst_port: remote.port(),
                seq: 0,
                ack: seg.seq.wrapping_add(seg_len),
                flags: TcpFlags::RST | TcpFlags::ACK,
                ..Default::default()
            }
        };
        self.tcp_output_segment(local, remote, &repr, &[]);
    }

    /// Receive buffer space left, in payload bytes.
    pub(crate) fn tcp_free_space(s: &super::TcpSock) -> usize {
        s.rcvbuf.saturating_sub(s.rcvq_bytes + s.ooo_bytes)
    }

    /// `tcp_select_window`: the window to advertise. Never shrinks the right edge already
    /// offered (RFC 9293 3.8.6.2.2) and avoids silly windows on the receive side (RFC 1122
    /// 4.2.3.3: do not open by less than min(rcvbuf/2, MSS)).
    pub(crate) fn tcp_select_window(s: &mut super::TcpSock) -> u32 {
        let free = Self::tcp_free_space(s) as u32;
        let max = 65535u32 << s.rcv_wscale;
        let cur_right = s.rcv_wup.wrapping_add(s.rcv_wnd);
        let cur = cur_right.wrapping_sub(s.rcv_nxt);
        let cur = if seq_lt(cur_right, s.rcv_nxt) { 0 } else { cur };
        // The scaled field loses the low bits: a new window is rounded down, so what we
        // say we can take is never more than we can...
        let unit = 1u32 << s.rcv_wscale;
        let mut win = free.min(max) & !(unit - 1);
        let sws = (s.rcvbuf as u32 / 2).min(u32::from(s.mss));
        if win < sws {
            win = 0;
        }
        if win < cur {
            // ...but the edge already offered is kept, rounded up (Linux's ALIGN in
            // tcp_select_window): rounding it down would move the right edge left, and
            // the peer may have sent up to it already. `cur` is at most `max`, a multiple
            // of `unit`, so this stays within it.
            win = cur.div_ceil(unit) * unit;
        }
        s.rcv_wnd = win;
        s.rcv_wup = s.rcv_nxt;
        win
    }

    /// `tcp_cleanup_rbuf`: after the application read, send a window update if the window
    /// can grow by at least twice the MSS or half the buffer (the receiver's SWS rule).
    pub(crate) fn tcp_cleanup_rbuf(&mut self, id: SocketId) {
        let Some(s) = self.tcp_sock(id) else { return };
        if !matches!(
            s.state,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        ) {
            return;
        }
        let advertised_right = s.rcv_wup.wrapping_add(s.rcv_wnd);
        let left = advertised_right.wrapping_sub(s.rcv_nxt) as usize;
        let free = Self::tcp_free_space(s);
        let step = (2 * usize::from(s.mss)).min(s.rcvbuf / 2);
        if free >= left + step {
            self.tcp_send_ack(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::TcpSock;
    use crate::stack::Stack;
    use crate::time::Instant;

    /// RFC 9293 3.8.6.2.2: the right edge offered never moves left, also when the window
    /// scale's rounding would take a few bytes off it (with a scale of 5, a window kept
    /// at 99948 bytes must not be sent as 99936).
    #[test]
    fn the_right_edge_never_moves_left_under_window_scaling() {
        let mut s = TcpSock::new(Instant::ZERO);
        s.rcv_wscale = 5;
        s.rcvbuf = 99_968;
        s.mss = 1448;
        let first = Stack::tcp_select_window(&mut s);
        assert_eq!(first, 99_968);
        let right = s.rcv_nxt.wrapping_add(first);
        // 20 bytes arrive and the application reads nothing.
        for step in 1..=100u32 {
            s.rcv_nxt = s.rcv_nxt.wrapping_add(20);
            s.rcvq_bytes += 20;
            let win = Stack::tcp_select_window(&mut s);
            assert_eq!(win % 32, 0, "step {step}: representable with the scale");
            assert!(
                s.rcv_nxt.wrapping_add(win) >= right,
                "step {step}: right edge {} moved left of {right}",
                s.rcv_nxt.wrapping_add(win)
            );
        }
    }
}
