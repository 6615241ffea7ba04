"""Device targets (qiz.quantum.targets): the shipped files, transpiling to a device, the noise
rebuilt from a calibration against Aer's ``NoiseModel.from_backend``, and noisy runs.

qiskit-ibm-runtime is not installed here, so the shipped targets cannot be re-derived in a test
(``bench/gen_targets.py`` checks each against Aer when it writes them). Instead Qiskit's
``GenericBackendV2`` (random but realistic calibrations) stands in for a device: its calibration
read into a Target must give Aer's noise channels, and the same transpiled circuit must have the
same exact outcome distribution under our density matrix as under Aer's density-matrix
simulator.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.noise.sampler import probabilities
from qiz.quantum.targets import catalog, compare
from qiz.quantum.targets.device import Target
from qiz.quantum.targets.errors import TargetError
from qiz.quantum.targets.lowering import lower
from qiz.quantum.targets.noise import average_gate_fidelity, model_for
from qiz.quantum.targets.run import run
from qiz.quantum.targets.transpile import to_device, to_qiskit

SHIPPED = ("fake_kyiv", "fake_manila", "fake_sherbrooke", "fake_torino")
DELTA = 1e-6  # a correct simulator fails one seed in a million (docs/noise.md's statistics)


def eps(shots: int, bits: int, delta: float = DELTA) -> float:
    """TVD bound of an empirical distribution of ``shots`` draws over 2^bits outcomes."""
    return math.sqrt((2**bits * math.log(2) + math.log(1 / delta)) / (2 * shots))


def ghz(n: int) -> Circuit:
    c = Circuit(n, n).h(0)
    for q in range(n - 1):
        c.cx(q, q + 1)
    return c.measure_all()


def test_shipped_targets_load_and_run_without_qiskit() -> None:
    """In a process where importing qiskit fails: every shipped target loads; a circuit in the
    basis gates on coupled pairs runs; anything else is refused in one line naming qiskit."""
    code = """
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "qiskit" or name.startswith(("qiskit.", "qiskit_")):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.targets import catalog
from qiz.quantum.targets.errors import TargetError
from qiz.quantum.targets.run import run
out = {"targets": [catalog.load(n).summary()["num_qubits"] for n in catalog.names()]}
fits = Circuit(2, 2).rz(1.5707963267948966, 0).sx(0).rz(1.5707963267948966, 0).cx(0, 1)
r = run(fits.measure_all(), catalog.load("fake_manila"), 2000, seed=3)
out["fits"] = [r.transpiler, sorted(r.result.counts.items(), key=lambda kv: -kv[1])[:2], r.tvd]
try:
    run(Circuit(2, 2).h(0).cx(0, 1).measure_all(), catalog.load("fake_manila"), 10, seed=1)
except TargetError as exc:
    out["refused"] = str(exc)
out["qiskit_loaded"] = sorted(m for m in sys.modules if m.startswith("qiskit"))
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["targets"] == [127, 5, 127, 133]
    transpiler, top, tvd = out["fits"]
    assert transpiler == "none (the circuit fits)"
    assert {k for k, _ in top} == {"00", "11"} and 0 < tvd < 0.2
    assert "gate h is not a basis gate" in out["refused"]
    assert "install qiskit" in out["refused"] and "\n" not in out["refused"]
    assert out["qiskit_loaded"] == []


def test_shipped_targets_say_where_they_came_from() -> None:
    assert catalog.names() == list(SHIPPED)
    for name in SHIPPED:
        target = catalog.load(name)
        assert target.source["backend"] == name
        assert target.source["package"] == "qiskit-ibm-runtime 0.51.0"
        assert target.source["snapshot_date"][:4] in {"2024", "2025"}
        size = (catalog.DATA_DIR / f"{name}.json").stat().st_size
        assert size < 60_000, (name, size)
        again = Target.loads(target.dumps())
        assert again == target


def test_a_target_file_is_loaded_by_path(tmp_path) -> None:
    mine = tmp_path / "my_device.json"
    mine.write_text(catalog.load("fake_manila").dumps().replace('"fake_manila"', '"mine"', 1))
    target = catalog.load(str(mine))
    assert target.name == "mine" and target.num_qubits == 5
    assert target.coupling_map == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 3)]
    with pytest.raises(TargetError, match=r"missing\.json"):
        catalog.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"format": "qiz-target/0"}, "'format' must be"),
        ({"basis_gates": ["cx", "magic"]}, "cannot run: ['magic']"),
        ({"num_qubits": 6}, "one entry per qubit (6)"),
        ({"extra": 1}, "unknown key(s) ['extra']"),
    ],
)
def test_a_bad_target_file_is_refused_in_one_line(change: dict, words: str) -> None:
    data = catalog.load("fake_manila").to_dict()
    with pytest.raises(TargetError) as info:
        Target.from_dict({**data, **change})
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        catalog.load("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_transpiled_circuits_use_only_basis_gates_on_coupled_pairs(name: str) -> None:
    pytest.importorskip("qiskit")
    target = catalog.load(name)
    c = Circuit(4, 4).h(0).cx(0, 3).ry(0.3, 1).swap(1, 2).cz(2, 3).ccx(0, 1, 2).measure_all()
    device, transpiler = to_device(c, target, seed=11)
    assert transpiler.startswith("qiskit ")
    pairs = set(target.coupling_map)
    for inst in device.instructions:
        if inst.name in {"measure", "reset", "barrier"}:
            continue
        assert inst.name in target.basis_gates, inst
        if len(inst.qubits) == 2:
            assert inst.qubits in pairs, inst
    assert device.two_qubit_gates() >= 5  # ccx alone needs six cx; swap three
    assert device.depth() > 5
    again, _ = to_device(c, target, seed=11)
    assert again == device  # seeded


def test_ecr_lowering_is_exactly_qiskit_ecr() -> None:
    qiskit = pytest.importorskip("qiskit")
    from qiskit.circuit.library import ECRGate
    from qiskit.quantum_info import Operator

    from qiz.quantum.core.circuit import Instruction
    from qiz.quantum.targets.lowering import DeviceCircuit

    device = DeviceCircuit(3, 0, (Instruction("ecr", (2, 0)),))
    engine, physical = lower(device, ("ecr", "rz", "sx", "x"))
    assert physical == [0, 2]
    qc = qiskit.QuantumCircuit(2)
    qc.append(ECRGate(), [1, 0])
    ours = Operator(to_qiskit(engine)).data
    assert np.max(np.abs(ours - Operator(qc).data)) < 1e-12


def _generic_backend(basis: list[str]) -> object:
    from qiskit.providers.fake_provider import GenericBackendV2

    return GenericBackendV2(4, basis_gates=basis, seed=7, noise_info=True)


def _index(key: object) -> int:
    """An outcome key of Aer's probabilities dict: an int, or a hex string."""
    return key if isinstance(key, int) else int(str(key), 16)


@pytest.mark.parametrize("two_qubit", ["cx", "ecr", "cz"])
def test_noise_equals_aer_from_backend(two_qubit: str) -> None:
    """On GenericBackendV2: every rebuilt channel equals Aer's from_backend's within 1e-9; a
    transpiled GHZ circuit's exact distribution (our density matrix, readout errors left out)
    equals Aer's density-matrix simulator's (``save_probabilities``) within 1e-8."""
    pytest.importorskip("qiskit_aer")
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel as AerNoiseModel

    from qiz.quantum.targets.from_backend import differences_from_aer, from_backend

    backend = _generic_backend([two_qubit, "id", "rz", "sx", "x"])
    target = from_backend(backend)
    assert differences_from_aer(target, AerNoiseModel.from_backend(backend)) == []
    device, _ = to_device(ghz(3), target, seed=2)
    engine, physical = lower(device, target.basis_gates)
    model = model_for(target, physical)
    model.readout_local.clear()
    ours = probabilities(engine, model)

    qc = to_qiskit(device)
    measured = [
        (inst.qubits[0], inst.clbits[0]) for inst in device.instructions if inst.name == "measure"
    ]
    qc.remove_final_measurements()
    order = [q for q, _ in sorted(measured, key=lambda m: m[1])]  # clbit i <- qubit order[i]
    qc.save_probabilities_dict(order)
    sim = AerSimulator(method="density_matrix", noise_model=AerNoiseModel.from_backend(backend))
    theirs = sim.run(qc, shots=1).result().data()["probabilities"]
    width = len(order)
    theirs = {format(_index(k), f"0{width}b"): p for k, p in theirs.items()}
    keys = set(ours) | set(theirs)
    assert max(abs(ours.get(k, 0.0) - theirs.get(k, 0.0)) for k in keys) < 1e-8
    assert (
        compare.tvd(
            compare.ideal_distribution(ghz(3)), {k: round(p * 1e9) for k, p in ours.items()}
        )
        > 1e-3
    )


@pytest.mark.parametrize("name", ["fake_manila", "fake_sherbrooke"])
def test_noisy_ghz_on_a_target_is_off_the_ideal_by_what_its_errors_allow(name: str) -> None:
    """GHZ-3 on a shipped target. The exact noisy distribution (density matrix) is off the
    ideal by more than the sampling error, and by at most a loose bound from the calibration:
    3 x (sum over the transpiled circuit's noisy instructions of their channel's average gate
    infidelity) + (sum over measured qubits of the larger readout error). The 3: a channel's
    worst-case distance from the identity is at most ~3x its average infidelity for these
    channels (amplitude damping: gamma vs gamma/3; depolarizing: (d+1)/d). Our trajectories
    agree with that exact distribution within eps(N, 3 bits, 1e-6)."""
    pytest.importorskip("qiskit")
    target = catalog.load(name)
    circuit = ghz(3)
    device, _ = to_device(circuit, target, seed=5)
    engine, physical = lower(device, target.basis_gates)
    model = model_for(target, physical)
    exact = probabilities(engine, model)
    ideal = compare.ideal_distribution(circuit)
    tvd_exact = 0.5 * sum(abs(ideal.get(k, 0) - exact.get(k, 0)) for k in set(ideal) | set(exact))
    budget = 0.0
    for inst in engine.instructions:
        channel = model.channel_for(inst.name, inst.qubits)
        if inst.name != "measure" and channel is not None:
            budget += 3 * (1 - average_gate_fidelity(channel))
        if inst.name == "measure":
            budget += max(target.readout[physical[inst.qubits[0]]])
    shots = 20_000
    result = run(circuit, target, shots, seed=9)
    counts = result.result.counts
    sampled_vs_exact = 0.5 * sum(
        abs(exact.get(k, 0) - counts.get(k, 0) / shots) for k in set(exact) | set(counts)
    )
    print(
        f"{name}: TVD(ideal, exact noisy) = {tvd_exact:.4f}, bound {budget:.4f}; "
        f"TVD(trajectories, exact) = {sampled_vs_exact:.4f} <= {eps(shots, 3):.4f}"
    )
    assert eps(shots, 3) < tvd_exact <= budget
    assert sampled_vs_exact <= eps(shots, 3)
    assert result.physical_qubits == physical and abs(result.tvd - tvd_exact) <= eps(shots, 3)


def test_a_circuit_too_large_for_the_simulator_is_refused() -> None:
    target = catalog.load("fake_sherbrooke")
    wide = Circuit(60, 60)
    for q in range(60):
        wide.x(q)
    with pytest.raises(TargetError, match="uses 60 qubits of fake_sherbrooke"):
        run(wide.measure_all(), target, 10, seed=1, use_qiskit=False)


def test_mid_circuit_measurement_runs_without_an_ideal_and_control_flow_is_refused() -> None:
    pytest.importorskip("qiskit")
    from qiz.quantum import qasm

    target = catalog.load("fake_manila")
    mid = Circuit(2, 3).h(0).measure(0, 0).cx(0, 1).measure(1, 1).reset(0).measure(0, 2)
    outcome = run(mid, target, 400, seed=2)
    assert outcome.ideal is None and outcome.tvd is None and outcome.fidelity is None
    assert sum(outcome.result.counts.values()) == 400
    assert outcome.result.counts.get("000", 0) + outcome.result.counts.get("011", 0) > 300
    dynamic = qasm.loads(
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; '
        "c[0] = measure q[0]; if (c[0]) x q[1]; c[1] = measure q[1];"
    )
    with pytest.raises(TargetError, match="classical control"):
        run(dynamic, target, 10, seed=1)  # type: ignore[arg-type]
