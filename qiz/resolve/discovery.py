"""LAN discovery: a multicast beacon (off unless asked for).

Every ``interval`` seconds a node sends ``canonical CBOR {"v": 1, "id": node id (32), "addr":
"ip:port"}`` to a multicast group; a node that hears a beacon from an id it has no link to dials
the address *expecting that id*, so the QMP handshake proves the claim: a beacon is a hint,
never trusted. A beacon must come from the host it names, and at most a few per second are acted
on; their TTL keeps ours on the local network (TTL 0: this host only, for tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable

from qiz import wire
from qiz.identity.peer_record import parse_address

log = logging.getLogger("qiz.discovery")
DEFAULT_GROUP = "239.255.77.71"
DEFAULT_PORT = 7452
MAX_BEACON = 256
RATE = 2.0  # beacons acted on per second, at most, whatever arrives
BURST = 10


def encode_beacon(node_id: bytes, address: str) -> bytes:
    return wire.encode({"v": 1, "id": node_id, "addr": address})


def decode_beacon(data: bytes) -> tuple[bytes, str] | None:
    """(id, address) from a beacon, or None for anything malformed."""
    try:
        fields = wire.decode(data, max_size=MAX_BEACON, what="beacon")
        if not isinstance(fields, dict) or set(fields) != {"v", "id", "addr"} or fields["v"] != 1:
            return None
        node_id, address = fields["id"], fields["addr"]
        if not isinstance(node_id, bytes) or len(node_id) != 32 or not isinstance(address, str):
            return None
        parse_address(address)
    except (wire.WireError, ValueError):
        return None
    return node_id, address


class LanDiscovery(asyncio.DatagramProtocol):
    def __init__(
        self,
        node_id: bytes,
        address: Callable[[], str],
        on_peer: Callable[[bytes, str], None],
        *,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        interface: str = "0.0.0.0",  # noqa: S104 - the interface to join the group on
        ttl: int = 1,
        interval: float = 5.0,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.on_peer = on_peer
        self.group, self.port, self.interface = group, port, interface
        self.ttl, self.interval = ttl, interval
        self.transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_heard: dict[bytes, float] = {}
        self.heard = 0
        self.ignored = 0
        self._tokens = float(BURST)
        self._refilled = time.monotonic()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", self.port))
        membership = struct.pack(
            "4s4s", socket.inet_aton(self.group), socket.inet_aton(self.interface)
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._task = asyncio.ensure_future(self._announce())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        beacon = decode_beacon(data)
        if beacon is None:
            self.ignored += 1
            return
        node_id, address = beacon
        if parse_address(address)[0] != addr[0]:
            self.ignored += 1  # it names a host other than the one it came from
            return
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens < 1:
            self.ignored += 1  # over the rate: a flood of made-up ids gets nowhere
            return
        if node_id == self.node_id or now - self._last_heard.get(node_id, -1e9) < self.interval / 2:
            return
        self._tokens -= 1
        if len(self._last_heard) > 4096:
            self._last_heard.clear()
        self._last_heard[node_id] = now
        self.heard += 1
        self.on_peer(node_id, address)

    async def _announce(self) -> None:
        while True:
            if self.transport is not None:
                with contextlib.suppress(OSError):
                    self.transport.sendto(
                        encode_beacon(self.node_id, self.address()), (self.group, self.port)
                    )
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()
