"""The general ansatz (RY + RZ layers, CZ/CX entanglers): its fused energy and adjoint gradient
against the gate-level engine and finite differences, VQE to exact ground energies with odd-Y
terms, and the CLI's errors, gradient norm and quiet stderr under --json."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.cli.quiet import quiet_warnings
from qiz.compute.execute import run as run_job
from qiz.quantum.algorithms.ansatz import GeneralAnsatz, parse_ansatz
from qiz.quantum.algorithms.vqe import VqeEvaluator, _adjoint_circuit, run_vqe
from qiz.quantum.core import statevector
from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.pauli import PauliSum

from .helpers import assert_one_line_error
from .helpers import qiz_raw as qiz
from .json_shapes import check_answer

ODD_Y = "qubits 3\n1.0 Z0 Z1\n0.7 X0 Y1\n-0.5 Y1 Z2\n0.4 X2\n0.3 Y0 X1 Y2\n"


def random_pauli_sum(n: int, rng: np.random.Generator, terms: int = 8) -> PauliSum:
    """Real coefficients on random (x, z) masks: Hermitian, with Y factors (x and z both set)
    on most terms, including odd-Y ones that make it complex."""
    full = (1 << n) - 1
    rows = [(float(rng.normal()), int(rng.integers(0, full + 1)), int(rng.integers(0, full + 1)))]
    rows += [(float(rng.normal()), 0, int(rng.integers(0, full + 1))) for _ in range(terms // 4)]
    rows += [
        (float(rng.normal()), int(rng.integers(0, full + 1)), int(rng.integers(0, full + 1)))
        for _ in range(terms)
    ]
    rows += [(0.3, 1 << q, 1 << q) for q in range(n)]  # sum of Y_q: complex for sure
    return PauliSum(n, rows)


def reference(ansatz: GeneralAnsatz, h: PauliSum, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """The gate-level engine's adjoint method on ``ansatz.circuit()``."""
    return _adjoint_circuit(ansatz.circuit(), h, theta, gradient=True)


@pytest.mark.parametrize(
    ("n", "depth", "entangler"),
    [
        *[(1, 1, "ladder"), (2, 2, "ring"), (3, 2, "ladder"), (4, 3, "ring"), (5, 1, "none")],
        # above 14 qubits the high tile passes run too; the ring joins a row bit to a column bit
        *[(15, 1, "ladder"), (15, 1, "ring"), (17, 1, "ring")],
    ],
)
def test_energy_and_gradient_match_the_gate_level_engine(n: int, depth: int, entangler: str):
    rng = np.random.default_rng(n * 10 + depth)
    h = random_pauli_sum(n, rng)
    assert not h.is_real
    ansatz = GeneralAnsatz(n, depth, entangler)
    theta = rng.uniform(-np.pi, np.pi, ansatz.num_parameters)
    ev = VqeEvaluator(ansatz, h)
    assert ev.fast and not ev.real
    e, g = ev.energy_and_gradient(theta)
    e_ref, g_ref = reference(ansatz, h, theta)
    assert e == pytest.approx(e_ref, abs=1e-11)
    np.testing.assert_allclose(g, g_ref, atol=1e-10)
    assert ev.energy(theta) == pytest.approx(e_ref, abs=1e-11)
    psi = ev.statevector(theta)
    np.testing.assert_allclose(psi, statevector.statevector(ansatz.circuit().bind(list(theta))),
                               atol=1e-12)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    depth=st.integers(1, 3),
    entangler=st.sampled_from(["ladder", "ring", "none"]),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1e-3, 1.0, 10.0]),
)
def test_gradient_matches_finite_differences(
    n: int, depth: int, entangler: str, seed: int, spread: float
):
    """Central differences of the energy (step 1e-5: error ~1e-10 times the third derivative),
    at angles near 0 (the scaled rotations' tangent form), of order 1, and beyond 2 pi."""
    rng = np.random.default_rng(seed)
    h = random_pauli_sum(n, rng, terms=5)
    ansatz = GeneralAnsatz(n, depth, entangler)
    theta = rng.uniform(-spread, spread, ansatz.num_parameters)
    ev = VqeEvaluator(ansatz, h)
    e, g = ev.energy_and_gradient(theta)
    step = 1e-5
    fd = np.empty_like(g)
    for k in range(theta.size):
        d = np.zeros_like(theta)
        d[k] = step
        fd[k] = (ev.energy(theta + d) - ev.energy(theta - d)) / (2 * step)
    norm = sum(abs(t.coeff) for t in h.terms)  # bounds E and its derivatives
    np.testing.assert_allclose(g, fd, atol=1e-8 * norm)
    assert e == pytest.approx(reference(ansatz, h, theta)[0], abs=1e-11)


def test_cx_entanglers_take_the_gate_level_path_with_the_same_numbers():
    h = random_pauli_sum(4, np.random.default_rng(3))
    ansatz = parse_ansatz("general:2:ring:cx", h)
    assert isinstance(ansatz, GeneralAnsatz)
    assert (ansatz.depth, ansatz.entangler, ansatz.gate) == (2, "ring", "cx")
    theta = np.random.default_rng(4).uniform(-2, 2, ansatz.num_parameters)
    e, g = VqeEvaluator(ansatz, h).energy_and_gradient(theta)
    e_ref, g_ref = reference(ansatz, h, theta)
    assert e == pytest.approx(e_ref, abs=1e-12)
    np.testing.assert_allclose(g, g_ref, atol=1e-11)


def test_the_spec_sizes_and_parameter_order():
    h = PauliSum.tfim(5)
    ansatz = parse_ansatz("general:3", h)
    assert (ansatz.depth, ansatz.entangler, ansatz.gate) == (3, "ladder", "cz")
    circ = ansatz.circuit()
    assert ansatz.num_parameters == 2 * 5 * 4 == len(circ.parameters)
    assert ansatz.num_instructions == len(circ.instructions)
    gates = [(inst.name, inst.qubits) for inst in circ.instructions if inst.name != "cz"]
    # layer by layer: RY on qubits 0..n-1, then RZ on qubits 0..n-1
    assert gates[:10] == [("ry", (q,)) for q in range(5)] + [("rz", (q,)) for q in range(5)]
    assert [str(p) for p in circ.parameters[:3]] == ["t0", "t1", "t2"]
    for bad in ("general", "general:x", "general:2:cz:ring:ladder"):
        with pytest.raises(QuantumError, match="general:DEPTH"):
            parse_ansatz(bad, h)
    with pytest.raises(QuantumError, match="'spiral' is not ladder, ring, cz or cx"):
        parse_ansatz("general:2:spiral", h)
    with pytest.raises(QuantumError, match="at most"):
        parse_ansatz("general:99999999999999999999", h)


def test_the_default_start_is_off_the_saddle_at_zero():
    """At theta = 0 the gradient vanishes; the seeded default start has a real gradient."""
    h = PauliSum.heisenberg(4)
    ansatz = GeneralAnsatz(4, 3)
    ev = VqeEvaluator(ansatz, h)
    assert np.linalg.norm(ev.energy_and_gradient(np.zeros(ansatz.num_parameters))[1]) < 1e-12
    x0 = ansatz.initial_point(0)
    assert np.array_equal(x0, ansatz.initial_point(0))
    assert np.linalg.norm(ev.energy_and_gradient(x0)[1]) > 0.1


def test_vqe_reaches_the_heisenberg_and_odd_y_ground_energies():
    heis = run_vqe(GeneralAnsatz(4, 3), PauliSum.heisenberg(4), seed=0)
    assert abs(heis.error) < 1e-6
    assert heis.gradient_norm is not None and heis.gradient_norm < 1e-4
    odd = PauliSum.loads(ODD_Y)
    assert not odd.is_real
    res = run_vqe(GeneralAnsatz(3, 2), odd, seed=0)
    assert abs(res.error) < 1e-6
    for method in ("COBYLA", "SPSA"):  # the norm is reported whatever the optimizer
        res = run_vqe(GeneralAnsatz(3, 1), odd, method=method, maxiter=5, seed=0)
        assert res.gradient_norm is not None and res.gradient_norm > 0


def test_the_vqe_job_takes_general_and_refuses_hea_on_odd_y():
    out = run_job("vqe", {"hamiltonian": ODD_Y, "ansatz": "general:2", "maxiter": 300}, 0)
    assert out["exact"] is not None
    assert out["energy"] == pytest.approx(out["exact"], abs=1e-6)
    with pytest.raises(Exception, match="general:D"):
        run_job("vqe", {"hamiltonian": ODD_Y, "ansatz": "hea:2", "maxiter": 3}, 0)


def test_the_cli_points_to_general_and_reports_the_gradient_norm(tmp_path: Path):
    (tmp_path / "odd.txt").write_text(ODD_Y)
    code, _, err = qiz(tmp_path, "vqe", "--hamiltonian", "odd.txt", "--ansatz", "hea:2")
    assert code == 2
    assert_one_line_error(err, "odd number of Y", "--ansatz general:D")
    odd = PauliSum.loads(ODD_Y)  # the same words from the parser, without a process each
    with pytest.raises(QuantumError, match=r"term .* use --ansatz general:D"):
        parse_ansatz("hva:2", odd)
    with pytest.raises(QuantumError, match=r"hea:DEPTH.*general:DEPTH.*hva:LAYERS"):
        parse_ansatz("ucc:2", odd)
    argv = ["vqe", "--hamiltonian", "odd.txt", "--ansatz", "general:2", "--json"]
    code, out, err = qiz(tmp_path, *argv)
    assert code == 0 and err == "", err
    data = check_answer(argv, out.decode())
    assert abs(data["energy_error"]) < 1e-6 and data["converged"] is True
    assert 0 <= data["gradient_norm"] < 1e-4
    code, out, err = qiz(tmp_path, "vqe", "--hamiltonian", "odd.txt", "--ansatz", "general:2")
    assert code == 0, err
    text = out.decode()
    assert "gradient norm" in text and "iterations" in text and "converged" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["vqe", "--hamiltonian", "odd.txt", "--ansatz", "general:2", "--maxiter", "2"],
        ["vqe", "--hamiltonian", "tfim:5", "--optimizer", "COBYLA", "--maxiter", "3"],
        ["qaoa", "maxcut", "--graph", "random:8,3", "--p", "2", "--maxiter", "2"],
    ],
)
def test_json_runs_that_hit_maxiter_keep_stderr_empty(tmp_path: Path, argv: list[str]):
    (tmp_path / "odd.txt").write_text(ODD_Y)
    code, out, err = qiz(tmp_path, *argv, "--json")
    assert code == 0, err
    assert err == ""
    data = check_answer([*argv, "--json"], out.decode())
    assert data["ok"] is True
    if argv[0] == "vqe":
        assert data["converged"] is False


def _noisy(method):
    """The method, raising a RuntimeWarning and a numpy floating-point warning each call."""

    def call(self, theta):
        warnings.warn("a flat step", RuntimeWarning, stacklevel=1)
        np.log(np.zeros(1))
        return method(self, theta)

    return call


@pytest.mark.parametrize("method", ["L-BFGS-B", "COBYLA", "SPSA"])
def test_run_vqe_keeps_optimizer_warnings_off_stderr(monkeypatch, recwarn, method: str):
    """Warnings raised while the optimizer runs (scipy's, numpy's) do not escape run_vqe: the
    CLI's subprocess runs above found none to raise with today's scipy, so this one makes some."""
    monkeypatch.setattr(VqeEvaluator, "energy", _noisy(VqeEvaluator.energy))
    monkeypatch.setattr(
        VqeEvaluator, "energy_and_gradient", _noisy(VqeEvaluator.energy_and_gradient)
    )
    with np.errstate(all="warn"):
        res = run_vqe(GeneralAnsatz(2, 1), PauliSum.tfim(2), method=method, maxiter=3)
    assert res.evaluations > 0
    assert [str(w.message) for w in recwarn] == []


def test_quiet_warnings_silences_inside_and_restores_after(recwarn):
    with quiet_warnings(True), np.errstate(all="warn"):
        warnings.warn("hidden", UserWarning, stacklevel=1)
    with quiet_warnings(False):
        warnings.warn("shown", UserWarning, stacklevel=1)
    warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["shown", "after"]
