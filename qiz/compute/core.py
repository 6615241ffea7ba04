"""The coordinator's decisions as a sans-IO state machine: inputs in, actions out.

Usage (the asyncio driver in :mod:`qiz.compute.coordinator`, or the simulator in
:mod:`qiz.sim.jobs`)::

    core = JobCore(tables, scores, self_id=me, attest=sign_attestation)
    actions = core.submit(spec, now)                  # then, when the driver is ready to place:
    actions += core.place(job, workers, now)          # Offer(...) per new replica
    for action in actions: ...                        # the driver performs them
    core.offer_accepted(job, task, worker, reply, now) / offer_refused / offer_failed
    core.report(worker, report, now)                  # a pushed job.done
    core.progress(worker, body, now)                  # a pushed job.progress
    core.fetched(job, task, worker, report, now) / fetch_failed(...)   # answers to Fetch
    core.tick(now, linked)                            # at core.next_deadline() or periodically

Why split it out: the rules (how many replicas, when one is lost, when a task is decided, when a
job fails) are the part worth testing hard, and with no sockets, no event loop and time passed
in as ``now`` the same code runs on a live node, under hypothesis, and in a simulator with a
thousand workers and churn. The core never raises on what a peer sends (a malformed report is
ignored or counted against the peer: a finished report must carry every claim field and a result
shaped as the spec's kind returns, :mod:`qiz.compute.results`, or its replica fails; a result the
quorum still cannot compare fails its replica too); it raises
:class:`~qiz.compute.errors.JobError` only on its owner's mistakes (see :func:`check_capacity`).

State that must survive a restart is written through to the
:class:`~qiz.compute.jobdb.CoordinatorTables` (SQLite, synchronous and local) before the
action that depends on it is returned; replica rows are also kept in memory, so a tick reads no
table. The claim check and the attestation signer are injected: the node passes the real ones
(:func:`qiz.compute.attest.check_claim`, an ML-DSA signature), the simulator cheap ones.

The rules, as before the split (docs/jobs.md):

* each undecided task wants ``replicas`` live-or-finished replicas on distinct workers, placed
  with :mod:`qiz.compute.placement` over a snapshot of the workers the driver knows;
* a replica whose worker is unreachable is lost at once; one not heard of for ``poll_after``
  seconds is fetched, and lost after ``MAX_MISSES`` unanswered fetches in a row;
* a worker that refuses an offer as busy has cost no attempt: its row is dropped;
* ``quorum`` agreeing replicas decide a task (:mod:`qiz.compute.quorum`); no agreement and
  nothing running asks for one more replica, up to ``replicas + EXTRA_ATTEMPTS`` in all;
* adaptive replication (BOINC style, for quorum >= 2): the agreeing group must also carry the
  trust of ``quorum`` established workers, each worker weighing :func:`credit` of its score
  (a stranger 1/2, a worker caught once nothing; this node's own replicas the whole need),
  less the trust of the replicas that disagree (the need is capped by the trust all the
  workers able to run the task carry together). Short of it, one more replica is placed,
  on an established worker when one can take it, up to ``MAX_TRUST_REPLICAS`` more; then the
  task fails saying how much trust it gathered. Why: a plain quorum of 2 is won by colluding
  liars whenever both replicas land on them (f^2 per task); strangers now need 4 agreeing
  replicas (f^4), and a liar caught once carries no trust at all (docs/jobs.md, "Trust");
* a replica running far beyond its estimate gets one spare replica elsewhere (once per task);
* a job past its deadline fails; a job whose every task is decided is attested;
* a round that even greedy placement cannot place is tried again ``PLACEMENT_RETRY`` seconds
  later (the directory may have changed), and after ``PLACEMENT_TRIES`` failed rounds in a row
  the job fails with the placement error as its reason, rather than idle until its deadline.

Each decision is also written to the job's timeline where it is taken (``job_log``, read by
``qiz job logs``): submitted, placed or retried (and why), accepted, busy, started, a replica
done, failed or lost (and why), straggling, collected, decided (the quorum's test and votes),
no quorum yet, and the job's end. The names are listed in docs/jobs.md.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qiz.compute import devices
from qiz.compute import spec as specs
from qiz.compute.actions import (
    Action,
    CancelAt,
    Emit,
    Fetch,
    Forget,
    JobFailed,
    JobFinished,
    Offer,
)
from qiz.compute.attest import check_claim as real_check_claim
from qiz.compute.errors import JobError, SpecError
from qiz.compute.jobdb import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    CoordinatorTables,
    JobRow,
    ReplicaRow,
)
from qiz.compute.placement import (
    Item,
    PlacementError,
    PlacementProblem,
    WorkerInfo,
    estimate_seconds,
    solve,
)
from qiz.compute.quorum import Decision, Replica, Weight, candidates, decide, margin
from qiz.compute.results import ResultShape, shape_of
from qiz.compute.results import problem as result_problem
from qiz.compute.status import Live
from qiz.crypto.ids import NodeId
from qiz.events import EventKind
from qiz.trust.scores import GIVE, PeerScores

log = logging.getLogger("qiz.coordinator")

EXTRA_ATTEMPTS = 6
MAX_MISSES = 2  # checks in a row without an answer before a linked replica counts as lost
STRAGGLER_FLOOR = 60.0  # seconds a replica may run before it is considered slow...
STRAGGLER_FACTOR = 20.0  # ...or this many times its estimate, whichever is longer
MIN_SCORE = GIVE  # below this a worker gets no new work from us (qiz.trust.scores)
MAX_ERROR = 300  # characters of a peer's error text kept in a replica row
PLACEMENT_RETRY = 2.0  # seconds before a round no placement could place is tried again...
PLACEMENT_TRIES = 4  # ...and failed rounds (none placed between) before the job fails:
# 6 s, longer than a busy worker is left out of placements (qiz.compute.directory.busy)
# adaptive replication (docs/jobs.md, "Trust"): the trust a task's accepted group must carry
TRUST_ZERO = 0.6  # a worker at or below this score adds no trust (new workers start at 0.8)
MAX_TRUST_REPLICAS = 8  # replicas a task may add beyond replicas + EXTRA_ATTEMPTS for trust
CLAIM_FIELDS = {"key": bytes, "digest": bytes, "sig": bytes, "engine": str}


ClaimCheck = Callable[..., str | None]  # (report, *, job, task, seed, worker) -> why not, or None
Attest = Callable[[specs.JobSpec, Sequence[Decision], float], bytes]


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as the driver's directory sees it at placement time."""

    node: bytes
    slots: int
    qubits: int
    backlog: float = 0.0
    rtt: float = 0.0
    features: frozenset[str] = frozenset()  # device targets, qiskit, adapters it offers

    @classmethod
    def of(cls, node: bytes, capacity: Mapping[str, Any], rtt: float) -> WorkerView:
        """From a checked capacity record (see :mod:`qiz.compute.directory`)."""
        return cls(
            node,
            int(capacity["slots"]),
            int(capacity["qubits"]),
            float(capacity["backlog"]),
            rtt,
            devices.features(capacity),
        )


def check_capacity(spec: specs.JobSpec, workers: Sequence[WorkerView]) -> None:
    """Refuse a job no set of known workers could decide (the owner's error, said plainly)."""
    big = [w for w in workers if w.qubits >= spec.num_qubits]
    if not big:
        most = max((w.qubits for w in workers), default=0)
        raise JobError(
            f"the job needs {spec.num_qubits} qubits; the largest worker known takes {most}"
        )
    needs = devices.needs(spec)
    able = [w for w in big if needs <= w.features]
    wanted = f" with {devices.describe(needs)}" if needs else ""
    if not able:
        raise JobError(
            f"the job needs a worker{wanted}; none of the {len(workers)} known offers it"
        )
    if len(able) < spec.quorum:
        raise JobError(
            f"the quorum is {spec.quorum} distinct workers with {spec.num_qubits} qubits"
            f"{wanted}; {len(able)} known (lower --replicas/quorum, or wait for more nodes)"
        )


def credit(score: float) -> float:
    """The trust one agreeing replica adds, in units of an established worker (score 1).

    Linear from 0 at ``TRUST_ZERO`` to 1 at a full score: a new worker (0.8) adds 2/3, one
    halved once (0.4) adds nothing until agreements rebuild it."""
    return min(1.0, max(0.0, (score - TRUST_ZERO) / (1.0 - TRUST_ZERO)))


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any) -> float | None:
    """A peer's progress figure clamped to [0, 1], or None if it is no finite number (a huge
    integer overflows float(), NaN compares false both ways: neither may reach the state)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    if math.isnan(number):
        return None
    return min(1.0, max(0.0, number))


def _claim_fields_problem(report: Mapping[str, Any]) -> str | None:
    """What a finished report lacks that the core stores (the injected claim check may be a
    lighter one, as the simulator's): every claim field with its type, and a ``result``."""
    for name, kind in CLAIM_FIELDS.items():
        if not isinstance(report.get(name), kind):
            return f"missing fields: {name}"
    if "result" not in report:
        return "missing fields: result"
    return None


def _who(worker: bytes) -> str:
    return str(NodeId(worker))


Key = tuple[int, bytes]  # (task, worker)


@dataclass
class JobState:
    """What the core holds of one running job."""

    spec: specs.JobSpec
    created: float
    target: dict[int, int]  # task -> replicas wanted (grows when replicas disagree)
    replicas: dict[Key, ReplicaRow] = field(default_factory=dict)  # in the order placed
    decisions: dict[int, Decision] = field(default_factory=dict)
    heard: dict[Key, float] = field(default_factory=dict)
    progress: dict[Key, float] = field(default_factory=dict)
    needs_placement: bool = True
    checking: set[Key] = field(default_factory=set)  # fetches not yet answered
    offering: set[Key] = field(default_factory=set)  # offers not yet answered
    misses: dict[Key, int] = field(default_factory=dict)  # failed checks in a row
    stragglers: set[int] = field(default_factory=set)  # tasks given a spare replica for a slow one
    straggling: set[Key] = field(default_factory=set)  # replicas past their budget
    budgets: list[float] = field(default_factory=list)  # per task: seconds before it straggles
    shapes: dict[int, ResultShape | None] = field(default_factory=dict)  # built when first needed
    first_shape: ResultShape | None = None  # one task's shape: the others copy it (no parsing)
    place_at: float = -1e18  # placement is not due before this (after a failed round)
    placement_failures: int = 0  # failed rounds since a placement last succeeded
    short_of_trust: set[int] = field(default_factory=set)  # tasks whose quorum lacks trust
    ceiling: dict[int, float] = field(default_factory=dict)  # task -> trust its workers carry

    def __post_init__(self) -> None:
        self.budgets = [
            STRAGGLER_FLOOR + STRAGGLER_FACTOR * estimate_seconds(t) for t in self.spec.tasks
        ]

    @property
    def job(self) -> bytes:
        return self.spec.job_id

    @property
    def deadline(self) -> float:
        return self.created + self.spec.deadline

    def rows(self, task: int) -> list[ReplicaRow]:
        return [r for r in self.replicas.values() if r.task == task]

    def result_problem(self, task: int, result: Any) -> str | None:
        """Why ``result`` is not shaped as this job's task ``task`` returns, or None.

        The circuit is parsed once per job, not once per task: every task of a job has the
        same width (a sweep varies no size), so later tasks copy the first shape built and take
        only their own points (:func:`~qiz.compute.results.shape_of` with ``like``)."""
        if task not in self.shapes:
            if not self.shapes:
                self.first_shape = shape_of(self.spec.tasks[task])
                self.shapes[task] = self.first_shape
            elif self.first_shape is None:  # a kind with no known shape: no task has one
                self.shapes[task] = None
            else:
                self.shapes[task] = shape_of(self.spec.tasks[task], self.first_shape)
        shape = self.shapes[task]
        return None if shape is None else result_problem(shape, result)


class JobCore:
    """Every decision of the submitter's side; see the module docstring for the protocol."""

    def __init__(
        self,
        tables: CoordinatorTables,
        scores: PeerScores,
        *,
        self_id: bytes,
        attest: Attest,
        check_claim: ClaimCheck = real_check_claim,
        poll_after: float = 3.0,
        placement: str = "greedy",
        new_seed: Callable[[], int] = lambda: secrets.randbelow(2**63),
        adaptive: bool = True,
    ) -> None:
        self.tables = tables
        self.scores = scores
        self.self_id = self_id
        self.attest = attest
        self.check_claim = check_claim
        self.poll_after = poll_after
        self.placement = placement
        self.new_seed = new_seed
        self.adaptive = adaptive
        self.jobs: dict[bytes, JobState] = {}
        self.counters = {
            "submitted": 0,
            "done": 0,
            "failed": 0,
            "lost": 0,
            "disagreed": 0,
            # job.progress for a replica the sender does not hold (or malformed): dropped
            "progress_dropped": 0,
        }

    # ------------------------------------------------------------------ the owner's inputs

    def submit(self, spec: specs.JobSpec, now: float) -> list[Action]:
        """Start (or restart, if it failed or was cancelled) a checked job. Placement waits
        for the driver's :meth:`place`: results already waiting at workers may come first."""
        row = self.tables.job(spec.job_id)
        if row is None:
            self.tables.add_job(spec.job_id, spec.raw, now)
        else:
            self.tables.restart_job(spec.job_id, now)
        self.counters["submitted"] += 1
        self._note(
            spec.job_id,
            now,
            "submitted",
            detail=f"{spec.kind}: {len(spec.tasks)} task(s), {spec.replicas} replicas each, "
            f"quorum {spec.quorum}" + ("" if row is None else f" (again, after {row.state})"),
        )
        state = JobState(spec, now, {t.index: spec.replicas for t in spec.tasks})
        state.needs_placement = False
        self.jobs[spec.job_id] = state
        return [
            Emit(
                EventKind.JOB_SUBMITTED,
                {"job": spec.job_id.hex(), "job_kind": spec.kind, "tasks": len(spec.tasks)},
            )
        ]

    def cancel(self, job: bytes, now: float) -> list[Action]:
        """Stop a running job at its submitter's request (nothing if it is not running)."""
        if job not in self.jobs:
            return []
        return self._stop(job, CANCELLED, "cancelled by its submitter", now)

    def resume(
        self,
        limits: specs.Limits,
        now: float,
        *,
        select: Callable[[JobRow], bool] | None = None,
        inputs: Mapping[bytes, Mapping[str, str]] | None = None,
    ) -> list[Action]:
        """Pick up the running jobs of a previous run: their replicas have not been heard of,
        so the next :meth:`tick` fetches every one; finished replicas are decided at once.
        ``select(row)`` picks which jobs (default: all); ``inputs`` holds the fetched
        content-id inputs of their specs, by raw spec."""
        actions: list[Action] = []
        parsed: dict[bytes, specs.JobSpec | SpecError] = {}  # each raw spec parsed once
        for row in self.tables.jobs((RUNNING,)):
            if select is not None and not select(row):
                continue
            if row.spec not in parsed:
                try:
                    given = (inputs or {}).get(row.spec)
                    parsed[row.spec] = specs.parse(row.spec, limits, inputs=given)
                except SpecError as exc:
                    parsed[row.spec] = exc
            spec = parsed[row.spec]
            if isinstance(spec, SpecError):
                self.tables.set_job(row.job, FAILED, now, error=f"stored spec: {spec}")
                continue
            state = JobState(spec, row.created, {t.index: spec.replicas for t in spec.tasks})
            for r in self.tables.replicas(row.job):
                state.replicas[(r.task, r.worker)] = r
                if r.state == DONE and 0 <= r.task < len(spec.tasks):
                    problem = state.result_problem(r.task, r.result)
                    if problem is not None:  # stored by a version that did not check
                        self._update(r, now, state=FAILED, error=f"bad result: {problem}")
            self.jobs[row.job] = state
            self._note(row.job, now, "resumed", detail="the coordinator restarted")
            for task in sorted({r.task for r in state.replicas.values() if r.state == DONE}):
                if row.job in self.jobs:
                    actions += self._evaluate(state, task, now)
        return actions

    def live(self, job: bytes) -> Live | None:
        """What a status needs from memory while the job runs."""
        state = self.jobs.get(job)
        if state is None:
            return None
        return Live(frozenset(state.decisions), dict(state.progress))

    # ------------------------------------------------------------------ placement

    def placement_due(self, now: float | None = None) -> list[bytes]:
        """Running jobs that asked for placement since it last ran (at ``now``: leaving out
        those waiting to retry a round that could not be placed)."""
        return [
            job
            for job, state in self.jobs.items()
            if state.needs_placement and (now is None or state.place_at <= now)
        ]

    def wants(self, job: bytes) -> bool:
        """Whether :meth:`place` would look for workers (the driver refreshes them first)."""
        state = self.jobs.get(job)
        return state is not None and bool(self._wants(state))

    def _wants(self, state: JobState) -> list[tuple[specs.Task, int, set[bytes]]]:
        wants = []
        for task in state.spec.tasks:
            if task.index in state.decisions:
                continue
            rows = state.rows(task.index)
            live = [r for r in rows if r.state in (*ACTIVE, DONE)]
            missing = state.target[task.index] - len(live)
            budget = self._attempts(state) - len(rows)
            if missing > 0 and budget > 0:
                wants.append((task, min(missing, budget), {r.worker for r in rows}))
        return wants

    def place(self, job: bytes, workers: Sequence[WorkerView], now: float) -> list[Action]:
        """Place the replicas a job is missing on ``workers`` (a snapshot); one ``Offer`` each.
        A task that has nothing running and cannot be placed fails the job."""
        state = self.jobs.get(job)
        if state is None:
            return []
        state.needs_placement = False
        scores = [1.0 if w.node == self.self_id else self.scores.get(w.node) for w in workers]
        chosen = [
            i for i, w in enumerate(workers) if w.node == self.self_id or scores[i] >= MIN_SCORE
        ]
        usable = [workers[i] for i in chosen]
        infos = [
            WorkerInfo(
                slots=w.slots,
                max_qubits=w.qubits,
                backlog=w.backlog,
                rtt=w.rtt,
                score=scores[i],
                features=w.features,
            )
            for i, w in zip(chosen, usable, strict=True)
        ]
        actions: list[Action] = []
        if self._trusting(state):  # what the workers known can carry may decide a task now
            actions += self._ceilings(state, usable, infos, now)
            if job not in self.jobs:
                return actions
        wants = self._wants(state)
        items: list[Item] = []
        excluded: list[frozenset[int]] = []
        needs = devices.needs(state.spec)  # a target job goes only where that target runs
        trust: list[float] = []  # per usable worker, worked out only when a task needs trust
        for task, count, used in wants:
            banned = frozenset(i for i, w in enumerate(usable) if w.node in used)
            item = Item(task.index, estimate_seconds(task), task.shape.num_qubits, needs)
            if task.index in state.short_of_trust and self._trusting(state):
                if not trust:
                    weigh = self._weight(state)
                    trust = [weigh(w.node) for w in usable]
                banned = self._trust_tier(item, infos, trust, banned)
            eligible = sum(1 for i, info in enumerate(infos) if item.fits(info) and i not in banned)
            for _ in range(min(count, eligible)):
                items.append(item)
                excluded.append(banned)
        stalled = self._stalled(state, {item.task for item in items})
        if stalled is not None:
            return actions + self._on_stalled(state, *stalled, now)
        if not items:
            return actions
        problem = PlacementProblem(tuple(items), tuple(infos), tuple(excluded))
        try:
            placement = solve(problem, self.placement)
        except PlacementError as exc:  # e.g. too large for qaoa or exact: greedy places it
            log.info("%s placement refused the round (%s); placing greedily", self.placement, exc)
            try:
                placement = solve(problem, "greedy")
            except PlacementError as again:
                return actions + self._placement_failed(state, str(again), now)
        state.placement_failures = 0
        earlier = {item.task: state.rows(item.task) for item in items}
        for item, w in zip(items, placement.assignment, strict=True):
            node = usable[w].node
            why = self._why_more(state, item.task, earlier[item.task])
            self._note(
                job,
                now,
                "placed" if why is None else "retried",
                task=item.task,
                worker=node,
                detail=why or "",
            )
            seed = state.spec.seed if state.spec.seed is not None else self.new_seed()
            self.tables.add_replica(job, item.task, node, seed, now)
            state.replicas[(item.task, node)] = ReplicaRow.new(job, item.task, node, seed, now)
            state.heard[(item.task, node)] = now
            state.offering.add((item.task, node))
            actions.append(
                Emit(
                    EventKind.REPLICA_PLACED,
                    {"job": job.hex(), "task": item.task, "worker": _who(node)},
                )
            )
            actions.append(Offer(job, item.task, node, seed, state.spec.raw))
        return actions

    @staticmethod
    def _trust_tier(
        item: Item, infos: Sequence[WorkerInfo], trust: Sequence[float], banned: frozenset[int]
    ) -> frozenset[int]:
        """A replica placed for trust goes where it adds the most: to an established worker
        (full trust) if one can take it, else to one that adds any trust, else anywhere. The
        tiers are expressed as the workers the item must avoid."""
        able = [i for i, info in enumerate(infos) if item.fits(info) and i not in banned]
        for floor in (1.0 - 1e-9, 1e-9):
            tier = [i for i in able if trust[i] >= floor]
            if tier:
                return banned | frozenset(i for i in able if trust[i] < floor)
        return banned

    @staticmethod
    def _why_more(state: JobState, task: int, rows: list[ReplicaRow]) -> str | None:
        """Why a task gets a replica beyond its first ones, or None for a first placement."""
        if not rows:
            return None
        failed = [r for r in rows if r.state in (FAILED, LOST)]
        if failed:
            last = max(failed, key=lambda r: r.updated)
            return f"after a replica {last.state} at {_who(last.worker)}: {last.error}"
        if task in state.stragglers:
            return "a spare for a slow replica"
        if task in state.short_of_trust:
            return "more trust: the agreeing replicas' workers are new or were caught before"
        return "one more opinion: the replicas so far do not agree"

    def _placement_failed(self, state: JobState, why: str, now: float) -> list[Action]:
        """A round not even greedy could place: the workers known may change (the driver
        refreshes its directory before placing), so try again a little later; but a job that
        keeps failing to place says why now instead of idling to its deadline."""
        state.placement_failures += 1
        if state.placement_failures >= PLACEMENT_TRIES:
            return self._stop(
                state.job,
                FAILED,
                f"placement failed {state.placement_failures} times: {why}",
                now,
            )
        log.warning(
            "job %s: placement failed (%s); again in %.0f s",
            state.job.hex()[:12],
            why,
            PLACEMENT_RETRY,
        )
        state.needs_placement = True
        state.place_at = now + PLACEMENT_RETRY
        return []

    def _on_stalled(self, state: JobState, why: str, untried: bool, now: float) -> list[Action]:
        """A task nobody can take: retried when it was never tried (all busy or not yet
        known: that may pass), the job failed with ``why`` otherwise."""
        if untried:
            return self._placement_failed(state, why, now)
        return self._stop(state.job, FAILED, why, now)

    def _stalled(self, state: JobState, placed: set[int]) -> tuple[str, bool] | None:
        """Why the job must fail, if an undecided task has nothing running and no new replica,
        and whether that task was never tried: then no worker in this round's snapshot could
        take it (the only ones answered busy, or are not known yet), which may pass, so the
        caller retries as for a failed placement instead of failing the job at once."""
        for task in state.spec.tasks:
            if task.index in state.decisions or task.index in placed:
                continue
            rows = state.rows(task.index)
            if any(r.state in ACTIVE for r in rows):
                continue
            reasons = sorted({r.error for r in rows if r.error})
            short = self._short_of_trust(state, task.index)
            if short is not None:
                why = short + ("" if len(rows) >= self._attempts(state) else "; no other worker")
            elif len(rows) >= self._attempts(state):
                why = f"no {state.spec.quorum} of {len(rows)} replicas agreed"
            else:
                why = "; ".join(reasons[:3]) or "no worker can take it"
            return f"task {task.index}: {why}", not rows
        return None

    # ------------------------------------------------------------------ trust

    def _trusting(self, state: JobState) -> bool:
        """Whether the task's accepted group must carry trust: adaptive replication is on and
        the spec asked for a cross-check (quorum 1 is its owner opting out of verification)."""
        return self.adaptive and state.spec.quorum >= 2

    def _need(self, state: JobState, task: int) -> float:
        """The trust a group must carry: the spec's quorum of established workers, or all the
        trust the workers able to run the task could carry together, if that is less (a small
        mesh of strangers asks them all to agree, not for workers it does not have)."""
        quorum = float(state.spec.quorum)
        return min(quorum, state.ceiling.get(task, quorum))

    def _weight(self, state: JobState) -> Weight:
        """Each worker's trust; this node's own replicas carry the whole quorum (it trusts
        itself, as it always has: placement never scored it)."""
        whole = float(state.spec.quorum)

        def weight(worker: bytes) -> float:
            return whole if worker == self.self_id else credit(self.scores.get(worker))

        return weight

    def _ceilings(
        self,
        state: JobState,
        usable: Sequence[WorkerView],
        infos: Sequence[WorkerInfo],
        now: float,
    ) -> list[Action]:
        """Note, per undecided task, how much trust the workers that could run it carry
        together (summed only up to the quorum: a large mesh stops early); then decide again
        the tasks that were short of trust, if their need fell."""
        weigh, quorum = self._weight(state), float(state.spec.quorum)
        needs = devices.needs(state.spec)
        for task in state.spec.tasks:
            if task.index in state.decisions:
                continue
            item = Item(task.index, 0.0, task.shape.num_qubits, needs)
            total = 0.0
            for w, info in zip(usable, infos, strict=True):
                if item.fits(info):
                    total += weigh(w.node)
                    if total >= quorum:
                        break
            state.ceiling[task.index] = min(total, quorum)
        actions: list[Action] = []
        for task in sorted(state.short_of_trust - set(state.decisions)):
            if state.job not in self.jobs:
                break
            actions += self._evaluate(state, task, now)
        return actions

    def _attempts(self, state: JobState) -> int:
        """Replicas one task may place in all (failed and lost ones included)."""
        extra = MAX_TRUST_REPLICAS if self._trusting(state) else 0
        return state.spec.replicas + EXTRA_ATTEMPTS + extra

    def _short_of_trust(self, state: JobState, task: int) -> str | None:
        """Why a task's agreeing replicas do not decide it for lack of trust, or None."""
        if not self._trusting(state):
            return None
        done = [self._replica(r) for r in state.rows(task) if r.state == DONE]
        weight = self._weight(state)
        try:
            group, others, _ = candidates(done, devices.statistical(state.spec), weight)
        except Exception:  # the quorum's own failure is handled where it decides
            return None
        if len(group) < state.spec.quorum:
            return None
        trust = margin(group, others, weight)
        need = self._need(state, task)
        if trust >= need - 1e-9:
            return None
        return (
            f"{len(group)} agreeing replicas carry trust {trust:.2f} of the "
            f"{need:g} needed, after {len(state.rows(task))} of at most "
            f"{self._attempts(state)} replicas"
        )

    @staticmethod
    def _replica(r: ReplicaRow) -> Replica:
        return Replica(
            r.worker,
            r.key or b"",
            r.seed,
            r.engine or "",
            r.result,
            r.digest or b"",
            r.sig or b"",
        )

    # ------------------------------------------------------------------ answers to offers

    def offer_accepted(
        self, job: bytes, task: int, worker: bytes, reply: Any, now: float
    ) -> list[Action]:
        state = self._offered(job, task, worker, now)
        if state is None:
            return []
        said = reply.get("state") if isinstance(reply, dict) else None
        self._note(job, now, "accepted", task=task, worker=worker, detail=f"{said or 'queued'}")
        if said in (DONE, FAILED):
            state.heard[(task, worker)] = -1e18  # it finished before: fetch it on the next tick
        return []

    def offer_refused(
        self, job: bytes, task: int, worker: bytes, *, code: str, message: str, now: float
    ) -> list[Action]:
        """The worker answered the offer with an error. ``busy`` is not an attempt (its queue
        is full): the row goes and the replica is placed elsewhere."""
        state = self._offered(job, task, worker, now)
        if state is None:
            return []
        row = state.replicas.get((task, worker))
        if row is None or row.state not in ACTIVE:
            return []
        if code == "busy":
            del state.replicas[(task, worker)]
            state.heard.pop((task, worker), None)
            self.tables.delete_replica(job, task, worker)
            self._note(job, now, "busy", task=task, worker=worker, detail=message)
        else:
            error = f"refused: {code}: {message}"[:MAX_ERROR]
            self._update(row, now, state=FAILED, error=error)
            self._note(job, now, "replica_failed", task=task, worker=worker, detail=error)
        state.needs_placement = True
        return []

    def offer_failed(
        self, job: bytes, task: int, worker: bytes, why: str, now: float
    ) -> list[Action]:
        """The offer did not reach the worker, or no answer came back: the replica is lost."""
        state = self._offered(job, task, worker, now)
        if state is None:
            return []
        return self._lost(state, task, worker, f"offer failed: {why}", now)

    def _offered(self, job: bytes, task: int, worker: bytes, now: float) -> JobState | None:
        state = self.jobs.get(job)
        if state is None:
            return None
        state.offering.discard((task, worker))
        if (task, worker) in state.replicas:
            state.heard[(task, worker)] = now
        return state

    # ------------------------------------------------------------------ reports

    def progress(self, worker: bytes, body: Any, now: float) -> list[Action]:
        """A pushed ``job.progress {job, task, progress}``: progress means the replica runs.

        Only the worker holding an active replica of that (job, task) is heard; every other
        report (made-up jobs, tasks or workers: issue 13's memory attack) is counted in
        ``progress_dropped`` and leaves no trace, so the core's memory stays per replica."""
        if not isinstance(body, dict):
            self.counters["progress_dropped"] += 1
            return []
        job, task, value = body.get("job"), body.get("task"), _fraction(body.get("progress"))
        state = self.jobs.get(job) if isinstance(job, bytes) else None
        if state is None or not _plain_int(task) or value is None:
            self.counters["progress_dropped"] += 1
            return []
        row = state.replicas.get((task, worker))
        if row is None or row.state not in ACTIVE:
            self.counters["progress_dropped"] += 1
            return []
        state.progress[(task, worker)] = value
        state.heard[(task, worker)] = now
        if row.state == QUEUED:
            self._update(row, now, state=RUNNING)
            self._note(job, now, "started", task=task, worker=worker)
        return []

    def fetched(
        self, job: bytes, task: int, worker: bytes, report: Any, now: float
    ) -> list[Action]:
        """The answer to a :class:`Fetch`."""
        state = self.jobs.get(job)
        if state is None:
            return []
        state.checking.discard((task, worker))
        state.misses.pop((task, worker), None)
        if isinstance(report, dict) and report.get("state") != "unknown":
            report = {**report, "job": job, "task": task}
        else:
            report = {"job": job, "task": task, "state": "unknown"}
        return self.report(worker, report, now)

    def fetch_failed(
        self, job: bytes, task: int, worker: bytes, why: str, *, unreachable: bool, now: float
    ) -> list[Action]:
        """A :class:`Fetch` got no answer. Unreachable (no link and no way to dial): lost now;
        a timeout or refusal: lost only after ``MAX_MISSES`` in a row."""
        state = self.jobs.get(job)
        if state is None:
            return []
        state.checking.discard((task, worker))
        # a refusal may come back at once: the next check is ``poll_after`` from this one, or
        # the wake event would spend both misses (``MAX_MISSES``) within a tick or two
        if (task, worker) in state.replicas:
            state.heard[(task, worker)] = now
        if unreachable:
            return self._lost(state, task, worker, f"unreachable: {why}", now)
        misses = state.misses.get((task, worker), 0) + 1
        state.misses[(task, worker)] = misses
        if misses >= MAX_MISSES:
            return self._lost(state, task, worker, f"no answer {misses} times: {why}", now)
        return []

    def report(self, worker: bytes, report: Any, now: float) -> list[Action]:
        """A worker's report (pushed ``job.done``, or fetched): store it and decide its task."""
        if not isinstance(report, dict):
            return []
        job, task = report.get("job"), report.get("task")
        state = self.jobs.get(job) if isinstance(job, bytes) else None
        if state is None or not _plain_int(task):
            return []
        row = state.replicas.get((task, worker))
        if row is None or row.state not in ACTIVE:
            return []  # not ours, or already settled
        state.heard[(task, worker)] = now
        kind = report.get("state")
        if kind in (QUEUED, RUNNING):
            value = _fraction(report.get("progress"))
            if value is not None:
                state.progress[(task, worker)] = value
            if row.state != kind:
                self._update(row, now, state=kind)
                if kind == RUNNING:
                    self._note(job, now, "started", task=task, worker=worker)
            return []
        if kind == DONE:
            problem = _claim_fields_problem(report) or self.check_claim(
                report, job=job, task=task, seed=row.seed, worker=worker
            )
            if problem is None:
                bad = state.result_problem(task, report["result"])
                problem = None if bad is None else f"bad result: {bad}"
            else:
                problem = f"bad claim: {problem}"
            if problem is None:
                self._update(
                    row,
                    now,
                    state=DONE,
                    result=report["result"],
                    digest=report["digest"],
                    sig=report["sig"],
                    key=report["key"],
                    engine=report["engine"],
                )
                self._note(job, now, "replica_done", task=task, worker=worker)
                return self._evaluate(state, task, now)
            self.scores.disagreed(worker)
            error = problem[:MAX_ERROR]
        elif kind == "unknown":
            return self._lost(state, task, worker, "the worker does not know the task", now)
        else:
            error = str(report.get("error") or "failed")[:MAX_ERROR]
            self.scores.failed(worker)
        self._update(row, now, state=FAILED, error=error)
        self._note(job, now, "replica_failed", task=task, worker=worker, detail=error)
        state.needs_placement = True
        return []

    def collected(
        self, job: bytes, task: int, holder: bytes, report: Any, now: float
    ) -> list[Action]:
        """A result found through the DHT (a worker announced it held results of this job):
        taken as a replica when it is finished and ran with a seed the spec allows. Returns no
        action for a report that does not qualify."""
        state = self.jobs.get(job)
        if state is None or not isinstance(report, dict) or report.get("state") != DONE:
            return []
        if not 0 <= task < len(state.spec.tasks) or (task, holder) in state.replicas:
            return []
        seed = report.get("seed")
        if state.spec.seed is not None and seed != state.spec.seed:
            return []
        if seed is not None and not _plain_int(seed):
            return []
        self.tables.add_replica(job, task, holder, seed, now)
        state.replicas[(task, holder)] = ReplicaRow.new(job, task, holder, seed, now)
        self._note(job, now, "collected", task=task, worker=holder, detail="announced in the DHT")
        actions: list[Action] = [
            Emit(
                EventKind.REPLICA_COLLECTED,
                {"job": job.hex(), "task": task, "worker": _who(holder)},
            )
        ]
        return actions + self.report(holder, {**report, "job": job, "task": task}, now)

    # ------------------------------------------------------------------ deciding

    def _evaluate(self, state: JobState, task: int, now: float) -> list[Action]:
        if task in state.decisions:
            return []
        rows = state.rows(task)
        done = [self._replica(r) for r in rows if r.state == DONE]
        trusting = self._trusting(state)
        # a seed means exact agreement, whatever engine a worker says it ran: replicas of
        # another engine version simply disagree (docs/jobs.md); no seed, or a target that
        # Qiskit transpiles (its version may differ between workers), means chi-square
        try:
            sampled = devices.statistical(state.spec)
            if trusting:
                decision = decide(
                    done,
                    state.spec.quorum,
                    sampled,
                    weight=self._weight(state),
                    need=self._need(state, task),
                )
            else:
                decision = decide(done, state.spec.quorum, sampled)
        except Exception as exc:  # whatever a peer's result breaks, it must not stop the core
            return self._incomparable(state, task, done, exc, now)
        if decision is None:
            running = [
                r for r in rows if r.state in ACTIVE and (r.task, r.worker) not in state.straggling
            ]
            if not running:  # no agreement yet, and nothing but stragglers may still answer
                stuck = sum(1 for r in rows if r.state in ACTIVE)
                state.target[task] = len(done) + stuck + 1  # one more opinion
                state.needs_placement = True
                short = self._short_of_trust(state, task)
                if short is not None:
                    state.short_of_trust.add(task)
                    self._note(state.job, now, "more_trust", task=task, detail=short)
                elif len(done) >= state.spec.quorum:
                    self._note(
                        state.job,
                        now,
                        "no_quorum",
                        task=task,
                        detail=f"{len(done)} results, no {state.spec.quorum} agree: one more",
                    )
            return []
        state.decisions[task] = decision
        self._note(
            state.job,
            now,
            "decided",
            task=task,
            detail=f"{decision.test} test: {len(decision.agreeing)} agreeing"
            + "".join(f", disagreeing {_who(r.worker)}" for r in decision.disagreeing),
        )
        actions: list[Action] = [
            Emit(
                EventKind.TASK_DECIDED,
                {
                    "job": state.job.hex(),
                    "task": task,
                    "test": decision.test,
                    "agreeing": [_who(r.worker) for r in decision.agreeing],
                    "disagreeing": [_who(r.worker) for r in decision.disagreeing],
                },
            )
        ]
        for r in decision.agreeing:
            self.scores.agreed(r.worker)
        for r in decision.disagreeing:
            self.scores.disagreed(r.worker)
            self.counters["disagreed"] += 1
        for r in rows:
            if r.state in ACTIVE:
                self._update(r, now, state=CANCELLED)
                actions.append(CancelAt(state.job, r.worker, task))
        if len(state.decisions) == len(state.spec.tasks):
            actions += self._finish(state, now)
        return actions

    def _incomparable(
        self, state: JobState, task: int, done: list[Replica], exc: Exception, now: float
    ) -> list[Action]:
        """The quorum raised on these results (the shape check should have refused what
        caused it): fail the replica(s) whose result cannot even be compared with itself, or
        else the one that arrived last, count it against its worker, and decide again without
        it; the task places a new replica in its stead."""
        log.warning(
            "job %s task %d: the quorum could not compare the results (%s: %s)",
            state.job.hex()[:12],
            task,
            type(exc).__name__,
            exc,
        )
        sampled = devices.statistical(state.spec)
        offending = []
        for r in done:
            try:
                decide([r, replace(r)], 2, sampled)  # compared with a copy of itself
            except Exception:  # this is the test for a result that breaks the quorum
                offending.append(r.worker)
        if not offending:
            rows = [state.replicas[(task, r.worker)] for r in done]
            offending = [max(rows, key=lambda row: row.updated).worker]
        why = f"the result cannot be compared: {type(exc).__name__}: {exc}"[:MAX_ERROR]
        for worker in offending:
            self._update(state.replicas[(task, worker)], now, state=FAILED, error=why)
            self._note(state.job, now, "replica_failed", task=task, worker=worker, detail=why)
            self.scores.disagreed(worker)
        state.needs_placement = True
        return self._evaluate(state, task, now)

    def _finish(self, state: JobState, now: float) -> list[Action]:
        decisions = [state.decisions[t.index] for t in state.spec.tasks]
        attestation = self.attest(state.spec, decisions, now)
        self.tables.set_job(state.job, DONE, now, attestation=attestation)
        self._note(state.job, now, "done", detail=f"{len(decisions)} task(s) attested")
        self.jobs.pop(state.job, None)
        self.counters["done"] += 1
        log.info("job %s done: %d tasks attested", state.job.hex()[:12], len(decisions))
        return [
            Emit(EventKind.JOB_DONE, {"job": state.job.hex(), "tasks": len(decisions)}),
            JobFinished(state.job),
        ]

    def _stop(self, job: bytes, end: str, error: str, now: float) -> list[Action]:
        state = self.jobs.pop(job, None)
        kind = EventKind.JOB_FAILED if end == FAILED else EventKind.JOB_CANCELLED
        actions: list[Action] = [Emit(kind, {"job": job.hex(), "error": error})]
        self.tables.set_job(job, end, now, error=error)
        self._note(job, now, end, detail=error)
        if end == FAILED:
            self.counters["failed"] += 1
            log.info("job %s failed: %s", job.hex()[:12], error)
        rows = list(state.replicas.values()) if state else self.tables.replicas(job)
        for r in rows:
            if r.state in ACTIVE:
                if state is not None:
                    self._update(r, now, state=CANCELLED)
                else:
                    self.tables.update_replica(job, r.task, r.worker, now, state=CANCELLED)
        for worker in dict.fromkeys(r.worker for r in rows):
            actions.append(CancelAt(job, worker, None))
        if end == FAILED:
            actions.append(JobFailed(job, error))
        return actions

    def _lost(
        self, state: JobState, task: int, worker: bytes, why: str, now: float
    ) -> list[Action]:
        row = state.replicas.get((task, worker))
        if row is None or row.state not in ACTIVE:
            return []
        why = why[:MAX_ERROR]
        self._update(row, now, state=LOST, error=why)
        self._note(state.job, now, "replica_lost", task=task, worker=worker, detail=why)
        self.scores.failed(worker)
        self.counters["lost"] += 1
        state.needs_placement = True
        log.info(
            "job %s task %d: replica at %s lost (%s)",
            state.job.hex()[:12],
            task,
            NodeId(worker).short(),
            why,
        )
        return [
            Forget(worker),
            Emit(
                EventKind.REPLICA_LOST,
                {"job": state.job.hex(), "task": task, "worker": _who(worker), "why": why},
            ),
        ]

    def _note(
        self,
        job: bytes,
        now: float,
        event: str,
        *,
        task: int | None = None,
        worker: bytes | None = None,
        detail: str = "",
    ) -> None:
        """One entry of the job's timeline, stored where the decision is taken."""
        self.tables.add_log(job, now, event, task=task, worker=worker, detail=detail)

    def _update(self, row: ReplicaRow, now: float, **fields: Any) -> None:
        """Change a replica in memory and in the table together."""
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated = now
        self.tables.update_replica(row.job, row.task, row.worker, now, **fields)

    # ------------------------------------------------------------------ time

    def tick(self, now: float, linked: Callable[[bytes], bool] = lambda _: True) -> list[Action]:
        """Deadlines, silent or unlinked replicas (one ``Fetch`` each), stragglers.
        ``linked(worker)`` says whether a link to it is open now."""
        actions: list[Action] = []
        for job, state in list(self.jobs.items()):
            if now >= state.deadline:
                actions += self._stop(
                    job, FAILED, f"the deadline ({state.spec.deadline} s) passed", now
                )
                continue
            for key, r in list(state.replicas.items()):
                if r.state not in ACTIVE or key in state.checking or key in state.offering:
                    continue
                silent = now - state.heard.get(key, -1e18) >= self.poll_after
                if silent or not linked(r.worker):
                    state.checking.add(key)
                    actions.append(Fetch(job, r.task, r.worker))
                actions += self._spare_for_straggler(state, r, now)
        return actions

    def _spare_for_straggler(self, state: JobState, row: ReplicaRow, now: float) -> list[Action]:
        """A replica far beyond its estimate is *straggling*: its task gets one spare replica
        elsewhere (once per task), so a worker that keeps saying "running" cannot hold a task
        until the deadline; and a straggler no longer counts as running when the task looks
        for one more opinion (see :meth:`_evaluate`)."""
        key = (row.task, row.worker)
        if key in state.straggling or row.task in state.decisions:
            return []
        if now - row.assigned < state.budgets[row.task]:
            return []
        state.straggling.add(key)
        if row.task in state.stragglers:  # its spare is out: may the task want one more?
            return self._evaluate(state, row.task, now)
        state.stragglers.add(row.task)
        self._note(
            state.job,
            now,
            "straggling",
            task=row.task,
            worker=row.worker,
            detail=f"running for {now - row.assigned:.0f} s, beyond its estimate",
        )
        state.target[row.task] += 1
        state.needs_placement = True
        return [
            Emit(
                EventKind.REPLICA_STRAGGLING,
                {"job": state.job.hex(), "task": row.task, "worker": _who(row.worker)},
            )
        ]

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do without any other input (a job's
        deadline, a replica falling silent, a straggler's budget), or None when nothing runs.
        Replicas whose link drops are not foreseen: a live driver also ticks periodically."""
        times: list[float] = []
        for state in self.jobs.values():
            times.append(state.deadline)
            if state.needs_placement and state.placement_failures:
                times.append(state.place_at)
            for key, r in state.replicas.items():
                if r.state not in ACTIVE:
                    continue
                if key not in state.checking and key not in state.offering:
                    times.append(state.heard.get(key, -1e18) + self.poll_after)
                if key not in state.straggling and r.task not in state.decisions:
                    times.append(r.assigned + state.budgets[r.task])
        return min(times, default=None)
