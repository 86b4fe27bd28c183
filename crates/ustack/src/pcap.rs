//! `--pcap DIR`: what each TAP receives and sends, in DIR/TAP.pcap.
//!
//! Classic pcap (the format `tcpdump -w` writes and `tcpdump -r`, tshark and Wireshark
//! read): magic 0xa1b2c3d4 (microsecond timestamps), version 2.4, snaplen 65535,
//! LINKTYPE_ETHERNET, little-endian. Frames come from a packet tap on each device of the
//! stack (`Stack::packet_tap_open`, the `ptype_all` hook tcpdump's AF_PACKET socket uses in
//! Linux), so each file holds the frames as the stack exchanges them with the TAP: TSO
//! super-packets whole (tcpdump shows them as it shows GSO packets on a Linux host, with
//! the total length in the IP header and, for ours, the checksum left to the device), frames
//! for other MACs too. The only frames cut to the snaplen are ones over 65535 bytes (an IP
//! datagram of 65535 bytes plus its Ethernet header); a record keeps their real length.
//!
//! Timestamps: received frames carry their arrival time, sent ones the time the stack
//! queued them on the device (`dev_queue_xmit`, where Linux's taps see them too). Both are
//! the stack's monotonic clock; the wall-clock time written is that plus the offset between
//! the two measured once when the capture starts (to a few microseconds), so a clock step
//! during the capture is not followed.
//!
//! The taps are drained every [`DRAIN_EVERY`] from the ustack runtime and written with
//! buffered I/O on tokio's blocking pool, flushed after every round (so `tcpdump -r` of a
//! running capture sees everything up to a few milliseconds ago). Bounded: each tap holds at
//! most [`TAP_RING`] frames between drains (beyond that the stack counts drops), and each
//! file stops growing at its limit (`--pcap-limit`, 64 MiB by default; said once on stderr;
//! later frames are counted, not written). On exit the last frames are drained, the files
//! flushed, and a line per file says what was written and what was not.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stack_async::StackHandle;
use stack_core::dev::TapId;
use stack_core::{DeviceId, Skb, Stack};
use tokio::sync::oneshot;

/// The global header's size.
pub const HEADER_LEN: usize = 24;
/// A record header's size.
pub const RECORD_HEADER_LEN: usize = 16;
/// Microsecond-resolution pcap.
pub const MAGIC: u32 = 0xa1b2_c3d4;
pub const SNAPLEN: u32 = 65535;
pub const LINKTYPE_ETHERNET: u32 = 1;
/// `--pcap-limit` when not given.
pub const DEFAULT_LIMIT: u64 = 64 << 20;
/// Frames a device's tap keeps between drains.
pub const TAP_RING: usize = 2048;
/// How often the taps are drained.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Writes one pcap stream, refusing records once the limit would be passed.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    limit: u64,
    bytes: u64,
    frames: u64,
    /// Records not written because the file reached its limit.
    over_limit: u64,
    full: bool,
}

/// What [`PcapWriter::write_frame`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// Left out: the file is at its limit; `first` for the first frame left out.
    OverLimit {
        first: bool,
    },
}

impl<W: Write> PcapWriter<W> {
    /// Start a file: the global header, written now.
    pub fn new(mut out: W, limit: u64) -> io::Result<PcapWriter<W>> {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (GMT) and sigfigs stay 0.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            limit,
            bytes: HEADER_LEN as u64,
            frames: 0,
            over_limit: 0,
            full: false,
        })
    }

    /// One frame seen at `unix_micros` (microseconds since 1970).
    pub fn write_frame(&mut self, unix_micros: u64, frame: &[u8]) -> io::Result<Written> {
        let caplen = frame.len().min(SNAPLEN as usize);
        let size = (RECORD_HEADER_LEN + caplen) as u64;
        if self.full || self.bytes + size > self.limit {
            let first = !self.full;
            self.full = true;
            self.over_limit += 1;
            return Ok(Written::OverLimit { first });
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        // ts_sec wraps in 2106, as it does for every classic pcap writer.
        h[0..4].copy_from_slice(&((unix_micros / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((unix_micros % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&frame[..caplen])?;
        self.bytes += size;
        self.frames += 1;
        Ok(Written::Yes)
    }

    /// Count a record left out without offering it (the file was already full).
    pub fn skip(&mut self, n: u64) {
        self.over_limit += n;
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn over_limit(&self) -> u64 {
        self.over_limit
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One device's capture file.
struct CaptureFile {
    path: PathBuf,
    tap: Option<TapId>,
    writer: PcapWriter<BufWriter<File>>,
    /// The tap's drop count (frames missed because its ring was full), last seen.
    ring_drops: u64,
    /// A write failed (disk full...): the file is given up, said once.
    failed: bool,
}

/// What one drain took from one tap.
struct Drained {
    /// (stack time in µs, frame) of each frame to write.
    frames: Vec<(u64, Skb)>,
    /// Frames taken and thrown away because the file is full.
    discarded: u64,
    ring_drops: u64,
}

/// A running capture; [`Capture::finish`] ends it.
pub struct Capture {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Capture {
    /// Drain the last frames, flush and close the files; the lines to print about them.
    pub async fn finish(mut self) -> Vec<String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(lines) => lines,
            Err(e) => vec![format!("ustack: the pcap writer failed: {e}")],
        }
    }
}

/// Open DIR/TAP.pcap for every TAP of the stack and start capturing into them.
pub async fn start(handle: &StackHandle, dir: &Path, limit: u64) -> Result<Capture, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the pcap directory {}: {e}", dir.display()))?;
    let devices: Vec<(DeviceId, String)> = handle
        .io_stats_all()
        .into_iter()
        .map(|(d, name, _)| (d, name))
        .collect();
    let mut files = Vec::with_capacity(devices.len());
    for (_, name) in &devices {
        let path = dir.join(format!("{name}.pcap"));
        let writer = File::create(&path)
            .map(|f| BufWriter::with_capacity(256 * 1024, f))
            .and_then(|out| PcapWriter::new(out, limit))
            .and_then(|mut w| w.flush().map(|()| w))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.push(CaptureFile {
            path,
            tap: None,
            writer,
            ring_drops: 0,
            failed: false,
        });
    }
    let ids: Vec<DeviceId> = devices.iter().map(|(d, _)| *d).collect();
    let before = SystemTime::now();
    let (taps, stack_now) = handle
        .call(move |stack, now| {
            let taps: Vec<Option<TapId>> = ids
                .iter()
                .map(|d| stack.packet_tap_open(*d, TAP_RING))
                .collect();
            (taps, now)
        })
        .await
        .map_err(|e| format!("cannot start the capture: {e}"))?;
    let after = SystemTime::now();
    // The wall-clock time of the stack clock's zero: the midpoint of the call, less the
    // stack time it read.
    let mid = before + after.duration_since(before).unwrap_or_default() / 2;
    let mid_micros = mid
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let epoch = mid_micros.saturating_sub(stack_now.total_micros());
    for (f, tap) in files.iter_mut().zip(taps) {
        f.tap = tap;
    }
    for f in &files {
        eprintln!("ustack: capturing into {}", f.path.display());
    }
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(handle.clone(), files, epoch, stopped));
    Ok(Capture {
        stop: Some(stop),
        task,
    })
}

/// Take every frame the taps hold (on the stack thread).
fn drain(stack: &mut Stack, taps: &[(Option<TapId>, bool)]) -> Vec<Drained> {
    taps.iter()
        .map(|&(tap, accepting)| {
            let mut d = Drained {
                frames: Vec::new(),
                discarded: 0,
                ring_drops: 0,
            };
            let Some(tap) = tap else {
                return d;
            };
            while let Some(skb) = stack.packet_tap_recv(tap) {
                if accepting {
                    d.frames.push((skb.tstamp.total_micros(), skb));
                } else {
                    d.discarded += 1;
                }
            }
            d.ring_drops = stack.packet_tap_drops(tap);
            d
        })
        .collect()
}

/// Write what one drain took (on the blocking pool).
fn write_batch(files: &mut [CaptureFile], batch: Vec<Drained>, epoch: u64) {
    for (f, d) in files.iter_mut().zip(batch) {
        f.ring_drops = d.ring_drops;
        f.writer.skip(d.discarded);
        if f.failed {
            f.writer.skip(d.frames.len() as u64);
            continue;
        }
        let wrote = !d.frames.is_empty();
        for (t, skb) in d.frames {
            match f.writer.write_frame(epoch + t, skb.data()) {
                Ok(Written::Yes) | Ok(Written::OverLimit { first: false }) => {}
                Ok(Written::OverLimit { first: true }) => eprintln!(
                    "ustack: {} reached its limit of {} bytes (--pcap-limit); \
                     no more frames are written to it",
                    f.path.display(),
                    f.writer.limit
                ),
                Err(e) => {
                    eprintln!(
                        "ustack: cannot write {}: {e}; capture on it stopped",
                        f.path.display()
                    );
                    f.failed = true;
                    f.writer.skip(1);
                }
            }
        }
        if wrote && !f.failed {
            if let Err(e) = f.writer.flush() {
                eprintln!(
                    "ustack: cannot write {}: {e}; capture on it stopped",
                    f.path.display()
                );
                f.failed = true;
            }
        }
    }
}

async fn run(
    handle: StackHandle,
    mut files: Vec<CaptureFile>,
    epoch: u64,
    mut stopped: oneshot::Receiver<()>,
) -> Vec<String> {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            // Asked to stop, or the Capture was dropped: one last drain either way.
            _ = &mut stopped => true,
        };
        let taps: Vec<(Option<TapId>, bool)> = files
            .iter()
            .map(|f| (f.tap, !f.writer.is_full() && !f.failed))
            .collect();
        let Ok(batch) = handle.call(move |stack, _now| drain(stack, &taps)).await else {
            break; // The stack has stopped: nothing more will come.
        };
        let job = tokio::task::spawn_blocking(move || {
            write_batch(&mut files, batch, epoch);
            files
        });
        files = match job.await {
            Ok(f) => f,
            Err(e) => return vec![format!("ustack: the pcap writer failed: {e}")],
        };
        if last {
            break;
        }
    }
    files
        .into_iter()
        .map(|mut f| {
            let _ = f.writer.flush();
            summary(&f)
        })
        .collect()
}

fn summary(f: &CaptureFile) -> String {
    let w = &f.writer;
    let mut line = format!(
        "ustack: {}: {} frames written ({} bytes)",
        f.path.display(),
        w.frames(),
        w.bytes()
    );
    if w.over_limit() > 0 {
        line.push_str(&format!(
            ", {} not written ({})",
            w.over_limit(),
            if f.failed {
                "write error"
            } else {
                "over --pcap-limit"
            }
        ));
    }
    if f.ring_drops > 0 {
        line.push_str(&format!(
            ", {} missed (the capture ring was full)",
            f.ring_drops
        ));
    }
    if f.tap.is_none() {
        line.push_str(" (the device has no packet tap)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use stack_core::ipv4::Ipv4Conf;
    use stack_core::skb::PktType;
    use stack_core::wire::MacAddr;
    use stack_core::{IfAddr, Instant, NetDeviceConfig};
    use std::net::Ipv4Addr;

    /// A pcap file read back: (ts_sec, ts_usec, orig_len, bytes) per record.
    fn records(file: &[u8]) -> Vec<(u32, u32, u32, Vec<u8>)> {
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while at < file.len() {
            let caplen = u32_at(file, at + 8) as usize;
            let data = file[at + 16..at + 16 + caplen].to_vec();
            out.push((
                u32_at(file, at),
                u32_at(file, at + 4),
                u32_at(file, at + 12),
                data,
            ));
            at += 16 + caplen;
        }
        assert_eq!(at, file.len(), "records end where the file does");
        out
    }

    /// An Ethernet ARP request from 192.0.2.10 (02:00:00:00:00:0a) for 192.0.2.1.
    fn arp_request() -> Vec<u8> {
        let mac = [2, 0, 0, 0, 0, 0x0a];
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[192, 0, 2, 10]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[192, 0, 2, 1]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn header_and_records_are_classic_pcap() {
        let mut w = PcapWriter::new(Vec::new(), DEFAULT_LIMIT).unwrap();
        let t = 1_700_000_000_123_456;
        assert_eq!(w.write_frame(t, &arp_request()).unwrap(), Written::Yes);
        assert_eq!(
            w.write_frame(t + 1_000_001, &[1, 2, 3]).unwrap(),
            Written::Yes
        );
        assert_eq!((w.frames(), w.bytes()), (2, 24 + 16 + 60 + 16 + 3));
        let file = w.into_inner();
        assert_eq!(
            &file[0..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "magic 0xa1b2c3d4, LE"
        );
        let u16_at = |i: usize| u16::from_le_bytes([file[i], file[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(file[i..i + 4].try_into().unwrap());
        assert_eq!(u32_at(0), 0xa1b2_c3d4);
        assert_eq!((u16_at(4), u16_at(6)), (2, 4), "version 2.4");
        assert_eq!((u32_at(8), u32_at(12)), (0, 0), "thiszone, sigfigs");
        assert_eq!(u32_at(16), 65535, "snaplen");
        assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
        let r = records(&file);
        assert_eq!(r[0], (1_700_000_000, 123_456, 60, arp_request()));
        assert_eq!(r[1], (1_700_000_001, 123_457, 3, vec![1, 2, 3]));
    }

    #[test]
    fn frames_over_the_snaplen_keep_their_length() {
        let mut w = PcapWriter::new(Vec::new(), DEFAULT_LIMIT).unwrap();
        // A 64 KB super-packet fits whole; one of 65549 bytes (65535-byte IP datagram
        // behind an Ethernet header) is cut to the snaplen.
        w.write_frame(0, &vec![7; 65521]).unwrap();
        w.write_frame(0, &vec![8; 65549]).unwrap();
        let r = records(&w.into_inner());
        assert_eq!((r[0].2, r[0].3.len()), (65521, 65521));
        assert_eq!((r[1].2, r[1].3.len()), (65549, 65535));
    }

    #[test]
    fn the_file_stops_at_its_limit() {
        let limit = (HEADER_LEN + 2 * (16 + 60) + 10) as u64;
        let mut w = PcapWriter::new(Vec::new(), limit).unwrap();
        let f = arp_request();
        assert_eq!(w.write_frame(1, &f).unwrap(), Written::Yes);
        assert_eq!(w.write_frame(2, &f).unwrap(), Written::Yes);
        assert_eq!(
            w.write_frame(3, &f).unwrap(),
            Written::OverLimit { first: true }
        );
        // Even a frame that would still fit: the file is closed to more.
        assert_eq!(
            w.write_frame(4, &[0; 1]).unwrap(),
            Written::OverLimit { first: false }
        );
        w.skip(5);
        assert!(w.is_full());
        assert_eq!((w.frames(), w.over_limit()), (2, 7));
        let file = w.into_inner();
        assert!(file.len() as u64 <= limit);
        assert_eq!(records(&file).len(), 2);
    }

    /// A stack with one device, tap0 (02:00:c0:00:02:01, 192.0.2.1/24).
    fn tap0_stack() -> (Stack, DeviceId) {
        let mut s = Stack::with_conf(Ipv4Conf::default(), Instant::ZERO, 3);
        let d = s.add_device(NetDeviceConfig::new("tap0", MacAddr([2, 0, 0xc0, 0, 2, 1])));
        s.addr_add(d, IfAddr::new(Ipv4Addr::new(192, 0, 2, 1), 24))
            .unwrap();
        (s, d)
    }

    /// A frame the stack makes on its own (here the ARP request for a datagram's next hop)
    /// carries the time it was queued, not the zero of a fresh buffer.
    #[test]
    fn sent_frames_carry_the_time_they_were_sent() {
        let (mut s, d) = tap0_stack();
        let tap = s.packet_tap_open(d, TAP_RING);
        let u = s.udp_socket();
        let to = std::net::SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 20), 9);
        s.udp_sendmsg(Instant::from_millis(9), u, Some(to), b"x", false)
            .unwrap();
        let batch = drain(&mut s, &[(tap, true)]);
        let last = batch[0].frames.last().expect("the ARP request");
        assert_eq!(last.1.pkt_type, PktType::Outgoing);
        assert_eq!(last.0, 9_000);
    }

    /// Frames the tap had no room for are counted and said at the end.
    #[test]
    fn ring_drops_are_reported() {
        let (mut s, d) = tap0_stack();
        let tap = s.packet_tap_open(d, 1);
        // The request and our reply: room for one.
        s.netif_receive_skb(Instant::from_millis(1), d, Skb::from_vec(arp_request()));
        let batch = drain(&mut s, &[(tap, true)]);
        let path = PathBuf::from("/nonexistent/tap0.pcap");
        let mut files = vec![CaptureFile {
            path: path.clone(),
            tap,
            writer: PcapWriter::new(BufWriter::new(File::create("/dev/null").unwrap()), 1 << 20)
                .unwrap(),
            ring_drops: 0,
            failed: false,
        }];
        write_batch(&mut files, batch, 0);
        assert_eq!(
            summary(&files[0]),
            "ustack: /nonexistent/tap0.pcap: 1 frames written (100 bytes), \
             1 missed (the capture ring was full)"
        );
    }

    /// A router's tap0 answering one ARP request: the capture holds the request as received
    /// and the reply as sent, each stamped with the stack time it happened.
    #[test]
    fn a_stack_tap_captures_both_directions() {
        let (mut s, d) = tap0_stack();
        while s.poll_transmit(Instant::ZERO).is_some() {}
        let tap = s.packet_tap_open(d, TAP_RING);
        assert!(tap.is_some());
        s.netif_receive_skb(Instant::from_millis(5), d, Skb::from_vec(arp_request()));
        s.handle_timeout(Instant::from_millis(7));
        let sent: Vec<_> =
            std::iter::from_fn(|| s.poll_transmit(Instant::from_millis(7))).collect();
        assert_eq!(sent.len(), 1, "the ARP reply");
        let batch = drain(&mut s, &[(tap, true)]);
        assert_eq!(batch[0].frames.len(), 2);
        assert_eq!(batch[0].frames[0].1.pkt_type, PktType::Broadcast);
        assert_eq!(batch[0].frames[1].1.pkt_type, PktType::Outgoing);

        let dir = std::env::temp_dir().join(format!("ustack-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tap0.pcap");
        let writer =
            PcapWriter::new(BufWriter::new(File::create(&path).unwrap()), 1 << 20).unwrap();
        let mut files = vec![CaptureFile {
            path: path.clone(),
            tap,
            writer,
            ring_drops: 0,
            failed: false,
        }];
        let epoch = 1_700_000_000_000_000;
        write_batch(&mut files, batch, epoch);
        assert_eq!(
            summary(&files[0]),
            format!("ustack: {}: 2 frames written (158 bytes)", path.display())
        );
        // Once full, what a drain takes is counted, not written.
        files[0].writer.full = true;
        s.netif_receive_skb(Instant::from_millis(9), d, Skb::from_vec(arp_request()));
        let batch = drain(&mut s, &[(tap, false)]);
        write_batch(&mut files, batch, epoch);
        // The request and its reply.
        let line = summary(&files[0]);
        assert!(
            line.ends_with(", 2 not written (over --pcap-limit)"),
            "{line}"
        );
        drop(files);

        let file = std::fs::read(&path).unwrap();
        let r = records(&file);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[0].1), (1_700_000_000, 5_000), "received at 5 ms");
        assert_eq!(r[0].3, arp_request());
        // The reply was queued while the stack handled the request, at 5 ms.
        assert_eq!((r[1].0, r[1].1), (1_700_000_000, 5_000), "sent at 5 ms");
        assert_eq!(&r[1].3[0..6], &[2, 0, 0, 0, 0, 0x0a], "to the asker");
        assert_eq!(&r[1].3[20..22], &[0, 2], "an ARP reply");

        // tcpdump reads it, if it is here (apt-get install tcpdump).
        match std::process::Command::new("tcpdump")
            .args(["-r", path.to_str().unwrap(), "-n", "-e", "-tt"])
            .output()
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "tcpdump: {err}");
                assert!(err.contains("link-type EN10MB (Ethernet)"), "{err}");
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), 2, "{text}");
                assert!(
                    lines[0].starts_with("1700000000.005000 02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff")
                );
                assert!(
                    lines[0].contains("Request who-has 192.0.2.1 tell 192.0.2.10"),
                    "{text}"
                );
                assert!(
                    lines[1].contains("Reply 192.0.2.1 is-at 02:00:c0:00:02:01"),
                    "{text}"
                );
            }
            Err(e) => println!("tcpdump not run ({e}); install it to check the file with it"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
