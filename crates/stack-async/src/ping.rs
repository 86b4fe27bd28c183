//! `PingSocket`: an ICMP echo socket, like Linux's unprivileged "ping sockets"
//! (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, net/ipv4/ping.c).
//!
//! The core keeps each socket's queue; on `Event::Readable` the stack thread moves the
//! messages into this socket's own bounded channel, from which `recv` reads on the
//! caller's executor. Both queues are bounded: a full one drops and counts, as a full
//! `sk_rcvbuf` does.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::lock::Mutex;
use futures::StreamExt;
use stack_core::ping::PingMsg;
use stack_core::stack::{SocketId, Stack};

use crate::handle::{stopped, StackHandle};

/// Messages a socket's receive channel holds before dropping new ones.
pub const PING_RECV_QUEUE: usize = 256;

/// An ICMP echo socket on a ustack stack. `Send + Sync`: share it with an `Arc` to
/// send from one task while another receives.
pub struct PingSocket {
    stack: StackHandle,
    id: SocketId,
    ident: u16,
    rx: Mutex<mpsc::Receiver<PingMsg>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for PingSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingSocket")
            .field("id", &self.id)
            .field("ident", &self.ident)
            .finish()
    }
}

impl PingSocket {
    /// Open a ping socket; the stack picks a random unused echo identifier.
    ///
    /// Async because the socket is created on the stack thread (as with tokio's
    /// `UdpSocket::bind`); blocking here would stall the caller's executor.
    pub async fn open(stack: &StackHandle) -> io::Result<PingSocket> {
        // Buffer N-1 plus the sender's own slot: N messages in all.
        let (mut tx, rx) = mpsc::channel(PING_RECV_QUEUE - 1);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let (id, ident) = stack
            .call_ctx(move |ctx| {
                let id = ctx.stack.ping_open();
                let ident = ctx.stack.ping_ident(id).unwrap_or_default();
                // Opened and registered in one command, so no Readable event for the
                // new socket can slip in between.
                let on_readable = move |stack: &mut Stack| {
                    while let Some(msg) = stack.ping_recvmsg(id) {
                        if tx.try_send(msg).is_err() {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                };
                ctx.readers.insert(id, Box::new(on_readable));
                (id, ident)
            })
            .await?;
        Ok(PingSocket {
            stack: stack.clone(),
            id,
            ident,
            rx: Mutex::new(rx),
            dropped,
        })
    }

    /// The echo identifier of this socket's requests (the "port" of a ping socket).
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// Send an echo request to `dst` with sequence number `seq` and `payload` as data.
    /// Errors are those of Linux's `sendto` on a ping socket (`EHOSTUNREACH`,
    /// `EMSGSIZE`, ...), or `NotConnected` if the stack has stopped.
    pub async fn send_to(&self, dst: Ipv4Addr, seq: u16, payload: &[u8]) -> io::Result<()> {
        let id = self.id;
        let payload = payload.to_vec();
        self.stack
            .call(move |stack, now| stack.ping_sendmsg(now, id, dst, seq, &payload))
            .await?
            .map_err(io::Error::from)
    }

    /// The next message: an echo reply, or an ICMP error about one of our requests
    /// (`kind` tells which; like a Linux ping socket with `IP_RECVERR`, errors arrive
    /// as messages with their sequence number). Waits for one.
    pub async fn recv(&self) -> io::Result<PingMsg> {
        let mut rx = self.rx.lock().await;
        rx.next().await.ok_or_else(stopped)
    }

    /// The next echo reply; an ICMP error is returned as an `io::Error` of the kind a
    /// Linux ping socket's `recvmsg` would report without `IP_RECVERR`
    /// (e.g. `HostUnreachable`).
    pub async fn recv_reply(&self) -> io::Result<PingMsg> {
        let msg = self.recv().await?;
        match msg.kind.io_error_kind() {
            None => Ok(msg),
            Some(kind) => Err(io::Error::new(
                kind,
                format!(
                    "From {} icmp_seq={} {}",
                    msg.from,
                    msg.seq,
                    msg.kind.describe()
                ),
            )),
        }
    }

    /// Messages dropped because this socket's receive channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for PingSocket {
    fn drop(&mut self) {
        let id = self.id;
        self.stack.post(move |ctx| {
            ctx.readers.remove(&id);
            ctx.stack.ping_close(id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_socket_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PingSocket>();
    }
}
