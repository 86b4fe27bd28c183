//! The stack thread: one loop that owns the sans-IO `Stack` and every TAP's ring.
//!
//! It is the kernel's NAPI poll loop and softirq in one: take what the devices
//! completed (`netif_receive_skb` per frame), run the handles' commands and the timers
//! that are due, let sockets drain what became readable, move frames from the qdiscs to
//! the devices' TX rings while they have room, and submit all of it to the kernel in
//! one `io_uring_enter`. When a pass finds nothing to do it spins for up to
//! [`crate::StackOptions::busy_poll`] (like `net.core.busy_poll`), looking at the ring
//! without sleeping, and then parks in the kernel until a frame, a handle's
//! notification or the next timer.
//!
//! [`Protocol`] is the part that knows the stack; [`run`] joins it to a
//! [`stack_io::Uring`]. Tests drive a `Protocol` by hand, with no ring at all.

use std::collections::HashMap;
use std::io;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use stack_core::gso;
use stack_core::impair::Impairment;
use stack_core::stack::{Event, SocketId, Stack};
use stack_core::DeviceId;
use stack_core::{Instant, Skb};
use stack_io::{Completion, Uring};

/// Work items taken per source per pass (commands, expired timers) before the devices
/// get their turn again, so a flood on one source cannot starve the others (the
/// kernel's NAPI budget, in spirit).
const BUDGET: usize = 64;

/// How long [`run`] waits for the last writes to complete when the stack stops.
const FLUSH_LIMIT: Duration = Duration::from_millis(200);

/// Called when the core reports `Event::Readable(id)`: the socket moves its messages
/// from the core into its own receive queue.
pub type ReadableFn = Box<dyn FnMut(&mut Stack) + Send>;

/// Called for `Event::Readable(id)` and `Event::Writable(id)` (`sk_write_space`, or a
/// connect that completed) of a socket registered in `StackCtx::ready`, with the time of
/// this pass: TCP's calls take `now` (`tcp_recvmsg` may send a window update, `tcp_sendmsg`
/// transmits), which a `ReadableFn` does not get.
pub(crate) type ReadyFn = Box<dyn FnMut(&mut Stack, Instant, Event) + Send>;

/// What a command closure gets on the stack thread.
pub(crate) struct StackCtx<'a> {
    pub stack: &'a mut Stack,
    pub now: Instant,
    pub readers: &'a mut HashMap<SocketId, ReadableFn>,
    pub ready: &'a mut HashMap<SocketId, ReadyFn>,
}

pub(crate) type Job = Box<dyn FnOnce(&mut StackCtx<'_>) + Send>;

pub(crate) enum Command {
    Run(Job),
    /// Stop now, even though handles remain (`StackHandle::shutdown`).
    Stop,
}

/// Maps wall-clock time to the core's virtual `Instant`: microseconds since the epoch
/// taken when the stack thread started.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        let micros = self.epoch.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

/// The stack thread's side of one device: the core's device and the impairment
/// between it and the wire, if any. Its rings are the [`Uring`]'s.
pub(crate) struct DevLink {
    pub id: DeviceId,
    /// The seeded impairment layer (`ustack host --impair`), one per direction: this
    /// kernel has no netem, so lossy links are made here, between the wire and the core.
    impair: Option<Box<(Impairment, Impairment)>>,
}

impl DevLink {
    pub fn new(id: DeviceId) -> Self {
        DevLink { id, impair: None }
    }

    /// Impair frames in both directions: `rx` between the device and the core, `tx`
    /// between the core and the device.
    pub fn with_impairment(mut self, rx: Impairment, tx: Impairment) -> DevLink {
        self.impair = Some(Box::new((rx, tx)));
        self
    }

    fn impair_deadline(&self) -> Option<Instant> {
        self.impair.as_ref().and_then(|i| {
            [i.0.poll_timeout(), i.1.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        })
    }
}

/// Why the stack thread ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Every handle is gone, or one asked to stop.
    Handles,
    /// A device failed (its TAP was deleted, say).
    Device,
}

/// The stack and what its handles registered; everything but the ring.
pub(crate) struct Protocol {
    stack: Stack,
    links: Vec<DevLink>,
    commands: mpsc::Receiver<Command>,
    readers: HashMap<SocketId, ReadableFn>,
    ready: HashMap<SocketId, ReadyFn>,
}

impl Protocol {
    pub fn new(stack: Stack, links: Vec<DevLink>, commands: mpsc::Receiver<Command>) -> Protocol {
        Protocol {
            stack,
            links,
            commands,
            readers: HashMap::new(),
            ready: HashMap::new(),
        }
    }

    /// The earliest of the core's and the impairment queues' deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let imp = self.links.iter().filter_map(DevLink::impair_deadline).min();
        [self.stack.poll_timeout(), imp].into_iter().flatten().min()
    }

    /// A frame from device `dev` (an index into the links): `netif_receive_skb`, or the
    /// RX impairment first.
    fn receive(&mut self, now: Instant, dev: usize, mut skb: Skb) {
        skb.tstamp = now;
        let Some(link) = self.links.get_mut(dev) else {
            return;
        };
        match link.impair.as_mut() {
            Some(imp) => {
                // The impairment stands for a wire: it sees the segments a GSO
                // super-packet from the kernel stands for (impairing 64 KB as one frame
                // would lose 45 segments).
                let mut frames = Vec::new();
                gso::validate_xmit(skb, self.stack.pool(), &mut frames);
                for frame in frames {
                    imp.0.push(now, frame);
                }
            }
            None => self.stack.netif_receive_skb(now, link.id, skb),
        }
    }

    /// Commands from handles, up to the budget: how many ran, or why to stop.
    fn run_commands(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<usize, Exit> {
        for n in 0..BUDGET {
            match self.commands.poll_next_unpin(cx) {
                Poll::Ready(Some(Command::Run(job))) => {
                    let mut ctx = StackCtx {
                        stack: &mut self.stack,
                        now,
                        readers: &mut self.readers,
                        ready: &mut self.ready,
                    };
                    job(&mut ctx);
                }
                Poll::Ready(Some(Command::Stop) | None) => return Err(Exit::Handles),
                Poll::Pending => return Ok(n),
            }
        }
        Ok(BUDGET)
    }

    /// The core's timers that are due, and impaired frames whose time has come.
    fn run_timers(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while n < BUDGET && self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
            n += 1;
        }
        for link in &mut self.links {
            if let Some(imp) = link.impair.as_mut() {
                while let Some(skb) = imp.0.poll(now) {
                    self.stack.netif_receive_skb(now, link.id, skb);
                    n += 1;
                }
            }
        }
        n
    }

    /// Readiness: let each socket drain what the core queued for it.
    fn dispatch_events(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(event) = self.stack.poll_event() {
            n += 1;
            // A match, not `if let`: the core will grow more events, and then this
            // is where they get dispatched.
            #[allow(unreachable_patterns, clippy::single_match)]
            match event {
                Event::Readable(id) => {
                    if let Some(on_readable) = self.readers.get_mut(&id) {
                        on_readable(&mut self.stack);
                    } else if let Some(on_ready) = self.ready.get_mut(&id) {
                        on_ready(&mut self.stack, now, event);
                    }
                }
                Event::Writable(id) => {
                    if let Some(on_ready) = self.ready.get_mut(&id) {
                        on_ready(&mut self.stack, now, event);
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// Move up to `room` frames of device `dev` from the core (or its TX impairment) to
    /// `out`. The rest wait in the core's qdisc, as a driver's `netif_stop_queue`
    /// holds packets there until the ring has room again.
    fn transmit(
        &mut self,
        now: Instant,
        dev: usize,
        room: usize,
        out: &mut dyn FnMut(Skb),
    ) -> usize {
        let Some(link) = self.links.get_mut(dev) else {
            return 0;
        };
        let mut n = 0;
        match link.impair.as_mut() {
            Some(imp) => {
                // Everything the core sends enters the TX impairment (which is bounded
                // and counts its own overflow); what is due leaves for the ring.
                let mut frames = Vec::new();
                while let Some(skb) = self.stack.poll_transmit_dev(now, link.id) {
                    gso::validate_xmit(skb, self.stack.pool(), &mut frames);
                    for frame in frames.drain(..) {
                        imp.1.push(now, frame);
                    }
                }
                while n < room {
                    let Some(skb) = imp.1.poll(now) else { break };
                    out(skb);
                    n += 1;
                }
            }
            None => {
                while n < room {
                    let Some(skb) = self.stack.poll_transmit_dev(now, link.id) else {
                        break;
                    };
                    out(skb);
                    n += 1;
                }
            }
        }
        n
    }
}

/// Gives freed memory back to the system when the sockets that used it are gone: the
/// allocator keeps what a closed connection freed (measured: 10,000 closed connections
/// left ustack host's RSS 30 MB above its start), so after the socket count has fallen
/// by half and by at least `TRIM_MIN_DROP` since its peak, `malloc_trim` returns the
/// free pages of every arena (glibc; elsewhere nothing is done).
#[derive(Default)]
struct TrimWatch {
    peak: usize,
}

/// Sockets that must have closed since the peak before a trim is worth its cost (it
/// walks the heap: a millisecond or so for a few hundred megabytes).
const TRIM_MIN_DROP: usize = 1000;

impl TrimWatch {
    fn check(&mut self, sockets: usize) {
        self.peak = self.peak.max(sockets);
        if self.peak - sockets >= TRIM_MIN_DROP && sockets <= self.peak / 2 {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim has no preconditions; it only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
            self.peak = sockets;
        }
    }
}

/// Run the stack on `uring` until the handles are gone or a device fails. `busy_poll`:
/// how long a pass that found nothing keeps looking before the thread parks.
pub(crate) fn run(
    mut p: Protocol,
    mut uring: Uring,
    clock: Clock,
    busy_poll: Duration,
) -> (Exit, io::Result<()>) {
    let waker = Waker::from(uring.notifier());
    let mut cx = Context::from_waker(&waker);
    let mut last_work = std::time::Instant::now();
    let mut trim = TrimWatch::default();
    let exit = loop {
        let now = clock.now();
        let mut work = 0;
        let mut deliver = |c: Completion| match c {
            Completion::Frame { dev, skb } => p.receive(now, dev, skb),
        };
        match uring.poll(&mut deliver) {
            Ok(n) => work += n,
            Err(e) => return (Exit::Device, Err(e)),
        }
        // A notification only says "look at the channels", which we do on every pass.
        uring.take_notified();
        match p.run_commands(&mut cx, now) {
            Ok(n) => work += n,
            Err(exit) => break exit,
        }
        work += p.run_timers(now);
        work += p.dispatch_events(now);
        for dev in 0..p.links.len() {
            let room = uring.tx_room(dev);
            let mut failed = None;
            work += p.transmit(now, dev, room, &mut |skb| {
                if let Err(e) = uring.transmit(dev, skb) {
                    failed.get_or_insert(e);
                }
            });
            if let Some(e) = failed {
                return (Exit::Device, Err(e));
            }
        }
        trim.check(p.stack.socket_count());
        if work > 0 {
            last_work = std::time::Instant::now();
            continue;
        }
        if !busy_poll.is_zero() && last_work.elapsed() < busy_poll {
            // Busy polling: the next pass looks at the ring again without sleeping. Give
            // the CPU to anything else runnable on it meanwhile (on a small machine,
            // often the very peer we wait for).
            std::thread::yield_now();
            continue;
        }
        let timeout = p.next_deadline().map(|d| {
            Duration::from_micros(d.total_micros().saturating_sub(clock.now().total_micros()))
        });
        if let Err(e) = uring.wait(timeout) {
            return (Exit::Device, Err(e));
        }
    };
    // Stopping: let the writes in flight reach the kernel.
    (exit, uring.flush(FLUSH_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use stack_core::stack::StackConfig;
    use stack_core::wire::MacAddr;

    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// "Who has 192.0.2.2? Tell 192.0.2.1", from the peer.
    fn arp_request_from_peer() -> Skb {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&PEER_IP.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&OUR_IP.octets());
        Skb::from_vec(f)
    }

    fn is_arp_reply(f: &[u8]) -> bool {
        f.len() >= 22 && f[12..14] == [0x08, 0x06] && f[21] == 2
    }

    /// A host protocol on one device (index 0), with the sender of its command channel.
    fn protocol(link: impl FnOnce(DevLink) -> DevLink) -> (Protocol, mpsc::Sender<Command>) {
        let stack = Stack::new(
            StackConfig::new(MacAddr(OUR_MAC), OUR_IP, 24),
            Instant::ZERO,
            1,
        );
        let (commands, command_rx) = mpsc::channel(16);
        let links = vec![link(DevLink::new(DeviceId::ETH0))];
        (Protocol::new(stack, links, command_rx), commands)
    }

    fn take(p: &mut Protocol, now: Instant, room: usize) -> Vec<Skb> {
        let mut out = Vec::new();
        p.transmit(now, 0, room, &mut |skb| out.push(skb));
        out
    }

    #[test]
    fn a_full_tx_ring_leaves_frames_in_the_core_until_there_is_room() {
        let (mut p, _commands) = protocol(|l| l);
        let now = Instant::ZERO;
        // The peer asks for us: the core learns its MAC and answers. Then eight echo
        // requests: eight more frames.
        p.receive(now, 0, arp_request_from_peer());
        let id = p.stack.ping_open();
        for seq in 0..8 {
            p.stack
                .ping_sendmsg(now, id, PEER_IP, seq, b"x")
                .expect("send");
        }
        // One slot in the ring: one frame moves, the rest wait in the core.
        assert_eq!(take(&mut p, now, 1).len(), 1);
        let pending = p.stack.tx_pending();
        assert!(pending >= 8, "frames must stay in the core, got {pending}");
        assert!(take(&mut p, now, 0).is_empty(), "no room, nothing moves");
        // Room again: the rest leave, the echo requests in order.
        let echo_seqs: Vec<u16> = take(&mut p, now, 64)
            .iter()
            .map(|skb| skb.data())
            .filter(|f| u16::from_be_bytes([f[12], f[13]]) == 0x0800)
            .map(|f| {
                let icmp = &f[14 + 20..];
                assert_eq!(icmp[0], 8, "echo request");
                u16::from_be_bytes([icmp[6], icmp[7]])
            })
            .collect();
        assert_eq!(echo_seqs, (0..8).collect::<Vec<u16>>());
        assert_eq!(p.stack.tx_pending(), 0);
    }

    /// `--impair`: frames pass the seeded impairment layer both ways, here a 50 ms delay
    /// each way, then total loss.
    #[test]
    fn impairment_sits_between_the_device_and_the_core() {
        let ms = |n: u64| Instant::from_micros(n * 1000);
        let impaired = |spec: &str| {
            let cfg: stack_core::impair::ImpairConfig = spec.parse().unwrap();
            move |l: DevLink| l.with_impairment(Impairment::new(cfg.clone()), Impairment::new(cfg))
        };

        let (mut p, _c) = protocol(impaired("delay=50ms,seed=1"));
        p.receive(ms(0), 0, arp_request_from_peer());
        // Our own gratuitous ARP may be on its way; no reply yet in either direction.
        assert!(!take(&mut p, ms(0), 64)
            .iter()
            .any(|s| is_arp_reply(s.data())));
        assert_eq!(
            p.next_deadline(),
            Some(ms(50)),
            "the request is due at 50 ms"
        );
        // At 50 ms the request reaches the core, whose reply enters the TX delay.
        p.run_timers(ms(50));
        assert!(!take(&mut p, ms(50), 64)
            .iter()
            .any(|s| is_arp_reply(s.data())));
        let replies = take(&mut p, ms(100), 64);
        assert!(
            replies.iter().any(|s| is_arp_reply(s.data())),
            "the reply leaves after 50 ms each way"
        );

        let (mut p, _c) = protocol(impaired("loss=100%,seed=1"));
        p.receive(ms(0), 0, arp_request_from_peer());
        for t in [0, 50, 100, 1000] {
            p.run_timers(ms(t));
            assert!(take(&mut p, ms(t), 64).is_empty(), "everything is lost");
        }
    }

    #[test]
    fn commands_run_in_order_and_stop_or_a_closed_channel_ends_the_loop() {
        let (mut p, mut commands) = protocol(|l| l);
        let mut cx = Context::from_waker(Waker::noop());
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let seen = seen_tx.clone();
            commands
                .try_send(Command::Run(Box::new(move |ctx| {
                    assert_eq!(ctx.now, Instant::from_micros(7));
                    seen.send(i).unwrap();
                })))
                .unwrap();
        }
        assert_eq!(p.run_commands(&mut cx, Instant::from_micros(7)), Ok(3));
        assert_eq!(seen_rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(p.run_commands(&mut cx, Instant::ZERO), Ok(0));
        commands.try_send(Command::Stop).unwrap();
        assert_eq!(p.run_commands(&mut cx, Instant::ZERO), Err(Exit::Handles));

        let (mut p, commands) = protocol(|l| l);
        drop(commands);
        assert_eq!(p.run_commands(&mut cx, Instant::ZERO), Err(Exit::Handles));
    }

    #[test]
    fn clock_maps_elapsed_time() {
        let clock = Clock::start();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        let t1 = clock.now();
        assert!(t1.total_micros() >= t0.total_micros() + 2000);
    }
}
