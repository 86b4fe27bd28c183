//! Counters, named as in Linux's /proc/net/snmp, /proc/net/netstat and
//! /proc/net/stat/arp_cache, incremented at the exact drop or delivery site.
//!
//! [`Snmp::render`] prints them the way /proc/net/snmp does: per section a line of
//! names and a line of values, so tools and tests can parse either file the same way.

use core::fmt::Write;

/// Declares a counter struct whose fields print under the given Linux names.
macro_rules! mib {
    ($(#[$m:meta])* pub struct $name:ident = $section:literal {
        $($(#[$fm:meta])* $field:ident => $label:literal,)*
    }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fm])* pub $field: u64,)*
        }

        impl $name {
            pub const SECTION: &'static str = $section;

            /// Add `other`'s counts to these (a sum over devices or sockets).
            pub fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }

            /// `(name, value)` pairs in /proc order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$(($label, self.$field),)*]
            }
        }
    };
}

mib! {
    /// IP MIB (RFC 4293 names, as Linux's `Ip:` line).
    pub struct IpMib = "Ip" {
        /// 1 when forwarding, 2 when not (RFC 4293 ipForwarding).
        forwarding => "Forwarding",
        default_ttl => "DefaultTTL",
        in_receives => "InReceives",
        in_hdr_errors => "InHdrErrors",
        in_addr_errors => "InAddrErrors",
        forw_datagrams => "ForwDatagrams",
        in_unknown_protos => "InUnknownProtos",
        in_discards => "InDiscards",
        in_delivers => "InDelivers",
        out_requests => "OutRequests",
        out_discards => "OutDiscards",
        out_no_routes => "OutNoRoutes",
        reasm_timeout => "ReasmTimeout",
        reasm_reqds => "ReasmReqds",
        reasm_oks => "ReasmOKs",
        reasm_fails => "ReasmFails",
        frag_oks => "FragOKs",
        frag_fails => "FragFails",
        frag_creates => "FragCreates",
    }
}

mib! {
    /// Linux's `IpExt:` line of /proc/net/netstat.
    pub struct IpExtMib = "IpExt" {
        in_no_routes => "InNoRoutes",
        in_truncated_pkts => "InTruncatedPkts",
        in_mcast_pkts => "InMcastPkts",
        out_mcast_pkts => "OutMcastPkts",
        in_bcast_pkts => "InBcastPkts",
        out_bcast_pkts => "OutBcastPkts",
        in_octets => "InOctets",
        out_octets => "OutOctets",
        in_csum_errors => "InCsumErrors",
        /// Datagrams whose fragments overlapped (all dropped, as Linux since 4.19).
        reasm_overlaps => "ReasmOverlaps",
        /// Martian source addresses (Linux counts these in /proc/net/stat/rt_cache
        /// `in_martian_src`; kept here so one block shows every IPv4 drop).
        in_martians => "InMartians",
    }
}

mib! {
    /// ICMP MIB (`Icmp:` line).
    pub struct IcmpMib = "Icmp" {
        in_msgs => "InMsgs",
        in_errors => "InErrors",
        in_csum_errors => "InCsumErrors",
        in_dest_unreachs => "InDestUnreachs",
        in_time_excds => "InTimeExcds",
        in_parm_probs => "InParmProbs",
        in_redirects => "InRedirects",
        in_echos => "InEchos",
        in_echo_reps => "InEchoReps",
        out_msgs => "OutMsgs",
        out_errors => "OutErrors",
        out_rate_limit_global => "OutRateLimitGlobal",
        out_rate_limit_host => "OutRateLimitHost",
        out_dest_unreachs => "OutDestUnreachs",
        out_time_excds => "OutTimeExcds",
        out_parm_probs => "OutParmProbs",
        out_redirects => "OutRedirects",
        out_echos => "OutEchos",
        out_echo_reps => "OutEchoReps",
    }
}

mib! {
    /// TCP MIB (`Tcp:` line).
    pub struct TcpMib = "Tcp" {
        active_opens => "ActiveOpens",
        passive_opens => "PassiveOpens",
        attempt_fails => "AttemptFails",
        estab_resets => "EstabResets",
        curr_estab => "CurrEstab",
        in_segs => "InSegs",
        out_segs => "OutSegs",
        retrans_segs => "RetransSegs",
        in_errs => "InErrs",
        out_rsts => "OutRsts",
        in_csum_errors => "InCsumErrors",
    }
}

mib! {
    /// Linux's `TcpExt:` line of /proc/net/netstat (the part we implement).
    pub struct TcpExtMib = "TcpExt" {
        /// Packets dropped by the reverse-path filter (`LINUX_MIB_IPRPFILTER`; Linux
        /// keeps it in TcpExt too).
        ip_reverse_path_filter => "IPReversePathFilter",
        listen_overflows => "ListenOverflows",
        listen_drops => "ListenDrops",
        tcp_challenge_ack => "TCPChallengeACK",
        paws_estab => "PAWSEstab",
        tcp_timeouts => "TCPTimeouts",
        /// Tail loss probes sent (RFC 8985 section 7).
        tcp_loss_probes => "TCPLossProbes",
        tcp_reno_recovery => "TCPRenoRecovery",
        tcp_sack_recovery => "TCPSackRecovery",
        /// In-order data taken by the header-prediction fast path.
        tcp_hp_hits => "TCPHPHits",
        /// Pure ACKs taken by the fast path.
        tcp_hp_acks => "TCPHPAcks",
        tcp_rcvq_drop => "TCPRcvQDrop",
        /// D-SACK blocks sent (a duplicate arrived) and received (our retransmission
        /// was not needed).
        tcp_dsack_old_sent => "TCPDSACKOldSent",
        tcp_dsack_recv => "TCPDSACKRecv",
        syncookies_sent => "SyncookiesSent",
        syncookies_recv => "SyncookiesRecv",
        syncookies_failed => "SyncookiesFailed",
    }
}

mib! {
    /// UDP MIB (`Udp:` line).
    pub struct UdpMib = "Udp" {
        in_datagrams => "InDatagrams",
        no_ports => "NoPorts",
        in_errors => "InErrors",
        out_datagrams => "OutDatagrams",
        rcvbuf_errors => "RcvbufErrors",
        sndbuf_errors => "SndbufErrors",
        in_csum_errors => "InCsumErrors",
    }
}

mib! {
    /// ARP and neighbour-table statistics (names after /proc/net/stat/arp_cache).
    pub struct ArpMib = "Arp" {
        in_requests => "InRequests",
        in_replies => "InReplies",
        /// Undecodable or unsupported ARP packets.
        in_errors => "InErrors",
        out_requests => "OutRequests",
        out_replies => "OutReplies",
        /// Entries in the neighbour table now.
        entries => "Entries",
        /// Resolutions that ended in NUD_FAILED (`res_failed`).
        res_failed => "ResFailed",
        /// Packets dropped because a pending queue was full (`unresolved_discards`).
        unresolved_discards => "UnresolvedDiscards",
        /// Packets waiting for resolution now, all neighbours together.
        unres_qlen => "UnresQlen",
        /// The longest any one neighbour's pending queue has been.
        unres_qlen_max => "UnresQlenMax",
        /// Entries not created because the table was full (`table_fulls`).
        table_fulls => "TableFulls",
    }
}

mib! {
    /// Device statistics (`struct rtnl_link_stats64` names, CamelCased).
    pub struct DevStats = "Dev" {
        rx_packets => "RxPackets",
        rx_bytes => "RxBytes",
        /// Frames the stack had no room for.
        rx_dropped => "RxDropped",
        /// Runt or undecodable frames.
        rx_errors => "RxErrors",
        /// Unicast to another MAC, or tagged for a VLAN we do not have.
        rx_otherhost => "RxOtherHost",
        /// EtherType with no protocol handler (`rx_nohandler`).
        rx_nohandler => "RxNoHandler",
        tx_packets => "TxPackets",
        tx_bytes => "TxBytes",
        /// Dropped by the qdisc (queue full).
        tx_dropped => "TxDropped",
        /// Times the TX ring filled and the queue was stopped (`netif_stop_queue`).
        tx_queue_stopped => "TxQueueStopped",
    }
}

mib! {
    /// Packets dropped at each netfilter hook.
    pub struct NfStats = "Netfilter" {
        pre_routing => "PreRouting",
        local_in => "LocalIn",
        forward => "Forward",
        local_out => "LocalOut",
        post_routing => "PostRouting",
    }
}

/// All counters of a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snmp {
    pub ip: IpMib,
    pub ip_ext: IpExtMib,
    pub icmp: IcmpMib,
    pub udp: UdpMib,
    pub tcp: TcpMib,
    pub tcp_ext: TcpExtMib,
    pub arp: ArpMib,
    pub dev: DevStats,
    pub nf: NfStats,
}

/// Append one /proc-style section: `Name: a b c` then `Name: 1 2 3`.
pub fn write_section(out: &mut String, section: &str, fields: &[(&str, u64)]) {
    let _ = write!(out, "{section}:");
    for (name, _) in fields {
        let _ = write!(out, " {name}");
    }
    let _ = write!(out, "\n{section}:");
    for (_, value) in fields {
        let _ = write!(out, " {value}");
    }
    out.push('\n');
}

impl Snmp {
    /// Every section, /proc/net/snmp style.
    pub fn render(&self) -> String {
        let mut out = String::new();
        write_section(&mut out, IpMib::SECTION, &self.ip.fields());
        write_section(&mut out, IpExtMib::SECTION, &self.ip_ext.fields());
        write_section(&mut out, IcmpMib::SECTION, &self.icmp.fields());
        write_section(&mut out, TcpMib::SECTION, &self.tcp.fields());
        write_section(&mut out, TcpExtMib::SECTION, &self.tcp_ext.fields());
        write_section(&mut out, UdpMib::SECTION, &self.udp.fields());
        write_section(&mut out, ArpMib::SECTION, &self.arp.fields());
        write_section(&mut out, DevStats::SECTION, &self.dev.fields());
        write_section(&mut out, NfStats::SECTION, &self.nf.fields());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_proc_net_snmp() {
        let mut s = Snmp::default();
        s.ip.in_receives = 7;
        s.icmp.out_echo_reps = 3;
        let text = s.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 18);
        assert!(lines[0].starts_with("Ip: Forwarding DefaultTTL InReceives InHdrErrors"));
        assert!(lines[1].starts_with("Ip: 0 0 7 0"));
        let names: Vec<&str> = lines[4].split_whitespace().collect();
        let values: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!(names.len(), values.len());
        let i = names.iter().position(|n| *n == "OutEchoReps").unwrap();
        assert_eq!(values[i], "3");
    }
}
