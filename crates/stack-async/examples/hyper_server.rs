//! An HTTP/1.1 server on ustack with hyper: every request gets a short text answer naming
//! the method, the path and the client, on a task per connection.
//!
//! ```text
//! ip tuntap add dev ustack0 mode tap
//! ip addr add 192.0.2.1/24 dev ustack0
//! ip link set ustack0 up
//! cargo run -p stack-async --example hyper_server -- --tap ustack0 --addr 192.0.2.2/24 --port 80
//! # in another shell:
//! curl -i http://192.0.2.2/hello
//! ```
//!
//! The same code as a hyper server on `tokio::net::TcpListener`: hyper 1 reads and writes
//! through its own `hyper::rt::Read`/`Write` traits, and `hyper_util::rt::TokioIo` adapts
//! anything with tokio's `AsyncRead`/`AsyncWrite`, which our `TcpStream` has.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use stack_async::{StackHandle, TcpListener};
use stack_core::StackConfig;

struct Args {
    tap: String,
    addr: Ipv4Addr,
    prefix_len: u8,
    port: u16,
}

const USAGE: &str = "usage: hyper_server --tap DEVICE --addr ADDRESS/PREFIX [--port PORT]";

fn parse_args() -> Result<Args, String> {
    let (mut tap, mut cidr, mut port) = (None, None, 80u16);
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
            eprintln!("hyper_server: {e}");
            return ExitCode::FAILURE;
        }
    };

    let listener = match TcpListener::bind(&stack, SocketAddrV4::new(args.addr, args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hyper_server: bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "serving HTTP on http://{}/",
        listener
            .local_addr()
            .unwrap_or(SocketAddrV4::new(args.addr, args.port))
    );

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // The stack stopped (its TAP was deleted, say): nothing more will come.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                eprintln!("hyper_server: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("hyper_server: accept: {e}");
                continue;
            }
        };
        // A task per connection, so a slow client holds up nobody else; its requests (one
        // or many, with keep-alive) are answered by `hello`.
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| hello(req, peer));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                // A client that resets or sends garbage ends its own connection only.
                eprintln!("{peer}: {e}");
            }
        });
    }
}

async fn hello(req: Request<Incoming>, peer: SocketAddrV4) -> Result<Response<String>, Infallible> {
    println!("{peer}: {} {}", req.method(), req.uri());
    let text = format!(
        "hello from ustack, {peer}: you asked for {} {}\n",
        req.method(),
        req.uri().path()
    );
    // hyper sets Content-Length from the body's exact size (a String knows it).
    let mut resp = Response::new(text);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
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
