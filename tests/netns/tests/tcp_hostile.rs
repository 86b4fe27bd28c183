//! Hostile TCP against `ustack host`, from the kernel's side of the TAP: forged segments on a
//! live connection (RFC 5961), flag combinations no TCP sends, and a SYN flood from spoofed
//! addresses. The host must answer the way Linux 5.10 does, count what it dropped, and keep
//! serving the legitimate kernel client throughout.
//!
//! Forged frames are written with an AF_PACKET socket on `ustack0` inside the test's namespace,
//! which hands them straight to ustack; the kernel's TCP never sees them. The same socket reads
//! what ustack answers (only frames coming from the link, not the kernel's own), which is how
//! the tests learn a live connection's sequence numbers and tell an answer from silence.
//!
//! Every test runs tcpdump on `ustack0` while it works; when it fails, the last 40 lines of the
//! capture are printed with ustack's output and the kernel's view of the link.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::{vm_rss_kib, RssWatch};
use testbed::{Child, Counters, Output, PacketSocket};
use ustack_netns_tests::{counter, Bed, KERNEL_IP, TAP, USTACK_IP, USTACK_MAC};

const ECHO_PORT: u16 = 7;
/// Generous for one exchange on a quiet TAP link with a debug build.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long ustack gets to answer one forged segment. It answers in well under a millisecond;
/// this is only the time after which an answer that should come counts as missing, and in
/// which one that should not come would have shown.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

// TCP header flags (RFC 9293 3.1).
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

fn ustack_ip() -> Ipv4Addr {
    USTACK_IP.parse().expect("constant")
}

fn kernel_ip() -> Ipv4Addr {
    KERNEL_IP.parse().expect("constant")
}

/// A panic on one of ustack's threads or tasks need not change its exit status; its message
/// on stderr is the tell.
fn assert_no_panic(out: &Output) {
    assert!(!out.stderr.contains("panicked"), "ustack panicked:\n{out}");
}

/// One TCP segment read off the wire, the fields these tests look at.
#[derive(Debug, Clone, Copy)]
struct Segment {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// The window scale option (RFC 7323 2.2), on a SYN.
    wscale: Option<u8>,
    /// Payload bytes.
    len: u32,
}

impl Segment {
    /// Ethernet, IPv4 (any header length), TCP; None for anything else.
    fn parse(frame: &[u8]) -> Option<Segment> {
        let ip = frame.get(14..).filter(|_| frame[12..14] == [0x08, 0x00])?;
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let tcp = ip.get(ihl..total)?;
        let doff = usize::from(tcp.get(12)? >> 4) * 4;
        if doff < 20 || tcp.len() < doff {
            return None;
        }
        let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let addr =
            |a: &[u8], p: &[u8]| SocketAddrV4::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), be16(p));
        let mut wscale = None;
        let mut opts = &tcp[20..doff];
        while let [kind, rest @ ..] = opts {
            match kind {
                0 => break,
                1 => opts = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || opts.len() < len {
                        break;
                    }
                    if *kind == 3 && len == 3 {
                        wscale = Some(opts[2]);
                    }
                    opts = &opts[len..];
                }
            }
        }
        Some(Segment {
            src: addr(&ip[12..16], &tcp[0..2]),
            dst: addr(&ip[16..20], &tcp[2..4]),
            seq: be32(&tcp[4..8]),
            ack: be32(&tcp[8..12]),
            flags: tcp[13],
            window: be16(&tcp[14..16]),
            wscale,
            len: (tcp.len() - doff) as u32,
        })
    }

    /// Sequence space the segment occupies: payload, SYN and FIN.
    fn seq_len(&self) -> u32 {
        self.len + u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0)
    }
}

/// tcpdump's way: `192.0.2.2:7 > 192.0.2.1:40000 [S.] seq 1 ack 2 win 3 len 0`.
impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} > {} {} seq {} ack {} win {} len {}",
            self.src,
            self.dst,
            flag_names(self.flags),
            self.seq,
            self.ack,
            self.window,
            self.len
        )
    }
}

fn flag_names(flags: u8) -> String {
    let mut s = String::from("[");
    for (bit, c) in [
        (SYN, 'S'),
        (FIN, 'F'),
        (RST, 'R'),
        (PSH, 'P'),
        (URG, 'U'),
        (ACK, '.'),
    ] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if flags == 0 {
        s.push_str("none");
    }
    s.push(']');
    s
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts` (each even-length but
/// the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a forged segment says; everything else (checksums, lengths, TTL) is made right, so
/// ustack judges the segment by its TCP content alone.
struct Forged<'a> {
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
}

impl Forged<'_> {
    /// The Ethernet frame to ustack's MAC.
    fn frame(&self) -> Vec<u8> {
        assert!(self.options.len() % 4 == 0, "options pad to 32 bits");
        let tcp_len = 20 + self.options.len();
        let mut f = Vec::with_capacity(34 + tcp_len);
        f.extend_from_slice(&parse_mac(USTACK_MAC).expect("constant"));
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: no options, DF, TTL 64.
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&self.src.ip().octets());
        f.extend_from_slice(&self.dst.ip().octets());
        let ip_csum = checksum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
        // TCP.
        f.extend_from_slice(&self.src.port().to_be_bytes());
        f.extend_from_slice(&self.dst.port().to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        f.push(((tcp_len / 4) as u8) << 4);
        f.push(self.flags);
        f.extend_from_slice(&self.window.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        f.extend_from_slice(self.options);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.ip().octets());
        pseudo.extend_from_slice(&self.dst.ip().octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        let tcp_csum = checksum(&[&pseudo, &f[34..]]);
        f[50..52].copy_from_slice(&tcp_csum.to_be_bytes());
        f
    }
}

/// The MAC of the kernel's side of the TAP: forged segments in the kernel's name carry it.
fn kernel_mac(bed: &Bed) -> [u8; 6] {
    let link = bed
        .ns
        .ip(&["-o", "link", "show", TAP])
        .unwrap_or_else(|e| panic!("{e}"));
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("no MAC in {link:?}"))
}

/// An AF_PACKET socket on the kernel's side of the TAP that sends forged frames and reads what
/// ustack wrote to the link.
struct Wire {
    sock: PacketSocket,
}

impl Wire {
    fn open(bed: &Bed) -> Wire {
        let sock = bed
            .ns
            .enter(|| PacketSocket::capture(TAP))
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("cannot open an AF_PACKET socket on {TAP}: {e}"));
        Wire { sock }
    }

    fn send(&self, frame: &[u8]) {
        self.sock
            .send(frame)
            .unwrap_or_else(|e| panic!("cannot send a forged frame: {e}"));
    }

    /// ustack's TCP segments received so far, without waiting.
    fn drain(&self) -> Vec<Segment> {
        self.sock
            .drain()
            .unwrap_or_else(|e| panic!("cannot read {TAP}: {e}"))
            .iter()
            .filter_map(|f| Segment::parse(f))
            .collect()
    }

    /// ustack's TCP segments to `to` within `wait` (all of the time: an extra answer counts
    /// as much as a missing one).
    fn segments_to(&self, to: SocketAddrV4, wait: Duration) -> Vec<Segment> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.sock.recv_timeout(&mut buf, left) {
                Ok(Some(n)) => {
                    if let Some(s) = Segment::parse(&buf[..n]).filter(|s| s.dst == to) {
                        got.push(s);
                    }
                }
                Ok(None) => return got,
                Err(e) => panic!("cannot read {TAP}: {e}"),
            }
        }
    }
}

/// tcpdump on the kernel's side of the TAP for the length of a test. If the test fails, the
/// last 40 lines of the capture (those matching `filter`) are printed; the file is always
/// removed.
struct Tcpdump {
    child: Option<Child>,
    file: PathBuf,
    filter: String,
}

impl Tcpdump {
    fn start(bed: &Bed, step: &str, filter: &str) -> Tcpdump {
        let file = std::env::temp_dir().join(format!("{}-{step}.pcap", bed.ns.name()));
        let mut cmd = bed.ns.cmd("tcpdump");
        // -U: write each packet as it comes, so a capture cut short still holds everything.
        // -Z root: keep writing the file as root (tcpdump otherwise switches to its own user
        // first, which may not be allowed to create it).
        cmd.args(["-i", TAP, "-nn", "-U", "-Z", "root", "-s", "128", "-w"])
            .arg(&file);
        let child = Child::spawn(cmd).unwrap_or_else(|e| panic!("cannot start tcpdump: {e}"));
        let mut dump = Tcpdump {
            child: Some(child),
            file,
            filter: filter.to_string(),
        };
        // tcpdump says "listening on" once the capture runs: what comes before it is not seen.
        let listening =
            testbed::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                let c = dump.child.as_mut().expect("running");
                c.stderr_so_far().contains("listening on") || !matches!(c.try_wait(), Ok(None))
            });
        let c = dump.child.as_ref().expect("running");
        assert!(
            listening && c.stderr_so_far().contains("listening on"),
            "tcpdump did not start (is it installed?): {}",
            c.stderr_so_far()
        );
        dump
    }

    /// The last 40 lines of the capture matching the filter.
    fn excerpt(&mut self) -> String {
        if let Some(child) = self.child.take() {
            child.stop();
        }
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-nn", "-r"]).arg(&self.file);
        cmd.args(self.filter.split_whitespace());
        match cmd.output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- tcpdump -nn -r {} {} | tail -40 ({} lines in all) ---\n{}",
                    self.file.display(),
                    self.filter,
                    lines.len(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            }
            Err(e) => format!("cannot read the capture {}: {e}", self.file.display()),
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.excerpt());
        } else if let Some(child) = self.child.take() {
            child.stop();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A kernel TCP connection to ustack's echo, made inside the test's namespace.
fn kernel_connect(bed: &Bed) -> std::io::Result<TcpStream> {
    let to = SocketAddrV4::new(ustack_ip(), ECHO_PORT);
    let s = bed
        .ns
        .enter(|| TcpStream::connect_timeout(&to.into(), IO_TIMEOUT))
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", bed.ns.name()))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Sends `msg` and reads it back.
fn echo(stream: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    stream.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    stream
        .read_exact(&mut got)
        .map_err(|e| format!("no echo of {} bytes: {e}", msg.len()))?;
    if got != msg {
        return Err(format!("echoed {got:?}, sent {msg:?}"));
    }
    Ok(())
}

/// Ends the echo: our FIN, then ustack's (a clean EOF, not a reset).
fn close_cleanly(mut stream: TcpStream) -> Result<(), String> {
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(()),
        Ok(_) => Err(format!("{} bytes after the echo", rest.len())),
        Err(e) => Err(format!("no clean EOF: {e}")),
    }
}

/// ustack's side of a live connection, learnt from what it sent.
struct Learnt {
    /// ustack's SND.NXT: where its next byte would go; a pure ACK from it carries this.
    snd_nxt: u32,
    /// ustack's RCV.NXT: the next byte it expects, which it acknowledges.
    rcv_nxt: u32,
    /// Its receive window in bytes (advertised field << its window scale).
    window: u64,
}

/// Reads ustack's side of the connection to `kernel` off the segments it sent to it: the
/// SYN-ACK gives the window scale, the last segment the sequence numbers.
fn learn(segments: &[Segment], kernel: SocketAddrV4) -> Result<Learnt, String> {
    let mine: Vec<&Segment> = segments.iter().filter(|s| s.dst == kernel).collect();
    let synack = mine
        .iter()
        .find(|s| s.flags & (SYN | ACK) == SYN | ACK)
        .ok_or("no SYN-ACK seen")?;
    let last = mine.last().ok_or("no segment seen")?;
    Ok(Learnt {
        snd_nxt: last.seq.wrapping_add(last.seq_len()),
        rcv_nxt: last.ack,
        window: u64::from(last.window) << synack.wscale.unwrap_or(0),
    })
}

/// On an established connection (a kernel client's, to the echo), forged segments with the
/// connection's addresses and ports, as a blind attacker would send them (RFC 5961):
/// - an RST inside the receive window but not at RCV.NXT earns a challenge ACK (an ACK
///   carrying SND.NXT and RCV.NXT) and the connection lives on (3.2);
/// - RSTs outside the window, on either side, get no answer at all (3.2);
/// - a SYN, at RCV.NXT or far outside the window, earns a challenge ACK and the connection
///   lives on (4.2: "irrespective of the sequence number"; Linux's tcp_validate_incoming
///   sends both through syn_challenge);
/// - 200 in-window RSTs at once, and 200 out-of-window SYNs at once, get at most 100 challenge
///   ACKs each (section 7's throttle: ustack allows 100 a second per socket);
///
/// and afterwards the echo still works and closes with FINs. Every challenge ACK sent is
/// counted in TcpExt TCPChallengeACK, as Linux counts it, and nothing is counted in
/// EstabResets. All probes run even when one fails, and the failures are reported together.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn forged_rsts_and_syns_on_an_established_connection_earn_challenge_acks() {
    let bed = Bed::new("tcp-rfc5961");
    let host = bed.start_host();
    let _dump = Tcpdump::start(&bed, "rfc5961", "tcp port 7");
    let wire = Wire::open(&bed);
    let src_mac = kernel_mac(&bed);
    let ustack = SocketAddrV4::new(ustack_ip(), ECHO_PORT);

    let mut stream = kernel_connect(&bed).expect("connect to the echo");
    let kernel = match stream.local_addr().expect("bound") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("the kernel's end is {other}"),
    };
    echo(&mut stream, b"before the forgeries").unwrap_or_else(|e| panic!("{e}"));
    // Let the kernel's (possibly delayed) ACK of the echo land; ustack has nothing left to
    // send, so its last segment holds its current SND.NXT and RCV.NXT.
    std::thread::sleep(Duration::from_millis(300));
    let seen = wire.drain();
    let at = learn(&seen, kernel).unwrap_or_else(|e| {
        let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
        panic!(
            "cannot learn the connection's numbers: {e}; ustack sent:\n{}",
            seen.join("\n")
        )
    });
    println!(
        "connection {kernel} <-> {ustack}: ustack SND.NXT {} RCV.NXT {} window {}",
        at.snd_nxt, at.rcv_nxt, at.window
    );
    // A window is at most 2^30 - 2^14 bytes under scaling (RFC 7323 2.3): 2^30 away from
    // RCV.NXT is outside any window, and 1000 past it inside this one.
    const IN_WINDOW: u32 = 1000;
    assert!(
        at.window > u64::from(IN_WINDOW) + 200 * 100,
        "ustack's window is only {} bytes",
        at.window
    );
    let far = 1u32 << 30;

    let forge = |seq: u32, flags: u8| {
        Forged {
            src_mac,
            src: kernel,
            dst: ustack,
            seq,
            ack: if flags & ACK != 0 { at.snd_nxt } else { 0 },
            flags,
            window: 1024,
            options: &[],
        }
        .frame()
    };
    // A challenge ACK is a pure ACK at ustack's SND.NXT acknowledging its RCV.NXT: it tells
    // the true peer where the connection is, so a forged RST or SYN cannot move it.
    let is_challenge = |a: &Segment| {
        a.flags & (ACK | RST | SYN | FIN) == ACK
            && a.len == 0
            && a.seq == at.snd_nxt
            && a.ack == at.rcv_nxt
    };
    let shown = |segs: &[Segment]| {
        if segs.is_empty() {
            "nothing".to_string()
        } else {
            segs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut failures = Vec::new();
    // Challenge ACKs seen on the wire; each must be counted.
    let mut challenges = 0u64;

    let singles: [(&str, u32, u8, bool); 6] = [
        (
            "an RST inside the window",
            at.rcv_nxt.wrapping_add(IN_WINDOW),
            RST,
            true,
        ),
        (
            "an RST|ACK one past RCV.NXT",
            at.rcv_nxt.wrapping_add(1),
            RST | ACK,
            true,
        ),
        (
            "an RST beyond the window",
            at.rcv_nxt.wrapping_add(far),
            RST,
            false,
        ),
        (
            "an RST left of the window",
            at.rcv_nxt.wrapping_sub(far),
            RST,
            false,
        ),
        ("a SYN at RCV.NXT", at.rcv_nxt, SYN, true),
        (
            "a SYN outside the window",
            at.rcv_nxt.wrapping_add(far),
            SYN,
            true,
        ),
    ];
    for (what, seq, flags, answered) in singles {
        wire.drain();
        wire.send(&forge(seq, flags));
        let answer = wire.segments_to(kernel, ANSWER_WAIT);
        let ok = if answered {
            answer.len() == 1 && is_challenge(&answer[0])
        } else {
            answer.is_empty()
        };
        challenges += answer.iter().filter(|a| is_challenge(a)).count() as u64;
        println!("{what} (seq {seq}): ustack sent {}", shown(&answer));
        if !ok {
            failures.push(format!(
                "{what} (seq {seq}) must get {}; ustack sent {}",
                if answered {
                    format!("one challenge ACK (seq {} ack {})", at.snd_nxt, at.rcv_nxt)
                } else {
                    "no answer".to_string()
                },
                shown(&answer)
            ));
        }
    }

    // Section 7: the challenges must not become a flood themselves. 200 at once (different
    // sequence numbers, as a blind attacker steps through the space), each burst after the
    // throttle's one-second window has passed, so it starts afresh.
    let bursts: [(&str, u32, u8); 2] = [
        ("in-window RSTs", at.rcv_nxt.wrapping_add(IN_WINDOW), RST),
        ("out-of-window SYNs", at.rcv_nxt.wrapping_add(far), SYN),
    ];
    for (what, base, flags) in bursts {
        std::thread::sleep(Duration::from_millis(1100));
        wire.drain();
        for i in 0..200u32 {
            wire.send(&forge(base.wrapping_add(i * 100), flags));
        }
        let answer = wire.segments_to(kernel, Duration::from_secs(1));
        let n = answer.iter().filter(|a| is_challenge(a)).count() as u64;
        challenges += n;
        println!(
            "200 {what} at once: {n} challenge ACKs, {} segments in all",
            answer.len()
        );
        if !(1..=100).contains(&n) || n as usize != answer.len() {
            failures.push(format!(
                "200 {what} at once earned {n} challenge ACKs ({} segments in all): want 1 to \
                 100, and nothing else",
                answer.len()
            ));
        }
    }

    // The connection survived all of it: the echo goes on, and closes with FINs.
    let alive = echo(&mut stream, b"after the forgeries").and_then(|()| close_cleanly(stream));
    if let Err(e) = alive {
        failures.push(format!("the echo after the forged segments: {e}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (out, c) = host.stop();
    assert_no_panic(&out);
    let get = |section: &str, name: &str| counter(&c, section, name, &out);
    println!(
        "ustack: TcpExt TCPChallengeACK {} PAWSEstab {}; Tcp EstabResets {} InErrs {} \
         OutRsts {} (challenge ACKs seen on the wire: {challenges})",
        get("TcpExt", "TCPChallengeACK"),
        get("TcpExt", "PAWSEstab"),
        get("Tcp", "EstabResets"),
        get("Tcp", "InErrs"),
        get("Tcp", "OutRsts")
    );
    for (section, name, want) in [
        ("Tcp", "EstabResets", 0),
        ("Tcp", "PassiveOpens", 1),
        ("Tcp", "CurrEstab", 0),
        ("TcpExt", "TCPChallengeACK", challenges),
    ] {
        if get(section, name) != want {
            failures.push(format!(
                "{section} {name} is {}, want {want}",
                get(section, name)
            ));
        }
    }
    assert!(failures.is_empty(), "{}\n\n{out}", failures.join("\n"));
}

/// Flag combinations no TCP sends, aimed at the echo's listener from the kernel's address:
/// SYN+FIN, none at all (a null scan), FIN+PSH+URG (an xmas scan) and SYN+RST. Linux drops
/// them without a word; so must ustack, counting each in Tcp InErrs, creating no connection,
/// and still accepting a real one afterwards.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn impossible_flag_combinations_get_no_answer_and_count_in_inerrs() {
    const EACH: u32 = 5;
    let bed = Bed::new("tcp-flags");
    let host = bed.start_host();
    let _dump = Tcpdump::start(&bed, "flags", "tcp port 7");
    let wire = Wire::open(&bed);
    let src_mac = kernel_mac(&bed);
    let ustack = SocketAddrV4::new(ustack_ip(), ECHO_PORT);
    let kinds = [
        ("SYN+FIN", SYN | FIN),
        ("null", 0),
        ("xmas", FIN | PSH | URG),
        ("SYN+RST", SYN | RST),
    ];
    // Ports the kernel has no socket on, so nothing but ustack could answer them, and the
    // kernel never learns of the frames (they go straight to ustack).
    let mut sent = 0u32;
    for (k, (_, flags)) in kinds.iter().enumerate() {
        for i in 0..EACH {
            let src = SocketAddrV4::new(kernel_ip(), 40_000 + (k as u16) * 100 + i as u16);
            wire.send(
                &Forged {
                    src_mac,
                    src,
                    dst: ustack,
                    seq: 0x1000_0000 + i * 7919,
                    ack: 0,
                    flags: *flags,
                    window: 1024,
                    options: &[],
                }
                .frame(),
            );
            sent += 1;
        }
    }
    let answers: Vec<Segment> = {
        std::thread::sleep(ANSWER_WAIT);
        wire.drain()
            .into_iter()
            .filter(|s| s.src == ustack && (40_000..40_400).contains(&s.dst.port()))
            .collect()
    };
    assert!(
        answers.is_empty(),
        "ustack answered impossible flag combinations:\n{}",
        answers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The listener is unharmed.
    let mut stream = kernel_connect(&bed).expect("connect after the scans");
    echo(&mut stream, b"still listening")
        .unwrap_or_else(|e| panic!("{e}\n{}", host.output_so_far()));
    close_cleanly(stream).unwrap_or_else(|e| panic!("{e}\n{}", host.output_so_far()));
    std::thread::sleep(Duration::from_millis(300));
    let (out, c) = host.stop();
    assert_no_panic(&out);
    let get = |section: &str, name: &str| counter(&c, section, name, &out);
    println!(
        "{sent} impossible segments ({EACH} of each of {}): Tcp InErrs {}, OutRsts {}",
        kinds.map(|(name, _)| name).join(", "),
        get("Tcp", "InErrs"),
        get("Tcp", "OutRsts")
    );
    assert_eq!(
        get("Tcp", "InErrs"),
        u64::from(sent),
        "each dropped segment counted once:\n{out}"
    );
    assert_eq!(get("Tcp", "OutRsts"), 0, "{out}");
    assert_eq!(
        get("Tcp", "PassiveOpens"),
        1,
        "only the real connection was opened:\n{out}"
    );
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

/// The pid of the `ustack` process in the namespace (`ip netns exec` execs it).
fn ustack_pid(bed: &Bed) -> u32 {
    let pids = bed.ns.pids();
    pids.iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ustack")
        })
        .unwrap_or_else(|| panic!("no ustack process among {pids:?} in {}", bed.ns.name()))
}

/// The SYN flood's rate and length.
const FLOOD_RATE: u64 = 10_000;
const FLOOD_TIME: Duration = Duration::from_secs(2);
/// RSS growth allowed during the flood. ustack's SYN queue (max(tcp_max_syn_backlog 256,
/// backlog 1024) children) costs a few hundred KiB; cookies cost nothing. Unbounded state per
/// SYN would be 20,000 sockets and far more.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// The spoofed sources: on-link addresses the kernel does not own (it is .1, ustack .2).
const SPOOF_FIRST: u8 = 10;
const SPOOF_LAST: u8 = 250;

/// A fake MAC for spoofed host 192.0.2.`host`: locally administered, owned by nobody, so the
/// kernel drops ustack's SYN-ACKs to it as another host's frames.
fn spoof_mac(host: u8) -> [u8; 6] {
    [0x02, 0x66, 0, 0, 0, host]
}

/// An ARP request "who has 192.0.2.2? tell 192.0.2.`host`" from the spoofed host's MAC.
fn arp_request(host: u8) -> Vec<u8> {
    let mac = spoof_mac(host);
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[192, 0, 2, host]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ustack_ip().octets());
    f
}

/// SYN options as a Linux client sends them: MSS 1460, SACK permitted, timestamps, NOP,
/// window scale 7. Cookies have to encode these (via the timestamp), so a flood with them
/// exercises that path.
fn syn_options(tsval: u32) -> [u8; 20] {
    let mut o = [0u8; 20];
    o[..4].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    o[4..6].copy_from_slice(&[4, 2]);
    o[6..8].copy_from_slice(&[8, 10]);
    o[8..12].copy_from_slice(&tsval.to_be_bytes());
    o[16..20].copy_from_slice(&[1, 3, 3, 7]);
    o
}

/// xorshift64*: the flood's addresses, ports and sequence numbers; no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the flood thread did.
struct FloodReport {
    sent: u64,
    send_errors: u64,
    elapsed: Duration,
}

/// A SYN flood at the echo: ~10,000 SYNs a second for 2 s from spoofed on-link addresses and
/// random ports, while a legitimate kernel client connects and echoes a few bytes. The client
/// must get through (over a SYN cookie once the SYN queue is full: Tcp SyncookiesSent > 0),
/// ustack's memory must stay bounded (VmRSS grows < 64 MiB), and it must neither panic nor
/// fail to exit 0 on SIGTERM.
///
/// The spoofed hosts first announce themselves with ARP requests from MACs nobody owns, so
/// ustack can address its SYN-ACKs (and retransmit them) as it would to real hosts that went
/// silent; the kernel drops those frames as another host's.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn syn_flood_from_spoofed_addresses_leaves_room_for_a_real_client() {
    let bed = Bed::new("tcp-synflood");
    let host = bed.start_host();
    // The excerpt shows the real client's packets, not the flood's.
    let _dump = Tcpdump::start(&bed, "synflood", &format!("host {KERNEL_IP} and tcp"));
    let pid = ustack_pid(&bed);
    let rss_before = vm_rss_kib(pid).expect("VmRSS of ustack");
    let tap_before = bed.ns.link_stats(TAP).expect("TAP statistics");
    let kernel_before = kernel_counters(&bed);
    let wire = bed
        .ns
        .enter(|| PacketSocket::open(TAP))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("cannot open an AF_PACKET socket on {TAP}: {e}"));
    for h in SPOOF_FIRST..=SPOOF_LAST {
        wire.send(&arp_request(h)).expect("send an ARP request");
    }
    std::thread::sleep(Duration::from_millis(200));

    let rss = RssWatch::start(pid, Duration::from_millis(5));
    let ustack = SocketAddrV4::new(ustack_ip(), ECHO_PORT);
    let seed = u64::from(std::process::id()) | 1;
    let flood = std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let start = Instant::now();
        let (mut sent, mut send_errors) = (0u64, 0u64);
        while start.elapsed() < FLOOD_TIME {
            // Paced by the clock: as many as the rate allows by now, then a short nap.
            let due = start.elapsed().as_micros() as u64 * FLOOD_RATE / 1_000_000;
            while sent < due {
                let r = rng.next();
                let h = SPOOF_FIRST + (r % u64::from(SPOOF_LAST - SPOOF_FIRST + 1)) as u8;
                let port = 1024 + ((r >> 8) % 64_000) as u16;
                let frame = Forged {
                    src_mac: spoof_mac(h),
                    src: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, h), port),
                    dst: ustack,
                    seq: (r >> 32) as u32,
                    ack: 0,
                    flags: SYN,
                    window: 64_240,
                    options: &syn_options(r as u32),
                }
                .frame();
                // ENOBUFS: the TAP's queue was full. A flood does not care; it is counted.
                if wire.send(&frame).is_err() {
                    send_errors += 1;
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        FloodReport {
            sent,
            send_errors,
            elapsed: start.elapsed(),
        }
    });

    // The real client arrives once the SYN queue has had time to fill.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let client = kernel_connect(&bed);
    let connected = start.elapsed();
    let result = client
        .map_err(|e| format!("connect: {e}"))
        .and_then(|mut s| {
            echo(&mut s, b"hello through the flood")?;
            let echoed = start.elapsed();
            close_cleanly(s)?;
            Ok(echoed)
        });
    let report = flood.join().expect("flood thread");
    let rss_peak = rss.max();
    let echoed = result.unwrap_or_else(|e| {
        panic!(
            "the real client during the flood: {e} (after {:.2} s)\n{}",
            start.elapsed().as_secs_f64(),
            host.output_so_far()
        )
    });
    // And after it, at once.
    let mut after = kernel_connect(&bed).expect("connect after the flood");
    echo(&mut after, b"and after it").unwrap_or_else(|e| panic!("{e}\n{}", host.output_so_far()));
    close_cleanly(after).unwrap_or_else(|e| panic!("{e}\n{}", host.output_so_far()));

    let tap_after = bed.ns.link_stats(TAP).expect("TAP statistics");
    let kernel_after = kernel_counters(&bed);
    let paws = kernel_delta(&kernel_before, &kernel_after, "TcpExt", "PAWSEstab");
    let (out, c) = host.stop();
    assert_no_panic(&out);
    let get = |section: &str, name: &str| counter(&c, section, name, &out);
    let growth = rss_peak.saturating_sub(rss_before);
    println!(
        "SYN flood: {} SYNs in {:.2} s ({} send errors); the TAP delivered {} frames to ustack and \
         dropped {}",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.send_errors,
        tap_after.tx_packets - tap_before.tx_packets,
        tap_after.tx_dropped - tap_before.tx_dropped
    );
    println!(
        "real client: connected after {:.3} s, echoed after {:.3} s; the kernel's PAWS rejected \
         {paws} of ustack's segments; ustack VmRSS {} KiB before, {} KiB at peak (+{} KiB)",
        connected.as_secs_f64(),
        echoed.as_secs_f64(),
        rss_before,
        rss_peak,
        growth
    );
    println!(
        "ustack: Tcp InSegs {} OutSegs {} PassiveOpens {} InErrs {}; TcpExt SyncookiesSent {} \
         SyncookiesRecv {} SyncookiesFailed {} ListenOverflows {} ListenDrops {}",
        get("Tcp", "InSegs"),
        get("Tcp", "OutSegs"),
        get("Tcp", "PassiveOpens"),
        get("Tcp", "InErrs"),
        get("TcpExt", "SyncookiesSent"),
        get("TcpExt", "SyncookiesRecv"),
        get("TcpExt", "SyncookiesFailed"),
        get("TcpExt", "ListenOverflows"),
        get("TcpExt", "ListenDrops"),
    );
    let syns_in = get("Tcp", "InSegs");
    assert!(
        syns_in > 2000,
        "only {syns_in} TCP segments reached ustack: the flood did not fill the SYN queue\n{out}"
    );
    let mut failures = Vec::new();
    if growth >= RSS_GROWTH_LIMIT_KIB {
        failures.push(format!(
            "ustack's RSS grew by {growth} KiB during the flood (limit {RSS_GROWTH_LIMIT_KIB})"
        ));
    }
    // The SYN queue holds max(256, backlog 1024) children; every SYN past that while they are
    // still waiting for their ACKs (none ever comes) must be answered with a cookie.
    if get("TcpExt", "SyncookiesSent") == 0 {
        failures.push("the SYN queue overflowed, but no cookie was sent".to_string());
    }
    // The real clients arrived with the queue full, so they came in over cookies: the path
    // must work end to end against a real TCP.
    if get("TcpExt", "SyncookiesRecv") == 0 {
        failures.push("no connection was completed from a cookie".to_string());
    }
    // A cookie connection's timestamps must go on from the SYN-ACK's, never back: the kernel
    // drops a segment whose TSval is older than the last one it saw (PAWS, RFC 7323 5.3), so
    // a clock that steps back stalls the connection until a retransmission carries a newer
    // one. (Linux's cookie_init_timestamp never puts the options above the clock.)
    if paws != 0 {
        failures.push(format!(
            "the kernel rejected {paws} of ustack's segments as old (its TcpExt PAWSEstab): \
             their TSval went back after the cookie SYN-ACK's"
        ));
    }
    assert!(failures.is_empty(), "{}\n\n{out}", failures.join("\n"));
}
