"""What this node owns in the pool: the content it published or pinned, and who holds each column.

An owner keeps content alive: it renews its holders' leases and repairs lost columns. Its memory
of that is this catalog, in SQLite beside the holder's tables (``HOME/store/owner.sqlite``, WAL):

* ``content``: one row per content id: its manifest, a display name, whether it is pinned
  (kept alive) and whether this node published it, and the health the last check found;
* ``placement``: who holds column ``idx`` of a content, in what state the last check found it,
  and until when its lease runs.

A put records its content only after every holder committed, and a column's new holder only
after it committed: a crash in between leaves the old row (the repair pass finds the gap).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    cid BLOB PRIMARY KEY,
    manifest BLOB NOT NULL,
    name TEXT NOT NULL,
    pinned INTEGER NOT NULL,
    published INTEGER NOT NULL,
    added REAL NOT NULL,
    checked REAL NOT NULL DEFAULT 0,
    health TEXT NOT NULL DEFAULT 'unknown',
    live INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS placement (
    cid BLOB NOT NULL,
    idx INTEGER NOT NULL,
    holder BLOB NOT NULL,
    state TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (cid, idx)
);
"""


@dataclass(frozen=True, slots=True)
class Owned:
    cid: bytes
    manifest: bytes
    name: str
    pinned: bool
    published: bool
    added: float
    checked: float
    health: str
    live: int


@dataclass(frozen=True, slots=True)
class Placed:
    idx: int
    holder: bytes
    state: str  # ok | missing | bad | unreachable
    expires: int


class Catalog:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(str(path) if path is not None else ":memory:")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ content

    def add(
        self,
        cid: bytes,
        manifest: bytes,
        name: str,
        *,
        pinned: bool,
        published: bool,
        now: float,
        holders: Iterable[tuple[int, bytes, int]] = (),
    ) -> None:
        """Record content and its holders (index, holder, lease expiry) in one transaction."""
        with self.db:
            self.db.execute(
                "INSERT INTO content (cid, manifest, name, pinned, published, added, checked,"
                " health, live) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?)"
                " ON CONFLICT(cid) DO UPDATE SET pinned = max(pinned, excluded.pinned),"
                " published = max(published, excluded.published)",
                (cid, manifest, name, int(pinned), int(published), now, now, 0),
            )
            for idx, holder, expires in holders:
                self._place(cid, idx, holder, "ok", expires)
            self._refresh_live(cid)

    def get(self, cid: bytes) -> Owned | None:
        row = self.db.execute(
            "SELECT cid, manifest, name, pinned, published, added, checked, health, live"
            " FROM content WHERE cid = ?",
            (cid,),
        ).fetchone()
        return Owned(row[0], row[1], row[2], bool(row[3]), bool(row[4]), *row[5:]) if row else None

    def all(self) -> list[Owned]:
        rows = self.db.execute(
            "SELECT cid, manifest, name, pinned, published, added, checked, health, live"
            " FROM content ORDER BY added"
        ).fetchall()
        return [Owned(r[0], r[1], r[2], bool(r[3]), bool(r[4]), *r[5:]) for r in rows]

    def set_pinned(self, cid: bytes, pinned: bool) -> None:
        with self.db:
            self.db.execute("UPDATE content SET pinned = ? WHERE cid = ?", (int(pinned), cid))

    def forget(self, cid: bytes) -> None:
        with self.db:
            self.db.execute("DELETE FROM placement WHERE cid = ?", (cid,))
            self.db.execute("DELETE FROM content WHERE cid = ?", (cid,))

    def checked(self, cid: bytes, now: float, health: str, *, audited: bool = True) -> None:
        """Record the health a check found; ``checked`` (when the next audit is due from)
        moves only when the check audited and could repair."""
        with self.db:
            self.db.execute("UPDATE content SET health = ? WHERE cid = ?", (health, cid))
            if audited:
                self.db.execute("UPDATE content SET checked = ? WHERE cid = ?", (now, cid))
            self._refresh_live(cid)

    # ------------------------------------------------------------------ placement

    def placements(self, cid: bytes) -> list[Placed]:
        rows = self.db.execute(
            "SELECT idx, holder, state, expires FROM placement WHERE cid = ? ORDER BY idx", (cid,)
        ).fetchall()
        return [Placed(*row) for row in rows]

    def place(self, cid: bytes, idx: int, holder: bytes, state: str, expires: int) -> None:
        with self.db:
            self._place(cid, idx, holder, state, expires)
            self._refresh_live(cid)

    def _place(self, cid: bytes, idx: int, holder: bytes, state: str, expires: int) -> None:
        self.db.execute(
            "INSERT INTO placement (cid, idx, holder, state, expires) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(cid, idx) DO UPDATE SET holder = excluded.holder,"
            " state = excluded.state, expires = excluded.expires",
            (cid, idx, holder, state, expires),
        )

    def _refresh_live(self, cid: bytes) -> None:
        self.db.execute(
            "UPDATE content SET live = (SELECT count(*) FROM placement"
            " WHERE placement.cid = content.cid AND state = 'ok') WHERE cid = ?",
            (cid,),
        )

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
