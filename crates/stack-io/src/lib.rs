//! stack-io: the I/O half of ustack's device layer.
//!
//! [`tap::Tap`] attaches to an existing TAP interface; [`device::run_device`] moves
//! frames between it and the stack's RX/TX rings on io_uring, counting what it does in
//! [`stats::IoStats`]. Nothing here knows any protocol: frames are opaque `Skb`s, except
//! that with offloads ([`tap::TapOptions`]) the loop translates each frame's
//! [`vnet::VnetHdr`] to and from the skb's checksum and GSO metadata, which takes a look
//! at the Ethernet, IPv4 and TCP headers.

pub mod device;
pub mod stats;
pub mod tap;
pub mod vnet;

pub use device::{run_device, DeviceConfig};
pub use stats::{IoStats, IoStatsSnapshot};
pub use tap::{Offloads, Tap, TapError, TapOptions};
