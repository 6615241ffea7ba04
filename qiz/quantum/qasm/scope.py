"""Per-branch classical state and the exits of a block, for ``interp``.

``Env`` is what a branch carries besides its state vector (copied when a measurement splits
it), ``Flow`` sorts branches by how they left a block, and ``Backend`` is where quantum
operations go: ``program.Trace`` at import time, ``program.Run`` in a dynamic run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from openqasm3 import ast

from qiz.quantum.core.circuit import Instruction
from qiz.quantum.qasm import classical as cl

if TYPE_CHECKING:
    from qiz.quantum.core.dynamic import Branch


@dataclass(frozen=True)
class Const:
    """A binding that cannot be assigned."""

    value: object


class Env:
    """One branch's classical state: a stack of scopes; subroutine frames start new ones.

    Inside a subroutine only its own scopes and the global constants and inputs are visible.
    """

    def __init__(self, scopes: list[dict[str, object]], frames: list[int]) -> None:
        self.scopes = scopes
        self.frames = frames
        self.retval: cl.Value | None = None

    def copy(self) -> Env:
        env = Env([dict(s) for s in self.scopes], list(self.frames))
        env.retval = self.retval
        return env

    def find(self, name: str) -> dict[str, object] | None:
        base = self.frames[-1] if self.frames else 0
        for scope in reversed(self.scopes[base:]):
            if name in scope:
                return scope
        if base and isinstance(self.scopes[0].get(name), Const):
            return self.scopes[0]
        return None

    def lookup(self, name: str) -> object:
        scope = self.find(name)
        if scope is None:
            return None
        bound = scope[name]
        return bound.value if isinstance(bound, Const) else bound


@dataclass
class Flow:
    """The branches that left a block normally, or by break, continue, return or end."""

    normal: list[Branch] = field(default_factory=list)
    brk: list[Branch] = field(default_factory=list)
    cont: list[Branch] = field(default_factory=list)
    ret: list[Branch] = field(default_factory=list)
    end: list[Branch] = field(default_factory=list)

    def add(self, other: Flow, normal: bool = True) -> None:
        if normal:
            self.normal += other.normal
        self.brk += other.brk
        self.cont += other.cont
        self.ret += other.ret
        self.end += other.end


class Backend(Protocol):
    """Where quantum operations go (see the module docstring)."""

    def gate(self, branch: Branch, insts: list[Instruction], node: ast.QASMNode) -> None: ...

    def measure(
        self, branch: Branch, qubit: int, clbit: int | None, node: ast.QASMNode
    ) -> list[tuple[Branch, object]]: ...

    def reset(self, branch: Branch, qubit: int, node: ast.QASMNode) -> list[Branch]: ...

    def barrier(self, qubits: list[int], node: ast.QASMNode) -> None: ...
