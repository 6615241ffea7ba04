"""The worker side: accept task offers, run them in the process pool, sign and deliver results.

RPC methods (served over QMP links, see ``docs/jobs.md``):

* ``job.offer {spec, task, seed}``: the spec is checked against this node's limits before it is
  accepted (error code ``refused`` with the reason; ``busy`` when the queue is full). Offering
  the same (job, task) again returns its state: offers are idempotent.
* ``job.fetch {job, task}``: the state, progress, and once finished the result with the signed
  claim. Results wait here (in SQLite) until their coordinator has them, even across restarts.
* ``job.cancel {job[, task]}``: stop the caller's tasks of that job.
* ``job.capacity``: what this node advertises in the DHT (qubits, cores, slots, queue, engine,
  and the device targets, Qiskit version and provider adapters it can run:
  :mod:`qiz.compute.devices`). An offer of a job needing what it does not advertise is refused.

Every field of a body is checked (:mod:`qiz.compute.bodies`: types, 0 .. 2^63 - 1, a job id's
32 bytes) before a handler reads its tables or checks a spec: a bad one is ``bad-request``.

Only the coordinator that offered a task can fetch or cancel it: the key includes its node id.

Specs are checked by the node's :class:`~qiz.compute.checker.SpecChecker` (a limited process,
fair across peers) when the service gives one; without it (tests that build a Worker alone) in
a thread of this process.

Results that wait for a coordinator who does not collect them are bounded, because any peer
can make up throwaway coordinators that offer a tiny task each and never come back (issue 13:
~256 such offers made a worker publish a provider record per result and retry for 7 days):

* at most ``MAX_WAITING_PER_COORDINATOR`` results and ``MAX_WAITING_BYTES_PER_COORDINATOR``
  bytes (stored spec + result) per coordinator, ``MAX_WAITING_RESULTS`` and
  ``MAX_WAITING_BYTES`` in all. Past a coordinator's bound its oldest are evicted. Past the
  bound in all, results are evicted first from coordinators this worker never delivered to
  ("strangers"), then from known ones; within each class from the coordinator holding the most
  (ties: the one whose oldest result is oldest), its oldest first; never the newest result. So
  a crowd of throwaway coordinators holding one result each evicts one another, never the
  results of a coordinator that has collected here before, and a stranger holding many loses
  its own before a stranger holding one (issue 13 review);
* an undelivered result is forgotten ``WAIT_TTL`` (a day) after it finished, delivered ones
  after ``RESULT_TTL``;
* a provider record ("results of this job wait here", so a coordinator that lost its own
  records finds them) is published once per job (whatever coordinators wait for it) and for
  at most ``MAX_ANNOUNCED`` jobs in all per ``WAIT_TTL``; strangers get at most one job each
  and ``MAX_ANNOUNCED_STRANGERS`` in all, so the rest of the budget stays for coordinators
  this worker has delivered to before: the worker's records on other nodes stay a few,
  whoever offers, and strangers cannot spend a known coordinator's share.

Stored specs are checked again at a restart (a limit may have changed): through the checker
process when there is one (one at a time, in the owner's lane, off the event loop), each raw
spec once (a sweep's shards share one).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from qiz.compute import bodies, devices, execute
from qiz.compute import spec as specs
from qiz.compute.attest import Claim
from qiz.compute.checker import SpecChecker
from qiz.compute.errors import CheckerBusy, SpecError, TaskCancelled, TaskFailed
from qiz.compute.inputs import InputFetcher
from qiz.compute.jobdb import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    RunRow,
    RunTables,
    WorkerTables,
    WorkRow,
)
from qiz.compute.placement import estimate_seconds
from qiz.compute.pool import WorkerPool
from qiz.compute.quorum import result_digest
from qiz.identity import NodeIdentity
from qiz.qmp.rpc import CallContext, RpcError
from qiz.quantum.core.memory import AMPLITUDE_BYTES, MAX_QUBITS
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.worker")
Send = Callable[..., Awaitable[Any]]
WORST_STATE_VECTORS = max(execute.STATE_VECTORS.values())
RESULT_TTL = 7 * 86400  # finished work is forgotten after this, delivered or not
# results waiting for a coordinator that does not collect them (see the module docstring):
# they protect the worker's disk and its DHT quota on other nodes from throwaway coordinators
WAIT_TTL = 86400  # an undelivered result is kept this long (and its provider record lives)
MAX_WAITING_RESULTS = 64  # undelivered results, all coordinators together
MAX_WAITING_PER_COORDINATOR = 16  # ... per coordinator
MAX_WAITING_BYTES = 256 << 20  # stored spec + result bytes of undelivered results, in all
MAX_WAITING_BYTES_PER_COORDINATOR = 64 << 20  # ... per coordinator
MAX_ANNOUNCED = 16  # provider records for waiting results per WAIT_TTL (one per job)
MAX_ANNOUNCED_STRANGERS = 8  # ... of which for coordinators never delivered to (one each)
MAX_KNOWN_COORDINATORS = 1024  # coordinators remembered as delivered to (oldest forgotten)


def qubits_for(memory: int) -> int:
    """The most qubits whose worst-case kind fits in ``memory`` bytes."""
    if memory <= 0:
        return 0
    n = int(math.log2(memory / (WORST_STATE_VECTORS * AMPLITUDE_BYTES)))
    return max(0, min(MAX_QUBITS, n))


class Worker:
    """Runs offered tasks; ``send(peer_digest, method, body)`` reaches their coordinators."""

    def __init__(
        self,
        identity: NodeIdentity,
        tables: WorkerTables,
        pool: WorkerPool,
        limits: specs.Limits,
        send: Send,
        *,
        max_queue: int = 64,
        announce: Callable[[bytes], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.time,
        checker: SpecChecker | None = None,
        runs: RunTables | None = None,
    ) -> None:
        self.identity = identity
        self.tables = tables
        # what this node ran for others, kept after the work rows go (``job list --worker``)
        self.runs = runs
        self.pool = pool
        self.limits = limits
        self.send = send
        self.max_queue = max_queue
        self.announce = announce  # tells the DHT that results of a job wait here
        # provider records published for waiting results: (when, coordinator, job), newest last
        self._announced: deque[tuple[float, bytes, bytes]] = deque()
        # coordinators a result was delivered to (since start, or found delivered in the table)
        self._known: OrderedDict[bytes, None] = OrderedDict()
        self.clock = clock
        self.checker = checker
        # content-id inputs, fetched before a check (the service sets the node's pool fetch)
        self.inputs = InputFetcher(None)
        self._checking = asyncio.Semaphore(1)  # without a checker: one check at a time here
        self._closing = False
        self._retry_after: dict[bytes, float] = {}  # coordinator -> when to try delivering again
        self._failures: dict[bytes, int] = {}  # coordinator -> deliveries failed in a row
        self._tasks: dict[tuple[bytes, int, bytes], asyncio.Task[None]] = {}
        self._progress: dict[tuple[bytes, int, bytes], float] = {}
        self._progress_sent: dict[tuple[bytes, int, bytes], float] = {}
        self._owner = TaskOwner("worker", log)  # runs, progress pushes, announcements
        self.backlog = 0.0  # estimated seconds of accepted, unfinished work
        self.counters = {
            "accepted": 0,
            "refused": 0,
            "busy": 0,  # offers refused because too many spec checks waited
            "done": 0,
            "failed": 0,
            "cancelled": 0,
            "evicted": 0,  # waiting results dropped over a bound (oldest first)
            "expired": 0,  # waiting results dropped after WAIT_TTL
            "announced": 0,  # provider records published for waiting results
        }
        self.corrupt: Callable[[Any], Any] | None = None  # fault injection for tests only
        self.task_seconds: deque[float] = deque(maxlen=10_000)  # simulator time, for metrics

    def handlers(self) -> dict[str, Any]:
        return {
            "job.offer": self._rpc_offer,
            "job.fetch": self._rpc_fetch,
            "job.cancel": self._rpc_cancel,
            "job.capacity": self._rpc_capacity,
        }

    def history(self) -> list[RunRow]:
        """The tasks this node ran as a worker, oldest first (bounded: ``MAX_WORKER_RUNS``)."""
        return self.runs.all() if self.runs is not None else []

    def _ran(self, key: tuple[bytes, int, bytes], outcome: str, error: str | None = None) -> None:
        if self.runs is not None:
            self.runs.finished(*key, self.clock(), outcome=outcome, error=error)

    @property
    def queue_length(self) -> int:
        """Accepted tasks not finished yet (queued or running here)."""
        return len(self._tasks)

    def capacity(self) -> dict[str, Any]:
        return {
            "qubits": self.limits.max_qubits,
            "cores": os.cpu_count() or 1,
            "slots": self.pool.slots,
            "queue": self.queue_length,
            "backlog": round(self.backlog, 3),
            "engine": execute.ENGINE,
            **devices.advertised(),
        }

    # ------------------------------------------------------------------ lifecycle

    def resume(self) -> None:
        """Run again what was accepted before a restart; deliver what still waits.

        Each stored spec is parsed once per raw bytes (a sweep's shards share one). With a
        checker, the checks run in the background through it (stored specs came from peers:
        parsed here, 32 heavy ones would hold the event loop for minutes)."""
        for row in self.tables.all((DONE, FAILED)):
            if row.delivered:
                self._remember_known(row.coordinator)
        rows = self.tables.all(ACTIVE)
        if not rows:
            return
        if self.checker is not None:
            self._owner.spawn(self._resume_checked(rows), "resume stored work")
            return
        parsed: dict[bytes, specs.JobSpec | SpecError] = {}
        for row in rows:
            if row.spec not in parsed:
                try:
                    parsed[row.spec] = specs.parse(row.spec, self.limits)
                except SpecError as exc:
                    parsed[row.spec] = exc
            self._resume_row(row, parsed[row.spec])

    async def _resume_checked(self, rows: list[WorkRow]) -> None:
        """The stored specs checked in the checker process, one at a time, in the owner's
        lane; the checker caches by raw bytes, so a sweep's shards are checked once."""
        assert self.checker is not None
        for row in rows:
            try:
                inputs = await self.inputs.texts(row.spec, self.limits)
                outcome: specs.JobSpec | SpecError = await self.checker.parse(
                    row.spec, self.limits, inputs=inputs
                )
            except SpecError as exc:
                outcome = exc
            except CheckerBusy as exc:  # the node is stopping: the next start resumes it
                log.info("stored work not resumed: %s", exc)
                return
            self._resume_row(row, outcome)

    def _resume_row(self, row: WorkRow, outcome: specs.JobSpec | SpecError) -> None:
        if isinstance(outcome, SpecError):
            self.tables.update(
                row.job, row.task, row.coordinator, self.clock(), state=FAILED, error=str(outcome)
            )
            return
        if (outcome.job_id, row.task, row.coordinator) not in self._tasks:
            self._start(outcome, row.task, row.coordinator, row.seed)

    def _remember_known(self, coordinator: bytes) -> None:
        """A coordinator that collected a result here: not a throwaway one."""
        self._known[coordinator] = None
        self._known.move_to_end(coordinator)
        while len(self._known) > MAX_KNOWN_COORDINATORS:
            self._known.popitem(last=False)

    async def deliver_pending(self) -> None:
        """Push finished results their coordinators have not acknowledged (a periodic job).
        A coordinator that could not be reached is tried again after a growing pause, and
        its results in parallel, so one absent coordinator does not hold up the others."""
        self.tables.expire(self.clock() - RESULT_TTL)
        self.counters["expired"] += self.tables.expire_waiting(self.clock() - WAIT_TTL)
        waiting = self.tables.waiting()
        coordinators = {row[2] for row in waiting}
        for gone in set(self._retry_after) - coordinators:  # nothing waits for them any more
            self._retry_after.pop(gone, None)
            self._failures.pop(gone, None)
        now = time.monotonic()
        due = [row for row in waiting if self._retry_after.get(row[2], 0.0) <= now]
        await asyncio.gather(*(self._deliver(job, task, c) for job, task, c, _ in due[:64]))

    async def _check(self, raw: Any, coordinator: bytes) -> specs.JobSpec:
        """A peer's spec, checked in the limited checker process (fair across peers), its
        content-id inputs fetched first."""
        own = coordinator == self.identity.node_id.digest  # its own jobs: never refused busy
        inputs = await self.inputs.texts(raw, self.limits, peer=not own)
        if self.checker is not None:
            return await self.checker.parse(raw, self.limits, coordinator, inputs)
        async with self._checking:
            return await asyncio.to_thread(specs.parse, raw, self.limits, None, inputs)

    def _bound_waiting(self) -> None:
        """Evict waiting results over a bound: a coordinator's oldest over its own bound;
        over the bound in all, strangers' before known coordinators', from the one holding
        the most (ties: oldest first), its oldest first (see the module docstring). The
        newest waiting result is never evicted, whatever its size."""
        waiting = self.tables.waiting()
        if not waiting:
            return
        newest = waiting[-1]
        evict: set[tuple[bytes, int, bytes]] = set()
        per: dict[bytes, list[tuple[bytes, int, bytes, int]]] = {}
        for row in waiting:
            per.setdefault(row[2], []).append(row)
        for rows in per.values():
            count, size = len(rows), sum(r[3] for r in rows)
            for row in rows:
                if row is newest or (
                    count <= MAX_WAITING_PER_COORDINATOR
                    and size <= MAX_WAITING_BYTES_PER_COORDINATOR
                ):
                    break
                evict.add(row[:3])
                count, size = count - 1, size - row[3]
        held: dict[bytes, deque[tuple[bytes, int, bytes, int]]] = {}
        for row in waiting:
            if row[:3] not in evict and row is not newest:
                held.setdefault(row[2], deque()).append(row)
        kept = [row for row in waiting if row[:3] not in evict]
        count, size = len(kept), sum(r[3] for r in kept)
        age = {row[:3]: i for i, row in enumerate(waiting)}  # 0 = the oldest
        while held and (count > MAX_WAITING_RESULTS or size > MAX_WAITING_BYTES):
            # strangers first; then the one holding the most; then the oldest result
            victim = min(
                held,
                key=lambda c: (c in self._known, -len(held[c]), age[held[c][0][:3]]),
            )
            row = held[victim].popleft()
            if not held[victim]:
                del held[victim]
            evict.add(row[:3])
            count, size = count - 1, size - row[3]
        for job, task, coordinator in evict:
            self.tables.delete(job, task, coordinator)
        if evict:
            self.counters["evicted"] += len(evict)
            log.debug("evicted %d results nobody collected (oldest first)", len(evict))

    async def close(self) -> None:
        """Stop running tasks without recording them as cancelled: a restart runs them again."""
        self._closing = True
        await self._owner.close()

    # ------------------------------------------------------------------ RPC

    async def _rpc_offer(self, ctx: CallContext, body: Any) -> Any:
        # the cheap fields first: a malformed offer costs no spec check
        body = bodies.fields(body, "job.offer", "spec, task, seed")
        if not isinstance(body.get("spec"), bytes):
            raise bodies.bad("job.offer", "spec must be a signed job spec (bytes)")
        task = bodies.task_index(body, "job.offer")
        seed = bodies.seed(body, "job.offer")
        coordinator = ctx.peer_id.digest
        if len(self._tasks) >= self.max_queue:
            raise RpcError("busy", f"the queue is full ({self.max_queue} tasks)")
        held = sum(1 for key in self._tasks if key[2] == coordinator)
        if held >= max(1, self.max_queue // 2):  # no one coordinator takes the whole queue
            raise RpcError("busy", f"this coordinator already has {held} tasks queued here")
        try:
            spec = await self._check(body["spec"], coordinator)
        except CheckerBusy as exc:
            self.counters["busy"] += 1
            raise RpcError("busy", str(exc)) from None
        except SpecError as exc:
            self.counters["refused"] += 1
            raise RpcError("refused", str(exc)) from None
        if task >= len(spec.tasks):
            raise RpcError("refused", f"task {task} is not one of the job's {len(spec.tasks)}")
        missing = devices.needs(spec) - devices.features(devices.advertised())
        if missing:
            self.counters["refused"] += 1
            raise RpcError("refused", f"this worker cannot run {devices.describe(missing)}")
        if spec.seed is not None and seed != spec.seed:
            raise RpcError("refused", "a seeded job's replicas must run with the spec's seed")
        row = self.tables.get(spec.job_id, task, coordinator)
        if row is not None and row.seed == seed and row.state in (QUEUED, RUNNING, DONE):
            return {"state": row.state, **self.capacity()}  # the same offer again
        if (spec.job_id, task, coordinator) in self._tasks:
            raise RpcError("busy", "this task is still running here with another seed")
        if row is not None:  # failed, cancelled or another seed: this offer runs afresh
            self.tables.delete(spec.job_id, task, coordinator)
        self.tables.add(spec.job_id, task, coordinator, spec.raw, seed=seed, now=self.clock())
        self.counters["accepted"] += 1
        self._start(spec, task, coordinator, seed)
        return {"state": QUEUED, **self.capacity()}

    def _start(self, spec: specs.JobSpec, task: int, coordinator: bytes, seed: int | None) -> None:
        key = (spec.job_id, task, coordinator)
        estimate = estimate_seconds(spec.tasks[task])
        self.backlog += estimate
        runner = self._owner.spawn(self._run(spec, task, coordinator, seed), f"run {task}")
        self._tasks[key] = runner

        def finished(_: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            self._progress.pop(key, None)
            self._progress_sent.pop(key, None)
            self.backlog = max(0.0, self.backlog - estimate)

        runner.add_done_callback(finished)

    async def _run(
        self, spec: specs.JobSpec, index: int, coordinator: bytes, seed: int | None
    ) -> None:
        task = spec.tasks[index]
        key = (spec.job_id, index, coordinator)
        job = {
            "kind": task.kind,
            "params": task.params,
            "points": list(task.points) if task.points is not None else None,
            "seed": seed,
        }

        def progress(fraction: float) -> None:
            self._progress[key] = fraction
            self._push_progress(key, fraction)

        try:
            self.tables.update(*key, self.clock(), state=RUNNING)
            if self.runs is not None:
                self.runs.started(*key, self.clock())
            began = time.perf_counter()
            # the spec's deadline bounds a task here too: a coordinator that never cancels
            # cannot hold a slot for longer than it asked for (asyncio.timeout: wait_for may
            # drop a cancellation that comes with the result, Python 3.11)
            async with asyncio.timeout(spec.deadline):
                result = await self.pool.run(job, progress)
            self.task_seconds.append(time.perf_counter() - began)
        except asyncio.CancelledError:
            if not self._closing:  # cancelled by its coordinator; at shutdown it stays running
                self.tables.update(*key, self.clock(), state=CANCELLED)
                self._ran(key, CANCELLED)
                self.counters["cancelled"] += 1
            raise
        except TimeoutError:
            self.tables.update(*key, self.clock(), state=FAILED, error="over the spec's deadline")
            self._ran(key, FAILED, "over the spec's deadline")
            self.counters["failed"] += 1
        except (TaskFailed, TaskCancelled) as exc:
            self.tables.update(*key, self.clock(), state=FAILED, error=str(exc))
            self._ran(key, FAILED, str(exc))
            self.counters["failed"] += 1
        else:
            if self.corrupt is not None:
                result = self.corrupt(result)
            digest = result_digest(result)
            sig = Claim(spec.job_id, index, seed, execute.ENGINE, digest).sign(self.identity)
            self.tables.update(
                *key, self.clock(), state=DONE, result=result, digest=digest, sig=sig
            )
            self._ran(key, DONE)
            self.counters["done"] += 1
        await self._deliver(*key)

    def _report(self, row: WorkRow) -> dict[str, Any]:
        report: dict[str, Any] = {
            "job": row.job,
            "task": row.task,
            "state": row.state,
            "progress": 1.0
            if row.state == DONE
            else self._progress.get((row.job, row.task, row.coordinator), 0.0),
            "seed": row.seed,
            "engine": execute.ENGINE,
            "key": self.identity.public_key.raw,
        }
        if row.state == DONE:
            report.update(result=row.result, digest=row.digest, sig=row.sig)
        if row.error:
            report["error"] = row.error
        return report

    async def _deliver(self, job: bytes, task: int, coordinator: bytes) -> None:
        row = self.tables.get(job, task, coordinator)
        if row is None or row.delivered or row.state not in (DONE, FAILED):
            return
        try:
            await self.send(coordinator, "job.done", self._report(row), timeout=10.0)
        except Exception as exc:
            self._bound_waiting()
            if self.tables.get(job, task, coordinator) is None:
                return  # evicted: too much waits for no one
            self._announce(job, coordinator)
            failures = self._failures.get(coordinator, 0) + 1
            self._failures[coordinator] = failures
            self._retry_after[coordinator] = time.monotonic() + min(300.0, 2.0**failures)
            log.info(
                "result of job %s task %d waits for its coordinator: %s", job.hex()[:12], task, exc
            )
            return
        self._failures.pop(coordinator, None)
        self._retry_after.pop(coordinator, None)
        self._remember_known(coordinator)
        self.tables.update(job, task, coordinator, self.clock(), delivered=1)

    def _announce(self, job: bytes, coordinator: bytes) -> None:
        """The first time a result of ``job`` cannot be delivered, publish a provider record
        (content id = job id) so that a coordinator without its own records finds it here:
        once per job, ``MAX_ANNOUNCED`` in all per ``WAIT_TTL`` (the record's lifetime), of
        which strangers (never delivered to) get one job each and ``MAX_ANNOUNCED_STRANGERS``
        in all: throwaway coordinators cannot spend this node's record quota on other nodes,
        nor the share kept for coordinators that collect here."""
        if self.announce is None:
            return
        now = self.clock()
        while self._announced and self._announced[0][0] < now - WAIT_TTL:
            self._announced.popleft()
        if len(self._announced) >= MAX_ANNOUNCED or any(j == job for _, _, j in self._announced):
            return
        if coordinator not in self._known:
            strangers = [c for _, c, _ in self._announced if c not in self._known]
            if len(strangers) >= MAX_ANNOUNCED_STRANGERS or coordinator in strangers:
                return
        self._announced.append((now, coordinator, job))
        if not self._owner.closed:
            self.counters["announced"] += 1
            self._owner.spawn(self.announce(job), "announce results")

    def _push_progress(self, key: tuple[bytes, int, bytes], fraction: float) -> None:
        now = time.monotonic()
        if now - self._progress_sent.get(key, 0.0) < 0.5:
            return
        self._progress_sent[key] = now
        body = {"job": key[0], "task": key[1], "progress": fraction}

        async def push() -> None:
            try:
                await self.send(key[2], "job.progress", body, timeout=2.0)
            except Exception as exc:  # progress is a courtesy: the result is delivered anyway
                log.debug("progress to its coordinator not sent: %s", exc)

        if not self._owner.closed:
            self._owner.spawn(push(), "push progress")

    async def _rpc_fetch(self, ctx: CallContext, body: Any) -> Any:
        body = bodies.fields(body, "job.fetch", "job, task")
        job = bodies.job_id(body, "job.fetch")
        task = bodies.task_index(body, "job.fetch")
        row = self.tables.get(job, task, ctx.peer_id.digest)
        if row is None:
            return {"state": "unknown"}
        report = self._report(row)
        if row.state in (DONE, FAILED):
            self._remember_known(row.coordinator)
            self.tables.update(row.job, row.task, row.coordinator, self.clock(), delivered=1)
        return report

    async def _rpc_cancel(self, ctx: CallContext, body: Any) -> Any:
        body = bodies.fields(body, "job.cancel", "job[, task]")
        wanted = bodies.job_id(body, "job.cancel")
        only = bodies.optional_task(body, "job.cancel")
        stopped = 0
        for key, runner in list(self._tasks.items()):
            job, task, coordinator = key
            if job == wanted and coordinator == ctx.peer_id.digest and only in (None, task):
                runner.cancel()
                stopped += 1
        return {"cancelled": stopped}

    async def _rpc_capacity(self, ctx: CallContext, body: Any) -> Any:
        """The body is not read (``None`` by convention): there is nothing in it to check."""
        return self.capacity()
