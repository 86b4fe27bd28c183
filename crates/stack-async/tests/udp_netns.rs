//! `UdpSocket` against the kernel's UDP: a TAP in a throwaway network namespace, the
//! kernel at 192.0.2.1 (std sockets made on a thread inside the namespace), ustack at
//! 192.0.2.2.

mod common;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{any, kernel, ours, run_in_netns, v4, OUR_IP};
use stack_async::{StackHandle, UdpOptions, UdpSocket, UDP_RECV_QUEUE};
use tokio::io::ReadBuf;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for one datagram before failing.
const WAIT: Duration = Duration::from_secs(5);

/// A namespace with the TAP, the stack on it, and a current-thread tokio runtime
/// running `test` on a thread inside the namespace (so std sockets made there are the
/// kernel's end of the link).
fn run<F, Fut>(test: F)
where
    F: FnOnce(StackHandle) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    run_in_netns(LIMIT, test)
}

/// A kernel UDP socket on a thread of its own, echoing every datagram to its sender
/// until dropped. Counts what it echoed.
struct KernelEcho {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl KernelEcho {
    fn new(port: u16) -> KernelEcho {
        let sock = std::net::UdpSocket::bind(kernel(port)).expect("kernel bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = v4(sock.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let (s, e) = (stop.clone(), echoed.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        sock.send_to(&buf[..n], from).expect("kernel echo");
                        e.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err)
                        if matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(err) => panic!("kernel recv: {err}"),
                }
            }
        });
        KernelEcho {
            addr,
            stop,
            echoed,
            thread: Some(thread),
        }
    }
}

impl Drop for KernelEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kernel socket that reads whatever arrives, with a short timeout.
fn kernel_socket(port: u16) -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind(kernel(port)).expect("kernel bind");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock
}

async fn recv_within(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddrV4) {
    timeout(WAIT, sock.recv_from(buf))
        .await
        .expect("a datagram within 5 s")
        .expect("recv_from")
}

/// A payload where every byte position is distinguishable.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// SO_RCVBUFFORCE (root): a kernel socket that keeps everything a test sends it.
fn force_rcvbuf(sock: &std::net::UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn udp_counters(handle: &StackHandle) -> stack_core::snmp::UdpMib {
    handle
        .call(|s, _| s.snmp().udp.clone())
        .await
        .expect("call")
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn talks_to_a_kernel_socket_byte_for_byte() {
    run(|handle| async move {
        let echo = KernelEcho::new(7000);
        let sock = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        let local = sock.local_addr().unwrap();
        assert_eq!(*local.ip(), Ipv4Addr::UNSPECIFIED);
        assert!((32768..=60999).contains(&local.port()), "{local}");
        assert_eq!(
            sock.peer_addr().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );

        let mut buf = vec![0u8; 2048];
        for (i, len) in [0usize, 1, 2, 7, 100, 1000, 1471, 1472]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len, i as u8);
            assert_eq!(sock.send_to(&data, echo.addr).await.expect("send_to"), len);
            let (n, from) = recv_within(&sock, &mut buf).await;
            assert_eq!(from, echo.addr);
            assert_eq!(n, len);
            assert_eq!(&buf[..n], &data[..], "{len} bytes come back identical");
        }

        // Connected: send/recv, and getsockname now names the route's source.
        sock.connect(echo.addr).await.expect("connect");
        assert_eq!(sock.peer_addr().unwrap(), echo.addr);
        assert_eq!(sock.local_addr().unwrap(), ours(local.port()));
        for len in [0usize, 1, 1472] {
            let data = pattern(len, 99);
            assert_eq!(sock.send(&data).await.expect("send"), len);
            let n = timeout(WAIT, sock.recv(&mut buf))
                .await
                .expect("reply")
                .expect("recv");
            assert_eq!(&buf[..n], &data[..]);
        }
        assert_eq!(echo.echoed.load(Ordering::Relaxed), 11);

        let udp = udp_counters(&handle).await;
        assert_eq!((udp.out_datagrams, udp.in_datagrams), (11, 11), "{udp:?}");
        assert_eq!((udp.in_errors, udp.sndbuf_errors), (0, 0), "{udp:?}");
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn a_kernel_socket_sends_to_our_bound_socket() {
    run(|handle| async move {
        let sock = UdpSocket::bind(&handle, ours(4000)).await.expect("bind");
        let k = kernel_socket(0);
        let k_addr = v4(k.local_addr().unwrap());

        k.send_to(b"hello, ustack", ours(4000)).unwrap();
        let mut buf = [0u8; 64];
        // Peek first: the datagram stays for the recv that follows.
        let (n, from) = timeout(WAIT, sock.peek_from(&mut buf))
            .await
            .expect("peek")
            .expect("peek_from");
        assert_eq!((&buf[..n], from), (&b"hello, ustack"[..], k_addr));
        let (n, from) = recv_within(&sock, &mut buf).await;
        assert_eq!((&buf[..n], from), (&b"hello, ustack"[..], k_addr));

        // Too long for the buffer: truncated, and the rest is gone (the next recv gets
        // the next datagram), as recvfrom(2) without MSG_TRUNC.
        let long = pattern(100, 3);
        k.send_to(&long, ours(4000)).unwrap();
        k.send_to(b"next", ours(4000)).unwrap();
        let mut small = [0u8; 10];
        let (n, _) = recv_within(&sock, &mut small).await;
        assert_eq!((n, &small[..]), (10, &long[..10]));
        let (n, _) = recv_within(&sock, &mut buf).await;
        assert_eq!(&buf[..n], b"next");

        // And the reply reaches the kernel socket.
        sock.send_to(b"hi, kernel", k_addr).await.expect("send_to");
        let mut kbuf = [0u8; 64];
        let (n, from) = k.recv_from(&mut kbuf).expect("kernel recv");
        assert_eq!((&kbuf[..n], v4(from)), (&b"hi, kernel"[..], ours(4000)));
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn connected_socket_gets_connection_refused_from_a_closed_port() {
    run(|handle| async move {
        // A port nobody listens on: the kernel answers ICMP port unreachable.
        let closed = kernel(v4(kernel_socket(0).local_addr().unwrap()).port());
        let sock = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        sock.connect(closed).await.expect("connect");
        sock.send(b"anyone?")
            .await
            .expect("the send itself succeeds");
        let mut buf = [0u8; 16];
        let err = timeout(WAIT, sock.recv(&mut buf))
            .await
            .expect("the error within 5 s")
            .expect_err("ConnectionRefused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        // Reported once: the socket is usable again.
        sock.send(b"again").await.expect("the next send");

        // An unconnected socket hears nothing of it (Linux without IP_RECVERR).
        let unconnected = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        unconnected.send_to(b"x", closed).await.expect("send_to");
        assert!(
            timeout(Duration::from_millis(500), unconnected.recv_from(&mut buf))
                .await
                .is_err(),
            "no error for an unconnected socket"
        );
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn bind_conflicts_give_addr_in_use_and_reuseaddr_shares() {
    run(|handle| async move {
        let a = UdpSocket::bind(&handle, any(6000)).await.expect("bind");
        for addr in [any(6000), ours(6000)] {
            let err = UdpSocket::bind(&handle, addr).await.expect_err("in use");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{addr}: {err}");
        }
        let err = UdpSocket::bind(&handle, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 77), 1))
            .await
            .expect_err("not ours");
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);

        // Dropping closes: the port is free for the next bind (the close is queued
        // ahead of it).
        drop(a);
        let _again = UdpSocket::bind(&handle, any(6000)).await.expect("rebind");

        let reuse = UdpOptions::new().reuse_address(true);
        let r1 = reuse.bind(&handle, any(6001)).await.expect("first");
        let r2 = reuse.bind(&handle, ours(6001)).await.expect("both set it");
        let err = UdpSocket::bind(&handle, any(6001))
            .await
            .expect_err("this one did not set SO_REUSEADDR");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            r1.local_addr().unwrap().port(),
            r2.local_addr().unwrap().port()
        );
        let count = handle.call(|s, _| s.socket_count()).await.unwrap();
        assert_eq!(count, 3, "failed binds leave no socket behind");
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn broadcast_needs_so_broadcast() {
    run(|handle| async move {
        let k = std::net::UdpSocket::bind(any(7010)).expect("kernel bind");
        k.set_read_timeout(Some(WAIT)).unwrap();
        let sock = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        let bcast = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 255), 7010);
        let err = sock.send_to(b"all", bcast).await.expect_err("EACCES");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(!sock.broadcast().unwrap());
        sock.set_broadcast(true).unwrap();
        assert!(sock.broadcast().unwrap());
        sock.send_to(b"all", bcast)
            .await
            .expect("with SO_BROADCAST");
        let mut buf = [0u8; 8];
        let (n, from) = k
            .recv_from(&mut buf)
            .expect("the kernel gets the broadcast");
        assert_eq!((&buf[..n], v4(from).ip()), (&b"all"[..], &OUR_IP));
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn msg_more_and_udp_cork_build_one_datagram() {
    run(|handle| async move {
        let k = kernel_socket(0);
        let k_addr = v4(k.local_addr().unwrap());
        let sock = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        let mut buf = [0u8; 64];

        sock.send_to_more(b"ab", k_addr).await.unwrap();
        sock.send_to_more(b"cd", k_addr).await.unwrap();
        sock.send_to(b"ef", k_addr).await.unwrap();
        let (n, _) = k.recv_from(&mut buf).expect("kernel recv");
        assert_eq!(&buf[..n], b"abcdef");

        sock.set_cork(true).await.unwrap();
        sock.send_to(b"12", k_addr).await.unwrap();
        sock.send_to(b"34", k_addr).await.unwrap();
        sock.set_cork(false).await.unwrap();
        let (n, _) = k.recv_from(&mut buf).expect("kernel recv");
        assert_eq!(&buf[..n], b"1234");
        assert_eq!(udp_counters(&handle).await.out_datagrams, 2);
    });
}

/// A reader that does not keep up: the channel fills, then the core queue (bounded by
/// SO_RCVBUF) drops and counts RcvbufErrors; memory stays bounded, and once the reader
/// catches up the socket works as before.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn slow_reader_overflows_into_rcvbuf_errors_and_recovers() {
    run(|handle| async move {
        const FLOOD: u64 = 5000;
        // Room for 128 datagrams in the core (each is charged its 2 KiB buffer): more
        // than the 64 frames the stack thread takes in before it lets the socket drain,
        // so the channel fills before the core starts dropping.
        const RCVBUF: usize = 256 << 10;
        let sock = UdpOptions::new()
            .recv_buffer_size(RCVBUF)
            .bind(&handle, ours(5001))
            .await
            .expect("bind");
        let k = kernel_socket(0);
        let k_addr = v4(k.local_addr().unwrap());
        // One datagram first, so the kernel has resolved our MAC before the flood (it
        // would hold only ~160 datagrams in its ARP queue and drop the rest).
        let mut buf = [0u8; 512];
        k.send_to(b"prime", ours(5001)).unwrap();
        let (n, _) = recv_within(&sock, &mut buf).await;
        assert_eq!(&buf[..n], b"prime");
        let rss_before = resident_bytes();

        let flood = std::thread::spawn(move || {
            let payload = [0x5au8; 200];
            for _ in 0..FLOOD {
                // The kernel may refuse when its TAP queue is full; those are not ours.
                let _ = k.send_to(&payload, ours(5001));
            }
            k
        });
        let k = tokio::task::spawn_blocking(move || flood.join().unwrap())
            .await
            .unwrap();
        // Let the stack take in what is still queued towards it.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let udp = udp_counters(&handle).await;
        let io = handle.io_stats();
        println!("after the flood: {udp:?}\n{io}");
        assert!(
            udp.rcvbuf_errors > 0,
            "the core must drop and count: {udp:?}"
        );
        let rss_after = resident_bytes();
        assert!(
            rss_after < rss_before + (32 << 20),
            "memory grew from {rss_before} to {rss_after} bytes"
        );

        // Read everything queued: the channel, then what the core kept (the drain the
        // reader asks for at half). Not more: the rest was dropped.
        let mut got = 0usize;
        while let Ok(r) = timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
            let (n, from) = r.expect("recv_from");
            assert_eq!((n, from), (200, k_addr));
            got += 1;
        }
        let core_max = RCVBUF / 2048;
        println!("read {got} datagrams after the flood");
        assert!(
            got > UDP_RECV_QUEUE && got <= UDP_RECV_QUEUE + core_max,
            "got {got}: the channel ({UDP_RECV_QUEUE}) plus at most {core_max} from the core"
        );
        let udp = udp_counters(&handle).await;
        assert!(
            udp.rcvbuf_errors + got as u64 + io.rx_dropped <= FLOOD,
            "{udp:?}"
        );

        // Still working, both ways.
        k.send_to(b"after", ours(5001)).unwrap();
        let (n, _) = recv_within(&sock, &mut buf).await;
        assert_eq!(&buf[..n], b"after");
        sock.send_to(b"fine", k_addr).await.unwrap();
        let (n, _) = k.recv_from(&mut buf).expect("kernel recv");
        assert_eq!(&buf[..n], b"fine");
    });
}

/// A tiny send buffer and several tasks sending at once: every send completes, none
/// fails, nothing piles up (each waits for the buffer), and the fan-out waker loses no
/// sender (a lost wakeup would hang the test).
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn tiny_send_buffer_many_senders_all_complete() {
    run(|handle| async move {
        const TASKS: u64 = 4;
        const EACH: u64 = 1000;
        let k = kernel_socket(0);
        let k_addr = v4(k.local_addr().unwrap());
        k.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        force_rcvbuf(&k, 32 << 20);
        let counter = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while let Ok((len, _)) = k.recv_from(&mut buf) {
                assert_eq!(len, 1000);
                n += 1;
                if n == (TASKS + 1) * EACH {
                    break;
                }
            }
            n
        });

        let sock = Arc::new(
            UdpOptions::new()
                .send_buffer_size(2048)
                .bind(&handle, any(0))
                .await
                .expect("bind"),
        );
        assert_eq!(sock.send_buffer_size().unwrap(), 2048);
        let rss_before = resident_bytes();
        let started = Instant::now();
        let senders: Vec<_> = (0..TASKS)
            .map(|t| {
                let sock = sock.clone();
                tokio::spawn(async move {
                    let data = [t as u8; 1000];
                    for _ in 0..EACH {
                        assert_eq!(sock.send_to(&data, k_addr).await.expect("send_to"), 1000);
                    }
                })
            })
            .collect();
        // A sender on another thread and executor, on the same socket.
        let other = {
            let sock = sock.clone();
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    for _ in 0..EACH {
                        sock.send_to(&[9u8; 1000], k_addr).await.expect("send_to");
                    }
                })
            })
        };
        for s in senders {
            s.await.unwrap();
        }
        tokio::task::spawn_blocking(move || other.join().unwrap())
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let rss_after = resident_bytes();
        let received = tokio::task::spawn_blocking(move || counter.join().unwrap())
            .await
            .unwrap();
        let udp = udp_counters(&handle).await;
        let io = handle.io_stats();
        println!(
            "{} sends in {elapsed:?}, kernel received {received}\n{udp:?}\n{io}",
            (TASKS + 1) * EACH
        );
        assert_eq!(udp.out_datagrams, (TASKS + 1) * EACH);
        assert_eq!(udp.sndbuf_errors, 0, "blocked sends wait, they do not fail");
        // Every datagram reached the wire (what the kernel then keeps depends on how
        // busy this machine is; with the big buffer it is normally all of them).
        assert!(io.tx_packets >= (TASKS + 1) * EACH, "{io}");
        assert_eq!(io.tx_errors, 0, "{io}");
        assert!(received > 0);
        assert!(
            rss_after < rss_before + (16 << 20),
            "memory grew from {rss_before} to {rss_after} bytes"
        );
    });
}

/// Backpressure: while the packets charged to the send buffer are held below the
/// socket (here: in the ARP queue of a neighbour that never answers), the next send
/// stays pending, and completes once they are freed.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn blocked_sender_stays_pending_until_the_buffer_drains() {
    run(|handle| async move {
        let nobody = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 9);
        let sock = UdpOptions::new()
            .send_buffer_size(2048)
            .bind(&handle, any(0))
            .await
            .expect("bind");
        sock.send_to(&[1u8; 1000], nobody)
            .await
            .expect("queued while ARP resolves");
        let started = Instant::now();
        let mut second = Box::pin(sock.send_to(&[2u8; 1000], nobody));
        assert!(
            timeout(Duration::from_millis(500), &mut second)
                .await
                .is_err(),
            "the buffer is full: the second send must wait"
        );
        // ARP gives up after its probes; the queued packet is freed and the sender
        // resumes (the send itself may then fail: the neighbour is unreachable).
        let result = timeout(Duration::from_secs(10), second)
            .await
            .expect("resumes once the buffer drains");
        println!("second send after {:?}: {result:?}", started.elapsed());
        if let Err(e) = result {
            assert_eq!(e.kind(), io::ErrorKind::HostUnreachable, "{e}");
        }
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(udp_counters(&handle).await.sndbuf_errors, 0);
    });
}

/// Receivers on three threads share one socket: each waits in its own `recv_from`
/// and none may miss a wakeup (each stops only on a "stop" datagram).
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn receivers_on_several_threads_share_one_socket() {
    run(|handle| async move {
        const N: u32 = 300;
        const READERS: usize = 3;
        let sock = Arc::new(UdpSocket::bind(&handle, ours(5002)).await.expect("bind"));
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let sock = sock.clone();
                std::thread::spawn(move || {
                    futures::executor::block_on(async {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 16];
                        loop {
                            let (n, _) = sock.recv_from(&mut buf).await.expect("recv_from");
                            if &buf[..n] == b"stop" {
                                return seen;
                            }
                            seen.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                        }
                    })
                })
            })
            .collect();
        let k = kernel_socket(0);
        for i in 0..N {
            k.send_to(&i.to_be_bytes(), ours(5002)).unwrap();
            if i % 50 == 0 {
                // Let some readers park in between.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for _ in 0..READERS {
            k.send_to(b"stop", ours(5002)).unwrap();
        }
        let mut all: Vec<u32> = tokio::task::spawn_blocking(move || {
            readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect()
        })
        .await
        .unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..N).collect::<Vec<_>>());
    });
}

/// `poll_recv_from` and `poll_send_to` from a hand-written future (no async fn): echo
/// `left` datagrams back to their senders.
struct PollEcho<'a> {
    sock: &'a UdpSocket,
    buf: Vec<u8>,
    reply: Option<(usize, SocketAddrV4)>,
    left: usize,
}

impl Future for PollEcho<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.left == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.reply {
                None => {
                    let mut rb = ReadBuf::new(&mut this.buf);
                    let from = std::task::ready!(this.sock.poll_recv_from(cx, &mut rb))?;
                    this.reply = Some((rb.filled().len(), from));
                }
                Some((n, to)) => {
                    let sent = std::task::ready!(this.sock.poll_send_to(cx, &this.buf[..n], to))?;
                    assert_eq!(sent, n);
                    this.reply = None;
                    this.left -= 1;
                }
            }
        }
    }
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn poll_api_drives_a_hand_written_future() {
    run(|handle| async move {
        let sock = UdpSocket::bind(&handle, ours(5003)).await.expect("bind");
        let k = kernel_socket(0);
        let peer = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for i in 0..20usize {
                let data = pattern(i * 70, i as u8);
                k.send_to(&data, ours(5003)).unwrap();
                let (n, from) = k.recv_from(&mut buf).expect("echo");
                assert_eq!((&buf[..n], v4(from)), (&data[..], ours(5003)));
            }
        });
        let echo = PollEcho {
            sock: &sock,
            buf: vec![0; 2048],
            reply: None,
            left: 20,
        };
        timeout(Duration::from_secs(20), echo)
            .await
            .expect("20 echoes")
            .expect("echo");
        tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();
    });
}

/// Over 1472 bytes a datagram no longer fits one frame: ip_fragment on the way out,
/// ip_defrag on the way in, on both sides.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn large_datagrams_are_fragmented_and_reassembled() {
    run(|handle| async move {
        let echo = KernelEcho::new(7001);
        let sock = UdpSocket::bind(&handle, any(0)).await.expect("bind");
        let mut buf = vec![0u8; 65536];
        for (i, len) in [1473usize, 2000, 4000, 8972, 65507].into_iter().enumerate() {
            let data = pattern(len, i as u8);
            assert_eq!(sock.send_to(&data, echo.addr).await.expect("send_to"), len);
            let (n, from) = recv_within(&sock, &mut buf).await;
            assert_eq!((n, from), (len, echo.addr));
            assert_eq!(&buf[..n], &data[..], "{len} bytes come back identical");
        }
        let err = sock
            .send_to(&vec![0u8; 65508], echo.addr)
            .await
            .expect_err("over 65507");
        assert_eq!(err.raw_os_error(), Some(90), "EMSGSIZE: {err}");
    });
}
