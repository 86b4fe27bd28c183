//! `ustack router` with three interfaces, operated through `ustack ctl` while kernel hosts
//! talk through it: traffic between every pair, a route added at run time that takes
//! effect at once (and its removal), and ctl's iproute2/nstat-style output parsed and held
//! against what the router did and what the hosts' own kernels say.
//!
//! ```text
//!   A 192.0.2.10/26 -- ra 192.0.2.1     [ustack router]    rb 192.0.2.65 -- B 192.0.2.70/26
//!                                        rc 192.0.2.129
//!                                             |
//!                                  C 192.0.2.130/26, and 203.0.113.1 on its loopback
//! ```

use std::path::{Path, PathBuf};

use testbed::{ustack_ctl, Routed, RouterKind, Side};
use ustack_netns_tests::link_mac;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const BEHIND_C: &str = "203.0.113.1";

fn sides() -> Vec<Side> {
    vec![
        Side::new("ra", "192.0.2.1/26", "192.0.2.10/26"),
        Side::new("rb", "192.0.2.65/26", "192.0.2.70/26"),
        Side::new("rc", "192.0.2.129/26", "192.0.2.130/26"),
    ]
}

/// [`ustack_ctl`] that must succeed: its stdout.
fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let (code, out, err) = ustack_ctl(sock, args);
    assert_eq!(code, Some(0), "ustack ctl {args:?}: {out}{err}");
    out
}

/// One ping from host `from` to `to`; the reply's `ttl=` or the error line.
fn ping(bed: &Routed, from: usize, to: &str) -> String {
    let out = bed.run(from, "ping", &["-c", "1", "-W", "2", to]);
    out.stdout
        .lines()
        .find_map(|l| {
            if l.contains("bytes from") {
                l.split_whitespace()
                    .find(|w| w.starts_with("ttl="))
                    .map(str::to_string)
            } else if l.starts_with("From ") {
                Some(l.trim().to_string())
            } else {
                None
            }
        })
        .unwrap_or_else(|| format!("no answer: {}", out.stdout))
}

/// The MAC of host `i`'s interface, from its own kernel.
fn host_mac(bed: &Routed, i: usize) -> String {
    let link = bed.hosts[i]
        .ip(&["-o", "link", "show", &bed.sides[i].ifname])
        .expect("ip link");
    link_mac(&link).expect("a MAC").to_string()
}

/// `name value rate` lines of nstat-style output.
fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn three_interfaces_routes_at_run_time_and_ctl_agrees() {
    let dir = std::env::temp_dir().join(format!("ustack-router-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sock: PathBuf = dir.join("router.ctl");
    let sock_arg = sock.to_str().expect("utf-8 path").to_string();
    let mut bed = Routed::new(RouterKind::Ustack, "rtctl", &sides(), &["--ctl", &sock_arg])
        .unwrap_or_else(|e| panic!("cannot build the topology: {e}"));
    // C owns an address on a network the router does not know yet (on its loopback:
    // this kernel has no dummy devices).
    bed.hosts[C]
        .ip(&["addr", "add", "203.0.113.1/32", "dev", "lo"])
        .unwrap();

    // Every pair, both ways: one router hop.
    let mut forwarded = 0;
    for (from, to) in [(A, B), (B, A), (A, C), (C, A), (B, C), (C, B)] {
        let target = bed.sides[to].host_ip().to_string();
        assert_eq!(
            ping(&bed, from, &target),
            "ttl=63",
            "host {from} -> {target}"
        );
        forwarded += 2;
    }

    // Unknown until the route is added at run time; then at once; gone after del.
    let unreachable = "From 192.0.2.1 icmp_seq=1 Destination Net Unreachable";
    assert_eq!(ping(&bed, A, BEHIND_C), unreachable);
    let bad = ustack_ctl(
        &sock,
        &["route", "add", "203.0.113.0/24", "via", "198.51.100.99"],
    );
    assert_eq!(bad.0, Some(2), "a gateway on no link: {bad:?}");
    assert_eq!(bad.2.trim().lines().count(), 1, "one line: {bad:?}");
    assert!(bad.2.contains("Nexthop has invalid gateway"), "{bad:?}");
    ctl_ok(
        &sock,
        &["route", "add", "203.0.113.0/24", "via", "192.0.2.130"],
    );
    assert_eq!(ping(&bed, A, BEHIND_C), "ttl=63", "the new route at once");
    forwarded += 2;
    let routes = ctl_ok(&sock, &["route"]);
    let added: Vec<&str> = routes
        .lines()
        .filter(|l| l.starts_with("203.0.113.0/24"))
        .collect();
    assert_eq!(
        added.iter().map(|l| l.trim_end()).collect::<Vec<_>>(),
        ["203.0.113.0/24 via 192.0.2.130 dev rc proto static"],
        "{routes}"
    );
    for s in bed.sides.clone() {
        let net = match s.ifname.as_str() {
            "ra" => "192.0.2.0/26",
            "rb" => "192.0.2.64/26",
            _ => "192.0.2.128/26",
        };
        let want = format!(
            "{net} dev {} proto kernel scope link src {}",
            s.ifname,
            s.router_ip()
        );
        assert!(
            routes.lines().any(|l| l.trim_end() == want),
            "no {want:?} in\n{routes}"
        );
    }

    // ip -br addr: every interface UP with its address.
    let addrs = ctl_ok(&sock, &["addr"]);
    for s in &bed.sides {
        let line = addrs
            .lines()
            .find(|l| l.split_whitespace().next() == Some(s.ifname.as_str()))
            .unwrap_or_else(|| panic!("no {} in\n{addrs}", s.ifname));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [s.ifname.as_str(), "UP", s.router_cidr.as_str()],
            "{addrs}"
        );
    }

    // ip neigh: each host at the MAC its own kernel has, on the right interface.
    let neigh = ctl_ok(&sock, &["neigh"]);
    for (i, s) in bed.sides.iter().enumerate() {
        let mac = host_mac(&bed, i);
        let prefix = format!("{} dev {} lladdr {mac} ", s.host_ip(), s.ifname);
        assert!(
            neigh.lines().any(|l| l.starts_with(&prefix)),
            "no {prefix:?} in\n{neigh}"
        );
    }

    // nstat: exactly the datagrams the pings made were forwarded; one had no route.
    let stats = ctl_ok(&sock, &["stats"]);
    assert_eq!(stat(&stats, "IpForwDatagrams"), forwarded, "{stats}");
    assert_eq!(stat(&stats, "IpExtInNoRoutes"), 1, "{stats}");

    // ip -s link: each interface received at least its host's share.
    let link = ctl_ok(&sock, &["link"]);
    for s in &bed.sides {
        let at = link
            .find(&format!(": {}: <", s.ifname))
            .unwrap_or_else(|| panic!("no {} in\n{link}", s.ifname));
        let block: Vec<&str> = link[at..].lines().take(6).collect();
        assert!(block[0].contains("mtu 1500"), "{block:?}");
        let rx: Vec<u64> = block[3]
            .split_whitespace()
            .map(|v| v.parse().expect("a number"))
            .collect();
        assert!(rx[1] >= 4, "{} RX packets {block:?}", s.ifname);
    }

    ctl_ok(
        &sock,
        &["route", "del", "203.0.113.0/24", "via", "192.0.2.130"],
    );
    assert_eq!(
        ping(&bed, A, BEHIND_C),
        unreachable,
        "the route is gone at once"
    );
    let (code, _, err) = ustack_ctl(&sock, &["frobnicate"]);
    assert_ne!(code, Some(0));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(bed.router_alive(), "a bad request stopped the router");
    assert_eq!(ping(&bed, A, "192.0.2.70"), "ttl=63", "still forwarding");

    let out = bed.stop().expect("ustack router");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!sock.exists(), "the control socket is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}
