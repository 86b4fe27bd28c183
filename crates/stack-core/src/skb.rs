//! `Skb`: the socket buffer, after Linux's `struct sk_buff` (include/linux/skbuff.h).
//!
//! ```text
//!  head                 data                      tail                  end
//!   |<--- headroom ----->|<------- packet -------->|<---- tailroom ----->|
//!   +--------------------+-------------------------+---------------------+
//!   |                    | eth | ip | tcp | payload|                     |
//!   +--------------------+-------------------------+---------------------+
//!                        ^mac_header ^network_header ^transport_header
//! ```
//!
//! * `head` is offset 0 of the buffer and `end` its capacity; `data..tail` is the packet.
//! * `push`/`pull` move `data` (prepend or strip a header), `put`/`trim` move `tail`,
//!   `reserve` makes headroom in an empty buffer.
//! * Header offsets are absolute (from `head`), like the kernel's `skb->network_header`,
//!   so they survive `pull`.
//! * `clone()` is `skb_clone`: a new descriptor sharing the same bytes (an `Arc` refcount).
//!   Any write goes through [`Skb::unshare`] (`skb_cow`/`skb_unshare`), which copies the
//!   bytes first if another clone still shares them.
//! * Buffers come from an [`SkbPool`] and go back to it when the last clone drops, so the
//!   steady state allocates nothing per packet.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::time::Instant;

/// Default size of a pooled buffer: headroom plus a maximal VLAN-tagged Ethernet frame,
/// rounded up. Larger requests get a one-off buffer that is not returned to the pool.
pub const DEFAULT_BUF_SIZE: usize = 2048;

/// Headroom reserved by [`SkbPool::alloc_tx`] for the headers below the transport layer:
/// Ethernet (14) + 802.1Q (4) + IPv4 with options (60), rounded up. Like `MAX_HEADER`.
pub const MAX_HEADER: usize = 128;

/// Why the stack received a frame, as `skb->pkt_type` (include/uapi/linux/if_packet.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PktType {
    /// Addressed to our MAC.
    #[default]
    Host,
    Broadcast,
    Multicast,
    /// Addressed to another host's MAC: dropped by `ip_rcv` (or seen only by taps).
    OtherHost,
    /// Sent by us (what a packet tap sees on egress).
    Outgoing,
}

/// Checksum state, as `skb->ip_summed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IpSummed {
    /// Nothing known: software must verify (ingress) or fill in (egress) every checksum.
    #[default]
    None,
    /// Ingress: the device verified the transport checksum (virtio-net
    /// VIRTIO_NET_HDR_F_DATA_VALID).
    Unnecessary,
    /// Egress: the device will fill the transport checksum at `csum_start + csum_offset`
    /// (virtio-net VIRTIO_NET_HDR_F_NEEDS_CSUM).
    Partial { csum_start: u16, csum_offset: u16 },
}

const UNSET: u16 = u16::MAX;

struct SkbBuf {
    bytes: Box<[u8]>,
}

struct PoolInner {
    buf_size: usize,
    max_free: usize,
    free: Mutex<Vec<Arc<SkbBuf>>>,
    /// The second size class: [`LARGE_BUF_SIZE`] buffers for TSO super-packets, which
    /// would otherwise cost a zeroed 64 KiB allocation and a free each.
    large: Mutex<Vec<Arc<SkbBuf>>>,
}

/// Buffers of the large class hold a 64 KiB GSO packet and its headroom.
pub const LARGE_BUF_SIZE: usize = 65536 + 2 * MAX_HEADER;
/// Idle large buffers a pool keeps (4 MiB).
const MAX_LARGE_FREE: usize = 64;

/// A pool of packet buffers (the kernel's skbuff_head_cache plus page_frag allocator,
/// in spirit). Cheap to clone; buffers return to it from any thread.
#[derive(Clone)]
pub struct SkbPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for SkbPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkbPool")
            .field("buf_size", &self.inner.buf_size)
            .field("free", &self.free_count())
            .finish()
    }
}

impl Default for SkbPool {
    fn default() -> Self {
        SkbPool::new(DEFAULT_BUF_SIZE, 4096)
    }
}

impl SkbPool {
    /// A pool of `buf_size`-byte buffers that keeps at most `max_free` idle ones.
    pub fn new(buf_size: usize, max_free: usize) -> Self {
        SkbPool {
            inner: Arc::new(PoolInner {
                buf_size,
                max_free,
                free: Mutex::new(Vec::new()),
                large: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Idle buffers held by the pool.
    pub fn free_count(&self) -> usize {
        self.inner.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// An empty skb (`data == tail == head`) with at least `size` bytes of room
    /// (`alloc_skb`).
    pub fn alloc(&self, size: usize) -> Skb {
        let buf = if size <= self.inner.buf_size {
            let recycled = self.inner.free.lock().ok().and_then(|mut f| f.pop());
            recycled.unwrap_or_else(|| {
                Arc::new(SkbBuf {
                    bytes: vec![0; self.inner.buf_size].into_boxed_slice(),
                })
            })
        } else if size > LARGE_BUF_SIZE / 2 && size <= LARGE_BUF_SIZE {
            let recycled = self.inner.large.lock().ok().and_then(|mut f| f.pop());
            recycled.unwrap_or_else(|| {
                Arc::new(SkbBuf {
                    bytes: vec![0; LARGE_BUF_SIZE].into_boxed_slice(),
                })
            })
        } else {
            Arc::new(SkbBuf {
                bytes: vec![0; size].into_boxed_slice(),
            })
        };
        Skb::from_parts(buf, Some(self.clone()))
    }

    /// An skb for an outgoing packet of up to `payload` bytes with [`MAX_HEADER`]
    /// bytes of headroom reserved for the lower layers' headers.
    pub fn alloc_tx(&self, payload: usize) -> Skb {
        let mut skb = self.alloc(MAX_HEADER + payload);
        skb.reserve(MAX_HEADER);
        skb
    }

    /// An skb holding a copy of `frame`, with `headroom` bytes in front of it.
    pub fn from_slice(&self, headroom: usize, frame: &[u8]) -> Skb {
        let mut skb = self.alloc(headroom + frame.len());
        skb.reserve(headroom);
        skb.put(frame.len()).copy_from_slice(frame);
        skb
    }

    fn recycle(&self, buf: Arc<SkbBuf>) {
        let (list, max) = match buf.bytes.len() {
            n if n == self.inner.buf_size => (&self.inner.free, self.inner.max_free),
            LARGE_BUF_SIZE => (&self.inner.large, MAX_LARGE_FREE.min(self.inner.max_free)),
            _ => return,
        };
        if let Ok(mut free) = list.lock() {
            if free.len() < max {
                free.push(buf);
            }
        }
    }
}

/// Copy from the front of a queue of skbs into `dst` (`skb_copy_datagram_msg` over a
/// receive queue): with `peek` nothing changes; otherwise what was copied leaves the
/// queue (a partly read skb is pulled). Returns the bytes copied and the buffer sizes
/// (truesize) of the skbs that left, for the owner's memory accounting.
pub fn copy_from_queue(q: &mut VecDeque<Skb>, dst: &mut [u8], peek: bool) -> (usize, usize) {
    let mut n = 0;
    if peek {
        for skb in q.iter() {
            let k = skb.len().min(dst.len() - n);
            dst[n..n + k].copy_from_slice(&skb.data()[..k]);
            n += k;
            if n == dst.len() {
                break;
            }
        }
        return (n, 0);
    }
    let mut freed = 0;
    while n < dst.len() {
        let Some(skb) = q.front_mut() else { break };
        let k = skb.len().min(dst.len() - n);
        dst[n..n + k].copy_from_slice(&skb.data()[..k]);
        n += k;
        if k == skb.len() {
            freed += q.pop_front().map_or(0, |skb| skb.end());
        } else {
            let _ = skb.pull(k);
        }
    }
    (n, freed)
}

/// Errors of the skb pointer operations: the kernel would BUG(); we refuse instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbError {
    /// `push` past `head` or `put` past `end`.
    NoRoom,
    /// `pull` or header access past `tail`.
    TooShort,
}

/// A socket's send buffer accounting (`sk->sk_wmem_alloc` against `sk->sk_sndbuf`),
/// shared between the socket and the skbs charged to it. When freed skbs bring the
/// usage under half the limit, a registered waker runs (`sock_def_write_space`), so a
/// sender blocked on a full buffer resumes exactly when room appears, whichever thread
/// frees the skb.
#[derive(Debug)]
pub struct SendBuffer {
    used: AtomicUsize,
    limit: AtomicUsize,
    waiter: Mutex<Option<Waker>>,
}

/// Shared handle to a [`SendBuffer`].
pub type WmemCounter = Arc<SendBuffer>;

impl SendBuffer {
    pub fn new(limit: usize) -> WmemCounter {
        Arc::new(SendBuffer {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            waiter: Mutex::new(None),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Whether one more packet may be charged (`sock_wmem_alloc < sk_sndbuf`: like
    /// Linux, the last packet may overshoot the limit).
    pub fn has_room(&self) -> bool {
        self.used() < self.limit()
    }

    /// Wake `waker` once usage falls under half the limit. Callers re-check
    /// [`SendBuffer::has_room`] after registering, to close the race with a release.
    pub fn register_waker(&self, waker: &Waker) {
        if let Ok(mut w) = self.waiter.lock() {
            match w.as_ref() {
                Some(old) if old.will_wake(waker) => {}
                _ => *w = Some(waker.clone()),
            }
        }
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    fn release(&self, bytes: usize) {
        let now = self.used.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        if now < self.limit() / 2 {
            let waker = self.waiter.lock().ok().and_then(|mut w| w.take());
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The charge one skb holds against its socket (`skb->sk` with `sock_wfree` as the
/// destructor): released when the skb is freed, wherever that happens (after the device
/// wrote it, or in a queue that dropped it).
struct WmemCharge {
    counter: WmemCounter,
    bytes: usize,
}

impl Drop for WmemCharge {
    fn drop(&mut self) {
        self.counter.release(self.bytes);
    }
}

/// A packet buffer descriptor. See the module documentation.
pub struct Skb {
    buf: Option<Arc<SkbBuf>>,
    pool: Option<SkbPool>,
    data: u32,
    tail: u32,
    mac_header: u16,
    network_header: u16,
    transport_header: u16,
    /// Interface the packet arrived on or leaves by (`skb->skb_iif` / `dev->ifindex`).
    pub ifindex: u32,
    /// Link-layer protocol (EtherType) of the payload, as `skb->protocol`.
    pub protocol: u16,
    pub pkt_type: PktType,
    /// Selects the pfifo_fast band on egress (`skb->priority`).
    pub priority: u32,
    /// Firewall mark (`skb->mark`), set and matched by netfilter rules.
    pub mark: u32,
    pub ip_summed: IpSummed,
    /// GSO: payload bytes per segment when this skb is a super-packet (0: not GSO).
    pub gso_size: u16,
    /// GSO: number of segments it stands for.
    pub gso_segs: u16,
    /// 802.1Q tag stripped on ingress or to insert on egress (`skb->vlan_tci`).
    pub vlan_tci: Option<u16>,
    /// Arrival time (`skb->tstamp`).
    pub tstamp: Instant,
    /// Send-buffer charge of the owning socket; clones do not carry it.
    wmem: Option<WmemCharge>,
}

impl Skb {
    fn from_parts(buf: Arc<SkbBuf>, pool: Option<SkbPool>) -> Skb {
        Skb {
            buf: Some(buf),
            pool,
            data: 0,
            tail: 0,
            mac_header: UNSET,
            network_header: UNSET,
            transport_header: UNSET,
            ifindex: 0,
            protocol: 0,
            pkt_type: PktType::Host,
            priority: 0,
            mark: 0,
            ip_summed: IpSummed::None,
            gso_size: 0,
            gso_segs: 0,
            vlan_tci: None,
            tstamp: Instant::ZERO,
            wmem: None,
        }
    }

    /// An skb that owns `bytes` outright (no pool), with the whole vector as packet data.
    pub fn from_vec(bytes: Vec<u8>) -> Skb {
        let len = bytes.len();
        let mut skb = Skb::from_parts(
            Arc::new(SkbBuf {
                bytes: bytes.into_boxed_slice(),
            }),
            None,
        );
        skb.tail = len as u32;
        skb
    }

    fn bytes(&self) -> &[u8] {
        // `buf` is `None` only inside `drop`.
        &self.buf.as_ref().expect("skb buffer present").bytes
    }

    /// Capacity of the underlying buffer (`end - head`).
    pub fn end(&self) -> usize {
        self.bytes().len()
    }

    /// Offset of `data` from `head`.
    pub fn data_offset(&self) -> usize {
        self.data as usize
    }

    /// Offset of `tail` from `head`.
    pub fn tail_offset(&self) -> usize {
        self.tail as usize
    }

    pub fn len(&self) -> usize {
        (self.tail - self.data) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.tail == self.data
    }

    pub fn headroom(&self) -> usize {
        self.data as usize
    }

    pub fn tailroom(&self) -> usize {
        self.end() - self.tail as usize
    }

    /// The packet bytes, `data..tail`.
    pub fn data(&self) -> &[u8] {
        &self.bytes()[self.data as usize..self.tail as usize]
    }

    /// The packet bytes, writable. Unshares the buffer first if a clone shares it.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (d, t) = (self.data as usize, self.tail as usize);
        &mut self.buf_mut()[d..t]
    }

    /// Whether another skb shares this buffer (`skb_cloned`).
    pub fn is_cloned(&self) -> bool {
        self.buf.as_ref().is_some_and(|b| Arc::strong_count(b) > 1)
    }

    /// Make the buffer private to this skb, copying it if shared (`skb_cow_data` /
    /// `skb_unshare`). Offsets and metadata are kept.
    pub fn unshare(&mut self) {
        let buf = self.buf.as_mut().expect("skb buffer present");
        if Arc::get_mut(buf).is_some() {
            return;
        }
        let mut fresh = match &self.pool {
            Some(pool) => pool.alloc(buf.bytes.len()),
            None => Skb::from_parts(
                Arc::new(SkbBuf {
                    bytes: vec![0; buf.bytes.len()].into_boxed_slice(),
                }),
                None,
            ),
        };
        let (d, t) = (self.data as usize, self.tail as usize);
        let fresh_buf = fresh.buf.take().expect("fresh buffer");
        let mut fresh_buf = fresh_buf;
        Arc::get_mut(&mut fresh_buf)
            .expect("fresh buffer is unique")
            .bytes[d..t]
            .copy_from_slice(&buf.bytes[d..t]);
        // Headers in front of `data` (mac header of a pulled frame) are kept too.
        let hdr_start = [self.mac_header, self.network_header, self.transport_header]
            .into_iter()
            .filter(|&h| h != UNSET)
            .map(usize::from)
            .min()
            .unwrap_or(d)
            .min(d);
        Arc::get_mut(&mut fresh_buf).expect("unique").bytes[hdr_start..d]
            .copy_from_slice(&buf.bytes[hdr_start..d]);
        let old = std::mem::replace(buf, fresh_buf);
        drop(old);
    }

    fn buf_mut(&mut self) -> &mut [u8] {
        self.unshare();
        &mut Arc::get_mut(self.buf.as_mut().expect("skb buffer present"))
            .expect("unshared buffer is unique")
            .bytes
    }

    /// Reserve `len` bytes of headroom in an empty skb (`skb_reserve`).
    ///
    /// # Panics
    /// If the skb is not empty or the buffer is too small: a programming error.
    pub fn reserve(&mut self, len: usize) {
        assert!(self.is_empty(), "skb_reserve on a non-empty skb");
        assert!(
            self.data as usize + len <= self.end(),
            "skb_reserve past end"
        );
        self.data += len as u32;
        self.tail = self.data;
    }

    /// Prepend `len` bytes and return them for the caller to fill (`skb_push`).
    pub fn push(&mut self, len: usize) -> Result<&mut [u8], SkbError> {
        if len > self.headroom() {
            return Err(SkbError::NoRoom);
        }
        self.data -= len as u32;
        let (d, t) = (self.data as usize, self.data as usize + len);
        Ok(&mut self.buf_mut()[d..t])
    }

    /// Strip `len` bytes from the front and return them (`skb_pull`).
    pub fn pull(&mut self, len: usize) -> Result<&[u8], SkbError> {
        if len > self.len() {
            return Err(SkbError::TooShort);
        }
        let start = self.data as usize;
        self.data += len as u32;
        Ok(&self.bytes()[start..start + len])
    }

    /// Append `len` bytes at the tail and return them for the caller to fill (`skb_put`).
    pub fn put(&mut self, len: usize) -> &mut [u8] {
        self.try_put(len).expect("skb_put past end")
    }

    /// [`Skb::put`] that fails instead of panicking when there is no tailroom.
    pub fn try_put(&mut self, len: usize) -> Result<&mut [u8], SkbError> {
        if len > self.tailroom() {
            return Err(SkbError::NoRoom);
        }
        let start = self.tail as usize;
        self.tail += len as u32;
        Ok(&mut self.buf_mut()[start..start + len])
    }

    /// The free bytes after `tail`, writable, e.g. for a device to receive a frame into
    /// before [`Skb::put`] claims the bytes it wrote. Unshares the buffer first.
    pub fn tailroom_mut(&mut self) -> &mut [u8] {
        let t = self.tail as usize;
        &mut self.buf_mut()[t..]
    }

    /// Cut the packet to `len` bytes; no-op if already shorter (`skb_trim`).
    pub fn trim(&mut self, len: usize) {
        if len < self.len() {
            self.tail = self.data + len as u32;
        }
    }

    /// Whether at least `len` bytes of packet data are present (`pskb_may_pull`: our
    /// buffers are linear, so it only checks the length).
    pub fn may_pull(&self, len: usize) -> bool {
        len <= self.len()
    }

    fn header_at(&self, off: u16) -> Option<&[u8]> {
        if off == UNSET || off as u32 > self.tail {
            return None;
        }
        Some(&self.bytes()[off as usize..self.tail as usize])
    }

    /// Mark the current `data` as the start of the link-layer header.
    pub fn reset_mac_header(&mut self) {
        self.mac_header = self.data as u16;
    }

    pub fn reset_network_header(&mut self) {
        self.network_header = self.data as u16;
    }

    pub fn reset_transport_header(&mut self) {
        self.transport_header = self.data as u16;
    }

    /// Set the transport header `offset` bytes after `data`.
    pub fn set_transport_header(&mut self, offset: usize) {
        self.transport_header = (self.data as usize + offset) as u16;
    }

    /// Bytes from the link-layer header to `tail`.
    pub fn mac_header(&self) -> Option<&[u8]> {
        self.header_at(self.mac_header)
    }

    /// Bytes from the network header to `tail`.
    pub fn network_header(&self) -> Option<&[u8]> {
        self.header_at(self.network_header)
    }

    /// Bytes from the transport header to `tail`.
    pub fn transport_header(&self) -> Option<&[u8]> {
        self.header_at(self.transport_header)
    }

    pub fn network_header_offset(&self) -> Option<usize> {
        (self.network_header != UNSET).then_some(self.network_header as usize)
    }

    pub fn transport_header_offset(&self) -> Option<usize> {
        (self.transport_header != UNSET).then_some(self.transport_header as usize)
    }

    pub fn mac_header_offset(&self) -> Option<usize> {
        (self.mac_header != UNSET).then_some(self.mac_header as usize)
    }

    /// Move `data` back to an absolute offset at or before the current one, e.g. to the
    /// network header to quote an offending packet in an ICMP error (`skb_push` to a mark).
    pub fn push_to(&mut self, offset: usize) -> Result<(), SkbError> {
        if offset > self.data as usize {
            return Err(SkbError::TooShort);
        }
        self.data = offset as u32;
        Ok(())
    }

    /// Take over what describes `from` but is not its bytes: device, EtherType, packet
    /// type, priority, mark, VLAN tag and arrival time, for a packet made out of it (a
    /// fragment, a GSO segment, a reassembled datagram: Linux's `ip_copy_metadata`).
    pub fn copy_metadata_from(&mut self, from: &Skb) {
        self.ifindex = from.ifindex;
        self.protocol = from.protocol;
        self.pkt_type = from.pkt_type;
        self.priority = from.priority;
        self.mark = from.mark;
        self.vlan_tci = from.vlan_tci;
        self.tstamp = from.tstamp;
    }

    /// Charge this skb's buffer size (its truesize) to a socket's send buffer until the
    /// skb is freed (`skb_set_owner_w`).
    pub fn set_owner_w(&mut self, counter: &WmemCounter) {
        let bytes = self.end();
        counter.charge(bytes);
        self.wmem = Some(WmemCharge {
            counter: counter.clone(),
            bytes,
        });
    }

    /// The send-buffer counter this skb is charged to, if any.
    pub fn owner_w(&self) -> Option<&WmemCounter> {
        self.wmem.as_ref().map(|c| &c.counter)
    }

    /// A private, unshared copy with the same offsets and metadata (`skb_copy`).
    pub fn deep_copy(&self) -> Skb {
        let mut c = self.clone();
        c.unshare();
        c
    }
}

impl Clone for Skb {
    /// `skb_clone`: a new descriptor over the same bytes.
    fn clone(&self) -> Skb {
        Skb {
            buf: self.buf.clone(),
            pool: self.pool.clone(),
            data: self.data,
            tail: self.tail,
            mac_header: self.mac_header,
            network_header: self.network_header,
            transport_header: self.transport_header,
            ifindex: self.ifindex,
            protocol: self.protocol,
            pkt_type: self.pkt_type,
            priority: self.priority,
            mark: self.mark,
            ip_summed: self.ip_summed,
            gso_size: self.gso_size,
            gso_segs: self.gso_segs,
            vlan_tci: self.vlan_tci,
            tstamp: self.tstamp,
            wmem: None,
        }
    }
}

impl Drop for Skb {
    fn drop(&mut self) {
        if let (Some(mut buf), Some(pool)) = (self.buf.take(), self.pool.take()) {
            // Last reference: hand the buffer back (`kfree_skb` -> cache).
            if Arc::get_mut(&mut buf).is_some() {
                pool.recycle(buf);
            }
        }
    }
}

impl fmt::Debug for Skb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Skb")
            .field("len", &self.len())
            .field("data", &self.data)
            .field("tail", &self.tail)
            .field("end", &self.end())
            .field("protocol", &format_args!("{:#06x}", self.protocol))
            .field("pkt_type", &self.pkt_type)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_put_trim_move_the_pointers() {
        let pool = SkbPool::new(256, 8);
        let mut skb = pool.alloc(200);
        assert_eq!(skb.end(), 256);
        skb.reserve(64);
        assert_eq!((skb.headroom(), skb.len(), skb.tailroom()), (64, 0, 192));
        skb.put(4).copy_from_slice(b"data");
        skb.push(3).unwrap().copy_from_slice(b"hdr");
        assert_eq!(skb.data(), b"hdrdata");
        assert_eq!(skb.headroom(), 61);
        assert_eq!(skb.pull(3).unwrap(), b"hdr");
        assert_eq!(skb.data(), b"data");
        skb.trim(2);
        assert_eq!(skb.data(), b"da");
        skb.trim(10);
        assert_eq!(skb.data(), b"da");
        assert_eq!(skb.pull(3), Err(SkbError::TooShort));
        assert_eq!(skb.push(100).err(), Some(SkbError::NoRoom));
        assert_eq!(skb.try_put(1000).err(), Some(SkbError::NoRoom));
        assert!(skb.may_pull(2) && !skb.may_pull(3));
    }

    #[test]
    fn header_offsets_survive_pull() {
        let pool = SkbPool::default();
        let mut skb = pool.from_slice(32, b"EEEEIIIITTTTpayload");
        skb.reset_mac_header();
        skb.pull(4).unwrap();
        skb.reset_network_header();
        skb.pull(4).unwrap();
        skb.reset_transport_header();
        skb.pull(4).unwrap();
        assert_eq!(skb.data(), b"payload");
        assert_eq!(skb.mac_header().unwrap(), b"EEEEIIIITTTTpayload");
        assert_eq!(skb.network_header().unwrap(), b"IIIITTTTpayload");
        assert_eq!(skb.transport_header().unwrap(), b"TTTTpayload");
        skb.push_to(skb.network_header_offset().unwrap()).unwrap();
        assert_eq!(skb.data(), b"IIIITTTTpayload");
    }

    #[test]
    fn clone_shares_and_write_copies() {
        let pool = SkbPool::default();
        let mut a = pool.from_slice(16, b"hello");
        a.reset_mac_header();
        let mut b = a.clone();
        assert!(a.is_cloned() && b.is_cloned());
        assert_eq!(a.data().as_ptr(), b.data().as_ptr(), "clone shares bytes");
        b.data_mut()[0] = b'j';
        assert_eq!(a.data(), b"hello");
        assert_eq!(b.data(), b"jello");
        assert_ne!(a.data().as_ptr(), b.data().as_ptr());
        assert!(!a.is_cloned() && !b.is_cloned());
        assert_eq!(b.mac_header().unwrap(), b"jello");
        // Pointer moves on one clone do not move the other.
        let mut c = a.clone();
        c.pull(2).unwrap();
        assert_eq!(a.data(), b"hello");
        assert_eq!(c.data(), b"llo");
    }

    #[test]
    fn unshare_keeps_pulled_headers() {
        let pool = SkbPool::default();
        let mut a = pool.from_slice(16, b"ETHIPpayload");
        a.reset_mac_header();
        a.pull(3).unwrap();
        a.reset_network_header();
        let _keep = a.clone();
        a.data_mut()[0] = b'i';
        assert_eq!(a.mac_header().unwrap(), b"ETHiPpayload");
    }

    #[test]
    fn buffers_return_to_the_pool() {
        let pool = SkbPool::new(512, 2);
        assert_eq!(pool.free_count(), 0);
        let a = pool.alloc(100);
        let a2 = a.clone();
        drop(a);
        assert_eq!(pool.free_count(), 0, "a clone still holds the buffer");
        drop(a2);
        assert_eq!(pool.free_count(), 1);
        let ptr = {
            let b = pool.alloc(10);
            b.bytes().as_ptr()
        };
        let c = pool.alloc(10);
        assert_eq!(c.bytes().as_ptr(), ptr, "steady state reuses the buffer");
        // Oversized requests are served but not pooled.
        let big = pool.alloc(4096);
        assert_eq!(big.end(), 4096);
        drop(big);
        assert_eq!(pool.free_count(), 0);
        // Super-packet sizes come from the large class, and go back to it.
        let tso = pool.alloc(60_000);
        assert_eq!(tso.end(), LARGE_BUF_SIZE);
        let tso_ptr = tso.bytes().as_ptr();
        drop(tso);
        assert_eq!(pool.alloc(40_000).bytes().as_ptr(), tso_ptr, "reused");
        assert_eq!(pool.free_count(), 0, "the small class is apart");
        drop(c);
        let (x, y, z) = (pool.alloc(1), pool.alloc(1), pool.alloc(1));
        drop((x, y, z));
        assert_eq!(pool.free_count(), 2, "pool keeps at most max_free");
    }

    #[test]
    fn send_buffer_charge_lives_as_long_as_the_skb() {
        let pool = SkbPool::new(512, 4);
        let counter = SendBuffer::new(1000);
        let mut a = pool.alloc(100);
        a.set_owner_w(&counter);
        let mut b = pool.alloc(100);
        b.set_owner_w(&counter);
        assert_eq!(counter.used(), 1024);
        assert!(!counter.has_room());
        let clone = a.clone();
        assert!(clone.owner_w().is_none(), "clones carry no charge");

        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(false.into()));
        counter.register_waker(&Waker::from(flag.clone()));
        drop(a);
        assert_eq!(counter.used(), 512);
        assert!(counter.has_room());
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "wakes only under half the limit"
        );
        drop(b);
        assert_eq!(counter.used(), 0);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "sock_def_write_space woke the sender"
        );
        drop(clone);
    }

    #[test]
    fn from_vec_owns_its_bytes() {
        let mut skb = Skb::from_vec(b"abc".to_vec());
        assert_eq!(skb.data(), b"abc");
        assert_eq!(skb.headroom(), 0);
        assert!(skb.push(1).is_err());
        let c = skb.clone();
        skb.data_mut()[0] = b'x';
        assert_eq!(c.data(), b"abc");
        assert_eq!(skb.data(), b"xbc");
    }
}
