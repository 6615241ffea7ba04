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
from qiz.compute import circuits, gradient_kind, kernel_kind
from qiz.compute import spec as specs
from qiz.compute.jobdb import ACTIVE, CANCELLED, DONE, FAILED, JobRow, LogEntry, ReplicaRow
from qiz.crypto.ids import NodeId


def task_count(body: Mapping[str, Any]) -> int:
    """How many tasks a (stored, already checked) spec body splits into."""
    if body["kind"] == circuits.KIND:
        return circuits.task_count(body["params"])
    if body["kind"] == kernel_kind.KIND:
        return kernel_kind.task_count(body["params"])
    if body["kind"] == gradient_kind.KIND:
        return gradient_kind.task_count(body["params"])
    if body["kind"] != "sweep":
        return 1
    params = body["params"]
    points = math.prod(len(values) for values in params["axes"].values())
    return math.ceil(points / params.get("shard", specs.DEFAULT_SHARD))


FINAL = (DONE, FAILED, CANCELLED)
RUNNING_CAP = 0.99  # the most a replica still running, or a task still undecided, shows
CUT_TEXT = 2000  # characters of a spec's string parameter shown in a status (a QASM program)


def _clipped(value: Any) -> Any:
    """JSON data with every string longer than :data:`CUT_TEXT` cut, its length said."""
    if isinstance(value, str) and len(value) > CUT_TEXT:
        return f"{value[:CUT_TEXT]}\u2026  ({len(value):,} characters)"
    if isinstance(value, Mapping):
        return {str(k): _clipped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clipped(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def spec_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a job's signed spec asked for (``spec`` in the status of one job): the dashboard
    shows it for jobs that never got an attestation (cancelled, failed, running)."""
    return {
        "kind": body["kind"],
        "params": _clipped(body["params"]),
        "replicas": body["replicas"],
        "quorum": body["quorum"],
        "seed": body["seed"],
        "deadline_s": body["deadline"],
        "submitter": str(NodeId.from_public_key(body["submitter"])),
    }


def spec_body(row: JobRow) -> dict[str, Any]:
    """The body of a stored job's signed spec (already checked when it was submitted)."""
    return wire.decode(wire.decode(row.spec, max_size=1 << 24)["body"], max_size=1 << 24)


@dataclass(frozen=True)
class ReplicaStatus:
    task: int
    worker: NodeId
    state: str
    reason: str | None  # why it failed, was cancelled or lost; None otherwise
    progress: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "worker": str(self.worker),
            "state": self.state,
            "reason": self.reason,
            "progress": self.progress,
        }


@dataclass(frozen=True)
class JobStatus:
    job: bytes
    state: str
    reason: str | None  # why it failed or was cancelled; None otherwise
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
    spec: Mapping[str, Any] | None = None  # spec_summary(), in the status of one job only

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
        answer = {
            "job_id": self.job.hex(),
            "state": self.state,
            "reason": self.reason,
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
        if self.spec is not None:
            answer["spec"] = dict(self.spec)
        return answer


@dataclass(frozen=True)
class Live:
    """What only the running coordinator knows of a job: decided tasks and pushed progress."""

    decided: frozenset[int]
    progress: Mapping[tuple[int, bytes], float]


def job_status(
    row: JobRow,
    replicas: Sequence[ReplicaRow],
    live: Live | None,
    now: float | None = None,
    *,
    body: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> JobStatus:
    """The status of one job from its stored row, its replica rows and, while it runs, what
    the coordinator holds in memory (``now``: the moment a running job's duration runs to;
    ``body``: the spec's body when the caller has it decoded already; ``spec``: its
    :func:`spec_summary`, for the status of one job)."""
    body = spec_body(row) if body is None else body
    tasks = task_count(body)
    finished = row.state == DONE
    decided = len(live.decided) if live else (tasks if finished else 0)
    quorum = max(1, int(body["quorum"]))

    def done_part(r: ReplicaRow) -> float:
        if r.state == DONE:
            return 1.0
        pushed = live.progress.get((r.task, r.worker), 0.0) if live else 0.0
        return min(RUNNING_CAP, pushed)

    progress = []
    for t in range(tasks):
        if (live and t in live.decided) or finished:
            progress.append(1.0)
            continue
        values = sorted(
            (done_part(r) for r in replicas if r.task == t and r.state in (*ACTIVE, DONE)),
            reverse=True,
        )
        # the quorum waits for its q-th replica; an undecided task is not done
        reached = values[quorum - 1] if len(values) >= quorum else 0.0
        progress.append(min(RUNNING_CAP, reached))
    return JobStatus(
        job=row.job,
        state=row.state,
        reason=row.error,
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
        progress=_overall(progress),
        replicas=tuple(
            ReplicaStatus(r.task, NodeId(r.worker), r.state, r.error, done_part(r))
            for r in replicas
        ),
        attested=row.attestation is not None,
        now=row.updated if now is None else now,
        spec=spec,
    )


def _overall(tasks: Sequence[float]) -> float:
    """The job's progress over its tasks: 1.0 only when every task is decided (rounding the
    mean of 999 decided tasks and one at 0.99 would say 1.0 otherwise)."""
    if all(p >= 1.0 for p in tasks):
        return 1.0
    return min(RUNNING_CAP, round(sum(tasks) / max(1, len(tasks)), 4))


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
