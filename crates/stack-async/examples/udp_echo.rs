//! A UDP echo server on ustack: every datagram goes back to its sender.
//!
//! ```text
//! ip tuntap add dev ustack0 mode tap
//! ip addr add 192.0.2.1/24 dev ustack0
//! ip link set ustack0 up
//! cargo run -p stack-async --example udp_echo -- --tap ustack0 --addr 192.0.2.2/24 --port 7
//! # in another shell:
//! echo hello | nc -u -w1 192.0.2.2 7
//! ```
//!
//! Written like a `tokio::net::UdpSocket` server would be: only the socket type and
//! the stack handle differ.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;

use stack_async::{StackHandle, UdpSocket};
use stack_core::StackConfig;

struct Args {
    tap: String,
    addr: Ipv4Addr,
    prefix_len: u8,
    port: u16,
}

const USAGE: &str = "usage: udp_echo --tap DEVICE --addr ADDRESS/PREFIX [--port PORT]";

fn parse_args() -> Result<Args, String> {
    let (mut tap, mut cidr, mut port) = (None, None, 7u16);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--tap" => tap = Some(value()?),
            "--addr" => cidr = Some(value()?),
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let tap = tap.ok_or(USAGE)?;
    let cidr = cidr.ok_or(USAGE)?;
    let (addr, len) = cidr.split_once('/').ok_or(format!(
        "--addr {cidr}: expected ADDRESS/PREFIX, e.g. 192.0.2.2/24"
    ))?;
    Ok(Args {
        tap,
        addr: addr.parse().map_err(|e| format!("--addr {addr}: {e}"))?,
        prefix_len: len
            .parse()
            .map_err(|e| format!("--addr prefix {len}: {e}"))?,
        port,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };

    // The stack runs on a thread of its own; the handle talks to it.
    let config = StackConfig::new(
        StackConfig::default_mac(args.addr),
        args.addr,
        args.prefix_len,
    );
    let stack = match StackHandle::spawn(&args.tap, config, rand_seed()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo: {e}");
            return ExitCode::FAILURE;
        }
    };

    let sock = match UdpSocket::bind(&stack, SocketAddrV4::new(args.addr, args.port)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo: bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "echoing UDP on {}",
        sock.local_addr()
            .unwrap_or(SocketAddrV4::new(args.addr, args.port))
    );

    let mut buf = vec![0u8; 65536];
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            // The stack stopped (its TAP was deleted, say): nothing more will come.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                eprintln!("udp_echo: {e}");
                return ExitCode::FAILURE;
            }
            // Anything else concerns one datagram or one peer: keep serving.
            Err(e) => {
                eprintln!("udp_echo: recv: {e}");
                continue;
            }
        };
        println!("{len} bytes from {peer}");
        if let Err(e) = sock.send_to(&buf[..len], peer).await {
            eprintln!("udp_echo: reply to {peer}: {e}");
        }
    }
}

/// The stack's seed (it picks ephemeral ports and ARP timings from it): any value
/// that differs between runs will do.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}
