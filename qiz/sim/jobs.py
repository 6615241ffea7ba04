"""Jobs at scale in simulated time: the coordinator's real decision core against a thousand
simulated workers that die, straggle, lie and join.

The :class:`~qiz.compute.core.JobCore` is the one a live node runs, over the same SQLite tables
and peer scores; only its surroundings are simulated. Messages are callbacks on one event
queue with a modelled round-trip time; an offer or fetch to a dead worker fails at once
(unreachable) or after the driver's timeout (no answer), as over QMP. Time advances only
through the queue, so thousands of simulated seconds take a few seconds of wall time, and a run
is a function of its seed.

Specs and claims are simulated too, for speed: a spec is a :class:`~qiz.compute.spec.JobSpec`
whose tasks have a size but no circuit, and a claim is a keyed hash instead of an ML-DSA
signature. The claim check (injected into the core) verifies that hash, the seed and the result
digest, so a *liar* -- a worker that returns a wrong result under a perfectly valid claim --
passes it and must be caught by the quorum, exactly as on a live node. Liars collude: all of
them return the same wrong result for a task, the hardest case for a quorum.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qiz import wire
from qiz.compute import execute
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
from qiz.compute.core import (
    JobCore,
    WorkerView,
    check_capacity,
)
from qiz.compute.errors import JobError
from qiz.compute.jobdb import DONE, RUNNING, CoordinatorTables, open_db
from qiz.compute.placement import estimate_seconds
from qiz.compute.quorum import Decision, result_digest
from qiz.crypto.ids import NodeId
from qiz.trust.scores import PeerScores

SIM_ENGINE = "sim/1"
CLAIM_TAG = b"qiz/sim-claim/v1\x00"


class Behaviour(enum.Enum):
    HONEST = "honest"
    DIES = "dies"  # honest until its death time, then silent or unreachable for good
    STRAGGLER = "straggler"  # accepts work and says "running" for ever
    SLOW = "slow"  # finishes, but many times later than its estimate
    LIAR = "liar"  # finishes on time with a wrong result under a valid claim


@dataclass
class JobsConfig:
    workers: int = 1000
    jobs: int = 200
    tasks: tuple[int, int] = (1, 6)  # tasks per job, inclusive range
    replicas: tuple[int, int] = (2, 3)
    quorum: int = 2
    deadline: int = 1800  # seconds, per job
    arrivals: float = 300.0  # jobs are submitted uniformly over this many seconds
    joins: int = 100  # workers that appear during the run (counted in ``workers``)
    dies: float = 0.10  # fractions of the workers with each behaviour
    stragglers: float = 0.03
    slow: float = 0.03
    liars: float = 0.05
    unreachable: float = 0.5  # of the dead: fail at once (no link, no dial) vs time out
    rtt: float = 0.05
    offer_timeout: float = 60.0  # as the live driver's
    fetch_timeout: float = 5.0
    forget_for: float = 30.0  # a forgotten worker reappears after this (a directory refresh)
    busy_for: float = 5.0
    poll_after: float = 3.0
    tick: float = 0.25  # the live driver's tick: the finest the core is consulted
    max_queue: int = 8  # tasks one worker holds at once before it answers busy
    horizon: float = 20_000.0  # simulated seconds before the run gives up (a stuck core)
    adaptive: bool = True  # the core's adaptive replication (False: the plain quorum)


@dataclass
class SimWorker:
    node: bytes
    behaviour: Behaviour
    slots: int
    qubits: int
    speed: float  # actual seconds = estimate x speed
    joins_at: float = 0.0
    dies_at: float = float("inf")
    held: dict[tuple[bytes, int], dict[str, Any]] = field(default_factory=dict)
    running: dict[tuple[bytes, int], float] = field(default_factory=dict)  # key -> ends

    def alive(self, now: float) -> bool:
        return self.joins_at <= now < self.dies_at

    def backlog(self, now: float) -> float:
        """Seconds of accepted work left, as its capacity record would say (capped)."""
        if not self.running:
            return 0.0
        return sum(min(3600.0, max(0.0, ends - now)) for ends in self.running.values())


@dataclass
class JobsReport:
    """What a run did, for tests and the benchmark table."""

    config: JobsConfig
    seed: int
    states: dict[bytes, str]  # job -> final state in the coordinator's table
    errors: dict[bytes, str | None]
    decisions: dict[bytes, list[Decision]]  # job -> its tasks' decisions (done jobs)
    behaviours: dict[bytes, Behaviour]  # worker -> how it behaves
    truth: dict[tuple[bytes, int], bytes]  # (job, task) -> the honest result digest
    refused: dict[bytes, str]  # jobs refused at submission (no workers able), and why
    counters: dict[str, int]
    events: dict[str, int]  # event kind -> how many
    sim_seconds: float  # when the last job ended
    wall_seconds: float
    messages: int
    running: int  # jobs the core still holds at the end (0 unless stuck)
    offers: list[tuple[float, bool]] = field(default_factory=list)  # (when, to a liar)

    def summary(self) -> dict[str, Any]:
        """Plain figures (no wall time): equal for equal seeds."""
        by_state: dict[str, int] = {}
        for state in self.states.values():
            by_state[state] = by_state.get(state, 0) + 1
        return {
            "jobs": len(self.states),
            "refused": len(self.refused),
            "by_state": dict(sorted(by_state.items())),
            "counters": dict(self.counters),
            "events": dict(sorted(self.events.items())),
            "sim_seconds": round(self.sim_seconds, 6),
            "messages": self.messages,
            "wrong_tasks": self.wrong_tasks(),
            "errors": sorted(e for e in self.errors.values() if e),
        }

    def wrong_tasks(self) -> int:
        """Decided tasks whose accepted result is not the honest one."""
        return sum(
            d.accepted.digest != self.truth[(job, i)]
            for job, decisions in self.decisions.items()
            for i, d in enumerate(decisions)
        )


def sim_claim(worker: bytes, job: bytes, task: int, seed: int | None, digest: bytes) -> bytes:
    """The simulated signature: only ``worker`` makes it (in the simulation's rules)."""
    return hashlib.sha3_256(CLAIM_TAG + wire.encode([worker, job, task, seed, digest])).digest()


def sim_check_claim(
    report: Any, *, job: bytes, task: int, seed: int | None, worker: bytes
) -> str | None:
    """The checks of :func:`qiz.compute.attest.check_claim`, with the simulated signature."""
    key, digest, sig = report.get("key"), report.get("digest"), report.get("sig")
    if not all(isinstance(v, bytes) for v in (key, digest, sig)):
        return "missing fields"
    if key != worker:
        return "the claim's key is not the worker's"
    if report.get("seed") != seed:
        return "ran with another seed"
    if result_digest(report.get("result")) != digest:
        return "the result does not match its digest"
    if sig != sim_claim(worker, job, task, seed, digest):
        return "the signature does not verify"
    return None


def sim_spec(  # noqa: PLR0917 - the figures of one job, in the order a spec lists them
    index: int, tasks: int, replicas: int, quorum: int, deadline: int, rng: random.Random
) -> specs.JobSpec:
    """A job spec with sized tasks and no circuits (the core never runs them)."""
    body = {
        "v": 1,
        "kind": "sweep",  # shaped as a sweep of one point per task, for job_status
        "params": {"over": "sim", "index": index, "axes": {"i": list(range(tasks))}, "shard": 1},
        "replicas": replicas,
        "quorum": quorum,
        "seed": index,
        "deadline": deadline,
    }
    body_bytes = wire.encode(body)
    job = specs.job_id_of(body_bytes)
    shapes = []
    for t in range(tasks):
        qubits = rng.randint(8, 26)
        evaluations = max(1, int(rng.expovariate(1.0) * 3e9 / (1 << qubits)))  # ~10 s mean
        shape = execute.Shape(qubits, 0, 0, evaluations)
        shapes.append(specs.Task(t, "sim", {}, None, shape))
    raw = wire.encode({"body": body_bytes, "sig": b""})
    return specs.JobSpec(raw, body, body_bytes, job, NodeId(bytes(32)), tuple(shapes))


class JobsSim:
    """One coordinator (a real :class:`JobCore`) and ``config.workers`` simulated workers."""

    def __init__(self, config: JobsConfig | None = None, *, seed: int = 1) -> None:
        self.config = config or JobsConfig()
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.messages = 0
        self.db = open_db(None)
        # scores decay in simulated time: a run is a function of its seed (wall time is not)
        self.scores = PeerScores(self.db, clock=lambda: self.now)
        self.tables = CoordinatorTables(self.db)
        self.me = hashlib.sha3_256(b"coordinator").digest()
        self.decisions: dict[bytes, list[Decision]] = {}
        self.core = JobCore(
            self.tables,
            self.scores,
            self_id=self.me,
            attest=self._attest,
            check_claim=sim_check_claim,
            poll_after=self.config.poll_after,
            new_seed=lambda: self.rng.randrange(2**63),
            adaptive=self.config.adaptive,
        )
        self.workers: dict[bytes, SimWorker] = {}
        self.hidden: dict[bytes, float] = {}  # worker -> until when the directory leaves it out
        self.truth: dict[tuple[bytes, int], bytes] = {}
        self.events: dict[str, int] = {}
        self.specs: list[specs.JobSpec] = []
        self.refused: dict[bytes, str] = {}  # jobs refused at submission, and why
        self.last_end = 0.0
        self.spec_of: dict[bytes, specs.JobSpec] = {}
        self._tick_at: float | None = None
        self.offers: list[tuple[float, bool]] = []  # (when, to a liar) per replica offered
        self._build()

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        c, rng = self.config, self.rng
        kinds = (
            [Behaviour.DIES] * round(c.workers * c.dies)
            + [Behaviour.STRAGGLER] * round(c.workers * c.stragglers)
            + [Behaviour.SLOW] * round(c.workers * c.slow)
            + [Behaviour.LIAR] * round(c.workers * c.liars)
        )
        kinds += [Behaviour.HONEST] * (c.workers - len(kinds))
        rng.shuffle(kinds)
        joiners = set(rng.sample(range(c.workers), min(c.joins, c.workers)))
        for i, behaviour in enumerate(kinds):
            node = hashlib.sha3_256(b"worker" + i.to_bytes(4, "big")).digest()
            worker = SimWorker(
                node,
                behaviour,
                slots=rng.choice((1, 2, 4, 8)),
                qubits=rng.choice((22, 24, 26, 28)),
                speed=rng.uniform(0.5, 2.0),
                joins_at=rng.uniform(0, c.arrivals) if i in joiners else 0.0,
            )
            if behaviour is Behaviour.DIES:
                worker.dies_at = worker.joins_at + rng.expovariate(1 / c.arrivals)
            self.workers[node] = worker
        for index in range(c.jobs):
            spec = sim_spec(
                index,
                rng.randint(*c.tasks),
                rng.randint(*c.replicas),
                c.quorum,
                c.deadline,
                rng,
            )
            self.specs.append(spec)
            self.spec_of[spec.job_id] = spec
            for task in spec.tasks:
                self.truth[(spec.job_id, task.index)] = result_digest(
                    self._honest(spec.job_id, task.index)
                )
            self.schedule(rng.uniform(0, c.arrivals), lambda s=spec: self._submit(s))

    @staticmethod
    def _honest(job: bytes, task: int) -> dict[str, Any]:
        return {"value": hashlib.sha3_256(job + task.to_bytes(4, "big")).hexdigest()}

    @staticmethod
    def _lie(job: bytes, task: int) -> dict[str, Any]:
        return {"value": "forged:" + hashlib.sha3_256(job + task.to_bytes(4, "big")).hexdigest()}

    def _attest(self, spec: specs.JobSpec, decisions: Sequence[Decision], now: float) -> bytes:
        self.decisions[spec.job_id] = list(decisions)
        return wire.encode([d.accepted.digest for d in decisions])

    # ------------------------------------------------------------------ the event queue

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, action))

    def run(self) -> JobsReport:
        began = time.perf_counter()
        while self._queue and self.now <= self.config.horizon:
            self.now, _, action = heapq.heappop(self._queue)
            action()
        rows = self.tables.jobs()
        return JobsReport(
            config=self.config,
            seed=self.seed,
            states={r.job: r.state for r in rows},
            errors={r.job: r.error for r in rows},
            decisions=self.decisions,
            behaviours={n: w.behaviour for n, w in self.workers.items()},
            truth=self.truth,
            refused=dict(self.refused),
            counters=dict(self.core.counters),
            events=dict(self.events),
            sim_seconds=self.last_end,
            wall_seconds=time.perf_counter() - began,
            messages=self.messages,
            running=len(self.core.jobs),
            offers=list(self.offers),
        )

    def _arm_tick(self, at: float) -> None:
        """Make sure the core is consulted no later than ``at``."""
        if self._tick_at is not None and self._tick_at <= at:
            return
        self._tick_at = at
        self.schedule(at - self.now, self._tick)

    def _tick(self) -> None:
        """What a live driver's periodic tick does; the next one comes at the core's next
        deadline, or a tick after new input (see :meth:`perform`), whichever is first."""
        if self._tick_at is None or self.now < self._tick_at:
            return  # superseded by an earlier tick
        self._tick_at = None
        self.perform(self.core.tick(self.now))
        self._place_due()
        due = self.core.next_deadline()
        if due is not None:
            self._arm_tick(max(due, self.now + self.config.tick))

    # ------------------------------------------------------------------ the driver's part

    def _submit(self, spec: specs.JobSpec) -> None:
        try:  # as the live driver: a job no known set of workers could decide is refused
            check_capacity(spec, self._directory())
        except JobError as exc:
            self.refused[spec.job_id] = str(exc)
            return
        self.perform(self.core.submit(spec, self.now))
        self.perform(self.core.place(spec.job_id, self._directory(), self.now))

    def _place_due(self) -> None:
        for job in self.core.placement_due(self.now):
            self.perform(self.core.place(job, self._directory(), self.now))

    def _directory(self) -> list[WorkerView]:
        """The workers a coordinator knows now: published (joined) and not left out after a
        loss or a busy answer. Dead workers stay listed until they are found out."""
        return [
            WorkerView(w.node, w.slots, w.qubits, w.backlog(self.now), self.config.rtt)
            for w in self.workers.values()
            if w.joins_at <= self.now
            and self.hidden.get(w.node, -1.0) <= self.now
            and (w.alive(self.now) or w.node not in self.hidden)
        ]

    def perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                self.events[str(action.kind)] = self.events.get(str(action.kind), 0) + 1
            elif isinstance(action, Offer):
                self._send_offer(action)
            elif isinstance(action, Fetch):
                self._send_fetch(action)
            elif isinstance(action, CancelAt):
                self._send_cancel(action)
            elif isinstance(action, Forget):
                self.hidden[action.worker] = self.now + self.config.forget_for
            elif isinstance(action, JobFinished | JobFailed):
                self.last_end = self.now  # the outcome itself is read from the tables
        if actions or self.core.jobs:  # new input may have made work due: as a live tick
            self._arm_tick(self.now + self.config.tick)

    def _rpc(
        self, worker: SimWorker, answer: Callable[[], None], fail: Callable[[bool], None]
    ) -> None:
        """One request/response: ``answer`` runs at the worker a half round trip later and
        its reply lands after the other half; a dead worker is unreachable at once or
        silent until the timeout (``fail(unreachable)``)."""
        self.messages += 1
        if not worker.alive(self.now):
            if self.rng.random() < self.config.unreachable:
                self.schedule(self.config.rtt, lambda: fail(True))
            else:
                self.schedule(self.config.fetch_timeout, lambda: fail(False))
            return
        self.schedule(self.config.rtt, answer)

    def _send_offer(self, offer: Offer) -> None:
        worker = self.workers[offer.worker]
        self.offers.append((self.now, worker.behaviour is Behaviour.LIAR))

        def answer() -> None:
            if (
                len([h for h in worker.held.values() if h["state"] == RUNNING])
                >= self.config.max_queue
            ):
                self.hidden[worker.node] = self.now + self.config.busy_for
                self.perform(
                    self.core.offer_refused(
                        offer.job,
                        offer.task,
                        offer.worker,
                        code="busy",
                        message="queue full",
                        now=self.now,
                    )
                )
                return
            self._accept(worker, offer)
            self.perform(
                self.core.offer_accepted(
                    offer.job, offer.task, offer.worker, {"state": "queued"}, self.now
                )
            )

        def fail(unreachable: bool) -> None:
            why = "unreachable" if unreachable else "no answer"
            self.perform(self.core.offer_failed(offer.job, offer.task, offer.worker, why, self.now))

        self._rpc(worker, answer, fail)

    def _accept(self, worker: SimWorker, offer: Offer) -> None:
        spec = self.spec_of[offer.job]
        estimate = estimate_seconds(spec.tasks[offer.task])
        if worker.behaviour is Behaviour.STRAGGLER:
            ends = float("inf")
        elif worker.behaviour is Behaviour.SLOW:
            ends = self.now + estimate * worker.speed * 50 + 120
        else:
            ends = self.now + estimate * worker.speed
        key = (offer.job, offer.task)
        worker.held[key] = {"state": RUNNING, "ends": ends, "seed": offer.seed}
        worker.running[key] = ends
        if ends != float("inf"):
            self.schedule(ends - self.now, lambda: self._finished(worker, key))

    def _report(self, worker: SimWorker, key: tuple[bytes, int]) -> dict[str, Any]:
        held = worker.held.get(key)
        if held is None:
            return {"state": "unknown"}
        job, task = key
        if held["state"] != DONE:
            ends = held["ends"]
            progress = 0.5 if ends == float("inf") else 0.0
            return {"job": job, "task": task, "state": held["state"], "progress": progress}
        result = (
            self._lie(job, task) if worker.behaviour is Behaviour.LIAR else self._honest(job, task)
        )
        digest = result_digest(result)
        return {
            "job": job,
            "task": task,
            "state": DONE,
            "progress": 1.0,
            "seed": held["seed"],
            "engine": SIM_ENGINE,
            "key": worker.node,
            "result": result,
            "digest": digest,
            "sig": sim_claim(worker.node, job, task, held["seed"], digest),
        }

    def _finished(self, worker: SimWorker, key: tuple[bytes, int]) -> None:
        held = worker.held.get(key)
        if held is None or held["state"] != RUNNING or not worker.alive(self.now):
            return
        held["state"] = DONE
        worker.running.pop(key, None)
        report = self._report(worker, key)
        self.messages += 1  # job.done, pushed; the coordinator answers {"ok": true}
        self.schedule(
            self.config.rtt / 2,
            lambda: self.perform(self.core.report(worker.node, report, self.now)),
        )

    def _send_fetch(self, fetch: Fetch) -> None:
        worker = self.workers[fetch.worker]
        key = (fetch.job, fetch.task)

        def answer() -> None:
            report = self._report(worker, key)
            self.perform(self.core.fetched(fetch.job, fetch.task, fetch.worker, report, self.now))

        def fail(unreachable: bool) -> None:
            why = "unreachable" if unreachable else "timeout"
            self.perform(
                self.core.fetch_failed(
                    fetch.job, fetch.task, fetch.worker, why, unreachable=unreachable, now=self.now
                )
            )

        self._rpc(worker, answer, fail)

    def _send_cancel(self, cancel: CancelAt) -> None:
        worker = self.workers[cancel.worker]
        self.messages += 1
        if not worker.alive(self.now):
            return
        for key in list(worker.held):
            running = worker.held[key]["state"] == RUNNING
            if running and key[0] == cancel.job and cancel.task in (None, key[1]):
                del worker.held[key]
                worker.running.pop(key, None)


def run_jobs(config: JobsConfig | None = None, *, seed: int = 1) -> JobsReport:
    """Build a simulation and run it to the end."""
    return JobsSim(config, seed=seed).run()


__all__ = [
    "Behaviour",
    "JobsConfig",
    "JobsReport",
    "JobsSim",
    "run_jobs",
    "sim_check_claim",
    "sim_claim",
    "sim_spec",
]
