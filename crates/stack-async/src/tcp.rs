//! TCP on a ustack stack, shaped like `tokio::net`: [`TcpListener`], [`TcpStream`] (with
//! borrowed and owned halves) and [`TcpSocket`], using `SocketAddrV4` for addresses.
//!
//! ```text
//!   stack thread                                             caller's executor
//!   tcp_rcv -> core rcvq --pull (Readable)----> recv skbs (256 KiB) --> poll_read / peek
//!   tcp_sendmsg <-------- push (kick, Writable) -- send ring (256 KiB) <-- poll_write
//!   accept queue --take (Readable)-----------> listener queue (64) --> poll_accept
//! ```
//!
//! Receive. Each connection has a bounded queue of received skbs shared with the stack
//! thread (the "ring" below). The core raises `Event::Readable` when data, the peer's
//! FIN or an error lands on a socket that was not signalled (`sk_data_ready`); the stack
//! thread then *pulls*: `tcp_recv_skb` moves whole skbs, without copying, until the core
//! is empty (which re-arms the signal), the ring is full, or the stream ended. A read
//! copies out of the skbs on the caller's thread: one copy from the wire buffer to the
//! reader's, and reading costs no round trip to the stack thread. A pull stopped by a full ring marks
//! the ring *stalled* (the core will not signal what it still holds), and the reader that
//! brings the ring down to half asks for another pull: one command per 128 KiB read, not
//! per read. While the ring is full the core's receive queue fills and its window closes,
//! so a slow reader slows the peer down: that is the backpressure, nothing grows.
//!
//! Send. A write copies into the connection's send ring and, if no push is queued yet,
//! queues one ("kick"): on the stack thread, a *push* hands the ring to `tcp_sendmsg` until
//! the ring is empty or the core's send buffer is full (`WouldBlock`). Then the core
//! raises `Event::Writable` once acknowledgements bring the buffer under half
//! (`sk_write_space`), and that event pushes again. A full ring makes `poll_write`
//! return `Pending` until a push frees room. At most one kick is in flight per
//! connection, however many writes there are.
//!
//! Wakeups. Every waker is registered under the same lock under which the stack thread
//! changes the ring, and checked again there, so no change can slip between a reader's
//! check and its registration. Wakers are called after the lock is released.
//!
//! Errors. A socket error (`sk_err`: ConnectionReset, ConnectionRefused, TimedOut) is
//! reported once, by the next read (after the data that came before it) or the next
//! write, whichever comes first, as in Linux. After it, reads return end of stream and
//! writes `BrokenPipe`; what the send ring still held is discarded with the connection.
//!
//! Close. Dropping a stream (both halves, for split ones) closes it as Linux's
//! `close()` does: the bytes still in its send ring are handed to the core first
//! (growing its send buffer for them if need be), then `tcp_close` sends a FIN after
//! them and the core finishes the connection by itself (FIN_WAIT, TIME_WAIT). Unread
//! received data, or SO_LINGER 0, make it a reset instead (RFC 2525 section 2.17).

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use stack_core::stack::{Event, SocketId, Stack};
use stack_core::tcp::{
    CongestionControl, Keepalive, Shutdown, TcpState, DEFAULT_RCVBUF, DEFAULT_SNDBUF,
};
use stack_core::{Instant, SendError, Skb};
use tokio::io::ReadBuf;

use crate::handle::{stopped, StackHandle};
use crate::proto::StackCtx;

/// Bytes a connection's receive ring holds, on top of the core's receive buffer.
pub const TCP_RECV_RING: usize = 256 * 1024;
/// Bytes a connection's send ring holds, on top of the core's send buffer.
pub const TCP_SEND_RING: usize = 256 * 1024;
/// The backlog [`TcpListener::bind`] uses, as tokio's does.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Established connections a listener takes from the core's accept queue ahead of
/// `accept`. The rest wait in the core's queue, which the backlog bounds.
pub const ACCEPT_QUEUE: usize = 64;

/// The ring's storage starts at this size and doubles up to its bound as data needs it,
/// so a thousand quiet connections do not hold half a gigabyte of empty rings.
const RING_MIN: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves consistent data (a copy, then the indices), so
    // a panic elsewhere while one was held tells nothing about the data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unsupported_linger() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "ustack: only SO_LINGER 0 (reset on close) is supported, not a close that waits",
    )
}

/// A bounded byte ring. Storage grows (doubling) from [`RING_MIN`] up to `max` only as the
/// data needs it; at its smallest it is given back whenever the ring drains. A write never
/// makes it hold more than `max` bytes.
struct ByteRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    max: usize,
}

impl ByteRing {
    fn new(max: usize) -> ByteRing {
        ByteRing {
            buf: Vec::new(),
            head: 0,
            len: 0,
            max,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len >= self.max
    }

    /// Room left under the bound.
    fn room(&self) -> usize {
        self.max - self.len
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Make the storage big enough for `want` more bytes (within the bound), keeping the
    /// data, which moves to the front.
    fn reserve(&mut self, want: usize) {
        let need = (self.len + want).min(self.max);
        if need <= self.buf.len() {
            return;
        }
        let mut cap = self.buf.len().max(RING_MIN);
        while cap < need {
            cap *= 2;
        }
        let cap = cap.min(self.max);
        let mut buf = vec![0u8; cap];
        let (a, b) = self.data();
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = buf;
        self.head = 0;
    }

    /// The data, in order, as at most two slices.
    fn data(&self) -> (&[u8], &[u8]) {
        let cap = self.buf.len();
        if self.head + self.len <= cap {
            (&self.buf[self.head..self.head + self.len], &[])
        } else {
            let first = cap - self.head;
            (&self.buf[self.head..], &self.buf[..self.len - first])
        }
    }

    /// The contiguous free space after the data, after growing the storage towards
    /// `want` more bytes. Never empty unless the ring is full.
    fn write_slot(&mut self, want: usize) -> &mut [u8] {
        self.reserve(want.max(1));
        let cap = self.buf.len();
        if self.len == cap {
            return &mut [];
        }
        let tail = (self.head + self.len) % cap;
        let end = if tail >= self.head { cap } else { self.head };
        let end = end.min(tail + self.room());
        &mut self.buf[tail..end]
    }

    /// `n` bytes were written into the slot.
    fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// `n` bytes at the front are done with.
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        if self.len == 0 {
            // Drained: a ring that never grew past RING_MIN (small messages: echo, RPC)
            // gives its storage back, so an idle connection holds no buffer. One that
            // grew keeps it: it is moving bulk, and starting over from RING_MIN on every
            // drain (measured) cost three quarters of a bulk sender's throughput.
            if self.buf.len() <= RING_MIN {
                self.buf = Vec::new();
            }
            // Keep the next write contiguous.
            self.head = 0;
        } else {
            self.head = (self.head + n) % self.buf.len();
        }
    }

    /// Append as much of `src` as fits; returns how much did.
    fn push(&mut self, mut src: &[u8]) -> usize {
        let mut done = 0;
        while !src.is_empty() {
            let slot = self.write_slot(src.len());
            let n = slot.len().min(src.len());
            if n == 0 {
                break;
            }
            slot[..n].copy_from_slice(&src[..n]);
            self.commit(n);
            src = &src[n..];
            done += n;
        }
        done
    }

    /// Copy from the front into `dst`; with `peek` the bytes stay.
    #[cfg(test)]
    fn copy_out(&mut self, dst: &mut [u8], peek: bool) -> usize {
        let (a, b) = self.data();
        let n1 = a.len().min(dst.len());
        dst[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(dst.len() - n1);
        dst[n1..n1 + n2].copy_from_slice(&b[..n2]);
        if !peek {
            self.consume(n1 + n2);
        }
        n1 + n2
    }
}

/// Most skbs a receive queue holds, whatever their size: a peer sending tiny segments
/// must not make 256 KiB of data cost thousands of buffers.
const RECV_SKBS_MAX: usize = 512;

/// The receive queue: the skbs the core received, handed over whole (no copy on the
/// stack thread) and copied once, into the reader's buffer. Bounded in bytes of data
/// and in skbs.
struct SkbRing {
    q: VecDeque<Skb>,
    len: usize,
    max: usize,
}

impl SkbRing {
    fn new(max: usize) -> SkbRing {
        SkbRing {
            q: VecDeque::new(),
            len: 0,
            max,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len >= self.max || self.q.len() >= RECV_SKBS_MAX
    }

    /// Data bytes that may still come in.
    fn room(&self) -> usize {
        self.max.saturating_sub(self.len)
    }

    fn push(&mut self, skb: Skb) {
        self.len += skb.len();
        self.q.push_back(skb);
    }

    /// Copy from the front into `dst`; with `peek` the bytes stay.
    fn copy_out(&mut self, dst: &mut [u8], peek: bool) -> usize {
        let (n, _) = stack_core::skb::copy_from_queue(&mut self.q, dst, peek);
        if !peek {
            self.len -= n;
        }
        n
    }
}

/// Tasks waiting for one direction of a socket. Several may wait at once (`readable()`
/// from two tasks); a wake takes them all, and those that find nothing register again.
#[derive(Default)]
struct Wakers(Vec<Waker>);

impl Wakers {
    fn register(&mut self, w: &Waker) {
        if !self.0.iter().any(|x| x.will_wake(w)) {
            self.0.push(w.clone());
        }
    }

    fn take(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.0)
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The receiving direction of a connection.
struct RecvSide {
    ring: SkbRing,
    /// `sk_err`, reported once by the next read or write.
    error: Option<io::Error>,
    /// The core has nothing more to give: the peer's FIN, or the connection is gone.
    eof: bool,
    /// The last pull stopped on a full ring while the core may hold more.
    stalled: bool,
    /// The stack thread let go of this connection (it stopped).
    detached: bool,
    wakers: Wakers,
}

/// What became of our FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fin {
    Open,
    /// Asked for: sent once the ring is empty.
    Requested,
    Sent,
    Failed(io::ErrorKind),
}

/// The sending direction of a connection.
struct SendSide {
    ring: ByteRing,
    /// A push is queued on the stack thread.
    kicked: bool,
    /// The core's send buffer was full; `Event::Writable` pushes next.
    blocked: bool,
    /// The handshake completed (always true for accepted connections).
    connected: bool,
    /// The core refused data for good (reset, closed); what the ring held is dropped.
    broken: bool,
    fin: Fin,
    detached: bool,
    wakers: Wakers,
}

/// One connection's state shared by its handles and the stack thread. It holds no
/// `StackHandle`: the stack thread keeps it in its registry, and a handle there would
/// keep the stack alive forever.
struct Conn {
    id: SocketId,
    recv: Mutex<RecvSide>,
    send: Mutex<SendSide>,
    /// SO_SNDBUF as set, so close can grow it without shrinking it.
    sndbuf: AtomicUsize,
}

impl Conn {
    fn new(id: SocketId, connected: bool, sndbuf: usize) -> Conn {
        Conn {
            id,
            recv: Mutex::new(RecvSide {
                ring: SkbRing::new(TCP_RECV_RING),
                error: None,
                eof: false,
                stalled: false,
                detached: false,
                wakers: Wakers::default(),
            }),
            send: Mutex::new(SendSide {
                ring: ByteRing::new(TCP_SEND_RING),
                kicked: false,
                blocked: false,
                connected,
                broken: false,
                fin: Fin::Open,
                detached: false,
                wakers: Wakers::default(),
            }),
            sndbuf: AtomicUsize::new(sndbuf),
        }
    }

    // ---- On the stack thread. ----

    /// The readiness callback registered for this connection.
    fn on_event(&self, stack: &mut Stack, now: Instant, event: Event) {
        match event {
            Event::Readable(_) => self.pull(stack, now),
            Event::Writable(_) => self.on_writable(stack, now),
        }
    }

    /// Move what the core has received into the ring (`tcp_recvmsg`).
    fn pull(&self, stack: &mut Stack, now: Instant) {
        let mut st = lock(&self.recv);
        if st.eof {
            return;
        }
        let mut changed = false;
        // The connection is gone (reset, timed out, closed): writing is over too.
        let mut dead = false;
        loop {
            if st.ring.is_full() {
                st.stalled = true;
                break;
            }
            let room = st.ring.room();
            match stack.tcp_recv_skb(now, self.id, room) {
                Ok(None) => {
                    st.eof = true;
                    changed = true;
                    break;
                }
                Ok(Some(skb)) => {
                    st.ring.push(skb);
                    changed = true;
                }
                // Empty, and the core will signal the next arrival.
                Err(SendError::WouldBlock) => break,
                // Closed with its error already reported (to a write), or gone.
                Err(SendError::NotConnected | SendError::BadSocket) => {
                    st.eof = true;
                    dead = true;
                    changed = true;
                    break;
                }
                Err(e) => {
                    st.error = Some(e.into());
                    st.eof = true;
                    dead = true;
                    changed = true;
                    break;
                }
            }
        }
        let wakers = if changed {
            st.wakers.take()
        } else {
            Vec::new()
        };
        drop(st);
        wake_all(wakers);
        if dead {
            // As tcp_sendmsg checks sk_err first: the next write reports the error (if
            // the reader has not), and what the ring held is discarded with the
            // connection. Taken after the receive lock: the order is send, then recv.
            let mut st = lock(&self.send);
            if st.connected && !st.broken {
                st.broken = true;
                st.ring.clear();
                let wakers = st.wakers.take();
                drop(st);
                wake_all(wakers);
            }
        }
    }

    fn on_writable(&self, stack: &mut Stack, now: Instant) {
        let wakers = {
            let mut st = lock(&self.send);
            st.blocked = false;
            let established = matches!(
                stack.tcp_state(self.id),
                Some(s) if !matches!(
                    s,
                    TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynRecv
                )
            );
            if !st.connected && established {
                st.connected = true;
                st.wakers.take()
            } else {
                Vec::new()
            }
        };
        wake_all(wakers);
        self.push(stack, now);
    }

    /// Hand the ring to the core (`tcp_sendmsg`) until it is empty or the core is full;
    /// then send the FIN if one was asked for.
    fn push(&self, stack: &mut Stack, now: Instant) {
        let mut st = lock(&self.send);
        st.kicked = false;
        if !st.connected {
            return;
        }
        let mut changed = false;
        let mut failed = None;
        let was_full = st.ring.is_full();
        while !st.ring.is_empty() && !st.broken {
            let (chunk, _) = st.ring.data();
            match stack.tcp_sendmsg(now, self.id, chunk) {
                Ok(n) => {
                    st.ring.consume(n);
                    // A writer waits for room only when the ring was full; wake it
                    // once half the ring is free, not for every few kilobytes an ACK
                    // makes room for: each wake is a cross-thread wakeup (the
                    // kernel's sk_stream_write_space waits for a third free, alike).
                    // Flush waits for an empty ring, which is past half too.
                    changed |= !was_full || st.ring.room() >= TCP_SEND_RING / 2;
                }
                // Full: `want_write` is set in the core, a Writable event follows.
                Err(SendError::WouldBlock) => {
                    st.blocked = true;
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            st.broken = true;
            st.ring.clear();
            changed = true;
            // `sk_err` taken by this send: leave it for whichever call reports first.
            if !matches!(e, SendError::BrokenPipe | SendError::NotConnected) {
                let mut r = lock(&self.recv);
                if r.error.is_none() {
                    r.error = Some(e.into());
                }
                let w = r.wakers.take();
                drop(r);
                wake_all(w);
            }
        }
        if st.fin == Fin::Requested && st.ring.is_empty() {
            st.fin = match stack.tcp_shutdown(now, self.id, Shutdown::Write) {
                Ok(()) => Fin::Sent,
                Err(e) => Fin::Failed(io::Error::from(e).kind()),
            };
            changed = true;
        }
        let wakers = if changed {
            st.wakers.take()
        } else {
            Vec::new()
        };
        drop(st);
        wake_all(wakers);
    }

    /// `close()`: on the stack thread, after the registration is removed.
    fn close(&self, stack: &mut Stack, now: Instant, linger_zero: bool) {
        let unread = !lock(&self.recv).ring.is_empty();
        if unread {
            // Data the application never read: reset, as tcp_close does (RFC 2525 2.17).
            stack.tcp_abort(now, self.id);
            return;
        }
        if !linger_zero {
            // What a write accepted is the socket's to deliver: give the core all of it,
            // growing the send buffer past SO_SNDBUF for these bytes if need be.
            let mut st = lock(&self.send);
            if st.connected && !st.broken && !st.ring.is_empty() {
                let need = stack.tcp_sendq_bytes(self.id) + st.ring.len();
                let sndbuf = self.sndbuf.load(Ordering::Relaxed).max(need);
                let _ = stack.tcp_set_buffers(self.id, Some(sndbuf), None);
                while !st.ring.is_empty() {
                    let (chunk, _) = st.ring.data();
                    match stack.tcp_sendmsg(now, self.id, chunk) {
                        Ok(n) => st.ring.consume(n),
                        Err(_) => break,
                    }
                }
            }
        }
        stack.tcp_close(now, self.id);
    }

    /// The stack thread stopped: everyone waiting learns it.
    fn detach(&self) {
        let mut r = lock(&self.recv);
        r.detached = true;
        let w = r.wakers.take();
        drop(r);
        wake_all(w);
        let mut s = lock(&self.send);
        s.detached = true;
        let w = s.wakers.take();
        drop(s);
        wake_all(w);
    }

    // ---- On the caller's side. ----

    /// Read (or peek) into `dst`. The `bool` says a pull must be requested.
    fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
        peek: bool,
    ) -> (Poll<io::Result<usize>>, bool) {
        let mut st = lock(&self.recv);
        if !st.ring.is_empty() {
            if dst.is_empty() {
                return (Poll::Ready(Ok(0)), false);
            }
            let n = st.ring.copy_out(dst, peek);
            let pull = st.stalled && st.ring.len() <= TCP_RECV_RING / 2;
            if pull {
                st.stalled = false;
            }
            return (Poll::Ready(Ok(n)), pull);
        }
        if let Some(e) = st.error.take() {
            return (Poll::Ready(Err(e)), false);
        }
        if st.eof || dst.is_empty() {
            return (Poll::Ready(Ok(0)), false);
        }
        if st.detached {
            return (Poll::Ready(Err(stopped())), false);
        }
        st.wakers.register(cx.waker());
        (Poll::Pending, false)
    }

    /// Ready when a read would not wait.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.recv);
        if !st.ring.is_empty() || st.error.is_some() || st.eof || st.detached {
            return Poll::Ready(());
        }
        st.wakers.register(cx.waker());
        Poll::Pending
    }

    /// The error a write reports once writing is over: `sk_err` if no one reported it
    /// yet, else `BrokenPipe` (EPIPE).
    fn write_error(&self, st: &SendSide) -> Option<io::Error> {
        if st.detached {
            return Some(stopped());
        }
        if st.broken {
            let pending = lock(&self.recv).error.take();
            return Some(pending.unwrap_or_else(|| SendError::BrokenPipe.into()));
        }
        if st.fin != Fin::Open {
            return Some(SendError::BrokenPipe.into());
        }
        None
    }

    /// Copy `src` into the send ring. The `bool` says a push must be kicked.
    fn poll_write_from(&self, cx: &mut Context<'_>, src: &[u8]) -> (Poll<io::Result<usize>>, bool) {
        let mut st = lock(&self.send);
        if let Some(e) = self.write_error(&st) {
            return (Poll::Ready(Err(e)), false);
        }
        if src.is_empty() {
            return (Poll::Ready(Ok(0)), false);
        }
        let n = st.ring.push(src);
        if n == 0 {
            // Full: the push that frees room takes this lock first, so it sees us.
            st.wakers.register(cx.waker());
            return (Poll::Pending, false);
        }
        let kick = !st.kicked && !st.blocked;
        if kick {
            st.kicked = true;
        }
        (Poll::Ready(Ok(n)), kick)
    }

    /// Ready when a write would not wait (or would fail).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.send);
        if !st.ring.is_full() || st.broken || st.detached || st.fin != Fin::Open {
            return Poll::Ready(());
        }
        st.wakers.register(cx.waker());
        Poll::Pending
    }

    /// Ready once the ring has been handed to the core. The `bool` says kick.
    fn poll_flush(&self, cx: &mut Context<'_>) -> (Poll<io::Result<()>>, bool) {
        let mut st = lock(&self.send);
        if st.ring.is_empty() {
            return (Poll::Ready(Ok(())), false);
        }
        if st.broken || st.detached {
            let e = self.write_error(&st).unwrap_or_else(stopped);
            return (Poll::Ready(Err(e)), false);
        }
        st.wakers.register(cx.waker());
        let kick = !st.kicked && !st.blocked;
        if kick {
            st.kicked = true;
        }
        (Poll::Pending, kick)
    }

    /// Ask for the FIN after the ring's data, and wait until the core has it.
    fn poll_shutdown(&self, cx: &mut Context<'_>) -> (Poll<io::Result<()>>, bool) {
        let mut st = lock(&self.send);
        match st.fin {
            Fin::Sent => return (Poll::Ready(Ok(())), false),
            Fin::Failed(kind) => return (Poll::Ready(Err(kind.into())), false),
            Fin::Open => st.fin = Fin::Requested,
            Fin::Requested => {}
        }
        if st.detached {
            return (Poll::Ready(Err(stopped())), false);
        }
        st.wakers.register(cx.waker());
        // The FIN does not need room in the core: kick even when blocked, the push
        // sends it as soon as the ring is empty.
        let kick = !st.kicked;
        if kick {
            st.kicked = true;
        }
        (Poll::Pending, kick)
    }

    /// The connect in progress: ready when established or failed.
    fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut st = lock(&self.send);
            if st.connected {
                return Poll::Ready(Ok(()));
            }
            st.wakers.register(cx.waker());
        }
        let mut st = lock(&self.recv);
        if let Some(e) = st.error.take() {
            return Poll::Ready(Err(e));
        }
        if st.eof {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "ustack: the connection closed during the handshake",
            )));
        }
        if st.detached {
            return Poll::Ready(Err(stopped()));
        }
        st.wakers.register(cx.waker());
        Poll::Pending
    }
}

/// The stack thread's hold on a connection's or listener's shared state: when the
/// registry drops it (the stack stopped, or the socket closed), waiters are told.
struct Attached<T: Detach>(Arc<T>);

trait Detach {
    fn detach(&self);
}

impl Detach for Conn {
    fn detach(&self) {
        Conn::detach(self);
    }
}

impl<T: Detach> Drop for Attached<T> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// On the stack thread: register `conn` for its socket's events and catch up with what
/// happened before (events of an unregistered socket are dropped, and the core does not
/// raise `Readable` again until a read finds it empty).
fn attach(ctx: &mut StackCtx<'_>, conn: &Arc<Conn>) {
    let held = Attached(conn.clone());
    ctx.ready.insert(
        conn.id,
        Box::new(move |stack: &mut Stack, now: Instant, event: Event| {
            held.0.on_event(stack, now, event)
        }),
    );
    conn.pull(ctx.stack, ctx.now);
    conn.push(ctx.stack, ctx.now);
}

/// Run `f` on the stack thread and block the calling thread until it returns: the
/// synchronous calls of [`TcpSocket`] (`bind`, `listen`), which stand for system calls
/// that do not wait either. Takes one poll of the stack thread, normally microseconds.
fn call_blocking<R: Send + 'static>(
    stack: &StackHandle,
    f: impl FnOnce(&mut StackCtx<'_>) -> R + Send + 'static,
) -> io::Result<R> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let posted = stack.post(move |ctx| {
        let _ = tx.send(f(ctx));
    });
    if !posted {
        return Err(stopped());
    }
    rx.recv().map_err(|_| stopped())
}

/// The caller's side of one connection: closes it when dropped (see the module docs).
struct Socket {
    stack: StackHandle,
    conn: Arc<Conn>,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    nodelay: AtomicBool,
    linger_zero: AtomicBool,
}

impl Socket {
    fn kick(&self) {
        let conn = self.conn.clone();
        let posted = self.stack.post(move |ctx| {
            // Only while registered: the close removes the registration, and a kick is
            // never queued after the close anyway (the close is the last command).
            if ctx.ready.contains_key(&conn.id) {
                conn.push(ctx.stack, ctx.now);
            }
        });
        if !posted {
            self.conn.detach();
        }
    }

    fn request_pull(&self) {
        let conn = self.conn.clone();
        let posted = self.stack.post(move |ctx| {
            if ctx.ready.contains_key(&conn.id) {
                conn.pull(ctx.stack, ctx.now);
            }
        });
        if !posted {
            self.conn.detach();
        }
    }

    fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
        peek: bool,
    ) -> Poll<io::Result<usize>> {
        let (poll, pull) = self.conn.poll_read_into(cx, dst, peek);
        if pull {
            self.request_pull();
        }
        poll
    }

    fn poll_read_buf(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = std::task::ready!(self.poll_read_into(cx, buf.initialize_unfilled(), false))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    fn poll_write(&self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        let (poll, kick) = self.conn.poll_write_from(cx, src);
        if kick {
            self.kick();
        }
        poll
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Everything goes to one ring: take the slices in order while they fit.
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            match self.poll_write(cx, b) {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Poll::Ready(Err(e)) if total == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if total == 0 => return Poll::Pending,
                _ => break,
            }
        }
        Poll::Ready(Ok(total))
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (poll, kick) = self.conn.poll_flush(cx);
        if kick {
            self.kick();
        }
        poll
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (poll, kick) = self.conn.poll_shutdown(cx);
        if kick {
            self.kick();
        }
        poll
    }

    /// Shut down writing without waiting (dropping an [`OwnedWriteHalf`]).
    fn shutdown_write_now(&self) {
        let kick = {
            let mut st = lock(&self.conn.send);
            if st.fin != Fin::Open {
                return;
            }
            st.fin = Fin::Requested;
            let kick = !st.kicked;
            st.kicked = true;
            kick
        };
        if kick {
            self.kick();
        }
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let id = self.conn.id;
        self.post_option(move |stack| stack.tcp_set_nodelay(id, on))?;
        self.nodelay.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let on = match linger {
            None => false,
            Some(d) if d.is_zero() => true,
            Some(_) => return Err(unsupported_linger()),
        };
        let id = self.conn.id;
        self.post_option(move |stack| stack.tcp_set_linger_zero(id, on))?;
        self.linger_zero.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn linger(&self) -> Option<Duration> {
        self.linger_zero
            .load(Ordering::Relaxed)
            .then_some(Duration::ZERO)
    }

    /// A socket option, applied in order with this connection's later commands, as a
    /// synchronous setsockopt would be.
    fn post_option(
        &self,
        f: impl FnOnce(&mut Stack) -> Result<(), SendError> + Send + 'static,
    ) -> io::Result<()> {
        let posted = self.stack.post(move |ctx| {
            if let Err(e) = f(ctx.stack) {
                tracing::debug!("tcp: socket option: {e}");
            }
        });
        if posted {
            Ok(())
        } else {
            Err(stopped())
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let conn = self.conn.clone();
        let linger_zero = self.linger_zero.load(Ordering::Relaxed);
        self.stack.post(move |ctx| {
            if ctx.ready.remove(&conn.id).is_some() {
                conn.close(ctx.stack, ctx.now, linger_zero);
            }
        });
    }
}

/// A TCP connection, like `tokio::net::TcpStream`: `AsyncRead` and `AsyncWrite` of
/// both tokio (with the default `tokio` feature) and futures, on any executor.
///
/// Reads and writes go through bounded per-connection rings ([`TCP_RECV_RING`],
/// [`TCP_SEND_RING`]) shared with the stack thread, so they cost no round trip to it.
/// `poll_flush` waits until written bytes have been handed to the stack's socket;
/// `poll_shutdown` (tokio) / `poll_close` (futures) send a FIN after them. Dropping the
/// stream closes it like `close(2)`: the written bytes are still delivered, then a FIN
/// follows; unread received bytes or [`TcpStream::set_linger`]`(Some(ZERO))` make it a
/// reset.
pub struct TcpStream {
    sock: Arc<Socket>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("id", &self.sock.conn.id)
            .field("local", &self.sock.local)
            .field("peer", &self.sock.peer)
            .finish()
    }
}

impl TcpStream {
    /// Open a connection to `addr` (`connect(2)` on a fresh socket with default options).
    /// Errors are Linux's: `ConnectionRefused` (the peer answered with a reset),
    /// `TimedOut` (no answer to 6 SYN retransmissions, about 2 minutes),
    /// `NetworkUnreachable`, ...; `NotConnected` if the stack has stopped.
    pub async fn connect(stack: &StackHandle, addr: SocketAddrV4) -> io::Result<TcpStream> {
        TcpSocket::new_v4(stack)?.connect(addr).await
    }

    fn from_socket(sock: Socket) -> TcpStream {
        TcpStream {
            sock: Arc::new(sock),
        }
    }

    /// Our end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.local)
    }

    /// The remote end's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.peer)
    }

    /// TCP_NODELAY: send small segments at once instead of waiting for outstanding data
    /// to be acknowledged (Nagle, RFC 896). Applied in order with later writes.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.sock.set_nodelay(nodelay)
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(self.sock.nodelay.load(Ordering::Relaxed))
    }

    /// SO_LINGER. Only `Some(Duration::ZERO)` (close sends a reset and discards what is
    /// queued) and `None` (the default, an orderly close) are supported: a close that
    /// blocks until the data is acknowledged is not, and gives `Unsupported`.
    pub fn set_linger(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_linger(dur)
    }

    pub fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(self.sock.linger())
    }

    /// Receive into `buf` without taking the data (MSG_PEEK). Waits for data; returns 0
    /// at end of stream.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.sock.poll_read_into(cx, buf, true)).await
    }

    /// [`TcpStream::peek`] as a poll: on `Ready(Ok(n))`, `n` bytes were appended to `buf`.
    pub fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(self
            .sock
            .poll_read_into(cx, buf.initialize_unfilled(), true))?;
        buf.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Wait until a read would not wait: data, end of stream or an error.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.sock.conn.poll_read_ready(cx)).await;
        Ok(())
    }

    /// Wait until a write would not wait: room in the send ring, or an error.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.sock.conn.poll_write_ready(cx)).await;
        Ok(())
    }

    /// Read what is there without waiting: `WouldBlock` if nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        try_now(|cx| self.sock.poll_read_into(cx, buf, false))
    }

    /// Write what fits without waiting: `WouldBlock` if the send ring is full.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        try_now(|cx| self.sock.poll_write(cx, buf))
    }

    /// Borrowed read and write halves, usable from two tasks at once (`select!`,
    /// `join!`) while `self` stays here.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(&self.sock), WriteHalf(&self.sock))
    }

    /// Owned halves that can move to different tasks. Dropping the write half shuts
    /// writing down (a FIN after the written bytes), as tokio's does; the connection
    /// closes when both halves are gone. [`OwnedReadHalf::reunite`] puts them back.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                sock: self.sock.clone(),
            },
            OwnedWriteHalf {
                sock: self.sock,
                shutdown_on_drop: true,
            },
        )
    }
}

/// Poll once with a waker that does nothing: `Pending` becomes `WouldBlock`.
fn try_now<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match f(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// The read half of [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a Socket);

/// The write half of [`TcpStream::split`]. Dropping it does not shut writing down.
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a Socket);

/// The read half of [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    sock: Arc<Socket>,
}

/// The write half of [`TcpStream::into_split`]. Dropping it shuts writing down (a FIN
/// after the written bytes) unless [`OwnedWriteHalf::forget`] was called.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    sock: Arc<Socket>,
    shutdown_on_drop: bool,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.conn.id)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

/// `reunite` was given halves of two different streams; both are returned.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tried to reunite halves of different TCP streams")
    }
}

impl std::error::Error for ReuniteError {}

impl OwnedReadHalf {
    /// Put the halves of one stream back together.
    pub fn reunite(self, mut other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        if !Arc::ptr_eq(&self.sock, &other.sock) {
            return Err(ReuniteError(self, other));
        }
        other.shutdown_on_drop = false;
        drop(other);
        Ok(TcpStream { sock: self.sock })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.peer)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.local)
    }

    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.sock.poll_read_into(cx, buf, true)).await
    }
}

impl OwnedWriteHalf {
    /// Put the halves of one stream back together.
    pub fn reunite(self, other: OwnedReadHalf) -> Result<TcpStream, ReuniteError> {
        other.reunite(self)
    }

    /// Drop this half without shutting writing down.
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.peer)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.sock.local)
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            self.sock.shutdown_write_now();
        }
    }
}

/// The executor-neutral read and write entry points of each stream type.
trait AsSocket {
    fn socket(&self) -> &Socket;
}

impl AsSocket for TcpStream {
    fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsSocket for ReadHalf<'_> {
    fn socket(&self) -> &Socket {
        self.0
    }
}

impl AsSocket for WriteHalf<'_> {
    fn socket(&self) -> &Socket {
        self.0
    }
}

impl AsSocket for OwnedReadHalf {
    fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsSocket for OwnedWriteHalf {
    fn socket(&self) -> &Socket {
        &self.sock
    }
}

macro_rules! impl_read {
    ($($t:ty),*) => {$(
        impl futures::io::AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.socket().poll_read_into(cx, buf, false)
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.socket().poll_read_buf(cx, buf)
            }
        }
    )*};
}

macro_rules! impl_write {
    ($($t:ty),*) => {$(
        impl futures::io::AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.socket().poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.socket().poll_write_vectored(cx, bufs)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.socket().poll_flush(cx)
            }

            /// Shut writing down: a FIN after the written bytes (`shutdown(SHUT_WR)`).
            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.socket().poll_shutdown(cx)
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.socket().poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.socket().poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.socket().poll_flush(cx)
            }

            /// Shut writing down: a FIN after the written bytes (`shutdown(SHUT_WR)`).
            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                self.socket().poll_shutdown(cx)
            }
        }
    )*};
}

impl_read!(TcpStream, ReadHalf<'_>, OwnedReadHalf);
impl_write!(TcpStream, WriteHalf<'_>, OwnedWriteHalf);

// ---------------------------------------------------------------------------------------
// Listener.

/// A connection the stack thread took from the core's accept queue.
struct Ready {
    id: SocketId,
    peer: SocketAddrV4,
    local: SocketAddrV4,
}

struct ListenSide {
    queue: VecDeque<Ready>,
    /// The last fill stopped on a full queue while the core may hold more.
    stalled: bool,
    error: Option<io::Error>,
    detached: bool,
    wakers: Wakers,
}

struct Listen {
    id: SocketId,
    state: Mutex<ListenSide>,
    /// The options the children inherit (the core copies them to each child).
    opts: SockOpts,
}

impl Detach for Listen {
    fn detach(&self) {
        let mut st = lock(&self.state);
        st.detached = true;
        let w = st.wakers.take();
        drop(st);
        wake_all(w);
    }
}

impl Listen {
    /// On the stack thread: take established children from the core (`inet_accept`).
    fn fill(&self, stack: &mut Stack) {
        let mut st = lock(&self.state);
        let mut changed = false;
        loop {
            if st.queue.len() >= ACCEPT_QUEUE {
                st.stalled = true;
                break;
            }
            match stack.tcp_accept(self.id) {
                Ok(Some((id, peer))) => {
                    let local = stack
                        .tcp_local_addr(id)
                        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                    st.queue.push_back(Ready { id, peer, local });
                    changed = true;
                }
                // None left; the core signals the next one.
                Ok(None) => break,
                Err(e) => {
                    st.error = Some(e.into());
                    changed = true;
                    break;
                }
            }
        }
        let wakers = if changed {
            st.wakers.take()
        } else {
            Vec::new()
        };
        drop(st);
        wake_all(wakers);
    }
}

/// A TCP listener, like `tokio::net::TcpListener`.
pub struct TcpListener {
    stack: StackHandle,
    listen: Arc<Listen>,
    local: SocketAddrV4,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("id", &self.listen.id)
            .field("local", &self.local)
            .finish()
    }
}

impl TcpListener {
    /// Listen on `addr` (port 0: an ephemeral port; 0.0.0.0: all our addresses) with a
    /// backlog of [`DEFAULT_BACKLOG`] and SO_REUSEADDR set, as tokio does. `AddrInUse` if
    /// another socket listens there.
    pub async fn bind(stack: &StackHandle, addr: SocketAddrV4) -> io::Result<TcpListener> {
        let handle = stack.clone();
        let opts = SockOpts {
            reuseaddr: true,
            ..SockOpts::default()
        };
        stack
            .call_ctx(move |ctx| {
                let id = ctx.stack.tcp_socket();
                let bound = opts
                    .apply(ctx.stack, id)
                    .and_then(|()| ctx.stack.tcp_bind(id, addr));
                match bound {
                    Ok(_) => TcpListener::open(ctx, handle, id, opts, DEFAULT_BACKLOG),
                    Err(e) => {
                        ctx.stack.tcp_close(ctx.now, id);
                        Err(e.into())
                    }
                }
            })
            .await?
    }

    /// On the stack thread: `listen` on a bound socket and register it.
    fn open(
        ctx: &mut StackCtx<'_>,
        stack: StackHandle,
        id: SocketId,
        opts: SockOpts,
        backlog: u32,
    ) -> io::Result<TcpListener> {
        if let Err(e) = ctx.stack.tcp_listen(id, backlog as usize) {
            ctx.stack.tcp_close(ctx.now, id);
            return Err(e.into());
        }
        let local = ctx
            .stack
            .tcp_local_addr(id)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let listen = Arc::new(Listen {
            id,
            state: Mutex::new(ListenSide {
                queue: VecDeque::new(),
                stalled: false,
                error: None,
                detached: false,
                wakers: Wakers::default(),
            }),
            opts,
        });
        let held = Attached(listen.clone());
        ctx.ready.insert(
            id,
            Box::new(move |stack: &mut Stack, _now: Instant, event: Event| {
                if let Event::Readable(_) = event {
                    held.0.fill(stack);
                }
            }),
        );
        Ok(TcpListener {
            stack,
            listen,
            local,
        })
    }

    /// The address we listen on (with the port the stack chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.local)
    }

    /// The next connection and its peer's address. Cancel safe.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Poll for the next connection. On `Pending`, the waker is woken when one arrives.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddrV4)>> {
        let mut st = lock(&self.listen.state);
        let Some(ready) = st.queue.pop_front() else {
            if let Some(e) = st.error.take() {
                return Poll::Ready(Err(e));
            }
            if st.detached {
                return Poll::Ready(Err(stopped()));
            }
            st.wakers.register(cx.waker());
            return Poll::Pending;
        };
        let refill = st.stalled && st.queue.len() <= ACCEPT_QUEUE / 2;
        if refill {
            st.stalled = false;
        }
        drop(st);
        if refill {
            let listen = self.listen.clone();
            self.stack.post(move |ctx| {
                if ctx.ready.contains_key(&listen.id) {
                    listen.fill(ctx.stack);
                }
            });
        }
        Poll::Ready(Ok(self.adopt(ready)))
    }

    /// Make a stream of an accepted child and register it (in order before anything the
    /// stream itself queues).
    fn adopt(&self, ready: Ready) -> (TcpStream, SocketAddrV4) {
        let opts = self.listen.opts;
        let conn = Arc::new(Conn::new(
            ready.id,
            true,
            opts.sndbuf.unwrap_or(DEFAULT_SNDBUF),
        ));
        let registered = conn.clone();
        let posted = self.stack.post(move |ctx| attach(ctx, &registered));
        if !posted {
            conn.detach();
        }
        let sock = Socket {
            stack: self.stack.clone(),
            conn,
            local: ready.local,
            peer: ready.peer,
            nodelay: AtomicBool::new(opts.nodelay),
            // The core does not copy SO_LINGER to children.
            linger_zero: AtomicBool::new(false),
        };
        (TcpStream::from_socket(sock), ready.peer)
    }

    /// The connections as a `futures::Stream`, forever (each item is what `accept`
    /// returns, without the address).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let listen = self.listen.clone();
        self.stack.post(move |ctx| {
            ctx.ready.remove(&listen.id);
            // Connections taken from the core but never accepted are reset, as
            // inet_csk_listen_stop does for those still in the core's queue.
            let children: Vec<Ready> = lock(&listen.state).queue.drain(..).collect();
            for c in children {
                ctx.stack.tcp_abort(ctx.now, c.id);
            }
            ctx.stack.tcp_close(ctx.now, listen.id);
        });
    }
}

/// [`TcpListener::incoming`]: a never-ending stream of accepted connections.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl futures::Stream for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some(r.map(|(stream, _)| stream)))
    }
}

// ---------------------------------------------------------------------------------------
// TcpSocket.

/// Options set before the socket exists in the core, applied when it is made.
#[derive(Clone, Copy, Debug, Default)]
struct SockOpts {
    reuseaddr: bool,
    nodelay: bool,
    linger_zero: bool,
    sndbuf: Option<usize>,
    rcvbuf: Option<usize>,
    congestion: Option<CongestionControl>,
    keepalive: Option<Keepalive>,
}

impl SockOpts {
    fn apply(&self, stack: &mut Stack, id: SocketId) -> Result<(), SendError> {
        stack.tcp_set_reuseaddr(id, self.reuseaddr)?;
        stack.tcp_set_nodelay(id, self.nodelay)?;
        stack.tcp_set_linger_zero(id, self.linger_zero)?;
        stack.tcp_set_buffers(id, self.sndbuf, self.rcvbuf)?;
        if let Some(cc) = self.congestion {
            stack.tcp_set_congestion(id, cc)?;
        }
        if self.keepalive.is_some() {
            stack.tcp_set_keepalive(id, self.keepalive)?;
        }
        Ok(())
    }
}

/// A TCP socket before it connects or listens, like `tokio::net::TcpSocket`: set options,
/// optionally `bind`, then [`TcpSocket::connect`] or [`TcpSocket::listen`].
///
/// The socket is made in the stack when it is bound (or when it connects or listens).
/// `bind` and `listen` are synchronous like tokio's; each blocks the calling thread for
/// one round trip to the stack thread (microseconds), as the system call it stands for
/// would.
pub struct TcpSocket {
    stack: StackHandle,
    opts: Mutex<SockOpts>,
    /// The core socket and its address, once bound.
    bound: Mutex<Option<(SocketId, SocketAddrV4)>>,
}

impl fmt::Debug for TcpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSocket")
            .field("opts", &*lock(&self.opts))
            .field("bound", &*lock(&self.bound))
            .finish()
    }
}

impl TcpSocket {
    /// A new IPv4 TCP socket on `stack`.
    pub fn new_v4(stack: &StackHandle) -> io::Result<TcpSocket> {
        Ok(TcpSocket {
            stack: stack.clone(),
            opts: Mutex::new(SockOpts::default()),
            bound: Mutex::new(None),
        })
    }

    /// Change an option; once bound, the core socket's too (in order with later calls).
    fn set(
        &self,
        change: impl FnOnce(&mut SockOpts),
        apply: impl FnOnce(&mut Stack, SocketId) -> Result<(), SendError> + Send + 'static,
    ) -> io::Result<()> {
        change(&mut lock(&self.opts));
        if let Some((id, _)) = *lock(&self.bound) {
            let posted = self.stack.post(move |ctx| {
                if let Err(e) = apply(ctx.stack, id) {
                    tracing::debug!("tcp: socket option: {e}");
                }
            });
            if !posted {
                return Err(stopped());
            }
        }
        Ok(())
    }

    /// SO_REUSEADDR: bind to a port that connections in TIME_WAIT (or other sockets with
    /// the option set, none of them listening) still use.
    pub fn set_reuseaddr(&self, reuseaddr: bool) -> io::Result<()> {
        self.set(
            |o| o.reuseaddr = reuseaddr,
            move |s, id| s.tcp_set_reuseaddr(id, reuseaddr),
        )
    }

    pub fn reuseaddr(&self) -> io::Result<bool> {
        Ok(lock(&self.opts).reuseaddr)
    }

    /// SO_SNDBUF: bytes the stack's socket queues unacknowledged (at least 4096), on
    /// top of the stream's send ring. Default 1 MiB.
    pub fn set_send_buffer_size(&self, size: u32) -> io::Result<()> {
        let size = size as usize;
        self.set(
            |o| o.sndbuf = Some(size),
            move |s, id| s.tcp_set_buffers(id, Some(size), None),
        )
    }

    pub fn send_buffer_size(&self) -> io::Result<u32> {
        let size = lock(&self.opts).sndbuf.unwrap_or(DEFAULT_SNDBUF).max(4096);
        Ok(u32::try_from(size).unwrap_or(u32::MAX))
    }

    /// SO_RCVBUF: the stack's receive buffer (at least 4096), which bounds the window we
    /// offer; set it before connecting or listening so the window scale follows it.
    /// Default 1 MiB.
    pub fn set_recv_buffer_size(&self, size: u32) -> io::Result<()> {
        let size = size as usize;
        self.set(
            |o| o.rcvbuf = Some(size),
            move |s, id| s.tcp_set_buffers(id, None, Some(size)),
        )
    }

    pub fn recv_buffer_size(&self) -> io::Result<u32> {
        let size = lock(&self.opts).rcvbuf.unwrap_or(DEFAULT_RCVBUF).max(4096);
        Ok(u32::try_from(size).unwrap_or(u32::MAX))
    }

    /// TCP_NODELAY (see [`TcpStream::set_nodelay`]); a listener's connections inherit it.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set(
            |o| o.nodelay = nodelay,
            move |s, id| s.tcp_set_nodelay(id, nodelay),
        )
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(lock(&self.opts).nodelay)
    }

    /// SO_LINGER: only `Some(Duration::ZERO)` (close resets) or `None` (orderly close);
    /// other durations give `Unsupported` (see [`TcpStream::set_linger`]).
    pub fn set_linger(&self, dur: Option<Duration>) -> io::Result<()> {
        let on = match dur {
            None => false,
            Some(d) if d.is_zero() => true,
            Some(_) => return Err(unsupported_linger()),
        };
        self.set(
            |o| o.linger_zero = on,
            move |s, id| s.tcp_set_linger_zero(id, on),
        )
    }

    pub fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(lock(&self.opts).linger_zero.then_some(Duration::ZERO))
    }

    /// TCP_CONGESTION: Reno or CUBIC (the default, as in Linux). Set it before
    /// connecting; a listener's connections inherit it.
    pub fn set_congestion(&self, cc: CongestionControl) -> io::Result<()> {
        self.set(
            |o| o.congestion = Some(cc),
            move |s, id| s.tcp_set_congestion(id, cc),
        )
    }

    pub fn congestion(&self) -> io::Result<CongestionControl> {
        Ok(lock(&self.opts).congestion.unwrap_or_default())
    }

    /// SO_KEEPALIVE with Linux's defaults (2 h idle, then 9 probes 75 s apart: RFC 1122
    /// 4.2.3.6); a dead peer then ends the connection with `TimedOut`. A listener's
    /// connections inherit it.
    pub fn set_keepalive(&self, on: bool) -> io::Result<()> {
        self.set_keepalive_params(on.then(Keepalive::default))
    }

    /// SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT (`None`: off).
    pub fn set_keepalive_params(&self, ka: Option<Keepalive>) -> io::Result<()> {
        self.set(
            |o| o.keepalive = ka,
            move |s, id| s.tcp_set_keepalive(id, ka),
        )
    }

    pub fn keepalive(&self) -> io::Result<bool> {
        Ok(lock(&self.opts).keepalive.is_some())
    }

    /// Bind to `addr` (port 0: an ephemeral port). `AddrInUse` if the port is taken (see
    /// [`TcpSocket::set_reuseaddr`]), `AddrNotAvailable` for an address not ours.
    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<()> {
        let mut bound = lock(&self.bound);
        if bound.is_some() {
            return Err(SendError::InvalidInput.into());
        }
        let opts = *lock(&self.opts);
        let made = call_blocking(&self.stack, move |ctx| {
            let id = ctx.stack.tcp_socket();
            let r = opts
                .apply(ctx.stack, id)
                .and_then(|()| ctx.stack.tcp_bind(id, addr));
            match r {
                Ok(local) => Ok((id, local)),
                Err(e) => {
                    ctx.stack.tcp_close(ctx.now, id);
                    Err(e)
                }
            }
        })?;
        *bound = Some(made?);
        Ok(())
    }

    /// The bound address; 0.0.0.0:0 before `bind`, as `getsockname` says in Linux.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(lock(&self.bound)
            .map(|(_, a)| a)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }

    fn take_bound(&self) -> Option<(SocketId, SocketAddrV4)> {
        lock(&self.bound).take()
    }

    /// Connect to `addr` (see [`TcpStream::connect`] for the errors).
    pub async fn connect(self, addr: SocketAddrV4) -> io::Result<TcpStream> {
        let opts = *lock(&self.opts);
        let bound = self.take_bound();
        let handle = self.stack.clone();
        let sock = self
            .stack
            .call_ctx(move |ctx| -> io::Result<Socket> {
                let id = match bound {
                    Some((id, _)) => id,
                    None => {
                        let id = ctx.stack.tcp_socket();
                        if let Err(e) = opts.apply(ctx.stack, id) {
                            ctx.stack.tcp_close(ctx.now, id);
                            return Err(e.into());
                        }
                        id
                    }
                };
                if let Err(e) = ctx.stack.tcp_v4_connect(ctx.now, id, addr) {
                    ctx.stack.tcp_close(ctx.now, id);
                    return Err(e.into());
                }
                let local = ctx
                    .stack
                    .tcp_local_addr(id)
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                let conn = Arc::new(Conn::new(id, false, opts.sndbuf.unwrap_or(DEFAULT_SNDBUF)));
                attach(ctx, &conn);
                // From here the guard closes the socket if the caller gives up.
                Ok(Socket {
                    stack: handle,
                    conn,
                    local,
                    peer: addr,
                    nodelay: AtomicBool::new(opts.nodelay),
                    linger_zero: AtomicBool::new(opts.linger_zero),
                })
            })
            .await??;
        poll_fn(|cx| sock.conn.poll_connected(cx)).await?;
        Ok(TcpStream::from_socket(sock))
    }

    /// Listen with room for `backlog` established connections not yet accepted (more
    /// SYNs are dropped, and the clients retry).
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        let opts = *lock(&self.opts);
        let bound = self.take_bound();
        let handle = self.stack.clone();
        call_blocking(&self.stack, move |ctx| {
            let id = match bound {
                Some((id, _)) => id,
                None => {
                    let id = ctx.stack.tcp_socket();
                    if let Err(e) = opts.apply(ctx.stack, id) {
                        ctx.stack.tcp_close(ctx.now, id);
                        return Err(e.into());
                    }
                    id
                }
            };
            TcpListener::open(ctx, handle, id, opts, backlog)
        })?
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        if let Some((id, _)) = self.take_bound() {
            self.stack.post(move |ctx| ctx.stack.tcp_close(ctx.now, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<TcpStream>();
        check::<TcpListener>();
        check::<TcpSocket>();
        check::<OwnedReadHalf>();
        check::<OwnedWriteHalf>();
        check::<ReadHalf<'_>>();
        check::<WriteHalf<'_>>();
    }

    #[test]
    fn skb_ring_reads_across_skbs_and_is_bounded() {
        let pool = stack_core::SkbPool::default();
        let mut r = SkbRing::new(3000);
        assert!(r.is_empty() && !r.is_full());
        r.push(pool.from_slice(0, &[1; 1000]));
        let tail: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        r.push(pool.from_slice(0, &tail));
        assert_eq!((r.len(), r.room()), (2500, 500));
        let mut peeked = vec![0u8; 1200];
        assert_eq!(r.copy_out(&mut peeked, true), 1200, "peek spans two skbs");
        assert_eq!(r.len(), 2500, "peek keeps the bytes");
        let mut out = vec![0u8; 1200];
        assert_eq!(r.copy_out(&mut out, false), 1200);
        assert_eq!(out, peeked);
        assert_eq!(&out[1000..], &tail[..200]);
        assert_eq!(r.len(), 1300);
        let mut rest = vec![0u8; 5000];
        assert_eq!(r.copy_out(&mut rest, false), 1300);
        assert_eq!(&rest[..1300], &tail[200..]);
        assert!(r.is_empty());
        r.push(pool.from_slice(0, &[0; 3000]));
        assert!(r.is_full(), "full by bytes");
        let mut r = SkbRing::new(1 << 20);
        for _ in 0..RECV_SKBS_MAX {
            r.push(pool.from_slice(0, b"x"));
        }
        assert!(r.is_full(), "full by skbs, whatever their size");
    }

    #[test]
    fn ring_wraps_grows_and_stays_bounded() {
        let mut r = ByteRing::new(10_000);
        assert!(r.is_empty());
        assert_eq!(r.push(&[1; 3000]), 3000);
        assert_eq!(r.buf.len(), RING_MIN, "grows only as needed");
        let mut out = [0u8; 2000];
        assert_eq!(r.copy_out(&mut out, false), 2000);
        // Wraps around the 4096-byte storage.
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&data), 3000);
        assert_eq!(r.len(), 4000);
        assert_eq!(r.buf.len(), RING_MIN);
        let mut all = vec![0u8; 4000];
        assert_eq!(r.copy_out(&mut all, true), 4000, "peek");
        assert_eq!(r.len(), 4000);
        assert_eq!(&all[..1000], &[1; 1000][..]);
        assert_eq!(&all[1000..], &data[..]);
        // Growing keeps the order.
        let more: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(r.push(&more), 6000, "bounded at 10000");
        assert!(r.is_full());
        assert_eq!(r.buf.len(), 10_000);
        assert_eq!(r.push(b"x"), 0);
        let mut all = vec![0u8; 10_000];
        assert_eq!(r.copy_out(&mut all, false), 10_000);
        assert_eq!(&all[..1000], &[1; 1000][..]);
        assert_eq!(&all[1000..4000], &data[..]);
        assert_eq!(&all[4000..], &more[..6000]);
        assert!(r.is_empty());
        assert_eq!(r.head, 0, "an empty ring starts over at the front");
    }

    use stack_core::{DeviceId, StackConfig};

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    /// Two stacks on an in-memory wire, in virtual time; `a` is driven through a `Conn`
    /// as the stack thread would drive it.
    struct Pair {
        a: Stack,
        b: Stack,
        now: Instant,
    }

    impl Pair {
        fn new() -> Pair {
            let host = |ip| {
                Stack::new(
                    StackConfig::new(StackConfig::default_mac(ip), ip, 24),
                    Instant::ZERO,
                    u64::from(u32::from(ip)),
                )
            };
            Pair {
                a: host(A),
                b: host(B),
                now: Instant::ZERO,
            }
        }

        /// Move frames both ways until the wire is quiet, dispatching `a`'s events to
        /// `conn` like the protocol task; then let 1 ms pass (delayed ACKs, timers).
        fn settle(&mut self, conn: Option<&Conn>) {
            for _ in 0..10_000 {
                let mut moved = false;
                while let Some(f) = self.a.poll_transmit_dev(self.now, DeviceId::ETH0) {
                    self.b.netif_receive_skb(self.now, DeviceId::ETH0, f);
                    moved = true;
                }
                while let Some(f) = self.b.poll_transmit_dev(self.now, DeviceId::ETH0) {
                    self.a.netif_receive_skb(self.now, DeviceId::ETH0, f);
                    moved = true;
                }
                while let Some(ev) = self.a.poll_event() {
                    if let Some(c) = conn {
                        c.on_event(&mut self.a, self.now, ev);
                    }
                    moved = true;
                }
                while self.b.poll_event().is_some() {}
                if !moved {
                    self.now += stack_core::Duration::from_millis(1);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    if self.a.poll_transmit_dev(self.now, DeviceId::ETH0).is_none()
                        && self.b.poll_transmit_dev(self.now, DeviceId::ETH0).is_none()
                    {
                        return;
                    }
                }
            }
            panic!("the wire never went quiet");
        }

        /// `a` connected to a listener on `b`: (a's socket, b's accepted socket).
        fn connected(&mut self, a_sndbuf: usize, b_rcvbuf: usize) -> (SocketId, SocketId) {
            let l = self.b.tcp_socket();
            self.b.tcp_set_buffers(l, None, Some(b_rcvbuf)).unwrap();
            self.b
                .tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
                .unwrap();
            self.b.tcp_listen(l, 8).unwrap();
            let c = self.a.tcp_socket();
            self.a.tcp_set_buffers(c, Some(a_sndbuf), None).unwrap();
            self.a
                .tcp_v4_connect(self.now, c, SocketAddrV4::new(B, 80))
                .unwrap();
            self.settle(None);
            let (child, _) = self.b.tcp_accept(l).unwrap().expect("accepted");
            (c, child)
        }

        /// Everything `b` has for `id`, until it would block (or EOF: `None` then).
        fn b_read(&mut self, id: SocketId, into: &mut Vec<u8>) -> Option<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                match self.b.tcp_recvmsg(self.now, id, &mut buf, false) {
                    Ok(0) => return None,
                    Ok(n) => into.extend_from_slice(&buf[..n]),
                    Err(SendError::WouldBlock) => return Some(()),
                    Err(e) => panic!("b recv: {e}"),
                }
            }
        }
    }

    fn read(conn: &Conn, n: usize) -> (Vec<u8>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut buf = vec![0u8; n];
        match conn.poll_read_into(&mut cx, &mut buf, false) {
            (Poll::Ready(Ok(k)), pull) => {
                buf.truncate(k);
                (buf, pull)
            }
            (other, _) => panic!("read: {other:?}"),
        }
    }

    fn bytes(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    /// The core signals once per empty -> non-empty transition, so a pull stopped by a
    /// full ring must be resumed by the reader, at half.
    #[test]
    fn pull_stalls_on_a_full_ring_and_the_reader_resumes_it_at_half() {
        let mut p = Pair::new();
        let (a, b) = p.connected(DEFAULT_SNDBUF, DEFAULT_RCVBUF);
        let conn = Conn::new(a, true, DEFAULT_SNDBUF);
        let data = bytes(700_000, 3);
        let mut off = 0;
        while off < data.len() {
            off += p.b.tcp_sendmsg(p.now, b, &data[off..]).unwrap();
            p.settle(Some(&conn));
        }
        assert!(lock(&conn.recv).ring.is_full());
        assert!(lock(&conn.recv).stalled);
        assert_eq!(
            p.a.tcp_rcvq_bytes(a),
            700_000 - TCP_RECV_RING,
            "the rest waits in the core"
        );

        let mut got = Vec::new();
        let mut pulls = 0;
        while got.len() < data.len() {
            let (chunk, pull) = read(&conn, 10_000);
            assert!(!chunk.is_empty(), "after {} bytes", got.len());
            got.extend_from_slice(&chunk);
            if pull {
                assert!(lock(&conn.recv).ring.len() <= TCP_RECV_RING / 2);
                pulls += 1;
                conn.pull(&mut p.a, p.now);
                p.settle(Some(&conn));
            }
        }
        assert!(got == data, "in order, nothing lost");
        // One pull per half ring read while the core still held data.
        assert!((2..=5).contains(&pulls), "{pulls} pulls");
        // The peer's FIN: end of stream after the data, and it stays so.
        p.b.tcp_shutdown(p.now, b, Shutdown::Write).unwrap();
        p.settle(Some(&conn));
        assert_eq!(read(&conn, 10).0, b"");
        assert_eq!(read(&conn, 10).0, b"");
    }

    /// Writes fill the ring, the push stops on the core's small send buffer and the
    /// Writable event resumes it; close hands the rest to the core and ends with FIN.
    #[test]
    fn push_resumes_on_writable_and_close_delivers_the_ring_then_fin() {
        let mut p = Pair::new();
        // b's small receive buffer fills, then a's send buffer, then the ring.
        let (a, b) = p.connected(16 * 1024, 16 * 1024);
        let conn = Conn::new(a, true, 16 * 1024);
        let mut cx = Context::from_waker(Waker::noop());
        let data = bytes(TCP_SEND_RING + 100_000, 5);
        let mut off = 0;
        let mut got = Vec::new();
        while off < data.len() {
            match conn.poll_write_from(&mut cx, &data[off..]) {
                (Poll::Ready(Ok(n)), kick) => {
                    off += n;
                    if kick {
                        conn.push(&mut p.a, p.now);
                    }
                }
                (Poll::Pending, _) => {
                    // Full: the core is full too, and b reads nothing yet.
                    assert!(lock(&conn.send).blocked);
                    p.b_read(b, &mut got).unwrap();
                    p.settle(Some(&conn));
                }
                (other, _) => panic!("write: {other:?}"),
            }
        }
        // Stop reading at b: what the ring holds stays there; close delivers it anyway.
        p.settle(Some(&conn));
        assert!(!lock(&conn.send).ring.is_empty());
        conn.close(&mut p.a, p.now, false);
        for _ in 0..1000 {
            p.settle(None);
            if p.b_read(b, &mut got).is_none() {
                break;
            }
        }
        assert!(got == data, "{} of {} bytes", got.len(), data.len());
        assert_eq!(p.a.snmp().tcp.out_rsts, 0, "a FIN, not a reset");
    }

    /// A reset reaches whichever call comes first; the other then sees the end.
    #[test]
    fn a_reset_is_reported_once_then_broken_pipe_and_eof() {
        let mut p = Pair::new();
        let (a, b) = p.connected(DEFAULT_SNDBUF, DEFAULT_RCVBUF);
        let conn = Conn::new(a, true, DEFAULT_SNDBUF);
        p.b.tcp_set_linger_zero(b, true).unwrap();
        p.b.tcp_close(p.now, b);
        p.settle(Some(&conn));
        let mut cx = Context::from_waker(Waker::noop());
        let (w, _) = conn.poll_write_from(&mut cx, b"x");
        match w {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
        match conn.poll_write_from(&mut cx, b"x").0 {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("{other:?}"),
        }
        assert_eq!(read(&conn, 10).0, b"", "the error went to the write");
    }

    #[test]
    fn write_slot_is_contiguous_and_never_past_the_bound() {
        let mut r = ByteRing::new(5000);
        let s = r.write_slot(100_000);
        assert_eq!(s.len(), 5000);
        s[..4500].fill(9);
        r.commit(4500);
        r.consume(4000);
        // 500 bytes at 4000..4500: the free space after them runs to the end, then wraps.
        let s = r.write_slot(10_000);
        assert_eq!(s.len(), 500);
        r.commit(500);
        let s = r.write_slot(10_000);
        assert_eq!(s.len(), 4000);
        r.commit(4000);
        assert!(r.is_full());
        assert!(r.write_slot(1).is_empty());
    }
}
