"""The IBM adapter, offline: qiskit-ibm-runtime's fake backends through its own ``SamplerV2``
(local mode: Aer with the snapshot's noise model), against our target run of the same circuit.

The agreement bound is docs/noise.md's: two correct samplers of one distribution, N shots each
over K = 2^bits outcomes, stay within ``2 eps(N, K, delta/2)`` with probability 1 - delta,
``eps(N, K, delta) = sqrt((K ln 2 + ln(1/delta)) / (2N))``; delta = 1e-6, seeded runs. So that
the bound means something, the ideal distribution is checked to be farther from the runtime's
counts than one sample's bound: the noise this comparison resolves is really there.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("qiskit_ibm_runtime", reason="needs the ibm extra (qiskit-ibm-runtime)")

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.noise.sampler import sample
from qiz.quantum.providers import ibm
from qiz.quantum.providers.errors import ProviderError
from qiz.quantum.targets import catalog
from qiz.quantum.targets.compare import ideal_distribution, tvd
from qiz.quantum.targets.lowering import lower
from qiz.quantum.targets.noise import model_for
from qiz.quantum.targets.transpile import to_device

SHOTS = 10_000
DELTA = 1e-6


def eps(shots: int, bits: int, delta: float) -> float:
    return math.sqrt((2**bits * math.log(2) + math.log(1 / delta)) / (2 * shots))


def layered(n: int) -> Circuit:
    """ry layers and a cx ladder (bench/target_agreement.py's): a spread-out distribution."""
    c = Circuit(n, n)
    for layer in range(2):
        for q in range(n):
            c.ry(0.3 + 0.4 * q + 0.7 * layer, q)
        for q in range(layer % 2, n - 1, 2):
            c.cx(q, q + 1)
    return c.measure_all()


def two_sample_tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def test_our_target_agrees_with_the_runtime_sampler_on_its_fake_backend() -> None:
    """The same transpiled circuit (Qiskit's pass manager over our fake_manila target, seeded)
    sampled by our noisy simulator and by SamplerV2 on FakeManilaV2."""
    circuit = layered(4)
    target = catalog.load("fake_manila")
    device, _ = to_device(circuit, target, seed=1, use_qiskit=True)
    engine, physical = lower(device, target.basis_gates)
    ours = sample(engine, model_for(target, physical), SHOTS, seed=2).counts
    theirs = ibm.run(device, ibm.fake_backend("fake_manila"), SHOTS, seed=1)
    assert sum(theirs.values()) == SHOTS and all(len(k) == 4 for k in theirs)
    bound = 2 * eps(SHOTS, 4, DELTA / 2)
    assert two_sample_tvd(ours, theirs) <= bound  # measured 0.018 against 0.072
    ideal = ideal_distribution(circuit)
    assert ideal is not None
    assert tvd(ideal, theirs) > eps(SHOTS, 4, DELTA)  # measured 0.135 against 0.035


def test_target_of_a_fake_backend_is_the_shipped_target() -> None:
    """The calibration read from FakeManilaV2 is the shipped fake_manila's, field by field."""
    ours = catalog.load("fake_manila")
    read = ibm.target_of(ibm.fake_backend("fake_manila"))
    assert read.name == "fake_manila"
    assert read.source["snapshot_date"] == ours.source["snapshot_date"]
    assert read.basis_gates == ours.basis_gates
    assert (read.t1, read.t2, read.readout) == (ours.t1, ours.t2, ours.readout)
    assert read.gates == ours.gates


def test_a_plain_circuit_is_transpiled_for_the_backend() -> None:
    """An untranspiled GHZ-3 (h, cx) goes through Qiskit's pass manager for the backend; the
    runtime rejects non-ISA circuits, so this is the path a user's circuit takes online too."""
    counts = ibm.run(
        Circuit(3, 3).h(0).cx(0, 1).cx(1, 2).measure_all(),
        ibm.fake_backend("fake_manila"),
        2000,
        seed=3,
    )
    assert sum(counts.values()) == 2000
    assert counts.get("000", 0) + counts.get("111", 0) > 0.75 * 2000
    assert ibm.run(Circuit(2).x(1), ibm.fake_backend("FakeManilaV2"), 200, seed=3).keys() >= {
        "10"
    }  # nothing measured: every qubit is, into the bit of its index


def test_refusals_are_one_line() -> None:
    with pytest.raises(ProviderError, match="no fake backend 'fake_nowhere'"):
        ibm.fake_backend("fake_nowhere")
    with pytest.raises(ProviderError, match="shots must be at least 1"):
        ibm.submit(Circuit(1, 1).measure(0, 0), ibm.fake_backend("fake_manila"), 0)
