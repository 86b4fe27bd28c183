//! The NIC driver: every TAP of a stack on one io_uring, driven by the stack thread.
//!
//! One [`Uring`] plays the part of all of a stack's NICs and their drivers, the way a
//! NAPI poll loop serves its devices on one CPU:
//!
//! * **RX.** Each TAP has one multishot read posted (`IORING_OP_READ_MULTISHOT`) that
//!   picks its buffer from a ring of provided buffers (`IORING_REGISTER_PBUF_RING`),
//!   like an RX descriptor ring filled with empty buffers. Every frame completes on its
//!   own; there is no herd of reads woken per frame. A completed buffer becomes the
//!   frame's [`Skb`] and an empty one takes its slot. If the ring runs dry the read ends
//!   (`ENOBUFS`: frames wait in the TAP's queue, as they would in a NIC's FIFO) and is
//!   posted again with the refilled ring.
//! * **TX.** [`Uring::transmit`] queues a write per frame, up to
//!   [`DeviceConfig::tx_inflight`] per device; [`Uring::tx_room`] is the TX ring's free
//!   space, so the caller leaves the rest in its qdisc (`netif_stop_queue`) and moves
//!   them when completions make room (`netif_wake_queue`). Queued writes enter the
//!   kernel together with the next wait or poll: one `io_uring_enter` per batch.
//! * **Wake-ups.** [`Uring::notifier`] gives a [`Notify`] that other threads wake the
//!   loop with (a `std::task::Wake`, so it serves as the waker of the channels the loop
//!   polls). It writes an eventfd the ring has a read posted on, and only when the loop
//!   is parked: a busy loop costs its producers no system call.
//!
//! The ring is set up `SINGLE_ISSUER | DEFER_TASKRUN`: the kernel runs our completions'
//! work only when we ask for events, never by interrupting the thread, so a frame's
//! arrival costs one wake-up of a parked loop and nothing of a busy one. That is also
//! what makes [`Uring::poll`] a cheap non-blocking look, the building block of busy
//! polling.
//!
//! We drive io_uring through the `io-uring` crate here rather than tokio-uring (a
//! design-card package): tokio-uring 0.5 has neither multishot reads nor provided
//! buffer rings, parks in epoll (two to three extra system calls per wake-up, measured),
//! and cannot poll the ring without sleeping. See docs/architecture.md.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use stack_core::{Skb, SkbPool};

use crate::device::{
    receive_vnet, tx_layout, vnet_hdr_for, TxLayout, ETH_OVERHEAD, MAX_GSO_PACKET,
};
use crate::stats::IoStats;
use crate::tap::Tap;
use crate::DeviceConfig;

/// io_uring offset -1: "no offset", the only meaning a position has for a stream
/// device like /dev/net/tun.
const STREAM_POS: u64 = u64::MAX;

/// A run of this many failed reads with no success in between means the device is
/// broken in a way we did not foresee; stop rather than spin.
const MAX_RX_ERROR_RUN: u32 = 1024;

/// Submission queue entries. Writes beyond this in one pass are submitted early.
const SQ_ENTRIES: u32 = 512;

// user_data: the kind in the top byte, the device in the next two, an index below.
const KIND_SHIFT: u64 = 56;
const DEV_SHIFT: u64 = 40;
const KIND_RX: u64 = 1;
const KIND_TX: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;

fn user_data(kind: u64, dev: usize, index: usize) -> u64 {
    (kind << KIND_SHIFT) | ((dev as u64) << DEV_SHIFT) | index as u64
}

fn split_user_data(ud: u64) -> (u64, usize, usize) {
    (
        ud >> KIND_SHIFT,
        ((ud >> DEV_SHIFT) & 0xffff) as usize,
        (ud & ((1 << DEV_SHIFT) - 1)) as usize,
    )
}

/// Wakes a parked [`Uring`] from any thread.
#[derive(Debug)]
pub struct Notify {
    eventfd: OwnedFd,
    /// Something happened that the loop must look at (set by every wake).
    pending: AtomicBool,
    /// The loop is about to sleep or sleeping in the kernel.
    parked: AtomicBool,
    /// The eventfd has been written and the loop has not yet read it.
    signalled: AtomicBool,
}

impl Notify {
    fn new() -> io::Result<Notify> {
        // SAFETY: plain syscall; the fd is checked and owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notify {
            // SAFETY: a fresh fd we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
        })
    }

    /// Tell the loop there is work. Costs a system call only if it is parked.
    pub fn notify(&self) {
        // Paired with `Uring::wait`: it sets `parked` and then reads `pending`; we set
        // `pending` and then read `parked`. With both SeqCst one of us sees the other.
        self.pending.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && !self.signalled.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter at
            // its maximum) would mean a wake-up is already due; nothing to do then.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }
}

impl std::task::Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

/// What a completion delivered to [`Uring::poll`]'s caller.
pub enum Completion {
    /// A frame from device `dev` (an index in the order the TAPs were given).
    Frame { dev: usize, skb: Skb },
}

/// The ring of provided buffers one device's read takes from.
struct BufRing {
    /// `entries` × `io_uring_buf`, mmap'ed (page aligned, as the kernel wants).
    mem: *mut types::BufRingEntry,
    map_len: usize,
    entries: u16,
    /// Our producer index; published to the kernel by `publish`.
    tail: u16,
    /// The tail the kernel has seen.
    published: u16,
    /// The skb behind each buffer id, whose tailroom the kernel writes into.
    slots: Vec<Option<Skb>>,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        let map_len = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping; checked below.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            mem: mem.cast(),
            map_len,
            entries,
            tail: 0,
            published: 0,
            slots: (0..entries).map(|_| None).collect(),
        })
    }

    /// Hand `skb`'s tailroom to the kernel as buffer `bid` (visible after `publish`).
    fn provide(&mut self, bid: u16, mut skb: Skb) {
        let len = u32::try_from(skb.tailroom()).unwrap_or(u32::MAX);
        let addr = skb.tailroom_mut().as_mut_ptr() as u64;
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `index` < entries, inside the mapping; the kernel only reads entries
        // between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.mem.add(index) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.slots[usize::from(bid)] = Some(skb);
    }

    /// Let the kernel see the buffers provided since the last call.
    fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: the tail field of the ring's first entry, inside the mapping, which
        // the kernel reads with acquire semantics.
        unsafe {
            let tail = types::BufRingEntry::tail(self.mem).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
        self.published = self.tail;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the ring was unregistered (or never registered).
        unsafe {
            libc::munmap(self.mem.cast(), self.map_len);
        }
    }
}

/// One TAP.
struct Dev {
    fd: OwnedFd,
    name: String,
    vnet_len: usize,
    stats: Arc<IoStats>,
    rx_pool: SkbPool,
    rx_size: usize,
    bufs: BufRing,
    /// Whether a read is posted. A multishot read stays posted until it ends
    /// (`!IORING_CQE_F_MORE`): out of buffers, an error, or cancelled.
    rx_armed: bool,
    /// `IORING_OP_READ_MULTISHOT` is missing (kernels before 6.7): one read per frame.
    single_shot: bool,
    rx_error_run: u32,
    tx_inflight: usize,
    /// Writes queued since the last `io_uring_enter` (for `tx_batches`).
    tx_unsubmitted: usize,
    /// Reading was cancelled for shutdown and its last completion has arrived.
    rx_done: bool,
}

/// A write in flight: the frame (and a separate vnet header, if it has one) stay here
/// until the kernel has read them.
struct TxOp {
    /// Never read again: held so the buffer lives until the kernel has read it.
    _skb: Skb,
    /// What the write must move (vnet header included) and the frame's own length.
    wire_len: usize,
    frame_len: usize,
    /// A vnet header that did not fit the skb's headroom, and the iovecs of the writev.
    _hdr: Option<Box<([u8; 16], [libc::iovec; 2])>>,
}

/// All of a stack's TAPs on one io_uring.
pub struct Uring {
    ring: IoUring,
    devs: Vec<Dev>,
    tx: Slab<TxOp>,
    notify: Arc<Notify>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    pool: SkbPool,
    cfg: DeviceConfig,
    /// A fatal device error seen by `poll`, returned by it.
    failed: Option<io::Error>,
}

// Not `Send`: the ring is set up SINGLE_ISSUER, so the kernel accepts submissions only
// from the thread that created it (EEXIST from any other). Create it on the thread that
// drives it (the raw pointers inside keep the compiler from assuming otherwise).

fn uring_error(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "ustack: cannot create an io_uring instance: {e} (is io_uring disabled by the \
             kernel.io_uring_disabled sysctl or a seccomp filter?)"
        ),
    )
}

/// Errors after which the fd is useless: the device was deleted under us
/// (`tun_get` fails: EBADFD), the fd is bad, or the driver reports an I/O error.
fn is_fatal(errno: i32) -> bool {
    matches!(errno, libc::EBADF | libc::EBADFD | libc::EIO | libc::ENODEV)
}

fn fatal(name: &str, op: &str, errno: i32) -> io::Error {
    let err = io::Error::from_raw_os_error(errno);
    let hint = if errno == libc::EBADFD {
        " (was the device deleted?)"
    } else {
        ""
    };
    io::Error::new(
        err.kind(),
        format!("TAP device {name:?}: {op} failed: {err}{hint}"),
    )
}

impl Uring {
    /// One ring for `taps` (device `i` is `taps[i]`), each with its counters in
    /// `stats[i]`. Receive buffers come from `pool` (frames without a vnet header, and
    /// small ones copied out of the big GSO buffers, see
    /// [`DeviceConfig::rx_copybreak`]).
    pub fn new(
        taps: Vec<Tap>,
        stats: Vec<Arc<IoStats>>,
        pool: SkbPool,
        cfg: DeviceConfig,
    ) -> io::Result<Uring> {
        let cq = (SQ_ENTRIES * 2).max(4 * cfg.tx_inflight as u32 * taps.len().max(1) as u32);
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun();
        let ring = match builder.build(SQ_ENTRIES) {
            Ok(ring) => ring,
            // Kernels before 6.1 lack DEFER_TASKRUN: completions then interrupt the
            // thread instead, which works, a little slower.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
                .setup_cqsize(cq)
                .build(SQ_ENTRIES)
                .map_err(uring_error)?,
            Err(e) => return Err(uring_error(e)),
        };
        let notify = Arc::new(Notify::new()?);
        let entries = cfg.rx_inflight.clamp(2, 4096).next_power_of_two() as u16;
        let mut devs = Vec::with_capacity(taps.len());
        for (i, (tap, stats)) in taps.into_iter().zip(stats).enumerate() {
            let vnet_len = tap.vnet_hdr_len();
            let mtu = tap.mtu() as usize;
            // Without a vnet header a pooled buffer must hold the largest frame the MTU
            // allows (one-off buffers if the pool's are too small for a jumbo MTU). With
            // one, the kernel may send a 64 KiB GSO frame into any buffer, and a read
            // into a smaller one would cut it short without telling (tun_put_user copies
            // what fits), so buffers come from a pool of large ones of our own.
            let (rx_pool, rx_size) = if vnet_len == 0 {
                let size = (cfg.rx_headroom + ETH_OVERHEAD + mtu).max(pool.buf_size());
                (pool.clone(), size)
            } else {
                let size = cfg.rx_headroom + vnet_len + ETH_OVERHEAD + mtu.max(MAX_GSO_PACKET);
                (SkbPool::new(size, 2 * usize::from(entries)), size)
            };
            let mut bufs = BufRing::new(entries)?;
            // SAFETY: the mapping lives as long as `bufs`, which outlives the
            // registration (unregistered in `Drop` before `bufs` is unmapped).
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(bufs.mem as u64, entries, i as u16, 0)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "ustack: cannot register receive buffers for {}: {e} \
                                 (io_uring provided buffer rings need Linux 5.19)",
                                tap.name()
                            ),
                        )
                    })?;
            }
            for bid in 0..entries {
                let mut skb = rx_pool.alloc(rx_size);
                skb.reserve(cfg.rx_headroom);
                bufs.provide(bid, skb);
            }
            bufs.publish();
            devs.push(Dev {
                name: tap.name().to_owned(),
                vnet_len,
                stats,
                rx_pool,
                rx_size,
                bufs,
                rx_armed: false,
                single_shot: false,
                rx_error_run: 0,
                tx_inflight: 0,
                tx_unsubmitted: 0,
                rx_done: false,
                fd: tap.into_fd(),
            });
        }
        let mut uring = Uring {
            ring,
            devs,
            tx: Slab::new(),
            notify,
            wake_buf: Box::new(0),
            wake_armed: false,
            pool,
            cfg,
            failed: None,
        };
        for dev in 0..uring.devs.len() {
            uring.arm_rx(dev)?;
        }
        uring.arm_wake()?;
        uring.ring.submit().map_err(uring_error)?;
        Ok(uring)
    }

    /// The handle other threads wake this loop with.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Free slots in device `dev`'s TX ring.
    pub fn tx_room(&self, dev: usize) -> usize {
        self.cfg
            .tx_inflight
            .max(1)
            .saturating_sub(self.devs[dev].tx_inflight)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY (for every caller): each entry's buffers live in `self` (the skb in a
        // slab slot, the buffer ring, `wake_buf`) until its completion is reaped.
        unsafe {
            if self.ring.submission().push(&entry).is_ok() {
                return Ok(());
            }
            // The submission queue is full: hand it to the kernel and try again.
            self.ring.submit()?;
            self.count_tx_batches();
            self.ring
                .submission()
                .push(&entry)
                .map_err(|_| io::Error::other("io_uring submission queue full"))
        }
    }

    fn arm_rx(&mut self, dev: usize) -> io::Result<()> {
        let d = &self.devs[dev];
        let fd = types::Fd(d.fd.as_raw_fd());
        let entry = if d.single_shot {
            opcode::Read::new(fd, std::ptr::null_mut(), 0)
                .offset(STREAM_POS)
                .buf_group(dev as u16)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::ReadMulti::new(fd, 0, dev as u16)
                .offset(STREAM_POS)
                .build()
        };
        self.push(entry.user_data(user_data(KIND_RX, dev, 0)))?;
        self.devs[dev].rx_armed = true;
        Ok(())
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.notify.eventfd.as_raw_fd());
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(fd, buf.cast(), 8)
            .build()
            .user_data(user_data(KIND_WAKE, 0, 0));
        self.push(entry)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Queue `skb` for writing to device `dev`; it goes to the kernel with the next
    /// [`Uring::poll`] or [`Uring::wait`]. The caller checks [`Uring::tx_room`] first;
    /// beyond it the frame is still written (nothing is dropped here), the limit is
    /// the caller's to keep.
    pub fn transmit(&mut self, dev: usize, skb: Skb) -> io::Result<()> {
        let d = &self.devs[dev];
        let vnet_len = d.vnet_len;
        let hdr = if vnet_len == 0 {
            None
        } else {
            match vnet_hdr_for(&skb) {
                Ok(hdr) => Some(hdr),
                Err(why) => {
                    IoStats::add(&d.stats.tx_errors, 1);
                    tracing::debug!(device = %d.name, ?why, len = skb.len(), "cannot describe frame in a vnet header, dropped");
                    return Ok(());
                }
            }
        };
        let fd = types::Fd(d.fd.as_raw_fd());
        let (op, entry) = match tx_layout(skb, hdr, vnet_len) {
            TxLayout::Linear(skb, hdr_bytes) => {
                let data = skb.data();
                let entry = opcode::Write::new(fd, data.as_ptr(), data.len() as u32)
                    .offset(STREAM_POS)
                    .build();
                let len = skb.len();
                (
                    TxOp {
                        _skb: skb,
                        wire_len: len,
                        frame_len: len - hdr_bytes,
                        _hdr: None,
                    },
                    entry,
                )
            }
            TxLayout::Vectored(hdr_skb, skb) => {
                let mut hdr = Box::new((
                    [0u8; 16],
                    [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; 2],
                ));
                let n = hdr_skb.len().min(16);
                hdr.0[..n].copy_from_slice(&hdr_skb.data()[..n]);
                hdr.1[0] = libc::iovec {
                    iov_base: hdr.0.as_mut_ptr().cast(),
                    iov_len: n,
                };
                hdr.1[1] = libc::iovec {
                    iov_base: skb.data().as_ptr() as *mut libc::c_void,
                    iov_len: skb.len(),
                };
                let entry = opcode::Writev::new(fd, hdr.1.as_ptr(), 2)
                    .offset(STREAM_POS)
                    .build();
                let len = skb.len();
                (
                    TxOp {
                        _skb: skb,
                        wire_len: n + len,
                        frame_len: len,
                        _hdr: Some(hdr),
                    },
                    entry,
                )
            }
        };
        // The slot is taken only once the entry is queued, so a failed push leaks
        // nothing (the frame is dropped with `op`).
        let index = self.tx.vacant_key();
        self.push(entry.user_data(user_data(KIND_TX, dev, index)))?;
        let taken = self.tx.insert(op);
        debug_assert_eq!(taken, index);
        self.devs[dev].tx_inflight += 1;
        self.devs[dev].tx_unsubmitted += 1;
        Ok(())
    }

    /// Submit what is queued and take what the kernel has completed, without sleeping:
    /// received frames go to `deliver`. Returns how many completions there were (0:
    /// nothing happened). A fatal device error (the TAP deleted) is returned once the
    /// frames before it are delivered.
    pub fn poll(&mut self, deliver: &mut dyn FnMut(Completion)) -> io::Result<usize> {
        // Right after `wait` the completions are already there and nothing is queued:
        // no need to enter the kernel again.
        if !self.ring.submission().is_empty() || self.ring.completion().is_empty() {
            self.enter(0, None)?;
        }
        self.reap(deliver)
    }

    /// Submit what is queued and sleep until a completion, a [`Notify`], or `timeout`;
    /// [`Uring::poll`] then takes what came. If a notification came since the last
    /// [`Uring::take_notified`], or completions are waiting, it returns at once without
    /// entering the kernel; the next `poll` submits then.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.notify.parked.store(true, Ordering::SeqCst);
        let r = if self.notify.pending.load(Ordering::SeqCst) || !self.ring.completion().is_empty()
        {
            Ok(())
        } else {
            self.enter(1, timeout)
        };
        self.notify.parked.store(false, Ordering::SeqCst);
        r
    }

    /// Whether a [`Notify`] came since the last look (clears it).
    pub fn take_notified(&self) -> bool {
        self.notify.pending.swap(false, Ordering::SeqCst)
    }

    /// Each device whose writes go to the kernel in the coming `io_uring_enter` counts
    /// one batch.
    fn count_tx_batches(&mut self) {
        for d in &mut self.devs {
            if d.tx_unsubmitted > 0 {
                IoStats::add(&d.stats.tx_batches, 1);
                d.tx_unsubmitted = 0;
            }
        }
    }

    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            Some(t) if want > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ if want > 0 => self.ring.submit_and_wait(want),
            _ => {
                // GETEVENTS without waiting: runs the completions' deferred work.
                let n = self.ring.submission().len();
                // SAFETY: submits the `n` entries queued (all fully initialised by `push`).
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        n as u32,
                        0,
                        io_uring::EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
            }
        };
        match r {
            Ok(_) => {
                self.count_tx_batches();
                Ok(())
            }
            // The wait timed out or was interrupted: what was queued went in all the same.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {
                self.count_tx_batches();
                Ok(())
            }
            // The completion queue overflowed: reap first, then submit again.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reap(&mut self, deliver: &mut dyn FnMut(Completion)) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            n += 1;
            let (kind, dev, index) = split_user_data(cqe.user_data());
            match kind {
                KIND_RX => {
                    let more = cqueue::more(cqe.flags());
                    if !more {
                        self.devs[dev].rx_armed = false;
                    }
                    self.rx_complete(dev, cqe.result(), cqe.flags(), deliver);
                }
                KIND_TX => {
                    if let Some(op) = self.tx.try_remove(index) {
                        self.devs[dev].tx_inflight -= 1;
                        self.tx_complete(dev, cqe.result(), op);
                    }
                }
                KIND_WAKE => {
                    self.wake_armed = false;
                    self.notify.signalled.store(false, Ordering::SeqCst);
                    self.notify.pending.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        // The buffers given back go to the kernel in one store per device, and a read
        // that ended (out of buffers, an error) is posted again.
        for dev in 0..self.devs.len() {
            let d = &mut self.devs[dev];
            d.bufs.publish();
            if !d.rx_armed && !d.rx_done && self.failed.is_none() {
                self.arm_rx(dev)?;
            }
        }
        if !self.wake_armed {
            self.arm_wake()?;
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    fn rx_complete(
        &mut self,
        dev: usize,
        res: i32,
        flags: u32,
        deliver: &mut dyn FnMut(Completion),
    ) {
        let d = &mut self.devs[dev];
        if res < 0 {
            let errno = -res;
            match errno {
                // Out of buffers: the frames wait in the TAP's queue; the ring is
                // refilled as completions are reaped, and the read re-posted.
                libc::ENOBUFS => IoStats::add(&d.stats.rx_empty, 1),
                libc::ECANCELED => d.rx_done = true,
                libc::EAGAIN => IoStats::add(&d.stats.rx_empty, 1),
                libc::EINVAL if !d.single_shot => {
                    // No IORING_OP_READ_MULTISHOT (before Linux 6.7): one read a frame.
                    tracing::info!(device = %d.name, "io_uring has no multishot read; posting one read per frame");
                    d.single_shot = true;
                }
                e if is_fatal(e) => {
                    if self.failed.is_none() {
                        self.failed = Some(fatal(&d.name, "read", e));
                    }
                    d.rx_done = true;
                }
                e => {
                    IoStats::add(&d.stats.rx_errors, 1);
                    d.rx_error_run += 1;
                    tracing::debug!(device = %d.name, err = %io::Error::from_raw_os_error(e), "read failed");
                    if d.rx_error_run >= MAX_RX_ERROR_RUN && self.failed.is_none() {
                        self.failed = Some(io::Error::other(format!(
                            "TAP device {:?}: {} reads failed in a row, last: {}",
                            d.name,
                            d.rx_error_run,
                            io::Error::from_raw_os_error(e)
                        )));
                        d.rx_done = true;
                    }
                }
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let Some(mut skb) = d
            .bufs
            .slots
            .get_mut(usize::from(bid))
            .and_then(Option::take)
        else {
            return;
        };
        // An empty buffer takes the slot at once, so the ring never shrinks.
        let mut fresh = d.rx_pool.alloc(d.rx_size);
        fresh.reserve(self.cfg.rx_headroom);
        d.bufs.provide(bid, fresh);
        d.rx_error_run = 0;
        skb.put(res as usize);
        let frame = if d.vnet_len == 0 {
            Ok(skb)
        } else {
            receive_vnet(
                skb,
                d.vnet_len,
                &self.pool,
                self.cfg.rx_headroom,
                self.cfg.rx_copybreak,
            )
        };
        match frame {
            Ok(skb) => {
                IoStats::add(&d.stats.rx_packets, 1);
                IoStats::add(&d.stats.rx_bytes, skb.len() as u64);
                deliver(Completion::Frame { dev, skb });
            }
            Err(why) => {
                IoStats::add(&d.stats.rx_errors, 1);
                tracing::debug!(device = %d.name, ?why, len = res, "bad vnet header, frame dropped");
            }
        }
    }

    fn tx_complete(&mut self, dev: usize, res: i32, op: TxOp) {
        let d = &self.devs[dev];
        let frame_len = op.frame_len;
        if res >= 0 && res as usize == op.wire_len {
            IoStats::add(&d.stats.tx_packets, 1);
            IoStats::add(&d.stats.tx_bytes, frame_len as u64);
        } else if res >= 0 {
            IoStats::add(&d.stats.tx_errors, 1);
            tracing::debug!(device = %d.name, wrote = res, len = frame_len, "short write");
        } else if is_fatal(-res) {
            if self.failed.is_none() {
                self.failed = Some(fatal(&d.name, "write", -res));
            }
        } else {
            IoStats::add(&d.stats.tx_errors, 1);
            tracing::debug!(device = %d.name, err = %io::Error::from_raw_os_error(-res), "write failed");
        }
    }

    /// Frames whose writes have not completed, over all devices.
    pub fn tx_inflight(&self) -> usize {
        self.tx.len()
    }

    /// Wait (up to `limit`) for the writes in flight to complete, e.g. before exiting,
    /// so the last frames reach the kernel.
    pub fn flush(&mut self, limit: Duration) -> io::Result<()> {
        let start = std::time::Instant::now();
        let mut drop_frames = |_: Completion| {};
        self.enter(0, None)?;
        self.reap(&mut drop_frames)?;
        while !self.tx.is_empty() && start.elapsed() < limit {
            self.enter(1, Some(Duration::from_millis(10)))?;
            self.reap(&mut drop_frames)?;
        }
        Ok(())
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still write into the receive buffers while a read is posted:
        // cancel the reads and wait for their last completions before the buffers (and
        // the rings of them) go. If the kernel does not answer in time, leak them
        // rather than free memory it may still write.
        for dev in 0..self.devs.len() {
            // Nothing is posted again from here on.
            self.devs[dev].rx_done = true;
            if self.devs[dev].rx_armed {
                let entry = opcode::AsyncCancel::new(user_data(KIND_RX, dev, 0))
                    .build()
                    .user_data(user_data(KIND_CANCEL, dev, 0));
                let _ = self.push(entry);
            }
        }
        let start = std::time::Instant::now();
        let mut ignore = |_: Completion| {};
        while (self.devs.iter().any(|d| d.rx_armed) || !self.tx.is_empty())
            && start.elapsed() < Duration::from_secs(1)
        {
            if self.enter(1, Some(Duration::from_millis(10))).is_err() {
                break;
            }
            let _ = self.reap(&mut ignore);
        }
        if self.devs.iter().any(|d| d.rx_armed) || !self.tx.is_empty() {
            tracing::warn!("io_uring operations still posted at shutdown; leaking their buffers");
            for d in self.devs.drain(..) {
                std::mem::forget(d.bufs);
            }
            std::mem::forget(std::mem::take(&mut self.tx));
            return;
        }
        for dev in 0..self.devs.len() {
            let _ = self.ring.submitter().unregister_buf_ring(dev as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (kind, dev, index) in [(KIND_RX, 0, 0), (KIND_TX, 3, 12345), (KIND_WAKE, 65535, 1)] {
            assert_eq!(
                split_user_data(user_data(kind, dev, index)),
                (kind, dev, index)
            );
        }
    }

    #[test]
    fn notify_writes_the_eventfd_only_when_parked() {
        let n = Notify::new().unwrap();
        n.notify();
        assert!(n.pending.load(Ordering::SeqCst));
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        let r = unsafe { libc::read(n.eventfd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!(r, -1, "a running loop is not signalled");
        n.parked.store(true, Ordering::SeqCst);
        n.notify();
        n.notify();
        // SAFETY: as above.
        let r = unsafe { libc::read(n.eventfd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!((r, v), (8, 1), "a parked loop is signalled once");
    }
}
