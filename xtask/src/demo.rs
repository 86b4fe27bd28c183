//! `cargo xtask demo`: the five-minute tour. ustack takes 192.0.2.2 on TAP ustack0 inside the
//! namespace ustack-demo, the kernel (192.0.2.1) pings it, and we show what each side saw.
//! Then the router: two kernel hosts in namespaces of their own ping each other and fetch a
//! page over HTTP through `ustack router`, and the router's own trace tells the path of one
//! forwarded packet, stage by stage, under the kernel's names.

use std::time::Duration;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

use testbed::{
    counters_block, parse_ping_summary, Child, Counters, Netns, Routed, RouterKind, Side,
};

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
    ensure_packages(&["iproute2", "iputils-ping", "curl"])?;
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
    router(&bin)?;
    println!("\ndemo: ok");
    Ok(())
}

/// The page host B serves over HTTP.
const PAGE: &str = "hello from host B, through ustack router\n";

/// Part two: kernel host A (192.0.2.10) and kernel host B (198.51.100.10) with `ustack
/// router` between them.
fn router(bin: &std::path::Path) -> Result {
    step("part 2: ustack router between two kernel hosts");
    println!(
        "    host A 192.0.2.10/24 --- ra 192.0.2.1  [ustack router]  rb 198.51.100.1 --- host B 198.51.100.10/24"
    );
    // The router's trace names every stage a packet enters; the namespaces and TAPs are
    // made by testbed::Routed, which removes them again when dropped.
    std::env::set_var("USTACK_BIN", bin);
    std::env::set_var("USTACK_LOG", "stack_core=trace");
    let sides = [
        Side::new("ra", "192.0.2.1/24", "192.0.2.10/24"),
        Side::new("rb", "198.51.100.1/24", "198.51.100.10/24"),
    ];
    let mut bed =
        Routed::new(RouterKind::Ustack, "demo", &sides, &[]).map_err(|e| e.to_string())?;
    std::env::remove_var("USTACK_LOG");
    check_interrupt()?;

    step("host A pings host B through the router: ping -c 3 198.51.100.10");
    let ping = bed.run(0, "ping", &["-c", "3", "-i", "0.2", "198.51.100.10"]);
    print_indented(&ping.stdout);
    let replies = parse_ping_summary(&ping.stdout).map_or(0, |s| s.received);

    step("host B serves a page; host A fetches it: curl http://198.51.100.10:8080/");
    let server = serve_page(&bed.hosts[1])?;
    let curl = bed.run(
        0,
        "curl",
        &["-sS", "--max-time", "10", "http://198.51.100.10:8080/"],
    );
    print_indented(&curl.stdout);
    if !curl.stderr.trim().is_empty() {
        print_indented(&curl.stderr);
    }
    drop(server);
    check_interrupt()?;

    step(
        "one more echo request, followed through the router's trace (USTACK_LOG=stack_core=trace)",
    );
    let before = bed.router_output_so_far().len();
    let one = bed.run(0, "ping", &["-c", "1", "198.51.100.10"]);
    util::sleep(Duration::from_millis(100));
    let trace = bed.router_output_so_far();
    let path = forwarded_path(trace.get(before..).unwrap_or(""));
    if path.is_empty() {
        println!("    (no trace lines seen)");
    }
    for (i, stage) in path.iter().enumerate() {
        println!("    {:>2}. {stage}", i + 1);
    }
    println!(
        "    The request came in on ra and left on rb with its TTL one lower: netif_receive_skb
    took the frame off the TAP, ip_rcv checked the header, ip_route_input found no local
    address but a route to 198.51.100.0/24 on rb, so ip_forward (TTL 64 -> 63, checksum
    patched in place per RFC 1624) and the FORWARD hook passed it to ip_output and
    ip_finish_output2, whose neighbour entry for 198.51.100.10 on rb gave the MAC;
    dev_queue_xmit queued it on rb's pfifo_fast and TX ring, and io_uring wrote it to
    the TAP. The reply took the mirror path."
    );

    step("stopping the router (SIGTERM): its counters");
    let out = bed.stop().ok_or("the router was not running")?;
    for line in out.stdout.lines() {
        println!("    {line}");
    }
    let c = counters_block(&out.stdout).unwrap_or_default();
    let forwarded = c
        .get("Ip")
        .and_then(|s| s.get("ForwDatagrams"))
        .copied()
        .unwrap_or(0);
    println!("    The router forwarded {forwarded} datagrams (Ip ForwDatagrams).");
    step("removing the router's and the hosts' namespaces");
    drop(bed);
    if replies == 0 || one.code() != Some(0) {
        return Err("host A's pings got no replies through ustack router".into());
    }
    if curl.stdout != PAGE {
        return Err(format!("curl through ustack router got {:?}", curl.stdout));
    }
    Ok(())
}

/// The stages one forwarded echo request went through: the span lines of the router's
/// trace from its arrival on ra (`netif_receive_skb{dev=2 ...}`) to its queueing on rb
/// (`dev_queue_xmit{dev=3 ...}`), each `name{fields}`.
fn forwarded_path(trace: &str) -> Vec<String> {
    let spans = trace.lines().filter_map(|l| {
        let l = l.strip_suffix(" new")?;
        let start = l.find("TRACE ")? + "TRACE ".len();
        let span = l[start..].split(": ").next()?;
        Some(span.to_string())
    });
    let mut path = Vec::new();
    for span in spans {
        if path.is_empty() && !span.starts_with("netif_receive_skb{dev=2") {
            continue;
        }
        // The trace nests spans as parent:child; the last name is the stage entered.
        let stage = span.rsplit(':').next().unwrap_or(&span).to_string();
        let done = stage.starts_with("dev_queue_xmit{dev=3");
        path.push(stage);
        if done {
            break;
        }
    }
    path
}

/// A one-page HTTP/1.0 server on a kernel socket in `ns`, port 8080, until dropped.
fn serve_page(ns: &Netns) -> Result<PageServer> {
    let listener = ns
        .enter(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080)))
        .and_then(|r| r)
        .map_err(|e| format!("HTTP server in host B: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    Ok(PageServer {
        stop,
        thread: Some(thread),
    })
}

struct PageServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
