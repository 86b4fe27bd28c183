//! The protocol task: the sans-IO `Stack` driven by the RX ring, the command channel
//! and a timer, feeding the TX ring. It runs on the stack thread, by default next to the
//! device loops; with `StackOptions::device_threads` they run on threads of their own
//! and only the rings (futures' mpsc channels, which wake across threads) join them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, StreamExt};
use stack_core::gso;
use stack_core::impair::Impairment;
use stack_core::stack::{Event, SocketId, Stack};
use stack_core::DeviceId;
use stack_core::{Instant, Skb};

/// Work items taken per source per poll (RX frames, commands, expired timers) before
/// yielding, so a device loop on the same thread keeps draining the wire and a
/// flood on one source cannot starve the others (the kernel's NAPI budget, in spirit).
const BUDGET: usize = 64;

/// Called when the core reports `Event::Readable(id)`: the socket moves its messages
/// from the core into its own receive queue.
pub type ReadableFn = Box<dyn FnMut(&mut Stack) + Send>;

/// Called for `Event::Readable(id)` and `Event::Writable(id)` (`sk_write_space`, or a
/// connect that completed) of a socket registered in `StackCtx::ready`, with the time of
/// this poll: TCP's calls take `now` (`tcp_recvmsg` may send a window update, `tcp_sendmsg`
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

    /// The tokio instant of a core deadline. One that does not fit (the core saying
    /// "never" with a huge value) becomes a day from now: it will be re-read anyway.
    pub fn deadline(&self, t: Instant) -> tokio::time::Instant {
        let far = || std::time::Instant::now() + Duration::from_secs(86_400);
        let at = self
            .epoch
            .checked_add(Duration::from_micros(t.total_micros()))
            .unwrap_or_else(far);
        tokio::time::Instant::from_std(at)
    }
}

/// The protocol task's end of one device: its RX and TX rings, and the impairment
/// between it and the core, if any.
pub(crate) struct DevLink {
    pub id: DeviceId,
    rx_ring: mpsc::Receiver<Skb>,
    tx_ring: mpsc::Sender<Skb>,
    /// The seeded impairment layer (`ustack host --impair`), one per direction: this
    /// kernel has no netem, so lossy links are made here, between the wire and the core.
    impair: Option<Box<(Impairment, Impairment)>>,
}

impl DevLink {
    pub fn new(id: DeviceId, rx_ring: mpsc::Receiver<Skb>, tx_ring: mpsc::Sender<Skb>) -> Self {
        DevLink {
            id,
            rx_ring,
            tx_ring,
            impair: None,
        }
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

pub(crate) struct Protocol {
    stack: Stack,
    clock: Clock,
    links: Vec<DevLink>,
    commands: mpsc::Receiver<Command>,
    readers: HashMap<SocketId, ReadableFn>,
    ready: HashMap<SocketId, ReadyFn>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Protocol {
    /// Must be called inside the runtime (the timer registers with its time driver).
    pub fn new(
        stack: Stack,
        clock: Clock,
        links: Vec<DevLink>,
        commands: mpsc::Receiver<Command>,
    ) -> Protocol {
        let idle = clock.deadline(Instant::from_micros(u64::MAX));
        Protocol {
            stack,
            clock,
            links,
            commands,
            readers: HashMap::new(),
            ready: HashMap::new(),
            timer: Box::pin(tokio::time::sleep_until(idle)),
        }
    }

    /// The earliest of the core's and the impairment queues' deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let imp = self.links.iter().filter_map(DevLink::impair_deadline).min();
        [self.stack.poll_timeout(), imp].into_iter().flatten().min()
    }
}

/// Why the task ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Every handle is gone, or one asked to stop.
    Handles,
    /// A device loop ended (it closed its RX ring or its TX ring).
    Device,
}

impl Future for Protocol {
    type Output = Exit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit> {
        let this = self.get_mut();
        let now = this.clock.now();
        // Set when a budget ran out or time moved past a deadline during this poll:
        // there is more to do, so ask to be polled again after the others had a turn.
        let mut again = false;

        // Commands from handles: socket calls, registrations, stop.
        for n in 1..=BUDGET {
            match this.commands.poll_next_unpin(cx) {
                Poll::Ready(Some(Command::Run(job))) => {
                    let mut ctx = StackCtx {
                        stack: &mut this.stack,
                        now,
                        readers: &mut this.readers,
                        ready: &mut this.ready,
                    };
                    job(&mut ctx);
                }
                Poll::Ready(Some(Command::Stop) | None) => return Poll::Ready(Exit::Handles),
                Poll::Pending => break,
            }
            again |= n == BUDGET;
        }

        // RX rings: frames from each device, up to a budget per device
        // (`netif_receive_skb` per frame).
        for link in &mut this.links {
            for n in 1..=BUDGET {
                match link.rx_ring.poll_next_unpin(cx) {
                    Poll::Ready(Some(mut skb)) => {
                        skb.tstamp = now;
                        match link.impair.as_mut() {
                            Some(imp) => {
                                // The impairment stands for a wire: it sees the segments
                                // a GSO super-packet from the kernel stands for
                                // (impairing 64 KB as one frame would lose 45 segments).
                                let mut frames = Vec::new();
                                gso::validate_xmit(skb, this.stack.pool(), &mut frames);
                                for frame in frames {
                                    imp.0.push(now, frame);
                                }
                            }
                            None => this.stack.netif_receive_skb(now, link.id, skb),
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(Exit::Device),
                    Poll::Pending => break,
                }
                again |= n == BUDGET;
            }
            // Impaired received frames whose (delayed, reordered) time has come.
            if let Some(imp) = link.impair.as_mut() {
                while let Some(skb) = imp.0.poll(now) {
                    this.stack.netif_receive_skb(now, link.id, skb);
                }
            }
        }

        // Timers: run what is due, then arm the sleep for the next deadline.
        let mut fired = 0;
        while let Some(deadline) = this.next_deadline() {
            if deadline <= now {
                if fired == BUDGET {
                    again = true;
                    break;
                }
                if this.stack.poll_timeout().is_some_and(|t| t <= now) {
                    this.stack.handle_timeout(now);
                } else {
                    let mut tx_due = false;
                    for link in &mut this.links {
                        let Some(imp) = link.impair.as_mut() else {
                            continue;
                        };
                        while let Some(skb) = imp.0.poll(now) {
                            this.stack.netif_receive_skb(now, link.id, skb);
                        }
                        // TX frames due now are moved below, with the ring's room.
                        tx_due |= imp.1.poll_timeout().is_some_and(|t| t <= now);
                    }
                    if tx_due {
                        again = true;
                        break;
                    }
                }
                fired += 1;
                continue;
            }
            let at = this.clock.deadline(deadline);
            if this.timer.deadline() != at {
                this.timer.as_mut().reset(at);
            }
            // Already elapsed: `now` is stale by now; take a fresh one on the next poll.
            if this.timer.as_mut().poll(cx).is_ready() {
                again = true;
            }
            break;
        }

        // Readiness: let each socket drain what the core queued for it.
        while let Some(event) = this.stack.poll_event() {
            // A match, not `if let`: the core will grow more events, and then this
            // is where they get dispatched.
            #[allow(unreachable_patterns, clippy::single_match)]
            match event {
                Event::Readable(id) => {
                    if let Some(on_readable) = this.readers.get_mut(&id) {
                        on_readable(&mut this.stack);
                    } else if let Some(on_ready) = this.ready.get_mut(&id) {
                        on_ready(&mut this.stack, now, event);
                    }
                }
                Event::Writable(id) => {
                    if let Some(on_ready) = this.ready.get_mut(&id) {
                        on_ready(&mut this.stack, now, event);
                    }
                }
                _ => {}
            }
        }

        // TX rings: move frames out of the core only while a device's ring has room.
        // When it is full we stop pulling and the rest wait in the core's queue, as a
        // driver's `netif_stop_queue` holds packets in the qdisc; `poll_ready` has
        // registered us to be woken when the device frees a slot.
        for link in &mut this.links {
            if let Some(imp) = link.impair.as_mut() {
                // Impaired path: everything the core sends enters the TX impairment
                // (which is bounded and counts its own overflow), and what is due
                // leaves for the ring below.
                let mut frames = Vec::new();
                while let Some(skb) = this.stack.poll_transmit_dev(now, link.id) {
                    gso::validate_xmit(skb, this.stack.pool(), &mut frames);
                    for frame in frames.drain(..) {
                        imp.1.push(now, frame);
                    }
                }
            }
            let mut tx = Pin::new(&mut link.tx_ring);
            loop {
                match tx.as_mut().poll_ready(cx) {
                    Poll::Ready(Ok(())) => match match link.impair.as_mut() {
                        Some(imp) => imp.1.poll(now),
                        None => this.stack.poll_transmit_dev(now, link.id),
                    } {
                        Some(skb) => {
                            if tx.as_mut().start_send(skb).is_err() {
                                return Poll::Ready(Exit::Device);
                            }
                        }
                        None => break,
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Exit::Device),
                    Poll::Pending => break,
                }
            }
        }

        if again {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use futures::SinkExt;
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

    fn run(job: impl FnOnce(&mut StackCtx<'_>) + Send + 'static) -> Command {
        Command::Run(Box::new(job))
    }

    /// The protocol task with a fake device: we play the device loop on the rings.
    #[test]
    fn full_tx_ring_leaves_frames_in_the_core_until_there_is_room() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let clock = Clock::start();
            let stack = Stack::new(
                StackConfig::new(MacAddr(OUR_MAC), OUR_IP, 24),
                clock.now(),
                1,
            );
            let (mut rx_in, rx_ring) = mpsc::channel(16);
            // Buffer 0: the ring holds one frame (the sender's own slot).
            let (tx_ring, mut tx_out) = mpsc::channel(0);
            let (mut commands, command_rx) = mpsc::channel(16);
            let links = vec![DevLink::new(DeviceId::ETH0, rx_ring, tx_ring)];
            let task = tokio::task::spawn_local(Protocol::new(stack, clock, links, command_rx));

            // The peer asks for us: the core learns its MAC and answers.
            rx_in.send(arp_request_from_peer()).await.unwrap();
            // Eight echo requests in one command: eight more frames.
            let (done_tx, done_rx) = futures::channel::oneshot::channel();
            commands
                .send(run(move |ctx| {
                    let id = ctx.stack.ping_open();
                    for seq in 0..8 {
                        ctx.stack
                            .ping_sendmsg(ctx.now, id, PEER_IP, seq, b"x")
                            .expect("send");
                    }
                    let _ = done_tx.send(());
                }))
                .await
                .unwrap();
            done_rx.await.unwrap();
            tokio::task::yield_now().await;

            // The ring is full with one frame; the rest wait in the core.
            let (pending_tx, pending_rx) = futures::channel::oneshot::channel();
            commands
                .send(run(move |ctx| {
                    let _ = pending_tx.send(ctx.stack.tx_pending());
                }))
                .await
                .unwrap();
            let pending = pending_rx.await.unwrap();
            assert!(pending >= 8, "frames must stay in the core, got {pending}");

            // Take them one at a time: each freed slot wakes the task to move the next.
            // ARP frames (our announcement, request, reply) come in between.
            let mut echo_seqs = Vec::new();
            while echo_seqs.len() < 8 {
                let skb = tokio::time::timeout(Duration::from_secs(2), tx_out.next())
                    .await
                    .expect("the next frame once there is room")
                    .expect("TX ring open");
                let f = skb.data();
                if u16::from_be_bytes([f[12], f[13]]) == 0x0800 {
                    let icmp = &f[14 + 20..];
                    assert_eq!(icmp[0], 8, "echo request");
                    echo_seqs.push(u16::from_be_bytes([icmp[6], icmp[7]]));
                }
            }
            assert_eq!(echo_seqs, (0..8).collect::<Vec<u16>>());

            // Closing the command channel ends the task.
            drop(commands);
            assert_eq!(task.await.unwrap(), Exit::Handles);
        });
    }

    /// `--impair`: frames pass the seeded impairment layer both ways, here a 50 ms
    /// delay each way and then total loss on a second run.
    #[test]
    fn impairment_sits_between_the_device_and_the_core() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            for (spec, answered) in [("delay=50ms,seed=1", true), ("loss=100%,seed=1", false)] {
                let cfg: stack_core::impair::ImpairConfig = spec.parse().unwrap();
                let clock = Clock::start();
                let stack = Stack::new(
                    StackConfig::new(MacAddr(OUR_MAC), OUR_IP, 24),
                    clock.now(),
                    1,
                );
                let (mut rx_in, rx_ring) = mpsc::channel(16);
                let (tx_ring, mut tx_out) = mpsc::channel(16);
                let (commands, command_rx) = mpsc::channel(16);
                let link = DevLink::new(DeviceId::ETH0, rx_ring, tx_ring)
                    .with_impairment(Impairment::new(cfg.clone()), Impairment::new(cfg));
                let protocol = Protocol::new(stack, clock, vec![link], command_rx);
                let task = tokio::task::spawn_local(protocol);
                let t0 = std::time::Instant::now();
                rx_in.send(arp_request_from_peer()).await.unwrap();
                // Our gratuitous ARP, then the reply (opcode 2), each delayed or lost.
                let mut reply_after = None;
                let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
                while let Ok(Some(skb)) = tokio::time::timeout_at(deadline, tx_out.next()).await {
                    let f = skb.data();
                    if f.len() >= 22 && f[12..14] == [0x08, 0x06] && f[21] == 2 {
                        reply_after = Some(t0.elapsed());
                        break;
                    }
                }
                match (answered, reply_after) {
                    (true, Some(t)) => assert!(t >= Duration::from_millis(100), "{spec}: {t:?}"),
                    (false, None) => {}
                    (want, got) => panic!("{spec}: answered {want}, got {got:?}"),
                }
                drop(commands);
                assert_eq!(task.await.unwrap(), Exit::Handles);
            }
        });
    }

    #[test]
    fn clock_maps_elapsed_time_and_deadlines() {
        let clock = Clock::start();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        let t1 = clock.now();
        assert!(t1.total_micros() >= t0.total_micros() + 2000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = clock.deadline(Instant::from_secs(1));
            assert_eq!(
                d.into_std(),
                clock.epoch + Duration::from_secs(1),
                "deadlines are epoch-relative"
            );
            // "Never" must not overflow.
            let never = clock.deadline(Instant::from_micros(u64::MAX));
            assert!(never.into_std() > std::time::Instant::now());
        });
    }
}
