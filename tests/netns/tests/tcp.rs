//! TCP through `ustack host` against the kernel: the echo service (RFC 862, port 7) returns
//! 100 MB byte for byte and ends with FIN, not RST; a thousand kernel connections at once are
//! all served; a closed port answers RST, which the kernel turns into ECONNREFUSED; a kernel
//! peer that resets mid-transfer (SO_LINGER 0) is counted in EstabResets and the host keeps
//! serving; discard (port 9) and chargen (port 19, RFC 864) behave as their RFCs say.
//!
//! Kernel-side sockets are std's `TcpStream`s created on a thread that joined the test's
//! namespace (`Netns::enter`); they stay there whichever thread uses them afterwards. The
//! SO_LINGER 0 close is done by python3 inside the namespace (std cannot set SO_LINGER).
//!
//! `USTACK_TCP_ECHO_MB` sets the size of the echo transfer (default 100 MB each way: a debug
//! build moves it in about 5 s); `USTACK_TEST_SEED` replays the random payload of a failed run.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use testbed::Counters;
use testbed::{echo_seeded, test_seed, EchoRun};
use ustack_netns_tests::{counter, ensure_open_files, Bed, USTACK_IP};

const ECHO_PORT: u16 = 7;
const DISCARD_PORT: u16 = 9;
const CHARGEN_PORT: u16 = 19;
/// Nothing listens here in `ustack host`.
const CLOSED_PORT: u16 = 4444;
/// Generous for one exchange on a quiet TAP link, even with a debug build.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn ustack_ip() -> Ipv4Addr {
    USTACK_IP.parse().expect("constant")
}

/// A kernel TCP connection to ustack's `port`, made inside the test's namespace.
fn kernel_connect(bed: &Bed, port: u16) -> std::io::Result<TcpStream> {
    let s = bed
        .ns
        .enter(|| TcpStream::connect(SocketAddrV4::new(ustack_ip(), port)))
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", bed.ns.name()))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

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

/// Echo chunks are compared in this size; the writer writes in it too, so both sides draw the
/// same random stream.
const CHUNK: usize = 64 * 1024;

/// Kernel client -> ustack echo: `USTACK_TCP_ECHO_MB` (100) MB of seeded random bytes, written
/// and read back concurrently, come back identical; the echo ends with ustack's FIN after the
/// client's (the client reads a clean EOF), and neither side sends a single RST.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn echo_returns_100_mb_identical_and_ends_with_fin() {
    let mb: usize = std::env::var("USTACK_TCP_ECHO_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let total = mb * 1_000_000;
    let seed = test_seed();
    let bed = Bed::new("tcp-echo");
    let host = bed.start_host();
    let kernel_before = kernel_counters(&bed);

    let stream = kernel_connect(&bed, ECHO_PORT).expect("connect to the echo");
    let run = echo_seeded(&stream, total, seed, CHUNK);
    if let Some(at) = run.first_diff {
        panic!(
            "the echo differs from the data at byte {} (seed {seed}, \
                             USTACK_TEST_SEED={seed} replays it)\n{}",
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
            "the kernel's read failed after {got} of {total} bytes: {e} (seed {seed})\n\
             the kernel's TCP counters that moved: {}\n{}",
            moved_tcp_counters(&kernel_before, &kernel_counters(&bed)),
            host.output_so_far()
        );
    }
    let up = up.unwrap_or_else(|e| panic!("the kernel's write failed: {e}"));
    assert_eq!(
        got,
        total,
        "the echo ended (FIN) early (seed {seed})\n{}",
        host.output_so_far()
    );
    println!(
        "tcp echo: {mb} MB each way in {:.2} s ({:.1} MB/s each way; upload done after {:.2} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6,
        up.as_secs_f64()
    );
    drop(stream);
    // Let the last ACKs land before ustack prints its counters.
    std::thread::sleep(Duration::from_millis(300));
    let kernel_after = kernel_counters(&bed);
    let (out, counters) = host.stop();
    assert_eq!(counter(&counters, "Tcp", "OutRsts", &out), 0, "{out}");
    assert_eq!(counter(&counters, "Tcp", "EstabResets", &out), 0, "{out}");
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 1, "{out}");
    assert_eq!(
        counter(&counters, "Tcp", "CurrEstab", &out),
        0,
        "the connection is closed on ustack's side:\n{out}"
    );
    for name in ["OutRsts", "EstabResets", "AttemptFails"] {
        assert_eq!(
            kget(&kernel_after, "Tcp", name) - kget(&kernel_before, "Tcp", name),
            0,
            "the kernel's Tcp {name} moved:\n{out}"
        );
    }
}

/// The kernel's Tcp and TcpExt counters that changed between two readings, for messages.
fn moved_tcp_counters(before: &Counters, after: &Counters) -> String {
    let mut moved = Vec::new();
    for section in ["Tcp", "TcpExt"] {
        for (name, &v) in after.get(section).into_iter().flatten() {
            let old = before.get(section).and_then(|s| s.get(name)).copied();
            if old != Some(v) {
                moved.push(format!("{section} {name} {}", v - old.unwrap_or(0)));
            }
        }
    }
    moved.join(", ")
}

/// A thousand kernel connections to the echo, all open at once, each sends its own message
/// and reads it back, then all close: every one succeeds, ustack accepted exactly 1000, and
/// every close is a FIN.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn a_thousand_concurrent_echo_connections_all_succeed() {
    const N: usize = 1000;
    ensure_open_files(N as u64);
    let bed = Bed::new("tcp-many");
    let host = bed.start_host();
    let start = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        match kernel_connect(&bed, ECHO_PORT) {
            Ok(s) => conns.push(s),
            Err(e) => panic!(
                "connection {i} of {N} failed: {e}\n{}",
                host.output_so_far()
            ),
        }
    }
    let connected = start.elapsed();
    // All open: each sends a message of its own (different lengths, its index inside), which
    // the echo must return to it and to no other.
    let message = |i: usize| -> Vec<u8> {
        let mut m = format!("connection {i}:").into_bytes();
        m.extend((0..(i % 97) * 13).map(|k| (k + i) as u8));
        m
    };
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&message(i))
            .unwrap_or_else(|e| panic!("write on connection {i}: {e}"));
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let want = message(i);
        let mut got = vec![0u8; want.len()];
        if let Err(e) = s.read_exact(&mut got) {
            panic!(
                "connection {i}: no echo of its {} bytes: {e}\n{}",
                want.len(),
                host.output_so_far()
            );
        }
        assert!(got == want, "connection {i} got another's bytes");
    }
    let exchanged = start.elapsed();
    for s in &conns {
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => panic!("connection {i}: {} bytes after the echo", rest.len()),
            Err(e) => panic!("connection {i}: no clean EOF: {e}"),
        }
    }
    println!(
        "{N} connections: connected in {:.2} s, all echoed by {:.2} s, all closed by {:.2} s",
        connected.as_secs_f64(),
        exchanged.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    drop(conns);
    std::thread::sleep(Duration::from_millis(500));
    let (out, counters) = host.stop();
    assert_eq!(
        counter(&counters, "Tcp", "PassiveOpens", &out),
        N as u64,
        "{out}"
    );
    assert_eq!(counter(&counters, "Tcp", "OutRsts", &out), 0, "{out}");
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
    assert_eq!(
        counter(&counters, "TcpExt", "ListenOverflows", &out),
        0,
        "{out}"
    );
}

/// The kernel connects to a port nothing listens on: ustack answers RST, the kernel's
/// connect fails with ECONNREFUSED at once, both sides count it.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn connect_to_a_closed_port_is_refused() {
    let bed = Bed::new("tcp-refused");
    let host = bed.start_host();
    let start = Instant::now();
    match kernel_connect(&bed, CLOSED_PORT) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("expected ECONNREFUSED, got {e}\n{}", host.output_so_far()),
        Ok(_) => panic!("connected to port {CLOSED_PORT}, where nothing listens"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "refused at once, not after retries: {:?}",
        start.elapsed()
    );
    let kernel = kernel_counters(&bed);
    assert_eq!(kget(&kernel, "Tcp", "AttemptFails"), 1, "{kernel:?}");
    let (out, counters) = host.stop();
    assert_eq!(counter(&counters, "Tcp", "OutRsts", &out), 1, "{out}");
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 0, "{out}");
}

/// Python inside the namespace: echo traffic both ways for a while, then SO_LINGER 0 and
/// close, so the kernel resets the connection in the middle of the transfer.
const RESET_MID_TRANSFER: &str = r#"
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
chunk = bytes(range(256)) * 256
sent = got = 0
while sent < 4 * 1024 * 1024:
    s.sendall(chunk)
    sent += len(chunk)
    while got < sent - 1024 * 1024:
        data = s.recv(65536)
        if not data:
            sys.exit("the echo closed early")
        got += len(data)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print(f"sent {sent} read {got} then reset")
"#;

/// A kernel peer resets mid-transfer: ustack counts EstabResets, its echo task for that
/// connection ends, and the host goes on serving new connections.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn peer_reset_mid_transfer_is_counted_and_the_host_keeps_serving() {
    let bed = Bed::new("tcp-reset");
    let host = bed.start_host();
    let py = bed.kernel(
        "python3",
        &["-c", RESET_MID_TRANSFER, USTACK_IP, &ECHO_PORT.to_string()],
    );
    assert!(py.success(), "{py}\n{}", host.output_so_far());
    println!("{}", py.stdout.trim());
    let kernel = kernel_counters(&bed);
    assert!(
        kget(&kernel, "Tcp", "OutRsts") >= 1,
        "the kernel sent no RST: {kernel:?}"
    );

    // Still serving: a new echo connection, and the other services.
    let mut s = kernel_connect(&bed, ECHO_PORT).expect("connect after the reset");
    s.write_all(b"still there?").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("no echo after the reset: {e}\n{}", host.output_so_far()));
    assert_eq!(&buf, b"still there?");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let (out, counters) = host.stop();
    assert!(
        counter(&counters, "Tcp", "EstabResets", &out) >= 1,
        "ustack did not count the reset:\n{out}"
    );
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 2, "{out}");
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
}

/// Discard reads everything and answers nothing but its FIN; chargen sends RFC 864's lines
/// (72 printable characters and CR LF, each line starting one character further) until the
/// client goes away.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn discard_and_chargen_follow_their_rfcs() {
    let bed = Bed::new("tcp-chargen");
    let host = bed.start_host();

    let mut d = kernel_connect(&bed, DISCARD_PORT).expect("connect to discard");
    let junk = vec![0x5a; 1 << 20];
    d.write_all(&junk).unwrap();
    d.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    d.read_to_end(&mut back)
        .unwrap_or_else(|e| panic!("discard: no clean EOF: {e}\n{}", host.output_so_far()));
    assert!(back.is_empty(), "discard answered {} bytes", back.len());

    let mut c = kernel_connect(&bed, CHARGEN_PORT).expect("connect to chargen");
    let lines = 500;
    let mut text = vec![0u8; lines * 74];
    c.read_exact(&mut text)
        .unwrap_or_else(|e| panic!("chargen: {e}\n{}", host.output_so_far()));
    for (n, line) in text.chunks(74).enumerate() {
        assert_eq!(&line[72..], b"\r\n", "line {n} ends with CR LF");
        for (col, &ch) in line[..72].iter().enumerate() {
            let want = b' ' + ((n + col) % 95) as u8;
            assert_eq!(
                ch,
                want,
                "line {n} column {col}: {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
    // Going away with the stream unread resets it; chargen's task ends on the failed write.
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (out, counters) = host.stop();
    assert_eq!(counter(&counters, "Tcp", "PassiveOpens", &out), 2, "{out}");
    assert_eq!(counter(&counters, "Tcp", "CurrEstab", &out), 0, "{out}");
}
