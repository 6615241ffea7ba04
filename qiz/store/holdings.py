"""The holder's storage engine: what this node keeps for others, on disk and in its index.

Layout under ``HOME/store/`` (docs/store.md, "Holders: the protocol"):

* ``store.sqlite``: manifests, complete columns and tables, leases, pending offers;
* ``columns/XX/KEY``: one file per complete column, named by its storage key: the column key
  for the publisher's upload (kept once, and offered as held to every owner of the content),
  a key of the sender's own for anyone else's (:meth:`Holdings.storage_key`);
* ``tables/XX/ROOT.table``: the chunk table, shared by every column with that Merkle root;
* ``parts/TOKEN.column.part``, ``parts/TOKEN.table.part``: bytes of an offer in progress, one
  pair per offer (owner, content, index), so that one owner's bytes never mix with another's.

A column of ``direct.DIRECT_FROM`` bytes or more is written and read around the page cache
(``O_DIRECT``, :class:`qiz.store.direct.PieceWriter`): on the virtual machines measured here a
fresh page-cache page costs the host a fault, and a holder rarely reads back what it keeps.

Invariants, and why they hold after a crash at any point:

* A column or table is served only when its row says it is complete. Rows are written after the
  files were fsynced and renamed into place, in one transaction; a crash before that leaves a
  file with no row, and :meth:`Holdings.recover` deletes files without rows (and every
  ``.part``) at the next start. Collecting deletes the rows first, then the files.
* Quotas are charged from the sizes the manifest declares, at the offer, before a byte is sent;
  bytes received are never trusted as counts. A put is accepted only within the offered
  bounds, and completeness is decided from the byte ranges actually written (a bounded list of
  disjoint intervals), never from a count of pieces.
* A chunk table is kept only if its RFC 6962 root is the manifest's root.

SQLite runs in WAL mode with ``synchronous=FULL``: an answer to ``commit`` or ``renew`` is a
promise to an owner, which stops looking for another holder when it hears it, so the row must
survive a power loss, not only a crash of the process. It costs one WAL fsync per transaction,
and transactions happen per offer, commit, renewal and collection, never per piece.

Everything here is synchronous and cheap per call except :meth:`Holdings.finish`, which reads
and hashes the chunk table and fsyncs the files; it touches no database and no shared state,
so the RPC adapter runs it in a thread (:mod:`qiz.store.holder`).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qiz import QizError
from qiz.crypto.ids import ContentId, NodeId
from qiz.fsio import fsync_directory
from qiz.store import direct
from qiz.store.config import StoreConfig
from qiz.store.direct import PieceWriter
from qiz.store.limits import (
    HASH_SIZE,
    MAX_LEASE,
    MAX_MANIFEST,
    MAX_OFFERS,
    MAX_OFFERS_PER_PEER,
    MAX_PIECE,
    MAX_READ_CACHE,
    MAX_UPLOAD_RANGES,
    OFFER_TTL,
    STORE_DISK_HEADROOM,
)
from qiz.store.manifest import Manifest, parse_manifest
from qiz.store.merkle import table_root

log = logging.getLogger("qiz.store")

UPLOADER_DOMAIN = b"qiz/store/column-by/v1"
TABLE = -1  # the `part` of a put or read that names the chunk table
EARLY_FLUSH = 8 << 20  # column bytes between background flushes while an upload arrives
PART = ".part"

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    cid BLOB PRIMARY KEY,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS columns (
    key BLOB PRIMARY KEY,            -- storage key (Holdings.storage_key): names the file
    size INTEGER NOT NULL,
    trusted INTEGER NOT NULL         -- 1: uploaded by the content's publisher
);
CREATE TABLE IF NOT EXISTS tables (
    root BLOB PRIMARY KEY,           -- Merkle root: names the file
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    cid BLOB NOT NULL,
    idx INTEGER NOT NULL,
    owner BLOB NOT NULL,             -- the peer's node id digest
    key BLOB NOT NULL,
    root BLOB NOT NULL,
    bytes INTEGER NOT NULL,          -- charged to the owner: column + table, as declared
    expires REAL NOT NULL,
    PRIMARY KEY (cid, idx, owner)
);
CREATE INDEX IF NOT EXISTS leases_owner ON leases (owner);
CREATE INDEX IF NOT EXISTS leases_key ON leases (key);
CREATE INDEX IF NOT EXISTS leases_root ON leases (root);
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
CREATE TABLE IF NOT EXISTS offers (
    cid BLOB NOT NULL,
    idx INTEGER NOT NULL,
    owner BLOB NOT NULL,
    key BLOB NOT NULL,
    root BLOB NOT NULL,
    column_size INTEGER NOT NULL,
    table_size INTEGER NOT NULL,
    trusted INTEGER NOT NULL,        -- the offering peer is the content's publisher
    lease REAL NOT NULL,             -- seconds asked for, granted at commit
    expires REAL NOT NULL,           -- the reservation lapses then
    PRIMARY KEY (cid, idx, owner)
);
CREATE INDEX IF NOT EXISTS offers_owner ON offers (owner);
"""


class HoldError(QizError):
    """A holder refused a request; ``code`` is one of docs/store.md's error codes (``full``,
    ``quota``, ``bad-manifest``, ``too-many-offers``, ``no-offer``, ``out-of-range``,
    ``incomplete``, ``bad-table``, ``no-lease``, ``not-found``) or ``bad-request``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StoreCorrupt(QizError):
    """The holder's index failed its integrity check: the node refuses to start on it."""


class Ranges:
    """Disjoint, sorted half-open byte ranges written so far into one ``.part`` file.

    Bounded: a writer that leaves more than ``limit`` gaps (1-byte pieces every other byte
    would otherwise cost memory in proportion to the column) is refused; an honest owner
    writes in order with a small window in flight, so it leaves a handful at most."""

    __slots__ = ("ends", "limit", "starts")

    def __init__(self, limit: int) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.limit = limit

    def add(self, start: int, end: int) -> bool:
        """Record ``[start, end)``; False (nothing recorded) if that would pass the limit."""
        if start >= end:
            return True
        # every range that touches or overlaps [start, end) merges into it
        lo = bisect.bisect_left(self.ends, start)
        hi = bisect.bisect_right(self.starts, end)
        if lo < hi:
            start = min(start, self.starts[lo])
            end = max(end, self.ends[hi - 1])
        elif len(self.starts) >= self.limit:
            return False
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]
        return True

    def covers(self, size: int) -> bool:
        """Every byte of ``[0, size)`` was written."""
        if size == 0:
            return True
        return bool(self.starts) and self.starts[0] == 0 and self.ends[0] >= size

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class Upload:
    """An accepted offer's bytes in progress (memory only: after a restart its ``.part`` files
    are gone and so are its ranges; the owner sends again)."""

    cid: ContentId
    index: int
    owner: bytes
    key: bytes
    root: bytes
    column_size: int
    table_size: int
    trusted: int
    lease: float
    expires: float
    column_part: Path
    table_part: Path
    column: Ranges = field(default_factory=lambda: Ranges(MAX_UPLOAD_RANGES))
    table: Ranges = field(default_factory=lambda: Ranges(MAX_UPLOAD_RANGES))
    unflushed: int = 0  # column bytes written since the last early flush (write())
    # the column's pieces in order go around the page cache (write(); direct.PieceWriter)
    writer: PieceWriter = field(default_factory=PieceWriter)
    committing: bool = False  # between prepare() and complete()/abandon(): files in use
    cancelled: bool = False  # released or lapsed while committing: the commit cleans up


@dataclass(frozen=True)
class Checked:
    """An upload whose bytes are all in and whose table matched: ready to be renamed in."""

    upload: Upload
    with_table: bool  # False: the table was already held complete, its part is not needed


def _hex(data: bytes) -> str:
    return data.hex()


class Holdings:
    """One node's holdings; ``home=None`` keeps the index in memory and the files in a
    temporary directory removed at :meth:`close` (the simulator, tests)."""

    def __init__(
        self,
        home: Path | None,
        config: StoreConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self._temp: str | None = None
        if home is None:
            self._temp = tempfile.mkdtemp(prefix="qiz-store-")
            self.root = Path(self._temp)
            db_path = ":memory:"
        else:
            self.root = Path(home) / "store"
            db_path = str(self.root / "store.sqlite")
        for sub in ("", "columns", "tables", "parts"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._uploads: dict[tuple[bytes, int, bytes], Upload] = {}
        self._bounce: direct.Bounce | None = None  # direct I/O of columns (see _bounce_buffer)
        # what read() found for (cid, column): its file, size and the lease's expiry, kept
        # until any index write (every one goes through _transaction) or that expiry
        self._reads: dict[tuple[bytes, int], tuple[Path, int, float]] = {}
        self.recovered: dict[str, int] = {}
        try:
            if db_path != ":memory:":
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            self.recovered = self.recover()
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            self.close()
            raise StoreCorrupt(
                f"the store index {db_path} cannot be read ({exc}); move it aside to start "
                "with an empty store"
            ) from None
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction: all of it or none of it, one fsync. (The connection is in
        autocommit mode, where ``with connection`` would not begin one.)"""
        self._reads.clear()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a failed COMMIT (a full disk) leaves it open too
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    # ------------------------------------------------------------------ paths

    def column_path(self, key: bytes) -> Path:
        name = _hex(key)
        return self.root / "columns" / name[:2] / name

    def table_path(self, root: bytes) -> Path:
        name = _hex(root)
        return self.root / "tables" / name[:2] / f"{name}.table"

    def _part_paths(self, cid: ContentId, index: int, owner: bytes) -> tuple[Path, Path]:
        token = hashlib.sha256(cid.digest + index.to_bytes(1, "big") + owner).hexdigest()[:32]
        parts = self.root / "parts"
        return parts / f"{token}.column{PART}", parts / f"{token}.table{PART}"

    # ------------------------------------------------------------------ start-up

    def recover(self) -> dict[str, int]:
        """Make the directory agree with the index after whatever stopped the last run: check
        the index, delete every ``.part`` (nothing incomplete survives a restart), expired
        offers, and files no row names (a crash between rename and row, or row and unlink)."""
        rows = self.db.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            first = str(rows[0][0]) if rows else "no answer"
            raise StoreCorrupt(
                f"the store index {self.root / 'store.sqlite'} failed its integrity check "
                f"({first[:200]}); move it aside to start with an empty store"
            )
        now = self.clock()
        parts = 0
        for path in (self.root / "parts").iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            parts += 1
        with self._transaction():
            offers = self.db.execute("DELETE FROM offers WHERE expires <= ?", (now,)).rowcount
        columns = {_hex(k) for (k,) in self.db.execute("SELECT key FROM columns")}
        tables = {f"{_hex(r)}.table" for (r,) in self.db.execute("SELECT root FROM tables")}
        stray = self._sweep(self.root / "columns", columns) + self._sweep(
            self.root / "tables", tables
        )
        missing = self._forget_missing()
        if parts or stray or missing:
            log.info(
                "store: removed %d partial files, %d files without a row, %d rows without a file",
                parts,
                stray,
                missing,
            )
        return {"parts": parts, "offers": offers, "stray": stray, "missing": missing}

    @staticmethod
    def _sweep(directory: Path, keep: set[str]) -> int:
        removed = 0
        for sub in directory.iterdir():
            if not sub.is_dir():
                sub.unlink(missing_ok=True)
                removed += 1
                continue
            for path in sub.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _forget_missing(self) -> int:
        """Rows whose file is gone or has the wrong size (deleted by hand, a disk fault) are
        dropped with their leases: a holder never claims what it cannot serve."""
        bad_keys = [
            key
            for key, size in self.db.execute("SELECT key, size FROM columns").fetchall()
            if _size(self.column_path(key)) != size
        ]
        bad_roots = [
            root
            for root, size in self.db.execute("SELECT root, size FROM tables").fetchall()
            if _size(self.table_path(root)) != size
        ]
        with self._transaction():
            for key in bad_keys:
                self.db.execute("DELETE FROM columns WHERE key = ?", (key,))
                self.db.execute("DELETE FROM leases WHERE key = ?", (key,))
            for root in bad_roots:
                self.db.execute("DELETE FROM tables WHERE root = ?", (root,))
                self.db.execute("DELETE FROM leases WHERE root = ?", (root,))
        return len(bad_keys) + len(bad_roots)

    # ------------------------------------------------------------------ accounting

    def stored_bytes(self) -> int:
        columns = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM columns").fetchone()[0]
        tables = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM tables").fetchone()[0]
        return int(columns) + int(tables)

    def reserved_bytes(self) -> int:
        """Bytes promised to pending offers (each charged in full: conservative)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(column_size + table_size), 0) FROM offers"
        ).fetchone()
        return int(row[0])

    def capacity(self) -> int:
        """The bytes this node may hold in all: ``max_bytes``, or less when the disk has less
        room (what is stored plus what is free, minus a headroom for the rest of the node),
        decided now, since other programs use the same disk."""
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = 0
        room = self.stored_bytes() + max(0, free - STORE_DISK_HEADROOM)
        return max(0, min(self.config.max_bytes, room))

    def peer_bytes(self, owner: bytes) -> int:
        leased = self.db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM leases WHERE owner = ?", (owner,)
        ).fetchone()[0]
        offered = self.db.execute(
            "SELECT COALESCE(SUM(column_size + table_size), 0) FROM offers WHERE owner = ?",
            (owner,),
        ).fetchone()[0]
        return int(leased) + int(offered)

    def _peer_rows(self, owner: bytes) -> int:
        leases = self.db.execute("SELECT COUNT(*) FROM leases WHERE owner = ?", (owner,))
        offers = self.db.execute("SELECT COUNT(*) FROM offers WHERE owner = ?", (owner,))
        return int(leases.fetchone()[0]) + int(offers.fetchone()[0])

    def usage(self) -> dict[str, int]:
        """For status and metrics: what is held, promised and allowed."""
        now = self.clock()
        return {
            "bytes_stored": self.stored_bytes(),
            "bytes_reserved": self.reserved_bytes(),
            "quota_bytes": self.capacity(),
            "columns": self._count("SELECT COUNT(*) FROM columns"),
            "tables": self._count("SELECT COUNT(*) FROM tables"),
            "leases": self._count("SELECT COUNT(*) FROM leases WHERE expires > ?", now),
            "offers": self._count("SELECT COUNT(*) FROM offers WHERE expires > ?", now),
            "contents": self._count(
                "SELECT COUNT(DISTINCT cid) FROM leases WHERE expires > ?", now
            ),
            "peers": self._count("SELECT COUNT(DISTINCT owner) FROM leases WHERE expires > ?", now),
        }

    def _count(self, sql: str, *args: object) -> int:
        return int(self.db.execute(sql, args).fetchone()[0])

    # ------------------------------------------------------------------ offer

    def offer(self, peer: NodeId, manifest_raw: bytes, index: int, lease_seconds: float) -> bool:
        """Accept (or refuse) holding column ``index`` of the content whose manifest this is.

        True: the column is already held complete, the lease is recorded now and nothing needs
        to be sent (a commit is still accepted). False: the bytes are reserved for
        ``OFFER_TTL`` seconds for this peer's puts. Refusals are :class:`HoldError`."""
        owner = peer.digest
        if len(manifest_raw) > MAX_MANIFEST:
            raise HoldError("bad-manifest", f"a manifest is at most {MAX_MANIFEST} bytes")
        if not lease_seconds > 0:
            raise HoldError("bad-request", "a lease is a positive number of seconds")
        try:
            manifest = parse_manifest(manifest_raw)
        except QizError as exc:
            raise HoldError("bad-manifest", str(exc)) from None
        if not 0 <= index < manifest.n:
            raise HoldError(
                "bad-request", f"index {index} is not a column of this content (n={manifest.n})"
            )
        cid: ContentId = manifest.cid
        root: bytes = manifest.root
        column_size, table_size = int(manifest.column_size()), int(manifest.table_size())
        lease = min(float(lease_seconds), float(MAX_LEASE))
        now = self.clock()
        trusted = int(owner == manifest.publisher_id.digest)
        # the publisher's copy serves every owner; anyone else's only the peer that sent it
        key = manifest.column_key(index)
        have = self._complete(key, root)
        if not have and not trusted:
            key = self.storage_key(manifest, index, owner)
            have = self._complete(key, root)
        ours = (cid.digest, index, owner)
        busy = self._uploads.get(ours)
        if busy is not None and busy.committing:
            raise HoldError(
                "too-many-offers", f"column {index} of {cid.short()} is being committed now"
            )
        # what this peer holds beyond the row this offer replaces
        previous = self.db.execute(
            "SELECT bytes FROM leases WHERE cid = ? AND idx = ? AND owner = ?", ours
        ).fetchone()
        pending = self.db.execute(
            "SELECT column_size + table_size FROM offers WHERE cid = ? AND idx = ? AND owner = ?",
            ours,
        ).fetchone()
        replaced = (previous[0] if previous else 0) + (pending[0] if pending else 0)
        charge = column_size + table_size
        peer_after = self.peer_bytes(owner) - replaced + charge
        if peer_after > self.config.per_peer_bytes:
            raise HoldError(
                "quota",
                f"peer {peer.short()} would hold {peer_after} bytes over its "
                f"{self.config.per_peer_bytes}-byte quota",
            )
        rows = self._peer_rows(owner) - (previous is not None) - (pending is not None)
        if rows + 1 > self.config.max_leases_per_peer:
            raise HoldError(
                "quota",
                f"peer {peer.short()} already has {rows} leases and offers here "
                f"(at most {self.config.max_leases_per_peer})",
            )
        if have:
            with self._transaction():
                self._store_manifest(cid, manifest_raw)
                self.db.execute(
                    "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*ours, key, root, charge, now + lease),
                )
                self.db.execute("DELETE FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours)
            self._drop_upload(ours)
            return True
        self._check_room(peer, charge, pending[0] if pending else None)
        with self._transaction():
            self._store_manifest(cid, manifest_raw)
            self.db.execute(
                "INSERT OR REPLACE INTO offers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*ours, key, root, column_size, table_size, trusted, lease, now + OFFER_TTL),
            )
        self._drop_upload(ours)  # a fresh offer starts its bytes afresh
        return False

    def _check_room(self, peer: NodeId, charge: int, replaced: int | None) -> None:
        """A new offer fits the pending-offer caps and the node's capacity (``replaced``: the
        reservation of the offer it renews, not counted twice)."""
        if replaced is None:
            offers = self._count("SELECT COUNT(*) FROM offers WHERE owner = ?", peer.digest)
            if offers >= MAX_OFFERS_PER_PEER:
                raise HoldError(
                    "too-many-offers",
                    f"peer {peer.short()} has {offers} offers pending here "
                    f"(at most {MAX_OFFERS_PER_PEER})",
                )
            total = self._count("SELECT COUNT(*) FROM offers")
            if total >= MAX_OFFERS:
                raise HoldError(
                    "too-many-offers",
                    f"this node has {total} offers pending (at most {MAX_OFFERS})",
                )
        stored = self.stored_bytes()
        reserved = self.reserved_bytes() - (replaced or 0)
        capacity = self.capacity()
        if stored + reserved + charge > capacity:
            raise HoldError(
                "full",
                f"this node holds {stored} bytes and has promised {reserved} more; "
                f"{charge} further bytes would pass its {capacity}-byte limit",
            )

    @staticmethod
    def storage_key(manifest: Manifest, index: int, owner: bytes) -> bytes:
        """Where the bytes of column ``index`` sent by ``owner`` are kept. A holder cannot
        check a share, so an upload vouches only for the peer that sent it: the publisher's is
        kept under the column key itself and offered to every owner of the content as already
        held; anyone else's (a pinning node repairing, or a peer that got the manifest) under
        a key of its own, so no peer can plant bytes that another owner is then told are held."""
        key = manifest.column_key(index)
        if owner == manifest.publisher_id.digest:
            return key
        return hashlib.sha256(UPLOADER_DOMAIN + key + owner).digest()

    def _store_manifest(self, cid: ContentId, raw: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO manifests VALUES (?, ?)", (cid.digest, raw))

    def _complete(self, key: bytes, root: bytes) -> bool:
        column = self.db.execute("SELECT 1 FROM columns WHERE key = ?", (key,)).fetchone()
        table = self.db.execute("SELECT 1 FROM tables WHERE root = ?", (root,)).fetchone()
        return column is not None and table is not None

    # ------------------------------------------------------------------ put

    def _upload(self, peer: NodeId, cid: ContentId, index: int) -> Upload:
        """The live offer of this peer for (cid, index), or ``no-offer``."""
        ours = (cid.digest, index, peer.digest)
        upload = self._uploads.get(ours)
        now = self.clock()
        if upload is None:
            row = self.db.execute(
                "SELECT key, root, column_size, table_size, trusted, lease, expires FROM offers "
                "WHERE cid = ? AND idx = ? AND owner = ?",
                ours,
            ).fetchone()
            if row is None or row[6] <= now:
                raise HoldError(
                    "no-offer", f"no live offer from this peer for column {index} of {cid.short()}"
                )
            column_part, table_part = self._part_paths(cid, index, peer.digest)
            upload = Upload(cid, index, peer.digest, *row, column_part, table_part)
            self._uploads[ours] = upload
        elif upload.expires <= now:
            raise HoldError("no-offer", f"the offer for column {index} of {cid.short()} has lapsed")
        return upload

    def write(
        self, peer: NodeId, cid: ContentId, part: int, offset: int, data: bytes
    ) -> Path | None:
        """Write one piece of column ``part`` (or of the chunk table, ``part == -1``) at
        ``offset`` into the offer's ``.part`` file, within the offered size.

        Returns the column's ``.part`` file each time another ``EARLY_FLUSH`` bytes of it
        arrived: the caller flushes it to disk in the background, so that the commit's fsync
        finds little left to write (it is the only wait of a put that is not CPU)."""
        if len(data) > MAX_PIECE:
            raise HoldError("out-of-range", f"a piece is at most {MAX_PIECE} bytes")
        if part == TABLE:
            upload = self._any_upload(peer, cid)
            size, path, ranges = upload.table_size, upload.table_part, upload.table
        else:
            upload = self._upload(peer, cid, part)
            size, path, ranges = upload.column_size, upload.column_part, upload.column
        if upload.committing:
            raise HoldError("no-offer", "this offer is being committed")
        end = offset + len(data)
        if offset < 0 or end > size:
            raise HoldError(
                "out-of-range",
                f"bytes {offset}..{end} are outside the {size}-byte "
                f"{'chunk table' if part == TABLE else 'column'}",
            )
        if not data:
            return None
        writer = upload.writer
        in_order = part != TABLE and size >= direct.DIRECT_FROM and offset == writer.next_offset
        if in_order:
            writer.write(path, data, self._bounce_buffer())
        else:  # the table, a small column, a piece out of order: plainly
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                direct.pwrite_all(fd, data, offset)
            finally:
                os.close(fd)
        written = len(data)
        if not ranges.add(offset, end):
            raise HoldError(
                "out-of-range",
                f"more than {MAX_UPLOAD_RANGES} separate pieces outstanding; send in order",
            )
        # OFFER_TTL bounds the time without a put, not the upload: a large column over a slow
        # link keeps its reservation while bytes arrive (kept in memory; collect() writes it)
        upload.expires = max(upload.expires, self.clock() + OFFER_TTL)
        if part == TABLE or (in_order and writer.direct):
            return None  # direct writes are on the disk already: the commit syncs the rest
        upload.unflushed += written
        if upload.unflushed < EARLY_FLUSH:
            return None
        upload.unflushed = 0
        return path

    def _bounce_buffer(self) -> direct.Bounce:
        """The aligned buffer every column's direct reads and writes go through (one piece and
        two blocks: a read's range is widened to whole blocks at both ends). Used only on the
        caller's thread, one call at a time (the event loop's, in a node)."""
        if self._bounce is None:
            self._bounce = direct.Bounce(MAX_PIECE + 2 * direct.ALIGN)
        return self._bounce

    def _any_upload(self, peer: NodeId, cid: ContentId) -> Upload:
        """The table of a content comes with each of its columns: a table piece goes to the
        lowest-indexed live offer this peer has for the content (one owner offers one
        column of a content to one holder; more is its own affair)."""
        live = [
            int(idx)
            for (idx,) in self.db.execute(
                "SELECT idx FROM offers WHERE cid = ? AND owner = ? ORDER BY idx",
                (cid.digest, peer.digest),
            )
            if self._live((cid.digest, int(idx), peer.digest))
        ]
        row = (live[0],) if live else None
        if row is None or row[0] is None:
            raise HoldError("no-offer", f"no live offer from this peer for {cid.short()}")
        return self._upload(peer, cid, int(row[0]))

    def _live(self, ours: tuple[bytes, int, bytes]) -> bool:
        """An offer in progress is live by its in-memory expiry (puts extend it)."""
        upload = self._uploads.get(ours)
        if upload is not None:
            return upload.expires > self.clock()
        row = self.db.execute(
            "SELECT expires FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours
        ).fetchone()
        return row is not None and row[0] > self.clock()

    # ------------------------------------------------------------------ commit

    def prepare(self, peer: NodeId, cid: ContentId, index: int) -> Checked:
        """Cheap checks before :meth:`finish`: the offer is live and every byte is in."""
        upload = self._upload(peer, cid, index)
        if upload.committing:
            raise HoldError("no-offer", "this offer is already being committed")
        upload.writer.flush(upload.column_part)  # the last partial block of direct writes
        if not upload.column.covers(upload.column_size):
            raise HoldError(
                "incomplete",
                f"column {index} of {cid.short()} is missing bytes "
                f"({len(upload.column)} ranges written of {upload.column_size} bytes)",
            )
        table_held = (
            self.db.execute("SELECT 1 FROM tables WHERE root = ?", (upload.root,)).fetchone()
            is not None
        )
        with_table = not table_held
        if with_table and not upload.table.covers(upload.table_size):
            raise HoldError("incomplete", f"the chunk table of {cid.short()} is missing bytes")
        upload.committing = True
        return Checked(upload, with_table)

    @staticmethod
    def finish(checked: Checked) -> None:
        """The slow half of a commit, safe in a worker thread (no database, no shared
        state): check the table's root, fsync both files. ``bad-table`` if the root is
        not the manifest's."""
        upload = checked.upload
        if checked.with_table:
            _touch(upload.table_part)
            with open(upload.table_part, "rb") as handle:
                table = handle.read(upload.table_size + 1)
            if len(table) != upload.table_size or len(table) % HASH_SIZE:
                raise HoldError("bad-table", "the chunk table has the wrong length")
            if table_root(table) != upload.root:
                raise HoldError(
                    "bad-table", "the chunk table's Merkle root is not the manifest's root"
                )
            _fsync(upload.table_part)
        _touch(upload.column_part)
        if os.path.getsize(upload.column_part) != upload.column_size:
            raise HoldError("incomplete", "the column file has the wrong length")
        _fsync(upload.column_part)

    def complete(self, checked: Checked) -> float:
        """Rename the checked files into place and record the lease, in one transaction;
        returns when the lease expires."""
        upload = checked.upload
        ours = (upload.cid.digest, upload.index, upload.owner)
        if upload.cancelled:
            self._end(ours)
            raise HoldError("no-offer", "the offer was released or lapsed during its commit")
        now = self.clock()
        column = self.column_path(upload.key)
        table = self.table_path(upload.root)
        have_column = (
            self.db.execute("SELECT 1 FROM columns WHERE key = ?", (upload.key,)).fetchone()
            is not None
        )
        have_table = (
            self.db.execute("SELECT 1 FROM tables WHERE root = ?", (upload.root,)).fetchone()
            is not None
        )
        if not have_table and not checked.with_table:  # collected in between: send it again
            self.abandon(checked)
            raise HoldError("incomplete", "the chunk table is needed again")
        expires = now + upload.lease
        try:
            for done, part, target in (
                (have_column, upload.column_part, column),
                (have_table, upload.table_part, table),
            ):
                if not done:
                    _move_in(part, target)
            self._record(checked, have_column, have_table, expires)
        except BaseException:  # a file renamed in without its row goes at the next start
            self.abandon(checked)
            raise
        self._end(ours)
        return expires

    def _record(
        self, checked: Checked, have_column: bool, have_table: bool, expires: float
    ) -> None:
        upload = checked.upload
        ours = (upload.cid.digest, upload.index, upload.owner)
        with self._transaction():
            if not have_column:
                self.db.execute(
                    "INSERT INTO columns VALUES (?, ?, ?)",
                    (upload.key, upload.column_size, upload.trusted),
                )
            if not have_table:
                self.db.execute(
                    "INSERT INTO tables VALUES (?, ?)", (upload.root, upload.table_size)
                )
            self.db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*ours, upload.key, upload.root, upload.column_size + upload.table_size, expires),
            )
            self.db.execute("DELETE FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours)

    def abandon(self, checked: Checked) -> None:
        """A commit that failed after :meth:`prepare`: the offer stays, its bytes may be sent
        again (a bad table must be rewritten, so its ranges are forgotten)."""
        upload = checked.upload
        upload.committing = False
        if upload.cancelled:
            self._end((upload.cid.digest, upload.index, upload.owner))
            return
        upload.table = Ranges(MAX_UPLOAD_RANGES)
        upload.table_part.unlink(missing_ok=True)

    def commit(self, peer: NodeId, cid: ContentId, index: int) -> float:
        """Everything in one call, for synchronous callers; or, when the column is held
        already (the offer answered ``have``), the lease's expiry."""
        held = self.held_lease(peer, cid, index)
        if held is not None:
            return held
        checked = self.prepare(peer, cid, index)
        try:
            self.finish(checked)
        except BaseException:
            self.abandon(checked)
            raise
        return self.complete(checked)

    def held_lease(self, peer: NodeId, cid: ContentId, index: int) -> float | None:
        """The expiry of this peer's live lease on (cid, index) when it has no pending
        offer for it (the offer answered ``have``): a commit then just confirms it."""
        now = self.clock()
        ours = (cid.digest, index, peer.digest)
        if self.db.execute(
            "SELECT 1 FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours
        ).fetchone():
            return None
        row = self.db.execute(
            "SELECT expires FROM leases WHERE cid = ? AND idx = ? AND owner = ? AND expires > ?",
            (*ours, now),
        ).fetchone()
        return None if row is None else float(row[0])

    def _drop_upload(self, ours: tuple[bytes, int, bytes]) -> None:
        """Forget an offer's bytes; one being committed is only marked, and its commit
        cleans up when it ends (its files are in use meanwhile)."""
        upload = self._uploads.get(ours)
        if upload is not None and upload.committing:
            upload.cancelled = True
            return
        self._end(ours)

    def _end(self, ours: tuple[bytes, int, bytes]) -> None:
        self._uploads.pop(ours, None)
        for path in self._part_paths(ContentId(ours[0]), ours[1], ours[2]):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ leases

    def renew(self, peer: NodeId, cid: ContentId, index: int, lease_seconds: float) -> float:
        """Extend this peer's own live lease; returns the new expiry."""
        if not lease_seconds > 0:
            raise HoldError("bad-request", "a lease is a positive number of seconds")
        now = self.clock()
        expires = now + min(float(lease_seconds), float(MAX_LEASE))
        held = self.db.execute(
            "SELECT c.key, c.size FROM leases l JOIN columns c ON c.key = l.key "
            "WHERE l.cid = ? AND l.idx = ? AND l.owner = ?",
            (cid.digest, index, peer.digest),
        ).fetchone()
        if held is not None and _size(self.column_path(held[0])) != int(held[1]):
            # a lease on a column that is no longer whole must not be renewed as if it were:
            # the owner then sees the loss and rebuilds the column elsewhere
            raise HoldError("not-found", f"column {index} of {cid.short()} is gone here")
        with self._transaction():
            changed = self.db.execute(
                "UPDATE leases SET expires = ? WHERE cid = ? AND idx = ? AND owner = ? "
                "AND expires > ?",
                (expires, cid.digest, index, peer.digest, now),
            ).rowcount
        if not changed:
            raise HoldError(
                "no-lease", f"this peer holds no live lease on column {index} of {cid.short()}"
            )
        return expires

    def release(self, peer: NodeId, cid: ContentId, index: int) -> None:
        """Drop this peer's lease (or pending offer) on (cid, index); the column goes at the
        next collection if nobody else leases it."""
        ours = (cid.digest, index, peer.digest)
        with self._transaction():
            leases = self.db.execute(
                "DELETE FROM leases WHERE cid = ? AND idx = ? AND owner = ?", ours
            ).rowcount
            offers = self.db.execute(
                "DELETE FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours
            ).rowcount
        self._drop_upload(ours)
        if not leases and not offers:
            raise HoldError(
                "no-lease", f"this peer holds no lease on column {index} of {cid.short()}"
            )

    # ------------------------------------------------------------------ serving

    def have(self, cid: ContentId) -> list[int]:
        """Indices of the complete columns of ``cid`` held under a live lease."""
        rows = self.db.execute(
            "SELECT DISTINCT l.idx FROM leases l JOIN columns c ON c.key = l.key "
            "JOIN tables t ON t.root = l.root WHERE l.cid = ? AND l.expires > ? ORDER BY l.idx",
            (cid.digest, self.clock()),
        )
        return [int(idx) for (idx,) in rows]

    def manifest(self, cid: ContentId) -> bytes | None:
        """The manifest of content this node holds a live column of."""
        if not self.have(cid):
            return None
        row = self.db.execute("SELECT raw FROM manifests WHERE cid = ?", (cid.digest,)).fetchone()
        return None if row is None else bytes(row[0])

    def read(self, cid: ContentId, part: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a held column (or of the table, ``part == -1``)."""
        if not 0 <= length <= MAX_PIECE:
            raise HoldError("out-of-range", f"a read is 0 to {MAX_PIECE} bytes")
        now = self.clock()
        if part == TABLE:
            row = self.db.execute(
                "SELECT t.root, t.size FROM leases l JOIN tables t ON t.root = l.root "
                "JOIN columns c ON c.key = l.key WHERE l.cid = ? AND l.expires > ? LIMIT 1",
                (cid.digest, now),
            ).fetchone()
            found = None if row is None else (self.table_path(row[0]), int(row[1]))
        else:
            found = self._column_for_read(cid, part, now)
        if found is None:
            what = "chunk table" if part == TABLE else f"column {part}"
            raise HoldError("not-found", f"this node holds no {what} of {cid.short()}")
        path, size = found
        if offset < 0 or offset + length > size:
            raise HoldError(
                "out-of-range", f"bytes {offset}..{offset + length} are outside {size} bytes"
            )
        try:
            if part != TABLE and size >= direct.DIRECT_FROM:  # written around the cache
                data = direct.read_direct(path, offset, length, self._bounce_buffer())
            else:
                fd = os.open(path, os.O_RDONLY)
                try:
                    data = os.pread(fd, length, offset)
                finally:
                    os.close(fd)
        except FileNotFoundError:  # lost after start-up (disk fault, a hand clean-up)
            raise HoldError("not-found", f"the file of {cid.short()} is gone") from None
        if len(data) != length:  # the file shrank under us: never serve short
            raise HoldError("not-found", f"the file of {cid.short()} is damaged")
        return data

    def _column_for_read(self, cid: ContentId, part: int, now: float) -> tuple[Path, int] | None:
        """(file, size) of a live column of ``cid``, the trusted copy first. A getter reads a
        column a piece at a time, so the answer is kept in ``_reads`` until any index write
        (each goes through :meth:`_transaction`) or the lease's expiry."""
        key = (cid.digest, part)
        known = self._reads.get(key)
        if known is not None and known[2] > now:
            return known[0], known[1]
        row = self.db.execute(
            "SELECT c.key, c.size, l.expires FROM leases l JOIN columns c ON c.key = l.key "
            "JOIN tables t ON t.root = l.root "
            "WHERE l.cid = ? AND l.idx = ? AND l.expires > ? ORDER BY c.trusted DESC LIMIT 1",
            (cid.digest, part, now),
        ).fetchone()
        if row is None:
            return None
        if len(self._reads) >= MAX_READ_CACHE:
            self._reads.clear()
        path = self.column_path(row[0])
        self._reads[key] = (path, int(row[1]), float(row[2]))
        return path, int(row[1])

    # ------------------------------------------------------------------ collection

    def collect(self, now: float | None = None) -> dict[str, int]:
        """Drop lapsed offers and leases; delete columns and tables no live lease needs.
        Rows go first, in one transaction, then the files (a crash in between leaves files
        without rows, which :meth:`recover` deletes)."""
        now = self.clock() if now is None else now
        busy = [k for k, u in self._uploads.items() if u.committing]
        rows = [
            (bytes(c), int(i), bytes(o))
            for c, i, o in self.db.execute(
                "SELECT cid, idx, owner FROM offers WHERE expires <= ?", (now,)
            ).fetchall()
        ]
        # offers whose puts kept them alive: their expiry is written, not the offer dropped
        extended = [
            (self._uploads[ours].expires, *ours)
            for ours in rows
            if ours in self._uploads and self._uploads[ours].expires > now
        ]
        kept = {tuple(row[1:]) for row in extended}
        lapsed = [ours for ours in rows if ours not in busy and ours not in kept]
        # keys and roots a commit in flight may still need
        keep_keys = {self._uploads[k].key for k in busy}
        keep_roots = {self._uploads[k].root for k in busy}
        with self._transaction():
            self.db.executemany(
                "UPDATE offers SET expires = ? WHERE cid = ? AND idx = ? AND owner = ?", extended
            )
            for ours in lapsed:
                self.db.execute("DELETE FROM offers WHERE cid = ? AND idx = ? AND owner = ?", ours)
            leases = self.db.execute("DELETE FROM leases WHERE expires <= ?", (now,)).rowcount
            columns = [
                (bytes(k), int(s))
                for k, s in self.db.execute(
                    "SELECT key, size FROM columns WHERE key NOT IN (SELECT key FROM leases)"
                ).fetchall()
                if bytes(k) not in keep_keys
            ]
            tables = [
                (bytes(r), int(s))
                for r, s in self.db.execute(
                    "SELECT root, size FROM tables WHERE root NOT IN (SELECT root FROM leases)"
                ).fetchall()
                if bytes(r) not in keep_roots
            ]
            for key, _ in columns:
                self.db.execute("DELETE FROM columns WHERE key = ?", (key,))
            for root, _ in tables:
                self.db.execute("DELETE FROM tables WHERE root = ?", (root,))
            self.db.execute(
                "DELETE FROM manifests WHERE cid NOT IN (SELECT cid FROM leases) "
                "AND cid NOT IN (SELECT cid FROM offers)"
            )
        for ours in lapsed:
            self._drop_upload(ours)
        for key, _ in columns:
            self.column_path(key).unlink(missing_ok=True)
        for root, _ in tables:
            self.table_path(root).unlink(missing_ok=True)
        return {
            "freed_bytes": sum(s for _, s in columns) + sum(s for _, s in tables),
            "columns": len(columns),
            "tables": len(tables),
            "leases": leases,
            "offers": len(lapsed),
        }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _touch(path: Path) -> None:
    """A zero-byte column or table never received a put: make its file exist."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


def _move_in(part: Path, target: Path) -> None:
    """Rename a checked file into place durably (its new directory too, the first time)."""
    fresh = not target.parent.exists()
    target.parent.mkdir(mode=0o700, exist_ok=True)
    if fresh:
        fsync_directory(target.parent.parent)
    os.replace(part, target)
    fsync_directory(target.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
