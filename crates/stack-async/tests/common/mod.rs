//! What the stack-async netns tests share: the addresses on the test link, and a runner
//! that starts a stack on a TAP in a throwaway namespace and runs an async test there.
#![allow(dead_code)]

#[path = "../../../stack-io/tests/common/netns.rs"]
pub mod netns;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use netns::NetNs;
use stack_async::StackHandle;
use stack_core::wire::MacAddr;
use stack_core::StackConfig;

pub const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub fn config() -> StackConfig {
    StackConfig::new(MacAddr([0x02, 0, 0, 0, 0, 0x02]), OUR_IP, 24)
}

pub fn kernel(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(KERNEL_IP, port)
}

pub fn ours(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(OUR_IP, port)
}

pub fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

pub fn v4(a: std::net::SocketAddr) -> SocketAddrV4 {
    match a {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    }
}

/// A namespace with the TAP, the stack on it, and a current-thread tokio runtime running
/// `test` on a thread inside the namespace, for at most `limit` (std sockets made there,
/// and on threads it spawns, are the kernel's end of the link).
pub fn run_in_netns<F, Fut>(limit: Duration, test: F)
where
    F: FnOnce(StackHandle) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let ns = NetNs::new();
    ns.add_tap("ustack0");
    let name = ns.name().to_owned();
    ns.run_in(limit, move || {
        let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
        netns::wait_oper_up(&name, "ustack0");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(test(handle.clone()));
        handle.shutdown().expect("clean shutdown");
    });
}
