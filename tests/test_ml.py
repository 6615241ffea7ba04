"""qiz.ml: batched states against the plain engine, adjoint gradients against finite
differences, the fidelity kernel's properties, training, seeds, and scikit-learn's checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from qiz.ml import QSVC, VQC, VQR, QuantumKernel
from qiz.ml.batched import Op, Program
from qiz.ml.feature_maps import FeatureMap, identity, reuploading_map, zz_map
from qiz.quantum.core.statevector import statevector

RNG = np.random.default_rng(7)


def _engine_states(program: Program, data: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """One circuit per sample on the gate-level engine: the reference."""
    return np.array([statevector(program.circuit(row, theta)) for row in data])


def _mixed_program() -> Program:
    """Every kind of op the batched path has: per-sample and shared angles, weights and biases,
    one- and two-qubit rotations, diagonal and fixed gates, controls."""
    ops = [
        Op("h", (0,)),
        Op("h", (2,)),
        Op("ry", (1,), feature=0, weight=0, bias=1),
        Op("rxx", (0, 2), feature=1, weight=2),
        Op("cx", (2, 1)),
        Op("ryy", (1, 0), bias=3),
        Op("rz", (2,), feature=2, scale=0.7, offset=0.3),
        Op("rzz", (0, 1), feature=0, weight=4),
        Op("cz", (1, 2)),
        Op("swap", (0, 2)),
        Op("rx", (1,), feature=1, weight=5, bias=6),
        Op("ch", (0, 1)),
    ]
    return Program(3, ops, 7, 3)


# -- states and gradients ---------------------------------------------------------------


def test_batched_states_equal_the_engine_sample_by_sample() -> None:
    data = RNG.normal(size=(6, 3))
    theta = RNG.normal(size=7)
    program = _mixed_program()
    assert np.abs(program.states(data, theta) - _engine_states(program, data, theta)).max() < 1e-12
    for fmap, d in ((zz_map(3, 5, 2, "ring", 0.7), 5), (reuploading_map(3, 4, 2, "ring"), 4)):
        x = RNG.normal(size=(5, d))
        th = RNG.normal(size=fmap.program.num_params)
        a = fmap.encode(x)
        assert (
            np.abs(fmap.program.states(a, th) - _engine_states(fmap.program, a, th)).max() < 1e-12
        )


def _fusable_program() -> Program:
    """Every gate the fused path has, and every merge: rotations about one axis on one qubit
    with gates on other qubits between them, adjacent diagonals (CZ, Z), ZZ rotations, fixed
    one-qubit gates; per-sample and shared angles, weights and biases."""
    ops = [
        Op("h", (0,)),
        Op("sx", (2,)),
        Op("ry", (1,), feature=0, weight=0),
        Op("rx", (0,), feature=1, weight=1, bias=2),
        Op("ry", (1,), bias=3),  # merges with the RY on qubit 1 above
        Op("cz", (0, 1)),
        Op("cz", (1, 2)),
        Op("z", (0,)),  # three adjacent diagonals: one table
        Op("rz", (2,), feature=2, scale=0.7, offset=0.3),
        Op("rz", (2,), bias=4),  # merges with a fixed-angle RZ
        Op("rzz", (0, 2), feature=0, weight=5),
        Op("t", (1,)),
        Op("rx", (1,), feature=2, weight=6, bias=7),
        Op("s", (0,)),
        Op("rx", (1,), bias=8),  # merges across the S on qubit 0
    ]
    return Program(3, ops, 9, 3)


def test_the_fused_path_equals_the_gate_by_gate_path_and_the_engine() -> None:
    fused = _fusable_program()
    assert fused.fused is not None
    assert len(fused.fused.kinds) == len(fused.ops) - 5  # three merges, three diagonals as one
    gates = _fusable_program()
    gates.fused = None  # the gate-by-gate path
    data = RNG.normal(size=(6, 3))
    theta = RNG.normal(size=9)
    psi = fused.states(data, theta)
    assert np.abs(psi - gates.states(data, theta)).max() < 1e-12
    assert np.abs(psi - _engine_states(fused, data, theta)).max() < 1e-12
    lam = RNG.normal(size=psi.shape) + 1j * RNG.normal(size=psi.shape)
    grad = fused.backward(psi, lam, data, theta)
    assert np.abs(grad - gates.backward(psi, lam, data, theta)).max() < 1e-11
    assert np.abs(psi - fused.states(data, theta)).max() == 0  # the caller's states intact
    # a wider register, more features than qubits (RY then RZ encodings), a ring
    fmap = reuploading_map(6, 9, 2, "ring")
    gates = reuploading_map(6, 9, 2, "ring").program
    gates.fused = None
    x = RNG.normal(size=(7, 9))
    th = RNG.normal(size=fmap.program.num_params)
    psi = fmap.program.states(x, th)
    assert np.abs(psi - gates.states(x, th)).max() < 1e-12
    lam = RNG.normal(size=psi.shape) + 1j * RNG.normal(size=psi.shape)
    assert np.abs(fmap.program.backward(psi, lam, x, th) - gates.backward(psi, lam, x, th)).max(
        ) < 1e-10  # fmt: skip


def test_programs_without_fused_kernels_take_the_gate_by_gate_path() -> None:
    assert _mixed_program().fused is None  # RXX, RYY, CX, SWAP, CH
    fmap = reuploading_map(4, 4, 2)
    assert fmap.program.fused is not None
    # per layer: RY(w x + b) and RZ per qubit, one CZ table
    assert len(fmap.program.fused.kinds) == 2 * (4 + 4 + 1)


def _finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return np.array([(f(x + e) - f(x - e)) / (2 * h) for e in np.eye(x.size) * h])


def test_adjoint_gradient_of_a_program_matches_finite_differences() -> None:
    program = _mixed_program()
    data = RNG.normal(size=(5, 3))
    diag = RNG.normal(size=8)

    def loss(theta: np.ndarray) -> float:
        psi = program.states(data, theta)
        return float(((psi.real**2 + psi.imag**2) @ diag).sum())

    theta = RNG.normal(size=7)
    psi = program.states(data, theta)
    grad = program.backward(psi, psi * diag, data, theta)
    assert np.allclose(grad, _finite_difference(loss, theta), atol=1e-7)


@pytest.mark.parametrize(
    ("model", "classes"),
    [
        (VQC(num_qubits=3, layers=2, alpha=0.01), 2),
        (VQC(num_qubits=3, layers=2), 3),
        (VQC(num_qubits=3, layers=1), 5),
        (VQR(num_qubits=3, layers=2), 0),
    ],
)
def test_model_gradients_match_finite_differences(model, classes: int) -> None:
    """Every parameter (encoding weights, rotations, output scales and biases) of the
    logistic, softmax (Z and basis-state readouts) and squared-error losses."""
    x = RNG.normal(size=(12, 4))
    y = RNG.integers(0, classes, size=12) if classes else RNG.normal(size=12)
    if classes:
        y[:classes] = np.arange(classes)
    model.set_params(max_iter=1, random_state=0).fit(x, y)
    target = np.searchsorted(model.classes_, y) if classes else y
    params = model.params_ + RNG.normal(0.0, 0.3, model.params_.size)
    _, grad = model._loss_grad(params, x, target)
    numeric = _finite_difference(lambda p: model._loss_grad(p, x, target)[0], params)
    assert np.allclose(grad, numeric, atol=1e-7)


# -- the kernel -------------------------------------------------------------------------


@pytest.mark.parametrize("feature_map", ["zz", "reuploading"])
def test_kernel_matrix_is_a_fidelity_gram_matrix(feature_map: str) -> None:
    x = RNG.normal(size=(20, 4))
    qk = QuantumKernel(feature_map=feature_map, num_qubits=4, reps=2, bandwidth=0.8)
    k = qk.evaluate(x)
    assert k.shape == (20, 20)
    assert np.array_equal(k, k.T)
    assert np.abs(np.diag(k) - 1.0).max() < 1e-12
    assert np.linalg.eigvalsh(k).min() >= -1e-10
    # the same numbers from the plain engine, state by state, pair by pair
    fmap = qk.build(4)
    states = _engine_states(fmap.program, fmap.encode(x), np.zeros(0))
    ref = np.array([[abs(np.vdot(a, b)) ** 2 for b in states] for a in states])
    assert np.abs(k - ref).max() < 1e-12
    # a rectangular block is the matching block of the square one
    assert np.abs(qk.evaluate(x[:5], x[5:]) - k[:5, 5:]).max() < 1e-12


def test_a_real_feature_map_takes_the_real_path_with_the_complex_path_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qiz.ml import fidelity

    x = RNG.normal(size=(23, 5))
    # one feature per qubit: RY encodings and CZ ladders only, real amplitudes
    real = fidelity.feature_map("reuploading", 5, 5, 2, entanglement="ring", bandwidth=0.7)
    # a sixth feature on five qubits is encoded by RZ: complex amplitudes
    rz = fidelity.feature_map("reuploading", 5, 6, 2, entanglement="linear", bandwidth=0.7)
    zz = fidelity.feature_map("zz", 5, 5, 2, entanglement="linear", bandwidth=0.7)
    assert fidelity.real_mats(real) is not None
    assert fidelity.real_mats(rz) is None and fidelity.real_mats(zz) is None
    # blocks of 4 samples: the blocked loop, with a short last block
    monkeypatch.setattr(fidelity, "BLOCK_AMPLITUDES", 4 << 5)
    s = fidelity.states(real, x)
    assert s.dtype == np.float64
    complex_states = real.program.states(real.encode(x))
    assert np.array_equal(s, complex_states.real) and not complex_states.imag.any()
    # the same kernel as the complex product, square, rectangular and mixed
    k = fidelity.gram(s)
    assert np.array_equal(k, k.T)
    assert np.abs(k - fidelity.gram(complex_states)).max() < 1e-12
    assert np.abs(fidelity.gram(s[:7], s[7:]) - k[:7, 7:]).max() < 1e-12
    assert np.abs(fidelity.gram(s[:7], complex_states[7:]) - k[:7, 7:]).max() < 1e-12
    ref = _engine_states(real.program, real.encode(x), np.zeros(0))
    assert np.abs(k - np.abs(ref.conj() @ ref.T) ** 2).max() < 1e-12
    assert fidelity.states(rz, np.hstack([x, x[:, :1]])).dtype == np.complex128
    assert fidelity.states(zz, x).dtype == np.complex128
    # real fixed gates (H, X, Z) keep a map real, before and after entangling gates
    ops = [
        Op("h", (0,)),
        Op("ry", (1,), feature=0, scale=1.3),
        Op("x", (2,)),
        Op("cz", (0, 1)),
        Op("h", (2,)),
        Op("ry", (0,), feature=1, offset=0.2),
        Op("z", (1,)),
        Op("cz", (1, 2)),
    ]
    fmap = FeatureMap(Program(3, ops, 0, 2), identity, np.zeros(0))
    assert fidelity.real_mats(fmap) is not None
    s = fidelity.states(fmap, x[:, :2])
    ref = _engine_states(fmap.program, x[:, :2], np.zeros(0))
    assert s.dtype == np.float64 and np.abs(s - ref).max() < 1e-12


@pytest.mark.parametrize("entanglement", ["linear", "ring"])
def test_the_zz_map_runs_its_diagonal_gates_as_one_phase_with_the_same_states(
    entanglement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qiz.ml import fidelity, fused

    x = RNG.normal(size=(11, 7))
    zz = fidelity.feature_map("zz", 6, 7, 2, entanglement=entanglement, bandwidth=0.7)
    plan = zz.fixed_plan
    assert plan is not None
    # layer 1's RZZ gates, then layer 2's RZ and RZZ gates: two merged runs
    assert np.count_nonzero(plan.runs.stop) == 2
    # blocks of 4 samples: the blocked loop, with a short last block
    monkeypatch.setattr(fidelity, "BLOCK_AMPLITUDES", 4 << 6)
    s = fidelity.states(zz, x)
    gate_by_gate = zz.program.states(zz.encode(x))
    assert s.dtype == np.complex128 and np.abs(s - gate_by_gate).max() < 1e-12
    ref = _engine_states(zz.program, zz.encode(x), np.zeros(0))
    assert np.abs(s - ref).max() < 1e-12
    # the kernel, square and rectangular, as the engine's states give it
    k_ref = np.abs(ref.conj() @ ref.T) ** 2
    assert np.abs(fidelity.gram(s) - k_ref).max() < 1e-12
    assert np.abs(fidelity.gram(s[:4], s[4:]) - k_ref[:4, 4:]).max() < 1e-12

    # a qubit with more ZZ partners than a phase table takes: the run is cut, same states;
    # a complex fixed gate (S) and a CZ between runs take their own passes
    ops = [Op("h", (q,)) for q in range(6)]
    ops += [Op("rzz", (q, 5), feature=q, scale=0.9) for q in range(5)]
    ops += [Op("rz", (q,), feature=q, offset=0.1) for q in range(6)]
    ops += [Op("s", (2,)), Op("cz", (0, 3)), Op("h", (4,))]
    ops += [Op("rz", (q,), feature=5) for q in range(4)] + [Op("rzz", (1, 4), feature=2)]
    fmap = FeatureMap(Program(6, ops, 0, 6), identity, np.zeros(0))
    plan = fmap.fixed_plan
    assert plan is not None and plan.runs.counts.max() == fused.MAX_PARTNERS
    assert np.count_nonzero(plan.runs.stop) == 3
    s = fidelity.states(fmap, x[:, :6])
    assert np.abs(s - fmap.program.states(x[:, :6])).max() < 1e-12
    assert np.abs(s - _engine_states(fmap.program, x[:, :6], np.zeros(0))).max() < 1e-12


def test_kernel_inputs_are_checked_as_sklearn_checks_them() -> None:
    # a float64 array skips check_array (its own answer there); everything else goes through it
    qk = QuantumKernel(num_qubits=2)
    x = RNG.normal(size=(5, 2))
    k = qk.evaluate(x)
    assert np.array_equal(qk.evaluate(x.tolist()), k)
    assert np.array_equal(qk.evaluate(x[:, ::-1]), qk.evaluate(np.ascontiguousarray(x[:, ::-1])))
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        qk.evaluate(bad)
    with pytest.raises(ValueError, match="NaN"):
        qk.evaluate(x, bad)
    with pytest.raises(ValueError, match="infinity"):
        qk.evaluate(np.full((3, 2), np.inf))
    with pytest.raises(ValueError, match="0 sample"):
        qk.evaluate(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="2D array"):
        qk.evaluate(x[0])


def test_kernel_feeds_sklearn_svc_as_precomputed_matrix_or_callable() -> None:
    x = RNG.normal(size=(40, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    train, test = slice(0, 30), slice(30, 40)
    qk = QuantumKernel(num_qubits=3)
    svc = SVC(kernel="precomputed").fit(qk.evaluate(x[train]), y[train])
    pre = svc.predict(qk.evaluate(x[test], x[train]))
    assert np.array_equal(SVC(kernel=qk).fit(x[train], y[train]).predict(x[test]), pre)
    piped = make_pipeline(QuantumKernel(num_qubits=3), SVC(kernel="precomputed"))
    assert np.array_equal(piped.fit(x[train], y[train]).predict(x[test]), pre)
    assert np.array_equal(QSVC(num_qubits=3).fit(x[train], y[train]).predict(x[test]), pre)


# -- training ---------------------------------------------------------------------------


def _separable(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two clusters with a margin: a linearly separable toy set."""
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=(n, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    x += 0.4 * (2 * y[:, None] - 1)  # push the classes apart
    return x, y


@pytest.mark.parametrize("optimizer", ["L-BFGS-B", "adam"])
def test_vqc_learns_a_separable_set_to_full_training_accuracy(optimizer: str) -> None:
    x, y = _separable()
    model = VQC(num_qubits=2, layers=2, optimizer=optimizer, max_iter=60, random_state=0)
    assert model.fit(x, y).score(x, y) == 1.0
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_vqr_fits_a_smooth_function() -> None:
    x = np.linspace(-1.0, 1.0, 40)[:, None]
    y = np.sin(2.0 * x[:, 0]) + 3.0
    model = VQR(num_qubits=1, layers=3, max_iter=200, random_state=0).fit(x, y)
    assert model.score(x, y) > 0.99


@pytest.mark.parametrize(
    "model",
    [
        VQC(num_qubits=2, layers=2, max_iter=15),
        VQC(num_qubits=2, optimizer="adam", max_iter=3),
        VQR(num_qubits=2, max_iter=15),
    ],
)
def test_a_fixed_random_state_gives_identical_fits(model) -> None:
    x, y = _separable(30)
    if isinstance(model, VQR):
        y = x[:, 0] - x[:, 1]
    a = clone(model).set_params(random_state=5).fit(x, y)
    b = clone(model).set_params(random_state=5).fit(x, y)
    c = clone(model).set_params(random_state=6).fit(x, y)
    assert np.array_equal(a.params_, b.params_)
    assert np.array_equal(a.predict(x), b.predict(x))
    assert not np.array_equal(a.params_, c.params_)
    restored = pickle.loads(pickle.dumps(a))
    assert np.array_equal(restored.predict(x), a.predict(x))


def test_bad_parameters_are_refused_in_one_line() -> None:
    x, y = _separable(10)
    with pytest.raises(ValueError, match="optimizer"):
        VQC(optimizer="sgd").fit(x, y)
    with pytest.raises(ValueError, match="num_qubits"):
        VQC(num_qubits=40).fit(x, y)
    with pytest.raises(ValueError, match="feature_map"):
        QSVC(feature_map="nope").fit(x, y)
    with pytest.raises(ValueError, match="basis states"):
        VQC(num_qubits=1).fit(np.arange(6.0)[:, None], np.arange(6))


# -- scikit-learn's estimator checks ----------------------------------------------------

# Small models so that the whole set runs in seconds. Every check applies and passes; the two
# that sklearn itself skips here are check_array_api_input (SCIPY_ARRAY_API unset; our
# simulation is numpy-only) and check_*_data_not_an_array (pandas is not installed).
ESTIMATORS = [
    QuantumKernel(num_qubits=2, reps=1),
    QSVC(num_qubits=2, reps=1),
    VQC(num_qubits=2, layers=2, max_iter=30, random_state=0),
    VQR(num_qubits=2, layers=1, max_iter=20, random_state=0),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)
