"""The quantum benchmark's harness logic (``bench/quantum_rounds.py`` and its tables), without
timing any engine: the alternating order, the busy-round rule on synthetic CPU samples, the
per-call disagreement check, the worker protocol's failures, and the page's section swap."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import quantum_rounds
from bench.quantum_peers import GROVER_ITERATIONS, grover_probability
from bench.quantum_rounds import (
    BUSY_SHARE,
    RETRIES,
    CpuSample,
    EngineResult,
    Session,
    SizePlan,
    SizeResult,
    WorkerFailed,
    WorkerProcess,
    check_call,
    other_share,
    publishable,
    rotation,
    round_params,
    round_verdict,
)
from bench.quantum_tables import markdown, row_figures
from bench.report import replace_section

ENGINES = ("qiz", "qokit", "aer", "lightning", "qulacs")


def test_rotation_puts_every_engine_in_every_place_once_per_cycle() -> None:
    orders = [rotation(ENGINES, r) for r in range(len(ENGINES))]
    for order in orders:
        assert sorted(order) == sorted(ENGINES)
    for place in range(len(ENGINES)):
        assert sorted(order[place] for order in orders) == sorted(ENGINES)
    assert orders[0] != orders[1]
    assert rotation(ENGINES, len(ENGINES)) == orders[0]
    assert rotation((), 3) == []


def test_other_share_subtracts_our_own_cpu() -> None:
    hz, cpus = 100, 2
    before = CpuSample(machine=1000, ours=500, wall=10.0)
    # one second: the machine was busy 150 jiffies, 140 of them ours -> 10 / 200 = 5 %
    quiet = CpuSample(machine=1150, ours=640, wall=11.0)
    assert other_share(before, quiet, cpus, hz) == pytest.approx(0.05)
    # another process took a whole core while ours took the other: 100 / 200 = 50 %
    busy = CpuSample(machine=1200, ours=600, wall=11.0)
    assert other_share(before, busy, cpus, hz) == pytest.approx(0.5)
    assert other_share(before, before, cpus, hz) == 0.0
    assert other_share(before, CpuSample(1000, 700, 11.0), cpus, hz) == 0.0  # never negative


def test_busy_rounds_are_retried_then_kept_as_busy() -> None:
    assert round_verdict(BUSY_SHARE, 0) == "keep"
    assert round_verdict(0.0, RETRIES) == "keep"
    busy = BUSY_SHARE + 0.2
    verdicts = [round_verdict(busy, used) for used in range(RETRIES + 1)]
    assert verdicts == ["retry"] * RETRIES + ["keep-busy"]


def test_ratio_published_only_with_enough_quiet_rounds() -> None:
    assert publishable(4, 7) and not publishable(3, 7)
    assert publishable(1, 1) and not publishable(0, 1)
    assert not publishable(0, 0)


def test_round_params_are_shared_and_fresh() -> None:
    a = round_params("qaoa", 20, 1, 3, 0)
    assert a == round_params("qaoa", 20, 1, 3, 0)  # every engine gets the same angles
    assert a != round_params("qaoa", 20, 1, 4, 0)  # and every call new ones
    assert len(a["gammas"]) == len(a["betas"]) == 4
    theta = round_params("vqe-complex", 12, 1, 0, 120)["theta"]
    assert len(theta) == 120 and all(-math.pi <= t <= math.pi for t in theta)
    marks = {round_params("grover-gates", 20, 1, i, 0)["marked"] for i in range(20)}
    assert len(marks) > 1 and all(0 <= m < 1 << 20 for m in marks)


def test_disagreement_fails_loudly() -> None:
    devs, problems = check_call("qaoa", 20, {"qiz": 12.5, "aer": 12.5 + 1e-12, "qulacs": 12.6})
    assert devs["aer"] < 1e-8 and devs["qulacs"] > 1e-3
    assert len(problems) == 1 and "DISAGREEMENT" in problems[0] and "qulacs" in problems[0]
    good = [-3.0, [0.1, -0.2, 0.3]]
    bad_gradient = [-3.0, [0.1, -0.2, 0.3001]]
    _, problems = check_call("vqe", 12, {"qiz": good, "lightning": list(good)})
    assert problems == []
    _, problems = check_call("vqe", 12, {"qiz": good, "lightning": bad_gradient})
    assert len(problems) == 1 and "lightning" in problems[0]
    # single precision has its own tolerance against our double-precision answer
    _, problems = check_call("large", 28, {"qiz": 30.0, "qiz-single": 30.0 + 1e-6})
    assert problems == []


def test_grover_checked_against_the_analytic_probability() -> None:
    exact = grover_probability(10, GROVER_ITERATIONS)
    assert check_call("grover-gates", 10, {"qiz": exact, "aer": exact})[1] == []
    _, problems = check_call("grover-gates", 10, {"qiz": exact + 1e-6, "aer": exact + 1e-6})
    assert problems and all("analytic" in p for p in problems)


def test_dead_worker_is_reported_as_failed() -> None:
    worker = WorkerProcess("no-such-engine")  # exits at once
    try:
        with pytest.raises(WorkerFailed, match="died"):
            worker.request({"op": "hello"}, timeout=60)
    finally:
        worker.kill()


def test_silent_worker_times_out_and_is_killed() -> None:
    worker = WorkerProcess("qiz")
    try:
        with pytest.raises(WorkerFailed, match="within"):
            worker.request({"op": "membw"}, timeout=0.01)
        assert worker.proc.poll() is not None
    finally:
        worker.kill()


def _busy_size() -> SizeResult:
    ours = EngineResult("qiz", path="p", busy_times=[0.1, 0.1], base_kib=0, peak_kib=16)
    peer = EngineResult("aer", path="p", busy_times=[0.3, 0.3], base_kib=0, peak_kib=16)
    result = SizeResult("qaoa", 10, {"qiz": ours, "aer": peer}, planned_rounds=2)
    result.busy_rounds, result.busy_shares = 2, [0.42, 0.44]
    return result


def test_busy_size_publishes_no_ratio() -> None:
    figures = row_figures(_busy_size(), bandwidth=1e10)
    page = markdown(figures)
    assert "not published: machine busy (43% other CPU)" in page
    assert all(f.extra.get("speedup") is None for f in figures)
    quiet = _busy_size()
    for r in quiet.engines.values():
        r.times, r.busy_times = r.busy_times, []
    quiet.quiet_rounds = 2
    (ours,) = [f for f in row_figures(quiet, 1e10) if f.extra["engine"] == "qiz"]
    assert ours.extra["speedup"] == pytest.approx(3.0)


def test_only_the_quantum_section_is_replaced() -> None:
    page = "# B\n\n## A\n\na\n\n## Quantum simulators (`bench/quantum.py`)\n\nold\n\n## J\n\nj\n"
    heading = "\n## Quantum simulators (`bench/quantum.py`)\n"
    new = replace_section(page, heading, heading + "\nnew\n")
    assert new == page.replace("old", "new")
    with pytest.raises(SystemExit):
        replace_section("# B\n", heading, "x")


class _FakeWorker:
    pid = 0


def test_rounds_reject_busy_samples_and_rotate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic /proc samples through a session's round loop: round 0 stays busy through
    every retry (kept, marked busy), round 1 is quiet, round 2 quiet after one retry."""
    shares = iter([0.5] * (RETRIES + 1) + [0.0, 0.3, 0.02])
    clock = iter(range(1000))

    def sample(pids: object) -> CpuSample:
        t = next(clock)
        if t % 2 == 0:
            return CpuSample(0, 0, float(t))
        busy = int(next(shares) * quantum_rounds.HZ * quantum_rounds.CPUS)
        return CpuSample(busy, 0, float(t))

    monkeypatch.setattr(quantum_rounds, "cpu_sample", sample)
    monkeypatch.setattr(quantum_rounds, "PRE_WINDOW", 0.0)
    session = Session("qaoa", 10, 1, ["qiz", "aer", "qulacs"])
    session.workers = {e: _FakeWorker() for e in ("qiz", "aer", "qulacs")}  # type: ignore[misc]
    orders: list[list[str]] = []

    def call_round(order: list[str], timeout: float, first: bool = False) -> dict:
        orders.append(list(order))
        return {e: 0.1 for e in order}

    monkeypatch.setattr(session, "call_round", call_round)
    session.run_rounds(SizePlan(rounds=3, budget=1e9))
    res = session.result
    assert (res.quiet_rounds, res.busy_rounds, res.discarded_rounds) == (2, 1, RETRIES + 1)
    assert res.busy_shares == [pytest.approx(0.5)]
    assert res.engines["qiz"].times == [0.1, 0.1] and res.engines["qiz"].busy_times == [0.1]
    firsts = [o[0] for o in orders]
    assert firsts[: RETRIES + 1] == ["qiz"] * (RETRIES + 1)  # a retried round keeps its order
    assert firsts[RETRIES + 1 :] == ["aer", "qulacs", "qulacs"]
    assert publishable(res.quiet_rounds, res.planned_rounds)


def test_engine_projected_too_slow_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import quantum

    monkeypatch.setattr(quantum, "LAST", {("vqe-complex", "qulacs"): (20, 19.0)})
    reason = quantum.skip_reason("vqe-complex", "qulacs", 22, quick=False)
    assert reason.startswith("projected 76 s a call from its 19.0 s at n=20")
    assert quantum.skip_reason("vqe-complex", "qulacs", 20, quick=False) == ""
    assert quantum.skip_reason("vqe-complex", "qulacs", 22, quick=True) == ""
