//! stack-io: the I/O half of ustack's device layer.
//!
//! [`tap::Tap`] attaches to an existing TAP interface; [`uring::Uring`] moves
//! frames between a stack's TAPs and its caller on one io_uring (the NIC rings),
//! counting what it does in [`stats::IoStats`]. Nothing here knows any protocol: frames are opaque `Skb`s, except
//! that with offloads ([`tap::TapOptions`]) the loop translates each frame's
//! [`vnet::VnetHdr`] to and from the skb's checksum and GSO metadata, which takes a look
//! at the Ethernet, IPv4 and TCP headers.

pub mod device;
pub mod stats;
pub mod tap;
pub mod uring;
pub mod vnet;

pub use device::DeviceConfig;
pub use stats::{IoStats, IoStatsSnapshot};
pub use tap::{Offloads, Tap, TapError, TapOptions};
pub use uring::{Completion, Notify, Uring};
