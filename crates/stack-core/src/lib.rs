//! stack-core: the pure half of ustack.
//!
//! Every module mirrors a stage of the Linux 5.10 packet path (see docs/architecture.md).
//! Nothing here does I/O, spawns threads, reads a clock or keeps global state: time comes in
//! as [`time::Instant`] arguments and randomness from the seed the driver hands to
//! [`stack::Stack::new`]. Malformed input is a counted drop, never a panic.

pub mod arp;
pub mod dev;
pub mod gso;
pub mod icmp;
pub mod impair;
pub mod inetpeer;
pub mod ipv4;
pub mod neigh;
pub mod netfilter;
pub mod ping;
pub mod qdisc;
pub mod rand;
pub mod sim;
pub mod skb;
pub mod snmp;
mod sock;
pub mod stack;
pub mod tcp;
pub mod time;
pub mod udp;
pub mod wire;

pub use dev::{DeviceId, IfAddr, NetDeviceConfig};
pub use ipv4::SendError;
pub use skb::{Skb, SkbPool};
pub use stack::{Event, Offloads, SocketId, Stack, StackConfig};
pub use time::{Duration, Instant};
