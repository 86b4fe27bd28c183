//! `cargo xtask test`: what CI runs (.ci/run). Three suites in order: build every binary, the
//! unit tests (netns tests are #[ignore]d there), then the #[ignore]d netns tests against the
//! binary just built. Each suite's cargo output streams to the log; the closing line adds up
//! the tests cargo ran in both test suites.

use std::time::Duration;

use crate::deps::ensure_packages;
use crate::util::{self, cargo, check_interrupt, run_inherited, step, Result};

/// What the netns tests run: ip, ping, scapy (bad-input frames), tcpdump (to capture when
/// diagnosing), sysctl, curl (the HTTP test, as a client we did not write).
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "python3-scapy",
    "tcpdump",
    "procps",
    "curl",
];

pub fn run() -> Result {
    util::require_root()?;
    sweep("before");
    ensure_packages(PACKAGES)?;

    let ustack = util::built_bin("debug", "ustack");
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = 0;
    let mut tally = Tally::default();

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
        if run_counted(unit, &mut tally)? {
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
        let ok = run_counted(netns, &mut tally)?;
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
        "xtask test: suites {passed} passed, {} failed{skipped}",
        failed.len()
    );
    // The closing line CI reads: every test cargo ran, unit and netns together.
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    util::flush();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} suite(s) failed", failed.len()))
    }
}

/// Tests counted from cargo's `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test`, streaming its stdout unchanged and adding up its `test result:` lines.
fn run_counted(mut cmd: std::process::Command, tally: &mut Tally) -> util::Result<bool> {
    use std::io::{BufRead, BufReader};
    let shown = util::show(&cmd);
    println!("xtask: $ {shown}");
    util::flush();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                tally.passed += count_before(rest, " passed");
                tally.failed += count_before(rest, " failed");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {shown}: {e}"))?;
    Ok(status.success())
}

/// In `ok. 3 passed; 1 failed; ...`, the number before `word`.
fn count_before(text: &str, word: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A test binary killed mid-test (Ctrl-C reaches it before any guard can run) leaves its
/// namespaces behind; remove those of runs that are no longer alive.
fn sweep(when: &str) {
    for name in testbed::sweep_stale() {
        println!("xtask: removed leftover namespace {name} ({when} the netns tests)");
    }
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn reads_cargo_test_result_lines() {
        let ok =
            "ok. 79 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.04s";
        assert_eq!(
            (count_before(ok, " passed"), count_before(ok, " failed")),
            (79, 0)
        );
        let bad = "FAILED. 8 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            (count_before(bad, " passed"), count_before(bad, " failed")),
            (8, 3)
        );
    }
}
