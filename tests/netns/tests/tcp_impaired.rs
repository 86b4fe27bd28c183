//! TCP through `ustack host --impair loss=5%,dup=2%,reorder=5%,seed=7` against the kernel:
//! the link loses, duplicates and reorders frames both ways (this kernel has no netem, so ustack
//! impairs its own side of the TAP, on the way in and on the way out), and a kernel client's
//! 20 MB each way through the echo still come back byte-identical and end with FIN.
//!
//! Both TCPs repair the damage: the kernel's losses and ustack's are recovered by SACK, fast
//! retransmit and, when a whole flight or its retransmission is lost, the RTO. The test prints
//! how long it took and which of ustack's repairs ran, so a regression in recovery shows up as
//! time and counters even while the bytes stay right.
//!
//! `USTACK_TCP_IMPAIRED_MB` sets the size (default 20 MB each way: about 25 s with a debug
//! build); `USTACK_TEST_SEED` replays the random payload of a failed run (the impairment itself
//! is always seed 7).

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use testbed::{counters_block, Child, Counters, Output};
use testbed::{echo_seeded, test_seed, EchoRun};
use ustack_netns_tests::{counter, Bed, TAP, USTACK_CIDR, USTACK_IP};

const ECHO_PORT: u16 = 7;
const IMPAIR: &str = "loss=5%,dup=2%,reorder=5%,seed=7";
/// With 5% loss each way a retransmission can be lost too, and the RTO backs off (1 s, 2 s,
/// 4 s, ...): a read may wait several seconds and still be fine; 30 s of nothing is a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Echo chunks are compared in this size; the writer writes in it too, so both sides draw the
/// same random stream.
const CHUNK: usize = 64 * 1024;

/// An impaired `ustack host`. The shared fixture starts the host without flags, so this one is
/// started here; like the fixture's, it is stopped (and its output printed) if the test fails.
struct ImpairedHost {
    child: Option<Child>,
}

impl ImpairedHost {
    /// Starts the host and returns once the kernel can ping it. Pings are lost too (5% each
    /// way), so readiness is retried rather than judged by one echo.
    fn start(bed: &Bed) -> ImpairedHost {
        let cmd = bed.ustack(&[
            "host",
            "--tap",
            TAP,
            "--addr",
            USTACK_CIDR,
            "--impair",
            IMPAIR,
        ]);
        let child = Child::spawn(cmd).unwrap_or_else(|e| panic!("cannot start ustack host: {e}"));
        let mut host = ImpairedHost { child: Some(child) };
        let mut exited = None;
        let ready =
            testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                if let Ok(Some(status)) = host.child.as_mut().expect("running").try_wait() {
                    exited = Some(status);
                    return true;
                }
                bed.ping(&["-c", "1", "-W", "1", USTACK_IP]).success()
            });
        if let Some(status) = exited {
            let out = host.child.take().expect("present").stop();
            panic!("ustack host exited at startup ({status}):\n{out}");
        }
        assert!(ready, "the impaired host did not answer a ping within 15 s");
        host
    }

    fn output_so_far(&self) -> String {
        match &self.child {
            Some(c) => format!(
                "--- ustack host stdout so far ---\n{}\n--- ustack host stderr so far ---\n{}",
                c.stdout_so_far().trim_end(),
                c.stderr_so_far().trim_end()
            ),
            None => "(ustack host already stopped)".to_string(),
        }
    }

    /// SIGTERM; it must exit 0, print its counters and no panic.
    fn stop(mut self) -> (Output, Counters) {
        let out = self.child.take().expect("running").stop();
        assert_eq!(
            out.code(),
            Some(0),
            "ustack host should exit 0 on SIGTERM:\n{out}"
        );
        assert!(!out.stderr.contains("panicked"), "ustack panicked:\n{out}");
        let counters = counters_block(&out.stdout)
            .unwrap_or_else(|| panic!("ustack host printed no counters block:\n{out}"));
        (out, counters)
    }
}

impl Drop for ImpairedHost {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- ustack host at failure ---\n{}", child.stop());
            }
        }
    }
}

fn kernel_counters(bed: &Bed) -> Counters {
    bed.ns
        .kernel_counters()
        .unwrap_or_else(|e| panic!("cannot read the kernel's counters: {e}"))
}

/// A counter's growth between two readings of the kernel's; 0 when it has no such counter.
fn kernel_delta(before: &Counters, after: &Counters, section: &str, name: &str) -> u64 {
    let get = |c: &Counters| c.get(section).and_then(|s| s.get(name)).copied();
    get(after).unwrap_or(0) - get(before).unwrap_or(0)
}

/// Kernel client -> impaired ustack echo: `USTACK_TCP_IMPAIRED_MB` (20) MB of seeded random
/// bytes written and read back concurrently come back identical and in order; ustack ends the
/// echo with its FIN after the client's (the client reads a clean EOF) and no connection is
/// reset on either side. Prints the time and the repairs both TCPs made.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn echo_survives_loss_duplication_and_reordering_byte_identical() {
    let mb: usize = std::env::var("USTACK_TCP_IMPAIRED_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let total = mb * 1_000_000;
    let seed = test_seed();
    let bed = Bed::new("tcp-impaired");
    let host = ImpairedHost::start(&bed);
    let kernel_before = kernel_counters(&bed);

    let ustack = SocketAddrV4::new(USTACK_IP.parse::<Ipv4Addr>().expect("constant"), ECHO_PORT);
    let stream = bed
        .ns
        .enter(|| TcpStream::connect_timeout(&ustack.into(), Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", bed.ns.name()))
        .unwrap_or_else(|e| panic!("connect to the echo: {e}\n{}", host.output_so_far()));
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let run = echo_seeded(&stream, total, seed, CHUNK);
    if let Some(at) = run.first_diff {
        panic!(
            "the echo differs from the data at byte {} (USTACK_TEST_SEED={seed} \
                             replays the payload)\n{}",
            at,
            host.output_so_far()
        );
    }
    let EchoRun {
        got,
        elapsed,
        upload: up,
        end,
        ..
    } = run;
    if let Err(e) = &end {
        panic!(
            "the kernel's read failed after {got} of {total} bytes and {:.1} s: {e} \
             (USTACK_TEST_SEED={seed})\n{}",
            elapsed.as_secs_f64(),
            host.output_so_far()
        );
    }
    let up = up.unwrap_or_else(|e| {
        panic!(
            "the kernel's write failed: {e} (USTACK_TEST_SEED={seed})\n{}",
            host.output_so_far()
        )
    });
    assert_eq!(
        got,
        total,
        "the echo ended (FIN) after {got} of {total} bytes (USTACK_TEST_SEED={seed})\n{}",
        host.output_so_far()
    );
    drop(stream);
    // The last ACKs and ustack's FIN may need a retransmission or two; give them time before
    // the counters are read (CurrEstab falls when ustack's FIN is sent).
    std::thread::sleep(Duration::from_secs(2));
    let kernel_after = kernel_counters(&bed);
    let (out, c) = host.stop();
    let get = |section: &str, name: &str| counter(&c, section, name, &out);
    let k = |section: &str, name: &str| kernel_delta(&kernel_before, &kernel_after, section, name);
    println!(
        "tcp echo through loss=5%,dup=2%,reorder=5%: {mb} MB each way in {:.2} s \
         ({:.2} MB/s each way; upload done after {:.2} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6,
        up.as_secs_f64()
    );
    println!(
        "ustack: Tcp InSegs {} OutSegs {} RetransSegs {} InErrs {} OutRsts {}; TcpExt \
         TCPSackRecovery {} TCPRenoRecovery {} TCPTimeouts {} TCPRcvQDrop {} TCPHPHits {}",
        get("Tcp", "InSegs"),
        get("Tcp", "OutSegs"),
        get("Tcp", "RetransSegs"),
        get("Tcp", "InErrs"),
        get("Tcp", "OutRsts"),
        get("TcpExt", "TCPSackRecovery"),
        get("TcpExt", "TCPRenoRecovery"),
        get("TcpExt", "TCPTimeouts"),
        get("TcpExt", "TCPRcvQDrop"),
        get("TcpExt", "TCPHPHits"),
    );
    println!(
        "kernel: Tcp RetransSegs {}; TcpExt TCPSackRecovery {} TCPTimeouts {} TCPLossProbes {} \
         TCPDSACKRecv {}",
        k("Tcp", "RetransSegs"),
        k("TcpExt", "TCPSackRecovery"),
        k("TcpExt", "TCPTimeouts"),
        k("TcpExt", "TCPLossProbes"),
        k("TcpExt", "TCPDSACKRecv"),
    );

    // An orderly close: nothing was reset. (Tcp OutRsts may move without a reset: a duplicate
    // of the peer's last segment arriving after the socket is gone earns an RST, as on Linux.)
    assert_eq!(
        get("Tcp", "EstabResets"),
        0,
        "ustack reset the connection:\n{out}"
    );
    assert_eq!(get("Tcp", "PassiveOpens"), 1, "{out}");
    assert_eq!(get("Tcp", "CurrEstab"), 0, "ustack sent its FIN:\n{out}");
    for name in ["EstabResets", "AttemptFails"] {
        assert_eq!(k("Tcp", name), 0, "the kernel's Tcp {name} moved:\n{out}");
    }
    // 5% loss each way over tens of thousands of segments: ustack must have repaired some of
    // its own. A zero here means the impairment was not applied, and the test proved nothing.
    assert!(
        get("Tcp", "RetransSegs") > 0,
        "ustack retransmitted nothing: was the link impaired?\n{out}"
    );
}
