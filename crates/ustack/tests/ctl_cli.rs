//! `ustack ctl` as a user runs it, without any stack: it must not start one, and says
//! plainly what is wrong.

use std::process::{Command, Output};

fn ustack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ustack"))
        .args(args)
        .output()
        .expect("run ustack")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_server_is_one_line_and_exit_1() {
    let path = std::env::temp_dir().join(format!("ustack-ctl-cli-{}.ctl", std::process::id()));
    let out = ustack(&["ctl", "--ctl", path.to_str().unwrap(), "route"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "ustack: cannot reach the control socket {}: no such file (is ustack running?)\n",
            path.display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn malformed_requests_fail_before_any_connection() {
    let path = "/nonexistent-dir/ustack.ctl";
    let out = ustack(&["ctl", "--ctl", path, "frob"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Object \"frob\" is unknown, try \"ustack ctl help\".\n"
    );
    let out = ustack(&[
        "ctl",
        "--ctl",
        path,
        "route",
        "add",
        "203.0.113.0/33",
        "via",
        "192.0.2.2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: any valid prefix is expected rather than \"203.0.113.0/33\".\n"
    );
}

#[test]
fn help_lists_the_requests() {
    let out = ustack(&["ctl", "help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "ip -br addr",
        "ip -s link",
        "ip route",
        "ip neigh",
        "nstat -a",
    ] {
        assert!(text.contains(word), "{word} in {text}");
    }
    let out = ustack(&["ctl", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("route add PREFIX"));
}
