"""The fields of ``job.*`` RPC bodies, checked before any handler uses them.

Why: a body comes from any peer, and its fields went straight into SQLite (a ``job.fetch``
task of 2^63 overflowed the INTEGER column, a list was no SQL parameter at all: each answered
``internal`` with a logged traceback, issue 13). Every field is checked here for its type,
range and size, and a bad one is the ``bad-request`` error naming the method and the field,
before the handler reads its tables or starts any work.
"""

from __future__ import annotations

import math
from typing import Any

from qiz.compute.spec import INT_MAX
from qiz.crypto.ids import DIGEST_SIZE
from qiz.qmp.rpc import RpcError

# a task index or a seed is stored in a signed 64-bit SQLite INTEGER: 0 .. 2^63 - 1
MAX_INDEX = INT_MAX
MAX_SEED = INT_MAX
# a job id is the SHA3-256 digest of its signed spec
JOB_ID_BYTES = DIGEST_SIZE


def bad(method: str, what: str) -> RpcError:
    return RpcError("bad-request", f"{method}: {what}")


def fields(body: Any, method: str, needs: str) -> dict[Any, Any]:
    """The body as a map, or ``bad-request`` saying which fields ``method`` needs."""
    if not isinstance(body, dict):
        raise bad(method, f"the body must be a map {{{needs}}}")
    return body


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def job_id(body: dict[Any, Any], method: str, *, exact: bool = True) -> bytes:
    """``body["job"]``: bytes, of a job id's length when ``exact`` (a coordinator's handlers
    only look its jobs up by it, and accept any bytes up to that length)."""
    job = body.get("job")
    if not isinstance(job, bytes):
        raise bad(method, "job must be a job id (bytes)")
    wrong = len(job) != JOB_ID_BYTES if exact else len(job) > JOB_ID_BYTES
    if wrong:
        raise bad(method, f"job must be a job id of {JOB_ID_BYTES} bytes, not {len(job)}")
    return job


def task_index(body: dict[Any, Any], method: str) -> int:
    """``body["task"]``: a whole number from 0 to 2^63 - 1."""
    task = body.get("task")
    if not _whole(task) or not 0 <= task <= MAX_INDEX:
        raise bad(method, "task must be a whole number from 0 to 2^63 - 1")
    return task


def optional_task(body: dict[Any, Any], method: str) -> int | None:
    """``body["task"]`` if present (see :func:`task_index`), else ``None``."""
    return None if body.get("task") is None else task_index(body, method)


def seed(body: dict[Any, Any], method: str) -> int | None:
    """``body["seed"]``: ``None`` or a whole number from 0 to 2^63 - 1."""
    value = body.get("seed")
    if value is not None and (not _whole(value) or not 0 <= value <= MAX_SEED):
        raise bad(method, "seed must be none or a whole number from 0 to 2^63 - 1")
    return value


def fraction(body: dict[Any, Any], method: str) -> float:
    """``body["progress"]``: a finite number (the core clamps it to 0 .. 1)."""
    value = body.get("progress")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            if math.isfinite(float(value)):
                return float(value)
        except OverflowError:  # an integer too large for a float
            pass
    raise bad(method, "progress must be a finite number")
