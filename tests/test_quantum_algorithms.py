"""QAOA, VQE and Grover: the fast paths against the gate-level engine and against analytic
results, the adjoint gradients against finite differences, and the problem/file errors."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.quantum.algorithms import qaoa as qaoa_mod
from qiz.quantum.algorithms import vqe as vqe_mod
from qiz.quantum.algorithms.ansatz import (
    HamiltonianVariationalAnsatz,
    HardwareEfficientAnsatz,
    parse_ansatz,
)
from qiz.quantum.algorithms.grover import (
    GroverSimulator,
    analytic_success,
    exponential_search,
    optimal_iterations,
)
from qiz.quantum.algorithms.qaoa import QaoaSimulator, optimize
from qiz.quantum.algorithms.vqe import VqeEvaluator, run_vqe
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import HamiltonianError, QuantumError
from qiz.quantum.core.params import Parameter
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.statevector import statevector
from qiz.quantum.problems.cnf import Cnf
from qiz.quantum.problems.qubo import QuboProblem

DATA = "qiz/quantum/data"
CHEMICAL_ACCURACY = 1.6e-3


@pytest.fixture(params=["natural", "tiny-blocks"])
def blocking(request, monkeypatch):
    """Run each fast-path test also with tiny blocks, so that several high-pass groups and
    the tile code paths are exercised at small sizes."""
    if request.param == "tiny-blocks":
        monkeypatch.setattr(qaoa_mod, "BLOCK_BITS", 3)
        monkeypatch.setattr(qaoa_mod, "HIGH_GROUP_BITS", 2)
        monkeypatch.setattr(vqe_mod, "BLOCK_BITS", 3)
        monkeypatch.setattr(vqe_mod, "HIGH_GROUP_BITS", 2)
    return request.param


# -- QAOA -------------------------------------------------------------------------------------


def p1_maxcut_analytic(g: nx.Graph, gamma: float, beta: float) -> float:
    """<C> at p = 1 for any graph (Wang, Hadfield, Jiang, Rieffel, PRA 97, 022304 (2018))."""
    total = 0.0
    for u, v in g.edges():
        d, e = g.degree(u) - 1, g.degree(v) - 1
        f = len(set(g[u]) & set(g[v]))
        total += 0.5 + 0.25 * math.sin(4 * beta) * math.sin(gamma) * (
            math.cos(gamma) ** d + math.cos(gamma) ** e
        )
        total -= (
            0.25
            * math.sin(2 * beta) ** 2
            * math.cos(gamma) ** (d + e - 2 * f)
            * (1 - math.cos(2 * gamma) ** f)
        )
    return total


@pytest.mark.parametrize("seed", range(4))
def test_qaoa_p1_on_3_regular_graphs_equals_the_analytic_expectation(seed, blocking):
    n = 12 if seed % 2 else 16
    g = nx.random_regular_graph(3, n, seed=seed)
    sim = QaoaSimulator.maxcut(n, list(g.edges()))
    rng = np.random.default_rng(seed)
    for gamma, beta in rng.uniform(-1.5, 1.5, size=(3, 2)):
        assert sim.expectation([gamma], [beta]) == pytest.approx(
            p1_maxcut_analytic(g, gamma, beta), abs=1e-10
        )


def qaoa_circuit(problem: QuboProblem, gammas, betas) -> Circuit:
    """The same QAOA state built gate by gate from the Ising form of the problem."""
    h, j, _ = problem.to_ising()
    n = problem.num_vars
    circ = Circuit(n)
    for q in range(n):
        circ.h(q)
    for gamma, beta in zip(gammas, betas, strict=True):
        for i, w in h.items():  # exp(-i gamma w Z) = RZ(2 gamma w)
            circ.rz(2 * gamma * w, i)
        for (a, b), w in j.items():
            circ.rzz(2 * gamma * w, a, b)
        for q in range(n):
            circ.rx(2 * beta, q)
    return circ


@pytest.mark.parametrize("kind", ["maxcut", "weighted", "qubo"])
def test_qaoa_fast_state_equals_the_gate_level_circuit(kind, blocking):
    rng = np.random.default_rng(11)
    n = 9
    g = nx.gnp_random_graph(n, 0.5, seed=3)
    if kind == "maxcut":
        problem = QuboProblem.maxcut(n, list(g.edges()))
    elif kind == "weighted":  # float weights: too many levels for a table? still exact
        problem = QuboProblem.maxcut(
            n, list(g.edges()), list(rng.uniform(0.1, 2.0, len(g.edges())))
        )
    else:
        lin = {i: float(rng.normal()) for i in range(n)}
        quad = {
            (a, b): float(rng.normal())
            for a in range(n)
            for b in range(a + 1, n)
            if rng.random() < 0.4
        }
        problem = QuboProblem(n, lin, quad, 0.3, "min")
    sim = QaoaSimulator(problem)
    gammas, betas = [0.3, -0.5, 0.8], [0.7, 0.2, -0.4]
    fast = sim.statevector(gammas, betas)
    slow = statevector(qaoa_circuit(problem, gammas, betas))
    overlap = abs(np.vdot(fast, slow))
    assert overlap == pytest.approx(1.0, abs=1e-12)  # equal up to the global phase of offsets
    expected = float(np.sum(np.abs(slow) ** 2 * problem.diagonal()))
    assert sim.expectation(gammas, betas) == pytest.approx(expected, abs=1e-10)


def test_qaoa_uses_a_phase_table_for_integer_costs_and_direct_phases_otherwise():
    g = nx.random_regular_graph(3, 10, seed=1)
    assert QaoaSimulator.maxcut(10, list(g.edges())).level is not None
    rng = np.random.default_rng(2)
    lin = {i: float(rng.normal()) for i in range(18)}
    quad = {(i, i + 1): float(rng.normal()) for i in range(17)}
    sim = QaoaSimulator(QuboProblem(18, lin, quad))  # ~2^18 distinct values: no table
    assert sim.level is None
    assert np.isfinite(sim.expectation([0.2], [0.3]))


def test_qaoa_optimizer_reports_the_approximation_ratio_against_brute_force():
    g = nx.random_regular_graph(3, 10, seed=4)
    problem = QuboProblem.maxcut(10, list(g.edges()))
    res = optimize(problem, 2, start="fixed", seed=1, maxiter=120)
    best = max(sum(((x >> u) & 1) != ((x >> v) & 1) for u, v in g.edges()) for x in range(1 << 10))
    assert res.optimum == best
    assert res.approximation_ratio == pytest.approx(res.energy / best)
    assert res.approximation_ratio > 0.75  # p = 2 on 3-regular graphs: ~0.76 fixed, more tuned
    assert res.best_value <= best
    assert problem.evaluate(res.best_index) == res.best_value


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_qubo_ising_round_trip_and_diagonal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    lin = {i: float(rng.normal()) for i in range(n) if rng.random() < 0.7}
    quad = {
        (a, b): float(rng.normal()) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.5
    }
    problem = QuboProblem(n, lin, quad, float(rng.normal()))
    h, j, off = problem.to_ising()
    back = QuboProblem.from_ising(n, h, j, off)
    diag = problem.diagonal()
    assert np.allclose(back.diagonal(), diag, atol=1e-12)
    for x in range(1 << n):
        assert problem.evaluate(x) == pytest.approx(diag[x], abs=1e-12)
    ising = PauliSum.from_ising(n, h, j, off)
    assert np.allclose(ising.to_sparse().diagonal().real, diag, atol=1e-12)


def test_qubo_refuses_bad_problems():
    with pytest.raises(QuantumError, match="out of range"):
        QuboProblem(2, {3: 1.0})
    with pytest.raises(QuantumError, match="finite"):
        QuboProblem(2, {0: float("nan")})
    with pytest.raises(QuantumError, match="self-loop"):
        QuboProblem.maxcut(3, [(1, 1)])
    with pytest.raises(QuantumError, match="as many gammas as betas"):
        QaoaSimulator.maxcut(3, [(0, 1)]).expectation([0.1, 0.2], [0.3])


# -- VQE --------------------------------------------------------------------------------------


def real_hamiltonian(n: int) -> PauliSum:
    """A real H (even number of Y per term) with a multi-qubit X group: the real fast path."""
    extra = [(0.2, "I" * (n - 3) + "XZX"), (-0.15, "Y" + "I" * (n - 2) + "Y")]
    return PauliSum.tfim(n, j=0.8, h=1.1) + PauliSum.from_labels(extra)


def mixed_hamiltonian(n: int) -> PauliSum:
    """TFIM plus single-qubit Y and multi-qubit X-Y terms: every branch of the fast path."""
    extra = [
        (0.3, "Y" + "I" * (n - 1)),
        (0.2, "I" * (n - 3) + "XZX"),
        (-0.15, "Y" + "I" * (n - 2) + "Y"),
    ]
    return PauliSum.tfim(n, j=0.8, h=1.1) + PauliSum.from_labels(extra)


@pytest.mark.parametrize("kind", ["complex", "real"])
@pytest.mark.parametrize("entangler", ["ladder", "ring"])
@pytest.mark.parametrize("n", [2, 5, 9])
def test_vqe_fast_path_equals_the_gate_level_adjoint_path(n, entangler, kind, blocking):
    ansatz = HardwareEfficientAnsatz(n, 3, entangler)
    if n < 3:
        h = PauliSum.tfim(n)
        if kind == "complex":
            h = h + PauliSum.from_labels([(0.3, "YI")])
    else:
        h = mixed_hamiltonian(n) if kind == "complex" else real_hamiltonian(n)
    theta = np.random.default_rng(n).uniform(-3, 3, ansatz.num_parameters)
    fast = VqeEvaluator(ansatz, h)
    assert fast.real == (kind == "real")
    e_fast, g_fast = fast.energy_and_gradient(theta)
    e_slow, g_slow = VqeEvaluator(ansatz.circuit(), h).energy_and_gradient(theta)
    assert e_fast == pytest.approx(e_slow, abs=1e-12)
    assert np.max(np.abs(g_fast - g_slow)) < 1e-10
    state = VqeEvaluator(ansatz, h).statevector(theta)
    assert h.expectation(state) == pytest.approx(e_fast, abs=1e-12)


def test_adjoint_gradients_equal_finite_differences_on_a_general_circuit():
    """Controlled rotations, shared and affine parameters, every parameterised gate kind."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    circ = Circuit(4)
    circ.h(0).h(1).append("crx", [0, 2], [2 * a + 0.1]).append("cry", [1, 3], [b])
    circ.append("rzz", [0, 3], [a - b]).append("cp", [2, 1], [c]).append("u", [3], [a, b, c])
    circ.append("crz", [3, 0], [-c / 2]).append("rxx", [1, 2], [b]).append("ryy", [0, 1], [c])
    circ.append("cu", [2, 0], [a, 0.3, b, c]).append("p", [1], [a]).cx(0, 3)
    h = PauliSum.heisenberg(4, jx=0.5, jy=0.7, jz=-0.3, h=0.2) + PauliSum.from_labels(
        [(0.4, "YXZI")]
    )
    ev = VqeEvaluator(circ, h)
    theta = np.array([0.4, -1.1, 0.9])
    _, grad = ev.energy_and_gradient(theta)
    eps = 1e-6
    for k in range(3):
        up, down = theta.copy(), theta.copy()
        up[k] += eps
        down[k] -= eps
        fd = (ev.energy(up) - ev.energy(down)) / (2 * eps)
        assert grad[k] == pytest.approx(fd, abs=1e-8)


def test_fast_path_gradient_equals_finite_differences():
    ansatz = HardwareEfficientAnsatz(6, 4)
    h = mixed_hamiltonian(6)
    ev = VqeEvaluator(ansatz, h)
    theta = np.random.default_rng(0).uniform(-3, 3, ansatz.num_parameters)
    _, grad = ev.energy_and_gradient(theta)
    eps = 1e-6
    for k in (0, 7, 13, 23):
        up, down = theta.copy(), theta.copy()
        up[k] += eps
        down[k] -= eps
        assert grad[k] == pytest.approx((ev.energy(up) - ev.energy(down)) / (2 * eps), abs=1e-8)


@pytest.mark.parametrize("name", ["h2_0.735_jw.txt", "h2_0.735_parity.txt"])
def test_h2_reaches_chemical_accuracy(name):
    h = PauliSum.load(f"{DATA}/{name}")
    res = run_vqe(HardwareEfficientAnsatz(h.num_qubits, 3), h, seed=1)
    assert res.exact == pytest.approx(-1.857275030202, abs=1e-9)  # FCI electronic energy
    assert abs(res.error) < CHEMICAL_ACCURACY


def test_tfim_8_qubits_reaches_the_exact_ground_energy():
    """Periodic transverse-field Ising ring at the critical field, 8 qubits: the Hamiltonian
    variational ansatz with n/2 layers holds the ground state; VQE finds it to 1e-6."""
    h = PauliSum.tfim(8, j=1.0, h=1.0, periodic=True)
    res = run_vqe(HamiltonianVariationalAnsatz(h, 4), h, maxiter=500)
    assert res.exact == pytest.approx(h.ground_energy())
    assert abs(res.error) < 1e-6


def test_optimizers_cobyla_and_spsa_lower_the_energy():
    h = PauliSum.load(f"{DATA}/h2_0.735_parity.txt")
    ansatz = HardwareEfficientAnsatz(2, 2)
    start = VqeEvaluator(ansatz, h).energy(np.full(ansatz.num_parameters, 0.1))
    cobyla = run_vqe(ansatz, h, method="COBYLA", maxiter=400, seed=2)
    spsa = run_vqe(ansatz, h, method="SPSA", maxiter=300, seed=2)
    assert cobyla.error < CHEMICAL_ACCURACY
    assert spsa.energy < start - 0.3  # stochastic and slow, but clearly downhill
    with pytest.raises(QuantumError, match="unknown optimizer"):
        run_vqe(ansatz, h, method="adam")


def test_exact_ground_energy_by_lanczos_equals_the_dense_one(monkeypatch):
    from qiz.quantum.core import pauli

    h = mixed_hamiltonian(8)
    dense = h.ground_energy()
    monkeypatch.setattr(pauli, "DENSE_LIMIT", 4)
    assert h.ground_energy() == pytest.approx(dense, abs=1e-9)


def test_ansatz_specs():
    assert parse_ansatz("hea:3", PauliSum.tfim(4)) == HardwareEfficientAnsatz(4, 3, "ladder", "cz")
    h5 = PauliSum.tfim(5)
    assert parse_ansatz("hea:2:ring:cx", h5) == HardwareEfficientAnsatz(5, 2, "ring", "cx")
    assert parse_ansatz("hva:3", h5).circuit().count_ops() == {"h": 5, "rzz": 12, "rx": 15}
    assert len(parse_ansatz("hva:3", h5).circuit().parameters) == 6
    assert len(parse_ansatz("hva:3:multi", h5).circuit().parameters) == 27
    for bad in ("hea", "hea:x", "ucc:2", "hea:2:star", "hva:x"):
        with pytest.raises(QuantumError, match="ansatz"):
            parse_ansatz(bad, PauliSum.tfim(3))
    with pytest.raises(QuantumError, match="not a Z, ZZ, X or Y term"):
        parse_ansatz("hva:2", PauliSum.heisenberg(3))
    with pytest.raises(QuantumError, match="acts on 3 qubits"):
        VqeEvaluator(HardwareEfficientAnsatz(4, 1), PauliSum.tfim(3))


BAD_HAMILTONIANS = [
    ("", "no terms"),
    ("# only a comment\n", "no terms"),
    ("abc ZZ\n", ":1: 'abc' is not a number"),
    ("1.0 ZZ\n2.0 Q0\n", ":2: 'Q0' is not a Pauli factor"),
    ("1.0 ZZ\n2.0 ZZZ\n", "has 2 letters; this Hamiltonian has 3 qubits"),
    ("qubits 2\n1.0 Z5\n", "needs 6 qubits but 'qubits 2'"),
    ("1.0 Z0\nqubits 3\n", "'qubits N' must be the first line"),
    ("1.0 X0 Z0\n", "qubit 0 appears twice"),
    ("1+2j ZZ\n", "must be Hermitian"),
    ("nan ZZ\n", "finite"),
    ("qubits 0\n", "expected 'qubits N' with N >= 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD_HAMILTONIANS)
def test_bad_hamiltonian_files_give_clear_errors(tmp_path, text, message):
    path = tmp_path / "h.txt"
    path.write_text(text)
    with pytest.raises(HamiltonianError) as info:
        PauliSum.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_text() == text  # nothing written back or lost


def test_hamiltonian_file_errors_for_missing_directory_and_binary(tmp_path):
    with pytest.raises(HamiltonianError, match="no such file"):
        PauliSum.load(tmp_path / "missing.txt")
    with pytest.raises(HamiltonianError, match="is a directory"):
        PauliSum.load(tmp_path)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HamiltonianError, match="not a UTF-8"):
        PauliSum.load(tmp_path / "bin")


@given(
    st.lists(
        st.tuples(st.floats(-5, 5, allow_nan=False), st.text("IXYZ", min_size=3, max_size=3)),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=60, deadline=None)
def test_hamiltonian_text_round_trip(terms):
    h = PauliSum.from_labels(terms, 3)
    back = PauliSum.loads(h.dumps())
    assert np.allclose(back.to_sparse().toarray(), h.to_sparse().toarray(), atol=1e-12)


# -- Grover -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "marked"), [(1, [1]), (4, [3]), (7, [5, 9, 100]), (12, [0, 4095, 77])]
)
def test_grover_success_probability_equals_the_analytic_value(n, marked):
    sim = GroverSimulator(n, marked=marked)
    for k in {0, 1, 2, optimal_iterations(n, len(marked)), optimal_iterations(n, len(marked)) + 3}:
        assert sim.run(k) == pytest.approx(analytic_success(n, len(marked), k), abs=1e-10)
    assert abs(np.linalg.norm(sim.state) - 1) < 1e-12


def test_grover_matches_the_gate_level_circuit():
    """Oracle as X + multi-controlled Z, diffusion as H X MCZ X H, built from our gates."""
    n, target = 3, 0b101
    circ = Circuit(n)
    for q in range(n):
        circ.h(q)
    for _ in range(2):
        for q in range(n):
            if not (target >> q) & 1:
                circ.x(q)
        circ.h(2).ccx(0, 1, 2).h(2)
        for q in range(n):
            if not (target >> q) & 1:
                circ.x(q)
        for q in range(n):
            circ.h(q).x(q)
        circ.h(2).ccx(0, 1, 2).h(2)
        for q in range(n):
            circ.x(q).h(q)
    probs = np.abs(statevector(circ)) ** 2
    sim = GroverSimulator(n, marked=[target])
    sim.run(2)
    assert np.allclose(sim.state**2, probs, atol=1e-12)


def test_grover_with_a_cnf_oracle():
    cnf = Cnf.loads("c example\np cnf 5 4\n1 -2 0\n2 3 0\n-3 -4 5 0\n4 0\n")
    brute = [x for x in range(32) if cnf.satisfied_by(x)]
    sim = GroverSimulator(5, cnf=cnf)
    assert sim.solutions == brute
    k = optimal_iterations(5, len(brute))
    assert sim.run(k) == pytest.approx(analytic_success(5, len(brute), k), abs=1e-10)
    found = exponential_search(GroverSimulator(5, cnf=cnf), seed=4)
    assert found.found is not None and cnf.satisfied_by(found.found)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 0\n", "clause before the 'p cnf' header"),
        ("p cnf 2 1\n1 3 0\n", "literal 3 exceeds"),
        ("p cnf 2 2\n1 2 0\n", "declares 2 clauses, found 1"),
        ("p cnf 2 1\n1 x 0\n", "'x' is not a literal"),
        ("p dnf 2 1\n", "expected 'p cnf VARIABLES CLAUSES'"),
        ("p cnf 2 1\n0\n", "empty clause"),
    ],
)
def test_bad_cnf_files_give_clear_errors(text, message):
    with pytest.raises(QuantumError, match=message):
        Cnf.loads(text, "f.cnf")


def test_grover_refuses_bad_oracles():
    with pytest.raises(QuantumError, match="either a marked set or a CNF"):
        GroverSimulator(3)
    with pytest.raises(QuantumError, match="marked items must be in"):
        GroverSimulator(3, marked=[8])
    with pytest.raises(QuantumError, match="empty"):
        GroverSimulator(3, marked=[])


# -- edge cases found in review ---------------------------------------------------------------


def test_hamiltonians_beyond_the_qubit_ceiling_are_refused_cleanly():
    for text in ("qubits 10000000000000\n1 Z0\n", "1.0 Z9999999999999\n", "qubits \u00b2\n"):
        with pytest.raises(HamiltonianError):
            PauliSum.loads(text, "h.txt")


def test_hva_with_only_one_kind_of_term():
    zonly = PauliSum.from_labels([(1.0, "ZZI"), (0.5, "IZZ")])
    xonly = PauliSum.from_labels([(1.0, "XII"), (0.5, "IIX")])
    for h in (zonly, xonly):
        res = run_vqe(HamiltonianVariationalAnsatz(h, 2), h, maxiter=50, exact=True)
        assert res.energy >= res.exact - 1e-9


def test_ground_energy_of_the_zero_operator(monkeypatch):
    from qiz.quantum.core import pauli

    monkeypatch.setattr(pauli, "DENSE_LIMIT", 2)
    assert PauliSum.loads("qubits 14\n").ground_energy() == 0.0


def test_satlib_cnf_trailer_is_accepted():
    cnf = Cnf.loads("p cnf 2 1\n1 2 0\n%\n0\n\n")
    assert cnf.clauses == ((1, 2),)


def test_sampling_refuses_a_state_without_a_finite_norm():
    from qiz.quantum.core.sampling import sample_counts

    rng = np.random.default_rng(0)
    with pytest.raises(QuantumError, match="finite, nonzero norm"):
        sample_counts(np.array([np.nan, 0, 0, 0], dtype=complex), 5, rng)
    with pytest.raises(QuantumError, match="finite, nonzero norm"):
        sample_counts(np.zeros(8), 5, rng)
    with pytest.raises(QuantumError, match="shots"):
        sample_counts(np.ones(8), -1, rng)
    state = np.zeros(1 << 14)
    state[5] = state[(1 << 14) - 3] = math.sqrt(0.5)  # far apart blocks; zeros at the edges
    counts = sample_counts(state, 10000, rng)
    assert set(counts) == {5, (1 << 14) - 3}
    assert abs(counts[5] - 5000) < 400


def test_estimator_refuses_mid_circuit_measurement():
    from qiz.quantum.core.errors import CircuitError
    from qiz.quantum.core.primitives import Estimator

    circ = Circuit(2, 2)
    circ.h(0).measure(0, 0).cx(0, 1)
    with pytest.raises(CircuitError, match="measurements"):
        Estimator().run(circ, PauliSum.tfim(2))


def test_non_finite_angles_are_refused():
    from qiz.quantum.core.errors import CircuitError

    with pytest.raises(CircuitError, match="finite"):
        Circuit(1).rx(float("inf"), 0)
    circ = Circuit(1).rx(Parameter("t"), 0)
    with pytest.raises(CircuitError, match="finite"):
        circ.bind({"t": float("nan")})


def test_input_files_are_bounded_while_read_not_by_stat(tmp_path, monkeypatch):
    """The size limit holds for what is read: a FIFO (size 0 to stat) cannot slip past it."""
    import os
    import threading

    from qiz.quantum.core import files
    from qiz.quantum.problems import cnf

    big = tmp_path / "big.cnf"
    big.write_text("p cnf 1 1\n1 0\n" + "c padding\n" * 20)
    monkeypatch.setattr(cnf, "MAX_CNF_BYTES", 64)
    with pytest.raises(QuantumError, match=r"big\.cnf: larger than the 64-byte limit"):
        Cnf.load(big)
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as w:
            w.write(b"x" * 200)

    writer = threading.Thread(target=feed)
    writer.start()
    with pytest.raises(QuantumError, match=r"pipe\.txt: larger than the 100-byte limit"):
        files.read_text(fifo, max_size=100)
    writer.join()
