"""The local record store: SQLite (WAL), with expiry and republishing driven by an injected
clock.

Only validated records are put here (the caller validates; this module trusts its input but
enforces the ordering rule): for one (kind, key, holder), a record with a lower sequence number
than the one held is refused, an equal one is kept as is, a higher one replaces it. An integer
outside SQLite's range is refused with a :class:`RecordError`, never an ``OverflowError``.

The store is bounded in rows (``max_records``) and bytes (``max_bytes``: each row counts its
raw record plus :data:`ROW_OVERHEAD`). When a new record does not fit, expired records go
first; then records are evicted least valuable first, in this order:

1. records of the signer that holds the most records here (a flood's own records go first,
   so one signer's newcomers mostly replace that signer's older ones);
2. among equal counts, signers farthest from our id (shortest common prefix with ``home``:
   ids close to ours are the costly ones to mint, since every id must solve the puzzle);
3. then the record closest to its expiry, then the one stored first.

A newcomer may only evict records that rank at or before itself in that order (its signer's
count taken with the newcomer in it): a signer with one record here is never pushed out by a
signer that holds more. Records of the holders in ``keep()`` (the node's own id, its pinned
peers') are never evicted, and are stored even when nothing can make room for them.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path

from qiz.resolve.keyspace import bucket_index
from qiz.resolve.records import RecordKind, ValidRecord, check_uint

# What a row costs beside its raw record (kind, 32-byte key and holder, numbers, the entries of
# the primary key and the indexes), so that the byte budget bounds the file, not the payload.
ROW_OVERHEAD = 160
MAX_RECORDS = 20_000  # rows at most: the count bound beside the byte budget
MAX_BYTES = 64 << 20  # bytes at most (raw + ROW_OVERHEAD per row): bounds disk and page cache

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
DROP INDEX IF EXISTS records_holder;
CREATE INDEX IF NOT EXISTS records_holder_expiry ON records (holder, expires);
"""


class PutResult(enum.Enum):
    STORED = "stored"
    UNCHANGED = "unchanged"
    OLDER = "older"  # refused: we hold a newer record
    FULL = "full"  # refused: the store is at its limit and holds nothing less valuable


class RecordStore:
    """A SQLite table of validated records. ``path=None`` keeps it in memory.

    ``home`` is our id (eviction prefers signers far from it); ``keep()`` names the holders
    whose records are never evicted. The DHT sets both (:meth:`configure`)."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_BYTES,
        home: bytes = bytes(32),
        keep: Callable[[], Collection[bytes]] = frozenset,
    ) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.home = home
        self.keep = keep
        self.evicted = 0  # records evicted to make room, since start
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self._kept_now: set[bytes] = set()  # the holders kept from eviction, while evicting
        self.db.create_function("closeness", 1, self._closeness, deterministic=True)
        self.db.create_function("kept", 1, lambda holder: holder in self._kept_now)
        self.db.executescript(SCHEMA)
        self.rows, self.bytes = self._count()

    def configure(
        self,
        *,
        max_records: int,
        max_bytes: int,
        home: bytes,
        keep: Callable[[], Collection[bytes]],
    ) -> None:
        self.max_records, self.max_bytes, self.home, self.keep = max_records, max_bytes, home, keep

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return self.rows

    def _count(self) -> tuple[int, int]:
        """Rows, and bytes as the budget counts them (raw + :data:`ROW_OVERHEAD` each)."""
        rows, raw = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM records"
        ).fetchone()
        return int(rows), int(raw) + int(rows) * ROW_OVERHEAD

    def _closeness(self, holder: bytes) -> int:
        """Common prefix length of ``holder`` with our id: higher is closer (256 for us)."""
        index = bucket_index(self.home, holder) if len(holder) == len(self.home) else 0
        return 256 if index < 0 else index

    # ------------------------------------------------------------------ writing

    def put(self, record: ValidRecord, now: float) -> PutResult:
        for value, what in (
            (record.seq, "a record's sequence number"),
            (record.expires, "a record's expiry"),
        ):
            check_uint(value, what)  # again here: nothing reaches SQLite unchecked
        row = self._row(record)
        held_bytes = 0
        if row is not None:
            seq, expires, length = row
            standing = _standing(record, seq, expires)
            if standing is not None:
                return standing
            held_bytes = length + ROW_OVERHEAD
        need = len(record.raw) + ROW_OVERHEAD - held_bytes
        new_row = row is None
        if not self._fits(need, new_row) and not self._make_room(record, need, new_row, now):
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
        self.bytes += need
        self.rows += new_row
        return PutResult.STORED

    def _row(self, record: ValidRecord) -> tuple[int, int, int] | None:
        """(seq, expires, raw length) of the row ``record`` would replace, if there is one."""
        return self.db.execute(
            "SELECT seq, expires, length(raw) FROM records WHERE kind=? AND key=? AND holder=?",
            (record.kind.value, record.key, record.holder),
        ).fetchone()

    def standing(self, record: ValidRecord) -> PutResult | None:
        """What :meth:`put` would answer without writing (OLDER or UNCHANGED), or None if it
        would change something (a new key, a higher seq, a later expiry). One indexed read:
        the DHT answers replays with it before charging the signer's rate limit, so replaying
        someone's public record never spends that someone's budget."""
        row = self._row(record)
        return None if row is None else _standing(record, row[0], row[1])

    def _fits(self, need: int, new_row: bool) -> bool:
        return self.bytes + need <= self.max_bytes and self.rows + new_row <= self.max_records

    def _make_room(self, record: ValidRecord, need: int, new_row: bool, now: float) -> bool:
        """Expire, then evict what ranks at or before ``record`` (the module docstring's order)
        one record at a time until it fits. True if it fits now; a protected holder's record
        goes in whatever happens."""
        self.expire(now)
        kept = set(self.keep())
        protected = record.holder in kept
        while not self._fits(need, new_row):
            mine = self.count_holder(record.holder) + new_row
            rank = (-mine, self._closeness(record.holder), record.expires)
            victim = self._least_valuable(kept, record, new_row)
            if victim is None:
                return protected
            kind, key, holder, count, closeness, expires, length = victim
            if not protected and (-count, closeness, expires) > rank:
                return False  # everything left is worth more than the newcomer
            self.db.execute(
                "DELETE FROM records WHERE kind=? AND key=? AND holder=?", (kind, key, holder)
            )
            self.bytes -= length + ROW_OVERHEAD
            self.rows -= 1
            self.evicted += 1
        return True

    def _least_valuable(self, kept: set[bytes], record: ValidRecord, new_row: bool) -> tuple | None:
        """The first record in eviction order, other than ``record``'s own row and the kept
        holders': (kind, key, holder, its holder's count, closeness, expires, raw length).
        The newcomer's signer is counted with the newcomer in it.

        Count and closeness belong to the holder, so the first record is the earliest to
        expire of the first holder in (count desc, closeness asc) order: two indexed queries
        instead of ranking every row."""
        self._kept_now = kept
        holders = self.db.execute(
            "SELECT holder, COUNT(*) + (holder = ?) * ? AS n FROM records "
            "GROUP BY holder HAVING NOT kept(holder) "
            "ORDER BY n DESC, closeness(holder) ASC LIMIT 2",
            (record.holder, int(new_row)),
        ).fetchall()
        for holder, count in holders:  # the newcomer's own row may be its holder's only one
            row = self.db.execute(
                "SELECT kind, key, expires, length(raw) FROM records "
                "WHERE holder=? AND NOT (kind=? AND key=? AND holder=?) "
                "ORDER BY expires ASC, stored_at ASC LIMIT 1",
                (holder, record.kind.value, record.key, record.holder),
            ).fetchone()
            if row is not None:
                kind, key, expires, length = row
                return kind, key, holder, count, self._closeness(holder), expires, length
        return None

    # ------------------------------------------------------------------ reading

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

    def holds(self, kind: RecordKind, key: bytes, holder: bytes) -> bool:
        """True if a record of ``holder`` under (kind, key) is stored, expired or not: a new
        one would replace it rather than take another row."""
        row = self.db.execute(
            "SELECT 1 FROM records WHERE kind=? AND key=? AND holder=?",
            (kind.value, key, holder),
        ).fetchone()
        return row is not None

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
        dropped = self.db.execute("DELETE FROM records WHERE expires<=?", (int(now),)).rowcount
        if dropped:
            self.rows, self.bytes = self._count()
        return dropped

    def count_holder(self, holder: bytes) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records WHERE holder=?", (holder,)).fetchone()[
            0
        ]

    def due_for_republish(
        self, now: float, interval: float, *, holder: bytes | None = None, limit: int = 64
    ) -> list[ValidRecord]:
        """Unexpired records not (re)published for ``interval`` seconds (optionally only one
        signer's), at most ``limit`` per call, the longest unpublished first."""
        query = (
            "SELECT kind, key, holder, seq, expires, raw FROM records "
            "WHERE published<=? AND expires>?"
        )
        params: tuple = (now - interval, int(now))
        if holder is not None:
            query += " AND holder=?"
            params += (holder,)
        # the longest unpublished first: a record whose store failed is retried before others
        rows = self.db.execute(
            query + " ORDER BY published ASC LIMIT ?", (*params, limit)
        ).fetchall()
        return [ValidRecord(RecordKind(k), key, h, s, e, raw) for k, key, h, s, e, raw in rows]

    def mark_published(self, record: ValidRecord, now: float) -> None:
        self.db.execute(
            "UPDATE records SET published=? WHERE kind=? AND key=? AND holder=?",
            (now, record.kind.value, record.key, record.holder),
        )


def _standing(record: ValidRecord, seq: int, expires: int) -> PutResult | None:
    """OLDER or UNCHANGED if ``record`` would not replace the row (seq, expires), else None."""
    if record.seq < seq:
        return PutResult.OLDER
    if record.seq == seq and record.expires <= expires:
        return PutResult.UNCHANGED
    return None
