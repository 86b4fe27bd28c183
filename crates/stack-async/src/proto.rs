//! The protocol task: the sans-IO `Stack` driven by the RX ring, the command channel
//! and a timer, feeding the TX ring. It runs on the stack thread next to the device
//! loop, so a poll of this task never races with the device's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, StreamExt};
use stack_core::stack::{Event, SocketId, Stack};
use stack_core::{Instant, Skb};

/// Work items taken per source per poll (RX frames, commands, expired timers) before
/// yielding, so the device loop on the same thread keeps draining the wire and a
/// flood on one source cannot starve the others (the kernel's NAPI budget, in spirit).
const BUDGET: usize = 64;

/// Called when the core reports `Event::Readable(id)`: the socket moves its messages
/// from the core into its own receive queue.
pub type ReadableFn = Box<dyn FnMut(&mut Stack) + Send>;

/// What a command closure gets on the stack thread.
pub(crate) struct StackCtx<'a> {
    pub stack: &'a mut Stack,
    pub now: Instant,
    pub readers: &'a mut HashMap<SocketId, ReadableFn>,
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

pub(crate) struct Protocol {
    stack: Stack,
    clock: Clock,
    rx_ring: mpsc::Receiver<Skb>,
    tx_ring: mpsc::Sender<Skb>,
    commands: mpsc::Receiver<Command>,
    readers: HashMap<SocketId, ReadableFn>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Protocol {
    /// Must be called inside the runtime (the timer registers with its time driver).
    pub fn new(
        stack: Stack,
        clock: Clock,
        rx_ring: mpsc::Receiver<Skb>,
        tx_ring: mpsc::Sender<Skb>,
        commands: mpsc::Receiver<Command>,
    ) -> Protocol {
        let idle = clock.deadline(Instant::from_micros(u64::MAX));
        Protocol {
            stack,
            clock,
            rx_ring,
            tx_ring,
            commands,
            readers: HashMap::new(),
            timer: Box::pin(tokio::time::sleep_until(idle)),
        }
    }
}

/// Why the task ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Every handle is gone, or one asked to stop.
    Handles,
    /// The device loop ended (it closed the RX ring or the TX ring).
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
                    };
                    job(&mut ctx);
                }
                Poll::Ready(Some(Command::Stop) | None) => return Poll::Ready(Exit::Handles),
                Poll::Pending => break,
            }
            again |= n == BUDGET;
        }

        // RX ring: frames from the device, up to a budget (`netif_receive_skb` per frame).
        for n in 1..=BUDGET {
            match this.rx_ring.poll_next_unpin(cx) {
                Poll::Ready(Some(mut skb)) => {
                    skb.tstamp = now;
                    this.stack.netif_receive_skb(now, skb);
                }
                Poll::Ready(None) => return Poll::Ready(Exit::Device),
                Poll::Pending => break,
            }
            again |= n == BUDGET;
        }

        // Timers: run what is due, then arm the sleep for the next deadline.
        let mut fired = 0;
        while let Some(deadline) = this.stack.poll_timeout() {
            if deadline <= now {
                if fired == BUDGET {
                    again = true;
                    break;
                }
                this.stack.handle_timeout(now);
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
                    }
                }
                _ => {}
            }
        }

        // TX ring: move frames out of the core only while the ring has room. When it is
        // full we stop pulling and the rest wait in the core's queue, as a driver's
        // `netif_stop_queue` holds packets in the qdisc; `poll_ready` has registered
        // us to be woken when the device frees a slot.
        let mut tx = Pin::new(&mut this.tx_ring);
        loop {
            match tx.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => match this.stack.poll_transmit(now) {
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

        if again {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
