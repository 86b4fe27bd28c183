//! A TCP echo server on ustack: every connection gets its bytes back, on a task of its
//! own.
//!
//! ```text
//! ip tuntap add dev ustack0 mode tap
//! ip addr add 192.0.2.1/24 dev ustack0
//! ip link set ustack0 up
//! cargo run -p stack-async --example tcp_echo -- --tap ustack0 --addr 192.0.2.2/24 --port 7
//! # in another shell:
//! echo hello | nc -N 192.0.2.2 7
//! ```
//!
//! Written like a `tokio::net::TcpListener` server would be: only the listener type
//! and the stack handle differ.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;

use stack_async::{StackHandle, TcpListener, TcpStream};
use stack_core::StackConfig;
use tokio::io::AsyncWriteExt;

struct Args {
    tap: String,
    addr: Ipv4Addr,
    prefix_len: u8,
    port: u16,
}

const USAGE: &str = "usage: tcp_echo --tap DEVICE --addr ADDRESS/PREFIX [--port PORT]";

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
            eprintln!("tcp_echo: {e}");
            return ExitCode::FAILURE;
        }
    };

    let listener = match TcpListener::bind(&stack, SocketAddrV4::new(args.addr, args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp_echo: bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "echoing TCP on {}",
        listener
            .local_addr()
            .unwrap_or(SocketAddrV4::new(args.addr, args.port))
    );

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // The stack stopped (its TAP was deleted, say): nothing more will come.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                eprintln!("tcp_echo: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("tcp_echo: accept: {e}");
                continue;
            }
        };
        println!("connection from {peer}");
        tokio::spawn(async move {
            match echo(stream).await {
                Ok(n) => println!("{peer}: echoed {n} bytes, closed"),
                Err(e) => println!("{peer}: {e}"),
            }
        });
    }
}

/// Copy the client's bytes back until its FIN, then send ours.
async fn echo(mut stream: TcpStream) -> std::io::Result<u64> {
    let (mut from_client, mut to_client) = stream.split();
    let n = tokio::io::copy(&mut from_client, &mut to_client).await?;
    to_client.shutdown().await?;
    Ok(n)
}

/// The stack's seed (it picks ephemeral ports and initial sequence numbers from it):
/// any value that differs between runs will do.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}
