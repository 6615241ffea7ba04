"""Hole punching over a relayed link (docs/nat.md §5): DCUtR's exchange, over QMP.

Two nodes behind NATs that reached each other through a relay try to meet directly: the side
that dialled (A) sends its public addresses (``nat.punch``), B answers with its own, A measures
the round trip, tells B to go (``nat.sync``) and waits half a round trip; then both connect at
once from their listen ports, so that each NAT has a mapping when the other's SYN arrives (TCP
simultaneous open). The one TCP connection that results carries a fresh QMP handshake (A the
initiator, B the responder) that must reach the expected node, and the link manager then
prefers the direct link to the relayed one.

:class:`PunchBook` (sans-IO) decides when a pair is worth trying and remembers outcomes;
:func:`simultaneous_connect` is the socket part; :class:`PunchService` drives both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import parse_address
from qiz.qmp.connection import Connection, QmpConfig
from qiz.qmp.errors import ErrorCode
from qiz.qmp.observed import NatState
from qiz.qmp.rpc import CallContext, Handler, RpcError
from qiz.qmp.transport import Link, LinkError, why_not
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.punch")

# Seconds one attempt may take from the sync to an established QMP link.
PUNCH_TIMEOUT = 5.0
# Attempts per punch, one second apart (a SYN lost to timing gets another chance).
MAX_PUNCH_ATTEMPTS = 3
# A pair whose punch failed is not tried again for this long (seconds).
PUNCH_RETRY_AFTER = 600.0
# Addresses exchanged per side; more would only multiply the SYNs each side sends.
MAX_PUNCH_ADDRESSES = 4
# Peers whose punch outcome (and source address, and pending offer) is remembered.
MAX_PUNCH_PEERS = 1024
# Punches this node answers at once (each dials at most MAX_PUNCH_ADDRESSES addresses).
MAX_PUNCH_ANSWERS = 16


@dataclass
class PunchOutcome:
    ok: bool
    at: float
    reason: str
    elapsed: float = 0.0


def punch_addresses(state: NatState, listen: list[str]) -> list[str]:
    """Where peers could reach this node's listen port from outside: each public IP at the
    listen port when the NAT keeps ports (or there is none), and the addresses observed.
    Empty behind a NAT that changes ports: a punch would not meet there."""
    if state.mapping == "port-changing":
        return []
    ports = []
    for address in listen:
        with contextlib.suppress(ValueError):
            ports.append(parse_address(address)[1])
    out = []
    for public in state.public_addresses():
        host = parse_address(public)[0]
        bracket = f"[{host}]" if ":" in host else host
        out.extend(f"{bracket}:{port}" for port in ports)
    return list(dict.fromkeys(out))[:MAX_PUNCH_ADDRESSES]


def _checked_addresses(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_PUNCH_ADDRESSES:
        raise ValueError(f"addrs must be a list of at most {MAX_PUNCH_ADDRESSES} addresses")
    for address in value:
        if not isinstance(address, str):
            raise ValueError("an address is text ip:port")
        parse_address(address)
    return list(value)


class PunchBook:
    """Which peers to try, and what happened (sans-IO: time is passed in)."""

    def __init__(self, *, retry_after: float = PUNCH_RETRY_AFTER) -> None:
        self.retry_after = retry_after
        self.outcomes: OrderedDict[bytes, PunchOutcome] = OrderedDict()
        self.in_progress: set[bytes] = set()
        self.counters = {"punch_attempts": 0, "punch_direct": 0, "punch_failed": 0}

    def should_try(self, peer: bytes, now: float) -> bool:
        if peer in self.in_progress:
            return False
        last = self.outcomes.get(peer)
        return last is None or last.ok or now - last.at >= self.retry_after

    def start(self, peer: bytes) -> None:
        self.in_progress.add(peer)
        self.counters["punch_attempts"] += 1

    def finish(self, peer: bytes, outcome: PunchOutcome) -> None:
        self.in_progress.discard(peer)
        self.outcomes.pop(peer, None)
        self.outcomes[peer] = outcome
        while len(self.outcomes) > MAX_PUNCH_PEERS:
            self.outcomes.popitem(last=False)
        self.counters["punch_direct" if outcome.ok else "punch_failed"] += 1


def _reuse_socket(local: tuple[str, int], family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # Nagle off: see
    try:  # qiz.qmp.transport._begin_connect
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(local)
    except BaseException:
        sock.close()
        raise
    return sock


async def simultaneous_connect(
    addresses: list[str], bound: str, *, timeout: float
) -> socket.socket:
    """A TCP connection to one of ``addresses``, dialled from ``bound`` (the node listener's
    own ``ip:port``, shared with it through ``SO_REUSEPORT``) to all of them at once; the
    first that connects wins and the others are closed. ``OSError`` (the last failure) or
    ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    local = parse_address(bound)
    local_family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    attempts: dict[asyncio.Task[None], socket.socket] = {}
    last_error: OSError = OSError("no answer")
    winner: socket.socket | None = None
    try:
        for address in addresses:
            host, port = parse_address(address)
            if (socket.AF_INET6 if ":" in host else socket.AF_INET) != local_family:
                continue  # an IPv4 listener cannot punch to an IPv6 address, nor the reverse
            sock = _reuse_socket(local, local_family)
            attempts[loop.create_task(loop.sock_connect(sock, (host, port)))] = sock
        if not attempts:
            raise OSError("no address to punch to")
        pending = set(attempts)
        async with asyncio.timeout(timeout):
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None and winner is None:
                        winner = attempts[task]
                    elif isinstance(task.exception(), OSError):
                        last_error = task.exception()  # type: ignore[assignment]
    finally:
        for task, sock in attempts.items():
            if not task.done():
                task.cancel()
            if sock is not winner:
                sock.close()
    if winner is None:
        raise last_error
    return winner


class PunchService:
    """Serves ``nat.punch`` and ``nat.sync`` and tries punches over relayed links.

    ``adopt`` takes an established direct link into the link manager (which then prefers it
    to the relayed one); ``listen`` gives the addresses the node publishes, ``bound`` the one
    its listener is bound to.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        record: Callable[[], PeerRecord],
        state: NatState,
        *,
        bound: Callable[[], str],
        listen: Callable[[], list[str]],
        adopt: Callable[[Link], Any],
        responder: Callable[[], Connection],
        direct_link: Callable[[NodeId], Link | None],
        config: QmpConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.record = record
        self.state = state
        self.bound = bound  # the listener's own ip:port: punches are dialled from it
        self.listen = listen
        self.adopt = adopt
        self.responder = responder  # a responder Connection with the listener's shared state
        self.direct_link = direct_link  # the peer's direct link, if the manager has one
        self.config = config
        self.clock = clock
        self.book = PunchBook()
        self.tasks = TaskOwner("punch", log)
        self._offers: dict[bytes, list[str]] = {}  # B side: A's addresses, until its sync
        # B side: where each dialler's circuit came from, as its relay saw it (the only IP a
        # punch may be sent to), and the syncs each dialler asked for lately
        self._sources: OrderedDict[bytes, str] = OrderedDict()
        self._syncs: OrderedDict[bytes, list[float]] = OrderedDict()
        self._answering: set[bytes] = set()

    def handlers(self) -> dict[str, Handler]:
        return {"nat.punch": self._rpc_punch, "nat.sync": self._rpc_sync}

    async def close(self) -> None:
        await self.tasks.close()

    # ------------------------------------------------------------------ B: the dialled side

    def note_incoming(self, relay: NodeId, origin: NodeId, seen: str) -> None:
        """A relay opened a circuit to us from ``origin``, whom it sees at ``seen``: the IP a
        punch with ``origin`` may dial (nothing it offers elsewhere is dialled)."""
        with contextlib.suppress(ValueError):
            host = parse_address(seen)[0]
            self._sources.pop(origin.digest, None)
            self._sources[origin.digest] = host
            while len(self._sources) > MAX_PUNCH_PEERS:
                self._sources.popitem(last=False)

    async def _rpc_punch(self, ctx: CallContext, body: Any) -> Any:
        if not isinstance(body, dict):
            raise ValueError("nat.punch takes {'addrs': [...]}")
        theirs = _checked_addresses(body.get("addrs"))
        peer = ctx.peer_id
        if not _relayed(ctx.link):
            raise RpcError("punch-refused", "a punch is arranged over a relayed link")
        if self.direct_link(peer) is not None:
            raise RpcError("punch-refused", "already linked directly")
        source = self._sources.get(peer.digest)
        if source is None:
            raise RpcError("punch-refused", "no relay told where this peer comes from")
        # only the IP the relay saw the peer come from: never a third party's
        theirs = [a for a in theirs if parse_address(a)[0] == source]
        if not theirs:
            raise RpcError("punch-refused", f"no offered address is at {source}")
        self._offers.pop(peer.digest, None)
        self._offers[peer.digest] = theirs
        while len(self._offers) > MAX_PUNCH_PEERS:
            del self._offers[next(iter(self._offers))]
        return {"addrs": punch_addresses(self.state, self.listen())}

    async def _rpc_sync(self, ctx: CallContext, body: Any) -> Any:
        peer = ctx.peer_id
        theirs = self._offers.pop(peer.digest, None)
        if not theirs:
            raise RpcError("punch-refused", "no punch arranged (nat.punch first)")
        if self.direct_link(peer) is not None:
            raise RpcError("punch-refused", "already linked directly")
        now = self.clock()
        recent = [t for t in self._syncs.pop(peer.digest, []) if now - t < PUNCH_RETRY_AFTER]
        if len(recent) >= MAX_PUNCH_ATTEMPTS:
            self._syncs[peer.digest] = recent
            raise RpcError("punch-refused", "too many punches lately; try again later")
        if peer.digest in self._answering or len(self._answering) >= MAX_PUNCH_ANSWERS:
            self._syncs[peer.digest] = recent
            raise RpcError("punch-refused", "busy with punches")
        self._syncs[peer.digest] = [*recent, now]
        while len(self._syncs) > MAX_PUNCH_PEERS:
            self._syncs.popitem(last=False)
        self._answering.add(peer.digest)
        self.tasks.spawn(self._answer(theirs, peer), "punch B")
        return {}

    # ------------------------------------------------------------------ A: the dialling side

    async def try_punch(self, link: Link, rpc: Any) -> PunchOutcome:
        """Arrange and run a punch with the peer at the other end of relayed ``link``."""
        peer = link.peer_id
        assert peer is not None
        now = self.clock()
        if not self.book.should_try(peer.digest, now):
            return PunchOutcome(False, now, "tried recently")
        ours = punch_addresses(self.state, self.listen())
        if not ours:
            return PunchOutcome(False, now, "no public address with a kept port on this side")
        self.book.start(peer.digest)
        started = time.monotonic()
        outcome = PunchOutcome(False, now, "not tried")
        try:
            sent = time.monotonic()
            answer = await rpc.call("nat.punch", {"addrs": ours}, timeout=PUNCH_TIMEOUT)
            rtt = time.monotonic() - sent
            theirs = _checked_addresses(answer.get("addrs") if isinstance(answer, dict) else None)
            if not theirs:
                outcome = PunchOutcome(
                    False, now, "the peer has no public address with a kept port"
                )
                return outcome
            for attempt in range(MAX_PUNCH_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(1.0)
                    await rpc.call("nat.punch", {"addrs": ours}, timeout=PUNCH_TIMEOUT)
                # DCUtR's timing: B dials when the sync reaches it, half a round trip after
                # we send it; we dial after the same half, so both SYNs leave together
                sync = asyncio.ensure_future(rpc.call("nat.sync", {}, timeout=PUNCH_TIMEOUT))
                await asyncio.sleep(rtt / 2)
                try:
                    _, how = await self._meet(theirs, peer)
                except (OSError, TimeoutError, LinkError) as exc:
                    reason = why_not(exc) if isinstance(exc, OSError) else str(exc) or "timeout"
                    outcome = PunchOutcome(False, now, reason)
                    continue
                finally:
                    with contextlib.suppress(RpcError, asyncio.CancelledError):
                        await sync
                outcome = PunchOutcome(True, now, how, time.monotonic() - started)
                return outcome
            return outcome
        except (RpcError, ValueError) as exc:
            if self.direct_link(peer) is not None:  # the relayed link closed: replaced
                outcome = PunchOutcome(True, now, "direct", time.monotonic() - started)
            else:
                outcome = PunchOutcome(False, now, str(exc))
            return outcome
        finally:
            self.book.finish(peer.digest, outcome)

    async def _meet(self, addresses: list[str], peer: NodeId) -> tuple[Link, str]:
        """Our connect and the peer's, at once: whichever yields the direct link first. B's
        SYN may reach our listener first: then the link comes in there (B the initiator) and
        our own connect finds the pair taken (or refused), so a failed connect is not the end
        until the punch's time is up."""
        dial = asyncio.ensure_future(self._dial(addresses, peer, initiator=True))
        inbound = asyncio.ensure_future(self._inbound_direct(peer))
        failure: BaseException | None = None
        try:
            for done in asyncio.as_completed((dial, inbound)):
                try:
                    link = await done
                except (OSError, TimeoutError, LinkError) as exc:
                    failure = exc
                    continue
                if link is None:
                    continue
                ours = dial.done() and not dial.cancelled() and dial.exception() is None
                if ours and dial.result() is link:
                    return link, f"direct via {link.remote_address}"
                return link, "direct (their connect)"
        finally:
            for task in (dial, inbound):
                task.cancel()
        raise failure if failure is not None else TimeoutError("no direct connection")

    async def _inbound_direct(self, peer: NodeId) -> Link | None:
        """The peer's direct link if one comes up within a punch's time: when its connect
        won, it waits :data:`FIRST_BYTES_WAIT` for us to speak, then opens the handshake."""
        deadline = time.monotonic() + PUNCH_TIMEOUT
        while time.monotonic() < deadline:
            link = self.direct_link(peer)
            if link is not None:
                return link
            await asyncio.sleep(0.05)
        return None

    async def _answer(self, addresses: list[str], peer: NodeId) -> None:
        try:
            with contextlib.suppress(OSError, TimeoutError, LinkError):
                await self._dial(addresses, peer, initiator=False)
        finally:
            self._answering.discard(peer.digest)

    async def _dial(self, addresses: list[str], peer: NodeId, *, initiator: bool) -> Link:
        """Connect from our listen port to ``addresses`` and run the QMP handshake on the one
        connection that results (as initiator or responder); adopt the link."""
        sock = await simultaneous_connect(addresses, self.bound(), timeout=PUNCH_TIMEOUT)
        loop = asyncio.get_running_loop()
        try:
            if not initiator and not await _peer_speaks_first(sock):
                # nothing from A: its listener, not its connect, took our SYN, so A waits as
                # a responder there and we must open the handshake
                initiator = True
            if initiator:
                conn = Connection.initiator(
                    self.identity,
                    self.record(),
                    expected=peer,
                    now=self.clock(),
                    config=self.config,
                )
            else:
                conn = self.responder()
            _, link = await loop.create_connection(lambda: Link(conn, clock=self.clock), sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            await link.wait_established(PUNCH_TIMEOUT)
        except BaseException:
            link.close(ErrorCode.HANDSHAKE_TIMEOUT, "punched handshake did not complete")
            raise
        if link.peer_id != peer:
            link.close(ErrorCode.UNEXPECTED_PEER, "punched through to another node")
            raise LinkError(
                ErrorCode.UNEXPECTED_PEER, "the punched connection reached another node"
            )
        self.adopt(link)
        return link


# Seconds the dialled side waits for the dialler's first handshake bytes on a punched
# connection before it concludes that the dialler's listener answered and speaks first itself.
FIRST_BYTES_WAIT = 1.0


async def _peer_speaks_first(sock: socket.socket) -> bool:
    """Whether bytes arrive on ``sock`` within :data:`FIRST_BYTES_WAIT` (left unread)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        async with asyncio.timeout(FIRST_BYTES_WAIT):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())


def _relayed(link: Link | None) -> bool:
    return link is not None and link.remote_address.startswith("relay:")
