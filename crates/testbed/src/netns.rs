//! Network namespace guards, and the TAP and veth devices that live in them.
//!
//! Devices are only ever created inside a namespace made here, so deleting the namespace deletes
//! them too (the kernel unregisters virtual devices of a dying namespace), and nothing is ever
//! configured in the root namespace.

use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::child::describe;
use crate::snmp::{parse_snmp, Counters};

/// Every namespace `Netns::new` creates is named `ustk-<prefix>-<pid>-<n>`; the pid lets
/// `sweep_stale` find the ones whose creator died without running its guards (SIGKILL, or
/// Ctrl-C in a test binary, which has no handler).
pub const NAME_PREFIX: &str = "ustk-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted, with every process still in it, when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a uniquely named namespace `ustk-<prefix>-<pid>-<n>` with `lo` up and IPv6 off.
    ///
    /// The first call in a process also sweeps away namespaces of earlier runs that died without
    /// cleaning up (a test binary run by hand and stopped with Ctrl-C), so they do not pile up.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            for name in sweep_stale() {
                eprintln!("testbed: removed leftover namespace {name} of a run that died");
            }
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{prefix}-{}-{n}", std::process::id());
        Netns::create(name)
    }

    /// Creates a namespace with exactly this name (the demo's `ustack-demo`), first deleting one
    /// of that name left by a run that crashed.
    pub fn create_named(name: &str) -> io::Result<Netns> {
        if netns_exists(name) {
            destroy(name);
        }
        Netns::create(name.to_string())
    }

    fn create(name: String) -> io::Result<Netns> {
        ip_root(&["netns", "add", &name])?;
        // The guard exists from here on, so a failure below still deletes the namespace.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.disable_ipv6();
        Ok(ns)
    }

    /// The kernel would otherwise send router solicitations, MLD reports and DAD probes on every
    /// link, which land in ustack's counters (Dev RxNoHandler) at random times and make counter
    /// assertions and the demo's counter dump harder to explain. Best effort: a kernel without
    /// IPv6 has nothing to turn off.
    fn disable_ipv6(&self) {
        let _ = self
            .cmd("sh")
            .args([
                "-c",
                "for k in all default; do \
                   echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; \
                 done 2>/dev/null",
            ])
            .output();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`). `ip`
    /// execs the program, so the spawned pid is the program's own and signals reach it.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `ip -n NAME args...`; returns its stdout, or an error carrying its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip_root(&full)
    }

    /// Creates TAP `name` in the namespace with the kernel's side of the link at `kernel_cidr`
    /// (e.g. 192.0.2.1/24) and brings it up. It stays NO-CARRIER until ustack opens it.
    pub fn add_tap(&self, name: &str, kernel_cidr: &str) -> io::Result<()> {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        self.ip(&["addr", "add", kernel_cidr, "dev", name])?;
        self.ip(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// The pids of all processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<u32> {
        pids_of(&self.name)
    }

    /// Runs `f` on a thread that has joined this namespace, and returns its result.
    ///
    /// A network namespace belongs to a thread, not a process, so a fresh thread can `setns`
    /// into it and leave the caller's thread (and the root namespace) alone. Sockets `f`
    /// creates stay in this namespace for their whole life, whichever thread uses them
    /// afterwards: that is how tests get kernel-side sockets without spawning processes.
    /// A panic in `f` is resumed on the caller's thread.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        let ns = self.open()?;
        std::thread::scope(|s| {
            let thread = s.spawn(move || -> io::Result<R> {
                set_thread_netns(&ns)?;
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The kernel's own counters in this namespace: /proc/net/snmp and /proc/net/netstat as
    /// seen from inside it (`Ip`, `Udp`, `IpExt`, ...), parsed like ustack's block.
    pub fn kernel_counters(&self) -> io::Result<Counters> {
        // /proc/net is /proc/self/net, the namespace of the main thread; thread-self is ours.
        let text = self.enter(|| -> io::Result<String> {
            let mut text = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
            text.push_str(&std::fs::read_to_string("/proc/thread-self/net/netstat")?);
            Ok(text)
        })??;
        Ok(parse_snmp(&text))
    }

    /// Sets a per-namespace sysctl (`net.ipv4.tcp_tw_reuse`, ...) inside this namespace only,
    /// by writing /proc/sys from a thread that joined it: /proc/sys/net shows the writing
    /// thread's namespace, so the root namespace's settings are never touched.
    pub fn set_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        if !key.starts_with("net.") {
            // Other sysctls are global: writing one would change the whole machine.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{key} is not a per-namespace (net.*) sysctl"),
            ));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))?.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot set {key} in {}: {e}", self.name))
        })
    }

    /// One interface's line of /proc/net/dev inside this namespace.
    pub fn link_stats(&self, ifname: &str) -> io::Result<LinkStats> {
        let text = self.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))??;
        parse_proc_net_dev(&text, ifname).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {ifname} in /proc/net/dev of {}", self.name),
            )
        })
    }

    fn open(&self) -> io::Result<std::fs::File> {
        let path = format!("/run/netns/{}", self.name);
        std::fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {path}: {e}")))
    }
}

/// Moves the calling thread (only) into the namespace `ns` refers to.
fn set_thread_netns(ns: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns only reads the descriptor, which `ns` keeps open for the call.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The counters of one interface from /proc/net/dev (the kernel's `rtnl_link_stats64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// `  ustack0: rxbytes rxpackets errs drop fifo frame compressed multicast txbytes txpackets
/// errs drop ...`
pub fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<LinkStats> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() >= 12).then(|| LinkStats {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        })
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Creates a veth pair `a_name` in `a` / `b_name` in `b`, addresses both ends and brings them up:
/// the kernel-to-kernel reference link the benchmark compares ustack against. The pair is created
/// inside `a` and its peer moved straight to `b`, so it never exists in the root namespace; it
/// goes away with either namespace.
pub fn veth_pair(
    a: &Netns,
    a_name: &str,
    a_cidr: &str,
    b: &Netns,
    b_name: &str,
    b_cidr: &str,
) -> io::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&["addr", "add", a_cidr, "dev", a_name])?;
    b.ip(&["addr", "add", b_cidr, "dev", b_name])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// Whether a namespace of this name is listed by `ip netns list`.
pub fn netns_exists(name: &str) -> bool {
    list_netns().iter().any(|n| n == name)
}

/// Whether the root namespace has a link of this name (read-only; for leak checks in tests).
pub fn link_exists_in_root(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Deletes `ustk-*` namespaces whose creating process is gone: what a test binary killed by
/// Ctrl-C or SIGKILL leaves behind, since its guards never ran. Namespaces of live processes
/// (another test run in progress) are left alone. Returns the names deleted.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in list_netns() {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        // ustk-<prefix>-<pid>-<n>: the prefix may itself hold dashes, so parse from the right.
        let mut parts = rest.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_prefix)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (n.parse::<u32>(), pid.parse::<u32>()) else {
            continue;
        };
        if !process_alive(pid) {
            destroy(&name);
            removed.push(name);
        }
    }
    removed
}

/// Whether `pid` is a live process: a zombie has finished and only waits to be reaped (a test
/// binary whose parent cargo died of the same Ctrl-C is one, briefly).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) STATE ...": comm may hold spaces and parentheses, so read after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn list_netns() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    // Lines look like `name` or `name (id: 3)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn pids_of(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in the namespace, then deletes it. `ip netns del` alone only unmounts the
/// name: a process still inside would keep the namespace, its TAP and its traffic alive, unseen.
fn destroy(name: &str) {
    // Retry: a process may fork while we kill. SIGKILLed processes turn into zombies at once, and
    // zombies are no longer listed (they have no namespace), so this converges quickly.
    for _ in 0..50 {
        let pids = pids_of(name);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = ip_root(&["netns", "del", name]) {
        // Drop cannot fail; say so loudly rather than leak silently.
        eprintln!("testbed: could not delete network namespace {name}: {e}");
    }
}

/// Runs `ip args...`; stdout on success, else an error with the command line and its stderr.
fn ip_root(args: &[&str]) -> io::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot run `{}` (is iproute2 installed?): {e}",
                describe(&cmd)
            ),
        )
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "`{}` failed ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_interface_of_proc_net_dev() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
ustack0: 1234567   8901    0   17    0     0          0         0  7654321    5432    0   42    0     0       0          0
";
        assert_eq!(
            parse_proc_net_dev(text, "ustack0"),
            Some(LinkStats {
                rx_packets: 8901,
                rx_dropped: 17,
                tx_packets: 5432,
                tx_dropped: 42,
            })
        );
        assert_eq!(
            parse_proc_net_dev(text, "lo").map(|s| s.rx_packets),
            Some(0)
        );
        assert_eq!(parse_proc_net_dev(text, "eth0"), None);
    }
}
