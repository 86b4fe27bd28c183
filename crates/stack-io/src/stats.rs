//! Device counters, like a NIC driver's `struct rtnl_link_stats64` plus the one
//! number an io_uring driver adds: how many submissions carried the transmitted frames.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the device loop updates and any thread may read. Relaxed atomics: each
/// counter is independent and only ever grows, so readers need no ordering between them.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Frames read from the TAP, including those dropped afterwards.
    pub rx_packets: AtomicU64,
    /// Frame bytes (from the Ethernet header; a vnet header is not counted).
    pub rx_bytes: AtomicU64,
    /// Frames read but dropped by the device layer. The io_uring driver never drops a
    /// frame it has read (when its buffers run out, frames wait in the TAP's queue and
    /// the kernel drops beyond `txqueuelen`, counted on its side); kept for the
    /// `ip -s link` layout.
    pub rx_dropped: AtomicU64,
    /// Failed reads, and frames dropped because their vnet header could not be honoured
    /// (see `device::receive_vnet`). `rx_packets`/`rx_bytes` count neither.
    pub rx_errors: AtomicU64,
    /// Frames fully written to the TAP.
    pub tx_packets: AtomicU64,
    /// Frame bytes (a vnet header is not counted).
    pub tx_bytes: AtomicU64,
    /// Failed or short writes, and frames dropped because no vnet header could describe
    /// their offload metadata.
    pub tx_errors: AtomicU64,
    /// Batches of writes handed to io_uring together (one `io_uring_enter` each, unless
    /// the submission queue filled up mid-batch).
    pub tx_batches: AtomicU64,
    /// Times the receive buffers ran out (the multishot read ended with ENOBUFS and was
    /// posted again once refilled; meanwhile frames waited in the TAP's queue), or a
    /// read found no frame. Not an error; a high count means too few buffers
    /// (`DeviceConfig::rx_inflight`).
    pub rx_empty: AtomicU64,
}

/// A copy of [`IoStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStatsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_batches: u64,
    pub rx_empty: u64,
}

impl IoStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> IoStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoStatsSnapshot {
            rx_packets: r(&self.rx_packets),
            rx_bytes: r(&self.rx_bytes),
            rx_dropped: r(&self.rx_dropped),
            rx_errors: r(&self.rx_errors),
            tx_packets: r(&self.tx_packets),
            tx_bytes: r(&self.tx_bytes),
            tx_errors: r(&self.tx_errors),
            tx_batches: r(&self.tx_batches),
            rx_empty: r(&self.rx_empty),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Display for IoStatsSnapshot {
    /// Two lines in /proc/net/snmp style: a header line and a value line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Io: RxPackets RxBytes RxDropped RxErrors TxPackets TxBytes TxErrors TxBatches RxEmpty"
        )?;
        write!(
            f,
            "Io: {} {} {} {} {} {} {} {} {}",
            self.rx_packets,
            self.rx_bytes,
            self.rx_dropped,
            self.rx_errors,
            self.tx_packets,
            self.tx_bytes,
            self.tx_errors,
            self.tx_batches,
            self.rx_empty
        )
    }
}

impl fmt::Display for IoStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_proc_net_snmp() {
        let s = IoStats::new();
        for (i, c) in [
            &s.rx_packets,
            &s.rx_bytes,
            &s.rx_dropped,
            &s.rx_errors,
            &s.tx_packets,
            &s.tx_bytes,
            &s.tx_errors,
            &s.tx_batches,
            &s.rx_empty,
        ]
        .into_iter()
        .enumerate()
        {
            IoStats::add(c, i as u64 + 1);
        }
        assert_eq!(
            s.to_string(),
            "Io: RxPackets RxBytes RxDropped RxErrors TxPackets TxBytes TxErrors TxBatches RxEmpty\n\
             Io: 1 2 3 4 5 6 7 8 9"
        );
        assert_eq!(s.snapshot().tx_batches, 8);
    }
}
