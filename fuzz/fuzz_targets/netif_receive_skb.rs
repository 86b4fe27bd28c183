//! Feed arbitrary frames to a whole host, as the TAP would: the ingress path from
//! `netif_receive_skb` through ARP, IPv4, ICMP and the ping socket must never panic,
//! whatever arrives, and the timers must survive whatever state it leaves behind.
//!
//! The input is split into frames at every 0xFE byte so one run can drive sequences
//! (an ARP reply resolving a queued echo reply, say). Every other frame gets our MAC
//! patched in as destination so more of them get past the MAC filter.
#![no_main]

use stack_core::DeviceId;
use libfuzzer_sys::fuzz_target;
use stack_core::skb::Skb;
use stack_core::{Duration, Instant, Stack, StackConfig};
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let addr = Ipv4Addr::new(192, 0, 2, 2);
    let mac = StackConfig::default_mac(addr);
    let mut stack = Stack::new(StackConfig::new(mac, addr, 24), Instant::ZERO, 7);
    let sock = stack.ping_open();
    let mut now = Instant::ZERO;
    for (i, frame) in data.split(|&b| b == 0xfe).enumerate() {
        let mut bytes = frame.to_vec();
        if i % 2 == 0 && bytes.len() >= 6 {
            bytes[..6].copy_from_slice(&mac.0);
        }
        stack.netif_receive_skb(now, DeviceId::ETH0, Skb::from_vec(bytes));
        if i % 3 == 0 {
            let _ = stack.ping_sendmsg(now, sock, Ipv4Addr::new(192, 0, 2, 1), i as u16, frame);
        }
        now += Duration::from_millis(700);
        if stack.poll_timeout().is_some_and(|t| t <= now) {
            stack.handle_timeout(now);
        }
        while stack.poll_transmit_dev(now, DeviceId::ETH0).is_some() {}
        while stack.ping_recvmsg(sock).is_some() {}
        while stack.poll_event().is_some() {}
    }
});
