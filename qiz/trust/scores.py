"""Peer scores: what a peer did, weighed, decayed, persisted, and read by everything that
chooses a peer.

Two parts make a score in [0, 1]:

* **verified work** (as in BOINC's adaptive replication): agreement with a quorum raises the
  *work score* slowly (+0.05), disagreement halves it. The asymmetry is deliberate: one wrong
  result costs more trust than many right ones earn, so a peer cannot bank good behaviour and
  then cheat cheaply. A work score under ``INITIAL`` relaxes back toward it with a half-life
  of ``WORK_RECOVERY`` (a day): a peer with no way to earn trust back (it gets no work) is not
  excluded for ever, and a liar that returns is caught again. A task not finished (the worker
  crashed, vanished, was offered work while down) is a misbehaviour counter, ``task_failed``,
  not a work event: it costs time, not correctness, and is forgotten.
* **misbehaviour** (as in gossipsub v1.1's P4-P7 counters): each event of a *reason* (an
  invalid signature, a forged or stale record, a bad storage share, an RPC timeout, ...) adds
  one to that reason's counter, which decays exponentially with the reason's half-life; the
  score loses ``weight x counter`` per reason. A forged
  signature weighs a lot and is remembered for a day; a timeout weighs little and is forgotten
  in minutes, so a peer that was only slow for a while recovers by itself (the cooling-off
  period). What a peer may not be to blame for (a timeout: our own loop may be the slow one; a
  bad storage share: a holder cannot check the bytes a publisher sent it; an unfinished task)
  is *transient*: all of it together costs at most ``TRANSIENT_CAP``, so it never crosses the
  routing or link line, nor the give line from ``INITIAL``.

Thresholds say what a score still buys (checked by the callers through :meth:`may`): below
``GIVE`` a peer gets no work, storage or relay slots from us (the whole score); below
``ROUTE`` lookups do not go through it and below ``LINK`` its links are refused (the
misbehaviour alone, ``INITIAL`` less the penalties: results that lost a vote say nothing
about a peer's routing). Operators override: a *trusted* peer always scores 1, a *banned*
one 0 (and is refused links) until unbanned.

Every event is kept in a bounded *trail* per peer (the last ``MAX_TRAIL_PER_PEER``, with when
and a short detail), so ``qiz peers`` can say why a score is what it is. Scores live in the
node's SQLite database and survive restarts; this module owns its tables. Reads are served
from memory: placement asks for the score of every known worker each round (a thousand in the
simulator). The number of peers tracked is bounded (``MAX_TRACKED_PEERS``): past it, the peer
seen least recently without an override is forgotten, so a flood of fresh ids costs a bounded
table; a forgotten peer starts again at ``INITIAL``, no better than a stranger.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

INITIAL = 0.8
AGREE_STEP = 0.05
DISAGREE_FACTOR = 0.5
FAIL_STEP = 0.05  # task_failed's weight
WORK_RECOVERY = 86_400.0  # seconds for a work score under INITIAL to halve its distance to it
# the most the reasons a peer may not be to blame for cost together (they never cross ROUTE
# or LINK, nor GIVE from INITIAL)
TRANSIENT_CAP = 0.3

# what a score still buys (see the module's notes)
GIVE = 0.05  # work, storage and relay slots
ROUTE = 0.02  # lookups through the peer
LINK = 0.01  # a link at all

TRUSTED = "trusted"
BANNED = "banned"
OVERRIDES = (TRUSTED, BANNED)

MAX_TRACKED_PEERS = 65_536  # peers with a score row; past it the least recently seen go
MAX_TRAIL_PER_PEER = 32  # events kept per peer for `qiz peers` (older ones are dropped)
MAX_DETAIL = 120  # characters of an event's detail
EVICTION_SCAN = 64  # least recently seen peers looked at for one to forget


@dataclass(frozen=True)
class Reason:
    """How much one event of a kind costs, and for how long it is remembered."""

    weight: float  # score lost per (undecayed) event
    half_life: float  # seconds
    meaning: str
    transient: bool = False  # the peer may not be to blame: all such costs share one cap


REASONS: dict[str, Reason] = {
    "invalid_signature": Reason(0.4, 86_400.0, "signed something that does not verify"),
    "invalid_record": Reason(0.2, 86_400.0, "served or stored a record that does not validate"),
    "stale_record": Reason(0.02, 3_600.0, "served a record older than one it had"),
    "bad_share": Reason(
        0.1, 3_600.0, "served a storage share that did not decode to its chunk", True
    ),
    "corrupt_share": Reason(
        0.2, 86_400.0, "kept bytes of our own content other than those we sent it"
    ),
    "relay_abuse": Reason(0.2, 86_400.0, "went over a relay's limits"),
    "handshake_failed": Reason(0.05, 3_600.0, "a link handshake with it failed", True),
    "rpc_error": Reason(0.01, 600.0, "answered a request with garbage", True),
    "rpc_timeout": Reason(0.01, 600.0, "did not answer a request in time", True),
    "task_failed": Reason(0.05, 3_600.0, "did not finish a task it took", True),
}
# the work score's events, kept in the trail too (their effect is the work score's, above)
WORK_EVENTS = ("agreed", "disagreed")
# A peer's trend: its score now less its score just before the first event of the latest
# window of this length that had events (so a burst of bad shares shows as a fall, and then
# the recovery as the fall shrinking)
TREND_WINDOW = 3600.0


def decayed(value: float, since: float, now: float, half_life: float) -> float:
    """``value`` counted at ``since``, as it stands at ``now``."""
    if now <= since:
        return value
    return value * math.pow(2.0, -(now - since) / half_life)


@dataclass
class PeerState:
    """One peer's figures in memory (the database holds the same)."""

    work: float = INITIAL
    agreed: int = 0
    disagreed: int = 0
    failed: int = 0
    override: str | None = None
    seen: float = 0.0
    # reason -> (counter, when it was last updated)
    counters: dict[str, tuple[float, float]] = field(default_factory=dict)

    worked: float = 0.0  # when the work score last moved (its recovery runs from there)
    # (when, score): the score just before the first event of the latest TREND_WINDOW with
    # events; the trend is the score now less this one
    mark: tuple[float, float] | None = None

    def penalty(self, now: float) -> float:
        """What misbehaviour costs now: the transient reasons together at most TRANSIENT_CAP."""
        total = transient = 0.0
        for r, (v, t) in self.counters.items():
            spec = REASONS[r]
            cost = spec.weight * decayed(v, t, now, spec.half_life)
            if spec.transient:
                transient += cost
            else:
                total += cost
        return total + min(transient, TRANSIENT_CAP)

    def work_now(self, now: float) -> float:
        """The work score, recovered toward INITIAL since it last moved (never past it)."""
        if self.work >= INITIAL:
            return self.work
        return INITIAL - decayed(INITIAL - self.work, self.worked, now, WORK_RECOVERY)

    def conduct(self, now: float) -> float:
        """INITIAL less the misbehaviour: what routing and links are judged on."""
        return max(0.0, INITIAL - self.penalty(now)) if self.counters else INITIAL

    def score(self, now: float) -> float:
        if self.override == TRUSTED:
            return 1.0
        if self.override == BANNED:
            return 0.0
        work = self.work_now(now)
        if not self.counters:
            return work
        return min(1.0, max(0.0, work - self.penalty(now)))


SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    peer      BLOB PRIMARY KEY,
    score     REAL NOT NULL,
    agreed    INTEGER NOT NULL DEFAULT 0,
    disagreed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS trust_peers (
    peer      BLOB PRIMARY KEY,
    override  TEXT,
    seen      REAL NOT NULL DEFAULT 0,
    worked    REAL NOT NULL DEFAULT 0,
    mark_at   REAL,
    mark_score REAL
);
CREATE TABLE IF NOT EXISTS trust_counters (
    peer      BLOB NOT NULL,
    reason    TEXT NOT NULL,
    value     REAL NOT NULL,
    updated   REAL NOT NULL,
    PRIMARY KEY (peer, reason)
);
CREATE TABLE IF NOT EXISTS trust_trail (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    peer      BLOB NOT NULL,
    at        REAL NOT NULL,
    reason    TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS trust_trail_peer ON trust_trail (peer, id);
"""


class PeerScores:
    """Scores in [0, 1] keyed by node id digest; unknown peers start at ``INITIAL``.

    ``clock`` is wall-clock seconds (decay survives restarts); tests and the simulator pass
    their own."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(trust_peers)")}
        for column in ("mark_at", "mark_score"):  # a table from before trends
            if column not in columns:
                db.execute(f"ALTER TABLE trust_peers ADD COLUMN {column} REAL")
        # events scored since this process started, by reason (Prometheus counters)
        self.events: dict[str, int] = dict.fromkeys((*WORK_EVENTS, *REASONS), 0)
        self._peers: OrderedDict[bytes, PeerState] = OrderedDict()  # least recently seen first
        for peer, work, agreed, disagreed, failed in db.execute(
            "SELECT peer, score, agreed, disagreed, failed FROM scores"
        ):
            self._peers[bytes(peer)] = PeerState(float(work), agreed, disagreed, failed)
        for peer, override, seen, worked, mark_at, mark_score in db.execute(
            "SELECT peer, override, seen, worked, mark_at, mark_score FROM trust_peers"
        ):
            state = self._peers.setdefault(bytes(peer), PeerState())
            state.override = override if override in OVERRIDES else None
            state.seen = float(seen)
            state.worked = float(worked)
            if mark_at is not None and mark_score is not None:
                state.mark = (float(mark_at), float(mark_score))
        for peer, reason, value, updated in db.execute(
            "SELECT peer, reason, value, updated FROM trust_counters"
        ):
            if reason in REASONS:
                state = self._peers.setdefault(bytes(peer), PeerState())
                state.counters[reason] = (float(value), float(updated))
        ordered = sorted(self._peers.items(), key=lambda item: item[1].seen)
        self._peers = OrderedDict(ordered)

    # ---------------------------------------------------------------- reading

    def get(self, peer: bytes) -> float:
        state = self._peers.get(peer)
        return INITIAL if state is None else state.score(self.clock())

    def may(self, peer: bytes, what: str) -> bool:
        """Whether ``peer`` still gets ``what``: ``"give"`` (work, storage, relay slots),
        ``"route"`` (lookups through it) or ``"link"`` (a link at all)."""
        state = self._peers.get(peer)
        if state is None:
            return True
        if state.override is not None:
            return state.override == TRUSTED
        now = self.clock()
        if what == "give":
            return state.score(now) >= GIVE
        floor = {"route": ROUTE, "link": LINK}[what]
        return state.conduct(now) >= floor

    def override_of(self, peer: bytes) -> str | None:
        state = self._peers.get(peer)
        return state.override if state is not None else None

    def explain(self, peer: bytes, trail: int = 10) -> dict:
        """Why ``peer`` scores what it does: the work score, each reason's decayed counter
        and cost, the override, and the last ``trail`` events (newest first)."""
        now = self.clock()
        state = self._peers.get(peer) or PeerState()
        reasons = {
            r: {
                "count": round(decayed(v, t, now, REASONS[r].half_life), 4),
                "cost": round(REASONS[r].weight * decayed(v, t, now, REASONS[r].half_life), 4),
            }
            for r, (v, t) in sorted(state.counters.items())
        }
        rows = self.db.execute(
            "SELECT at, reason, detail FROM trust_trail WHERE peer=? ORDER BY id DESC LIMIT ?",
            (peer, trail),
        ).fetchall()
        return {
            "score": round(state.score(now), 4),
            "work": round(state.work_now(now), 4),
            "override": state.override,
            "last_seen": state.seen or None,
            "reasons": reasons,
            "trail": [{"at": at, "reason": r, "detail": d} for at, r, d in rows],
        }

    def all_scores(self) -> list[float]:
        """Every tracked peer's score now (for the metrics' histogram)."""
        now = self.clock()
        return [state.score(now) for state in self._peers.values()]

    def table(self) -> list[dict]:
        now = self.clock()
        rows = [
            {
                "peer": peer,
                "score": round(state.score(now), 4),
                "agreed": state.agreed,
                "disagreed": state.disagreed,
                "failed": state.failed,
                "override": state.override,
                "trend": round(state.score(now) - state.mark[1], 4) + 0.0 if state.mark else 0.0,
                "reasons": sorted(
                    r
                    for r, (v, t) in state.counters.items()
                    if decayed(v, t, now, REASONS[r].half_life) >= 0.01
                ),
            }
            for peer, state in self._peers.items()
        ]
        rows.sort(key=lambda row: -row["score"])
        return rows

    # ---------------------------------------------------------------- verified work

    def agreed(self, peer: bytes) -> None:
        state = self._state(peer)
        now = self.clock()
        state.work, state.worked = min(1.0, state.work_now(now) + AGREE_STEP), now
        state.agreed += 1
        self._save_work(peer, state, "agreed", "")

    def disagreed(self, peer: bytes) -> None:
        state = self._state(peer)
        now = self.clock()
        state.work, state.worked = max(0.0, state.work_now(now) * DISAGREE_FACTOR), now
        state.disagreed += 1
        self._save_work(peer, state, "disagreed", "")

    def failed(self, peer: bytes, detail: str = "") -> None:
        """A task the peer took and did not finish: a ``task_failed`` event (it decays)."""
        state = self._state(peer)
        state.failed += 1
        self._save_work(peer, state, None, "")
        self.record(peer, "task_failed", detail)

    # ---------------------------------------------------------------- misbehaviour

    def record(self, peer: bytes, reason: str, detail: str = "") -> None:
        """One event of ``reason`` (a key of :data:`REASONS`) by ``peer``."""
        spec = REASONS[reason]  # a KeyError names a caller's typo, never a peer's input
        now = self.clock()
        state = self._state(peer)
        value, since = state.counters.get(reason, (0.0, now))
        state.counters[reason] = (decayed(value, since, now, spec.half_life) + 1.0, now)
        self.db.execute(
            "INSERT INTO trust_counters (peer, reason, value, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(peer, reason) DO UPDATE SET value=excluded.value, "
            "updated=excluded.updated",
            (peer, reason, state.counters[reason][0], now),
        )
        self._trail(peer, reason, detail, now)

    def seen(self, peer: bytes) -> None:
        """``peer`` was just scored (every event here calls this): it is the last to be
        forgotten past the bound."""
        state = self._peers.get(peer)
        if state is None:
            self._forget_beyond_bound()
            state = self._peers[peer] = PeerState()
        self._peers.move_to_end(peer)
        state.seen = self.clock()
        self.db.execute(
            "INSERT INTO trust_peers (peer, seen) VALUES (?, ?) "
            "ON CONFLICT(peer) DO UPDATE SET seen=excluded.seen",
            (peer, state.seen),
        )

    # ---------------------------------------------------------------- operators

    def override(self, peer: bytes, value: str | None) -> None:
        """Trust (``"trusted"``), ban (``"banned"``) or return ``peer`` to its score (None)."""
        if value is not None and value not in OVERRIDES:
            raise ValueError(f"an override is {' or '.join(OVERRIDES)}, not {value!r}")
        state = self._state(peer)
        state.override = value
        self.db.execute(
            "INSERT INTO trust_peers (peer, override, seen) VALUES (?, ?, ?) "
            "ON CONFLICT(peer) DO UPDATE SET override=excluded.override",
            (peer, value, state.seen),
        )
        self._trail(peer, value or "unbanned", "by the operator", self.clock())

    # ---------------------------------------------------------------- internals

    def _state(self, peer: bytes) -> PeerState:
        """``peer``'s state, created if new, before the event the caller is about to apply:
        an event is a sighting (see :meth:`seen`) and may open a new trend window."""
        state = self._peers.get(peer)
        if state is None:
            self._forget_beyond_bound()
            state = self._peers[peer] = PeerState()
        self.seen(peer)
        now = self.clock()
        if state.mark is None or now - state.mark[0] >= TREND_WINDOW:
            state.mark = (now, state.score(now))
            self.db.execute(
                "UPDATE trust_peers SET mark_at=?, mark_score=? WHERE peer=?",
                (now, state.mark[1], peer),
            )  # (the row exists: the sighting wrote it)
        return state

    def _forget_beyond_bound(self) -> None:
        """At ``MAX_TRACKED_PEERS``, before a new one, forget a peer: of the ``EVICTION_SCAN``
        seen least recently, the one with the highest score (forgetting it costs least: it
        comes back a stranger at ``INITIAL``), never one with an operator's override. Bounded
        work per new peer, and a punished peer is not washed out by a flood of fresh ids."""
        while len(self._peers) >= MAX_TRACKED_PEERS:  # room for the one being added
            now = self.clock()
            victim, best = None, -1.0
            scanned = 0
            for peer, state in self._peers.items():
                if state.override is not None:
                    continue
                score = state.score(now)
                if score > best:
                    victim, best = peer, score
                scanned += 1
                if scanned >= EVICTION_SCAN:
                    break
            if victim is None:  # only overrides: the operator's word is kept
                return
            del self._peers[victim]
            for table in ("scores", "trust_peers", "trust_counters", "trust_trail"):
                self.db.execute(f"DELETE FROM {table} WHERE peer=?", (victim,))  # noqa: S608

    def _save_work(self, peer: bytes, state: PeerState, event: str | None, detail: str) -> None:
        self.db.execute(
            "INSERT INTO scores (peer, score, agreed, disagreed, failed) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(peer) DO UPDATE SET score=excluded.score, agreed=excluded.agreed, "
            "disagreed=excluded.disagreed, failed=excluded.failed",
            (peer, state.work, state.agreed, state.disagreed, state.failed),
        )
        self.db.execute(
            "UPDATE trust_peers SET worked=? WHERE peer=?", (state.worked, peer)
        )  # (the row exists: _state's sighting wrote it)
        if event is not None:
            self._trail(peer, event, detail, self.clock())

    def _trail(self, peer: bytes, reason: str, detail: str, now: float) -> None:
        if reason in self.events:
            self.events[reason] += 1
        self.db.execute(
            "INSERT INTO trust_trail (peer, at, reason, detail) VALUES (?, ?, ?, ?)",
            (peer, now, reason, detail[:MAX_DETAIL]),
        )
        self.db.execute(
            "DELETE FROM trust_trail WHERE peer=? AND id <= ("
            "SELECT id FROM trust_trail WHERE peer=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (peer, peer, MAX_TRAIL_PER_PEER),
        )
