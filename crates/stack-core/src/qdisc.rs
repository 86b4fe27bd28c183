//! pfifo_fast, Linux's default queueing discipline (net/sched/sch_generic.c): three FIFO
//! bands, band 0 always served first, a packet's band chosen from `skb->priority` through
//! the same `prio2band` map as the kernel. The limit is the device's `tx_queue_len`;
//! a full qdisc drops the new packet (tail drop) and the caller counts it.

use std::collections::VecDeque;

use crate::skb::Skb;

/// `sch_generic.c` prio2band: TC_PRIO_* -> band (0 is the most urgent).
const PRIO2BAND: [usize; 16] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

/// Linux's default `txqueuelen` for Ethernet devices.
pub const DEFAULT_TX_QUEUE_LEN: usize = 1000;

#[derive(Debug)]
pub struct PfifoFast {
    bands: [VecDeque<Skb>; 3],
    limit: usize,
    len: usize,
}

impl Default for PfifoFast {
    fn default() -> Self {
        PfifoFast::new(DEFAULT_TX_QUEUE_LEN)
    }
}

impl PfifoFast {
    pub fn new(limit: usize) -> Self {
        PfifoFast {
            bands: Default::default(),
            limit,
            len: 0,
        }
    }

    pub fn band_of(priority: u32) -> usize {
        PRIO2BAND[(priority & 15) as usize]
    }

    /// `pfifo_fast_enqueue`: `Err(skb)` when the qdisc is full (the caller drops it).
    pub fn enqueue(&mut self, skb: Skb) -> Result<(), Skb> {
        if self.len >= self.limit {
            return Err(skb);
        }
        self.bands[Self::band_of(skb.priority)].push_back(skb);
        self.len += 1;
        Ok(())
    }

    /// `pfifo_fast_dequeue`: the head of the most urgent non-empty band.
    pub fn dequeue(&mut self) -> Option<Skb> {
        let skb = self.bands.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(skb)
    }

    /// Put a packet back at the head of its band (`dev_requeue_skb`).
    pub fn requeue(&mut self, skb: Skb) {
        self.bands[Self::band_of(skb.priority)].push_front(skb);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skb(prio: u32, tag: u8) -> Skb {
        let mut s = Skb::from_vec(vec![tag]);
        s.priority = prio;
        s
    }

    #[test]
    fn bands_by_priority_and_tail_drop() {
        let mut q = PfifoFast::new(4);
        q.enqueue(skb(0, 1)).unwrap(); // TC_PRIO_BESTEFFORT -> band 1
        q.enqueue(skb(2, 2)).unwrap(); // TC_PRIO_BULK -> band 2
        q.enqueue(skb(6, 3)).unwrap(); // TC_PRIO_INTERACTIVE -> band 0
        q.enqueue(skb(0, 4)).unwrap();
        assert!(q.enqueue(skb(7, 5)).is_err(), "full qdisc refuses");
        let order: Vec<u8> = std::iter::from_fn(|| q.dequeue())
            .map(|s| s.data()[0])
            .collect();
        assert_eq!(order, vec![3, 1, 4, 2]);
        assert!(q.is_empty());
        q.enqueue(skb(0, 9)).unwrap();
        let s = q.dequeue().unwrap();
        q.requeue(s);
        assert_eq!(q.len(), 1);
        assert_eq!(q.dequeue().unwrap().data()[0], 9);
    }
}
