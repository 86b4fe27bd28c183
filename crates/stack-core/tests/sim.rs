//! The impairment layer (our netem) frame by frame, and two stacks talking through it in
//! virtual time with `sim::Pair`.

use stack_core::DeviceId;
use std::net::{Ipv4Addr, SocketAddrV4};

use stack_core::impair::{ImpairConfig, ImpairParseError, ImpairStats, Impairment, DEFAULT_LIMIT};
use stack_core::ping::PingMsgKind;
use stack_core::sim::{Pair, A_ADDR, B_ADDR};
use stack_core::{Duration, Instant, SendError, Skb, SocketId, StackConfig};

fn cfg(s: &str) -> ImpairConfig {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// A 64-byte frame whose first four bytes are its index.
fn numbered(i: u32) -> Skb {
    let mut v = vec![0x5a; 64];
    v[..4].copy_from_slice(&i.to_be_bytes());
    Skb::from_vec(v)
}

fn index(skb: &Skb) -> u32 {
    u32::from_be_bytes(skb.data()[..4].try_into().unwrap())
}

/// Everything due out of `imp` up to `until`, with the time each came out.
fn drain(imp: &mut Impairment, until: Instant) -> Vec<(Instant, Skb)> {
    let mut out = Vec::new();
    while let Some(t) = imp.poll_timeout().filter(|&t| t <= until) {
        while let Some(skb) = imp.poll(t) {
            out.push((t, skb));
        }
    }
    out
}

fn balanced(s: &ImpairStats, queued: usize) {
    assert_eq!(
        s.offered + s.duplicated,
        s.dropped + s.overflow + s.delivered + queued as u64,
        "every frame accounted for: {s:?}"
    );
}

#[test]
fn parses_the_netem_like_syntax() {
    let c = cfg("loss=5%,dup=2%,reorder=5%,corrupt=0.5%,delay=10ms,jitter=2ms,rate=100mbit,seed=7");
    assert_eq!(
        c,
        ImpairConfig {
            loss: 0.05,
            dup: 0.02,
            reorder: 0.05,
            corrupt: 0.005,
            delay: ms(10),
            jitter: ms(2),
            rate_bps: Some(100_000_000),
            limit: None,
            seed: 7,
        }
    );
    assert_eq!(cfg(""), ImpairConfig::default());
    assert_eq!(cfg(" delay = 1.5ms , limit=10, "), {
        ImpairConfig {
            delay: us(1500),
            limit: Some(10),
            ..Default::default()
        }
    });
    assert_eq!(cfg("rate=1.5Gbit").rate_bps, Some(1_500_000_000));
    assert_eq!(cfg("delay=2s,jitter=250us").jitter, us(250));
    assert_eq!(cfg("loss=100%,dup=0%").loss, 1.0);

    let err = |s: &str| s.parse::<ImpairConfig>().unwrap_err();
    assert_eq!(err("los=5%"), ImpairParseError::UnknownKey("los".into()));
    assert_eq!(err("loss"), ImpairParseError::MissingValue("loss".into()));
    assert_eq!(
        err("loss=1%,loss=2%"),
        ImpairParseError::DuplicateKey("loss".into())
    );
    assert!(matches!(
        err("loss=150%"),
        ImpairParseError::OutOfRange { .. }
    ));
    assert!(matches!(
        err("dup=-1%"),
        ImpairParseError::OutOfRange { .. }
    ));
    for bad in [
        "loss=5",
        "loss=x%",
        "delay=10",
        "delay=10 parsecs",
        "jitter=-1ms",
        "rate=100mbps",
        "rate=0bit",
        "limit=0",
        "seed=-1",
    ] {
        assert!(
            matches!(err(bad), ImpairParseError::BadValue { .. }),
            "{bad}: {:?}",
            err(bad)
        );
    }
    let msg = err("delay=10").to_string();
    assert!(msg.contains("delay") && msg.contains("10ms"), "{msg}");
    assert!(err("bogus=1").to_string().contains("loss, dup"));
}

#[test]
fn clean_impairment_passes_frames_through_at_once() {
    let mut imp = Impairment::new(ImpairConfig::default());
    let t = Instant::from_millis(3);
    for i in 0..10 {
        imp.push(t, numbered(i));
    }
    assert_eq!(imp.poll_timeout(), Some(t));
    let out: Vec<u32> = std::iter::from_fn(|| imp.poll(t))
        .map(|s| index(&s))
        .collect();
    assert_eq!(out, (0..10).collect::<Vec<_>>());
    assert_eq!(imp.poll_timeout(), None);
    assert_eq!(imp.stats().delivered, 10);
}

#[test]
fn loss_rate_matches_the_knob() {
    let mut imp = Impairment::new(cfg("loss=5%,seed=1"));
    let frame = numbered(0);
    let mut now = Instant::ZERO;
    let mut delivered = 0u64;
    for _ in 0..100_000 {
        imp.push(now, frame.clone());
        delivered += std::iter::from_fn(|| imp.poll(now)).count() as u64;
        now += us(1);
    }
    let s = imp.stats();
    let fraction = s.dropped as f64 / s.offered as f64;
    // The binomial standard deviation is 0.07%; 0.5% is seven of them.
    assert!((fraction - 0.05).abs() < 0.005, "dropped {fraction}");
    assert_eq!(delivered, s.delivered);
    assert_eq!(s.offered - s.dropped, s.delivered);
    balanced(&s, imp.queued());
}

/// Push 2000 numbered frames at irregular times, polling as a driver would.
fn run_all_knobs(seed: u64) -> (Vec<(Instant, Vec<u8>)>, ImpairStats) {
    let mut c = cfg("loss=5%,dup=5%,reorder=10%,corrupt=5%,delay=3ms,jitter=1ms,rate=50mbit");
    c.seed = seed;
    let mut imp = Impairment::new(c);
    let mut out = Vec::new();
    let mut now = Instant::ZERO;
    for i in 0..2000u32 {
        imp.push(now, numbered(i));
        now += us(u64::from(i % 7) * 50);
        out.extend(drain(&mut imp, now));
    }
    out.extend(drain(&mut imp, now + Duration::from_secs(1)));
    assert_eq!(imp.queued(), 0);
    let s = imp.stats();
    balanced(&s, 0);
    let out = out
        .into_iter()
        .map(|(t, skb)| (t, skb.data().to_vec()))
        .collect();
    (out, s)
}

#[test]
fn same_seed_same_output() {
    let (first, s1) = run_all_knobs(7);
    let (second, s2) = run_all_knobs(7);
    assert_eq!(s1, s2);
    assert!(first == second, "same seed, same frames, bytes and times");
    let (other, _) = run_all_knobs(8);
    assert!(first != other, "another seed, another run");
    assert!(s1.dropped > 0 && s1.duplicated > 0 && s1.reordered > 0 && s1.corrupted > 0);
}

#[test]
fn duplicates_are_identical_copies() {
    let mut imp = Impairment::new(cfg("dup=30%,seed=3"));
    let t = Instant::ZERO;
    let mut seen = vec![0u32; 10_000];
    for i in 0..10_000u32 {
        imp.push(t, numbered(i));
        let out: Vec<Skb> = std::iter::from_fn(|| imp.poll(t)).collect();
        for skb in &out {
            assert_eq!(skb.data(), numbered(i).data());
            seen[index(skb) as usize] += 1;
        }
    }
    let twice = seen.iter().filter(|&&n| n == 2).count() as u64;
    assert!(seen.iter().all(|&n| n == 1 || n == 2));
    assert_eq!(twice, imp.stats().duplicated);
    assert!((2700..3300).contains(&twice), "duplicated {twice}");
}

fn bit_distance(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[test]
fn corruption_flips_one_bit_and_spares_the_duplicate() {
    // Every frame is copied and every copy corrupted: if corrupting one wrote through the
    // shared buffer, the other copy (and the template) would show the flip too.
    let mut imp = Impairment::new(cfg("dup=100%,corrupt=100%,seed=4"));
    let template = Skb::from_vec((0..200u8).collect());
    for _ in 0..1000 {
        imp.push(Instant::ZERO, template.clone());
    }
    let out = drain(&mut imp, Instant::ZERO);
    assert_eq!(out.len(), 2000);
    assert_eq!(template.data(), &(0..200u8).collect::<Vec<_>>()[..]);
    for pair in out.chunks(2) {
        let (a, b) = (pair[0].1.data(), pair[1].1.data());
        assert_eq!(bit_distance(a, template.data()), 1);
        assert_eq!(bit_distance(b, template.data()), 1);
    }
    assert_eq!(imp.stats().corrupted, 2000);

    // Half corrupted: the other half pass untouched.
    let mut imp = Impairment::new(cfg("corrupt=50%,seed=5"));
    for _ in 0..1000 {
        imp.push(Instant::ZERO, template.clone());
    }
    let out = drain(&mut imp, Instant::ZERO);
    let flipped = out
        .iter()
        .filter(|(_, s)| bit_distance(s.data(), template.data()) == 1)
        .count();
    let clean = out
        .iter()
        .filter(|(_, s)| s.data() == template.data())
        .count();
    assert_eq!(flipped as u64, imp.stats().corrupted);
    assert_eq!(flipped + clean, 1000);
    assert!((400..600).contains(&flipped));
}

#[test]
fn rate_serializes_frames() {
    // 1250-byte frames at 10 Mbit/s take exactly 1 ms each on the wire.
    let mut imp = Impairment::new(cfg("rate=10mbit,delay=5ms"));
    let frame = Skb::from_vec(vec![0; 1250]);
    for _ in 0..100 {
        imp.push(Instant::ZERO, frame.clone());
    }
    let out = drain(&mut imp, Instant::from_secs(1));
    let times: Vec<Instant> = out.iter().map(|(t, _)| *t).collect();
    let expected: Vec<Instant> = (1..=100).map(|k| Instant::from_millis(k + 5)).collect();
    assert_eq!(times, expected);

    // Offered at twice the rate for a second: the wire carries 10 Mbit of it.
    let mut imp = Impairment::new(cfg("rate=10mbit"));
    let mut now = Instant::ZERO;
    let mut bytes = 0;
    while now < Instant::from_secs(1) {
        imp.push(now, frame.clone());
        now += us(500);
        bytes += drain(&mut imp, now)
            .iter()
            .map(|(_, s)| s.len())
            .sum::<usize>();
    }
    assert_eq!(bytes * 8, 10_000_000, "exactly the configured rate");
    assert_eq!(imp.queued(), 1000, "the rest waits in the queue");
}

#[test]
fn jitter_alone_keeps_order() {
    let mut imp = Impairment::new(cfg("delay=10ms,jitter=5ms,seed=9"));
    let mut now = Instant::ZERO;
    let mut sent_at = Vec::new();
    for i in 0..2000 {
        sent_at.push(now);
        imp.push(now, numbered(i));
        now += us(100);
    }
    let out = drain(&mut imp, Instant::from_secs(10));
    let order: Vec<u32> = out.iter().map(|(_, s)| index(s)).collect();
    assert_eq!(order, (0..2000).collect::<Vec<_>>());
    let mut latencies: Vec<Duration> = out
        .iter()
        .map(|(t, s)| *t - sent_at[index(s) as usize])
        .collect();
    assert!(latencies.iter().all(|&l| l >= ms(5)));
    latencies.sort();
    latencies.dedup();
    assert!(latencies.len() > 100, "jitter varies the delay");
}

/// Frames delivered before a lower-numbered one.
fn inversions(order: &[u32]) -> usize {
    let mut max = 0;
    let mut n = 0;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && i < max {
            n += 1;
        }
        max = max.max(i);
    }
    n
}

#[test]
fn reorder_overtakes_with_a_delay_and_swaps_without() {
    let mut imp = Impairment::new(cfg("delay=10ms,reorder=25%,seed=10"));
    let mut now = Instant::ZERO;
    for i in 0..1000 {
        imp.push(now, numbered(i));
        now += ms(1);
    }
    let out = drain(&mut imp, Instant::from_secs(10));
    let mut order: Vec<u32> = out.iter().map(|(_, s)| index(s)).collect();
    assert!(inversions(&order) > 0);
    let reordered = imp.stats().reordered;
    assert!((200..300).contains(&reordered), "reordered {reordered}");
    order.sort();
    assert_eq!(order, (0..1000).collect::<Vec<_>>(), "all delivered once");

    // No delay: a chosen frame swaps with the next one, or waits REORDER_HOLD.
    let mut imp = Impairment::new(cfg("reorder=20%,seed=11"));
    let mut now = Instant::ZERO;
    let mut out = Vec::new();
    for i in 0..1000 {
        imp.push(now, numbered(i));
        out.extend(drain(&mut imp, now));
        now += us(100);
    }
    out.extend(drain(&mut imp, now + ms(10)));
    let order: Vec<u32> = out.iter().map(|(_, s)| index(s)).collect();
    let swaps = order.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    assert!(swaps > 100);
    assert_eq!(swaps, imp.stats().reordered);
    for (k, &i) in order.iter().enumerate() {
        assert!(k.abs_diff(i as usize) <= 1, "only neighbours swap");
    }
}

#[test]
fn queue_limit_holds() {
    let mut imp = Impairment::new(cfg("delay=1s,limit=100"));
    for i in 0..150 {
        imp.push(Instant::ZERO, numbered(i));
    }
    assert_eq!(imp.queued(), 100);
    assert_eq!(imp.stats().overflow, 50);
    assert_eq!(
        imp.stats().dropped,
        0,
        "overflow is counted apart from loss"
    );
    let out = drain(&mut imp, Instant::from_secs(1));
    assert_eq!(out.len(), 100);
    assert_eq!(index(&out[99].1), 99, "the first hundred, tail-dropped");

    let mut imp = Impairment::new(cfg("delay=1s"));
    let frame = numbered(0);
    for _ in 0..DEFAULT_LIMIT + 5 {
        imp.push(Instant::ZERO, frame.clone());
    }
    assert_eq!(imp.queued(), DEFAULT_LIMIT);
    assert_eq!(imp.stats().overflow, 5);
    balanced(&imp.stats(), imp.queued());
}

// ---- Two stacks on a link ----

fn delay(ms_: u64) -> ImpairConfig {
    ImpairConfig {
        delay: ms(ms_),
        ..Default::default()
    }
}

/// Ping B from A `count` times, `interval` apart, collecting the echo replies.
fn ping(p: &mut Pair, count: u16, interval: Duration) -> Vec<(u16, Duration)> {
    let sock = p.a.ping_open();
    let mut sent = vec![Instant::ZERO; count as usize];
    let mut replies = Vec::new();
    for seq in 0..count {
        sent[seq as usize] = p.now;
        p.a.ping_sendmsg(p.now, sock, B_ADDR, seq, b"ustack sim")
            .unwrap();
        let end = p.now + interval;
        while p.run_until(end, |p| p.a.poll_event().is_some()) {
            while let Some(m) = p.a.ping_recvmsg(sock) {
                if m.kind == PingMsgKind::EchoReply {
                    assert_eq!((m.from, &m.payload[..]), (B_ADDR, &b"ustack sim"[..]));
                    replies.push((m.seq, p.now - sent[m.seq as usize]));
                }
            }
        }
    }
    replies
}

#[test]
fn ping_over_a_clean_link() {
    let mut p = Pair::new(delay(1), delay(1));
    let replies = ping(&mut p, 100, ms(10));
    assert_eq!(replies.len(), 100);
    // The first echo waits for ARP, but B's gratuitous ARP (sent at start, here at 1 ms)
    // completes A's pending entry before B's reply to A's request does: 1 + 2 ms. After
    // that, 2 ms round trips.
    assert_eq!(replies[0], (0, ms(3)));
    for (k, &(seq, rtt)) in replies.iter().enumerate().skip(1) {
        assert_eq!((seq, rtt), (k as u16, ms(2)));
    }
    let (a, b) = (p.a.snmp(), p.b.snmp());
    assert_eq!((a.icmp.out_echos, b.icmp.in_echos), (100, 100));
    assert_eq!(b.icmp.out_echo_reps, 100);
    let mac_b = StackConfig::default_mac(B_ADDR);
    assert_eq!(
        p.a.neigh().lookup(DeviceId::ETH0, B_ADDR).unwrap().1,
        Some(mac_b)
    );
    assert_eq!(p.link.a_to_b.stats().dropped, 0);
    // With nothing more to say, the neighbour entries age out and the pair goes idle.
    assert!(p.run_until_idle(Instant::from_secs(600)));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn ping_over_a_lossy_link_resolves_arp_in_the_end() {
    let loss = cfg("loss=20%,delay=1ms,seed=20");
    let mut p = Pair::new(loss.clone(), loss);
    let replies = ping(&mut p, 100, Duration::from_secs(1));
    // Each echo and its reply cross two 20% links: about 64 of 100 come back.
    assert!(
        (40..90).contains(&replies.len()),
        "{} replies",
        replies.len()
    );
    let (state, mac) =
        p.a.neigh()
            .lookup(DeviceId::ETH0, B_ADDR)
            .expect("B is known");
    assert!(state.is_valid(), "{state:?}");
    assert_eq!(mac, Some(StackConfig::default_mac(B_ADDR)));
    assert!(p.link.a_to_b.stats().dropped > 0 && p.link.b_to_a.stats().dropped > 0);
}

/// A datagram that carries its own index and length, so any damage shows.
fn datagram(i: u32, len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect();
    d[..4].copy_from_slice(&i.to_be_bytes());
    d[4..8].copy_from_slice(&(len as u32).to_be_bytes());
    d
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// Send `sizes[i % len]`-byte datagrams A -> B:7, `gap` apart, reading B's socket as it
/// goes. Returns the indices received, each checked byte for byte.
fn udp_stream(p: &mut Pair, count: u32, sizes: &[usize], gap: Duration) -> Vec<u32> {
    let rx = p.b.udp_socket();
    p.b.udp_bind(rx, any(7)).unwrap();
    let tx = p.a.udp_socket();
    let to = SocketAddrV4::new(B_ADDR, 7);
    let mut got = Vec::new();
    let read = |p: &mut Pair, rx: SocketId, got: &mut Vec<u32>| {
        while let Some(d) = p.b.udp_recvmsg(rx, false).unwrap() {
            let bytes = d.payload();
            let i = u32::from_be_bytes(bytes[..4].try_into().unwrap());
            let len = sizes[i as usize % sizes.len()];
            assert_eq!(bytes, &datagram(i, len)[..], "datagram {i} intact");
            assert_eq!(d.from.ip(), &A_ADDR);
            got.push(i);
        }
    };
    for i in 0..count {
        let data = datagram(i, sizes[i as usize % sizes.len()]);
        match p.a.udp_sendmsg(p.now, tx, Some(to), &data, false) {
            Ok(n) => assert_eq!(n, data.len()),
            Err(SendError::WouldBlock) => panic!("send buffer full at {i}"),
            Err(e) => panic!("send {i}: {e:?}"),
        }
        p.advance(gap);
        read(p, rx, &mut got);
    }
    p.advance(Duration::from_secs(1));
    read(p, rx, &mut got);
    got
}

#[test]
fn udp_datagrams_are_fragmented_and_reassembled() {
    let mut p = Pair::new(delay(1), delay(1));
    let got = udp_stream(&mut p, 20, &[3000], ms(1));
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let (a, b) = (p.a.snmp(), p.b.snmp());
    assert_eq!((a.ip.frag_oks, a.ip.frag_creates), (20, 60));
    assert_eq!((b.ip.reasm_reqds, b.ip.reasm_oks), (60, 20));
    assert_eq!(b.udp.in_datagrams, 20);
    assert_eq!(p.b.defrag_mem(), 0);
}

#[test]
fn udp_survives_loss_duplication_and_reordering_intact() {
    let bad = cfg("loss=5%,dup=5%,reorder=10%,delay=5ms,jitter=1ms,seed=30");
    let mut p = Pair::new(bad.clone(), bad);
    let sizes = [64, 500, 1472, 1473, 3000, 5000];
    let got = udp_stream(&mut p, 600, &sizes, us(500));
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        (400..600).contains(&distinct.len()),
        "{} of 600 arrived",
        distinct.len()
    );
    assert!(got.len() > distinct.len(), "whole duplicated datagrams");
    let stats = p.link.a_to_b.stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0);
    let b = p.b.snmp();
    assert!(b.ip.reasm_oks > 0);
    assert_eq!(
        b.ip_ext.reasm_overlaps, 0,
        "duplicate fragments are not overlaps"
    );
}

#[test]
fn corrupted_frames_are_caught_by_checksums() {
    // Single-frame datagrams: one flipped bit is always caught by the Internet checksum
    // (RFC 1071), whereas two flips in two fragments of one datagram can cancel out.
    let corrupt = cfg("corrupt=3%,delay=1ms,seed=40");
    let mut p = Pair::new(corrupt, delay(1));
    let got = udp_stream(&mut p, 1000, &[1000], us(200));
    let corrupted = p.link.a_to_b.stats().corrupted;
    let b = p.b.snmp();
    let caught = b.ip_ext.in_csum_errors + b.udp.in_csum_errors;
    assert!(corrupted > 10, "corrupted {corrupted}");
    assert!(caught > 0, "checksums caught {caught} of {corrupted}");
    assert!(caught <= corrupted);
    // The rest hit the Ethernet header or ARP and were dropped or harmless; none got
    // through damaged (udp_stream checks every byte).
    assert!(got.len() as u64 >= 1000 - corrupted);
    assert!(got.len() < 1000);
}

#[test]
fn pair_replays_exactly() {
    let run = || {
        let bad = cfg("loss=10%,dup=5%,reorder=10%,corrupt=1%,delay=2ms,jitter=1ms,seed=50");
        let mut p = Pair::new(bad.clone(), bad);
        let got = udp_stream(&mut p, 200, &[100, 2000], us(300));
        (got, p.now, p.a.snmp(), p.b.snmp(), p.link.a_to_b.stats())
    };
    assert!(run() == run());
}

#[test]
fn advance_and_step_respect_limits() {
    let mut p = Pair::new(delay(10), delay(10));
    // The gratuitous ARPs are on the wire until 10 ms.
    assert!(p.step(Instant::from_millis(4)));
    assert_eq!(p.now, Instant::from_millis(4));
    assert!(p.step(Instant::from_secs(1)));
    assert_eq!(p.now, Instant::from_millis(10), "stopped at the next event");
    p.advance(ms(5));
    assert_eq!(p.now, Instant::from_millis(15));
    assert_eq!(p.link.in_flight(), 0);
    assert!(!p.run_until(Instant::from_millis(20), |p| p.link.in_flight() > 0));
    assert_eq!(p.now, Instant::from_millis(20));
}
