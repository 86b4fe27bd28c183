//! `ustack host`'s UDP services (crates/ustack/src/services.rs) against the kernel.
//!
//! The module is compiled here, from outside both crates, which also checks that it
//! needs nothing but stack-async's public API, as its documentation promises.

#[path = "../../stack-io/tests/common/netns.rs"]
mod netns;
#[path = "../../ustack/src/services.rs"]
mod services;

use std::net::Ipv4Addr;
use std::time::Duration;

use stack_async::StackHandle;
use stack_core::StackConfig;

use services::{Services, DISCARD_PORT, ECHO_PORT};

/// Echo answers byte for byte, discard answers nothing; a flood of the echo port does
/// not stop it; the services end when the stack stops.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn echo_and_discard_answer_a_kernel_socket() {
    let ns = netns::NetNs::new();
    ns.add_tap("ustack0");
    let name = ns.name().to_owned();
    ns.run_in(Duration::from_secs(60), move || {
        let us = Ipv4Addr::new(192, 0, 2, 2);
        let config = StackConfig::new(StackConfig::default_mac(us), us, 24);
        let handle = StackHandle::spawn("ustack0", config, 1).expect("spawn");
        netns::wait_oper_up(&name, "ustack0");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let all = Services {
                udp_echo: true,
                udp_discard: true,
            };
            let running = services::start(&handle, all).await.expect("start");
            assert_eq!(running, "udp echo on port 7, udp discard on port 9");

            let kernel = tokio::task::spawn_blocking(move || {
                let k = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
                k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = vec![0u8; 2048];
                for len in [0usize, 1, 1472] {
                    let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                    k.send_to(&data, (us, ECHO_PORT)).unwrap();
                    let (n, from) = k.recv_from(&mut buf).expect("echo");
                    assert_eq!(&buf[..n], &data[..]);
                    assert_eq!(from, (us, ECHO_PORT).into());
                }
                k.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                k.send_to(b"into the void", (us, DISCARD_PORT)).unwrap();
                assert!(k.recv_from(&mut buf).is_err(), "discard never answers");

                // A flood, without reading the echoes: then the service still answers.
                for _ in 0..3000 {
                    let _ = k.send_to(&[0u8; 500], (us, ECHO_PORT));
                }
                std::thread::sleep(Duration::from_millis(500));
                while k.recv_from(&mut buf).is_ok() {}
                k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                k.send_to(b"still there?", (us, ECHO_PORT)).unwrap();
                let (n, _) = k.recv_from(&mut buf).expect("echo after the flood");
                assert_eq!(&buf[..n], b"still there?");
            });
            kernel.await.unwrap();
            let udp = handle.call(|s, _| s.snmp().udp.clone()).await.unwrap();
            println!("{udp:?}");
            assert_eq!(udp.no_ports, 0, "{udp:?}");
            assert_eq!(udp.sndbuf_errors, 0, "{udp:?}");
        });
        assert_eq!(rt.metrics().num_alive_tasks(), 2, "both services run");
        handle.shutdown().expect("clean shutdown");
        // The services see the stack stop and end by themselves.
        rt.block_on(async {
            for _ in 0..100 {
                if tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
                    == 0
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the services still run 1 s after the stack stopped");
        });
    });
}
