//! Raw Ethernet frames on a link from the kernel's side: an AF_PACKET socket, for crafting
//! what no well-behaved kernel socket would send (overlapping fragments, bad checksums, forged
//! TCP segments) and for reading exactly what the other end of the link answered.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An AF_PACKET socket bound to one interface. Frames go out exactly as given, Ethernet header
/// included. Opened with [`PacketSocket::open`] it receives nothing; with
/// [`PacketSocket::capture`] it also receives what the link delivers to the kernel.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a send-only socket on `ifname` of the calling thread's namespace: call it inside
    /// [`crate::Netns::enter`] for an interface of a test namespace. The socket stays bound to
    /// that interface from any thread afterwards.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing, so it never queues the test's own
        // traffic; sending does not need a protocol (the frame carries its EtherType).
        Self::bind(ifname, 0)
    }

    /// Opens a socket on `ifname` (inside [`crate::Netns::enter`], like `open`) that receives
    /// every frame arriving from the link, and none the kernel sends on it: on a TAP, exactly
    /// what the program behind the TAP wrote, not the kernel's own traffic nor the frames a
    /// test crafts (PACKET_IGNORE_OUTGOING, Linux 4.20). Only frames that arrive after this
    /// returns are seen.
    pub fn capture(ifname: &str) -> io::Result<PacketSocket> {
        let all = (libc::ETH_P_ALL as u16).to_be();
        let sock = Self::bind(ifname, all)?;
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int that lives across the call, and the length says so.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // A burst of answers (hundreds of ACKs to a burst of forged segments) must all be
        // queued, or a test would count fewer than were sent. The default buffer holds a few
        // hundred small frames; 4 MiB holds thousands. FORCE passes net.core.rmem_max (we are
        // root); if it is refused, the default stays, which is only less roomy.
        let size: libc::c_int = 4 << 20;
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(sock)
    }

    /// Waits up to `timeout` for the next received frame and copies it into `buf` (truncated
    /// to its length). Ok(None) when nothing arrived in time.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Round up, so a sub-millisecond remainder still waits rather than spins.
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd, and the count says one.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: the pointer and length describe `buf`, borrowed across the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                return Err(e);
            }
        }
    }

    /// Every frame already queued, without waiting.
    pub fn drain(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Some(n) = self.recv_timeout(&mut buf, Duration::ZERO)? {
            frames.push(buf[..n].to_vec());
        }
        Ok(frames)
    }

    /// A socket bound to `ifname` for `protocol` (network byte order; 0 for none).
    fn bind(ifname: &str, protocol: u16) -> io::Result<PacketSocket> {
        let name = CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that lives across the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("no interface {ifname}: {e}"),
            ));
        }
        // Created with protocol 0, so it receives nothing until bind names the protocol and the
        // interface together: no frame of another interface slips in between.
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_ifindex = ifindex as libc::c_int;
        addr.sll_protocol = protocol;
        // SAFETY: `addr` is a valid sockaddr_ll and the length says so.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one frame. ENOBUFS means the interface's queue dropped it.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer and length describe `frame`, borrowed across the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else if n as usize != frame.len() {
            Err(io::Error::other(format!(
                "sent {n} of a {}-byte frame",
                frame.len()
            )))
        } else {
            Ok(())
        }
    }
}
