//! Garbage on the wire: ustack must count each malformed frame where Linux would (ip_rcv_core,
//! icmp_rcv), answer an unknown protocol with ICMP protocol unreachable, and keep answering
//! pings afterwards.

use std::collections::BTreeMap;

use testbed::{parse_ping_summary, Output};
use ustack_netns_tests::{asset, counter, Bed, KERNEL_IP, TAP, USTACK_IP, USTACK_MAC};

/// Of each crafted kind.
const COUNT: u64 = 5;

/// `sent KIND N` lines of bad_frames.py.
fn sent_counts(out: &Output) -> BTreeMap<String, u64> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("sent"), Some(kind), Some(n)) => Some((kind.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn malformed_frames_are_counted_and_survived() {
    let bed = Bed::new("badinput");
    let host = bed.start_host();

    let script = asset("scripts/bad_frames.py");
    let seed = std::process::id().to_string();
    let count = COUNT.to_string();
    let sender = bed.kernel(
        "/usr/bin/python3",
        &[
            script.to_str().expect("utf-8 path"),
            TAP,
            USTACK_MAC,
            KERNEL_IP,
            USTACK_IP,
            &seed,
            &count,
        ],
    );
    assert!(
        sender.success(),
        "bad_frames.py failed (is python3-scapy installed?):\n{sender}"
    );
    let sent = sent_counts(&sender);
    let n = |kind: &str| sent.get(kind).copied().unwrap_or(0);
    for kind in [
        "truncated-header",
        "bad-ip-checksum",
        "ihl-3",
        "version-6",
        "total-length-below-header",
        "total-length-beyond-frame",
        "bad-icmp-checksum",
        "unknown-protocol",
    ] {
        assert_eq!(
            n(kind),
            COUNT,
            "the kernel did not send every {kind} frame:\n{sender}"
        );
    }

    // Still alive and still answering after all that (the replies also prove the garbage ahead
    // of them in the TAP queue has been read).
    let ping = bed.ping(&["-c", "3", "-W", "2", USTACK_IP]);
    let summary = parse_ping_summary(&ping.stdout);
    assert!(
        summary.as_ref().is_some_and(|s| s.received == 3),
        "ping after the bad frames:\n{ping}\n{}\nseed {seed}",
        host.output_so_far()
    );

    let (out, c) = host.stop();
    let ctx = format!("{out}\n\nframes sent (seed {seed}):\n{}", sender.stdout);
    let get = |section: &str, name: &str| counter(&c, section, name, &out);
    let hdr_errors = n("truncated-header")
        + n("bad-ip-checksum")
        + n("ihl-3")
        + n("version-6")
        + n("total-length-below-header");
    let checks = [
        ("IpExt", "InCsumErrors", n("bad-ip-checksum")),
        ("Ip", "InHdrErrors", hdr_errors),
        ("IpExt", "InTruncatedPkts", n("total-length-beyond-frame")),
        ("Icmp", "InCsumErrors", 1),
        ("Icmp", "InErrors", 1),
        ("Ip", "InUnknownProtos", 1),
        ("Icmp", "OutDestUnreachs", 1),
    ];
    let failed: Vec<String> = checks
        .iter()
        .filter(|(s, name, min)| get(s, name) < *min)
        .map(|(s, name, min)| format!("{s} {name} = {} (want >= {min})", get(s, name)))
        .collect();
    assert!(failed.is_empty(), "{}\n\n{ctx}", failed.join("\n"));
}
