"""A circuit run as a device would run it: transpiled to the target, simulated with its noise on
the qubits it uses, and compared with the ideal distribution of the circuit as written.

The run refuses, in one line, a transpiled circuit whose used qubits the noisy simulator cannot
hold (two state vectors of that many qubits must fit in memory; the engine's qubit cap too).
"""

from __future__ import annotations

from dataclasses import dataclass

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import ProblemTooLarge
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.primitives import SamplerResult
from qiz.quantum.noise.sampler import sample
from qiz.quantum.targets import compare
from qiz.quantum.targets.device import Target
from qiz.quantum.targets.errors import TargetError
from qiz.quantum.targets.lowering import DeviceCircuit, lower
from qiz.quantum.targets.noise import model_for
from qiz.quantum.targets.transpile import to_device

STATES_NEEDED = 2.2  # a noisy run keeps two states at its peak (qiz.quantum.noise), plus slack


@dataclass(frozen=True)
class TargetRun:
    """The noisy counts (``result``), what the transpiled circuit looks like, and how far the
    counts are from the ideal distribution (None where there is no exact one)."""

    target: Target
    result: SamplerResult
    device: DeviceCircuit
    physical_qubits: list[int]
    transpiler: str
    ideal: dict[str, float] | None
    tvd: float | None
    fidelity: float | None


def run(
    circuit: Circuit,
    target: Target,
    shots: int = 1024,
    seed: int | None = None,
    *,
    method: str = "trajectories",
    use_qiskit: bool | None = None,
    transpile_seed: int | None = None,
) -> TargetRun:
    """``shots`` noisy outcomes of ``circuit`` (bound) on ``target``, reproducible for a seed.

    ``transpile_seed`` seeds Qiskit's transpiler apart from the noise (None: ``seed`` seeds
    both). The mesh passes one from the job's params, so replicas that sample with different
    seeds still run the same transpiled circuit (docs/targets.md, "On the mesh")."""
    if not isinstance(circuit, Circuit):
        raise TargetError(
            "a program with classical control on measured bits cannot run on a target yet; "
            "it needs a circuit without if/while"
        )
    if circuit.parameters:
        raise TargetError(f"unbound parameters: {', '.join(circuit.parameters)}")
    if not circuit.has_measurements():
        circuit = Circuit(
            circuit.num_qubits, circuit.num_clbits, list(circuit.instructions), circuit.name
        ).measure_all()
    layout_seed = seed if transpile_seed is None else transpile_seed
    device, transpiler = to_device(circuit, target, layout_seed, use_qiskit=use_qiskit)
    engine_circuit, physical = lower(device, target.basis_gates)
    try:
        require_memory(len(physical), STATES_NEEDED)
    except ProblemTooLarge as exc:
        raise TargetError(
            f"the transpiled circuit uses {len(physical)} qubits of {target.name}, more than "
            f"the noisy simulator can hold here ({exc})"
        ) from None
    result = sample(engine_circuit, model_for(target, physical), shots, seed, method=method)
    ideal = compare.ideal_distribution(circuit)
    return TargetRun(
        target=target,
        result=result,
        device=device,
        physical_qubits=physical,
        transpiler=transpiler,
        ideal=ideal,
        tvd=None if ideal is None else compare.tvd(ideal, result.counts),
        fidelity=None if ideal is None else compare.fidelity(ideal, result.counts),
    )
