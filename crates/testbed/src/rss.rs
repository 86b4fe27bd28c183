//! Memory of a process under test, from /proc, for "bounded memory under a flood" checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The process's resident set size in KiB (`VmRSS` of /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples a process's RSS every `period` on a thread until [`RssWatch::max`] (or drop);
/// the peak seen.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssWatch {
    pub fn start(pid: u32, period: Duration) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(vm_rss_kib(pid).unwrap_or(0));
                std::thread::sleep(period);
            }
            max.max(vm_rss_kib(pid).unwrap_or(0))
        });
        RssWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak RSS in KiB.
    pub fn max(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_rss() {
        let me = std::process::id();
        let now = vm_rss_kib(me).expect("VmRSS of this test");
        assert!(now > 0);
        let w = RssWatch::start(me, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.max() > 0);
        assert_eq!(vm_rss_kib(u32::MAX), None);
    }
}
