"""The noisy simulators against each other and against the noiseless engine: trajectories agree
with the exact density matrix within the stated bound (both row paths, many groups, mid-circuit
reset), a seed reproduces the counts, a noiseless model is the existing sampler exactly, and the
refusals say what to do instead."""

from __future__ import annotations

import numpy as np
import pytest

from qiz.quantum import qasm
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.primitives import Sampler
from qiz.quantum.noise import channels as ch
from qiz.quantum.noise import trajectories
from qiz.quantum.noise.density import density_matrix
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.limits import MAX_DENSITY_QUBITS
from qiz.quantum.noise.model import NoiseModel
from qiz.quantum.noise.plan import make_plan
from qiz.quantum.noise.sampler import bitstring, prepare, probabilities, sample
from qiz.quantum.noise.trajectories import run_trajectories

from .test_noise_stats import frequencies, tvd, tvd_bound

SHOTS = 20_000


def noisy_model() -> NoiseModel:
    """State-dependent channels (damping, relaxation), mixtures, local overrides, readout."""
    return (
        NoiseModel()
        .add_all_qubit_error(ch.depolarizing(0.03), ["h", "sx", "rx", "u"])
        .add_all_qubit_error(ch.thermal_relaxation(40, 60, 4, 0.05), ["h", "rx", "x"])
        .add_all_qubit_error(ch.depolarizing(0.08, 2), ["cx", "cz"])
        .add_error(ch.amplitude_damping(0.2), ["rx"], [1])
        .add_error(ch.phase_damping(0.3).compose(ch.amplitude_damping(0.1)), ["h"], [2])
        .add_all_qubit_error(ch.amplitude_damping(0.1), ["measure"])
        .add_all_qubit_error(ch.phase_damping(0.2), ["reset"])
        .add_readout_error(ch.ReadoutError(((0.97, 0.03), (0.08, 0.92))))
        .add_readout_error(ch.ReadoutError.symmetric(0.1), qubit=3)
    )


def test_circuit() -> Circuit:
    c = Circuit(4, 4)
    c.h(0).h(2).cx(0, 1).rx(0.9, 1).reset(3).ccx(0, 1, 3).cz(2, 3).u(0.4, 0.3, 0.2, 2)
    c.sx(3).rx(1.3, 0).reset(2).h(2).x(1).cx(1, 2)
    return c.measure_all()


test_circuit.__test__ = False  # a builder, not a test


@pytest.mark.parametrize("row_kernels_from", [trajectories.ROW_KERNEL_MIN_QUBITS, 0])
def test_trajectories_agree_with_the_density_matrix(monkeypatch, row_kernels_from: int) -> None:
    """Both ways rows go through gates (numpy on the batch; the engine's kernels per row)."""
    monkeypatch.setattr(trajectories, "ROW_KERNEL_MIN_QUBITS", row_kernels_from)
    circuit, model = test_circuit(), noisy_model()
    exact = probabilities(circuit, model)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-12)
    result = sample(circuit, model, shots=SHOTS, seed=2024)
    assert result.method == "noisy trajectories"
    assert sum(result.counts.values()) == SHOTS
    assert tvd(frequencies(result.counts), exact) < tvd_bound(SHOTS, 2**4)


def test_many_groups_agree_too() -> None:
    """Shots split into groups (as when memory is short) sample the same distribution."""
    circuit, model = test_circuit(), noisy_model()
    plan = prepare(circuit, model)
    by_bits, meta = run_trajectories(plan, 4_000, np.random.default_rng(5), group=333)
    assert meta["groups"] == 13
    counts = {bitstring(k): v for k, v in by_bits.items()}
    assert tvd(frequencies(counts), probabilities(circuit, model)) < tvd_bound(4_000, 2**4)


def test_mid_circuit_measurement_splits_trajectories() -> None:
    """A bit measured mid-circuit, then the qubit flipped and measured again into another bit:
    outcomes stay correlated as the physics says (checked against the formula)."""
    c = Circuit(1, 2).h(0)
    c.measure(0, 0)
    c.x(0)
    c.measure(0, 1)
    model = NoiseModel().add_all_qubit_error(ch.amplitude_damping(0.3), ["x"])
    counts = sample(c, model, shots=SHOTS, seed=9).counts
    # bit0 = first outcome (1/2 each); after X: from 0 -> |1> damped to 0 w.p. 0.3; from 1 -> |0>
    exact = {"10": 0.5 * 0.7, "00": 0.5 * 0.3, "01": 0.5}
    assert tvd(frequencies(counts), exact) < tvd_bound(SHOTS, 4)


def test_a_seed_reproduces_the_counts() -> None:
    circuit, model = test_circuit(), noisy_model()
    a = sample(circuit, model, shots=3_000, seed=77)
    b = sample(circuit, model, shots=3_000, seed=77)
    c = sample(circuit, model, shots=3_000, seed=78)
    assert a.counts == b.counts
    assert a.counts != c.counts
    d1 = sample(circuit, model, shots=3_000, seed=77, method="density")
    d2 = sample(circuit, model, shots=3_000, seed=77, method="density")
    assert d1.counts == d2.counts
    assert d1.metadata == {"exact": True}


def test_a_noiseless_model_is_the_existing_sampler_exactly() -> None:
    circuit = test_circuit()
    expected = Sampler().run(circuit, shots=1_000, seed=3)  # per-shot: it has a reset
    for model in (None, NoiseModel(), NoiseModel().add_readout_error(ch.ReadoutError.symmetric(0))):
        got = sample(circuit, model, shots=1_000, seed=3)
        assert got.counts == expected.counts
        assert got.method == expected.method


def test_channels_of_probability_zero_leave_the_engine_exact() -> None:
    """The trajectory machinery itself, with every channel the identity: not one draw is spent
    on noise, so the counts are the noiseless sampler's to the last shot."""
    text = (
        'OPENQASM 3.0; include "stdgates.inc"; qubit[5] q; bit[5] c;'
        "gate layer(t) a, b { ry(t) a; cx a, b; rz(t / 2) b; }"
        "h q[0]; layer(0.7) q[0], q[1]; layer(1.1) q[1], q[2]; ccx q[0], q[1], q[3];"
        "cswap q[2], q[3], q[4]; u(0.1, 0.2, 0.3) q[4]; c = measure q;"
    )
    circuit = qasm.loads(text)
    model = (
        NoiseModel()
        .add_all_qubit_error(ch.depolarizing(0.0), ["h", "ry", "rz", "u"])
        .add_all_qubit_error(ch.thermal_relaxation(50, 50, 0.0), ["ry"])
        .add_all_qubit_error(ch.depolarizing(0.0, 2), ["cx"])
        .add_all_qubit_error(ch.kraus([np.eye(8)]), ["ccx", "cswap"])
    )
    assert not model.is_ideal
    got = sample(circuit, model, shots=8_000, seed=12)
    assert got.method == "noisy trajectories"
    assert got.counts == Sampler().run(circuit, shots=8_000, seed=12).counts


def test_noise_changes_the_outcome_of_a_qasm_program() -> None:
    """The OpenQASM path end to end: a Bell pair with a noisy cx shows the odd outcomes at the
    rate the formula gives (2q depolarizing p: each of 01, 10 with probability p/4)."""
    circuit = qasm.loads(
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1];'
        "c = measure q;"
    )
    model = NoiseModel().add_all_qubit_error(ch.depolarizing(0.2, 2), "cx")
    counts = sample(circuit, model, shots=SHOTS, seed=4).counts
    exact = {"00": 0.45, "11": 0.45, "01": 0.05, "10": 0.05}
    assert probabilities(circuit, model) == pytest.approx(exact, abs=1e-12)
    assert tvd(frequencies(counts), exact) < tvd_bound(SHOTS, 4)


def test_density_method_refuses_large_registers_and_mid_circuit_measurement() -> None:
    model = NoiseModel().add_all_qubit_error(ch.depolarizing(0.1), "h")
    big = Circuit(MAX_DENSITY_QUBITS + 1).h(0)
    with pytest.raises(NoiseError, match=r"at most 12 qubits \(MAX_DENSITY_QUBITS\).*trajectory"):
        sample(big, model, shots=10, method="density")
    assert sum(sample(big, model, shots=10, seed=1).counts.values()) == 10  # trajectories do
    mid = Circuit(1, 2).h(0)
    mid.measure(0, 0)
    mid.h(0)
    mid.measure(0, 1)
    with pytest.raises(NoiseError, match="every measurement at the end"):
        probabilities(mid, model)


def test_density_matrix_is_a_state() -> None:
    rho = density_matrix(make_plan(test_circuit(), noisy_model()))
    assert np.allclose(rho, rho.conj().T, atol=1e-14)
    assert np.trace(rho).real == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.eigvalsh(rho).min() > -1e-12


def test_what_cannot_be_run_noisily_is_refused_by_name() -> None:
    model = NoiseModel().add_all_qubit_error(ch.depolarizing(0.1), "x")
    dynamic = qasm.loads(
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;'
        "h q[0]; c[0] = measure q[0]; if (c[0]) x q[1]; c[1] = measure q[1];"
    )
    with pytest.raises(NoiseError, match="classical control on measurements is not supported"):
        sample(dynamic, model, shots=10)
    assert sum(sample(dynamic, None, shots=10, seed=1).counts.values()) == 10  # noiseless: fine
    with pytest.raises(NoiseError, match="unknown noisy method 'mps'"):
        sample(Circuit(1).x(0), model, method="mps")


@pytest.mark.parametrize("qubits", [(0,), (6,), (2, 5), (5, 2), (1, 0, 6)])
def test_the_reduced_density_kernel_equals_numpy(qubits: tuple[int, ...]) -> None:
    from qiz.quantum.kernels.noise import reduced_density as kernel
    from qiz.quantum.kernels.noise import reduced_density_1q
    from qiz.quantum.noise.tensor import reduced_density

    rng = np.random.default_rng(len(qubits))
    psi = rng.normal(size=128) + 1j * rng.normal(size=128)
    psi /= np.linalg.norm(psi)
    out = np.empty((1 << len(qubits),) * 2, dtype=np.complex128)
    kernel(psi, np.array(qubits, dtype=np.int64), out)
    expected = reduced_density(psi[None], qubits, 7)[0]
    assert np.allclose(out, expected, atol=1e-14)
    if len(qubits) == 1:
        one = np.empty((2, 2), dtype=np.complex128)
        reduced_density_1q(psi, qubits[0], one)
        assert np.allclose(one, expected, atol=1e-14)


def test_the_noise_package_loads_without_qiskit() -> None:
    """Only the Aer import's functions load qiskit, when called."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qiz.quantum.noise import aer_import, density, model, sampler, trajectories\n"
        "from qiz.quantum.noise.channels import depolarizing\n"
        "from qiz.quantum.core.circuit import Circuit\n"
        "m = model.NoiseModel().add_all_qubit_error(depolarizing(0.1), 'h')\n"
        "sampler.sample(Circuit(1).h(0), m, shots=10, seed=1)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('qiskit', 'qiskit_aer')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
