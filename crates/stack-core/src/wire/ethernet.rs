//! Ethernet II frames (IEEE 802.3 clause 3.2.6 "Length/Type" used as a type), optionally
//! with one IEEE 802.1Q VLAN tag.
//!
//! ```text
//!  0      6      12        14          16         18
//!  +------+------+---------+-----------+----------+---------
//!  | dst  | src  | type    | payload ...
//!  +------+------+---------+-----------+----------+---------
//!  | dst  | src  | 0x8100  | TCI       | type     | payload ...   (802.1Q tagged)
//!  +------+------+---------+-----------+----------+---------
//! ```
//!
//! The frame check sequence is not part of the view: devices (and TAP) strip it.

use core::fmt;

use super::{Error, MacAddr, Result};

/// EtherType values (IEEE registry; the ones the stack looks at).
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag (C-TAG).
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (S-TAG), the outer tag of a QinQ frame.
    pub const QINQ: u16 = 0x88a8;
}

/// Length of an untagged header: two addresses and the EtherType.
pub const HEADER_LEN: usize = 14;
/// Length of a header carrying one 802.1Q tag (4 more bytes: TPID is the outer type, TCI).
pub const VLAN_HEADER_LEN: usize = 18;

mod field {
    use core::ops::Range;

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Tag control information, present when ETHERTYPE is a tag protocol identifier.
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

fn is_tag_protocol(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

/// An 802.1Q tag's control information (IEEE 802.1Q section 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// Priority code point, 3 bits.
    pub pcp: u8,
    /// Drop eligible indicator (formerly CFI).
    pub dei: bool,
    /// VLAN identifier, 12 bits (0 = priority-tagged only, 0xfff reserved).
    pub vid: u16,
}

impl VlanTag {
    /// Split a 16-bit TCI: PCP in bits 15..13, DEI in bit 12, VID in bits 11..0.
    pub fn from_tci(tci: u16) -> VlanTag {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// Pack into a TCI. Out-of-range `pcp`/`vid` bits are dropped, not carried into the
    /// neighbouring fields.
    pub fn to_tci(&self) -> u16 {
        (u16::from(self.pcp & 0x07) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }
}

/// A read/write view of an Ethernet frame held in `T`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap without checking; accessors may panic if the buffer is too short.
    /// Use [`EthernetFrame::new_checked`] for untrusted input.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wrap after [`EthernetFrame::check_len`]: afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` if the buffer is shorter than 14 bytes, or shorter than 18 when the
    /// EtherType announces a VLAN tag (0x8100 or 0x88a8).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if is_tag_protocol(self.ethertype()) && b.len() < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DST])
    }

    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SRC])
    }

    /// The outer EtherType (a TPID for tagged frames).
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// The first VLAN tag, if the outer EtherType is 802.1Q or 802.1ad. Only one tag is
    /// decoded: for a QinQ frame this is the service tag and [`Self::inner_ethertype`] is
    /// the customer tag's TPID.
    pub fn vlan(&self) -> Option<VlanTag> {
        if is_tag_protocol(self.ethertype()) {
            Some(VlanTag::from_tci(read_u16(
                self.buffer.as_ref(),
                field::TCI.start,
            )))
        } else {
            None
        }
    }

    /// The EtherType after the tag, if any: the protocol of the payload.
    pub fn inner_ethertype(&self) -> u16 {
        if is_tag_protocol(self.ethertype()) {
            read_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE.start)
        } else {
            self.ethertype()
        }
    }

    /// 14, or 18 when a tag is present.
    pub fn header_len(&self) -> usize {
        if is_tag_protocol(self.ethertype()) {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(addr.as_bytes());
    }

    pub fn set_src(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(addr.as_bytes());
    }

    /// Set the outer EtherType. Writing a TPID here changes [`Self::header_len`].
    pub fn set_ethertype(&mut self, value: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for EthernetFrame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.check_len().is_err() {
            return write!(
                f,
                "EthernetFrame(truncated, {} bytes)",
                self.as_bytes().len()
            );
        }
        let mut d = f.debug_struct("EthernetFrame");
        d.field("src", &self.src()).field("dst", &self.dst());
        if let Some(tag) = self.vlan() {
            d.field("vlan", &tag);
        }
        d.field(
            "ethertype",
            &format_args!("{:#06x}", self.inner_ethertype()),
        )
        .field("payload_len", &self.payload().len())
        .finish()
    }
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The decoded header of an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// One 802.1Q tag; emitted with TPID 0x8100.
    pub vlan: Option<VlanTag>,
    /// The protocol of the payload (the inner EtherType of a tagged frame).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Decode a frame's header.
    ///
    /// An 802.1ad (QinQ, TPID 0x88a8) outer tag is `Unsupported`: the repr holds one
    /// 802.1Q tag and would re-emit it with the wrong TPID. A frame with two 0x8100 tags
    /// parses with `ethertype == 0x8100`, which no upper layer accepts.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        if frame.ethertype() == ethertype::QINQ {
            return Err(Error::Unsupported);
        }
        Ok(EthernetRepr {
            dst: frame.dst(),
            src: frame.src(),
            vlan: frame.vlan(),
            ethertype: frame.inner_ethertype(),
        })
    }

    /// 14, or 18 with a VLAN tag.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Write the header into `buf[..self.header_len()]`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Self::header_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(buf.len() >= self.header_len(), "ethernet: buffer too short");
        buf[field::DST].copy_from_slice(self.dst.as_bytes());
        buf[field::SRC].copy_from_slice(self.src.as_bytes());
        match self.vlan {
            Some(tag) => {
                buf[field::ETHERTYPE].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                buf[field::TCI].copy_from_slice(&tag.to_tci().to_be_bytes());
                buf[field::INNER_ETHERTYPE].copy_from_slice(&self.ethertype.to_be_bytes());
            }
            None => buf[field::ETHERTYPE].copy_from_slice(&self.ethertype.to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNTAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    const TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, DEI 0, VID 100
        0x08, 0x00, // IPv4
        0x45, 0x00, // payload
    ];

    #[test]
    fn untagged_frame() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.inner_ethertype(), ethertype::ARP);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.ethertype, ethertype::ARP);
        let mut out = [0u8; 14];
        r.emit(&mut out);
        assert_eq!(out, UNTAGGED[..14]);
    }

    #[test]
    fn tagged_frame() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.ethertype(), ethertype::VLAN);
        assert_eq!(
            f.vlan(),
            Some(VlanTag {
                pcp: 5,
                dei: false,
                vid: 100
            })
        );
        assert_eq!(f.inner_ethertype(), ethertype::IPV4);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x45, 0x00]);
        let r = EthernetRepr::parse(&f).unwrap();
        let mut out = [0u8; 18];
        r.emit(&mut out);
        assert_eq!(out, TAGGED[..18]);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            EthernetFrame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            Error::Truncated
        );
        assert!(EthernetFrame::new_checked(&UNTAGGED[..14]).is_ok());
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..17]).unwrap_err(),
            Error::Truncated
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..18]).is_ok());
        let mut qinq = TAGGED;
        qinq[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        assert_eq!(
            EthernetFrame::new_checked(&qinq[..17]).unwrap_err(),
            Error::Truncated
        );
        let f = EthernetFrame::new_checked(&qinq[..]).unwrap();
        assert_eq!(f.vlan().map(|t| t.vid), Some(100));
        assert_eq!(EthernetRepr::parse(&f).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn setters() {
        let mut buf = [0u8; 20];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([2, 0, 0, 0, 0, 9]));
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut()[0] = 0x45;
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload()[0], 0x45);
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(buf[12..15], [0x08, 0x00, 0x45]);
    }

    #[test]
    fn tci_masks_out_of_range() {
        let t = VlanTag {
            pcp: 0xff,
            dei: false,
            vid: 0xffff,
        };
        assert_eq!(t.to_tci(), 0xefff);
        assert_eq!(VlanTag::from_tci(0xffff).to_tci(), 0xffff);
    }

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn vlan() -> impl Strategy<Value = VlanTag> {
        (0u8..8, any::<bool>(), 0u16..4096).prop_map(|(pcp, dei, vid)| VlanTag { pcp, dei, vid })
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            dst in mac(),
            src in mac(),
            vlan in proptest::option::of(vlan()),
            // Not a tag protocol: an untagged repr carrying a TPID would re-parse as tagged.
            ethertype in any::<u16>().prop_filter("not a TPID", |t| !is_tag_protocol(*t)),
            payload in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let repr = EthernetRepr { dst, src, vlan, ethertype };
            let mut buf = vec![0u8; repr.header_len() + payload.len()];
            repr.emit(&mut buf);
            buf[repr.header_len()..].copy_from_slice(&payload);
            let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
            prop_assert_eq!(frame.payload(), &payload[..]);
        }

        #[test]
        fn tci_round_trip(tci in any::<u16>()) {
            prop_assert_eq!(VlanTag::from_tci(tci).to_tci(), tci);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst(), f.src(), f.ethertype(), f.vlan(), f.inner_ethertype());
                prop_assert!(f.header_len() <= data.len());
                let _ = f.payload();
                let _ = format!("{f:?}");
                let _ = EthernetRepr::parse(&f);
            }
            // parse must also cope with a view that was never checked.
            let _ = EthernetRepr::parse(&EthernetFrame::new_unchecked(&data[..]));
            let _ = format!("{:?}", EthernetFrame::new_unchecked(&data[..]));
        }
    }
}
