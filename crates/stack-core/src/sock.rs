//! The socket table: every socket of a stack (ping, UDP, later TCP) lives in one slab,
//! as every Linux socket is a `struct sock`, so a [`SocketId`] names exactly one socket
//! whatever its protocol and the driver can route events by it alone.

use crate::ping::PingSock;
use crate::stack::{SocketId, Stack};
use crate::tcp::TcpSock;
use crate::udp::UdpSock;

#[derive(Debug)]
pub(crate) enum Sock {
    Ping(PingSock),
    Udp(Box<UdpSock>),
    Tcp(Box<TcpSock>),
}

impl Stack {
    pub(crate) fn ping_sock(&self, id: SocketId) -> Option<&PingSock> {
        match self.socks.get(id.0) {
            Some(Sock::Ping(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn ping_sock_mut(&mut self, id: SocketId) -> Option<&mut PingSock> {
        match self.socks.get_mut(id.0) {
            Some(Sock::Ping(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn udp_sock(&self, id: SocketId) -> Option<&UdpSock> {
        match self.socks.get(id.0) {
            Some(Sock::Udp(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn udp_sock_mut(&mut self, id: SocketId) -> Option<&mut UdpSock> {
        match self.socks.get_mut(id.0) {
            Some(Sock::Udp(s)) => Some(s),
            _ => None,
        }
    }

    /// Sockets open now, all protocols.
    pub fn socket_count(&self) -> usize {
        self.socks.len()
    }
}
