//! The whole stack thread against a real kernel: a TAP in a throwaway network
//! namespace, the kernel at 192.0.2.1, ustack at 192.0.2.2.

#[path = "../../stack-io/tests/common/netns.rs"]
mod netns;

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use netns::NetNs;
use stack_async::{PingMsgKind, PingSocket, StackBuilder, StackHandle};
use stack_core::wire::MacAddr;
use stack_core::StackConfig;

const LIMIT: Duration = Duration::from_secs(30);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn config() -> StackConfig {
    StackConfig::new(MacAddr([0x02, 0, 0, 0, 0, 0x02]), OUR_IP, 24)
}

fn ns_with_tap() -> NetNs {
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    ns
}

/// Spawn the stack on `ustack0` (call inside the namespace). `spawn` itself waits for
/// the kernel to bring the link up, so the kernel's replies are not dropped.
fn spawn_up(ns_name: &str) -> StackHandle {
    let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
    let json = std::process::Command::new("ip")
        .args(["-n", ns_name, "-j", "link", "show", "ustack0"])
        .output()
        .expect("ip");
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(json.contains("\"operstate\":\"UP\""), "{json}");
    handle
}

fn thread_alive(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Whether the thread is gone from /proc within a short grace: `join` returns when the
/// kernel clears the thread's tid (CLONE_CHILD_CLEARTID), which happens on the exit path
/// a moment before the task leaves /proc/self/task.
fn thread_gone_soon(tid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while thread_alive(tid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn spawn_then_drop_joins_the_stack_thread() {
    let ns = ns_with_tap();
    ns.run_in(LIMIT, || {
        let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
        assert_eq!(handle.tap_name(), "ustack0");
        assert!(handle.ifindex() > 0);
        let clone = handle.clone();
        let (tid, name, t0) = futures::executor::block_on(handle.call(|stack, now| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let name = std::thread::current().name().map(str::to_owned);
            let dev = stack
                .devices()
                .by_name("ustack0")
                .expect("device named after the TAP");
            assert_eq!(dev.id, stack_core::DeviceId::ETH0);
            assert_eq!(dev.addrs()[0].addr, OUR_IP);
            (tid, name, now)
        }))
        .expect("call");
        assert_eq!(name.as_deref(), Some("ustack-uring"));
        assert!(thread_alive(tid));
        std::thread::sleep(Duration::from_millis(20));
        let t1 = futures::executor::block_on(clone.call(|_, now| now)).expect("call");
        assert!(
            t1 - t0 >= Duration::from_millis(20),
            "the core's clock follows real time"
        );

        drop(clone);
        assert!(
            thread_alive(tid),
            "a clone remains: the stack keeps running"
        );
        drop(handle);
        // Drop of the last handle returned: the thread has been joined, even though
        // the device loop had reads posted on the TAP.
        assert!(
            thread_gone_soon(tid),
            "the stack thread must be gone after the last drop"
        );
    });
    // The TAP was released: it can be attached again.
    ns.run_in(LIMIT, || {
        drop(stack_io::Tap::attach("ustack0").expect("re-attach"))
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn shutdown_stops_the_stack_for_every_clone() {
    let ns = ns_with_tap();
    ns.run_in(LIMIT, || {
        let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
        let other = handle.clone();
        handle.shutdown().expect("clean shutdown");
        let err = futures::executor::block_on(other.call(|_, _| ())).expect_err("stopped");
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        assert_eq!(err.to_string(), "ustack: the stack thread has stopped");
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn spawn_errors_come_back_synchronously() {
    let ns = ns_with_tap();
    ns.run_in(LIMIT, || {
        let _first = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
        let err = StackHandle::spawn("ustack0", config(), 7).expect_err("busy");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        assert_eq!(
            err.to_string(),
            "TAP device \"ustack0\" is busy (another process is attached)"
        );
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn ping_the_kernel_from_futures_and_tokio() {
    let ns = ns_with_tap();
    let ns_name = ns.name().to_owned();
    ns.run_in(LIMIT, move || {
        let handle = spawn_up(&ns_name);

        // futures' executor.
        let sock = futures::executor::block_on(PingSocket::open(&handle)).expect("open");
        futures::executor::block_on(async {
            for seq in 1..=3u16 {
                let payload = [seq as u8; 56];
                sock.send_to(KERNEL_IP, seq, &payload).await.expect("send");
                let reply = sock.recv_reply().await.expect("reply");
                assert_eq!(reply.kind, PingMsgKind::EchoReply);
                assert_eq!(reply.from, KERNEL_IP);
                assert_eq!((reply.ident, reply.seq), (sock.ident(), seq));
                assert_eq!(reply.payload, payload);
                assert_eq!(reply.ttl, 64);
            }
        });

        // A tokio runtime on another thread, same handle.
        let h2 = handle.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let sock = PingSocket::open(&h2).await.expect("open");
                sock.send_to(KERNEL_IP, 9, b"tokio").await.expect("send");
                let reply = tokio::time::timeout(Duration::from_secs(5), sock.recv())
                    .await
                    .expect("reply within 5 s")
                    .expect("reply");
                assert_eq!((reply.seq, reply.payload.as_slice()), (9, &b"tokio"[..]));
            });
        })
        .join()
        .unwrap();

        let stats = handle.io_stats();
        println!("{stats}");
        // Gratuitous ARP, echo requests, our ARP reply or request; echo replies, ARP.
        assert!(stats.tx_packets >= 5 && stats.rx_packets >= 4, "{stats}");
        assert_eq!((stats.rx_dropped, stats.tx_errors), (0, 0), "{stats}");
        drop(sock);
        handle.shutdown().expect("clean shutdown");
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn unresolved_neighbour_reports_host_unreachable() {
    let ns = ns_with_tap();
    let ns_name = ns.name().to_owned();
    ns.run_in(LIMIT, move || {
        let handle = spawn_up(&ns_name);
        futures::executor::block_on(async {
            let sock = PingSocket::open(&handle).await.expect("open");
            // Nobody has 192.0.2.99: ARP gives up after its probes (driven by the stack
            // thread's timer) and the core reports host unreachable for the request.
            sock.send_to(Ipv4Addr::new(192, 0, 2, 99), 1, b"x")
                .await
                .expect("queued while resolving");
            let msg = sock.recv().await.expect("an error message");
            assert!(matches!(msg.kind, PingMsgKind::Error { .. }), "{msg:?}");
            assert_eq!(
                msg.kind.io_error_kind(),
                Some(io::ErrorKind::HostUnreachable)
            );
            assert_eq!(msg.seq, 1);
        });
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn many_concurrent_calls_wait_for_room_and_all_complete() {
    let ns = ns_with_tap();
    ns.run_in(LIMIT, || {
        let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
        // Four threads, 1000 calls each, all in flight at once: far more than the
        // command channel holds, so senders park and resume.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = handle.clone();
                std::thread::spawn(move || {
                    let calls = (0..1000u64).map(|i| h.call(move |_, _| t * 1000 + i));
                    futures::executor::block_on(futures::future::join_all(calls))
                })
            })
            .collect();
        let mut sum = 0;
        for t in threads {
            for r in t.join().unwrap() {
                sum += r.expect("call");
            }
        }
        assert_eq!(sum, (0..4000u64).sum::<u64>());
    });
}

/// Calls the stack every 10 ms until a call fails (its TAP was deleted); the error.
fn wait_stopped(handle: &StackHandle) -> io::Error {
    futures::executor::block_on(async {
        for _ in 0..500 {
            match handle.call(|_, _| ()).await {
                Ok(()) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return e,
            }
        }
        panic!("the stack still answers 5 s after its TAP was deleted");
    })
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn deleting_the_tap_stops_the_stack_with_the_reason() {
    let ns = ns_with_tap();
    let handle = ns.run_in(LIMIT, || {
        StackHandle::spawn("ustack0", config(), 7).expect("spawn")
    });
    ns.ip(&["link", "del", "ustack0"]);
    let err = wait_stopped(&handle);
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    let why = handle.shutdown().expect_err("the device failed");
    println!("{why}");
    assert!(why.to_string().contains("was the device deleted?"), "{why}");
}

/// CPU time (user + system) a thread of this process has used so far.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
    // After the ")" that ends the name: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().expect("ticks"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn busy_polling_spins_while_traffic_flows_and_parks_when_it_stops() {
    // A TAP name of its own: thread names are per process, and tests run in parallel.
    let ns = NetNs::new();
    ns.add_tap("bp0");
    ns.run_in(LIMIT, || {
        let handle = StackBuilder::host("bp0", &config(), 7)
            .busy_poll(Duration::from_millis(50))
            .spawn()
            .expect("spawn");
        let tid = futures::executor::block_on(handle.call(|_, _| {
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() }
        }))
        .expect("call");
        let sock = futures::executor::block_on(PingSocket::open(&handle)).expect("open");
        // Echoes every 10 ms: each gap is inside the 50 ms the thread keeps looking, so
        // it never sleeps and spends about a CPU doing so.
        let before = thread_cpu(tid);
        let started = std::time::Instant::now();
        futures::executor::block_on(async {
            for seq in 1..=30u16 {
                sock.send_to(KERNEL_IP, seq, b"spin").await.expect("send");
                let reply = sock.recv_reply().await.expect("reply");
                assert_eq!((reply.from, reply.seq), (KERNEL_IP, seq));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let busy = thread_cpu(tid) - before;
        let wall = started.elapsed();
        println!("busy: {busy:?} of CPU in {wall:?}");
        assert!(
            busy >= wall / 4,
            "a busy-polling thread uses CPU between packets: {busy:?} in {wall:?}"
        );
        // Traffic stops: after 50 ms more the thread parks and uses (next to) nothing.
        std::thread::sleep(Duration::from_millis(200));
        let idle_from = thread_cpu(tid);
        std::thread::sleep(Duration::from_millis(500));
        let idle = thread_cpu(tid) - idle_from;
        println!("idle: {idle:?} of CPU in 500 ms");
        assert!(
            idle <= Duration::from_millis(30),
            "an idle stack parks: {idle:?} of CPU in 500 ms"
        );
        drop(sock);
        drop(handle);
        assert!(thread_gone_soon(tid), "the stack thread is joined");
    });
}
