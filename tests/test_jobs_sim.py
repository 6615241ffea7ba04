"""The coordinator's decision core at scale, in simulated time: a thousand workers that die,
straggle, lie and join; hundreds of jobs (see :mod:`qiz.sim.jobs`)."""

from __future__ import annotations

import pytest

from qiz.sim.jobs import Behaviour, JobsConfig, JobsReport, run_jobs
from qiz.trust.scores import INITIAL


@pytest.fixture(scope="module")
def big() -> JobsReport:
    return run_jobs(JobsConfig(workers=1000, jobs=200), seed=1)


def test_every_job_is_decided_or_fails_with_a_reason_never_stuck(big: JobsReport) -> None:
    assert big.running == 0  # the core holds no job at the end
    assert len(big.states) + len(big.refused) == 200
    for job, state in big.states.items():
        assert state in ("done", "failed"), (job.hex(), state)
        if state == "failed":
            assert big.errors[job], job.hex()
        else:
            assert len(big.decisions[job]) >= 1
    assert sum(s == "done" for s in big.states.values()) >= 190
    # the run did meet the trouble it is about
    assert big.events["replica.lost"] > 0 and big.events["replica.straggling"] > 0
    assert big.counters["disagreed"] > 0
    assert big.sim_seconds > 300  # arrivals alone span 300 simulated seconds


def test_liars_never_win_a_quorum_where_honest_replicas_outnumber_them(big: JobsReport) -> None:
    liars = {n for n, b in big.behaviours.items() if b is Behaviour.LIAR}
    checked = caught = 0
    for job, decisions in big.decisions.items():
        for task, decision in enumerate(decisions):
            finished = [*decision.agreeing, *decision.disagreeing]
            lying = sum(r.worker in liars for r in finished)
            if len(finished) - lying > lying:
                checked += 1
                assert not any(r.worker in liars for r in decision.agreeing), (job.hex(), task)
                assert decision.accepted.digest == big.truth[(job, task)]
                caught += lying
    assert checked > 500 and caught > 0  # liars did answer, and were outvoted


def test_outvoted_liars_lose_trust() -> None:
    from qiz.sim.jobs import JobsSim

    sim = JobsSim(JobsConfig(workers=200, jobs=40, joins=20, liars=0.2), seed=5)
    report = sim.run()
    assert report.running == 0
    liars = [n for n, b in report.behaviours.items() if b is Behaviour.LIAR]
    outvoted = {r.worker for ds in report.decisions.values() for d in ds for r in d.disagreeing}
    assert outvoted & set(liars)
    assert all(sim.scores.get(n) < INITIAL for n in outvoted & set(liars))


def test_the_simulation_is_deterministic_for_a_seed() -> None:
    config = JobsConfig(workers=300, jobs=60, joins=30, arrivals=120.0)
    first, second = run_jobs(config, seed=7).summary(), run_jobs(config, seed=7).summary()
    assert first == second
    assert run_jobs(config, seed=8).summary() != first


def test_with_liars_scored_the_simulation_still_repeats_exactly() -> None:
    """Scores decay in simulated time, not wall time: with liars charged and rewarded over a
    run, the same seed places every replica on the same workers again (the adversarial
    tables and the adaptive-replication figures are functions of their seeds)."""
    config = JobsConfig(workers=200, jobs=400, liars=0.2, arrivals=120.0)

    def decided(seed: int) -> tuple:
        report = run_jobs(config, seed=seed)
        workers = [
            (job, i, sorted(r.worker for r in d.agreeing))
            for job, ds in sorted(report.decisions.items())
            for i, d in enumerate(ds)
        ]
        return report.summary(), report.wrong_tasks(), workers, report.offers

    assert decided(3) == decided(3)
    from qiz.sim.jobs import JobsSim

    sim = JobsSim(config, seed=3)
    sim.run()
    assert sim.now > 0 and sim.scores.clock() == sim.now  # the scores' clock is the sim's
