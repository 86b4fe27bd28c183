//! HTTP through `ustack host` (port 80, hyper on our TcpListener) against curl, a client we
//! did not write, run on the kernel's side of the link: 100 MB from `/bytes/N` arrive with the
//! right length and every byte equal to the generator's; the index page carries the counters;
//! 404, 400, 405 and HEAD answer as HTTP says; a request of garbage, an idle connection and a
//! download aborted halfway cost only their own connection; `--no-http` closes port 80.
//!
//! `/bytes/N` is byte for byte the start of SplitMix64 from state 0, each output little-endian
//! (crates/ustack/src/http.rs); [`Pattern`] below recomputes it independently.
//!
//! `USTACK_HTTP_MB` sets the size of the download (default 100 MB: a debug build of ustack
//! serves it to curl in about 2 s).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testbed::{counters_block, Child};
use ustack_netns_tests::{counter, Bed, TAP, USTACK_CIDR, USTACK_IP};

const HTTP_PORT: u16 = 80;
/// curl gives up after this long, so a stalled transfer fails the test instead of hanging it.
const CURL_MAX_TIME: &str = "60";

fn url(path: &str) -> String {
    format!("http://{USTACK_IP}{path}")
}

/// SplitMix64 from state 0, each output's bytes little-endian: what `/bytes/N` must send.
struct Pattern {
    state: u64,
    /// The current output's bytes, of which `used` are handed out.
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new() -> Pattern {
        Pattern {
            state: 0,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Fill `buf` with the next bytes of the stream, wherever the last call stopped (reads
    /// from a pipe end anywhere, not on word boundaries).
    fn fill(&mut self, mut buf: &mut [u8]) {
        // The rest of a word a previous call began.
        let n = (8 - self.used).min(buf.len());
        buf[..n].copy_from_slice(&self.word[self.used..self.used + n]);
        self.used += n;
        buf = &mut buf[n..];
        // Whole words, a copy each: this test binary is unoptimized and must keep up with curl.
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_word());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word();
            tail.copy_from_slice(&self.word[..tail.len()]);
            self.used = tail.len();
        }
    }
}

/// A curl we spawned ourselves (its stdout is read as a stream, not collected): killed and
/// reaped if the test fails while it runs.
struct Curl(std::process::Child);

impl Drop for Curl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One response as `curl -i` (or `-I`) printed it.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
    /// The whole output, for messages.
    raw: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -sS <args> URL` in the namespace, with the response's head printed (`-i`; HEAD
/// requests pass `-I` instead).
fn curl(bed: &Bed, args: &[&str], path: &str) -> Reply {
    let target = url(path);
    let mut full = vec!["-sS", "--max-time", CURL_MAX_TIME];
    if !args.contains(&"-I") {
        full.push("-i");
    }
    full.extend_from_slice(args);
    full.push(&target);
    let out = bed.kernel("curl", &full);
    assert!(out.success(), "curl failed:\n{out}");
    parse_reply(&out.stdout).unwrap_or_else(|| panic!("curl printed no HTTP response:\n{out}"))
}

fn parse_reply(text: &str) -> Option<Reply> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
        raw: text.to_string(),
    })
}

/// The acceptance run: `curl http://192.0.2.2/bytes/100000000` from the kernel's side
/// gets exactly 100,000,000 bytes, each equal to the generator's, with Content-Length and
/// Content-Type as promised; the download speed is printed.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn curl_downloads_100_mb_equal_to_the_generator() {
    let mb: u64 = std::env::var("USTACK_HTTP_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let total = mb * 1_000_000;
    let bed = Bed::new("http-100mb");
    let host = bed.start_host();

    // The body comes through curl's stdout, compared as it arrives (no 100 MB file, and a
    // mismatch names its offset); curl's own figures come on stderr after the transfer.
    let mut cmd = bed.ns.cmd("curl");
    cmd.args([
        "-sS",
        "--max-time",
        CURL_MAX_TIME,
        "-o",
        "-",
        "-w",
        "%{stderr}%{http_code}\t%{size_download}\t%{speed_download}\t%{time_total}\t\
         %header{content-length}\t%{content_type}\n",
    ])
    .arg(url(&format!("/bytes/{total}")))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = Curl(cmd.spawn().expect("cannot run curl (apt-get install curl)"));
    let mut stdout = child.0.stdout.take().expect("piped");
    let mut stderr = child.0.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut pattern = Pattern::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; buf.len()];
    let mut got = 0u64;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading curl's output after {got} bytes: {e}"),
        };
        pattern.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            let i = (0..n).find(|&i| buf[i] != want[i]).expect("differs");
            panic!(
                "byte {} of /bytes/{total} is {:#04x}, the generator's is {:#04x}\n{}",
                got + i as u64,
                buf[i],
                want[i],
                host.output_so_far()
            );
        }
        got += n as u64;
    }
    let elapsed = start.elapsed();
    let status = child.0.wait().expect("wait for curl");
    let report = err_reader.join().expect("stderr reader");
    assert!(
        status.success(),
        "curl failed ({status}) after {got} bytes: {report}\n{}",
        host.output_so_far()
    );
    let fields: Vec<&str> = report.lines().last().unwrap_or("").split('\t').collect();
    let [code, size, speed, time, length, content_type] = fields[..] else {
        panic!("curl's -w line is not what we asked for: {report:?}");
    };
    assert_eq!(code, "200", "{report}");
    assert_eq!(got, total, "bytes received ({report})");
    assert_eq!(size, total.to_string(), "curl's size_download ({report})");
    assert_eq!(length, total.to_string(), "Content-Length ({report})");
    assert_eq!(content_type, "application/octet-stream", "{report}");
    let speed: f64 = speed.parse().unwrap_or(0.0);
    println!(
        "http: curl downloaded {mb} MB from ustack host in {time} s by curl's clock ({:.1} MB/s; \
         {:.2} s with process start and our comparison, {:.1} MB/s), every byte the generator's",
        speed / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6
    );

    // Let the last ACKs and FINs land before ustack prints its counters.
    std::thread::sleep(Duration::from_millis(300));
    let (out, counters) = host.stop();
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 1, "{out}");
    assert_eq!(counter(&counters, "Tcp", "EstabResets", &out), 0, "{out}");
    assert_eq!(
        counter(&counters, "Tcp", "CurrEstab", &out),
        0,
        "the connection is closed on ustack's side:\n{out}"
    );
    assert!(
        counter(&counters, "Tcp", "OutSegs", &out) > total / 1460,
        "{out}"
    );
}

/// The index page and the answers to wrong requests, each on its own connection, and
/// keep-alive: two requests of one curl run share one connection.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn counters_page_errors_and_head() {
    let bed = Bed::new("http-pages");
    let host = bed.start_host();

    let index = curl(&bed, &[], "/");
    assert_eq!(index.status, 200, "{}", index.raw);
    assert_eq!(
        index.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        index.raw
    );
    assert_eq!(
        index.header("content-length"),
        Some(index.body.len().to_string().as_str()),
        "Content-Length is the body's length:\n{}",
        index.raw
    );
    assert!(
        index.body.contains("Tcp:") && index.body.contains("InSegs"),
        "{}",
        index.raw
    );
    // The page's block parses like the one printed on exit, and counts this very connection.
    let counters = counters_block(&index.body)
        .unwrap_or_else(|| panic!("no counters block on the page:\n{}", index.raw));
    let tcp = counters.get("Tcp").expect("a Tcp section");
    assert_eq!(tcp.get("PassiveOpens"), Some(&1), "{}", index.raw);
    assert_eq!(tcp.get("CurrEstab"), Some(&1), "{}", index.raw);
    assert!(counters.contains_key("Io"), "{}", index.raw);

    let nope = curl(&bed, &[], "/nope");
    assert_eq!(nope.status, 404, "{}", nope.raw);

    let abc = curl(&bed, &[], "/bytes/abc");
    assert_eq!(abc.status, 400, "{}", abc.raw);
    let huge = curl(&bed, &[], "/bytes/99999999999999");
    assert_eq!(huge.status, 400, "over the cap:\n{}", huge.raw);

    let post = curl(&bed, &["-X", "POST"], "/");
    assert_eq!(post.status, 405, "{}", post.raw);
    assert_eq!(post.header("allow"), Some("GET, HEAD"), "{}", post.raw);

    let head = curl(&bed, &["-I"], "/bytes/10");
    assert_eq!(head.status, 200, "{}", head.raw);
    assert_eq!(head.header("content-length"), Some("10"), "{}", head.raw);
    assert_eq!(head.body, "", "HEAD has no body:\n{}", head.raw);

    let empty = curl(&bed, &[], "/bytes/0");
    assert_eq!(empty.status, 200, "{}", empty.raw);
    assert_eq!(empty.header("content-length"), Some("0"), "{}", empty.raw);
    assert_eq!(empty.body, "", "{}", empty.raw);

    // Keep-alive: curl reuses the connection for a second URL of the same run.
    let target = url("/bytes/16");
    let out = bed.kernel(
        "curl",
        &[
            "-sS",
            "--max-time",
            CURL_MAX_TIME,
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &target,
            &target,
        ],
    );
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["200 1", "200 0"],
        "the second request reuses the first's connection:\n{out}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let (out, counters) = host.stop();
    // One connection per curl run above (the page, 404, two 400s, 405, HEAD, /bytes/0,
    // keep-alive).
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 8, "{out}");
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
}

/// A kernel connection to ustack's port 80, made inside the test's namespace.
fn kernel_connect(bed: &Bed) -> TcpStream {
    let ip: Ipv4Addr = USTACK_IP.parse().expect("constant");
    let s = bed
        .ns
        .enter(|| TcpStream::connect(SocketAddrV4::new(ip, HTTP_PORT)))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("cannot connect to port 80 in {}: {e}", bed.ns.name()));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// What goes wrong on one connection stays there: garbage gets 400 and a close, an idle
/// connection holds up nobody, a client that quits mid-download ends only its own
/// connection, and after all of it the service answers, no connection is left established
/// and the host exits cleanly.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn a_bad_connection_costs_only_itself() {
    let bed = Bed::new("http-bad");
    let host = bed.start_host();

    // Connected, never sends a request: its task waits (up to hyper's header timeout)
    // while everyone else is served.
    let idle = kernel_connect(&bed);

    let mut garbage = kernel_connect(&bed);
    garbage
        .write_all(b"THIS IS NOT HTTP\r\n\r\n")
        .expect("send garbage");
    let mut answer = String::new();
    garbage
        .read_to_string(&mut answer)
        .expect("hyper answers garbage and closes");
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "garbage gets 400: {answer:?}\n{}",
        host.output_so_far()
    );

    // Quits after a second of a 10 GiB download, in the middle of hyper's writes: curl's
    // kernel either resets (unread data at close) or sends FIN and then resets what keeps
    // coming; either way the task serving it fails and only that task.
    let out = bed.kernel(
        "curl",
        &[
            "-sS",
            "--max-time",
            "1",
            "-o",
            "/dev/null",
            &url("/bytes/10737418240"),
        ],
    );
    assert_eq!(out.code(), Some(28), "curl stopped by --max-time:\n{out}");

    let after = curl(&bed, &[], "/bytes/1000");
    assert_eq!(after.status, 200, "{}", after.raw);
    assert_eq!(
        after.header("content-length"),
        Some("1000"),
        "{}",
        after.raw
    );
    drop(idle);

    std::thread::sleep(Duration::from_millis(500));
    let (out, counters) = host.stop();
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
}

/// `--no-http` leaves port 80 closed: curl's connection is refused (exit 7).
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn no_http_closes_port_80() {
    let bed = Bed::new("http-off");
    let child =
        Child::spawn(bed.ustack(&["host", "--tap", TAP, "--addr", USTACK_CIDR, "--no-http"]))
            .unwrap_or_else(|e| panic!("cannot start ustack host: {e}"));
    let up = testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        bed.ping(&["-c", "1", "-W", "1", USTACK_IP]).success()
    });
    assert!(up, "ustack host --no-http did not answer ping");
    let out = bed.kernel("curl", &["-sS", "--max-time", "10", &url("/")]);
    let host = child.stop();
    assert_eq!(out.code(), Some(7), "connection refused:\n{out}\n{host}");
    assert!(!host.stderr.contains("http on port"), "{host}");
}
