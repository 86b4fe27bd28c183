//! stack-async: ustack as a service for async code.
//!
//! [`StackHandle::spawn`] attaches a TAP device and starts the stack thread: one loop
//! that owns stack-core's `Stack` and drives every TAP on one io_uring (stack-io's
//! `Uring`, whose provided buffers and write limit are the NIC's RX and TX rings), with
//! optional busy polling ([`StackOptions::busy_poll`]).
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

pub use handle::{StackBuilder, StackHandle, StackOptions, TapDevice, COMMAND_QUEUE};
pub use ping::PingSocket;
pub use proto::ReadableFn;
pub use stack_core::impair::ImpairConfig;
pub use stack_core::ping::{PingMsg, PingMsgKind};
pub use stack_core::tcp::{CongestionControl, Keepalive};
pub use stack_io::IoStatsSnapshot;
pub use tcp::{TcpListener, TcpSocket, TcpStream, TCP_RECV_RING, TCP_SEND_RING};
pub use udp::{UdpOptions, UdpSocket, UDP_RECV_QUEUE, UDP_RECV_QUEUE_BYTES};
