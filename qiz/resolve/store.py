"""The local record store: SQLite (WAL), with expiry and republishing driven by an injected
clock.

Only validated records are put here (the caller validates; this module trusts its input but
enforces the ordering rule): for one (kind, key, holder), a record with a lower sequence number
than the one held is refused, an equal one is kept as is, a higher one replaces it.
"""

from __future__ import annotations

import enum
import sqlite3
from pathlib import Path

from qiz.resolve.records import RecordKind, ValidRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind      TEXT    NOT NULL,
    key       BLOB    NOT NULL,
    holder    BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    raw       BLOB    NOT NULL,
    stored_at REAL    NOT NULL,
    published REAL    NOT NULL,
    PRIMARY KEY (kind, key, holder)
);
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires);
"""


class PutResult(enum.Enum):
    STORED = "stored"
    UNCHANGED = "unchanged"
    OLDER = "older"  # refused: we hold a newer record
    FULL = "full"  # refused: the store is at its limit


class RecordStore:
    """A SQLite table of validated records. ``path=None`` keeps it in memory."""

    def __init__(self, path: Path | str | None = None, *, max_records: int = 100_000) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self.max_records = max_records
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def put(self, record: ValidRecord, now: float) -> PutResult:
        row = self.db.execute(
            "SELECT seq, expires FROM records WHERE kind=? AND key=? AND holder=?",
            (record.kind.value, record.key, record.holder),
        ).fetchone()
        if row is not None:
            seq, expires = row
            if record.seq < seq:
                return PutResult.OLDER
            if record.seq == seq and record.expires <= expires:
                return PutResult.UNCHANGED
        elif len(self) >= self.max_records:
            self.expire(now)
            if len(self) >= self.max_records:
                return PutResult.FULL  # keep what we have
        self.db.execute(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.kind.value,
                record.key,
                record.holder,
                record.seq,
                record.expires,
                record.raw,
                now,
                now,
            ),
        )
        return PutResult.STORED

    def get(self, kind: RecordKind, key: bytes, now: float, limit: int = 20) -> list[ValidRecord]:
        """Unexpired records under ``key``, newest first (several for providers)."""
        rows = self.db.execute(
            "SELECT holder, seq, expires, raw FROM records "
            "WHERE kind=? AND key=? AND expires>? ORDER BY seq DESC LIMIT ?",
            (kind.value, key, int(now), limit),
        ).fetchall()
        return [ValidRecord(kind, key, holder, seq, exp, raw) for holder, seq, exp, raw in rows]

    def newest(self, kind: RecordKind, key: bytes, holder: bytes, now: float) -> ValidRecord | None:
        row = self.db.execute(
            "SELECT seq, expires, raw FROM records "
            "WHERE kind=? AND key=? AND holder=? AND expires>?",
            (kind.value, key, holder, int(now)),
        ).fetchone()
        return None if row is None else ValidRecord(kind, key, holder, row[0], row[1], row[2])

    def listing(self, limit: int = 200) -> list[dict]:
        """The newest records' metadata (kind, key, holder, seq, expiry), for the local API."""
        rows = self.db.execute(
            "SELECT kind, key, holder, seq, expires FROM records ORDER BY stored_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {"kind": k, "key": key.hex(), "holder": holder.hex(), "seq": seq, "expires": exp}
            for k, key, holder, seq, exp in rows
        ]

    def expire(self, now: float) -> int:
        """Drop expired records; return how many."""
        return self.db.execute("DELETE FROM records WHERE expires<=?", (int(now),)).rowcount

    def count_holder(self, holder: bytes) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records WHERE holder=?", (holder,)).fetchone()[
            0
        ]

    def due_for_republish(
        self, now: float, interval: float, *, holder: bytes | None = None, limit: int = 64
    ) -> list[ValidRecord]:
        """Unexpired records not (re)published for ``interval`` seconds (optionally only one
        signer's), at most ``limit`` per call."""
        query = (
            "SELECT kind, key, holder, seq, expires, raw FROM records "
            "WHERE published<=? AND expires>?"
        )
        params: tuple = (now - interval, int(now))
        if holder is not None:
            query += " AND holder=?"
            params += (holder,)
        rows = self.db.execute(query + " LIMIT ?", (*params, limit)).fetchall()
        return [ValidRecord(RecordKind(k), key, h, s, e, raw) for k, key, h, s, e, raw in rows]

    def mark_published(self, record: ValidRecord, now: float) -> None:
        self.db.execute(
            "UPDATE records SET published=? WHERE kind=? AND key=? AND holder=?",
            (now, record.kind.value, record.key, record.holder),
        )
