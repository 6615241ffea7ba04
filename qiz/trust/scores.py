"""Peer scores from verified work: agreement raises a score slowly, disagreement halves it.

The asymmetry is deliberate (as in BOINC's adaptive replication): one wrong result costs more
trust than many right ones earn, so a peer cannot bank good behaviour and then cheat cheaply.
A peer that failed to finish (crashed, vanished) loses a little: it cost time, not correctness.
Scores live in the node's SQLite database and survive restarts; this module owns their table
(it creates it on the database it is given), so nothing else needs to know its columns.

Reads are served from memory: placement asks for the score of every known worker each round
(a thousand in the simulator), and the table only changes through this class.
"""

from __future__ import annotations

import sqlite3

INITIAL = 0.8
AGREE_STEP = 0.05
DISAGREE_FACTOR = 0.5
FAIL_STEP = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    peer      BLOB PRIMARY KEY,
    score     REAL NOT NULL,
    agreed    INTEGER NOT NULL DEFAULT 0,
    disagreed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0
);
"""


class PeerScores:
    """Scores in [0, 1] keyed by node id digest; unknown peers start at ``INITIAL``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self._cache: dict[bytes, float] = {
            bytes(peer): float(score)
            for peer, score in db.execute("SELECT peer, score FROM scores")
        }

    def get(self, peer: bytes) -> float:
        return self._cache.get(peer, INITIAL)

    def _set(self, peer: bytes, score: float, column: str) -> None:
        value = min(1.0, max(0.0, score))
        self.db.execute(
            "INSERT INTO scores (peer, score) VALUES (?, ?) ON CONFLICT(peer) DO NOTHING",
            (peer, INITIAL),
        )
        self.db.execute(
            f"UPDATE scores SET score=?, {column}={column}+1 WHERE peer=?",  # noqa: S608 - ours
            (value, peer),
        )
        self._cache[peer] = value

    def agreed(self, peer: bytes) -> None:
        self._set(peer, self.get(peer) + AGREE_STEP, "agreed")

    def disagreed(self, peer: bytes) -> None:
        self._set(peer, self.get(peer) * DISAGREE_FACTOR, "disagreed")

    def failed(self, peer: bytes) -> None:
        self._set(peer, self.get(peer) - FAIL_STEP, "failed")

    def table(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT peer, score, agreed, disagreed, failed FROM scores ORDER BY score DESC"
        ).fetchall()
        return [
            {"peer": p, "score": round(s, 4), "agreed": a, "disagreed": d, "failed": f}
            for p, s, a, d, f in rows
        ]
