//! The device loop against a real kernel: a TAP device in a throwaway network namespace,
//! attached plainly and with offloads (virtio_net_hdr, TUN_F_CSUM | TUN_F_TSO4).
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
/// `run_device` on `tap` with the default pool and configuration, which every test here
/// uses.
fn device_loop(
    tap: Tap,
    rx_ring: mpsc::Sender<Skb>,
    tx_ring: mpsc::Receiver<Skb>,
    stats: Arc<IoStats>,
) -> impl std::future::Future<Output = std::io::Result<()>> {
    run_device(
        tap,
        SkbPool::default(),
        rx_ring,
        tx_ring,
        stats,
        DeviceConfig::default(),
    )
}

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
            let dev = tokio_uring::spawn(device_loop(tap, rx_sender, tx_receiver, dev_stats));

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
        tokio_uring::start(device_loop(tap, rx_sender, tx_receiver, dev_stats))
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
            let dev = tokio_uring::spawn(device_loop(tap, rx_sender, tx_receiver, dev_stats));
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
            let run = device_loop(tap, rx_sender, tx_receiver, Arc::new(IoStats::new()));
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

/// The next skb on the RX ring whose frame `want` accepts.
async fn recv_skb_matching(rx: &mut mpsc::Receiver<Skb>, want: impl Fn(&[u8]) -> bool) -> Skb {
    let fut = async {
        loop {
            let skb = rx.next().await.expect("RX ring closed");
            if want(skb.data()) {
                return skb;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("no matching frame within 5 s")
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
        let stats = Arc::new(IoStats::new());
        let (rx_sender, mut rx) = mpsc::channel(256);
        let (mut tx, tx_receiver) = mpsc::channel(64);
        let dev_stats = stats.clone();
        tokio_uring::start(async move {
            let dev = tokio_uring::spawn(device_loop(tap, rx_sender, tx_receiver, dev_stats));

            // UDP from a kernel socket: with TUN_F_CSUM the kernel leaves the checksum
            // to the device (CHECKSUM_PARTIAL), and tells us with NEEDS_CSUM.
            let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
            sock.send_to(&[0xab; 300], (OUR_IP, 9)).expect("send");
            let skb = recv_skb_matching(&mut rx, |f| is_udp_to(f, OUR_IP, 9)).await;
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
            // (the loop is no TCP peer) with a 64 KiB window, and the first flight
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
            let syn =
                recv_skb_matching(&mut rx, |f| is_tcp_from_kernel(f) && f[47] & 0x02 != 0).await;
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
            tx.send(Skb::from_vec(synack)).await.expect("TX ring open");

            let big = recv_skb_matching(&mut rx, |f| is_tcp_from_kernel(f) && f.len() > 1514).await;
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

            drop(tx);
            dev.await.expect("device task").expect("device loop");
        });
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
        let stats = Arc::new(IoStats::new());
        let (rx_sender, mut rx) = mpsc::channel(64);
        let (mut tx, tx_receiver) = mpsc::channel(64);
        let dev_stats = stats.clone();
        let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let got = tokio_uring::start(async move {
            let dev = tokio_uring::spawn(device_loop(tap, rx_sender, tx_receiver, dev_stats));
            // Learn the kernel's MAC from a frame it sends us.
            sock.send_to(b"hi", (OUR_IP, 9)).expect("send");
            let hello = recv_matching(&mut rx, |f| is_udp_to(f, OUR_IP, 9)).await;
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
                tx.send(skb).await.expect("TX ring open");
                // Give the write a moment to complete, then read on a plain thread.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut buf = [0u8; 200];
                got.push(match sock.recv_from(&mut buf) {
                    Ok((n, from)) => Some((buf[0], n, from)),
                    Err(_) => None,
                });
            }
            drop(tx);
            dev.await.expect("device task").expect("device loop");
            got
        });
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
        let (rx_sender, mut rx) = mpsc::channel(64);
        let (tx, tx_receiver) = mpsc::channel::<Skb>(1);
        tokio_uring::start(async move {
            let dev = tokio_uring::spawn(device_loop(
                tap,
                rx_sender,
                tx_receiver,
                Arc::new(IoStats::new()),
            ));
            let sock = UdpSocket::bind((KERNEL_IP, 0)).expect("bind 192.0.2.1");
            sock.send_to(&[0xcd; 300], (OUR_IP, 9)).expect("send");
            let skb = recv_skb_matching(&mut rx, |f| is_udp_to(f, OUR_IP, 9)).await;
            assert_eq!(skb.ip_summed, IpSummed::None);
            assert!(
                udp_checksum_ok(skb.data()),
                "a reader without a vnet header must get finished checksums"
            );
            drop(tx);
            dev.await.expect("device task").expect("device loop");
        });
    });
}
