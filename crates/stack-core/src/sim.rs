//! Stacks on simulated Ethernet links in virtual time: [`Pair`], two hosts on one
//! impaired link (quinn's `Pair` test pattern), and [`Net`], any number of stacks
//! (hosts, routers) on clean point-to-point links or shared segments, with per-link
//! capture.
//!
//! ```text
//!   a.poll_transmit ──► link.a_to_b (Impairment) ──► b.netif_receive_skb
//!   a.netif_receive_skb ◄── link.b_to_a (Impairment) ◄── b.poll_transmit
//!   a/b.poll_timeout ──► handle_timeout
//! ```
//!
//! [`Pair::step`] does everything due at `now`, then moves `now` to the next event: a
//! frame due out of the link or a stack timer. Nothing sleeps, so a minute of protocol
//! time costs only the events in it, and a run replays exactly: the stacks and the link
//! draw randomness only from fixed seeds.
//!
//! The link is a wire with a bottleneck queue, not the sender's qdisc: a frame taken off
//! a TX ring leaves its socket's send-buffer accounting at once (`skb_orphan`, as at TX
//! completion), so a delay on the link does not hold the sender's `sk_wmem_alloc`. With a
//! `rate`, the link queue is the bottleneck router's drop-tail buffer of `limit` frames.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use crate::dev::DeviceId;
use crate::gso;
use crate::impair::{ImpairConfig, Impairment};
use crate::skb::Skb;
use crate::stack::{Offloads, Stack, StackConfig};
use crate::time::{Duration, Instant};

/// Address of [`Pair::a`].
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Address of [`Pair::b`].
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Seeds of the two stacks of [`Pair::new`].
pub const A_SEED: u64 = 0xa11ce;
pub const B_SEED: u64 = 0xb0b;

/// Rounds of "transmit, deliver, run timers" one [`Pair::step`] does at one instant
/// before it returns to its caller. Each round moves every frame that is ready, so a
/// round is one exchange of flights; a clean zero-delay link can carry a whole transfer
/// at one instant, and this only bounds how long one call runs.
pub const MAX_ROUNDS_PER_STEP: usize = 10_000;

/// Consecutive capped steps at one instant after which the run loops give up: ten
/// million rounds without time moving is two stacks answering each other forever.
const LIVELOCK_STEPS: usize = 1_000;

/// Salt for the b->a direction's seed, so two configs with the same seed (the default
/// 0) still impair the two directions independently: with one shared stream, a lost
/// request would always mean a lost reply.
const B_TO_A_SALT: u64 = 0x5eed_b2a0_5eed_b2a0;

/// The medium between two stacks: one impairment per direction. A default
/// [`ImpairConfig`] is a clean wire with no delay.
#[derive(Debug)]
pub struct Link {
    pub a_to_b: Impairment,
    pub b_to_a: Impairment,
}

impl Link {
    /// A link impaired per direction. The b->a seed is xored with a salt (see
    /// `B_TO_A_SALT`), visible in `b_to_a.config().seed`.
    pub fn new(a_to_b: ImpairConfig, b_to_a: ImpairConfig) -> Link {
        let b_to_a = ImpairConfig {
            seed: b_to_a.seed ^ B_TO_A_SALT,
            ..b_to_a
        };
        Link {
            a_to_b: Impairment::new(a_to_b),
            b_to_a: Impairment::new(b_to_a),
        }
    }

    /// A clean link both ways.
    pub fn clean() -> Link {
        Link::new(ImpairConfig::default(), ImpairConfig::default())
    }

    /// Frames on the wire, both directions.
    pub fn in_flight(&self) -> usize {
        self.a_to_b.queued() + self.b_to_a.queued()
    }

    /// When the next frame comes out of either direction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.a_to_b.poll_timeout(), self.b_to_a.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What one step did, for the run loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Nothing pending anywhere.
    Idle,
    /// `now` moved to the next event, at or before the limit.
    Advanced,
    /// The next event is after the limit; `now` is at the limit.
    Limited,
    /// Still work at `now` after [`MAX_ROUNDS_PER_STEP`] rounds.
    Busy,
}

/// The run loops of [`Pair`] and [`Net`]: each says what one round at `now` is and when
/// its next event is due; stepping, settling, the run loops and the livelock check are
/// the same for both.
trait Stepper {
    /// Virtual time (the `now` field).
    fn now(&self) -> Instant;

    /// The `now` field, for the provided methods to move it (only by [`Stepper::move_to`]).
    fn now_mut(&mut self) -> &mut Instant;

    /// One round at `now`: TX rings onto the wires, due frames off them, due timers.
    /// Returns whether anything happened (replies it caused go out next round).
    fn round(&mut self) -> bool;

    /// The earliest pending event: a frame to send (now), a frame due, a timer.
    fn next_event(&self) -> Option<Instant>;

    /// Move `now` to `t`, never backwards.
    fn move_to(&mut self, t: Instant) {
        let now = self.now_mut();
        *now = (*now).max(t);
    }

    /// Do what is due at `now`, move to the next event but not past `limit`, and do that
    /// too; false when nothing is pending anywhere.
    fn step(&mut self, limit: Instant) -> bool {
        self.step_inner(limit) != Progress::Idle
    }

    /// Step until idle (true) or until `deadline` (false).
    fn run_until_idle(&mut self, deadline: Instant) -> bool {
        let mut busy = 0;
        loop {
            match self.step_inner(deadline) {
                Progress::Idle => return true,
                Progress::Limited => return false,
                Progress::Advanced => busy = 0,
                Progress::Busy => self.check_livelock(&mut busy),
            }
        }
    }

    /// Step until `cond(self)` holds (checked first and after every instant's events)
    /// or `deadline` passes, leaving `now` at `deadline`; returns whether it held.
    fn run_until(&mut self, deadline: Instant, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let mut busy = 0;
        loop {
            if cond(self) {
                return true;
            }
            match self.step_inner(deadline) {
                Progress::Limited => return cond(self),
                Progress::Idle => {
                    self.move_to(deadline);
                    return cond(self);
                }
                Progress::Advanced => busy = 0,
                Progress::Busy => self.check_livelock(&mut busy),
            }
        }
    }

    /// Jump `d` ahead, running everything due on the way and at the end.
    fn advance(&mut self, d: Duration) {
        let target = self.now() + d;
        let mut busy = 0;
        loop {
            match self.step_inner(target) {
                Progress::Idle | Progress::Limited => break,
                Progress::Advanced => busy = 0,
                Progress::Busy => self.check_livelock(&mut busy),
            }
        }
        self.move_to(target);
    }

    /// Everything due at `now`, until nothing more happens, without moving time.
    fn settle_now(&mut self) {
        let mut busy = 0;
        while !self.settle() {
            self.check_livelock(&mut busy);
        }
    }

    /// Count one capped step at `now` in `busy`; panics after [`LIVELOCK_STEPS`].
    fn check_livelock(&self, busy: &mut usize) {
        *busy += 1;
        assert!(
            *busy < LIVELOCK_STEPS,
            "sim: still busy at {:?} after {} rounds without time moving: \
             the stacks are answering each other forever",
            self.now(),
            LIVELOCK_STEPS * MAX_ROUNDS_PER_STEP
        );
    }

    /// Settle `now`, move to the next event (within `limit`) and settle that. Between
    /// steps the stacks are always settled: nothing is due at or before `now`, so what a
    /// caller sees after a step is the state at `now`.
    fn step_inner(&mut self, limit: Instant) -> Progress {
        // What the caller did since the last step (a send at `now`) goes first.
        if !self.settle() {
            return Progress::Busy;
        }
        match self.next_event() {
            None => Progress::Idle,
            Some(t) if t > limit => {
                self.move_to(limit);
                Progress::Limited
            }
            Some(t) => {
                self.move_to(t);
                if self.settle() {
                    Progress::Advanced
                } else {
                    Progress::Busy
                }
            }
        }
    }

    /// Rounds at `now` until nothing more happens; false if [`MAX_ROUNDS_PER_STEP`]
    /// rounds were not enough.
    fn settle(&mut self) -> bool {
        for _ in 0..MAX_ROUNDS_PER_STEP {
            if !self.round() {
                return true;
            }
        }
        false
    }
}

/// Two hosts joined by a [`Link`], driven in virtual time.
#[derive(Debug)]
pub struct Pair {
    pub a: Stack,
    pub b: Stack,
    pub link: Link,
    /// Virtual time; only the run methods move it, never backwards.
    pub now: Instant,
}

impl Pair {
    /// Two hosts 192.0.2.1/24 ([`Pair::a`]) and 192.0.2.2/24 ([`Pair::b`]), MACs from
    /// [`StackConfig::default_mac`], fixed seeds, starting at time zero, the link
    /// impaired per direction.
    pub fn new(a_to_b: ImpairConfig, b_to_a: ImpairConfig) -> Pair {
        Pair::with_offloads(a_to_b, b_to_a, Offloads::default())
    }

    /// As [`Pair::new`], both devices with `offloads`: the stacks send TSO super-packets
    /// and partial checksums, and the link does what a device without them would do
    /// before the wire ([`crate::gso::skb_gso_segment`]), so each side still receives
    /// ordinary, fully checksummed segments.
    pub fn with_offloads(a_to_b: ImpairConfig, b_to_a: ImpairConfig, offloads: Offloads) -> Pair {
        let host = |addr, seed| {
            let mut cfg = StackConfig::new(StackConfig::default_mac(addr), addr, 24);
            cfg.offloads = offloads;
            Stack::new(cfg, Instant::ZERO, seed)
        };
        Pair::from_parts(
            host(A_ADDR, A_SEED),
            host(B_ADDR, B_SEED),
            Link::new(a_to_b, b_to_a),
            Instant::ZERO,
        )
    }

    /// Any two stacks (other addresses, MTUs, seeds) on any link, starting at `now`.
    pub fn from_parts(a: Stack, b: Stack, link: Link, now: Instant) -> Pair {
        Pair { a, b, link, now }
    }

    /// Frames waiting anywhere: on either TX queue or on the wire.
    pub fn in_flight(&self) -> usize {
        self.a.tx_pending() + self.b.tx_pending() + self.link.in_flight()
    }

    /// Move every frame each side has to send into the link, deliver what is due, run
    /// due timers; advance `now` to the next event (frame due or stack timeout) but never
    /// past `limit`, and run that event too, so the stacks are seen as they are at `now`.
    /// Returns false when nothing is pending anywhere (idle).
    ///
    /// A stack's timers count as pending: a stack with neighbour entries always has a
    /// garbage-collection timer, so it is idle only once they are collected. To wait for
    /// the wire to empty instead, use `run_until(deadline, |p| p.in_flight() == 0)`.
    pub fn step(&mut self, limit: Instant) -> bool {
        Stepper::step(self, limit)
    }

    /// Step until idle or until `deadline` (virtual), returning whether it went idle.
    ///
    /// # Panics
    /// If the stacks keep exchanging frames without time moving (a livelock).
    pub fn run_until_idle(&mut self, deadline: Instant) -> bool {
        Stepper::run_until_idle(self, deadline)
    }

    /// Step until `cond(self)` is true or `deadline` passes; returns whether `cond` held.
    /// `cond` is checked before the first step and after every instant's events. When it
    /// does not hold, `now` ends at `deadline` (quiet time passes too).
    ///
    /// # Panics
    /// If the stacks keep exchanging frames without time moving (a livelock).
    pub fn run_until(&mut self, deadline: Instant, cond: impl FnMut(&mut Pair) -> bool) -> bool {
        Stepper::run_until(self, deadline, cond)
    }

    /// Jump `d` ahead, running everything due on the way (and at the end).
    ///
    /// # Panics
    /// If the stacks keep exchanging frames without time moving (a livelock).
    pub fn advance(&mut self, d: Duration) {
        Stepper::advance(self, d)
    }
}

impl Stepper for Pair {
    fn now(&self) -> Instant {
        self.now
    }

    fn now_mut(&mut self) -> &mut Instant {
        &mut self.now
    }

    /// One round at `now`: TX rings onto the wire, due frames off it, due timers.
    /// Returns whether anything happened (replies it caused go out next round).
    fn round(&mut self) -> bool {
        let now = self.now;
        let mut work = false;
        let mut frames = Vec::new();
        while let Some((_, skb)) = self.a.poll_transmit(now) {
            gso::validate_xmit(orphan(skb), self.a.pool(), &mut frames);
            for f in frames.drain(..) {
                self.link.a_to_b.push(now, f);
            }
            work = true;
        }
        while let Some((_, skb)) = self.b.poll_transmit(now) {
            gso::validate_xmit(orphan(skb), self.b.pool(), &mut frames);
            for f in frames.drain(..) {
                self.link.b_to_a.push(now, f);
            }
            work = true;
        }
        while let Some(skb) = self.link.a_to_b.poll(now) {
            self.b.netif_receive_skb(now, DeviceId::ETH0, skb);
            work = true;
        }
        while let Some(skb) = self.link.b_to_a.poll(now) {
            self.a.netif_receive_skb(now, DeviceId::ETH0, skb);
            work = true;
        }
        for stack in [&mut self.a, &mut self.b] {
            if stack.poll_timeout().is_some_and(|t| t <= now) {
                stack.handle_timeout(now);
                work = true;
            }
        }
        work
    }

    /// The earliest pending event: a frame to send (now), a frame due, a timer.
    fn next_event(&self) -> Option<Instant> {
        if self.a.tx_pending() + self.b.tx_pending() > 0 {
            return Some(self.now);
        }
        [
            self.link.poll_timeout(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// `skb_orphan`: free the frame's send-buffer charge as TX completion would. A clone
/// carries no charge, and dropping the original after cloning leaves the clone the only
/// owner of the buffer, so this copies nothing.
fn orphan(skb: Skb) -> Skb {
    if skb.owner_w().is_none() {
        return skb;
    }
    let free = skb.clone();
    drop(skb);
    free
}

/// One end of a link in a [`Net`]: a stack (its index in [`Net::stacks`]) and one of
/// its devices.
pub type Port = (usize, DeviceId);

/// A link of a [`Net`], in the order they were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(pub usize);

/// Frames a link's capture keeps until read; past this, new frames are counted in
/// [`Net::capture_drops`] instead (every queue is bounded).
pub const CAPTURE_MAX: usize = 65_536;

/// One frame a link carried, as the receiving port got it.
#[derive(Clone, Debug)]
pub struct Captured {
    /// When it was delivered.
    pub at: Instant,
    /// Who sent it; `None` for a frame a test [`Net::inject`]ed.
    pub from: Option<Port>,
    pub to: Port,
    /// The frame (`data` at the Ethernet header), with the sender's `gso_size` and
    /// `ip_summed`: a super-packet crossing a TSO-to-TSO link is seen whole.
    pub frame: Skb,
}

/// A wire between two or more ports: point-to-point ([`Net::link`]) or a shared
/// segment, a hub, where every frame reaches every other port ([`Net::segment`]).
#[derive(Debug)]
struct Wire {
    ports: Vec<Port>,
    delay: Duration,
    /// Frames on the wire in sending order: (due, from, to, frame). One delay per wire
    /// keeps the queue sorted by due time.
    frames: VecDeque<(Instant, Option<Port>, Port, Skb)>,
    capture: Option<VecDeque<Captured>>,
    capture_drops: u64,
}

/// Several stacks joined by links, in virtual time: hosts and routers, each device on
/// at most one link. Frames cross a link after its delay (zero by default) and are
/// handed to the receiving device with `netif_receive_skb`.
///
/// A link stands for a wire between two NICs. A frame is made wire-ready
/// ([`gso::validate_xmit`]) only if the receiving device could not take it as it is: a
/// super-packet for a device without TSO, a partial checksum for one without checksum
/// offload. Between two devices with offloads (a veth or virtio pair) super-packets
/// cross whole, as in Linux, and a test can see them in the link's capture.
///
/// ```text
///   stacks[i].poll_transmit ─(i, dev)─► link ─► validate_xmit if the far device needs it
///        ─► (capture) ─► stacks[j].netif_receive_skb(now, dev', frame)
/// ```
#[derive(Debug)]
pub struct Net {
    pub stacks: Vec<Stack>,
    /// Virtual time; only the run methods move it, never backwards.
    pub now: Instant,
    wires: Vec<Wire>,
    port_wire: HashMap<Port, usize>,
    /// Frames sent by a device that is on no link (a cable not plugged in).
    pub unlinked_drops: u64,
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Net {
    /// No stacks, no links, time zero.
    pub fn new() -> Net {
        Net {
            stacks: Vec::new(),
            now: Instant::ZERO,
            wires: Vec::new(),
            port_wire: HashMap::new(),
            unlinked_drops: 0,
        }
    }

    /// Add a stack; returns its index in [`Net::stacks`].
    pub fn add(&mut self, stack: Stack) -> usize {
        self.stacks.push(stack);
        self.stacks.len() - 1
    }

    /// A point-to-point link between two ports.
    ///
    /// # Panics
    /// If a port is already on a link or names a device its stack does not have.
    pub fn link(&mut self, a: Port, b: Port) -> LinkId {
        self.segment(&[a, b])
    }

    /// A shared segment (a hub): every frame one port sends reaches all the others.
    ///
    /// # Panics
    /// As [`Net::link`], or with fewer than two ports.
    pub fn segment(&mut self, ports: &[Port]) -> LinkId {
        assert!(ports.len() >= 2, "a link needs two ends");
        let id = self.wires.len();
        for &p in ports {
            assert!(
                self.stacks
                    .get(p.0)
                    .is_some_and(|s| s.devices().get(p.1).is_some()),
                "no device {:?} on stack {}",
                p.1,
                p.0
            );
            assert!(
                self.port_wire.insert(p, id).is_none(),
                "port {p:?} is already linked"
            );
        }
        self.wires.push(Wire {
            ports: ports.to_vec(),
            delay: Duration::ZERO,
            frames: VecDeque::new(),
            capture: None,
            capture_drops: 0,
        });
        LinkId(id)
    }

    /// How long a frame takes to cross `link` (one way).
    pub fn set_delay(&mut self, link: LinkId, delay: Duration) {
        self.wires[link.0].delay = delay;
    }

    /// Start keeping a copy of every frame `link` delivers (up to [`CAPTURE_MAX`]).
    pub fn capture(&mut self, link: LinkId) {
        self.wires[link.0].capture.get_or_insert_with(VecDeque::new);
    }

    /// The frames `link` delivered since the last call, in delivery order.
    pub fn captured(&mut self, link: LinkId) -> Vec<Captured> {
        self.wires[link.0]
            .capture
            .as_mut()
            .map(|c| c.drain(..).collect())
            .unwrap_or_default()
    }

    /// Frames `link`'s capture had no room for.
    pub fn capture_drops(&self, link: LinkId) -> u64 {
        self.wires[link.0].capture_drops
    }

    /// Put `frame` (`data` at the Ethernet header) on the wire towards `to`, as if a
    /// host the test plays had sent it now; it arrives after the link's delay.
    ///
    /// # Panics
    /// If `to` is on no link.
    pub fn inject(&mut self, to: Port, frame: Skb) {
        let w = *self.port_wire.get(&to).expect("inject: port on no link");
        let wire = &mut self.wires[w];
        wire.frames
            .push_back((self.now + wire.delay, None, to, wire_frame(frame)));
    }

    /// Frames waiting anywhere: on a TX queue or on a wire.
    pub fn in_flight(&self) -> usize {
        self.stacks.iter().map(Stack::tx_pending).sum::<usize>()
            + self.wires.iter().map(|w| w.frames.len()).sum::<usize>()
    }

    /// Everything due at `now`, until nothing more happens, without moving time.
    ///
    /// # Panics
    /// If the stacks keep exchanging frames without end at this instant (a livelock).
    pub fn settle_now(&mut self) {
        Stepper::settle_now(self)
    }

    /// Do what is due at `now`, then move to the next event (a frame due, a stack timer)
    /// but not past `limit`, and do that. Returns false when nothing is pending.
    pub fn step(&mut self, limit: Instant) -> bool {
        Stepper::step(self, limit)
    }

    /// Step until idle or `deadline`; returns whether it went idle. Stacks with
    /// neighbour entries keep a garbage-collection timer: prefer [`Net::run_until`].
    ///
    /// # Panics
    /// On a livelock, as [`Net::settle_now`].
    pub fn run_until_idle(&mut self, deadline: Instant) -> bool {
        Stepper::run_until_idle(self, deadline)
    }

    /// Step until `cond(self)` holds or `deadline` passes; returns whether it held.
    /// When it does not, `now` ends at `deadline`.
    ///
    /// # Panics
    /// On a livelock, as [`Net::settle_now`].
    pub fn run_until(&mut self, deadline: Instant, cond: impl FnMut(&mut Net) -> bool) -> bool {
        Stepper::run_until(self, deadline, cond)
    }

    /// Jump `d` ahead, running everything due on the way and at the end.
    ///
    /// # Panics
    /// On a livelock, as [`Net::settle_now`].
    pub fn advance(&mut self, d: Duration) {
        Stepper::advance(self, d)
    }
}

impl Stepper for Net {
    fn now(&self) -> Instant {
        self.now
    }

    fn now_mut(&mut self) -> &mut Instant {
        &mut self.now
    }

    /// One round at `now`: TX rings onto the wires, due frames off them, due timers.
    fn round(&mut self) -> bool {
        let now = self.now;
        let mut work = false;
        for i in 0..self.stacks.len() {
            while let Some((dev, skb)) = self.stacks[i].poll_transmit(now) {
                work = true;
                let from = (i, dev);
                let Some(&w) = self.port_wire.get(&from) else {
                    self.unlinked_drops += 1;
                    continue;
                };
                let skb = orphan(skb);
                let wire = &mut self.wires[w];
                for &to in &wire.ports {
                    if to == from {
                        continue;
                    }
                    let rx = self.stacks[to.0].device(to.1).offloads;
                    let partial = matches!(skb.ip_summed, crate::skb::IpSummed::Partial { .. });
                    let mut frames = Vec::new();
                    if (skb.gso_size > 0 && !rx.tso) || (partial && !rx.csum) {
                        gso::validate_xmit(skb.clone(), self.stacks[i].pool(), &mut frames);
                    } else {
                        frames.push(skb.clone());
                    }
                    let due = now + wire.delay;
                    for f in frames {
                        wire.frames.push_back((due, Some(from), to, wire_frame(f)));
                    }
                }
            }
        }
        for wire in &mut self.wires {
            while wire.frames.front().is_some_and(|f| f.0 <= now) {
                let Some((_, from, to, frame)) = wire.frames.pop_front() else {
                    break;
                };
                if let Some(c) = &mut wire.capture {
                    if c.len() < CAPTURE_MAX {
                        c.push_back(Captured {
                            at: now,
                            from,
                            to,
                            frame: frame.clone(),
                        });
                    } else {
                        wire.capture_drops += 1;
                    }
                }
                self.stacks[to.0].netif_receive_skb(now, to.1, frame);
                work = true;
            }
        }
        for stack in &mut self.stacks {
            if stack.poll_timeout().is_some_and(|t| t <= now) {
                stack.handle_timeout(now);
                work = true;
            }
        }
        work
    }

    fn next_event(&self) -> Option<Instant> {
        if self.stacks.iter().any(|s| s.tx_pending() > 0) {
            return Some(self.now);
        }
        self.wires
            .iter()
            .filter_map(|w| w.frames.front().map(|f| f.0))
            .chain(self.stacks.iter().filter_map(Stack::poll_timeout))
            .min()
    }
}

/// What a receiving NIC makes of a frame: the bytes and the offload state (`gso_size`,
/// `ip_summed`, as a virtio-net header carries them), nothing of the sender's own
/// bookkeeping (priority, mark).
fn wire_frame(mut skb: Skb) -> Skb {
    skb.priority = 0;
    skb.mark = 0;
    skb.vlan_tci = None;
    skb
}
