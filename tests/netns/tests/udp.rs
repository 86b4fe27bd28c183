//! UDP through `ustack host` against the kernel: the echo service (RFC 862, port 7) returns
//! every datagram byte for byte, fragmented ones both ways; a closed port answers ICMP port
//! unreachable, which the kernel turns into ECONNREFUSED; crafted bad fragments and datagrams
//! land in the counters where Linux counts them without costing memory or the echo; and a
//! flood loses nothing that no counter explains.
//!
//! Kernel-side sockets are std's `UdpSocket`s created on a thread that joined the test's
//! namespace (`Netns::enter`); they stay there whichever thread uses them afterwards. Crafted
//! frames go out through an AF_PACKET socket on the kernel's side of the TAP.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use testbed::{test_seed, SplitMix};
use testbed::{vm_rss_kib, RssWatch};
use testbed::{Counters, LinkStats, PacketSocket};
use ustack_netns_tests::{counter, Bed, KERNEL_IP, TAP, USTACK_IP, USTACK_MAC};

const ECHO_PORT: u16 = 7;
/// Nothing listens here in `ustack host`.
const CLOSED_PORT: u16 = 4444;
/// Largest payload of one unfragmented datagram on the 1500-byte TAP: 1500 - 20 - 8.
const MAX_UNFRAGMENTED: usize = 1472;
/// Largest UDP payload over IPv4: 65535 - 20 - 8.
const MAX_PAYLOAD: usize = 65507;
/// One round trip on a quiet TAP link takes well under a millisecond, even with a debug build
/// reassembling 64 KiB; a reply later than this is lost, not late.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A panic on one of ustack's threads or tasks need not change its exit status; its message
/// on stderr is the tell.
fn assert_no_panic(out: &testbed::Output) {
    assert!(!out.stderr.contains("panicked"), "ustack panicked:\n{out}");
}

fn ustack_ip() -> Ipv4Addr {
    USTACK_IP.parse().expect("constant")
}

fn kernel_ip() -> Ipv4Addr {
    KERNEL_IP.parse().expect("constant")
}

/// A kernel UDP socket on 192.0.2.1 (ephemeral port) connected to ustack's `port`, so it only
/// receives from there and reports ICMP errors (a connected UDP socket gets `sk_err`).
fn kernel_socket(bed: &Bed, port: u16) -> UdpSocket {
    let sock = bed
        .ns
        .enter(|| -> std::io::Result<UdpSocket> {
            let sock = UdpSocket::bind(SocketAddrV4::new(kernel_ip(), 0))?;
            sock.connect(SocketAddrV4::new(ustack_ip(), port))?;
            Ok(sock)
        })
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("cannot open a kernel UDP socket in {}: {e}", bed.ns.name()));
    sock.set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set_read_timeout");
    sock
}

fn local_port(sock: &UdpSocket) -> u16 {
    sock.local_addr().expect("bound").port()
}

/// Sends `data` and waits for one datagram back; Err says what went wrong.
fn round_trip(sock: &UdpSocket, data: &[u8], buf: &mut [u8]) -> Result<(), String> {
    sock.send(data)
        .map_err(|e| format!("send of {} bytes failed: {e}", data.len()))?;
    let n = sock.recv(buf).map_err(|e| {
        format!(
            "no echo of the {}-byte datagram within {REPLY_TIMEOUT:?}: {e}",
            data.len()
        )
    })?;
    same_bytes(data, &buf[..n])
}

fn same_bytes(sent: &[u8], got: &[u8]) -> Result<(), String> {
    if got.len() != sent.len() {
        return Err(format!(
            "sent {} bytes, the echo has {}",
            sent.len(),
            got.len()
        ));
    }
    match sent.iter().zip(got).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "the {}-byte echo differs from byte {i} on: sent {:02x?}, got {:02x?}",
            sent.len(),
            &sent[i..(i + 16).min(sent.len())],
            &got[i..(i + 16).min(got.len())]
        )),
    }
}

/// The kernel's counters in the test namespace (its /proc/net/snmp and netstat).
fn kernel_counters(bed: &Bed) -> Counters {
    bed.ns
        .kernel_counters()
        .unwrap_or_else(|e| panic!("cannot read the kernel's counters: {e}"))
}

fn kget(c: &Counters, section: &str, name: &str) -> u64 {
    c.get(section)
        .and_then(|s| s.get(name))
        .copied()
        .unwrap_or_else(|| panic!("the kernel has no counter {section} {name}: {c:?}"))
}

fn tap_stats(bed: &Bed) -> LinkStats {
    bed.ns
        .link_stats(TAP)
        .unwrap_or_else(|e| panic!("cannot read {TAP}'s statistics: {e}"))
}

/// The pid of the `ustack` process in the namespace (`ip netns exec` execs it, so it is the
/// only process there while a host runs).
fn ustack_pid(bed: &Bed) -> u32 {
    let pids = bed.ns.pids();
    pids.iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ustack")
        })
        .unwrap_or_else(|| panic!("no ustack process among {pids:?} in {}", bed.ns.name()))
}

/// Frames the kernel may have queued on the TAP for ustack at once while flooding. tun's queue
/// holds txqueuelen (1000) frames and drops beyond; flooding faster than ustack reads would
/// only measure those kernel drops, so floods stay under this and every frame reaches ustack
/// as fast as it takes them.
const TAP_WINDOW: u64 = 500;

/// Paces a flood by the kernel's own statistics of the TAP. Must live on a thread inside the
/// namespace (`Netns::enter`): it reads /proc/thread-self/net/dev, that thread's view.
struct TapPacer {
    /// tun counts a frame in tx_packets when ustack reads it, in tx_dropped when its queue
    /// had no room: either way it has left the queue.
    base: u64,
    sent: u64,
}

impl TapPacer {
    fn new() -> TapPacer {
        TapPacer {
            base: Self::left_queue(),
            sent: 0,
        }
    }

    fn left_queue() -> u64 {
        let text = std::fs::read_to_string("/proc/thread-self/net/dev").expect("/proc/net/dev");
        let s = testbed::parse_proc_net_dev(&text, TAP).expect("the TAP in /proc/net/dev");
        s.tx_packets + s.tx_dropped
    }

    /// Waits until one more frame fits in the window; panics if ustack stops reading.
    fn wait_room(&mut self) {
        if self.sent < TAP_WINDOW {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // The kernel's own frames (an ARP probe) leave the queue too, so more may have
        // left than we sent: that only means there is room.
        while self
            .sent
            .saturating_sub(Self::left_queue().saturating_sub(self.base))
            >= TAP_WINDOW
        {
            assert!(
                Instant::now() < deadline,
                "ustack read nothing from {TAP} for 10 s"
            );
            std::thread::yield_now();
        }
    }

    fn sent_one(&mut self) {
        self.sent += 1;
    }
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn echo_returns_every_size_byte_identical_fragmented_both_ways() {
    let bed = Bed::new("udpecho");
    let host = bed.start_host();
    let sock = kernel_socket(&bed, ECHO_PORT);
    let seed = test_seed();
    let mut rng = SplitMix(seed);
    let mut buf = vec![0u8; 65536];
    let kernel_before = kernel_counters(&bed);

    // Every size that fits one frame, one at a time: a datagram lost or changed is named.
    for size in 0..=MAX_UNFRAGMENTED {
        let data = rng.bytes(size);
        if let Err(e) = round_trip(&sock, &data, &mut buf) {
            panic!("{e} (seed {seed})\n{}", host.output_so_far());
        }
    }

    // Beyond 1472 bytes both sides must fragment: the kernel's request and ustack's reply.
    // 2961 is two full fragments and one byte; 8972 fills a 9000-byte jumbo frame exactly.
    let mut large = vec![1473, 1480, 2000, 2961, 8972, 9000, 32768, MAX_PAYLOAD];
    for _ in 0..5 {
        large.push(MAX_UNFRAGMENTED + 1 + rng.below(MAX_PAYLOAD - MAX_UNFRAGMENTED));
    }
    for &size in &large {
        let data = rng.bytes(size);
        if let Err(e) = round_trip(&sock, &data, &mut buf) {
            panic!("{e} (seed {seed})\n{}", host.output_so_far());
        }
    }
    let kernel_after = kernel_counters(&bed);
    let (out, c) = host.stop();

    let n_large = large.len() as u64;
    let n_all = (MAX_UNFRAGMENTED + 1) as u64 + n_large;
    let get = |s: &str, n: &str| counter(&c, s, n, &out);
    let kdelta = |s: &str, n: &str| kget(&kernel_after, s, n) - kget(&kernel_before, s, n);
    let mut failed = Vec::new();
    let mut want = |what: String, ok: bool| {
        if !ok {
            failed.push(what);
        }
    };
    // ustack reassembled each large request and fragmented each large reply.
    want(
        format!(
            "ustack Ip ReasmOKs = {} (want >= {n_large})",
            get("Ip", "ReasmOKs")
        ),
        get("Ip", "ReasmOKs") >= n_large,
    );
    want(
        format!(
            "ustack Ip FragOKs = {} (want >= {n_large})",
            get("Ip", "FragOKs")
        ),
        get("Ip", "FragOKs") >= n_large,
    );
    want(
        format!("ustack Ip FragFails = {} (want 0)", get("Ip", "FragFails")),
        get("Ip", "FragFails") == 0,
    );
    // Every datagram read by the echo (InDatagrams counts reads) and sent back, none dropped.
    for name in ["InDatagrams", "OutDatagrams"] {
        want(
            format!("ustack Udp {name} = {} (want >= {n_all})", get("Udp", name)),
            get("Udp", name) >= n_all,
        );
    }
    for name in ["InErrors", "RcvbufErrors", "InCsumErrors", "NoPorts"] {
        want(
            format!("ustack Udp {name} = {} (want 0)", get("Udp", name)),
            get("Udp", name) == 0,
        );
    }
    // The kernel's side of the same story: it fragmented the requests, reassembled replies.
    want(
        format!(
            "kernel Ip FragOKs grew by {} (want >= {n_large})",
            kdelta("Ip", "FragOKs")
        ),
        kdelta("Ip", "FragOKs") >= n_large,
    );
    want(
        format!(
            "kernel Ip ReasmOKs grew by {} (want >= {n_large})",
            kdelta("Ip", "ReasmOKs")
        ),
        kdelta("Ip", "ReasmOKs") >= n_large,
    );
    want(
        format!(
            "kernel Ip ReasmFails grew by {} (want 0)",
            kdelta("Ip", "ReasmFails")
        ),
        kdelta("Ip", "ReasmFails") == 0,
    );
    eprintln!(
        "{n_all} datagrams echoed byte-identical (seed {seed}), {n_large} of them fragmented: \
         ustack Ip ReasmOKs {} FragOKs {} FragCreates {}; kernel Ip FragOKs +{} ReasmOKs +{}",
        get("Ip", "ReasmOKs"),
        get("Ip", "FragOKs"),
        get("Ip", "FragCreates"),
        kdelta("Ip", "FragOKs"),
        kdelta("Ip", "ReasmOKs"),
    );
    assert!(
        failed.is_empty(),
        "{}\n\nlarge sizes {large:?} (seed {seed})\n{out}",
        failed.join("\n")
    );
    assert_no_panic(&out);
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn closed_port_refuses_the_kernels_connected_socket() {
    let bed = Bed::new("udpclosed");
    let host = bed.start_host();
    let sock = kernel_socket(&bed, CLOSED_PORT);
    let before = kernel_counters(&bed);
    sock.send(b"anyone on 4444?").expect("send");
    let mut buf = [0u8; 64];
    // The kernel turns our ICMP port unreachable into sk_err, which wakes and fails the
    // blocked recv (__udp4_lib_err). A timeout here means no ICMP came, or a wrong one.
    let got = sock.recv(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "recv on a socket connected to {USTACK_IP}:{CLOSED_PORT} gave {got:?}, want \
         ConnectionRefused\n{}",
        host.output_so_far()
    );
    // The error is reported once; the socket works on afterwards (a second send goes out).
    sock.send(b"again").expect("send after ECONNREFUSED");
    let after = kernel_counters(&bed);
    let (out, c) = host.stop();
    assert!(
        kget(&after, "Icmp", "InDestUnreachs") > kget(&before, "Icmp", "InDestUnreachs"),
        "the kernel counted no ICMP destination unreachable:\nbefore {:?}\nafter {:?}",
        before.get("Icmp"),
        after.get("Icmp")
    );
    assert!(counter(&c, "Udp", "NoPorts", &out) >= 1, "{out}");
    assert!(counter(&c, "Icmp", "OutDestUnreachs", &out) >= 1, "{out}");
    // Nothing reached a socket, so nothing was read.
    assert_eq!(counter(&c, "Udp", "InDatagrams", &out), 0, "{out}");
    assert_no_panic(&out);
}

/// Ethernet + IPv4 frames from the kernel's side of the TAP to ustack, checksums right unless a
/// test breaks one on purpose. Addresses are the test link's own, so whatever ustack answers
/// stays on it.
struct Crafter {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

const IP_MF: u16 = 0x2000;

impl Crafter {
    fn new(bed: &Bed) -> Crafter {
        let link = bed
            .ns
            .ip(&["-o", "link", "show", TAP])
            .unwrap_or_else(|e| panic!("{e}"));
        let src_mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .and_then(parse_mac)
            .unwrap_or_else(|| panic!("no MAC in {link:?}"));
        Crafter {
            src_mac,
            dst_mac: parse_mac(USTACK_MAC).expect("constant"),
            src: kernel_ip(),
            dst: ustack_ip(),
        }
    }

    /// One IPv4 packet carrying `payload` (UDP), at fragment offset `offset` bytes (a
    /// multiple of 8) with MF as given.
    fn ipv4(&self, id: u16, offset: usize, mf: bool, payload: &[u8]) -> Vec<u8> {
        assert!(offset % 8 == 0 && offset / 8 < 0x2000);
        let mut f = Vec::with_capacity(34 + payload.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + payload.len()) as u16;
        let frag = (offset / 8) as u16 | if mf { IP_MF } else { 0 };
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 17, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let csum = checksum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A UDP header and `data`, with a correct checksum over the pseudo-header (RFC 768).
    fn udp(&self, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let len = (8 + data.len()) as u16;
        let mut u = Vec::with_capacity(len as usize);
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&len.to_be_bytes());
        let c = match checksum(&[&pseudo, &u]) {
            // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
            0 => 0xffff,
            c => c,
        };
        u[6..8].copy_from_slice(&c.to_be_bytes());
        u
    }

    /// `udp` split into IPv4 fragments of at most `max` payload bytes (a multiple of 8).
    fn fragments(&self, id: u16, udp: &[u8], max: usize) -> Vec<Vec<u8>> {
        udp.chunks(max)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i * max;
                self.ipv4(id, offset, offset + chunk.len() < udp.len(), chunk)
            })
            .collect()
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts` (each even-length but
/// the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Of each crafted kind.
const OVERLAPS: u64 = 5;
const TEARDROPS: u64 = 5;
const BAD_CSUMS: u64 = 20;
const BAD_LENGTHS: u64 = 20;
/// Never-completed datagrams: one 1480-byte first fragment each, 10,000 x ~2 KiB of buffer
/// is five times ustack's 4 MiB reassembly limit (ipfrag_high_thresh).
const STRAY_FRAGMENTS: u16 = 10_000;
/// The most first fragments ustack can hold under its 4 MiB limit: each is charged at least
/// its 1514-byte frame.
const HELD_MAX: u64 = 4 * 1024 * 1024 / 1514;
/// RSS growth allowed during the flood: the 4 MiB limit plus allocator slack, far below what
/// 10,000 held fragments (20 MiB) would cost.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn bad_fragments_and_datagrams_are_counted_bounded_and_survived() {
    let bed = Bed::new("udpbad");
    let host = bed.start_host();
    let sock = kernel_socket(&bed, ECHO_PORT);
    let sport = local_port(&sock);
    let craft = Crafter::new(&bed);
    let raw = bed
        .ns
        .enter(|| PacketSocket::open(TAP))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("cannot open an AF_PACKET socket on {TAP}: {e}"));
    let seed = test_seed();
    let mut rng = SplitMix(seed);
    let mut buf = vec![0u8; 65536];
    let send = |frame: &[u8]| {
        raw.send(frame)
            .unwrap_or_else(|e| panic!("AF_PACKET send of {} bytes: {e}", frame.len()))
    };

    // 1. Overlapping fragments, each pair a whole datagram with consistent data (so a stack
    //    that merged them would echo it): [0, 48) with MF, then the last [40, 72). Linux drops
    //    the datagram on the overlap (ip_frag_queue since 4.19) and counts ReasmOverlaps.
    for i in 0..OVERLAPS as u16 {
        let udp = craft.udp(sport, ECHO_PORT, &rng.bytes(64));
        send(&craft.ipv4(0x1000 + i, 0, true, &udp[..48]));
        send(&craft.ipv4(0x1000 + i, 40, false, &udp[40..]));
    }

    // 2. A different datagram in correct fragments, last first: it still reassembles and
    //    echoes (and the echo, 3000 bytes, comes back fragmented too).
    let good = rng.bytes(3000);
    let mut frags = craft.fragments(0x2000, &craft.udp(sport, ECHO_PORT, &good), 1480);
    frags.rotate_right(1);
    for f in &frags {
        send(f);
    }
    let echoed = sock.recv(&mut buf).map_err(|e| e.to_string());
    if let Err(e) = echoed.and_then(|n| same_bytes(&good, &buf[..n])) {
        panic!(
            "the fragmented 3000-byte datagram after the overlaps: {e} (seed {seed})\n{}",
            host.output_so_far()
        );
    }

    // 3. Teardrop: [0, 40) with MF, then a last fragment [24, 28) ending inside it.
    for i in 0..TEARDROPS as u16 {
        let udp = craft.udp(sport, ECHO_PORT, &rng.bytes(32));
        send(&craft.ipv4(0x3000 + i, 0, true, &udp));
        send(&craft.ipv4(0x3000 + i, 24, false, &udp[24..28]));
    }

    // 4. Bad UDP checksums (never 0, which would mean "no checksum").
    for i in 0..BAD_CSUMS as u16 {
        let mut udp = craft.udp(sport, ECHO_PORT, &rng.bytes(16));
        let good_csum = u16::from_be_bytes([udp[6], udp[7]]);
        let bad = match good_csum ^ 0x5a5a {
            0 => good_csum ^ 0x0101,
            b => b,
        };
        udp[6..8].copy_from_slice(&bad.to_be_bytes());
        send(&craft.ipv4(0x3800 + i, 0, false, &udp));
    }

    // 5. UDP length 100 bytes beyond the IP payload (no checksum, so the length is the only
    //    fault): __udp4_lib_rcv's short_packet, InErrors.
    for i in 0..BAD_LENGTHS as u16 {
        let mut udp = craft.udp(sport, ECHO_PORT, &rng.bytes(16));
        let claimed = udp.len() as u16 + 100;
        udp[4..6].copy_from_slice(&claimed.to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        send(&craft.ipv4(0x3c00 + i, 0, false, &udp));
    }

    // Nothing above may have been echoed: the TAP is a FIFO and ustack handles frames in
    // order, so the first datagram back must be the echo of this marker.
    let marker = b"after the bad datagrams".to_vec();
    if let Err(e) = round_trip(&sock, &marker, &mut buf) {
        panic!(
            "{e}: something crafted was echoed, or the echo stopped (seed {seed})\n{}",
            host.output_so_far()
        );
    }

    // 6. A flood of first fragments of datagrams that never complete, as fast as the kernel
    //    takes them, while ustack's RSS is watched.
    let pid = ustack_pid(&bed);
    let rss_before = vm_rss_kib(pid).expect("VmRSS of ustack");
    let tap_before = tap_stats(&bed);
    let watch = RssWatch::start(pid, Duration::from_millis(2));
    let mut stray = craft.ipv4(0, 0, true, &rng.bytes(1480));
    let flood_start = Instant::now();
    let refused = bed
        .ns
        .enter(|| {
            let mut pacer = TapPacer::new();
            let mut refused = 0u64;
            for i in 0..STRAY_FRAGMENTS {
                let id = 0x4000 + i;
                stray[18..20].copy_from_slice(&id.to_be_bytes());
                stray[24..26].copy_from_slice(&[0, 0]);
                let csum = checksum(&[&stray[14..34]]);
                stray[24..26].copy_from_slice(&csum.to_be_bytes());
                pacer.wait_room();
                match raw.send(&stray) {
                    Ok(()) => pacer.sent_one(),
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => refused += 1,
                    Err(e) => panic!("AF_PACKET send: {e}"),
                }
            }
            refused
        })
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", bed.ns.name()));
    let flood_time = flood_start.elapsed();
    // The round trip after the flood proves ustack has read every frame queued before it;
    // a fragmented one (4000 bytes, split by the kernel) proves reassembly still works after
    // thousands of evictions.
    let after_flood = rng.bytes(4000);
    let rt = round_trip(&sock, &after_flood, &mut buf)
        .and_then(|()| round_trip(&sock, b"still here", &mut buf));
    let rss_max = watch.max();
    let tap_after = tap_stats(&bed);
    if let Err(e) = rt {
        panic!(
            "echo after the fragment flood: {e} (seed {seed})\n{}",
            host.output_so_far()
        );
    }
    let (out, c) = host.stop();
    let get = |s: &str, n: &str| counter(&c, s, n, &out);

    // Frames of the flood that reached ustack's stack: the kernel dropped those its TAP
    // queue had no room for, ustack those its RX ring had none for.
    let sent = u64::from(STRAY_FRAGMENTS) - refused;
    let tap_dropped = tap_after.tx_dropped - tap_before.tx_dropped;
    let reached = sent
        .saturating_sub(tap_dropped)
        .saturating_sub(get("Io", "RxDropped"));
    let flood = format!(
        "flood: {sent} of {STRAY_FRAGMENTS} fragments sent in {flood_time:?} ({refused} refused \
         with ENOBUFS), {tap_dropped} dropped by the kernel's {TAP} queue, about {reached} \
         reached ustack's IP layer; ustack RSS {rss_before} KiB before, {rss_max} KiB at most \
         during (seed {seed})"
    );
    eprintln!("{flood}");
    let mut failed = Vec::new();
    let mut want = |what: String, ok: bool| {
        if !ok {
            failed.push(what);
        }
    };
    want(
        format!(
            "ustack's RSS grew by {} KiB during the flood (want < {RSS_GROWTH_LIMIT_KIB})",
            rss_max.saturating_sub(rss_before)
        ),
        rss_max.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
    );
    // The flood must overflow the limit several times over, or the checks below prove
    // nothing about eviction.
    want(
        format!(
            "only about {reached} flood fragments reached ustack (want > {})",
            2 * HELD_MAX
        ),
        reached > 2 * HELD_MAX,
    );
    want(
        format!(
            "IpExt ReasmOverlaps = {} (want >= {OVERLAPS})",
            get("IpExt", "ReasmOverlaps")
        ),
        get("IpExt", "ReasmOverlaps") >= OVERLAPS,
    );
    // Each overlap and teardrop discards its queue; of the flood, at most HELD_MAX queues can
    // still be held at the end, every other one was evicted, and each eviction is a failure.
    let fails = OVERLAPS + TEARDROPS + reached.saturating_sub(HELD_MAX);
    want(
        format!(
            "Ip ReasmFails = {} (want >= {fails})",
            get("Ip", "ReasmFails")
        ),
        get("Ip", "ReasmFails") >= fails,
    );
    want(
        format!(
            "Ip ReasmReqds = {} (want >= {reached})",
            get("Ip", "ReasmReqds")
        ),
        get("Ip", "ReasmReqds") >= reached,
    );
    // The good datagram and the one after the flood.
    want(
        format!("Ip ReasmOKs = {} (want >= 2)", get("Ip", "ReasmOKs")),
        get("Ip", "ReasmOKs") >= 2,
    );
    want(
        format!(
            "Udp InCsumErrors = {} (want >= {BAD_CSUMS})",
            get("Udp", "InCsumErrors")
        ),
        get("Udp", "InCsumErrors") >= BAD_CSUMS,
    );
    want(
        format!(
            "Udp InErrors = {} (want >= {})",
            get("Udp", "InErrors"),
            BAD_CSUMS + BAD_LENGTHS
        ),
        get("Udp", "InErrors") >= BAD_CSUMS + BAD_LENGTHS,
    );
    assert!(failed.is_empty(), "{}\n{flood}\n{out}", failed.join("\n"));
    assert_no_panic(&out);
}

/// ENOBUFS, without a libc dependency in this package (Linux's value on every architecture).
const ENOBUFS: i32 = 105;

/// Datagrams in the flood: well past every queue on the way (the TAP's 1000 frames, ustack's
/// RX ring, the echo socket's 212992-byte receive buffer, the echo's channel of 256).
const FLOOD_DATAGRAMS: u64 = 50_000;

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn echo_flood_loses_nothing_uncounted() {
    let bed = Bed::new("udpflood");
    let host = bed.start_host();
    let sock = kernel_socket(&bed, ECHO_PORT);
    let pid = ustack_pid(&bed);
    let rss_before = vm_rss_kib(pid).expect("VmRSS of ustack");
    let kernel_before = kernel_counters(&bed);
    let tap_before = tap_stats(&bed);

    // The replies are read on their own thread while the flood is sent, so the kernel's
    // receive buffer rarely fills; when it does, the kernel counts it (Udp RcvbufErrors in
    // the namespace) and the sum below includes it.
    let reader_sock = sock.try_clone().expect("try_clone");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        let mut by_len: BTreeMap<usize, u64> = BTreeMap::new();
        loop {
            match reader_sock.recv(&mut buf) {
                Ok(n) => *by_len.entry(n).or_default() += 1,
                // REPLY_TIMEOUT of silence after the last reply: the flood is over.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(by_len)
                }
                Err(e) => return Err(e),
            }
        }
    });
    let watch = RssWatch::start(pid, Duration::from_millis(2));
    let payload = [0x5au8; 64];
    let start = Instant::now();
    let (sent, send_errors) = bed
        .ns
        .enter(|| {
            let mut pacer = TapPacer::new();
            let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
            for _ in 0..FLOOD_DATAGRAMS {
                pacer.wait_room();
                match sock.send(&payload) {
                    Ok(_) => pacer.sent_one(),
                    // ENOBUFS from a full queue: not sent, so not expected back.
                    Err(e) => *send_errors.entry(e.to_string()).or_default() += 1,
                }
            }
            (pacer.sent, send_errors)
        })
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", bed.ns.name()));
    let send_time = start.elapsed();
    let echoed_by_len = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("kernel recv: {e}\n{}", host.output_so_far()));
    let rss_max = watch.max();
    let echoed: u64 = echoed_by_len.values().sum();
    let kernel_after = kernel_counters(&bed);
    let tap_after = tap_stats(&bed);
    // ustack is still up and answering.
    let mut buf = [0u8; 64];
    if let Err(e) = round_trip(&sock, b"after the flood", &mut buf) {
        panic!("{e}\n{}", host.output_so_far());
    }
    let (out, c) = host.stop();
    let get = |s: &str, n: &str| counter(&c, s, n, &out);
    let kdelta = |s: &str, n: &str| kget(&kernel_after, s, n) - kget(&kernel_before, s, n);

    // Every place a datagram of the flood (or its echo) can be dropped, each with its own
    // counter, none counting another's drops:
    let drops = [
        // the kernel's TAP queue toward ustack was full (tun's ring)
        (
            "kernel ustack0 TX dropped",
            tap_after.tx_dropped - tap_before.tx_dropped,
        ),
        // ustack's RX ring between the device loop and the stack was full
        ("ustack Io RxDropped", get("Io", "RxDropped")),
        // the echo socket's receive buffer (sk_rcvbuf) was full
        ("ustack Udp RcvbufErrors", get("Udp", "RcvbufErrors")),
        // ustack's qdisc was full for a reply
        ("ustack Dev TxDropped", get("Dev", "TxDropped")),
        // a reply could not be written to the TAP
        ("ustack Io TxErrors", get("Io", "TxErrors")),
        // the kernel could not take a reply from the TAP (backlog full)
        (
            "kernel ustack0 RX dropped",
            tap_after.rx_dropped - tap_before.rx_dropped,
        ),
        // the kernel socket's receive buffer was full
        ("kernel Udp RcvbufErrors", kdelta("Udp", "RcvbufErrors")),
    ];
    let counted: u64 = drops.iter().map(|(_, n)| n).sum();
    // Frames the kernel sent to ustack during the flood that were not flood datagrams (ARP,
    // say): a drop of one of them is counted too, so the sum may exceed the loss by that much.
    let tap_frames = (tap_after.tx_packets + tap_after.tx_dropped)
        - (tap_before.tx_packets + tap_before.tx_dropped);
    let other_frames = tap_frames.saturating_sub(sent);
    let lost = sent - echoed;
    let report = format!(
        "sent {sent} datagrams in {send_time:?} (send errors {send_errors:?}), {echoed} echoed \
         {echoed_by_len:?}, {lost} lost; counted drops {counted}: {drops:?}; {tap_frames} frames \
         to ustack ({other_frames} not ours); ustack RSS {rss_before} KiB before, {rss_max} KiB \
         at most during"
    );
    eprintln!("{report}");
    assert!(
        echoed_by_len.keys().all(|&n| n == payload.len()),
        "an echo of the wrong size came back: {report}"
    );
    assert!(
        counted >= lost && counted <= lost + other_frames,
        "datagrams lost without a counter, or counted twice: {report}\n{out}"
    );
    assert!(
        rss_max.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "ustack's memory grew under the flood: {report}"
    );
    // The same books inside ustack: every datagram that reached its UDP (the flood and the
    // one after it, less what the kernel's TAP queue and ustack's RX ring dropped) was either
    // read by the echo or refused by the full socket buffer, and every one read was answered.
    let reached_udp = (sent + 1)
        .saturating_sub(tap_after.tx_dropped - tap_before.tx_dropped)
        .saturating_sub(get("Io", "RxDropped"));
    let (read, refused) = (get("Udp", "InDatagrams"), get("Udp", "RcvbufErrors"));
    // (A frame that was not ours and dropped on the way lowers reached_udp by one too much.)
    assert!(
        (reached_udp..=reached_udp + other_frames).contains(&(read + refused)),
        "ustack: Udp InDatagrams {read} + RcvbufErrors {refused} should be the {reached_udp} \
         datagrams that reached UDP: {report}\n{out}"
    );
    assert_eq!(
        get("Udp", "OutDatagrams"),
        read,
        "the echo should answer every datagram it read: {report}\n{out}"
    );
    assert_eq!(
        get("Udp", "InErrors"),
        refused,
        "UDP errors other than a full receive buffer: {report}\n{out}"
    );
    assert_no_panic(&out);
}
