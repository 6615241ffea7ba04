"""Adaptive replication (docs/jobs.md, "Trust"): a task's accepted group must carry the trust of
``quorum`` established workers, not merely count ``quorum`` replicas. Unit cases drive the real
:class:`JobCore`; the small-scale runs drive it in the simulator against colluding liars."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.compute import quorum
from qiz.compute.actions import JobFailed, Offer
from qiz.compute.core import (
    EXTRA_ATTEMPTS,
    MAX_TRUST_REPLICAS,
    JobCore,
    WorkerView,
    credit,
)
from qiz.compute.jobdb import CoordinatorTables, open_db
from qiz.compute.quorum import Replica, result_digest
from qiz.sim.jobs import (
    Behaviour,
    JobsConfig,
    JobsReport,
    JobsSim,
    sim_check_claim,
    sim_claim,
    sim_spec,
)
from qiz.trust.scores import INITIAL, PeerScores

ME = b"\xee" * 32
WORKERS = [bytes([i]) * 32 for i in range(1, 25)]


class Core:
    """A JobCore (adaptive, the default) over an in-memory database, playing the workers."""

    def __init__(self, *, replicas: int = 2, quorum: int = 2, workers: int = 8) -> None:
        db = open_db(None)
        self.scores = PeerScores(db)
        self.tables = CoordinatorTables(db)
        self.core = JobCore(
            self.tables,
            self.scores,
            self_id=ME,
            attest=lambda spec, decisions, now: b"",
            check_claim=sim_check_claim,
        )
        self.spec = sim_spec(1, 1, replicas, quorum, 600, random.Random(3))
        self.job = self.spec.job_id
        self.views = [WorkerView(w, 2, 30, 0.0, 0.01) for w in WORKERS[:workers]]
        self.now = 0.0

    def done(self, worker: bytes, value: str = "right") -> dict[str, Any]:
        result = {"value": value}
        digest = result_digest(result)
        return {
            "job": self.job, "task": 0, "state": "done", "seed": 1, "engine": "sim",
            "key": worker, "result": result, "digest": digest,
            "sig": sim_claim(worker, self.job, 0, 1, digest),
        }  # fmt: skip

    def run(
        self, views: list[WorkerView] | None = None, answer: Any = lambda worker: "right"
    ) -> tuple[list[bytes], list]:
        """Submit, then answer every offer (``answer(worker)``: the value it returns) and
        place again, until the job ends; returns the workers offered to, in order, and the
        last actions."""
        views = self.views if views is None else views
        actions = self.core.submit(self.spec, self.now)
        actions += self.core.place(self.job, views, self.now)
        offered: list[bytes] = []
        while True:
            sent = [a for a in actions if isinstance(a, Offer)]
            if not sent or self.job not in self.core.jobs:
                return offered, actions
            actions = []
            for offer in sent:
                offered.append(offer.worker)
                self.now += 1.0
                actions += self.core.offer_accepted(
                    self.job, 0, offer.worker, {"state": "queued"}, self.now
                )
                report = self.done(offer.worker, answer(offer.worker))
                actions += self.core.report(offer.worker, report, self.now)
            if self.job in self.core.jobs:
                actions += self.core.place(self.job, views, self.now)

    def decided(self) -> bool:
        row = self.tables.job(self.job)
        return row is not None and row.state == "done"


def establish(scores: PeerScores, worker: bytes) -> None:
    while scores.get(worker) < 1.0:
        scores.agreed(worker)


def test_credit_is_full_for_established_half_for_strangers_and_nothing_once_caught() -> None:
    assert credit(1.0) == 1.0
    assert credit(INITIAL) == pytest.approx(0.5)  # a stranger: four agreeing ones decide
    assert credit(INITIAL / 2) == 0.0  # halved once: no trust until agreements rebuild it


def test_established_workers_decide_at_the_spec_s_quorum() -> None:
    c = Core()
    for w in WORKERS[:8]:
        establish(c.scores, w)
    offered, _ = c.run()
    assert len(offered) == 2 and c.decided()


def test_strangers_need_more_agreeing_replicas_and_the_extras_go_to_trusted_workers() -> None:
    c = Core()
    offered, _ = c.run()
    assert c.decided()
    assert len(offered) == 4  # 4 strangers x 1/2 = the trust of 2 established workers
    assert "more_trust" in [e.event for e in c.tables.log(c.job)]
    # with one established worker known, the first trust replica goes to it
    c = Core()
    establish(c.scores, WORKERS[7])
    views = c.views[:2] + c.views[7:8] + c.views[2:7]
    views = [WorkerView(v.node, 8 if i < 2 else 1, 30, 0.0, 0.01) for i, v in enumerate(views)]
    offered, _ = c.run(views)
    assert c.decided()
    assert offered[2] == WORKERS[7] and len(offered) == 3  # 1/2 + 1/2 + 1


def test_the_node_s_own_replica_is_trusted() -> None:
    c = Core()
    views = [WorkerView(ME, 8, 30, 0.0, 0.0), *c.views[:3]]
    offered, _ = c.run(views)
    assert ME in offered and c.decided() and len(offered) == 2


def test_a_small_mesh_of_strangers_must_agree_whole_and_may_then_decide() -> None:
    c = Core(workers=3)  # 3 strangers carry 1.5: the need falls to it
    offered, _ = c.run()
    assert c.decided() and len(offered) == 3
    c = Core(workers=3)
    offered, actions = c.run(answer=lambda w: "wrong" if w == WORKERS[2] else "right")
    assert not c.decided() and len(offered) == 3  # one dissent: no group can carry it
    assert "trust 0.50 of the 1.5 needed, after 3 of at most 16 replicas; no other" in next(
        a.reason for a in actions if isinstance(a, JobFailed)
    )
    c = Core(workers=24)
    for w in WORKERS:
        c.scores.disagreed(w)  # every worker caught once: none carries trust, and the core
    offered, _ = c.run()  # can ask for none: the plain quorum, the best it can do
    assert c.decided() and len(offered) == 2


def test_a_quorum_of_one_is_not_cross_checked() -> None:
    c = Core(replicas=1, quorum=1)
    offered, _ = c.run()
    assert len(offered) == 1 and c.decided()


def test_a_task_that_cannot_gather_the_trust_fails_within_the_bound_and_says_why() -> None:
    c = Core(workers=24)
    # strangers split between two answers (placed in the directory's order): the margin of
    # either group never reaches the trust of two established workers
    offered, actions = c.run(answer=lambda w: "right" if WORKERS.index(w) % 2 else "wrong")
    bound = c.spec.replicas + EXTRA_ATTEMPTS + MAX_TRUST_REPLICAS
    assert len(offered) == bound and len(set(offered)) == bound
    failed = [a for a in actions if isinstance(a, JobFailed)]
    assert failed and "trust 0.00 of the 2 needed" in failed[0].reason, failed
    assert f"at most {bound} replicas" in failed[0].reason


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["right", "wrong", "other"]), min_size=24, max_size=24),
    st.lists(st.integers(-3, 5), min_size=24, max_size=24),
    st.integers(2, 3),
)
def test_any_answers_and_scores_end_the_job_within_the_bound(answers, history, replicas) -> None:
    c = Core(replicas=replicas, workers=24)
    for worker, events in zip(WORKERS, history, strict=True):
        for _ in range(abs(events)):
            (c.scores.agreed if events > 0 else c.scores.disagreed)(worker)
    offered, _ = c.run(answer=lambda w: answers[WORKERS.index(w)])
    assert c.job not in c.core.jobs  # decided or failed, never stuck
    assert len(offered) == len(set(offered)) <= replicas + EXTRA_ATTEMPTS + MAX_TRUST_REPLICAS
    row = c.tables.job(c.job)
    if row.state == "done":
        said = [answers[WORKERS.index(w)] for w in offered]
        assert max(said.count(v) for v in set(said)) >= 2  # the quorum stays the floor
    else:
        assert row.state == "failed" and row.error


def test_the_heaviest_group_leads_and_a_trusted_dissent_must_be_outweighed() -> None:
    def replica(worker: bytes, value: str) -> Replica:
        digest = result_digest({"value": value})
        return Replica(worker, worker, 1, "sim", {"value": value}, digest, b"")

    liars = [replica(bytes([i]) * 32, "wrong") for i in (1, 2)]
    honest = replica(b"\x09" * 32, "right")
    weights = {b"\x01" * 32: 0.0, b"\x02" * 32: 0.0, b"\x09" * 32: 1.0}
    replicas = [*liars, honest]
    assert quorum.decide(replicas, 2, False).accepted.digest == liars[0].digest  # plain: 2 > 1
    group, others, _ = quorum.candidates(replicas, False, weights.__getitem__)
    assert group == (honest,) and {r.worker for r in others} == {r.worker for r in liars}
    assert quorum.decide(replicas, 2, False, weight=weights.__getitem__, need=2.0) is None
    more = [*replicas, replica(b"\x0a" * 32, "right"), replica(b"\x0b" * 32, "right")]
    weights |= {b"\x0a" * 32: 0.5, b"\x0b" * 32: 0.5}
    decision = quorum.decide(more, 2, False, weight=weights.__getitem__, need=2.0)
    assert decision is not None and decision.accepted.digest == honest.digest
    weights[b"\x01" * 32] = 0.5  # a dissent that carries trust is subtracted
    assert quorum.decide(more, 2, False, weight=weights.__getitem__, need=2.0) is None


# ---------------------------------------------------------------------- at small scale

LIARS = 0.3
CONFIG = JobsConfig(
    workers=300, jobs=400, tasks=(1, 2), replicas=(2, 3), liars=LIARS, joins=30, arrivals=200.0
)


@pytest.fixture(scope="module")
def runs() -> dict[bool, tuple[JobsSim, JobsReport]]:
    out = {}
    for adaptive in (False, True):
        sim = JobsSim(JobsConfig(**{**CONFIG.__dict__, "adaptive": adaptive}), seed=1)
        out[adaptive] = (sim, sim.run())
    return out


def test_thirty_percent_colluding_liars_win_no_task_with_adaptive_replication(runs) -> None:
    _, plain = runs[False]
    _, adaptive = runs[True]
    tasks = sum(len(d) for d in adaptive.decisions.values())
    assert adaptive.running == 0 and tasks > 500
    assert all(s == "done" for s in adaptive.states.values())
    # the bound with no history and random placement is f^4 per task (4 agreeing strangers):
    # about 5 wrong in 600 tasks; scores (a liar caught once carries no trust) make it 0 here
    assert adaptive.wrong_tasks() == 0
    assert plain.wrong_tasks() > LIARS**4 * tasks  # the same run under the plain quorum of 2


def test_extra_replicas_stay_within_the_bound(runs) -> None:
    sim, report = runs[True]
    most = 0
    for job in report.states:
        spec = sim.spec_of[job]
        per_task: dict[int, int] = {}
        for row in sim.tables.replicas(job):
            per_task[row.task] = per_task.get(row.task, 0) + 1
        bound = spec.replicas + EXTRA_ATTEMPTS + MAX_TRUST_REPLICAS
        assert max(per_task.values()) <= bound
        most = max(most, max(per_task.values()) - spec.replicas)
    assert most > 0  # some tasks did take extra replicas


def test_work_reaching_liars_falls_as_they_are_caught(runs) -> None:
    def share(report: JobsReport, start: float, end: float) -> float:
        window = [liar for t, liar in report.offers if start <= t < end]
        return sum(window) / len(window)

    arrivals = CONFIG.arrivals  # jobs arrive over this many seconds
    _, plain = runs[False]
    _, adaptive = runs[True]
    first = share(adaptive, 0.0, arrivals / 10)
    later = share(adaptive, arrivals / 2, arrivals)
    assert first > 0.1 and later < first / 4
    assert later < share(plain, arrivals / 2, arrivals)  # trust starves caught liars sooner


def test_without_liars_established_workers_are_not_over_replicated() -> None:
    config = JobsConfig(
        workers=200, jobs=300, tasks=(1, 1), replicas=(2, 2), liars=0.0, dies=0.0,
        stragglers=0.0, slow=0.0, joins=0, arrivals=300.0,
    )  # fmt: skip
    sim = JobsSim(config, seed=2)
    report = sim.run()
    assert all(s == "done" for s in report.states.values())
    late = [len(sim.tables.replicas(job)) for job in list(report.states)[len(report.states) // 2 :]]
    # once workers have agreed a few times, a task costs the spec's two replicas (the rest
    # reached a stranger, as load spreads: 4 strangers, or 1 established and 2, decide)
    assert sum(n == 2 for n in late) >= 0.9 * len(late)
    assert sum(late) / len(late) < 2.2
    liars = [n for n, b in report.behaviours.items() if b is Behaviour.LIAR]
    assert not liars
