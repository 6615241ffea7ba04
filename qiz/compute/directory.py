"""Which nodes work, and how much: capacity records from the DHT, refreshed as replies arrive.

Every worker publishes a name record ``(its id, "qiz-capacity")`` whose value is a small JSON
object (qubits, cores, slots, queue, backlog, engine; and what it can run besides plain
circuits: device targets, its Qiskit version, provider adapters, :mod:`qiz.compute.devices`).
A coordinator looks those up for the nodes of its routing table and its links, keeps them for
``max_age`` seconds, and updates the queue figures from every offer reply, so placement sees
near-current load without a lookup per job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiz.compute import devices
from qiz.crypto.ids import NodeId
from qiz.qmp.manager import LinkManager
from qiz.resolve.dht import Dht

log = logging.getLogger("qiz.directory")
CAPACITY_LABEL = "qiz-capacity"
CAPACITY_TTL = 3600
CAPACITY_FIELDS = {"qubits", "cores", "slots", "queue", "backlog", "engine"}
# optional (a node of an older qiz has none): what it runs besides plain circuits, each bounded
# by qiz.compute.devices (MAX_ADVERTISED_TARGETS, MAX_ADVERTISED_ADAPTERS, MAX_FEATURE_NAME)
FEATURE_FIELDS = {"targets", "qiskit", "adapters"}
# A capacity value is one flat JSON object; a peer's text nested deeper is refused before the
# JSON parser sees it (the parser recurses per level: 1,000 '[' within a name record's 1 KiB
# raised RecursionError out of refresh(), issue 13)
MAX_CAPACITY_DEPTH = 2
# a name record's value is at most 1 KiB (qiz.resolve.records.MAX_VALUE); text handed to
# decode_capacity from elsewhere is held to the same, so the scan below stays small
MAX_CAPACITY_TEXT = 1024


def encode_capacity(capacity: dict[str, Any]) -> str:
    fields = sorted(k for k in CAPACITY_FIELDS | FEATURE_FIELDS if k in capacity)
    return json.dumps({k: capacity[k] for k in fields}, separators=(",", ":"))


def _refuse(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def nesting_depth(text: str, limit: int) -> int:
    """How deep the arrays/objects of JSON ``text`` nest, counted without recursion and
    outside strings; the scan stops at ``limit + 1`` (deep enough to refuse)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def decode_capacity(text: str) -> dict[str, Any] | None:
    """A capacity record's value, or None if it is not one (never trusted beyond its shape):
    over ``MAX_CAPACITY_TEXT`` characters or nested deeper than ``MAX_CAPACITY_DEPTH``, it is
    refused before the JSON parser runs."""
    if not isinstance(text, str) or len(text) > MAX_CAPACITY_TEXT:
        return None
    if nesting_depth(text, MAX_CAPACITY_DEPTH) > MAX_CAPACITY_DEPTH:
        return None
    try:
        value = json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):  # RecursionError: cannot happen after the scan
        return None
    return checked_capacity(value)


def checked_capacity(value: Any) -> dict[str, Any] | None:
    """Capacity figures (from a record or a reply) if they are plausible, else None."""
    if not isinstance(value, dict) or not set(value) >= CAPACITY_FIELDS:
        return None
    if set(value) - CAPACITY_FIELDS - FEATURE_FIELDS:
        return None
    features = devices.checked_features(value)
    if features is None:
        return None
    numbers = ("qubits", "cores", "slots", "queue")
    if not all(
        isinstance(value[k], int) and not isinstance(value[k], bool) and value[k] >= 0
        for k in numbers
    ):
        return None
    backlog = value["backlog"]
    if isinstance(backlog, bool) or not isinstance(backlog, int | float):
        return None
    if not math.isfinite(backlog) or backlog < 0 or not isinstance(value["engine"], str):
        return None  # a negative or infinite backlog would attract every replica
    figures = {k: value[k] for k in CAPACITY_FIELDS}
    return {**figures, **features, "slots": max(1, min(value["slots"], 4096))}


@dataclass
class Entry:
    node: bytes  # node id digest
    capacity: dict[str, Any]
    fetched: float


class WorkerDirectory:
    def __init__(
        self,
        own_id: NodeId,
        own_capacity: Callable[[], dict[str, Any] | None],
        dht: Dht,
        links: LinkManager,
        *,
        max_age: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own_id = own_id
        self.own_capacity = own_capacity
        self.dht = dht
        self.links = links
        self.max_age = max_age
        self.clock = clock
        self.entries: dict[bytes, Entry] = {}
        self._absent: dict[bytes, float] = {}  # nodes without a capacity record, and when asked
        self.counters = {
            "bad_records": 0,  # capacity records that were no capacity (skipped, node absent)
            "failed_lookups": 0,  # lookups that raised something unexpected (skipped, logged)
        }

    def candidates(self) -> set[bytes]:
        nodes = {c.node_id for c in self.dht.table.contacts()}
        nodes |= {peer.digest for peer in self.links.peers}
        nodes.discard(self.own_id.digest)
        return nodes

    async def refresh(self, timeout: float = 3.0) -> None:
        """Look up the capacity of every candidate whose entry is missing or old. One peer's
        record, however bad, fails only its own lookup: never the refresh, which every
        submission and every placement awaits."""
        now = self.clock()
        stale = [
            n
            for n in self.candidates()
            if (n not in self.entries or now - self.entries[n].fetched > self.max_age)
            and now - self._absent.get(n, -1e9) > self.max_age
        ]
        await asyncio.gather(*(self._lookup(n, timeout) for n in stale))

    async def _lookup(self, node: bytes, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                record = await self.dht.resolve_name(NodeId(node), CAPACITY_LABEL, use_cache=False)
        except Exception as exc:  # not found, timed out, refused: all mean "no capacity known"
            log.debug("capacity of %s: %s: %s", NodeId(node).short(), type(exc).__name__, exc)
            self._absent[node] = self.clock()
            self.entries.pop(node, None)
            return
        try:
            capacity = decode_capacity(record.value) if isinstance(record.value, str) else None
        except Exception as exc:  # a bug in the check must not fail the refresh: skip the node
            self.counters["failed_lookups"] += 1
            log.warning("capacity record of %s not read: %r", NodeId(node).short(), exc)
            capacity = None
        else:
            self.counters["bad_records"] += capacity is None
        if capacity is None:
            self._absent[node] = self.clock()
            self.entries.pop(node, None)
            return
        self._absent.pop(node, None)
        self.entries[node] = Entry(node, capacity, self.clock())

    def note(self, node: bytes, reply: Any) -> None:
        """Fresh figures from a worker's reply (offer, fetch)."""
        if node == self.own_id.digest or not isinstance(reply, dict):
            return
        fields = CAPACITY_FIELDS | (FEATURE_FIELDS & set(reply))
        capacity = checked_capacity({k: reply.get(k) for k in fields})
        if capacity is not None:
            self.entries[node] = Entry(node, capacity, self.clock())

    def forget(self, node: bytes) -> None:
        self.entries.pop(node, None)

    def absent(self, node: bytes) -> None:
        """A worker did not answer: leave it out until its record is looked up again."""
        self.entries.pop(node, None)
        self._absent[node] = self.clock()

    def busy(self, node: bytes, seconds: float = 5.0) -> None:
        """A worker said its queue is full: leave it out of placements for a few seconds."""
        self.entries.pop(node, None)
        self._absent[node] = self.clock() - self.max_age + seconds

    def workers(self) -> list[tuple[bytes, dict[str, Any]]]:
        """(node digest, capacity) for this node (if it works) and every known worker."""
        out = []
        own = self.own_capacity()
        if own is not None:
            out.append((self.own_id.digest, own))
        out += [(e.node, e.capacity) for e in self.entries.values()]
        return out

    def rtt(self, node: bytes) -> float:
        if node == self.own_id.digest:
            return 0.0
        peer = self.links.peers.get(NodeId(node))
        if peer is None or peer.link.rtt is None:
            return 0.005  # not linked yet: a loopback-scale guess, refined once linked
        return float(peer.link.rtt)
