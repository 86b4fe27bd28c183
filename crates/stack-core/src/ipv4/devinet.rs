//! Interface addresses (net/ipv4/devinet.c: `inet_insert_ifa`, `inet_del_ifa`,
//! `inet_select_addr`): what `ip addr add` and `ip addr del` do, and the source address
//! a packet leaving by a device gets.

use std::net::Ipv4Addr;

use crate::dev::{DevError, DeviceId, DeviceKind, IfAddr};
use crate::stack::Stack;

impl Stack {
    /// `ip addr add ADDR/PREFIX dev DEV` (`inet_insert_ifa`): the address joins the
    /// device (the first of a subnet is primary, later ones secondary, as in Linux), its
    /// routes go into the FIB (`fib_add_ifaddr`), and an Ethernet device announces it
    /// with a gratuitous ARP.
    pub fn addr_add(&mut self, dev: DeviceId, ifa: IfAddr) -> Result<(), DevError> {
        let a = ifa.addr;
        if ifa.prefix_len > 32
            || a.is_unspecified()
            || a.is_multicast()
            || a.is_broadcast()
            || a.octets()[0] == 127
        {
            return Err(DevError::Invalid);
        }
        let d = self.link.devs.get_mut(dev).ok_or(DevError::NoDevice)?;
        if d.addrs.iter().any(|x| x.addr == a) {
            return Err(DevError::Exists);
        }
        let primary = !d
            .addrs
            .iter()
            .any(|x| x.contains(a) && x.prefix_len == ifa.prefix_len);
        d.addrs.push(ifa);
        let kind = d.kind;
        self.fib_add_ifaddr(dev, ifa, primary);
        if kind == DeviceKind::Ethernet {
            self.arp_announce(dev, a);
        }
        Ok(())
    }

    /// `ip addr del ADDR/PREFIX dev DEV` (`inet_del_ifa`): the address and the routes it
    /// brought leave; the subnet's route stays while another address of the device is on
    /// it (`fib_del_ifaddr`).
    pub fn addr_del(&mut self, dev: DeviceId, addr: Ipv4Addr) -> Result<IfAddr, DevError> {
        let d = self.link.devs.get_mut(dev).ok_or(DevError::NoDevice)?;
        let at = d
            .addrs
            .iter()
            .position(|x| x.addr == addr)
            .ok_or(DevError::NoAddress)?;
        let gone = d.addrs.remove(at);
        let others = d.addrs.clone();
        self.fib_del_ifaddr(dev, gone, &others);
        Ok(gone)
    }

    /// `inet_select_addr`: the source address for a packet leaving by `dev` towards
    /// `dst`: the device's address on `dst`'s subnet, else its primary address, else
    /// any address of the host (Linux looks at other devices too).
    pub(crate) fn inet_select_addr(&self, dev: DeviceId, dst: Ipv4Addr) -> Ipv4Addr {
        self.link
            .devs
            .get(dev)
            .and_then(|d| d.select_addr(dst))
            .or_else(|| {
                self.link
                    .devs
                    .iter()
                    .filter(|d| d.kind == DeviceKind::Ethernet)
                    .find_map(|d| d.addrs.first().map(|a| a.addr))
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}
