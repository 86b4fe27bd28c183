//! `cargo xtask <demo|test|bench>`: the project's tasks as Rust rather than shell scripts
//! (matklad's xtask pattern; the alias lives in .cargo/config.toml).

mod bench;
mod demo;
mod deps;
mod router_bench;
mod suite;
mod tcp_bench;
mod udp_echo;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ustack's demo, test suite and benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start ustack on a TAP in a fresh namespace, ping it from the kernel, show what happened.
    Demo,
    /// Build, run the unit tests, then the netns suite against the kernel (needs root).
    Test,
    /// Compare ustack with the kernel on a veth pair (and smoltcp on a TAP for TCP): ICMP,
    /// UDP echo and TCP bulk, request/response and connection rates, as ratios; and
    /// ustack router with a Linux router between two kernel hosts.
    Bench {
        /// Measure only these rows: `host` (ustack host against the kernel and smoltcp)
        /// or `router` (ustack router against a Linux router).
        #[arg(long, value_parser = ["host", "router"])]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // From here on Ctrl-C (and SIGTERM) only set a flag: every task checks it between steps and
    // returns normally, so the namespace and process guards run their Drop. Children in our
    // process group get the SIGINT themselves and end on their own.
    if let Err(e) = util::catch_interrupts() {
        eprintln!("xtask: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Cmd::Demo => demo::run(),
        Cmd::Test => suite::run(),
        Cmd::Bench { only } => bench::run(only.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            if util::interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
