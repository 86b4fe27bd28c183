//! IPv4 reassembly on input: `ip_defrag` (net/ipv4/ip_fragment.c, net/ipv4/inet_fragment.c),
//! after RFC 791 section 3.2 "Reassembly" and RFC 1122 section 3.3.2.
//!
//! ```text
//!   ip_defrag ──► ip_find (key: src, dst, ident, protocol; RFC 791 section 2.3)
//!                   │
//!                   ▼
//!              ip_frag_queue ── overlap / bad end / malformed ──► inet_frag_kill (ReasmFails)
//!                   │ exact duplicate ──► dropped, queue kept
//!                   ▼
//!              all of 0..end present? ── no ──► Queued (until the timer or eviction)
//!                   │ yes
//!                   ▼
//!              ip_frag_reasm ──► one new skb: first fragment's header + payload in order
//! ```
//!
//! Policy, and where it comes from:
//! * Any overlap other than an exact duplicate discards the whole datagram. Linux does
//!   this for IPv4 since 4.19 (the "FragmentSmack" fix, taking RFC 5722's IPv6 rule);
//!   it leaves nothing for teardrop-style attacks to exploit. (Linux also treats a
//!   fragment contained in an earlier one as a duplicate; we are stricter.)
//! * A non-last fragment must carry a multiple of 8 bytes (RFC 791: offsets count 8-byte
//!   units, so only the last fragment may end elsewhere).
//! * No datagram exceeds 65535 bytes (Total Length is 16 bits): `ip_frag_reasm`'s
//!   "Oversized IP packet".
//! * Memory is bounded like `ipfrag_high_thresh` / `ipfrag_low_thresh`: past the high mark,
//!   whole queues are evicted oldest first down to the low mark (the `inet_frag_evictor`
//!   of Linux before 4.17; newer kernels just refuse new queues).
//! * A queue lives `timeout` from its first fragment (`ipfrag_time`, RFC 1122 3.3.2
//!   recommends 60 to 120 s; Linux uses 30 s); on expiry ICMP time exceeded code 1 is
//!   due only if fragment zero arrived (RFC 1122 section 3.3.2, RFC 792).
//!
//! Pure: time comes in as `now`; the caller sends the ICMP errors and copies
//! [`DefragStats`] into the IP MIB.

use std::collections::{BTreeMap, HashMap};

use crate::skb::{Skb, SkbPool, DEFAULT_BUF_SIZE, MAX_HEADER};
use crate::time::{Duration, Instant};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::Ipv4Addr;

/// Largest IPv4 datagram (16-bit Total Length).
const IP_MAX_LEN: usize = 65535;

/// Headroom of a reassembled skb, so that a reply or a forward can push its headers
/// without a copy.
const REASM_HEADROOM: usize = MAX_HEADER;

/// ECN codepoints (RFC 3168 section 5) as bits of the per-queue "seen" mask.
const ECN_NOT_ECT: u8 = 1 << 0;
const ECN_CE: u8 = 1 << 3;

/// Limits, as Linux's `net.ipv4.ipfrag_*` sysctls.
#[derive(Clone, Debug)]
pub struct DefragParms {
    /// Past this many bytes charged, evict (`ipfrag_high_thresh`, 4 MiB).
    pub high_thresh: usize,
    /// Evict down to this (`ipfrag_low_thresh`, 3 MiB).
    pub low_thresh: usize,
    /// Lifetime of a queue from its first fragment (`ipfrag_time`, 30 s).
    pub timeout: Duration,
}

impl Default for DefragParms {
    fn default() -> Self {
        DefragParms {
            high_thresh: 4 * 1024 * 1024,
            low_thresh: 3 * 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What became of a fragment handed to [`Defrag::ip_defrag`].
#[derive(Debug)]
pub enum DefragOutcome {
    /// It completed its datagram: here is the whole datagram, data at its IPv4 header.
    Complete(Skb),
    /// Held until the rest arrives.
    Queued,
    /// Discarded: malformed, an overlap (the datagram went with it), too large for the
    /// memory limit, or an exact duplicate of a fragment already held. Already counted.
    Dropped,
}

/// Reassembly counters. `reasm_*` are the IP MIB's ReasmReqds, ReasmOKs, ReasmFails,
/// ReasmTimeout and IpExt's ReasmOverlaps; `evictions` counts queues dropped for memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefragStats {
    pub reasm_reqds: u64,
    pub reasm_oks: u64,
    pub reasm_fails: u64,
    pub reasm_timeout: u64,
    pub reasm_overlaps: u64,
    pub evictions: u64,
}

/// `struct frag_v4_compare_key` without the netns/user/vif parts: RFC 791's
/// identification of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FragKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    protocol: u8,
}

/// One held fragment: `skb` with data at its IPv4 header.
#[derive(Debug)]
struct Frag {
    skb: Skb,
    /// Payload end in the datagram (offset + payload length).
    end: u16,
    hlen: u8,
}

/// `struct ipq`: the fragments of one datagram, by offset.
#[derive(Debug)]
struct IpQueue {
    /// Creation time and sequence: the queue's key in `Defrag::order`.
    created: Instant,
    seq: u64,
    frags: BTreeMap<u16, Frag>,
    /// Highest payload end seen; the datagram's length once `last_in` (`q.len`).
    len: usize,
    /// The fragment with MF clear arrived (INET_FRAG_LAST_IN).
    last_in: bool,
    /// Payload bytes held (`q.meat`). Fragments never overlap, so `meat == len` with
    /// `last_in` means every byte is present.
    meat: usize,
    /// Bytes charged for this queue.
    mem: usize,
    /// ECN codepoints seen, as `1 << ecn` (`ipq.ecn`).
    ecn: u8,
    /// Largest fragment, and largest with DF set (`q.max_size`, `max_df_size`).
    max_size: usize,
    max_df_size: usize,
}

/// Why a fragment cannot join its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    /// Same offset and length as one already held: ignore it.
    Duplicate,
    /// Shares bytes with a held fragment otherwise: kill the datagram.
    Overlap,
    /// Contradicts the known end (a second, different last fragment, or data past it).
    BadEnd,
}

/// The header fields reassembly needs, read once.
#[derive(Clone, Copy, Debug)]
struct FragInfo {
    key: FragKey,
    offset: usize,
    end: usize,
    hlen: usize,
    total_len: usize,
    mf: bool,
    df: bool,
    ecn: u8,
}

impl FragInfo {
    fn parse(data: &[u8]) -> Option<FragInfo> {
        let ip = Ipv4Packet::new_checked(data).ok()?;
        let hlen = ip.header_len();
        let total_len = usize::from(ip.total_len());
        let offset = usize::from(ip.frag_offset());
        Some(FragInfo {
            key: FragKey {
                src: ip.src(),
                dst: ip.dst(),
                id: ip.ident(),
                protocol: ip.protocol(),
            },
            offset,
            end: offset + (total_len - hlen),
            hlen,
            total_len,
            mf: ip.more_frags(),
            df: ip.dont_frag(),
            ecn: ip.ecn(),
        })
    }

    /// Checks on the fragment alone; `Err` names the reason for the trace.
    fn validate(&self) -> Result<(), &'static str> {
        let len = self.end - self.offset;
        if len == 0 {
            // ip_frag_queue: `end == offset` carries nothing and is discarded.
            return Err("empty fragment");
        }
        if self.mf && len % 8 != 0 {
            return Err("non-last fragment not a multiple of 8 bytes");
        }
        if self.hlen + self.end > IP_MAX_LEN {
            return Err("fragment ends past 65535");
        }
        Ok(())
    }
}

impl IpQueue {
    /// `ip_frag_queue`'s end checks and `inet_frag_queue_insert`'s overlap check.
    fn check(&self, f: &FragInfo) -> Result<(), Reject> {
        if !f.mf {
            if f.end < self.len || (self.last_in && f.end != self.len) {
                return Err(Reject::BadEnd);
            }
        } else if self.last_in && f.end > self.len {
            return Err(Reject::BadEnd);
        }
        // Held fragments are disjoint, so among those starting before our end the last
        // one also ends last: if it does not reach our offset, nothing does.
        let end = u16::try_from(f.end).unwrap_or(u16::MAX);
        if let Some((&off, held)) = self.frags.range(..end).next_back() {
            if usize::from(held.end) > f.offset {
                return if usize::from(off) == f.offset && usize::from(held.end) == f.end {
                    Err(Reject::Duplicate)
                } else {
                    Err(Reject::Overlap)
                };
            }
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.last_in && self.meat == self.len
    }
}

/// The reassembly queues of one network namespace (`struct fqdir` for IPv4).
#[derive(Debug)]
pub struct Defrag {
    parms: DefragParms,
    queues: HashMap<FragKey, IpQueue>,
    /// Queues by creation: the oldest is the first to expire and to be evicted (all
    /// share one timeout), and the first entry gives `poll_timeout` in O(log n).
    order: BTreeMap<(Instant, u64), FragKey>,
    next_seq: u64,
    mem: usize,
    pool: SkbPool,
    pub stats: DefragStats,
}

impl Defrag {
    /// Reassembled datagrams come from a small private pool; see [`Defrag::with_pool`].
    pub fn new(parms: DefragParms) -> Self {
        Defrag::with_pool(parms, SkbPool::new(DEFAULT_BUF_SIZE, 64))
    }

    /// Like [`Defrag::new`], allocating reassembled datagrams from `pool`.
    pub fn with_pool(parms: DefragParms, pool: SkbPool) -> Self {
        Defrag {
            parms,
            queues: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            mem: 0,
            pool,
            stats: DefragStats::default(),
        }
    }

    pub fn parms(&self) -> &DefragParms {
        &self.parms
    }

    /// Bytes charged to the reassembly queues: each held skb's buffer size (`end()`),
    /// as the kernel charges `truesize`.
    pub fn mem(&self) -> usize {
        self.mem
    }

    /// Datagrams being reassembled.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// `ip_defrag`: add a fragment to its datagram. `skb`: data at a validated IPv4
    /// header (checksum verified, trimmed to Total Length) of a fragment (MF set or
    /// offset != 0). A non-fragment goes through the same path and comes back complete
    /// (as a copy) unless it collides with a queue.
    pub fn ip_defrag(&mut self, now: Instant, mut skb: Skb) -> DefragOutcome {
        self.stats.reasm_reqds += 1;
        let Some(f) = FragInfo::parse(skb.data()) else {
            self.stats.reasm_fails += 1;
            tracing::trace!("drop: fragment with a bad IPv4 header");
            return DefragOutcome::Dropped;
        };
        skb.trim(f.total_len);
        // The held skb may later quote itself in an ICMP error (`icmp_send` reads the
        // network header).
        skb.reset_network_header();
        if let Err(why) = f.validate() {
            tracing::trace!(reason = why, "drop: malformed fragment, datagram discarded");
            return self.discard(&f.key);
        }
        let charge = skb.end();
        if charge > self.parms.high_thresh {
            self.stats.reasm_fails += 1;
            tracing::trace!(charge, "drop: fragment larger than ipfrag_high_thresh");
            return DefragOutcome::Dropped;
        }
        if let Some(q) = self.queues.get(&f.key) {
            match q.check(&f) {
                Ok(()) => {}
                Err(Reject::Duplicate) => {
                    tracing::trace!(offset = f.offset, "drop: duplicate fragment");
                    return DefragOutcome::Dropped;
                }
                Err(Reject::Overlap) => {
                    self.stats.reasm_overlaps += 1;
                    tracing::trace!(offset = f.offset, "drop: overlapping fragment");
                    return self.discard(&f.key);
                }
                Err(Reject::BadEnd) => {
                    tracing::trace!(end = f.end, "drop: fragment contradicts the end");
                    return self.discard(&f.key);
                }
            }
        }
        if self.mem + charge > self.parms.high_thresh {
            self.ip_evict(charge);
        }

        // `inet_frag_create` if this is the datagram's first fragment (or its old queue
        // was just evicted).
        let (order, next_seq) = (&mut self.order, &mut self.next_seq);
        let q = self.queues.entry(f.key).or_insert_with(|| {
            let seq = *next_seq;
            *next_seq += 1;
            order.insert((now, seq), f.key);
            IpQueue {
                created: now,
                seq,
                frags: BTreeMap::new(),
                len: 0,
                last_in: false,
                meat: 0,
                mem: 0,
                ecn: 0,
                max_size: 0,
                max_df_size: 0,
            }
        });
        // `validate` bounds offset, end and hlen well inside u16 / u8.
        let (offset, end, hlen) = (f.offset as u16, f.end as u16, f.hlen as u8);
        q.frags.insert(offset, Frag { skb, end, hlen });
        q.meat += f.end - f.offset;
        q.len = q.len.max(f.end);
        q.last_in |= !f.mf;
        q.mem += charge;
        q.ecn |= 1 << f.ecn;
        q.max_size = q.max_size.max(f.total_len);
        if f.df {
            q.max_df_size = q.max_df_size.max(f.total_len);
        }
        self.mem += charge;

        if !q.complete() {
            return DefragOutcome::Queued;
        }
        let Some(q) = self.unlink(&f.key) else {
            return DefragOutcome::Queued;
        };
        match self.ip_frag_reasm(q) {
            Ok(skb) => {
                self.stats.reasm_oks += 1;
                DefragOutcome::Complete(skb)
            }
            Err(why) => {
                self.stats.reasm_fails += 1;
                tracing::trace!(reason = why, "drop: reassembly failed");
                DefragOutcome::Dropped
            }
        }
    }

    /// When [`Defrag::on_timer`] must next run: the oldest queue's expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order
            .keys()
            .next()
            .map(|&(created, _)| created + self.parms.timeout)
    }

    /// `ip_expire` for every queue older than the timeout. For each one that holds its
    /// first fragment (offset 0), that fragment (data at its IPv4 header) goes to
    /// `expired`, for the caller to answer with ICMP time exceeded, code 1 "fragment
    /// reassembly time exceeded" (RFC 792; RFC 1122 section 3.3.2: only if fragment zero
    /// is available).
    pub fn on_timer(&mut self, now: Instant, expired: &mut Vec<Skb>) {
        while let Some((&(created, _), _)) = self.order.first_key_value() {
            if created + self.parms.timeout > now {
                break;
            }
            let Some((key, mut q)) = self.unlink_oldest() else {
                continue;
            };
            self.stats.reasm_timeout += 1;
            self.stats.reasm_fails += 1;
            tracing::trace!(id = key.id, src = %key.src, "reassembly timed out");
            if let Some(first) = q.frags.remove(&0) {
                expired.push(first.skb);
            }
        }
    }

    /// `inet_frag_kill` after a bad fragment: the datagram (if queued) is dropped.
    fn discard(&mut self, key: &FragKey) -> DefragOutcome {
        self.unlink(key);
        self.stats.reasm_fails += 1;
        DefragOutcome::Dropped
    }

    /// Remove a queue from both indexes and uncharge it; its skbs drop with it unless the
    /// caller keeps them.
    fn unlink(&mut self, key: &FragKey) -> Option<IpQueue> {
        let q = self.queues.remove(key)?;
        self.order.remove(&(q.created, q.seq));
        self.mem -= q.mem;
        Some(q)
    }

    /// Remove the oldest queue. Always shortens `order`, so loops over it end.
    fn unlink_oldest(&mut self) -> Option<(FragKey, IpQueue)> {
        let (_, key) = self.order.pop_first()?;
        let q = self.queues.remove(&key)?;
        self.mem -= q.mem;
        Some((key, q))
    }

    /// `inet_frag_evictor`: drop whole queues, oldest first, until `charge` more bytes
    /// fit under the low mark (never above the high mark, whatever the configuration).
    fn ip_evict(&mut self, charge: usize) {
        let target = self.parms.low_thresh.min(self.parms.high_thresh);
        while self.mem + charge > target && !self.order.is_empty() {
            if let Some((key, _)) = self.unlink_oldest() {
                self.stats.evictions += 1;
                self.stats.reasm_fails += 1;
                tracing::trace!(id = key.id, src = %key.src, "reassembly queue evicted");
            }
        }
    }

    /// `ip_frag_reasm`: one skb holding the first fragment's header (options included,
    /// MF and offset cleared, Total Length and checksum redone) and then every payload in
    /// order, with `REASM_HEADROOM` bytes in front.
    fn ip_frag_reasm(&self, q: IpQueue) -> Result<Skb, &'static str> {
        let first = q.frags.get(&0).ok_or("no first fragment")?;
        let hlen = usize::from(first.hlen);
        let total = hlen + q.len;
        if total > IP_MAX_LEN {
            // The first fragment's options make the datagram too long.
            return Err("oversized IP packet");
        }
        // RFC 3168 section 5.3: CE on any fragment marks the datagram; a mix of
        // Not-ECT and ECT is invalid (Linux `ip_frag_ecn_table`).
        if q.ecn & ECN_NOT_ECT != 0 && q.ecn != ECN_NOT_ECT {
            return Err("ECN codepoints mix Not-ECT and ECT");
        }
        let mut skb = self.pool.alloc(REASM_HEADROOM + total);
        skb.reserve(REASM_HEADROOM);
        let buf = skb.try_put(total).map_err(|_| "no room")?;
        let hdr = first.skb.data().get(..hlen).ok_or("short first fragment")?;
        buf[..hlen].copy_from_slice(hdr);
        for (&off, frag) in &q.frags {
            let payload = frag
                .skb
                .data()
                .get(usize::from(frag.hlen)..)
                .ok_or("short fragment")?;
            let at = hlen + usize::from(off);
            buf.get_mut(at..at + payload.len())
                .ok_or("fragment past the end")?
                .copy_from_slice(payload);
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        if q.ecn & ECN_CE != 0 {
            let tos = ip.tos() | 0x03;
            ip.set_tos(tos);
        }
        ip.set_total_len(total as u16);
        // Linux keeps DF only if the largest fragment carried it (`max_df_size ==
        // max_size`), so a refragmenting router still honours it.
        let df = q.max_df_size != 0 && q.max_df_size == q.max_size;
        ip.set_flags_and_frag_offset(df, false, 0);
        ip.fill_checksum();
        skb.reset_network_header();
        skb.set_transport_header(hlen);
        skb.copy_metadata_from(&first.skb);
        Ok(skb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::fragment::ip_fragment;
    use crate::rand::Rng;
    use crate::skb::PktType;
    use crate::wire::ipv4::{protocol, Ipv4Options, Ipv4Repr};
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn repr(id: u16, offset: u16, payload_len: usize, mf: bool) -> Ipv4Repr {
        Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            ident: id,
            dont_frag: false,
            more_frags: mf,
            frag_offset: offset,
            payload_len,
            options: Ipv4Options::default(),
        }
    }

    fn skb_of(pool: &SkbPool, r: &Ipv4Repr, payload: &[u8]) -> Skb {
        let mut v = vec![0u8; r.header_len()];
        r.emit(&mut v);
        v.extend_from_slice(payload);
        let mut skb = pool.from_slice(MAX_HEADER, &v);
        skb.reset_network_header();
        skb
    }

    /// A hand-made fragment whose payload byte at datagram position i is `i as u8`.
    fn frag(pool: &SkbPool, id: u16, offset: u16, len: usize, mf: bool) -> Skb {
        let payload: Vec<u8> = (0..len).map(|i| (usize::from(offset) + i) as u8).collect();
        skb_of(pool, &repr(id, offset, len, mf), &payload)
    }

    /// A whole datagram of `payload_len` pseudo-random bytes.
    fn datagram(pool: &SkbPool, r: &Ipv4Repr, seed: u64) -> Skb {
        let mut payload = vec![0u8; r.payload_len];
        Rng::new(seed).fill(&mut payload);
        skb_of(pool, r, &payload)
    }

    fn fragments(pool: &SkbPool, whole: &Skb, mtu: usize) -> Vec<Skb> {
        let mut out = Vec::new();
        ip_fragment(whole, mtu, pool, &mut out).unwrap();
        out
    }

    fn complete(o: DefragOutcome) -> Skb {
        match o {
            DefragOutcome::Complete(skb) => skb,
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    fn is_queued(o: &DefragOutcome) -> bool {
        matches!(o, DefragOutcome::Queued)
    }

    fn is_dropped(o: &DefragOutcome) -> bool {
        matches!(o, DefragOutcome::Dropped)
    }

    fn feed(d: &mut Defrag, frags: Vec<Skb>) -> Vec<DefragOutcome> {
        frags
            .into_iter()
            .map(|f| {
                let o = d.ip_defrag(Instant::ZERO, f);
                assert!(d.mem() <= d.parms().high_thresh);
                o
            })
            .collect()
    }

    /// Feed all and return the one completed datagram, checking the rest queued.
    fn reassemble(d: &mut Defrag, frags: Vec<Skb>) -> Skb {
        let n = frags.len();
        let mut outs = feed(d, frags);
        let last = outs.pop().unwrap();
        assert!(outs.iter().all(is_queued), "{outs:?}");
        let skb = complete(last);
        assert_eq!(d.stats.reasm_reqds as usize, n);
        assert_eq!(d.stats.reasm_oks, 1);
        assert_eq!((d.queues(), d.mem()), (0, 0));
        skb
    }

    #[test]
    fn in_order_reverse_and_shuffled_give_the_original() {
        let pool = SkbPool::default();
        // Options in the original: the first fragment's header comes back as it was.
        let mut r = repr(7, 0, 5000, false);
        r.options = Ipv4Options::new(&[130, 4, 0xaa, 0xbb, 7, 7, 4, 0, 0, 0, 0, 1]).unwrap();
        let whole = datagram(&pool, &r, 1);
        for order in 0..3 {
            let mut frags = fragments(&pool, &whole, 1500);
            assert_eq!(frags.len(), 4);
            match order {
                0 => {}
                1 => frags.reverse(),
                _ => frags.swap(0, 2),
            }
            let mut d = Defrag::new(DefragParms::default());
            let got = reassemble(&mut d, frags);
            assert_eq!(got.data(), whole.data(), "order {order}");
            assert!(got.headroom() >= 64);
            assert_eq!(got.network_header_offset(), Some(got.data_offset()));
            assert_eq!(
                got.transport_header_offset(),
                Some(got.data_offset() + r.header_len())
            );
        }
    }

    #[test]
    fn metadata_comes_from_the_first_fragment() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        let mut a = frag(&pool, 1, 0, 16, true);
        (a.ifindex, a.mark, a.pkt_type) = (3, 9, PktType::Broadcast);
        a.tstamp = Instant::from_secs(5);
        a.protocol = 0x0800;
        let mut b = frag(&pool, 1, 16, 8, false);
        (b.ifindex, b.mark) = (4, 1);
        // The first fragment arrives last.
        assert!(is_queued(&d.ip_defrag(Instant::ZERO, b)));
        let got = complete(d.ip_defrag(Instant::from_secs(6), a));
        assert_eq!(
            (got.ifindex, got.mark, got.pkt_type),
            (3, 9, PktType::Broadcast)
        );
        assert_eq!((got.tstamp, got.protocol), (Instant::from_secs(5), 0x0800));
        let ip = Ipv4Packet::new_checked(got.data()).unwrap();
        assert!(ip.verify_checksum() && !ip.is_fragment() && !ip.dont_frag());
        assert_eq!(ip.total_len(), 44);
        let want: Vec<u8> = (0..24).collect();
        assert_eq!(ip.payload(), &want[..]);
    }

    #[test]
    fn duplicates_are_ignored() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        let whole = datagram(&pool, &repr(9, 0, 3000, false), 2);
        let frags = fragments(&pool, &whole, 1500);
        let dup = frags[1].clone();
        let last_dup = frags[2].clone();
        let mut outs = feed(&mut d, vec![frags[1].clone(), dup, last_dup]);
        assert!(is_queued(&outs[0]) && is_dropped(&outs[1]) && is_queued(&outs[2]));
        let held = d.mem();
        assert!(is_dropped(&d.ip_defrag(Instant::ZERO, frags[2].clone())));
        assert_eq!(d.mem(), held, "a duplicate is not charged");
        outs.push(d.ip_defrag(Instant::ZERO, frags[0].clone()));
        assert_eq!(complete(outs.pop().unwrap()).data(), whole.data());
        assert_eq!(d.stats.reasm_fails, 0);
        assert_eq!(d.stats.reasm_overlaps, 0);
    }

    #[test]
    fn overlaps_drop_the_datagram_and_a_fresh_set_still_completes() {
        let pool = SkbPool::default();
        // (held fragment, colliding fragment) as (offset, len, mf).
        let cases = [
            // Partial overlap from the right.
            ((0, 16, true), (8, 16, true)),
            // Partial overlap from the left.
            ((16, 16, true), (8, 16, true)),
            // Teardrop shape: a last fragment starting inside the first one.
            ((0, 40, true), (24, 24, false)),
            // Contained in a held fragment (Linux calls this a duplicate; we do not).
            ((0, 40, true), (8, 16, true)),
            // Covering a held fragment.
            ((8, 8, true), (0, 24, true)),
            // Same offset, different length.
            ((0, 16, true), (0, 8, true)),
        ];
        for (i, (a, b)) in cases.into_iter().enumerate() {
            let mut d = Defrag::new(DefragParms::default());
            let o = d.ip_defrag(Instant::ZERO, frag(&pool, 5, a.0, a.1, a.2));
            assert!(is_queued(&o), "case {i}");
            let o = d.ip_defrag(Instant::ZERO, frag(&pool, 5, b.0, b.1, b.2));
            assert!(is_dropped(&o), "case {i}");
            assert_eq!(d.stats.reasm_overlaps, 1, "case {i}");
            assert_eq!(d.stats.reasm_fails, 1, "case {i}");
            assert_eq!((d.queues(), d.mem()), (0, 0), "case {i}");
            // The same key starts over.
            let o = d.ip_defrag(Instant::ZERO, frag(&pool, 5, 16, 8, false));
            assert!(is_queued(&o), "case {i}");
            let got = complete(d.ip_defrag(Instant::ZERO, frag(&pool, 5, 0, 16, true)));
            let want: Vec<u8> = (0..24).collect();
            assert_eq!(
                Ipv4Packet::new_checked(got.data()).unwrap().payload(),
                &want[..]
            );
        }
        // Adjacent fragments do not overlap.
        let mut d = Defrag::new(DefragParms::default());
        let outs = feed(
            &mut d,
            vec![
                frag(&pool, 6, 8, 8, true),
                frag(&pool, 6, 0, 8, true),
                frag(&pool, 6, 16, 1, false),
            ],
        );
        assert!(matches!(outs[2], DefragOutcome::Complete(_)));
        assert_eq!(d.stats.reasm_overlaps, 0);
    }

    #[test]
    fn contradicting_ends_drop_the_datagram() {
        let pool = SkbPool::default();
        let cases = [
            // A second last fragment with a different end.
            ((16, 8, false), (24, 8, false)),
            // Data past the known end.
            ((16, 8, false), (24, 8, true)),
            // A last fragment ending before data already held.
            ((32, 8, true), (0, 16, false)),
        ];
        for (i, (a, b)) in cases.into_iter().enumerate() {
            let mut d = Defrag::new(DefragParms::default());
            assert!(is_queued(
                &d.ip_defrag(Instant::ZERO, frag(&pool, 1, a.0, a.1, a.2))
            ));
            let o = d.ip_defrag(Instant::ZERO, frag(&pool, 1, b.0, b.1, b.2));
            assert!(is_dropped(&o), "case {i}");
            assert_eq!(d.stats.reasm_fails, 1, "case {i}");
            assert_eq!(d.stats.reasm_overlaps, 0, "case {i}");
            assert_eq!((d.queues(), d.mem()), (0, 0), "case {i}");
        }
    }

    #[test]
    fn malformed_fragments_drop_the_datagram() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        // A non-last fragment of 12 bytes kills the queue it belongs to.
        assert!(is_queued(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 1, 16, 8, true))
        ));
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 1, 0, 12, true))
        ));
        assert_eq!((d.queues(), d.stats.reasm_fails), (0, 1));
        // Past 65535: offset 65528 + 8 bytes + 20 of header.
        assert!(is_queued(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 2, 0, 8, true))
        ));
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 2, 65528, 8, false))
        ));
        assert_eq!((d.queues(), d.stats.reasm_fails), (0, 2));
        // 65515 is the last payload byte a 20-byte header allows.
        assert!(is_queued(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 3, 65512, 3, false))
        ));
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 4, 65512, 4, false))
        ));
        // Empty fragment.
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 5, 8, 0, true))
        ));
        // Garbage.
        for bad in [&[0x45u8, 0, 0][..], &[0x65; 28][..], &[0x45, 0, 0, 10][..]] {
            let skb = pool.from_slice(MAX_HEADER, bad);
            assert!(is_dropped(&d.ip_defrag(Instant::ZERO, skb)));
        }
        assert_eq!(d.stats.reasm_fails, 7);
        assert_eq!(d.stats.reasm_reqds, 10);
        assert_eq!(d.queues(), 1);
    }

    #[test]
    fn first_fragment_options_can_make_it_oversized() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        // Every fragment fits alone, but a 60-byte first header plus 65512 payload bytes
        // is 65572.
        let mut first = repr(1, 0, 8000, true);
        first.options = Ipv4Options::new(&[1; 40]).unwrap();
        let payload = vec![0u8; 8000];
        let mut frags = vec![skb_of(&pool, &first, &payload)];
        for k in 1..8 {
            frags.push(frag(&pool, 1, k * 8000, 8000, true));
        }
        frags.push(frag(&pool, 1, 64000, 1512, false));
        let mut outs = feed(&mut d, frags);
        assert!(is_dropped(&outs.pop().unwrap()));
        assert!(outs.iter().all(is_queued));
        assert_eq!((d.stats.reasm_fails, d.stats.reasm_oks), (1, 0));
        assert_eq!((d.queues(), d.mem()), (0, 0));
    }

    #[test]
    fn largest_datagram_reassembles() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        let whole = datagram(&pool, &repr(77, 0, 65515, false), 3);
        let mut frags = fragments(&pool, &whole, 9000);
        frags.reverse();
        let got = reassemble(&mut d, frags);
        assert_eq!(got.data(), whole.data());
        // The worst case for the queue: 1365 fragments of 48 bytes through a 68-byte
        // MTU, interleaved from both ends.
        let frags = fragments(&pool, &whole, 68);
        assert_eq!(frags.len(), 1365);
        let (mut lo, mut hi): (Vec<_>, Vec<_>) =
            frags.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        hi.reverse();
        lo.append(&mut hi);
        let mut d = Defrag::new(DefragParms::default());
        let got = reassemble(&mut d, lo.into_iter().map(|(_, f)| f).collect());
        assert_eq!(got.data(), whole.data());
    }

    #[test]
    fn ecn_and_df_follow_linux() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        let with_tos = |offset: u16, len: usize, mf: bool, tos: u8| {
            let mut r = repr(3, offset, len, mf);
            r.tos = tos;
            skb_of(&pool, &r, &vec![0; len])
        };
        // ECT(0) + CE: the datagram is CE.
        d.ip_defrag(Instant::ZERO, with_tos(0, 8, true, 0x02));
        let got = complete(d.ip_defrag(Instant::ZERO, with_tos(8, 8, false, 0x03)));
        assert_eq!(Ipv4Packet::new_checked(got.data()).unwrap().ecn(), 3);
        // Not-ECT + ECT(0): invalid, dropped.
        d.ip_defrag(Instant::ZERO, with_tos(0, 8, true, 0x00));
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, with_tos(8, 8, false, 0x02))
        ));
        assert_eq!(d.stats.reasm_fails, 1);
        // DF on the largest fragment survives reassembly.
        let mut r = repr(4, 0, 16, true);
        r.dont_frag = true;
        d.ip_defrag(Instant::ZERO, skb_of(&pool, &r, &[0; 16]));
        let got = complete(d.ip_defrag(Instant::ZERO, frag(&pool, 4, 16, 8, false)));
        assert!(Ipv4Packet::new_checked(got.data()).unwrap().dont_frag());
    }

    #[test]
    fn timeout_hands_back_fragment_zero_only_if_it_came() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms::default());
        assert_eq!(d.poll_timeout(), None);
        let t0 = Instant::ZERO;
        assert!(is_queued(&d.ip_defrag(t0, frag(&pool, 1, 0, 16, true))));
        // A later fragment does not extend the queue's life.
        assert!(is_queued(
            &d.ip_defrag(Instant::from_secs(20), frag(&pool, 1, 32, 8, true))
        ));
        // The second datagram never gets fragment zero.
        assert!(is_queued(
            &d.ip_defrag(Instant::from_secs(1), frag(&pool, 2, 16, 8, false))
        ));
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(30)));
        let mut expired = Vec::new();
        d.on_timer(Instant::from_micros(29_999_999), &mut expired);
        assert!(expired.is_empty());
        assert_eq!(d.queues(), 2);

        d.on_timer(Instant::from_secs(30), &mut expired);
        assert_eq!(expired.len(), 1);
        let ip = Ipv4Packet::new_checked(expired[0].data()).unwrap();
        assert_eq!(
            (ip.ident(), ip.frag_offset(), ip.more_frags()),
            (1, 0, true)
        );
        assert_eq!(
            expired[0].network_header_offset(),
            Some(expired[0].data_offset())
        );
        assert_eq!((d.stats.reasm_timeout, d.stats.reasm_fails), (1, 1));
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(31)));

        d.on_timer(Instant::from_secs(31), &mut expired);
        assert_eq!(expired.len(), 1, "no fragment zero, no ICMP");
        assert_eq!((d.stats.reasm_timeout, d.stats.reasm_fails), (2, 2));
        assert_eq!((d.queues(), d.mem(), d.poll_timeout()), (0, 0, None));

        // The key is free again: a late fragment opens a new queue.
        assert!(is_queued(&d.ip_defrag(
            Instant::from_secs(40),
            frag(&pool, 1, 16, 16, true)
        )));
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(70)));
    }

    #[test]
    fn ten_thousand_stray_fragments_stay_under_the_limit() {
        let pool = SkbPool::default();
        let parms = DefragParms::default();
        let (high, low) = (parms.high_thresh, parms.low_thresh);
        let mut d = Defrag::new(parms);
        let mut now = Instant::ZERO;
        // Datagram i/2 gets its first and last fragment, never the middle one.
        for i in 0..10_000u16 {
            let id = i / 2;
            let f = if i % 2 == 0 {
                frag(&pool, id, 0, 1480, true)
            } else {
                frag(&pool, id, 2960, 40, false)
            };
            let before = d.mem();
            let o = d.ip_defrag(now, f);
            assert!(is_queued(&o), "{i}: {o:?}");
            assert!(d.mem() <= high, "{i}: {} > {high}", d.mem());
            if d.mem() < before {
                assert!(d.mem() <= low, "eviction goes down to the low mark");
            }
            now += Duration::from_millis(1);
        }
        assert!(d.stats.evictions > 0);
        assert_eq!(d.stats.reasm_fails, d.stats.evictions);
        assert_eq!(d.mem(), d.queues() * 2 * 2048);
        // Oldest went first: the newest datagram is whole once its middle arrives, the
        // first one starts over.
        let o = d.ip_defrag(now, frag(&pool, 4999, 1480, 1480, true));
        assert_eq!(complete(o).len(), 3020);
        assert!(is_queued(
            &d.ip_defrag(now, frag(&pool, 0, 1480, 1480, true))
        ));
        assert!(d.mem() <= high);
    }

    #[test]
    fn a_fragment_over_the_limit_is_dropped() {
        let pool = SkbPool::default();
        let mut d = Defrag::new(DefragParms {
            high_thresh: 1000,
            low_thresh: 500,
            timeout: Duration::from_secs(30),
        });
        assert!(is_dropped(
            &d.ip_defrag(Instant::ZERO, frag(&pool, 1, 0, 8, true))
        ));
        assert_eq!((d.stats.reasm_fails, d.queues(), d.mem()), (1, 0, 0));
        // Small, unpooled skbs are charged their own size and fit.
        let tiny = |offset, mf| {
            let mut v = vec![0u8; 20];
            repr(2, offset, 8, mf).emit(&mut v);
            v.extend_from_slice(&[1; 8]);
            Skb::from_vec(v)
        };
        assert!(is_queued(&d.ip_defrag(Instant::ZERO, tiny(0, true))));
        assert_eq!(d.mem(), 28);
        let got = complete(d.ip_defrag(Instant::ZERO, tiny(8, false)));
        assert_eq!(got.len(), 36);
        assert!(got.headroom() >= 64);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// fragment -> shuffle (with duplicates) -> defrag gives the original bytes.
        #[test]
        fn fragment_shuffle_defrag_round_trip(
            len in 0usize..=65507,
            mtu in 68usize..=9000,
            seed in any::<u64>(),
        ) {
            let pool = SkbPool::default();
            // A UDP-sized datagram: 20 + 8 + len <= 65535.
            let whole = datagram(&pool, &repr(seed as u16, 0, 8 + len, false), seed);
            let mut frags = fragments(&pool, &whole, mtu);
            let mut rng = Rng::new(seed);
            let n = frags.len();
            // A datagram that fit is not a fragment: each copy would complete alone.
            for i in 0..n {
                if n > 1 && rng.range(0, 8) == 0 {
                    let dup = frags[i].clone();
                    frags.push(dup);
                }
            }
            for i in (1..frags.len()).rev() {
                let j = rng.range(0, i as u64 + 1) as usize;
                frags.swap(i, j);
            }
            let mut d = Defrag::new(DefragParms::default());
            let mut done = Vec::new();
            for f in frags {
                match d.ip_defrag(Instant::ZERO, f) {
                    DefragOutcome::Complete(skb) => done.push(skb),
                    DefragOutcome::Queued | DefragOutcome::Dropped => {}
                }
                prop_assert!(d.mem() <= d.parms().high_thresh);
            }
            // A duplicate arriving after completion starts a new queue; that one
            // completes again only if every fragment was duplicated (as in the kernel:
            // a finished queue is forgotten), and then with the same bytes.
            prop_assert!(!done.is_empty());
            for skb in &done {
                prop_assert_eq!(skb.data(), whole.data());
            }
            prop_assert_eq!(d.stats.reasm_fails, 0);
            prop_assert_eq!(d.stats.reasm_overlaps, 0);
        }
    }
}
