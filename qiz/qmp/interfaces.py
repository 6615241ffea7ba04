"""The addresses a node listening on a wildcard (``0.0.0.0:PORT``, ``[::]:PORT``) can be dialled
at: its interfaces' addresses, read from the kernel (Linux: ``SIOCGIFADDR`` per interface for
IPv4, ``/proc/net/if_inet6`` for IPv6), never from DNS.

A peer record must name addresses a peer can dial; ``0.0.0.0`` is not one. Link-local IPv6
addresses (``fe80::/10``) need an interface scope no record can carry, so they are left out;
loopback is kept only when the host has nothing else (a node alone on a laptop).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from qiz.identity.peer_record import MAX_ADDRESSES, parse_address

_SIOCGIFADDR = 0x8915
_IF_INET6 = Path("/proc/net/if_inet6")


def ipv4_interface_addresses() -> list[str]:
    """Every IPv4 address assigned to an interface of this host (its network namespace)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                out.append(socket.inet_ntoa(answer[20:24]))
    return out


def ipv6_interface_addresses() -> list[str]:
    """Every IPv6 address of this host, link-local ones excepted (see the module docstring)."""
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        ip = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        if not ip.is_link_local:
            out.append(str(ip))
    return out


def listen_addresses(bound: str) -> list[str]:
    """The addresses to publish for a listener bound at ``bound`` (``ip:port``): itself, or
    for a wildcard every interface address at its port (non-loopback first, loopback only if
    there is nothing else), at most :data:`MAX_ADDRESSES`."""
    host, port = parse_address(bound)
    ip = ipaddress.ip_address(host)
    if not ip.is_unspecified:
        return [bound]
    found = ipv4_interface_addresses() if ip.version == 4 else ipv6_interface_addresses()
    ips = [ipaddress.ip_address(text) for text in dict.fromkeys(found)]
    outside = [a for a in ips if not a.is_loopback]
    chosen = outside or [a for a in ips if a.is_loopback]
    texts = [f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}" for a in chosen]
    return texts[:MAX_ADDRESSES] or [bound]
