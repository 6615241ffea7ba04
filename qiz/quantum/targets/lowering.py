"""A device circuit (physical qubits, the device's basis gates) as an engine circuit on a compact
register, and the numbers people ask of a transpiled circuit (depth, two-qubit gates).

A 127-qubit device runs a 3-qubit GHZ state on 3 of its qubits: the engine simulates only the
qubits some instruction touches, renumbered 0..k-1 in increasing physical order, so the state
has 2^k amplitudes, not 2^127.

The engine has no ``ecr`` gate (IBM Eagle's two-qubit gate). ECR(a, b) equals, exactly and with
no global phase, ``x a; h b; rzz(-pi/2) a, b; h b`` (checked against Qiskit's ``ECRGate`` in
the tests); the ``x`` is written ``u(pi, 0, pi)`` (the same matrix) and the others are gates a
device model never names, so the device's noise lands only where placed. The ecr's noise
channel E must follow the whole gate, i.e. after the last ``h b``; it is placed after the
``rzz`` instead as E' = H_b E H_b (Kraus operators conjugated by H on b), which is the same
map: H_b E'(sigma) H_b = E(H_b sigma H_b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.targets.errors import TargetError

ECR_NOISE_GATE = "rzz"  # the engine gate an ecr's noise channel follows
_H = np.array([[1, 1], [1, -1]], dtype=np.complex128) / math.sqrt(2)
_H_ON_B = np.kron(_H, np.eye(2))  # H on the gate's second qubit (the high bit)
NOT_COUNTED = frozenset({"barrier"})


@dataclass(frozen=True)
class DeviceCircuit:
    """Instructions on a device's physical qubits, in its basis gates (``ecr`` allowed),
    ``measure``, ``reset`` and ``barrier``: what the transpiler hands over."""

    num_qubits: int
    num_clbits: int
    instructions: tuple[Instruction, ...]
    name: str = "circuit"

    def used_qubits(self) -> list[int]:
        used = {
            q for inst in self.instructions if inst.name not in NOT_COUNTED for q in inst.qubits
        }
        return sorted(used)

    def depth(self) -> int:
        """Layers of instructions (gates, measurements, resets; barriers not counted), as
        Qiskit's ``QuantumCircuit.depth()``: a measurement also waits on its classical bit."""
        qlevel: dict[int, int] = {}
        clevel: dict[int, int] = {}
        deepest = 0
        for inst in self.instructions:
            if inst.name in NOT_COUNTED:
                continue
            level = 1 + max(
                [qlevel.get(q, 0) for q in inst.qubits] + [clevel.get(c, 0) for c in inst.clbits]
            )
            for q in inst.qubits:
                qlevel[q] = level
            for c in inst.clbits:
                clevel[c] = level
            deepest = max(deepest, level)
        return deepest

    def two_qubit_gates(self) -> int:
        return sum(
            1
            for inst in self.instructions
            if len(inst.qubits) == 2 and inst.name not in NOT_COUNTED and inst.name != "measure"
        )


def lower(device: DeviceCircuit, basis: Sequence[str]) -> tuple[Circuit, list[int]]:
    """The engine circuit on the used qubits (compact, in physical order) and those physical
    qubits, ``physical[i]`` being engine qubit i."""
    if "ecr" in basis and ECR_NOISE_GATE in basis:
        raise TargetError(f"a target with both ecr and {ECR_NOISE_GATE} cannot be lowered")
    physical = device.used_qubits()
    index = {q: i for i, q in enumerate(physical)}
    out = Circuit(len(physical), device.num_clbits, [], device.name)
    for inst in device.instructions:
        if inst.name in NOT_COUNTED:
            continue
        qs = tuple(index[q] for q in inst.qubits)
        if inst.name == "ecr":
            a, b = qs
            out.instructions.extend(
                [
                    Instruction("u", (a,), (math.pi, 0.0, math.pi)),
                    Instruction("h", (b,)),
                    Instruction(ECR_NOISE_GATE, (a, b), (-math.pi / 2,)),
                    Instruction("h", (b,)),
                ]
            )
        else:
            out.instructions.append(Instruction(inst.name, qs, inst.params, inst.clbits))
    return out, physical


def ecr_channel_operators(ops: Sequence[np.ndarray]) -> list[np.ndarray]:
    """An ecr's Kraus operators as the ones to place after the lowering's ``rzz``."""
    return [_H_ON_B @ k @ _H_ON_B for k in ops]
