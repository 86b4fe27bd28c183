//! `TcpStream`, `TcpListener` and `TcpSocket` against the kernel's TCP: a TAP in a
//! throwaway network namespace, the kernel at 192.0.2.1 (std sockets made on threads
//! inside the namespace), ustack at 192.0.2.2.
//!
//! `USTACK_TCP_BULK_MB` sets the size of the bulk transfer each way (default 100 MB);
//! the bulk test prints the throughput it saw.

mod common;

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{any, config, kernel, ours, run_in_netns, v4, OUR_IP};
use stack_async::{StackHandle, TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(300);
const WAIT: Duration = Duration::from_secs(10);

/// A namespace with the TAP, the stack on it, and a tokio runtime running `test` on a
/// thread inside the namespace (std sockets made there, and on threads it spawns, are
/// the kernel's end of the link).
fn run<F, Fut>(test: F)
where
    F: FnOnce(StackHandle) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    run_in_netns(LIMIT, test)
}

/// xorshift bytes: every position distinguishable, reproducible from the seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn set_linger_zero(fd: &impl AsRawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a pointer to a linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

async fn tcp_counters(handle: &StackHandle) -> stack_core::snmp::TcpMib {
    handle
        .call(|s, _| s.snmp().tcp.clone())
        .await
        .expect("call")
}

/// Our stream to a kernel listener: a request both ways with half-closes, addresses
/// as each side sees them, and an orderly close (no reset on either side).
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn connects_to_a_kernel_listener_and_talks_both_ways() {
    run(|handle| async move {
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let request = pattern(300_000, 1);
        let response = pattern(500_000, 2);
        let (req, resp) = (request.clone(), response.clone());
        let server = std::thread::spawn(move || {
            let (mut s, from) = listener.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read until our FIN");
            assert!(
                got == req,
                "request differs at {:?}",
                first_difference(&got, &req)
            );
            s.write_all(&resp).unwrap();
            (v4(from), v4(s.local_addr().unwrap()))
        });

        let mut stream = timeout(WAIT, TcpStream::connect(&handle, kernel(port)))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        assert_eq!(stream.peer_addr().unwrap(), kernel(port));
        let local = stream.local_addr().unwrap();
        assert_eq!(*local.ip(), OUR_IP);
        assert!(!stream.nodelay().unwrap());
        stream.set_nodelay(true).unwrap();
        assert!(stream.nodelay().unwrap());

        stream.write_all(&request).await.unwrap();
        stream.shutdown().await.expect("FIN");
        assert_eq!(
            stream.write(b"late").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe,
            "write after shutdown"
        );
        let mut got = Vec::new();
        timeout(WAIT, stream.read_to_end(&mut got))
            .await
            .expect("the response within 10 s")
            .unwrap();
        assert!(
            got == response,
            "response differs at {:?}",
            first_difference(&got, &response)
        );
        assert_eq!(stream.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF stays");
        let (their_view_of_us, their_local) = server.join().unwrap();
        assert_eq!(their_view_of_us, local);
        assert_eq!(their_local, kernel(port));
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tcp = tcp_counters(&handle).await;
        assert_eq!(tcp.out_rsts, 0, "{tcp:?}");
        assert_eq!(tcp.active_opens, 1, "{tcp:?}");
        assert_eq!(tcp.estab_resets, 0, "{tcp:?}");
    });
}

/// A kernel client to our listener: accept, echo through owned halves on two tasks,
/// the client sees its bytes back and then our FIN; `incoming()` serves a second one.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn kernel_client_to_our_listener() {
    run(|handle| async move {
        let listener = TcpListener::bind(&handle, any(5000)).await.expect("bind");
        assert_eq!(listener.local_addr().unwrap(), any(5000));
        // Taken: a second listener on the port fails like Linux's.
        let err = TcpListener::bind(&handle, any(5000)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        let data = pattern(2_000_000, 3);
        let sent = data.clone();
        let client = std::thread::spawn(move || {
            let mut results = Vec::new();
            for _ in 0..2 {
                let s = std::net::TcpStream::connect(ours(5000)).expect("kernel connect");
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut w = s.try_clone().unwrap();
                let payload = sent.clone();
                let writer = std::thread::spawn(move || {
                    w.write_all(&payload).unwrap();
                    w.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                let mut r = &s;
                r.read_to_end(&mut got).expect("echo then a clean EOF");
                writer.join().unwrap();
                results.push((got, v4(s.local_addr().unwrap())));
            }
            results
        });

        // First connection: accept(), owned halves on two tasks.
        let (stream, peer) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        assert_eq!(stream.peer_addr().unwrap(), peer);
        assert_eq!(stream.local_addr().unwrap(), ours(5000));
        let (mut rd, mut wr) = stream.into_split();
        // The halves are Send: a spawned task of their own.
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    // Dropping `wr` shuts writing down.
                    return;
                }
                wr.write_all(&buf[..n]).await.unwrap();
            }
        });
        echo.await.unwrap();

        // Second: through incoming(), borrowed halves and tokio::io::copy.
        use futures::StreamExt;
        let mut incoming = listener.incoming();
        let mut stream = timeout(WAIT, incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        {
            let (mut rd, mut wr) = stream.split();
            let n = tokio::io::copy(&mut rd, &mut wr).await.unwrap();
            assert_eq!(n, data.len() as u64);
            wr.shutdown().await.unwrap();
        }
        drop(stream);

        let results = tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        for (i, (got, _)) in results.iter().enumerate() {
            assert!(
                got == &data,
                "connection {i}: echo differs at {:?}",
                first_difference(got, &data)
            );
        }
        assert_eq!(results[0].1, peer, "accept reports the kernel's address");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tcp = tcp_counters(&handle).await;
        assert_eq!(tcp.passive_opens, 2, "{tcp:?}");
        assert_eq!(tcp.out_rsts, 0, "{tcp:?}");
    });
}

#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn connect_to_a_closed_kernel_port_is_refused() {
    run(|handle| async move {
        // Bound and closed again: nothing listens there now.
        let port = {
            let l = std::net::TcpListener::bind(kernel(0)).unwrap();
            v4(l.local_addr().unwrap()).port()
        };
        let start = Instant::now();
        let err = timeout(WAIT, TcpStream::connect(&handle, kernel(port)))
            .await
            .expect("an answer within 10 s")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "refused at once");
        let tcp = tcp_counters(&handle).await;
        assert_eq!(tcp.attempt_fails, 1, "{tcp:?}");
        assert_eq!(tcp.active_opens, 1, "{tcp:?}");
        // The stack is fine afterwards: a real connection works.
        let l = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(l.local_addr().unwrap()).port();
        let _s = TcpStream::connect(&handle, kernel(port))
            .await
            .expect("connect");
    });
}

/// The kernel resets a connection in the middle of our upload (SO_LINGER 0 close):
/// the next write reports ConnectionReset, the one after BrokenPipe, reads end.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn peer_reset_mid_transfer_is_connection_reset() {
    run(|handle| async move {
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 100_000];
            s.read_exact(&mut buf).unwrap();
            set_linger_zero(&s);
            drop(s);
        });
        let mut stream = TcpStream::connect(&handle, kernel(port)).await.unwrap();
        let chunk = pattern(65536, 4);
        let mut written = 0usize;
        let err = loop {
            match timeout(WAIT, stream.write(&chunk)).await.expect("no hang") {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            assert!(written < 1 << 30, "writes never failed");
        };
        server.join().unwrap();
        assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionReset,
            "after {written} bytes: {err}"
        );
        let again = stream.write(&chunk).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::BrokenPipe, "{again}");
        assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 0);
        let tcp = tcp_counters(&handle).await;
        assert_eq!(tcp.estab_resets, 1, "{tcp:?}");

        // The reading side: data first, then the reset once, then end of stream.
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"last words").unwrap();
            let mut one = [0u8; 1];
            // Wait until ustack has read them (it says so), then reset.
            s.read_exact(&mut one).unwrap();
            set_linger_zero(&s);
            drop(s);
        });
        let mut stream = TcpStream::connect(&handle, kernel(port)).await.unwrap();
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"last words");
        stream.write_all(b"k").await.unwrap();
        let err = timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        server.join().unwrap();
    });
}

/// TcpSocket options, peek, try_read/try_write, readable, and dropping with unread data
/// (a reset, as close(2) does), on futures' executor and traits rather than tokio's.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn socket_options_peek_and_close_with_unread_data() {
    futures_io::socket_options_peek_and_close_with_unread_data();
}

mod futures_io {
    use super::common::netns::{self, NetNs};
    use super::{any, config, ours, LIMIT, WAIT};
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use stack_async::{StackHandle, TcpSocket};
    use std::io::{self, Read, Write};
    use std::time::Duration;

    pub fn socket_options_peek_and_close_with_unread_data() {
        let ns = NetNs::new();
        ns.add_tap("ustack0");
        let name = ns.name().to_owned();
        ns.run_in(LIMIT, move || {
            let handle = StackHandle::spawn("ustack0", config(), 7).expect("spawn");
            netns::wait_oper_up(&name, "ustack0");
            futures::executor::block_on(async {
                let sock = TcpSocket::new_v4(&handle).unwrap();
                sock.set_reuseaddr(true).unwrap();
                sock.set_send_buffer_size(64 * 1024).unwrap();
                sock.set_recv_buffer_size(128 * 1024).unwrap();
                sock.set_nodelay(true).unwrap();
                sock.set_congestion(stack_async::CongestionControl::Reno)
                    .unwrap();
                assert_eq!(
                    sock.set_linger(Some(Duration::from_secs(1)))
                        .unwrap_err()
                        .kind(),
                    io::ErrorKind::Unsupported
                );
                assert!(sock.reuseaddr().unwrap());
                assert_eq!(sock.send_buffer_size().unwrap(), 64 * 1024);
                assert_eq!(sock.recv_buffer_size().unwrap(), 128 * 1024);
                sock.bind(any(6000)).unwrap();
                assert_eq!(sock.local_addr().unwrap(), any(6000));
                let listener = sock.listen(16).unwrap();
                assert_eq!(listener.local_addr().unwrap(), any(6000));

                let client = std::thread::spawn(|| {
                    let mut s = std::net::TcpStream::connect(ours(6000)).unwrap();
                    s.set_read_timeout(Some(WAIT)).unwrap();
                    s.write_all(b"hello, peek").unwrap();
                    let mut buf = [0u8; 6];
                    s.read_exact(&mut buf).unwrap();
                    // More than ustack will read: it closes with these unread.
                    s.write_all(b"unread").unwrap();
                    let mut rest = Vec::new();
                    let r = s.read_to_end(&mut rest);
                    (buf, r.map_err(|e| e.kind()))
                });

                let (mut stream, _) = listener.accept().await.unwrap();
                assert!(stream.nodelay().unwrap(), "inherited from the listener");
                let mut buf = [0u8; 5];
                stream.readable().await.unwrap();
                assert_eq!(stream.peek(&mut buf).await.unwrap(), 5);
                assert_eq!(&buf, b"hello");
                let mut all = [0u8; 11];
                stream.read_exact(&mut all).await.unwrap();
                assert_eq!(&all, b"hello, peek");
                assert_eq!(
                    stream.try_read(&mut buf).unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                );
                stream.writable().await.unwrap();
                assert_eq!(stream.try_write(b"thanks").unwrap(), 6);
                stream.flush().await.unwrap();
                // Wait for the unread bytes to arrive, then drop: a reset.
                stream.readable().await.unwrap();
                drop(stream);
                let (buf, end) = client.join().unwrap();
                assert_eq!(&buf, b"thanks");
                assert_eq!(end, Err(io::ErrorKind::ConnectionReset));
                let tcp = handle.call(|s, _| s.snmp().tcp.clone()).await.unwrap();
                assert_eq!(tcp.out_rsts, 1, "{tcp:?}");
                drop(listener);
            });
            handle.shutdown().expect("clean shutdown");
        });
    }
}

/// Bulk both ways at once through a kernel echo server (std, one thread per direction),
/// byte for byte; prints the throughput.
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn bulk_both_ways_through_a_kernel_echo_server() {
    let mb: usize = std::env::var("USTACK_TCP_BULK_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let total = mb * 1_000_000;
    run(move |handle| async move {
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = s.try_clone().unwrap();
            let mut w = s;
            let n = std::io::copy(&mut r, &mut w).expect("kernel echo");
            w.shutdown(std::net::Shutdown::Write).unwrap();
            n
        });

        let stream = TcpStream::connect(&handle, kernel(port)).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let start = Instant::now();
        let writer = async move {
            // Generated on the fly from one seed, so 100 MB need no 100 MB buffer.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut chunk = vec![0u8; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                fill(&mut chunk[..n], &mut x);
                wr.write_all(&chunk[..n]).await.unwrap();
                sent += n;
            }
            wr.shutdown().await.unwrap();
            start.elapsed()
        };
        let reader = async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut want = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            loop {
                let n = rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                // Regenerate the same stream in the same chunking as it is compared.
                let mut off = 0;
                while off < n {
                    let in_chunk = got % want.len();
                    if in_chunk == 0 {
                        let len = want.len().min(total - got);
                        fill(&mut want[..len], &mut x);
                    }
                    let m = (n - off).min(want.len() - in_chunk);
                    assert!(
                        buf[off..off + m] == want[in_chunk..in_chunk + m],
                        "echo differs near byte {}",
                        got
                    );
                    off += m;
                    got += m;
                }
            }
            (got, start.elapsed())
        };
        let (up, (got, down)) = futures::join!(writer, reader);
        assert_eq!(got, total, "every byte came back, then EOF");
        let echoed = tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
        assert_eq!(echoed as usize, total);
        let secs = down.as_secs_f64();
        println!(
            "bulk: {mb} MB each way in {secs:.2} s (upload done after {:.2} s): {:.1} MB/s each way",
            up.as_secs_f64(),
            total as f64 / secs / 1e6
        );
        let tcp = tcp_counters(&handle).await;
        println!("{tcp:?}\n{:?}", handle.io_stats());
        assert_eq!(tcp.out_rsts, 0, "{tcp:?}");
    });
}

/// One direction at a time, ustack -> kernel sink and kernel source -> ustack, so each
/// figure is the stack's alone; prints MB/s. Checks the byte count, not the bytes
/// (`bulk_both_ways_through_a_kernel_echo_server` does).
#[test]
#[ignore = "needs root and a network namespace: run with cargo xtask test"]
fn one_way_throughput() {
    let mb: usize = std::env::var("USTACK_TCP_BULK_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let total = mb * 1_000_000;
    run(move |handle| async move {
        // Upload: the kernel reads and drops.
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0usize;
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => return n,
                    k => n += k,
                }
            }
        });
        let mut stream = TcpStream::connect(&handle, kernel(port)).await.unwrap();
        let chunk = pattern(256 * 1024, 5);
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            stream.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
        stream.shutdown().await.unwrap();
        let got = tokio::task::spawn_blocking(move || sink.join().unwrap())
            .await
            .unwrap();
        let up = start.elapsed();
        assert_eq!(got, total);
        drop(stream);

        // Download: the kernel writes as fast as it can.
        let listener = std::net::TcpListener::bind(kernel(0)).unwrap();
        let port = v4(listener.local_addr().unwrap()).port();
        let source = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let chunk = pattern(256 * 1024, 6);
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                s.write_all(&chunk[..n]).unwrap();
                sent += n;
            }
        });
        let mut stream = TcpStream::connect(&handle, kernel(port)).await.unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            match stream.read(&mut buf).await.unwrap() {
                0 => break,
                n => got += n,
            }
        }
        let down = start.elapsed();
        assert_eq!(got, total);
        source.join().unwrap();
        let rate = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
        println!(
            "one way, {mb} MB: ustack -> kernel {:.1} MB/s, kernel -> ustack {:.1} MB/s",
            rate(up),
            rate(down)
        );
        let tcp = tcp_counters(&handle).await;
        println!("{tcp:?}\n{:?}", handle.io_stats());
        assert_eq!(tcp.out_rsts, 0, "{tcp:?}");
    });
}

/// The bulk test's byte stream: 8 bytes per xorshift step, chunk boundaries at multiples
/// of 8 so writer and reader generate the same sequence.
fn fill(buf: &mut [u8], x: &mut u64) {
    for c in buf.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}
