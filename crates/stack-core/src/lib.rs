//! stack-core: the pure half of ustack.
//!
//! Every module mirrors a stage of the Linux 5.10 packet path (see docs/architecture.md).
//! Nothing here does I/O, spawns threads, reads a clock or keeps global state: time comes in
//! as [`time::Instant`] arguments and randomness from the seeded [`rand::Rng`] the driver
//! hands to [`stack::Stack::new`]. Malformed input is a counted drop, never a panic.

pub mod rand;
pub mod skb;
pub mod stack;
pub mod time;
pub mod wire;

pub use skb::{Skb, SkbPool};
pub use time::{Duration, Instant};
