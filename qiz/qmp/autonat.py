"""Observed addresses and reachability checks over live links (docs/nat.md §1-§2).

* Every new direct link: this node tells the peer where it sees it (``nat.observed``), so each
  side learns its address after any NAT. The answers feed :class:`~qiz.qmp.observed.NatState`.
* Now and then, and when the observed addresses change: up to :data:`AUTONAT_PEERS` linked
  peers on distinct networks are asked to dial this node back (``nat.dialback``). A peer dials
  only addresses at the IP it sees the asker at, so a node cannot be made to dial third
  parties, and it proves what it reached by the record the listener there hands out (a QMP
  HELLO/RECORD exchange: no key exchange, no link kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiz import QizError
from qiz.crypto.ids import NodeId
from qiz.identity import PeerRecord
from qiz.identity.peer_record import PeerRecordError, parse_address
from qiz.qmp.admission import address_prefix
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import FrameDecoder, FrameKind, encode_frame
from qiz.qmp.handshake import VERSION
from qiz.qmp.manager import LinkManager
from qiz.qmp.observed import NatState
from qiz.qmp.rpc import CallContext, Handler, RpcError
from qiz.qmp.transport import Link, why_not
from qiz.ratelimit import KeyedRateLimiter
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.nat")

# Peers asked to dial back in one check, each on a distinct /24 or /48 network.
AUTONAT_PEERS = 3
# Addresses one dial-back request may name; the helper tries each in turn.
MAX_DIALBACK_ADDRESSES = 4
# Dial-back requests served per asker and in all, per minute (burst the same): a peer cannot
# turn this node into a port scanner, nor keep it busy dialling.
DIALBACK_PER_PEER = 4
DIALBACK_TOTAL = 32
# Seconds a dial-back connection may take to hand out its record.
DIALBACK_TIMEOUT = 2.0
# Seconds between two reachability checks that a change of the observed IPs may start.
MIN_CHECK_INTERVAL = 10.0
# A dial-back answer counts at least this long (seconds), and twice the check interval.
DIALBACK_MIN_AGE = 900.0
# A RECORD frame is a peer record (at most 8 KiB) and its header.
_RECORD_FRAME_LIMIT = 16 * 1024


class DialbackRefused(RpcError):
    def __init__(self, message: str) -> None:
        super().__init__("dialback-refused", message)


class NatConfigError(QizError, ValueError):
    """A bad ``[nat]`` table in config.toml: one line naming the key."""


@dataclass
class NatConfig:
    """``[nat]`` in config.toml."""

    autonat: bool = True  # ask peers to dial back (off: reachability stays "unknown")
    check_every: float = 300.0  # seconds between reachability checks
    # "auto": as peers find it; "private" or "public": the owner knows (a firewall that drops
    # what a dial-back would show, a port forward), and no dial-back is asked for
    reachability: str = "auto"

    @classmethod
    def from_table(cls, table: object) -> NatConfig:
        if not isinstance(table, dict):
            raise NatConfigError("config.toml: [nat] must be a table")
        unknown = sorted(set(table) - {"autonat", "check_every", "reachability"})
        if unknown:
            raise NatConfigError(f"config.toml: [nat] has no key {unknown[0]!r}")
        config = cls()
        if "autonat" in table:
            if not isinstance(table["autonat"], bool):
                raise NatConfigError("config.toml: nat.autonat must be true or false")
            config.autonat = table["autonat"]
        if "check_every" in table:
            value = table["check_every"]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (10 <= value <= 86400)
            ):
                raise NatConfigError(
                    "config.toml: nat.check_every must be a number of seconds from 10 to 86400"
                )
            config.check_every = float(value)
        if "reachability" in table:
            if table["reachability"] not in ("auto", "private", "public"):
                raise NatConfigError(
                    'config.toml: nat.reachability must be "auto", "private" or "public"'
                )
            config.reachability = table["reachability"]
        return config


async def fetch_record(address: str, expected: NodeId, *, timeout: float) -> PeerRecord:
    """The peer record of whoever listens at ``address``, checked to be ``expected``'s: a QMP
    HELLO answered by a RECORD (no handshake, nothing kept). Raises ``OSError``,
    ``TimeoutError``, :class:`QmpError` or :class:`PeerRecordError`."""
    host, port = parse_address(address)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(encode_frame(FrameKind.HELLO, VERSION.to_bytes(2, "big")))
            decoder = FrameDecoder(_RECORD_FRAME_LIMIT)
            while True:
                data = await reader.read(_RECORD_FRAME_LIMIT)
                if not data:
                    raise ConnectionResetError("closed before sending its record")
                for frame in decoder.feed(data):
                    if frame.kind is not FrameKind.RECORD:
                        raise QmpError(
                            ErrorCode.PROTOCOL_ERROR, f"answered {frame.kind.name}, not RECORD"
                        )
                    return PeerRecord.verify(
                        bytes(frame.body), now=time.time(), expected_id=expected
                    )
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _host(address: str) -> str:
    return parse_address(address)[0]


class NatService:
    """Serves ``nat.observed`` and ``nat.dialback`` and keeps this node's :class:`NatState`."""

    def __init__(
        self,
        links: LinkManager,
        *,
        config: NatConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.links = links
        self.config = config or NatConfig()
        self.clock = clock
        self.state = NatState()
        self.on_change = on_change  # reachability or public addresses changed
        self.tasks = TaskOwner("nat", log)
        self._per_peer = KeyedRateLimiter(DIALBACK_PER_PEER / 60.0, DIALBACK_PER_PEER)
        self._total = KeyedRateLimiter(DIALBACK_TOTAL / 60.0, DIALBACK_TOTAL)
        self._checking: asyncio.Task[str] | None = None
        self._last_check = float("-inf")
        self.counters = {"dialbacks_served": 0, "dialbacks_refused": 0, "observed": 0}

    def handlers(self) -> dict[str, Handler]:
        return {"nat.observed": self._rpc_observed, "nat.dialback": self._rpc_dialback}

    def start(self, listen: list[str]) -> None:
        self.state.set_listen(listen)
        if self.config.reachability != "auto":
            self.state.forced = self.config.reachability
        elif self.config.autonat:
            self.tasks.every(self.config.check_every, self._periodic_check, "reachability")

    async def close(self) -> None:
        await self.tasks.close()

    # ------------------------------------------------------------------ links

    def on_link(self, link: Link) -> None:
        """A new authenticated link: tell the peer where we see it (direct links only)."""
        if link.remote_address.startswith("relay:") or not link.remote_address:
            return
        if not self.tasks.closed:
            self.tasks.spawn(self._tell(link), "tell observed")

    async def _tell(self, link: Link) -> None:
        # the manager tells us of a link before it files it: look it up on the next turn
        await asyncio.sleep(0)
        entry = self.links.peers.get(link.peer_id) if link.peer_id is not None else None
        if entry is None or entry.link is not link:
            return  # a spare or a duplicate: the primary already told it
        with contextlib.suppress(RpcError):
            await entry.rpc.call("nat.observed", {"seen": link.remote_address}, timeout=5.0)

    async def _rpc_observed(self, ctx: CallContext, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("seen"), str):
            raise ValueError("nat.observed takes {'seen': 'ip:port'}")
        if ctx.link is None or ctx.link.remote_address.startswith("relay:"):
            return {}  # a relayed link has no far end to report (docs/nat.md section 1)
        local = ""
        if ctx.link is not None and ctx.link.conn.is_initiator and ctx.link.transport is not None:
            sock = ctx.link.transport.get_extra_info("sockname")
            if sock:
                local = f"[{sock[0]}]:{sock[1]}" if ":" in sock[0] else f"{sock[0]}:{sock[1]}"
        self.counters["observed"] += 1
        changed = self.state.observe(
            body["seen"], ctx.peer_id.digest, local=local, now=self.clock()
        )
        if changed:  # the set of public IPs changed, not merely a new ephemeral port
            self._changed()
            self.check_soon()
        return {}

    # ------------------------------------------------------------------ dial-back, served

    async def _rpc_dialback(self, ctx: CallContext, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("addrs"), list):
            raise ValueError("nat.dialback takes {'addrs': ['ip:port', ...]}")
        addrs = body["addrs"]
        if not 0 < len(addrs) <= MAX_DIALBACK_ADDRESSES or not all(
            isinstance(a, str) for a in addrs
        ):
            raise ValueError(f"nat.dialback takes 1 to {MAX_DIALBACK_ADDRESSES} addresses")
        seen = ctx.link.remote_address if ctx.link is not None else ""
        if not seen or seen.startswith("relay:"):
            raise DialbackRefused("a dial-back needs a direct link (its source address)")
        now = self.clock()
        if not self._per_peer.allow(ctx.peer_id.digest, now) or not self._total.allow("", now):
            self.counters["dialbacks_refused"] += 1
            raise DialbackRefused("too many dial-back requests; try again in a minute")
        asker_ip = ipaddress.ip_address(_host(seen))
        error = "no address at the IP this node sees you at"
        for address in addrs:
            try:
                ip = ipaddress.ip_address(_host(address))
            except ValueError:
                raise ValueError(f"nat.dialback: {address!r} is not ip:port") from None
            # only the asker's own IP (loopback stays loopback): never a third party
            if ip != asker_ip and not (ip.is_loopback and asker_ip.is_loopback):
                continue
            try:
                await fetch_record(address, ctx.peer_id, timeout=DIALBACK_TIMEOUT)
            except TimeoutError:
                error = f"{address}: no answer within {DIALBACK_TIMEOUT:g} s"
            except OSError as exc:
                error = f"{address}: {why_not(exc)}"
            except (QmpError, PeerRecordError) as exc:
                error = f"{address}: {exc}"
            else:
                self.counters["dialbacks_served"] += 1
                return {"reached": address}
        self.counters["dialbacks_served"] += 1
        return {"reached": None, "error": error}

    # ------------------------------------------------------------------ dial-back, asked

    def candidates(self) -> list[str]:
        """Addresses to have dialled back: where we listen, and each observed public IP at our
        listen port (what a port forward or a public IP gives) and at the ports seen."""
        listen_ports = []
        for address in self.state.listen:
            with contextlib.suppress(ValueError):
                listen_ports.append(parse_address(address)[1])
        out: list[str] = []
        # what the outside sees first: the node's own addresses would not fit behind 4
        # interfaces (docker0, virbr...), and a helper dials only the IP it sees us at anyway
        for host in sorted(self.state.public_ips() - self.state.own_ips()):
            bracket = f"[{host}]" if ":" in host else host
            out.extend(f"{bracket}:{port}" for port in listen_ports)
        out.extend(self.state.listen)
        return list(dict.fromkeys(out))[:MAX_DIALBACK_ADDRESSES]

    def check_soon(self) -> None:
        """A check now, unless one runs or ran less than :data:`MIN_CHECK_INTERVAL` ago."""
        if not self.config.autonat or self.state.forced is not None or self.tasks.closed:
            return
        if self.clock() - self._last_check < MIN_CHECK_INTERVAL:
            return
        if self._checking is None or self._checking.done():
            with contextlib.suppress(Exception):
                self._checking = self.tasks.spawn(self.check(), "reachability check")

    async def _periodic_check(self) -> None:
        await self.check()

    async def check(self) -> str:
        """Ask up to :data:`AUTONAT_PEERS` linked peers on distinct networks to dial us back;
        the new reachability."""
        self.state.expire(self.clock(), max(DIALBACK_MIN_AGE, 2 * self.config.check_every))
        candidates = self.candidates()
        if not candidates:
            return self.state.reachability
        chosen = []
        prefixes: set[str] = set()
        for peer_id, entry in list(self.links.peers.items()):
            address = entry.link.remote_address
            if not entry.link.is_open or not address or address.startswith("relay:"):
                continue
            prefix = address_prefix(address)
            if prefix in prefixes and not _host(address).startswith("127."):
                continue
            prefixes.add(prefix)
            chosen.append((peer_id, entry))
            if len(chosen) >= AUTONAT_PEERS:
                break
        if chosen:  # a check that could ask nobody does not hold the next one back
            self._last_check = self.clock()
        before = (self.state.reachability, self.state.verified)
        results = await asyncio.gather(
            *(self._ask(peer_id, entry, candidates) for peer_id, entry in chosen)
        )
        for peer_id, answer in results:
            if answer is not None:
                reached, address = answer
                self.state.dialback(peer_id.digest, reached, now=self.clock(), address=address)
        if (self.state.reachability, self.state.verified) != before:
            log.info("reachability: %s", self.state.reachability)
            self._changed()
        return self.state.reachability

    async def _ask(self, peer_id: NodeId, entry: Any, candidates: list[str]) -> tuple:
        try:
            answer = await entry.rpc.call(
                "nat.dialback", {"addrs": candidates}, timeout=DIALBACK_TIMEOUT * 4 + 2
            )
        except RpcError:
            return peer_id, None  # refused or unreachable: no evidence either way
        if not isinstance(answer, dict):
            return peer_id, None
        reached = answer.get("reached")
        if isinstance(reached, str) and reached in candidates:
            return peer_id, (True, reached)
        return peer_id, (False, None)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
