//! A routed topology: kernel hosts, each in its own namespace, joined by a router in a
//! namespace of its own, either `ustack router` on TAPs or the Linux kernel on veth pairs
//! with `ip_forward=1` (the oracle). Both kinds have the same interface names, addresses,
//! MTUs and routes, so any probe can run unchanged against either and the answers can be
//! compared.
//!
//! ```text
//!   host ns "a"                router ns                      host ns "b"
//!   ra 192.0.2.10/24 ─────── ra 192.0.2.1   rb 198.51.100.1 ─────── rb 198.51.100.10/24
//!   default via 192.0.2.1     (ustack router on TAPs,         default via 198.51.100.1
//!                              or Linux on veths)
//! ```
//!
//! For ustack, each TAP is made in the router's namespace, `ustack router` attaches it,
//! and only then is the TAP's kernel side moved into its host's namespace (a TAP keeps its
//! file descriptor across the move), so the host's kernel talks straight to ustack.
//! Everything is deleted on drop.

use std::io;
use std::process::Command;
use std::time::Duration;

use crate::{veth_pair, wait_until, Child, Netns, Output};

/// One side of the router: its interface, the router's and the host's address on it.
#[derive(Clone, Debug)]
pub struct Side {
    /// Interface name on both ends (the TAP / veth), e.g. "ra".
    pub ifname: String,
    /// The router's address with prefix, e.g. "192.0.2.1/24".
    pub router_cidr: String,
    /// The host's address with prefix, e.g. "192.0.2.10/24".
    pub host_cidr: String,
    /// The link's MTU (both ends), 1500 if `None`.
    pub mtu: Option<u32>,
}

impl Side {
    pub fn new(ifname: &str, router_cidr: &str, host_cidr: &str) -> Side {
        Side {
            ifname: ifname.to_string(),
            router_cidr: router_cidr.to_string(),
            host_cidr: host_cidr.to_string(),
            mtu: None,
        }
    }

    pub fn with_mtu(mut self, mtu: u32) -> Side {
        self.mtu = Some(mtu);
        self
    }

    pub fn router_ip(&self) -> &str {
        addr_of(&self.router_cidr)
    }

    pub fn host_ip(&self) -> &str {
        addr_of(&self.host_cidr)
    }
}

fn addr_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Which router sits in the middle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    Ustack,
    Linux,
}

impl std::fmt::Display for RouterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouterKind::Ustack => "ustack router",
            RouterKind::Linux => "Linux router",
        })
    }
}

/// A router and its hosts, one per [`Side`], in that order.
pub struct Routed {
    pub kind: RouterKind,
    pub sides: Vec<Side>,
    /// `ustack router`, while it runs (None for Linux, or once stopped).
    child: Option<Child>,
    pub hosts: Vec<Netns>,
    pub router: Netns,
}

impl Routed {
    /// Builds the topology with `kind` in the middle. For ustack, `extra` is added to the
    /// `ustack router` command line (e.g. `--ctl PATH`); each side's MTU becomes the
    /// `mtu=` of its `--iface`.
    pub fn new(
        kind: RouterKind,
        prefix: &str,
        sides: &[Side],
        extra: &[&str],
    ) -> io::Result<Routed> {
        let tag = match kind {
            RouterKind::Ustack => "u",
            RouterKind::Linux => "l",
        };
        let router = Netns::new(&format!("{prefix}-{tag}r"))?;
        let mut hosts = Vec::new();
        for (i, _) in sides.iter().enumerate() {
            hosts.push(Netns::new(&format!("{prefix}-{tag}h{i}"))?);
        }
        let mut bed = Routed {
            kind,
            sides: sides.to_vec(),
            child: None,
            hosts,
            router,
        };
        match kind {
            RouterKind::Ustack => bed.start_ustack(extra)?,
            RouterKind::Linux => bed.start_linux()?,
        }
        bed.configure_hosts()?;
        bed.wait_reachable()?;
        Ok(bed)
    }

    fn start_ustack(&mut self, extra: &[&str]) -> io::Result<()> {
        let mut cmd = self.router.cmd(crate::ustack_bin());
        cmd.arg("router");
        for s in &self.sides {
            self.router
                .ip(&["tuntap", "add", "dev", &s.ifname, "mode", "tap"])?;
            self.router.ip(&["link", "set", &s.ifname, "up"])?;
            let mut iface = format!("{}={}", s.ifname, s.router_cidr);
            if let Some(mtu) = s.mtu {
                iface.push_str(&format!(",mtu={mtu}"));
            }
            cmd.args(["--iface", &iface]);
        }
        cmd.args(extra);
        self.child = Some(Child::spawn(cmd)?);
        // Attached means carrier: a TAP has LOWER_UP once a process holds it.
        let attached = wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
            self.sides.iter().all(|s| {
                self.router
                    .ip(&["-o", "link", "show", &s.ifname])
                    .is_ok_and(|l| l.contains("LOWER_UP"))
            }) || self.router_exited()
        });
        if self.router_exited() || !attached {
            let out = self.child.take().map(Child::stop);
            return Err(io::Error::other(format!(
                "ustack router did not attach its TAPs: {}",
                out.map(|o| o.to_string()).unwrap_or_default()
            )));
        }
        for (s, host) in self.sides.iter().zip(&self.hosts) {
            self.router
                .ip(&["link", "set", &s.ifname, "netns", host.name()])?;
        }
        Ok(())
    }

    fn router_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn start_linux(&mut self) -> io::Result<()> {
        self.router.set_sysctl("net.ipv4.ip_forward", "1")?;
        for (s, host) in self.sides.iter().zip(&self.hosts) {
            veth_pair(
                &self.router,
                &s.ifname,
                &s.router_cidr,
                host,
                &s.ifname,
                &s.host_cidr,
            )?;
            if let Some(mtu) = s.mtu {
                self.router
                    .ip(&["link", "set", &s.ifname, "mtu", &mtu.to_string()])?;
            }
        }
        Ok(())
    }

    /// Address, MTU and default route of every host (for veths the address is set).
    fn configure_hosts(&self) -> io::Result<()> {
        for (s, host) in self.sides.iter().zip(&self.hosts) {
            if self.kind == RouterKind::Ustack {
                host.ip(&["addr", "add", &s.host_cidr, "dev", &s.ifname])?;
            }
            if let Some(mtu) = s.mtu {
                host.ip(&["link", "set", &s.ifname, "mtu", &mtu.to_string()])?;
            }
            host.ip(&["link", "set", &s.ifname, "up"])?;
            host.ip(&["route", "add", "default", "via", s.router_ip()])?;
        }
        Ok(())
    }

    /// Every host can ping its side of the router.
    fn wait_reachable(&mut self) -> io::Result<()> {
        for i in 0..self.sides.len() {
            let ip = self.sides[i].router_ip().to_string();
            let ok = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                self.run(i, "ping", &["-c", "1", "-W", "1", &ip]).success()
            });
            if !ok {
                return Err(io::Error::other(format!(
                    "host {i} cannot ping the {} at {ip}",
                    self.kind
                )));
            }
        }
        Ok(())
    }

    /// `program args...` in host `i`'s namespace, to completion (60 s at most).
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.hosts[i].cmd(program);
        cmd.args(args);
        crate::run(cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("cannot run {program} in host {i}: {e}"))
    }

    /// A command for host `i`'s namespace.
    pub fn cmd(&self, i: usize, program: &str) -> Command {
        self.hosts[i].cmd(program)
    }

    /// What ustack router printed so far (empty for Linux).
    pub fn router_output_so_far(&self) -> String {
        match &self.child {
            Some(c) => format!(
                "--- ustack router stdout ---\n{}\n--- stderr ---\n{}",
                c.stdout_so_far().trim_end(),
                c.stderr_so_far().trim_end()
            ),
            None => String::new(),
        }
    }

    /// Whether the ustack router process is still running (always true for Linux).
    pub fn router_alive(&mut self) -> bool {
        !self.router_exited()
    }

    /// The ustack router's pid, for RSS sampling.
    pub fn router_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// Stops `ustack router` (SIGTERM) and returns what it printed, counters included.
    pub fn stop(&mut self) -> Option<Output> {
        self.child.take().map(Child::stop)
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let out = child.stop();
            if std::thread::panicking() {
                eprintln!("--- {} at failure ---\n{out}", self.kind);
            }
        }
    }
}
