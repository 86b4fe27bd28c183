//! `StackHandle`: starts the stack thread and talks to it.
//!
//! ```text
//!   handles (any thread, any executor)
//!        | command channel (bounded, 256); a wake writes an eventfd if the thread sleeps
//!        v
//!   +------------------- thread "ustack-uring" (one io_uring) -------------------+
//!   |  Protocol: Stack  <-- multishot read, provided buffers <--  TAP fd (per TAP) |
//!   |                   --- writes, up to tx_inflight per TAP -->                  |
//!   +-----------------------------------------------------------------------------+
//! ```
//!
//! The rings are bounded like a NIC's descriptor rings: a TAP's provided buffers run
//! out and frames wait in the TAP's queue (the kernel drops beyond its `txqueuelen`);
//! a full TX ring leaves frames queued in the core's qdisc.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::SinkExt;
use std::net::Ipv4Addr;

use stack_core::impair::{ImpairConfig, Impairment};
use stack_core::ipv4::fib_frontend::RouteSpec;
use stack_core::ipv4::route::{FibEntry, Table};
use stack_core::ipv4::Ipv4Conf;
use stack_core::stack::{SocketId, Stack, StackConfig};
use stack_core::wire::MacAddr;
use stack_core::{DeviceId, IfAddr, Instant, NetDeviceConfig, Offloads};
use stack_io::{DeviceConfig, IoStats, IoStatsSnapshot, Tap, TapOptions, Uring};

use crate::proto::{self, Clock, Command, DevLink, Exit, Protocol, ReadableFn, StackCtx};

/// Capacity of the command channel (handles -> stack thread).
pub const COMMAND_QUEUE: usize = 256;

const THREAD_NAME: &str = "ustack-uring";

/// How long `spawn` waits for the kernel to see the TAP's carrier (normally a few ms).
const LINK_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "ustack: the stack thread has stopped",
    )
}

/// A handle to a running stack. Clones share the stack; when the last one is dropped
/// the stack thread stops and the drop waits for it to finish.
#[derive(Clone)]
pub struct StackHandle {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
    thread_id: ThreadId,
    /// The attached TAPs, in the order they were given (the first is `DeviceId::ETH0`).
    taps: Vec<AttachedTap>,
}

/// One TAP the stack runs on.
struct AttachedTap {
    /// The stack's device for it.
    dev: DeviceId,
    name: String,
    /// The kernel's ifindex of the TAP, in the namespace it was attached in.
    ifindex: u32,
    stats: Arc<IoStats>,
}

impl fmt::Debug for StackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackHandle")
            .field(
                "taps",
                &self.inner.taps.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How to run a stack, beyond its address.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Impair the link in both directions (loss, duplication, reordering, corruption,
    /// delay, rate), seeded: the stand-in for netem, which this kernel lacks.
    pub impair: Option<ImpairConfig>,
    /// Ask the TAP for checksum and TCP segmentation offload (a virtio-net header on
    /// every frame, TSO super-packets both ways). On by default; if the kernel refuses,
    /// the stack runs without, as it does when this is off.
    pub offload: bool,
    /// Busy polling (`net.core.busy_poll`): after a pass over the devices, sockets
    /// and timers found nothing to do, the stack thread keeps looking for this long
    /// before it sleeps in the kernel, yielding the CPU between looks. A frame that
    /// arrives meanwhile is taken without the thread's wake-up (tens of µs on a VM),
    /// at the price of CPU time spent looking. Zero (the default, as in Linux) parks
    /// at once.
    pub busy_poll: Duration,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            impair: None,
            offload: true,
            busy_poll: Duration::ZERO,
        }
    }
}

/// One TAP for [`StackBuilder::tap`]: the device the stack makes for it and its
/// addresses. The stack's device takes the TAP's name, as `ip link` would show it.
#[derive(Clone, Debug)]
pub struct TapDevice {
    pub tap: String,
    pub mac: MacAddr,
    /// The stack's MTU on this device (1500 by default).
    pub mtu: usize,
    pub addrs: Vec<IfAddr>,
}

impl TapDevice {
    /// A TAP with one address and the MAC ustack derives from it
    /// ([`StackConfig::default_mac`]).
    pub fn new(tap: &str, addr: IfAddr) -> TapDevice {
        TapDevice {
            tap: tap.to_owned(),
            mac: StackConfig::default_mac(addr.addr),
            mtu: 1500,
            addrs: vec![addr],
        }
    }
}

/// Starts a stack on any number of TAPs: each gets a device in the core (ifindex 2,
/// 3, ... in the order given), and all of them share the stack thread's io_uring.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use stack_async::{StackBuilder, TapDevice};
/// use stack_core::IfAddr;
/// let router = StackBuilder::new(7)
///     .ip_forward(true)
///     .tap(TapDevice::new("tap0", IfAddr::new([192, 0, 2, 1].into(), 24)))
///     .tap(TapDevice::new("tap1", IfAddr::new([198, 51, 100, 1].into(), 24)))
///     .spawn()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StackBuilder {
    seed: u64,
    conf: Ipv4Conf,
    taps: Vec<TapDevice>,
    routes: Vec<RouteSpec>,
    /// Default routes installed as given, without checking the gateway is on a link
    /// (what a host's `StackConfig::gateway` has always meant).
    onlink_gateway: Option<Ipv4Addr>,
    options: StackOptions,
}

impl StackBuilder {
    /// A stack with no devices yet, its randomness drawn from `seed`.
    pub fn new(seed: u64) -> StackBuilder {
        StackBuilder {
            seed,
            conf: Ipv4Conf::default(),
            taps: Vec::new(),
            routes: Vec::new(),
            onlink_gateway: None,
            options: StackOptions::default(),
        }
    }

    /// The host `StackHandle::spawn` makes: one TAP with `config`'s address, MAC, MTU,
    /// gateway and forwarding setting.
    pub fn host(tap: &str, config: &StackConfig, seed: u64) -> StackBuilder {
        let mut b = StackBuilder::new(seed)
            .ip_forward(config.ip_forward)
            .tap(TapDevice {
                tap: tap.to_owned(),
                mac: config.mac,
                mtu: config.mtu,
                addrs: vec![IfAddr::new(config.addr, config.prefix_len.min(32))],
            });
        b.onlink_gateway = config.gateway;
        b
    }

    /// Attach one more TAP.
    pub fn tap(mut self, tap: TapDevice) -> StackBuilder {
        self.taps.push(tap);
        self
    }

    /// A static route, installed once every device has its addresses (so a gateway
    /// finds its device as `ip route add` does).
    pub fn route(mut self, route: RouteSpec) -> StackBuilder {
        self.routes.push(route);
        self
    }

    /// `net.ipv4.ip_forward`.
    pub fn ip_forward(mut self, on: bool) -> StackBuilder {
        self.conf.ip_forward = on;
        self
    }

    /// Every `net.ipv4` setting at once.
    pub fn conf(mut self, conf: Ipv4Conf) -> StackBuilder {
        self.conf = conf;
        self
    }

    pub fn options(mut self, options: StackOptions) -> StackBuilder {
        self.options = options;
        self
    }

    /// [`StackOptions::busy_poll`].
    pub fn busy_poll(mut self, spin: Duration) -> StackBuilder {
        self.options.busy_poll = spin;
        self
    }

    /// Attach every TAP and start the stack on a new thread.
    ///
    /// The TAPs are attached here, on the calling thread, so a missing or busy device
    /// is reported by this call and devices are looked up in the caller's network
    /// namespace. The io_uring is created before this returns, for the same reason. It also waits (up to a second) for the kernel to consider each link
    /// running, so the kernel's first frames to us are not dropped on its side. A route
    /// that cannot be installed fails the call with the message `ip route` would print.
    pub fn spawn(self) -> io::Result<StackHandle> {
        if self.taps.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ustack: a stack needs at least one TAP device",
            ));
        }
        let options = self.options.clone();
        let mut attached = Vec::with_capacity(self.taps.len());
        let mut devices = Vec::with_capacity(self.taps.len());
        for spec in &self.taps {
            let tap = Tap::attach_with(
                &spec.tap,
                TapOptions {
                    offload: options.offload,
                },
            )?;
            let offloads = tap.offloads();
            if options.offload && !offloads.tso {
                tracing::info!(
                    device = %spec.tap,
                    "the TAP refused TCP segmentation offload; sending wire-size frames"
                );
            }
            // So that the kernel's first frames towards us are not dropped on its side.
            match tap.wait_running(LINK_UP_WAIT) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    device = %spec.tap,
                    "the TAP device is not up and running; the kernel drops frames to it \
                     until it is (ip link set {} up)",
                    spec.tap
                ),
                Err(e) => tracing::warn!(device = %spec.tap, "cannot read the device flags: {e}"),
            }
            if spec.mtu > tap.mtu() as usize {
                tracing::warn!(
                    device = %spec.tap,
                    stack_mtu = spec.mtu,
                    device_mtu = tap.mtu(),
                    "the stack's MTU is larger than the device's; the kernel will drop larger frames"
                );
            }
            let dev = DeviceId(DeviceId::ETH0.0 + attached.len() as u32);
            attached.push(AttachedTap {
                dev,
                name: spec.tap.clone(),
                ifindex: tap.ifindex(),
                stats: Arc::new(IoStats::new()),
            });
            devices.push((tap, spec.clone(), offloads));
        }

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stats: Vec<Arc<IoStats>> = attached.iter().map(|t| t.stats.clone()).collect();
        let plan = Plan {
            seed: self.seed,
            conf: self.conf,
            devices,
            routes: self.routes,
            onlink_gateway: self.onlink_gateway,
            options,
        };
        let thread = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || stack_thread(plan, cmd_rx, stats, ready_tx))?;
        let thread_id = thread.thread().id();

        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            // The thread died before reporting: it panicked; join tells how.
            Err(_) => {
                let why = match thread.join() {
                    Err(panic) => panic_message(&panic),
                    Ok(_) => "it exited early".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "ustack: the stack thread failed to start: {why}"
                )));
            }
        }

        Ok(StackHandle {
            inner: Arc::new(Inner {
                commands: cmd_tx,
                thread: Mutex::new(Some(thread)),
                thread_id,
                taps: attached,
            }),
        })
    }
}

/// What the stack thread builds the stack from.
struct Plan {
    seed: u64,
    conf: Ipv4Conf,
    devices: Vec<(Tap, TapDevice, Offloads)>,
    routes: Vec<RouteSpec>,
    onlink_gateway: Option<Ipv4Addr>,
    options: StackOptions,
}

impl StackHandle {
    /// Attach to the TAP device `tap_name` and start a host stack on a new thread
    /// ([`StackBuilder::host`]).
    pub fn spawn(tap_name: &str, config: StackConfig, seed: u64) -> io::Result<StackHandle> {
        Self::spawn_with(tap_name, config, seed, StackOptions::default())
    }

    /// [`StackHandle::spawn`] with options (an impaired link, for testing under loss).
    pub fn spawn_with(
        tap_name: &str,
        config: StackConfig,
        seed: u64,
        options: StackOptions,
    ) -> io::Result<StackHandle> {
        StackBuilder::host(tap_name, &config, seed)
            .options(options)
            .spawn()
    }

    /// Run `f` on the stack thread with the stack and the current time, and return its
    /// result. Waits for room in the command channel. The returned future does not
    /// borrow the handle and is `Send`, so it can be spawned on any executor.
    ///
    /// Fails with `NotConnected` if the stack thread has stopped (before or while
    /// running `f`).
    pub fn call<R, F>(&self, f: F) -> impl Future<Output = io::Result<R>> + Send + 'static
    where
        R: Send + 'static,
        F: FnOnce(&mut Stack, Instant) -> R + Send + 'static,
    {
        self.call_ctx(move |ctx| f(ctx.stack, ctx.now))
    }

    /// Like [`StackHandle::call`], with access to the readiness registry as well, so a
    /// socket can be opened and registered in one step.
    pub(crate) fn call_ctx<R, F>(
        &self,
        f: F,
    ) -> impl Future<Output = io::Result<R>> + Send + 'static
    where
        R: Send + 'static,
        F: FnOnce(&mut StackCtx<'_>) -> R + Send + 'static,
    {
        // Each call sends through its own clone: futures' mpsc gives every sender a
        // slot of its own and parks it individually when the channel is full.
        let mut commands = self.inner.commands.clone();
        async move {
            let (reply_tx, reply_rx) = oneshot::channel();
            let job = Box::new(move |ctx: &mut StackCtx<'_>| {
                // The caller may have given up (future dropped): nothing to do then.
                let _ = reply_tx.send(f(ctx));
            });
            commands
                .send(Command::Run(job))
                .await
                .map_err(|_| stopped())?;
            reply_rx.await.map_err(|_| stopped())
        }
    }

    /// Queue `f` to run on the stack thread without waiting for room or for a result,
    /// e.g. from `Drop`. A fresh sender clone always has its own slot, so this only
    /// fails when the stack thread has stopped (returns `false`), and then there is
    /// nothing left to clean up anyway. Commands run in the order they were queued,
    /// whichever handle queued them.
    pub(crate) fn post(&self, f: impl FnOnce(&mut StackCtx<'_>) + Send + 'static) -> bool {
        self.inner
            .commands
            .clone()
            .try_send(Command::Run(Box::new(f)))
            .is_ok()
    }

    /// Call `f` whenever the core reports `Event::Readable(id)`. Replaces an earlier
    /// registration for `id`.
    pub fn register_readable(
        &self,
        id: SocketId,
        f: ReadableFn,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        self.call_ctx(move |ctx| {
            ctx.readers.insert(id, f);
        })
    }

    /// Remove the readiness callback for `id`, if any.
    pub fn unregister_readable(
        &self,
        id: SocketId,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        self.call_ctx(move |ctx| {
            ctx.readers.remove(&id);
        })
    }

    /// The first TAP's device-loop counters now.
    pub fn io_stats(&self) -> IoStatsSnapshot {
        self.inner.taps[0].stats.snapshot()
    }

    /// Every TAP's device and device-loop counters, in the order they were attached.
    pub fn io_stats_all(&self) -> Vec<(DeviceId, String, IoStatsSnapshot)> {
        self.inner
            .taps
            .iter()
            .map(|t| (t.dev, t.name.clone(), t.stats.snapshot()))
            .collect()
    }

    /// The first TAP's interface index, in the namespace it was attached in.
    pub fn ifindex(&self) -> u32 {
        self.inner.taps[0].ifindex
    }

    /// The first TAP's name.
    pub fn tap_name(&self) -> &str {
        &self.inner.taps[0].name
    }

    /// The stack's device for the TAP named `tap`.
    pub fn device_of(&self, tap: &str) -> Option<DeviceId> {
        self.inner
            .taps
            .iter()
            .find(|t| t.name == tap)
            .map(|t| t.dev)
    }

    /// Stop the stack now, even if other clones of this handle exist (their calls then
    /// fail with `NotConnected`), and wait for the thread to end. Returns the device
    /// loop's error if it failed (e.g. the TAP was deleted), or if the thread panicked.
    ///
    /// Blocks the calling thread for as long as the shutdown takes (normally well
    /// under a millisecond: posted reads are cancelled, not waited for).
    pub fn shutdown(self) -> io::Result<()> {
        let _ = self.inner.commands.clone().try_send(Command::Stop);
        self.inner.join()
    }
}

impl Inner {
    fn join(&self) -> io::Result<()> {
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(thread) = thread else {
            return Ok(());
        };
        if thread::current().id() == self.thread_id {
            // Dropped on the stack thread itself (a handle moved into a command): it
            // cannot wait for itself; it ends on its own once this command returns.
            return Ok(());
        }
        match thread.join() {
            Ok(result) => result,
            Err(panic) => Err(io::Error::other(format!(
                "ustack: the stack thread panicked: {}",
                panic_message(&panic)
            ))),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close our end of the command channel first: the protocol task sees the
        // channel end once every clone (ours and those inside pending calls) is gone.
        let (closed, _) = mpsc::channel(0);
        drop(std::mem::replace(&mut self.commands, closed));
        if let Err(e) = self.join() {
            tracing::warn!(device = %self.taps[0].name, "ustack stopped with an error: {e}");
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// The body of the "ustack-uring" thread: build the stack and its ring, report, run.
fn stack_thread(
    plan: Plan,
    commands: mpsc::Receiver<Command>,
    stats: Vec<Arc<IoStats>>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    let clock = Clock::start();
    let mut stack = Stack::with_conf(plan.conf, clock.now(), plan.seed);
    let mut taps = Vec::new();
    let mut links = Vec::new();
    for (tap, spec, offloads) in plan.devices {
        let dev = stack.add_device(NetDeviceConfig {
            name: spec.tap.clone(),
            mac: spec.mac,
            mtu: spec.mtu,
            offloads,
        });
        for a in &spec.addrs {
            if let Err(e) = stack.addr_add(dev, *a) {
                let _ = ready.send(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ustack: cannot add address {a} to {}: {e}", spec.tap),
                )));
                return Ok(());
            }
        }
        let mut link = DevLink::new(dev);
        if let Some(cfg) = &plan.options.impair {
            // Independent streams per direction (and per device) from one seed.
            let mut rx_cfg = cfg.clone();
            rx_cfg.seed ^= u64::from(dev.0 - DeviceId::ETH0.0).wrapping_mul(0x9e37_79b9);
            let mut tx_cfg = rx_cfg.clone();
            tx_cfg.seed ^= 0x7478_5f69_6d70_6169;
            link = link.with_impairment(Impairment::new(rx_cfg), Impairment::new(tx_cfg));
        }
        links.push(link);
        taps.push(tap);
    }
    if let Some(gw) = plan.onlink_gateway {
        let route = FibEntry::unicast(Ipv4Addr::UNSPECIFIED, 0, Some(gw), DeviceId::ETH0);
        let _ = stack.fib_mut().insert(Table::Main, route);
    }
    for r in plan.routes {
        if let Err(e) = stack.route_add(r) {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let _ = ready.send(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ustack: cannot add route {}/{}{via}: {e}",
                    r.prefix, r.prefix_len
                ),
            )));
            return Ok(());
        }
    }
    // Receive into the core's own pool, so buffers cycle between the devices and the
    // stack without allocation.
    let uring = match Uring::new(taps, stats, stack.pool().clone(), DeviceConfig::default()) {
        Ok(u) => u,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));

    let protocol = Protocol::new(stack, links, commands);
    let (exit, result) = proto::run(protocol, uring, clock, plan.options.busy_poll);
    if let (Exit::Device, Err(e)) = (&exit, &result) {
        tracing::error!("ustack: {e}; stack stopped");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn handle_is_send_sync_clone() {
        assert_send_sync_clone::<StackHandle>();
    }

    #[test]
    fn missing_tap_is_reported_by_spawn() {
        let config = StackConfig::new(
            stack_core::wire::MacAddr([2, 0, 0, 0, 0, 2]),
            std::net::Ipv4Addr::new(192, 0, 2, 2),
            24,
        );
        let err = StackHandle::spawn("ustk-nodev8", config, 1).expect_err("no such TAP");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err
            .to_string()
            .starts_with("no TAP device named \"ustk-nodev8\""));
    }
}
