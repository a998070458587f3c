"""The PROXY protocol v2 header a listener with `proxy_protocol` sends its backend first.

Format (haproxy's proxy-protocol.txt, section 2.2): the 12-byte signature, version 2 with
command PROXY, the address family (TCP over IPv4 or IPv6), the length of what follows, the
source (client) and destination (the listener's own) addresses and ports, then TLVs: here
PP2_TYPE_AUTHORITY (0x02) with the client's SNI name, when it sent one.
"""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_AUTHORITY = 0x02
_PROXY_V2 = 0x21
_TCP4, _TCP6 = 0x11, 0x21


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(value.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def header(
    client: tuple[str, int], local: tuple[str, int], authority: str | None = None
) -> bytes:
    """The header for a connection from `client` to `local` (`(host, port, ...)` as a
    socket names them); `authority` is the SNI name."""
    source, destination = _address(client[0]), _address(local[0])
    if source.version != destination.version:  # one side IPv4-mapped, the other not
        source, destination = (
            ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
            for a in (source, destination)
        )
    family = _TCP4 if source.version == 4 else _TCP6
    body = source.packed + destination.packed + struct.pack("!HH", client[1], local[1])
    if authority:
        name = authority.encode("ascii")
        body += struct.pack("!BH", PP2_TYPE_AUTHORITY, len(name)) + name
    return SIGNATURE + struct.pack("!BBH", _PROXY_V2, family, len(body)) + body
