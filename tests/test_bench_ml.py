"""bench/ml.py: the comparison refuses answers that disagree (our engine only, always runs),
the ZZ kernel row is labelled as our complex path, and a quick run against
PennyLane-Lightning (only where the bench extra is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bench import ml
from bench.ml_worker import PATHS, setup_qiz
from bench.quantum_rounds import EngineResult, SizeResult, check_call
from bench.quantum_worker import jsonable


def _answer(workload: str, n: int, marked: int) -> list:
    """Our engine's answer to one call, as a worker sends it."""
    return jsonable(setup_qiz(workload, n, 1).bind({"marked": marked})())


def _size(workload: str, n: int, values: dict[str, list]) -> SizeResult:
    size = SizeResult(workload, n, {}, 1)
    for engine in values:
        size.engines[engine] = EngineResult(engine, path=PATHS[engine, workload])
    devs, problems = check_call(workload, n, values)
    size.problems += problems
    for engine, dev in devs.items():
        size.engines[engine].deviation = dev
    return size


@pytest.mark.parametrize("workload", ml.WORKLOADS)
def test_disagreeing_answers_are_refused(workload) -> None:
    ours = _answer(workload, 4, 3)
    again = _answer(workload, 4, 3)  # the same call twice: equal, accepted
    ml.refuse_disagreements([_size(workload, 4, {"qiz": ours, "lightning": again})])
    for change in (lambda v: v[0] + 1e-6, None):
        wrong = [ours[0], list(ours[1])]
        if change is None:  # one gradient component, or one kernel entry
            wrong[1][len(wrong[1]) // 2] += 1e-6
        else:  # the loss, or the kernel's mean
            wrong[0] = change(wrong)
        size = _size(workload, 4, {"qiz": ours, "lightning": wrong})
        assert any("DISAGREEMENT" in p for p in size.problems)
        with pytest.raises(ml.Disagreement) as refused:
            ml.refuse_disagreements([size])
        assert refused.value.code != 0
    # another call's inputs (fresh samples) give another answer: refused as well
    other = _answer(workload, 4, 4)
    with pytest.raises(ml.Disagreement):
        ml.refuse_disagreements([_size(workload, 4, {"qiz": ours, "lightning": other})])


def test_a_worker_that_ran_another_workload_is_refused() -> None:
    ours = _answer("ml-kernel", 4, 1)
    size = _size("ml-kernel", 4, {"qiz": ours, "lightning": ours})
    size.engines["lightning"].path = "gate-level circuit, controlled PauliZ"  # a Grover worker
    with pytest.raises(ml.Disagreement):
        ml.refuse_disagreements([size])


@pytest.mark.parametrize("workload", ["ml-kernel", "ml-kernel-zz"])
def test_the_kernel_answer_is_a_fidelity_matrix(workload) -> None:
    mean, flat = _answer(workload, 4, 2)
    k = np.array(flat).reshape(ml.BATCH, ml.BATCH)
    assert mean == pytest.approx(k.mean())
    assert np.allclose(k, k.T) and np.allclose(np.diag(k), 1.0)
    assert np.linalg.eigvalsh(k).min() > -1e-10


def test_the_zz_kernel_takes_our_complex_path_and_the_table_says_so() -> None:
    real = setup_qiz("ml-kernel", 4, 1)
    zz = setup_qiz("ml-kernel-zz", 4, 1)
    assert real.path == PATHS["qiz", "ml-kernel"] and "(float64)" in real.path
    assert zz.path == PATHS["qiz", "ml-kernel-zz"] and "(complex128)" in zz.path
    # a different matrix from the re-uploading map's on the same samples
    assert not np.allclose(real.bind({"marked": 1})()[1], zz.bind({"marked": 1})()[1])
    sizes = [_size(w, 4, {"qiz": _answer(w, 4, 1)}) for w in ("ml-kernel", "ml-kernel-zz")]
    rows = ml.peer_table(ml.Results(sizes=sizes)).splitlines()[2:]
    assert rows[0].startswith("| kernel matrix | 4 | real (float64) |")
    assert rows[1].startswith("| kernel matrix, ZZ map | 4 | complex (complex128) |")
    assert "does NOT favour us" in ml.notes(ml.Results(sizes=sizes))


def test_a_zz_worker_labelled_with_the_real_path_is_refused() -> None:
    ours = _answer("ml-kernel-zz", 4, 1)
    size = _size("ml-kernel-zz", 4, {"qiz": ours, "lightning": ours})
    size.engines["qiz"].path = PATHS["qiz", "ml-kernel"]  # the real path: not this workload
    with pytest.raises(ml.Disagreement):
        ml.refuse_disagreements([size])


@pytest.mark.skipif(
    importlib.util.find_spec("pennylane") is None
    or importlib.util.find_spec("pennylane_lightning") is None,
    reason="pennylane and pennylane-lightning are in the bench extra only: "
    "pip install -c constraints.txt -e '.[bench]'",
)
def test_quick_run_against_lightning() -> None:
    results = ml.run(quick=True, busy_ok=True)
    assert [(s.workload, s.n) for s in results.sizes] == [
        (w, n) for w in ml.WORKLOADS for n in ml.QUICK_SIZES
    ]
    for size in results.sizes:
        assert not size.problems
        for engine in ml.ENGINES:
            r = size.engines[engine]
            assert r.status == "ok", (size.workload, size.n, engine, r.error)
            assert r.path == PATHS[engine, size.workload]
            assert r.deviation <= 1e-8
            assert r.times or r.busy_times
    section = ml.section(results)
    assert section.startswith(ml.HEADING)
    assert "Lightning / ours" in section and "Where classical models win" in section
    assert "| kernel matrix, ZZ map | 4 | complex (complex128) |" in section
    assert [r.dataset for r in results.baselines] == ["iris", "iris"]
