"""QAOA's single-precision mode, its stated error bound, and the paths issue 15 added: levels made
by blocks, the vectorised sincos, two-qubit sweeps with wide tiles, the OpenMP spin count."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy.stats import chisquare

from qiz.quantum.algorithms import qaoa as qaoa_mod
from qiz.quantum.algorithms.qaoa import QaoaSimulator, optimize, single_precision_bound
from qiz.quantum.core.errors import ProblemTooLarge, QuantumError
from qiz.quantum.core.memory import require_memory
from qiz.quantum.kernels import qaoa as qk
from qiz.quantum.problems.qubo import QuboProblem


def random_graph(rng: np.random.Generator, n: int, kind: str) -> QuboProblem:
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 3.0 / n]
    edges = edges or [(0, n - 1)]
    weights = None
    if kind == "float":
        weights = [float(w) for w in rng.uniform(0.5, 1.5, len(edges))]
    elif kind == "few":
        weights = [float(w) for w in rng.choice([0.5, 1.25, 2.0], len(edges))]
    return QuboProblem.maxcut(n, edges, weights)


def dense_state(problem: QuboProblem, gammas: list[float], betas: list[float]) -> np.ndarray:
    """The QAOA state by numpy: exp(-i gamma C) on the diagonal, RX(2 beta) by reshaping."""
    n = problem.num_vars
    diag = problem.diagonal()
    psi = np.full(1 << n, 1 / np.sqrt(1 << n), dtype=np.complex128)
    for g, b in zip(gammas, betas, strict=True):
        psi = psi * np.exp(-1j * g * diag)
        c, s = np.cos(b), -1j * np.sin(b)
        for q in range(n):
            view = psi.reshape(-1, 2, 1 << q)
            a0, a1 = view[:, 0, :].copy(), view[:, 1, :].copy()
            view[:, 0, :], view[:, 1, :] = c * a0 + s * a1, s * a0 + c * a1
    return psi


@pytest.fixture(params=["natural", "wide-tiles"])
def tiles(request, monkeypatch):
    """Also run with small blocks, an odd number of qubits per high pass (the one-qubit sweep
    after the two-qubit ones) and tiles wider than 8, so those paths run at small sizes."""
    if request.param == "wide-tiles":
        monkeypatch.setattr(qaoa_mod, "BLOCK_BITS", 5)
        monkeypatch.setattr(qaoa_mod, "HIGH_GROUP_BITS", 3)
        monkeypatch.setattr(qaoa_mod, "TILE_BYTES", 16 * 64 * 8)
    return request.param


@pytest.mark.parametrize("kind", ["int", "float", "few"])
def test_double_precision_equals_dense_numpy(kind, tiles, monkeypatch):
    monkeypatch.setattr(qaoa_mod, "MAX_LEVELS", 64)  # float weights: the sincos path from n = 9
    rng = np.random.default_rng(5)
    for n in (4, 9, 12):
        problem = random_graph(rng, n, kind)
        gammas, betas = list(rng.uniform(-2, 2, 3)), list(rng.uniform(-2, 2, 3))
        sim = QaoaSimulator(problem)
        if kind != "few":
            assert (sim.level is None) == (kind == "float" and n >= 9)
        ref = dense_state(problem, gammas, betas)
        assert np.abs(sim.statevector(gammas, betas) - ref).max() < 1e-12
        expected = float(np.sum(np.abs(ref) ** 2 * problem.diagonal()))
        assert sim.expectation(gammas, betas) == pytest.approx(expected, abs=1e-11)


def test_large_angles_take_libm_phases_and_stay_exact(monkeypatch):
    monkeypatch.setattr(qaoa_mod, "MAX_LEVELS", 64)
    calls = {"direct": 0, "sincos": 0}
    for name in calls:
        kernel = getattr(qk, f"low_pass_{name}")

        def spy(*args, _kernel=kernel, _name=name):
            calls[_name] += 1
            return _kernel(*args)

        monkeypatch.setattr(qk, f"low_pass_{name}", spy)
    rng = np.random.default_rng(8)
    problem = random_graph(rng, 10, "float")
    sim = QaoaSimulator(problem)
    assert sim.level is None
    gammas = [3.0e5, 0.2]  # |gamma| * max |C| beyond SINCOS_MAX_ANGLE in the first layer
    assert abs(gammas[0]) * float(np.abs(problem.diagonal()).max()) > qk.SINCOS_MAX_ANGLE
    ref = dense_state(problem, gammas, [0.4, 0.1])
    assert np.abs(sim.statevector(gammas, [0.4, 0.1]) - ref).max() < 1e-10
    assert calls == {"direct": 1, "sincos": 1}


@njit(cache=True)
def _sincos_many(x: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
    for k in range(x.shape[0]):
        c[k], s[k] = qk.sincos(x[k])


def test_sincos_matches_libm_over_its_range():
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.uniform(-4, 4, 50_000),
            rng.uniform(-qk.SINCOS_MAX_ANGLE, qk.SINCOS_MAX_ANGLE, 50_000),
            np.arange(-8, 9) * (np.pi / 4),  # quadrant edges
        ]
    )
    c, s = np.empty_like(x), np.empty_like(x)
    _sincos_many(x, c, s)
    assert np.abs(c - np.cos(x)).max() < 4e-16
    assert np.abs(s - np.sin(x)).max() < 4e-16


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_levels_ranges_and_values_by_blocks_equal_the_diagonal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 16))
    lin = {i: float(rng.integers(-3, 4)) for i in range(n) if rng.random() < 0.7}
    quad = {
        (a, b): float(rng.integers(-3, 4))
        for a in range(n)
        for b in range(a + 1, n)
        if rng.random() < 0.4
    }
    problem = QuboProblem(n, lin, quad, float(rng.integers(-5, 5)))
    diag = problem.diagonal()
    for x in rng.integers(0, 1 << n, 20):
        assert diag[x] == problem.evaluate(int(x))
    lo, hi = problem.value_range()
    assert (lo, hi) == (diag.min(), diag.max())
    assert np.array_equal(problem.integer_levels(lo, np.uint16), diag - lo)
    keys = rng.integers(0, 1 << n, 50)
    assert np.array_equal(problem.values_at(keys), diag[keys])


# -- single precision ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["int", "float"])
def test_single_precision_energies_within_the_stated_bound(kind):
    """Seeded random graphs and angles at n = 10..16: the float32 state is within the derived
    norm bound of the float64 one, and its energy within the derived energy bound."""
    rng = np.random.default_rng(21 if kind == "int" else 22)
    worst_ratio = 0.0
    for n in (10, 12, 14, 16):
        for _ in range(2):
            problem = random_graph(rng, n, kind)
            p = int(rng.integers(1, 5))
            gammas, betas = list(rng.uniform(-1.5, 1.5, p)), list(rng.uniform(-1.5, 1.5, p))
            double = QaoaSimulator(problem)
            single = QaoaSimulator(problem, "single")
            assert single.evolve(gammas, betas)[0].dtype == np.float32
            state_bound, energy_bound = single_precision_bound(problem, p)
            d = double.statevector(gammas, betas)
            s = single.statevector(gammas, betas)
            assert s.dtype == np.complex64
            assert np.linalg.norm(s.astype(np.complex128) - d) <= state_bound
            gap = abs(single.expectation(gammas, betas) - double.expectation(gammas, betas))
            assert gap <= energy_bound
            worst_ratio = max(worst_ratio, gap / energy_bound)
    assert worst_ratio > 0.0  # the single path really is single: some rounding shows


def test_single_precision_sampling_follows_the_double_distribution():
    rng = np.random.default_rng(3)
    problem = random_graph(rng, 9, "int")
    gammas, betas = [0.4, 0.8], [0.6, 0.3]
    probs = np.abs(QaoaSimulator(problem).statevector(gammas, betas)) ** 2
    single = QaoaSimulator(problem, "single")
    shots = 40_000
    counts = single.sample(gammas, betas, shots, seed=7)
    assert sum(counts.values()) == shots
    observed = np.zeros(probs.shape[0])
    for k, c in counts.items():
        observed[k] = c
    keep = probs * shots >= 5
    expected = probs[keep] * shots
    obs = np.append(observed[keep], shots - observed[keep].sum())
    exp = np.append(expected, shots - expected.sum())
    assert chisquare(obs, exp).pvalue > 1e-6
    # same seed, same draws: the float32 probabilities move only a handful of shots
    twin = QaoaSimulator(problem).sample(gammas, betas, shots, seed=7)
    moved = sum(abs(counts.get(k, 0) - twin.get(k, 0)) for k in set(counts) | set(twin))
    assert moved <= 10


def test_single_precision_optimizer_and_refusals():
    rng = np.random.default_rng(4)
    problem = random_graph(rng, 8, "int")
    a = optimize(problem, 1, maxiter=15, seed=2)
    b = optimize(problem, 1, maxiter=15, seed=2, precision="single")
    assert b.optimum == a.optimum and b.evaluations == a.evaluations
    assert b.energy == pytest.approx(a.energy, abs=1e-3)
    with pytest.raises(QuantumError, match="precision must be"):
        QaoaSimulator(problem, "half")
    assert QaoaSimulator.maxcut(3, [(0, 1), (1, 2)], None, precision="single").precision == (
        "single"
    )


def test_memory_accounts_for_the_precision_at_31_qubits():
    """31 qubits in single precision (16 GiB state + a uint8 level array) fit a 24 GiB
    machine's ~22 GiB available; in double precision they are refused with the sizes."""
    available = 22 << 30
    single = qaoa_mod.state_vectors_needed("single", 1)
    require_memory(31, single, available, precision="single")
    with pytest.raises(ProblemTooLarge, match=r"31 qubits need about 35\.6 GiB"):
        require_memory(31, qaoa_mod.state_vectors_needed("double", 1), available, "double")
    with pytest.raises(ProblemTooLarge):  # a float64 cost diagonal (untabulated) does not fit
        require_memory(31, qaoa_mod.state_vectors_needed("single", 8), available, "single")


# -- the OpenMP wait policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "- 3000"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE -"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE -"),
        ({"GOMP_SPINCOUNT": "5"}, "- 5"),
    ],
)
def test_threads_module_asks_for_a_short_spin_unless_the_user_chose(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = (
        "import os, qiz.quantum.core.threads\n"
        "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


# -- the faces: the CLI option and the job field ---------------------------------------------


def test_cli_precision_option_answers_with_its_precision(tmp_path):
    from .helpers import ok_json, one_line_error, qiz

    args = ["qaoa", "maxcut", "--graph", "random:10,3", "--p", "1", "--maxiter", "10", "--json"]
    single = ok_json(qiz(tmp_path, *args, "--precision", "single"))  # checked against its schema
    double = ok_json(qiz(tmp_path, *args))
    assert single["precision"] == "single" and double["precision"] == "double"
    assert single["optimum"] == double["optimum"]
    assert single["energy"] == pytest.approx(double["energy"], abs=1e-3)
    line = one_line_error(
        qiz(tmp_path, "qaoa", "maxcut", "--graph", "random:6,3", "--precision", "half")
    )
    assert "--precision must be double or single" in line


def test_qaoa_job_takes_a_precision_field():
    from qiz.compute.errors import SpecError
    from qiz.compute.execute import run, shape

    params = {"graph": "random:8,3", "p": 2, "gammas": [0.3, 0.5], "betas": [0.4, 0.2]}
    double = run("qaoa", params, 0)["expectation"]
    single = run("qaoa", {**params, "precision": "single"}, 0)["expectation"]
    assert single != double and single == pytest.approx(double, abs=1e-4)
    with pytest.raises(SpecError, match=r"params\.precision: must be double or single"):
        shape("qaoa", {**params, "precision": "half"})
