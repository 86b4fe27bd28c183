//! Congestion control: Reno (RFC 5681) and CUBIC (RFC 9438), CUBIC the default as in
//! Linux. Windows are counted in segments like the kernel's `snd_cwnd`.

use crate::time::Instant;

use super::TcpSock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CongestionControl {
    Reno,
    #[default]
    Cubic,
}

/// Per-connection state of the algorithm.
#[derive(Clone, Copy, Debug, Default)]
pub struct CongState {
    pub algo: CongestionControl,
    /// CUBIC: window before the last reduction (W_max), in segments.
    w_max: f64,
    /// CUBIC: start of the current epoch.
    epoch_start: Option<Instant>,
    /// CUBIC: K, seconds to reach W_max again.
    k: f64,
    /// CUBIC: Reno-friendly estimate (W_est, RFC 9438 4.3).
    w_est: f64,
}

/// RFC 9438 constants: C = 0.4, beta_cubic = 0.7.
const C: f64 = 0.4;
const BETA: f64 = 0.7;

impl CongState {
    pub fn new(algo: CongestionControl) -> Self {
        CongState {
            algo,
            ..Default::default()
        }
    }
}

impl TcpSock {
    /// `tcp_cong_avoid`: grow the window for `acked` newly acknowledged segments.
    pub(crate) fn cong_avoid(&mut self, now: Instant, acked: u32) {
        if acked == 0 {
            return;
        }
        let mut acked = acked;
        // Slow start (RFC 5681 3.1): one segment per segment acknowledged.
        if self.cwnd < self.ssthresh {
            let room = self.ssthresh - self.cwnd;
            let grow = acked.min(room);
            self.cwnd += grow;
            acked -= grow;
            if acked == 0 {
                return;
            }
        }
        match self.cc.algo {
            CongestionControl::Reno => self.reno_ca(acked),
            CongestionControl::Cubic => self.cubic_ca(now, acked),
        }
    }

    /// Congestion avoidance, one segment per window (`tcp_cong_avoid_ai`).
    fn reno_ca(&mut self, acked: u32) {
        self.cwnd_cnt += acked;
        if self.cwnd_cnt >= self.cwnd {
            self.cwnd_cnt -= self.cwnd;
            self.cwnd += 1;
        }
    }

    /// RFC 9438 section 4: W_cubic(t) = C (t - K)^3 + W_max, never below the
    /// Reno-friendly window.
    fn cubic_ca(&mut self, now: Instant, acked: u32) {
        let cc = &mut self.cc;
        let epoch = *cc.epoch_start.get_or_insert_with(|| {
            if cc.w_max < f64::from(self.cwnd) {
                cc.w_max = f64::from(self.cwnd);
            }
            cc.k = ((cc.w_max - f64::from(self.cwnd)) / C).cbrt().max(0.0);
            cc.w_est = f64::from(self.cwnd);
            now
        });
        let rtt = self.srtt_us.unwrap_or(100_000) as f64 / 1e6;
        let t = now.saturating_duration_since(epoch).as_secs_f64() + rtt;
        let target = C * (t - cc.k).powi(3) + cc.w_max;
        // Reno-friendly region (4.3): W_est grows by alpha per window.
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        cc.w_est += alpha * f64::from(acked) / f64::from(self.cwnd.max(1));
        let target = target.max(cc.w_est);
        let cwnd = f64::from(self.cwnd);
        if target > cwnd {
            // Grow by (target - cwnd) / cwnd per ACKed segment (4.4), via the counter.
            let per_seg = ((cwnd / (target - cwnd)).max(1.0)) as u32;
            self.cwnd_cnt += acked;
            if self.cwnd_cnt >= per_seg {
                self.cwnd += (self.cwnd_cnt / per_seg).min(self.cwnd);
                self.cwnd_cnt = 0;
            }
        } else {
            self.reno_ca(acked.min(1));
        }
    }

    /// `ssthresh` after a loss (`tcp_reno_ssthresh` / `bictcp_recalc_ssthresh`).
    pub(crate) fn cong_ssthresh(&mut self) -> u32 {
        let flight = self.cwnd.max(2);
        match self.cc.algo {
            CongestionControl::Reno => (flight / 2).max(2),
            CongestionControl::Cubic => {
                let cc = &mut self.cc;
                // Fast convergence (4.7): release bandwidth for newer flows.
                let w = f64::from(flight);
                cc.w_max = if w < cc.w_max {
                    w * (1.0 + BETA) / 2.0
                } else {
                    w
                };
                cc.epoch_start = None;
                ((w * BETA) as u32).max(2)
            }
        }
    }

    /// After an RTO the epoch restarts from scratch.
    pub(crate) fn cong_on_timeout(&mut self) {
        self.cc.epoch_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    /// Feed one window of ACKs per RTT from `start` for `rtts` round trips.
    fn grow(s: &mut TcpSock, start: Instant, rtt: Duration, rtts: u32) -> Vec<u32> {
        let mut now = start;
        (0..rtts)
            .map(|_| {
                let w = s.cwnd;
                s.cong_avoid(now, w);
                now += rtt;
                s.cwnd
            })
            .collect()
    }

    fn after_loss(algo: CongestionControl) -> TcpSock {
        let mut s = TcpSock::new(Instant::ZERO);
        s.cc = CongState::new(algo);
        s.srtt_us = Some(100_000);
        s.cwnd = 100;
        let ss = s.cong_ssthresh();
        s.ssthresh = ss;
        s.cwnd = ss;
        s
    }

    #[test]
    fn cubic_follows_the_rfc9438_curve() {
        let mut s = after_loss(CongestionControl::Cubic);
        assert_eq!(s.cwnd, 70, "beta_cubic = 0.7");
        // K = cbrt(W_max (1 - beta) / C) = cbrt(75) = 4.22 s; RTT 100 ms.
        let w = grow(
            &mut s,
            Instant::from_secs(1),
            Duration::from_millis(100),
            90,
        );
        let at = |secs: f64| w[(secs * 10.0) as usize - 1];
        // Concave approach: most of the way back within K/2, W_cubic(K/2) = 96.3.
        assert!((92..=100).contains(&at(2.1)), "{}", at(2.1));
        // Plateau at W_max around K.
        assert!((97..=104).contains(&at(4.2)), "{}", at(4.2));
        // Convex probing beyond: W_cubic(2K) = 130.
        assert!((122..=140).contains(&at(8.4)), "{}", at(8.4));
    }

    #[test]
    fn reno_adds_one_segment_per_round_trip() {
        let mut s = after_loss(CongestionControl::Reno);
        assert_eq!(s.cwnd, 50, "halved");
        let w = grow(&mut s, Instant::ZERO, Duration::from_millis(100), 10);
        assert_eq!(w, (51..=60).collect::<Vec<_>>());
    }

    #[test]
    fn slow_start_doubles_until_ssthresh() {
        let mut s = TcpSock::new(Instant::ZERO);
        s.cc = CongState::new(CongestionControl::Reno);
        s.cwnd = 10;
        s.ssthresh = 64;
        let w = grow(&mut s, Instant::ZERO, Duration::from_millis(10), 4);
        assert_eq!(w, vec![20, 40, 64, 65]);
    }
}
