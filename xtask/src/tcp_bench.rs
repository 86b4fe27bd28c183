//! The TCP measurements of `cargo xtask bench`: four probes run by a kernel client in the
//! client namespace against a server's discard (9), chargen (19) and echo (7) ports, and the
//! kernel's own servers for those ports, which the veth reference runs.
//!
//! The client is always the kernel's TCP, driven by threads of xtask that joined the client
//! namespace (`Netns::enter`), so only the server side differs between targets: ustack host,
//! smoltcp-peer, or the kernel servers here. Every blocking call has a timeout and every loop a
//! deadline, so a stalled server shows as an error or a note, never as a hung bench.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::{percentile, Netns};

use crate::bench::{Measured, Sample};
use crate::util;

pub const RX_ROW: &str = "TCP bulk, stack receives (Gb/s)";
pub const TX_ROW: &str = "TCP bulk, stack sends (Gb/s)";
pub const RR_P50_ROW: &str = "TCP 1-byte RR p50 (µs)";
pub const RR_P99_ROW: &str = "TCP 1-byte RR p99 (µs)";
pub const CPS_ROW: &str = "TCP connections/s";
/// The rows these probes fill, in table order.
pub const ROWS: &[&str] = &[RX_ROW, TX_ROW, RR_P50_ROW, RR_P99_ROW, CPS_ROW];

/// Bytes per bulk transfer: the 1 GB. At the 3-9 Gb/s the userspace stacks reach here
/// one transfer takes 1-3 s, so three per row and direction keep the whole bench (all three
/// targets, every row) near a minute of measurement. The bytes are not checked: the netns
/// tests check what the services send, this only times it.
pub const BULK_BYTES: u64 = 1_000_000_000;
/// Transfers per bulk row; the row shows the median, and a note the spread when it is wide
/// (ustack's speed depends on where the scheduler puts its threads on this 2-CPU VM).
pub const BULK_RUNS: usize = 3;
/// A transfer still running after this is stopped and reported at the rate it had, with a
/// note: a slow stack must not hold up the bench for minutes.
const BULK_DEADLINE: Duration = Duration::from_secs(20);
/// How long one read or write may block without progress before the transfer counts as
/// stalled (an error, with the bytes moved so far).
const STALL: Duration = Duration::from_secs(5);
/// The client's reads and writes: big enough that syscalls do not dominate.
const CHUNK: usize = 256 * 1024;

/// Round trips timed over one connection, after an untimed warmup, in consecutive blocks: the
/// rows show percentiles of all of them, and a note the blocks' medians when they disagree
/// (a round trip through a userspace stack costs a cross-CPU wakeup or not depending on where
/// the scheduler put the two processes, and on this VM that can change mid-run).
const RR_COUNT: usize = 10_000;
const RR_BLOCKS: usize = 5;
const RR_WARMUP: usize = 200;
/// Connections per second: sequential connect, 1 byte echoed, close, counted in consecutive
/// intervals (median shown) after a warmup.
const CPS_INTERVALS: (usize, Duration) = (3, Duration::from_millis(700));
const CPS_WARMUP: Duration = Duration::from_millis(200);
/// Failed connections (refused, timed out) tolerated before the row is given up.
const CPS_MAX_FAILURES: u32 = 20;
/// The row is given up when its intervals have not all been counted by then (connections
/// that each take up to a timeout to fail would otherwise stretch it to minutes).
const CPS_DEADLINE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One echo round trip, a connection's setup or teardown: far above any of them here.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A server's service, by the port it answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Discard,
    Chargen,
    Echo,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Discard, Service::Chargen, Service::Echo];

    /// The well-known port: RFC 863 discard, RFC 864 chargen, RFC 862 echo.
    pub fn port(self) -> u16 {
        match self {
            Service::Discard => 9,
            Service::Chargen => 19,
            Service::Echo => 7,
        }
    }

    /// The name smoltcp-peer's `--mode` takes.
    pub fn mode(self) -> &'static str {
        match self {
            Service::Discard => "discard",
            Service::Chargen => "chargen",
            Service::Echo => "echo",
        }
    }
}

/// One TCP measurement: what it is called, the service it needs, and the client that runs it
/// from a namespace against a server address.
pub struct TcpProbe {
    pub name: &'static str,
    pub service: Service,
    pub run: fn(&Netns, Ipv4Addr) -> util::Result<Measured>,
}

/// Every TCP probe, in table order.
pub const PROBES: &[TcpProbe] = &[
    TcpProbe {
        name: "tcp bulk to discard",
        service: Service::Discard,
        run: bulk_to_discard,
    },
    TcpProbe {
        name: "tcp bulk from chargen",
        service: Service::Chargen,
        run: bulk_from_chargen,
    },
    TcpProbe {
        name: "tcp 1-byte echo rtt",
        service: Service::Echo,
        run: echo_rtt,
    },
    TcpProbe {
        name: "tcp connect rate",
        service: Service::Echo,
        run: connect_rate,
    },
];

/// Readies a client namespace for the connection-rate probe, the same for every target. The
/// probe opens up to tens of thousands of connections in two seconds, and the client closes
/// each one first, so each would sit in TIME-WAIT for 60 s holding its port: the port range
/// runs out, and long before that connect slows down scanning for a free port (against
/// smoltcp, which sends no timestamps so `tcp_tw_reuse` cannot help, the rate fell from 35k to
/// 300 connections/s within a second). With no TIME-WAIT buckets the kernel closes such a
/// socket outright once the FINs are exchanged: the close on the wire is the same orderly one,
/// only the client's 60 s of memory of it is gone, which a lossless link never needs. A
/// namespace sysctl: the root namespace keeps its own.
pub fn prepare_client(ns: &Netns) -> io::Result<()> {
    ns.set_sysctl("net.ipv4.tcp_max_tw_buckets", "0")
}

fn connect(server: Ipv4Addr, service: Service) -> io::Result<TcpStream> {
    let addr = SocketAddr::V4(SocketAddrV4::new(server, service.port()));
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    Ok(stream)
}

/// How one bulk transfer ended.
struct Transfer {
    bytes: u64,
    elapsed: Duration,
    /// Stopped at `BULK_DEADLINE` before all `BULK_BYTES` went through.
    cut_short: bool,
}

impl Transfer {
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

fn stalled(what: &str, bytes: u64, e: &io::Error) -> String {
    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        format!(
            "stalled: no progress for {} s while {what}, after {:.1} MB",
            STALL.as_secs(),
            bytes as f64 / 1e6
        )
    } else {
        format!("{what}, after {:.1} MB: {e}", bytes as f64 / 1e6)
    }
}

/// The stack receives: write `BULK_BYTES` to discard, shut down our side, wait for the server's
/// FIN. Timed from before connect to that FIN, so what the server had not yet read is counted
/// only once it has read it all.
fn send_to_discard(server: Ipv4Addr) -> util::Result<Transfer> {
    let data = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut stream = connect(server, Service::Discard).map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    while sent < BULK_BYTES {
        util::check_interrupt()?;
        if start.elapsed() >= BULK_DEADLINE {
            // Dropped unfinished: the server sees our FIN early, which is fine for discard.
            return Ok(Transfer {
                bytes: sent,
                elapsed: start.elapsed(),
                cut_short: true,
            });
        }
        let n = (BULK_BYTES - sent).min(CHUNK as u64) as usize;
        match stream.write(&data[..n]) {
            Ok(0) => return Err(format!("write returned 0 after {sent} bytes")),
            Ok(k) => sent += k as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(stalled("writing", sent, &e)),
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => return Err("discard sent data back".to_string()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(stalled("waiting for the server's FIN", sent, &e)),
        }
    }
    Ok(Transfer {
        bytes: sent,
        elapsed: start.elapsed(),
        cut_short: false,
    })
}

/// The stack sends: read `BULK_BYTES` from chargen, then close (a reset, as bytes are still
/// arriving, which ends chargen's connection). Timed from before connect to the last byte.
fn read_from_chargen(server: Ipv4Addr) -> util::Result<Transfer> {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut stream = connect(server, Service::Chargen).map_err(|e| e.to_string())?;
    let mut got = 0u64;
    while got < BULK_BYTES {
        util::check_interrupt()?;
        if start.elapsed() >= BULK_DEADLINE {
            return Ok(Transfer {
                bytes: got,
                elapsed: start.elapsed(),
                cut_short: true,
            });
        }
        let n = (BULK_BYTES - got).min(CHUNK as u64) as usize;
        match stream.read(&mut buf[..n]) {
            Ok(0) => return Err(format!("chargen closed after {got} bytes")),
            Ok(k) => got += k as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(stalled("reading", got, &e)),
        }
    }
    let elapsed = start.elapsed();
    Ok(Transfer {
        bytes: got,
        elapsed,
        cut_short: false,
    })
}

fn bulk_to_discard(client: &Netns, server: Ipv4Addr) -> util::Result<Measured> {
    bulk(client, server, RX_ROW, send_to_discard)
}

fn bulk_from_chargen(client: &Netns, server: Ipv4Addr) -> util::Result<Measured> {
    bulk(client, server, TX_ROW, read_from_chargen)
}

/// `BULK_RUNS` transfers one after another, each on a fresh connection; the median rate.
fn bulk(
    client: &Netns,
    server: Ipv4Addr,
    row: &'static str,
    transfer: fn(Ipv4Addr) -> util::Result<Transfer>,
) -> util::Result<Measured> {
    let mut runs = Vec::with_capacity(BULK_RUNS);
    let mut m = Measured::default();
    for i in 0..BULK_RUNS {
        let t = client
            .enter(|| transfer(server))
            .map_err(|e| format!("cannot enter the client namespace: {e}"))?
            .map_err(|e| format!("transfer {} of {BULK_RUNS}: {e}", i + 1))?;
        if t.cut_short {
            m.notes.push(format!(
                "transfer {} stopped at the {} s deadline after {:.0} MB of {:.0} MB ({:.2} Gb/s so far)",
                i + 1,
                BULK_DEADLINE.as_secs(),
                t.bytes as f64 / 1e6,
                BULK_BYTES as f64 / 1e6,
                t.gbps()
            ));
        }
        runs.push(t.gbps());
        if t.cut_short && i + 1 < BULK_RUNS {
            // A stack this slow would only spend another deadline per run saying so again.
            m.notes
                .push(format!("the other {} transfers skipped", BULK_RUNS - i - 1));
            break;
        }
    }
    m.samples.push(Sample {
        row,
        value: median(&runs),
    });
    if let Some(note) = spread_note(&runs, "Gb/s", 2) {
        m.notes.push(format!("transfers {note} (median shown)"));
    }
    Ok(m)
}

/// One connection to echo with TCP_NODELAY, one byte out and back `RR_COUNT` times, each round
/// trip timed; percentiles of those.
fn echo_rtt(client: &Netns, server: Ipv4Addr) -> util::Result<Measured> {
    let times = client
        .enter(|| -> util::Result<Vec<f64>> {
            let mut stream = connect(server, Service::Echo).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(REPLY_TIMEOUT))
                .and_then(|()| stream.set_nodelay(true))
                .map_err(|e| e.to_string())?;
            let mut times = Vec::with_capacity(RR_COUNT);
            for i in 0..RR_WARMUP + RR_COUNT {
                if i % 1000 == 0 {
                    util::check_interrupt()?;
                }
                let started = Instant::now();
                round_trip(&mut stream).map_err(|e| format!("round trip {i}: {e}"))?;
                if i >= RR_WARMUP {
                    times.push(started.elapsed().as_secs_f64() * 1e6);
                }
            }
            Ok(times)
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))??;
    let mut m = Measured::default();
    for (row, p) in [(RR_P50_ROW, 50.0), (RR_P99_ROW, 99.0)] {
        if let Some(value) = percentile(&times, p) {
            m.samples.push(Sample { row, value });
        }
    }
    let block_p50s: Vec<f64> = times
        .chunks(RR_COUNT.div_ceil(RR_BLOCKS))
        .filter_map(|block| percentile(block, 50.0))
        .collect();
    if let Some(note) = spread_note(&block_p50s, "µs", 1) {
        m.notes.push(format!(
            "p50 of each {} round trips {note}",
            RR_COUNT.div_ceil(RR_BLOCKS)
        ));
    }
    Ok(m)
}

/// Sends one byte and reads it back.
fn round_trip(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(b"x")?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b)?;
    if b[0] != b'x' {
        return Err(io::Error::other(format!("echoed {:?}, not 'x'", b[0])));
    }
    Ok(())
}

/// One connection's whole life: connect, one byte echoed, close (our FIN first).
fn one_connection(server: Ipv4Addr) -> io::Result<()> {
    let mut stream = connect(server, Service::Echo)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_nodelay(true)?;
    round_trip(&mut stream)
}

/// Sequential connections: the next starts when the previous one's byte came back and it was
/// closed. One at a time measures a connection's full cost (handshake, accept, first data,
/// teardown) without the client's parallelism deciding the number.
fn connect_rate(client: &Netns, server: Ipv4Addr) -> util::Result<Measured> {
    let (intervals, interval) = CPS_INTERVALS;
    let (rates, failures) = client
        .enter(|| -> util::Result<(Vec<f64>, Vec<String>)> {
            let mut rates = Vec::with_capacity(intervals);
            let mut failures = Vec::new();
            let started = Instant::now();
            let warm_until = started + CPS_WARMUP;
            // The interval being counted (None during the warmup): its start and connections.
            let mut current: Option<(Instant, u64)> = None;
            while rates.len() < intervals {
                util::check_interrupt()?;
                let now = Instant::now();
                if now >= started + CPS_DEADLINE {
                    return Err(format!(
                        "gave up after {} s with {} of {intervals} intervals counted and {} \
                         connections failed{}",
                        CPS_DEADLINE.as_secs(),
                        rates.len(),
                        failures.len(),
                        failures
                            .last()
                            .map(|e| format!(", the last: {e}"))
                            .unwrap_or_default()
                    ));
                }
                match current {
                    None if now >= warm_until => current = Some((now, 0)),
                    Some((since, n)) if now >= since + interval => {
                        rates.push(n as f64 / now.duration_since(since).as_secs_f64());
                        current = Some((now, 0));
                        continue;
                    }
                    _ => {}
                }
                match one_connection(server) {
                    Ok(()) => {
                        if let Some((_, n)) = current.as_mut() {
                            *n += 1;
                        }
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        if failures.len() as u32 > CPS_MAX_FAILURES {
                            return Err(format!(
                                "{} connections failed, the last: {e}",
                                failures.len()
                            ));
                        }
                    }
                }
            }
            Ok((rates, failures))
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))??;
    let mut m = Measured::default();
    m.samples.push(Sample {
        row: CPS_ROW,
        value: median(&rates),
    });
    if let Some(note) = spread_note(&rates, "conn/s", 0) {
        m.notes.push(format!("intervals {note} (median shown)"));
    }
    if let Some(last) = failures.last() {
        m.notes.push(format!(
            "{} connections failed (not counted), the last: {last}",
            failures.len()
        ));
    }
    Ok(m)
}

/// The median (the lower middle one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// "differ: a, b, c <unit>" when the largest is over 1.5x the smallest.
fn spread_note(v: &[f64], unit: &str, decimals: usize) -> Option<String> {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    (hi > 1.5 * lo).then(|| {
        let all: Vec<String> = v.iter().map(|r| format!("{r:.decimals$}")).collect();
        format!("differ: {} {unit}", all.join(", "))
    })
}

/// The kernel's discard, chargen and echo on one address of a namespace: the veth reference's
/// counterpart of ustack host's TCP services. Each service is a few threads blocked in accept
/// on the same listener, each serving the connection it got (the pre-threaded server: a
/// connection costs neither a thread creation nor a handoff between threads); blocking
/// sockets, default buffer sizes, TCP_NODELAY on echo. Stopped and joined when dropped.
pub struct KernelServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Threads per service: more than the connections any probe has open at once.
const WORKERS: usize = 4;
/// How often idle server threads look at the stop flag.
const SERVER_POLL: Duration = Duration::from_millis(100);

impl KernelServers {
    /// Binds all three ports in `ns` (so a bind error is reported here) and starts serving.
    pub fn start(ns: &Netns, ip: Ipv4Addr) -> io::Result<KernelServers> {
        let mut servers = KernelServers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for service in Service::ALL {
            let addr = SocketAddrV4::new(ip, service.port());
            let listener = ns.enter(|| TcpListener::bind(addr))??;
            set_accept_timeout(&listener, SERVER_POLL)?;
            for i in 0..WORKERS {
                let listener = listener.try_clone()?;
                let stop = Arc::clone(&servers.stop);
                servers.threads.push(
                    std::thread::Builder::new()
                        .name(format!("tcp-{}-{i}", service.mode()))
                        .spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                // Err is the timeout (or a connection gone before accept).
                                if let Ok((stream, _)) = listener.accept() {
                                    // An error ends this connection only: the client sees it.
                                    let _ = serve(service, stream, &stop);
                                }
                            }
                        })?,
                );
            }
        }
        Ok(servers)
    }
}

impl Drop for KernelServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Makes a blocking accept on `listener` give up after `timeout`, so its thread sees the stop
/// flag: Linux's accept honours SO_RCVTIMEO (inet_csk_accept waits sock_rcvtimeo). Unlike a
/// poll before accept, this wakes only one of the threads blocked in accept per connection.
fn set_accept_timeout(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: tv is a valid timeval that outlives the call, and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn serve(service: Service, mut stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    // Timeouts only so the stop flag is seen; a timeout is not an error.
    stream.set_read_timeout(Some(SERVER_POLL))?;
    stream.set_write_timeout(Some(SERVER_POLL))?;
    let mut buf = vec![0u8; CHUNK];
    match service {
        Service::Discard => while read_some(&mut stream, &mut buf, stop)? > 0 {},
        Service::Echo => {
            stream.set_nodelay(true)?;
            loop {
                let n = read_some(&mut stream, &mut buf, stop)?;
                if n == 0 {
                    break;
                }
                write_all(&mut stream, &buf[..n], stop)?;
            }
        }
        // Until the client goes away: its reset makes a write fail. Whole rotations of the
        // pattern, as many as fit `CHUNK`, per write: one rotation (7 KB) per syscall made
        // the kernel's chargen syscall-bound, no limit worth comparing with.
        Service::Chargen => {
            let block = chargen_block();
            let data = block.repeat(CHUNK / block.len());
            loop {
                write_all(&mut stream, &data, stop)?;
            }
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A read that waits past timeouts until data, EOF, an error, or the stop flag (then Ok(0)).
fn read_some(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(0);
                }
            }
            r => return r,
        }
    }
}

/// write_all that survives the timeouts (std's would give up mid-buffer, losing count of what
/// went out), ending with an error when stopped.
fn write_all(stream: &mut TcpStream, mut data: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("stopped"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// RFC 864's pattern, one full rotation: 95 lines of 72 printable characters and CR LF, line
/// n starting with the n-th printable character (what ustack's and smoltcp-peer's chargen send).
fn chargen_block() -> Vec<u8> {
    let mut block = Vec::with_capacity(95 * 74);
    for line in 0..95u8 {
        for col in 0..72u8 {
            block.push(b' ' + (line + col) % 95);
        }
        block.extend_from_slice(b"\r\n");
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(spread_note(&[1.0, 1.4, 1.2], "x", 1), None);
        assert_eq!(
            spread_note(&[1.0, 2.0, 1.2], "Gb/s", 1).as_deref(),
            Some("differ: 1.0, 2.0, 1.2 Gb/s")
        );
    }

    #[test]
    fn chargen_block_is_rfc_864() {
        let block = chargen_block();
        assert_eq!(block.len(), 95 * 74);
        assert!(block.starts_with(b" !\"#"));
        assert_eq!(&block[72..75], b"\r\n!");
        assert!(block.ends_with(b"f\r\n"));
    }
}
