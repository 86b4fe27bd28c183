#!/usr/bin/python3
"""Sends malformed frames into a TAP from the kernel's side, for tests/bad_input.rs.

usage: bad_frames.py IFACE DST_MAC SRC_IP DST_IP SEED COUNT

Frames are crafted with scapy but sent through a plain AF_PACKET socket: scapy's own send pads
any frame the kernel refuses (those shorter than an Ethernet header) to 60 bytes and retries,
which would hide what was really sent. Every IP address in these frames is SRC_IP or DST_IP, so
whatever ustack answers stays on the test's own link.

Prints one line per kind, `sent KIND N` and `refused KIND N`, for the test to check counters
against.
"""

import random
import socket
import sys
import time

from scapy.all import ICMP, IP, Ether, Raw  # noqa: E402 (scapy is slow to import; fail early)


# IPv4, ARP, IPv6, and the VLAN tags that could wrap any of them.
CARRIES_ADDRESSES = {
    bytes.fromhex(t) for t in ("0800", "0806", "86dd", "8100", "88a8", "9100")
}


def main():
    iface, dst_mac, src_ip, dst_ip, seed, count = sys.argv[1:7]
    rng = random.Random(int(seed))
    count = int(count)
    with open(f"/sys/class/net/{iface}/address") as f:
        src_mac = f.read().strip()

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent, refused = {}, {}

    def send(kind, frame):
        try:
            sock.send(bytes(frame))
            sent[kind] = sent.get(kind, 0) + 1
        except OSError:
            # EINVAL for frames shorter than the 14-byte Ethernet header: they never reach ustack.
            refused[kind] = refused.get(kind, 0) + 1

    def ether(ethertype=0x0800):
        return Ether(dst=dst_mac, src=src_mac, type=ethertype)

    def echo(**ip_fields):
        return IP(src=src_ip, dst=dst_ip, **ip_fields) / ICMP(type=8, id=0x7573, seq=1) / Raw(
            b"ustack-bad-input"
        )

    ip_src = socket.inet_aton(src_ip)
    ip_dst = socket.inet_aton(dst_ip)

    # 1. Random frames of random length: a third as IPv4 to ustack (random header, but our
    #    addresses), a third to ustack with an EtherType nobody handles, a third with random
    #    destination MACs as well.
    for i in range(200):
        frame = bytearray(rng.randbytes(rng.randint(1, 1500)))
        kind = ("random-ipv4", "random-ethertype", "random-mac")[i % 3]
        if kind != "random-mac" and len(frame) >= 6:
            frame[0:6] = bytes.fromhex(dst_mac.replace(":", ""))
        if len(frame) >= 14:
            if kind == "random-ipv4":
                frame[12:14] = b"\x08\x00"
                if len(frame) >= 34:
                    frame[26:30] = ip_src
                    frame[30:34] = ip_dst
            elif bytes(frame[12:14]) in CARRIES_ADDRESSES:
                # Keep IPv4 and ARP (also behind a VLAN tag) out of the "unknown EtherType"
                # kinds: their random bytes would hold addresses outside the test's link.
                frame[12:14] = b"\x88\xb5"  # IEEE local experimental
        send(kind, frame)
        if i % 20 == 19:
            time.sleep(0.005)  # let ustack drain the TAP queue rather than overflow it

    # 2. Crafted bad IPv4, `count` of each, as Linux's ip_rcv_core and icmp_rcv classify them.
    for _ in range(count):
        # Only 10 bytes of IP header after Ethernet: pskb_may_pull fails → InHdrErrors.
        send("truncated-header", ether() / Raw(bytes(echo())[:10]))

        # Header checksum (frame bytes 24..26) made wrong: InCsumErrors and InHdrErrors.
        bad = bytearray(bytes(ether() / echo()))
        bad[24] ^= 0x5A
        send("bad-ip-checksum", bad)

        # IHL 3 (12 bytes) is below the 20-byte minimum: InHdrErrors.
        send("ihl-3", ether() / echo(ihl=3))

        # Version 6 in an IPv4 EtherType: InHdrErrors.
        send("version-6", ether() / echo(version=6))

        # Total length 10, below the header's own 20: InHdrErrors.
        send("total-length-below-header", ether() / echo(len=10))

        # Total length 1000 in a frame of 58: InTruncatedPkts (checksum is valid).
        send("total-length-beyond-frame", ether() / echo(len=1000))

        # Valid IP, ICMP checksum wrong: Icmp InCsumErrors and InErrors.
        # (ICMP checksum at frame bytes 36..38, after 14 Ethernet and 20 IP bytes.)
        bad = bytearray(bytes(ether() / echo()))
        bad[36] ^= 0x5A
        send("bad-icmp-checksum", bad)

        # Protocol 253 (RFC 3692 experimental): InUnknownProtos and a protocol unreachable.
        send(
            "unknown-protocol",
            ether() / IP(src=src_ip, dst=dst_ip, proto=253) / Raw(b"ustack-proto-253"),
        )
        time.sleep(0.01)

    for kind in sorted(set(sent) | set(refused)):
        print(f"sent {kind} {sent.get(kind, 0)}")
        print(f"refused {kind} {refused.get(kind, 0)}")


if __name__ == "__main__":
    main()
