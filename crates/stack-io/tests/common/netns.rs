//! Test helper: a throwaway network namespace, made and removed with iproute2.
//!
//! Shared by stack-io's and stack-async's integration tests (the latter includes this
//! file by path). Only 192.0.2.0/24 (TEST-NET-1) is used inside; nothing touches the
//! root namespace's interfaces or routes.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A network namespace `ustk-io-test-<pid>-<n>`, deleted on drop (also when the test
/// panics: the guard is dropped during unwinding).
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ustk-io-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        // IPv6 autoconfiguration would add router solicitations and MLD reports to the
        // frames the tests count; switch it off before any device exists.
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
             echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS <args>`; panics with iproute2's message if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec NS <cmd>`.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(cmd);
        run("ip", &all)
    }

    /// A TAP device `dev` with 192.0.2.1/24 on the kernel side, up.
    pub fn add_tap(&self, dev: &str) {
        self.ip(&["tuntap", "add", "dev", dev, "mode", "tap"]);
        self.ip(&["addr", "add", "192.0.2.1/24", "dev", dev]);
        self.ip(&["link", "set", dev, "up"]);
    }

    /// The kernel's RX packet counter of `dev` (frames we wrote to the TAP).
    pub fn kernel_rx_packets(&self, dev: &str) -> u64 {
        let json = self.ip(&["-j", "-s", "link", "show", dev]);
        // {"stats64":{"rx":{"bytes":N,"packets":M,...
        let rx = json.find("\"rx\":").expect("stats64.rx in ip -j -s output");
        let rest = &json[rx..];
        let p = rest.find("\"packets\":").expect("rx.packets") + "\"packets\":".len();
        rest[p..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .expect("a number")
    }

    /// Run `f` on a fresh thread that has joined this namespace, and return its result.
    /// Fails the test if `f` has not returned within `limit` (a hung io_uring runtime
    /// would otherwise hang the test run; the stuck thread is left behind).
    pub fn run_in<R: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        let path = format!("/run/netns/{}", self.name);
        let (done_tx, done_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                enter(&path);
                let r = f();
                let _ = done_tx.send(());
                r
            })
            .expect("spawn a thread");
        match done_rx.recv_timeout(limit) {
            // Sent, or the thread panicked and dropped the sender: join either way.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => thread
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "the thread in {} did not finish within {limit:?}",
                    self.name
                )
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

/// Wait until `dev` in namespace `ns` is operationally up.
///
/// Attaching to a TAP turns its carrier on, but the kernel acts on that in linkwatch,
/// up to a second later; until then the device's qdisc is `noop` and the kernel's own
/// frames towards the TAP are dropped. Tests that need the kernel to send wait here
/// after attaching.
pub fn wait_oper_up(ns: &str, dev: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let json = run("ip", &["-n", ns, "-j", "link", "show", dev]);
        if json.contains("\"operstate\":\"UP\"") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{dev} in {ns} is not up after 5 s: {json}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Move the calling thread (only) into the namespace bound at `path`.
pub fn enter(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; CLONE_NEWNET affects only this thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send one raw Ethernet frame out of `ifindex` from the kernel side (AF_PACKET), as if
/// the kernel's stack transmitted it: it arrives on the TAP's fd. Call it on a thread
/// inside the namespace.
pub fn inject_frame(ifindex: u32, frame: &[u8]) {
    // SAFETY: socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: `frame` and `sll` are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: we own `fd`.
    unsafe { libc::close(fd) };
    assert_eq!(rc, frame.len() as isize, "AF_PACKET sendto: {err}");
}
