//! `ustack ping`: our stack is the one asking. Against the kernel it must get every answer
//! (the first echo waits for ARP in the neighbour's queue); against nobody it must give up the
//! way Linux does: queue bounded at 101 (unres_qlen), resolution failing, Host Unreachable.

use testbed::parse_ping_summary;
use ustack_netns_tests::{counter, reply_lines, Bed, KERNEL_IP, TAP, USTACK_CIDR};

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn ustack_pings_the_kernel() {
    let bed = Bed::new("uping");
    let out = bed.run_ustack(&[
        "ping",
        "--tap",
        TAP,
        "--addr",
        USTACK_CIDR,
        "--count",
        "5",
        "--interval",
        "0.2",
        KERNEL_IP,
    ]);
    assert!(!out.timed_out, "ustack ping hung:\n{out}");
    assert!(
        out.stdout.contains(&format!(
            "PING {KERNEL_IP} ({KERNEL_IP}) 56(84) bytes of data."
        )),
        "missing ping(8) header line:\n{out}"
    );
    let replies = reply_lines(&out.stdout);
    assert_eq!(replies.len(), 5, "want 5 replies:\n{out}");
    // icmp_seq=1 was sent before the kernel's MAC was known: it must have waited in the ARP
    // queue and gone out after resolution, not been dropped.
    assert!(
        replies[0].starts_with(&format!("64 bytes from {KERNEL_IP}: icmp_seq=1 ")),
        "the first echo (queued during ARP resolution) got no reply:\n{out}"
    );
    let summary =
        parse_ping_summary(&out.stdout).unwrap_or_else(|| panic!("no ping statistics:\n{out}"));
    assert_eq!(
        (summary.transmitted, summary.received),
        (5, 5),
        "want 5 transmitted, 5 received:\n{out}"
    );
    assert!(summary.rtt.is_some(), "missing the rtt line:\n{out}");
    assert_eq!(
        out.code(),
        Some(0),
        "exit code with replies must be 0:\n{out}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn ustack_ping_to_nobody_fails_arp_and_bounds_the_queue() {
    let bed = Bed::new("unreach");
    let out = bed.run_ustack(&[
        "ping",
        "--tap",
        TAP,
        "--addr",
        USTACK_CIDR,
        "--count",
        "300",
        "--interval",
        "0.01",
        "--wait",
        "5",
        "--stats",
        "192.0.2.99",
    ]);
    assert!(!out.timed_out, "ustack ping hung:\n{out}");
    assert!(
        reply_lines(&out.stdout).is_empty(),
        "nobody has 192.0.2.99, yet something replied:\n{out}"
    );
    assert_eq!(
        out.code(),
        Some(1),
        "exit code without replies must be 1:\n{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("Destination Host Unreachable")),
        "no Destination Host Unreachable line:\n{out}"
    );
    let c = testbed::counters_block(&out.stdout)
        .unwrap_or_else(|| panic!("--stats printed no counters block:\n{out}"));
    assert!(
        counter(&c, "Arp", "ResFailed", &out) >= 1,
        "ARP resolution never failed:\n{out}"
    );
    let qlen_max = counter(&c, "Arp", "UnresQlenMax", &out);
    assert!(
        qlen_max <= 101,
        "the unresolved queue grew to {qlen_max} (bound 101):\n{out}"
    );
    assert!(
        counter(&c, "Arp", "UnresolvedDiscards", &out) >= 1,
        "300 echoes at 10 ms should overflow the 101-packet queue:\n{out}"
    );
}
