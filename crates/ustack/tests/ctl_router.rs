//! A real `ustack router` on two TAPs, asked through its control socket while the kernel
//! pings it, then stopped with SIGTERM: bad requests get one line and the router lives on,
//! the socket goes on exit, each TAP has a pcap file tcpdump reads.
//!
//! Needs root (a network namespace and TAPs), so it is ignored by a plain `cargo test`:
//!
//!     cargo test -p ustack --test ctl_router -- --ignored --nocapture

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testbed::{wait_until, Child, Netns};

/// `ustack ctl --ctl SOCK args...` with the binary this package just built.
fn ctl(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    testbed::ustack_ctl_with(Path::new(env!("CARGO_BIN_EXE_ustack")), sock, args)
}

#[test]
#[ignore = "needs root: creates a network namespace and TAP devices"]
fn router_answers_ctl_and_captures() {
    if let Err(msg) = testbed::require_root() {
        println!("skipped: {msg}");
        return;
    }
    let ns = Netns::new("ctl").expect("namespace");
    ns.add_tap("tap0", "192.0.2.1/24").expect("tap0");
    ns.add_tap("tap1", "198.51.100.1/24").expect("tap1");
    let dir = std::env::temp_dir().join(format!("ustack-ctl-router-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sock: PathBuf = dir.join("run/router.ctl");
    let pcap = dir.join("cap");
    let mut cmd = ns.cmd(env!("CARGO_BIN_EXE_ustack"));
    cmd.args([
        "router",
        "--iface",
        "tap0=192.0.2.2/24",
        "--iface",
        "tap1=198.51.100.2/24",
        "--ctl",
    ])
    .arg(&sock)
    .arg("--pcap")
    .arg(&pcap);
    let router = Child::spawn(cmd).expect("ustack router");
    let ping = |to: &str| {
        ns.cmd("ping")
            .args(["-c", "1", "-W", "1", to])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || sock
            .exists()
            && ping("192.0.2.2")),
        "router never answered: {}",
        router.stderr_so_far()
    );
    assert!(ping("198.51.100.2"));

    let (code, out, err) = ctl(&sock, &["addr"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "lo               UNKNOWN        \n\
         tap0             UP             192.0.2.2/24 \n\
         tap1             UP             198.51.100.2/24 \n"
    );
    // Bad requests: one line each, and the router carries on.
    for (args, want_code, want) in [
        (
            &["frob"][..],
            1,
            "Object \"frob\" is unknown, try \"ustack ctl help\".\n",
        ),
        (
            &["route", "add", "203.0.113.0/24", "via", "203.0.113.1"][..],
            2,
            "Error: Nexthop has invalid gateway.\n",
        ),
        (
            &["neigh", "flush", "dev", "nope"][..],
            1,
            "Cannot find device \"nope\"\n",
        ),
    ] {
        let (code, out, err) = ctl(&sock, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(want_code), "", want)
        );
    }
    let (code, _, err) = ctl(
        &sock,
        &["route", "add", "203.0.113.0/24", "via", "198.51.100.1"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (_, routes, _) = ctl(&sock, &["route"]);
    assert_eq!(
        routes,
        "192.0.2.0/24 dev tap0 proto kernel scope link src 192.0.2.2 \n\
         198.51.100.0/24 dev tap1 proto kernel scope link src 198.51.100.2 \n\
         203.0.113.0/24 via 198.51.100.1 dev tap1 proto static \n"
    );
    let (_, neigh, _) = ctl(&sock, &["neigh"]);
    assert!(neigh.starts_with("192.0.2.1 dev tap0 lladdr "), "{neigh}");
    let (_, stats, _) = ctl(&sock, &["stats"]);
    assert!(stats.starts_with("#kernel\n"), "{stats}");
    assert!(
        stats.contains("\nIcmpInEchos                     "),
        "{stats}"
    );
    let (_, link, _) = ctl(&sock, &["link"]);
    assert!(link.contains("\n2: tap0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast"));
    assert!(ping("192.0.2.2"), "still forwarding and answering");

    let out = router.stop();
    assert!(out.success(), "{}", out.stderr);
    assert!(!sock.exists(), "the socket file is removed on SIGTERM");
    assert!(out.stderr.contains("tap0.pcap: "), "{}", out.stderr);
    for tap in ["tap0", "tap1"] {
        let file = pcap.join(format!("{tap}.pcap"));
        let bytes = std::fs::read(&file).expect("pcap file");
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        match Command::new("tcpdump")
            .arg("-r")
            .arg(&file)
            .arg("-n")
            .output()
        {
            Ok(td) => {
                let text = String::from_utf8_lossy(&td.stdout);
                assert!(
                    td.status.success(),
                    "{}",
                    String::from_utf8_lossy(&td.stderr)
                );
                assert!(text.contains("ICMP echo request"), "{text}");
                assert!(text.contains("ICMP echo reply"), "{text}");
            }
            Err(e) => println!("tcpdump not run: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
