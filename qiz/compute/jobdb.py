"""Job state in SQLite (WAL): what a coordinator submitted and what a worker holds.

Nothing a node learned about a job lives only in memory: a coordinator that restarts picks up
its running jobs and asks the workers for results that waited for it; a worker that restarts
runs again what it had accepted and still holds results not yet delivered.

Tables: ``jobs``, ``replicas`` and ``job_log`` (the coordinator's), ``work`` and ``runs`` (the
worker's). Rows come back
as typed records (:class:`JobRow`, :class:`ReplicaRow`, :class:`WorkRow`), never as tuples
read by position. Peer scores share the database but their table belongs to
:mod:`qiz.trust.scores`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiz import wire

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job        BLOB PRIMARY KEY,
    spec       BLOB NOT NULL,
    state      TEXT NOT NULL,
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    error      TEXT,
    attestation BLOB
);
CREATE TABLE IF NOT EXISTS replicas (
    job      BLOB NOT NULL,
    task     INTEGER NOT NULL,
    worker   BLOB NOT NULL,
    seed     INTEGER,
    state    TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    result   BLOB,
    digest   BLOB,
    sig      BLOB,
    key      BLOB,
    engine   TEXT,
    error    TEXT,
    assigned REAL NOT NULL,
    updated  REAL NOT NULL,
    PRIMARY KEY (job, task, worker)
);
CREATE TABLE IF NOT EXISTS work (
    job         BLOB NOT NULL,
    task        INTEGER NOT NULL,
    coordinator BLOB NOT NULL,
    spec        BLOB NOT NULL,
    seed        INTEGER,
    state       TEXT NOT NULL,
    result      BLOB,
    digest      BLOB,
    sig         BLOB,
    error       TEXT,
    delivered   INTEGER NOT NULL DEFAULT 0,
    updated     REAL NOT NULL,
    PRIMARY KEY (job, task, coordinator)
);
CREATE TABLE IF NOT EXISTS job_log (
    job    BLOB NOT NULL,
    at     REAL NOT NULL,
    event  TEXT NOT NULL,
    task   INTEGER,
    worker BLOB,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS job_log_by_job ON job_log (job);
CREATE TABLE IF NOT EXISTS runs (
    job         BLOB NOT NULL,
    task        INTEGER NOT NULL,
    coordinator BLOB NOT NULL,
    started     REAL NOT NULL,
    finished    REAL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job, task, coordinator)
);
"""

# a job's timeline (``qiz job logs``): entries kept per job; past it the oldest go, except the
# first ("submitted"), so a job that retries for hours cannot grow the database without end
MAX_LOG_ENTRIES_PER_JOB = 500
MAX_LOG_DETAIL = 300  # characters of one entry's detail (a peer's error text is quoted in it)
# tasks this node ran as a worker (``qiz job list --worker``): the newest kept, the oldest go
MAX_WORKER_RUNS = 1000

# replica and work states
QUEUED, RUNNING, DONE, FAILED, LOST, CANCELLED = (
    "queued",
    "running",
    "done",
    "failed",
    "lost",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)


def open_db(path: Path | str | None) -> sqlite3.Connection:
    """One connection per node (the event loop thread); ``None`` keeps it in memory."""
    target = str(path) if path is not None else ":memory:"
    db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    if target != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


def pack(value: Any) -> bytes | None:
    return None if value is None else wire.encode(value)


def unpack(raw: bytes | None) -> Any:
    return None if raw is None else wire.decode(raw, max_size=1 << 30, what="stored result")


@dataclass(frozen=True)
class JobRow:
    """One submitted job as stored: its signed spec, where it stands, and once done its
    attestation file."""

    job: bytes
    spec: bytes
    state: str
    created: float
    updated: float
    error: str | None
    attestation: bytes | None


JOB_COLUMNS = "job, spec, state, created, updated, error, attestation"


@dataclass
class ReplicaRow:
    job: bytes
    task: int
    worker: bytes
    seed: int | None
    state: str
    progress: float
    result: Any
    digest: bytes | None
    sig: bytes | None
    key: bytes | None
    engine: str | None
    error: str | None
    assigned: float
    updated: float

    @classmethod
    def new(cls, job: bytes, task: int, worker: bytes, seed: int | None, now: float) -> ReplicaRow:
        """A replica just placed (or collected): queued, nothing known of it yet."""
        return cls(
            job, task, worker, seed, QUEUED, 0.0, None, None, None, None, None, None, now, now
        )

    @classmethod
    def of(cls, row: tuple) -> ReplicaRow:
        """From a ``REPLICA_COLUMNS`` select; the stored result is decoded."""
        row_ = cls(*row)
        row_.result = unpack(row_.result)
        return row_


REPLICA_COLUMNS = (
    "job, task, worker, seed, state, progress, result, digest, sig, key, engine, error, "
    "assigned, updated"
)


@dataclass(frozen=True)
class LogEntry:
    """One moment of a job's timeline, as the coordinator decided it (docs/jobs.md)."""

    at: float
    event: str
    task: int | None
    worker: bytes | None
    detail: str


class CoordinatorTables:
    """The ``jobs``, ``replicas`` and ``job_log`` tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def job(self, job: bytes) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job=?",  # noqa: S608 - our names
            (job,),
        ).fetchone()
        return JobRow(*row) if row else None

    def jobs(self, states: tuple[str, ...] | None = None) -> list[JobRow]:
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY created"  # noqa: S608 - our names
        ).fetchall()
        jobs = [JobRow(*r) for r in rows]
        return [j for j in jobs if states is None or j.state in states]

    def count_by_state(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
        return {state: count for state, count in rows}

    def find(self, prefix: str) -> list[bytes]:
        """Job ids whose hex form starts with ``prefix``."""
        rows = self.db.execute("SELECT job FROM jobs").fetchall()
        return [r[0] for r in rows if r[0].hex().startswith(prefix.lower())]

    def add_job(self, job: bytes, spec: bytes, now: float) -> None:
        self.db.execute(
            "INSERT INTO jobs (job, spec, state, created, updated) VALUES (?, ?, ?, ?, ?)",
            (job, spec, RUNNING, now, now),
        )

    def set_job(
        self,
        job: bytes,
        state: str,
        now: float,
        *,
        error: str | None = None,
        attestation: bytes | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE jobs SET state=?, updated=?, error=?, attestation=? WHERE job=?",
            (state, now, error, attestation, job),
        )

    def restart_job(self, job: bytes, now: float) -> None:
        """A failed or cancelled job submitted again: a fresh start, deadline included."""
        self.db.execute("DELETE FROM replicas WHERE job=?", (job,))
        self.db.execute("UPDATE jobs SET created=? WHERE job=?", (now, job))
        self.set_job(job, RUNNING, now)

    def add_log(
        self,
        job: bytes,
        at: float,
        event: str,
        *,
        task: int | None = None,
        worker: bytes | None = None,
        detail: str = "",
    ) -> None:
        """One entry of a job's timeline; past ``MAX_LOG_ENTRIES_PER_JOB`` the oldest entries
        after the first are dropped."""
        self.db.execute(
            "INSERT INTO job_log (job, at, event, task, worker, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (job, at, event, task, worker, detail[:MAX_LOG_DETAIL]),
        )
        (count,) = self.db.execute("SELECT COUNT(*) FROM job_log WHERE job=?", (job,)).fetchone()
        if count > MAX_LOG_ENTRIES_PER_JOB:
            self.db.execute(
                "DELETE FROM job_log WHERE rowid IN (SELECT rowid FROM job_log WHERE job=? "
                "ORDER BY rowid LIMIT ? OFFSET 1)",
                (job, count - MAX_LOG_ENTRIES_PER_JOB),
            )

    def log(self, job: bytes) -> list[LogEntry]:
        """A job's timeline, oldest first."""
        rows = self.db.execute(
            "SELECT at, event, task, worker, detail FROM job_log WHERE job=? ORDER BY rowid",
            (job,),
        )
        return [LogEntry(*row) for row in rows]

    def delete_replica(self, job: bytes, task: int, worker: bytes) -> None:
        self.db.execute(
            "DELETE FROM replicas WHERE job=? AND task=? AND worker=?", (job, task, worker)
        )

    def replicas(self, job: bytes, task: int | None = None) -> list[ReplicaRow]:
        query = f"SELECT {REPLICA_COLUMNS} FROM replicas WHERE job=?"  # noqa: S608 - our names
        args: tuple = (job,)
        if task is not None:
            query += " AND task=?"
            args = (job, task)
        return [ReplicaRow.of(r) for r in self.db.execute(query + " ORDER BY assigned", args)]

    def add_replica(
        self, job: bytes, task: int, worker: bytes, seed: int | None, now: float
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO replicas (job, task, worker, seed, state, assigned, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job, task, worker, seed, QUEUED, now, now),
        )

    def update_replica(
        self, job: bytes, task: int, worker: bytes, now: float, **fields: Any
    ) -> None:
        if "result" in fields:
            fields["result"] = pack(fields["result"])
        columns = ", ".join(f"{name}=?" for name in fields)
        self.db.execute(
            f"UPDATE replicas SET {columns}, updated=? WHERE job=? AND task=? AND worker=?",  # noqa: S608 - names are ours
            (*fields.values(), now, job, task, worker),
        )


@dataclass
class WorkRow:
    job: bytes
    task: int
    coordinator: bytes
    spec: bytes
    seed: int | None
    state: str
    result: Any
    digest: bytes | None
    sig: bytes | None
    error: str | None
    delivered: bool
    updated: float


WORK_COLUMNS = (
    "job, task, coordinator, spec, seed, state, result, digest, sig, error, delivered, updated"
)


class WorkerTables:
    """The ``work`` table: tasks this node accepted, their results until delivered."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, job: bytes, task: int, coordinator: bytes) -> WorkRow | None:
        row = self.db.execute(
            f"SELECT {WORK_COLUMNS} FROM work WHERE job=? AND task=? AND coordinator=?",  # noqa: S608
            (job, task, coordinator),
        ).fetchone()
        return self._row(row) if row else None

    def _row(self, row: tuple) -> WorkRow:
        """From a ``WORK_COLUMNS`` select; the stored result is decoded."""
        work = WorkRow(*row)
        work.result = unpack(work.result)
        work.delivered = bool(work.delivered)
        return work

    def all(self, states: tuple[str, ...] | None = None) -> list[WorkRow]:
        rows = [self._row(r) for r in self.db.execute(f"SELECT {WORK_COLUMNS} FROM work")]  # noqa: S608
        return [r for r in rows if states is None or r.state in states]

    def add(
        self,
        job: bytes,
        task: int,
        coordinator: bytes,
        spec: bytes,
        *,
        seed: int | None,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT INTO work (job, task, coordinator, spec, seed, state, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job, task, coordinator, spec, seed, QUEUED, now),
        )

    def update(self, job: bytes, task: int, coordinator: bytes, now: float, **fields: Any) -> None:
        if "result" in fields:
            fields["result"] = pack(fields["result"])
        columns = ", ".join(f"{name}=?" for name in fields)
        self.db.execute(
            f"UPDATE work SET {columns}, updated=? WHERE job=? AND task=? AND coordinator=?",  # noqa: S608
            (*fields.values(), now, job, task, coordinator),
        )

    def delete(self, job: bytes, task: int, coordinator: bytes) -> None:
        self.db.execute(
            "DELETE FROM work WHERE job=? AND task=? AND coordinator=?", (job, task, coordinator)
        )

    def waiting(self) -> list[tuple[bytes, int, bytes, int]]:
        """Finished work not yet delivered, oldest first: (job, task, coordinator, bytes held),
        the bytes being the stored spec and result (what a waiting row costs the disk)."""
        rows = self.db.execute(
            "SELECT job, task, coordinator, length(spec) + coalesce(length(result), 0) "
            "FROM work WHERE delivered = 0 AND state IN (?, ?) ORDER BY updated, rowid",
            (DONE, FAILED),
        )
        return [(job, task, coordinator, size) for job, task, coordinator, size in rows]

    def expire_waiting(self, before: float) -> int:
        """Forget finished work still not delivered, last touched before ``before``."""
        cursor = self.db.execute(
            "DELETE FROM work WHERE updated < ? AND delivered = 0 AND state IN (?, ?)",
            (before, DONE, FAILED),
        )
        return cursor.rowcount

    def expire(self, before: float) -> int:
        """Forget finished work last touched before ``before`` (delivered or not)."""
        cursor = self.db.execute(
            "DELETE FROM work WHERE updated < ? AND state NOT IN (?, ?)", (before, QUEUED, RUNNING)
        )
        return cursor.rowcount


@dataclass(frozen=True)
class RunRow:
    """One task this node ran as a worker, kept after its result is delivered and forgotten."""

    job: bytes
    task: int
    coordinator: bytes
    started: float
    finished: float | None
    outcome: str  # running, done, failed, cancelled
    error: str | None


class RunTables:
    """The ``runs`` table: what this node ran for others (``qiz job list --worker``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def started(self, job: bytes, task: int, coordinator: bytes, now: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO runs (job, task, coordinator, started, outcome) "
            "VALUES (?, ?, ?, ?, ?)",
            (job, task, coordinator, now, RUNNING),
        )
        (count,) = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()
        if count > MAX_WORKER_RUNS:
            self.db.execute(
                "DELETE FROM runs WHERE rowid IN "
                "(SELECT rowid FROM runs ORDER BY started, rowid LIMIT ?)",
                (count - MAX_WORKER_RUNS,),
            )

    def finished(
        self,
        job: bytes,
        task: int,
        coordinator: bytes,
        now: float,
        *,
        outcome: str,
        error: str | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE runs SET finished=?, outcome=?, error=? "
            "WHERE job=? AND task=? AND coordinator=?",
            (now, outcome, error, job, task, coordinator),
        )

    def all(self) -> list[RunRow]:
        """Every run remembered, oldest first."""
        rows = self.db.execute(
            "SELECT job, task, coordinator, started, finished, outcome, error FROM runs "
            "ORDER BY started, rowid"
        )
        return [RunRow(*row) for row in rows]
