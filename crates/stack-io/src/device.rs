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

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::Poll;

use futures::channel::mpsc;
use futures::future::{Either, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use stack_core::skb::IpSummed;
use stack_core::{Skb, SkbPool};
use tokio_uring::buf::{IoBuf, IoBufMut};

use crate::stats::IoStats;
use crate::tap::Tap;
use crate::vnet::{self, VnetHdr};

/// Ethernet header plus one 802.1Q tag: what a frame adds to the MTU.
const ETH_OVERHEAD: usize = 14 + 4;

/// io_uring offset -1: "no offset", the only meaning a position has for a stream
/// device like /dev/net/tun (`stream_open` in `tun_chr_open`).
const STREAM_POS: u64 = u64::MAX;

/// The largest IPv4 packet: what one GSO super-packet can carry behind its Ethernet
/// header when the device offers TSO (the kernel's `GSO_LEGACY_MAX_SIZE` is 64 KiB, and
/// `tot_len` caps an IPv4 packet at 65535 bytes in any case).
const MAX_GSO_PACKET: usize = 65535;

/// Default [`DeviceConfig::rx_copybreak`].
pub const DEFAULT_RX_COPYBREAK: usize = 16 * 1024;

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
    /// With a vnet header (offloads on), frames shorter than this are copied out of the
    /// 64 KiB receive buffer into a right-sized one from the stack's pool, like a NIC
    /// driver's `rx_copybreak`; longer ones (GSO super-packets) keep the big buffer.
    ///
    /// Why: a socket's receive queue is charged the skb's truesize, the whole buffer.
    /// An ACK or a 1500-byte segment pinning 64 KiB would fill `rcvbuf` ~40 times too
    /// early and shrink the window we advertise. Copying costs a memcpy of at most this
    /// many bytes; keeping costs at most 64 KiB / 16 KiB = 4x the frame in truesize.
    /// 16 KiB (the default) bounds both. Frames up to the pool's buffer size land in a
    /// pooled buffer, longer ones in a one-off buffer of their own size. 0 turns
    /// copying off. Without a vnet header reads go straight into pooled buffers and
    /// this does not apply.
    pub rx_copybreak: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            rx_inflight: 32,
            rx_headroom: 64,
            tx_inflight: 256,
            rx_copybreak: DEFAULT_RX_COPYBREAK,
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

/// Why a frame read with a vnet header was dropped (counted in `rx_errors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxDrop {
    /// The header itself is short or has unknown flags.
    Header(vnet::VnetError),
    /// NEEDS_CSUM with the checksum field outside the frame (`skb_partial_csum_set`).
    CsumOutside,
    /// A GSO type other than TCPV4 (we only offer TSO4, so the kernel never sends
    /// one), or TCPV4 with `gso_size` 0 (which `virtio_net_hdr_to_skb` refuses too).
    Gso(u8),
    /// A TCPV4 GSO frame whose Ethernet/IPv4/TCP headers do not parse.
    GsoHeaders(vnet::HeaderError),
}

/// Turn a frame read with a vnet header in front into the skb the stack gets: strip the
/// header and carry what it says over to the skb's metadata, the way a virtio-net
/// driver's `receive_buf` does (`virtio_net_hdr_to_skb`, include/linux/virtio_net.h):
///
/// * `DATA_VALID` -> [`IpSummed::Unnecessary`]: the kernel made or checked the checksum.
/// * `NEEDS_CSUM` -> [`IpSummed::Partial`], with `csum_start` made head-relative like
///   the kernel's `skb->csum_start` (`skb_partial_csum_set` adds the headroom). The
///   checksum field holds only the pseudo-header sum; the stack must not verify it as if
///   it were complete (the data came from the kernel's memory, not a wire).
/// * `GSO_TCPV4` (ECN bit allowed) -> `gso_size`, and `gso_segs` = payload / gso_size
///   rounded up. The payload starts after the headers we parse ourselves: the
///   kernel's `hdr_len` is only `skb_headlen()` (`virtio_net_hdr_from_skb`: "a hint as
///   to how much should be linear"), which can reach into the payload.
///
/// `skb` holds the header and frame from `data`; frames shorter than `copybreak` are
/// copied into a buffer from `pool` with `headroom` in front (see
/// [`DeviceConfig::rx_copybreak`]).
fn receive_vnet(
    mut skb: Skb,
    vnet_len: usize,
    pool: &SkbPool,
    headroom: usize,
    copybreak: usize,
) -> Result<Skb, RxDrop> {
    let hdr = VnetHdr::parse(skb.data()).map_err(RxDrop::Header)?;
    skb.pull(vnet_len)
        .map_err(|_| RxDrop::Header(vnet::VnetError::Truncated))?;
    let frame_len = skb.len();
    if hdr.needs_csum() && !hdr.csum_fits(frame_len) {
        return Err(RxDrop::CsumOutside);
    }
    let (gso_size, gso_segs) = match hdr.gso_kind() {
        vnet::GSO_NONE => (0, 0),
        vnet::GSO_TCPV4 if hdr.gso_size > 0 => {
            let hdrs = vnet::tcp_frame_headers(skb.data()).map_err(RxDrop::GsoHeaders)?;
            let payload = frame_len - hdrs.hdr_len;
            let segs = payload.div_ceil(usize::from(hdr.gso_size)).max(1);
            (hdr.gso_size, u16::try_from(segs).unwrap_or(u16::MAX))
        }
        _ => return Err(RxDrop::Gso(hdr.gso_type)),
    };

    let mut skb = if frame_len < copybreak {
        // The big buffer goes back to its pool when `skb` drops here.
        pool.from_slice(headroom, skb.data())
    } else {
        skb
    };
    skb.ip_summed = if hdr.needs_csum() {
        let start = skb.data_offset() + usize::from(hdr.csum_start);
        IpSummed::Partial {
            csum_start: u16::try_from(start).map_err(|_| RxDrop::CsumOutside)?,
            csum_offset: hdr.csum_offset,
        }
    } else if hdr.data_valid() {
        IpSummed::Unnecessary
    } else {
        IpSummed::None
    };
    skb.gso_size = gso_size;
    skb.gso_segs = gso_segs;
    Ok(skb)
}

/// Why an outgoing frame could not be described in a vnet header (counted in
/// `tx_errors`, frame dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxDrop {
    /// `IpSummed::Partial` whose checksum field is not inside the frame.
    CsumOutside,
    /// `gso_size > 0` on something that is not a TCP/IPv4 frame we can parse.
    GsoHeaders(vnet::HeaderError),
}

/// The vnet header for an outgoing skb: the reverse of [`receive_vnet`], as
/// `virtio_net_hdr_from_skb` builds it for a virtio device.
///
/// * [`IpSummed::Partial`] -> `NEEDS_CSUM`, `csum_start` made frame-relative (the skb's
///   is head-relative). The kernel checks it the same way (`skb_partial_csum_set` in
///   `virtio_net_hdr_to_skb`) and finishes the checksum if the packet leaves it.
/// * `gso_size > 0` -> `GSO_TCPV4` with `gso_size` and `hdr_len` the length of the
///   Ethernet (and 802.1Q), IPv4 and TCP headers together. With CWR set in the TCP header the ECN bit is added, as
///   `tcp_ecn_send` marks `SKB_GSO_TCP_ECN`: the kernel then keeps CWR on the first
///   segment only.
///
/// The kernel honours both whatever TUNSETOFFLOAD said: that ioctl only governs what
/// it sends us (`tun_get_user` always runs `virtio_net_hdr_to_skb`).
fn vnet_hdr_for(skb: &Skb) -> Result<VnetHdr, TxDrop> {
    let mut hdr = VnetHdr::default();
    if let IpSummed::Partial {
        csum_start,
        csum_offset,
    } = skb.ip_summed
    {
        let start = usize::from(csum_start)
            .checked_sub(skb.data_offset())
            .ok_or(TxDrop::CsumOutside)?;
        hdr.flags = vnet::F_NEEDS_CSUM;
        hdr.csum_start = u16::try_from(start).map_err(|_| TxDrop::CsumOutside)?;
        hdr.csum_offset = csum_offset;
        if !hdr.csum_fits(skb.len()) {
            return Err(TxDrop::CsumOutside);
        }
    }
    if skb.gso_size > 0 {
        let frame = skb.data();
        let hdrs = vnet::tcp_frame_headers(frame).map_err(TxDrop::GsoHeaders)?;
        hdr.gso_type = vnet::GSO_TCPV4;
        if hdrs.cwr {
            hdr.gso_type |= vnet::GSO_ECN;
        }
        hdr.gso_size = skb.gso_size;
        hdr.hdr_len = u16::try_from(hdrs.hdr_len).unwrap_or(u16::MAX);
    }
    Ok(hdr)
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
    let vnet_len = tap.vnet_hdr_len();
    let mtu = tap.mtu() as usize;
    // Without a vnet header a pooled buffer must hold the largest frame the MTU allows;
    // if the pool's are too small (jumbo MTU) fall back to one-off buffers rather than
    // truncate frames. With one, the kernel may send a 64 KiB GSO frame into any read,
    // and a read into a smaller buffer would cut it short without telling (tun_put_user
    // copies what fits), so reads get buffers from a pool of large ones of our own; the
    // copybreak in `receive_vnet` moves small frames out of them.
    let (rx_pool, rx_size) = if vnet_len == 0 {
        let size = (cfg.rx_headroom + ETH_OVERHEAD + mtu).max(pool.buf_size());
        (pool.clone(), size)
    } else {
        let size = cfg.rx_headroom + vnet_len + ETH_OVERHEAD + mtu.max(MAX_GSO_PACKET);
        (SkbPool::new(size, 2 * cfg.rx_inflight.max(1)), size)
    };
    let file = tokio_uring::fs::File::from_std(tap.into_file());

    let new_rx_buf = || {
        let mut skb = rx_pool.alloc(rx_size);
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
    // frames on the TX ring, then completed writes. Completions are dispatched only when
    // we yield, and a protocol task on the same thread runs only then too, so each pass
    // ends; one on another thread may keep the TX ring filling during the pass, which
    // the in-flight limit bounds.
    let result = poll_fn(|cx| {
        // RX: deliver completed frames and re-post a read for each.
        while let Poll::Ready(Some((res, RxBuf(mut skb)))) = reads.poll_next_unpin(cx) {
            match res {
                Ok(n) => {
                    rx_error_run = 0;
                    skb.put(n);
                    let frame = if vnet_len == 0 {
                        Ok(skb)
                    } else {
                        receive_vnet(skb, vnet_len, &pool, cfg.rx_headroom, cfg.rx_copybreak)
                    };
                    match frame {
                        Ok(mut skb) => {
                            skb.ifindex = ifindex;
                            IoStats::add(&stats.rx_packets, 1);
                            IoStats::add(&stats.rx_bytes, skb.len() as u64);
                            if rx_ring.try_send(skb).is_err() {
                                // Ring full (or the stack is gone): the frame is lost, as
                                // on a NIC whose RX ring overflows.
                                IoStats::add(&stats.rx_dropped, 1);
                            }
                        }
                        Err(why) => {
                            IoStats::add(&stats.rx_errors, 1);
                            tracing::debug!(device = %name, ?why, len = n, "bad vnet header, frame dropped");
                        }
                    }
                }
                Err(err) if is_fatal(&err) => return Poll::Ready(Err(fatal(&name, "read", err))),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // Several reads wait on the same fd; when a frame arrives the kernel
                    // wakes them all, one gets the frame and the others, on a
                    // non-blocking fd, complete with EAGAIN. Nothing was lost: post again.
                    IoStats::add(&stats.rx_empty, 1);
                }
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
            let skb = match tx_ring.poll_next_unpin(cx) {
                Poll::Ready(Some(skb)) => skb,
                Poll::Ready(None) => {
                    tx_open = false;
                    break;
                }
                Poll::Pending => {
                    tx_waker_set = true;
                    break;
                }
            };
            let (skb, hdr) = if vnet_len == 0 {
                (skb, None)
            } else {
                match vnet_hdr_for(&skb) {
                    Ok(hdr) => (skb, Some(hdr)),
                    Err(why) => {
                        IoStats::add(&stats.tx_errors, 1);
                        tracing::debug!(device = %name, ?why, len = skb.len(), "cannot describe frame in a vnet header, dropped");
                        continue;
                    }
                }
            };
            batch += 1;
            match tx_layout(skb, hdr, vnet_len) {
                TxLayout::Linear(skb, hdr_bytes) => {
                    let write = file.write_at(TxBuf(skb), STREAM_POS).submit();
                    writes.push(Either::Left(write.map(move |(res, TxBuf(mut skb))| {
                        // Take the header back off, so that lengths below are the
                        // frame's (virtio_net's xmit_skb does the same).
                        let _ = skb.pull(hdr_bytes);
                        (res, skb, hdr_bytes)
                    })));
                }
                TxLayout::Vectored(hdr, skb) => {
                    let bufs = vec![TxBuf(hdr), TxBuf(skb)];
                    let mut write = Box::pin(file.writev_at(bufs, STREAM_POS).map(
                        move |(res, mut bufs)| {
                            let TxBuf(skb) = bufs.pop().expect("header and frame");
                            (res, skb, vnet_len)
                        },
                    ));
                    // `writev_at` is an async fn: its SQE is queued when it is first
                    // polled, not when it is called. Poll it now, so that the frame keeps
                    // its place in line behind the writes queued before it (`submit`
                    // queues at once).
                    match write.as_mut().poll(cx) {
                        Poll::Pending => writes.push(Either::Right(write)),
                        Poll::Ready(done) => {
                            if let Err(err) = tx_complete(&stats, &name, done) {
                                return Poll::Ready(Err(err));
                            }
                        }
                    }
                }
            }
        }
        if batch > 0 {
            IoStats::add(&stats.tx_batches, 1);
        }

        // TX completions. Polling also registers the new writes' wakers.
        while let Poll::Ready(Some(done)) = writes.poll_next_unpin(cx) {
            if let Err(err) = tx_complete(&stats, &name, done) {
                return Poll::Ready(Err(err));
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

/// How one frame goes to the fd.
enum TxLayout {
    /// The skb as it is: without a vnet header, or with it pushed into the skb's
    /// headroom (the `usize` says how many bytes of it).
    Linear(Skb, usize),
    /// The header in a buffer of its own and the frame behind it, one `writev`.
    Vectored(Skb, Skb),
}

/// Put the vnet header (if any) in front of the frame without copying the frame. Into
/// the headroom when there is room and the buffer is ours alone, as virtio_net's
/// `xmit_skb` does (`can_push`: headroom, and `!skb_header_cloned`): a clone (a TCP
/// retransmit queue, a packet tap) may push its own headers into the same bytes, so a
/// shared buffer's headroom is not ours to write. Otherwise the header goes in a
/// separate buffer and the two out in one `writev`, which tun reads as one frame
/// (`tun_get_user` takes an iov_iter).
fn tx_layout(mut skb: Skb, hdr: Option<VnetHdr>, vnet_len: usize) -> TxLayout {
    let Some(hdr) = hdr else {
        return TxLayout::Linear(skb, 0);
    };
    if skb.headroom() >= vnet_len && !skb.is_cloned() {
        if let Ok(room) = skb.push(vnet_len) {
            room.fill(0);
            hdr.emit(room);
            return TxLayout::Linear(skb, vnet_len);
        }
    }
    let mut bytes = vec![0; vnet_len];
    hdr.emit(&mut bytes);
    TxLayout::Vectored(Skb::from_vec(bytes), skb)
}

/// Account for one finished write: `(result, frame, vnet header bytes written with it)`.
/// Only a fatal error (see `is_fatal`) is returned; the rest are counted.
fn tx_complete(
    stats: &IoStats,
    name: &str,
    (res, skb, hdr_bytes): (io::Result<usize>, Skb, usize),
) -> io::Result<()> {
    match res {
        Ok(n) if n == skb.len() + hdr_bytes => {
            IoStats::add(&stats.tx_packets, 1);
            IoStats::add(&stats.tx_bytes, skb.len() as u64);
        }
        Ok(n) => {
            IoStats::add(&stats.tx_errors, 1);
            tracing::debug!(device = %name, wrote = n, len = skb.len(), hdr_bytes, "short write");
        }
        Err(err) if is_fatal(&err) => return Err(fatal(name, "write", err)),
        Err(err) => {
            IoStats::add(&stats.tx_errors, 1);
            tracing::debug!(device = %name, %err, len = skb.len(), "write failed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::{F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_UDP, VNET_HDR_LEN};

    const HEADROOM: usize = 64;
    const BIG: usize = HEADROOM + VNET_HDR_LEN + ETH_OVERHEAD + MAX_GSO_PACKET;

    /// Ethernet + IPv4 (20) + UDP header + `payload` bytes.
    fn udp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 17;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 8]);
        f.extend(std::iter::repeat_n(7, payload));
        f
    }

    /// Ethernet + IPv4 (20) + TCP with 12 bytes of options (32) + `payload` bytes.
    fn tcp_frame(payload: usize, cwr: bool) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 32];
        tcp[12] = 8 << 4;
        tcp[13] = 0x10 | if cwr { 0x80 } else { 0 };
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(9, payload));
        f
    }

    /// What a read into a big receive buffer leaves: `hdr` and `frame` from `data`.
    fn read_into_big(hdr: VnetHdr, frame: &[u8]) -> Skb {
        let big = SkbPool::new(BIG, 4);
        let mut skb = big.alloc(BIG);
        skb.reserve(HEADROOM);
        hdr.emit(skb.put(VNET_HDR_LEN));
        skb.put(frame.len()).copy_from_slice(frame);
        skb
    }

    fn receive(hdr: VnetHdr, frame: &[u8], copybreak: usize) -> Result<Skb, RxDrop> {
        receive_vnet(
            read_into_big(hdr, frame),
            VNET_HDR_LEN,
            &SkbPool::default(),
            HEADROOM,
            copybreak,
        )
    }

    #[test]
    fn needs_csum_becomes_partial_counted_from_the_head() {
        let frame = udp_frame(100);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        for copybreak in [0, DEFAULT_RX_COPYBREAK] {
            let skb = receive(hdr, &frame, copybreak).unwrap();
            assert_eq!(skb.data(), &frame[..], "vnet header stripped");
            let want = skb.data_offset() as u16 + 34;
            assert_eq!(
                skb.ip_summed,
                IpSummed::Partial {
                    csum_start: want,
                    csum_offset: 6
                }
            );
            assert_eq!((skb.gso_size, skb.gso_segs), (0, 0));
            if copybreak == 0 {
                assert_eq!(skb.end(), BIG, "kept in the big buffer");
                assert_eq!(skb.data_offset(), HEADROOM + VNET_HDR_LEN);
            } else {
                assert_eq!(
                    skb.end(),
                    stack_core::skb::DEFAULT_BUF_SIZE,
                    "copied into a pooled buffer"
                );
                assert_eq!(skb.data_offset(), HEADROOM, "with the same headroom");
            }
        }
    }

    #[test]
    fn data_valid_and_nothing() {
        let frame = udp_frame(10);
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..VnetHdr::default()
        };
        let skb = receive(valid, &frame, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.ip_summed, IpSummed::Unnecessary);
        let skb = receive(VnetHdr::default(), &frame, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.ip_summed, IpSummed::None);
    }

    #[test]
    fn checksum_field_outside_the_frame_is_refused() {
        let frame = udp_frame(0); // 42 bytes: the UDP checksum is at 40..42
        let mut hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(receive(hdr, &frame, 0).is_ok());
        hdr.csum_offset = 7;
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::CsumOutside);
        hdr.csum_start = u16::MAX;
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::CsumOutside);
    }

    #[test]
    fn tcpv4_gso_counts_segments_from_the_parsed_headers() {
        // 66 bytes of headers, 2500 of payload in 1000-byte segments: 3 segments. The
        // kernel's hdr_len is skb_headlen, here pretending the whole frame is linear.
        let frame = tcp_frame(2500, false);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: frame.len() as u16,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        };
        let skb = receive(hdr, &frame, 0).unwrap();
        assert_eq!((skb.gso_size, skb.gso_segs), (1000, 3));
        let hdr = VnetHdr {
            gso_size: 500,
            ..hdr
        };
        assert_eq!(receive(hdr, &frame, 0).unwrap().gso_segs, 5);

        // A big frame stays in its buffer under the default copybreak too.
        let big = tcp_frame(30_000, false);
        let skb = receive(hdr, &big, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.end(), BIG);
        assert_eq!(skb.gso_segs, 60);
    }

    #[test]
    fn gso_we_did_not_offer_is_refused() {
        let frame = tcp_frame(2500, false);
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 0,
            ..VnetHdr::default()
        };
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::Gso(GSO_TCPV4));
        let udp = VnetHdr {
            gso_type: GSO_UDP,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert_eq!(receive(udp, &frame, 0).unwrap_err(), RxDrop::Gso(GSO_UDP));
        let not_tcp = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert!(matches!(
            receive(not_tcp, &udp_frame(3000), 0).unwrap_err(),
            RxDrop::GsoHeaders(_)
        ));
    }

    #[test]
    fn a_read_shorter_than_the_header_is_refused() {
        let big = SkbPool::new(BIG, 1);
        let mut skb = big.alloc(BIG);
        skb.reserve(HEADROOM);
        skb.put(4);
        assert!(matches!(
            receive_vnet(skb, VNET_HDR_LEN, &SkbPool::default(), HEADROOM, 0),
            Err(RxDrop::Header(_))
        ));
    }

    /// An egress skb as the stack makes it: headroom, frame, metadata.
    fn egress(frame: &[u8]) -> Skb {
        SkbPool::default().from_slice(stack_core::skb::MAX_HEADER - 54, frame)
    }

    #[test]
    fn partial_checksum_goes_out_frame_relative() {
        let mut skb = egress(&udp_frame(20));
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 6,
        };
        let hdr = vnet_hdr_for(&skb).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 6,
                ..VnetHdr::default()
            }
        );
        // Pointing before the frame or past its end cannot be described.
        skb.ip_summed = IpSummed::Partial {
            csum_start: 2,
            csum_offset: 6,
        };
        assert_eq!(vnet_hdr_for(&skb), Err(TxDrop::CsumOutside));
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 100,
        };
        assert_eq!(vnet_hdr_for(&skb), Err(TxDrop::CsumOutside));
    }

    #[test]
    fn gso_goes_out_as_tcpv4_with_the_header_length() {
        let mut skb = egress(&tcp_frame(4000, false));
        skb.gso_size = 1448;
        skb.gso_segs = 3;
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 16,
        };
        let hdr = vnet_hdr_for(&skb).unwrap();
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!((hdr.gso_size, hdr.hdr_len), (1448, 66));
        assert_eq!(
            (hdr.flags, hdr.csum_start, hdr.csum_offset),
            (F_NEEDS_CSUM, 34, 16)
        );

        let mut cwr = egress(&tcp_frame(4000, true));
        cwr.gso_size = 1448;
        assert_eq!(vnet_hdr_for(&cwr).unwrap().gso_type, GSO_TCPV4 | GSO_ECN);

        let mut udp = egress(&udp_frame(4000));
        udp.gso_size = 1448;
        assert!(matches!(vnet_hdr_for(&udp), Err(TxDrop::GsoHeaders(_))));
    }

    #[test]
    fn the_header_goes_into_headroom_only_when_the_buffer_is_ours() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let frame = udp_frame(20);

        match tx_layout(egress(&frame), Some(hdr), VNET_HDR_LEN) {
            TxLayout::Linear(skb, n) => {
                assert_eq!(n, VNET_HDR_LEN);
                assert_eq!(&skb.data()[..VNET_HDR_LEN], &hdr.to_bytes());
                assert_eq!(&skb.data()[VNET_HDR_LEN..], &frame[..]);
            }
            TxLayout::Vectored(..) => panic!("room in front: no writev"),
        }
        // A longer vnet header (TUNSETVNETHDRSZ 12) is padded with zeros.
        match tx_layout(egress(&frame), Some(hdr), 12) {
            TxLayout::Linear(skb, 12) => assert_eq!(&skb.data()[10..12], &[0, 0]),
            _ => panic!("room for 12"),
        }

        let shared = egress(&frame);
        let clone = shared.clone();
        match tx_layout(shared, Some(hdr), VNET_HDR_LEN) {
            TxLayout::Vectored(h, skb) => {
                assert_eq!(h.data(), &hdr.to_bytes());
                assert_eq!(skb.data(), &frame[..]);
            }
            TxLayout::Linear(..) => panic!("a shared buffer's headroom is not ours"),
        }
        assert_eq!(clone.data(), &frame[..]);

        match tx_layout(Skb::from_vec(frame.clone()), Some(hdr), VNET_HDR_LEN) {
            TxLayout::Vectored(_, skb) => assert_eq!(skb.data(), &frame[..]),
            TxLayout::Linear(..) => panic!("no headroom"),
        }
        match tx_layout(Skb::from_vec(frame.clone()), None, 0) {
            TxLayout::Linear(skb, 0) => assert_eq!(skb.data(), &frame[..]),
            _ => panic!("no vnet header: the skb as it is"),
        }
    }
}
