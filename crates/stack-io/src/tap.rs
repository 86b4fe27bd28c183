//! Attaching to an existing TAP interface (drivers/net/tun.c, Documentation/networking/tuntap.rst).
//!
//! We use raw `libc` ioctls rather than the `tun-tap` crate's `Iface`: `TUNSETIFF` on a
//! name that does not exist silently *creates* a device (when the caller has
//! CAP_NET_ADMIN), and `Iface` neither lets us set `O_NONBLOCK` before the first read nor
//! hands back the errno we need to tell "busy" from "not a TAP" from "no permission".
//! The three ioctls below are short and their failure modes are the point of this module.
//!
//! Everything happens in the network namespace of the *calling thread*: `/dev/net/tun`
//! binds the new queue to `current->nsproxy->net_ns` at open time, and the helper
//! sockets used for `if_nametoindex`, `SIOCGIFMTU` and `SIOCETHTOOL` are created there too.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// `IFNAMSIZ` (include/uapi/linux/if.h) counts the terminating NUL.
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

const TUN_PATH: &str = "/dev/net/tun";

/// An attached TAP queue: reading yields one Ethernet frame per `read`, writing injects
/// one frame into the kernel as if it arrived on the wire. Closing the fd detaches.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    mtu: u32,
    /// Bytes of `virtio_net_hdr` in front of every frame each way; 0 without
    /// `IFF_VNET_HDR`.
    vnet_hdr_len: usize,
    offloads: Offloads,
}

/// How to attach: see [`Tap::attach_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Ask for a `virtio_net_hdr` on every frame (`IFF_VNET_HDR`) and for checksum and
    /// TCPv4 segmentation offload (`TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4`).
    pub offload: bool,
}

/// What the device does for us, as agreed with TUNSETOFFLOAD: exactly the core's
/// `dev->features` ([`Offloads`], handed to `StackConfig::offloads` as it is). With
/// `csum` (`TUN_F_CSUM`: NETIF_F_HW_CSUM) the kernel sends us frames with unfinished
/// transport checksums (`IpSummed::Partial`) and the core may leave its own unfinished;
/// with `tso` (`TUN_F_TSO4`: NETIF_F_TSO, only granted together with `csum`,
/// `set_offload`) the kernel sends TCP/IPv4 super-packets of up to 64 KiB
/// (`gso_size > 0`) and the core may send them. (The kernel would accept NEEDS_CSUM and
/// GSO frames from us over any vnet header, since `tun_get_user` always honours the
/// header; TUNSETOFFLOAD only governs what it sends, but a core that offloads to a
/// device that did not agree is asking for trouble.)
pub use stack_core::Offloads;

/// The `TUNSETOFFLOAD` argument for `o`.
fn tun_offload_flags(o: Offloads) -> libc::c_uint {
    let mut f = 0;
    if o.csum {
        f |= libc::TUN_F_CSUM;
        // set_offload in tun.c ignores TSO without CSUM; so do we.
        if o.tso {
            f |= libc::TUN_F_TSO4;
        }
    }
    f
}

impl Tap {
    /// Attach to the existing TAP interface `name` (`IFF_TAP | IFF_NO_PI`) in the calling
    /// thread's network namespace, with the fd in non-blocking mode.
    ///
    /// Non-blocking is for io_uring: a posted read with no frame pending must never sleep
    /// in `tun_do_read`, neither inline nor in an io-wq worker thread (one thread per
    /// in-flight read). With O_NONBLOCK the read fails fast with EAGAIN inside the
    /// kernel, and io_uring arms a poll on the file and retries when a frame arrives.
    /// (Recent kernels' tun also honours IOCB_NOWAIT, so they would arm the poll anyway;
    /// the flag makes us independent of that. The integration test checks that no io-wq
    /// worker appears while 32 reads are posted.)
    ///
    /// The frames carry no `virtio_net_hdr`, so the device must not offload anything to
    /// us: the offloads are set to none (`TUNSETOFFLOAD(0)`), in case an earlier
    /// [`Tap::attach_with`] left them on. They are a property of the device, not of the
    /// fd (`tun->set_features` survives detaching), and with NETIF_F_HW_CSUM still on the
    /// kernel would send us frames whose checksums it never finished.
    pub fn attach(name: &str) -> Result<Tap, TapError> {
        Tap::attach_with(name, TapOptions::default())
    }

    /// [`Tap::attach`] with options.
    ///
    /// With `offload`, TUNSETIFF also sets `IFF_VNET_HDR`, so that every frame read or
    /// written starts with a `virtio_net_hdr` ([`crate::vnet`]; its size is read back
    /// with TUNGETVNETHDRSZ: 10 unless someone changed it), and then TUNSETOFFLOAD asks
    /// for `TUN_F_CSUM | TUN_F_TSO4`. The kernel then sends us frames with the checksum
    /// left to us (NEEDS_CSUM: the field holds only the pseudo-header sum) and TCP
    /// super-packets of up to 64 KiB, and accepts both from us. If TUNSETOFFLOAD is
    /// refused, we keep the header without offloads (the header is still correct, just
    /// always "nothing to do") and say so in [`Tap::offloads`] and a warning.
    pub fn attach_with(name: &str, opts: TapOptions) -> Result<Tap, TapError> {
        validate_ifname(name)?;
        let cname = CString::new(name).expect("validate_ifname rejects NUL");

        // TUNSETIFF would create a missing device, so look first.
        let ifindex = nametoindex(&cname).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => TapError::NoSuchDevice(name.to_owned()),
            _ => TapError::Io {
                name: name.to_owned(),
                what: "looking up the interface index",
                err: e,
            },
        })?;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(TapError::OpenTun)?;

        tun_set_iff(&file, &cname, opts.offload).map_err(|e| classify_setiff_error(name, e))?;

        // If the device vanished between the lookup and TUNSETIFF, the kernel has just
        // created a fresh (non-persistent) one for us; dropping `file` destroys it again.
        match nametoindex(&cname) {
            Ok(now) if now == ifindex => {}
            _ => return Err(TapError::NoSuchDevice(name.to_owned())),
        }

        let mtu = query_mtu(&cname).map_err(|e| TapError::Io {
            name: name.to_owned(),
            what: "reading the MTU (SIOCGIFMTU)",
            err: e,
        })?;

        let (vnet_hdr_len, offloads) = if opts.offload {
            let len = tun_get_vnet_hdr_sz(&file).map_err(|e| TapError::Io {
                name: name.to_owned(),
                what: "reading the vnet header size (TUNGETVNETHDRSZ)",
                err: e,
            })?;
            if len < crate::vnet::VNET_HDR_LEN {
                // tun refuses sizes under 10 (TUNSETVNETHDRSZ), so this cannot happen.
                return Err(TapError::Io {
                    name: name.to_owned(),
                    what: "reading the vnet header size (TUNGETVNETHDRSZ)",
                    err: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("vnet header size {len} is under 10"),
                    ),
                });
            }
            let want = Offloads::ALL;
            match tun_set_offload(&file, tun_offload_flags(want)) {
                Ok(()) => (len, want),
                Err(err) => {
                    tracing::warn!(
                        device = name,
                        %err,
                        "TUNSETOFFLOAD(CSUM|TSO4) refused; running without offloads"
                    );
                    // Make sure nothing is left on from before.
                    let _ = tun_set_offload(&file, 0);
                    (len, Offloads::default())
                }
            }
        } else {
            // See `attach`: no header, so no offloads either. Failure would only mean a
            // kernel without TUNSETOFFLOAD, which cannot have turned offloads on.
            if let Err(err) = tun_set_offload(&file, 0) {
                tracing::debug!(device = name, %err, "TUNSETOFFLOAD(0) failed");
            }
            (0, Offloads::default())
        };

        Ok(Tap {
            fd: file.into(),
            name: name.to_owned(),
            ifindex,
            mtu,
            vnet_hdr_len,
            offloads,
        })
    }

    /// Whether every frame each way starts with a `virtio_net_hdr` (`IFF_VNET_HDR`).
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr_len > 0
    }

    /// Size of that header (TUNGETVNETHDRSZ; 10, `sizeof(struct virtio_net_hdr)`, unless
    /// another program changed it), 0 without one. Bytes past the first 10 are
    /// zero on write and ignored on read.
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_len
    }

    /// The offloads the device agreed to; all false without a vnet header.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until the interface is administratively up and operationally running.
    ///
    /// Attaching turns the TAP's carrier on, but the kernel acts on that in linkwatch
    /// (`linkwatch_do_dev`), a little later; until then the device's qdisc is `noop` and
    /// every frame the kernel sends towards us is dropped. Returns `Ok(false)` at once
    /// if the interface is down (`ip link set NAME up` is missing), or after `timeout`.
    /// Call it on a thread in the namespace the TAP was attached in.
    pub fn wait_running(&self, timeout: Duration) -> io::Result<bool> {
        let cname = CString::new(self.name.as_str()).expect("validated name");
        let sock = ioctl_socket()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut ifr = ifreq_for(&cname);
            // SAFETY: SIOCGIFFLAGS fills `ifr_flags` of the `struct ifreq` we pass.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the kernel wrote the `ifru_flags` member.
            let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
            if flags & libc::IFF_UP == 0 {
                return Ok(false);
            }
            if flags & libc::IFF_RUNNING != 0 {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The interface index in the namespace the TAP was attached in.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface MTU (IP packet size) when we attached.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Give up the fd, e.g. to hand it to an io_uring. Closing it detaches.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Why [`Tap::attach`] failed. `Display` is one line that says what to do about it.
#[derive(Debug)]
pub enum TapError {
    NameTooLong(String),
    InvalidName {
        name: String,
        reason: &'static str,
    },
    /// Opening `/dev/net/tun` failed.
    OpenTun(io::Error),
    NoSuchDevice(String),
    /// The interface exists but is not a TAP device. `kind` is what it is, if known
    /// (e.g. "a TUN device", "a veth device").
    NotTap {
        name: String,
        kind: Option<String>,
    },
    /// A TAP device whose queue flags differ from ours (created with `multi_queue`).
    FlagsMismatch(String),
    /// Another process (or another `Tap` of ours) is attached to a single-queue device.
    Busy(String),
    /// TUNSETIFF said EPERM: the device has an owner/group and we are neither, nor
    /// CAP_NET_ADMIN (`tun_not_capable`).
    PermissionDenied(String),
    /// Anything else, with the step that failed.
    Io {
        name: String,
        what: &'static str,
        err: io::Error,
    },
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapError::NameTooLong(name) => write!(
                f,
                "interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"
            ),
            TapError::InvalidName { name, reason } => {
                write!(f, "invalid interface name {name:?}: {reason}")
            }
            TapError::OpenTun(err) => match err.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => write!(
                    f,
                    "cannot open {TUN_PATH}: permission denied (run as root or with CAP_NET_ADMIN)"
                ),
                Some(libc::ENOENT) => write!(
                    f,
                    "cannot open {TUN_PATH}: no such file (is the tun module loaded? try: modprobe tun)"
                ),
                Some(libc::ENODEV | libc::ENXIO) => write!(
                    f,
                    "cannot open {TUN_PATH}: no tun driver behind it (try: modprobe tun)"
                ),
                _ => write!(f, "cannot open {TUN_PATH}: {err}"),
            },
            TapError::NoSuchDevice(name) => write!(
                f,
                "no TAP device named {name:?} in this network namespace \
                 (create it with: ip tuntap add dev {name} mode tap)"
            ),
            TapError::NotTap { name, kind: None } => write!(f, "{name:?} is not a TAP device"),
            TapError::NotTap {
                name,
                kind: Some(kind),
            } => write!(f, "{name:?} is not a TAP device (it is {kind})"),
            TapError::FlagsMismatch(name) => write!(
                f,
                "TAP device {name:?} was created with other queue flags \
                 (multi_queue?); recreate it with: ip tuntap add dev {name} mode tap"
            ),
            TapError::Busy(name) => write!(
                f,
                "TAP device {name:?} is busy (another process is attached)"
            ),
            TapError::PermissionDenied(name) => write!(
                f,
                "cannot attach to TAP device {name:?}: permission denied (run as root or with \
                 CAP_NET_ADMIN, or create it with: ip tuntap add dev {name} mode tap user <you>)"
            ),
            TapError::Io { name, what, err } => {
                write!(f, "TAP device {name:?}: {what} failed: {err}")
            }
        }
    }
}

impl std::error::Error for TapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TapError::OpenTun(err) | TapError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl TapError {
    /// The `io::ErrorKind` a caller working in `io::Result` should see.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            TapError::NameTooLong(_) | TapError::InvalidName { .. } => io::ErrorKind::InvalidInput,
            TapError::OpenTun(err) | TapError::Io { err, .. } => err.kind(),
            TapError::NoSuchDevice(_) => io::ErrorKind::NotFound,
            TapError::NotTap { .. } | TapError::FlagsMismatch(_) => io::ErrorKind::InvalidInput,
            TapError::Busy(_) => io::ErrorKind::ResourceBusy,
            TapError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
        }
    }
}

impl From<TapError> for io::Error {
    /// Keeps the one-line message: `io::Error`'s Display shows the inner error's.
    fn from(e: TapError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// The kernel's `dev_valid_name` (net/core/dev.c), so that a bad name is reported as
/// such instead of as whatever errno the first ioctl happens to return.
pub fn validate_ifname(name: &str) -> Result<(), TapError> {
    let invalid = |reason| TapError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(TapError::NameTooLong(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(invalid("\".\" and \"..\" are reserved"));
    }
    if name.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if name.contains('/') || name.contains(':') {
        return Err(invalid("it contains '/' or ':'"));
    }
    // The kernel uses isspace(): ASCII whitespace (and a vertical tab, which Rust's
    // is_ascii_whitespace leaves out).
    if name.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b) {
        return Err(invalid("it contains whitespace"));
    }
    Ok(())
}

fn nametoindex(name: &CStr) -> io::Result<u32> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

/// An `ifreq` with `ifr_name` filled in and the union zeroed.
fn ifreq_for(name: &CStr) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays, integers, a pointer); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.to_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// TUNSETIFF with `IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` if `vnet_hdr`. On an existing
/// device this attaches our fd and rewrites the device's IFF_VNET_HDR flag to ours
/// (`tun->flags = (tun->flags & ~TUN_FEATURES) | (ifr->ifr_flags & TUN_FEATURES)`).
fn tun_set_iff(file: &File, name: &CStr, vnet_hdr: bool) -> io::Result<()> {
    let mut ifr = ifreq_for(name);
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TUNSETOFFLOAD: the argument is the flag word itself, not a pointer (`set_offload` in
/// tun.c). Unknown bits make it fail with EINVAL, which is how new flags are probed.
fn tun_set_offload(file: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an integer argument and touches no user memory.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            flags as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TUNGETVNETHDRSZ: the size of the vnet header on this device.
fn tun_get_vnet_hdr_sz(file: &File) -> io::Result<usize> {
    let mut sz: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer, which points at `sz`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut sz) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sz.max(0) as usize)
}

/// A throwaway AF_INET datagram socket: the handle the SIOCGIF* and SIOCETHTOOL ioctls
/// need. It lives in the calling thread's network namespace.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn query_mtu(name: &CStr) -> io::Result<u32> {
    let sock = ioctl_socket()?;
    let mut ifr = ifreq_for(name);
    // SAFETY: SIOCGIFMTU fills `ifr_mtu` of the `struct ifreq` we pass.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the `ifru_mtu` member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

/// `struct ethtool_drvinfo` (include/uapi/linux/ethtool.h); libc does not define it.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// The driver name and bus info of an interface (`ethtool -i`). The tun driver reports
/// driver "tun" and bus_info "tun" or "tap" (`tun_get_drvinfo`), which is how we tell
/// the reasons for a TUNSETIFF EINVAL apart without reading sysfs, whose view belongs
/// to the namespace it was mounted in, not to the calling thread's.
fn driver_info(name: &CStr) -> io::Result<(String, String)> {
    let sock = ioctl_socket()?;
    // SAFETY: all-zero is a valid EthtoolDrvinfo (integers and byte arrays).
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut ifr = ifreq_for(name);
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes one ethtool_drvinfo through
    // `ifr_data`, which points at `info`, alive for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    Ok((text(&info.driver), text(&info.bus_info)))
}

/// Map a TUNSETIFF errno to what it means for an interface we know exists
/// (`tun_set_iff` in drivers/net/tun.c).
fn classify_setiff_error(name: &str, err: io::Error) -> TapError {
    match err.raw_os_error() {
        Some(libc::EBUSY) => TapError::Busy(name.to_owned()),
        Some(libc::EPERM | libc::EACCES) => TapError::PermissionDenied(name.to_owned()),
        Some(libc::EINVAL) => {
            let cname = CString::new(name).expect("validated name");
            match driver_info(&cname) {
                Ok((driver, bus)) if driver == "tun" && bus == "tap" => {
                    TapError::FlagsMismatch(name.to_owned())
                }
                Ok((driver, bus)) if driver == "tun" && bus == "tun" => TapError::NotTap {
                    name: name.to_owned(),
                    kind: Some("a TUN device".to_owned()),
                },
                Ok((driver, _)) if !driver.is_empty() => TapError::NotTap {
                    name: name.to_owned(),
                    kind: Some(format!("a {driver} device")),
                },
                _ => TapError::NotTap {
                    name: name.to_owned(),
                    kind: None,
                },
            }
        }
        _ => TapError::Io {
            name: name.to_owned(),
            what: "attaching (TUNSETIFF)",
            err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dev_valid_name() {
        assert!(validate_ifname("ustack0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok(), "15 bytes fit");
        assert!(matches!(
            validate_ifname("a234567890123456"),
            Err(TapError::NameTooLong(_))
        ));
        for bad in ["", ".", "..", "a/b", "a:1", "a b", "a\tb", "a\0b"] {
            assert!(
                matches!(validate_ifname(bad), Err(TapError::InvalidName { .. })),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn error_messages_are_one_honest_line() {
        let os = |errno| io::Error::from_raw_os_error(errno);
        let cases = [
            (
                TapError::OpenTun(os(libc::EACCES)),
                "cannot open /dev/net/tun: permission denied (run as root or with CAP_NET_ADMIN)",
            ),
            (
                TapError::OpenTun(os(libc::ENOENT)),
                "cannot open /dev/net/tun: no such file (is the tun module loaded? try: modprobe tun)",
            ),
            (
                TapError::NoSuchDevice("X".into()),
                "no TAP device named \"X\" in this network namespace \
                 (create it with: ip tuntap add dev X mode tap)",
            ),
            (
                TapError::NotTap {
                    name: "X".into(),
                    kind: None,
                },
                "\"X\" is not a TAP device",
            ),
            (
                TapError::NotTap {
                    name: "X".into(),
                    kind: Some("a TUN device".into()),
                },
                "\"X\" is not a TAP device (it is a TUN device)",
            ),
            (
                TapError::Busy("X".into()),
                "TAP device \"X\" is busy (another process is attached)",
            ),
            (
                TapError::NameTooLong("a234567890123456".into()),
                "interface name \"a234567890123456\" is longer than 15 bytes",
            ),
        ];
        for (err, text) in cases {
            let shown = err.to_string();
            assert_eq!(shown, text);
            assert!(!shown.contains('\n'));
        }
    }

    #[test]
    fn io_error_keeps_kind_and_message() {
        let e: io::Error = TapError::Busy("X".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert_eq!(
            e.to_string(),
            "TAP device \"X\" is busy (another process is attached)"
        );
        let e: io::Error = TapError::NoSuchDevice("X".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_device_is_reported_without_creating_it() {
        // Needs no privileges: the existence check runs before /dev/net/tun is opened.
        let name = "ustk-nodev9";
        let err = Tap::attach(name).expect_err("no such device here");
        assert!(
            matches!(err, TapError::NoSuchDevice(ref n) if n == name),
            "{err}"
        );
        let cname = CString::new(name).unwrap();
        assert!(nametoindex(&cname).is_err(), "attach must not create it");
    }

    #[test]
    fn bad_name_is_rejected_before_any_syscall() {
        assert!(matches!(
            Tap::attach("much-too-long-name0"),
            Err(TapError::NameTooLong(_))
        ));
    }
}
