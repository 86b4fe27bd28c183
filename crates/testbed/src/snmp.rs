//! Parsing of `/proc/net/snmp`-style counter blocks, the format `ustack host` and
//! `ustack ping --stats` print their counters in.

use std::collections::BTreeMap;

/// Section ("Ip") → counter name ("InReceives") → value.
pub type Counters = BTreeMap<String, BTreeMap<String, u64>>;

/// The line ustack prints before its counters.
pub const COUNTERS_HEADER: &str = "--- ustack counters ---";

/// Parses pairs of lines `Section: Name1 Name2 ...` / `Section: 1 2 ...`, as in
/// `/proc/net/snmp`, from text that may hold other lines too (ping output before a
/// `--stats` block, say), which are skipped.
///
/// A line is a header when any of its fields is not a number; a line of numbers is the values of
/// the last header of the same section. Values that do not fit a u64 (Linux prints Tcp MaxConn
/// as -1) are left out, as are names without a value, so a lookup of a counter that was not
/// printed gives None rather than a wrong number. A section printed twice is merged.
pub fn parse_snmp(text: &str) -> Counters {
    let mut counters = Counters::new();
    let mut header: Option<(&str, Vec<&str>)> = None;
    for line in text.lines() {
        let Some((section, rest)) = line.split_once(':') else {
            header = None;
            continue;
        };
        // A section may carry a qualifier after a space: `ustack router` prints one
        // device-loop block per TAP as "Io ra:". A prose line with a colon ("64 bytes
        // from 192.0.2.1: icmp_seq=1 ...") becomes a header nothing pairs with.
        let section = section.trim();
        if section.is_empty() {
            header = None;
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let numeric = !fields.is_empty() && fields.iter().all(|f| f.parse::<i128>().is_ok());
        if !numeric {
            header = Some((section, fields));
            continue;
        }
        let Some((head_section, names)) = header.take() else {
            continue;
        };
        if head_section != section {
            continue;
        }
        let entry = counters.entry(section.to_string()).or_default();
        for (name, value) in names.iter().zip(&fields) {
            if let Ok(v) = value.parse::<u64>() {
                entry.insert((*name).to_string(), v);
            }
        }
    }
    counters
}

/// The counters ustack printed after its `--- ustack counters ---` line, or None if it printed
/// no such line (it crashed, or was killed before it could).
pub fn counters_block(stdout: &str) -> Option<Counters> {
    let start = stdout.find(COUNTERS_HEADER)?;
    Some(parse_snmp(&stdout[start + COUNTERS_HEADER.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from a Linux 6.x /proc/net/snmp (trimmed): note Tcp MaxConn -1.
    const PROC_NET_SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 1432 0 0 0 0 0 1432 1491 0 12 0 0 0 0 0 0 0 1491
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 45 0 0 44 0 0 0 0 1 0 0 0 0 0 45 0 0 0 44 0 0 0 0 0 1 0 0 0 0
IcmpMsg: InType3 InType8 OutType0 OutType3
IcmpMsg: 44 1 1 44
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 27 0 0 1 0 1318 1375 0 0 35 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 44 44 0 88 0 0 0 0 0
";

    #[test]
    fn parses_proc_net_snmp() {
        let c = parse_snmp(PROC_NET_SNMP);
        assert_eq!(
            c.keys().collect::<Vec<_>>(),
            ["Icmp", "IcmpMsg", "Ip", "Tcp", "Udp"]
        );
        assert_eq!(c["Ip"]["Forwarding"], 2);
        assert_eq!(c["Ip"]["InReceives"], 1432);
        assert_eq!(c["Ip"]["OutTransmits"], 1491);
        assert_eq!(c["Icmp"]["OutDestUnreachs"], 44);
        assert_eq!(c["IcmpMsg"]["OutType3"], 44);
        assert_eq!(c["Udp"]["NoPorts"], 44);
        // -1 does not fit a u64: absent rather than wrapped.
        assert!(!c["Tcp"].contains_key("MaxConn"));
        assert_eq!(c["Tcp"]["ActiveOpens"], 27);
        assert_eq!(c["Tcp"].len(), 14);
    }

    #[test]
    fn finds_the_block_after_other_output() {
        let stdout = "\
PING 192.0.2.99 (192.0.2.99) 56(84) bytes of data.
From 192.0.2.2 icmp_seq=1 Destination Host Unreachable

--- 192.0.2.99 ping statistics ---
3 packets transmitted, 0 received, +1 errors, 100% packet loss, time 2003ms

--- ustack counters ---
Ip: InReceives InHdrErrors
Ip: 7 2
Arp: ResFailed UnresolvedDiscards UnresQlenMax
Arp: 1 199 101
Io: RxPackets TxBatches
Io: 18446744073709551615 3
";
        let c = counters_block(stdout).expect("block present");
        assert_eq!(c["Ip"]["InHdrErrors"], 2);
        assert_eq!(c["Arp"]["UnresQlenMax"], 101);
        assert_eq!(c["Io"]["RxPackets"], u64::MAX);
        assert_eq!(c.len(), 3);
        assert!(counters_block("no counters here\n").is_none());
    }

    #[test]
    fn skips_unpaired_and_foreign_lines() {
        let text = "\
64 bytes from 192.0.2.1: icmp_seq=1 ttl=64 time=0.5 ms
Dev: RxPackets RxBytes
Io: 1 2
Dev: RxPackets RxBytes
note: something else
Dev: 3 4
Icmp: InMsgs
Icmp: 5
Icmp: 6
Arp: A B C
Arp: 1 2
Ip: 1 2
";
        let c = parse_snmp(text);
        // Io's numbers followed a Dev header; Dev's header was interrupted by a non-numeric line.
        assert!(!c.contains_key("Io"));
        assert!(!c.contains_key("Dev"));
        // A second line of numbers has no header of its own.
        assert_eq!(c["Icmp"]["InMsgs"], 5);
        // A name without a value is absent.
        assert_eq!(c["Arp"].len(), 2);
        assert!(!c.contains_key("Ip"));
    }

    #[test]
    fn reads_per_device_sections() {
        let c = parse_snmp(
            "Io ra: RxPackets TxPackets\nIo ra: 5 6\nIo rb: RxPackets TxPackets\nIo rb: 7 8\n",
        );
        assert_eq!(c["Io ra"]["RxPackets"], 5);
        assert_eq!(c["Io rb"]["TxPackets"], 8);
    }

    #[test]
    fn merges_a_section_printed_twice() {
        let c = parse_snmp("Ip: A B\nIp: 1 2\nIp: C\nIp: 3\n");
        assert_eq!(c["Ip"].len(), 3);
        assert_eq!(c["Ip"]["C"], 3);
    }
}
