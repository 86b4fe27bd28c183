//! The device loop: the TAP fd on io_uring, between the wire and the stack's rings.
//!
//! It plays the part of a NIC and its driver. RX keeps `rx_inflight` reads posted, like
//! RX descriptors filled with empty buffers; each completed read is a frame pushed onto
//! the RX ring (a bounded channel to the protocol task) or, if the ring is full, dropped
//! and counted, because a NIC never waits for the host. TX drains the TX ring and posts
//! all frames that are ready at once, so one `io_uring_enter` carries the whole batch.
//!
//! We stay on tokio-uring 0.5, as the design card says. It has no multishot reads or
//! provided-buffer rings, so each RX completion re-posts one read; with the fd in
//! non-blocking mode those reads wait as armed polls inside the kernel, not in io-wq
//! threads (see [`crate::tap::Tap::attach`]). tokio-uring pushes SQEs when an op is
//! created and enters the kernel when the runtime thread parks, which is what turns our
//! burst of writes into one submission.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use futures::channel::mpsc;
use futures::stream::{FuturesUnordered, StreamExt};
use stack_core::{Skb, SkbPool};
use tokio_uring::buf::{IoBuf, IoBufMut};

use crate::stats::IoStats;
use crate::tap::Tap;

/// Ethernet header plus one 802.1Q tag: what a frame adds to the MTU.
const ETH_OVERHEAD: usize = 14 + 4;

/// io_uring offset -1: "no offset", the only meaning a position has for a stream
/// device like /dev/net/tun (`stream_open` in `tun_chr_open`).
const STREAM_POS: u64 = u64::MAX;

/// A run of this many failed reads with no success in between means the device is
/// broken in a way we did not foresee; stop rather than spin.
const MAX_RX_ERROR_RUN: u32 = 1024;

#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Reads kept posted (RX descriptors).
    pub rx_inflight: usize,
    /// Headroom reserved in front of each received frame, so the stack can push
    /// headers (e.g. when forwarding) without copying.
    pub rx_headroom: usize,
    /// Writes allowed in flight; beyond this the loop stops taking from the TX ring,
    /// which pushes back on the protocol task.
    pub tx_inflight: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            rx_inflight: 32,
            rx_headroom: 64,
            tx_inflight: 256,
        }
    }
}

/// A receive buffer handed to io_uring: the tailroom of an empty pooled skb.
///
/// The kernel writes into the skb's heap buffer, which does not move when the `Skb`
/// value moves (it sits behind an `Arc<Box<[u8]>>`), and which nothing else can touch
/// while the op owns this value: a freshly allocated skb has no clones.
struct RxBuf(Skb);

// SAFETY: the pointer is the skb's tail in its heap buffer, stable across moves of
// `RxBuf`; `bytes_total` is the tailroom, which lies inside that buffer.
unsafe impl IoBuf for RxBuf {
    fn stable_ptr(&self) -> *const u8 {
        let data = self.0.data();
        data.as_ptr().wrapping_add(data.len())
    }

    fn bytes_init(&self) -> usize {
        0
    }

    fn bytes_total(&self) -> usize {
        self.0.tailroom()
    }
}

// SAFETY: as for `IoBuf`; `tailroom_mut` unshares first, a no-op for an unshared skb.
unsafe impl IoBufMut for RxBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.0.tailroom_mut().as_mut_ptr()
    }

    unsafe fn set_init(&mut self, _pos: usize) {
        // The read's byte count is applied with `Skb::put` once the op returns the
        // buffer; tokio-uring's notion of "initialised" is not needed.
    }
}

/// A frame handed to io_uring for writing: the skb's packet bytes.
///
/// The skb may share its buffer with clones (e.g. a retransmit queue). That is fine:
/// the kernel only reads, and any clone that wants to write copies first
/// (`Skb::unshare`) because we still hold a reference.
struct TxBuf(Skb);

// SAFETY: `data()` lies in the skb's heap buffer, which does not move with `TxBuf`
// and is not written while shared.
unsafe impl IoBuf for TxBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.0.data().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.len()
    }

    fn bytes_total(&self) -> usize {
        self.0.len()
    }
}

/// Errors after which the fd is useless: the device was deleted under us
/// (`tun_get` fails: EBADFD), the fd is bad, or the driver reports an I/O error.
fn is_fatal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::EBADFD | libc::EIO | libc::ENODEV)
    )
}

fn fatal(name: &str, op: &str, err: io::Error) -> io::Error {
    let hint = if err.raw_os_error() == Some(libc::EBADFD) {
        " (was the device deleted?)"
    } else {
        ""
    };
    io::Error::new(
        err.kind(),
        format!("TAP device {name:?}: {op} failed: {err}{hint}"),
    )
}

/// Run the device until `tx_ring` is closed (every sender dropped) and the writes in
/// flight have completed. Must run inside `tokio_uring::start`.
///
/// Returns an error only when the TAP fd itself fails (see `is_fatal`); a failed or
/// short write of one frame is counted in `tx_errors` and the loop goes on. Reads still
/// posted when it returns are abandoned: tokio-uring cancels them when its runtime shuts
/// down, so they do not keep the thread alive.
pub async fn run_device(
    tap: Tap,
    pool: SkbPool,
    mut rx_ring: mpsc::Sender<Skb>,
    mut tx_ring: mpsc::Receiver<Skb>,
    stats: Arc<IoStats>,
    cfg: DeviceConfig,
) -> io::Result<()> {
    let name = tap.name().to_owned();
    let ifindex = tap.ifindex();
    // A pooled buffer must hold the largest frame the MTU allows; if the pool's are too
    // small (jumbo MTU) fall back to one-off buffers rather than truncate frames.
    let rx_size = (cfg.rx_headroom + ETH_OVERHEAD + tap.mtu() as usize).max(pool.buf_size());
    let file = tokio_uring::fs::File::from_std(tap.into_file());

    let new_rx_buf = || {
        let mut skb = pool.alloc(rx_size);
        skb.reserve(cfg.rx_headroom);
        RxBuf(skb)
    };

    let mut reads = FuturesUnordered::new();
    for _ in 0..cfg.rx_inflight.max(1) {
        reads.push(file.read_at(new_rx_buf(), STREAM_POS));
    }
    let mut writes = FuturesUnordered::new();
    let tx_limit = cfg.tx_inflight.max(1);
    let mut tx_open = true;
    let mut rx_error_run = 0u32;

    // One poll drains everything that is ready right now: completed reads, then new
    // frames on the TX ring, then completed writes. Frames cannot arrive during the
    // poll (completions are dispatched, and the protocol task runs, only when we yield),
    // so each pass ends.
    let result = poll_fn(|cx| {
        // RX: deliver completed frames and re-post a read for each.
        while let Poll::Ready(Some((res, RxBuf(mut skb)))) = reads.poll_next_unpin(cx) {
            match res {
                Ok(n) => {
                    rx_error_run = 0;
                    skb.put(n);
                    skb.ifindex = ifindex;
                    IoStats::add(&stats.rx_packets, 1);
                    IoStats::add(&stats.rx_bytes, n as u64);
                    if rx_ring.try_send(skb).is_err() {
                        // Ring full (or the stack is gone): the frame is lost, as on a
                        // NIC whose RX ring overflows.
                        IoStats::add(&stats.rx_dropped, 1);
                    }
                }
                Err(err) if is_fatal(&err) => return Poll::Ready(Err(fatal(&name, "read", err))),
                Err(err) => {
                    IoStats::add(&stats.rx_errors, 1);
                    rx_error_run += 1;
                    tracing::debug!(device = %name, %err, "read failed");
                    if rx_error_run >= MAX_RX_ERROR_RUN {
                        return Poll::Ready(Err(io::Error::new(
                            err.kind(),
                            format!(
                                "TAP device {name:?}: {rx_error_run} reads failed in a row, last: {err}"
                            ),
                        )));
                    }
                }
            }
            reads.push(file.read_at(new_rx_buf(), STREAM_POS));
        }

        // TX: take every frame that is ready, up to the in-flight limit, and post them
        // together.
        let mut batch = 0u64;
        let mut tx_waker_set = false;
        while tx_open && writes.len() < tx_limit {
            match tx_ring.poll_next_unpin(cx) {
                Poll::Ready(Some(skb)) => {
                    writes.push(file.write_at(TxBuf(skb), STREAM_POS).submit());
                    batch += 1;
                }
                Poll::Ready(None) => tx_open = false,
                Poll::Pending => {
                    tx_waker_set = true;
                    break;
                }
            }
        }
        if batch > 0 {
            IoStats::add(&stats.tx_batches, 1);
        }

        // TX completions. Polling also registers the new writes' wakers.
        while let Poll::Ready(Some((res, TxBuf(skb)))) = writes.poll_next_unpin(cx) {
            match res {
                Ok(n) if n == skb.len() => {
                    IoStats::add(&stats.tx_packets, 1);
                    IoStats::add(&stats.tx_bytes, n as u64);
                }
                Ok(n) => {
                    IoStats::add(&stats.tx_errors, 1);
                    tracing::debug!(device = %name, wrote = n, len = skb.len(), "short write");
                }
                Err(err) if is_fatal(&err) => return Poll::Ready(Err(fatal(&name, "write", err))),
                Err(err) => {
                    IoStats::add(&stats.tx_errors, 1);
                    tracing::debug!(device = %name, %err, len = skb.len(), "write failed");
                }
            }
        }

        if !tx_open && writes.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // We stopped taking frames at the in-flight limit and completions have since
        // made room: look at the ring again rather than wait for a wake-up that the
        // ring was never asked for.
        if tx_open && !tx_waker_set && writes.len() < tx_limit {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;

    // Dropping `reads` abandons the posted reads; tokio-uring keeps their buffers and
    // cancels them (IORING_OP_ASYNC_CANCEL) when the runtime is dropped.
    drop(reads);
    result
}
