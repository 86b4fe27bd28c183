//! Seeded test data: a SplitMix64 stream and the seed a run uses, so a failure can be
//! replayed exactly (`USTACK_TEST_SEED=<n>`).

/// SplitMix64 (Steele, Lea, Flood 2014): fast, good enough for test payloads and choices.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fill `buf` with the next bytes of the stream (8 per step; a short tail takes the
    /// first bytes of a step, so a stream cut into 8-byte-aligned chunks is reproducible).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes()[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `USTACK_TEST_SEED` replays a failed run; otherwise a fresh seed, to be printed with
/// every failure.
pub fn test_seed() -> u64 {
    std::env::var("USTACK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_bytes_are_the_same_stream() {
        let mut a = SplitMix(7);
        let mut b = SplitMix(7);
        let mut buf = [0u8; 20];
        a.fill(&mut buf);
        assert_eq!(b.bytes(20), buf);
        assert_ne!(SplitMix(8).bytes(20), buf);
        assert!((0..100).all(|_| a.below(10) < 10));
    }
}

/// What [`echo_seeded`] saw.
#[derive(Debug)]
pub struct EchoRun {
    /// Bytes read back that matched.
    pub got: usize,
    /// From the start until the reader stopped.
    pub elapsed: std::time::Duration,
    /// How long the writer took to send everything and shut down writing, or its error.
    pub upload: std::io::Result<std::time::Duration>,
    /// How the reading ended: `Ok` at end of stream, or the read error.
    pub end: std::io::Result<()>,
    /// The offset of the first byte that differs from what was sent (or of the first
    /// byte beyond it), if any: reading stops there.
    pub first_diff: Option<usize>,
}

/// Send `total` bytes of the seeded stream through an echo service on `stream` from one
/// thread while another reads them back and checks each byte, `chunk` bytes at a time;
/// then shut down writing and read to the end of stream.
pub fn echo_seeded(stream: &std::net::TcpStream, total: usize, seed: u64, chunk: usize) -> EchoRun {
    use std::io::{Read, Write};
    let mut writer = stream.try_clone().expect("clone the stream");
    let start = std::time::Instant::now();
    let upload = std::thread::spawn(move || -> std::io::Result<std::time::Duration> {
        let mut rng = SplitMix(seed);
        let mut buf = vec![0u8; chunk];
        let mut sent = 0;
        while sent < total {
            let n = chunk.min(total - sent);
            rng.fill(&mut buf[..n]);
            writer.write_all(&buf[..n])?;
            sent += n;
        }
        writer.shutdown(std::net::Shutdown::Write)?;
        Ok(start.elapsed())
    });
    let mut rng = SplitMix(seed);
    let mut want = vec![0u8; chunk];
    let mut buf = vec![0u8; chunk];
    let mut got = 0usize;
    let mut first_diff = None;
    let mut reader = stream;
    let end = 'read: loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let mut off = 0;
                while off < n {
                    let at = got % chunk;
                    if at == 0 {
                        let len = chunk.min(total.saturating_sub(got));
                        if len == 0 {
                            // More came back than was sent.
                            first_diff = Some(got);
                            break 'read Ok(());
                        }
                        rng.fill(&mut want[..len]);
                    }
                    let m = (n - off).min(chunk - at);
                    if buf[off..off + m] != want[at..at + m] {
                        let i = (0..m).find(|&i| buf[off + i] != want[at + i]).unwrap_or(0);
                        first_diff = Some(got + i);
                        break 'read Ok(());
                    }
                    off += m;
                    got += m;
                }
            }
            Err(e) => break Err(e),
        }
    };
    let elapsed = start.elapsed();
    // With a mismatch the writer may still be blocked; the caller fails the test anyway.
    let upload = if first_diff.is_some() {
        Ok(elapsed)
    } else {
        upload.join().expect("writer thread")
    };
    EchoRun {
        got,
        elapsed,
        upload,
        end,
        first_diff,
    }
}
