"""The primitives people already use: a sampler (circuit, shots, seed -> counts) and an
estimator (circuit, Pauli-sum observables -> expectation values).

Counts are keyed by bitstrings of the classical register, bit 0 rightmost (Qiskit's order).
A circuit without any measurement is sampled as if every qubit were measured into bit i.
A program with classical control on measurements (``qasm.DynamicProgram``, any
``dynamic.DynamicCircuit``) is sampled shot-batched by ``dynamic``; the estimator refuses it.

Both also take a Qiskit ``QuantumCircuit`` (translated by ``from_qiskit``; Qiskit itself is never
imported here), its parameters bound from a sequence in ``QuantumCircuit.parameters`` order or
a mapping keyed by ``Parameter`` or name. Anything else is refused in one line that says what
is taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qiz.quantum.core import statevector
from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.core.dynamic import DynamicCircuit, run_dynamic
from qiz.quantum.core.engine import ENGINE_NAME, ENGINE_VERSION
from qiz.quantum.core.errors import CircuitError, QuantumError
from qiz.quantum.core.from_qiskit import is_qiskit_circuit, translate
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.sampling import sample_counts

MAX_SHOTS = 10_000_000
MAX_PER_SHOT_WORK = 1 << 31  # shots x amplitudes when mid-circuit measurement forces replays


@dataclass
class SamplerResult:
    counts: dict[str, int]
    shots: int
    seed: int | None
    num_clbits: int
    # "terminal" (one simulation, then sampling), "per-shot", or "dynamic..." (branching)
    method: str
    engine: str = f"{ENGINE_NAME}/{ENGINE_VERSION}"
    metadata: dict[str, object] = field(default_factory=dict)


def _terminal_measurements(circuit: Circuit) -> tuple[Circuit, list[tuple[int, int]]] | None:
    """Split off measurements that nothing acts on afterwards; None if there are others."""
    unitary: list[Instruction] = []
    measured: list[tuple[int, int]] = []
    done: set[int] = set()
    for inst in circuit:
        if inst.name == "measure":
            measured.append((inst.qubits[0], inst.clbits[0]))
            done.add(inst.qubits[0])
        elif inst.name == "reset":
            return None
        elif inst.name == "barrier":
            continue
        elif done.intersection(inst.qubits):
            return None
        else:
            unitary.append(inst)
    return Circuit(circuit.num_qubits, circuit.num_clbits, unitary, circuit.name), measured


class Sampler:
    """Runs a circuit ``shots`` times and counts the classical outcomes, reproducibly."""

    def run(
        self,
        circuit: Circuit | DynamicCircuit | Any,  # Any: a Qiskit QuantumCircuit
        shots: int = 1024,
        seed: int | None = None,
        parameters: Mapping[str, float] | Sequence[float] | None = None,
    ) -> SamplerResult:
        if not 0 < shots <= MAX_SHOTS:
            raise QuantumError(f"shots must be between 1 and {MAX_SHOTS}")
        circuit, parameters = _ours(circuit, parameters, "Sampler")
        if not isinstance(circuit, Circuit):
            return _run_dynamic(circuit, shots, seed, parameters)
        if parameters is not None:
            circuit = circuit.bind(parameters)
        elif circuit.parameters:
            raise CircuitError(f"unbound parameters: {', '.join(circuit.parameters)}")
        if not circuit.has_measurements():
            circuit = Circuit(
                circuit.num_qubits, circuit.num_clbits, list(circuit.instructions), circuit.name
            ).measure_all()
        rng = np.random.default_rng(seed)
        split = _terminal_measurements(circuit)
        width = circuit.num_clbits
        if split is not None:
            unitary, measured = split
            state = statevector.statevector(unitary)
            by_index = sample_counts(state, shots, rng)
            counts: dict[str, int] = {}
            for index, count in by_index.items():
                bits = [0] * width
                for qubit, clbit in measured:
                    bits[clbit] = (index >> qubit) & 1
                key = _bitstring(bits)
                counts[key] = counts.get(key, 0) + count
            return SamplerResult(counts, shots, seed, width, "terminal")
        if shots << circuit.num_qubits > MAX_PER_SHOT_WORK:
            raise QuantumError(
                f"mid-circuit measurement needs one simulation per shot: {shots} shots of "
                f"{circuit.num_qubits} qubits is too much work; use fewer shots"
            )
        counts = {}
        for _ in range(shots):
            _, bits = statevector.run(circuit, rng)
            key = _bitstring(bits)
            counts[key] = counts.get(key, 0) + 1
        return SamplerResult(counts, shots, seed, width, "per-shot")


def _ours(
    circuit: object, parameters: Mapping | Sequence[float] | None, who: str
) -> tuple[Any, Mapping | Sequence[float] | None]:
    """``circuit`` as one of ours: a Qiskit circuit translated, with ``parameters`` renamed to
    match; anything else that is not ours (a ``Circuit``, or a ``DynamicCircuit``: something
    with ``execute``) refused, saying what is taken."""
    if isinstance(circuit, Circuit) or hasattr(circuit, "execute"):
        return circuit, parameters
    if is_qiskit_circuit(circuit):
        translated = translate(circuit)
        if parameters is None and translated.parameters:
            names = ", ".join(p.name for p in translated.qiskit_parameters)
            raise CircuitError(f"unbound parameters: {names}")
        bound = None if parameters is None else translated.bindings(parameters)
        return translated.circuit, bound
    raise CircuitError(
        f"{who}.run takes a qiz Circuit, or a Qiskit QuantumCircuit (with qiskit installed: "
        f"pip install qiskit); got {type(circuit).__name__}"
    )


def _run_dynamic(
    program: DynamicCircuit,
    shots: int,
    seed: int | None,
    parameters: Mapping[str, float] | Sequence[float] | None,
) -> SamplerResult:
    if parameters is not None:
        program = program.bind(parameters)
    elif program.parameters:
        raise CircuitError(f"unbound parameters: {', '.join(program.parameters)}")
    result = run_dynamic(program, shots, np.random.default_rng(seed))
    counts: dict[str, int] = {}
    for bits, count in result.counts.items():
        key = _bitstring(bits)
        counts[key] = counts.get(key, 0) + count
    return SamplerResult(
        counts, shots, seed, program.num_clbits, result.method, metadata=result.metadata
    )


def _bitstring(bits: Sequence[int]) -> str:
    return "".join(str(b) for b in reversed(bits))


@dataclass
class EstimatorResult:
    values: list[float]
    engine: str = f"{ENGINE_NAME}/{ENGINE_VERSION}"


class Estimator:
    """Exact expectation values <psi|O|psi> of Pauli-sum observables in a circuit's state."""

    def run(
        self,
        circuit: Circuit | Any,  # Any: a Qiskit QuantumCircuit
        observables: PauliSum | Sequence[PauliSum],
        parameters: Mapping[str, float] | Sequence[float] | None = None,
    ) -> EstimatorResult:
        circuit, parameters = _ours(circuit, parameters, "Estimator")
        if not isinstance(circuit, Circuit):
            raise CircuitError(
                "the estimator needs a circuit without classical control; this program's "
                "control flow depends on measurements (sample it instead)"
            )
        obs = [observables] if isinstance(observables, PauliSum) else list(observables)
        if not obs:
            raise QuantumError("no observables given")
        for o in obs:
            if o.num_qubits != circuit.num_qubits:
                raise QuantumError(
                    f"an observable acts on {o.num_qubits} qubits, the circuit has "
                    f"{circuit.num_qubits}"
                )
        if parameters is not None:
            circuit = circuit.bind(parameters)
        split = _terminal_measurements(circuit)
        if split is None:
            raise CircuitError(
                "the estimator needs a circuit whose measurements, if any, come last, and no reset"
            )
        stripped = split[0]
        state = statevector.statevector(stripped)
        return EstimatorResult([o.expectation(state) for o in obs])
