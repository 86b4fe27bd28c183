//! HTTP/1.1 on port 80 of `ustack host`, served by hyper over our `TcpListener`, a task per
//! connection (the accept loop is the TCP services' `serve`).
//!
//! - `GET /`: the counters `ustack host` prints on exit (/proc/net/snmp style), as text.
//! - `GET /bytes/N`: N pseudo-random bytes, generated while they are sent, so a 10 GiB
//!   download costs one 64 KiB chunk of memory at a time. Byte i of every answer is byte i of
//!   one fixed stream (see [`Pattern`]), so a client can recompute what it should get.
//! - `HEAD` of either: the same headers, no body. Other methods: 405; other paths: 404;
//!   an N that is not a number or over [`MAX_BYTES`]: 400.
//!
//! A failed connection (a client that resets, a malformed request) ends that connection's
//! task and is logged at debug level (`USTACK_LOG=ustack=debug`); the listener goes on.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use stack_async::{StackHandle, TcpListener, TcpStream};

use crate::services;

/// HTTP's well-known port (RFC 9110 §4.2.1).
pub const HTTP_PORT: u16 = 80;
/// The largest N `/bytes/N` serves: big enough for any throughput run, small enough that a
/// typo does not start a download that never ends.
pub const MAX_BYTES: u64 = 10 << 30;
/// Bytes generated per body frame. A multiple of 8, so every frame but the last ends on a
/// generator output boundary and frames join into one unbroken stream.
const CHUNK: usize = 64 * 1024;
/// A client that opened a connection has this long to send a request's headers, so idle
/// connections (or a slowloris) do not hold tasks forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Listen on port 80 of all our addresses and spawn the accept loop on the current tokio
/// runtime. Returns a line describing what runs, for the user.
pub async fn start(stack: &StackHandle) -> io::Result<String> {
    let listener =
        TcpListener::bind(stack, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, HTTP_PORT)).await?;
    let stack = stack.clone();
    tokio::spawn(services::serve(listener, "http", move |stream| {
        connection(stream, stack.clone())
    }));
    Ok(format!("http on port {HTTP_PORT}"))
}

/// Serve one connection's requests (keep-alive: as many as the client sends) until it
/// closes.
async fn connection(stream: TcpStream, stack: StackHandle) -> io::Result<()> {
    let service = hyper::service::service_fn(move |req| {
        let stack = stack.clone();
        async move { Ok::<_, Infallible>(respond(&stack, &req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // hyper speaks to `hyper::rt::Read/Write`; TokioIo adapts our tokio AsyncRead/AsyncWrite.
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(io::Error::other)
}

/// What a request asks for, decided from its method and path alone.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Counters,
    Bytes(u64),
    /// 400, with the reason for the client.
    BadRequest(String),
    NotFound,
    MethodNotAllowed,
}

fn route(method: &Method, path: &str) -> Route {
    if method != Method::GET && method != Method::HEAD {
        return Route::MethodNotAllowed;
    }
    if path == "/" {
        return Route::Counters;
    }
    let Some(n) = path.strip_prefix("/bytes/") else {
        return Route::NotFound;
    };
    // Digits only: u64's parser would also take a leading '+'.
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Route::BadRequest(format!("/bytes/N: \"{n}\" is not a number of bytes"));
    }
    match n.parse::<u64>() {
        Ok(n) if n <= MAX_BYTES => Route::Bytes(n),
        _ => Route::BadRequest(format!("/bytes/N: N is at most {MAX_BYTES}")),
    }
}

async fn respond(stack: &StackHandle, req: &Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let (status, content_type, body) = match route(req.method(), req.uri().path()) {
        Route::Counters => match counters_page(stack).await {
            Ok(page) => (StatusCode::OK, "text/plain; charset=utf-8", page.into()),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("the stack stopped: {e}\n").into(),
            ),
        },
        Route::Bytes(n) => (
            StatusCode::OK,
            "application/octet-stream",
            Body::Pattern(Pattern::new(n)),
        ),
        Route::BadRequest(why) => (
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            format!("{why}\n").into(),
        ),
        Route::NotFound => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try / or /bytes/N\n".into(),
        ),
        Route::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".into(),
        ),
    };
    let len = body.len();
    // HEAD: the headers GET would have (RFC 9110 §9.3.2), Content-Length included, and an
    // empty body (hyper would not send one anyway, but then nothing is generated either).
    let body = if head { Body::Full(None) } else { body };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

/// The index page: what is served, then the same counters block `ustack host` prints on
/// exit, so the same parser reads either.
async fn counters_page(stack: &StackHandle) -> io::Result<String> {
    let counters = crate::cli::counters(stack).await?;
    Ok(format!(
        "ustack host on {tap}\n\
         GET /bytes/N: N pseudo-random bytes (SplitMix64 from state 0, each output \
         little-endian), N up to {MAX_BYTES}\n\n{counters}",
        tap = stack.tap_name()
    ))
}

/// A response body: a small complete one, or generated bytes.
pub enum Body {
    Full(Option<Bytes>),
    Pattern(Pattern),
}

impl Body {
    /// Bytes still to send: the Content-Length of a whole body.
    fn len(&self) -> u64 {
        match self {
            Body::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            Body::Pattern(p) => p.remaining,
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Full(Some(Bytes::from(s)))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::Full(Some(Bytes::from_static(s.as_bytes())))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Body::Full(b) => b.take().filter(|b| !b.is_empty()),
            Body::Pattern(p) => p.next_chunk(),
        };
        // Never Pending: hyper polls for a frame only when its write buffer has room, so
        // generating on demand keeps exactly as much in memory as the connection can take.
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

/// The bytes of `/bytes/N`: byte i is byte `i % 8` of the little-endian encoding of the
/// `i / 8`-th output (counting from 0) of SplitMix64 (Steele, Lea and Flood 2014; Vigna's
/// `splitmix64.c`) started from state 0. The first eight bytes are therefore
/// `af cd 1d 7b 39 a8 20 e2` (the output 0xe220a8397b1dcdaf). The same stream for every N,
/// so a shorter answer is a prefix of a longer one.
pub struct Pattern {
    state: u64,
    remaining: u64,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern {
            state: 0,
            remaining: len,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next up to `CHUNK` bytes, `None` at the end.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let n = usize::try_from(self.remaining.min(CHUNK as u64)).expect("at most CHUNK");
        if n == 0 {
            return None;
        }
        let mut buf = vec![0u8; n];
        for word in buf.chunks_mut(8) {
            let len = word.len();
            word.copy_from_slice(&self.next_u64().to_le_bytes()[..len]);
        }
        self.remaining -= n as u64;
        Some(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(mut p: Pattern) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = p.next_chunk() {
            assert!(chunk.len() <= CHUNK);
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[test]
    fn pattern_is_splitmix64_from_zero() {
        // Known answers of the reference splitmix64.c with x = 0.
        let mut p = Pattern::new(0);
        assert_eq!(p.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(p.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(
            collect(Pattern::new(8)),
            [0xaf, 0xcd, 0x1d, 0x7b, 0x39, 0xa8, 0x20, 0xe2]
        );
    }

    #[test]
    fn every_length_is_a_prefix_of_one_stream() {
        let long = collect(Pattern::new(3 * CHUNK as u64 + 5));
        assert_eq!(long.len(), 3 * CHUNK + 5);
        for n in [0, 1, 7, 8, 9, CHUNK - 1, CHUNK, CHUNK + 3, 2 * CHUNK + 11] {
            assert_eq!(collect(Pattern::new(n as u64)), long[..n], "N = {n}");
        }
    }

    #[test]
    fn body_reports_its_exact_length() {
        use hyper::body::Body as _;
        let b = Body::Pattern(Pattern::new(100_000_000));
        assert_eq!(b.size_hint().exact(), Some(100_000_000));
        assert!(!b.is_end_stream());
        let empty = Body::Full(None);
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.is_end_stream());
    }

    #[test]
    fn routes() {
        let get = Method::GET;
        assert_eq!(route(&get, "/"), Route::Counters);
        assert_eq!(route(&Method::HEAD, "/bytes/10"), Route::Bytes(10));
        assert_eq!(route(&get, "/bytes/0"), Route::Bytes(0));
        assert_eq!(
            route(&get, &format!("/bytes/{MAX_BYTES}")),
            Route::Bytes(MAX_BYTES)
        );
        for bad in [
            "abc",
            "",
            "+5",
            "-1",
            "1e3",
            "10 ",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(route(&get, &format!("/bytes/{bad}")), Route::BadRequest(_)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            route(&get, &format!("/bytes/{}", MAX_BYTES + 1)),
            Route::BadRequest(_)
        ));
        assert_eq!(route(&get, "/nope"), Route::NotFound);
        assert_eq!(route(&get, "/bytes"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/"), Route::MethodNotAllowed);
        assert_eq!(route(&Method::DELETE, "/nope"), Route::MethodNotAllowed);
    }
}
