"""The noisy-simulation benchmark (``bench/noise.py``) end to end at 6 qubits, and its
agreement check: the statistics it relies on, and that it reports a wrong engine.

No timing is asserted: the benchmark's figures are measured, never tested."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, noise, report
from bench.harness import Figure
from bench.noise_peers import gates, pairs

PLAN = noise.Plan(shots=400, rounds=1)


@pytest.fixture(scope="module")
def figures() -> list[Figure]:
    pytest.importorskip("qiskit_aer")
    return noise.run(
        quick=True,
        busy_ok=True,
        workloads=("qaoa", "random"),
        plans={6: PLAN},
        engines=("qiz", "aer"),
    )  # exits non-zero on any disagreement


def test_quick_run_produces_rows_and_the_engines_agree(figures: list[Figure]) -> None:
    rows = [f for f in figures if f.group == "noise"]
    assert {(f.extra["workload"], f.extra["engine"]) for f in rows} == {
        (w, e) for w in ("qaoa", "random") for e in ("qiz", "aer")
    }
    for f in rows:
        x = f.extra
        assert x["status"] == "ok", x["error"]
        assert f.value > 0 and x["n"] == 6
        # the first call and the round pooled (and any busy round that was re-run)
        assert x["pooled_shots"] >= 2 * PLAN.shots and x["pooled_shots"] % PLAN.shots == 0
        assert x["agrees"] is True
        assert 0 <= x["tvd"] <= x["tvd_bound"] and x["max_z"] <= x["z_critical"]
        assert x["path"]
    ours = [f for f in rows if f.extra["engine"] == "qiz"]
    assert all(1 <= f.extra["states_per_call"] <= PLAN.shots for f in ours)
    page = noise.section(figures, quick=True)
    assert page.startswith(noise.HEADING)
    assert "A --quick run (smoke test, not a measurement)" in page
    assert page.count("| qaoa | 6 |") == 2 and page.count("| random | 6 |") == 2


def test_only_noise_puts_its_section_in_the_page_once(
    figures: list[Figure], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Quantum simulators (`bench/quantum.py`)\n\nquantum table\n"
    page.write_text(before)
    monkeypatch.setattr(report, "DOCS", page)
    monkeypatch.setattr(noise, "run", lambda quick, busy_ok: figures)  # not a second run
    monkeypatch.setattr(sys, "argv", ["report.py", "--only", "noise", "--quick", "--busy-ok"])
    report.main()
    first = page.read_text()
    assert first.startswith(before.rstrip("\n"))
    assert first.count(noise.HEADING.strip()) == 1 and "| random | 6 | " in first
    report.main()  # again: the section is replaced, not added twice
    assert page.read_text() == first


def test_a_full_run_is_refused_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (harness.MAX_LOAD + 1.0, 0.0, 0.0))
    with pytest.raises(SystemExit, match="the machine is busy"):
        noise.run(quick=False, busy_ok=False)  # refused before any worker starts


def test_expectations_read_bit_zero_rightmost() -> None:
    counts = {"001": 3, "110": 1}  # qubit 0 is 1 three times out of four
    values = noise.expectations(counts, 3, [(0,), (1,), (2,), (0, 1)])
    assert values.tolist() == [-0.5, 0.5, 0.5, -1.0]


def test_ideal_expectations_equal_a_sum_over_basis_states() -> None:
    from qiz.quantum.core.circuit import Circuit
    from qiz.quantum.core.statevector import statevector

    n = 6
    observables = [(q,) for q in range(n)] + pairs("random", n, noise.SEED)
    exact = noise.ideal_expectations("random", n, noise.SEED, observables)
    circuit = Circuit(n, 0)
    for name, qubits, params in gates("random", n, noise.SEED):
        circuit.append(name, qubits, params)
    probs = np.abs(statevector(circuit)) ** 2
    index = np.arange(1 << n)
    for value, obs in zip(exact, observables, strict=True):
        parity = sum((index >> q) & 1 for q in obs) & 1
        assert value == pytest.approx(float(np.sum(probs * (1 - 2 * parity))), abs=1e-12)
    assert np.abs(exact).max() < 1  # a spread-out state: no value is trivially +-1


def test_tvd_bound_is_the_documented_one() -> None:
    # docs/noise.md: K = 16, N = 40,000, delta = 1e-6 -> 0.0358 for two samples
    assert noise.tvd_bound(40_000, 40_000, 16, 1e-6) == pytest.approx(0.0358, abs=5e-4)
    assert noise.z_critical(60) > noise.z_critical(1) > 3.5


def _pool(counts: dict[str, int]) -> noise.Pooled:
    return noise.Pooled(Counter(counts), sum(counts.values()))


def test_check_reports_a_wrong_engine() -> None:
    n = 6
    rng = np.random.default_rng(1)
    exact = rng.integers(0, 2, size=(4000, n))
    biased = exact.copy()
    biased[:, 0] = rng.random(4000) < 0.8  # qubit 0 reads 1 far too often

    def counts(bits: np.ndarray) -> dict[str, int]:
        return dict(Counter("".join(str(b) for b in row[::-1]) for row in bits))

    ref = _pool(counts(exact))
    same = _pool(counts(rng.integers(0, 2, size=(4000, n))))
    wrong = _pool(counts(biased))
    checks, problems = noise.check("random", n, {"aer": ref, "qiz": same})
    assert problems == [] and all(c.agrees for c in checks)
    checks, problems = noise.check("random", n, {"aer": ref, "qiz": wrong})
    assert len(problems) == 1 and "DISAGREEMENT" in problems[0] and "qiz" in problems[0]
    (bad,) = [c for c in checks if c.engine == "qiz"]
    assert bad.max_z > bad.z_critical and not math.isnan(bad.tvd)


def test_full_run_drops_what_would_overrun_it_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = noise.PLANS[24]
    assert "dropped at n=24" in noise.skip_reason("qaoa", "aer-branching", 24, plan, quick=False)
    assert noise.skip_reason("qaoa", "aer-branching", 24, plan, quick=True) == ""
    monkeypatch.setattr(noise, "LAST", {("random", "aer"): (20, 2.0)})  # 2 s a shot at n=20
    reason = noise.skip_reason("random", "aer", 24, plan, quick=False)
    assert reason.startswith(f"projected {2.0 * 16 * plan.shots:.0f} s a call")
    assert noise.skip_reason("random", "qiz", 24, plan, quick=False) == ""
