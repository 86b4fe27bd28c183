//! `cargo xtask bench`: ustack against the Linux kernel, and over TCP against smoltcp too,
//! measured the same way in one run.
//!
//! Three targets at the same addresses: ustack answering on a TAP (the kernel, 192.0.2.1, pings
//! ustack at 192.0.2.2), the kernel answering on a veth pair between two namespaces (the
//! kernel at 192.0.2.1 pings another kernel at 192.0.2.2), and smoltcp answering on a TAP like
//! ustack (bench/smoltcp-peer, TCP only). The client is the kernel in every case, so the
//! difference is the responder and its link. Each probe yields rows; the table lists every row
//! with one column per target and the ratios of ustack to the others.
//!
//! UDP: the client is xtask's own closed loop (`udp_echo`), `UDP_WINDOW` datagrams outstanding,
//! against ustack host's echo service on the TAP and, on the veth, against an echo loop on a
//! kernel UDP socket in the server namespace. Both responders are a userspace loop over a UDP
//! socket; what differs is the stack underneath and the link.
//!
//! TCP (`tcp_bench`): bulk throughput each way (a kernel client writing to discard, reading
//! from chargen), 1-byte request/response latency over one echo connection, and sequential
//! connections per second to echo. ustack host's services answer on the TAP; on the veth,
//! `tcp_bench::KernelServers` in the server namespace; smoltcp-peer, started afresh for each
//! probe with the one service it needs, on a TAP of its own namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testbed::{counters_block, parse_ping_summary, parse_ping_times, percentile, Child, Netns};

use crate::deps::ensure_packages;
use crate::router_bench;
use crate::tcp_bench::{self, KernelServers, TcpProbe};
use crate::udp_echo::{self, EchoServer, ECHO_PORT};
use crate::util::{self, check_interrupt, step, Result};

const CLIENT_CIDR: &str = "192.0.2.1/24";
const SERVER_CIDR: &str = "192.0.2.2/24";
const SERVER_IP: &str = "192.0.2.2";
const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Flood ping: enough echoes for a stable rate, few enough to finish in seconds.
const FLOOD_COUNT: &str = "20000";
/// Paced ping for the latency distribution: 2000 samples, one every 2 ms (4 s).
const RTT_COUNT: &str = "2000";
const RTT_INTERVAL: &str = "0.002";
/// Upper bound on any single ping run (ping -w), so a stalled responder cannot hang the bench.
const PING_DEADLINE_S: &str = "30";

/// Datagrams outstanding in the UDP echo loop: enough to keep both sides busy (a window of
/// one would measure the round-trip latency again), few enough to stay far below every
/// queue on the way (ustack's socket buffer holds about 100 of them), so nothing is dropped
/// and the rate is the responder's turnaround.
const UDP_WINDOW: usize = 32;
/// Settles ARP and the caches before counting.
const UDP_WARMUP: Duration = Duration::from_millis(300);
/// Three one-second intervals: the row shows the median, and a note their spread when it is
/// wide (ustack's rate depends on where the scheduler puts its threads, see `udp_echo_rate`).
const UDP_INTERVALS: (usize, Duration) = (3, Duration::from_secs(1));
/// A small datagram, and 1472 B, the largest payload one 1500-byte frame carries unfragmented.
const UDP_SIZES: [(usize, &str); 2] = [(64, UDP_64_ROW), (1472, UDP_1472_ROW)];
/// The busy-polling window of the second ustack column, in µs (`--busy-poll`).
const BUSY_POLL_US: &str = "200";
const UDP_64_ROW: &str = "UDP echo 64 B (dgram/s)";
const UDP_1472_ROW: &str = "UDP echo 1472 B (dgram/s)";

/// One measured quantity of the table.
pub struct Sample {
    pub row: &'static str,
    pub value: f64,
}

/// Where a probe runs: its ping runs in `client`, against `server_ip`.
struct Target<'a> {
    client: &'a Netns,
    server_ip: &'static str,
}

/// A probe's output: its samples, and remarks worth printing under the table (loss, say).
#[derive(Default)]
pub struct Measured {
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
    /// CPUs the responder used per row, for probes that measure it themselves (the
    /// router rows; the host probes are metered by `run_probes` / `run_tcp_probe`).
    pub cpu: Vec<(&'static str, f64)>,
}

type Probe = fn(&Target<'_>) -> Result<Measured>;

/// Every probe, in table order. Each must work against any responder at `server_ip`.
const PROBES: &[(&str, Probe)] = &[
    ("icmp echo flood", echo_rate),
    ("icmp echo rtt", echo_rtt),
    ("udp echo 64 B", udp_echo_64),
    ("udp echo 1472 B", udp_echo_1472),
];

/// The rows, in table order; a probe's samples land in the row of the same name.
const ROWS: &[&str] = &[
    "ICMP echo rate (pkt/s)",
    "ICMP RTT p50 (µs)",
    "ICMP RTT p99 (µs)",
    UDP_64_ROW,
    UDP_1472_ROW,
    tcp_bench::RX_ROW,
    tcp_bench::TX_ROW,
    tcp_bench::RR_P50_ROW,
    tcp_bench::RR_P99_ROW,
    tcp_bench::CPS_ROW,
    router_bench::TCP1_ROW,
    router_bench::TCP4_ROW,
    router_bench::UDP_ROW,
    router_bench::LAT_P50_ROW,
    router_bench::LAT_P99_ROW,
];

/// The TAP name smoltcp-peer attaches to, as ustack's.
const TAP: &str = "ustack0";
/// ustack's counters worth seeing next to its TCP numbers: retransmissions and timeouts say
/// whether a slow transfer was lossy, the drops where.
const USTACK_COUNTERS: &[(&str, &str)] = &[
    ("Tcp", "PassiveOpens"),
    ("Tcp", "EstabResets"),
    ("Tcp", "CurrEstab"),
    ("Tcp", "InSegs"),
    ("Tcp", "OutSegs"),
    ("Tcp", "RetransSegs"),
    ("Tcp", "InErrs"),
    ("Tcp", "OutRsts"),
    ("TcpExt", "TCPTimeouts"),
    ("TcpExt", "TCPSackRecovery"),
    ("TcpExt", "TCPRenoRecovery"),
    ("TcpExt", "TCPRcvQDrop"),
    ("TcpExt", "ListenOverflows"),
    ("Dev", "RxDropped"),
    ("Dev", "TxDropped"),
    ("Dev", "TxQueueStopped"),
];

/// What one target gave: its samples, and the errors of the probes (or setup) that failed.
#[derive(Default)]
struct Column {
    samples: Vec<Sample>,
    errors: Vec<String>,
    notes: Vec<String>,
    /// CPUs the responder process kept busy (user + system time over wall time) while
    /// the probe behind a row ran; absent for the kernel, which has no such process.
    cpu: Vec<(&'static str, f64)>,
}

impl Column {
    fn get(&self, row: &str) -> Option<f64> {
        self.samples.iter().find(|s| s.row == row).map(|s| s.value)
    }

    fn cpu(&self, row: &str) -> Option<f64> {
        self.cpu.iter().find(|c| c.0 == row).map(|c| c.1)
    }

    /// Take in a probe's samples, with the CPU its responder used meanwhile.
    fn add(&mut self, samples: Vec<Sample>, cpu: Option<f64>) {
        if let Some(cpu) = cpu {
            self.cpu.extend(samples.iter().map(|s| (s.row, cpu)));
        }
        self.samples.extend(samples);
    }
}

/// Measures the CPUs a process uses between `start` and `stop`.
pub struct CpuMeter {
    pid: Option<u32>,
    cpu: Option<f64>,
    started: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            cpu: pid.and_then(cpu_seconds),
            started: Instant::now(),
        }
    }

    /// CPUs used on average since `start`.
    pub fn stop(&self) -> Option<f64> {
        let (before, after) = (self.cpu?, self.pid.and_then(cpu_seconds)?);
        let wall = self.started.elapsed().as_secs_f64();
        (wall > 0.0).then(|| (after - before) / wall)
    }
}

/// `only`: `Some("host")` or `Some("router")` measures just those rows.
pub fn run(only: Option<&str>) -> Result {
    util::require_root()?;
    ensure_packages(&["iproute2", "iputils-ping"])?;
    step("building ustack (release)");
    let bin = util::build_ustack(true)?;
    let hosts = only != Some("router");
    let routers = only != Some("host");
    let start = Instant::now();
    let (mut ustack, mut ustack_bp, mut kernel, mut smoltcp) = (
        Column::default(),
        Column::default(),
        Column::default(),
        Column::default(),
    );
    if hosts {
        step("building smoltcp-peer (release)");
        let peer = build_smoltcp_peer()?;
        println!(
            "xtask: TCP bulk rows: median of {} transfers of {} MB each",
            tcp_bench::BULK_RUNS,
            tcp_bench::BULK_BYTES / 1_000_000
        );
        step("target 1/4: ustack on TAP ustack0");
        ustack = measure_ustack(&bin, &[]);
        check_interrupt()?;
        step(&format!(
            "target 2/4: ustack on TAP ustack0, --busy-poll {BUSY_POLL_US}"
        ));
        ustack_bp = measure_ustack(&bin, &["--busy-poll", BUSY_POLL_US]);
        check_interrupt()?;
        step("target 3/4: Linux kernel on a veth pair");
        kernel = measure_kernel();
        check_interrupt()?;
        step("target 4/4: smoltcp on TAP ustack0 (TCP only)");
        smoltcp = measure_smoltcp(&peer);
        check_interrupt()?;
    }
    if routers {
        step("router rows: ustack router, then a Linux router, between kernel hosts A and B");
        std::env::set_var("USTACK_BIN", &bin);
    }
    for (kind, col) in [
        (testbed::RouterKind::Ustack, &mut ustack),
        (testbed::RouterKind::Linux, &mut kernel),
    ]
    .into_iter()
    .filter(|_| routers)
    {
        match router_bench::measure(kind) {
            Ok(m) => {
                col.samples.extend(m.samples);
                col.cpu.extend(m.cpu);
                col.notes
                    .extend(m.notes.into_iter().map(|n| format!("{kind}: {n}")));
            }
            Err(e) => col.errors.push(format!("{kind}: {e}")),
        }
        check_interrupt()?;
    }

    step(&format!(
        "results ({:.0} s of measurement)",
        start.elapsed().as_secs_f64()
    ));
    print_table(&ustack, &ustack_bp, &kernel, &smoltcp);
    println!(
        "cpu: CPUs the responder process used while the row was measured (user + system \
         over wall time; the kernel's own work has no process to charge). \
         bp: ustack with --busy-poll {BUSY_POLL_US} (µs)."
    );
    println!(
        "router rows: the ustack column is ustack router, the kernel column a Linux router \
         (ip_forward=1, veths) on the same topology"
    );
    if hosts {
        print_targets("ustack", &ustack, &kernel, &smoltcp);
        print_targets("ustack bp", &ustack_bp, &kernel, &smoltcp);
    }
    print_router_target(&ustack, &kernel);
    let mut failed = false;
    for (name, col) in [
        ("ustack", &ustack),
        ("ustack bp", &ustack_bp),
        ("kernel veth", &kernel),
        ("smoltcp", &smoltcp),
    ] {
        for note in &col.notes {
            println!("note ({name}): {note}");
        }
        for err in &col.errors {
            println!("error ({name}): {err}");
            failed = true;
        }
    }
    if failed {
        Err("some measurements failed (see above)".to_string())
    } else {
        Ok(())
    }
}

/// `cargo build --release` of bench/smoltcp-peer, a workspace of its own (so the main
/// workspace never compiles smoltcp), into its own target directory.
fn build_smoltcp_peer() -> Result<PathBuf> {
    let dir = util::workspace_root().join("bench").join("smoltcp-peer");
    let target = dir.join("target");
    let mut cmd = util::cargo();
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    let status = util::run_inherited(cmd)?;
    check_interrupt()?;
    if !status.success() {
        return Err(format!("building smoltcp-peer failed ({status})"));
    }
    let bin = target.join("release").join("smoltcp-peer");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built smoltcp-peer but {} is missing",
            bin.display()
        ))
    }
}

/// `ustack host` with `extra` arguments (busy polling, say) as the responder.
fn measure_ustack(bin: &Path, extra: &[&str]) -> Column {
    let mut col = Column::default();
    let setup = || -> Result<(Netns, Child)> {
        let ns = Netns::new("bench-ustack").map_err(|e| e.to_string())?;
        ns.add_tap(TAP, CLIENT_CIDR).map_err(|e| e.to_string())?;
        tcp_bench::prepare_client(&ns).map_err(|e| e.to_string())?;
        let mut cmd = ns.cmd(bin);
        cmd.args(["host", "--tap", TAP, "--addr", SERVER_CIDR]);
        cmd.args(extra);
        let host = Child::spawn(cmd).map_err(|e| e.to_string())?;
        Ok((ns, host))
    };
    let (ns, mut host) = match setup() {
        Ok(x) => x,
        Err(e) => {
            col.errors.push(format!("setup: {e}"));
            return col;
        }
    };
    let target = Target {
        client: &ns,
        server_ip: SERVER_IP,
    };
    if let Err(e) = wait_answering(&target, Some(&mut host)) {
        col.errors.push(e);
        return col;
    }
    run_probes(&target, Some(host.pid()), &mut col);
    for probe in tcp_bench::PROBES {
        if util::interrupted() {
            break;
        }
        if let Ok(Some(status)) = host.try_wait() {
            col.errors.push(format!(
                "ustack host exited ({status}) before {}; stderr:\n{}",
                probe.name,
                host.stderr_so_far()
            ));
            break;
        }
        run_tcp_probe(probe, &ns, Some(host.pid()), &mut col);
    }
    // Stop it ourselves to say how it ended and to read its counters; the guards would also
    // clean up.
    let out = host.stop();
    if !out.success() {
        col.errors
            .push(format!("ustack host did not exit cleanly:\n{out}"));
    }
    match counters_block(&out.stdout) {
        Some(counters) => {
            let shown: Vec<String> = USTACK_COUNTERS
                .iter()
                .filter_map(|&(section, name)| {
                    let v = counters.get(section)?.get(name)?;
                    Some(format!("{section} {name} {v}"))
                })
                .collect();
            col.notes
                .push(format!("counters at exit: {}", shown.join(", ")));
        }
        None => col
            .notes
            .push("ustack host printed no counters at exit".to_string()),
    }
    col
}

fn measure_kernel() -> Column {
    let mut col = Column::default();
    let setup = || -> Result<(Netns, Netns)> {
        let client = Netns::new("bench-kcli").map_err(|e| e.to_string())?;
        let server = Netns::new("bench-ksrv").map_err(|e| e.to_string())?;
        testbed::veth_pair(&client, "veth0", CLIENT_CIDR, &server, "veth1", SERVER_CIDR)
            .map_err(|e| e.to_string())?;
        tcp_bench::prepare_client(&client).map_err(|e| e.to_string())?;
        Ok((client, server))
    };
    let (client, server) = match setup() {
        Ok(x) => x,
        Err(e) => {
            col.errors.push(format!("setup: {e}"));
            return col;
        }
    };
    // The kernel's counterpart of ustack host's echo service, until the probes are done.
    let _echo = match EchoServer::start(&server, echo_addr()) {
        Ok(echo) => echo,
        Err(e) => {
            col.errors.push(format!("setup: UDP echo server: {e}"));
            return col;
        }
    };
    // And of its TCP discard, chargen and echo.
    let _tcp = match KernelServers::start(&server, SERVER_ADDR) {
        Ok(servers) => servers,
        Err(e) => {
            col.errors.push(format!("setup: TCP servers: {e}"));
            return col;
        }
    };
    let target = Target {
        client: &client,
        server_ip: SERVER_IP,
    };
    if let Err(e) = wait_answering(&target, None) {
        col.errors.push(e);
        return col;
    }
    run_probes(&target, None, &mut col);
    for probe in tcp_bench::PROBES {
        if util::interrupted() {
            break;
        }
        // Its servers are threads of xtask and the kernel itself: no process to account.
        run_tcp_probe(probe, &client, None, &mut col);
    }
    col
}

/// smoltcp-peer serves one service per process, so each TCP probe starts one with the service
/// it needs, on the same TAP and addresses as ustack, and stops it afterwards. Its MAC stays
/// the same across restarts, so the kernel's ARP entry stays right. `SMOLTCP_PEER_ARGS` adds
/// arguments to every start, to check that its defaults are its best (see its --help).
fn measure_smoltcp(peer: &Path) -> Column {
    let mut col = Column::default();
    let setup = || -> Result<Netns> {
        let ns = Netns::new("bench-smoltcp").map_err(|e| e.to_string())?;
        ns.add_tap(TAP, CLIENT_CIDR).map_err(|e| e.to_string())?;
        tcp_bench::prepare_client(&ns).map_err(|e| e.to_string())?;
        Ok(ns)
    };
    let ns = match setup() {
        Ok(ns) => ns,
        Err(e) => {
            col.errors.push(format!("setup: {e}"));
            return col;
        }
    };
    let target = Target {
        client: &ns,
        server_ip: SERVER_IP,
    };
    // To try smoltcp with other settings than its defaults (`--buffer`, `--cc`, ...).
    let extra: Vec<String> = std::env::var("SMOLTCP_PEER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !extra.is_empty() {
        col.notes.push(format!(
            "smoltcp-peer run with SMOLTCP_PEER_ARGS={}",
            extra.join(" ")
        ));
    }
    for probe in tcp_bench::PROBES {
        if util::interrupted() {
            break;
        }
        let port = probe.service.port().to_string();
        let mut cmd = ns.cmd(peer);
        cmd.args(["--tap", TAP, "--addr", SERVER_CIDR])
            .args(["--mode", probe.service.mode(), "--port", &port])
            .args(&extra);
        let mut child = match Child::spawn(cmd) {
            Ok(child) => child,
            Err(e) => {
                col.errors.push(format!("{}: {e}", probe.name));
                continue;
            }
        };
        if let Err(e) = wait_answering(&target, Some(&mut child)) {
            col.errors.push(format!("{}: {e}", probe.name));
            continue;
        }
        run_tcp_probe(probe, &ns, Some(child.pid()), &mut col);
        // A peer that died mid-probe (a panic) is an error of its own; SIGTERM is how it
        // normally ends.
        if let Ok(Some(status)) = child.try_wait() {
            col.errors.push(format!(
                "{}: smoltcp-peer exited ({status}); stderr:\n{}",
                probe.name,
                child.stderr_so_far()
            ));
        }
        drop(child);
    }
    col
}

/// Runs one TCP probe from `client`. With the server's pid (a userspace stack), records how
/// many CPUs it kept busy meanwhile: on this 2-CPU VM a stack that needs two cores for a rate
/// competes with the kernel client for them, one that needs one does not.
fn run_tcp_probe(probe: &TcpProbe, client: &Netns, server_pid: Option<u32>, col: &mut Column) {
    println!("    {} ...", probe.name);
    util::flush();
    let meter = CpuMeter::start(server_pid);
    match (probe.run)(client, SERVER_ADDR) {
        Ok(m) => {
            col.add(m.samples, meter.stop());
            col.notes
                .extend(m.notes.into_iter().map(|n| format!("{}: {n}", probe.name)));
        }
        Err(e) => col.errors.push(format!("{}: {e}", probe.name)),
    }
}

/// User plus system CPU time of a process, all its threads, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so count fields after the last ')'.
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

fn run_probes(target: &Target<'_>, server_pid: Option<u32>, col: &mut Column) {
    for (name, probe) in PROBES {
        if util::interrupted() {
            return;
        }
        println!("    {name} ...");
        util::flush();
        let meter = CpuMeter::start(server_pid);
        match probe(target) {
            Ok(m) => {
                col.add(m.samples, meter.stop());
                col.notes
                    .extend(m.notes.into_iter().map(|n| format!("{name}: {n}")));
            }
            Err(e) => col.errors.push(format!("{name}: {e}")),
        }
    }
}

/// Ready when one ping gets an answer; that also settles ARP before anything is timed.
fn wait_answering(target: &Target<'_>, mut host: Option<&mut Child>) -> Result {
    let mut exited = None;
    let ok = testbed::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        if util::interrupted() {
            return true;
        }
        if let Some(Ok(Some(status))) = host.as_mut().map(|h| h.try_wait()) {
            exited = Some(status);
            return true;
        }
        ping(target, &["-c", "1", "-W", "1"]).is_ok_and(|(ok, _)| ok)
    });
    check_interrupt()?;
    let diag = || {
        host.as_ref()
            .map(|h| format!("; ustack stderr:\n{}", h.stderr_so_far()))
            .unwrap_or_default()
    };
    if let Some(status) = exited {
        return Err(format!(
            "the responder exited at startup ({status}){}",
            diag()
        ));
    }
    if !ok {
        return Err(format!(
            "{} did not answer a ping within 10 s{}",
            target.server_ip,
            diag()
        ));
    }
    Ok(())
}

/// Runs the kernel's ping in the client namespace with `args`; (success, stdout).
fn ping(target: &Target<'_>, args: &[&str]) -> Result<(bool, String)> {
    let mut cmd = target.client.cmd("ping");
    cmd.args(args).arg(target.server_ip);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", util::show(&cmd)))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Flood ping: a new request as soon as the previous reply arrives (or every 10 ms without one),
/// so the rate is one echo round trip after another, the responder's full turnaround included.
fn echo_rate(target: &Target<'_>) -> Result<Measured> {
    let started = Instant::now();
    let (_, out) = ping(
        target,
        &["-f", "-q", "-c", FLOOD_COUNT, "-w", PING_DEADLINE_S],
    )?;
    let wall = started.elapsed();
    let s = parse_ping_summary(&out).ok_or_else(|| format!("no ping summary in:\n{out}"))?;
    if s.received == 0 {
        return Err(format!("no replies:\n{out}"));
    }
    // ping's own "time" excludes process start-up; fall back to the wall clock.
    let secs = s
        .time_ms
        .filter(|&ms| ms > 0)
        .map_or(wall.as_secs_f64(), |ms| ms as f64 / 1000.0);
    let mut m = Measured::default();
    m.samples.push(Sample {
        row: ROWS[0],
        value: s.received as f64 / secs,
    });
    if s.received < s.transmitted {
        // Flood ping waits 10 ms for each lost reply, so loss already lowers the rate; say why.
        m.notes.push(format!(
            "{} of {} echoes lost ({}%)",
            s.transmitted - s.received,
            s.transmitted,
            s.loss_percent
        ));
    }
    Ok(m)
}

/// Paced ping, every reply's `time=` collected: percentiles computed here (nearest rank), since
/// ping itself only reports min/avg/max/mdev.
fn echo_rtt(target: &Target<'_>) -> Result<Measured> {
    let (_, out) = ping(
        target,
        &[
            "-n",
            "-i",
            RTT_INTERVAL,
            "-c",
            RTT_COUNT,
            "-w",
            PING_DEADLINE_S,
        ],
    )?;
    let times = parse_ping_times(&out);
    if times.is_empty() {
        return Err(format!(
            "no replies:\n{}",
            out.lines().rev().take(5).collect::<Vec<_>>().join("\n")
        ));
    }
    let us = |p: f64| percentile(&times, p).map(|ms| ms * 1000.0);
    let mut m = Measured {
        samples: [(ROWS[1], us(50.0)), (ROWS[2], us(99.0))]
            .into_iter()
            .filter_map(|(row, v)| v.map(|value| Sample { row, value }))
            .collect(),
        ..Measured::default()
    };
    let want: usize = RTT_COUNT.parse().unwrap_or(0);
    if times.len() < want {
        m.notes
            .push(format!("{} of {want} echoes answered", times.len()));
    }
    Ok(m)
}

fn echo_addr() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_IP.parse().expect("constant"), ECHO_PORT)
}

fn udp_echo_64(target: &Target<'_>) -> Result<Measured> {
    udp_echo_rate(target, UDP_SIZES[0])
}

fn udp_echo_1472(target: &Target<'_>) -> Result<Measured> {
    udp_echo_rate(target, UDP_SIZES[1])
}

/// Datagrams per second through the responder's echo, `UDP_WINDOW` outstanding.
fn udp_echo_rate(target: &Target<'_>, (size, row): (usize, &'static str)) -> Result<Measured> {
    let server = SocketAddrV4::new(
        target.server_ip.parse().map_err(|e| format!("{e}"))?,
        ECHO_PORT,
    );
    let sock = udp_echo::client_socket(target.client, SocketAddrV4::new(CLIENT_IP, 0), server)
        .map_err(|e| format!("client socket: {e}"))?;
    let rate = udp_echo::measure(
        &sock,
        size,
        UDP_WINDOW,
        UDP_WARMUP,
        UDP_INTERVALS,
        util::interrupted,
    )
    .map_err(|e| format!("{e}"))?;
    check_interrupt()?;
    if rate.replies == 0 {
        return Err(format!("no echoes from {server}"));
    }
    let mut m = Measured::default();
    m.samples.push(Sample {
        row,
        value: rate.median(),
    });
    let (lo, hi) = rate
        .per_interval
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    // ustack's rate depends on where the scheduler puts its threads: on a 2-CPU VM, pinned to
    // one CPU it echoed about 100k dgram/s, unpinned 11k to 75k, changing within a run. Show
    // the spread rather than hide it in one number.
    if hi > 1.5 * lo {
        let all: Vec<String> = rate
            .per_interval
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        m.notes.push(format!(
            "rates of the {} intervals differ: {} dgram/s (median shown)",
            all.len(),
            all.join(", ")
        ));
    }
    if rate.refills > 0 {
        // Each refill cost the loop LOSS_TIMEOUT of idle time, so loss lowers the rate; say so.
        m.notes.push(format!(
            "the window of {UDP_WINDOW} was lost and refilled {} times",
            rate.refills
        ));
    }
    Ok(m)
}

fn print_table(ustack: &Column, ustack_bp: &Column, kernel: &Column, smoltcp: &Column) {
    // Kernel RTTs are a few µs and throughputs a few Gb/s, so small values keep a decimal,
    // and a stalled transfer's hundredths of a Gb/s keep two.
    let fmt = |v: Option<f64>| match v {
        Some(v) if v < 1.0 => format!("{v:.2}"),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "n/a".to_string(),
    };
    let cpu = |v: Option<f64>| v.map_or("-".to_string(), |c| format!("{c:.2}"));
    let ratio = |u: Option<f64>, other: Option<f64>| match (u, other) {
        (Some(u), Some(o)) if o > 0.0 => format!("{:.2}", u / o),
        _ => "n/a".to_string(),
    };
    let width = ROWS.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let header = [
        "ustack", "cpu", "bp", "cpu", "kernel", "smoltcp", "cpu", "u/kern", "u/smol", "bp/kern",
        "bp/smol",
    ];
    print!("{:<width$}", "");
    for h in header {
        print!("  {h:>7}");
    }
    println!();
    for row in ROWS {
        let (u, b, k) = (ustack.get(row), ustack_bp.get(row), kernel.get(row));
        // smoltcp is only measured on the host TCP rows; elsewhere there is nothing to show.
        let host_tcp = tcp_bench::ROWS.contains(row);
        let sm = |v: String| if host_tcp { v } else { "-".to_string() };
        let s = smoltcp.get(row);
        let cells = [
            fmt(u),
            cpu(ustack.cpu(row)),
            fmt(b),
            cpu(ustack_bp.cpu(row)),
            fmt(k),
            sm(fmt(s)),
            sm(cpu(smoltcp.cpu(row))),
            ratio(u, k),
            sm(ratio(u, s)),
            ratio(b, k),
            sm(ratio(b, s)),
        ];
        // Width counts chars, not bytes, so "µ" pads right.
        print!("{row:<width$}");
        for c in cells {
            print!("  {c:>7}");
        }
        println!();
    }
}

/// The per-packet issue's targets, met or not, for one ustack column.
fn print_targets(name: &str, u: &Column, kernel: &Column, smoltcp: &Column) {
    // (row, reference, "at most" or "at least", factor)
    let checks: &[(&str, &Column, &str, bool, f64)] = &[
        (tcp_bench::RR_P50_ROW, smoltcp, "smoltcp", false, 1.0),
        (tcp_bench::RR_P99_ROW, smoltcp, "smoltcp", false, 1.5),
        (tcp_bench::CPS_ROW, smoltcp, "smoltcp", true, 1.0),
        (tcp_bench::CPS_ROW, kernel, "kernel", true, 0.8),
        (ROWS[1], kernel, "kernel", false, 3.0),
        (UDP_64_ROW, kernel, "kernel", true, 0.7),
        (UDP_1472_ROW, kernel, "kernel", true, 0.7),
        (tcp_bench::RX_ROW, smoltcp, "smoltcp", true, 2.0),
        (tcp_bench::RX_ROW, kernel, "kernel", true, 0.9),
        (tcp_bench::TX_ROW, smoltcp, "smoltcp", true, 2.0),
        (tcp_bench::TX_ROW, kernel, "kernel", true, 0.9),
    ];
    for &(row, reference, ref_name, at_least, factor) in checks {
        let line = match (u.get(row), reference.get(row)) {
            (Some(v), Some(r)) if r > 0.0 => {
                let q = v / r;
                let ok = if at_least { q >= factor } else { q <= factor };
                format!(
                    "{name}/{ref_name} = {q:.2}, target {} {factor}: {}",
                    if at_least { ">=" } else { "<=" },
                    if ok { "met" } else { "NOT met" }
                )
            }
            _ => "not measured on both".to_string(),
        };
        println!("target: {row}: {line}");
    }
}

/// The router issue's target: ustack router at least 0.5x the Linux router on every
/// throughput row.
fn print_router_target(ustack: &Column, linux: &Column) {
    for row in router_bench::THROUGHPUT_ROWS {
        let line = match (ustack.get(row), linux.get(row)) {
            (Some(u), Some(l)) if l > 0.0 => {
                let r = u / l;
                let verdict = if r >= router_bench::TARGET {
                    "met"
                } else {
                    "NOT met"
                };
                format!(
                    "ustack router/Linux router = {r:.2}, target >= {}: {verdict}",
                    router_bench::TARGET
                )
            }
            _ => "not measured on both".to_string(),
        };
        println!("target: {row}: {line}");
    }
}
