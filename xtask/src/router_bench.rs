//! The router rows of `cargo xtask bench`: `ustack router` against a Linux router on the
//! same topology (`testbed::Routed`: kernel host A, the router, kernel host B, each in a
//! namespace of its own, 1500-byte links), measured the same way in one run.
//!
//! - TCP A to B, 1 and 4 flows: kernel sockets in A write to kernel discard listeners in
//!   B for `TCP_SECONDS`; the rate is what B read.
//! - 64-byte UDP forwarding rate: one unthrottled kernel UDP sender in A for `UDP_SECONDS`;
//!   the rate is what arrived at B's interface (its rx_packets in /proc/net/dev), so a
//!   receiver that cannot keep up does not count against the router.
//! - Forwarding latency: ping A to B every 2 ms, p50 and p99 of the round trip.
//!
//! For ustack the router process's CPU use (user + system, all threads) is noted per row;
//! the Linux router works in softirq context, which no process accounts.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testbed::{parse_ping_times, percentile, Routed, RouterKind, Side};

use crate::bench::{CpuMeter, Measured, Sample};
use crate::util::{self, check_interrupt, Result};

pub const TCP1_ROW: &str = "Router TCP A->B, 1 flow (Gb/s)";
pub const TCP4_ROW: &str = "Router TCP A->B, 4 flows (Gb/s)";
pub const UDP_ROW: &str = "Router UDP 64 B fwd (pkt/s)";
pub const LAT_P50_ROW: &str = "Router RTT p50 (µs)";
pub const LAT_P99_ROW: &str = "Router RTT p99 (µs)";
/// The rows the target (at least 0.5x the Linux router) is about.
pub const THROUGHPUT_ROWS: &[&str] = &[TCP1_ROW, TCP4_ROW, UDP_ROW];
pub const TARGET: f64 = 0.5;

const A: usize = 0;
const B: usize = 1;
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const DISCARD_PORT: u16 = 9;
const UDP_PORT: u16 = 9;
const TCP_SECONDS: Duration = Duration::from_secs(4);
const UDP_SECONDS: Duration = Duration::from_secs(3);
const CHUNK: usize = 256 * 1024;

fn sides() -> Vec<Side> {
    vec![
        Side::new("ra", "192.0.2.1/24", "192.0.2.10/24"),
        Side::new("rb", "198.51.100.1/24", "198.51.100.10/24"),
    ]
}

/// Every router row for one kind of router, with notes.
pub fn measure(kind: RouterKind) -> std::result::Result<Measured, String> {
    let mut bed = Routed::new(kind, "bench-rt", &sides(), &[])
        .map_err(|e| format!("setup of the {kind} topology: {e}"))?;
    let mut m = Measured::default();
    let pid = bed.router_pid();
    type Run = fn(&Routed) -> Result<Vec<Sample>>;
    let runs: [(&str, Run); 4] = [
        ("tcp 1 flow", |b| tcp_flows(b, 1, TCP1_ROW)),
        ("tcp 4 flows", |b| tcp_flows(b, 4, TCP4_ROW)),
        ("udp 64 B forwarding", udp_rate),
        ("forwarding rtt", latency),
    ];
    for (name, run) in runs {
        if util::interrupted() {
            break;
        }
        println!("    {kind}: {name} ...");
        util::flush();
        let meter = CpuMeter::start(pid);
        match run(&bed) {
            Ok(samples) => {
                // The router's CPU goes in the table beside its rows.
                if let Some(cpu) = meter.stop() {
                    m.cpu.extend(samples.iter().map(|s| (s.row, cpu)));
                }
                m.samples.extend(samples);
            }
            Err(e) => m.notes.push(format!("{name}: FAILED: {e}")),
        }
        if !bed.router_alive() {
            return Err(format!(
                "ustack router died during {name}:\n{}",
                bed.router_output_so_far()
            ));
        }
    }
    if kind == RouterKind::Ustack {
        if let Some(out) = bed.stop() {
            if let Some(c) = testbed::counters_block(&out.stdout) {
                let get = |s: &str, n: &str| c.get(s).and_then(|x| x.get(n)).copied().unwrap_or(0);
                // The device loops' blocks, one per TAP ("Io ra", "Io rb"), summed.
                let io = |n: &str| -> u64 {
                    c.iter()
                        .filter(|(section, _)| section.starts_with("Io "))
                        .filter_map(|(_, counters)| counters.get(n))
                        .sum()
                };
                m.notes.push(format!(
                    "ustack router counters: Ip ForwDatagrams {}, Dev RxDropped {}, TxDropped {}, \
                     Io RxDropped {}, Io RxPackets {}, RxEmpty {}, TxPackets {}, TxBatches {}",
                    get("Ip", "ForwDatagrams"),
                    get("Dev", "RxDropped"),
                    get("Dev", "TxDropped"),
                    io("RxDropped"),
                    io("RxPackets"),
                    io("RxEmpty"),
                    io("TxPackets"),
                    io("TxBatches"),
                ));
            }
        }
    }
    Ok(m)
}

/// `flows` kernel connections A to B's discard listener, writing for `TCP_SECONDS`.
fn tcp_flows(bed: &Routed, flows: usize, row: &'static str) -> Result<Vec<Sample>> {
    let listener = bed.hosts[B]
        .enter(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DISCARD_PORT)))
        .and_then(|r| r)
        .map_err(|e| format!("listen in B: {e}"))?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..flows {
        let stream = bed.hosts[A]
            .enter(|| {
                TcpStream::connect_timeout(
                    &SocketAddrV4::new(B_IP, DISCARD_PORT).into(),
                    Duration::from_secs(5),
                )
            })
            .and_then(|r| r)
            .map_err(|e| format!("connect from A: {e}"))?;
        let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let got = received.clone();
        readers.push(std::thread::spawn(move || {
            let mut conn = conn;
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
        let done = stop.clone();
        writers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            let data = vec![0x5au8; CHUNK];
            while !done.load(Ordering::Relaxed) {
                if stream.write_all(&data).is_err() {
                    break;
                }
            }
        }));
    }
    // Count from a second in, when every flow has left slow start.
    std::thread::sleep(Duration::from_secs(1));
    let (b0, t0) = (received.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(TCP_SECONDS);
    let (b1, t1) = (received.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    for r in readers {
        let _ = r.join();
    }
    check_interrupt()?;
    let gbps = (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64() / 1e9;
    if b1 == b0 {
        return Err("no bytes arrived at B".into());
    }
    Ok(vec![Sample { row, value: gbps }])
}

/// One unthrottled 64-byte UDP sender in A; packets/s arriving at B's interface.
fn udp_rate(bed: &Routed) -> Result<Vec<Sample>> {
    let rb = &bed.sides[B].ifname;
    let sock = bed.hosts[A]
        .enter(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(SocketAddrV4::new(B_IP, UDP_PORT))?;
            Ok(s)
        })
        .and_then(|r| r)
        .map_err(|e| format!("UDP socket in A: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    let sender = std::thread::spawn(move || {
        let payload = [0x64u8; 64];
        let mut sent = 0u64;
        while !done.load(Ordering::Relaxed) {
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                // A full socket buffer or a refused port (B answers port unreachable)
                // only means: send the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::ConnectionRefused
                    ) => {}
                Err(_) => {}
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = bed.hosts[B].link_stats(rb).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    std::thread::sleep(UDP_SECONDS);
    let after = bed.hosts[B].link_stats(rb).map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _sent = sender
        .join()
        .map_err(|_| "the sender panicked".to_string())?;
    check_interrupt()?;
    let pps = (after.rx_packets - before.rx_packets) as f64 / secs;
    Ok(vec![Sample {
        row: UDP_ROW,
        value: pps,
    }])
}

/// ping A to B, 2000 echoes 2 ms apart.
fn latency(bed: &Routed) -> Result<Vec<Sample>> {
    let b = B_IP.to_string();
    let out = bed.run(
        A,
        "ping",
        &["-n", "-i", "0.002", "-c", "2000", "-w", "30", &b],
    );
    let times = parse_ping_times(&out.stdout);
    if times.is_empty() {
        return Err(format!("no replies: {out}"));
    }
    let us = |p: f64| percentile(&times, p).map(|ms| ms * 1000.0);
    Ok([(LAT_P50_ROW, us(50.0)), (LAT_P99_ROW, us(99.0))]
        .into_iter()
        .filter_map(|(row, v)| v.map(|value| Sample { row, value }))
        .collect())
}
