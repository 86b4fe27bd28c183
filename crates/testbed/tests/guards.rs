//! The guards must leave nothing behind: not after a normal drop, not after a panic, not after a
//! run that died without running them. These need root, like the netns suite they protect.

use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use testbed::{link_exists_in_root, netns_exists, run, sweep_stale, veth_pair, Child, Netns};

/// Whether a process exists and is not a zombie (a killed child of ours stays a zombie until
/// reaped, which is not "still running in the namespace").
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // pid (comm) STATE ...: comm may hold spaces, so read after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn namespace_tap_and_veth_come_and_go() {
    testbed::require_root().unwrap();
    let (a_name, b_name);
    {
        let a = Netns::new("guard-a").unwrap();
        let b = Netns::new("guard-b").unwrap();
        a_name = a.name().to_string();
        b_name = b.name().to_string();
        assert!(netns_exists(&a_name) && netns_exists(&b_name));

        a.add_tap("ustk-tap0", "192.0.2.1/24").unwrap();
        let link = a.ip(&["-o", "addr", "show", "dev", "ustk-tap0"]).unwrap();
        assert!(link.contains("192.0.2.1/24"), "{link}");
        let tuntap = a.ip(&["tuntap", "show"]).unwrap();
        assert!(tuntap.contains("ustk-tap0: tap"), "{tuntap}");

        veth_pair(
            &a,
            "ustk-va",
            "198.51.100.1/24",
            &b,
            "ustk-vb",
            "198.51.100.2/24",
        )
        .unwrap();
        // The pair really links the two namespaces: the kernel in `a` reaches the one in `b`.
        let mut ping = a.cmd("ping");
        ping.args(["-c", "1", "-W", "2", "198.51.100.2"]);
        let out = run(ping, Duration::from_secs(10)).unwrap();
        assert!(out.success(), "{out}");

        for dev in ["ustk-tap0", "ustk-va", "ustk-vb"] {
            assert!(
                !link_exists_in_root(dev),
                "{dev} leaked into the root namespace"
            );
        }
    }
    assert!(!netns_exists(&a_name), "{a_name} survived its guard");
    assert!(!netns_exists(&b_name), "{b_name} survived its guard");
    for dev in ["ustk-tap0", "ustk-va", "ustk-vb"] {
        assert!(
            !link_exists_in_root(dev),
            "{dev} ended up in the root namespace"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn a_panic_still_deletes_namespace_devices_and_processes() {
    testbed::require_root().unwrap();
    // (namespace name, pid under a Child guard, a bare process nobody will stop)
    let seen: Mutex<Option<(String, u32, std::process::Child)>> = Mutex::new(None);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("panic").unwrap();
        ns.add_tap("ustack0", "192.0.2.1/24").unwrap();
        let mut sleep = ns.cmd("sleep");
        sleep.arg("1000");
        let guarded = Child::spawn(sleep).unwrap();
        // A process started without a guard: only the namespace's Drop can end it.
        let bare = ns.cmd("sleep").arg("1000").spawn().unwrap();
        assert!(testbed::wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || ns.pids().len() == 2
        ));
        *seen.lock().unwrap() = Some((ns.name().to_string(), guarded.pid(), bare));
        panic!("deliberate panic with a namespace, a TAP and two processes alive");
    }));
    assert!(result.is_err());
    let (name, guarded, mut bare) = seen.lock().unwrap().take().expect("closure ran");
    assert!(!netns_exists(&name), "{name} survived a panic");
    assert!(
        !running(guarded),
        "guarded process {guarded} survived a panic"
    );
    let bare_pid = bare.id();
    assert!(
        !running(bare_pid),
        "unguarded process {bare_pid} in {name} survived a panic"
    );
    // Reap it: the namespace guard killed it, but it is still our child.
    let status = bare.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!link_exists_in_root("ustack0"));
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn create_named_replaces_a_leftover_namespace() {
    testbed::require_root().unwrap();
    let name = format!("ustk-replace-{}", std::process::id());
    // What a crashed demo leaves: the namespace, with a process still in it.
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "1000"])
        .spawn()
        .unwrap();
    {
        let ns = Netns::create_named(&name).unwrap();
        assert_eq!(ns.name(), name);
        assert!(
            ns.pids().is_empty(),
            "the leftover's process was not killed"
        );
        ns.add_tap("ustack0", "192.0.2.1/24").unwrap();
    }
    assert!(!netns_exists(&name));
    let status = leftover.wait().unwrap();
    assert!(!status.success());
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn sweep_removes_only_namespaces_of_dead_creators() {
    testbed::require_root().unwrap();
    // First, so the once-per-process sweep in Netns::new has run before the stale one exists.
    let live = Netns::new("sweep-live").unwrap();
    // A pid that is certainly gone: a child we have already reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = format!("{}sweep-{dead_pid}-0", testbed::NAME_PREFIX);
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());

    let removed = sweep_stale();
    let stale_left = netns_exists(&stale);
    if stale_left {
        // Do not leak it even though the test failed.
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
    }
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!stale_left);
    assert!(
        netns_exists(live.name()),
        "sweep removed a live run's namespace"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn set_sysctl_changes_only_the_namespace() {
    testbed::require_root().unwrap();
    const KEY: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let root_before = std::fs::read_to_string(KEY).unwrap();
    let ns = Netns::new("sysctl").unwrap();
    ns.set_sysctl("net.ipv4.ip_local_port_range", "20000 20999")
        .unwrap();
    let inside = ns.enter(|| std::fs::read_to_string(KEY)).unwrap().unwrap();
    assert_eq!(
        inside.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20999"]
    );
    assert_eq!(std::fs::read_to_string(KEY).unwrap(), root_before);
    // Global sysctls are refused rather than written for the whole machine.
    assert!(ns.set_sysctl("kernel.hostname", "x").is_err());
}
