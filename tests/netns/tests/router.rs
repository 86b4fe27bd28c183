//! `ustack router` between two kernel hosts, probed exactly as a Linux router in the same
//! topology is probed; the Linux router is the oracle, and every observation must be equal.
//!
//! Host A (192.0.2.10/24) and host B (198.51.100.10/24, its link at MTU 1400) each sit in
//! a namespace of their own; the router has 192.0.2.1 and 198.51.100.1 (see
//! `testbed::Routed`). The probes: ping through (TTL 63), `ping -t 1` (time exceeded from
//! the router), an unrouted destination (net unreachable), UDP echo of sizes that need
//! fragmenting and re-fragmenting at the 1400-byte link, `ping -M do -s 1450` (frag needed
//! with mtu 1400), a closed UDP port (ECONNREFUSED on A's connected socket), and 100 MB of
//! kernel TCP each way, byte-identical.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testbed::{Routed, RouterKind, Side, SplitMix};

const A: usize = 0;
const B: usize = 1;
const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const ECHO_PORT: u16 = 7;
const CLOSED_PORT: u16 = 9999;
const TCP_PORT: u16 = 5001;
const TCP_BYTES: usize = 100 * 1000 * 1000;
/// The sender writes, and the receiver checks, the seeded stream in pieces of this size.
const CHUNK: usize = 256 * 1024;
/// Sizes sent first, before anything taught A the 1400-byte path MTU: A fragments them at
/// 1500 and the router must cut the 1500-byte fragments again for B's link.
const FRAGMENTED_SIZES: [usize; 4] = [1, 100, 3000, 8000];
/// Sent after: 1472 fills a 1500-byte packet (DF set by A), so the first try meets the
/// 1400-byte link and A retries once it has learnt the path MTU.
const DF_SIZES: [usize; 2] = [1372, 1472];

fn sides() -> Vec<Side> {
    vec![
        Side::new("ra", "192.0.2.1/24", "192.0.2.10/24"),
        Side::new("rb", "198.51.100.1/24", "198.51.100.10/24").with_mtu(1400),
    ]
}

/// What the hosts saw; compared whole between the two routers.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    /// `ttl=N` of each reply of `ping -c 3` from A to B.
    ttls: Vec<String>,
    /// ping(8)'s error lines (`From ... icmp_seq=1 ...`), times removed.
    ttl_one: Vec<String>,
    unrouted: Vec<String>,
    frag_needed: Vec<String>,
    /// The ICMP errors themselves as A received them, field by field (see `IcmpSeen`).
    errors_on_the_wire: Vec<Option<IcmpSeen>>,
    /// (size, echoed byte-identically within three tries).
    udp: Vec<(usize, bool)>,
    closed_port: Option<ErrorKind>,
    tcp_a_to_b: Result<usize, String>,
    tcp_b_to_a: Result<usize, String>,
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn ustack_router_is_indistinguishable_from_linux_on_the_probes() {
    let mut seen = Vec::new();
    for kind in [RouterKind::Ustack, RouterKind::Linux] {
        let mut bed = Routed::new(kind, "router", &sides(), &[])
            .unwrap_or_else(|e| panic!("cannot build the {kind} topology: {e}"));
        let observed = probe(&bed);
        if kind == RouterKind::Ustack {
            assert!(bed.router_alive(), "ustack router died during the probes");
            let out = bed.stop().expect("ustack router");
            assert_eq!(out.code(), Some(0), "ustack router exit:\n{out}");
            assert!(!out.stderr.contains("panicked"), "{out}");
            let counters = testbed::counters_block(&out.stdout).expect("counters block");
            let ip = |name: &str| counters.get("Ip").and_then(|s| s.get(name)).copied();
            // The 3000- and 8000-byte datagrams arrive in 1500-byte fragments (2 + 5 of
            // them too big for B's link) and leave in 1400-byte ones.
            assert!(ip("FragOKs") >= Some(7), "FragOKs: {out}");
            // 100 MB each way went through the forwarding path (GRO'd super-packets count
            // once in ForwDatagrams, as in Linux; the octets are exact).
            let out_octets = counters
                .get("IpExt")
                .and_then(|s| s.get("OutOctets"))
                .copied();
            assert!(out_octets >= Some(2 * TCP_BYTES as u64), "OutOctets: {out}");
            assert!(ip("ForwDatagrams") > Some(1000), "ForwDatagrams: {out}");
        }
        eprintln!("{kind}: {observed:#?}");
        seen.push(observed);
    }
    let (ours, linux) = (&seen[0], &seen[1]);
    // First against the spec, so two routers that fail alike do not pass.
    assert_eq!(linux.ttls, vec!["ttl=63"; 3]);
    assert_eq!(
        linux.ttl_one,
        ["From 192.0.2.1 icmp_seq=1 Time to live exceeded"]
    );
    assert_eq!(
        linux.unrouted,
        ["From 192.0.2.1 icmp_seq=1 Destination Net Unreachable"]
    );
    assert_eq!(
        linux.frag_needed,
        ["From 192.0.2.1 icmp_seq=1 Frag needed and DF set (mtu = 1400)"]
    );
    assert!(linux.udp.iter().all(|(_, ok)| *ok), "{:?}", linux.udp);
    assert_eq!(linux.closed_port, Some(ErrorKind::ConnectionRefused));
    assert!(
        linux.errors_on_the_wire.iter().all(Option::is_some),
        "A saw every ICMP error: {:?}",
        linux.errors_on_the_wire
    );
    assert_eq!(linux.tcp_a_to_b, Ok(TCP_BYTES));
    assert_eq!(linux.tcp_b_to_a, Ok(TCP_BYTES));
    assert_eq!(ours, linux, "ustack router differs from the Linux router");
}

fn probe(bed: &Routed) -> Observed {
    let b = B_IP.to_string();
    let ping = bed.run(A, "ping", &["-c", "3", "-i", "0.2", "-W", "2", &b]);
    let ttls = ping
        .stdout
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("ttl=")))
        .map(str::to_string)
        .collect();
    let (ttl_one, wire_ttl) = captured(bed, |bed| {
        errors(&bed.run(A, "ping", &["-c", "1", "-W", "2", "-t", "1", &b]))
    });
    let (unrouted, wire_unrouted) = captured(bed, |bed| {
        errors(&bed.run(A, "ping", &["-c", "1", "-W", "2", "203.0.113.5"]))
    });

    let echo = UdpEcho::start(bed);
    let client = udp_socket(bed, A, SocketAddrV4::new(B_IP, ECHO_PORT));
    let mut udp: Vec<(usize, bool)> = FRAGMENTED_SIZES
        .iter()
        .map(|&n| (n, udp_round_trip(&client, n)))
        .collect();
    let (frag_needed, wire_frag) = captured(bed, |bed| {
        errors(&bed.run(
            A,
            "ping",
            &["-c", "1", "-W", "2", "-M", "do", "-s", "1450", &b],
        ))
    });
    udp.extend(DF_SIZES.iter().map(|&n| (n, udp_round_trip(&client, n))));
    drop(echo);

    let refused = udp_socket(bed, A, SocketAddrV4::new(B_IP, CLOSED_PORT));
    let closed_port = match refused.send(b"anyone?") {
        Err(e) => Some(e.kind()),
        Ok(_) => refused.recv(&mut [0u8; 64]).err().map(|e| e.kind()),
    };

    Observed {
        ttls,
        ttl_one,
        unrouted,
        frag_needed,
        errors_on_the_wire: vec![wire_ttl, wire_unrouted, wire_frag],
        udp,
        closed_port,
        tcp_a_to_b: tcp_transfer(bed, A, B, B_IP, 1),
        tcp_b_to_a: tcp_transfer(bed, B, A, A_IP, 2),
    }
}

/// An ICMP error as it reached host A, with what legitimately differs between two
/// routers left out (the IP ID and the checksums) and the quoted datagram reduced to
/// what the router chose: its length and the quoted header's TTL and protocol (the rest
/// is A's own packet).
#[derive(Debug, PartialEq, Eq)]
struct IcmpSeen {
    tos: u8,
    total_len: u16,
    dont_frag: bool,
    ttl: u8,
    src: Ipv4Addr,
    icmp_type: u8,
    icmp_code: u8,
    /// Bytes 4..8 of the ICMP header (the next-hop MTU of frag needed, else unused).
    rest_of_header: [u8; 4],
    quoted_len: usize,
    quoted_ttl: u8,
    quoted_protocol: u8,
}

/// Runs `probe` while capturing what arrives at host A's interface; the first ICMP
/// error (not an echo reply) seen.
fn captured<T>(bed: &Routed, probe: impl FnOnce(&Routed) -> T) -> (T, Option<IcmpSeen>) {
    let ifname = bed.sides[A].ifname.clone();
    let cap = bed.hosts[A]
        .enter(|| testbed::PacketSocket::capture(&ifname))
        .and_then(|r| r)
        .expect("capture socket");
    let result = probe(bed);
    let mut buf = vec![0u8; 70_000];
    while let Ok(Some(n)) = cap.recv_timeout(&mut buf, Duration::from_millis(200)) {
        if let Some(seen) = parse_icmp_error(&buf[..n]) {
            return (result, Some(seen));
        }
    }
    (result, None)
}

fn parse_icmp_error(f: &[u8]) -> Option<IcmpSeen> {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 1 || ip.len() < ihl + 8 {
        return None;
    }
    let icmp = &ip[ihl..];
    // Errors only: destination unreachable (3), time exceeded (11), parameter problem.
    if !matches!(icmp[0], 3 | 11 | 12) {
        return None;
    }
    let quoted = &icmp[8..];
    Some(IcmpSeen {
        tos: ip[1],
        total_len: u16::from_be_bytes([ip[2], ip[3]]),
        dont_frag: ip[6] & 0x40 != 0,
        ttl: ip[8],
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        icmp_type: icmp[0],
        icmp_code: icmp[1],
        rest_of_header: [icmp[4], icmp[5], icmp[6], icmp[7]],
        quoted_len: quoted.len(),
        quoted_ttl: quoted.get(8).copied().unwrap_or(0),
        quoted_protocol: quoted.get(9).copied().unwrap_or(0),
    })
}

/// ping(8)'s per-packet error lines, without anything timing-dependent.
fn errors(out: &testbed::Output) -> Vec<String> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with("From "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// A kernel UDP socket in host `i` connected to `peer`.
fn udp_socket(bed: &Routed, i: usize, peer: SocketAddrV4) -> UdpSocket {
    let sock = bed.hosts[i]
        .enter(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(peer)?;
            Ok(s)
        })
        .and_then(|r| r)
        .expect("kernel UDP socket");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    sock
}

/// Sends `n` seeded bytes up to three times; true when one echo came back identical.
fn udp_round_trip(sock: &UdpSocket, n: usize) -> bool {
    let data = SplitMix(n as u64).bytes(n);
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        if sock.send(&data).is_err() {
            continue;
        }
        match sock.recv(&mut buf) {
            Ok(got) if buf[..got] == data[..] => return true,
            _ => {}
        }
    }
    false
}

/// A kernel UDP echo server on B's port 7, answering until dropped.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(bed: &Routed) -> UdpEcho {
        let sock = bed.hosts[B]
            .enter(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT)))
            .and_then(|r| r)
            .expect("echo socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `TCP_BYTES` seeded bytes from host `from` to a kernel listener in host `to` at `to_ip`;
/// Ok(bytes) when all arrived and matched, else what went wrong.
fn tcp_transfer(
    bed: &Routed,
    from: usize,
    to: usize,
    to_ip: Ipv4Addr,
    seed: u64,
) -> Result<usize, String> {
    let listener = bed.hosts[to]
        .enter(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, TCP_PORT)))
        .and_then(|r| r)
        .map_err(|e| format!("listen: {e}"))?;
    let receiver = std::thread::spawn(move || -> Result<usize, String> {
        // Accept with a deadline, so a connect that never arrives fails the probe
        // instead of hanging the test.
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // The sender's stream cut into CHUNK-sized (8-byte aligned) pieces; reads come
        // in any size, so compare whole pieces as they fill up.
        let mut want = SplitMix(seed);
        let mut buf = vec![0u8; CHUNK];
        let mut pending = Vec::with_capacity(2 * CHUNK);
        let mut expect = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = conn
                .read(&mut buf)
                .map_err(|e| format!("read after {total} B: {e}"))?;
            pending.extend_from_slice(&buf[..n]);
            let end = n == 0;
            while pending.len() >= CHUNK || (end && !pending.is_empty()) {
                let piece = pending.len().min(CHUNK);
                want.fill(&mut expect[..piece]);
                if pending[..piece] != expect[..piece] {
                    return Err(format!("bytes differ in {total}..{}", total + piece));
                }
                total += piece;
                pending.drain(..piece);
            }
            if end {
                return Ok(total);
            }
        }
    });
    let sender = bed.hosts[from]
        .enter(|| {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(to_ip, TCP_PORT).into(),
                Duration::from_secs(10),
            )
        })
        .and_then(|r| r)
        .map_err(|e| format!("connect: {e}"));
    let sent = sender.and_then(|mut conn| {
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut gen = SplitMix(seed);
        let mut chunk = vec![0u8; CHUNK];
        let mut left = TCP_BYTES;
        while left > 0 {
            let n = left.min(chunk.len());
            gen.fill(&mut chunk[..n]);
            conn.write_all(&chunk[..n])
                .map_err(|e| format!("write with {left} B left: {e}"))?;
            left -= n;
        }
        conn.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())
    });
    let received = receiver
        .join()
        .unwrap_or_else(|_| Err("receiver panicked".into()));
    sent?;
    received
}
