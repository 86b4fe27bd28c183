//! The test bench around ustack: network namespaces, TAP and veth devices, child processes, and
//! parsers for what `ustack`, `ping` and `/proc/net/snmp` print.
//!
//! Everything that touches the system is a guard whose `Drop` undoes it, so a failing assertion or
//! a panic in a test leaves no namespace, device or process behind. Traffic only ever flows inside
//! namespaces created here; the root namespace's interfaces and routes are never touched.
//!
//! Used by `cargo xtask` (demo, test, bench) and by the `ustack-netns-tests` package.

mod child;
mod netns;
mod packet;
mod ping;
mod routed;
mod rss;
mod seeded;
mod snmp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use child::{run, Child, Output};
pub use netns::{
    link_exists_in_root, netns_exists, parse_proc_net_dev, sweep_stale, veth_pair, LinkStats,
    Netns, NAME_PREFIX,
};
pub use packet::PacketSocket;
pub use ping::{parse_ping_summary, parse_ping_times, percentile, PingSummary, Rtt};
pub use routed::{Routed, RouterKind, Side};
pub use rss::{vm_rss_kib, RssWatch};
pub use seeded::{echo_seeded, test_seed, EchoRun, SplitMix};
pub use snmp::{counters_block, parse_snmp, Counters, COUNTERS_HEADER};

/// Namespaces and TAP devices need CAP_SYS_ADMIN and CAP_NET_ADMIN; checking the effective uid
/// up front turns a cascade of confusing `ip` failures into one actionable message.
pub fn require_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(
            "ustack: the netns tests need root (they create network namespaces and TAP devices): \
             run as root"
                .to_string(),
        )
    }
}

/// Polls `cond` every `poll_interval` until it holds or `timeout` has passed; returns whether it
/// held. Readiness is observed (e.g. "the kernel can ping it"), never assumed after a fixed sleep.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll_interval.min(deadline - now));
    }
}

/// The workspace root, found from this crate's manifest dir (crates/testbed).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (as cargo itself honours it), else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The `ustack` binary under test: `USTACK_BIN` (set by `cargo xtask test`, so the suite tests the
/// binary that was just built), else the debug build in the target directory.
///
/// Panics when it does not exist: every netns test needs it, and the panic message says how to
/// get one.
pub fn ustack_bin() -> PathBuf {
    let path = match std::env::var_os("USTACK_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => target_dir().join("debug").join("ustack"),
    };
    if !path.is_file() {
        panic!(
            "ustack: no ustack binary at {} (USTACK_BIN unset or wrong): \
             build it with cargo build -p ustack, or run cargo xtask test",
            path.display()
        );
    }
    path
}

/// `ustack ctl --ctl SOCK ARGS...` with the binary at `bin` (a test of the `ustack` package
/// passes its own, `env!("CARGO_BIN_EXE_ustack")`): (exit code, stdout, stderr).
///
/// Panics when the binary cannot be run.
pub fn ustack_ctl_with(bin: &Path, sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .arg("ctl")
        .arg("--ctl")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ustack ctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`ustack_ctl_with`] the binary under test, [`ustack_bin`].
pub fn ustack_ctl(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    ustack_ctl_with(&ustack_bin(), sock, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_reports_success_and_timeout() {
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n >= 3
            }
        ));
        assert_eq!(n, 3);

        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
