//! A seeded impairment for one direction of a link: our netem (net/sched/sch_netem.c),
//! since this kernel has none.
//!
//! Each frame offered with [`Impairment::push`] goes through netem's stages in netem's
//! order (`netem_enqueue`): loss, duplication, corruption, the queue limit, then a
//! delivery time from the rate, the delay, the jitter and the reorder knob. Frames come
//! out of [`Impairment::poll`] in delivery order once their time has come.
//!
//! Every random choice draws from one SplitMix64 stream seeded by [`ImpairConfig::seed`],
//! so the same seed, the same frames and the same `now`s give the same output, bit for bit.
//!
//! Timing model, per frame:
//!
//! ```text
//!   push(now) ──► serializer (rate) ──► departure ──► + delay ± jitter ──► due
//!                 one frame at a time                 clamped to FIFO
//! ```
//!
//! * **rate** is a serializer: a frame starts when the previous one has left and takes
//!   `len * 8 / rate` seconds (a time bucket, kept in nanoseconds so rounding does not
//!   drift). `len` is the Ethernet frame as the stack sends it: no preamble, FCS or gap.
//! * **delay ± jitter** is propagation after serialization; jitter is uniform in
//!   `[-jitter, +jitter]` (netem's default without a distribution table), negative
//!   results clamp to zero.
//! * **jitter never reorders**: a frame's due time is clamped to at least the previous
//!   frame's, as netem does when a rate is set. Reordering only comes from `reorder`.
//! * **reorder with a delay** (netem's semantics): a chosen frame skips the delay and the
//!   jitter (it still takes its turn on the serializer) and so overtakes frames in flight.
//! * **reorder without a delay**, where netem's rule would do nothing: a chosen frame is
//!   held back until the next frame has been queued and is then queued right behind it
//!   (the two swap places), or for at most [`REORDER_HOLD`] if no next frame comes.
//!
//! The queue is bounded at [`ImpairConfig::limit`] frames (netem's `limit`); frames
//! offered to a full queue are dropped and counted as `overflow`, apart from `dropped`.

use core::fmt;
use core::str::FromStr;
use std::collections::VecDeque;

use crate::rand::Rng;
use crate::skb::Skb;
use crate::time::{Duration, Instant};

/// Frames an impairment holds at most when [`ImpairConfig::limit`] is `None`. Ten times
/// netem's default of 1000: a simulated link at 1 Gbit/s with 100 ms of delay has about
/// 8000 full-size frames in flight, and a limit that small would turn delay into loss.
pub const DEFAULT_LIMIT: usize = 10_000;

/// Longest time a frame picked for reordering on an undelayed link waits for a later
/// frame to pass it. Short, so the last frame of a burst is late by little.
pub const REORDER_HOLD: Duration = Duration::from_millis(2);

/// What an impairment does to frames. Probabilities are fractions in `0.0..=1.0`
/// (the [`FromStr`] syntax takes percentages); the default impairs nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImpairConfig {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub dup: f64,
    /// Probability that a frame is sent out of turn (see the module documentation).
    pub reorder: f64,
    /// Probability that one random bit of a frame is flipped, anywhere in it as netem
    /// does (`skb->data[rand % headlen]`). A flip in the Ethernet header or an ARP body,
    /// which the FCS of a real wire would have caught, shows up as a frame for another
    /// MAC, an unknown EtherType or a wrong neighbour entry rather than a checksum error.
    pub corrupt: f64,
    /// Propagation delay added to every frame.
    pub delay: Duration,
    /// Uniform variation of the delay, `±jitter`.
    pub jitter: Duration,
    /// Serialization rate in bits per second; `None` (or `Some(0)`) for no limit.
    pub rate_bps: Option<u64>,
    /// Queue limit in frames; `None` for [`DEFAULT_LIMIT`].
    pub limit: Option<usize>,
    /// Seed of the random stream.
    pub seed: u64,
}

impl ImpairConfig {
    /// The queue limit in effect.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }
}

/// Why an impairment string did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImpairParseError {
    /// A key that is not one of ours.
    UnknownKey(String),
    /// An item without `=value`.
    MissingValue(String),
    /// A key given twice.
    DuplicateKey(String),
    /// A value that does not read as its key's kind of value.
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// A percentage outside `0%..=100%`.
    OutOfRange { key: String, value: String },
}

impl fmt::Display for ImpairParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImpairParseError::UnknownKey(k) => write!(
                f,
                "unknown impairment `{k}`: expected one of {}",
                KEYS.join(", ")
            ),
            ImpairParseError::MissingValue(k) => {
                write!(f, "`{k}` needs a value, as in `{k}=...`")
            }
            ImpairParseError::DuplicateKey(k) => write!(f, "`{k}` is given twice"),
            ImpairParseError::BadValue {
                key,
                value,
                expected,
            } => write!(f, "bad value `{value}` for `{key}`: expected {expected}"),
            ImpairParseError::OutOfRange { key, value } => {
                write!(f, "`{key}={value}` is outside 0%..=100%")
            }
        }
    }
}

impl std::error::Error for ImpairParseError {}

const KEYS: [&str; 9] = [
    "loss", "dup", "reorder", "corrupt", "delay", "jitter", "rate", "limit", "seed",
];

const PERCENT: &str = "a percentage such as 5% or 0.5%";
const DURATION: &str = "a duration such as 10ms, 500us or 1.5s";
// tc reads `bps` as bytes per second, which is easy to misread as bits; refusing it
// avoids an eightfold surprise.
const RATE: &str = "a positive rate in bit, kbit, mbit or gbit, such as 100mbit";
const LIMIT: &str = "a frame count of at least 1";
const SEED: &str = "an unsigned 64-bit integer";

impl FromStr for ImpairConfig {
    type Err = ImpairParseError;

    /// Reads `loss=5%,dup=2%,reorder=5%,corrupt=0.5%,delay=10ms,jitter=2ms,rate=100mbit,
    /// limit=1000,seed=7`: any subset, in any order; the empty string is a clean link.
    /// Units are required (`5%`, not `5`; `10ms`, not `10`) because a bare number is
    /// ambiguous: tc reads `loss 5` as 5% but `delay 10` as 10 µs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cfg = ImpairConfig::default();
        let mut seen = [false; KEYS.len()];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => {
                    return Err(if KEYS.contains(&item) {
                        ImpairParseError::MissingValue(item.to_string())
                    } else {
                        ImpairParseError::UnknownKey(item.to_string())
                    })
                }
            };
            let Some(idx) = KEYS.iter().position(|k| *k == key) else {
                return Err(ImpairParseError::UnknownKey(key.to_string()));
            };
            if std::mem::replace(&mut seen[idx], true) {
                return Err(ImpairParseError::DuplicateKey(key.to_string()));
            }
            let bad = |expected| ImpairParseError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            };
            match key {
                "loss" => cfg.loss = parse_percent(key, value)?,
                "dup" => cfg.dup = parse_percent(key, value)?,
                "reorder" => cfg.reorder = parse_percent(key, value)?,
                "corrupt" => cfg.corrupt = parse_percent(key, value)?,
                "delay" => cfg.delay = parse_duration(value).ok_or_else(|| bad(DURATION))?,
                "jitter" => cfg.jitter = parse_duration(value).ok_or_else(|| bad(DURATION))?,
                "rate" => cfg.rate_bps = Some(parse_rate(value).ok_or_else(|| bad(RATE))?),
                "limit" => {
                    let n = value.parse::<usize>().ok().filter(|&n| n > 0);
                    cfg.limit = Some(n.ok_or_else(|| bad(LIMIT))?);
                }
                "seed" => cfg.seed = value.parse().map_err(|_| bad(SEED))?,
                _ => unreachable!("every key in KEYS is handled"),
            }
        }
        Ok(cfg)
    }
}

/// `5%` -> 0.05.
fn parse_percent(key: &str, value: &str) -> Result<f64, ImpairParseError> {
    let p = value
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|p| p.is_finite())
        .ok_or_else(|| ImpairParseError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: PERCENT,
        })?;
    if !(0.0..=100.0).contains(&p) {
        return Err(ImpairParseError::OutOfRange {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(p / 100.0)
}

/// A non-negative decimal number followed by a unit: `("1.5", "ms")`.
fn split_number(value: &str) -> Option<(f64, &str)> {
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(end);
    let n = num.parse::<f64>().ok().filter(|n| n.is_finite())?;
    Some((n, unit.trim()))
}

/// `10ms` -> 10 ms. Resolution is the microsecond, like [`Instant`].
fn parse_duration(value: &str) -> Option<Duration> {
    let (n, unit) = split_number(value)?;
    let micros_per_unit = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    let micros = (n * micros_per_unit).round();
    (micros <= u64::MAX as f64).then(|| Duration::from_micros(micros as u64))
}

/// `100mbit` -> 100_000_000 (SI multiples, as tc's `kbit` is 1000 bit/s).
fn parse_rate(value: &str) -> Option<u64> {
    let (n, unit) = split_number(value)?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return None,
    };
    let bps = (n * mult).round();
    (bps >= 1.0 && bps <= u64::MAX as f64).then_some(bps as u64)
}

/// What an impairment did. Every offered frame and every duplicate ends in exactly one
/// of `dropped`, `overflow`, `delivered` or the queue:
/// `offered + duplicated == dropped + overflow + delivered + queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Frames pushed.
    pub offered: u64,
    /// Frames lost by the `loss` knob.
    pub dropped: u64,
    /// Frames (originals or duplicates) dropped because the queue was at its limit.
    pub overflow: u64,
    /// Extra copies made by the `dup` knob.
    pub duplicated: u64,
    /// Frames sent out of turn: skipped the delay, or were held behind a later frame.
    pub reordered: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames handed out by `poll`.
    pub delivered: u64,
    /// Bytes of the frames handed out by `poll`.
    pub delivered_bytes: u64,
}

/// A frame waiting for its delivery time.
struct Queued {
    due: Instant,
    /// Queueing order, to break ties between the two queues deterministically.
    seq: u64,
    skb: Skb,
}

/// A frame held back on an undelayed link until a later frame passes it.
struct Held {
    frame: Queued,
    /// When it goes out anyway if no later frame came.
    deadline: Instant,
}

/// One direction of a link. See the module documentation.
pub struct Impairment {
    cfg: ImpairConfig,
    limit: usize,
    rng: Rng,
    /// Frames on the normal path. Their due times never decrease (the jitter clamp), so
    /// a queue is a priority queue here, at O(1) per frame.
    fifo: VecDeque<Queued>,
    /// Frames that skipped the delay. Their due time is their departure from the
    /// serializer, which never decreases either.
    fast: VecDeque<Queued>,
    held: Option<Held>,
    /// Due time of the last frame put on `fifo`: the floor for the next one.
    fifo_tail: Instant,
    /// When the serializer is free again, in nanoseconds.
    link_free_ns: u128,
    /// Latest `now` seen, so a caller's clock going backwards cannot break the order.
    last_now: Instant,
    seq: u64,
    stats: ImpairStats,
}

impl fmt::Debug for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Impairment")
            .field("cfg", &self.cfg)
            .field("queued", &self.queued())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Impairment {
    /// An impairment doing what `cfg` says. Probabilities outside `0..=1` are clamped
    /// (NaN counts as 0): the struct can be built by hand, and a bad knob should not
    /// panic a driver.
    pub fn new(cfg: ImpairConfig) -> Self {
        let clamp = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let cfg = ImpairConfig {
            loss: clamp(cfg.loss),
            dup: clamp(cfg.dup),
            reorder: clamp(cfg.reorder),
            corrupt: clamp(cfg.corrupt),
            rate_bps: cfg.rate_bps.filter(|&r| r > 0),
            ..cfg
        };
        Impairment {
            limit: cfg.limit(),
            rng: Rng::new(cfg.seed),
            cfg,
            fifo: VecDeque::new(),
            fast: VecDeque::new(),
            held: None,
            fifo_tail: Instant::ZERO,
            link_free_ns: 0,
            last_now: Instant::ZERO,
            seq: 0,
            stats: ImpairStats::default(),
        }
    }

    pub fn config(&self) -> &ImpairConfig {
        &self.cfg
    }

    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Frames waiting for delivery.
    pub fn queued(&self) -> usize {
        self.fifo.len() + self.fast.len() + usize::from(self.held.is_some())
    }

    /// Offer a frame at `now`; it will come out of `poll` at its delivery time (or never,
    /// if lost).
    pub fn push(&mut self, now: Instant, skb: Skb) {
        let now = now.max(self.last_now);
        self.last_now = now;
        self.expire_held(now);
        self.stats.offered += 1;
        if self.chance(self.cfg.loss) {
            self.stats.dropped += 1;
            return;
        }
        // netem re-enqueues the copy with duplication off, so it is corrupted, delayed
        // and reordered independently of the original (but not lost or copied again).
        let copy = self.chance(self.cfg.dup).then(|| skb.clone());
        self.enqueue(now, skb);
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.enqueue(now, copy);
        }
    }

    /// The next frame due at or before `now`, in delivery order.
    pub fn poll(&mut self, now: Instant) -> Option<Skb> {
        self.expire_held(now);
        let from_fast = match (self.fifo.front(), self.fast.front()) {
            (Some(f), Some(s)) => (s.due, s.seq) < (f.due, f.seq),
            (None, Some(_)) => true,
            _ => false,
        };
        let queue = if from_fast {
            &mut self.fast
        } else {
            &mut self.fifo
        };
        if queue.front()?.due > now {
            return None;
        }
        let q = queue.pop_front()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += q.skb.len() as u64;
        Some(q.skb)
    }

    /// When the next frame is due (it may be now or in the past), `None` when empty.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.fifo.front().map(|q| q.due),
            self.fast.front().map(|q| q.due),
            self.held.as_ref().map(|h| h.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Corrupt, bound, and schedule one frame (an original or a duplicate).
    fn enqueue(&mut self, now: Instant, mut skb: Skb) {
        if self.chance(self.cfg.corrupt) && !skb.is_empty() {
            let bit = self.rng.range(0, skb.len() as u64 * 8) as usize;
            // `data_mut` unshares first: a duplicate sharing the buffer keeps its bits.
            skb.data_mut()[bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        if self.queued() >= self.limit {
            self.stats.overflow += 1;
            return;
        }
        let departure = self.serialize(now, skb.len());
        let reorder = self.chance(self.cfg.reorder);
        let seq = self.next_seq();
        if self.cfg.delay.is_zero() {
            let due = (departure + self.propagation()).max(self.fifo_tail);
            let frame = Queued { due, seq, skb };
            if reorder {
                // Only one frame is held at a time: an earlier one goes out now, in turn.
                if let Some(prev) = self.held.take() {
                    self.push_fifo(prev.frame.due, prev.frame.skb);
                }
                self.held = Some(Held {
                    deadline: due + REORDER_HOLD,
                    frame,
                });
            } else {
                self.push_fifo(frame.due, frame.skb);
                if let Some(prev) = self.held.take() {
                    // Passed by this frame: it follows right behind.
                    self.stats.reordered += 1;
                    self.push_fifo(prev.frame.due, prev.frame.skb);
                }
            }
        } else if reorder {
            // netem: "reorder" frames are sent at once, overtaking those in the delay line.
            self.stats.reordered += 1;
            self.fast.push_back(Queued {
                due: departure,
                seq,
                skb,
            });
        } else {
            let due = departure + self.propagation();
            self.push_fifo(due, skb);
        }
    }

    /// Append to the FIFO path at `due` or later, keeping its due times in order.
    fn push_fifo(&mut self, due: Instant, skb: Skb) {
        let due = due.max(self.fifo_tail);
        self.fifo_tail = due;
        let seq = self.next_seq();
        self.fifo.push_back(Queued { due, seq, skb });
    }

    /// A held frame that no later frame passed in time goes out at its deadline.
    fn expire_held(&mut self, now: Instant) {
        if self.held.as_ref().is_some_and(|h| h.deadline <= now) {
            let h = self.held.take().expect("checked");
            self.push_fifo(h.deadline, h.frame.skb);
        }
    }

    /// Run a frame of `len` bytes through the serializer; returns when its last bit left.
    fn serialize(&mut self, now: Instant, len: usize) -> Instant {
        let Some(rate) = self.cfg.rate_bps else {
            return now;
        };
        let now_ns = u128::from(now.total_micros()) * 1000;
        let start = now_ns.max(self.link_free_ns);
        let tx_ns = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate));
        self.link_free_ns = start + tx_ns;
        let micros = self.link_free_ns.div_ceil(1000);
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The propagation delay of one frame: `delay` plus a uniform offset in
    /// `[-jitter, +jitter]`, at least zero.
    fn propagation(&mut self) -> Duration {
        let jitter = self.cfg.jitter.as_micros().min(u128::from(u64::MAX / 4)) as u64;
        if jitter == 0 {
            return self.cfg.delay;
        }
        let delay = self.cfg.delay.as_micros().min(u128::from(u64::MAX)) as i128;
        let offset = self.rng.range(0, 2 * jitter + 1) as i128 - i128::from(jitter);
        Duration::from_micros((delay + offset).clamp(0, i128::from(u64::MAX)) as u64)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A Bernoulli draw. Knobs at 0 or 1 draw nothing, so turning one knob on does not
    /// shift the random stream of a config that never uses it.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits make a uniform double in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        u < p
    }
}
