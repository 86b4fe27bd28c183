//! The neighbour table and its NUD state machine (net/core/neighbour.c), with the
//! parameters of Linux's `arp_tbl` defaults. Pure: operations take `now` and return
//! [`NeighAction`]s that the stack carries out (send an ARP probe, transmit a resolved
//! packet, report packets whose resolution failed), so every transition is testable in
//! virtual time.
//!
//! ```text
//!              output                 probe answered
//!   (none) ───────────► INCOMPLETE ─────────────────► REACHABLE ◄──────┐
//!                         │  3 probes, no answer        │ reachable_time│confirmed
//!                         ▼                              ▼ elapsed      │
//!                       FAILED                         STALE ──output──► DELAY
//!                                                                        │ 5 s, not confirmed
//!                               FAILED ◄── 3 unicast probes, no answer ── PROBE
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use crate::dev::DeviceId;
use crate::rand::Rng;
use crate::skb::Skb;
use crate::time::{Duration, Instant};
use crate::wire::MacAddr;

/// Neighbour Unreachability Detection states (include/uapi/linux/neighbour.h NUD_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NudState {
    /// Resolution in progress: probes broadcast, packets queued.
    Incomplete,
    /// Address known and recently confirmed.
    Reachable,
    /// Address known, confirmation too old; used as is until sent to.
    Stale,
    /// Sent to while stale: waiting a little for an upper-layer confirmation.
    Delay,
    /// Unicast probing a stale address.
    Probe,
    /// Resolution failed.
    Failed,
}

impl NudState {
    /// NUD_VALID: a link-layer address can be used.
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            NudState::Reachable | NudState::Stale | NudState::Delay | NudState::Probe
        )
    }
}

/// Table parameters, defaults as Linux's `arp_tbl` (net/ipv4/arp.c) and sysctls.
#[derive(Clone, Debug)]
pub struct NeighParms {
    pub base_reachable_time: Duration,
    pub retrans_time: Duration,
    pub delay_first_probe_time: Duration,
    /// Broadcast probes before INCOMPLETE fails.
    pub mcast_probes: u32,
    /// Unicast probes before PROBE fails.
    pub ucast_probes: u32,
    /// Packets queued per unresolved neighbour (`unres_qlen`).
    pub unres_qlen: usize,
    /// Unused STALE/FAILED entries older than this are collected.
    pub gc_stale_time: Duration,
    pub gc_interval: Duration,
    /// Hard limit on entries (`gc_thresh3`).
    pub gc_thresh3: usize,
}

impl Default for NeighParms {
    fn default() -> Self {
        NeighParms {
            base_reachable_time: Duration::from_secs(30),
            retrans_time: Duration::from_secs(1),
            delay_first_probe_time: Duration::from_secs(5),
            mcast_probes: 3,
            ucast_probes: 3,
            unres_qlen: 101,
            gc_stale_time: Duration::from_secs(60),
            gc_interval: Duration::from_secs(30),
            gc_thresh3: 1024,
        }
    }
}

/// What the stack must do after a neighbour operation.
#[derive(Debug)]
pub enum NeighAction {
    /// Send an ARP request for `target` out of `dev`: broadcast when `dst` is `None`,
    /// unicast otherwise (`arp_solicit`).
    Solicit {
        dev: DeviceId,
        target: Ipv4Addr,
        dst: Option<MacAddr>,
    },
    /// Transmit `skb` (`data` at the network header) to `mac` out of `dev`.
    Xmit {
        dev: DeviceId,
        skb: Skb,
        mac: MacAddr,
    },
    /// Resolution of `target` on `dev` failed: these packets are dropped and their
    /// senders told (`neigh_invalidate` -> `arp_error_report`).
    Unreachable {
        dev: DeviceId,
        target: Ipv4Addr,
        skb: Skb,
    },
}

#[derive(Debug)]
struct Neighbour {
    state: NudState,
    lladdr: Option<MacAddr>,
    /// Last time reachability was confirmed.
    confirmed: Instant,
    /// Last state or address change.
    updated: Instant,
    /// Last time a packet was sent through the entry.
    used: Instant,
    probes: u32,
    timer: Option<Instant>,
    arp_queue: VecDeque<Skb>,
}

/// Counters the table keeps (copied into [`crate::snmp::ArpMib`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighStats {
    pub res_failed: u64,
    pub unresolved_discards: u64,
    pub unres_qlen_max: u64,
    pub table_fulls: u64,
}

/// The ARP neighbour table (`arp_tbl`): one table for every device, entries keyed by
/// (device, address) as `neigh_lookup(tbl, key, dev)`.
#[derive(Debug)]
pub struct NeighTable {
    parms: NeighParms,
    entries: HashMap<(DeviceId, Ipv4Addr), Neighbour>,
    reachable_time: Duration,
    rng: Rng,
    next_gc: Instant,
    pub stats: NeighStats,
}

impl NeighTable {
    pub fn new(parms: NeighParms, now: Instant, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let reachable_time = rand_reach_time(&mut rng, parms.base_reachable_time);
        NeighTable {
            next_gc: now + parms.gc_interval,
            parms,
            entries: HashMap::new(),
            reachable_time,
            rng,
            stats: NeighStats::default(),
        }
    }

    pub fn parms(&self) -> &NeighParms {
        &self.parms
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// State and address of the entry for `ip` on `dev`, if any (`ip neigh show`).
    pub fn lookup(&self, dev: DeviceId, ip: Ipv4Addr) -> Option<(NudState, Option<MacAddr>)> {
        self.entries.get(&(dev, ip)).map(|n| (n.state, n.lladdr))
    }

    /// Packets waiting for resolution, all entries together.
    pub fn unres_qlen(&self) -> usize {
        self.entries.values().map(|n| n.arp_queue.len()).sum()
    }

    /// Every entry, by device then address, for display.
    pub fn entries(&self) -> Vec<(DeviceId, Ipv4Addr, NudState, Option<MacAddr>)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(&(dev, ip), n)| (dev, ip, n.state, n.lladdr))
            .collect();
        v.sort_by_key(|e| (e.0, u32::from(e.1)));
        v
    }

    /// `ip neigh flush [dev DEV]` (`neigh_flush_dev`): forget every entry (of `dev`);
    /// packets waiting for resolution are dropped and counted. Returns how many went.
    pub fn flush(&mut self, dev: Option<DeviceId>) -> usize {
        let before = self.entries.len();
        let stats = &mut self.stats;
        self.entries.retain(|&(d, _), n| {
            let keep = dev.is_some_and(|want| want != d);
            if !keep {
                stats.unresolved_discards += n.arp_queue.len() as u64;
            }
            keep
        });
        before - self.entries.len()
    }

    /// `neigh_resolve_output`: send `skb` (`data` at the network header) to `nexthop`,
    /// resolving its address first if needed.
    #[tracing::instrument(level = "trace", name = "neigh_resolve_output", skip_all, fields(dev = dev.0, %nexthop))]
    pub fn neigh_resolve_output(
        &mut self,
        now: Instant,
        dev: DeviceId,
        nexthop: Ipv4Addr,
        skb: Skb,
        out: &mut Vec<NeighAction>,
    ) {
        let key = (dev, nexthop);
        if !self.entries.contains_key(&key) && !self.make_room(now) {
            self.stats.table_fulls += 1;
            self.stats.unresolved_discards += 1;
            tracing::trace!(%nexthop, "drop: neighbour table full");
            return;
        }
        let parms = &self.parms;
        let reachable_time = self.reachable_time;
        let n = self.entries.entry(key).or_insert_with(|| Neighbour {
            state: NudState::Failed,
            lladdr: None,
            confirmed: now,
            updated: now,
            used: now,
            probes: 0,
            timer: None,
            arp_queue: VecDeque::new(),
        });
        n.used = now;
        match n.state {
            NudState::Reachable | NudState::Delay | NudState::Probe => {}
            NudState::Stale => {
                // __neigh_event_send: a stale entry is used as is, and probed if nobody
                // confirms it within delay_first_probe_time.
                n.state = NudState::Delay;
                n.updated = now;
                n.timer = Some(now + parms.delay_first_probe_time);
            }
            NudState::Failed => {
                n.state = NudState::Incomplete;
                n.updated = now;
                n.probes = 1;
                n.timer = Some(now + parms.retrans_time);
                out.push(NeighAction::Solicit {
                    dev,
                    target: nexthop,
                    dst: None,
                });
                Self::enqueue(n, parms.unres_qlen, &mut self.stats, skb);
                return;
            }
            NudState::Incomplete => {
                Self::enqueue(n, parms.unres_qlen, &mut self.stats, skb);
                return;
            }
        }
        let _ = reachable_time;
        let mac = n.lladdr.expect("valid neighbour has an address");
        out.push(NeighAction::Xmit { dev, skb, mac });
    }

    fn enqueue(n: &mut Neighbour, limit: usize, stats: &mut NeighStats, skb: Skb) {
        // Linux drops the oldest packet when the queue is full (__neigh_event_send).
        while n.arp_queue.len() >= limit.max(1) {
            n.arp_queue.pop_front();
            stats.unresolved_discards += 1;
        }
        n.arp_queue.push_back(skb);
        stats.unres_qlen_max = stats.unres_qlen_max.max(n.arp_queue.len() as u64);
    }

    /// `neigh_update` from an ARP packet: `ip` is at `mac`.
    ///
    /// `solicited` (an ARP reply unicast to us) confirms reachability; otherwise the entry
    /// becomes STALE if the address changed. `create` allows a new entry (an ARP request
    /// addressed to us, as `neigh_event_ns`); unsolicited information about unknown hosts
    /// is ignored (arp_accept=0).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        now: Instant,
        dev: DeviceId,
        ip: Ipv4Addr,
        mac: MacAddr,
        solicited: bool,
        create: bool,
        out: &mut Vec<NeighAction>,
    ) {
        let key = (dev, ip);
        if !self.entries.contains_key(&key) {
            if !create || !self.make_room(now) {
                return;
            }
            self.entries.insert(
                key,
                Neighbour {
                    state: NudState::Stale,
                    lladdr: Some(mac),
                    confirmed: now,
                    updated: now,
                    used: now,
                    probes: 0,
                    timer: None,
                    arp_queue: VecDeque::new(),
                },
            );
            if !solicited {
                return;
            }
        }
        let reachable_time = self.reachable_time;
        let n = self.entries.get_mut(&key).expect("entry present");
        let changed = n.lladdr != Some(mac);
        if solicited {
            n.state = NudState::Reachable;
            n.confirmed = now;
            n.timer = Some(now + reachable_time);
        } else if changed || !n.state.is_valid() {
            n.state = NudState::Stale;
            n.timer = None;
        }
        if changed || solicited {
            n.updated = now;
        }
        n.lladdr = Some(mac);
        n.probes = 0;
        // The address is known: send what waited for it (neigh_update -> n->output).
        while let Some(skb) = n.arp_queue.pop_front() {
            out.push(NeighAction::Xmit { dev, skb, mac });
        }
    }

    /// When [`NeighTable::on_timer`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.entries.values().filter_map(|n| n.timer);
        let gc = (!self.entries.is_empty()).then_some(self.next_gc);
        timers.chain(gc).min()
    }

    /// `neigh_timer_handler` for every due entry, and the periodic garbage collection.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<NeighAction>) {
        let parms = &self.parms;
        let reachable_time = self.reachable_time;
        let max_incomplete = parms.mcast_probes;
        let max_probe = parms.ucast_probes;
        for (&(dev, ip), n) in self.entries.iter_mut() {
            let Some(due) = n.timer else { continue };
            if due > now {
                continue;
            }
            n.timer = None;
            match n.state {
                NudState::Reachable => {
                    if now < n.confirmed + reachable_time {
                        n.timer = Some(n.confirmed + reachable_time);
                    } else if now < n.used + parms.delay_first_probe_time {
                        n.state = NudState::Delay;
                        n.updated = now;
                        n.timer = Some(now + parms.delay_first_probe_time);
                    } else {
                        n.state = NudState::Stale;
                        n.updated = now;
                    }
                }
                NudState::Delay => {
                    if now < n.confirmed + parms.delay_first_probe_time {
                        n.state = NudState::Reachable;
                        n.updated = now;
                        n.timer = Some(n.confirmed + reachable_time);
                    } else {
                        n.state = NudState::Probe;
                        n.updated = now;
                        n.probes = 1;
                        n.timer = Some(now + parms.retrans_time);
                        out.push(NeighAction::Solicit {
                            dev,
                            target: ip,
                            dst: n.lladdr,
                        });
                    }
                }
                NudState::Incomplete | NudState::Probe => {
                    let max = if n.state == NudState::Incomplete {
                        max_incomplete
                    } else {
                        max_probe
                    };
                    if n.probes >= max {
                        n.state = NudState::Failed;
                        n.updated = now;
                        self.stats.res_failed += 1;
                        tracing::debug!(%ip, "neighbour resolution failed");
                        while let Some(skb) = n.arp_queue.pop_front() {
                            out.push(NeighAction::Unreachable {
                                dev,
                                target: ip,
                                skb,
                            });
                        }
                    } else {
                        n.probes += 1;
                        n.timer = Some(now + parms.retrans_time);
                        let dst = (n.state == NudState::Probe).then_some(n.lladdr).flatten();
                        out.push(NeighAction::Solicit {
                            dev,
                            target: ip,
                            dst,
                        });
                    }
                }
                NudState::Stale | NudState::Failed => {}
            }
        }
        if now >= self.next_gc {
            self.next_gc = now + self.parms.gc_interval;
            self.reachable_time = rand_reach_time(&mut self.rng, self.parms.base_reachable_time);
            let stale = self.parms.gc_stale_time;
            // neigh_periodic_work: forget unused STALE and FAILED entries.
            self.entries.retain(|_, n| {
                !(matches!(n.state, NudState::Stale | NudState::Failed)
                    && now >= n.used + stale
                    && n.arp_queue.is_empty())
            });
        }
    }

    /// Make room for one more entry (`neigh_forced_gc`): at the hard limit, evict the
    /// least recently used FAILED or STALE entry with nothing queued.
    fn make_room(&mut self, _now: Instant) -> bool {
        if self.entries.len() < self.parms.gc_thresh3 {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(_, n)| {
                matches!(n.state, NudState::Failed | NudState::Stale) && n.arp_queue.is_empty()
            })
            .min_by_key(|(_, n)| n.used)
            .map(|(key, _)| *key);
        match victim {
            Some(key) => {
                self.entries.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// `neigh_rand_reach_time`: uniformly in [base/2, 3*base/2), so hosts on a link do not
/// expire their entries in lockstep (RFC 4861 section 6.3.2 uses the same rule).
fn rand_reach_time(rng: &mut Rng, base: Duration) -> Duration {
    let b = base.as_micros() as u64;
    Duration::from_micros(rng.range(b / 2, b + b / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const D: DeviceId = DeviceId(2);

    fn pkt(tag: u8) -> Skb {
        Skb::from_vec(vec![tag])
    }

    fn table() -> NeighTable {
        NeighTable::new(NeighParms::default(), Instant::ZERO, 1)
    }

    fn solicits(out: &[NeighAction]) -> Vec<Option<MacAddr>> {
        out.iter()
            .filter_map(|a| match a {
                NeighAction::Solicit { dst, .. } => Some(*dst),
                _ => None,
            })
            .collect()
    }

    /// Run the timers from `from` to `to` in 100 ms steps.
    fn advance(t: &mut NeighTable, from: Instant, to: Instant, out: &mut Vec<NeighAction>) {
        let mut now = from;
        while now <= to {
            if t.poll_timeout().is_some_and(|d| d <= now) {
                t.on_timer(now, out);
            }
            now += Duration::from_millis(100);
        }
    }

    #[test]
    fn first_packet_is_queued_and_flushed_on_reply() {
        let mut t = table();
        let mut out = Vec::new();
        t.neigh_resolve_output(Instant::ZERO, D, IP, pkt(1), &mut out);
        t.neigh_resolve_output(Instant::from_millis(1), D, IP, pkt(2), &mut out);
        assert_eq!(solicits(&out), vec![None], "one broadcast probe");
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Incomplete);
        assert_eq!(t.unres_qlen(), 2);
        out.clear();
        t.update(Instant::from_millis(3), D, IP, MAC, true, false, &mut out);
        let sent: Vec<u8> = out
            .iter()
            .map(|a| match a {
                NeighAction::Xmit { skb, mac, .. } => {
                    assert_eq!(*mac, MAC);
                    skb.data()[0]
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sent, vec![1, 2], "queued packets leave in order");
        assert_eq!(t.lookup(D, IP), Some((NudState::Reachable, Some(MAC))));
        out.clear();
        t.neigh_resolve_output(Instant::from_millis(4), D, IP, pkt(3), &mut out);
        assert!(matches!(&out[..], [NeighAction::Xmit { .. }]));
    }

    #[test]
    fn incomplete_fails_after_three_probes_and_reports_queued_packets() {
        let mut t = table();
        let mut out = Vec::new();
        t.neigh_resolve_output(Instant::ZERO, D, IP, pkt(7), &mut out);
        advance(&mut t, Instant::ZERO, Instant::from_millis(2900), &mut out);
        assert_eq!(
            solicits(&out),
            vec![None, None, None],
            "probes at 0, 1, 2 s"
        );
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Incomplete);
        out.clear();
        advance(
            &mut t,
            Instant::from_secs(3),
            Instant::from_secs(3),
            &mut out,
        );
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Failed);
        assert_eq!(t.stats.res_failed, 1);
        assert!(matches!(&out[..], [NeighAction::Unreachable { target, .. }] if *target == IP));
        assert_eq!(t.unres_qlen(), 0);
        // Using a failed entry starts a new resolution.
        out.clear();
        t.neigh_resolve_output(Instant::from_secs(4), D, IP, pkt(8), &mut out);
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Incomplete);
        assert_eq!(solicits(&out), vec![None]);
    }

    #[test]
    fn pending_queue_is_bounded_dropping_the_oldest() {
        let mut t = NeighTable::new(
            NeighParms {
                unres_qlen: 3,
                ..NeighParms::default()
            },
            Instant::ZERO,
            1,
        );
        let mut out = Vec::new();
        for i in 0..10 {
            t.neigh_resolve_output(Instant::from_millis(i), D, IP, pkt(i as u8), &mut out);
        }
        assert_eq!(t.unres_qlen(), 3);
        assert_eq!(t.stats.unresolved_discards, 7);
        assert_eq!(t.stats.unres_qlen_max, 3);
        out.clear();
        t.update(Instant::from_millis(20), D, IP, MAC, true, false, &mut out);
        let tags: Vec<u8> = out
            .iter()
            .filter_map(|a| match a {
                NeighAction::Xmit { skb, .. } => Some(skb.data()[0]),
                _ => None,
            })
            .collect();
        assert_eq!(tags, vec![7, 8, 9]);
    }

    #[test]
    fn reachable_stale_delay_probe_failed() {
        let mut t = table();
        let mut out = Vec::new();
        t.neigh_resolve_output(Instant::ZERO, D, IP, pkt(0), &mut out);
        t.update(Instant::ZERO, D, IP, MAC, true, false, &mut out);
        out.clear();
        let rt = t.reachable_time;
        assert!(rt >= Duration::from_secs(15) && rt < Duration::from_secs(45));
        // Unused past reachable_time (and past the used+delay window): STALE.
        let after = Instant::ZERO + rt + Duration::from_secs(6);
        advance(&mut t, Instant::ZERO, after, &mut out);
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Stale);
        assert!(out.is_empty(), "no probes for an idle entry");
        // Sending through a stale entry goes out at once and arms DELAY.
        t.neigh_resolve_output(after, D, IP, pkt(1), &mut out);
        assert!(matches!(&out[..], [NeighAction::Xmit { .. }]));
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Delay);
        out.clear();
        // No confirmation within 5 s: PROBE with unicast probes to the known address.
        advance(&mut t, after, after + Duration::from_millis(5000), &mut out);
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Probe);
        assert_eq!(solicits(&out), vec![Some(MAC)]);
        out.clear();
        advance(
            &mut t,
            after + Duration::from_millis(5100),
            after + Duration::from_millis(8000),
            &mut out,
        );
        assert_eq!(solicits(&out), vec![Some(MAC), Some(MAC)]);
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Failed);
        assert_eq!(t.stats.res_failed, 1);
    }

    #[test]
    fn probe_answered_returns_to_reachable() {
        let mut t = table();
        let mut out = Vec::new();
        t.update(Instant::ZERO, D, IP, MAC, false, true, &mut out);
        assert_eq!(t.lookup(D, IP), Some((NudState::Stale, Some(MAC))));
        t.neigh_resolve_output(Instant::from_secs(1), D, IP, pkt(1), &mut out);
        advance(
            &mut t,
            Instant::from_secs(1),
            Instant::from_secs(6),
            &mut out,
        );
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Probe);
        t.update(
            Instant::from_millis(6200),
            D,
            IP,
            MAC,
            true,
            false,
            &mut out,
        );
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Reachable);
    }

    #[test]
    fn unsolicited_updates_do_not_create_entries_and_stale_on_change() {
        let mut t = table();
        let mut out = Vec::new();
        t.update(Instant::ZERO, D, IP, MAC, false, false, &mut out);
        assert!(
            t.lookup(D, IP).is_none(),
            "arp_accept=0: no entry from gratuitous ARP"
        );
        t.neigh_resolve_output(Instant::ZERO, D, IP, pkt(0), &mut out);
        t.update(Instant::ZERO, D, IP, MAC, true, false, &mut out);
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        t.update(Instant::from_secs(1), D, IP, other, false, false, &mut out);
        assert_eq!(t.lookup(D, IP), Some((NudState::Stale, Some(other))));
    }

    #[test]
    fn table_is_bounded_and_gc_forgets_old_entries() {
        let mut t = NeighTable::new(
            NeighParms {
                gc_thresh3: 4,
                ..NeighParms::default()
            },
            Instant::ZERO,
            1,
        );
        let mut out = Vec::new();
        for i in 0..4u8 {
            t.neigh_resolve_output(
                Instant::ZERO,
                D,
                Ipv4Addr::new(192, 0, 2, 10 + i),
                pkt(i),
                &mut out,
            );
        }
        // All four are INCOMPLETE with queued packets: nothing can be evicted.
        t.neigh_resolve_output(
            Instant::ZERO,
            D,
            Ipv4Addr::new(192, 0, 2, 99),
            pkt(9),
            &mut out,
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.stats.table_fulls, 1);
        // Once they fail, they can be evicted for new entries, and GC removes them.
        advance(&mut t, Instant::ZERO, Instant::from_secs(4), &mut out);
        t.neigh_resolve_output(
            Instant::from_secs(4),
            D,
            Ipv4Addr::new(192, 0, 2, 99),
            pkt(9),
            &mut out,
        );
        assert_eq!(t.len(), 4);
        assert!(t.lookup(D, Ipv4Addr::new(192, 0, 2, 99)).is_some());
        advance(
            &mut t,
            Instant::from_secs(4),
            Instant::from_secs(100),
            &mut out,
        );
        assert!(
            t.len() <= 1,
            "failed entries collected, left {:?}",
            t.entries()
        );
    }

    #[test]
    fn entries_are_per_device_and_flush_drops_what_waits() {
        let mut t = table();
        let mut out = Vec::new();
        let d3 = DeviceId(3);
        t.neigh_resolve_output(Instant::ZERO, D, IP, pkt(1), &mut out);
        t.neigh_resolve_output(Instant::ZERO, d3, IP, pkt(2), &mut out);
        let probes: Vec<DeviceId> = out
            .iter()
            .filter_map(|a| match a {
                NeighAction::Solicit { dev, .. } => Some(*dev),
                _ => None,
            })
            .collect();
        assert_eq!(
            probes,
            vec![D, d3],
            "the same address is resolved on each device"
        );
        out.clear();
        t.update(Instant::ZERO, d3, IP, MAC, true, false, &mut out);
        assert!(matches!(&out[..], [NeighAction::Xmit { dev, .. }] if *dev == d3));
        assert_eq!(t.lookup(D, IP).unwrap().0, NudState::Incomplete);
        assert_eq!(t.lookup(d3, IP).unwrap().0, NudState::Reachable);
        assert_eq!(t.flush(Some(d3)), 1);
        assert!(t.lookup(d3, IP).is_none());
        assert_eq!(t.flush(None), 1);
        assert_eq!(t.stats.unresolved_discards, 1, "the packet queued on D");
        assert!(t.is_empty());
    }
}
