//! Hostile input on each interface of `ustack router`, forged from the hosts' side of its
//! TAPs: floods of TTL 0 and 1, never-completed fragments (to the router and through
//! it), spoofed sources, and random frames. The router must not panic, its memory must
//! stay within what its bounded queues allow, every drop must land in the counter Linux
//! uses, the ICMP errors it answers with must be rate-limited, and forwarding must go on.

use std::net::Ipv4Addr;
use std::time::Duration;

use testbed::{Counters, PacketSocket, Routed, RouterKind, RssWatch, Side, SplitMix};
use ustack_netns_tests::{link_mac, parse_mac};

const A: usize = 0;
const B: usize = 1;
/// Packets of each kind, per interface.
const TTL_FLOOD: u64 = 4000;
const FRAGS_TO_ROUTER: u16 = 6000;
const FRAGS_THROUGH: u16 = 2000;
const SPOOFED: u64 = 1000;
const RANDOM: u64 = 3000;
/// How much the router's RSS may grow during all of it, and why:
/// - reassembly queues for fragments to the router's own addresses: at most
///   ipfrag_high_thresh, 4 MiB, whatever the flood (each held first fragment is charged
///   its ~2 KiB buffer);
/// - per device, what its bounded queues can hold of forwarded or dropped-to traffic:
///   the RX ring (1024) + the TX ring (1024) + the qdisc (1000) + the core's TX ring (256),
///   ~3300 buffers of 2 KiB (the pool's), ~6.5 MiB per device, 13 MiB for two;
/// - 8 MiB of allocator and pool slack.
///
/// A router that kept every fragment (6000 x 2 interfaces x ~2 KiB = 24 MiB) or queued
/// without bound fails this.
const RSS_GROWTH_LIMIT_KIB: u64 = (4 + 13 + 8) * 1024;

fn sides() -> Vec<Side> {
    vec![
        Side::new("ra", "192.0.2.1/24", "192.0.2.10/24"),
        Side::new("rb", "198.51.100.1/24", "198.51.100.10/24"),
    ]
}

/// Frames sent back to back before a pause: the TAP's queue towards the router holds
/// 1000 (txqueuelen); a debug build of the router empties it more slowly than a raw
/// socket fills it, and what the kernel drops there never reached the router. Bursts of
/// 32 with a millisecond between them (32k frames/s) keep every frame, which the test
/// checks (the TAP's tx_dropped stays 0), so the counts below are exact.
const BURST: u64 = 32;

/// Frames from host `i` to the router's MAC on that side.
struct Forger {
    raw: PacketSocket,
    sent: std::cell::Cell<u64>,
    host_mac: [u8; 6],
    router_mac: [u8; 6],
    src: Ipv4Addr,
}

impl Forger {
    fn new(bed: &Routed, i: usize) -> Forger {
        let side = &bed.sides[i];
        let link = bed.hosts[i]
            .ip(&["-o", "link", "show", &side.ifname])
            .expect("ip link");
        let host_mac = link_mac(&link)
            .and_then(parse_mac)
            .unwrap_or_else(|| panic!("no MAC in {link:?}"));
        let r: Ipv4Addr = side.router_ip().parse().expect("address");
        let o = r.octets();
        let raw = bed.hosts[i]
            .enter(|| PacketSocket::open(&side.ifname))
            .and_then(|r| r)
            .expect("packet socket");
        Forger {
            raw,
            sent: std::cell::Cell::new(0),
            host_mac,
            // ustack's default MAC: 02:00 and the address.
            router_mac: [2, 0, o[0], o[1], o[2], o[3]],
            src: side.host_ip().parse().expect("address"),
        }
    }

    /// An IPv4/UDP frame; `frag` is (offset in bytes, more fragments).
    fn udp(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        id: u16,
        frag: (usize, bool),
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(42 + payload.len());
        f.extend_from_slice(&self.router_mac);
        f.extend_from_slice(&self.host_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let frag_field = (frag.0 / 8) as u16 | if frag.1 { 0x2000 } else { 0 };
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag_field.to_be_bytes());
        f.extend_from_slice(&[ttl, 17, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        // A UDP header with checksum 0 (none, RFC 768), then the payload.
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&9u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// Sends `frame`, waiting out a full queue on our side of the TAP (ENOBUFS: the
    /// flood outran the router's reads; that frame never reached it, so resend it).
    fn send(&self, frame: &[u8]) {
        let n = self.sent.get() + 1;
        self.sent.set(n);
        if n % BURST == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..1000 {
            match self.raw.send(frame) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc_enobufs()) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(e) => panic!("send a forged frame: {e}"),
            }
        }
        panic!("the TAP's queue stayed full for 200 ms: the router stopped reading");
    }
}

/// ENOBUFS on Linux.
fn libc_enobufs() -> i32 {
    105
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn get(c: &Counters, section: &str, name: &str) -> u64 {
    c.get(section)
        .and_then(|s| s.get(name))
        .copied()
        .unwrap_or_else(|| panic!("no counter {section} {name}"))
}

/// Ping from A to B gets its three replies: forwarding goes on.
fn assert_forwarding(bed: &Routed, when: &str) {
    let out = bed.run(
        A,
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"],
    );
    assert!(
        out.success(),
        "forwarding stopped {when}:\n{out}\n{}",
        bed.router_output_so_far()
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn hostile_input_on_every_interface_is_counted_bounded_and_survived() {
    let mut bed = Routed::new(RouterKind::Ustack, "rthostile", &sides(), &[])
        .unwrap_or_else(|e| panic!("cannot build the topology: {e}"));
    assert_forwarding(&bed, "before anything");
    let pid = bed.router_pid().expect("ustack router");
    // Settle the pools and caches first, so what we measure is growth from the flood.
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = testbed::vm_rss_kib(pid).expect("RSS of ustack router");
    let watch = RssWatch::start(pid, Duration::from_millis(2));
    let mut rng = SplitMix(0x5eed_0bad);

    for i in [A, B] {
        let other = 1 - i;
        let f = Forger::new(&bed, i);
        let far: Ipv4Addr = bed.sides[other].host_ip().parse().unwrap();
        let router: Ipv4Addr = bed.sides[i].router_ip().parse().unwrap();
        // TTL 0 and 1, to be forwarded: each is an IpInHdrErrors and at most a
        // rate-limited time exceeded.
        for n in 0..TTL_FLOOD {
            f.send(&f.udp(f.src, far, (n % 2) as u8, n as u16, (0, false), b"ttl"));
        }
        // First fragments that never complete, to the router itself (reassembly, bounded
        // by ipfrag_high_thresh) and through it (forwarded as they are).
        let payload = rng.bytes(1400);
        for id in 0..FRAGS_TO_ROUTER {
            f.send(&f.udp(f.src, router, 64, id, (0, true), &payload));
        }
        for id in 0..FRAGS_THROUGH {
            f.send(&f.udp(f.src, far, 64, id, (0, true), &payload));
        }
        // Spoofed: the router's own address as source (martian), and a source nobody
        // routes (forwarded: rp_filter is off by default, as in Linux).
        for n in 0..SPOOFED {
            f.send(&f.udp(router, far, 64, n as u16, (0, false), b"martian"));
        }
        // Random frames at the router's MAC: random EtherTypes, random IPv4 headers.
        for n in 0..RANDOM {
            let mut frame = f.udp(f.src, far, 64, n as u16, (0, false), &rng.bytes(40));
            let cut = 14 + rng.below(frame.len() - 14);
            rng.fill(&mut frame[cut..]);
            if n % 3 == 0 {
                frame[12] = rng.below(256) as u8;
            }
            f.send(&frame);
        }
        assert!(
            bed.router_alive(),
            "ustack router died on input from side {i}"
        );
        assert_forwarding(&bed, &format!("after the floods on side {i}"));
    }
    let peak = watch.max();
    let out = bed.stop().expect("ustack router");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    let c = testbed::counters_block(&out.stdout).expect("counters");
    let growth = peak.saturating_sub(rss_before);
    eprintln!("ustack router RSS {rss_before} KiB before, peak {peak} KiB (+{growth} KiB)");
    assert!(
        growth <= RSS_GROWTH_LIMIT_KIB,
        "RSS grew {growth} KiB (limit {RSS_GROWTH_LIMIT_KIB}):\n{out}"
    );
    // Every TTL 0/1 packet is a header error (ip_forward's too_many_hops), and the
    // answers are rate-limited (icmp_global_allow: a burst of 50, then 1000/s).
    assert!(get(&c, "Ip", "InHdrErrors") >= 2 * TTL_FLOOD, "{out}");
    let time_exceeded = get(&c, "Icmp", "OutTimeExcds");
    assert!(
        (1..TTL_FLOOD).contains(&time_exceeded),
        "OutTimeExcds {time_exceeded} is not rate-limited:\n{out}"
    );
    // Fragments to the router: each one starts a queue until the 4 MiB limit evicts
    // the oldest; none completes.
    assert!(
        get(&c, "Ip", "ReasmReqds") >= 2 * u64::from(FRAGS_TO_ROUTER),
        "{out}"
    );
    assert_eq!(get(&c, "Ip", "ReasmOKs"), 0, "{out}");
    assert!(
        get(&c, "Ip", "ReasmFails") > 0,
        "the limit evicted nothing:\n{out}"
    );
    // Our own address as a source from the wire.
    assert!(get(&c, "IpExt", "InMartians") >= 2 * SPOOFED, "{out}");
    // What went through: the fragments and the unmangled random frames' neighbours.
    assert!(
        get(&c, "Ip", "ForwDatagrams") >= 2 * u64::from(FRAGS_THROUGH),
        "{out}"
    );
}
