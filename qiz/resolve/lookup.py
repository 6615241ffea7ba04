"""The iterative lookup (sans-IO): Kademlia with alpha-parallel requests and S/Kademlia's
disjoint paths.

The caller owns I/O and time. It asks :meth:`Lookup.next_requests` whom to query, sends the
requests, and feeds each answer back with :meth:`on_response` (contacts, and for value lookups
the records it already validated) or :meth:`on_failure` (timeout, refused link, bad answer).

With ``paths = d > 1`` the lookup runs d independent searches that never share a node: each
contact belongs to the first path that heard of it. An adversary then has to sit on every path
to hide a record -- the point of S/Kademlia -- at the price of about d times the messages.
A value lookup lets each path run until it finds a record or exhausts its candidates, and
returns the record with the highest sequence number seen once ``quorum`` paths
have found one (default: 3 of 4), so a stale answer must win on most paths to win at all, and a
silent node on the remaining path cannot stall the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from qiz.resolve.keyspace import distance
from qiz.resolve.records import ValidRecord
from qiz.resolve.routing import Contact

# distinct signers' records one lookup keeps (``by_holder``): a content's providers; what a
# lookup can collect is also bounded by k nodes x 8 records each, this keeps it smaller
MAX_HOLDERS_KEPT = 64


class State(enum.Enum):
    FRESH = 0
    IN_FLIGHT = 1
    ANSWERED = 2
    FAILED = 3


@dataclass
class Candidate:
    contact: Contact
    path: int
    depth: int
    state: State = State.FRESH


@dataclass
class Path:
    index: int
    candidates: list[Candidate] = field(default_factory=list)  # sorted by distance
    in_flight: int = 0
    found: bool = False
    done: bool = False


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: list[Contact],
        *,
        self_id: bytes,
        k: int = 20,
        alpha: int = 3,
        paths: int = 1,
        want_value: bool = False,
        quorum: int | None = None,
    ) -> None:
        self.target = target
        self.self_id = self_id
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self.paths = [Path(i) for i in range(max(1, paths))]
        # A value lookup ends once `quorum` paths have found a record (or all paths ended):
        # waiting for every path would let one unresponsive node on any path delay every
        # answer by a full timeout, stopping at the first would let one stale answer win.
        self.quorum = quorum if quorum is not None else min(3, len(self.paths))
        self._by_id: dict[bytes, Candidate] = {}
        self.best: ValidRecord | None = None
        # the newest valid record of each signer, for kinds with one record per holder
        # (providers: every holder of a content, not only the best one); bounded by holders
        self.by_holder: dict[bytes, ValidRecord] = {}
        self.records_seen = 0
        self.messages = 0
        self.rounds = 0
        ordered = sorted(seeds, key=lambda c: distance(c.node_id, target))
        for i, contact in enumerate(ordered):
            self._offer(contact, self.paths[i % len(self.paths)], depth=0)
        for path in self.paths:
            if path.candidates:
                self._check_done(path)
        self._retire_empty_paths()

    # ------------------------------------------------------------------ driving

    @property
    def done(self) -> bool:
        if self.want_value and sum(1 for p in self.paths if p.found and p.done) >= self.quorum:
            return True
        return all(p.done for p in self.paths)

    def next_requests(self) -> list[Contact]:
        """Contacts to query now (each at most once); empty when waiting or done."""
        out = []
        for path in self.paths:
            if path.done or (self.want_value and path.found):
                continue
            for candidate in self._frontier(path):
                if path.in_flight >= self.alpha:
                    break
                if candidate.state is State.FRESH:
                    candidate.state = State.IN_FLIGHT
                    path.in_flight += 1
                    self.messages += 1
                    self.rounds = max(self.rounds, candidate.depth + 1)
                    out.append(candidate.contact)
        return out

    def on_response(
        self,
        node_id: bytes,
        contacts: list[Contact],
        records: list[ValidRecord] | None = None,
    ) -> None:
        settled = self._settle(node_id, State.ANSWERED)
        if settled is None:
            return
        candidate, path = settled
        try:
            self._on_answer(candidate, path, contacts, records)
        finally:
            self._retire_empty_paths()

    def _on_answer(
        self,
        candidate: Candidate,
        path: Path,
        contacts: list[Contact],
        records: list[ValidRecord] | None,
    ) -> None:
        for record in records or ():
            self.records_seen += 1
            self.consider(record)
            path.found = True
        for contact in contacts:
            self._offer(contact, path, depth=candidate.depth + 1)
        self._check_done(path)

    def consider(self, record: ValidRecord) -> None:
        """A valid record for the target (from an answer, or the node's own store): the best
        one so far, and the newest of its signer."""
        if self.best is None or record.supersedes(self.best):
            self.best = record
        held = self.by_holder.get(record.holder)
        room = held is None and len(self.by_holder) < MAX_HOLDERS_KEPT
        if room or (held is not None and record.supersedes(held)):
            self.by_holder[record.holder] = record

    def on_failure(self, node_id: bytes) -> None:
        settled = self._settle(node_id, State.FAILED)
        if settled is not None:
            self._check_done(settled[1])
            self._retire_empty_paths()

    def _retire_empty_paths(self) -> None:
        """A path that never got a candidate ends once every other path has ended."""
        if all(p.done for p in self.paths if p.candidates):
            for path in self.paths:
                if not path.candidates:
                    path.done = True

    def _settle(self, node_id: bytes, state: State) -> tuple[Candidate, Path] | None:
        """Mark the request to ``node_id`` answered or failed; None if none was in flight
        (a late or unsolicited answer, which is ignored)."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not State.IN_FLIGHT:
            return None
        candidate.state = state
        path = self.paths[candidate.path]
        path.in_flight -= 1
        return candidate, path

    # ------------------------------------------------------------------ results

    def closest(self, count: int | None = None) -> list[Contact]:
        """The closest contacts that answered, across all paths."""
        answered = [c for c in self._by_id.values() if c.state is State.ANSWERED]
        answered.sort(key=lambda c: distance(c.contact.node_id, self.target))
        return [c.contact for c in answered[: count or self.k]]

    # ------------------------------------------------------------------ internals

    def _offer(self, contact: Contact, path: Path, depth: int) -> None:
        if contact.node_id == self.self_id or contact.node_id in self._by_id:
            return  # already on some path: disjointness
        # A path that got no seed (fewer seeds than paths: a new node with one bootstrap peer)
        # starts from the first contacts anyone learns, so every path gets to run.
        empty = next((p for p in self.paths if not p.candidates and not p.done), None)
        if empty is not None and depth > 0:
            path = empty
        candidate = Candidate(contact, path.index, depth)
        self._by_id[contact.node_id] = candidate
        d = distance(contact.node_id, self.target)
        position = len(path.candidates)
        for i, other in enumerate(path.candidates):
            if distance(other.contact.node_id, self.target) > d:
                position = i
                break
        path.candidates.insert(position, candidate)

    def _frontier(self, path: Path) -> list[Candidate]:
        """The k closest candidates of a path that have not failed."""
        alive = [c for c in path.candidates if c.state is not State.FAILED]
        return alive[: self.k]

    def _check_done(self, path: Path) -> None:
        if path.done:
            return
        if self.want_value and path.found and path.in_flight == 0:
            path.done = True
            return
        frontier = self._frontier(path)
        if path.in_flight == 0 and all(c.state is State.ANSWERED for c in frontier):
            path.done = True
