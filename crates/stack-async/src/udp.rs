//! `UdpSocket`: a UDP socket on a ustack stack, shaped like `tokio::net::UdpSocket`.
//!
//! ```text
//!   stack thread                                      caller's executor
//!   udp_rcv -> core queue ---drain--> RecvQueue (256 datagrams) --> recv_from / poll_recv_from
//!              (sk_rcvbuf bytes)
//!   udp_sendmsg <------------------- call ------------------------- send_to / poll_send_to
//!   SendBuffer (sk_sndbuf) --release under half--> SendFanout --> every waiting sender
//! ```
//!
//! Receive. The core raises `Event::Readable` when a datagram or an error lands on an
//! empty queue (`sk_data_ready`), and not again until `udp_recvmsg` has emptied it. On
//! that event the stack thread drains the core queue into this socket's receive
//! channel (`RecvQueue`), between the protocol task and the socket, bounded in datagrams
//! and in bytes of buffer. When the channel is full the drain stops and the rest waits
//! in the core queue, which is bounded by `sk_rcvbuf` and drops (counting
//! `RcvbufErrors`) when full, exactly as Linux does for a reader that does not keep up. Because the core will not signal again while its
//! queue is non-empty, a drain that stopped on a full channel marks it *stalled*, and
//! the reader that brings the channel down to half asks the stack thread for another
//! drain (one command per stall, not per datagram).
//!
//! Send. Every send is a command run on the stack thread (`udp_sendmsg`). When the
//! socket's send buffer is full the sender parks on it: the core wakes one registered
//! waker when freed packets bring the usage under half (`sock_def_write_space`); we
//! register a fan-out waker there that wakes every task waiting on this socket, so
//! several senders sharing one socket never lose a wakeup. A parked sender stays
//! pending for as long as the packets it waits for are in flight: that is the
//! backpressure, and nothing grows while it waits.
//!
//! Errors. A pending socket error (`sk_err`, e.g. `ConnectionRefused` after an ICMP port
//! unreachable on a connected socket) is reported once, by whichever of the next
//! receive or send comes first, as Linux's `sock_error` does.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Wake, Waker};

use stack_core::skb::WmemCounter;
use stack_core::stack::{SocketId, Stack};
use stack_core::udp::UdpDatagram;
use stack_core::SendError;
use tokio::io::ReadBuf;

use crate::handle::{stopped, StackHandle};
use crate::proto::StackCtx;

/// Datagrams a socket's receive channel holds. Beyond that they wait in the core's
/// queue (bounded by the receive buffer size) and then are dropped.
pub const UDP_RECV_QUEUE: usize = 256;
/// Bytes of packet buffer (each datagram counts its whole buffer, as `skb->truesize`
/// does) the receive channel holds, whichever of the two bounds comes first. Typical
/// datagrams sit in 2 KiB buffers and meet the count first; this bound is for large
/// reassembled ones (up to 64 KiB each).
pub const UDP_RECV_QUEUE_BYTES: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is
    // a single push, pop or assignment), so poisoning carries no information here.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who waits for something, in one of two ways:
/// * tasks inside `recv_from(...).await` / `send_to(...).await`: each future has its own
///   entry, removed when it completes or is dropped, so any number of tasks can wait
///   on one shared socket;
/// * the `poll_*` methods: one slot, and only the waker of the latest call is woken,
///   as documented for tokio's `poll_recv_from`.
#[derive(Default)]
struct Waiters {
    next_key: u64,
    tasks: Vec<(u64, Waker)>,
    poller: Option<Waker>,
}

/// Where a poll registers its waker.
enum Slot<'a> {
    Poller,
    /// The entry key of one waiting future, assigned on its first registration.
    Task(&'a mut Option<u64>),
}

impl Slot<'_> {
    fn reborrow(&mut self) -> Slot<'_> {
        match self {
            Slot::Poller => Slot::Poller,
            Slot::Task(key) => Slot::Task(key),
        }
    }
}

impl Waiters {
    fn register(&mut self, slot: Slot<'_>, waker: &Waker) {
        match slot {
            Slot::Poller => match &self.poller {
                Some(w) if w.will_wake(waker) => {}
                _ => self.poller = Some(waker.clone()),
            },
            Slot::Task(key) => {
                let k = *key.get_or_insert_with(|| {
                    self.next_key += 1;
                    self.next_key
                });
                match self.tasks.iter_mut().find(|(e, _)| *e == k) {
                    Some((_, w)) if w.will_wake(waker) => {}
                    Some((_, w)) => *w = waker.clone(),
                    // New, or woken (and so removed) since it last registered.
                    None => self.tasks.push((k, waker.clone())),
                }
            }
        }
    }

    fn remove(&mut self, key: u64) {
        if let Some(i) = self.tasks.iter().position(|(k, _)| *k == key) {
            self.tasks.swap_remove(i);
        }
    }

    /// Everyone, to be woken once the lock is released. Waking all (rather than one)
    /// means a waiter that was woken and then dropped cannot swallow the wakeup that
    /// another one needed; the others find nothing and register again.
    fn take_all(&mut self) -> Vec<Waker> {
        let mut all: Vec<Waker> = self.tasks.drain(..).map(|(_, w)| w).collect();
        all.extend(self.poller.take());
        all
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The socket's receive channel (see the module documentation).
struct RecvQueue {
    state: Mutex<RecvState>,
}

struct RecvState {
    datagrams: VecDeque<UdpDatagram>,
    /// Buffer bytes of `datagrams`.
    bytes: usize,
    /// `sk_err` taken from the core, reported by the next receive or send.
    error: Option<io::Error>,
    /// The last drain stopped on a full channel: the core may still hold datagrams and
    /// will not signal them.
    stalled: bool,
    /// The stack thread dropped our reader: it stopped, or the socket closed.
    closed: bool,
    waiters: Waiters,
}

impl RecvQueue {
    fn new() -> RecvQueue {
        RecvQueue {
            state: Mutex::new(RecvState {
                datagrams: VecDeque::new(),
                bytes: 0,
                error: None,
                stalled: false,
                closed: false,
                waiters: Waiters::default(),
            }),
        }
    }

    /// On the stack thread: move datagrams (and a pending error) out of the core queue
    /// until it is empty or the channel is full.
    fn drain_from(&self, stack: &mut Stack, id: SocketId) {
        let mut st = lock(&self.state);
        let mut arrived = false;
        loop {
            if st.is_full() {
                st.stalled = true;
                break;
            }
            match stack.udp_recvmsg(id, false) {
                Ok(Some(d)) => {
                    st.bytes += d.skb.end();
                    st.datagrams.push_back(d);
                }
                // Empty: the core signals the next arrival again.
                Ok(None) => break,
                // The socket is gone (never while its reader is registered).
                Err(SendError::BadSocket) => break,
                // `sk_err`, handed out once; later errors replace it, as in Linux.
                Err(e) => st.error = Some(e.into()),
            }
            arrived = true;
        }
        let wakers = if arrived {
            st.waiters.take_all()
        } else {
            Vec::new()
        };
        drop(st);
        wake_all(wakers);
    }

    fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        let wakers = st.waiters.take_all();
        drop(st);
        wake_all(wakers);
    }

    fn take_error(&self) -> Option<io::Error> {
        lock(&self.state).error.take()
    }

    /// The next datagram (or the pending error), handed to `f`; with `peek` it stays
    /// queued. The `bool` says the caller must ask the stack thread for a drain.
    fn poll_take<R>(
        &self,
        cx: &mut Context<'_>,
        slot: Slot<'_>,
        peek: bool,
        f: impl FnOnce(&UdpDatagram) -> R,
    ) -> (Poll<io::Result<R>>, bool) {
        let mut st = lock(&self.state);
        if let Some(e) = st.error.take() {
            return (Poll::Ready(Err(e)), false);
        }
        if peek {
            if let Some(d) = st.datagrams.front() {
                return (Poll::Ready(Ok(f(d))), false);
            }
        } else if let Some(d) = st.datagrams.pop_front() {
            st.bytes -= d.skb.end();
            // Ask for more once half the channel is free, not after every datagram.
            let drain = st.stalled && st.is_half_free();
            if drain {
                st.stalled = false;
            }
            drop(st);
            return (Poll::Ready(Ok(f(&d))), drain);
        }
        if st.closed {
            return (Poll::Ready(Err(stopped())), false);
        }
        // Registered under the same lock the drain pushes under: no arrival can slip
        // between the empty check and the registration.
        st.waiters.register(slot, cx.waker());
        (Poll::Pending, false)
    }
}

impl RecvState {
    fn is_full(&self) -> bool {
        self.datagrams.len() >= UDP_RECV_QUEUE || self.bytes >= UDP_RECV_QUEUE_BYTES
    }

    fn is_half_free(&self) -> bool {
        self.datagrams.len() <= UDP_RECV_QUEUE / 2 && self.bytes <= UDP_RECV_QUEUE_BYTES / 2
    }
}

/// The reader registered for the socket on the stack thread. Dropped there when the
/// socket closes or the stack stops; either way, waiting receivers must hear of it.
struct Reader {
    queue: Arc<RecvQueue>,
    id: SocketId,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The waker the core's `SendBuffer` holds for this socket: wakes every waiting sender.
#[derive(Default)]
struct SendFanout {
    waiters: Mutex<Waiters>,
}

impl Wake for SendFanout {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = lock(&self.waiters).take_all();
        wake_all(wakers);
    }
}

/// Removes a waiting future's entry when the future completes or is dropped.
struct WaiterKey<F: Fn(u64)> {
    key: Option<u64>,
    remove: F,
}

impl<F: Fn(u64)> WaiterKey<F> {
    fn new(remove: F) -> Self {
        WaiterKey { key: None, remove }
    }
}

impl<F: Fn(u64)> Drop for WaiterKey<F> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            (self.remove)(k);
        }
    }
}

/// The outcome of one `udp_sendmsg` on the stack thread.
enum Attempt {
    Sent(usize),
    /// The send buffer was full; nothing was sent.
    Blocked,
    Failed(io::Error),
}

type CallFuture = Pin<Box<dyn Future<Output = io::Result<Attempt>> + Send>>;

/// A send handed to the stack thread, awaiting its outcome.
struct SendOp {
    dst: Option<SocketAddrV4>,
    more: bool,
    data: Arc<[u8]>,
    call: CallFuture,
}

#[derive(Clone, Copy, Debug)]
struct Addrs {
    /// `getsockname`: the bound address, with the route's source once connected.
    local: SocketAddrV4,
    peer: Option<SocketAddrV4>,
}

/// Options applied before the socket is bound (some, like `SO_REUSEADDR`, only matter
/// then), as one would set them with socket2 before `bind`.
///
/// ```no_run
/// # async fn f(stack: &stack_async::StackHandle) -> std::io::Result<()> {
/// use stack_async::UdpOptions;
/// let sock = UdpOptions::new()
///     .reuse_address(true)
///     .recv_buffer_size(1 << 20)
///     .bind(stack, "0.0.0.0:5353".parse().unwrap())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct UdpOptions {
    reuse_address: bool,
    broadcast: bool,
    recv_buffer_size: Option<usize>,
    send_buffer_size: Option<usize>,
}

impl UdpOptions {
    pub fn new() -> UdpOptions {
        UdpOptions::default()
    }

    /// SO_REUSEADDR: share the port with other sockets that set it too.
    pub fn reuse_address(mut self, on: bool) -> UdpOptions {
        self.reuse_address = on;
        self
    }

    /// SO_BROADCAST: allow sending to broadcast addresses.
    pub fn broadcast(mut self, on: bool) -> UdpOptions {
        self.broadcast = on;
        self
    }

    /// SO_RCVBUF: bytes of buffer (truesize) the core queues for this socket.
    pub fn recv_buffer_size(mut self, bytes: usize) -> UdpOptions {
        self.recv_buffer_size = Some(bytes);
        self
    }

    /// SO_SNDBUF: bytes of buffer this socket may have in flight below it.
    pub fn send_buffer_size(mut self, bytes: usize) -> UdpOptions {
        self.send_buffer_size = Some(bytes);
        self
    }

    /// Create a socket with these options and bind it to `addr` (port 0: an ephemeral
    /// port; address 0.0.0.0: any of ours). Fails like Linux's `bind`: `AddrInUse`,
    /// `AddrNotAvailable`, ...
    pub async fn bind(&self, stack: &StackHandle, addr: SocketAddrV4) -> io::Result<UdpSocket> {
        let opts = self.clone();
        let handle = stack.clone();
        // Opened, bound and registered in one command, so no Readable event can come
        // before the reader exists. The socket is built on the stack thread: if this
        // future is dropped before the reply arrives, dropping the reply closes it.
        stack
            .call_ctx(move |ctx| UdpSocket::open(ctx, handle, &opts, addr))
            .await?
    }

    fn apply(&self, stack: &mut Stack, id: SocketId) -> Result<(), SendError> {
        stack.udp_set_reuseaddr(id, self.reuse_address)?;
        stack.udp_set_broadcast(id, self.broadcast)?;
        if let Some(bytes) = self.recv_buffer_size {
            stack.udp_set_rcvbuf(id, bytes)?;
        }
        if let Some(bytes) = self.send_buffer_size {
            stack.udp_set_sndbuf(id, bytes)?;
        }
        Ok(())
    }
}

/// A UDP socket on a ustack stack: the methods of `tokio::net::UdpSocket`, with
/// `SocketAddrV4` for addresses. `Send + Sync`: share it with an `Arc` to send from one
/// task while others receive. Its futures work on any executor.
///
/// Dropping it closes the socket; datagrams still queued are discarded.
pub struct UdpSocket {
    stack: StackHandle,
    id: SocketId,
    recv: Arc<RecvQueue>,
    send: Arc<SendFanout>,
    /// `send` as a waker, registered with the core's send buffer.
    send_waker: Waker,
    wmem: WmemCounter,
    addrs: Mutex<Addrs>,
    broadcast: AtomicBool,
    /// The send in flight for `poll_send_to` / `poll_send`.
    poll_send: Mutex<Option<SendOp>>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs = *lock(&self.addrs);
        f.debug_struct("UdpSocket")
            .field("id", &self.id)
            .field("local", &addrs.local)
            .field("peer", &addrs.peer)
            .finish()
    }
}

impl UdpSocket {
    /// Create a socket bound to `addr` (port 0: an ephemeral port; 0.0.0.0: any of our
    /// addresses). See [`UdpOptions`] to set options before binding.
    pub async fn bind(stack: &StackHandle, addr: SocketAddrV4) -> io::Result<UdpSocket> {
        UdpOptions::new().bind(stack, addr).await
    }

    /// On the stack thread: `socket` + options + `bind` + reader registration.
    fn open(
        ctx: &mut StackCtx<'_>,
        handle: StackHandle,
        opts: &UdpOptions,
        addr: SocketAddrV4,
    ) -> io::Result<UdpSocket> {
        let stack = &mut *ctx.stack;
        let id = stack.udp_socket();
        let bound = opts
            .apply(stack, id)
            .and_then(|()| stack.udp_bind(id, addr));
        let bound = match bound {
            Ok(local) => local,
            Err(e) => {
                stack.udp_close(id);
                return Err(e.into());
            }
        };
        let Some(wmem) = stack.udp_send_buffer(id) else {
            return Err(SendError::BadSocket.into());
        };
        let recv = Arc::new(RecvQueue::new());
        let reader = Reader {
            queue: recv.clone(),
            id,
        };
        ctx.readers.insert(
            id,
            Box::new(move |stack: &mut Stack| reader.queue.drain_from(stack, reader.id)),
        );
        let send = Arc::new(SendFanout::default());
        Ok(UdpSocket {
            stack: handle,
            id,
            recv,
            send_waker: Waker::from(send.clone()),
            send,
            wmem,
            addrs: Mutex::new(Addrs {
                local: bound,
                peer: None,
            }),
            broadcast: AtomicBool::new(opts.broadcast),
            poll_send: Mutex::new(None),
        })
    }

    /// Fix the peer: `send`/`recv` then talk to it only, datagrams from others are no
    /// longer delivered, and ICMP errors about it (port unreachable) come back as
    /// `ConnectionRefused` from a later call. Connecting again changes the peer.
    pub async fn connect(&self, peer: SocketAddrV4) -> io::Result<()> {
        let id = self.id;
        let local = self
            .stack
            .call(move |stack, _now| stack.udp_connect(id, peer))
            .await??;
        let mut addrs = lock(&self.addrs);
        addrs.local = local;
        addrs.peer = Some(peer);
        Ok(())
    }

    /// The local address (`getsockname`): once connected, with the source address the
    /// route chose if the socket was bound to 0.0.0.0.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(lock(&self.addrs).local)
    }

    /// The connected peer, or `NotConnected`.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        lock(&self.addrs)
            .peer
            .ok_or_else(|| io::Error::from(SendError::NotConnected))
    }

    /// Send `buf` as one datagram to `target`; returns the bytes sent (all of them).
    /// Waits while the send buffer is full. Errors are Linux's `sendto`'s
    /// (`MessageTooLong` over 65507 bytes, `PermissionDenied` for broadcast without
    /// SO_BROADCAST (EACCES), `NetworkUnreachable`, ...), or `NotConnected` when the
    /// stack has stopped.
    ///
    /// Cancelling (dropping the future) after the datagram was handed to the stack
    /// thread does not take it back: it may still be sent.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddrV4) -> io::Result<usize> {
        self.send_with(buf, Some(target), false).await
    }

    /// Send to the connected peer (`DestAddrRequired` if not connected).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_with(buf, None, false).await
    }

    /// `sendto` with MSG_MORE: append `buf` to a pending datagram for `target`, sent
    /// when a later send without it (or [`UdpSocket::set_cork`]`(false)`) completes it.
    /// The pending datagram keeps the destination of its first part.
    pub async fn send_to_more(&self, buf: &[u8], target: SocketAddrV4) -> io::Result<usize> {
        self.send_with(buf, Some(target), true).await
    }

    /// `send` with MSG_MORE, to the connected peer.
    pub async fn send_more(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_with(buf, None, true).await
    }

    /// UDP_CORK: while on, every send is appended to one pending datagram; turning it
    /// off sends that datagram (waiting for room in the send buffer first).
    pub async fn set_cork(&self, on: bool) -> io::Result<()> {
        let mut key = self.send_key();
        loop {
            if !on {
                poll_fn(|cx| self.poll_room(cx, Slot::Task(&mut key.key))).await;
            }
            let (id, wmem) = (self.id, self.wmem.clone());
            let attempt = self
                .stack
                .call(move |stack, now| {
                    // Uncorking with a full buffer would lose the pending datagram in
                    // the core (it is taken before the send fails): wait instead.
                    if !on && !wmem.has_room() {
                        return Attempt::Blocked;
                    }
                    match stack.udp_set_cork(now, id, on) {
                        Ok(()) => Attempt::Sent(0),
                        Err(SendError::WouldBlock) => Attempt::Blocked,
                        Err(e) => Attempt::Failed(e.into()),
                    }
                })
                .await?;
            match attempt {
                Attempt::Sent(_) => return Ok(()),
                Attempt::Failed(e) => return Err(e),
                Attempt::Blocked => {}
            }
        }
    }

    /// Receive one datagram into `buf`: returns its length and sender. A datagram longer
    /// than `buf` is truncated to fit and the rest discarded, as Linux's `recvfrom`
    /// does. A pending socket error is returned instead (once). Cancel safe: a datagram
    /// is taken only by the poll that returns it.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        self.recv_with(false, |d| copy_out(d, buf)).await
    }

    /// Receive one datagram from the connected peer into `buf` (truncating like
    /// [`UdpSocket::recv_from`]).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_with(false, |d| copy_out(d, buf).0).await
    }

    /// Like [`UdpSocket::recv_from`], but the datagram stays queued (MSG_PEEK).
    pub async fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        self.recv_with(true, |d| copy_out(d, buf)).await
    }

    /// Poll for a datagram: on `Ready(Ok(from))` its bytes (truncated to the space
    /// left) have been appended to `buf`. On `Pending`, only the waker of the latest
    /// call to a `poll_recv*`/`poll_peek*` method is woken (as with tokio).
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddrV4>> {
        self.poll_take(cx, Slot::Poller, false, |d| fill(d, buf))
    }

    /// [`UdpSocket::poll_recv_from`] for a connected socket.
    pub fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.poll_take(cx, Slot::Poller, false, |d| {
            fill(d, buf);
        })
    }

    /// [`UdpSocket::poll_recv_from`] that leaves the datagram queued.
    pub fn poll_peek_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddrV4>> {
        self.poll_take(cx, Slot::Poller, true, |d| fill(d, buf))
    }

    /// Poll to send `buf` to `target`.
    ///
    /// A send needs a round trip to the stack thread, so the first call may hand the
    /// datagram over and return `Pending`; call again with the same `buf` and `target`
    /// to get its result (as one does after `Pending` anyway). A call with a different
    /// datagram first lets the one already handed over complete (its result is only
    /// logged), then sends the new one. While the send buffer is full nothing is handed
    /// over, so `Pending` then means nothing was sent. Only the latest caller's waker is
    /// woken.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddrV4,
    ) -> Poll<io::Result<usize>> {
        let mut op = lock(&self.poll_send);
        self.poll_send_op(cx, &mut op, Slot::Poller, Some(target), buf, false)
    }

    /// [`UdpSocket::poll_send_to`] to the connected peer.
    pub fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut op = lock(&self.poll_send);
        self.poll_send_op(cx, &mut op, Slot::Poller, None, buf, false)
    }

    /// SO_BROADCAST. Applied in order with this socket's later calls.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        let id = self.id;
        self.post(move |stack| stack.udp_set_broadcast(id, on))?;
        self.broadcast.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Whether SO_BROADCAST is set.
    pub fn broadcast(&self) -> io::Result<bool> {
        Ok(self.broadcast.load(Ordering::Relaxed))
    }

    /// SO_RCVBUF: bytes of buffer (truesize, at least 2048) the core may queue for this
    /// socket beyond its receive channel. Applied in order with later calls.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        let id = self.id;
        self.post(move |stack| stack.udp_set_rcvbuf(id, bytes))
    }

    /// SO_SNDBUF: bytes (at least 2048) this socket may have queued below it before
    /// sends wait. Applied in order with later calls.
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        let id = self.id;
        self.post(move |stack| stack.udp_set_sndbuf(id, bytes))
    }

    /// SO_SNDBUF as the core applies it now.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(self.wmem.limit())
    }

    /// Queue a socket option change without waiting: the command channel keeps order,
    /// so every later call of this socket sees it, as with a synchronous setsockopt.
    fn post(
        &self,
        f: impl FnOnce(&mut Stack) -> Result<(), SendError> + Send + 'static,
    ) -> io::Result<()> {
        let posted = self.stack.post(move |ctx| {
            // Cannot fail for a live socket: the options only check that it exists.
            if let Err(e) = f(ctx.stack) {
                tracing::debug!("udp: socket option: {e}");
            }
        });
        if posted {
            Ok(())
        } else {
            Err(stopped())
        }
    }

    fn send_key(&self) -> WaiterKey<impl Fn(u64) + '_> {
        WaiterKey::new(move |k| lock(&self.send.waiters).remove(k))
    }

    async fn send_with(
        &self,
        buf: &[u8],
        dst: Option<SocketAddrV4>,
        more: bool,
    ) -> io::Result<usize> {
        let mut op = None;
        let mut key = self.send_key();
        poll_fn(|cx| self.poll_send_op(cx, &mut op, Slot::Task(&mut key.key), dst, buf, more)).await
    }

    /// The send state machine shared by the async and the poll API: wait for room,
    /// hand the datagram to the stack thread, and on `Blocked` (another sender took the
    /// room first) wait again.
    fn poll_send_op(
        &self,
        cx: &mut Context<'_>,
        op: &mut Option<SendOp>,
        mut slot: Slot<'_>,
        dst: Option<SocketAddrV4>,
        buf: &[u8],
        more: bool,
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(cur) = op.as_mut() {
                let outcome = ready!(cur.call.as_mut().poll(cx));
                let same = cur.dst == dst && cur.more == more && *cur.data == *buf;
                *op = None;
                match outcome {
                    // The stack thread stopped.
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Attempt::Blocked) => {}
                    Ok(Attempt::Sent(n)) if same => return Poll::Ready(Ok(n)),
                    Ok(Attempt::Failed(e)) if same => return Poll::Ready(Err(e)),
                    Ok(Attempt::Sent(_)) => {
                        tracing::debug!("udp: poll_send: an abandoned earlier datagram was sent")
                    }
                    Ok(Attempt::Failed(e)) => {
                        tracing::debug!("udp: poll_send: an abandoned earlier datagram failed: {e}")
                    }
                }
            }
            if let Some(e) = self.recv.take_error() {
                return Poll::Ready(Err(e));
            }
            ready!(self.poll_room(cx, slot.reborrow()));
            *op = Some(self.start_send(dst, buf, more));
        }
    }

    /// Ready when the send buffer has room. The fan-out waker is registered with the
    /// core's buffer before the re-check, so a release in between is not missed.
    fn poll_room(&self, cx: &mut Context<'_>, slot: Slot<'_>) -> Poll<()> {
        if self.wmem.has_room() {
            return Poll::Ready(());
        }
        lock(&self.send.waiters).register(slot, cx.waker());
        self.wmem.register_waker(&self.send_waker);
        if self.wmem.has_room() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn start_send(&self, dst: Option<SocketAddrV4>, buf: &[u8], more: bool) -> SendOp {
        let data: Arc<[u8]> = Arc::from(buf);
        let (id, wmem, payload) = (self.id, self.wmem.clone(), data.clone());
        let call = self.stack.call(move |stack, now| {
            // Another sender may have filled the buffer since we looked: do not let
            // udp_sendmsg fail (it would count SndbufErrors, and lose a corked
            // datagram); wait for room like a blocking Linux socket.
            if !wmem.has_room() {
                return Attempt::Blocked;
            }
            match stack.udp_sendmsg(now, id, dst, &payload, more) {
                Ok(n) => Attempt::Sent(n),
                Err(SendError::WouldBlock) => Attempt::Blocked,
                Err(e) => Attempt::Failed(e.into()),
            }
        });
        SendOp {
            dst,
            more,
            data,
            call: Box::pin(call),
        }
    }

    async fn recv_with<R>(
        &self,
        peek: bool,
        mut f: impl FnMut(&UdpDatagram) -> R,
    ) -> io::Result<R> {
        let mut key = WaiterKey::new(|k| lock(&self.recv.state).waiters.remove(k));
        poll_fn(|cx| self.poll_take(cx, Slot::Task(&mut key.key), peek, &mut f)).await
    }

    fn poll_take<R>(
        &self,
        cx: &mut Context<'_>,
        slot: Slot<'_>,
        peek: bool,
        f: impl FnOnce(&UdpDatagram) -> R,
    ) -> Poll<io::Result<R>> {
        let (poll, drain) = self.recv.poll_take(cx, slot, peek, f);
        if drain {
            self.request_drain();
        }
        poll
    }

    /// Ask the stack thread to drain the core queue again (fire and forget). The drain
    /// runs before this socket's close, which is queued behind it.
    fn request_drain(&self) {
        let id = self.id;
        self.stack.post(move |ctx| {
            if let Some(reader) = ctx.readers.get_mut(&id) {
                reader(ctx.stack);
            }
        });
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let id = self.id;
        self.stack.post(move |ctx| {
            ctx.readers.remove(&id);
            ctx.stack.udp_close(id);
        });
    }
}

/// Copy as much of the datagram as fits (the rest is discarded, as in `recvfrom`).
fn copy_out(d: &UdpDatagram, buf: &mut [u8]) -> (usize, SocketAddrV4) {
    let payload = d.payload();
    let n = payload.len().min(buf.len());
    buf[..n].copy_from_slice(&payload[..n]);
    (n, d.from)
}

fn fill(d: &UdpDatagram, buf: &mut ReadBuf<'_>) -> SocketAddrV4 {
    let payload = d.payload();
    let n = payload.len().min(buf.remaining());
    buf.put_slice(&payload[..n]);
    d.from
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicUsize;

    use stack_core::stack::{Event, StackConfig};
    use stack_core::wire::ethernet::{ethertype, EthernetRepr};
    use stack_core::wire::icmpv4::{unreach_code, Icmpv4Repr};
    use stack_core::wire::ipv4::{protocol, Ipv4Options, Ipv4Repr};
    use stack_core::wire::udp::UdpRepr;
    use stack_core::wire::MacAddr;
    use stack_core::DeviceId;
    use stack_core::{Instant, Skb};

    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER_MAC: MacAddr = MacAddr([2, 0xaa, 0, 0, 0, 1]);

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn stack() -> Stack {
        let mut s = Stack::new(
            StackConfig::new(StackConfig::default_mac(US), US, 24),
            Instant::ZERO,
            1,
        );
        while s.poll_transmit_dev(Instant::ZERO, DeviceId::ETH0).is_some() {}
        s
    }

    fn frame(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Skb {
        let eth = EthernetRepr {
            dst: StackConfig::default_mac(US),
            src: PEER_MAC,
            vlan: None,
            ethertype: ethertype::IPV4,
        };
        let ip = Ipv4Repr {
            src,
            dst,
            protocol: proto,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: payload.len(),
            options: Ipv4Options::default(),
        };
        let mut buf = vec![0; eth.header_len() + ip.buffer_len()];
        eth.emit(&mut buf);
        ip.emit(&mut buf[eth.header_len()..]);
        buf[eth.header_len() + ip.header_len()..].copy_from_slice(payload);
        Skb::from_vec(buf)
    }

    fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0; 8 + payload.len()];
        b[8..].copy_from_slice(payload);
        UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
        }
        .emit(&mut b, payload.len(), *src.ip(), *dst.ip());
        b
    }

    /// The peer sends `payload` from port 1000 to our `port`.
    fn deliver(s: &mut Stack, port: u16, payload: &[u8]) {
        let (from, to) = (SocketAddrV4::new(PEER, 1000), SocketAddrV4::new(US, port));
        let skb = frame(protocol::UDP, PEER, US, &udp(from, to, payload));
        s.netif_receive_skb(Instant::ZERO, DeviceId::ETH0, skb);
    }

    fn events(s: &mut Stack) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn take(q: &RecvQueue, w: &Waker) -> (Poll<io::Result<Vec<u8>>>, bool) {
        let mut cx = Context::from_waker(w);
        q.poll_take(&mut cx, Slot::Poller, false, |d| d.payload().to_vec())
    }

    fn seq(n: u32) -> [u8; 4] {
        n.to_be_bytes()
    }

    #[test]
    fn socket_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<UdpSocket>();
        check::<UdpOptions>();
    }

    #[test]
    fn waiters_wake_every_task_and_only_the_latest_poller() {
        let mut w = Waiters::default();
        let (a, wa) = waker();
        let (b, wb) = waker();
        let (p1, wp1) = waker();
        let (p2, wp2) = waker();
        let (mut ka, mut kb) = (None, None);
        w.register(Slot::Task(&mut ka), &wa);
        w.register(Slot::Task(&mut ka), &wa);
        w.register(Slot::Task(&mut kb), &wb);
        w.register(Slot::Poller, &wp1);
        w.register(Slot::Poller, &wp2);
        assert_eq!(w.tasks.len(), 2, "one entry per waiting future");
        assert_ne!(ka, kb);
        wake_all(w.take_all());
        assert_eq!((a.get(), b.get(), p1.get(), p2.get()), (1, 1, 0, 1));
        assert!(w.take_all().is_empty(), "a wake consumes the registrations");

        // A dropped future removes its entry; re-registering after a wake works.
        w.register(Slot::Task(&mut ka), &wa);
        w.register(Slot::Task(&mut kb), &wb);
        w.remove(kb.unwrap());
        wake_all(w.take_all());
        assert_eq!((a.get(), b.get()), (2, 1));
    }

    #[test]
    fn waiter_key_removes_its_entry_on_drop() {
        let waiters = Mutex::new(Waiters::default());
        let (_, wa) = waker();
        {
            let mut key = WaiterKey::new(|k| lock(&waiters).remove(k));
            lock(&waiters).register(Slot::Task(&mut key.key), &wa);
            assert_eq!(lock(&waiters).tasks.len(), 1);
        }
        assert!(lock(&waiters).tasks.is_empty());
    }

    /// The heart of the receive path: the core signals once per empty -> non-empty
    /// transition, so a drain stopped by a full channel must be resumed by the reader.
    #[test]
    fn drain_stalls_on_a_full_channel_and_the_reader_resumes_it_at_half() {
        let mut s = stack();
        let id = s.udp_socket();
        s.udp_set_rcvbuf(id, 4 << 20).unwrap();
        s.udp_bind(id, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7))
            .unwrap();
        let q = RecvQueue::new();
        let (woken, w) = waker();

        // A receiver waits first.
        assert!(take(&q, &w).0.is_pending());
        let total = 400u32;
        for n in 0..total {
            deliver(&mut s, 7, &seq(n));
        }
        assert_eq!(events(&mut s), vec![Event::Readable(id)], "one signal");
        q.drain_from(&mut s, id);
        assert_eq!(woken.get(), 1, "the waiting receiver was woken");
        assert_eq!(lock(&q.state).datagrams.len(), UDP_RECV_QUEUE);
        assert!(lock(&q.state).stalled);
        assert_eq!(s.udp_rcvq_len(id), (total as usize) - UDP_RECV_QUEUE);

        // More arrives while the core queue is non-empty: no new signal.
        deliver(&mut s, 7, &seq(total));
        assert!(events(&mut s).is_empty());

        let mut got = Vec::new();
        let mut drains = 0;
        while got.len() < total as usize + 1 {
            match take(&q, &w) {
                (Poll::Ready(Ok(p)), drain) => {
                    got.push(u32::from_be_bytes(p.try_into().unwrap()));
                    if drain {
                        // Requested exactly when half the channel is free.
                        assert_eq!(lock(&q.state).datagrams.len(), UDP_RECV_QUEUE / 2);
                        drains += 1;
                        q.drain_from(&mut s, id);
                    }
                }
                (other, _) => panic!("after {} datagrams: {other:?}", got.len()),
            }
        }
        assert_eq!(got, (0..=total).collect::<Vec<_>>(), "in order, none lost");
        assert_eq!(drains, 2);
        assert!(take(&q, &w).0.is_pending());
        assert!(!lock(&q.state).stalled);
        assert_eq!(s.udp_rcvq_len(id), 0);

        // Drained empty: the next arrival is signalled again.
        deliver(&mut s, 7, b"again");
        assert_eq!(events(&mut s), vec![Event::Readable(id)]);
        q.drain_from(&mut s, id);
        assert_eq!(
            take(&q, &w).0.map(|r| r.unwrap()),
            Poll::Ready(b"again".to_vec())
        );
        assert_eq!(s.udp_drops(id), 0);
    }

    /// Large datagrams (looped back to our own address, so in big buffers) fill the
    /// channel by bytes long before its datagram count.
    #[test]
    fn large_datagrams_fill_the_channel_by_bytes() {
        let mut s = stack();
        let rx = s.udp_socket();
        s.udp_set_rcvbuf(rx, 16 << 20).unwrap();
        s.udp_bind(rx, SocketAddrV4::new(US, 7)).unwrap();
        let tx = s.udp_socket();
        s.udp_set_sndbuf(tx, 16 << 20).unwrap();
        let big = vec![7u8; 60_000];
        for _ in 0..40 {
            s.udp_sendmsg(
                Instant::ZERO,
                tx,
                Some(SocketAddrV4::new(US, 7)),
                &big,
                false,
            )
            .expect("looped back");
        }
        assert_eq!(s.udp_rcvq_len(rx), 40);
        let q = RecvQueue::new();
        q.drain_from(&mut s, rx);
        let (n, bytes) = {
            let st = lock(&q.state);
            (st.datagrams.len(), st.bytes)
        };
        assert!(lock(&q.state).stalled);
        assert!(
            n < 40 && bytes >= UDP_RECV_QUEUE_BYTES,
            "{n} datagrams, {bytes} bytes"
        );
        assert!(
            bytes < UDP_RECV_QUEUE_BYTES + 70_000,
            "at most one datagram over"
        );

        let (_, w) = waker();
        let mut got = 0;
        while let (Poll::Ready(Ok(p)), drain) = take(&q, &w) {
            assert_eq!(p.len(), 60_000);
            got += 1;
            if drain {
                assert!(lock(&q.state).bytes <= UDP_RECV_QUEUE_BYTES / 2);
                q.drain_from(&mut s, rx);
            }
        }
        assert_eq!(got, 40);
        assert_eq!(lock(&q.state).bytes, 0);
    }

    #[test]
    fn socket_error_comes_once_before_queued_datagrams() {
        let mut s = stack();
        let id = s.udp_socket();
        let local = s
            .udp_bind(id, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5000))
            .unwrap();
        let peer = SocketAddrV4::new(PEER, 9);
        s.udp_connect(id, peer).unwrap();
        let q = RecvQueue::new();
        let (_, w) = waker();

        // The peer sends us a datagram, then says port 9 is unreachable (quoting the IP
        // header and the first 8 bytes of a datagram we sent there).
        let ours = SocketAddrV4::new(US, local.port());
        let dgram = udp(peer, ours, b"early");
        s.netif_receive_skb(
            Instant::ZERO,
            DeviceId::ETH0,
            frame(protocol::UDP, PEER, US, &dgram),
        );
        let sent = udp(ours, peer, b"x");
        let quoted = frame(protocol::UDP, US, PEER, &sent);
        let quoted = &quoted.data()[14..14 + 20 + 8];
        let icmp = Icmpv4Repr::DstUnreachable {
            code: unreach_code::PORT,
            next_hop_mtu: 0,
            data: quoted,
        };
        let mut b = vec![0; icmp.buffer_len()];
        icmp.emit(&mut b);
        s.netif_receive_skb(
            Instant::ZERO,
            DeviceId::ETH0,
            frame(protocol::ICMP, PEER, US, &b),
        );
        assert_eq!(events(&mut s), vec![Event::Readable(id)]);
        q.drain_from(&mut s, id);

        match take(&q, &w).0 {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            take(&q, &w).0.map(|r| r.unwrap()),
            Poll::Ready(b"early".to_vec()),
            "reported once, then the datagrams"
        );
    }

    #[test]
    fn closed_queue_wakes_receivers_and_fails_after_the_last_datagram() {
        let mut s = stack();
        let id = s.udp_socket();
        s.udp_bind(id, SocketAddrV4::new(US, 7)).unwrap();
        let q = Arc::new(RecvQueue::new());
        deliver(&mut s, 7, b"last");
        let reader = Reader {
            queue: q.clone(),
            id,
        };
        q.drain_from(&mut s, id);
        let (woken, w) = waker();
        assert!(take(&q, &w).0.is_ready());
        assert!(take(&q, &w).0.is_pending());
        // The stack thread stops: its readers (and so ours) are dropped.
        drop(reader);
        assert_eq!(woken.get(), 1);
        match take(&q, &w).0 {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotConnected),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peek_leaves_the_datagram_and_truncation_keeps_the_front() {
        let mut s = stack();
        let id = s.udp_socket();
        s.udp_bind(id, SocketAddrV4::new(US, 7)).unwrap();
        let q = RecvQueue::new();
        deliver(&mut s, 7, b"0123456789");
        q.drain_from(&mut s, id);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut small = [0u8; 4];
        let (p, _) = q.poll_take(&mut cx, Slot::Poller, true, |d| copy_out(d, &mut small));
        assert_eq!(
            p.map(|r| r.unwrap()),
            Poll::Ready((4, SocketAddrV4::new(PEER, 1000)))
        );
        assert_eq!(&small, b"0123");
        let mut storage = [0u8; 6];
        let mut rb = ReadBuf::new(&mut storage);
        let (p, _) = q.poll_take(&mut cx, Slot::Poller, false, |d| fill(d, &mut rb));
        assert!(p.is_ready());
        assert_eq!(rb.filled(), b"012345");
        assert!(q
            .poll_take(&mut cx, Slot::Poller, true, |_| ())
            .0
            .is_pending());
    }
}
