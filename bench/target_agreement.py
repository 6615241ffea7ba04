"""Our noisy run on a shipped target against qiskit-ibm-runtime's own local run of the same
transpiled circuit on the same fake backend (``SamplerV2`` in local mode, which simulates with
Aer and ``NoiseModel.from_backend``): total variation distance between the two samples, against
the bound two correct samplers of the same distribution stay within (docs/noise.md).

Two steps, as qiskit-ibm-runtime is not a qiz dependency (see bench/gen_targets.py for the venv)::

    PYTHONPATH=. /tmp/genvenv/bin/python -m bench.target_agreement ibm /tmp/agreement.json
    .venv/bin/python -m bench.target_agreement ours /tmp/agreement.json

The first transpiles each case with our ``to_device`` (Qiskit's pass manager, seeded), runs it
through ``SamplerV2`` on the fake backend, and writes the transpiled circuit and the counts; the
second runs the very same transpiled circuit through our target and prints the comparison.
"""

from __future__ import annotations

import json
import math
import sys
import time

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.targets import catalog
from qiz.quantum.targets.lowering import DeviceCircuit, lower
from qiz.quantum.targets.transpile import to_device, to_qiskit

SHOTS = 40_000
DELTA = 1e-6
FAKES = {
    "fake_manila": "FakeManilaV2",
    "fake_sherbrooke": "FakeSherbrooke",
    "fake_kyiv": "FakeKyiv",
    "fake_torino": "FakeTorino",
}


def ghz(n: int) -> Circuit:
    c = Circuit(n, n).h(0)
    for q in range(n - 1):
        c.cx(q, q + 1)
    return c.measure_all()


def layered(n: int) -> Circuit:
    """ry layers and a cx ladder: a circuit whose ideal distribution is spread out."""
    c = Circuit(n, n)
    for layer in range(2):
        for q in range(n):
            c.ry(0.3 + 0.4 * q + 0.7 * layer, q)
        for q in range(layer % 2, n - 1, 2):
            c.cx(q, q + 1)
    return c.measure_all()


CASES = [
    ("fake_manila", "ghz3", ghz(3)),
    ("fake_manila", "layered4", layered(4)),
    ("fake_sherbrooke", "ghz4", ghz(4)),
    ("fake_sherbrooke", "layered4", layered(4)),
    ("fake_torino", "ghz4", ghz(4)),
    ("fake_kyiv", "layered4", layered(4)),
]


def eps(shots: int, bits: int, delta: float) -> float:
    return math.sqrt((2**bits * math.log(2) + math.log(1 / delta)) / (2 * shots))


def ibm(path: str) -> None:
    import qiskit_ibm_runtime
    from qiskit_ibm_runtime import SamplerV2, fake_provider

    out = {"package": f"qiskit-ibm-runtime {qiskit_ibm_runtime.__version__}", "cases": []}
    for name, label, circuit in CASES:
        target = catalog.load(name)
        device, transpiler = to_device(circuit, target, seed=1, use_qiskit=True)
        backend = getattr(fake_provider, FAKES[name])()
        sampler = SamplerV2(mode=backend, options={"simulator": {"seed_simulator": 1}})
        start = time.perf_counter()
        result = sampler.run([to_qiskit(device)], shots=SHOTS).result()[0]
        seconds = time.perf_counter() - start
        counts = next(iter(result.data.values())).get_counts()
        out["cases"].append(
            {
                "target": name,
                "circuit": label,
                "transpiler": transpiler,
                "num_clbits": device.num_clbits,
                "num_qubits": device.num_qubits,
                "instructions": [
                    [i.name, list(i.qubits), list(i.params), list(i.clbits)]
                    for i in device.instructions
                ],
                "counts": counts,
                "seconds": seconds,
            }
        )
        print(f"{name} {label}: {len(counts)} outcomes in {seconds:.2f} s", file=sys.stderr)
    with open(path, "w") as f:
        json.dump(out, f)


def tvd_from(ideal: dict[str, float], counts: dict[str, int], shots: int) -> float:
    keys = set(ideal) | set(counts)
    return 0.5 * sum(abs(ideal.get(k, 0.0) - counts.get(k, 0) / shots) for k in keys)


def ours(path: str) -> None:
    from qiz.quantum.noise.sampler import sample
    from qiz.quantum.targets.compare import ideal_distribution
    from qiz.quantum.targets.noise import model_for

    with open(path) as f:
        data = json.load(f)
    circuits = {(t, label): c for t, label, c in CASES}
    print(
        f"| target | circuit | 2q gates | TVD(ours, {data['package']}) | bound | "
        "TVD(ideal, ours) | TVD(ideal, theirs) | ours (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case in data["cases"]:
        target = catalog.load(case["target"])
        insts = tuple(
            Instruction(n, tuple(q), tuple(p), tuple(c)) for n, q, p, c in case["instructions"]
        )
        device = DeviceCircuit(case["num_qubits"], case["num_clbits"], insts)
        engine, physical = lower(device, target.basis_gates)
        start = time.perf_counter()
        mine = sample(engine, model_for(target, physical), SHOTS, seed=2).counts
        seconds = time.perf_counter() - start
        theirs = case["counts"]
        keys = set(mine) | set(theirs)
        tvd = 0.5 * sum(abs(mine.get(k, 0) - theirs.get(k, 0)) for k in keys) / SHOTS
        bound = 2 * eps(SHOTS, case["num_clbits"], DELTA / 2)
        label = case["circuit"]
        ideal = ideal_distribution(circuits[(case["target"], label)])
        print(
            f"| {case['target']} | {label} | {device.two_qubit_gates()} | {tvd:.4f} | "
            f"{bound:.4f} | {tvd_from(ideal, mine, SHOTS):.4f} | "
            f"{tvd_from(ideal, theirs, SHOTS):.4f} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    {"ibm": ibm, "ours": ours}[sys.argv[1]](sys.argv[2])
