//! `cargo xtask demo`: the five-minute tour. ustack takes 192.0.2.2 on TAP ustack0 inside the
//! namespace ustack-demo, the kernel (192.0.2.1) pings it, and we show what each side saw.

use std::time::Duration;

use testbed::{counters_block, parse_ping_summary, Child, Counters, Netns};

use crate::deps::ensure_packages;
use crate::util::{self, check_interrupt, run_tee, step, Result};

const NS: &str = "ustack-demo";
const TAP: &str = "ustack0";
const KERNEL_CIDR: &str = "192.0.2.1/24";
const USTACK_CIDR: &str = "192.0.2.2/24";
const USTACK_IP: &str = "192.0.2.2";
/// ustack's default MAC: 02:00 + the four address octets.
const USTACK_MAC: &str = "02:00:c0:00:02:02";

pub fn run() -> Result {
    util::require_root()?;
    ensure_packages(&["iproute2", "iputils-ping"])?;
    step("building ustack");
    let bin = util::build_ustack(false)?;

    step(&format!(
        "creating namespace {NS} with TAP {TAP} (kernel side {KERNEL_CIDR})"
    ));
    // Declared before the host so it is dropped after it: the host gets its SIGTERM first, then
    // the namespace goes with anything still inside.
    let ns = Netns::create_named(NS).map_err(|e| e.to_string())?;
    ns.add_tap(TAP, KERNEL_CIDR).map_err(|e| e.to_string())?;

    step(&format!(
        "starting ustack host --tap {TAP} --addr {USTACK_CIDR}"
    ));
    let mut cmd = ns.cmd(&bin);
    cmd.args(["host", "--tap", TAP, "--addr", USTACK_CIDR]);
    let mut host = Child::spawn(cmd).map_err(|e| e.to_string())?;
    wait_attached(&ns, &mut host)?;
    for line in host.stderr_so_far().lines() {
        println!("    {line}");
    }

    step(&format!("the kernel pings ustack: ping -c 5 {USTACK_IP}"));
    let mut ping = ns.cmd("ping");
    ping.args(["-c", "5", USTACK_IP]);
    let (_, ping_out) = run_tee(ping)?;
    check_interrupt()?;
    let received = parse_ping_summary(&ping_out).map_or(0, |s| s.received);

    step(&format!("the kernel's neighbour table: ip -n {NS} neigh"));
    let neigh = ns.ip(&["neigh"]).map_err(|e| e.to_string())?;
    print_indented(if neigh.trim().is_empty() {
        "(empty)"
    } else {
        &neigh
    });

    step("stopping ustack (SIGTERM): its counters");
    let out = host.stop();
    print_indented(&out.stdout);
    if !out.stderr.trim().is_empty() {
        println!("    stderr:");
        print_indented(&out.stderr);
    }
    let counters = counters_block(&out.stdout).unwrap_or_default();

    explain(&counters, received, neigh.contains(USTACK_MAC));

    check_interrupt()?;
    step(&format!("removing namespace {NS} (and the TAP in it)"));
    drop(ns);

    if received == 0 {
        return Err("the ping got no replies from ustack".to_string());
    }
    if !out.success() {
        return Err(format!("ustack host did not exit cleanly ({})", out.status));
    }
    println!("\ndemo: ok");
    Ok(())
}

/// Ready means ustack has the TAP open: the kernel then sees carrier on it (NO-CARRIER goes away).
/// We do not probe with a ping as the tests do, because the demo's own ping should be the one
/// that triggers ARP resolution and shows up in the counters.
fn wait_attached(ns: &Netns, host: &mut Child) -> Result {
    let mut exited = None;
    let attached = testbed::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        if util::interrupted() {
            return true;
        }
        if let Ok(Some(status)) = host.try_wait() {
            exited = Some(status);
            return true;
        }
        ns.ip(&["link", "show", TAP])
            .is_ok_and(|l| l.contains("LOWER_UP") && !l.contains("NO-CARRIER"))
    });
    check_interrupt()?;
    if let Some(status) = exited {
        return Err(format!(
            "ustack host exited at startup ({status}):\n{}{}",
            host.stdout_so_far(),
            host.stderr_so_far()
        ));
    }
    if !attached {
        return Err(format!(
            "ustack host did not open {TAP} within 10 s; its stderr so far:\n{}",
            host.stderr_so_far()
        ));
    }
    // A short grace for its event loop to come up after opening the device; if it is late the
    // kernel's ARP retransmits (1 s apart) cover for it anyway.
    util::sleep(Duration::from_millis(200));
    check_interrupt()
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// The story behind the numbers, with the numbers ustack itself reported.
fn explain(c: &Counters, received: u64, neigh_ok: bool) {
    let n = |section: &str, name: &str| {
        c.get(section)
            .and_then(|s| s.get(name))
            .map_or_else(|| "?".to_string(), u64::to_string)
    };
    step("what happened");
    println!(
        " 1. ARP. The kernel had never heard of {USTACK_IP}, so before its first echo request it
    broadcast an ARP request on {TAP}. ustack read the frame from the TAP, and arp_rcv →
    arp_process saw a request for its own address: it learned the kernel's MAC on the way
    (as Linux does) and answered with {USTACK_MAC}. That learned entry starts out STALE,
    unconfirmed; once used for the replies, Linux's neighbour state machine (STALE → DELAY
    → PROBE) confirms it with a unicast ARP request of its own a few seconds later.
    ustack: Arp InRequests={} OutReplies={} OutRequests={}; kernel neighbour entry with that
    MAC: {}.
 2. Echo. Each ICMP echo request went up ustack's receive path as in Linux:
    netif_receive_skb → ip_rcv (header checks: version, IHL, checksum, length) → the
    PRE_ROUTING hook → ip_route_input (destination is local) → ip_local_deliver (LOCAL_IN
    hook) → icmp_rcv (ICMP checksum) → icmp_echo → icmp_reply, which swaps the addresses
    and sends the echo reply back out through ip_output and the ARP entry it already has.
    ustack: Ip InReceives={} InDelivers={} OutRequests={}; Icmp InEchos={} OutEchoReps={}.
 3. The wire. Every frame crossed the TAP as one read or write on its file descriptor, driven
    by io_uring: Dev RxPackets={} TxPackets={}; Io RxPackets={} TxPackets={} TxBatches={}.
 4. The kernel got {received} echo replies of 5.",
        n("Arp", "InRequests"),
        n("Arp", "OutReplies"),
        n("Arp", "OutRequests"),
        if neigh_ok { "yes" } else { "NO" },
        n("Ip", "InReceives"),
        n("Ip", "InDelivers"),
        n("Ip", "OutRequests"),
        n("Icmp", "InEchos"),
        n("Icmp", "OutEchoReps"),
        n("Dev", "RxPackets"),
        n("Dev", "TxPackets"),
        n("Io", "RxPackets"),
        n("Io", "TxPackets"),
        n("Io", "TxBatches"),
    );
}
