//! Parsing of ping(8) output (iputils), which `ustack ping` imitates line for line, and the
//! percentile arithmetic the benchmark needs.

/// The `rtt min/avg/max/mdev = a/b/c/d ms` line, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub mdev: f64,
}

/// ping's closing statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct PingSummary {
    pub transmitted: u64,
    pub received: u64,
    /// `+N errors` (ICMP errors such as Destination Host Unreachable), 0 when not printed.
    pub errors: u64,
    /// `+N duplicates`, 0 when not printed.
    pub duplicates: u64,
    pub loss_percent: f64,
    /// `time Nms`: from the first send to the last reply or timeout.
    pub time_ms: Option<u64>,
    pub rtt: Option<Rtt>,
}

/// Parses the `N packets transmitted, N received, ...` line and the `rtt ...` line after it.
/// None when there is no statistics line (ping was killed, or never started).
pub fn parse_ping_summary(text: &str) -> Option<PingSummary> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("packets transmitted"));
    let stats = lines.next()?;
    let mut summary = PingSummary {
        transmitted: 0,
        received: 0,
        errors: 0,
        duplicates: 0,
        loss_percent: f64::NAN,
        time_ms: None,
        rtt: None,
    };
    let mut seen_received = false;
    for part in stats.split(',').map(str::trim) {
        let mut words = part.split_whitespace();
        let (Some(first), second) = (words.next(), words.next()) else {
            continue;
        };
        match (first, second) {
            (n, Some("packets")) => summary.transmitted = n.parse().ok()?,
            (n, Some("received")) => {
                summary.received = n.parse().ok()?;
                seen_received = true;
            }
            (n, Some("errors")) => summary.errors = n.trim_start_matches('+').parse().ok()?,
            (n, Some("duplicates")) => {
                summary.duplicates = n.trim_start_matches('+').parse().ok()?
            }
            (n, Some("packet")) => summary.loss_percent = n.trim_end_matches('%').parse().ok()?,
            ("time", Some(t)) => summary.time_ms = t.trim_end_matches("ms").parse().ok(),
            _ => {}
        }
    }
    if !seen_received {
        return None;
    }
    summary.rtt = lines
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip "))
        .and_then(parse_rtt);
    Some(summary)
}

fn parse_rtt(line: &str) -> Option<Rtt> {
    let (_, values) = line.split_once('=')?;
    let first = values.split_whitespace().next()?;
    let v: Vec<f64> = first
        .split('/')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [min, avg, max, mdev] => Some(Rtt {
            min,
            avg,
            max,
            mdev,
        }),
        _ => None,
    }
}

/// Every `time=X ms` of the reply lines, in milliseconds, in order.
pub fn parse_ping_times(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("time=")?;
            rest.split_whitespace()
                .next()?
                .trim_end_matches("ms")
                .parse()
                .ok()
        })
        .collect()
}

/// The `p`-th percentile (0 < p <= 100) by the nearest-rank method: the smallest sample with at
/// least p% of the samples at or below it. It is always an observed value, which is what a
/// latency percentile should be. None for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_PING: &str = "\
PING 192.0.2.2 (192.0.2.2) 56(84) bytes of data.
64 bytes from 192.0.2.2: icmp_seq=1 ttl=64 time=0.512 ms
64 bytes from 192.0.2.2: icmp_seq=2 ttl=64 time=0.047 ms
64 bytes from 192.0.2.2: icmp_seq=3 ttl=64 time=12.3 ms

--- 192.0.2.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 2031ms
rtt min/avg/max/mdev = 0.047/4.286/12.300/5.682 ms
";

    #[test]
    fn parses_a_normal_run() {
        let s = parse_ping_summary(KERNEL_PING).unwrap();
        assert_eq!(s.transmitted, 3);
        assert_eq!(s.received, 3);
        assert_eq!(s.errors, 0);
        assert_eq!(s.loss_percent, 0.0);
        assert_eq!(s.time_ms, Some(2031));
        let rtt = s.rtt.unwrap();
        assert_eq!((rtt.min, rtt.max, rtt.mdev), (0.047, 12.3, 5.682));
        assert_eq!(parse_ping_times(KERNEL_PING), [0.512, 0.047, 12.3]);
    }

    #[test]
    fn parses_unreachable_and_flood_summaries() {
        let unreachable = "\
From 192.0.2.2 icmp_seq=1 Destination Host Unreachable
--- 192.0.2.99 ping statistics ---
5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4093ms
pipe 3
";
        let s = parse_ping_summary(unreachable).unwrap();
        assert_eq!((s.transmitted, s.received, s.errors), (5, 0, 5));
        assert_eq!(s.loss_percent, 100.0);
        assert!(s.rtt.is_none());
        assert!(parse_ping_times(unreachable).is_empty());

        let flood = "\
--- 192.0.2.2 ping statistics ---
20000 packets transmitted, 19997 received, +2 duplicates, 0.015% packet loss, time 1523ms
rtt min/avg/max/mdev = 0.011/0.021/0.433/0.009 ms, ipg/ewma 0.076/0.020 ms
";
        let s = parse_ping_summary(flood).unwrap();
        assert_eq!((s.transmitted, s.received, s.duplicates), (20000, 19997, 2));
        assert_eq!(s.loss_percent, 0.015);
        assert_eq!(s.time_ms, Some(1523));
        assert_eq!(s.rtt.unwrap().avg, 0.021);
    }

    #[test]
    fn no_summary_without_a_statistics_line() {
        assert!(parse_ping_summary("PING 192.0.2.2 (192.0.2.2) 56(84) bytes of data.\n").is_none());
        assert!(parse_ping_summary("").is_none());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.1), Some(1.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 0.0), None);
    }
}
