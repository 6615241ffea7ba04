"""What the job core asks its driver to do: small, immutable action records.

:class:`~qiz.compute.core.JobCore` returns these instead of doing I/O; the asyncio driver
(:mod:`qiz.compute.coordinator`) performs them over RPC and the simulator (:mod:`qiz.sim.jobs`)
by scheduling events. They are the whole vocabulary between the two, kept apart from the core's
rules so that a reader of either side sees it in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qiz.events import EventKind


@dataclass(frozen=True, slots=True)
class Offer:
    """Send ``job.offer {spec, task, seed}`` to ``worker``; answer with ``offer_*``."""

    job: bytes
    task: int
    worker: bytes
    seed: int | None
    spec: bytes  # the signed spec, as it travels


@dataclass(frozen=True, slots=True)
class Fetch:
    """Send ``job.fetch {job, task}`` to ``worker``; answer with ``fetched``/``fetch_failed``."""

    job: bytes
    task: int
    worker: bytes


@dataclass(frozen=True, slots=True)
class CancelAt:
    """Send ``job.cancel {job[, task]}`` to ``worker``; nothing to answer."""

    job: bytes
    worker: bytes
    task: int | None


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop ``worker`` from the directory until its capacity is looked up again (it was lost)."""

    worker: bytes


@dataclass(frozen=True, slots=True)
class Emit:
    """An event for the node's :class:`~qiz.events.EventBus`."""

    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobFinished:
    """Every task was decided and the attestation is stored."""

    job: bytes


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job ended without a result (deadline, no agreement, nothing could run it)."""

    job: bytes
    reason: str


Action = Offer | Fetch | CancelAt | Forget | Emit | JobFinished | JobFailed
