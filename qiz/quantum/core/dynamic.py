"""The shot-batched simulator of dynamic circuits (classical control on measurement outcomes).

A run keeps a set of *branches*, each one state vector, the classical environment the program
reached in it, and how many of the shots follow it. A measurement splits a branch: the number
of its shots that see 1 is drawn from a binomial with the Born probability, and the state is
copied only when both outcomes get shots. Branches whose outcome histories differ then evolve
independently. The cost is one state per distinct history that some shot follows, never one per
shot: a program with k mid-circuit measurements makes at most min(shots, 2^k) branches.

Control flow itself belongs to the program (``qiz.quantum.qasm.interp`` walks OpenQASM); this
module owns the states. Live branches are bounded by a count and by memory. Shots run in groups
of at most that bound: a group of s shots can never make more than s branches, so no group is
ever cut short. (Retrying a group that passed the bound on smaller groups would be biased: the
groups that finish would be those whose shots happened to agree.) The result says in its
``method`` when the shots ran in several groups. Every draw comes from one seeded generator, so a
seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from qiz.quantum.core import statevector
from qiz.quantum.core.circuit import Instruction
from qiz.quantum.core.errors import ProblemTooLarge
from qiz.quantum.core.memory import available_memory, require_memory, state_bytes
from qiz.quantum.core.threads import threads_for
from qiz.quantum.kernels import general as kernels

_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)


class BranchLimit(Exception):
    """A split would pass the live-branch bound: cannot happen when a group has at most
    ``bound`` shots (each branch holds at least one), so it marks a bug, never a fallback."""


class Environment(Protocol):
    """The classical state a program keeps per branch; copied when a branch splits."""

    def copy(self) -> Environment: ...


@dataclass
class Branch:
    """One outcome history: its state, its classical environment and the shots that follow it."""

    state: np.ndarray
    env: Environment
    shots: int


class Machine:
    """Creates, evolves and splits branches; counts the states it made."""

    def __init__(self, num_qubits: int, rng: np.random.Generator, max_branches: int) -> None:
        self.num_qubits = num_qubits
        self.rng = rng
        self.max_branches = max(1, max_branches)
        self.live = 0
        self.states = 0  # states made in this group (the first one included)
        # the program's steps over the whole run: every group draws on one budget, so more shots
        # than the branch bound (many groups) cannot multiply the time a program may take
        self.steps_spent = 0

    def start(self, env: Environment, shots: int) -> Branch:
        self._grow()
        return Branch(statevector.zero_state(self.num_qubits), env, shots)

    def _grow(self) -> None:
        if self.live >= self.max_branches:
            raise BranchLimit
        self.live += 1
        self.states += 1

    def apply(self, branch: Branch, inst: Instruction) -> None:
        """A gate (with numeric angles) on the branch's state."""
        statevector.apply_instruction(branch.state, inst)

    def measure(self, branches: Sequence[Branch], qubit: int) -> list[tuple[Branch, int]]:
        """Each branch split by the outcome of measuring ``qubit``: (branch, outcome) pairs."""
        out: list[tuple[Branch, int]] = []
        for branch in branches:
            p1 = min(max(kernels.probability_of_one(branch.state, qubit), 0.0), 1.0)
            ones = int(self.rng.binomial(branch.shots, p1))
            zeros = branch.shots - ones
            if ones and zeros:
                self._grow()
                other = Branch(branch.state.copy(), branch.env.copy(), ones)
                branch.shots = zeros
                _collapse(branch.state, qubit, 0, 1.0 - p1)
                _collapse(other.state, qubit, 1, p1)
                out += [(branch, 0), (other, 1)]
            else:
                outcome = int(ones > 0)
                _collapse(branch.state, qubit, outcome, p1 if outcome else 1.0 - p1)
                out.append((branch, outcome))
        return out

    def reset(self, branches: Sequence[Branch], qubit: int) -> list[Branch]:
        """``reset``: a measurement whose outcome is forgotten, then X where it was 1."""
        out = []
        for branch, outcome in self.measure(branches, qubit):
            if outcome:
                statevector.apply_matrix(branch.state, (qubit,), 0, _X)
            out.append(branch)
        return out


def _collapse(state: np.ndarray, qubit: int, outcome: int, prob: float) -> None:
    if prob <= 0.0:  # drawn with probability ~0 by rounding: renormalise what is left
        kernels.collapse(state, qubit, outcome, 1.0)
        norm = float(np.linalg.norm(state))
        if norm > 0:
            state /= norm
        return
    kernels.collapse(state, qubit, outcome, 1.0 / np.sqrt(prob))


class DynamicCircuit(Protocol):
    """What the sampler needs of a program with classical control (``qasm.DynamicProgram``)."""

    num_qubits: int
    num_clbits: int
    name: str

    @property
    def parameters(self) -> tuple[str, ...]: ...

    @property
    def max_branches(self) -> int: ...

    def bind(self, values: Mapping[str, float] | Sequence[float]) -> DynamicCircuit: ...

    def execute(self, machine: Machine, shots: int) -> list[tuple[Sequence[int], int]]:
        """Run every shot on ``machine``; the classical output bits of each final branch and
        the shots that ended there."""
        ...


@dataclass
class DynamicResult:
    counts: dict[tuple[int, ...], int]
    method: str
    states: int  # state vectors evolved over the whole run (every group's, summed)
    groups: int
    metadata: dict[str, object] = field(default_factory=dict)


def branch_bound(num_qubits: int, limit: int, available: int | None = None) -> int:
    """How many states may live at once: ``limit``, and half the memory still available."""
    require_memory(num_qubits, 1.0, available)
    avail = available_memory() if available is None else available
    by_memory = max(1, (avail // 2) // state_bytes(num_qubits))
    return max(1, min(limit, by_memory))


def run_dynamic(program: DynamicCircuit, shots: int, rng: np.random.Generator) -> DynamicResult:
    """Every shot of ``program``, in groups no larger than the branch bound (exact: see above)."""
    bound = branch_bound(program.num_qubits, program.max_branches)
    counts: dict[tuple[int, ...], int] = {}
    full, rest = divmod(shots, bound)
    pending = [bound] * full + ([rest] if rest else [])
    states = groups = spent = 0
    with threads_for(program.num_qubits):
        for group in pending:
            machine = Machine(program.num_qubits, rng, bound)
            machine.steps_spent = spent
            try:
                finals = program.execute(machine, group)
            except MemoryError:
                needed = (machine.live + 1) * state_bytes(program.num_qubits)
                raise ProblemTooLarge(program.num_qubits, needed, available_memory()) from None
            spent = machine.steps_spent
            states += machine.states
            groups += 1
            for bits, count in finals:
                key = tuple(bits)
                counts[key] = counts.get(key, 0) + count
    method = "dynamic"
    meta: dict[str, object] = {"branch_bound": bound, "states": states, "groups": groups}
    if groups > 1:
        method = f"dynamic (in {groups} groups of <= {bound} shots: the branch bound)"
    return DynamicResult(counts, method, states, groups, meta)
