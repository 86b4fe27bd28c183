//! `ustack`: run a userspace TCP/IP host on a TAP device.
//!
//! `ustack host` answers ARP and ping, runs UDP echo and discard, TCP echo, discard and
//! chargen (see `services`) and HTTP on port 80 (see `http`) until SIGINT/SIGTERM and
//! prints its counters on the way out; `ustack ping` sends echo requests from our stack
//! like ping(8); `ustack router` forwards between several TAPs (see `router`). Both serve
//! `ustack ctl` on a control socket (see `ctl`) and capture with `--pcap DIR` (see `pcap`).

mod cli;
mod ctl;
mod http;
mod pcap;
mod ping;
mod router;
mod services;

use std::process::ExitCode;

use clap::Parser;
use stack_async::StackHandle;

use cli::{Cli, Command, HostArgs};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad value (an address, a prefix) is the user's one-line mistake: say it the way
        // every other ustack error is said, exit 1. Help, version and usage errors stay clap's.
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("ustack: {}", first.strip_prefix("error: ").unwrap_or(first));
            return ExitCode::from(1);
        }
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("USTACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file or a test's capture.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // One line per stage a packet enters (`USTACK_LOG=stack_core=trace`), so the
        // path ip_rcv -> ip_local_deliver -> icmp_rcv ... is visible as it happens.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ustack: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Host(args) => rt.block_on(host(args)),
        Command::Ping(args) => rt.block_on(ping::run(args)),
        Command::Router(args) => rt.block_on(router::run(args)),
        Command::Ctl(args) => rt.block_on(ctl::client(args)),
    }
}

/// `ustack host`: serve until a signal, then print the counters.
async fn host(args: HostArgs) -> ExitCode {
    let (handle, config) = match args.link.spawn() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("ustack: {msg}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "ustack: host {}/{} ({}) on {}",
        config.addr, config.prefix_len, config.mac, args.link.tap
    );
    if let Some(imp) = &args.link.stack.impair {
        eprintln!("ustack: link impaired both ways: {imp:?}");
    }
    let observers = match ctl::observe(&handle, &args.observe, "host").await {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("ustack: {msg}");
            return ExitCode::from(1);
        }
    };
    let which = services::Services {
        udp_echo: !args.no_udp_echo,
        udp_discard: !args.no_udp_discard,
    };
    match services::start(&handle, which).await {
        Ok(running) if running.is_empty() => {}
        Ok(running) => eprintln!("ustack: {running}"),
        Err(e) => {
            eprintln!("ustack: cannot start the UDP services: {e}");
            return ExitCode::from(1);
        }
    }
    let tcp = services::TcpServices {
        echo: !args.no_tcp_echo,
        discard: !args.no_tcp_discard,
        chargen: !args.no_tcp_chargen,
    };
    match services::start_tcp(&handle, tcp).await {
        Ok(running) if running.is_empty() => {}
        Ok(running) => eprintln!("ustack: {running}"),
        Err(e) => {
            eprintln!("ustack: cannot start the TCP services: {e}");
            return ExitCode::from(1);
        }
    }
    if !args.no_http {
        match http::start(&handle).await {
            Ok(running) => eprintln!("ustack: {running}"),
            Err(e) => {
                eprintln!("ustack: cannot start HTTP: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Err(code) = wait_then_report(&handle, observers).await {
        return code;
    }
    if let Err(e) = handle.shutdown() {
        eprintln!("ustack: {e}");
    }
    ExitCode::SUCCESS
}

/// What `host` and `router` do once they serve: wait for SIGINT/SIGTERM, stop the control
/// socket and the captures, print the counters. `Err` is the exit code of a step that
/// failed (its message already printed).
pub(crate) async fn wait_then_report(
    handle: &StackHandle,
    observers: ctl::Observers,
) -> Result<(), ExitCode> {
    if let Err(e) = wait_for_signal().await {
        eprintln!("ustack: cannot wait for signals: {e}");
        return Err(ExitCode::from(1));
    }
    observers.finish().await;
    match cli::counters(handle).await {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("ustack: {e}");
            return Err(ExitCode::from(1));
        }
    }
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
