//! The socket table: every socket of a stack (ping, UDP, later TCP) lives in one slab,
//! as every Linux socket is a `struct sock`, so a [`SocketId`] names exactly one socket
//! whatever its protocol and the driver can route events by it alone.

use std::collections::VecDeque;

use slab::Slab;

use crate::ping::{PingSock, PingTable};
use crate::stack::Stack;
use crate::tcp::{TcpSock, TcpTable};
use crate::udp::{UdpSock, UdpTable};

/// Handle of a socket inside the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub usize);

/// Something the driver must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A socket has messages to read (`sk_data_ready`).
    Readable(SocketId),
    /// A socket can send again, or finished connecting (`sk_write_space`).
    Writable(SocketId),
}

/// The transport layer's state: every socket (all protocols, as every Linux socket is a
/// `struct sock`), each protocol's lookup tables, and the events for the driver.
#[derive(Debug, Default)]
pub(crate) struct Transport {
    pub socks: Slab<Sock>,
    pub ping: PingTable,
    pub udp: UdpTable,
    pub tcp: TcpTable,
    pub events: VecDeque<Event>,
}

#[derive(Debug)]
pub(crate) enum Sock {
    Ping(PingSock),
    Udp(Box<UdpSock>),
    Tcp(Box<TcpSock>),
}

impl Stack {
    pub(crate) fn ping_sock(&self, id: SocketId) -> Option<&PingSock> {
        match self.sk.socks.get(id.0) {
            Some(Sock::Ping(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn ping_sock_mut(&mut self, id: SocketId) -> Option<&mut PingSock> {
        match self.sk.socks.get_mut(id.0) {
            Some(Sock::Ping(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn udp_sock(&self, id: SocketId) -> Option<&UdpSock> {
        match self.sk.socks.get(id.0) {
            Some(Sock::Udp(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn udp_sock_mut(&mut self, id: SocketId) -> Option<&mut UdpSock> {
        match self.sk.socks.get_mut(id.0) {
            Some(Sock::Udp(s)) => Some(s),
            _ => None,
        }
    }

    /// Sockets open now, all protocols.
    pub fn socket_count(&self) -> usize {
        self.sk.socks.len()
    }
}
