"""Pauli-sum observables and Hamiltonians: sum_k c_k P_k with P_k a tensor product of I, X, Y, Z.

A term is stored as (coefficient, x-mask, z-mask): bit q of the x-mask is set for X or Y on
qubit q, of the z-mask for Z or Y. With Y = i X Z, a term acts as

    P |j> = i^{#Y} (-1)^{popcount(j & z)} |j ^ x>,

which is what the kernels use. Text labels follow Qiskit: the rightmost character is qubit 0.

The file format (``load``/``loads``) has one term per line, ``#`` starting a comment:

    -1.0523732  II          # coefficient, then a dense label (rightmost = qubit 0)
    0.39793742 * Z0         # or: coefficient, optional '*', sparse factors like X3 Z0 Y1
    0.18093119 X0 X1

An optional first line ``qubits N`` fixes the width; otherwise it is the widest term.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from qiz.quantum.core.errors import HamiltonianError
from qiz.quantum.core.files import read_text
from qiz.quantum.core.memory import MAX_QUBITS, require_memory
from qiz.quantum.core.names import shown, whole
from qiz.quantum.core.threads import sized_by_qubits
from qiz.quantum.kernels import general as kernels

_SPARSE = re.compile(r"^([IXYZ])([0-9]+)$")
_DENSE = re.compile(r"^[IXYZ]+$")
MAX_TERMS = 1_000_000
DENSE_LIMIT = 12  # qubits up to which the exact ground energy is a dense eigvalsh
MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class PauliTerm:
    coeff: complex
    xmask: int
    zmask: int

    @property
    def num_y(self) -> int:
        return (self.xmask & self.zmask).bit_count()

    def label(self, num_qubits: int) -> str:
        chars = []
        for q in range(num_qubits - 1, -1, -1):
            x, z = (self.xmask >> q) & 1, (self.zmask >> q) & 1
            chars.append("IZXY"[x * 2 + z])
        return "".join(chars)


class PauliSum:
    """A Hermitian sum of Pauli strings on ``num_qubits`` qubits (like terms are merged)."""

    def __init__(self, num_qubits: int, terms: Iterable[tuple[complex, int, int]]) -> None:
        if not 1 <= num_qubits <= MAX_QUBITS:
            raise HamiltonianError(
                f"a Hamiltonian acts on 1 to {MAX_QUBITS} qubits, not {num_qubits}"
            )
        merged: dict[tuple[int, int], complex] = {}
        limit = 1 << num_qubits
        for coeff, x, z in terms:
            if not (0 <= x < limit and 0 <= z < limit):
                raise HamiltonianError(f"a term acts outside the {num_qubits} qubits")
            c = complex(coeff)
            if not (math.isfinite(c.real) and math.isfinite(c.imag)):
                raise HamiltonianError("coefficients must be finite numbers")
            merged[(x, z)] = merged.get((x, z), 0) + c
        self.num_qubits = num_qubits
        self.terms = [PauliTerm(c, x, z) for (x, z), c in merged.items() if c != 0]
        for t in self.terms:
            if abs(t.coeff.imag) > 1e-12 * max(1.0, abs(t.coeff)):
                raise HamiltonianError(
                    f"term {t.label(num_qubits)} has a complex coefficient {t.coeff}: "
                    "a Hamiltonian must be Hermitian"
                )

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def from_labels(
        pairs: Iterable[tuple[complex, str]], num_qubits: int | None = None
    ) -> PauliSum:
        """From (coefficient, dense label) pairs, Qiskit's order (rightmost = qubit 0)."""
        items = list(pairs)
        width = num_qubits or max((len(lbl) for _, lbl in items), default=0)
        if width > MAX_QUBITS:  # before the masks: a label's mask costs its length squared
            raise HamiltonianError(
                f"a Hamiltonian acts on at most {MAX_QUBITS} qubits, not {width}"
            )
        terms = []
        for coeff, label in items:
            if not _DENSE.match(label):
                raise HamiltonianError(
                    f"bad Pauli label {shown(label)}: use the letters I, X, Y, Z"
                )
            if len(label) > width:
                raise HamiltonianError(f"label {shown(label)} is wider than {width} qubits")
            terms.append((coeff, *_masks_dense(label)))
        return PauliSum(width, terms)

    @staticmethod
    def from_sparse(
        pairs: Iterable[tuple[complex, Sequence[tuple[str, int]]]], num_qubits: int
    ) -> PauliSum:
        """From (coefficient, [(letter, qubit), ...]) pairs."""
        terms = []
        for coeff, factors in pairs:
            x = z = 0
            for letter, q in factors:
                if not 0 <= q < num_qubits:
                    raise HamiltonianError(f"qubit {q} out of range ({num_qubits} qubits)")
                bit = 1 << q
                if (x | z) & bit:
                    raise HamiltonianError(f"qubit {q} appears twice in one term")
                x |= bit if letter in "XY" else 0
                z |= bit if letter in "ZY" else 0
            terms.append((coeff, x, z))
        return PauliSum(num_qubits, terms)

    @staticmethod
    def tfim(n: int, j: float = 1.0, h: float = 1.0, periodic: bool = False) -> PauliSum:
        """Transverse-field Ising: -j sum Z_i Z_{i+1} - h sum X_i (open unless periodic)."""
        pairs = [(i, i + 1) for i in range(n - 1)]
        if periodic and n > 2:
            pairs.append((n - 1, 0))
        terms = [(-j, 0, (1 << a) | (1 << b)) for a, b in pairs]
        terms += [(-h, 1 << i, 0) for i in range(n)]
        return PauliSum(n, terms)

    @staticmethod
    def heisenberg(
        n: int,
        *,
        jx: float = 1.0,
        jy: float = 1.0,
        jz: float = 1.0,
        h: float = 0.0,
        periodic: bool = False,
    ) -> PauliSum:
        """XYZ Heisenberg chain: sum jx XX + jy YY + jz ZZ on neighbours, plus h sum Z_i."""
        pairs = [(i, i + 1) for i in range(n - 1)]
        if periodic and n > 2:
            pairs.append((n - 1, 0))
        terms = []
        for a, b in pairs:
            m = (1 << a) | (1 << b)
            terms += [(jx, m, 0), (jy, m, m), (jz, 0, m)]
        terms += [(h, 0, 1 << i) for i in range(n)]
        return PauliSum(n, terms)

    @staticmethod
    def from_ising(
        num_qubits: int, h: dict[int, float], j: dict[tuple[int, int], float], offset: float
    ) -> PauliSum:
        """offset + sum h_i Z_i + sum J_ij Z_i Z_j."""
        terms = [(offset, 0, 0)] + [(w, 0, 1 << i) for i, w in h.items()]
        terms += [(w, 0, (1 << a) | (1 << b)) for (a, b), w in j.items()]
        return PauliSum(num_qubits, terms)

    @staticmethod
    def builtin(spec: str) -> PauliSum | None:
        """``tfim:N[:ring]`` or ``heisenberg:N[:ring]``; None if ``spec`` names no built-in
        model (so the caller can read it as a file or as text)."""
        for prefix, build in (("tfim:", PauliSum.tfim), ("heisenberg:", PauliSum.heisenberg)):
            if spec.startswith(prefix):
                digits, _, shape = spec.removeprefix(prefix).partition(":")
                n = whole(digits, MAX_QUBITS)  # bounded before int(): a name of 5,000 digits
                if n is None or n < 2 or shape not in ("", "ring"):
                    raise HamiltonianError(
                        f"{shown(spec)}: expected {prefix}N or {prefix}N:ring "
                        f"with 2 <= N <= {MAX_QUBITS}"
                    )
                return build(n, periodic=shape == "ring")
        return None

    # -- reading files --------------------------------------------------------------------

    @staticmethod
    def loads(text: str, source: str = "<text>") -> PauliSum:
        """Parse the text format described in the module docstring."""
        width: int | None = None
        dense: list[tuple[int, complex, str]] = []
        sparse: list[tuple[int, complex, list[tuple[str, int]]]] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}:{lineno}"
            fields = line.replace("*", " ").split()
            if fields[0].lower() == "qubits":
                if width is not None or dense or sparse:
                    raise HamiltonianError(f"{where}: 'qubits N' must be the first line")
                width = whole(fields[1], MAX_QUBITS) if len(fields) == 2 else None
                if width is None or width < 1:
                    raise HamiltonianError(
                        f"{where}: expected 'qubits N' with N >= 1 (at most {MAX_QUBITS})"
                    )
                continue
            coeff, payload = _parse_term(fields, where)
            if isinstance(payload, str):
                dense.append((lineno, coeff, payload))
            else:
                sparse.append((lineno, coeff, payload))
            if len(dense) + len(sparse) > MAX_TERMS:
                raise HamiltonianError(f"{where}: more than {MAX_TERMS} terms")
        if not dense and not sparse:
            if width is not None:  # 'qubits N' and nothing else: the zero operator
                return PauliSum(width, [])
            raise HamiltonianError(f"{source}: no terms found")
        widths = [len(lbl) for _, _, lbl in dense]
        widths += [max((q + 1 for _, q in f), default=1) for _, _, f in sparse]
        needed = max(widths)
        if width is None:
            width = needed
        elif needed > width:
            raise HamiltonianError(f"{source}: a term needs {needed} qubits but 'qubits {width}'")
        terms = []
        for lineno, coeff, label in dense:
            if len(label) != width:
                raise HamiltonianError(
                    f"{source}:{lineno}: label {label!r} has {len(label)} letters; this "
                    f"Hamiltonian has {width} qubits (dense labels name every qubit)"
                )
            terms.append((coeff, *_masks_dense(label)))
        for lineno, coeff, factors in sparse:
            try:
                terms.extend(PauliSum.from_sparse([(coeff, factors)], width).raw_terms())
            except HamiltonianError as exc:
                raise HamiltonianError(f"{source}:{lineno}: {exc}") from None
        try:
            return PauliSum(width, terms)
        except HamiltonianError as exc:
            raise HamiltonianError(f"{source}: {exc}") from None

    @staticmethod
    def load(path: str | os.PathLike[str]) -> PauliSum:
        """Read a Hamiltonian file; errors name the file and line."""
        text = read_text(
            path, max_size=MAX_FILE_BYTES, error=HamiltonianError, kind="a Hamiltonian file"
        )
        return PauliSum.loads(text, os.fspath(path))

    def dumps(self) -> str:
        lines = [f"qubits {self.num_qubits}"]
        for t in self.terms:
            lines.append(f"{t.coeff.real!r} {t.label(self.num_qubits)}")
        return "\n".join(lines) + "\n"

    # -- views ----------------------------------------------------------------------------

    @property
    def is_real(self) -> bool:
        """Whether H is a real matrix: every term has an even number of Y (i^#Y is real)."""
        return all(t.num_y % 2 == 0 for t in self.terms)

    def raw_terms(self) -> list[tuple[complex, int, int]]:
        return [(t.coeff, t.xmask, t.zmask) for t in self.terms]

    def __len__(self) -> int:
        return len(self.terms)

    def __add__(self, other: PauliSum) -> PauliSum:
        n = max(self.num_qubits, other.num_qubits)
        return PauliSum(n, self.raw_terms() + other.raw_terms())

    def __mul__(self, k: float) -> PauliSum:
        return PauliSum(self.num_qubits, [(c * k, x, z) for c, x, z in self.raw_terms()])

    __rmul__ = __mul__

    @sized_by_qubits
    def expectation(self, state: np.ndarray) -> float:
        """<psi|H|psi> for a normalised complex128 state, one pass per term."""
        self._check_state(state)
        total = 0.0
        for t in self.terms:
            value = kernels.pauli_expectation(state, t.xmask, t.zmask) * (1j**t.num_y)
            total += (t.coeff * value).real
        return total

    @sized_by_qubits
    def apply(self, state: np.ndarray) -> np.ndarray:
        """H|psi> as a new complex128 vector."""
        self._check_state(state)
        out = np.zeros_like(state)
        for t in self.terms:
            kernels.pauli_apply_add(out, state, t.coeff * (1j**t.num_y), t.xmask, t.zmask)
        return out

    def _check_state(self, state: np.ndarray) -> None:
        if state.shape != (1 << self.num_qubits,):
            raise HamiltonianError(
                f"the state has {state.shape[0]} amplitudes; this Hamiltonian needs "
                f"2^{self.num_qubits}"
            )

    def to_sparse(self):  # noqa: ANN201 - scipy.sparse.csr_matrix
        """The Hamiltonian as a scipy CSR matrix (for small systems and checks)."""
        from scipy import sparse

        n = 1 << self.num_qubits
        rows = np.arange(n)
        mat = sparse.csr_matrix((n, n), dtype=np.complex128)
        for t in self.terms:
            signs = 1 - 2 * (_popcount_array(rows & t.zmask) & 1)
            data = t.coeff * (1j**t.num_y) * signs
            mat = mat + sparse.csr_matrix((data, (rows ^ t.xmask, rows)), shape=(n, n))
        return mat

    def ground_energy(self) -> float:
        """The exact lowest eigenvalue: dense for <= 12 qubits, Lanczos (scipy eigsh) beyond,
        with H applied matrix-free so nothing larger than a few state vectors is stored."""
        if not self.terms:
            return 0.0
        if self.num_qubits <= DENSE_LIMIT:
            return float(np.linalg.eigvalsh(self.to_sparse().toarray())[0])
        from scipy.sparse.linalg import LinearOperator, eigsh

        require_memory(self.num_qubits, 24.0)  # eigsh keeps about 20 Lanczos vectors
        dim = 1 << self.num_qubits
        op = LinearOperator(
            (dim, dim),
            matvec=lambda v: self.apply(np.ascontiguousarray(v.ravel(), np.complex128)),
            dtype=np.complex128,
        )
        start = np.random.default_rng(7).standard_normal(dim).astype(np.complex128)
        from scipy.sparse.linalg import ArpackError

        try:
            values = eigsh(op, k=1, which="SA", tol=1e-12, v0=start, return_eigenvectors=False)
        except ArpackError as exc:  # includes no convergence
            raise HamiltonianError(f"exact diagonalisation did not converge: {exc}") from None
        return float(values[0].real)


def _parse_term(fields: list[str], where: str) -> tuple[complex, str | list[tuple[str, int]]]:
    """One term line: (coefficient, dense label) or (coefficient, sparse factors)."""
    try:
        coeff = complex(fields[0].replace("i", "j"))
    except ValueError:
        raise HamiltonianError(
            f"{where}: {shown(fields[0])} is not a number; each line is 'coefficient PAULIS'"
        ) from None
    if not (math.isfinite(coeff.real) and math.isfinite(coeff.imag)):
        raise HamiltonianError(f"{where}: coefficient must be finite")
    rest = fields[1:]
    if len(rest) == 1 and _DENSE.match(rest[0]) and not _SPARSE.match(rest[0]):
        if len(rest[0]) > MAX_QUBITS:  # refused by its length, before its masks are built
            raise HamiltonianError(
                f"{where}: a label of {len(rest[0])} letters; at most {MAX_QUBITS} qubits"
            )
        return coeff, rest[0]
    factors = []
    for tok in rest:  # no factors at all: a constant term
        m = _SPARSE.match(tok)
        if not m:
            raise HamiltonianError(
                f"{where}: {shown(tok)} is not a Pauli factor (like X0, Z3) or a label (like XXIZ)"
            )
        qubit = whole(m.group(2), MAX_QUBITS - 1)
        if qubit is None:
            raise HamiltonianError(
                f"{where}: the qubit of {shown(tok)} is beyond {MAX_QUBITS} qubits"
            )
        factors.append((m.group(1), qubit))
    return coeff, factors


def _masks_dense(label: str) -> tuple[int, int]:
    x = z = 0
    for q, ch in enumerate(reversed(label)):
        if ch in "XY":
            x |= 1 << q
        if ch in "ZY":
            z |= 1 << q
    return x, z


def _popcount_array(a: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a.astype(np.uint64)).astype(np.int64)
