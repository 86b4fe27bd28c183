//! Startup errors are one `ustack: ` line on stderr and a non-zero exit, never a hang, a panic,
//! or (for a missing TAP) a freshly created device.

use ustack_netns_tests::{Bed, TAP, USTACK_CIDR};

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn missing_tap_is_an_error_not_a_new_device() {
    let bed = Bed::new("notap");
    let out = bed.run_ustack(&["host", "--tap", "nosuchtap0", "--addr", USTACK_CIDR]);
    assert!(
        !out.timed_out,
        "ustack host kept running without its TAP:\n{out}"
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("no TAP device named"),
        "stderr should say the TAP does not exist:\n{out}"
    );
    assert!(out.stderr.starts_with("ustack: "), "{out}");
    // TUNSETIFF on an unknown name creates a device: ustack must check before it opens.
    assert!(
        bed.ns.ip(&["link", "show", "nosuchtap0"]).is_err(),
        "ustack created nosuchtap0 instead of refusing:\n{out}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn bad_prefix_length_is_an_error() {
    let bed = Bed::new("badcidr");
    let out = bed.run_ustack(&["host", "--tap", TAP, "--addr", "192.0.2.2/40"]);
    assert!(
        !out.timed_out,
        "ustack host started with a /40 prefix:\n{out}"
    );
    // Like every startup error: one `ustack: ` line, exit 1.
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.starts_with("ustack: "), "{out}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out}");
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("/40") && err.contains("prefix length 40 is over 32"),
        "stderr should name the bad CIDR and why:\n{out}"
    );
    assert!(
        !err.contains("panicked"),
        "a bad argument must not panic:\n{out}"
    );
}
