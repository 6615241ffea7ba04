"""Peer scores: what a peer did, weighed, decayed, persisted, and read by everything that
chooses a peer.

Two parts make a score in [0, 1]:

* **verified work** (as in BOINC's adaptive replication): agreement with a quorum raises the
  *work score* slowly (+0.05), disagreement halves it, a task not finished costs 0.05. The
  asymmetry is deliberate: one wrong result costs more trust than many right ones earn, so a
  peer cannot bank good behaviour and then cheat cheaply. It does not decay: only more verified
  work moves it.
* **misbehaviour** (as in gossipsub v1.1's P4-P7 counters): each event of a *reason* (an
  invalid signature, a forged or stale record, a bad storage share, an RPC timeout, ...) adds
  one to that reason's counter, which decays exponentially with the reason's half-life; the
  score loses ``weight x counter`` per reason. A forged signature weighs a lot and is
  remembered for a day; a timeout weighs little and is forgotten in minutes, so a peer that
  was only slow for a while recovers by itself (the cooling-off period).

Thresholds say what a score still buys (checked by the callers through :meth:`may`):
below ``GIVE`` a peer gets no work, storage or relay slots from us; below ``ROUTE`` lookups
do not go through it; below ``LINK`` its links are refused. Operators override: a *trusted*
peer always scores 1, a *banned* one 0 (and is refused links) until unbanned.

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
FAIL_STEP = 0.05

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


@dataclass(frozen=True)
class Reason:
    """How much one event of a kind costs, and for how long it is remembered."""

    weight: float  # score lost per (undecayed) event
    half_life: float  # seconds
    meaning: str


REASONS: dict[str, Reason] = {
    "invalid_signature": Reason(0.4, 86_400.0, "signed something that does not verify"),
    "invalid_record": Reason(0.2, 86_400.0, "served or stored a record that does not validate"),
    "stale_record": Reason(0.02, 3_600.0, "served a record older than one it had"),
    "bad_share": Reason(0.2, 86_400.0, "served storage bytes that do not match their hash"),
    "relay_abuse": Reason(0.2, 86_400.0, "went over a relay's limits"),
    "handshake_failed": Reason(0.05, 3_600.0, "a link handshake with it failed"),
    "rpc_error": Reason(0.01, 600.0, "answered a request with garbage"),
    "rpc_timeout": Reason(0.01, 600.0, "did not answer a request in time"),
}
# the work score's events, kept in the trail too (their effect is the work score's, above)
WORK_EVENTS = ("agreed", "disagreed", "failed")


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

    def penalty(self, now: float) -> float:
        return sum(
            REASONS[r].weight * decayed(v, t, now, REASONS[r].half_life)
            for r, (v, t) in self.counters.items()
        )

    def score(self, now: float) -> float:
        if self.override == TRUSTED:
            return 1.0
        if self.override == BANNED:
            return 0.0
        if not self.counters:
            return self.work
        return min(1.0, max(0.0, self.work - self.penalty(now)))


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
    seen      REAL NOT NULL DEFAULT 0
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
        # events scored since this process started, by reason (Prometheus counters)
        self.events: dict[str, int] = dict.fromkeys((*WORK_EVENTS, *REASONS), 0)
        self._peers: OrderedDict[bytes, PeerState] = OrderedDict()  # least recently seen first
        for peer, work, agreed, disagreed, failed in db.execute(
            "SELECT peer, score, agreed, disagreed, failed FROM scores"
        ):
            self._peers[bytes(peer)] = PeerState(float(work), agreed, disagreed, failed)
        for peer, override, seen in db.execute("SELECT peer, override, seen FROM trust_peers"):
            state = self._peers.setdefault(bytes(peer), PeerState())
            state.override = override if override in OVERRIDES else None
            state.seen = float(seen)
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
        floor = {"give": GIVE, "route": ROUTE, "link": LINK}[what]
        return state.score(self.clock()) >= floor

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
            "work": round(state.work, 4),
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
        state.work = min(1.0, state.work + AGREE_STEP)
        state.agreed += 1
        self._save_work(peer, state, "agreed", "")

    def disagreed(self, peer: bytes) -> None:
        state = self._state(peer)
        state.work = max(0.0, state.work * DISAGREE_FACTOR)
        state.disagreed += 1
        self._save_work(peer, state, "disagreed", "")

    def failed(self, peer: bytes) -> None:
        state = self._state(peer)
        state.work = max(0.0, state.work - FAIL_STEP)
        state.failed += 1
        self._save_work(peer, state, "failed", "")

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
        """``peer`` did something (linked, answered, or any event here): it is the last to be
        forgotten past the bound."""
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = PeerState()
            self._forget_beyond_bound()
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
        """``peer``'s state, created if new; an event is a sighting (see :meth:`seen`)."""
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = PeerState()
            self._forget_beyond_bound()
        self.seen(peer)
        return state

    def _forget_beyond_bound(self) -> None:
        """Past ``MAX_TRACKED_PEERS``, forget the least recently seen peers without an
        override (an operator's word is kept)."""
        excess = len(self._peers) - MAX_TRACKED_PEERS
        if excess <= 0:
            return
        victims = [p for p, s in self._peers.items() if s.override is None][:excess]
        for peer in victims:
            del self._peers[peer]
            for table in ("scores", "trust_peers", "trust_counters", "trust_trail"):
                self.db.execute(f"DELETE FROM {table} WHERE peer=?", (peer,))  # noqa: S608

    def _save_work(self, peer: bytes, state: PeerState, event: str, detail: str) -> None:
        self.db.execute(
            "INSERT INTO scores (peer, score, agreed, disagreed, failed) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(peer) DO UPDATE SET score=excluded.score, agreed=excluded.agreed, "
            "disagreed=excluded.disagreed, failed=excluded.failed",
            (peer, state.work, state.agreed, state.disagreed, state.failed),
        )
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
