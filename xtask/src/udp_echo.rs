//! The UDP echo measurement of `cargo xtask bench`: a closed-loop client that keeps a window
//! of datagrams outstanding, and the kernel-side echo server the veth reference runs.
//!
//! Both ends are threads of xtask itself. Their sockets are created on a thread that joined
//! the right namespace (`Netns::enter`) and stay in it; the loops then run on ordinary
//! threads. No socat: its fork mode forks per datagram and would measure fork, and one
//! process per side would add exec and pipe noise the ICMP rows do not have.

use std::io::{self, ErrorKind};
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::Netns;

/// The echo service's port (RFC 862), where ustack host answers too.
pub const ECHO_PORT: u16 = 7;

/// How long a reply may take before the client counts its window as lost and refills it.
/// Far above any round trip on these links, so on a healthy link it never fires.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the server looks at its stop flag while idle.
const SERVER_POLL: Duration = Duration::from_millis(100);

/// A UDP echo server in a namespace: one thread, `recv_from` then `send_to`, the loop RFC
/// 862 describes, run by the kernel's UDP. Stopped and joined when dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    /// Its result is not looked at: a server that failed shows as a probe without replies.
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EchoServer {
    /// Binds `addr` inside `ns` (so a bind error is reported here) and starts echoing.
    pub fn start(ns: &Netns, addr: SocketAddrV4) -> io::Result<EchoServer> {
        let sock = ns.enter(|| UdpSocket::bind(addr))??;
        sock.set_read_timeout(Some(SERVER_POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("udp-echo".to_string())
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !flag.load(Ordering::Relaxed) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            // A full socket buffer drops the reply as a kernel would; the
                            // client sees it as loss.
                            let _ = sock.send_to(&buf[..n], peer);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })?;
        Ok(EchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one run of the client saw.
#[derive(Debug, Clone)]
pub struct Rate {
    /// Replies per second in each consecutive interval of the measured time.
    pub per_interval: Vec<f64>,
    /// Replies counted in all intervals.
    pub replies: u64,
    /// Times the window was lost and refilled (a datagram or its echo dropped).
    pub refills: u64,
}

impl Rate {
    /// The median interval's rate (the lower middle one of an even count).
    pub fn median(&self) -> f64 {
        let mut v = self.per_interval.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
    }
}

/// Opens the client's socket in `ns`, connected to `server`, so only its replies arrive.
pub fn client_socket(
    ns: &Netns,
    local: SocketAddrV4,
    server: SocketAddrV4,
) -> io::Result<UdpSocket> {
    let sock = ns.enter(|| -> io::Result<UdpSocket> {
        let sock = UdpSocket::bind(local)?;
        sock.connect(server)?;
        Ok(sock)
    })??;
    sock.set_read_timeout(Some(LOSS_TIMEOUT))?;
    Ok(sock)
}

/// Closed loop: `window` datagrams of `size` bytes outstanding, a new one sent for each reply,
/// replies counted over `intervals` consecutive `interval`s after `warmup` (which settles
/// ARP, caches and the CPU frequency). The rate per interval is kept rather than one total
/// so that a responder whose speed changes during the run shows it.
///
/// Each datagram carries a sequence number so a reply is matched to the window it belongs to:
/// after a loss the whole window is refilled, and a straggler from before is neither counted
/// nor answered, so the window never grows past `window`.
pub fn measure(
    sock: &UdpSocket,
    size: usize,
    window: usize,
    warmup: Duration,
    (intervals, interval): (usize, Duration),
    interrupted: impl Fn() -> bool,
) -> io::Result<Rate> {
    assert!(size >= 8, "room for the sequence number");
    let mut out = vec![0x5au8; size];
    let mut buf = vec![0u8; 65536];
    let mut next_seq: u64 = 0;
    // Replies with a sequence number below this belong to a window given up as lost.
    let mut epoch_start: u64 = 0;
    let mut send = |seq: &mut u64| -> io::Result<()> {
        out[..8].copy_from_slice(&seq.to_le_bytes());
        *seq += 1;
        sock.send(&out).map(|_| ())
    };
    for _ in 0..window {
        send(&mut next_seq)?;
    }
    let mut rate = Rate {
        per_interval: Vec::with_capacity(intervals),
        replies: 0,
        refills: 0,
    };
    // The interval being counted (None during the warmup), its start and its replies.
    let mut current: Option<(Instant, u64)> = None;
    let warm_until = Instant::now() + warmup;
    while rate.per_interval.len() < intervals && !interrupted() {
        let now = Instant::now();
        match current {
            None if now >= warm_until => current = Some((now, 0)),
            Some((since, n)) if now >= since + interval => {
                rate.per_interval
                    .push(n as f64 / now.duration_since(since).as_secs_f64());
                rate.replies += n;
                current = Some((now, 0));
                continue;
            }
            _ => {}
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let seq = (n >= 8).then(|| u64::from_le_bytes(buf[..8].try_into().expect("8")));
                if n != size || seq.is_none_or(|s| s < epoch_start || s >= next_seq) {
                    continue;
                }
                if let Some((_, replies)) = current.as_mut() {
                    *replies += 1;
                }
                send(&mut next_seq)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                rate.refills += 1;
                epoch_start = next_seq;
                for _ in 0..window {
                    send(&mut next_seq)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rate)
}
