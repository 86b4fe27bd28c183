//! `smoltcp-peer`: smoltcp serving one TCP service on a TAP device, so that `cargo xtask
//! bench` can put another userspace stack on the same kind of link as ustack.
//!
//! ```text
//! smoltcp-peer --tap ustack0 --addr 192.0.2.2/24 --mode {discard|chargen|echo} --port P
//! ```
//!
//! The services behave like `ustack host`'s: discard reads and drops until the client's FIN,
//! then closes; chargen sends RFC 864's pattern as fast as the connection takes it, and drops
//! what it reads, until the client goes away (its FIN alone does not stop it, as in ustack);
//! echo sends back what it reads and closes after the client's FIN.
//!
//! The choices that decide the numbers, made to give smoltcp its best fair showing:
//! - 1 MiB send and receive buffers per socket (`--buffer`); the window scale follows from
//!   the receive buffer. The kernel client's socket buffers autotune to a few MiB.
//! - CUBIC congestion control, as in Linux and ustack (`--cc` picks Reno or none). With 4 MiB
//!   or 256 KiB buffers, or no congestion control, smoltcp did no better on the 2-CPU VM the
//!   bench was written on: all within its run-to-run spread of 5-9 Gb/s
//!   (`SMOLTCP_PEER_ARGS="--cc none" cargo xtask bench` repeats the check).
//! - smoltcp's default delayed ACK (10 ms, yet an ACK for every full segment of new data, as
//!   Linux does) and no TCP timestamps (smoltcp leaves them off unless given a clock for them).
//! - Nagle off for echo, so an echoed byte never waits for an ACK; the kernel's echo server in
//!   the bench sets TCP_NODELAY too.
//! - No busy polling: whenever a pass over the sockets did nothing, the loop sleeps in
//!   `phy::wait` (select on the TAP descriptor) until a frame arrives or the interface's
//!   `poll_delay` (its next timer) passes, as ustack sleeps in io_uring until a completion. A
//!   pass that moved bytes or closed a socket is followed at once by another, so data queued
//!   by the application is sent without waiting.
//! - smoltcp's `TunTapInterface` as it comes: one read(2) per received frame, one write(2)
//!   per sent frame.
//! - smoltcp has no accept queue: a listening socket *becomes* the connection when a SYN
//!   arrives, and a SYN that finds no socket in LISTEN is reset. So `--listeners` sockets
//!   (default 4) listen on the port, and each listens again as soon as its connection reaches
//!   CLOSED; a client that opens one connection after another always finds one listening while
//!   the previous one is still in LAST-ACK. In these services the client closes first, so our
//!   side never sits in TIME-WAIT (which smoltcp holds for 10 s).

use std::os::fd::AsRawFd;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Medium, TunTapInterface};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Cidr};

/// RFC 864's line: 72 printable characters, then CR LF; line n starts with the n-th of the 95
/// printable characters. The same pattern as ustack's chargen.
const CHARGEN_LINE: usize = 72;
const PRINTABLE: usize = 95;
/// What echo moves from the receive to the send buffer in one step.
const ECHO_CHUNK: usize = 64 * 1024;

#[derive(Parser)]
#[command(
    name = "smoltcp-peer",
    about = "smoltcp serving TCP discard, chargen or echo on a TAP (the comparator of cargo xtask bench)"
)]
struct Args {
    /// The TAP device to attach to.
    #[arg(long)]
    tap: String,
    /// Our address and prefix length, e.g. 192.0.2.2/24.
    #[arg(long, value_parser = parse_cidr)]
    addr: Ipv4Cidr,
    /// The service to run.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The TCP port it listens on.
    #[arg(long)]
    port: u16,
    /// Our MAC address. Fixed by default, so that the kernel's ARP entry stays right when the
    /// bench starts us again for the next measurement.
    #[arg(long, value_parser = parse_mac, default_value = "02:00:00:00:00:02")]
    mac: EthernetAddress,
    /// How many sockets listen on the port (smoltcp has no accept queue).
    #[arg(long, default_value_t = 4)]
    listeners: usize,
    /// Size of each socket's send buffer and of its receive buffer, in bytes (at most 1 GiB).
    #[arg(long, default_value_t = 1 << 20)]
    buffer: usize,
    /// Congestion control.
    #[arg(long, value_enum, default_value_t = Cc::Cubic)]
    cc: Cc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Read and drop; close after the client's FIN (RFC 863).
    Discard,
    /// Send the RFC 864 pattern as fast as possible, drop what arrives.
    Chargen,
    /// Send back what arrives; close after the client's FIN (RFC 862).
    Echo,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Cc {
    Cubic,
    Reno,
    None,
}

impl From<Cc> for CongestionControl {
    fn from(cc: Cc) -> CongestionControl {
        match cc {
            Cc::Cubic => CongestionControl::Cubic,
            Cc::Reno => CongestionControl::Reno,
            Cc::None => CongestionControl::None,
        }
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse()
        .map_err(|()| format!("{s:?} is not an IPv4 address with a prefix length (a.b.c.d/n)"))
}

fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    s.parse()
        .map_err(|()| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoltcp-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One listening socket and what its service remembers about the connection it holds.
struct Slot {
    handle: SocketHandle,
    /// Chargen: where in the pattern the next byte comes from.
    chargen_at: usize,
}

fn run(args: &Args) -> Result<(), String> {
    if args.listeners == 0 {
        return Err("--listeners must be at least 1".to_string());
    }
    let mut device = TunTapInterface::new(&args.tap, Medium::Ethernet)
        .map_err(|e| format!("cannot attach to TAP {}: {e}", args.tap))?;
    let fd = device.as_raw_fd();
    let mut config = Config::new(args.mac.into());
    config.random_seed = seed();
    let mut iface = Interface::new(config, &mut device, Instant::now());
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::Ipv4(args.addr))
            .expect("an empty address list has room for one");
    });

    let mut sockets = SocketSet::new(Vec::new());
    let mut slots: Vec<Slot> = (0..args.listeners)
        .map(|_| Slot {
            handle: sockets.add(new_socket(args)),
            chargen_at: 0,
        })
        .collect();
    let block = chargen_block();
    let mut scratch = vec![0u8; ECHO_CHUNK];
    eprintln!(
        "smoltcp-peer: {:?} on {}:{} via {}, {} listening sockets, {} B buffers, {:?} congestion control",
        args.mode, args.addr, args.port, args.tap, args.listeners, args.buffer, args.cc
    );

    loop {
        iface.poll(Instant::now(), &mut device, &mut sockets);
        let mut busy = false;
        for slot in &mut slots {
            let sock = sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
            if sock.state() == State::Closed {
                // Its connection is over (or it is new): take the next one.
                sock.listen(args.port)
                    .map_err(|e| format!("cannot listen on port {}: {e}", args.port))?;
                slot.chargen_at = 0;
                continue;
            }
            busy |= match args.mode {
                Mode::Discard => discard(sock),
                Mode::Chargen => chargen(sock, &block, &mut slot.chargen_at),
                Mode::Echo => echo(sock, &mut scratch),
            };
        }
        if !busy {
            let delay = iface.poll_delay(Instant::now(), &sockets);
            phy::wait(fd, delay).map_err(|e| format!("waiting on the TAP: {e}"))?;
        }
    }
}

fn new_socket(args: &Args) -> tcp::Socket<'static> {
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; args.buffer]),
        tcp::SocketBuffer::new(vec![0u8; args.buffer]),
    );
    sock.set_congestion_control(args.cc.into());
    if matches!(args.mode, Mode::Echo) {
        sock.set_nagle_enabled(false);
    }
    sock
}

/// The initial sequence numbers and ephemeral choices come from this; any varying value will do.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Reads and drops all that has arrived. Returns whether anything happened.
fn drain(sock: &mut tcp::Socket<'_>) -> bool {
    let mut moved = false;
    // recv hands out the contiguous part of the ring, so a wrapped buffer takes two calls.
    while let Ok(n) = sock.recv(|buf| (buf.len(), buf.len())) {
        if n == 0 {
            break;
        }
        moved = true;
    }
    moved
}

/// Once the client has sent its FIN and everything before it was read, sends ours (after
/// whatever is still queued). Returns whether it did.
fn close_after_fin(sock: &mut tcp::Socket<'_>) -> bool {
    if sock.state() == State::CloseWait && sock.recv_queue() == 0 {
        sock.close();
        true
    } else {
        false
    }
}

fn discard(sock: &mut tcp::Socket<'_>) -> bool {
    let moved = drain(sock);
    close_after_fin(sock) || moved
}

/// Fills the send buffer with the pattern, continuing where the last call stopped.
fn chargen(sock: &mut tcp::Socket<'_>, block: &[u8], at: &mut usize) -> bool {
    let mut moved = drain(sock);
    // Err means the send half is not open (not yet, or no more): nothing to do.
    while let Ok(n) = sock.send(|buf| {
        fill_from(buf, block, *at);
        (buf.len(), buf.len())
    }) {
        if n == 0 {
            break;
        }
        *at = (*at + n) % block.len();
        moved = true;
    }
    moved
}

fn echo(sock: &mut tcp::Socket<'_>, scratch: &mut [u8]) -> bool {
    let mut moved = false;
    // Only take from the receive buffer what the send buffer has room for, so nothing waits
    // outside the socket: a client that does not read fills our send buffer, then our receive
    // window closes and it must stop sending.
    while sock.may_send() && sock.can_recv() {
        let room = sock.send_capacity() - sock.send_queue();
        let want = room.min(scratch.len());
        if want == 0 {
            break;
        }
        let n = sock.recv_slice(&mut scratch[..want]).unwrap_or(0);
        if n == 0 {
            break;
        }
        let sent = sock.send_slice(&scratch[..n]).unwrap_or(0);
        assert_eq!(sent, n, "the send buffer had room for {want} bytes");
        moved = true;
    }
    close_after_fin(sock) || moved
}

/// One full rotation of the RFC 864 pattern: 95 lines, line n starting with printable
/// character n.
fn chargen_block() -> Vec<u8> {
    let mut block = Vec::with_capacity(PRINTABLE * (CHARGEN_LINE + 2));
    for line in 0..PRINTABLE {
        for col in 0..CHARGEN_LINE {
            block.push(b' ' + ((line + col) % PRINTABLE) as u8);
        }
        block.extend_from_slice(b"\r\n");
    }
    block
}

/// Copies the endless repetition of `block`, starting at offset `at`, into `buf`.
fn fill_from(buf: &mut [u8], block: &[u8], mut at: usize) {
    let mut done = 0;
    while done < buf.len() {
        let n = (block.len() - at).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&block[at..at + n]);
        done += n;
        at = (at + n) % block.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_wraps_around_the_block() {
        let block = chargen_block();
        assert_eq!(block.len(), 95 * 74);
        assert_eq!(&block[..3], b" !\"");
        assert_eq!(&block[72..75], b"\r\n!");
        // The last 5 bytes, a whole block, then the first 10 again.
        let mut buf = vec![0u8; 5 + block.len() + 10];
        fill_from(&mut buf, &block, block.len() - 5);
        assert_eq!(&buf[..5], &block[block.len() - 5..]);
        assert_eq!(&buf[5..5 + block.len()], &block[..]);
        assert_eq!(&buf[5 + block.len()..], &block[..10]);
    }
}
