"""The submitter's side: place a job's replicas, watch them, decide by quorum, attest.

The node a job is submitted to coordinates it to the end:

1. ``submit``: check the signed spec; the same spec again names the same job and returns its
   state (a failed or cancelled job starts afresh).
2. Placement: each undecided task wants ``replicas`` live-or-finished replicas on distinct
   workers; the missing ones are placed with :mod:`qiz.compute.placement` over the workers the
   :class:`~qiz.compute.directory.WorkerDirectory` knows, and offered (``job.offer``).
3. Watching (``tick``, a few times a second): a replica whose worker is unreachable is *lost*
   and placed again elsewhere; one not heard of for ``poll_after`` seconds is fetched; a job
   past its deadline fails.
4. Deciding: each finished replica's claim is checked (the worker's signature over the result
   digest); when ``quorum`` replicas agree (:mod:`qiz.compute.quorum`) the task is decided, the
   rest are cancelled, agreeing workers' scores rise and disagreeing ones' fall. No agreement
   and nothing running: one more replica is placed, up to ``replicas + EXTRA_ATTEMPTS`` in all.
5. When every task is decided the job's attestation is signed and stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qiz import wire
from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import Claim, make_attestation
from qiz.compute.directory import WorkerDirectory
from qiz.compute.errors import JobError, JobNotFound, SpecError
from qiz.compute.jobdb import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    CoordinatorTables,
    ReplicaRow,
)
from qiz.compute.placement import Item, PlacementError, PlacementProblem, WorkerInfo, solve
from qiz.compute.quorum import Decision, Replica, decide, result_digest
from qiz.compute.worker import estimate_seconds
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity
from qiz.qmp.rpc import CallContext, RpcError
from qiz.trust.scores import PeerScores

log = logging.getLogger("qiz.coordinator")
Send = Callable[..., Awaitable[Any]]
EXTRA_ATTEMPTS = 6
MAX_MISSES = 2  # checks in a row without an answer before a linked replica counts as lost
STRAGGLER_FLOOR = 60.0  # seconds a replica may run before it is considered slow...
STRAGGLER_FACTOR = 20.0  # ...or this many times its estimate, whichever is longer
MIN_SCORE = 0.05  # below this a worker gets no new work from us


def _task_count(body: dict[str, Any]) -> int:
    """How many tasks a (stored, already checked) spec body splits into."""
    if body["kind"] != "sweep":
        return 1
    params = body["params"]
    points = math.prod(len(values) for values in params["axes"].values())
    return math.ceil(points / params.get("shard", specs.DEFAULT_SHARD))


class Unreachable(ConnectionError):
    """A peer could not be reached over any link."""


@dataclass
class JobState:
    spec: specs.JobSpec
    created: float
    target: dict[int, int]  # task -> replicas wanted (grows when replicas disagree)
    decisions: dict[int, Decision] = field(default_factory=dict)
    heard: dict[tuple[int, bytes], float] = field(default_factory=dict)
    progress: dict[tuple[int, bytes], float] = field(default_factory=dict)
    needs_placement: bool = True
    checking: set[tuple[int, bytes]] = field(default_factory=set)
    offering: set[tuple[int, bytes]] = field(default_factory=set)  # offers not yet answered
    misses: dict[tuple[int, bytes], int] = field(default_factory=dict)  # failed checks in a row
    stragglers: set[int] = field(default_factory=set)  # tasks given a spare replica for a slow one


class Coordinator:
    def __init__(
        self,
        identity: NodeIdentity,
        tables: CoordinatorTables,
        scores: PeerScores,
        directory: WorkerDirectory,
        send: Send,
        *,
        placement: str = "greedy",
        poll_after: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.tables = tables
        self.scores = scores
        self.directory = directory
        self.send = send
        self.placement = placement
        self.poll_after = poll_after
        self.clock = clock
        # qubits and work are the workers' to judge (their memory, their patience)
        self.limits = specs.Limits(max_qubits=40, max_work=math.inf)
        self.jobs: dict[bytes, JobState] = {}
        self.counters = {"submitted": 0, "done": 0, "failed": 0, "lost": 0, "disagreed": 0}
        self.schedule_seconds: deque[float] = deque(maxlen=10_000)  # placement + offers, per round
        self.on_event: Callable[..., Any] = lambda kind, **data: None  # the node's event log
        # nodes that announced (DHT provider records) results of a job waiting for us
        self.find_holders: Callable[[bytes], Awaitable[list[bytes]]] | None = None
        self._lock = asyncio.Lock()

    def handlers(self) -> dict[str, Any]:
        return {"job.done": self._rpc_done, "job.progress": self._rpc_progress}

    # ------------------------------------------------------------------ the owner's API

    async def submit(self, raw: bytes) -> dict[str, Any]:
        try:
            spec = await asyncio.to_thread(specs.parse, raw, self.limits)
        except SpecError as exc:
            raise JobError(f"the spec was refused: {exc}") from None
        row = self.tables.job(spec.job_id)
        if row is not None and row[2] in (RUNNING, DONE):
            return self.status(spec.job_id)
        await self.directory.refresh()
        await self._confirm_unlinked()
        self._check_capacity(spec)
        now = self.clock()
        if row is None:
            self.tables.add_job(spec.job_id, spec.raw, now)
        else:
            self.tables.restart_job(spec.job_id, now)
        self.counters["submitted"] += 1
        self.jobs[spec.job_id] = JobState(spec, now, {t.index: spec.replicas for t in spec.tasks})
        self.on_event(
            "job.submitted", job=spec.job_id.hex(), job_kind=spec.kind, tasks=len(spec.tasks)
        )
        state = self.jobs[spec.job_id]
        if row is None:
            await self._collect_waiting(state)
        if spec.job_id in self.jobs:  # not already finished by collected results
            await self._place(state)
        return self.status(spec.job_id)

    async def _confirm_unlinked(self) -> None:
        """Ask the known workers we have no link to whether they are there (a capacity record
        outlives its node by up to its TTL): the ones that do not answer are left out."""
        unlinked = [node for node in self.directory.entries if not self._linked(node)]
        replies = await asyncio.gather(
            *(self.send(node, "job.capacity", None, timeout=3.0) for node in unlinked),
            return_exceptions=True,
        )
        for node, reply in zip(unlinked, replies, strict=True):
            if isinstance(reply, BaseException):
                self.directory.absent(node)
            else:
                self.directory.note(node, reply)

    def _check_capacity(self, spec: specs.JobSpec) -> None:
        workers = self.directory.workers()
        able = [n for n, cap in workers if cap["qubits"] >= spec.num_qubits]
        if not able:
            most = max((cap["qubits"] for _, cap in workers), default=0)
            raise JobError(
                f"the job needs {spec.num_qubits} qubits; the largest worker known takes {most}"
            )
        if len(able) < spec.quorum:
            raise JobError(
                f"the quorum is {spec.quorum} distinct workers with {spec.num_qubits} qubits; "
                f"{len(able)} known (lower --replicas/quorum, or wait for more nodes)"
            )

    async def _collect_waiting(self, state: JobState) -> None:
        """A job new to this coordinator may have results waiting at workers already (this
        node lost its records, or another run of it submitted the same spec): ask the DHT who
        holds some and take theirs as replicas before placing new ones."""
        if self.find_holders is None:
            return
        job = state.spec.job_id
        for holder in await self.find_holders(job):
            for task in state.spec.tasks:
                try:
                    report = await self.send(
                        holder, "job.fetch", {"job": job, "task": task.index}, timeout=5.0
                    )
                except Exception:
                    break
                if not isinstance(report, dict) or report.get("state") != DONE:
                    continue
                seed = report.get("seed")
                if state.spec.seed is not None and seed != state.spec.seed:
                    continue
                if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                    continue
                self.tables.add_replica(job, task.index, holder, seed, self.clock())
                self.record(holder, {**report, "job": job, "task": task.index})
                self.on_event(
                    "replica.collected", job=job.hex(), task=task.index, worker=str(NodeId(holder))
                )

    def resolve_id(self, text: str) -> bytes:
        """A job id from its hex form or a unique prefix of it."""
        text = text.strip().lower()
        if len(text) == 64:
            return specs.parse_job_id(text)
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise JobError(f"{text!r} is not a job id (hex, at least 4 digits)")
        found = self.tables.find(text)
        if len(found) != 1:
            raise (JobNotFound if not found else JobError)(f"{len(found)} jobs start with {text!r}")
        return found[0]

    def status(self, job: bytes) -> dict[str, Any]:
        row = self.tables.job(job)
        if row is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        _, spec_raw, state, created, updated, error, attestation = row
        body = wire.decode(wire.decode(spec_raw, max_size=1 << 24)["body"], max_size=1 << 24)
        replicas = self.tables.replicas(job)
        live = self.jobs.get(job)
        tasks = _task_count(body)
        decided = len(live.decisions) if live else (tasks if state == DONE else 0)

        def done_part(r: ReplicaRow) -> float:
            if r.state == DONE:
                return 1.0
            return live.progress.get((r.task, r.worker), 0.0) if live else 0.0

        progress = []
        for t in range(tasks):
            if (live and t in live.decisions) or state == DONE:
                progress.append(1.0)
                continue
            values = [done_part(r) for r in replicas if r.task == t and r.state in (*ACTIVE, DONE)]
            progress.append(max(values, default=0.0))
        over = body["params"].get("over") if body["kind"] == "sweep" else body["kind"]
        return {
            "job": job.hex(),
            "state": state,
            "error": error,
            "kind": body["kind"],
            "over": over,
            "created": created,
            "updated": updated,
            "deadline": created + body["deadline"],
            "replicas_wanted": body["replicas"],
            "quorum": body["quorum"],
            "seed": body["seed"],
            "tasks": tasks,
            "decided": decided,
            "progress": round(sum(progress) / max(1, len(progress)), 4),
            "replicas": [
                {
                    "task": r.task,
                    "worker": str(NodeId(r.worker)),
                    "state": r.state,
                    "error": r.error,
                    "progress": done_part(r),
                }
                for r in replicas
            ],
            "attested": attestation is not None,
        }

    def result(self, job: bytes) -> bytes:
        """The attestation file of a finished job."""
        row = self.tables.job(job)
        if row is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        if row[2] != DONE or row[6] is None:
            raise JobError(f"job {job.hex()[:12]} is {row[2]}; it has no attested result")
        return row[6]

    def list(self) -> list[dict[str, Any]]:
        return [self.status(row[0]) for row in self.tables.jobs()]

    async def cancel(self, job: bytes) -> dict[str, Any]:
        row = self.tables.job(job)
        if row is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        if row[2] != RUNNING:
            return self.status(job)
        await self._stop(job, CANCELLED, "cancelled by its submitter")
        return self.status(job)

    async def _stop(self, job: bytes, state: str, error: str | None) -> None:
        self.jobs.pop(job, None)
        self.on_event(f"job.{state}", job=job.hex(), error=error)
        now = self.clock()
        self.tables.set_job(job, state, now, error=error)
        if state == FAILED:
            self.counters["failed"] += 1
        for r in self.tables.replicas(job):
            if r.state in ACTIVE:
                self.tables.update_replica(job, r.task, r.worker, now, state=CANCELLED)
        await asyncio.gather(
            *(self._cancel_at(job, w, None) for w in {r.worker for r in self.tables.replicas(job)}),
            return_exceptions=True,
        )

    async def _cancel_at(self, job: bytes, worker: bytes, task: int | None) -> None:
        body: dict[str, Any] = {"job": job}
        if task is not None:
            body["task"] = task
        with contextlib.suppress(Exception):
            await self.send(worker, "job.cancel", body, timeout=3.0)

    # ------------------------------------------------------------------ restart

    def resume(self) -> None:
        """Pick up the running jobs of a previous run; their replicas are polled at once."""
        for job, spec_raw, _state, created, *_ in self.tables.jobs((RUNNING,)):
            try:
                spec = specs.parse(spec_raw, self.limits)
            except SpecError as exc:
                self.tables.set_job(job, FAILED, self.clock(), error=f"stored spec: {exc}")
                continue
            state = JobState(spec, created, {t.index: spec.replicas for t in spec.tasks})
            self.jobs[job] = state
            for task in {r.task for r in self.tables.replicas(job) if r.state == DONE}:
                self._evaluate(state, task)

    # ------------------------------------------------------------------ placement

    async def _place(self, state: JobState) -> None:
        async with self._lock:
            started = time.perf_counter()
            state.needs_placement = False
            await self._place_locked(state)
            self.schedule_seconds.append(time.perf_counter() - started)

    def _wants(self, state: JobState) -> list[tuple[specs.Task, int, set[bytes]]]:
        wants = []
        for task in state.spec.tasks:
            if task.index in state.decisions:
                continue
            rows = self.tables.replicas(state.spec.job_id, task.index)
            live = [r for r in rows if r.state in (*ACTIVE, DONE)]
            missing = state.target[task.index] - len(live)
            budget = state.spec.replicas + EXTRA_ATTEMPTS - len(rows)
            if missing > 0 and budget > 0:
                wants.append((task, min(missing, budget), {r.worker for r in rows}))
        return wants

    async def _place_locked(self, state: JobState) -> None:
        wants = self._wants(state)
        if not wants:
            self._fail_stalled(state, set())
            return
        await self.directory.refresh()
        workers = [
            (node, cap)
            for node, cap in self.directory.workers()
            if self.scores.get(node) >= MIN_SCORE
        ]
        infos = [
            WorkerInfo(
                slots=int(cap["slots"]),
                max_qubits=int(cap["qubits"]),
                backlog=float(cap["backlog"]),
                rtt=self.directory.rtt(node),
                score=self.scores.get(node) if node != self.identity.node_id.digest else 1.0,
            )
            for node, cap in workers
        ]
        items: list[Item] = []
        excluded: list[frozenset[int]] = []
        for task, count, used in wants:
            banned = frozenset(i for i, (node, _) in enumerate(workers) if node in used)
            eligible = [
                i
                for i, info in enumerate(infos)
                if info.max_qubits >= task.shape.num_qubits and i not in banned
            ]
            for _ in range(min(count, len(eligible))):
                items.append(Item(task.index, estimate_seconds(task), task.shape.num_qubits))
                excluded.append(banned)
        self._fail_stalled(state, {item.task for item in items})
        if not items:
            return
        problem = PlacementProblem(tuple(items), tuple(infos), tuple(excluded))
        try:
            placement = solve(problem, self.placement)
        except PlacementError as exc:
            log.warning("placement failed: %s", exc)
            return
        now = self.clock()
        offers = []
        for item, w in zip(items, placement.assignment, strict=True):
            node = workers[w][0]
            seed = state.spec.seed if state.spec.seed is not None else secrets.randbelow(2**63)
            self.tables.add_replica(state.spec.job_id, item.task, node, seed, now)
            state.heard[(item.task, node)] = now
            self.on_event(
                "replica.placed",
                job=state.spec.job_id.hex(),
                task=item.task,
                worker=str(NodeId(node)),
            )
            offers.append(self._offer(state, item.task, node, seed))
        await asyncio.gather(*offers)

    def _fail_stalled(self, state: JobState, placed: set[int]) -> None:
        """Fail the job if an undecided task has nothing running and could not be placed."""
        for task in state.spec.tasks:
            if task.index in state.decisions or task.index in placed:
                continue
            rows = self.tables.replicas(state.spec.job_id, task.index)
            if any(r.state in ACTIVE for r in rows):
                continue
            reasons = sorted({r.error for r in rows if r.error})
            if len(rows) >= state.spec.replicas + EXTRA_ATTEMPTS:
                why = f"no {state.spec.quorum} of {len(rows)} replicas agreed"
            else:
                why = "; ".join(reasons[:3]) or "no worker can take it"
            self._later(self._stop(state.spec.job_id, FAILED, f"task {task.index}: {why}"))
            return

    def _later(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _offer(self, state: JobState, task: int, worker: bytes, seed: int | None) -> None:
        job = state.spec.job_id
        body = {"spec": state.spec.raw, "task": task, "seed": seed}
        state.offering.add((task, worker))
        try:
            reply = await self.send(worker, "job.offer", body, timeout=60.0)
        except RpcError as exc:
            if exc.code == "busy":  # not an attempt: the worker is full; place it elsewhere
                self.tables.delete_replica(job, task, worker)
                self.directory.busy(worker)
            else:
                self.tables.update_replica(
                    job,
                    task,
                    worker,
                    self.clock(),
                    state=FAILED,
                    error=f"{exc.code}: {exc.message}",
                )
            state.needs_placement = True
            return
        except Exception as exc:
            self._lost(state, task, worker, f"offer failed: {exc}")
            return
        finally:
            state.offering.discard((task, worker))
            state.heard[(task, worker)] = self.clock()
        self.directory.note(worker, reply)
        if isinstance(reply, dict) and reply.get("state") in (DONE, FAILED):
            state.heard[(task, worker)] = 0.0  # finished before: fetch it on the next tick

    def _lost(self, state: JobState, task: int, worker: bytes, why: str) -> None:
        job = state.spec.job_id
        rows = [r for r in self.tables.replicas(job, task) if r.worker == worker]
        if not rows or rows[0].state not in ACTIVE:
            return
        self.tables.update_replica(job, task, worker, self.clock(), state=LOST, error=why)
        self.scores.failed(worker)
        self.directory.forget(worker)
        self.counters["lost"] += 1
        state.needs_placement = True
        self.on_event("replica.lost", job=job.hex(), task=task, worker=str(NodeId(worker)), why=why)
        log.info(
            "job %s task %d: replica at %s lost (%s)",
            job.hex()[:12],
            task,
            NodeId(worker).short(),
            why,
        )

    # ------------------------------------------------------------------ results

    async def _rpc_done(self, ctx: CallContext, body: Any) -> Any:
        self.record(ctx.peer_id.digest, body)
        return {"ok": True}

    async def _rpc_progress(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, dict) and body.get("job") in self.jobs:
            state = self.jobs[body["job"]]
            value = body.get("progress")
            task = body.get("task")
            if isinstance(value, float | int) and isinstance(task, int):
                worker = ctx.peer_id.digest
                state.progress[(task, worker)] = min(1.0, max(0.0, float(value)))
                state.heard[(task, worker)] = self.clock()
                rows = [
                    r for r in self.tables.replicas(state.spec.job_id, task) if r.worker == worker
                ]
                if rows and rows[0].state == QUEUED:  # progress means it runs
                    self.tables.update_replica(
                        state.spec.job_id, task, worker, self.clock(), state=RUNNING
                    )
        return {"ok": True}

    def record(self, worker: bytes, report: Any) -> None:
        """A worker's report (pushed, or fetched by us): store it and decide its task."""
        if not isinstance(report, dict):
            return
        job, task = report.get("job"), report.get("task")
        state = self.jobs.get(job) if isinstance(job, bytes) else None
        if state is None or not isinstance(task, int):
            return
        rows = [r for r in self.tables.replicas(job, task) if r.worker == worker]
        if not rows or rows[0].state not in ACTIVE:
            return  # not ours, or already settled
        row = rows[0]
        now = self.clock()
        state.heard[(task, worker)] = now
        kind = report.get("state")
        if kind in (QUEUED, RUNNING):
            value = report.get("progress")
            if isinstance(value, float | int) and not isinstance(value, bool):
                state.progress[(task, worker)] = min(1.0, max(0.0, float(value)))
            self.tables.update_replica(job, task, worker, now, state=kind)
            return
        if kind == DONE:
            problem = self._check_claim(state, row, report, worker)
            if problem is None:
                self.tables.update_replica(
                    job,
                    task,
                    worker,
                    now,
                    state=DONE,
                    result=report["result"],
                    digest=report["digest"],
                    sig=report["sig"],
                    key=report["key"],
                    engine=report["engine"],
                )
                self._evaluate(state, task)
                return
            self.scores.disagreed(worker)
            error = f"bad claim: {problem}"
        elif kind == "unknown":
            self._lost(state, task, worker, "the worker does not know the task")
            return
        else:
            error = str(report.get("error") or "failed")
            self.scores.failed(worker)
        self.tables.update_replica(job, task, worker, now, state=FAILED, error=error)
        state.needs_placement = True

    def _check_claim(
        self, state: JobState, row: ReplicaRow, report: dict, worker: bytes
    ) -> str | None:
        key, digest, sig, engine = (report.get(k) for k in ("key", "digest", "sig", "engine"))
        if not all(isinstance(v, bytes) for v in (key, digest, sig)) or not isinstance(engine, str):
            return "missing fields"
        try:
            if NodeId.from_public_key(key).digest != worker:
                return "the claim's key is not the worker's"
        except Exception:
            return "malformed key"
        if report.get("seed") != row.seed:
            return "ran with another seed"
        if result_digest(report.get("result")) != digest:
            return "the result does not match its digest"
        if not Claim(state.spec.job_id, row.task, row.seed, engine, digest).valid(key, sig):
            return "the signature does not verify"
        return None

    def _evaluate(self, state: JobState, task: int) -> None:
        if task in state.decisions:
            return
        rows = self.tables.replicas(state.spec.job_id, task)
        done = [
            Replica(
                r.worker,
                r.key or b"",
                r.seed,
                r.engine or "",
                r.result,
                r.digest or b"",
                r.sig or b"",
            )
            for r in rows
            if r.state == DONE
        ]
        # a seed means exact agreement, whatever engine a worker says it ran: replicas of
        # another engine version simply disagree (docs/jobs.md); no seed means chi-square
        decision = decide(done, state.spec.quorum, state.spec.seed is None)
        if decision is None:
            if not any(r.state in ACTIVE for r in rows):
                state.target[task] = len(done) + 1  # no agreement yet: one more opinion
                state.needs_placement = True
            return
        state.decisions[task] = decision
        self.on_event(
            "task.decided",
            job=state.spec.job_id.hex(),
            task=task,
            test=decision.test,
            agreeing=[str(NodeId(r.worker)) for r in decision.agreeing],
            disagreeing=[str(NodeId(r.worker)) for r in decision.disagreeing],
        )
        for r in decision.agreeing:
            self.scores.agreed(r.worker)
        for r in decision.disagreeing:
            self.scores.disagreed(r.worker)
            self.counters["disagreed"] += 1
        now = self.clock()
        for r in rows:
            if r.state in ACTIVE:
                self.tables.update_replica(state.spec.job_id, task, r.worker, now, state=CANCELLED)
                self._later(self._cancel_at(state.spec.job_id, r.worker, task))
        if len(state.decisions) == len(state.spec.tasks):
            self._finish(state)

    def _finish(self, state: JobState) -> None:
        decisions = [state.decisions[t.index] for t in state.spec.tasks]
        attestation = make_attestation(
            self.identity, state.spec, decisions, execute.ENGINE, self.clock()
        )
        self.tables.set_job(state.spec.job_id, DONE, self.clock(), attestation=attestation)
        self.jobs.pop(state.spec.job_id, None)
        self.counters["done"] += 1
        self.on_event("job.done", job=state.spec.job_id.hex(), tasks=len(decisions))
        log.info("job %s done: %d tasks attested", state.spec.job_id.hex()[:12], len(decisions))

    # ------------------------------------------------------------------ watching

    async def tick(self) -> None:
        """Deadlines, unreachable workers, silent replicas, and placement of what is missing."""
        now = self.clock()
        checks = []
        for job, state in list(self.jobs.items()):
            if now > state.created + state.spec.deadline:
                await self._stop(job, FAILED, f"the deadline ({state.spec.deadline} s) passed")
                continue
            for r in self.tables.replicas(job):
                key = (r.task, r.worker)
                if r.state not in ACTIVE or key in state.checking or key in state.offering:
                    continue
                silent = now - state.heard.get(key, 0.0) > self.poll_after
                if silent or not self._linked(r.worker):
                    state.checking.add(key)
                    checks.append(self._check(state, r.task, r.worker))
                self._spare_for_straggler(state, r, now)
        await asyncio.gather(*checks)
        for state in list(self.jobs.values()):
            if state.needs_placement and state.spec.job_id in self.jobs:
                await self._place(state)

    def _spare_for_straggler(self, state: JobState, row: ReplicaRow, now: float) -> None:
        """A replica far beyond its estimate gets one spare replica elsewhere (once per task):
        a worker that keeps saying "running" cannot hold a task until the deadline."""
        if row.task in state.stragglers or row.task in state.decisions:
            return
        budget = STRAGGLER_FLOOR + STRAGGLER_FACTOR * estimate_seconds(state.spec.tasks[row.task])
        if now - row.assigned > budget:
            state.stragglers.add(row.task)
            state.target[row.task] += 1
            state.needs_placement = True
            self.on_event(
                "replica.straggling",
                job=state.spec.job_id.hex(),
                task=row.task,
                worker=str(NodeId(row.worker)),
            )

    def _linked(self, worker: bytes) -> bool:
        if worker == self.identity.node_id.digest:
            return True
        peer = self.directory.links.peers.get(NodeId(worker))
        return peer is not None and peer.link.is_open

    async def _check(self, state: JobState, task: int, worker: bytes) -> None:
        try:
            report = await self.send(
                worker, "job.fetch", {"job": state.spec.job_id, "task": task}, timeout=5.0
            )
        except Unreachable as exc:  # no link and no way to dial it: lost now
            self._lost(state, task, worker, f"unreachable: {exc}")
        except Exception as exc:  # a timeout or refusal: lost only if it happens again
            misses = state.misses.get((task, worker), 0) + 1
            state.misses[(task, worker)] = misses
            if misses >= MAX_MISSES:
                self._lost(state, task, worker, f"no answer {misses} times: {exc}")
        else:
            state.misses.pop((task, worker), None)
            if isinstance(report, dict) and report.get("state") != "unknown":
                report.setdefault("job", state.spec.job_id)
                report.setdefault("task", task)
            else:
                report = {"job": state.spec.job_id, "task": task, "state": "unknown"}
            self.record(worker, report)
        finally:
            state.checking.discard((task, worker))
