"""DIMACS CNF formulas: parsing with line-numbered errors, and evaluation over all assignments.

Variable v (1-based, as DIMACS writes it) is qubit v - 1, so a satisfying assignment read off a
measured basis index has bit v - 1 equal to the truth value of v.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.files import read_text
from qiz.quantum.core.memory import MAX_QUBITS
from qiz.quantum.core.names import shown, whole

MAX_CNF_BYTES = 16 << 20
# variables of a formula: one qubit each, and solution_mask() allocates 2^N bytes; the header's
# count is read against this before int(), so 'p cnf <5,000 digits> 1' is refused by name
MAX_CNF_VARIABLES = MAX_QUBITS
# clauses a header may declare: more than a 16 MiB file can hold (each clause is >= 2 bytes);
# clauses are counted as they are read and refused at the first one beyond the declared count
MAX_CNF_CLAUSES = MAX_CNF_BYTES // 2


@dataclass(frozen=True)
class Cnf:
    num_vars: int
    clauses: tuple[tuple[int, ...], ...]

    @staticmethod
    def loads(text: str, source: str = "<cnf>") -> Cnf:
        declared: tuple[int, int] | None = None
        clauses: list[tuple[int, ...]] = []
        current: list[int] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if line.startswith("%"):
                break  # SATLIB files end with '%' and a stray '0'
            if not line or line.startswith("c"):
                continue
            if line.startswith("p"):
                parts = line.split()
                if declared is not None:
                    raise QuantumError(f"{source}:{lineno}: a second 'p cnf' header")
                if len(parts) != 4 or parts[1] != "cnf":
                    raise QuantumError(f"{source}:{lineno}: expected 'p cnf VARIABLES CLAUSES'")
                num_vars = whole(parts[2], MAX_CNF_VARIABLES)
                num_clauses = whole(parts[3], MAX_CNF_CLAUSES)
                if num_vars is None or num_clauses is None:
                    raise QuantumError(
                        f"{source}:{lineno}: expected 'p cnf VARIABLES CLAUSES' with at most "
                        f"{MAX_CNF_VARIABLES} variables (one qubit each) and {MAX_CNF_CLAUSES} "
                        "clauses"
                    )
                declared = (num_vars, num_clauses)
                continue
            if declared is None:
                raise QuantumError(f"{source}:{lineno}: clause before the 'p cnf' header")
            for tok in line.split():
                digits = tok[1:] if tok[0] in "+-" else tok
                lit = whole(digits, MAX_CNF_VARIABLES)  # bounded before int()
                if lit is None:
                    if not (digits.isascii() and digits.isdigit()):
                        raise QuantumError(f"{source}:{lineno}: {shown(tok)} is not a literal")
                    raise QuantumError(
                        f"{source}:{lineno}: literal {shown(tok)} exceeds the {declared[0]} "
                        "variables declared"
                    )
                lit = -lit if tok[0] == "-" else lit
                if lit == 0:
                    if not current:
                        raise QuantumError(f"{source}:{lineno}: empty clause")
                    if len(clauses) == declared[1]:  # counted as it grows, not at the end
                        raise QuantumError(
                            f"{source}:{lineno}: more than the {declared[1]} clauses declared"
                        )
                    clauses.append(tuple(current))
                    current = []
                elif abs(lit) > declared[0]:
                    raise QuantumError(
                        f"{source}:{lineno}: literal {lit} exceeds the {declared[0]} variables "
                        "declared"
                    )
                else:
                    current.append(lit)
        if declared is None:
            raise QuantumError(f"{source}: no 'p cnf' header")
        if current:
            clauses.append(tuple(current))
        if len(clauses) != declared[1]:
            raise QuantumError(
                f"{source}: header declares {declared[1]} clauses, found {len(clauses)}"
            )
        if declared[0] < 1:
            raise QuantumError(f"{source}: a formula needs at least one variable")
        return Cnf(declared[0], tuple(clauses))

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Cnf:
        text = read_text(path, max_size=MAX_CNF_BYTES, kind="a CNF file")
        return Cnf.loads(text, os.fspath(path))

    def satisfied_by(self, index: int) -> bool:
        return all(
            any(((index >> (abs(lit) - 1)) & 1) == (lit > 0) for lit in clause)
            for clause in self.clauses
        )

    def solution_mask(self) -> np.ndarray:
        """uint8[2^n]: 1 where the assignment satisfies every clause."""
        lits = np.array([lit for c in self.clauses for lit in c], dtype=np.int64)
        ends = np.cumsum([len(c) for c in self.clauses]).astype(np.int64)
        out = np.empty(1 << self.num_vars, dtype=np.uint8)
        _evaluate(out, lits, ends)
        return out


@njit(cache=True, parallel=True)
def _evaluate(out: np.ndarray, lits: np.ndarray, ends: np.ndarray) -> None:
    for x in prange(out.shape[0]):
        ok = 1
        start = 0
        for c in range(ends.shape[0]):
            sat = 0
            for k in range(start, ends[c]):
                lit = lits[k]
                bit = (x >> (abs(lit) - 1)) & 1
                if (lit > 0 and bit == 1) or (lit < 0 and bit == 0):
                    sat = 1
                    break
            start = ends[c]
            if sat == 0:
                ok = 0
                break
        out[x] = ok
