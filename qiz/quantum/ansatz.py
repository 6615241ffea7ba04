"""Variational ansatz circuits: the hardware-efficient layered ansatz and user-given circuits.

``HardwareEfficientAnsatz(n, depth)`` is ``depth`` x [RY on every qubit, CZ entangler], with
parameter ``theta[l * n + q]`` on qubit q of layer l, starting from |0...0>. Its ``circuit()``
is the same ansatz as a general parameterised Circuit, so the fast path can be checked against
the gate-level engine and exported as OpenQASM.

With ``gate="cx"`` the entangler is a CX chain and a final RY layer follows (Qiskit's
RealAmplitudes form). It runs on the gate-level adjoint path. It exists because RY + CZ is not
universal for real states: on the open transverse-field Ising chain at h = 1 its energy stalls
(0.0245 above the ground energy at 4 qubits, 0.10 at 8, for every depth tried), while RY + CX
reaches the ground state to 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qiz.quantum.circuit import Circuit
from qiz.quantum.errors import QuantumError
from qiz.quantum.params import Parameter

ENTANGLERS = ("ladder", "ring", "none")


@dataclass(frozen=True)
class HardwareEfficientAnsatz:
    """Layers of RY rotations and CZ entanglers ("ladder": (q, q+1); "ring": plus (n-1, 0))."""

    num_qubits: int
    depth: int = 4
    entangler: str = "ladder"
    gate: str = "cz"

    def __post_init__(self) -> None:
        if self.num_qubits < 1 or self.depth < 1:
            raise QuantumError("the ansatz needs at least one qubit and one layer")
        if self.entangler not in ENTANGLERS:
            raise QuantumError(f"entangler must be one of {', '.join(ENTANGLERS)}")
        if self.gate not in ("cz", "cx"):
            raise QuantumError("the entangling gate must be cz or cx")

    @property
    def fused(self) -> bool:
        """Whether the fused RY + CZ fast path applies (the CX form runs gate by gate)."""
        return self.gate == "cz"

    @property
    def num_parameters(self) -> int:
        return self.num_qubits * (self.depth + (0 if self.fused else 1))

    def cz_pairs(self) -> list[tuple[int, int]]:
        n = self.num_qubits
        if self.entangler == "none":
            return []
        pairs = [(q, q + 1) for q in range(n - 1)]
        if self.entangler == "ring" and n > 2:
            pairs.append((n - 1, 0))
        return pairs

    def cz_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The entangler as (shift, mask) groups: pair (a, a + s) is bit a of x & (x >> s)."""
        groups: dict[int, int] = {}
        for a, b in self.cz_pairs():
            lo, hi = min(a, b), max(a, b)
            groups[hi - lo] = groups.get(hi - lo, 0) | (1 << lo)
        shifts = np.array(sorted(groups), dtype=np.int64)
        masks = np.array([groups[s] for s in sorted(groups)], dtype=np.int64)
        return shifts, masks

    def circuit(self) -> Circuit:
        """The same ansatz as a parameterised gate-level circuit (parameters t0, t1, ...)."""
        n = self.num_qubits
        circ = Circuit(n, name=f"hea_{n}x{self.depth}")
        for layer in range(self.depth):
            for q in range(n):
                circ.append("ry", [q], [Parameter(f"t{layer * n + q}")])
            for a, b in self.cz_pairs():
                circ.append(self.gate, [a, b])
        if not self.fused:
            for q in range(n):
                circ.append("ry", [q], [Parameter(f"t{self.depth * n + q}")])
        return circ


def parse_ansatz(spec: str, num_qubits: int) -> HardwareEfficientAnsatz:
    """``hea:DEPTH[:ladder|ring][:cz|cx]`` as the CLI writes it (default ladder, cz)."""
    parts = spec.split(":")
    if parts[0] != "hea" or not 2 <= len(parts) <= 4 or not parts[1].isdigit():
        raise QuantumError(f"ansatz {spec!r}: expected hea:DEPTH[:ladder|ring][:cz|cx]")
    entangler, gate = "ladder", "cz"
    for extra in parts[2:]:
        if extra in ENTANGLERS:
            entangler = extra
        elif extra in ("cz", "cx"):
            gate = extra
        else:
            raise QuantumError(f"ansatz {spec!r}: {extra!r} is not ladder, ring, cz or cx")
    return HardwareEfficientAnsatz(num_qubits, int(parts[1]), entangler, gate)
