//! The kernel pings `ustack host`: ARP resolution and ICMP echo through ip_rcv → icmp_rcv →
//! icmp_reply, at normal and maximum unfragmented size.

use testbed::parse_ping_summary;
use ustack_netns_tests::{counter, reply_lines, Bed, USTACK_IP, USTACK_MAC};

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn kernel_pings_ustack_twenty_times_without_loss() {
    let bed = Bed::new("ping20");
    let host = bed.start_host();
    let out = bed.ping(&["-c", "20", "-i", "0.05", USTACK_IP]);
    let summary = parse_ping_summary(&out.stdout)
        .unwrap_or_else(|| panic!("no ping statistics:\n{out}\n{}", host.output_so_far()));
    assert_eq!(
        (summary.transmitted, summary.received, summary.duplicates),
        (20, 20, 0),
        "want 20 sent, 20 answered once each:\n{out}\n{}",
        host.output_so_far()
    );
    assert_eq!(summary.loss_percent, 0.0, "{out}");
    assert_eq!(reply_lines(&out.stdout).len(), 20, "{out}");
    assert!(out.success(), "{out}");

    let (host_out, c) = host.stop();
    // 20 here plus the readiness probes: at least 20 went through icmp_echo each way.
    assert!(
        counter(&c, "Icmp", "InEchos", &host_out) >= 20,
        "{host_out}"
    );
    assert!(
        counter(&c, "Icmp", "OutEchoReps", &host_out) >= 20,
        "{host_out}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn largest_unfragmented_echo_comes_back_whole() {
    let bed = Bed::new("ping1472");
    let host = bed.start_host();
    // 1472 bytes of ICMP data + 8 ICMP + 20 IP = 1500, the TAP's MTU; -M do forbids fragmenting.
    let out = bed.ping(&["-c", "3", "-s", "1472", "-M", "do", USTACK_IP]);
    let replies = reply_lines(&out.stdout);
    assert_eq!(
        replies.len(),
        3,
        "want 3 replies:\n{out}\n{}",
        host.output_so_far()
    );
    for line in &replies {
        assert!(
            line.starts_with(&format!("1480 bytes from {USTACK_IP}")),
            "reply truncated or padded: {line:?}\n{out}"
        );
    }
    let summary = parse_ping_summary(&out.stdout).expect("statistics");
    assert_eq!((summary.transmitted, summary.received), (3, 3), "{out}");
    host.stop();
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn kernel_learns_ustacks_mac_by_arp() {
    let bed = Bed::new("neigh");
    let host = bed.start_host();
    let out = bed.ping(&["-c", "1", "-W", "2", USTACK_IP]);
    assert!(out.success(), "{out}\n{}", host.output_so_far());
    let neigh = bed
        .ns
        .ip(&["neigh", "show", USTACK_IP])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        neigh.contains(&format!("lladdr {USTACK_MAC}")),
        "the kernel's neighbour entry for {USTACK_IP} should carry ustack's default MAC \
         {USTACK_MAC}, got: {neigh:?}"
    );
    let (host_out, c) = host.stop();
    assert!(
        counter(&c, "Arp", "OutReplies", &host_out) >= 1,
        "{host_out}"
    );
}
