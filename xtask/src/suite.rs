//! `cargo xtask test`: what CI runs (.ci/run). Three suites in order: build every binary, the
//! unit tests (netns tests are #[ignore]d there), then the #[ignore]d netns tests against the
//! binary just built. Each suite's cargo output streams to the log; the closing line counts
//! suites.

use std::time::Duration;

use crate::deps::ensure_packages;
use crate::util::{self, cargo, check_interrupt, run_inherited, step, Result};

/// What the netns tests run: ip, ping, scapy (bad-input frames), tcpdump (to capture when
/// diagnosing), sysctl.
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "python3-scapy",
    "tcpdump",
    "procps",
];

pub fn run() -> Result {
    util::require_root()?;
    sweep("before");
    ensure_packages(PACKAGES)?;

    let ustack = util::built_bin("debug", "ustack");
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = 0;

    step("suite 1/3: cargo build --workspace --bins");
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    let built = run_inherited(build)?.success();
    check_interrupt()?;
    if built && ustack.is_file() {
        passed += 1;
    } else {
        failed.push("build");
    }

    if failed.is_empty() {
        step("suite 2/3: cargo test --workspace (unit tests)");
        let mut unit = cargo();
        unit.args(["test", "--workspace", "--no-fail-fast"]);
        if run_inherited(unit)?.success() {
            passed += 1;
        } else {
            failed.push("unit tests");
        }
        check_interrupt()?;

        step(&format!(
            "suite 3/3: netns tests (USTACK_BIN={})",
            ustack.display()
        ));
        let mut netns = cargo();
        netns
            .args([
                "test",
                "--workspace",
                "--no-fail-fast",
                "--",
                "--ignored",
                "--test-threads=1",
            ])
            .env("USTACK_BIN", &ustack);
        let ok = run_inherited(netns)?.success();
        sweep("after");
        if util::interrupted() {
            // Ctrl-C reached cargo and the test binary together; cargo may be gone while the
            // test binary is still exiting, and its namespaces only count as stale once it is.
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(200));
                sweep("after");
            }
        }
        check_interrupt()?;
        if ok {
            passed += 1;
        } else {
            failed.push("netns tests");
        }
    } else {
        // Without binaries the tests would only fail again, louder and less clearly.
        skipped = 2;
    }

    println!();
    if !failed.is_empty() {
        println!("xtask test: failed suites: {}", failed.join(", "));
    }
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    };
    println!(
        "xtask test: {passed} passed, {} failed{skipped}",
        failed.len()
    );
    util::flush();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} suite(s) failed", failed.len()))
    }
}

/// A test binary killed mid-test (Ctrl-C reaches it before any guard can run) leaves its
/// namespaces behind; remove those of runs that are no longer alive.
fn sweep(when: &str) {
    for name in testbed::sweep_stale() {
        println!("xtask: removed leftover namespace {name} ({when} the netns tests)");
    }
}
