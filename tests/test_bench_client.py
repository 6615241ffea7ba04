"""The Python client benchmark (``bench/python_client.py``) in its quick mode on a real 2-node
loopback mesh: every row is produced, the engines agreed (the mesh's counts equal the local
run's, every sampler fits the exact distributions, estimator values match Qiskit's, the cut run
is within its stated error of the exact values), and ``bench/report.py --only client`` puts
the section in the page once. Nothing here is timed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("qiskit_addon_cutting")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, python_client, report
from bench.harness import Figure

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def figures() -> Iterator[list[Figure]]:
    yield python_client.run(quick=True, busy_ok=True, nodes=2, seed=7)


def by_path(figures: list[Figure], path: str) -> dict[str, Figure]:
    return {f.extra["engine"]: f for f in figures if f.extra["path"] == path}


def test_the_quick_run_makes_every_row_and_the_engines_agree(figures: list[Figure]) -> None:
    samplers = by_path(figures, "sampler")
    assert set(samplers) == {"mesh", "local", "qiskit"}
    for f in samplers.values():
        assert f.value > 0 and f.extra["points"] == python_client.QUICK_POINTS[0]
        assert f.extra["chi2_p_min"] >= python_client.CHI2_FLOOR
    mesh = samplers["mesh"].extra
    assert mesh["equal_to_local"] and mesh["kinds"] == ["circuits"] and mesh["jobs"] == 1
    assert mesh["nodes"] == 2 and mesh["replicas"] == python_client.REPLICAS

    estimators = by_path(figures, "estimator")
    assert set(estimators) == {"mesh", "local", "qiskit"}
    points = python_client.QUICK_ESTIMATOR_POINTS
    assert estimators["mesh"].extra["jobs"] == points  # one job per scattered point
    assert estimators["mesh"].extra["kinds"] == ["estimator"]
    assert all(f.extra["max_abs_diff"] <= python_client.EV_TOLERANCE for f in estimators.values())

    cuts = by_path(figures, "cut")
    assert set(cuts) == {"mesh", "local"}
    for f in cuts.values():
        x = f.extra
        assert x["qubits"] == 2 * python_client.QUICK_CUT_WIDTH and x["cuts"] >= 1
        assert max(x["subcircuit_widths"]) <= x["max_qubits"]
        assert x["max_error"] <= 5 * x["std_bound"]
        assert {"cut_s", "run_s", "reconstruct_s"} <= set(x)
    assert cuts["mesh"].extra["jobs"] == 1  # every sub-experiment in one circuits job


def test_the_section_has_both_tables_and_says_it_was_a_smoke_test(
    figures: list[Figure],
) -> None:
    text = python_client.section(figures)
    assert text.startswith(python_client.HEADING)
    assert text.count("| sampler, 8 points x 256 shots |") == 3
    assert text.count("| estimator, 8 points |") == 3
    assert "counts = local's" in text and "1 circuits job(s)" in text
    assert "| 12 qubits, max_qubits 8, 1000 shots |" in text
    assert "a --quick run (smoke test, not a measurement)" in text
    assert "2 `qiz node start` processes" in text


def test_only_client_puts_its_section_in_the_page_once(
    figures: list[Figure], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Distributed jobs (`bench/jobs.py`)\n\njobs table\n"
    page.write_text(before)
    monkeypatch.setattr(report, "DOCS", page)
    # the figures measured above, not a second mesh run
    monkeypatch.setattr(python_client, "run", lambda quick, busy_ok: figures)
    monkeypatch.setattr(sys, "argv", ["report.py", "--only", "client", "--quick", "--busy-ok"])
    report.main()
    first = page.read_text()
    assert first.startswith(before.rstrip("\n"))
    assert first.count(python_client.HEADING.strip()) == 1
    assert "| sampler, 8 points x 256 shots |" in first
    report.main()  # again: the section is replaced, not added twice
    assert page.read_text() == first


def test_a_full_run_is_refused_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (harness.MAX_LOAD + 1.0, 0.0, 0.0))
    with pytest.raises(SystemExit, match="the machine is busy"):
        python_client.run(quick=False, busy_ok=False)  # refused before any node starts


def test_the_chi_square_check_rejects_counts_from_another_distribution() -> None:
    exact = [{"00": 0.5, "11": 0.5}, {"01": 0.25, "10": 0.75}]
    fits = [{"00": 130, "11": 126}, {"01": 61, "10": 195}]
    assert python_client.agreement(fits, exact) > 0.1
    wrong = [{"00": 256}, {"01": 61, "10": 195}]  # one point wrong is enough
    assert python_client.agreement(wrong, exact) < python_client.CHI2_FLOOR
    assert python_client.chi_square({"00": 250, "01": 6}, exact[0]) == 0.0  # impossible outcome
    assert python_client.tvd({"00": 256}, exact[0]) == 0.5
