//! An HTTP/1.1 client on ustack with hyper: GET one URL on the link and print the status,
//! the headers, and the body's length and SHA-256 (the body itself may be binary or huge,
//! so it is hashed as it arrives, never held whole).
//!
//! ```text
//! ip tuntap add dev ustack1 mode tap
//! ip addr add 192.0.2.1/24 dev ustack1
//! ip link set ustack1 up
//! python3 -m http.server 8000 --bind 192.0.2.1 &     # or any HTTP server on the link
//! cargo run -p stack-async --example http_client -- --tap ustack1 --addr 192.0.2.3/24 \
//!     http://192.0.2.1:8000/
//! ```
//!
//! Against `ustack host` (port 80), `http://192.0.2.2/bytes/1000000` should hash the same as
//! `curl -s http://192.0.2.2/bytes/1000000 | sha256sum`.
//!
//! Our stack resolves no names, so the URL's host is an IPv4 address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Instant;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use stack_async::{StackHandle, TcpStream};
use stack_core::StackConfig;

struct Args {
    tap: String,
    addr: Ipv4Addr,
    prefix_len: u8,
    url: Uri,
}

const USAGE: &str = "usage: http_client --tap DEVICE --addr ADDRESS/PREFIX URL";

fn parse_args() -> Result<Args, String> {
    let (mut tap, mut cidr, mut url) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--tap" => tap = Some(value()?),
            "--addr" => cidr = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            flag if flag.starts_with('-') => {
                return Err(format!("unknown argument {flag}\n{USAGE}"))
            }
            _ if url.is_none() => url = Some(arg),
            _ => return Err(format!("one URL only\n{USAGE}")),
        }
    }
    let (tap, cidr, url) = (tap.ok_or(USAGE)?, cidr.ok_or(USAGE)?, url.ok_or(USAGE)?);
    let (addr, len) = cidr.split_once('/').ok_or(format!(
        "--addr {cidr}: expected ADDRESS/PREFIX, e.g. 192.0.2.3/24"
    ))?;
    Ok(Args {
        tap,
        addr: addr.parse().map_err(|e| format!("--addr {addr}: {e}"))?,
        prefix_len: len
            .parse()
            .map_err(|e| format!("--addr prefix {len}: {e}"))?,
        url: url.parse().map_err(|e| format!("{url}: {e}"))?,
    })
}

/// Where to connect: `http://` only (no TLS here), and an address, not a name.
fn server_of(url: &Uri) -> Result<SocketAddrV4, String> {
    if url.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs"));
    }
    let host = url.host().ok_or(format!("{url}: no host"))?;
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{url}: the host must be an IPv4 address, not \"{host}\""))?;
    Ok(SocketAddrV4::new(ip, url.port_u16().unwrap_or(80)))
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
    let server = match server_of(&args.url) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("http_client: {msg}");
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
            eprintln!("http_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = get(&stack, server, &args.url).await;
    // Stop the stack thread before exiting, as a program that goes on would when done.
    drop(stack);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_client: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn get(stack: &StackHandle, server: SocketAddrV4, url: &Uri) -> Result<(), Error> {
    let start = Instant::now();
    let stream = TcpStream::connect(stack, server)
        .await
        .map_err(|e| format!("connect to {server}: {e}"))?;
    // hyper's client runs in two parts: `sender` issues requests, `conn` does the I/O and
    // must be polled for anything to happen, so it gets a task of its own. TokioIo adapts
    // our tokio AsyncRead/AsyncWrite stream to hyper's I/O traits.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let io = tokio::spawn(conn);

    let path = url.path_and_query().map_or("/", |p| p.as_str());
    // HTTP/1.1 requires Host (RFC 9112 §3.2); hyper's low-level client does not add it.
    let authority = url
        .authority()
        .map_or(server.to_string(), |a| a.to_string());
    let req = Request::get(path)
        .header(HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;

    println!("{:?} {}", resp.version(), resp.status());
    for (name, value) in resp.headers() {
        println!("{name}: {}", value.to_str().unwrap_or("(not text)"));
    }
    // Frames arrive as the server sends them; hash each and let it go.
    let first_byte = start.elapsed();
    let mut body = resp.into_body();
    let (mut len, mut hash) = (0u64, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len() as u64;
            hash.update(data);
        }
    }
    let elapsed = start.elapsed();
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!();
    println!("body: {len} bytes, sha256 {hex}");
    let secs = (elapsed - first_byte).as_secs_f64();
    // A rate over a few kilobytes measures the round trip, not the transfer: say it for
    // bodies big enough to mean something.
    if len >= 1_000_000 && secs > 0.0 {
        println!(
            "{:.3} s in all, {:.1} MB/s after the headers",
            elapsed.as_secs_f64(),
            len as f64 / secs / 1e6
        );
    }

    // Done: dropping the sender lets `conn` finish, closing the connection with our FIN.
    drop(sender);
    io.await??;
    Ok(())
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
