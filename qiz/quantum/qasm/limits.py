"""How much an OpenQASM program may make the importer do: caps checked as the import goes.

Programs arrive from peers (a job spec's ``qasm`` field), so a few hundred bytes must not be able
to buy gigabytes or minutes. Text alone is bounded by the caller; what is bounded here is what
can grow faster than the text: registers declared by a size, gate definitions, how deeply
definitions call one another, and the expansion of gate calls (inlined bodies, ``pow``,
``ctrl``, ``inv``, broadcasts, expression evaluation), which a handful of nested macros can
make exponential. ``QasmLimits`` carries them; ``loads(text, limits=...)`` takes tighter ones.

Expansion is metered by a ``Budget`` in *steps*: one per gate call made (in the program or
inside an inlined body), one per instruction produced (a barrier counts once per qubit it
spans), one per expression node evaluated (plus one per free parameter the value carries,
which is what an affine operation on it costs). Every step is work the importer really does,
so the budget bounds its time; instructions produced are a subset, so it bounds memory too.
Each charge is made before or as the work is done, and gate calls are also refused up front
when a lower bound of their cost, kept per definition, already exceeds what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_QUBITS = 1 << 16  # qubits declared: each costs an index in every broadcast over it
MAX_BITS = 1 << 20  # classical bits declared: the same, for measurements
MAX_INSTRUCTIONS = 1_000_000  # instructions in the imported circuit: its memory (~170 B each)
# Gate definitions in one program: linear in the text since each definition sees its
# predecessors by position (no table copy), so this only stops a program that is nothing
# but definitions; real exporters write tens to a few thousand.
MAX_GATE_DEFINITIONS = 10_000
# How deeply definitions may call one another (g1 calls g0, g2 calls g1, ...): every level is
# a few Python frames and a possible doubling of the expansion; stdgates.inc nests 3 deep.
MAX_GATE_DEPTH = 64
# Steps of expansion for a whole program (see the module docstring): about 3 per written gate,
# 2-3 per inlined one, and each step is 5-30 us of Python, so this is ~5-30 s of work at most.
# Below MAX_INSTRUCTIONS on purpose: only pow copies (1 step per instruction) can reach that.
MAX_EXPANSION = 1_000_000
# A definition named like one of our gates is compared numerically with it (so the exporter's
# own definitions become native gates); bodies longer than this are simply inlined instead.
MAX_NATIVE_CHECK = 256


# -- classical programs (for, while, if, def: see qiz.quantum.qasm.interp) ---------------------

# Width of a classical integer, bit register value or angle. An operation costs up to O(width^2)
# (a power: width squarings of width-bit numbers, ~10 us at 128 bits), so the width is what keeps
# one step's time small: with the step limit below charged per expression node, a run's
# interpretation stays within ~20 s at worst.
MAX_CLASSICAL_WIDTH = 128
# Rounds one while loop (or one for loop) may run before the program is refused: stops
# `while (true)`, and a for range's length is checked against it before the loop starts.
MAX_WHILE_ITERATIONS = 100_000
# How deeply subroutines may call one another (recursion included).
MAX_CALL_DEPTH = 64
# Steps a classical-control program may take, in the import's unrolling and again in each
# run (per group of shots): a statement or a loop round is charged its own expression nodes
# (its nested blocks are charged when they run), once per branch. Its time: a step is 1-10 us of
# Python (more for a gate on a large state), so ~2-20 s of interpretation at most.
MAX_DYNAMIC_STEPS = 2_000_000
# Live branches (state vectors) a dynamic run may hold at once; memory bounds it further. Shots
# run in groups of at most this many (a group of s shots makes at most s branches), so the bound
# is never hit mid-run: the cost of a few ms of Python per group beyond the first.
MAX_BRANCHES = 16_384


@dataclass(frozen=True)
class QasmLimits:
    """The caps one import runs under; the defaults are the module constants."""

    qubits: int = MAX_QUBITS
    bits: int = MAX_BITS
    instructions: int = MAX_INSTRUCTIONS
    gate_definitions: int = MAX_GATE_DEFINITIONS
    gate_depth: int = MAX_GATE_DEPTH
    expansion: int = MAX_EXPANSION
    while_iterations: int = MAX_WHILE_ITERATIONS
    call_depth: int = MAX_CALL_DEPTH
    dynamic_steps: int = MAX_DYNAMIC_STEPS
    branches: int = MAX_BRANCHES

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"QasmLimits.{name} must be a non-negative integer, not {value!r}")


DEFAULT_LIMITS = QasmLimits()


class Budget:
    """The expansion steps one import may still spend."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def left(self) -> int:
        return self.limit - self.used

    def spend(self, steps: int) -> bool:
        """Spend ``steps``; false once past the limit (the importer then refuses, with a place)."""
        self.used += steps
        return self.used <= self.limit

    def message(self, what: str) -> str:
        return f"{what} expands past the budget of {self.limit} expansion steps"
