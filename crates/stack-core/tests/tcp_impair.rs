//! TCP over the seeded impairment layer: 10 MB each scenario, byte-identical, in
//! virtual time; and the timers that only show up when a link misbehaves.

mod common;
use common::pattern;

use std::net::{Ipv4Addr, SocketAddrV4};

use stack_core::impair::ImpairConfig;
use stack_core::sim::{Pair, A_ADDR, B_ADDR};
use stack_core::tcp::{TcpState, DEFAULT_RCVBUF};
use stack_core::{Duration, Offloads, SendError, SocketId};

const TEN_MB: usize = 10 << 20;

/// Connect A to a listener on B and return (client, accepted).
fn connect(p: &mut Pair) -> (SocketId, SocketId) {
    let l = p.b.tcp_socket();
    p.b.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7))
        .unwrap();
    p.b.tcp_listen(l, 8).unwrap();
    let c = p.a.tcp_socket();
    let now = p.now;
    p.a.tcp_v4_connect(now, c, SocketAddrV4::new(B_ADDR, 7))
        .unwrap();
    let deadline = p.now + Duration::from_secs(120);
    let mut child = None;
    p.run_until(deadline, |p| {
        if child.is_none() {
            child = p.b.tcp_accept(l).unwrap().map(|(s, _)| s);
        }
        child.is_some() && p.a.tcp_state(c) == Some(TcpState::Established)
    });
    let s = child.expect("accepted");
    assert_eq!(p.b.tcp_peer_addr(s).unwrap().ip(), &A_ADDR);
    (c, s)
}

/// Send `data` from A to B, reading on B, until all has arrived and been acknowledged;
/// then close both ends in order. Returns what B read.
fn move_bytes(p: &mut Pair, c: SocketId, s: SocketId, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 1 << 16];
    let deadline = p.now + Duration::from_secs(3600);
    while got.len() < data.len() {
        assert!(
            p.now < deadline,
            "stalled at {} of {}",
            got.len(),
            data.len()
        );
        let now = p.now;
        if sent < data.len() {
            match p.a.tcp_sendmsg(now, c, &data[sent..]) {
                Ok(n) => sent += n,
                Err(SendError::WouldBlock) => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        loop {
            match p.b.tcp_recvmsg(now, s, &mut buf, false) {
                Ok(0) => panic!("early EOF"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        let limit = p.now + Duration::from_millis(2);
        p.step(limit);
    }
    let now = p.now;
    p.a.tcp_close(now, c);
    let deadline = p.now + Duration::from_secs(600);
    p.run_until(deadline, |p| {
        let mut b = [0u8; 1];
        p.b.tcp_recvmsg(p.now, s, &mut b, false) == Ok(0)
    });
    let now = p.now;
    p.b.tcp_close(now, s);
    let deadline = p.now + Duration::from_secs(600);
    p.run_until(deadline, |p| p.b.tcp_state(s).is_none());
    assert_eq!(p.b.tcp_state(s), None, "server side finished with FIN");
    got
}

fn scenario(spec: &str) {
    scenario_with(spec, Offloads::default());
}

fn scenario_with(spec: &str, offloads: Offloads) {
    let cfg: ImpairConfig = spec.parse().unwrap();
    let mut back = cfg.clone();
    back.seed ^= 0x5eed;
    let mut p = Pair::with_offloads(cfg, back, offloads);
    let (c, s) = connect(&mut p);
    let data = pattern(TEN_MB, 0xC0FFEE);
    let got = move_bytes(&mut p, c, s, &data);
    assert!(
        got == data,
        "{spec}: {} bytes differ",
        got.iter().zip(&data).filter(|(a, b)| a != b).count()
    );
    let a = p.a.snmp();
    let b = p.b.snmp();
    // Ended with FIN, not RST: no established connection was reset on either side.
    // (A duplicated last ACK that arrives after the server freed its socket is answered
    // with RST, as RFC 9293 3.10.7.1 and Linux do; that RST resets nothing.)
    assert_eq!(a.tcp.estab_resets + b.tcp.estab_resets, 0, "{spec}");
    assert!(
        matches!(p.a.tcp_state(c), Some(TcpState::TimeWait) | None),
        "{spec}: the client closed first and waits in TIME_WAIT, got {:?}",
        p.a.tcp_state(c)
    );
    if cfg_has_loss(spec) {
        assert!(
            a.tcp.retrans_segs > 0,
            "{spec}: losses repaired by retransmission"
        );
    }
    if offloads.tso {
        // Super-packets left A's device (fewer frames than segments: far fewer on a
        // clean link; under loss the window stays small, and so do the bursts), and B,
        // which only ever sees wire-size frames, received every segment.
        let factor = if spec.starts_with("delay") { 4 } else { 1 };
        assert!(
            a.dev.tx_packets * factor < a.tcp.out_segs,
            "{spec}: TSO used: {} frames for {} segments",
            a.dev.tx_packets,
            a.tcp.out_segs
        );
        assert!(b.tcp.in_segs >= (TEN_MB / 1460) as u64, "{spec}");
        if !spec.contains("corrupt") {
            // The link completed every partial checksum and cut every super-packet
            // into segments that verify, both ways.
            assert_eq!(b.tcp.in_csum_errors + a.tcp.in_csum_errors, 0, "{spec}");
        }
    }
}

fn cfg_has_loss(spec: &str) -> bool {
    spec.contains("loss") || spec.contains("corrupt")
}

#[test]
fn ten_mb_over_5_percent_loss() {
    scenario("loss=5%,delay=1ms,seed=1");
}

#[test]
fn ten_mb_over_5_percent_duplication() {
    scenario("dup=5%,delay=1ms,seed=2");
}

#[test]
fn ten_mb_over_10_percent_reordering() {
    scenario("reorder=10%,delay=1ms,seed=3");
}

#[test]
fn ten_mb_over_half_percent_corruption() {
    scenario("corrupt=0.5%,delay=1ms,seed=4");
}

#[test]
fn ten_mb_over_everything_at_once() {
    scenario("loss=5%,dup=5%,reorder=10%,corrupt=0.5%,delay=1ms,jitter=200us,seed=5");
}

#[test]
fn ten_mb_with_tso_over_a_clean_link() {
    scenario_with("delay=1ms,seed=6", Offloads::ALL);
}

#[test]
fn ten_mb_with_tso_over_everything_at_once() {
    scenario_with(
        "loss=5%,dup=5%,reorder=10%,corrupt=0.5%,delay=1ms,jitter=200us,seed=7",
        Offloads::ALL,
    );
}

#[test]
fn zero_window_is_probed_until_the_reader_returns() {
    let mut p = Pair::new(ImpairConfig::default(), ImpairConfig::default());
    let (c, s) = connect(&mut p);
    // Fill B's receive buffer without reading: the window closes.
    let data = pattern(3 * DEFAULT_RCVBUF, 9);
    let mut sent = 0;
    for _ in 0..2000 {
        let now = p.now;
        if let Ok(n) = p.a.tcp_sendmsg(now, c, &data[sent..]) {
            sent += n;
        }
        let limit = p.now + Duration::from_millis(5);
        p.step(limit);
    }
    assert!(
        p.b.tcp_rcvq_bytes(s) >= DEFAULT_RCVBUF - 2 * 1448,
        "B's buffer is full"
    );
    let probes_before = p.a.snmp().tcp.out_segs;
    // Nobody reads for a minute: A keeps probing (with backoff), the link stays alive.
    p.advance(Duration::from_secs(60));
    assert!(
        p.a.snmp().tcp.out_segs > probes_before,
        "persist timer sent probes"
    );
    assert_eq!(p.a.tcp_state(c), Some(TcpState::Established));
    // The reader comes back: everything arrives.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = p.now + Duration::from_secs(120);
    while got.len() < sent && p.now < deadline {
        let now = p.now;
        while let Ok(n) = p.b.tcp_recvmsg(now, s, &mut buf, false) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let limit = p.now + Duration::from_millis(5);
        p.step(limit);
    }
    assert_eq!(got.len(), sent, "all accepted data arrived");
    assert!(got == data[..sent], "byte-identical");
}

#[test]
fn orphaned_fin_wait_2_times_out() {
    let mut p = Pair::new(ImpairConfig::default(), ImpairConfig::default());
    let (c, s) = connect(&mut p);
    // A closes; B never closes: A sits in FIN_WAIT_2 as an orphan for tcp_fin_timeout.
    let now = p.now;
    p.a.tcp_close(now, c);
    let d = p.now + Duration::from_secs(1);
    p.run_until(d, |_| false);
    assert_eq!(p.a.tcp_state(c), Some(TcpState::FinWait2));
    assert_eq!(p.b.tcp_state(s), Some(TcpState::CloseWait));
    p.advance(Duration::from_secs(61));
    assert_eq!(p.a.tcp_state(c), None, "freed after the FIN_WAIT_2 timeout");
}
