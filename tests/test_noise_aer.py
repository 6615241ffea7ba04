"""Our noisy simulators against Qiskit Aer's density-matrix simulator on the same noise model,
built in Aer and imported (docs/noise.md, "The statistics the tests use"):

* our density matrix equals Aer's entry by entry (1e-10);
* Aer's sampled counts, our trajectory counts and our exact distribution agree within the
  Hoeffding/union bound at delta = 1e-6;
* the comparison can fail: a model with the measurement error misplaced is farther from Aer's
  counts than the bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.noise.aer_import import from_aer
from qiz.quantum.noise.density import density_matrix
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.plan import make_plan
from qiz.quantum.noise.sampler import probabilities, sample

from .test_noise_stats import frequencies, tvd, tvd_bound, two_sample_bound

aer_noise = pytest.importorskip("qiskit_aer.noise")
qiskit = pytest.importorskip("qiskit")
AerSimulator = pytest.importorskip("qiskit_aer").AerSimulator

SHOTS = 40_000
OUTCOMES = 2**4


def aer_model(measure_error: bool = True):
    """All-qubit, local and composed errors, T2 > T1, excited population, measure errors,
    all-qubit and local readout errors."""
    n = aer_noise
    model = n.NoiseModel()
    one = n.depolarizing_error(0.02, 1).compose(n.thermal_relaxation_error(50, 30, 2))
    model.add_all_qubit_quantum_error(one, ["h", "sx", "rx", "u"], warnings=False)
    model.add_all_qubit_quantum_error(n.depolarizing_error(0.05, 2), ["cx"], warnings=False)
    model.add_quantum_error(n.amplitude_damping_error(0.1), ["rx"], [2], warnings=False)
    damp = n.phase_damping_error(0.2).compose(n.amplitude_damping_error(0.05))
    model.add_quantum_error(damp, ["h"], [1], warnings=False)
    pair = n.thermal_relaxation_error(40, 70, 3, 0.1).tensor(n.depolarizing_error(0.01, 1))
    model.add_quantum_error(pair, ["cx"], [1, 2], warnings=False)
    if measure_error:
        model.add_all_qubit_quantum_error(n.amplitude_damping_error(0.15), ["measure"])
    model.add_all_qubit_readout_error(n.ReadoutError([[0.97, 0.03], [0.06, 0.94]]))
    model.add_readout_error(n.ReadoutError([[0.9, 0.1], [0.2, 0.8]]), [0], warnings=False)
    return model


def ours() -> Circuit:
    c = Circuit(4).h(0).h(1).cx(0, 1).rx(0.7, 2).cx(1, 2).u(0.3, 0.2, 0.1, 3).cx(2, 3)
    return c.sx(3).cx(3, 0).h(2).cx(1, 2).rx(1.9, 1)


def to_qiskit(circuit: Circuit):
    qc = qiskit.QuantumCircuit(circuit.num_qubits, circuit.num_clbits)
    for inst in circuit:
        if inst.name == "measure":
            qc.measure(inst.qubits[0], inst.clbits[0])
        else:
            getattr(qc, inst.name)(*inst.params, *inst.qubits)
    return qc


def aer_counts(circuit: Circuit, model, shots: int, seed: int) -> dict[str, int]:
    sim = AerSimulator(method="density_matrix", noise_model=model)
    return dict(sim.run(to_qiskit(circuit), shots=shots, seed_simulator=seed).result().get_counts())


def test_our_density_matrix_equals_aers() -> None:
    model = aer_model()
    qc = to_qiskit(ours())
    qc.save_density_matrix()
    sim = AerSimulator(method="density_matrix", noise_model=model)
    theirs = np.asarray(sim.run(qc).result().data()["density_matrix"])
    mine = density_matrix(make_plan(ours(), from_aer(model)))
    assert np.max(np.abs(mine - theirs)) < 1e-10


def test_trajectories_density_and_aer_agree_within_the_bound() -> None:
    model = aer_model()
    imported = from_aer(model)
    circuit = ours().measure_all()
    exact = probabilities(circuit, imported)
    theirs = frequencies(aer_counts(circuit, model, SHOTS, seed=7))
    mine = frequencies(sample(circuit, imported, shots=SHOTS, seed=5).counts)
    one = tvd_bound(SHOTS, OUTCOMES)
    assert tvd(theirs, exact) < one
    assert tvd(mine, exact) < one
    assert tvd(mine, theirs) < two_sample_bound(SHOTS, SHOTS, OUTCOMES)
    # the check has power: the measurement error left out (Aer applies it before measuring;
    # applied after, it would change nothing) is farther from Aer's counts than the bound
    wrong = probabilities(circuit, from_aer(aer_model(measure_error=False)))
    assert tvd(theirs, wrong) > one


def test_mid_circuit_measurement_and_reset_agree_with_aer() -> None:
    model = aer_model()
    model.add_all_qubit_quantum_error(aer_noise.phase_damping_error(0.4), ["reset"])
    c = Circuit(3, 4).h(0).cx(0, 1).rx(1.1, 2)
    c.measure(0, 0)
    c.reset(1)
    c.h(1).cx(1, 2).h(0)
    c.measure(1, 1)
    c.measure(2, 2)
    c.measure(0, 3)
    theirs = frequencies(aer_counts(c, model, 20_000, seed=3))
    mine = frequencies(sample(c, from_aer(model), shots=20_000, seed=3).counts)
    assert tvd(mine, theirs) < two_sample_bound(20_000, 20_000, 2**4)


def test_correlated_readout_errors_are_refused() -> None:
    model = aer_noise.NoiseModel()
    probs = np.full((4, 4), 0.02) + np.eye(4) * 0.92
    model.add_readout_error(aer_noise.ReadoutError(probs), [0, 1])
    with pytest.raises(NoiseError, match=r"correlated readout error on qubits \[0, 1\]"):
        from_aer(model)
    with pytest.raises(NoiseError, match="not a Qiskit Aer NoiseModel"):
        from_aer(object())


def test_a_backends_noise_imports_and_simulates_as_qiskit_computes_it() -> None:
    """``from_backend`` on Qiskit's generic 5-qubit backend (calibrated gate errors with thermal
    relaxation, readout errors): our density matrix equals qiskit.quantum_info's exact evolution
    with the same errors (1e-12), and Aer's simulator within 1e-8 (Aer's own result differs from
    that exact evolution by ~4e-10 on this circuit; ours does not)."""
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit.quantum_info import DensityMatrix, Kraus

    from qiz.quantum.noise.aer_import import from_backend

    backend = GenericBackendV2(5, seed=42)
    model = from_backend(backend)
    aer = aer_noise.NoiseModel.from_backend(backend)
    assert len(model.local) == sum(len(v) for v in aer._local_quantum_errors.values()) == 40
    assert sorted(model.readout_local) == [0, 1, 2, 3, 4]
    c = Circuit(5).sx(0).rz(0.4, 0).x(1).cx(0, 1).sx(2).cx(1, 2).rz(1.2, 2).cx(2, 3)
    c.sx(4).cx(3, 4).id(0)
    mine = density_matrix(make_plan(c, model))
    exact = DensityMatrix.from_label("0" * 5)
    for inst in c:
        step = qiskit.QuantumCircuit(5)
        getattr(step, inst.name)(*inst.params, *inst.qubits)
        exact = exact.evolve(step)
        error = aer._local_quantum_errors.get(inst.name, {}).get(tuple(inst.qubits))
        if error is not None:
            exact = exact.evolve(Kraus(error), qargs=list(inst.qubits))
    assert np.max(np.abs(mine - exact.data)) < 1e-12
    qc = to_qiskit(c)
    qc.save_density_matrix()
    sim = AerSimulator(method="density_matrix", noise_model=aer)
    theirs = np.asarray(sim.run(qc).result().data()["density_matrix"])
    assert np.max(np.abs(mine - theirs)) < 1e-8


def test_imported_pauli_errors_stay_mixtures_of_16_paulis() -> None:
    """Composed depolarizing errors (256 products in Aer) import as the 16 two-qubit Paulis with
    summed weights: the trajectories then draw without computing state-dependent probabilities."""
    model = aer_noise.NoiseModel()
    error = aer_noise.depolarizing_error(0.05, 2).compose(aer_noise.depolarizing_error(0.02, 2))
    model.add_all_qubit_quantum_error(error, ["cx"])
    channel = from_aer(model).all_qubit["cx"]
    assert len(channel.kraus) == 16
    assert channel.mixture is not None
    assert channel.scalar == {0}  # the identity: nothing to apply for the no-error shots
    assert sum(channel.mixture) == pytest.approx(1.0, abs=1e-12)
