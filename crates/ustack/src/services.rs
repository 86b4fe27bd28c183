//! The small services `ustack host` runs. Over UDP: echo (RFC 862, port 7) sends every
//! datagram back to its sender, discard (RFC 863, port 9) reads and drops. Over TCP:
//! echo and discard do the same with a byte stream, and chargen (RFC 864, port 19)
//! sends lines of rotating printable characters until the client goes away; every TCP
//! connection is served by a task of its own.
//!
//! They use nothing but the public `stack_async` API (`UdpSocket`, `TcpListener`,
//! `TcpStream`), the same way one would write them with `tokio::net`, so they double as
//! examples. A service never stops on a socket error (a late ICMP error, a send that
//! fails, a client that resets): it logs it at debug level (`USTACK_LOG=ustack=debug`)
//! and goes on. It ends only when the stack stops.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use stack_async::{StackHandle, TcpListener, TcpStream, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The echo service's well-known port (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// The discard service's well-known port (RFC 863).
pub const DISCARD_PORT: u16 = 9;
/// The character generator's well-known port (RFC 864).
pub const CHARGEN_PORT: u16 = 19;

/// RFC 864's suggested line: 72 printable characters, then CR LF.
pub const CHARGEN_LINE: usize = 72;
/// The 95 printable ASCII characters, ' ' to '~'; line n starts with the n-th of them.
const PRINTABLE: u8 = 95;
/// Read buffer of the TCP services.
const TCP_BUF: usize = 64 * 1024;

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

/// Which TCP services to run.
#[derive(Clone, Copy, Debug)]
// The UDP services' test (crates/stack-async/tests/services_netns.rs) compiles this
// file too and runs only `start`; `ustack host` uses everything.
#[allow(dead_code)]
pub struct TcpServices {
    pub echo: bool,
    pub discard: bool,
    pub chargen: bool,
}

/// Listen for each enabled TCP service on all our addresses and spawn its accept loop
/// on the current tokio runtime. Returns a line describing what runs, for the user.
#[allow(dead_code)]
pub async fn start_tcp(stack: &StackHandle, which: TcpServices) -> io::Result<String> {
    let mut running = Vec::new();
    if which.echo {
        let listener = TcpListener::bind(stack, any(ECHO_PORT)).await?;
        tokio::spawn(serve(listener, "echo", tcp_echo));
        running.push(format!("tcp echo on port {ECHO_PORT}"));
    }
    if which.discard {
        let listener = TcpListener::bind(stack, any(DISCARD_PORT)).await?;
        tokio::spawn(serve(listener, "discard", tcp_discard));
        running.push(format!("tcp discard on port {DISCARD_PORT}"));
    }
    if which.chargen {
        let listener = TcpListener::bind(stack, any(CHARGEN_PORT)).await?;
        tokio::spawn(serve(listener, "chargen", tcp_chargen));
        running.push(format!("tcp chargen on port {CHARGEN_PORT}"));
    }
    Ok(running.join(", "))
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// Accept connections until the stack stops, each served by `handler` on a task of its
/// own, so one slow client never holds up another. HTTP (`http.rs`) uses it too.
pub(crate) async fn serve<F, Fut>(listener: TcpListener, name: &'static str, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let connection = handler(stream);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("tcp {name}: {peer}: {e}");
                    }
                });
            }
            Err(e) if stack_stopped(&e) => return,
            Err(e) => tracing::debug!("tcp {name}: accept: {e}"),
        }
    }
}

/// TCP echo: send every byte back; when the client has finished sending (its FIN) and
/// everything went back, finish ours. While the client does not read, our writes wait,
/// so we stop reading too and its sends slow down: nothing is buffered without bound.
pub async fn tcp_echo(mut stream: TcpStream) -> io::Result<()> {
    loop {
        let mut buf = data_arrived(&stream).await?;
        // Everything that is there, then the buffer goes back.
        loop {
            match stream.try_read(&mut buf) {
                Ok(0) => return stream.shutdown().await,
                Ok(n) => stream.write_all(&buf[..n]).await?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// TCP discard: read until the client's FIN, then close.
pub async fn tcp_discard(stream: TcpStream) -> io::Result<()> {
    loop {
        let mut buf = data_arrived(&stream).await?;
        loop {
            match stream.try_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Wait until `stream` has something to read (data or the peer's FIN), then hand out a
/// read buffer. An idle connection holds no buffer: it is taken when data arrives and
/// given back once drained, so 10,000 idle clients cost no 64 KiB each.
async fn data_arrived(stream: &TcpStream) -> io::Result<Vec<u8>> {
    stream.readable().await?;
    Ok(vec![0u8; TCP_BUF])
}

/// One full rotation of RFC 864's pattern: 95 lines of 72 characters and CR LF, line n
/// starting with printable character n. The stream is this block over and over.
pub fn chargen_block() -> Vec<u8> {
    let mut block = Vec::with_capacity(usize::from(PRINTABLE) * (CHARGEN_LINE + 2));
    for line in 0..PRINTABLE {
        for col in 0..CHARGEN_LINE {
            let offset = (usize::from(line) + col) % usize::from(PRINTABLE);
            block.push(b' ' + offset as u8);
        }
        block.extend_from_slice(b"\r\n");
    }
    block
}

/// TCP chargen: send the pattern until the client goes away (its reset makes a write
/// fail); what it sends is read and thrown away (RFC 864), and its FIN alone does not
/// stop us, as the RFC leaves ending the connection to the client.
pub async fn tcp_chargen(mut stream: TcpStream) -> io::Result<()> {
    let block = chargen_block();
    let (mut rd, mut wr) = stream.split();
    let discard = async move {
        let mut buf = vec![0u8; TCP_BUF];
        while rd.read(&mut buf).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let generate = async move {
        let stopped = loop {
            if let Err(e) = wr.write_all(&block).await {
                break e;
            }
        };
        Err::<(), _>(stopped)
    };
    tokio::try_join!(discard, generate).map(|_| ())
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
