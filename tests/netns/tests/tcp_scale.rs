//! `ustack host` with many idle kernel connections (the per-packet issue's scale claims, at
//! a size that runs in seconds): 10,000 connections to the echo service stay open at once,
//! each one's echo works, an idle connection costs ustack at most 4 KiB (stack and service
//! together), and the memory comes back once they close.
//!
//! Memory is ustack's resident set (`VmRSS`): what a user sees in `ps`. Freed memory the
//! allocator keeps counts against us, so "comes back" is checked with a margin (32 MiB)
//! rather than to the byte.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use testbed::vm_rss_kib;
use ustack_netns_tests::{counter, ensure_open_files, Bed, USTACK_IP};

const ECHO_PORT: u16 = 7;
const N: usize = 10_000;
/// The bound on an idle established connection, in KiB.
const IDLE_KIB: u64 = 4;
/// How far above its start ustack's RSS may stay after every connection closed.
const BACK_WITHIN_KIB: u64 = 32 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn rss(pid: u32) -> u64 {
    vm_rss_kib(pid).unwrap_or_else(|| panic!("no VmRSS for ustack ({pid})"))
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn ten_thousand_idle_connections_cost_little_and_their_memory_comes_back() {
    ensure_open_files(N as u64);
    let bed = Bed::new("tcp-scale");
    let host = bed.start_host();
    let pid = host.pid();
    let addr = SocketAddrV4::new(USTACK_IP.parse().expect("constant"), ECHO_PORT);
    let start_kib = rss(pid);

    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(N);
    bed.ns
        .enter(|| {
            for i in 0..N {
                let s = TcpStream::connect(addr).unwrap_or_else(|e| {
                    panic!("connection {i} of {N}: {e}\n{}", host.output_so_far())
                });
                s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                conns.push(s);
            }
        })
        .expect("enter the namespace");
    // Echo works on each: two bytes of its own index, back to it alone.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&(i as u16).to_be_bytes()).expect("write");
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let mut got = [0u8; 2];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: no echo: {e}\n{}", host.output_so_far()));
        assert_eq!(u16::from_be_bytes(got), i as u16, "connection {i}");
    }
    let echoed = started.elapsed();
    // Idle now: nothing unread or unacknowledged anywhere.
    std::thread::sleep(Duration::from_millis(500));
    let open_kib = rss(pid);
    let per_conn = (open_kib.saturating_sub(start_kib)) as f64 / N as f64;
    println!(
        "{N} connections echoed in {:.1} s; ustack RSS {start_kib} KiB -> {open_kib} KiB \
         ({per_conn:.2} KiB per idle connection)",
        echoed.as_secs_f64()
    );
    assert!(
        per_conn <= IDLE_KIB as f64,
        "an idle connection costs {per_conn:.2} KiB, more than {IDLE_KIB} KiB"
    );

    for s in &conns {
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("connection {i}: no clean EOF: {e}"));
        assert!(rest.is_empty(), "connection {i}: bytes after the echo");
    }
    drop(conns);
    // TIME_WAIT is on the kernel's side (it closed first); ours close at once.
    let closed = testbed::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        rss(pid) <= start_kib + BACK_WITHIN_KIB
    });
    let end_kib = rss(pid);
    println!("after the close: {end_kib} KiB");
    assert!(
        closed,
        "ustack's RSS stayed at {end_kib} KiB, more than 32 MiB above its start ({start_kib} KiB)"
    );
    let (out, counters) = host.stop();
    assert_eq!(
        counter(&counters, "Tcp", "PassiveOpens", &out),
        N as u64,
        "{out}"
    );
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
    assert_eq!(counter(&counters, "Tcp", "OutRsts", &out), 0, "{out}");
}
