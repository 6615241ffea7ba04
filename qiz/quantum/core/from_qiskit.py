"""Qiskit ``QuantumCircuit`` -> our ``Circuit``, gate by gate, without going through text.

Why a direct translation and not ``qiskit.qasm3.dumps`` into our importer: a Qiskit circuit
built from its library (``EfficientSU2``, ``QFT``, ``UnitaryGate``...) holds composite
instructions that the OpenQASM exporter writes as opaque definitions or refuses, while every one
of them carries its ``definition``, which we expand until only our gates are left. Parameters
stay symbolic: each Qiskit ``Parameter`` becomes one of ours (``p0``, ``p1``... in the order of
``QuantumCircuit.parameters``, Qiskit's binding order), and an angle must stay affine in them,
as everywhere in the engine (``params``). Anything without a unitary we can run is refused with
the instruction named: control flow (``if_else``, ``for_loop``...), classical stores, opaque
gates without a definition.

Qiskit is imported by the caller, never here: this module only reads the objects it is given
(``qiz.quantum`` must load without Qiskit installed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import CircuitError
from qiz.quantum.core.gates import GATES
from qiz.quantum.core.params import ParamExpr, ParamValue

# Qiskit instruction names that are ours under another name, with their parameter mapping
_RENAMED = {
    "u3": ("u", lambda p: p),
    "u1": ("p", lambda p: p),
    "u2": ("u", lambda p: [math.pi / 2, *p]),
    "cu1": ("cp", lambda p: p),
    "cu3": ("cu", lambda p: [*p, 0.0]),
    "i": ("id", lambda p: p),
}
_IGNORED = {"delay", "global_phase"}  # the identity on an ideal simulator; a global phase


def is_qiskit_circuit(value: object) -> bool:
    """Whether ``value`` is a Qiskit ``QuantumCircuit`` (judged by its type, so Qiskit need not
    be imported to ask)."""
    return any(
        cls.__name__ == "QuantumCircuit" and cls.__module__.startswith("qiskit")
        for cls in type(value).__mro__
    )


@dataclass(frozen=True)
class Translated:
    """A Qiskit circuit in our terms: the ``circuit``; ``parameters``, our names for Qiskit's
    parameters in its binding order (``QuantumCircuit.parameters``); ``registers``, each
    classical register's name and the flat bit index of its bit 0, 1, ..."""

    circuit: Circuit
    parameters: tuple[str, ...]
    qiskit_parameters: tuple[Any, ...]
    registers: tuple[tuple[str, tuple[int, ...]], ...]

    def bindings(self, values: Mapping[Any, float] | Sequence[float]) -> dict[str, float]:
        """Values for our parameter names from a sequence in Qiskit's order, or a mapping keyed
        by Qiskit ``Parameter`` objects or their names."""
        if isinstance(values, Mapping):
            by_name = {getattr(k, "name", k): float(v) for k, v in values.items()}
            missing = [p.name for p in self.qiskit_parameters if p.name not in by_name]
            if missing:
                raise CircuitError(f"parameter {missing[0]!r} is not bound")
            return {
                ours: by_name[p.name]
                for ours, p in zip(self.parameters, self.qiskit_parameters, strict=True)
            }
        numbers = [float(v) for v in values]
        if len(numbers) != len(self.parameters):
            raise CircuitError(
                f"expected {len(self.parameters)} parameter values (in the order of "
                f"QuantumCircuit.parameters), got {len(numbers)}"
            )
        return dict(zip(self.parameters, numbers, strict=True))


def translate(qc: Any) -> Translated:
    """Our circuit for the Qiskit circuit ``qc``; a ``CircuitError`` names what cannot run."""
    qiskit_params = tuple(qc.parameters)
    names = {p: f"p{i}" for i, p in enumerate(qiskit_params)}
    out = Circuit(qc.num_qubits, qc.num_clbits, name=str(qc.name or "circuit"))
    qubit_index = {bit: i for i, bit in enumerate(qc.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(qc.clbits)}
    _append(out, qc, [qubit_index[q] for q in qc.qubits], list(range(qc.num_clbits)), names)
    registers = tuple((reg.name, tuple(clbit_index[bit] for bit in reg)) for reg in qc.cregs)
    return Translated(out, tuple(names.values()), qiskit_params, registers)


def _append(
    out: Circuit, qc: Any, qubits: list[int], clbits: list[int], names: Mapping[Any, str]
) -> None:
    """Append ``qc``'s instructions to ``out``, its qubit i being ``qubits[i]`` of ``out``."""
    local_q = {bit: qubits[i] for i, bit in enumerate(qc.qubits)}
    local_c = {bit: clbits[i] for i, bit in enumerate(qc.clbits)}
    for item in qc.data:
        op = item.operation
        name = op.name
        qs = [local_q[q] for q in item.qubits]
        cs = [local_c[c] for c in item.clbits]
        if getattr(op, "is_control_flow", lambda: False)() or getattr(op, "condition", None):
            raise CircuitError(
                f"Qiskit instruction {name!r} (classical control flow) cannot be run by this "
                "engine from a Qiskit circuit; write it in OpenQASM 3 instead"
            )
        if name in _IGNORED:
            continue
        if name == "measure":
            out.measure(qs[0], cs[0])
        elif name == "reset":
            out.reset(qs[0])
        elif name == "barrier":
            out.barrier(*qs)
        elif name in GATES or name in _RENAMED:
            ours, convert = _RENAMED.get(name, (name, lambda p: p))
            params = [_angle(p, name, names) for p in op.params]
            out.append(ours, qs, convert(params))
        else:
            definition = _definition(op)
            if definition is None:
                raise CircuitError(
                    f"Qiskit instruction {name!r} has no definition in gates this engine runs "
                    f"(it runs {', '.join(sorted(GATES))}, measure, reset and barrier)"
                )
            _append(out, definition, qs, cs, names)


def _definition(op: Any) -> Any:
    """The instruction's decomposition, or None (an opaque gate, a classical instruction)."""
    try:
        return op.definition
    except Exception:  # Qiskit raises several kinds for "no definition"
        return None


def _angle(value: Any, gate: str, names: Mapping[Any, str]) -> ParamValue:
    """A Qiskit gate parameter as a float or an affine ``ParamExpr`` of our parameters."""
    free = getattr(value, "parameters", None)
    if free is None:
        number = complex(value)
        if number.imag:
            raise CircuitError(f"{gate}: angle {value} is not real")
        return number.real
    if not free:
        return _real(value, gate)
    slopes = []
    for param in sorted(free, key=lambda p: names[p]):
        slope = value.gradient(param)
        if getattr(slope, "parameters", None):  # still depends on a parameter: not affine
            raise CircuitError(
                f"{gate}: angle {value} is not affine in its parameters (the engine takes "
                "c0 + c1*a + c2*b ...); bind those parameters first"
            )
        slopes.append((names[param], _real(slope, gate)))
    # affine, so its value at 0 is its constant (checked first: 1/a has no value there)
    const = _real(value.bind(dict.fromkeys(free, 0.0)), gate)
    terms = tuple((name, c) for name, c in slopes if c != 0.0)
    return ParamExpr(terms, const) if terms else const


def _real(value: Any, gate: str) -> float:
    number = complex(value)
    if number.imag:
        raise CircuitError(f"{gate}: angle {value} is not real")
    return number.real
