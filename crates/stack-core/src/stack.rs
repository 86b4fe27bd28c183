//! `Stack`: one host (one network device) with its protocol state, driven sans-IO.
//!
//! The driver (stack-async, or a test) feeds frames in with [`Stack::netif_receive_skb`],
//! takes frames out with [`Stack::poll_transmit`], calls [`Stack::handle_timeout`] when
//! [`Stack::poll_timeout`] says so, and reacts to [`Stack::poll_event`].

use std::net::Ipv4Addr;

use crate::skb::{Skb, SkbPool};
use crate::time::Instant;
use crate::wire::MacAddr;

/// What the host is: its device and address.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Device MTU (IP packet size), 1500 on Ethernet.
    pub mtu: usize,
    /// `net.ipv4.ip_forward`: off by default, as in Linux.
    pub ip_forward: bool,
}

impl StackConfig {
    pub fn new(mac: MacAddr, addr: Ipv4Addr, prefix_len: u8) -> Self {
        StackConfig {
            mac,
            addr,
            prefix_len,
            gateway: None,
            mtu: 1500,
            ip_forward: false,
        }
    }
}

/// Handle of a socket inside the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub usize);

/// Something the driver must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A socket has messages to read (`sk_data_ready`).
    Readable(SocketId),
}

pub struct Stack {
    config: StackConfig,
    pool: SkbPool,
}

impl Stack {
    pub fn new(config: StackConfig, _now: Instant, _seed: u64) -> Stack {
        Stack {
            config,
            pool: SkbPool::default(),
        }
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The pool that RX buffers should come from.
    pub fn pool(&self) -> &SkbPool {
        &self.pool
    }

    /// One received Ethernet frame, `data` at the Ethernet header.
    pub fn netif_receive_skb(&mut self, _now: Instant, _skb: Skb) {}

    /// The next frame for the wire, `data` at the Ethernet header.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Skb> {
        None
    }

    /// When [`Stack::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }
}
