//! The control socket: `ustack host` and `ustack router` answer `ustack ctl` on a Unix
//! stream socket, printing what iproute2 and nstat print for a Linux box.
//!
//! | request | prints like |
//! | --- | --- |
//! | `addr` | `ip -br addr` |
//! | `link` | `ip -s link` |
//! | `route` | `ip route` (the main table) |
//! | `route add PREFIX [via GW] [dev NAME] [metric N]` | `ip route add` (proto static) |
//! | `route del PREFIX [via GW] [dev NAME] [metric N]` | `ip route del` |
//! | `neigh` | `ip neigh` |
//! | `neigh flush [dev NAME]` | `ip neigh flush` (every device when none is named) |
//! | `stats [-z]` | `nstat -a` (`-z`: zero counters too, as `nstat -az`) |
//!
//! Where the socket is: `--ctl PATH`, else `/run/ustack/host-TAP.ctl` or
//! `/run/ustack/router-TAP.ctl` (TAP: the first TAP), with `@NETNS` before `.ctl` when ustack
//! runs outside the initial network namespace (NETNS: its `ip netns` name, else
//! `net<inode>`). So `ip netns exec NS ustack ctl route` finds the ustack of that namespace,
//! and tests that run one `ustack0` per namespace side by side do not collide. `/run/ustack`
//! is made mode 0700 and the socket 0600. A socket file that nobody answers on (ustack was
//! killed) is taken over; one that a running process answers on is refused. The file is
//! removed when ustack exits, also on SIGINT/SIGTERM.
//!
//! The protocol is one request line (at most [`MAX_REQUEST`] bytes, the words of the
//! command line), then the answer and end of stream: `ok` and the text to print, or one line
//! `error CODE MESSAGE` (the message for stderr and the exit code `ustack ctl` ends with:
//! 1 for a malformed request, as ip's parse errors; 2 for a change the stack refused, as
//! ip's RTNETLINK errors). Each client has [`REQUEST_TIMEOUT`] for the whole exchange and at
//! most [`MAX_CLIENTS`] are served at once (more are told so and closed), so a stuck client
//! holds up nobody.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use stack_async::{IoStatsSnapshot, StackHandle};
use stack_core::dev::DeviceKind;
use stack_core::ipv4::fib_frontend::{RouteError, RouteSpec};
use stack_core::ipv4::route::{prefix_mask, FibEntry, RouteProto, RouteType, Table};
use stack_core::neigh::NudState;
use stack_core::wire::MacAddr;
use stack_core::{DeviceId, IfAddr, Stack};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::cli::CtlArgs;

/// Where default control sockets live.
pub const RUN_DIR: &str = "/run/ustack";
/// Clients served at once; more are answered "busy" and closed.
pub const MAX_CLIENTS: usize = 8;
/// The whole exchange with one client: reading its request, running it, writing the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line.
pub const MAX_REQUEST: usize = 4096;
/// The longest answer `ustack ctl` accepts.
const MAX_ANSWER: u64 = 64 << 20;
/// How long `ustack ctl` waits for the whole answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a liveness probe of an existing socket waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `ustack ctl --help`.
pub const LONG_ABOUT: &str = "\
Ask a running `ustack host` or `ustack router` through its control socket, as iproute2 and \
nstat ask the kernel; prints what they print. Requests:

  addr                                             like ip -br addr
  link                                             like ip -s link
  route                                            like ip route
  route add PREFIX [via GW] [dev NAME] [metric N]  like ip route add (proto static)
  route del PREFIX [via GW] [dev NAME] [metric N]  like ip route del
  neigh                                            like ip neigh
  neigh flush [dev NAME]                           like ip neigh flush (every device if none)
  stats [-z]                                       like nstat -a (-z: zero counters too)
  help                                             this text

PREFIX is default, A.B.C.D/N or A.B.C.D. Errors are worded as ip words them; the exit code \
is 1 for a malformed request and 2 for a change the stack refused, as ip's. Without --ctl, \
the socket is the one ustack made under /run/ustack for this network namespace.";

// ---------------------------------------------------------------------------------------
// Requests

/// One request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Addr,
    Link,
    Route,
    RouteAdd(RouteReq),
    RouteDel(RouteReq),
    Neigh,
    NeighFlush { dev: Option<String> },
    Stats { zeros: bool },
    Help,
}

/// The arguments of `route add|del`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteReq {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub metric: Option<u32>,
}

/// A failed request: the line for stderr and the exit code of `ustack ctl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub msg: String,
}

impl Failure {
    /// A malformed request (ip exits 1 on its own parse errors).
    fn usage(msg: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            msg: msg.into(),
        }
    }

    /// A change the stack refused (ip exits 2 when the kernel says no).
    fn refused(msg: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            msg: msg.into(),
        }
    }
}

/// What the server answers: the text to print, or why not.
pub type Response = Result<String, Failure>;

fn unknown(what: &str, word: &str) -> Failure {
    Failure::usage(format!(
        "{what} \"{word}\" is unknown, try \"ustack ctl help\"."
    ))
}

impl Request {
    /// Parse a request line: the words of `ustack ctl ...`, separated by white space.
    pub fn parse(line: &str) -> Result<Request, Failure> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&object, rest)) = words.split_first() else {
            return Err(Failure::usage(
                "ustack: an empty request; try \"ustack ctl help\".",
            ));
        };
        let show = |rest: &[&str], what: Request| match rest {
            [] | ["show" | "list" | "ls"] => Ok(what),
            [w, ..] => Err(unknown("Command", w)),
        };
        match object {
            "addr" | "address" | "a" => show(rest, Request::Addr),
            "link" | "l" => show(rest, Request::Link),
            "route" | "ro" | "r" => match rest {
                ["add", args @ ..] => Ok(Request::RouteAdd(parse_route_args(args, true)?)),
                ["del" | "delete", args @ ..] => {
                    Ok(Request::RouteDel(parse_route_args(args, false)?))
                }
                _ => show(rest, Request::Route),
            },
            "neigh" | "neighbour" | "neighbor" | "n" => match rest {
                ["flush"] => Ok(Request::NeighFlush { dev: None }),
                ["flush", "dev", name] => Ok(Request::NeighFlush {
                    dev: Some((*name).to_owned()),
                }),
                ["flush", "dev"] => Err(incomplete()),
                ["flush", w, ..] => Err(garbage(w)),
                _ => show(rest, Request::Neigh),
            },
            "stats" | "nstat" => match rest {
                [] | ["-a"] => Ok(Request::Stats { zeros: false }),
                ["-z" | "--zeros" | "-az" | "-za"] => Ok(Request::Stats { zeros: true }),
                [w, ..] => Err(unknown("Option", w)),
            },
            "help" | "-h" | "--help" => Ok(Request::Help),
            w => Err(unknown("Object", w)),
        }
    }
}

fn incomplete() -> Failure {
    Failure::usage("Command line is not complete. Try option \"help\"")
}

fn garbage(word: &str) -> Failure {
    Failure::usage(format!(
        "Error: either \"to\" is duplicate, or \"{word}\" is a garbage."
    ))
}

/// `PREFIX [via GW] [dev NAME] [metric N]`, in any order, as `ip route` takes them.
fn parse_route_args(args: &[&str], add: bool) -> Result<RouteReq, Failure> {
    let mut prefix = None;
    let mut via = None;
    let mut dev = None;
    let mut metric = None;
    let mut it = args.iter();
    while let Some(&word) = it.next() {
        let mut value = || it.next().copied().ok_or_else(incomplete);
        match word {
            "via" if via.is_none() => {
                let v = value()?;
                via = Some(v.parse::<Ipv4Addr>().map_err(|_| {
                    Failure::usage(format!(
                        "Error: inet address is expected rather than \"{v}\"."
                    ))
                })?);
            }
            "dev" | "oif" if dev.is_none() => dev = Some(value()?.to_owned()),
            "metric" | "priority" | "preference" if metric.is_none() => {
                let v = value()?;
                metric = Some(v.parse::<u32>().map_err(|_| {
                    Failure::usage(format!(
                        "Error: argument \"{v}\" is wrong: \"metric\" value is invalid"
                    ))
                })?);
            }
            "to" if prefix.is_none() => prefix = Some(parse_dst(value()?)?),
            w if prefix.is_none() && !matches!(w, "via" | "dev" | "oif" | "metric") => {
                prefix = Some(parse_dst(w)?)
            }
            w => return Err(garbage(w)),
        }
    }
    let Some((prefix, prefix_len)) = prefix else {
        return Err(Failure::usage(
            "Error: a destination is needed: default, A.B.C.D/N or A.B.C.D.",
        ));
    };
    if add && via.is_none() && dev.is_none() {
        return Err(Failure::usage(
            "Error: a gateway (via GW) or a device (dev NAME) is needed.",
        ));
    }
    Ok(RouteReq {
        prefix,
        prefix_len,
        via,
        dev,
        metric,
    })
}

/// A route destination as ip takes it: `default` (`all`, `any`), `A.B.C.D/N`, `A.B.C.D`.
/// Host bits are left for the stack to refuse, as the kernel does.
fn parse_dst(s: &str) -> Result<(Ipv4Addr, u8), Failure> {
    if matches!(s, "default" | "all" | "any") {
        return Ok((Ipv4Addr::UNSPECIFIED, 0));
    }
    let bad = || {
        Failure::usage(format!(
            "Error: any valid prefix is expected rather than \"{s}\"."
        ))
    };
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (
            a,
            l.parse::<u8>().ok().filter(|l| *l <= 32).ok_or_else(bad)?,
        ),
        None => (s, 32),
    };
    Ok((a.parse().map_err(|_| bad())?, len))
}

// ---------------------------------------------------------------------------------------
// Running a request on the stack

/// Run `req` on the stack (on the stack thread). `io` is each TAP's device-loop counters,
/// for `link`.
pub fn execute(stack: &mut Stack, io: &[(DeviceId, IoStatsSnapshot)], req: &Request) -> Response {
    let find_dev = |stack: &Stack, name: &str| {
        stack
            .devices()
            .by_name(name)
            .map(|d| d.id)
            .ok_or_else(|| Failure::usage(format!("Cannot find device \"{name}\"")))
    };
    match req {
        Request::Addr => Ok(format_addr(&link_rows(stack, io))),
        Request::Link => Ok(format_link(&link_rows(stack, io))),
        Request::Route => Ok(format_routes(&stack.fib().routes(), |d| dev_name(stack, d))),
        Request::Neigh => Ok(format_neigh(&stack.neigh().entries(), |d| {
            dev_name(stack, d)
        })),
        Request::Stats { zeros } => Ok(format_stats(&stack.snmp().render(), *zeros)),
        Request::Help => Ok(format!("{LONG_ABOUT}\n")),
        Request::NeighFlush { dev } => {
            let dev = dev.as_deref().map(|n| find_dev(stack, n)).transpose()?;
            stack.neigh_flush(dev);
            Ok(String::new())
        }
        Request::RouteAdd(r) | Request::RouteDel(r) => {
            let dev = r.dev.as_deref().map(|n| find_dev(stack, n)).transpose()?;
            let spec = RouteSpec {
                prefix: r.prefix,
                prefix_len: r.prefix_len,
                gateway: r.via,
                dev,
                metric: r.metric.unwrap_or(0),
                prefsrc: None,
                // Routes an operator adds at run time, as `ip route add ... proto static`.
                proto: RouteProto::Static,
            };
            let result = if matches!(req, Request::RouteAdd(_)) {
                stack.route_add(spec)
            } else if u32::from(r.prefix) & !prefix_mask(r.prefix_len) != 0 {
                Err(RouteError::HostBitsSet)
            } else {
                stack.route_del(spec)
            };
            match result {
                Ok(_) => Ok(String::new()),
                Err(e) => Err(route_failure(e, r.dev.as_deref())),
            }
        }
    }
}

/// A refused route change, worded as ip prints it: the kernel's extended-ack messages as
/// `Error: ....`, bare errnos as `RTNETLINK answers: ...`.
fn route_failure(e: RouteError, dev: Option<&str>) -> Failure {
    match e {
        RouteError::NoDevice => {
            Failure::usage(format!("Cannot find device \"{}\"", dev.unwrap_or("")))
        }
        RouteError::BadPrefixLen
        | RouteError::HostBitsSet
        | RouteError::GatewayUnreachable
        | RouteError::NeedGatewayOrDevice => Failure::refused(format!("Error: {e}.")),
        _ => Failure::refused(format!("RTNETLINK answers: {e}")),
    }
}

fn dev_name(stack: &Stack, d: DeviceId) -> String {
    stack
        .devices()
        .get(d)
        .map_or_else(|| format!("if{}", d.0), |nd| nd.name.clone())
}

// ---------------------------------------------------------------------------------------
// Formatters: plain data in, iproute2's text out

/// One device as `ip link` / `ip addr` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRow {
    pub index: u32,
    pub name: String,
    pub kind: DeviceKind,
    pub mtu: usize,
    pub mac: MacAddr,
    pub addrs: Vec<IfAddr>,
    pub stats: LinkStats,
}

/// `struct rtnl_link_stats64`, the part `ip -s link` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub rx_missed: u64,
    pub rx_mcast: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
    pub tx_carrier: u64,
    pub tx_collisions: u64,
}

/// Every device of the stack, by ifindex. RX `missed` is the frames the device loop had
/// no room for on the RX ring (a NIC's `rx_missed_errors`); read and write errors on the TAP
/// count as RX and TX errors.
pub fn link_rows(stack: &Stack, io: &[(DeviceId, IoStatsSnapshot)]) -> Vec<LinkRow> {
    stack
        .devices()
        .iter()
        .map(|d| {
            let s = &d.stats;
            let io = io.iter().find(|(id, _)| *id == d.id).map(|(_, io)| io);
            LinkRow {
                index: d.id.ifindex(),
                name: d.name.clone(),
                kind: d.kind,
                mtu: d.mtu,
                mac: d.mac,
                addrs: d.addrs().to_vec(),
                stats: LinkStats {
                    rx_bytes: s.rx_bytes,
                    rx_packets: s.rx_packets,
                    rx_errors: s.rx_errors + io.map_or(0, |io| io.rx_errors),
                    rx_dropped: s.rx_dropped,
                    rx_missed: io.map_or(0, |io| io.rx_dropped),
                    rx_mcast: 0,
                    tx_bytes: s.tx_bytes,
                    tx_packets: s.tx_packets,
                    tx_errors: io.map_or(0, |io| io.tx_errors),
                    tx_dropped: s.tx_dropped,
                    tx_carrier: 0,
                    tx_collisions: 0,
                },
            }
        })
        .collect()
}

/// `ip -br addr`: name (16 wide), state (14 wide), then each ADDR/PREFIX; iproute2 ends
/// every field with a space, the last one too.
pub fn format_addr(rows: &[LinkRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let state = match r.kind {
            DeviceKind::Loopback => "UNKNOWN",
            DeviceKind::Ethernet => "UP",
        };
        let _ = write!(out, "{:<16} {:<14} ", r.name, state);
        for a in &r.addrs {
            let _ = write!(out, "{a} ");
        }
        out.push('\n');
    }
    out
}

/// `ip -s link`: iproute2's `print_link_stats64`, columns as wide as their header or their
/// widest number, RX and TX sharing the widths.
pub fn format_link(rows: &[LinkRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let (flags, qdisc, state, link) = match r.kind {
            DeviceKind::Loopback => ("LOOPBACK,UP,LOWER_UP", "noqueue", "UNKNOWN", "loopback"),
            DeviceKind::Ethernet => (
                "BROADCAST,MULTICAST,UP,LOWER_UP",
                "pfifo_fast",
                "UP",
                "ether",
            ),
        };
        let brd = match r.kind {
            DeviceKind::Loopback => MacAddr::ZERO,
            DeviceKind::Ethernet => MacAddr::BROADCAST,
        };
        let _ = writeln!(
            out,
            "{}: {}: <{flags}> mtu {} qdisc {qdisc} state {state} mode DEFAULT group default qlen 1000",
            r.index, r.name, r.mtu
        );
        let _ = writeln!(out, "    link/{link} {} brd {brd}", r.mac);
        let s = &r.stats;
        let rx = [
            s.rx_bytes,
            s.rx_packets,
            s.rx_errors,
            s.rx_dropped,
            s.rx_missed,
            s.rx_mcast,
        ];
        let tx = [
            s.tx_bytes,
            s.tx_packets,
            s.tx_errors,
            s.tx_dropped,
            s.tx_carrier,
            s.tx_collisions,
        ];
        // strlen of "*X: bytes" + 1, "packets", "errors", "dropped", "heartbt", "overrun";
        // a seventh column ("compressed", 10 wide) is always empty here.
        let mut cols = [10usize, 7, 6, 7, 7, 7];
        for (i, c) in cols.iter_mut().enumerate() {
            *c = (*c).max(digits(rx[i])).max(digits(tx[i]));
        }
        let header = |dir: &str, names: [&str; 6]| {
            let mut h = format!("    {dir}: {:>w$}", names[0], w = cols[0] - 4);
            for (name, w) in names[1..].iter().zip(&cols[1..]) {
                let _ = write!(h, " {name:>w$}");
            }
            // The empty "compressed" column.
            let _ = write!(h, " {:10}", "");
            h
        };
        let values = |vals: [u64; 6]| {
            let mut v = String::from("    ");
            for (n, w) in vals.iter().zip(&cols) {
                let _ = write!(v, "{n:>w$} ");
            }
            v
        };
        for (dir, names, vals) in [
            (
                "RX",
                ["bytes", "packets", "errors", "dropped", "missed", "mcast"],
                rx,
            ),
            (
                "TX",
                [
                    "bytes", "packets", "errors", "dropped", "carrier", "collsns",
                ],
                tx,
            ),
        ] {
            let _ = writeln!(out, "{}", header(dir, names));
            let _ = writeln!(out, "{}", values(vals));
        }
    }
    out
}

fn digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// `ip route`: the main table in the kernel's dump order (by destination, longer prefixes
/// of one destination first, then by metric). `proto boot` is left out and `scope link`
/// put in, as iproute2 does.
pub fn format_routes(routes: &[(Table, FibEntry)], name: impl Fn(DeviceId) -> String) -> String {
    let mut main: Vec<&FibEntry> = routes
        .iter()
        .filter(|(t, _)| *t == Table::Main)
        .map(|(_, e)| e)
        .collect();
    main.sort_by_key(|e| {
        (
            u32::from(e.prefix),
            std::cmp::Reverse(e.prefix_len),
            e.metric,
        )
    });
    let mut out = String::new();
    for e in main {
        let (kind, has_dev, scope) = match e.rtype {
            RouteType::Unicast => ("", true, e.gateway.is_none().then_some("link")),
            RouteType::Local => ("local ", true, Some("host")),
            RouteType::Broadcast => ("broadcast ", true, Some("link")),
            RouteType::Unreachable => ("unreachable ", false, None),
            RouteType::Blackhole => ("blackhole ", false, None),
        };
        out.push_str(kind);
        if e.prefix_len == 0 {
            out.push_str("default ");
        } else if e.prefix_len == 32 {
            let _ = write!(out, "{} ", e.prefix);
        } else {
            let _ = write!(out, "{}/{} ", e.prefix, e.prefix_len);
        }
        if has_dev {
            if let Some(gw) = e.gateway {
                let _ = write!(out, "via {gw} ");
            }
            let _ = write!(out, "dev {} ", name(e.oif));
        }
        if e.proto != RouteProto::Boot {
            let _ = write!(out, "proto {} ", e.proto.as_str());
        }
        if let Some(scope) = scope {
            let _ = write!(out, "scope {scope} ");
        }
        if let Some(src) = e.prefsrc {
            let _ = write!(out, "src {src} ");
        }
        if e.metric != 0 {
            let _ = write!(out, "metric {} ", e.metric);
        }
        out.push('\n');
    }
    out
}

/// `ip neigh`: the link-layer address only while it is valid (the kernel sends
/// `NDA_LLADDR` only for NUD_VALID states).
pub fn format_neigh(
    entries: &[(DeviceId, Ipv4Addr, NudState, Option<MacAddr>)],
    name: impl Fn(DeviceId) -> String,
) -> String {
    let mut out = String::new();
    for &(dev, ip, state, mac) in entries {
        let _ = write!(out, "{ip} dev {} ", name(dev));
        if let (true, Some(mac)) = (state.is_valid(), mac) {
            let _ = write!(out, "lladdr {mac} ");
        }
        let state = match state {
            NudState::Incomplete => "INCOMPLETE",
            NudState::Reachable => "REACHABLE",
            NudState::Stale => "STALE",
            NudState::Delay => "DELAY",
            NudState::Probe => "PROBE",
            NudState::Failed => "FAILED",
        };
        let _ = writeln!(out, "{state} ");
    }
    out
}

/// Sections in the order nstat reads them: /proc/net/snmp, then /proc/net/netstat. Our own
/// sections (Arp, Dev, Netfilter, any new one) follow in the order the stack renders them.
const NSTAT_ORDER: [&str; 6] = ["Ip", "Icmp", "Tcp", "Udp", "TcpExt", "IpExt"];

/// Constants and gauges nstat never prints (its `useless_numbers`).
const NSTAT_USELESS: [&str; 7] = [
    "IpForwarding",
    "IpDefaultTTL",
    "TcpRtoAlgorithm",
    "TcpRtoMin",
    "TcpRtoMax",
    "TcpMaxConn",
    "TcpCurrEstab",
];

/// `nstat -a` (`-az` with `zeros`) from the stack's /proc/net/snmp-style text
/// ([`stack_core::snmp::Snmp::render`]): `#kernel`, then one `SectionName value rate` line
/// per counter (`%-32s%-16llu%6.1f`). There is no history, so the rate is always 0.0.
pub fn format_stats(rendered: &str, zeros: bool) -> String {
    let mut sections: Vec<(&str, Vec<(&str, u64)>)> = Vec::new();
    let mut lines = rendered.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((section, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        let fields = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .map(|(n, v)| (n, v.parse().unwrap_or(0)))
            .collect();
        sections.push((section, fields));
    }
    let rank = |s: &str| {
        NSTAT_ORDER
            .iter()
            .position(|o| *o == s)
            .unwrap_or(NSTAT_ORDER.len())
    };
    // Stable: our own sections keep the stack's order.
    sections.sort_by_key(|(s, _)| rank(s));
    let mut out = String::from("#kernel\n");
    for (section, fields) in sections {
        for (name, value) in fields {
            let id = format!("{section}{name}");
            if NSTAT_USELESS.contains(&id.as_str()) || (value == 0 && !zeros) {
                continue;
            }
            let _ = writeln!(out, "{id:<32}{value:<16}{:>6.1}", 0.0);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The wire format

fn encode(resp: &Response) -> String {
    match resp {
        Ok(text) => format!("ok\n{text}"),
        Err(f) => format!("error {} {}\n", f.code, f.msg.replace('\n', " ")),
    }
}

fn decode(answer: &str) -> Option<Response> {
    if let Some(text) = answer.strip_prefix("ok\n") {
        return Some(Ok(text.to_owned()));
    }
    let rest = answer.strip_prefix("error ")?;
    let (code, msg) = rest.split_once(' ')?;
    Some(Err(Failure {
        code: code.parse().ok()?,
        msg: msg.trim_end_matches('\n').to_owned(),
    }))
}

// ---------------------------------------------------------------------------------------
// The server

/// How the server runs a request: on the stack thread for ustack, directly for tests.
pub type Exec =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// The executor of a running stack.
pub fn stack_exec(handle: &StackHandle) -> Exec {
    let handle = handle.clone();
    Arc::new(move |req| {
        let handle = handle.clone();
        Box::pin(async move {
            let io: Vec<(DeviceId, IoStatsSnapshot)> = handle
                .io_stats_all()
                .into_iter()
                .map(|(d, _, s)| (d, s))
                .collect();
            match handle
                .call(move |stack, _now| execute(stack, &io, &req))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.strip_prefix("ustack: ").unwrap_or(&msg);
                    Err(Failure::usage(format!("ustack: {msg}")))
                }
            }
        })
    })
}

/// A running control socket. Dropping it stops serving and removes the socket file (if it
/// is still ours).
#[derive(Debug)]
pub struct CtlServer {
    path: PathBuf,
    id: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl CtlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        self.task.abort();
        // Only our socket: a later ustack may have taken the path over.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Why the control socket could not be made.
#[derive(Debug, PartialEq, Eq)]
pub struct BindError {
    pub msg: String,
    /// Another process answers on it (always fatal), as opposed to any other failure.
    pub in_use: bool,
    /// We may not write there (not root): a missing default socket is only a warning.
    pub denied: bool,
}

impl BindError {
    fn other(msg: String, e: &io::Error) -> BindError {
        BindError {
            msg,
            in_use: false,
            denied: matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ),
        }
    }
}

/// Bind a control socket at `path`: make its directory (0700) if missing, take over a stale
/// socket file, refuse one a live process answers on, make the socket 0600.
pub async fn bind(path: &Path) -> Result<(UnixListener, (u64, u64)), BindError> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    BindError::other(format!("cannot create {}: {e}", dir.display()), &e)
                })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(BindError {
                msg: format!("{shown} exists and is not a socket; not replacing it"),
                in_use: false,
                denied: false,
            })
        }
        Ok(_) => match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => {
                let who = stream
                    .peer_cred()
                    .ok()
                    .and_then(|c| c.pid())
                    .map_or_else(|| "a running process".to_owned(), describe_pid);
                return Err(BindError {
                    msg: format!("control socket {shown} is in use by {who}"),
                    in_use: true,
                    denied: false,
                });
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Stale: its ustack is gone (killed before it could clean up).
                std::fs::remove_file(path).map_err(|e| {
                    BindError::other(
                        format!("cannot remove the stale control socket {shown}: {e}"),
                        &e,
                    )
                })?;
                tracing::info!("removed the stale control socket {shown}");
            }
            Ok(Err(e)) => {
                return Err(BindError::other(
                    format!("cannot check the control socket {shown}: {e}"),
                    &e,
                ))
            }
            Err(_) => {
                return Err(BindError {
                    msg: format!(
                        "control socket {shown} is in use by a process that does not answer"
                    ),
                    in_use: true,
                    denied: false,
                })
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BindError::other(
                format!("cannot check the control socket {shown}: {e}"),
                &e,
            ))
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        BindError::other(format!("cannot bind the control socket {shown}: {e}"), &e)
    })?;
    let meta = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::symlink_metadata(path))
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            BindError::other(format!("cannot set up the control socket {shown}: {e}"), &e)
        })?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// "a running ustack (pid N)", or the program's name when it is not ustack.
fn describe_pid(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    match comm.trim() {
        "ustack" | "" => format!("a running ustack (pid {pid})"),
        other => format!("a running process (pid {pid}, {other})"),
    }
}

/// Bind `path` and serve it on the current tokio runtime with `exec`.
pub async fn serve_at(path: &Path, exec: Exec) -> Result<CtlServer, BindError> {
    let (listener, id) = bind(path).await?;
    let task = tokio::spawn(serve(listener, exec));
    Ok(CtlServer {
        path: path.to_owned(),
        id,
        task,
    })
}

/// Start the control socket of a running `host` or `router` (`kind`), named after its first
/// TAP unless `path` is given. `Ok(None)`: the default place is not writable for us, so
/// there is no control socket (said on stderr); a socket in use is always an error.
pub async fn start(
    handle: &StackHandle,
    path: Option<&Path>,
    kind: &str,
) -> Result<Option<CtlServer>, String> {
    let explicit = path.is_some();
    let path = path.map_or_else(|| default_path(kind, handle.tap_name()), Path::to_owned);
    match serve_at(&path, stack_exec(handle)).await {
        Ok(server) => Ok(Some(server)),
        Err(e) if !explicit && e.denied && !e.in_use => {
            eprintln!("ustack: no control socket: {} (give --ctl PATH)", e.msg);
            Ok(None)
        }
        Err(e) => Err(e.msg),
    }
}

async fn serve(listener: UnixListener, exec: Exec) {
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let busy = Err(Failure::usage(format!(
                "ustack: {MAX_CLIENTS} control clients are being served; try again"
            )));
            // Never waits: what does not fit in the socket buffer is not sent.
            let _ = stream.try_write(encode(&busy).as_bytes());
            continue;
        };
        let exec = exec.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(REQUEST_TIMEOUT, client_session(stream, exec)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("control client: {e}"),
                Err(_) => tracing::debug!("control client: timed out"),
            }
        });
    }
}

/// One client: its request line, our answer, end of stream.
async fn client_session(stream: UnixStream, exec: Exec) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64 + 1));
    if let Err(e) = rd.read_line(&mut line).await {
        let resp = Err(Failure::usage(format!("ustack: unreadable request: {e}")));
        wr.write_all(encode(&resp).as_bytes()).await?;
        return wr.shutdown().await;
    }
    if line.trim().is_empty() {
        // A liveness probe (or a client that changed its mind): nothing to answer.
        return Ok(());
    }
    let resp = if line.len() > MAX_REQUEST {
        Err(Failure::usage(format!(
            "ustack: a request is at most {MAX_REQUEST} bytes"
        )))
    } else {
        match Request::parse(&line) {
            Ok(req) => exec(req).await,
            Err(f) => Err(f),
        }
    };
    wr.write_all(encode(&resp).as_bytes()).await?;
    wr.shutdown().await?;
    // Read what is left (normally nothing: the client has shut down its side), so that
    // closing with unread input does not reset the connection under the answer.
    let mut rest = rd.into_inner().into_inner().take(1 << 20);
    let mut sink = tokio::io::sink();
    let drain = tokio::io::copy(&mut rest, &mut sink);
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Where sockets are

/// The default control socket of a `kind` (`host`, `router`) on `tap`.
pub fn default_path(kind: &str, tap: &str) -> PathBuf {
    default_path_in(Path::new(RUN_DIR), kind, tap, netns_tag().as_deref())
}

fn default_path_in(dir: &Path, kind: &str, tap: &str, ns: Option<&str>) -> PathBuf {
    let name = match ns {
        Some(ns) => format!("{kind}-{tap}@{ns}.ctl"),
        None => format!("{kind}-{tap}.ctl"),
    };
    dir.join(name)
}

/// Our network namespace when it is not the initial one: its `ip netns` name, else
/// `net<inode>` when it differs from pid 1's (which may not be readable, even for root, in a
/// container: then an unnamed namespace counts as the initial one).
fn netns_tag() -> Option<String> {
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = id(Path::new("/proc/self/ns/net"))?;
    let named = std::fs::read_dir("/run/netns").ok().and_then(|dir| {
        dir.flatten()
            .find(|e| id(&e.path()) == Some(ours))
            .and_then(|e| e.file_name().into_string().ok())
    });
    if named.is_some() {
        return named;
    }
    match id(Path::new("/proc/1/ns/net")) {
        Some(init) if init != ours => Some(format!("net{}", ours.1)),
        _ => None,
    }
}

/// The control sockets under `dir` for namespace `ns`.
fn candidates(dir: &Path, ns: Option<&str>) -> Vec<PathBuf> {
    let suffix = ns.map_or_else(|| ".ctl".to_owned(), |ns| format!("@{ns}.ctl"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(&suffix) && (ns.is_some() || !n.contains('@')))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The socket `ustack ctl` talks to without `--ctl`: the only one for this namespace, or
/// the only live one among several.
async fn discover(dir: &Path, ns: Option<&str>) -> Result<PathBuf, String> {
    let found = candidates(dir, ns);
    match found.len() {
        0 => {
            let pattern = default_path_in(dir, "*", "*", ns)
                .display()
                .to_string()
                .replace("*-*", "*");
            // Sockets of other namespaces: say where they are, as that is the likely mix-up.
            let mut elsewhere: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.path().display().to_string())
                .filter(|p| p.ends_with(".ctl"))
                .collect();
            elsewhere.sort();
            let hint = match elsewhere.as_slice() {
                [] => String::new(),
                some => format!(
                    " Other network namespaces have {}: give one with --ctl PATH, or run \
                     ustack ctl in its namespace with ip netns exec",
                    some.join(", ")
                ),
            };
            Err(format!(
                "ustack: cannot reach the control socket {pattern}: no such file (is ustack \
                 running?{hint})"
            ))
        }
        1 => Ok(found[0].clone()),
        _ => {
            let mut live = Vec::new();
            for p in &found {
                if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(p)).await
                {
                    live.push(p.clone());
                }
            }
            match live.len() {
                // All stale: the first one's error says so.
                0 => Ok(found[0].clone()),
                1 => Ok(live.swap_remove(0)),
                _ => Err(format!(
                    "ustack: several ustacks run in this network namespace ({}); pick one with --ctl PATH",
                    live.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client

/// `ustack ctl`: send the request, print the answer; no stack is started.
pub async fn client(args: CtlArgs) -> ExitCode {
    if args
        .request
        .iter()
        .any(|w| w.chars().any(char::is_whitespace))
    {
        eprintln!("ustack: a request word cannot contain white space");
        return ExitCode::from(1);
    }
    let line = args.request.join(" ");
    match Request::parse(&line) {
        Ok(Request::Help) => {
            println!("{LONG_ABOUT}");
            return ExitCode::SUCCESS;
        }
        Ok(_) => {}
        Err(f) => {
            eprintln!("{}", f.msg);
            return ExitCode::from(f.code);
        }
    }
    let path = match args.ctl {
        Some(p) => p,
        None => match discover(Path::new(RUN_DIR), netns_tag().as_deref()).await {
            Ok(p) => p,
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(1);
            }
        },
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, ask(&path, &line)).await {
        Ok(Ok(Ok(text))) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(f))) => {
            eprintln!("{}", f.msg);
            ExitCode::from(f.code)
        }
        Ok(Err(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!(
                "ustack: no answer on the control socket {} within {} s",
                path.display(),
                CLIENT_TIMEOUT.as_secs()
            );
            ExitCode::from(1)
        }
    }
}

/// One exchange with the server at `path`; `Err` is the line to show.
pub async fn ask(path: &Path, line: &str) -> Result<Response, String> {
    let shown = path.display();
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => "no such file (is ustack running?)".to_owned(),
            io::ErrorKind::ConnectionRefused => {
                "connection refused (a stale socket: is ustack running?)".to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (it is mode 0600: run as the user ustack runs as)".to_owned()
            }
            _ => e.to_string(),
        };
        format!("ustack: cannot reach the control socket {shown}: {why}")
    })?;
    // A server that refuses early (busy, a request too long) answers and closes without
    // reading everything we sent: our write may then fail, or our read end in a reset after
    // the answer. What arrived is the answer either way.
    let sent = async {
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        stream.shutdown().await
    }
    .await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut limited = (&mut stream).take(MAX_ANSWER);
    let received = loop {
        match limited.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    if answer.is_empty() {
        let why = match (sent, received) {
            (Err(e), _) | (_, Err(e)) => e.to_string(),
            _ => "closed without an answer".to_owned(),
        };
        return Err(format!("ustack: control socket {shown}: {why}"));
    }
    let answer = String::from_utf8_lossy(&answer);
    decode(&answer).ok_or_else(|| format!("ustack: a malformed answer on {shown}"))
}

// ---------------------------------------------------------------------------------------
// What `host` and `router` start next to the stack

/// The control socket and packet captures of a running `host` or `router`.
pub struct Observers {
    ctl: Option<CtlServer>,
    capture: Option<crate::pcap::Capture>,
}

/// Start the control socket (always, at `--ctl` or the default place) and the captures
/// (with `--pcap`), saying so on stderr; the error is the one line to show the user.
pub async fn observe(
    handle: &StackHandle,
    args: &crate::cli::ObserveArgs,
    kind: &str,
) -> Result<Observers, String> {
    let ctl = start(handle, args.ctl.as_deref(), kind).await?;
    if let Some(c) = &ctl {
        eprintln!("ustack: control socket {}", c.path().display());
    }
    let capture = match &args.pcap {
        Some(dir) => Some(crate::pcap::start(handle, dir, args.pcap_limit).await?),
        None => None,
    };
    Ok(Observers { ctl, capture })
}

impl Observers {
    /// Stop answering (the socket file goes), then drain and close the captures, printing
    /// what each file got.
    pub async fn finish(mut self) {
        drop(self.ctl.take());
        if let Some(c) = self.capture.take() {
            for line in c.finish().await {
                eprintln!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stack_core::ipv4::Ipv4Conf;
    use stack_core::{Instant, NetDeviceConfig};

    const TAP0_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc0, 0x00, 0x02, 0x01]);
    const TAP1_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc6, 0x33, 0x64, 0x01]);
    const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];

    /// An Ethernet ARP request from `spa` (at PEER_MAC) for `tpa`.
    fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f.resize(60, 0);
        f
    }

    /// The router of the docs: tap0 192.0.2.1/24, tap1 198.51.100.1/24, a route to
    /// 203.0.113.0/24 and a default route given at start, one ARP request answered on tap0
    /// and a datagram waiting for 198.51.100.20 on tap1.
    fn sample_router() -> Stack {
        let conf = Ipv4Conf {
            ip_forward: true,
            ..Ipv4Conf::default()
        };
        let mut s = Stack::with_conf(conf, Instant::ZERO, 7);
        let t0 = s.add_device(NetDeviceConfig::new("tap0", TAP0_MAC));
        let t1 = s.add_device(NetDeviceConfig::new("tap1", TAP1_MAC));
        s.addr_add(t0, IfAddr::new(Ipv4Addr::new(192, 0, 2, 1), 24))
            .unwrap();
        s.addr_add(t1, IfAddr::new(Ipv4Addr::new(198, 51, 100, 1), 24))
            .unwrap();
        s.route_add(RouteSpec::via(
            Ipv4Addr::new(203, 0, 113, 0),
            24,
            Ipv4Addr::new(198, 51, 100, 2),
        ))
        .unwrap();
        s.route_add(RouteSpec::via(
            Ipv4Addr::UNSPECIFIED,
            0,
            Ipv4Addr::new(192, 0, 2, 254),
        ))
        .unwrap();
        let now = Instant::from_millis(1);
        let frame = arp_request([192, 0, 2, 10], [192, 0, 2, 1]);
        s.netif_receive_skb(now, t0, Skb::from_vec(frame));
        let u = s.udp_socket();
        s.udp_sendmsg(
            now,
            u,
            Some(std::net::SocketAddrV4::new(
                Ipv4Addr::new(198, 51, 100, 20),
                9,
            )),
            b"hello",
            false,
        )
        .unwrap();
        while s.poll_transmit(now).is_some() {}
        s
    }

    fn run(stack: &mut Stack, line: &str) -> Response {
        execute(stack, &[], &Request::parse(line)?)
    }

    use stack_core::Skb;

    fn ok(stack: &mut Stack, line: &str) -> String {
        run(stack, line).unwrap_or_else(|f| panic!("{line}: {f:?}"))
    }

    fn fail(stack: &mut Stack, line: &str) -> (u8, String) {
        let f = run(stack, line).expect_err(line);
        (f.code, f.msg)
    }

    fn name(d: DeviceId) -> String {
        format!("d{}", d.0 - 2)
    }

    // --- formatters against what iproute2 6.1 and nstat print on Linux 6.18 ---------
    //
    // The reference lines were printed by the real tools in a scratch namespace: a veth
    // d0 at 192.0.2.1/24 (`ip netns add scratch-x; ip -n scratch-x link add d0 type veth
    // peer name p0 netns scratch-y; ...`), with the routes and neighbours below added by
    // `ip route add` / `ip neigh add`. Where the real line names something ustack does not
    // have, the edit is noted.

    #[test]
    fn addr_is_ip_br_addr() {
        let rows = vec![
            LinkRow {
                index: 1,
                name: "lo".into(),
                kind: DeviceKind::Loopback,
                mtu: 65536,
                mac: MacAddr::ZERO,
                addrs: vec![IfAddr::new(Ipv4Addr::new(127, 0, 0, 1), 8)],
                stats: LinkStats::default(),
            },
            LinkRow {
                index: 2,
                name: "d0".into(),
                kind: DeviceKind::Ethernet,
                mtu: 1500,
                mac: MacAddr([0xee, 0x47, 0xe3, 0xbd, 0x62, 0xd0]),
                addrs: vec![
                    IfAddr::new(Ipv4Addr::new(192, 0, 2, 1), 24),
                    IfAddr::new(Ipv4Addr::new(192, 0, 2, 7), 24),
                ],
                stats: LinkStats::default(),
            },
            LinkRow {
                index: 3,
                name: "d1".into(),
                kind: DeviceKind::Ethernet,
                mtu: 1500,
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                addrs: vec![],
                stats: LinkStats::default(),
            },
        ];
        // `ip -n scratch-x -br addr`, less the IPv6 addresses ("::1/128 ",
        // "fe80::ec47:e3ff:febd:62d0/64 ") and veth's "@if2" after d0; a second address
        // as `ip addr add 192.0.2.7/24 dev d0` shows it; a device without addresses.
        let want = "\
lo               UNKNOWN        127.0.0.1/8 \n\
d0               UP             192.0.2.1/24 192.0.2.7/24 \n\
d1               UP             \n";
        assert_eq!(format_addr(&rows), want);
    }

    #[test]
    fn link_is_ip_s_link() {
        let lo = LinkRow {
            index: 1,
            name: "lo".into(),
            kind: DeviceKind::Loopback,
            mtu: 65536,
            mac: MacAddr::ZERO,
            addrs: vec![],
            stats: LinkStats::default(),
        };
        let d0 = LinkRow {
            index: 2,
            name: "d0".into(),
            kind: DeviceKind::Ethernet,
            mtu: 1500,
            mac: MacAddr([0xee, 0x47, 0xe3, 0xbd, 0x62, 0xd0]),
            addrs: vec![],
            stats: LinkStats {
                rx_bytes: 726,
                rx_packets: 9,
                tx_bytes: 1104,
                tx_packets: 18,
                ..LinkStats::default()
            },
        };
        // `ip -n scratch-x -s link`; for d0, "d0@if2" is "d0", "qdisc noqueue" (veth's) is
        // "qdisc pfifo_fast" (a TAP's) and " link-netns scratch-y" is gone.
        let want = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
    RX:  bytes packets errors dropped  missed   mcast           \n             0       0      0       0       0       0 
    TX:  bytes packets errors dropped carrier collsns           \n             0       0      0       0       0       0 
2: d0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000
    link/ether ee:47:e3:bd:62:d0 brd ff:ff:ff:ff:ff:ff
    RX:  bytes packets errors dropped  missed   mcast           \n           726       9      0       0       0       0 
    TX:  bytes packets errors dropped carrier collsns           \n          1104      18      0       0       0       0 
";
        assert_eq!(format_link(&[lo, d0.clone()]), want);

        // Columns widen to the widest number, RX and TX together (size_columns).
        let mut big = d0;
        big.stats.rx_bytes = 123_456_789_012;
        big.stats.tx_dropped = 12_345_678;
        let text = format_link(&[big]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[2..],
            [
                "    RX:    bytes packets errors  dropped  missed   mcast           ",
                "    123456789012       9      0        0       0       0 ",
                "    TX:    bytes packets errors  dropped carrier collsns           ",
                "            1104      18      0 12345678       0       0 ",
            ]
        );
    }

    #[test]
    fn route_is_ip_route() {
        let d0 = DeviceId(2);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let e = |p: &str, len, gw: Option<&str>, proto, metric| FibEntry {
            prefsrc: None,
            metric,
            proto,
            ..FibEntry::unicast(a(p), len, gw.map(a), d0)
        };
        let kernel = FibEntry {
            prefsrc: Some(a("192.0.2.1")),
            proto: RouteProto::Kernel,
            ..FibEntry::unicast(a("192.0.2.0"), 24, None, d0)
        };
        let unreachable = FibEntry {
            rtype: RouteType::Unreachable,
            ..e("203.0.113.128", 25, None, RouteProto::Boot, 0)
        };
        let local = FibEntry {
            rtype: RouteType::Local,
            ..e("192.0.2.1", 32, None, RouteProto::Kernel, 0)
        };
        // Given out of order, and with a local-table route that `ip route` does not show.
        let routes = vec![
            (Table::Local, local),
            (Table::Main, unreachable),
            (
                Table::Main,
                e("203.0.113.0", 24, Some("192.0.2.2"), RouteProto::Static, 5),
            ),
            (Table::Main, kernel),
            (
                Table::Main,
                e("198.51.100.0", 24, None, RouteProto::Boot, 7),
            ),
            (
                Table::Main,
                e("192.0.2.0", 25, Some("192.0.2.3"), RouteProto::Boot, 0),
            ),
            (
                Table::Main,
                e("0.0.0.0", 0, Some("192.0.2.254"), RouteProto::Boot, 0),
            ),
            (
                Table::Main,
                e("203.0.113.9", 32, Some("192.0.2.2"), RouteProto::Boot, 0),
            ),
        ];
        // `ip -n scratch-x route` after `ip route add default via 192.0.2.254`, `... add
        // 203.0.113.0/24 via 192.0.2.2 metric 5 proto static`, `... add 198.51.100.0/24 dev
        // d0 metric 7`, `... add unreachable 203.0.113.128/25`, `... add 192.0.2.0/25 via
        // 192.0.2.3` (d0@if2 as d0), and a host route as ip prints one (no /32).
        let want = "\
default via 192.0.2.254 dev d0 \n\
192.0.2.0/25 via 192.0.2.3 dev d0 \n\
192.0.2.0/24 dev d0 proto kernel scope link src 192.0.2.1 \n\
198.51.100.0/24 dev d0 scope link metric 7 \n\
203.0.113.0/24 via 192.0.2.2 dev d0 proto static metric 5 \n\
203.0.113.9 via 192.0.2.2 dev d0 \n\
unreachable 203.0.113.128/25 \n";
        assert_eq!(format_routes(&routes, name), want);
    }

    #[test]
    fn neigh_is_ip_neigh() {
        let d0 = DeviceId(2);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mac = |b| Some(MacAddr([2, 0, 0, 0, 0, b]));
        let entries = vec![
            (d0, a("192.0.2.13"), NudState::Probe, mac(0x0d)),
            (d0, a("192.0.2.12"), NudState::Delay, mac(0x0c)),
            (d0, a("192.0.2.10"), NudState::Reachable, mac(0x0a)),
            (d0, a("192.0.2.11"), NudState::Stale, mac(0x0b)),
            (d0, a("192.0.2.3"), NudState::Incomplete, None),
            // A failed entry that still remembers an address: not shown, as the kernel
            // sends NDA_LLADDR only for valid states.
            (d0, a("192.0.2.4"), NudState::Failed, mac(0x04)),
        ];
        // `ip -n scratch-x neigh` after `ip neigh add 192.0.2.1x lladdr ... nud
        // reachable|stale|delay|probe` and pings to unanswered 192.0.2.3 and .4 (the
        // kernel turned DELAY into PROBE before printing; ours is written as ip prints it).
        let want = "\
192.0.2.13 dev d0 lladdr 02:00:00:00:00:0d PROBE \n\
192.0.2.12 dev d0 lladdr 02:00:00:00:00:0c DELAY \n\
192.0.2.10 dev d0 lladdr 02:00:00:00:00:0a REACHABLE \n\
192.0.2.11 dev d0 lladdr 02:00:00:00:00:0b STALE \n\
192.0.2.3 dev d0 INCOMPLETE \n\
192.0.2.4 dev d0 FAILED \n";
        assert_eq!(format_neigh(&entries, name), want);
    }

    #[test]
    fn stats_is_nstat_a() {
        let mut snmp = stack_core::snmp::Snmp::default();
        snmp.ip.forwarding = 2;
        snmp.ip.default_ttl = 64;
        snmp.ip.in_receives = 17;
        snmp.ip.in_delivers = 17;
        snmp.ip.out_requests = 19;
        snmp.icmp.in_msgs = 2;
        snmp.icmp.in_dest_unreachs = 2;
        snmp.tcp.active_opens = 2;
        snmp.tcp.curr_estab = 1;
        snmp.tcp.in_segs = 15;
        snmp.tcp_ext.tcp_hp_acks = 1;
        snmp.ip_ext.in_octets = 101_017;
        snmp.arp.in_requests = 1;
        // `ip netns exec scratch-x nstat -a` after some TCP over lo, its lines for these
        // counters (nstat's Ip6, IcmpMsg and kernel-only counters left out); Forwarding,
        // DefaultTTL and CurrEstab are never printed. Then ustack's own sections.
        let want = "\
#kernel
IpInReceives                    17                 0.0
IpInDelivers                    17                 0.0
IpOutRequests                   19                 0.0
IcmpInMsgs                      2                  0.0
IcmpInDestUnreachs              2                  0.0
TcpActiveOpens                  2                  0.0
TcpInSegs                       15                 0.0
TcpExtTCPHPAcks                 1                  0.0
IpExtInOctets                   101017             0.0
ArpInRequests                   1                  0.0
";
        assert_eq!(format_stats(&snmp.render(), false), want);
        let all = format_stats(&snmp.render(), true);
        assert!(all.contains("\nIpInHdrErrors                   0                  0.0\n"));
        assert!(all.contains("\nTcpExtIPReversePathFilter       0                  0.0\n"));
        assert!(!all.contains("IpForwarding") && !all.contains("TcpCurrEstab"));
        // Every counter of the stack, once.
        let rendered = snmp.render();
        let count: usize = rendered
            .lines()
            .step_by(2)
            .map(|l| l.split_whitespace().count() - 1)
            .sum();
        assert_eq!(all.lines().count(), 1 + count - 3);
    }

    // --- requests ------------------------------------------------------------------

    #[test]
    fn good_requests_parse() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let p = |s: &str| Request::parse(s).unwrap_or_else(|f| panic!("{s}: {f:?}"));
        assert_eq!(p("addr"), Request::Addr);
        assert_eq!(p("address show"), Request::Addr);
        assert_eq!(p("link"), Request::Link);
        assert_eq!(p("route"), Request::Route);
        assert_eq!(p(" route  list \n"), Request::Route);
        assert_eq!(p("neigh"), Request::Neigh);
        assert_eq!(p("neigh flush"), Request::NeighFlush { dev: None });
        assert_eq!(
            p("neigh flush dev tap1"),
            Request::NeighFlush {
                dev: Some("tap1".into())
            }
        );
        assert_eq!(p("stats"), Request::Stats { zeros: false });
        assert_eq!(p("stats -z"), Request::Stats { zeros: true });
        assert_eq!(p("help"), Request::Help);
        assert_eq!(
            p("route add 203.0.113.0/24 via 198.51.100.2"),
            Request::RouteAdd(RouteReq {
                prefix: a("203.0.113.0"),
                prefix_len: 24,
                via: Some(a("198.51.100.2")),
                dev: None,
                metric: None,
            })
        );
        assert_eq!(
            p("route add default via 192.0.2.254 dev tap0 metric 10"),
            Request::RouteAdd(RouteReq {
                prefix: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                via: Some(a("192.0.2.254")),
                dev: Some("tap0".into()),
                metric: Some(10),
            })
        );
        // Any order, as ip takes it; a bare address is a /32; a device alone will do.
        assert_eq!(
            p("route add metric 3 dev tap1 203.0.113.7"),
            Request::RouteAdd(RouteReq {
                prefix: a("203.0.113.7"),
                prefix_len: 32,
                via: None,
                dev: Some("tap1".into()),
                metric: Some(3),
            })
        );
        assert_eq!(
            p("route del default"),
            Request::RouteDel(RouteReq {
                prefix: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                via: None,
                dev: None,
                metric: None,
            })
        );
    }

    #[test]
    fn bad_requests_get_one_line_errors() {
        let e = |s: &str| {
            let f = Request::parse(s).expect_err(s);
            assert!(!f.msg.contains('\n'), "{s}: {f:?}");
            (f.code, f.msg)
        };
        for (line, msg) in [
            (
                "frob",
                "Object \"frob\" is unknown, try \"ustack ctl help\".",
            ),
            (
                "route frob",
                "Command \"frob\" is unknown, try \"ustack ctl help\".",
            ),
            (
                "route add 203.0.113.0/33 via 192.0.2.2",
                "Error: any valid prefix is expected rather than \"203.0.113.0/33\".",
            ),
            (
                "route add 203.0.113/24 via 192.0.2.2",
                "Error: any valid prefix is expected rather than \"203.0.113/24\".",
            ),
            (
                "route add 10.0.0.0/8 via 1.2.x",
                "Error: inet address is expected rather than \"1.2.x\".",
            ),
            (
                "route add 10.0.0.0/8 via 192.0.2.2 frob",
                "Error: either \"to\" is duplicate, or \"frob\" is a garbage.",
            ),
            (
                "route add 10.0.0.0/8 via 192.0.2.2 via 192.0.2.3",
                "Error: either \"to\" is duplicate, or \"via\" is a garbage.",
            ),
            (
                "route add 10.0.0.0/8 via",
                "Command line is not complete. Try option \"help\"",
            ),
            (
                "route add 10.0.0.0/8 via 192.0.2.2 metric x",
                "Error: argument \"x\" is wrong: \"metric\" value is invalid",
            ),
        ] {
            assert_eq!(e(line), (1, msg.into()), "{line}");
        }
        assert!(e("route add 10.0.0.0/8").1.contains("via GW"));
        assert!(e("route add via 192.0.2.2").1.contains("destination"));
        for line in [
            "",
            "neigh flush dev",
            "neigh flush tap0",
            "stats -x",
            "addr frob",
        ] {
            assert_eq!(e(line).0, 1, "{line}");
        }
    }

    // --- requests run on a stack ---------------------------------------------------

    #[test]
    fn sample_router_answers_like_iproute2() {
        let mut s = sample_router();
        assert_eq!(
            ok(&mut s, "addr"),
            "\
lo               UNKNOWN        \n\
tap0             UP             192.0.2.1/24 \n\
tap1             UP             198.51.100.1/24 \n"
        );
        let link = ok(&mut s, "link");
        assert!(link.starts_with(
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT \
             group default qlen 1000\n"
        ));
        assert!(link.contains(
            "\n2: tap0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP \
             mode DEFAULT group default qlen 1000\n    link/ether 02:00:c0:00:02:01 brd \
             ff:ff:ff:ff:ff:ff\n    RX:  bytes packets errors dropped  missed   mcast           \
             \n            60       1      0       0       0       0 \n"
        ));
        assert_eq!(link.lines().count(), 3 * 6);
        assert_eq!(
            ok(&mut s, "route"),
            "\
default via 192.0.2.254 dev tap0 \n\
192.0.2.0/24 dev tap0 proto kernel scope link src 192.0.2.1 \n\
198.51.100.0/24 dev tap1 proto kernel scope link src 198.51.100.1 \n\
203.0.113.0/24 via 198.51.100.2 dev tap1 \n"
        );
        assert_eq!(
            ok(&mut s, "neigh"),
            "\
192.0.2.10 dev tap0 lladdr 02:00:00:00:00:0a STALE \n\
198.51.100.20 dev tap1 INCOMPLETE \n"
        );
        let stats = ok(&mut s, "stats");
        assert!(
            stats.starts_with("#kernel\nIpOutRequests                   1                  0.0\n")
        );
        assert!(stats.contains("\nUdpOutDatagrams                 1                  0.0\n"));
        assert!(stats.contains("\nArpInRequests                   1                  0.0\n"));
    }

    #[test]
    fn routes_change_at_run_time() {
        let mut s = sample_router();
        assert_eq!(
            ok(&mut s, "route add 203.0.113.128/25 via 192.0.2.3 metric 5"),
            ""
        );
        assert_eq!(ok(&mut s, "route add 198.51.100.128/25 dev tap0"), "");
        assert_eq!(ok(&mut s, "route del default"), "");
        assert_eq!(
            ok(&mut s, "route"),
            "\
192.0.2.0/24 dev tap0 proto kernel scope link src 192.0.2.1 \n\
198.51.100.0/24 dev tap1 proto kernel scope link src 198.51.100.1 \n\
198.51.100.128/25 dev tap0 proto static scope link \n\
203.0.113.0/24 via 198.51.100.2 dev tap1 \n\
203.0.113.128/25 via 192.0.2.3 dev tap0 proto static metric 5 \n"
        );
        // As ip words them; the stack refused: 2, as ip exits on RTNETLINK errors.
        for (line, code, msg) in [
            (
                "route add 203.0.113.128/25 via 192.0.2.3 metric 5",
                2,
                "RTNETLINK answers: File exists",
            ),
            ("route del default", 2, "RTNETLINK answers: No such process"),
            (
                "route add 203.0.113.1/24 via 192.0.2.3",
                2,
                "Error: Invalid prefix for given prefix length.",
            ),
            (
                "route del 203.0.113.1/24",
                2,
                "Error: Invalid prefix for given prefix length.",
            ),
            (
                "route add 10.0.0.0/8 via 203.0.113.9",
                2,
                "Error: Nexthop has invalid gateway.",
            ),
            (
                "route add 10.0.0.0/8 via 192.0.2.2 dev tap1",
                2,
                "Error: Nexthop has invalid gateway.",
            ),
            (
                "route add 10.0.0.0/8 via 192.0.2.2 dev nope",
                1,
                "Cannot find device \"nope\"",
            ),
            ("neigh flush dev nope", 1, "Cannot find device \"nope\""),
        ] {
            assert_eq!(fail(&mut s, line), (code, msg.into()), "{line}");
        }
        // Nothing changed by the failures.
        assert_eq!(ok(&mut s, "route").lines().count(), 5);
    }

    #[test]
    fn neigh_flush_by_device_and_all() {
        let mut s = sample_router();
        assert_eq!(ok(&mut s, "neigh flush dev tap1"), "");
        assert_eq!(
            ok(&mut s, "neigh"),
            "192.0.2.10 dev tap0 lladdr 02:00:00:00:00:0a STALE \n"
        );
        assert_eq!(ok(&mut s, "neigh flush"), "");
        assert_eq!(ok(&mut s, "neigh"), "");
        // The datagram that waited for 198.51.100.20 is counted as dropped.
        assert!(ok(&mut s, "stats").contains("\nArpUnresolvedDiscards           1 "));
    }

    #[test]
    fn link_counts_the_device_loop() {
        let s = sample_router();
        let io = IoStatsSnapshot {
            rx_packets: 5,
            rx_bytes: 300,
            rx_dropped: 3,
            rx_errors: 1,
            tx_packets: 2,
            tx_bytes: 84,
            tx_errors: 4,
            tx_batches: 2,
            rx_empty: 0,
        };
        let rows = link_rows(&s, &[(DeviceId(2), io)]);
        assert_eq!((rows[1].stats.rx_missed, rows[1].stats.rx_errors), (3, 1));
        assert_eq!(rows[1].stats.tx_errors, 4);
        assert_eq!(rows[2].stats.rx_missed, 0);
    }

    // --- the wire ------------------------------------------------------------------

    #[test]
    fn answers_round_trip() {
        for r in [
            Ok(String::new()),
            Ok("a\nb\n".into()),
            Err(Failure::refused("RTNETLINK answers: File exists")),
        ] {
            assert_eq!(decode(&encode(&r)), Some(r));
        }
        assert_eq!(
            encode(&Err(Failure::usage("two\nlines"))),
            "error 1 two lines\n"
        );
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode("error x y"), None);
    }

    // --- the socket ----------------------------------------------------------------

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "ustack-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An executor running requests on an in-process stack.
    fn local_exec(stack: Stack) -> Exec {
        let stack = Arc::new(std::sync::Mutex::new(stack));
        Arc::new(move |req| {
            let stack = stack.clone();
            Box::pin(async move { execute(&mut stack.lock().unwrap(), &[], &req) })
        })
    }

    #[tokio::test]
    async fn socket_is_private_and_removed_on_drop() {
        let dir = TempDir::new("ctl-mode");
        let path = dir.0.join("run/ustack/router-tap0.ctl");
        let server = serve_at(&path, local_exec(sample_router())).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        drop(server);
        assert!(!path.exists(), "the socket file goes with the server");
    }

    #[tokio::test]
    async fn bad_requests_do_not_stop_the_server() {
        let dir = TempDir::new("ctl-serve");
        let path = dir.0.join("x.ctl");
        let _server = serve_at(&path, local_exec(sample_router())).await.unwrap();
        let route = ask(&path, "route").await.unwrap().unwrap();
        assert!(route.starts_with("default via 192.0.2.254 dev tap0 \n"));
        for bad in [
            "frob",
            "route add 10.0.0.0/8 via 203.0.113.9",
            "neigh flush dev x",
        ] {
            let f = ask(&path, bad).await.unwrap().unwrap_err();
            assert!(!f.msg.contains('\n'));
        }
        assert_eq!(
            ask(&path, "route add 10.0.0.0/8 via 192.0.2.2")
                .await
                .unwrap(),
            Ok(String::new())
        );
        // A client that connects and says nothing holds up nobody else.
        let _silent = UnixStream::connect(&path).await.unwrap();
        let long = "a".repeat(MAX_REQUEST + 10);
        assert!(ask(&path, &long)
            .await
            .unwrap()
            .unwrap_err()
            .msg
            .contains("at most"));
        let route = ask(&path, "route").await.unwrap().unwrap();
        assert!(route.contains("\n10.0.0.0/8 via 192.0.2.2 dev tap0 proto static \n"));
    }

    #[tokio::test]
    async fn clients_beyond_the_limit_are_told_so() {
        let dir = TempDir::new("ctl-busy");
        let path = dir.0.join("x.ctl");
        let _server = serve_at(&path, local_exec(sample_router())).await.unwrap();
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(UnixStream::connect(&path).await.unwrap());
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let f = ask(&path, "addr").await.unwrap().unwrap_err();
        assert!(f.msg.contains("try again"), "{f:?}");
        drop(silent);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ask(&path, "addr").await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_stale_socket_is_taken_over() {
        let dir = TempDir::new("ctl-stale");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("x.ctl");
        // A socket file with nobody behind it, as a killed ustack leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _server = serve_at(&path, local_exec(sample_router())).await.unwrap();
        assert!(ask(&path, "addr").await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_live_socket_is_refused() {
        let dir = TempDir::new("ctl-live");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("x.ctl");
        let _live = serve_at(&path, local_exec(sample_router())).await.unwrap();
        let e = serve_at(&path, local_exec(sample_router()))
            .await
            .unwrap_err();
        assert!(e.in_use);
        let pid = std::process::id();
        assert!(
            e.msg.starts_with(&format!(
                "control socket {} is in use by a running ",
                path.display()
            )) && e.msg.contains(&format!("(pid {pid}")),
            "{}",
            e.msg
        );
        // The first server is untouched.
        assert!(ask(&path, "addr").await.unwrap().is_ok());
        // Nor is a file that is not a socket replaced.
        let file = dir.0.join("file.ctl");
        std::fs::write(&file, "keep").unwrap();
        let e = serve_at(&file, local_exec(sample_router()))
            .await
            .unwrap_err();
        assert!(e.msg.contains("is not a socket"), "{}", e.msg);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }

    #[tokio::test]
    async fn a_missing_server_is_reported_plainly() {
        let dir = TempDir::new("ctl-none");
        let path = dir.0.join("x.ctl");
        assert_eq!(
            ask(&path, "addr").await.unwrap_err(),
            format!(
                "ustack: cannot reach the control socket {}: no such file (is ustack running?)",
                path.display()
            )
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(ask(&path, "addr")
            .await
            .unwrap_err()
            .contains("connection refused"));
    }

    #[tokio::test]
    async fn discovery_finds_the_one_socket_of_this_namespace() {
        let dir = TempDir::new("ctl-find");
        assert!(discover(&dir.0, None)
            .await
            .unwrap_err()
            .contains("no such file (is ustack running?)"));
        std::fs::create_dir_all(&dir.0).unwrap();
        let host = default_path_in(&dir.0, "host", "ustack0", None);
        let other_ns = default_path_in(&dir.0, "host", "ustack0", Some("ns1"));
        assert!(other_ns
            .to_str()
            .unwrap()
            .ends_with("/host-ustack0@ns1.ctl"));
        let _a = serve_at(&host, local_exec(sample_router())).await.unwrap();
        let _b = serve_at(&other_ns, local_exec(sample_router()))
            .await
            .unwrap();
        assert_eq!(discover(&dir.0, None).await.unwrap(), host);
        assert_eq!(discover(&dir.0, Some("ns1")).await.unwrap(), other_ns);
        let e = discover(&dir.0, Some("ns2")).await.unwrap_err();
        assert!(
            e.starts_with(&format!(
                "ustack: cannot reach the control socket {}/*@ns2.ctl: no such file (is ustack \
                 running? Other network namespaces have ",
                dir.0.display()
            )) && e.contains("host-ustack0@ns1.ctl"),
            "{e}"
        );
        // A stale one next to a live one: the live one.
        drop(std::os::unix::net::UnixListener::bind(dir.0.join("router-tap0.ctl")).unwrap());
        assert_eq!(discover(&dir.0, None).await.unwrap(), host);
        // Two live ones: the user picks.
        let second = default_path_in(&dir.0, "router", "tap9", None);
        let _c = serve_at(&second, local_exec(sample_router()))
            .await
            .unwrap();
        let e = discover(&dir.0, None).await.unwrap_err();
        assert!(e.contains("several") && e.contains("--ctl"), "{e}");
    }
}
