//! What the device layer does to a frame on its way between a TAP and the core:
//! [`DeviceConfig`] (the driver's knobs) and the virtio-net header, which carries the
//! offload metadata each way (`virtio_net_hdr_to_skb` / `virtio_net_hdr_from_skb`).
//! The ring that moves the frames is [`crate::uring::Uring`].

use stack_core::skb::IpSummed;
use stack_core::{Skb, SkbPool};

use crate::vnet::{self, VnetHdr};

/// Ethernet header plus one 802.1Q tag: what a frame adds to the MTU.
pub(crate) const ETH_OVERHEAD: usize = 14 + 4;

/// The largest IPv4 packet: what one GSO super-packet can carry behind its Ethernet
/// header when the device offers TSO (the kernel's `GSO_LEGACY_MAX_SIZE` is 64 KiB, and
/// `tot_len` caps an IPv4 packet at 65535 bytes in any case).
pub(crate) const MAX_GSO_PACKET: usize = 65535;

/// Default [`DeviceConfig::rx_copybreak`].
pub const DEFAULT_RX_COPYBREAK: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Receive buffers in each TAP's provided-buffer ring (rounded up to a power of
    /// two): the RX descriptors, how many frames the kernel can hand over before the
    /// stack thread reaps them.
    pub rx_inflight: usize,
    /// Headroom reserved in front of each received frame, so the stack can push
    /// headers (e.g. when forwarding) without copying.
    pub rx_headroom: usize,
    /// Writes allowed in flight per TAP (the TX ring); beyond this the stack thread
    /// leaves frames in the core's qdisc until completions make room.
    pub tx_inflight: usize,
    /// With a vnet header (offloads on), frames shorter than this are copied out of the
    /// 64 KiB receive buffer into a right-sized one from the stack's pool, like a NIC
    /// driver's `rx_copybreak`; longer ones (GSO super-packets) keep the big buffer.
    ///
    /// Why: a socket's receive queue is charged the skb's truesize, the whole buffer.
    /// An ACK or a 1500-byte segment pinning 64 KiB would fill `rcvbuf` ~40 times too
    /// early and shrink the window we advertise. Copying costs a memcpy of at most this
    /// many bytes; keeping costs at most 64 KiB / 16 KiB = 4x the frame in truesize.
    /// 16 KiB (the default) bounds both. Frames up to the pool's buffer size land in a
    /// pooled buffer, longer ones in a one-off buffer of their own size. 0 turns
    /// copying off. Without a vnet header reads go straight into pooled buffers and
    /// this does not apply.
    pub rx_copybreak: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            rx_inflight: 32,
            rx_headroom: 64,
            tx_inflight: 256,
            rx_copybreak: DEFAULT_RX_COPYBREAK,
        }
    }
}

/// Why a frame read with a vnet header was dropped (counted in `rx_errors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RxDrop {
    /// The header itself is short or has unknown flags.
    Header(vnet::VnetError),
    /// NEEDS_CSUM with the checksum field outside the frame (`skb_partial_csum_set`).
    CsumOutside,
    /// A GSO type other than TCPV4 (we only offer TSO4, so the kernel never sends
    /// one), or TCPV4 with `gso_size` 0 (which `virtio_net_hdr_to_skb` refuses too).
    Gso(u8),
    /// A TCPV4 GSO frame whose Ethernet/IPv4/TCP headers do not parse.
    GsoHeaders(vnet::HeaderError),
}

/// Turn a frame read with a vnet header in front into the skb the stack gets: strip the
/// header and carry what it says over to the skb's metadata, the way a virtio-net
/// driver's `receive_buf` does (`virtio_net_hdr_to_skb`, include/linux/virtio_net.h):
///
/// * `DATA_VALID` -> [`IpSummed::Unnecessary`]: the kernel made or checked the checksum.
/// * `NEEDS_CSUM` -> [`IpSummed::Partial`], with `csum_start` made head-relative like
///   the kernel's `skb->csum_start` (`skb_partial_csum_set` adds the headroom). The
///   checksum field holds only the pseudo-header sum; the stack must not verify it as if
///   it were complete (the data came from the kernel's memory, not a wire).
/// * `GSO_TCPV4` (ECN bit allowed) -> `gso_size`, and `gso_segs` = payload / gso_size
///   rounded up. The payload starts after the headers we parse ourselves: the
///   kernel's `hdr_len` is only `skb_headlen()` (`virtio_net_hdr_from_skb`: "a hint as
///   to how much should be linear"), which can reach into the payload.
///
/// `skb` holds the header and frame from `data`; frames shorter than `copybreak` are
/// copied into a buffer from `pool` with `headroom` in front (see
/// [`DeviceConfig::rx_copybreak`]).
pub(crate) fn receive_vnet(
    mut skb: Skb,
    vnet_len: usize,
    pool: &SkbPool,
    headroom: usize,
    copybreak: usize,
) -> Result<Skb, RxDrop> {
    let hdr = VnetHdr::parse(skb.data()).map_err(RxDrop::Header)?;
    skb.pull(vnet_len)
        .map_err(|_| RxDrop::Header(vnet::VnetError::Truncated))?;
    let frame_len = skb.len();
    if hdr.needs_csum() && !hdr.csum_fits(frame_len) {
        return Err(RxDrop::CsumOutside);
    }
    let (gso_size, gso_segs) = match hdr.gso_kind() {
        vnet::GSO_NONE => (0, 0),
        vnet::GSO_TCPV4 if hdr.gso_size > 0 => {
            let hdrs = vnet::tcp_frame_headers(skb.data()).map_err(RxDrop::GsoHeaders)?;
            let payload = frame_len - hdrs.hdr_len;
            let segs = payload.div_ceil(usize::from(hdr.gso_size)).max(1);
            (hdr.gso_size, u16::try_from(segs).unwrap_or(u16::MAX))
        }
        _ => return Err(RxDrop::Gso(hdr.gso_type)),
    };

    let mut skb = if frame_len < copybreak {
        // The big buffer goes back to its pool when `skb` drops here.
        pool.from_slice(headroom, skb.data())
    } else {
        skb
    };
    skb.ip_summed = if hdr.needs_csum() {
        let start = skb.data_offset() + usize::from(hdr.csum_start);
        IpSummed::Partial {
            csum_start: u16::try_from(start).map_err(|_| RxDrop::CsumOutside)?,
            csum_offset: hdr.csum_offset,
        }
    } else if hdr.data_valid() {
        IpSummed::Unnecessary
    } else {
        IpSummed::None
    };
    skb.gso_size = gso_size;
    skb.gso_segs = gso_segs;
    Ok(skb)
}

/// Why an outgoing frame could not be described in a vnet header (counted in
/// `tx_errors`, frame dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxDrop {
    /// `IpSummed::Partial` whose checksum field is not inside the frame.
    CsumOutside,
    /// `gso_size > 0` on something that is not a TCP/IPv4 frame we can parse.
    GsoHeaders(vnet::HeaderError),
}

/// The vnet header for an outgoing skb: the reverse of [`receive_vnet`], as
/// `virtio_net_hdr_from_skb` builds it for a virtio device.
///
/// * [`IpSummed::Partial`] -> `NEEDS_CSUM`, `csum_start` made frame-relative (the skb's
///   is head-relative). The kernel checks it the same way (`skb_partial_csum_set` in
///   `virtio_net_hdr_to_skb`) and finishes the checksum if the packet leaves it.
/// * `gso_size > 0` -> `GSO_TCPV4` with `gso_size` and `hdr_len` the length of the
///   Ethernet (and 802.1Q), IPv4 and TCP headers together. With CWR set in the TCP header the ECN bit is added, as
///   `tcp_ecn_send` marks `SKB_GSO_TCP_ECN`: the kernel then keeps CWR on the first
///   segment only.
///
/// The kernel honours both whatever TUNSETOFFLOAD said: that ioctl only governs what
/// it sends us (`tun_get_user` always runs `virtio_net_hdr_to_skb`).
pub(crate) fn vnet_hdr_for(skb: &Skb) -> Result<VnetHdr, TxDrop> {
    let mut hdr = VnetHdr::default();
    if let IpSummed::Partial {
        csum_start,
        csum_offset,
    } = skb.ip_summed
    {
        let start = usize::from(csum_start)
            .checked_sub(skb.data_offset())
            .ok_or(TxDrop::CsumOutside)?;
        hdr.flags = vnet::F_NEEDS_CSUM;
        hdr.csum_start = u16::try_from(start).map_err(|_| TxDrop::CsumOutside)?;
        hdr.csum_offset = csum_offset;
        if !hdr.csum_fits(skb.len()) {
            return Err(TxDrop::CsumOutside);
        }
    }
    if skb.gso_size > 0 {
        let frame = skb.data();
        let hdrs = vnet::tcp_frame_headers(frame).map_err(TxDrop::GsoHeaders)?;
        hdr.gso_type = vnet::GSO_TCPV4;
        if hdrs.cwr {
            hdr.gso_type |= vnet::GSO_ECN;
        }
        hdr.gso_size = skb.gso_size;
        hdr.hdr_len = u16::try_from(hdrs.hdr_len).unwrap_or(u16::MAX);
    }
    Ok(hdr)
}

/// How one frame goes to the fd.
pub(crate) enum TxLayout {
    /// The skb as it is: without a vnet header, or with it pushed into the skb's
    /// headroom (the `usize` says how many bytes of it).
    Linear(Skb, usize),
    /// The header in a buffer of its own and the frame behind it, one `writev`.
    Vectored(Skb, Skb),
}

/// Put the vnet header (if any) in front of the frame without copying the frame. Into
/// the headroom when there is room and the buffer is ours alone, as virtio_net's
/// `xmit_skb` does (`can_push`: headroom, and `!skb_header_cloned`): a clone (a TCP
/// retransmit queue, a packet tap) may push its own headers into the same bytes, so a
/// shared buffer's headroom is not ours to write. Otherwise the header goes in a
/// separate buffer and the two out in one `writev`, which tun reads as one frame
/// (`tun_get_user` takes an iov_iter).
pub(crate) fn tx_layout(mut skb: Skb, hdr: Option<VnetHdr>, vnet_len: usize) -> TxLayout {
    let Some(hdr) = hdr else {
        return TxLayout::Linear(skb, 0);
    };
    if skb.headroom() >= vnet_len && !skb.is_cloned() {
        if let Ok(room) = skb.push(vnet_len) {
            room.fill(0);
            hdr.emit(room);
            return TxLayout::Linear(skb, vnet_len);
        }
    }
    let mut bytes = vec![0; vnet_len];
    hdr.emit(&mut bytes);
    TxLayout::Vectored(Skb::from_vec(bytes), skb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::{F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_UDP, VNET_HDR_LEN};

    const HEADROOM: usize = 64;
    const BIG: usize = HEADROOM + VNET_HDR_LEN + ETH_OVERHEAD + MAX_GSO_PACKET;

    /// Ethernet + IPv4 (20) + UDP header + `payload` bytes.
    fn udp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 17;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 8]);
        f.extend(std::iter::repeat_n(7, payload));
        f
    }

    /// Ethernet + IPv4 (20) + TCP with 12 bytes of options (32) + `payload` bytes.
    fn tcp_frame(payload: usize, cwr: bool) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 32];
        tcp[12] = 8 << 4;
        tcp[13] = 0x10 | if cwr { 0x80 } else { 0 };
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(9, payload));
        f
    }

    /// What a read into a big receive buffer leaves: `hdr` and `frame` from `data`.
    fn read_into_big(hdr: VnetHdr, frame: &[u8]) -> Skb {
        let big = SkbPool::new(BIG, 4);
        let mut skb = big.alloc(BIG);
        skb.reserve(HEADROOM);
        hdr.emit(skb.put(VNET_HDR_LEN));
        skb.put(frame.len()).copy_from_slice(frame);
        skb
    }

    fn receive(hdr: VnetHdr, frame: &[u8], copybreak: usize) -> Result<Skb, RxDrop> {
        receive_vnet(
            read_into_big(hdr, frame),
            VNET_HDR_LEN,
            &SkbPool::default(),
            HEADROOM,
            copybreak,
        )
    }

    #[test]
    fn needs_csum_becomes_partial_counted_from_the_head() {
        let frame = udp_frame(100);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        for copybreak in [0, DEFAULT_RX_COPYBREAK] {
            let skb = receive(hdr, &frame, copybreak).unwrap();
            assert_eq!(skb.data(), &frame[..], "vnet header stripped");
            let want = skb.data_offset() as u16 + 34;
            assert_eq!(
                skb.ip_summed,
                IpSummed::Partial {
                    csum_start: want,
                    csum_offset: 6
                }
            );
            assert_eq!((skb.gso_size, skb.gso_segs), (0, 0));
            if copybreak == 0 {
                assert_eq!(skb.end(), BIG, "kept in the big buffer");
                assert_eq!(skb.data_offset(), HEADROOM + VNET_HDR_LEN);
            } else {
                assert_eq!(
                    skb.end(),
                    stack_core::skb::DEFAULT_BUF_SIZE,
                    "copied into a pooled buffer"
                );
                assert_eq!(skb.data_offset(), HEADROOM, "with the same headroom");
            }
        }
    }

    #[test]
    fn data_valid_and_nothing() {
        let frame = udp_frame(10);
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..VnetHdr::default()
        };
        let skb = receive(valid, &frame, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.ip_summed, IpSummed::Unnecessary);
        let skb = receive(VnetHdr::default(), &frame, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.ip_summed, IpSummed::None);
    }

    #[test]
    fn checksum_field_outside_the_frame_is_refused() {
        let frame = udp_frame(0); // 42 bytes: the UDP checksum is at 40..42
        let mut hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(receive(hdr, &frame, 0).is_ok());
        hdr.csum_offset = 7;
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::CsumOutside);
        hdr.csum_start = u16::MAX;
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::CsumOutside);
    }

    #[test]
    fn tcpv4_gso_counts_segments_from_the_parsed_headers() {
        // 66 bytes of headers, 2500 of payload in 1000-byte segments: 3 segments. The
        // kernel's hdr_len is skb_headlen, here pretending the whole frame is linear.
        let frame = tcp_frame(2500, false);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: frame.len() as u16,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        };
        let skb = receive(hdr, &frame, 0).unwrap();
        assert_eq!((skb.gso_size, skb.gso_segs), (1000, 3));
        let hdr = VnetHdr {
            gso_size: 500,
            ..hdr
        };
        assert_eq!(receive(hdr, &frame, 0).unwrap().gso_segs, 5);

        // A big frame stays in its buffer under the default copybreak too.
        let big = tcp_frame(30_000, false);
        let skb = receive(hdr, &big, DEFAULT_RX_COPYBREAK).unwrap();
        assert_eq!(skb.end(), BIG);
        assert_eq!(skb.gso_segs, 60);
    }

    #[test]
    fn gso_we_did_not_offer_is_refused() {
        let frame = tcp_frame(2500, false);
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 0,
            ..VnetHdr::default()
        };
        assert_eq!(receive(hdr, &frame, 0).unwrap_err(), RxDrop::Gso(GSO_TCPV4));
        let udp = VnetHdr {
            gso_type: GSO_UDP,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert_eq!(receive(udp, &frame, 0).unwrap_err(), RxDrop::Gso(GSO_UDP));
        let not_tcp = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert!(matches!(
            receive(not_tcp, &udp_frame(3000), 0).unwrap_err(),
            RxDrop::GsoHeaders(_)
        ));
    }

    #[test]
    fn a_read_shorter_than_the_header_is_refused() {
        let big = SkbPool::new(BIG, 1);
        let mut skb = big.alloc(BIG);
        skb.reserve(HEADROOM);
        skb.put(4);
        assert!(matches!(
            receive_vnet(skb, VNET_HDR_LEN, &SkbPool::default(), HEADROOM, 0),
            Err(RxDrop::Header(_))
        ));
    }

    /// An egress skb as the stack makes it: headroom, frame, metadata.
    fn egress(frame: &[u8]) -> Skb {
        SkbPool::default().from_slice(stack_core::skb::MAX_HEADER - 54, frame)
    }

    #[test]
    fn partial_checksum_goes_out_frame_relative() {
        let mut skb = egress(&udp_frame(20));
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 6,
        };
        let hdr = vnet_hdr_for(&skb).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 6,
                ..VnetHdr::default()
            }
        );
        // Pointing before the frame or past its end cannot be described.
        skb.ip_summed = IpSummed::Partial {
            csum_start: 2,
            csum_offset: 6,
        };
        assert_eq!(vnet_hdr_for(&skb), Err(TxDrop::CsumOutside));
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 100,
        };
        assert_eq!(vnet_hdr_for(&skb), Err(TxDrop::CsumOutside));
    }

    #[test]
    fn gso_goes_out_as_tcpv4_with_the_header_length() {
        let mut skb = egress(&tcp_frame(4000, false));
        skb.gso_size = 1448;
        skb.gso_segs = 3;
        skb.ip_summed = IpSummed::Partial {
            csum_start: (skb.data_offset() + 34) as u16,
            csum_offset: 16,
        };
        let hdr = vnet_hdr_for(&skb).unwrap();
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!((hdr.gso_size, hdr.hdr_len), (1448, 66));
        assert_eq!(
            (hdr.flags, hdr.csum_start, hdr.csum_offset),
            (F_NEEDS_CSUM, 34, 16)
        );

        let mut cwr = egress(&tcp_frame(4000, true));
        cwr.gso_size = 1448;
        assert_eq!(vnet_hdr_for(&cwr).unwrap().gso_type, GSO_TCPV4 | GSO_ECN);

        let mut udp = egress(&udp_frame(4000));
        udp.gso_size = 1448;
        assert!(matches!(vnet_hdr_for(&udp), Err(TxDrop::GsoHeaders(_))));
    }

    #[test]
    fn the_header_goes_into_headroom_only_when_the_buffer_is_ours() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let frame = udp_frame(20);

        match tx_layout(egress(&frame), Some(hdr), VNET_HDR_LEN) {
            TxLayout::Linear(skb, n) => {
                assert_eq!(n, VNET_HDR_LEN);
                assert_eq!(&skb.data()[..VNET_HDR_LEN], &hdr.to_bytes());
                assert_eq!(&skb.data()[VNET_HDR_LEN..], &frame[..]);
            }
            TxLayout::Vectored(..) => panic!("room in front: no writev"),
        }
        // A longer vnet header (TUNSETVNETHDRSZ 12) is padded with zeros.
        match tx_layout(egress(&frame), Some(hdr), 12) {
            TxLayout::Linear(skb, 12) => assert_eq!(&skb.data()[10..12], &[0, 0]),
            _ => panic!("room for 12"),
        }

        let shared = egress(&frame);
        let clone = shared.clone();
        match tx_layout(shared, Some(hdr), VNET_HDR_LEN) {
            TxLayout::Vectored(h, skb) => {
                assert_eq!(h.data(), &hdr.to_bytes());
                assert_eq!(skb.data(), &frame[..]);
            }
            TxLayout::Linear(..) => panic!("a shared buffer's headroom is not ours"),
        }
        assert_eq!(clone.data(), &frame[..]);

        match tx_layout(Skb::from_vec(frame.clone()), Some(hdr), VNET_HDR_LEN) {
            TxLayout::Vectored(_, skb) => assert_eq!(skb.data(), &frame[..]),
            TxLayout::Linear(..) => panic!("no headroom"),
        }
        match tx_layout(Skb::from_vec(frame.clone()), None, 0) {
            TxLayout::Linear(skb, 0) => assert_eq!(skb.data(), &frame[..]),
            _ => panic!("no vnet header: the skb as it is"),
        }
    }
}
