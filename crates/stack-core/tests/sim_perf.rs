use std::net::{Ipv4Addr, SocketAddrV4};
use stack_core::impair::ImpairConfig;
use stack_core::sim::{Pair, B_ADDR};
use stack_core::tcp::TcpState;
use stack_core::{Duration, SendError};

fn run(cfg: &str, total: usize) {
    let c: ImpairConfig = cfg.parse().unwrap();
    let mut p = Pair::new(c.clone(), c);
    let l = p.b.tcp_socket();
    p.b.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    p.b.tcp_listen(l, 16).unwrap();
    let s = p.a.tcp_socket();
    p.a.tcp_connect(p.now, s, SocketAddrV4::new(B_ADDR, 80)).unwrap();
    let dl = p.now + Duration::from_secs(10);
    assert!(p.run_until(dl, |p| p.a.tcp_state(s) == Some(TcpState::Established)));
    let mut child = None;
    assert!(p.run_until(dl, |p| { child = p.b.tcp_accept(l).unwrap().map(|c| c.0); child.is_some() }));
    let child = child.unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 1000) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 65536];
    let wall = std::time::Instant::now();
    let t0 = p.now;
    let mut steps = 0u64;
    while got.len() < total {
        if sent < total {
            match p.a.tcp_send(p.now, s, &data[sent..]) { Ok(n) => sent += n, Err(SendError::WouldBlock) => {}, Err(e) => panic!("{e}") }
        }
        loop {
            match p.b.tcp_recv(p.now, child, &mut buf, false) { Ok(0) => panic!("eof"), Ok(n) => got.extend_from_slice(&buf[..n]), Err(SendError::WouldBlock) => break, Err(e) => panic!("{e}") }
        }
        let lim = p.now + Duration::from_secs(1);
        p.step(lim);
        steps += 1;
        assert!(p.now < t0 + Duration::from_secs(600), "stalled {} {}", got.len(), sent);
    }
    assert!(got == data);
    println!("{cfg:40} {} MiB in {:?} virtual, {:?} wall, {steps} steps, a2b {:?}", total >> 20, p.now - t0, wall.elapsed(), p.link.a_to_b.stats());
}

#[test]
fn perf() {
    run("", 8 << 20);
    run("delay=5ms", 8 << 20);
    run("delay=5ms,rate=100mbit", 8 << 20);
    run("delay=5ms,jitter=1ms,rate=100mbit,loss=1%,reorder=2%,dup=1%,seed=3", 4 << 20);
}
