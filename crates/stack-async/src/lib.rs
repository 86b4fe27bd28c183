//! stack-async: ustack as a service for async code.
//!
//! [`StackHandle::spawn`] attaches a TAP device and starts the stack thread, where the
//! io_uring device loop (stack-io) and the protocol task (owning stack-core's `Stack`)
//! run side by side, joined by bounded channels that play the NIC's RX and TX rings
//! (with [`StackOptions::device_threads`], each device loop on a thread of its own).
//! Handles are `Send + Sync + Clone` and their futures work on any executor (tokio,
//! `futures::executor`, smol): they only use futures' channels and plain wakers.
//!
//! Sockets: [`TcpListener`], [`TcpStream`] and [`TcpSocket`] (the API of tokio's, with
//! `AsyncRead`/`AsyncWrite` of both tokio and futures), [`UdpSocket`] (the API of
//! `tokio::net::UdpSocket`) and [`PingSocket`].

mod handle;
pub mod ping;
mod proto;
pub mod tcp;
pub mod udp;

pub use handle::{
    StackBuilder, StackHandle, StackOptions, TapDevice, COMMAND_QUEUE, RX_RING, TX_RING,
};
pub use ping::PingSocket;
pub use proto::ReadableFn;
pub use stack_core::impair::ImpairConfig;
pub use stack_core::ping::{PingMsg, PingMsgKind};
pub use stack_core::tcp::{CongestionControl, Keepalive};
pub use stack_io::IoStatsSnapshot;
pub use tcp::{TcpListener, TcpSocket, TcpStream, TCP_RECV_RING, TCP_SEND_RING};
pub use udp::{UdpOptions, UdpSocket, UDP_RECV_QUEUE, UDP_RECV_QUEUE_BYTES};
