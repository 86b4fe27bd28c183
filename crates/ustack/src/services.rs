//! The small UDP services `ustack host` runs: echo (RFC 862, port 7) sends every
//! datagram back to its sender, discard (RFC 863, port 9) reads and drops.
//!
//! They use nothing but the public `stack_async::UdpSocket` API, the same way one would
//! write them with `tokio::net::UdpSocket`, so they double as examples. A service
//! never stops on a socket error (a late ICMP error, a send that fails): it logs it at
//! debug level (`USTACK_LOG=ustack=debug`) and goes on. It ends only when the stack
//! stops.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use stack_async::{StackHandle, UdpSocket};

/// The echo service's well-known port (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// The discard service's well-known port (RFC 863).
pub const DISCARD_PORT: u16 = 9;

/// Room for the largest UDP payload over IPv4 (65507 bytes); longer is impossible.
const MAX_DATAGRAM: usize = 65536;

/// Which services to run.
#[derive(Clone, Copy, Debug)]
pub struct Services {
    pub udp_echo: bool,
    pub udp_discard: bool,
}

/// Bind each enabled service on all our addresses and spawn it on the current tokio
/// runtime. Returns a line describing what runs, for the user.
pub async fn start(stack: &StackHandle, which: Services) -> io::Result<String> {
    let mut running = Vec::new();
    if which.udp_echo {
        let sock = UdpSocket::bind(stack, any(ECHO_PORT)).await?;
        tokio::spawn(udp_echo(sock));
        running.push(format!("udp echo on port {ECHO_PORT}"));
    }
    if which.udp_discard {
        let sock = UdpSocket::bind(stack, any(DISCARD_PORT)).await?;
        tokio::spawn(udp_discard(sock));
        running.push(format!("udp discard on port {DISCARD_PORT}"));
    }
    Ok(running.join(", "))
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// The stack has stopped: the only error after which a socket is of no more use.
fn stack_stopped(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotConnected
}

/// Echo: send every datagram back to where it came from.
pub async fn udp_echo(sock: UdpSocket) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if stack_stopped(&e) => return,
            Err(e) => {
                tracing::debug!("udp echo: receive: {e}");
                continue;
            }
        };
        // Waits while our send buffer is full, so a flood makes us read more slowly
        // and the excess is dropped at our receive queue, not buffered without bound.
        match sock.send_to(&buf[..len], peer).await {
            Ok(_) => {}
            Err(e) if stack_stopped(&e) => return,
            Err(e) => tracing::debug!("udp echo: reply to {peer}: {e}"),
        }
    }
}

/// Discard: read and drop.
pub async fn udp_discard(sock: UdpSocket) {
    // The bytes are not looked at: the part of a datagram that does not fit a receive
    // buffer is discarded with it, so a small one does.
    let mut buf = [0u8; 64];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok(_) => {}
            Err(e) if stack_stopped(&e) => return,
            Err(e) => tracing::debug!("udp discard: receive: {e}"),
        }
    }
}
