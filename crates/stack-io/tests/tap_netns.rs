//! The io_uring driver against a real kernel: a TAP device in a throwaway network
//! namespace, attached plainly and with offloads (virtio_net_hdr, TUN_F_CSUM |
//! TUN_F_TSO4). The kernel side (192.0.2.1) makes frames that must come out of
//! [`Uring::poll`], and frames we give [`Uring::transmit`] must reach it.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::{inject_frame, wait_oper_up, NetNs};
use stack_core::{Skb, SkbPool};
use stack_io::{Completion, DeviceConfig, IoStats, Tap, Uring};

const LIMIT: Duration = Duration::from_secs(20);
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// IEEE 802 "local experimental" EtherType: the kernel counts such frames and drops them.
const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// An Ethernet+ARP frame (RFC 826) for IPv4 over Ethernet, 42 bytes.
fn arp_frame(
    op: u16,
    eth_dst: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// (op, sender IP, target MAC, target IP) of an ARP frame.
fn parse_arp(f: &[u8]) -> Option<(u16, Ipv4Addr, [u8; 6], Ipv4Addr)> {
    if f.len() < 42 || ethertype(f) != 0x0806 {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    let mut tha = [0; 6];
    tha.copy_from_slice(&f[32..38]);
    Some((u16::from_be_bytes([f[20], f[21]]), ip(28), tha, ip(38)))
}

/// A 60-byte broadcast frame of the experimental EtherType whose payload is all `i`.
fn experimental_frame(i: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
    f.extend_from_slice(&[i; 46]);
    f
}

/// The `i` of an [`experimental_frame`], if `f` is one.
fn experimental_index(f: &[u8]) -> Option<u8> {
    (f.len() == 60 && ethertype(f) == ETH_P_EXPERIMENTAL && f[14..].iter().all(|&b| b == f[14]))
        .then_some(f[14])
}

/// Threads of this process that are io_uring's io-wq workers ("iou-wrk-<tid>").
fn io_wq_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("iou-wrk"))
        .count()
}

/// The kernel's RX packet counter of `dev` (the frames we wrote to the TAP), as the
/// calling thread's network namespace sees it: call it from inside `NetNs::run_in`.
fn kernel_rx_packets_here(dev: &str) -> u64 {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
    let line = table
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/thread-self/net/dev:\n{table}"));
    // Receive: bytes packets errs drop ...
    line.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rx packets")
}

/// A [`Uring`] driving `tap` alone (device 0), with the default pool and its counters.
fn uring_for(tap: Tap, cfg: DeviceConfig) -> (Uring, Arc<IoStats>) {
    let stats = Arc::new(IoStats::new());
    let uring =
        Uring::new(vec![tap], vec![stats.clone()], SkbPool::default(), cfg).expect("Uring::new");
    (uring, stats)
}

/// Run `uring` as a stack thread would, poll, then wait up to 10 ms for more, handing
/// every received frame to `f` (with its device) until `f` says it is done. Panics if
/// that takes over 5 s or a device fails. Frames that arrive in the same poll after
/// `f` is done are dropped.
fn drive(uring: &mut Uring, what: &str, mut f: impl FnMut(usize, Skb) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = false;
    loop {
        uring
            .poll(&mut |c| match c {
                Completion::Frame { dev, skb } => {
                    if !done {
                        done = f(dev, skb);
                    }
                }
            })
            .expect("poll");
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        uring.wait(Some(Duration::from_millis(10))).expect("wait");
    }
}

/// The next frame from device 0 that `want` accepts (others are dropped).
fn recv_skb_matching(uring: &mut Uring, want: impl Fn(&[u8]) -> bool) -> Skb {
    let mut got = None;
    drive(uring, "a matching frame", |dev, skb| {
        if dev == 0 && want(skb.data()) {
            got = Some(skb);
        }
        got.is_some()
    });
    got.expect("drive returns once a frame matched")
}

/// [`recv_skb_matching`], as bytes.
fn recv_matching(uring: &mut Uring, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    recv_skb_matching(uring, want).data().to_vec()
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn uring_moves_frames_both_ways() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let before = ns.kernel_rx_packets("ustack0");

    let ns_name = ns.name().to_owned();
    let (stats, dropped_in) = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        wait_oper_up(&ns_name, "ustack0");
        assert_eq!(tap.mtu(), 1500);
        assert!(tap.ifindex() > 0);
        let (mut uring, stats) = uring_for(tap, DeviceConfig::default());

        // Kernel -> us: a datagram to a neighbour nobody has resolved makes the
        // kernel broadcast "who has 192.0.2.2" on the TAP.
        let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
        sock.send_to(b"x", (OUR_IP, 9)).expect("send");
        let req = recv_matching(&mut uring, |f| {
            parse_arp(f)
                .is_some_and(|(op, spa, _, tpa)| op == 1 && spa == KERNEL_IP && tpa == OUR_IP)
        });
        // The multishot read waits as a poll armed in the kernel, not in an io-wq
        // worker thread (that is what O_NONBLOCK on the fd buys).
        assert_eq!(io_wq_workers(), 0, "reads must not block io-wq workers");
        let mut kernel_mac = [0; 6];
        kernel_mac.copy_from_slice(&req[6..12]);

        // Us -> kernel: ask who has 192.0.2.1; the kernel answers to our MAC, which
        // proves the frame went in whole.
        assert_eq!(uring.tx_room(0), DeviceConfig::default().tx_inflight);
        let ask = arp_frame(1, [0xff; 6], OUR_MAC, OUR_IP, [0; 6], KERNEL_IP);
        uring.transmit(0, Skb::from_vec(ask)).expect("transmit");
        assert_eq!(uring.tx_inflight(), 1);
        assert_eq!(uring.tx_room(0), DeviceConfig::default().tx_inflight - 1);
        let reply = recv_matching(&mut uring, |f| {
            parse_arp(f).is_some_and(|(op, spa, tha, tpa)| {
                op == 2 && spa == KERNEL_IP && tha == OUR_MAC && tpa == OUR_IP
            })
        });
        assert_eq!(&reply[6..12], &kernel_mac);
        assert_eq!(uring.tx_inflight(), 0, "the write's completion was reaped");
        assert_eq!(io_wq_workers(), 0, "nor do writes need io-wq workers");

        // Dropping the ring with the read still posted cancels it and waits for its
        // last completion: quickly (Drop gives up and leaks the buffers after 1 s),
        // and leaving no reference to the TAP's file behind, so it can be attached
        // again at once.
        let t = Instant::now();
        drop(uring);
        let dropped_in = t.elapsed();
        drop(Tap::attach("ustack0").expect("re-attach after the Uring is dropped"));
        (stats.snapshot(), dropped_in)
    });

    println!("{stats}\ndropped in {dropped_in:?}");
    assert!(dropped_in < Duration::from_millis(500), "{dropped_in:?}");
    assert!(stats.rx_packets >= 2, "{stats}");
    assert_eq!(stats.tx_packets, 1, "{stats}");
    assert_eq!(stats.tx_bytes, 42, "{stats}");
    assert_eq!(stats.tx_batches, 1, "{stats}");
    assert_eq!((stats.rx_errors, stats.tx_errors), (0, 0), "{stats}");
    assert!(ns.kernel_rx_packets("ustack0") > before);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn queued_frames_go_in_with_one_poll() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let before = ns.kernel_rx_packets("ustack0");

    let (stats, after_transmit, after_poll) = ns.run_in(LIMIT, || {
        let tap = Tap::attach("ustack0").expect("attach");
        let (mut uring, stats) = uring_for(tap, DeviceConfig::default());
        let start = kernel_rx_packets_here("ustack0");
        for i in 0..50 {
            uring
                .transmit(0, Skb::from_vec(experimental_frame(i)))
                .expect("transmit");
        }
        assert_eq!(uring.tx_inflight(), 50);
        assert_eq!(uring.tx_room(0), DeviceConfig::default().tx_inflight - 50);
        // `transmit` only queues: nothing has entered the kernel yet.
        let after_transmit = kernel_rx_packets_here("ustack0") - start;
        // One poll hands all 50 writes to the kernel in its one io_uring_enter; a
        // TAP write never waits, so they are all done when it returns.
        uring.poll(&mut |_| {}).expect("poll");
        let after_poll = kernel_rx_packets_here("ustack0") - start;
        uring.flush(Duration::from_secs(5)).expect("flush");
        assert_eq!(uring.tx_inflight(), 0, "all writes completed");
        assert_eq!(uring.tx_room(0), DeviceConfig::default().tx_inflight);
        assert_eq!(
            io_wq_workers(),
            0,
            "TAP writes complete inline, not in io-wq"
        );
        (stats.snapshot(), after_transmit, after_poll)
    });

    println!("{stats}");
    assert_eq!(after_transmit, 0, "transmit only queues");
    assert_eq!(after_poll, 50, "all 50 queued frames went in with one poll");
    assert_eq!(stats.tx_packets, 50);
    assert_eq!(stats.tx_bytes, 50 * 60);
    assert_eq!(stats.tx_batches, 1, "all 50 in one submission");
    assert_eq!(stats.tx_errors, 0);
    assert_eq!(ns.kernel_rx_packets("ustack0") - before, 50);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn burst_beyond_the_buffer_ring_waits_in_the_tap_queue() {
    const BURST: u8 = 32;
    let ns = NetNs::new();
    ns.add_tap("ustack0");

    let ns_name = ns.name().to_owned();
    let (stats, got) = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        wait_oper_up(&ns_name, "ustack0");
        let ifindex = tap.ifindex();
        // A ring of 4 receive buffers, and 8 times as many frames arriving before we
        // look: the multishot read fills the 4 buffers, ends with ENOBUFS, and the
        // rest wait in the TAP's queue (as in a NIC's FIFO) until the refilled ring
        // is posted again.
        let cfg = DeviceConfig {
            rx_inflight: 4,
            ..Default::default()
        };
        let (mut uring, stats) = uring_for(tap, cfg);
        for i in 0..BURST {
            inject_frame(ifindex, &experimental_frame(i));
        }
        let mut got = Vec::new();
        drive(&mut uring, "the whole burst", |dev, skb| {
            assert_eq!(dev, 0);
            if let Some(i) = experimental_index(skb.data()) {
                got.push(i);
            }
            got.len() == usize::from(BURST)
        });
        (stats.snapshot(), got)
    });

    println!("{stats}\n{got:?}");
    assert_eq!(
        got,
        (0..BURST).collect::<Vec<_>>(),
        "all, none lost, in order"
    );
    assert_eq!(stats.rx_packets, u64::from(BURST), "{stats}");
    assert_eq!(stats.rx_bytes, u64::from(BURST) * 60, "{stats}");
    assert!(
        stats.rx_empty >= 1,
        "the ring ran dry and was re-posted: {stats}"
    );
    assert!(
        stats.rx_empty <= u64::from(BURST),
        "no spinning on an empty ring: {stats}"
    );
    assert_eq!(stats.rx_errors, 0, "running dry is not an error: {stats}");
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn two_taps_on_one_ring_keep_their_frames_apart() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    ns.ip(&["tuntap", "add", "dev", "ustack1", "mode", "tap"]);
    ns.ip(&["link", "set", "ustack1", "up"]);

    let ns_name = ns.name().to_owned();
    let (stats, got, kernel_rx) = ns.run_in(LIMIT, move || {
        let taps = vec![
            Tap::attach("ustack0").expect("attach ustack0"),
            Tap::attach("ustack1").expect("attach ustack1"),
        ];
        wait_oper_up(&ns_name, "ustack0");
        wait_oper_up(&ns_name, "ustack1");
        let ifindex = [taps[0].ifindex(), taps[1].ifindex()];
        let stats = [Arc::new(IoStats::new()), Arc::new(IoStats::new())];
        let mut uring = Uring::new(
            taps,
            stats.to_vec(),
            SkbPool::default(),
            DeviceConfig::default(),
        )
        .expect("Uring::new");
        let rx_start = [
            kernel_rx_packets_here("ustack0"),
            kernel_rx_packets_here("ustack1"),
        ];

        // In: frames 0..3 on ustack0 and 10..15 on ustack1, interleaved.
        for i in 0..5 {
            if i < 3 {
                inject_frame(ifindex[0], &experimental_frame(i));
            }
            inject_frame(ifindex[1], &experimental_frame(10 + i));
        }
        let mut got = [Vec::new(), Vec::new()];
        drive(&mut uring, "frames of both devices", |dev, skb| {
            if let Some(i) = experimental_index(skb.data()) {
                got[dev].push(i);
            }
            got[0].len() + got[1].len() == 8
        });

        // Out: 2 frames to device 0, 4 to device 1.
        for i in 0..6 {
            let dev = usize::from(i >= 2);
            uring
                .transmit(dev, Skb::from_vec(experimental_frame(i)))
                .expect("transmit");
        }
        assert_eq!(uring.tx_room(0), DeviceConfig::default().tx_inflight - 2);
        assert_eq!(uring.tx_room(1), DeviceConfig::default().tx_inflight - 4);
        uring.flush(Duration::from_secs(5)).expect("flush");
        let kernel_rx = [
            kernel_rx_packets_here("ustack0") - rx_start[0],
            kernel_rx_packets_here("ustack1") - rx_start[1],
        ];
        (stats.map(|s| s.snapshot()), got, kernel_rx)
    });

    println!("{}\n{}\n{got:?}", stats[0], stats[1]);
    assert_eq!(got[0], [0, 1, 2], "device 0 gets ustack0's frames");
    assert_eq!(got[1], [10, 11, 12, 13, 14], "device 1 gets ustack1's");
    assert_eq!((stats[0].rx_packets, stats[1].rx_packets), (3, 5));
    assert_eq!(kernel_rx, [2, 4], "each write went to its own TAP");
    assert_eq!((stats[0].tx_packets, stats[1].tx_packets), (2, 4));
    assert_eq!((stats[0].tx_bytes, stats[1].tx_bytes), (2 * 60, 4 * 60));
    assert_eq!(
        (stats[0].tx_batches, stats[1].tx_batches),
        (1, 1),
        "one submission carried both devices' writes"
    );
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn notify_wakes_a_waiting_ring() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");

    ns.run_in(LIMIT, || {
        let tap = Tap::attach("ustack0").expect("attach");
        let (mut uring, _stats) = uring_for(tap, DeviceConfig::default());
        uring.poll(&mut |_| {}).expect("poll");

        // Nothing to do: wait sleeps out its timeout.
        let t = Instant::now();
        uring.wait(Some(Duration::from_millis(100))).expect("wait");
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        uring.poll(&mut |_| {}).expect("poll");
        assert!(!uring.take_notified());

        // A notify from another thread wakes a wait with no timeout; several times
        // over, so the eventfd read is posted again after each wake-up.
        for round in 0..3 {
            let notify = uring.notifier();
            let waker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                notify.notify();
            });
            let t = Instant::now();
            uring.wait(None).expect("wait");
            let woke = t.elapsed();
            waker.join().expect("notifier thread");
            assert!(
                woke >= Duration::from_millis(90) && woke < Duration::from_secs(2),
                "round {round}: woke after {woke:?}"
            );
            uring.poll(&mut |_| {}).expect("poll");
            assert!(uring.take_notified(), "round {round}");
            assert!(!uring.take_notified(), "taking clears it");
        }

        // A notify while the loop is not parked costs it no wake-up but is not lost:
        // the next wait returns at once.
        uring.notifier().notify();
        let t = Instant::now();
        uring.wait(Some(Duration::from_secs(5))).expect("wait");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(uring.take_notified());
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn deleting_the_device_fails_poll_with_an_error() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let ns_name = ns.name().to_owned();

    let (err, dropped_in) = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        let (mut uring, _stats) = uring_for(tap, DeviceConfig::default());
        let deleter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            std::process::Command::new("ip")
                .args(["-n", &ns_name, "link", "del", "ustack0"])
                .status()
                .is_ok_and(|s| s.success())
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match uring.poll(&mut |_| {}) {
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "poll notices the deletion within 5 s"
                    );
                    uring.wait(Some(Duration::from_millis(10))).expect("wait");
                }
                Err(e) => break e,
            }
        };
        assert!(deleter.join().expect("deleter thread"), "ip link del");
        let t = Instant::now();
        drop(uring);
        (err, t.elapsed())
    });
    println!("{err}");
    assert!(
        err.to_string()
            .starts_with("TAP device \"ustack0\": read failed"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("(was the device deleted?)"),
        "{err}"
    );
    assert!(dropped_in < Duration::from_millis(500), "{dropped_in:?}");
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn attach_errors_say_what_is_wrong() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    ns.ip(&["tuntap", "add", "dev", "ustun0", "mode", "tun"]);
    ns.ip(&[
        "tuntap",
        "add",
        "dev",
        "ustmq0",
        "mode",
        "tap",
        "multi_queue",
    ]);
    ns.ip(&[
        "link", "add", "usveth0", "type", "veth", "peer", "name", "usveth1",
    ]);
    ns.ip(&["tuntap", "add", "dev", "usdown0", "mode", "tap"]);

    let messages = ns.run_in(LIMIT, || {
        let first = Tap::attach("ustack0").expect("attach");
        assert!(first.wait_running(LIMIT).expect("flags"), "ustack0 is up");
        let down = Tap::attach("usdown0").expect("attach");
        let t = std::time::Instant::now();
        assert!(!down.wait_running(LIMIT).expect("flags"), "usdown0 is down");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no waiting for a down link"
        );
        drop(down);
        let msg = |name: &str| Tap::attach(name).expect_err(name).to_string();
        let m = vec![
            msg("ustack0"),
            msg("ustun0"),
            msg("ustmq0"),
            msg("usveth0"),
            msg("lo"),
            msg("nothere0"),
        ];
        drop(first);
        // Detached: attaching again works.
        Tap::attach("ustack0").expect("re-attach after close");
        m
    });
    for m in &messages {
        println!("{m}");
    }
    assert_eq!(
        messages[0],
        "TAP device \"ustack0\" is busy (another process is attached)"
    );
    assert_eq!(
        messages[1],
        "\"ustun0\" is not a TAP device (it is a TUN device)"
    );
    assert!(messages[2].starts_with("TAP device \"ustmq0\" was created with other queue flags"));
    assert_eq!(
        messages[3],
        "\"usveth0\" is not a TAP device (it is a veth device)"
    );
    assert!(
        messages[4].starts_with("\"lo\" is not a TAP device"),
        "{}",
        messages[4]
    );
    assert_eq!(
        messages[5],
        "no TAP device named \"nothere0\" in this network namespace \
         (create it with: ip tuntap add dev nothere0 mode tap)"
    );
}

// ---- offloads (IFF_VNET_HDR + TUNSETOFFLOAD) ----

/// One's complement sum of `data` as big-endian 16-bit words, not folded.
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The IPv4 pseudo-header's sum (RFC 768/793), not complemented: what a NEEDS_CSUM
/// frame carries in its checksum field.
fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u16 {
    fold(sum16(&src.octets()) + sum16(&dst.octets()) + u32::from(proto) + len as u32)
}

/// Ethernet + IPv4 (no options, header checksum filled in) around `l4`.
fn ipv4_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = !fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// A UDP datagram from us to the kernel whose checksum field holds only the
/// pseudo-header sum: valid only if the receiver finishes it (NEEDS_CSUM).
fn udp_with_pseudo_sum(dst_mac: [u8; 6], dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut udp = Vec::with_capacity(len);
    udp.extend_from_slice(&7777u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(len as u16).to_be_bytes());
    udp.extend_from_slice(&pseudo_sum(OUR_IP, KERNEL_IP, 17, len).to_be_bytes());
    udp.extend_from_slice(payload);
    ipv4_frame(dst_mac, OUR_IP, KERNEL_IP, 17, &udp)
}

/// Whether the UDP checksum of an Ethernet/IPv4/UDP frame (no IP options) verifies.
fn udp_checksum_ok(f: &[u8]) -> bool {
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let udp = &f[34..];
    let total = sum16(udp) + u32::from(pseudo_sum(src, dst, 17, udp.len()));
    fold(total) == 0xffff
}

fn is_udp_to(f: &[u8], dst: Ipv4Addr, dport: u16) -> bool {
    f.len() >= 42
        && ethertype(f) == 0x0800
        && f[23] == 17
        && f[30..34] == dst.octets()
        && u16::from_be_bytes([f[36], f[37]]) == dport
}

/// A TAP with 192.0.2.1 on the kernel side and 192.0.2.2 (us) a permanent neighbour, so
/// the kernel sends IP straight away without asking ARP.
fn offload_netns() -> NetNs {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "ustack0",
        "nud",
        "permanent",
    ]);
    ns
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn offload_rx_gives_partial_checksums_and_tso_super_packets() {
    use stack_core::skb::IpSummed;
    use stack_io::{Offloads, TapOptions};

    let ns = offload_netns();
    let ns_name = ns.name().to_owned();
    let stats = ns.run_in(LIMIT, move || {
        let tap = Tap::attach_with("ustack0", TapOptions { offload: true }).expect("attach");
        assert!(tap.vnet_hdr());
        assert_eq!(tap.vnet_hdr_len(), 10);
        assert_eq!(
            tap.offloads(),
            Offloads {
                csum: true,
                tso: true
            }
        );
        wait_oper_up(&ns_name, "ustack0");
        let (mut uring, stats) = uring_for(tap, DeviceConfig::default());

        // UDP from a kernel socket: with TUN_F_CSUM the kernel leaves the checksum
        // to the device (CHECKSUM_PARTIAL), and tells us with NEEDS_CSUM.
        let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
        sock.send_to(&[0xab; 300], (OUR_IP, 9)).expect("send");
        let skb = recv_skb_matching(&mut uring, |f| is_udp_to(f, OUR_IP, 9));
        let IpSummed::Partial {
            csum_start,
            csum_offset,
        } = skb.ip_summed
        else {
            panic!(
                "UDP from the kernel should need its checksum: {:?}",
                skb.ip_summed
            );
        };
        let start = usize::from(csum_start) - skb.data_offset();
        assert_eq!((start, csum_offset), (34, 6), "UDP header, check field");
        let f = skb.data();
        let field = u16::from_be_bytes([f[40], f[41]]);
        assert_eq!(field, pseudo_sum(KERNEL_IP, OUR_IP, 17, f.len() - 34));
        assert!(!udp_checksum_ok(f), "unfinished as the kernel left it");
        // Finishing it as a device would gives a checksum that verifies.
        let mut done = f.to_vec();
        let c = !fold(sum16(&done[start..]));
        done[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
        assert!(udp_checksum_ok(&done));
        assert_eq!(
            skb.end(),
            SkbPool::default().buf_size(),
            "copied: copybreak"
        );
        let kernel_mac: [u8; 6] = f[6..12].try_into().unwrap();

        // TCP with TSO: a kernel client connects to us; we answer the SYN by hand
        // (there is no TCP peer here) with a 64 KiB window, and the first flight
        // (initial cwnd 10 segments) leaves the kernel as one or more super-packets.
        let (conn_tx, conn_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = std::net::TcpStream::connect_timeout(
                &(OUR_IP, 5001).into(),
                Duration::from_secs(5),
            )
            .expect("connect");
            s.set_nonblocking(true).unwrap();
            let _ = std::io::Write::write(&mut &s, &vec![0x5a; 100_000]);
            let _ = conn_tx.send(s);
        });
        let is_tcp_from_kernel = |f: &[u8]| {
            f.len() >= 54
                && ethertype(f) == 0x0800
                && f[23] == 6
                && f[26..30] == KERNEL_IP.octets()
                && u16::from_be_bytes([f[36], f[37]]) == 5001
        };
        let syn = recv_skb_matching(&mut uring, |f| is_tcp_from_kernel(f) && f[47] & 0x02 != 0);
        let s = syn.data();
        let cport = u16::from_be_bytes([s[34], s[35]]);
        let cseq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&5001u16.to_be_bytes());
        tcp.extend_from_slice(&cport.to_be_bytes());
        tcp.extend_from_slice(&1000u32.to_be_bytes());
        tcp.extend_from_slice(&cseq.wrapping_add(1).to_be_bytes());
        tcp.extend_from_slice(&[6 << 4, 0x12, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        let c = !fold(sum16(&tcp) + u32::from(pseudo_sum(OUR_IP, KERNEL_IP, 6, tcp.len())));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let synack = ipv4_frame(kernel_mac, OUR_IP, KERNEL_IP, 6, &tcp);
        uring.transmit(0, Skb::from_vec(synack)).expect("transmit");

        let big = recv_skb_matching(&mut uring, |f| is_tcp_from_kernel(f) && f.len() > 1514);
        println!(
            "super-packet: {} bytes, gso_size {}, gso_segs {}, {:?}",
            big.len(),
            big.gso_size,
            big.gso_segs,
            big.ip_summed
        );
        assert!(big.gso_size > 0 && big.gso_size <= 1460, "{}", big.gso_size);
        let payload = big.len() - 54;
        assert_eq!(
            usize::from(big.gso_segs),
            payload.div_ceil(usize::from(big.gso_size))
        );
        assert!(big.gso_segs >= 2);
        assert!(matches!(
            big.ip_summed,
            IpSummed::Partial {
                csum_offset: 16,
                ..
            }
        ));
        // Under the copybreak a super-packet is copied out of the 64 KiB buffer
        // into one of its own size; over it, it keeps the big buffer.
        if big.len() < stack_io::device::DEFAULT_RX_COPYBREAK {
            assert_eq!(big.end(), 64 + big.len(), "copied, right-sized");
        } else {
            assert_eq!(big.end(), 64 + 10 + 18 + 65535, "kept");
        }
        let _client = conn_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("connected");
        drop(uring);
        stats.snapshot()
    });
    println!("{stats}");
    assert_eq!((stats.rx_errors, stats.tx_errors), (0, 0), "{stats}");
    assert_eq!(stats.tx_packets, 1);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn offload_tx_needs_csum_is_finished_by_the_kernel() {
    use stack_core::skb::IpSummed;
    use stack_io::TapOptions;

    let ns = offload_netns();
    let ns_name = ns.name().to_owned();
    let (stats, got) = ns.run_in(LIMIT, move || {
        let tap = Tap::attach_with("ustack0", TapOptions { offload: true }).expect("attach");
        wait_oper_up(&ns_name, "ustack0");
        let (mut uring, stats) = uring_for(tap, DeviceConfig::default());
        let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        // Learn the kernel's MAC from a frame it sends us.
        sock.send_to(b"hi", (OUR_IP, 9)).expect("send");
        let hello = recv_matching(&mut uring, |f| is_udp_to(f, OUR_IP, 9));
        let kernel_mac: [u8; 6] = hello[6..12].try_into().unwrap();

        let mut got = Vec::new();
        // 1: NEEDS_CSUM, header pushed into the skb's headroom (a pooled skb).
        // 2: NEEDS_CSUM, no headroom (Skb::from_vec): header and frame by writev.
        // 3: the same unfinished checksum without NEEDS_CSUM: the kernel must drop it.
        for (i, headroom) in [(1u8, Some(64)), (2, None), (3, Some(64))] {
            let frame = udp_with_pseudo_sum(kernel_mac, port, &[i; 100]);
            assert!(!udp_checksum_ok(&frame));
            let mut skb = match headroom {
                Some(h) => SkbPool::default().from_slice(h, &frame),
                None => Skb::from_vec(frame),
            };
            if i != 3 {
                skb.ip_summed = IpSummed::Partial {
                    csum_start: (skb.data_offset() + 34) as u16,
                    csum_offset: 6,
                };
            }
            uring.transmit(0, skb).expect("transmit");
            // Submit the write and reap its completion, then read on this thread.
            uring.flush(Duration::from_secs(5)).expect("flush");
            assert_eq!(uring.tx_inflight(), 0);
            let mut buf = [0u8; 200];
            got.push(match sock.recv_from(&mut buf) {
                Ok((n, from)) => Some((buf[0], n, from)),
                Err(_) => None,
            });
        }
        drop(uring);
        (stats.snapshot(), got)
    });
    println!("{stats}\n{got:?}");
    let from = std::net::SocketAddr::from((OUR_IP, 7777));
    assert_eq!(got[0], Some((1, 100, from)), "header in the headroom");
    assert_eq!(got[1], Some((2, 100, from)), "header by writev");
    assert_eq!(got[2], None, "no NEEDS_CSUM: bad checksum, dropped");
    assert_eq!(stats.tx_packets, 3);
    assert_eq!(
        stats.tx_bytes,
        3 * (14 + 20 + 8 + 100),
        "without vnet headers"
    );
    assert_eq!(stats.tx_errors, 0);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn plain_attach_after_offload_gets_finished_checksums() {
    use stack_core::skb::IpSummed;
    use stack_io::TapOptions;

    let ns = offload_netns();
    let ns_name = ns.name().to_owned();
    ns.run_in(LIMIT, move || {
        // Offloads are the device's, not the fd's: they outlive this attachment.
        drop(Tap::attach_with("ustack0", TapOptions { offload: true }).expect("attach"));
        let tap = Tap::attach("ustack0").expect("attach");
        assert!(!tap.vnet_hdr());
        assert_eq!(tap.offloads(), stack_io::Offloads::default());
        wait_oper_up(&ns_name, "ustack0");
        let (mut uring, _stats) = uring_for(tap, DeviceConfig::default());
        let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
        sock.send_to(&[0xcd; 300], (OUR_IP, 9)).expect("send");
        let skb = recv_skb_matching(&mut uring, |f| is_udp_to(f, OUR_IP, 9));
        assert_eq!(skb.ip_summed, IpSummed::None);
        assert!(
            udp_checksum_ok(skb.data()),
            "a reader without a vnet header must get finished checksums"
        );
    });
}
