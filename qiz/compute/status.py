"""What a submitter sees of a job: typed statuses built from stored rows and live progress.

The CLI, the HTTP API and the dashboard all read one JSON shape; :meth:`JobStatus.as_dict`
is the single place that shape is written, so a renamed field cannot drift between faces. Its
names follow docs/json/README.md (``job_id``, ``*_at`` moments, ``*_s`` durations); the
schema is docs/json/job-status.schema.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiz import wire
from qiz.compute import spec as specs
from qiz.compute.jobdb import ACTIVE, CANCELLED, DONE, FAILED, JobRow, LogEntry, ReplicaRow
from qiz.crypto.ids import NodeId


def task_count(body: Mapping[str, Any]) -> int:
    """How many tasks a (stored, already checked) spec body splits into."""
    if body["kind"] != "sweep":
        return 1
    params = body["params"]
    points = math.prod(len(values) for values in params["axes"].values())
    return math.ceil(points / params.get("shard", specs.DEFAULT_SHARD))


FINAL = (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class ReplicaStatus:
    task: int
    worker: NodeId
    state: str
    error: str | None
    progress: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "worker": str(self.worker),
            "state": self.state,
            "error": self.error,
            "progress": self.progress,
        }


@dataclass(frozen=True)
class JobStatus:
    job: bytes
    state: str
    error: str | None
    kind: str
    over: str  # the kind a sweep runs at each point; the kind itself otherwise
    created: float
    updated: float
    deadline: float  # unix seconds
    replicas_wanted: int
    quorum: int
    seed: int | None
    tasks: int
    decided: int
    progress: float  # 0..1 over the tasks
    replicas: tuple[ReplicaStatus, ...]
    attested: bool
    now: float = 0.0  # when the status was read: a running job's duration so far

    @property
    def finished(self) -> float | None:
        """When the job reached its final state (its row's last update), or None."""
        return self.updated if self.state in FINAL else None

    @property
    def job_hex(self) -> str:
        return self.job.hex()

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``qiz job status --json``, ``/api/jobs/<id>`` and the dashboard."""
        finished = self.finished
        return {
            "job_id": self.job.hex(),
            "state": self.state,
            "error": self.error,
            "kind": self.kind,
            "over": self.over,
            "submitted_at": self.created,
            "updated_at": self.updated,
            "finished_at": finished,
            "duration_s": round(max(0.0, (finished or self.now) - self.created), 3),
            "deadline_at": self.deadline,
            "replicas_wanted": self.replicas_wanted,
            "quorum": self.quorum,
            "seed": self.seed,
            "tasks": self.tasks,
            "decided": self.decided,
            "progress": self.progress,
            "replicas": [r.as_dict() for r in self.replicas],
            "attested": self.attested,
        }


@dataclass(frozen=True)
class Live:
    """What only the running coordinator knows of a job: decided tasks and pushed progress."""

    decided: frozenset[int]
    progress: Mapping[tuple[int, bytes], float]


def job_status(
    row: JobRow, replicas: Sequence[ReplicaRow], live: Live | None, now: float | None = None
) -> JobStatus:
    """The status of one job from its stored row, its replica rows and, while it runs, what
    the coordinator holds in memory (``now``: the moment a running job's duration runs to)."""
    body = wire.decode(wire.decode(row.spec, max_size=1 << 24)["body"], max_size=1 << 24)
    tasks = task_count(body)
    finished = row.state == DONE
    decided = len(live.decided) if live else (tasks if finished else 0)

    def done_part(r: ReplicaRow) -> float:
        if r.state == DONE:
            return 1.0
        return live.progress.get((r.task, r.worker), 0.0) if live else 0.0

    progress = []
    for t in range(tasks):
        if (live and t in live.decided) or finished:
            progress.append(1.0)
            continue
        values = [done_part(r) for r in replicas if r.task == t and r.state in (*ACTIVE, DONE)]
        progress.append(max(values, default=0.0))
    return JobStatus(
        job=row.job,
        state=row.state,
        error=row.error,
        kind=body["kind"],
        over=body["params"].get("over") if body["kind"] == "sweep" else body["kind"],
        created=row.created,
        updated=row.updated,
        deadline=row.created + body["deadline"],
        replicas_wanted=body["replicas"],
        quorum=body["quorum"],
        seed=body["seed"],
        tasks=tasks,
        decided=decided,
        progress=round(sum(progress) / max(1, len(progress)), 4),
        replicas=tuple(
            ReplicaStatus(r.task, NodeId(r.worker), r.state, r.error, done_part(r))
            for r in replicas
        ),
        attested=row.attestation is not None,
        now=row.updated if now is None else now,
    )


def log_entry(entry: LogEntry) -> dict[str, Any]:
    """One timeline entry in the JSON shape of ``qiz job logs --json`` and
    ``/api/jobs/{job}/logs`` (docs/json/job-logs.schema.json)."""
    return {
        "at": entry.at,
        "event": entry.event,
        "task": entry.task,
        "worker": str(NodeId(entry.worker)) if entry.worker is not None else None,
        "detail": entry.detail,
    }
