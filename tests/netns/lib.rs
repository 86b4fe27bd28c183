//! Shared fixtures of the netns tests (the tests themselves are in tests/).
//!
//! Every test builds its own bed: a fresh namespace holding TAP `ustack0`, with the kernel at
//! 192.0.2.1/24 on it and ustack at 192.0.2.2/24 behind it. When a test fails, the guards print
//! what ustack wrote and what the kernel's side of the link looked like, then remove everything.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use testbed::{counters_block, Child, Counters, Netns, Output};

pub const TAP: &str = "ustack0";
pub const KERNEL_IP: &str = "192.0.2.1";
pub const KERNEL_CIDR: &str = "192.0.2.1/24";
pub const USTACK_IP: &str = "192.0.2.2";
pub const USTACK_CIDR: &str = "192.0.2.2/24";
/// ustack's default MAC: 02:00 followed by the four octets of its address.
pub const USTACK_MAC: &str = "02:00:c0:00:02:02";

/// Long enough for anything a test runs, short enough that a hang fails the test rather than CI.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A namespace with TAP ustack0 and the kernel's address on it.
pub struct Bed {
    pub ns: Netns,
}

impl Bed {
    /// `test` names the namespace (`ustk-<test>-<pid>-<n>`), so a leftover says who left it.
    pub fn new(test: &str) -> Bed {
        if let Err(e) = testbed::require_root() {
            panic!("{e}");
        }
        let ns = Netns::new(test).unwrap_or_else(|e| panic!("cannot create namespace: {e}"));
        ns.add_tap(TAP, KERNEL_CIDR)
            .unwrap_or_else(|e| panic!("cannot create TAP {TAP}: {e}"));
        Bed { ns }
    }

    /// `ustack args...` inside the namespace.
    pub fn ustack(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.cmd(testbed::ustack_bin());
        cmd.args(args);
        cmd
    }

    /// Runs `ustack args...` to completion (or kills it after `COMMAND_TIMEOUT`).
    pub fn run_ustack(&self, args: &[&str]) -> Output {
        testbed::run(self.ustack(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot run ustack: {e}"))
    }

    /// Runs `program args...` on the kernel's side, inside the namespace.
    pub fn kernel(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.ns.cmd(program);
        cmd.args(args);
        testbed::run(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// The kernel's ping(8), run inside the namespace.
    pub fn ping(&self, args: &[&str]) -> Output {
        self.kernel("ping", args)
    }

    /// Starts `ustack host --tap ustack0 --addr 192.0.2.2/24` and returns once the kernel can
    /// ping it (readiness is observed, not slept for).
    pub fn start_host(&self) -> Host {
        let child = Child::spawn(self.ustack(&["host", "--tap", TAP, "--addr", USTACK_CIDR]))
            .unwrap_or_else(|e| panic!("cannot start ustack host: {e}"));
        let mut host = Host { child: Some(child) };
        let mut exited = None;
        let answered =
            testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                if let Ok(Some(status)) = host.child_mut().try_wait() {
                    exited = Some(status);
                    return true;
                }
                self.ping(&["-c", "1", "-W", "1", USTACK_IP]).success()
            });
        if let Some(status) = exited {
            let out = host.child.take().expect("present").stop();
            panic!("ustack host exited at startup ({status}):\n{out}");
        }
        assert!(
            answered,
            "ustack host did not answer the kernel's ping within 15 s"
        );
        host
    }

    /// The kernel's view of the link, for failure messages.
    pub fn kernel_view(&self) -> String {
        let mut s = String::new();
        for args in [
            &["-s", "link", "show", TAP][..],
            &["addr", "show", TAP],
            &["neigh", "show", "dev", TAP],
        ] {
            let _ = writeln!(s, "$ ip -n {} {}", self.ns.name(), args.join(" "));
            match self.ns.ip(args) {
                Ok(out) => s.push_str(&out),
                Err(e) => {
                    let _ = writeln!(s, "{e}");
                }
            }
        }
        s
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kernel side of {TAP} at failure ---\n{}",
                self.kernel_view()
            );
        }
    }
}

/// A running `ustack host`. Stopping it (SIGTERM) makes it print its counters; dropping it during
/// a failed test prints what it wrote so far.
pub struct Host {
    child: Option<Child>,
}

impl Host {
    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("host not stopped yet")
    }

    /// The ustack host process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("host not stopped yet").pid()
    }

    /// What ustack has printed so far, for messages.
    pub fn output_so_far(&self) -> String {
        match &self.child {
            Some(c) => format!(
                "--- ustack host stdout so far ---\n{}\n--- ustack host stderr so far ---\n{}",
                c.stdout_so_far().trim_end(),
                c.stderr_so_far().trim_end()
            ),
            None => "(ustack host already stopped)".to_string(),
        }
    }

    /// Sends SIGTERM, waits for it to exit, and checks it exited 0 with a counters block.
    pub fn stop(mut self) -> (Output, Counters) {
        let out = self.child.take().expect("host not stopped yet").stop();
        assert!(
            out.code() == Some(0),
            "ustack host should exit 0 on SIGTERM:\n{out}"
        );
        let counters = counters_block(&out.stdout)
            .unwrap_or_else(|| panic!("ustack host printed no counters block:\n{out}"));
        (out, counters)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            if std::thread::panicking() {
                let out = child.stop();
                eprintln!("--- ustack host at failure ---\n{out}");
            }
        }
    }
}

/// A counter that must be present: a missing one fails with the whole block, so a misnamed
/// counter is told apart from a wrong value.
pub fn counter(counters: &Counters, section: &str, name: &str, context: &Output) -> u64 {
    counters
        .get(section)
        .and_then(|s| s.get(name))
        .copied()
        .unwrap_or_else(|| panic!("no counter {section} {name} in ustack's output:\n{context}"))
}

/// The reply lines (`... bytes from ...`) of ping output.
pub fn reply_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("bytes from")).collect()
}

/// The path of a file under tests/netns.
pub fn asset(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The MAC address in what `ip -o link show DEV` prints, as it prints it
/// (`02:00:c0:00:02:02`).
pub fn link_mac(ip_link: &str) -> Option<&str> {
    ip_link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
}

/// A MAC address as `ip` prints it.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// `/proc/self/limits`' soft "Max open files".
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Make room for `n` more descriptors in this process (the kernel's side of the connections;
/// ustack itself uses none per connection).
pub fn ensure_open_files(n: u64) {
    if open_files_limit() >= n + 256 {
        return;
    }
    let want = format!("--nofile={}", n + 1024);
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &want])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        out.status.success() && open_files_limit() >= n + 256,
        "cannot raise the open files limit to {}: {}",
        n + 1024,
        String::from_utf8_lossy(&out.stderr)
    );
}
