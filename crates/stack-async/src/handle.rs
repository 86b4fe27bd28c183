//! `StackHandle`: starts the stack thread and talks to it.
//!
//! ```text
//!   handles (any thread, any executor)
//!        | command channel (bounded, 256)
//!        v
//!   +-------------------- thread "ustack-uring" (tokio-uring runtime) ---------------+
//!   |  protocol task: Stack  <-- RX ring (1024) --  device loop  <-- TAP fd (io_uring) |
//!   |                        --- TX ring (1024) -->              -->                  |
//!   +---------------------------------------------------------------------------------+
//! ```
//!
//! The rings are bounded like a NIC's descriptor rings: a full RX ring drops frames in
//! the device loop, a full TX ring leaves frames queued in the core.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, ThreadId};

use futures::channel::{mpsc, oneshot};
use futures::SinkExt;
use stack_core::impair::{ImpairConfig, Impairment};
use stack_core::stack::{SocketId, Stack, StackConfig};
use stack_core::Instant;
use stack_io::{run_device, DeviceConfig, IoStats, IoStatsSnapshot, Tap, TapOptions};

use crate::proto::{Clock, Command, Exit, Protocol, ReadableFn, StackCtx};

/// Capacity of the RX ring (device -> protocol task), in frames.
pub const RX_RING: usize = 1024;
/// Capacity of the TX ring (protocol task -> device), in frames.
pub const TX_RING: usize = 1024;
/// Capacity of the command channel (handles -> protocol task).
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
    stats: Arc<IoStats>,
    ifindex: u32,
    tap_name: String,
}

impl fmt::Debug for StackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackHandle")
            .field("tap", &self.inner.tap_name)
            .field("ifindex", &self.inner.ifindex)
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
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            impair: None,
            offload: true,
        }
    }
}

impl StackHandle {
    /// Attach to the TAP device `tap_name` and start the stack on a new thread.
    ///
    /// The TAP is attached here, on the calling thread, so a missing or busy device is
    /// reported by this call and the device is looked up in the caller's network
    /// namespace. The io_uring runtime is created before this returns, for the same
    /// reason. It also waits (up to a second) for the kernel to consider the link
    /// running, so the kernel's first frames to us are not dropped on its side.
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
        let tap = Tap::attach_with(
            tap_name,
            TapOptions {
                offload: options.offload,
            },
        )?;
        let mut config = config;
        config.offloads = tap.offloads();
        if options.offload && !config.offloads.tso {
            tracing::info!(
                device = tap_name,
                "the TAP refused TCP segmentation offload; sending wire-size frames"
            );
        }
        let ifindex = tap.ifindex();
        // So that the kernel's first frames towards us are not dropped on its side.
        match tap.wait_running(LINK_UP_WAIT) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                device = tap_name,
                "the TAP device is not up and running; the kernel drops frames to it \
                 until it is (ip link set {tap_name} up)"
            ),
            Err(e) => tracing::warn!(device = tap_name, "cannot read the device flags: {e}"),
        }
        if config.mtu > tap.mtu() as usize {
            tracing::warn!(
                device = tap_name,
                stack_mtu = config.mtu,
                device_mtu = tap.mtu(),
                "the stack's MTU is larger than the device's; the kernel will drop larger frames"
            );
        }
        let stats = Arc::new(IoStats::new());
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();

        let thread_stats = stats.clone();
        let thread = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                stack_thread(tap, config, seed, options, cmd_rx, thread_stats, ready_tx)
            })?;
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
                stats,
                ifindex,
                tap_name: tap_name.to_owned(),
            }),
        })
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

    /// The device counters now.
    pub fn io_stats(&self) -> IoStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The TAP's interface index, in the namespace it was attached in.
    pub fn ifindex(&self) -> u32 {
        self.inner.ifindex
    }

    pub fn tap_name(&self) -> &str {
        &self.inner.tap_name
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
            tracing::warn!(device = %self.tap_name, "ustack stopped with an error: {e}");
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

/// The body of the "ustack-uring" thread.
///
/// We build the runtime with `tokio_uring::Runtime::new` + `block_on` rather than
/// `tokio_uring::start`, which is the same two steps but panics when io_uring is not
/// available; this way that failure comes back from `spawn` as an error.
fn stack_thread(
    tap: Tap,
    config: StackConfig,
    seed: u64,
    options: StackOptions,
    commands: mpsc::Receiver<Command>,
    stats: Arc<IoStats>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    let rt = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!(
                    "ustack: cannot create an io_uring instance: {e} (is io_uring disabled \
                     by the kernel.io_uring_disabled sysctl or a seccomp filter?)"
                ),
            )));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));

    rt.block_on(async move {
        let clock = Clock::start();
        let stack = Stack::new(config, clock.now(), seed);
        // Receive into the core's own pool, so buffers cycle between the device and
        // the stack without allocation.
        let pool = stack.pool().clone();
        let (rx_tx, rx_rx) = mpsc::channel(RX_RING);
        let (tx_tx, tx_rx) = mpsc::channel(TX_RING);
        let device = tokio_uring::spawn(run_device(
            tap,
            pool,
            rx_tx,
            tx_rx,
            stats,
            DeviceConfig::default(),
        ));

        // Ends when the handles are gone or the device loop ended; dropping it closes
        // the TX ring, which ends the device loop in turn.
        let mut protocol = Protocol::new(stack, clock, rx_rx, tx_tx, commands);
        if let Some(cfg) = options.impair {
            // Independent streams per direction from one seed.
            let mut tx_cfg = cfg.clone();
            tx_cfg.seed ^= 0x7478_5f69_6d70_6169;
            protocol = protocol.with_impairment(Impairment::new(cfg), Impairment::new(tx_cfg));
        }
        let exit = protocol.await;
        let device_result = match device.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!(
                "ustack: the device task failed: {e}"
            ))),
        };
        if exit == Exit::Device {
            if let Err(e) = &device_result {
                tracing::error!("ustack: the device loop failed, stack stopped: {e}");
            }
        }
        device_result
    })
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
