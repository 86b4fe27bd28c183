//! Changing the FIB (net/ipv4/fib_frontend.c, fib_semantics.c): the routes an address
//! brings (`fib_add_ifaddr`, `fib_del_ifaddr`) and `ip route add|del`
//! (`inet_rtm_newroute`, `inet_rtm_delroute`, with `fib_check_nh` finding the device of
//! a gateway).

use std::net::Ipv4Addr;

use super::route::{prefix_mask, FibEntry, FibError, RouteProto, RouteType, Table};
use crate::dev::{DeviceId, IfAddr};
use crate::stack::Stack;

/// Why `ip route add|del` was refused, with the message `ip` prints for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Prefix length over 32 (EINVAL).
    BadPrefixLen,
    /// Host bits set in the prefix ("Invalid prefix for given prefix length").
    HostBitsSet,
    /// No such device (ENODEV).
    NoDevice,
    /// The gateway is not on a connected subnet (of the named device) (ENETUNREACH).
    GatewayUnreachable,
    /// Neither a gateway nor a device was given.
    NeedGatewayOrDevice,
    /// The same route (prefix, metric, device) exists (EEXIST).
    Exists,
    /// No route matched (ESRCH).
    NotFound,
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RouteError::BadPrefixLen => "Invalid argument",
            RouteError::HostBitsSet => "Invalid prefix for given prefix length",
            RouteError::NoDevice => "Cannot find device",
            RouteError::GatewayUnreachable => "Nexthop has invalid gateway",
            RouteError::NeedGatewayOrDevice => {
                "either \"to\" is duplicate, or a gateway or device is needed"
            }
            RouteError::Exists => "File exists",
            RouteError::NotFound => "No such process",
        })
    }
}

impl std::error::Error for RouteError {}

impl From<FibError> for RouteError {
    fn from(e: FibError) -> Self {
        match e {
            FibError::BadPrefixLen => RouteError::BadPrefixLen,
            FibError::HostBitsSet => RouteError::HostBitsSet,
        }
    }
}

/// A route as `ip route add|del` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    /// `via GW`.
    pub gateway: Option<Ipv4Addr>,
    /// `dev NAME`; found from the gateway when `None`.
    pub dev: Option<DeviceId>,
    /// `metric N` (0 when not given, as `ip route`).
    pub metric: u32,
    /// `src ADDR`.
    pub prefsrc: Option<Ipv4Addr>,
    pub proto: RouteProto,
}

impl RouteSpec {
    /// `ip route add PREFIX/LEN via GW`.
    pub fn via(prefix: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Self {
        RouteSpec {
            prefix,
            prefix_len,
            gateway: Some(gateway),
            dev: None,
            metric: 0,
            prefsrc: None,
            proto: RouteProto::Boot,
        }
    }

    /// `ip route add PREFIX/LEN dev DEV` (a directly connected destination).
    pub fn dev(prefix: Ipv4Addr, prefix_len: u8, dev: DeviceId) -> Self {
        RouteSpec {
            gateway: None,
            dev: Some(dev),
            ..RouteSpec::via(prefix, prefix_len, Ipv4Addr::UNSPECIFIED)
        }
    }
}

impl Stack {
    /// `fib_add_ifaddr`: the routes an address brings: `local ADDR` and the subnet
    /// broadcast in the local table, the connected subnet in the main table (a secondary
    /// address of a subnet adds only its local route).
    pub(crate) fn fib_add_ifaddr(&mut self, dev: DeviceId, ifa: IfAddr, primary: bool) {
        let addr = ifa.addr;
        let kernel = |prefix: Ipv4Addr, len: u8, rtype| FibEntry {
            prefix,
            prefix_len: len,
            rtype,
            gateway: None,
            oif: dev,
            prefsrc: Some(addr),
            metric: 0,
            proto: RouteProto::Kernel,
        };
        let mut routes = vec![(Table::Local, kernel(addr, 32, RouteType::Local))];
        if primary {
            if let Some(bcast) = ifa.broadcast() {
                routes.push((Table::Local, kernel(bcast, 32, RouteType::Broadcast)));
            }
            if ifa.prefix_len < 32 {
                routes.push((
                    Table::Main,
                    kernel(ifa.network(), ifa.prefix_len, RouteType::Unicast),
                ));
            }
        }
        for (table, e) in routes {
            if let Err(err) = self.ipv4.fib.insert(table, e) {
                tracing::warn!(?err, route = ?e, "route not installed");
            }
        }
    }

    /// `fib_del_ifaddr`: take out the routes `gone` brought, keeping the subnet's while
    /// one of `others` (the device's remaining addresses) is on it.
    pub(crate) fn fib_del_ifaddr(&mut self, dev: DeviceId, gone: IfAddr, others: &[IfAddr]) {
        let subnet_lives = others
            .iter()
            .any(|o| o.prefix_len == gone.prefix_len && o.contains(gone.addr));
        let bcast = gone.broadcast();
        let network = gone.network();
        self.ipv4.fib.retain(|e| {
            if e.oif != dev || e.proto != RouteProto::Kernel {
                return true;
            }
            let is_local = e.rtype == RouteType::Local && e.prefix == gone.addr;
            let is_subnet = !subnet_lives
                && ((e.rtype == RouteType::Broadcast && Some(e.prefix) == bcast)
                    || (e.rtype == RouteType::Unicast
                        && e.prefix == network
                        && e.prefix_len == gone.prefix_len));
            !(is_local || is_subnet)
        });
        // Routes that named the address as their source go too (`fib_sync_down_addr`).
        self.ipv4.fib.retain(|e| e.prefsrc != Some(gone.addr));
        // A secondary of the subnet is promoted (`promote_secondaries`, on by default
        // in Linux): it brings the subnet's routes back with itself as their source.
        if let Some(next) = others
            .iter()
            .find(|o| o.prefix_len == gone.prefix_len && o.contains(gone.addr))
        {
            self.fib_add_ifaddr(dev, *next, true);
        }
    }

    /// `ip route add` (`inet_rtm_newroute`): a unicast route in the main table. A
    /// gateway must be on a connected subnet (`fib_check_nh`), which gives the device
    /// when none is named.
    pub fn route_add(&mut self, spec: RouteSpec) -> Result<FibEntry, RouteError> {
        if spec.prefix_len > 32 {
            return Err(RouteError::BadPrefixLen);
        }
        if u32::from(spec.prefix) & !prefix_mask(spec.prefix_len) != 0 {
            return Err(RouteError::HostBitsSet);
        }
        if let Some(dev) = spec.dev {
            if self.link.devs.get(dev).is_none() {
                return Err(RouteError::NoDevice);
            }
        }
        let oif = match (spec.gateway, spec.dev) {
            (Some(gw), dev) => self.fib_check_nh(gw, dev)?,
            (None, Some(dev)) => dev,
            (None, None) => return Err(RouteError::NeedGatewayOrDevice),
        };
        let entry = FibEntry {
            prefix: spec.prefix,
            prefix_len: spec.prefix_len,
            rtype: RouteType::Unicast,
            gateway: spec.gateway,
            oif,
            prefsrc: spec.prefsrc,
            metric: spec.metric,
            proto: spec.proto,
        };
        if self.ipv4.fib.contains(Table::Main, &entry) {
            return Err(RouteError::Exists);
        }
        self.ipv4.fib.insert(Table::Main, entry)?;
        Ok(entry)
    }

    /// `ip route del` (`inet_rtm_delroute`): the first main-table route to the prefix
    /// that matches what `spec` names (gateway, device, metric when not 0).
    pub fn route_del(&mut self, spec: RouteSpec) -> Result<FibEntry, RouteError> {
        self.ipv4
            .fib
            .remove_if(Table::Main, spec.prefix, spec.prefix_len, |e| {
                spec.gateway.is_none_or(|g| e.gateway == Some(g))
                    && spec.dev.is_none_or(|d| e.oif == d)
                    && (spec.metric == 0 || e.metric == spec.metric)
            })
            .ok_or(RouteError::NotFound)
    }

    /// `fib_check_nh` (scope link): the device by which gateway `gw` is directly
    /// reachable, checked against `dev` when one is named.
    fn fib_check_nh(&self, gw: Ipv4Addr, dev: Option<DeviceId>) -> Result<DeviceId, RouteError> {
        if self.ipv4.fib.is_local(gw) || gw.is_unspecified() || gw.is_multicast() {
            return Err(RouteError::GatewayUnreachable);
        }
        let connected = |d: DeviceId| {
            self.link
                .devs
                .get(d)
                .is_some_and(|nd| nd.addrs.iter().any(|a| a.contains(gw)))
        };
        match dev {
            Some(d) if connected(d) => Ok(d),
            Some(_) => Err(RouteError::GatewayUnreachable),
            None => match self.ipv4.fib.fib_lookup(gw) {
                Some(e) if e.rtype == RouteType::Unicast && e.gateway.is_none() => Ok(e.oif),
                _ => Err(RouteError::GatewayUnreachable),
            },
        }
    }
}
