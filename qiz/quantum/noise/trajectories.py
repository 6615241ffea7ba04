"""Noisy sampling by quantum trajectories on the state vector, shots sharing a state until their
random choices differ.

One trajectory per shot, as in Aer's statevector method with noise: at every channel a
trajectory in state psi takes Kraus operator K_i with probability p_i = ||K_i psi||^2 and goes on
in K_i psi / sqrt(p_i); a mid-circuit measurement is the same with the projectors, recording i.
Shots in the same state are kept together as one *row* with a weight (how many shots follow it):
at a channel the weight is split among the operators by one multinomial draw with the row's
p_i, which is exactly the law of that many independent trajectories (they share the state, so
their choices are i.i.d. given it). A row is copied only for the operators some shots take, so
a low-noise circuit carries few rows, and the noiseless rows of a zero-probability channel
none. Small rows live in one array and go through a gate together (numpy, one call); from
``ROW_KERNEL_MIN_QUBITS`` on they are separate vectors (so a split copies only what splits),
and they, or a handful of small rows, go one by one through the engine's own numba kernels
(``statevector.apply_matrix``), on the threads ``threads_for`` allows (at most the machine's
cores). At the end each row's weight is sampled from its final state with the engine's own
``sample_counts``.

Memory bounds the rows: the shots run in groups of at most as many as fit (a group of s shots
never has more than s rows), exactly as the dynamic-circuit simulator does. Every draw comes from
one seeded generator, so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from qiz.quantum.core.memory import available_memory, require_memory, state_bytes
from qiz.quantum.core.sampling import sample_counts
from qiz.quantum.core.statevector import apply_matrix
from qiz.quantum.core.threads import threads_for
from qiz.quantum.kernels import noise as kernels
from qiz.quantum.noise.channels import ReadoutError
from qiz.quantum.noise.plan import Plan, Step
from qiz.quantum.noise.tensor import apply_to_rows, reduced_density

ROW_KERNEL_MIN_QUBITS = 12  # from here a numba call per row beats numpy on the whole batch
ROW_KERNEL_MAX_ROWS = 4  # and with this few rows too (numpy's per-call cost dominates)
_PROJECTORS = (
    np.array([[1, 0], [0, 0]], dtype=np.complex128),
    np.array([[0, 0], [0, 1]], dtype=np.complex128),
)

Counts = dict[tuple[int, ...], int]


class _Rows:
    """The states of one group, their weights (shots) and their classical bits.

    Small states (below ``ROW_KERNEL_MIN_QUBITS``) are the rows of one 2-D array, moved through
    a gate together by numpy (or by the kernels row by row while there are only a few). Large
    states are a list of separate vectors, each changed in place by the engine's kernels, so a
    split copies only the states that really split."""

    def __init__(self, num_qubits: int, num_clbits: int, shots: int) -> None:
        self.n = num_qubits
        self.large = num_qubits >= ROW_KERNEL_MIN_QUBITS
        first = np.zeros((1, 1 << num_qubits), dtype=np.complex128)
        first[0, 0] = 1.0
        self.rows: np.ndarray | list[np.ndarray] = [first[0]] if self.large else first
        self.weights = np.array([shots], dtype=np.int64)
        self.bits = np.zeros((1, num_clbits), dtype=np.uint8)

    @property
    def count(self) -> int:
        return len(self.rows)

    def per_row(self, targets: int, rows: int) -> bool:
        """Whether the numba kernels (<= 2 targets) take the rows one by one."""
        return targets <= 2 and (self.large or rows <= ROW_KERNEL_MAX_ROWS)

    def _on_each(
        self, rows: Iterable[np.ndarray], matrix: np.ndarray, qubits: tuple[int, ...], controls: int
    ) -> None:
        """``matrix`` on each row in place: the engine's kernels (<= 2 targets, which every gate
        is), numpy on the one row for a 3-qubit channel."""
        for row in rows:
            if len(qubits) - controls <= 2:
                apply_matrix(row, qubits, controls, matrix)
            else:  # a 3-qubit channel: no kernel, numpy on this one row
                row[:] = apply_to_rows(row[None], matrix, qubits, self.n)[0]

    def gate(self, step: Step) -> None:
        if self.large or self.count <= ROW_KERNEL_MAX_ROWS:
            self._on_each(self.rows, step.target, step.qubits, step.controls)
        else:
            self.rows = apply_to_rows(self.rows, step.full, step.qubits, self.n)

    def split(
        self,
        ops: tuple[np.ndarray, ...],
        qubits: tuple[int, ...],
        probs: np.ndarray,
        rng: np.random.Generator,
        *,
        record: int = -1,
        scalar: frozenset[int] = frozenset(),
    ) -> None:
        """Each row's shots shared among ``ops`` by a multinomial draw with ``probs`` (one row
        per state, or one row for all); the rows that get shots go on in K psi / sqrt(p).

        A row whose shots all take one operator goes on in place; only a row that splits is
        copied. An operator in ``scalar`` (a multiple of I) is skipped: after renormalising it
        changes only a global phase, so a low-noise channel costs its draw and nothing else."""
        taken = rng.multinomial(self.weights, probs)
        row_of, op_of = np.nonzero(taken)  # row by row, operators in order within a row
        weights = taken[row_of, op_of]
        p = probs[op_of] if probs.ndim == 1 else probs[row_of, op_of]
        scale = 1.0 / np.sqrt(p)
        if self.large:
            first = np.ones(len(row_of), dtype=bool)
            first[1:] = row_of[1:] != row_of[:-1]
            # every copy is taken before any operator changes its original in place
            rows: np.ndarray | list[np.ndarray] = [
                self.rows[b] if f else self.rows[b].copy()
                for b, f in zip(row_of, first, strict=True)
            ]
        elif len(row_of) == self.count:  # no row splits: row_of is 0..B-1, go on in place
            rows = self.rows
        else:
            rows = self.rows[row_of]  # one new row per (row, operator) with shots
        for i in np.unique(op_of):
            if int(i) in scalar:
                continue
            sel = np.flatnonzero(op_of == i)
            if self.per_row(len(qubits), len(sel)):
                for j in sel:  # the renormalisation folded into the matrix: one pass
                    apply_matrix(rows[j], qubits, 0, ops[i] * scale[j])
            elif self.large:
                self._on_each([rows[j] for j in sel], ops[i], qubits, 0)
                for j in sel:
                    rows[j] *= scale[j]
            else:
                out = apply_to_rows(rows[sel], ops[i], qubits, self.n)
                out *= scale[sel, None]
                rows[sel] = out
        self.bits = self.bits[row_of]
        if record >= 0:
            self.bits[:, record] = op_of
        self.rows, self.weights = rows, weights

    def channel(self, step: Step, rng: np.random.Generator) -> None:
        channel = step.channel
        assert channel is not None
        if channel.is_unitary:  # one operator: no draw, every row takes it
            if self.large or self.count <= ROW_KERNEL_MAX_ROWS:
                self._on_each(self.rows, channel.kraus[0], step.qubits, 0)
            else:
                self.rows = apply_to_rows(self.rows, channel.kraus[0], step.qubits, self.n)
            return
        if channel.mixture is not None:
            probs = np.asarray(channel.mixture, dtype=np.float64)
            probs = probs / probs.sum()
        else:
            probs = self._probabilities(channel.kraus, step.qubits)
        self.split(channel.kraus, step.qubits, probs, rng, scalar=channel.scalar)

    def measure(self, step: Step, rng: np.random.Generator) -> None:
        probs = self._probabilities(_PROJECTORS, step.qubits)
        self.split(_PROJECTORS, step.qubits, probs, rng, record=step.clbit)

    def _probabilities(self, ops: tuple[np.ndarray, ...], qubits: tuple[int, ...]) -> np.ndarray:
        """p[row, i] = <psi|K_i^dagger K_i|psi>, from each row's reduced density matrix (the
        numba kernel row by row where the rows are large or few, numpy on the batch else)."""
        if self.large or self.count <= ROW_KERNEL_MAX_ROWS:
            dim = 1 << len(qubits)
            rho = np.empty((self.count, dim, dim), dtype=np.complex128)
            targets = np.array(qubits, dtype=np.int64)
            for row, out in zip(self.rows, rho, strict=True):
                if len(qubits) == 1:
                    kernels.reduced_density_1q(row, qubits[0], out)
                else:
                    kernels.reduced_density(row, targets, out)
        else:
            rho = reduced_density(self.rows, qubits, self.n)
        effects = np.array([k.conj().T @ k for k in ops])
        probs = np.einsum("ica,bac->bi", effects, rho).real
        np.clip(probs, 0.0, None, out=probs)
        return probs / probs.sum(axis=1, keepdims=True)


def group_size(num_qubits: int, shots: int, available: int | None = None) -> int:
    """Shots per group: as many rows as fit in half the available memory (three copies each:
    the rows, the split's new rows and numpy's temporary), at least one. One row needs room for
    two states (a split copies it; the kernels work in place)."""
    require_memory(num_qubits, 2.0, available)
    avail = available_memory() if available is None else available
    return max(1, min(shots, (avail // 2) // (3 * state_bytes(num_qubits))))


def run_trajectories(
    plan: Plan, shots: int, rng: np.random.Generator, group: int | None = None
) -> tuple[Counts, dict[str, object]]:
    """``shots`` trajectories of ``plan``: counts keyed by the classical bits (bit 0 first)."""
    size = group_size(plan.num_qubits, shots) if group is None else max(1, group)
    counts: Counts = {}
    groups = rows_at_end = 0
    with threads_for(plan.num_qubits):
        left = shots
        while left:
            g = min(size, left)
            left -= g
            state = _Rows(plan.num_qubits, plan.num_clbits, g)
            for step in plan.steps:
                if step.kind == "gate":
                    state.gate(step)
                elif step.kind == "channel":
                    state.channel(step, rng)
                else:
                    state.measure(step, rng)
            _sample(state, plan, rng, counts)
            groups += 1
            rows_at_end += state.count
    counts = apply_readout(counts, plan.readout, rng)
    meta: dict[str, object] = {"trajectories": shots, "groups": groups, "states": rows_at_end}
    return counts, meta


def _sample(state: _Rows, plan: Plan, rng: np.random.Generator, counts: Counts) -> None:
    for row, weight, bits in zip(state.rows, state.weights, state.bits, strict=True):
        base = [int(b) for b in bits]
        if not plan.terminal:
            key = tuple(base)
            counts[key] = counts.get(key, 0) + int(weight)
            continue
        for index, count in sample_counts(row, int(weight), rng).items():
            for qubit, clbit in plan.terminal:
                base[clbit] = (index >> qubit) & 1
            key = tuple(base)
            counts[key] = counts.get(key, 0) + count


def apply_readout(
    counts: Counts, readout: dict[int, ReadoutError], rng: np.random.Generator
) -> Counts:
    """Each recorded bit misread independently: per outcome, a binomial number of its shots see
    the bit flipped (bits in increasing order, outcomes in sorted order: reproducible)."""
    for clbit in sorted(readout):
        error = readout[clbit]
        out: Counts = {}
        for key in sorted(counts):
            count = counts[key]
            flips = int(rng.binomial(count, error.flip_probability(key[clbit])))
            if count - flips:
                out[key] = out.get(key, 0) + count - flips
            if flips:
                other = (*key[:clbit], 1 - key[clbit], *key[clbit + 1 :])
                out[other] = out.get(other, 0) + flips
        counts = out
    return counts
