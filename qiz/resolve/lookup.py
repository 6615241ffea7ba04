"""The iterative lookup (sans-IO): Kademlia with alpha-parallel requests, S/Kademlia's
disjoint paths, adaptive timeouts and hedged requests.

The caller owns I/O and time. It asks :meth:`Lookup.next_requests` whom to query (passing the
time), sends the requests, and feeds each answer back with :meth:`on_response` (contacts, and
for value lookups the records it already validated) or :meth:`on_failure` (refused link, bad
answer, or the RPC's own hard timeout). :meth:`next_deadline` says when to call
:meth:`next_requests` again if nothing arrives before.

With ``paths = d > 1`` the lookup runs d independent searches that never query the same node:
a path learns contacts only from the nodes it queried itself, and a node queried by one path
is dropped from the others' candidates (S/Kademlia: every node is used by one path at most).
An adversary then has to sit on every path to hide a record, at the price of about d times the
messages. A value lookup lets each path run until it finds a record or exhausts its
candidates, and returns the record with the highest sequence number seen once ``quorum`` paths
have found one (default: 3 of 4), so a stale answer must win on most paths to win at all.

Time (optional: without it the lookup waits for every answer or failure, as plain Kademlia):

* a request unanswered past its peer's *timeout* (:class:`qiz.trust.latency.LatencyTable`,
  from measured RTTs, far below the RPC's hard timeout) stops holding its path's slot: the path
  asks its next candidate, and a late answer is still taken;
* a request unanswered past its peer's *expected* round trip is **hedged**: its slot goes to
  the path's next candidate at once, without cancelling it, at most ``hedge_budget`` times per
  lookup (``hedges`` counts them);
* on a path that already found a record, a request past its expected round trip no longer
  holds the path open (nothing needs its answer to go on);
* candidates the caller wants to ``avoid`` (a peer that timed out lately, a low trust score)
  are asked last among a path's k closest.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from qiz.resolve.keyspace import distance
from qiz.resolve.records import ValidRecord
from qiz.resolve.routing import Contact
from qiz.trust.latency import LatencyTable

# distinct signers' records one lookup keeps (``by_holder``): a content's providers; what a
# lookup can collect is also bounded by k nodes x 8 records each, this keeps it smaller
MAX_HOLDERS_KEPT = 64
# requests one lookup may hedge (ask another candidate while the first is still unanswered):
# about two silent nodes per path of a d = 4 lookup; past it, a stalled request waits for its
# adaptive timeout
HEDGE_BUDGET = 8


class State(enum.Enum):
    FRESH = 0
    IN_FLIGHT = 1  # asked, holds one of its path's alpha slots
    ANSWERED = 2
    FAILED = 3
    LATE = 4  # asked, past its expected RTT (hedged) or its timeout: no slot, answer welcome


@dataclass
class Candidate:
    contact: Contact
    path: int
    depth: int
    state: State = State.FRESH
    sent: float | None = None  # when it was asked (the caller's clock)
    timed_out: bool = False  # reported to the latency table as a timeout
    avoided: bool = False  # the caller wanted it asked last (when it was offered)


@dataclass
class Path:
    index: int
    candidates: list[Candidate] = field(default_factory=list)  # sorted by distance
    in_flight: int = 0
    found: bool = False
    done: bool = False
    heard: set[bytes] = field(default_factory=set)  # every id this path was told of


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
        rtt: LatencyTable | None = None,
        hedge_budget: int = HEDGE_BUDGET,
        avoid: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.target = target
        self.self_id = self_id
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self.paths = [Path(i) for i in range(max(1, paths))]
        # A value lookup ends once `quorum` paths have found a record (or all paths ended):
        # waiting for every path would let one unresponsive node on any path delay every
        # answer, stopping at the first would let one stale answer win.
        self.quorum = quorum if quorum is not None else min(3, len(self.paths))
        self.rtt = rtt
        self.hedge_budget = max(0, hedge_budget) if rtt is not None else 0
        self.avoid = avoid
        self._asked: dict[bytes, Candidate] = {}  # every node asked, on the path that asked
        self._offers: dict[bytes, list[Candidate]] = {}  # not yet asked: on which paths
        self._outstanding: dict[bytes, Candidate] = {}  # asked, not answered nor failed
        self.best: ValidRecord | None = None
        # the newest valid record of each signer, for kinds with one record per holder
        # (providers: every holder of a content, not only the best one); bounded by holders
        self.by_holder: dict[bytes, ValidRecord] = {}
        self.records_seen = 0
        self.messages = 0
        self.rounds = 0
        self.hedges = 0  # requests whose slot went to another candidate before they ended
        self.timeouts = 0  # requests unanswered past their adaptive timeout
        self.stalls = 0  # ... of them, those that held their slot until then (not hedged)
        self.released = 0  # requests a path that found a record stopped waiting for
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

    @property
    def in_flight(self) -> int:
        """Requests holding a slot (at most alpha per path)."""
        return sum(p.in_flight for p in self.paths)

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered or failed, late ones included."""
        return len(self._outstanding)

    def next_requests(self, now: float | None = None) -> list[Contact]:
        """Contacts to query now (each node at most once); empty when waiting or done.
        ``now`` (seconds, the caller's monotonic clock) enables timeouts and hedging."""
        if now is not None:
            self._tick(now)
        out = []
        touched: set[int] = set()
        for path in self.paths:
            if path.done:
                continue
            for candidate in self._choose(path):
                if path.in_flight >= self.alpha:
                    break
                candidate.state = State.IN_FLIGHT
                candidate.sent = now
                path.in_flight += 1
                self.messages += 1
                self.rounds = max(self.rounds, candidate.depth + 1)
                node_id = candidate.contact.node_id
                self._asked[node_id] = candidate
                self._outstanding[node_id] = candidate
                for other in self._offers.pop(node_id, ()):
                    if other is not candidate:  # one path per node: the others lose it
                        self.paths[other.path].candidates.remove(other)
                        touched.add(other.path)
                out.append(candidate.contact)
        for index in touched:
            self._check_done(self.paths[index])
        if touched:
            self._retire_empty_paths()
        return out

    def next_deadline(self) -> float | None:
        """When a request holding a slot passes its expected RTT (and may be hedged) or its
        timeout: the caller should call :meth:`next_requests` then if nothing arrived."""
        if self.rtt is None or self.done:
            return None
        soonest: float | None = None
        for candidate in self._outstanding.values():
            if candidate.sent is None or candidate.timed_out:
                continue
            peer = candidate.contact.node_id
            when = candidate.sent + self.rtt.timeout(peer)
            if candidate.state is State.LATE:  # hedged: its path may be waiting for it
                path = self.paths[candidate.path]
                if path.done or (self.want_value and path.found):
                    continue
            elif self._cut(candidate) is not None:
                when = min(when, candidate.sent + self.rtt.expected(peer))
            soonest = when if soonest is None else min(soonest, when)
        return soonest

    def on_response(
        self,
        node_id: bytes,
        contacts: list[Contact],
        records: list[ValidRecord] | None = None,
        now: float | None = None,
    ) -> None:
        settled = self._settle(node_id, State.ANSWERED)
        if settled is None:
            return
        candidate, path = settled
        if now is not None and candidate.sent is not None and self.rtt is not None:
            self.rtt.observe(node_id, now - candidate.sent)
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
        if not path.done:  # a late answer to an ended path still brings its records
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

    def on_failure(self, node_id: bytes, now: float | None = None) -> None:
        settled = self._settle(node_id, State.FAILED)
        if settled is None:
            return
        candidate, path = settled
        if now is not None and self.rtt is not None and not candidate.timed_out:
            self.rtt.timed_out(node_id, now)  # silent or refusing: last in line for a while
        self._check_done(path)
        self._retire_empty_paths()

    def _retire_empty_paths(self) -> None:
        """A path that never got a candidate ends once every other path has ended."""
        if all(p.done for p in self.paths if p.candidates):
            for path in self.paths:
                if not path.candidates:
                    path.done = True

    def _settle(self, node_id: bytes, state: State) -> tuple[Candidate, Path] | None:
        """Mark the request to ``node_id`` answered or failed; None if none was outstanding
        (a repeated or unsolicited answer, which is ignored)."""
        candidate = self._outstanding.pop(node_id, None)
        if candidate is None:
            return None
        path = self.paths[candidate.path]
        if candidate.state is State.IN_FLIGHT:
            path.in_flight -= 1
        candidate.state = state
        return candidate, path

    # ------------------------------------------------------------------ time

    def _cut(self, candidate: Candidate) -> str | None:
        """Whether ``candidate`` may give up its slot at its expected RTT: "hedge" if its path
        has a next candidate to ask and the hedge budget lasts; "stop" if its path found a
        record and has nobody else to ask (nothing needs to wait for this answer); else None."""
        path = self.paths[candidate.path]
        found = self.want_value and path.found
        limit = self.alpha if found else self.k
        alive = [c for c in path.candidates if c.state not in (State.FAILED, State.LATE)]
        if self.avoid is not None:
            alive.sort(key=lambda c: c.avoided)
        if any(c.state is State.FRESH for c in alive[: limit + 1]):
            return "hedge" if self.hedges < self.hedge_budget else None
        return "stop" if found else None

    def _tick(self, now: float) -> None:
        if self.rtt is None:
            return
        changed: set[int] = set()
        for candidate in list(self._outstanding.values()):
            if candidate.sent is None:
                continue
            peer = candidate.contact.node_id
            path = self.paths[candidate.path]
            if not candidate.timed_out and now >= candidate.sent + self.rtt.timeout(peer):
                candidate.timed_out = True
                self.timeouts += 1
                self.rtt.timed_out(peer, now)
                if candidate.state is State.IN_FLIGHT:
                    self.stalls += 1
                    candidate.state = State.LATE
                    path.in_flight -= 1
                changed.add(path.index)
            elif candidate.state is State.IN_FLIGHT and now >= candidate.sent + self.rtt.expected(
                peer
            ):
                cut = self._cut(candidate)
                if cut is None:
                    continue
                self.hedges += cut == "hedge"
                self.released += cut == "stop"
                candidate.state = State.LATE
                path.in_flight -= 1
                changed.add(path.index)
        for index in changed:
            self._check_done(self.paths[index])
        if changed:
            self._retire_empty_paths()

    # ------------------------------------------------------------------ results

    def closest(self, count: int | None = None) -> list[Contact]:
        """The closest contacts that answered, across all paths."""
        answered = [c for c in self._asked.values() if c.state is State.ANSWERED]
        answered.sort(key=lambda c: distance(c.contact.node_id, self.target))
        return [c.contact for c in answered[: count or self.k]]

    def asked_by(self) -> dict[bytes, int]:
        """Every node asked, with the path that asked it (each node on one path only)."""
        return {node_id: c.path for node_id, c in self._asked.items()}

    # ------------------------------------------------------------------ internals

    def _offer(self, contact: Contact, path: Path, depth: int) -> None:
        node_id = contact.node_id
        if node_id == self.self_id or node_id in self._asked:
            return  # asked already, by this path or another: disjointness
        # A path that got no seed (fewer seeds than paths: a new node with one bootstrap peer)
        # starts from the first contacts anyone learns, so every path gets to run.
        empty = next((p for p in self.paths if not p.candidates and not p.done), None)
        if empty is not None and depth > 0 and node_id not in empty.heard:
            path = empty
        if node_id in path.heard:
            return
        path.heard.add(node_id)
        candidate = Candidate(contact, path.index, depth)
        candidate.avoided = self.avoid is not None and self.avoid(node_id)
        self._offers.setdefault(node_id, []).append(candidate)
        d = distance(node_id, self.target)
        position = len(path.candidates)
        for i, other in enumerate(path.candidates):
            if distance(other.contact.node_id, self.target) > d:
                position = i
                break
        path.candidates.insert(position, candidate)

    def _frontier(self, path: Path) -> list[Candidate]:
        """The k closest candidates of a path that have not failed nor fallen late; those
        the caller wanted to avoid come after all the others, so they are asked only when
        a path has nobody else (and a path need not wait for them to end)."""
        alive = [c for c in path.candidates if c.state not in (State.FAILED, State.LATE)]
        if self.avoid is not None:
            alive.sort(key=lambda c: c.avoided)  # stable: distance order kept within each
        return alive[: self.k]

    def _choose(self, path: Path) -> list[Candidate]:
        """The path's fresh frontier candidates in the order to ask them: closest first,
        those the caller wants to avoid last (see :meth:`_frontier`)."""
        frontier = self._frontier(path)
        if self.want_value and path.found:
            frontier = frontier[: self.alpha]  # found: only make sure nothing closer differs
        return [c for c in frontier if c.state is State.FRESH]

    def _check_done(self, path: Path) -> None:
        if path.done:
            return
        if path.in_flight:
            return
        frontier = self._frontier(path)
        if self.want_value and path.found:
            frontier = frontier[: self.alpha]
        elif self._hedged_pending(path):
            return  # found nothing yet: a hedged answer may still show the way, until its timeout
        if all(c.state is State.ANSWERED for c in frontier):
            path.done = True

    def _hedged_pending(self, path: Path) -> bool:
        """Whether ``path`` has a request that gave up its slot to a hedge and is still within
        its adaptive timeout."""
        return any(
            c.path == path.index and c.state is State.LATE and not c.timed_out
            for c in self._outstanding.values()
        )
