"""Errors of the quantum processor: each says what is wrong and, for files, where."""

from __future__ import annotations

from qiz import QizError


class QuantumError(QizError):
    """Base class: a circuit, problem or file the quantum processor cannot handle as asked."""


class CircuitError(QuantumError):
    """A circuit is malformed: unknown gate, wrong arity, qubit out of range, unbound parameter."""


class QasmError(QuantumError):
    """An OpenQASM 3 program cannot be read; carries the 1-based line and column when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        self.reason = message
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{message}")


class HamiltonianError(QuantumError):
    """A Pauli-sum Hamiltonian (or its file) is malformed; names the line when read from a file."""


class ProblemTooLarge(QuantumError):
    """The state would not fit in this machine's memory; says how much it would need."""

    def __init__(self, num_qubits: int, needed_bytes: int, available_bytes: int) -> None:
        self.num_qubits = num_qubits
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(
            f"{num_qubits} qubits need about {_human(needed_bytes)} of memory for the state "
            f"vectors; this machine has {_human(available_bytes)} available"
        )


def _human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
