//! The device loop against a real kernel: a TAP device in a throwaway network namespace.
//! The kernel side (192.0.2.1) makes frames that must arrive on our RX ring, and frames
//! we put on the TX ring must reach it.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::netns::{inject_frame, wait_oper_up, NetNs};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use stack_core::{Skb, SkbPool};
use stack_io::{run_device, DeviceConfig, IoStats, Tap};

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

fn experimental_frame(i: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
    f.extend_from_slice(&[i; 46]);
    f
}

/// Threads of this process that are io_uring's io-wq workers ("iou-wrk-<tid>").
fn io_wq_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("iou-wrk"))
        .count()
}

/// The next frame on the RX ring that `want` accepts (others are skipped).
async fn recv_matching(rx: &mut mpsc::Receiver<Skb>, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let fut = async {
        loop {
            let skb = rx.next().await.expect("RX ring closed");
            if want(skb.data()) {
                return skb.data().to_vec();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("no matching frame within 5 s")
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn device_loop_moves_frames_both_ways() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let before = ns.kernel_rx_packets("ustack0");

    let ns_name = ns.name().to_owned();
    let stats = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        wait_oper_up(&ns_name, "ustack0");
        assert_eq!(tap.mtu(), 1500);
        assert!(tap.ifindex() > 0);
        let stats = Arc::new(IoStats::new());
        let (rx_sender, mut rx) = mpsc::channel(64);
        let (mut tx, tx_receiver) = mpsc::channel(64);
        let dev_stats = stats.clone();
        tokio_uring::start(async move {
            let pool = SkbPool::default();
            let dev = tokio_uring::spawn(run_device(
                tap,
                pool,
                rx_sender,
                tx_receiver,
                dev_stats,
                DeviceConfig::default(),
            ));

            // Kernel -> us: a datagram to a neighbour nobody has resolved makes the
            // kernel broadcast "who has 192.0.2.2" on the TAP.
            let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
            sock.send_to(b"x", (OUR_IP, 9)).expect("send");
            let req = recv_matching(&mut rx, |f| {
                parse_arp(f)
                    .is_some_and(|(op, spa, _, tpa)| op == 1 && spa == KERNEL_IP && tpa == OUR_IP)
            })
            .await;
            // The 32 posted reads wait as polls armed in the kernel, not in io-wq
            // worker threads (that is what O_NONBLOCK on the fd buys).
            assert_eq!(io_wq_workers(), 0, "reads must not block io-wq workers");
            let mut kernel_mac = [0; 6];
            kernel_mac.copy_from_slice(&req[6..12]);

            // Us -> kernel: ask who has 192.0.2.1; the kernel answers to our MAC, which
            // proves the frame went in whole.
            let ask = arp_frame(1, [0xff; 6], OUR_MAC, OUR_IP, [0; 6], KERNEL_IP);
            tx.send(Skb::from_vec(ask)).await.expect("TX ring open");
            let reply = recv_matching(&mut rx, |f| {
                parse_arp(f).is_some_and(|(op, spa, tha, tpa)| {
                    op == 2 && spa == KERNEL_IP && tha == OUR_MAC && tpa == OUR_IP
                })
            })
            .await;
            assert_eq!(&reply[6..12], &kernel_mac);

            // Closing the TX ring ends the loop, with 32 reads still posted.
            drop(tx);
            dev.await.expect("device task").expect("device loop");
        });
        // Reaching here means tokio_uring::start returned: the abandoned reads were
        // cancelled rather than keeping the runtime alive.
        stats.snapshot()
    });

    println!("{stats}");
    assert!(stats.rx_packets >= 2, "{stats}");
    assert_eq!(stats.tx_packets, 1, "{stats}");
    assert_eq!(stats.tx_bytes, 42, "{stats}");
    assert_eq!(stats.tx_batches, 1, "{stats}");
    assert_eq!(
        (stats.rx_errors, stats.tx_errors, stats.rx_dropped),
        (0, 0, 0)
    );
    assert!(ns.kernel_rx_packets("ustack0") > before);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn ready_frames_go_out_in_one_batch() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let before = ns.kernel_rx_packets("ustack0");

    let stats = ns.run_in(LIMIT, || {
        let tap = Tap::attach("ustack0").expect("attach");
        let stats = Arc::new(IoStats::new());
        let (rx_sender, _rx) = mpsc::channel(64);
        let (mut tx, tx_receiver) = mpsc::channel(64);
        for i in 0..50 {
            tx.try_send(Skb::from_vec(experimental_frame(i)))
                .expect("room");
        }
        // Closed with 50 frames queued: the loop sends them all, then ends.
        drop(tx);
        let dev_stats = stats.clone();
        tokio_uring::start(run_device(
            tap,
            SkbPool::default(),
            rx_sender,
            tx_receiver,
            dev_stats,
            DeviceConfig::default(),
        ))
        .expect("device loop");
        stats.snapshot()
    });

    println!("{stats}");
    assert_eq!(stats.tx_packets, 50);
    assert_eq!(stats.tx_bytes, 50 * 60);
    assert_eq!(stats.tx_batches, 1, "all ready frames in one submission");
    assert_eq!(ns.kernel_rx_packets("ustack0") - before, 50);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn full_rx_ring_drops_and_counts() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");

    let ns_name = ns.name().to_owned();
    let (stats, queued) = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        wait_oper_up(&ns_name, "ustack0");
        let ifindex = tap.ifindex();
        let stats = Arc::new(IoStats::new());
        // Buffer 0: the ring holds one frame (futures' mpsc gives each sender a slot).
        let (rx_sender, mut rx) = mpsc::channel(0);
        let (tx, tx_receiver) = mpsc::channel::<Skb>(1);
        let dev_stats = stats.clone();
        let poll_stats = stats.clone();
        tokio_uring::start(async move {
            let dev = tokio_uring::spawn(run_device(
                tap,
                SkbPool::default(),
                rx_sender,
                tx_receiver,
                dev_stats,
                DeviceConfig::default(),
            ));
            for i in 0..20 {
                inject_frame(ifindex, &experimental_frame(i));
            }
            let wait = async {
                while poll_stats
                    .rx_packets
                    .load(std::sync::atomic::Ordering::Relaxed)
                    < 20
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .expect("20 frames read within 5 s");
            drop(tx);
            dev.await.expect("device task").expect("device loop");
            let mut queued = 0;
            while rx.try_recv().is_ok() {
                queued += 1;
            }
            (poll_stats.snapshot(), queued)
        })
    });

    println!("{stats}");
    assert_eq!(stats.rx_packets, 20);
    assert_eq!(queued, 1);
    assert_eq!(stats.rx_dropped, 19);
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn deleting_the_device_ends_the_loop_with_an_error() {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let ns_name = ns.name().to_owned();

    let err = ns.run_in(LIMIT, move || {
        let tap = Tap::attach("ustack0").expect("attach");
        let (rx_sender, _rx) = mpsc::channel(64);
        let (_tx, tx_receiver) = mpsc::channel::<Skb>(64);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let ok = std::process::Command::new("ip")
                .args(["-n", &ns_name, "link", "del", "ustack0"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip link del");
        });
        tokio_uring::start(async move {
            let run = run_device(
                tap,
                SkbPool::default(),
                rx_sender,
                tx_receiver,
                Arc::new(IoStats::new()),
                DeviceConfig::default(),
            );
            tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .expect("the loop notices the deletion within 5 s")
                .expect_err("a deleted device is an error")
        })
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
