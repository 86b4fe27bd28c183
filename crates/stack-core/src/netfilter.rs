//! The five netfilter hook points (include/uapi/linux/netfilter.h `NF_INET_*`).
//!
//! The IPv4 paths call [`Netfilter::nf_hook`] at the same places the kernel calls
//! `NF_HOOK`: PRE_ROUTING in `ip_rcv`, LOCAL_IN in `ip_local_deliver`, FORWARD in
//! `ip_forward`, LOCAL_OUT in `__ip_local_out`, POST_ROUTING in `ip_output`. Rules are
//! functions registered on a hook with a priority (lower runs first, like
//! `nf_hook_ops.priority`); the first `Drop` verdict wins. With no rules a hook costs one
//! branch.

use crate::skb::Skb;
use crate::snmp::NfStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NfHook {
    PreRouting,
    LocalIn,
    Forward,
    LocalOut,
    PostRouting,
}

impl NfHook {
    pub const ALL: [NfHook; 5] = [
        NfHook::PreRouting,
        NfHook::LocalIn,
        NfHook::Forward,
        NfHook::LocalOut,
        NfHook::PostRouting,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// A rule: sees the packet with `data` at the IPv4 header and may rewrite it
/// (through `Skb::data_mut`, which unshares a cloned buffer first).
pub type HookFn = Box<dyn FnMut(NfHook, &mut Skb) -> Verdict + Send>;

struct HookOps {
    priority: i32,
    f: HookFn,
}

/// The hook chains of one stack.
#[derive(Default)]
pub struct Netfilter {
    chains: [Vec<HookOps>; 5],
}

impl core::fmt::Debug for Netfilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let counts: Vec<usize> = self.chains.iter().map(Vec::len).collect();
        f.debug_struct("Netfilter").field("rules", &counts).finish()
    }
}

impl Netfilter {
    /// Add a rule to `hook` (`nf_register_net_hook`).
    pub fn register(&mut self, hook: NfHook, priority: i32, f: HookFn) {
        let chain = &mut self.chains[hook.index()];
        let at = chain.partition_point(|h| h.priority <= priority);
        chain.insert(at, HookOps { priority, f });
    }

    pub fn rules(&self, hook: NfHook) -> usize {
        self.chains[hook.index()].len()
    }

    /// Run the chain of `hook` over `skb` (`nf_hook_slow`). Drops are counted per hook.
    pub fn nf_hook(&mut self, hook: NfHook, skb: &mut Skb, stats: &mut NfStats) -> Verdict {
        let chain = &mut self.chains[hook.index()];
        if chain.is_empty() {
            return Verdict::Accept;
        }
        for ops in chain.iter_mut() {
            if (ops.f)(hook, skb) == Verdict::Drop {
                let counter = match hook {
                    NfHook::PreRouting => &mut stats.pre_routing,
                    NfHook::LocalIn => &mut stats.local_in,
                    NfHook::Forward => &mut stats.forward,
                    NfHook::LocalOut => &mut stats.local_out,
                    NfHook::PostRouting => &mut stats.post_routing,
                };
                *counter += 1;
                tracing::trace!(?hook, "nf_hook: drop");
                return Verdict::Drop;
            }
        }
        Verdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn chain_runs_in_priority_order_and_first_drop_wins() {
        let mut nf = Netfilter::default();
        let mut stats = NfStats::default();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        for (prio, tag, verdict) in [(10, "b", Verdict::Drop), (-5, "a", Verdict::Accept)] {
            let order = order.clone();
            nf.register(
                NfHook::LocalIn,
                prio,
                Box::new(move |_, _| {
                    order.lock().unwrap().push(tag);
                    verdict
                }),
            );
        }
        let late = Arc::new(AtomicUsize::new(0));
        let l2 = late.clone();
        nf.register(
            NfHook::LocalIn,
            20,
            Box::new(move |_, _| {
                l2.fetch_add(1, Ordering::Relaxed);
                Verdict::Accept
            }),
        );
        let mut skb = Skb::from_vec(vec![0x45; 20]);
        assert_eq!(
            nf.nf_hook(NfHook::LocalIn, &mut skb, &mut stats),
            Verdict::Drop
        );
        assert_eq!(*order.lock().unwrap(), vec!["a", "b"]);
        assert_eq!(
            late.load(Ordering::Relaxed),
            0,
            "rules after a drop do not run"
        );
        assert_eq!(stats.local_in, 1);
        assert_eq!(
            nf.nf_hook(NfHook::Forward, &mut skb, &mut stats),
            Verdict::Accept
        );
        assert_eq!(stats.forward, 0);
    }

    #[test]
    fn a_rule_may_rewrite_the_packet() {
        let mut nf = Netfilter::default();
        nf.register(
            NfHook::PreRouting,
            0,
            Box::new(|_, skb| {
                skb.mark = 42;
                skb.data_mut()[0] = 0x46;
                Verdict::Accept
            }),
        );
        let original = Skb::from_vec(vec![0x45, 0, 0, 20]);
        let mut skb = original.clone();
        let mut stats = NfStats::default();
        assert_eq!(
            nf.nf_hook(NfHook::PreRouting, &mut skb, &mut stats),
            Verdict::Accept
        );
        assert_eq!((skb.mark, skb.data()[0]), (42, 0x46));
        assert_eq!(
            original.data()[0],
            0x45,
            "the clone was unshared before the write"
        );
    }
}
