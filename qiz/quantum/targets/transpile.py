"""A circuit to a target's gates and connectivity: Qiskit's transpiler when qiskit is installed,
otherwise a check that the circuit already fits.

We do not route circuits ourselves. With qiskit importable, the circuit goes to Qiskit's preset
pass manager (``generate_preset_pass_manager``, seeded) over a Qiskit ``Target`` built from ours
(basis gates with their calibrated errors and durations on their directed pairs, measurement
errors), so layout and routing prefer the better qubits as they do for a real backend. Without
qiskit a circuit runs only if it already fits: every gate a basis gate, every two-qubit gate on a
calibrated pair in the device's direction, qubit i being physical qubit i; anything else is
refused in one line saying qiskit is needed.
"""

from __future__ import annotations

from typing import Any

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.targets.device import Target
from qiz.quantum.targets.errors import TargetError
from qiz.quantum.targets.lowering import NOT_COUNTED, DeviceCircuit

OPTIMIZATION_LEVEL = 2  # Qiskit 2.x's default for transpile(): noise-aware layout (VF2Layout)
NEEDS_QISKIT = "to transpile it, install qiskit (pip install 'qiz[test]')"
IGNORED = frozenset({"barrier", "delay", "global_phase"})
CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case"})


def qiskit_available() -> bool:
    try:
        import qiskit  # noqa: F401
    except ImportError:
        return False
    return True


def to_device(
    circuit: Circuit, target: Target, seed: int | None = None, *, use_qiskit: bool | None = None
) -> tuple[DeviceCircuit, str]:
    """``circuit`` (bound, measured) on ``target``'s physical qubits, and who transpiled it
    (``"qiskit 2.x, optimization level 1"``, or ``"none (the circuit fits)"``)."""
    if use_qiskit is None:
        use_qiskit = qiskit_available()
    if circuit.num_qubits > target.num_qubits:
        raise TargetError(
            f"the circuit has {circuit.num_qubits} qubits; {target.name} has {target.num_qubits}"
        )
    if use_qiskit:
        return _with_qiskit(circuit, target, seed)
    problem = misfit(circuit, target)
    if problem:
        raise TargetError(f"{problem} on {target.name}; {NEEDS_QISKIT}")
    device = DeviceCircuit(
        target.num_qubits, circuit.num_clbits, tuple(circuit.instructions), circuit.name
    )
    return device, "none (the circuit fits)"


def misfit(circuit: Circuit, target: Target) -> str | None:
    """Why ``circuit`` does not fit ``target`` as it is (None if it does)."""
    basis = set(target.basis_gates)
    pairs = set(target.coupling_map)
    for inst in circuit.instructions:
        if inst.name in {"measure", "reset"} or inst.name in NOT_COUNTED:
            continue
        if inst.name not in basis:
            return f"gate {inst.name} is not a basis gate ({', '.join(target.basis_gates)})"
        if len(inst.qubits) == 2 and inst.qubits not in pairs:
            a, b = inst.qubits
            return f"{inst.name} on qubits ({a}, {b}) is not on a coupled pair"
        if len(inst.qubits) > 2:
            return f"{inst.name} acts on {len(inst.qubits)} qubits"
    return None


def _with_qiskit(circuit: Circuit, target: Target, seed: int | None) -> tuple[DeviceCircuit, str]:
    import qiskit
    from qiskit.transpiler import generate_preset_pass_manager

    qc = to_qiskit(circuit)
    pm = generate_preset_pass_manager(
        optimization_level=OPTIMIZATION_LEVEL, target=qiskit_target(target), seed_transpiler=seed
    )
    out = pm.run(qc)
    who = f"qiskit {qiskit.__version__}, optimization level {OPTIMIZATION_LEVEL}"
    return from_qiskit(out, circuit.name), who


def to_qiskit(circuit: Circuit) -> Any:
    """Our (bound) circuit as a Qiskit ``QuantumCircuit``: our gate names are Qiskit's."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import get_standard_gate_name_mapping

    mapping = get_standard_gate_name_mapping()
    qc = QuantumCircuit(circuit.num_qubits, circuit.num_clbits, name=circuit.name)
    for inst in circuit.instructions:
        if inst.name == "measure":
            qc.measure(inst.qubits[0], inst.clbits[0])
        elif inst.name == "reset":
            qc.reset(inst.qubits[0])
        elif inst.name == "barrier":
            qc.barrier(*inst.qubits)
        else:
            gate = type(mapping[inst.name])(*[float(p) for p in inst.params])  # type: ignore[arg-type]
            qc.append(gate, list(inst.qubits))
    return qc


def from_qiskit(qc: Any, name: str = "circuit") -> DeviceCircuit:
    """A transpiled ``QuantumCircuit`` (physical qubits) as a DeviceCircuit."""
    out: list[Instruction] = []
    for item in qc.data:
        op = item.operation
        if op.name in IGNORED:
            continue
        qubits = tuple(qc.find_bit(q).index for q in item.qubits)
        clbits = tuple(qc.find_bit(c).index for c in item.clbits)
        if getattr(op, "condition", None) is not None or op.name in CONTROL_FLOW:
            raise TargetError("a circuit with classical control cannot run on a target yet")
        out.append(Instruction(op.name, qubits, tuple(float(p) for p in op.params), clbits))
    return DeviceCircuit(qc.num_qubits, qc.num_clbits, tuple(out), name)


def qiskit_target(target: Target) -> Any:
    """Our target as a Qiskit ``Target``: its gates with their calibrated errors and durations,
    measurement (with the mean readout error) and reset on every qubit."""
    from qiskit.circuit import Measure, Reset
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.transpiler import InstructionProperties
    from qiskit.transpiler import Target as QiskitTarget

    mapping = get_standard_gate_name_mapping()
    qt = QiskitTarget(num_qubits=target.num_qubits)
    for name in target.basis_gates:
        props = {
            c.qubits: InstructionProperties(duration=c.duration, error=c.error)
            for c in target.gates.get(name, ())
        }
        if not props:  # a gate without calibration (e.g. rz everywhere)
            arity = mapping[name].num_qubits
            props = {(q,): None for q in range(target.num_qubits)} if arity == 1 else {}
        qt.add_instruction(mapping[name], props)
    qt.add_instruction(
        Measure(),
        {
            (q,): InstructionProperties(error=None if r is None else (r[0] + r[1]) / 2)
            for q, r in enumerate(target.readout)
        },
    )
    qt.add_instruction(Reset(), {(q,): None for q in range(target.num_qubits)})
    return qt
