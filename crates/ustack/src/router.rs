//! `ustack router`: one stack on several TAPs with `net.ipv4.ip_forward=1`, forwarding
//! between them as a Linux router does (`ip_forward` in stack-core), answering ARP and
//! ping on each of its addresses, until SIGINT/SIGTERM; then it prints its counters.

use std::process::ExitCode;

use stack_async::{StackBuilder, StackHandle, TapDevice};
use stack_core::ipv4::fib_frontend::RouteSpec;
use stack_core::{IfAddr, StackConfig};

use crate::cli::RouterArgs;

/// The builder `args` describe: one device per `--iface`, in order (ifindex 2, 3, ...),
/// forwarding on, the `--route`s installed once every address is up.
pub fn builder(args: &RouterArgs, seed: u64) -> Result<StackBuilder, String> {
    let mut b = StackBuilder::new(seed)
        .ip_forward(true)
        .options(args.stack.options());
    for (i, iface) in args.ifaces.iter().enumerate() {
        if args.ifaces[..i].iter().any(|o| o.tap == iface.tap) {
            return Err(format!("--iface {} is given twice", iface.tap));
        }
        let mut tap = TapDevice::new(&iface.tap, IfAddr::new(iface.addr, iface.prefix_len));
        if let Some(mtu) = iface.mtu {
            tap.mtu = mtu;
        }
        if let Some(mac) = iface.mac {
            tap.mac = mac;
        } else {
            tap.mac = StackConfig::default_mac(iface.addr);
        }
        b = b.tap(tap);
    }
    for r in &args.routes {
        b = b.route(RouteSpec::via(r.prefix, r.prefix_len, r.gateway));
    }
    Ok(b)
}

/// Start the router; the error is the one line to show the user.
pub fn spawn(args: &RouterArgs, seed: u64) -> Result<StackHandle, String> {
    builder(args, seed)?.spawn().map_err(|e| {
        let msg = e.to_string();
        msg.strip_prefix("ustack: ").unwrap_or(&msg).to_string()
    })
}

pub async fn run(args: RouterArgs) -> ExitCode {
    let seed = args.stack.seed();
    let handle = match spawn(&args, seed) {
        Ok(h) => h,
        Err(msg) => {
            eprintln!("ustack: {msg}");
            return ExitCode::from(1);
        }
    };
    for iface in &args.ifaces {
        eprintln!(
            "ustack: router {}/{} on {}",
            iface.addr, iface.prefix_len, iface.tap
        );
    }
    for r in &args.routes {
        eprintln!(
            "ustack: route {}/{} via {}",
            r.prefix, r.prefix_len, r.gateway
        );
    }
    if let Some(imp) = &args.stack.impair {
        eprintln!("ustack: every link impaired both ways: {imp:?}");
    }
    let observers = match crate::ctl::observe(&handle, &args.observe, "router").await {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("ustack: {msg}");
            return ExitCode::from(1);
        }
    };
    if let Err(code) = crate::wait_then_report(&handle, observers).await {
        return code;
    }
    if let Err(e) = handle.shutdown() {
        eprintln!("ustack: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
