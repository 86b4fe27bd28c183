//! The Forwarding Information Base: Linux's `local` and `main` tables
//! (net/ipv4/fib_frontend.c, fib_trie.c), with longest-prefix match.
//!
//! The local table holds our own addresses (`RTN_LOCAL`) and the subnet broadcasts
//! (`RTN_BROADCAST`) and is consulted first, as in `fib_lookup` with the default rules;
//! the main table holds the connected subnets, static routes and the default route. Each
//! table keeps one hash map per prefix length and looks up from /32 down to /0, so a
//! lookup costs at most 33 probes and inserting never reorders anything. Routes to the
//! same prefix are kept in metric order (`fib_alias` priority): the lowest metric wins.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::dev::DeviceId;

/// What a route does with a packet (`RTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteType {
    /// Send to the destination or to a gateway.
    Unicast,
    /// One of our addresses: deliver locally.
    Local,
    /// A broadcast address of an attached subnet: deliver locally, send as broadcast.
    Broadcast,
    /// Drop, answering ICMP host unreachable.
    Unreachable,
    /// Drop silently.
    Blackhole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Local,
    Main,
}

/// Who installed a route (`rtm_protocol`, the `proto` word of `ip route`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteProto {
    /// Made by the stack for an address (`proto kernel`).
    Kernel,
    /// Given at start (`proto boot`, what `ip route add` without `proto` sets).
    Boot,
    /// Added at run time by an operator (`proto static`).
    Static,
}

impl RouteProto {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteProto::Kernel => "kernel",
            RouteProto::Boot => "boot",
            RouteProto::Static => "static",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibEntry {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub rtype: RouteType,
    /// Next hop; `None` for a directly connected destination (scope link).
    pub gateway: Option<Ipv4Addr>,
    /// Output device (`fib_nh_dev`).
    pub oif: DeviceId,
    /// Preferred source address for packets we originate on this route (`src` of `ip
    /// route`); `None` picks the output device's address for the next hop.
    pub prefsrc: Option<Ipv4Addr>,
    /// Route priority (`metric` of `ip route`): lower wins among equal prefixes.
    pub metric: u32,
    pub proto: RouteProto,
}

impl FibEntry {
    /// A unicast route in the main table (`ip route add PREFIX [via GW] dev OIF`).
    pub fn unicast(
        prefix: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: DeviceId,
    ) -> FibEntry {
        FibEntry {
            prefix,
            prefix_len,
            rtype: RouteType::Unicast,
            gateway,
            oif,
            prefsrc: None,
            metric: 0,
            proto: RouteProto::Boot,
        }
    }

    /// Whether two entries are the same route for `ip route replace` / `del`: prefix,
    /// metric and device.
    fn same_key(&self, other: &FibEntry) -> bool {
        self.prefix == other.prefix
            && self.prefix_len == other.prefix_len
            && self.metric == other.metric
            && self.oif == other.oif
    }
}

/// Errors of FIB updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibError {
    /// Prefix length over 32.
    BadPrefixLen,
    /// Host bits set in the prefix.
    HostBitsSet,
}

pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// One routing table.
#[derive(Clone, Debug)]
struct FibTable {
    /// Per prefix length: prefix -> its routes, lowest metric first.
    by_len: Vec<HashMap<u32, Vec<FibEntry>>>,
}

impl Default for FibTable {
    fn default() -> Self {
        FibTable {
            by_len: vec![HashMap::new(); 33],
        }
    }
}

impl FibTable {
    fn lookup(&self, dst: Ipv4Addr) -> Option<&FibEntry> {
        let d = u32::from(dst);
        (0..=32u8)
            .rev()
            .filter(|&len| !self.by_len[len as usize].is_empty())
            .find_map(|len| self.by_len[len as usize].get(&(d & prefix_mask(len))))
            .and_then(|v| v.first())
    }
}

/// The FIB of one stack.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    local: FibTable,
    main: FibTable,
    /// Bumped on every change, so cached routes (`sk_dst_cache`) know they are stale,
    /// as the kernel's `rt_genid`.
    generation: u64,
}

impl Fib {
    /// Add or replace a route (`ip route replace`).
    pub fn insert(&mut self, table: Table, entry: FibEntry) -> Result<(), FibError> {
        if entry.prefix_len > 32 {
            return Err(FibError::BadPrefixLen);
        }
        let key = u32::from(entry.prefix);
        if key & !prefix_mask(entry.prefix_len) != 0 {
            return Err(FibError::HostBitsSet);
        }
        let routes = self.table_mut(table).by_len[entry.prefix_len as usize]
            .entry(key)
            .or_default();
        match routes.iter_mut().find(|e| e.same_key(&entry)) {
            Some(old) => *old = entry,
            None => {
                let at = routes.partition_point(|e| e.metric <= entry.metric);
                routes.insert(at, entry);
            }
        }
        self.generation += 1;
        Ok(())
    }

    /// Whether `table` holds a route with `entry`'s key (prefix, metric, device): what
    /// `ip route add` refuses with EEXIST and `insert` would replace.
    pub fn contains(&self, table: Table, entry: &FibEntry) -> bool {
        let t = match table {
            Table::Local => &self.local,
            Table::Main => &self.main,
        };
        t.by_len
            .get(usize::from(entry.prefix_len))
            .and_then(|m| m.get(&u32::from(entry.prefix)))
            .is_some_and(|routes| routes.iter().any(|e| e.same_key(entry)))
    }

    /// Remove the first route to `prefix/prefix_len` that `matches` accepts
    /// (`fib_table_delete`: `ip route del` names as much of the route as it wants).
    pub fn remove_if(
        &mut self,
        table: Table,
        prefix: Ipv4Addr,
        prefix_len: u8,
        matches: impl Fn(&FibEntry) -> bool,
    ) -> Option<FibEntry> {
        if prefix_len > 32 {
            return None;
        }
        let map = &mut self.table_mut(table).by_len[prefix_len as usize];
        let key = u32::from(prefix);
        let routes = map.get_mut(&key)?;
        let at = routes.iter().position(matches)?;
        let gone = routes.remove(at);
        if routes.is_empty() {
            map.remove(&key);
        }
        self.generation += 1;
        Some(gone)
    }

    /// Remove the (best) route to `prefix/prefix_len`.
    pub fn remove(&mut self, table: Table, prefix: Ipv4Addr, prefix_len: u8) -> Option<FibEntry> {
        self.remove_if(table, prefix, prefix_len, |_| true)
    }

    /// Remove every route `matches` accepts, in both tables (`fib_del_ifaddr`,
    /// `fib_sync_down_dev`); returns how many went.
    pub fn retain(&mut self, keep: impl Fn(&FibEntry) -> bool) -> usize {
        let mut gone = 0;
        for table in [&mut self.local, &mut self.main] {
            for map in &mut table.by_len {
                for routes in map.values_mut() {
                    let before = routes.len();
                    routes.retain(&keep);
                    gone += before - routes.len();
                }
                map.retain(|_, v| !v.is_empty());
            }
        }
        if gone > 0 {
            self.generation += 1;
        }
        gone
    }

    /// Mark cached routes stale without changing a route (a device's MTU or address
    /// set changed).
    pub fn touch(&mut self) {
        self.generation += 1;
    }

    /// Changes so far; a cached route is valid while this is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn table_mut(&mut self, table: Table) -> &mut FibTable {
        match table {
            Table::Local => &mut self.local,
            Table::Main => &mut self.main,
        }
    }

    /// `fib_lookup`: the local table, then the main table, longest prefix first.
    pub fn fib_lookup(&self, dst: Ipv4Addr) -> Option<&FibEntry> {
        self.local.lookup(dst).or_else(|| self.main.lookup(dst))
    }

    /// Whether `addr` is one of our own addresses (`inet_addr_type == RTN_LOCAL`).
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.local
            .lookup(addr)
            .is_some_and(|e| e.rtype == RouteType::Local && e.prefix_len == 32)
    }

    /// Whether `addr` is a broadcast address of an attached subnet.
    pub fn is_broadcast(&self, addr: Ipv4Addr) -> bool {
        addr == Ipv4Addr::BROADCAST
            || self
                .local
                .lookup(addr)
                .is_some_and(|e| e.rtype == RouteType::Broadcast)
    }

    /// Every route, local table first, for display (`ip route show table all`).
    pub fn routes(&self) -> Vec<(Table, FibEntry)> {
        let mut out = Vec::new();
        for (t, table) in [(Table::Local, &self.local), (Table::Main, &self.main)] {
            for len in (0..=32).rev() {
                let mut v: Vec<_> = table.by_len[len].values().flatten().copied().collect();
                v.sort_by_key(|e| (u32::from(e.prefix), e.metric, e.oif));
                out.extend(v.into_iter().map(|e| (t, e)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unicast(prefix: [u8; 4], len: u8, gw: Option<[u8; 4]>) -> FibEntry {
        FibEntry::unicast(
            Ipv4Addr::from(prefix),
            len,
            gw.map(Ipv4Addr::from),
            DeviceId(2),
        )
    }

    #[test]
    fn longest_prefix_wins_and_local_table_first() {
        let mut fib = Fib::default();
        fib.insert(Table::Main, unicast([0, 0, 0, 0], 0, Some([192, 0, 2, 1])))
            .unwrap();
        fib.insert(Table::Main, unicast([192, 0, 2, 0], 24, None))
            .unwrap();
        fib.insert(
            Table::Main,
            unicast([198, 51, 100, 0], 24, Some([192, 0, 2, 9])),
        )
        .unwrap();
        fib.insert(
            Table::Main,
            unicast([198, 51, 100, 128], 25, Some([192, 0, 2, 7])),
        )
        .unwrap();
        fib.insert(
            Table::Local,
            FibEntry {
                rtype: RouteType::Local,
                ..unicast([192, 0, 2, 2], 32, None)
            },
        )
        .unwrap();
        fib.insert(
            Table::Local,
            FibEntry {
                rtype: RouteType::Broadcast,
                ..unicast([192, 0, 2, 255], 32, None)
            },
        )
        .unwrap();

        let at = |a: [u8; 4]| *fib.fib_lookup(Ipv4Addr::from(a)).unwrap();
        assert_eq!(at([192, 0, 2, 77]).prefix_len, 24);
        assert_eq!(at([192, 0, 2, 2]).rtype, RouteType::Local);
        assert_eq!(at([192, 0, 2, 255]).rtype, RouteType::Broadcast);
        assert_eq!(
            at([198, 51, 100, 5]).gateway,
            Some(Ipv4Addr::new(192, 0, 2, 9))
        );
        assert_eq!(
            at([198, 51, 100, 200]).gateway,
            Some(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(at([203, 0, 113, 1]).prefix_len, 0);
        assert!(fib.is_local(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(!fib.is_local(Ipv4Addr::new(192, 0, 2, 3)));
        assert!(fib.is_broadcast(Ipv4Addr::new(192, 0, 2, 255)));
        assert!(fib.is_broadcast(Ipv4Addr::BROADCAST));

        fib.remove(Table::Main, Ipv4Addr::new(0, 0, 0, 0), 0)
            .unwrap();
        assert!(fib.fib_lookup(Ipv4Addr::new(203, 0, 113, 1)).is_none());
        assert_eq!(fib.routes().len(), 5);
    }

    #[test]
    fn rejects_bad_prefixes() {
        let mut fib = Fib::default();
        assert_eq!(
            fib.insert(Table::Main, unicast([192, 0, 2, 1], 24, None)),
            Err(FibError::HostBitsSet)
        );
        assert_eq!(
            fib.insert(Table::Main, unicast([192, 0, 2, 0], 33, None)),
            Err(FibError::BadPrefixLen)
        );
    }

    proptest! {
        /// The table agrees with a brute-force longest-prefix search.
        #[test]
        fn matches_brute_force(routes in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..40),
                               probes in proptest::collection::vec(any::<u32>(), 1..40)) {
            let mut fib = Fib::default();
            let mut all = Vec::new();
            for (addr, len) in routes {
                let prefix = addr & prefix_mask(len);
                let e = FibEntry { prefix: Ipv4Addr::from(prefix), prefix_len: len, ..unicast([0;4], 0, None) };
                fib.insert(Table::Main, e).unwrap();
                all.retain(|x: &FibEntry| !(x.prefix == e.prefix && x.prefix_len == len));
                all.push(e);
            }
            for p in probes {
                let want = all.iter()
                    .filter(|e| p & prefix_mask(e.prefix_len) == u32::from(e.prefix))
                    .max_by_key(|e| e.prefix_len)
                    .map(|e| (e.prefix, e.prefix_len));
                let got = fib.fib_lookup(Ipv4Addr::from(p)).map(|e| (e.prefix, e.prefix_len));
                prop_assert_eq!(got, want);
            }
        }
    }
}
