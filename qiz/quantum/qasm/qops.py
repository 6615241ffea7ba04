"""Quantum statements of a classical-control program: operands, gate calls, measure, reset.

A mixin of ``interp.Interpreter``: operands and angles are evaluated per branch (an index or an
angle may be a classical variable), gate calls are expanded by the static ``Importer`` (user
gates, modifiers, aliases) once per distinct (qubits, angles) and handed to the backend, and a
measurement sets its target bit in each branch it splits into.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from openqasm3 import ast

from qiz.quantum.core.circuit import Instruction
from qiz.quantum.core.params import ParamValue
from qiz.quantum.qasm import classical as cl
from qiz.quantum.qasm.cexpr import (
    UNKNOWN,
    Evaluator,
    NeedsDynamic,
    NeedsSymbol,
    QubitRef,
    Symbol,
    as_angle,
)
from qiz.quantum.qasm.expr import Locator, evaluate
from qiz.quantum.qasm.scope import Backend, Env, Flow

if TYPE_CHECKING:
    from qiz.quantum.core.dynamic import Branch
    from qiz.quantum.qasm.importer import Importer
    from qiz.quantum.qasm.program import ProgramInfo


class QuantumOps:
    """The quantum statements; ``interp.Interpreter`` provides the attributes below."""

    info: ProgramInfo
    importer: Importer
    loc: Locator
    backend: Backend
    trace: bool
    inline: int

    def _evaluator(self, branch: Branch) -> Evaluator:
        raise NotImplementedError

    def _value(self, node: ast.Expression, branch: Branch) -> cl.Value:
        raise NotImplementedError

    def _qubits(self, node: ast.QASMNode, b: Branch) -> list[int]:
        if isinstance(node, ast.IndexExpression) and isinstance(node.collection, ast.Identifier):
            indexed = ast.IndexedIdentifier(node.collection, [node.index])  # q[0] as an argument
            indexed.span = node.span
            node = indexed
        ident = node if isinstance(node, ast.Identifier) else getattr(node, "name", None)
        if not isinstance(ident, ast.Identifier):
            raise self.loc.error(node, "this qubit operand is not supported")
        bound = b.env.lookup(ident.name)
        if isinstance(bound, QubitRef):
            base, is_array = list(bound.qubits), bound.is_array
        elif bound is None and ident.name in self.importer.qregs:
            reg = self.importer.qregs[ident.name]
            base, is_array = list(reg.indices), reg.is_array
        else:
            raise self.loc.error(ident, f"qubit register '{ident.name}' is not declared")
        if isinstance(node, ast.Identifier):
            return base
        return [base[p] for p in self._positions(node, len(base), is_array, b)]

    def _positions(
        self, node: ast.IndexedIdentifier, size: int, is_array: bool, b: Branch
    ) -> list[int]:
        name = node.name.name
        if not is_array:
            raise self.loc.error(node, f"'{name}' is a single qubit or bit and cannot be indexed")
        if len(node.indices) != 1:
            raise self.loc.error(node, "only one index per operand is supported")
        ev = self._evaluator(b)

        def index(expr: ast.Expression) -> int:
            i = ev.integer(expr, "an index")
            if not -size <= i < size:
                raise self.loc.error(expr, f"index {i} is out of range for '{name}' of size {size}")
            return i % size

        item = node.indices[0]
        if isinstance(item, ast.DiscreteSet):
            return [index(v) for v in item.values]
        if len(item) != 1:
            raise self.loc.error(node, f"'{name}' is one-dimensional")
        rng = item[0]
        if not isinstance(rng, ast.RangeDefinition):
            return [index(rng)]
        start = 0 if rng.start is None else index(rng.start)
        end = size - 1 if rng.end is None else index(rng.end)
        step = 1 if rng.step is None else ev.integer(rng.step, "a step")
        if step == 0:
            raise self.loc.error(rng, "a range step must not be zero")
        return list(range(start, end + (1 if step > 0 else -1), step))

    def _gate(self, stmt: ast.QuantumGate | ast.QuantumPhase, branches: list[Branch]) -> Flow:
        if self.trace is False and isinstance(stmt, ast.QuantumPhase) and not stmt.modifiers:
            return Flow(normal=branches)  # a global phase: unobservable by sampling
        cache: dict[tuple, list[Instruction]] = {}
        args = [m.argument for m in stmt.modifiers if m.argument is not None]
        for b in branches:
            operands = [self._qubits(q, b) for q in stmt.qubits]
            params = self._angles(stmt, b)
            mods = self._numbers(args, b)  # pow(k), ctrl(n): evaluated here too
            env: Mapping[str, ParamValue] = ChainMap(
                {f"\0{i}": p for i, p in enumerate(params)},
                {f"\0m{i}": m for i, m in enumerate(mods)},
            )
            call = _with_params(stmt, len(params))
            for qubits in self.importer._broadcast(operands, stmt):
                key = (tuple(qubits), tuple(params), tuple(mods))
                insts = cache.get(key)
                if insts is None:
                    insts, _phase = self.importer._call(
                        call, qubits, env, self.importer.gates, False
                    )
                    cache[key] = insts
                self.backend.gate(b, insts, stmt)
        return Flow(normal=branches)

    def _angles(self, stmt: ast.QuantumGate | ast.QuantumPhase, b: Branch) -> list[ParamValue]:
        args = [stmt.argument] if isinstance(stmt, ast.QuantumPhase) else stmt.arguments
        return self._numbers(args, b)

    def _numbers(self, args: list[ast.Expression], b: Branch) -> list[ParamValue]:
        """Gate-call numbers in ``b``: floats, or (import time) affine in the inputs."""
        out: list[ParamValue] = []
        for arg in args:
            try:
                out.append(as_angle(self._value(arg, b)))
            except NeedsSymbol:  # an unbound input (import time): affine, through expr
                out.append(evaluate(arg, _Floats(b.env, symbols=True), self.loc))
            except cl.ClassicalError as exc:
                raise self.loc.error(arg, str(exc)) from None
        return out

    def _measure(self, stmt: ast.QuantumMeasurementStatement, branches: list[Branch]) -> Flow:
        if stmt.target is None:
            raise self.loc.error(
                stmt, "measure without a target bit is not supported; write 'c = measure q;'"
            )
        return Flow(normal=self._measure_into(stmt.measure.qubit, stmt.target, branches, stmt))

    def _measure_into(
        self, qubit: ast.QASMNode, target: ast.QASMNode, branches: list[Branch], node: ast.QASMNode
    ) -> list[Branch]:
        if self.inline:
            raise self.loc.error(
                node,
                "a subroutine that measures can only be called as a statement or as the whole "
                "right-hand side of an assignment",
            )
        out: list[Branch] = []
        for b in branches:
            qubits = self._qubits(qubit, b)
            name, positions, clbits = self._bits(target, b)
            if len(qubits) != len(positions):
                raise self.loc.error(
                    node, f"measure of {len(qubits)} qubit(s) into {len(positions)} bit(s)"
                )
            current = [b]
            for q, pos, clbit in zip(qubits, positions, clbits, strict=True):
                nxt = []
                for br in current:
                    for br2, outcome in self.backend.measure(br, q, clbit, node):
                        _set_bit(br2.env, name, pos, outcome)
                        nxt.append(br2)
                current = nxt
            out += current
        return out

    def _bits(self, target: ast.QASMNode, b: Branch) -> tuple[str, list[int], list[int | None]]:
        """A measurement target: register name, bit positions, and their circuit clbits."""
        ident = target if isinstance(target, ast.Identifier) else getattr(target, "name", None)
        if not isinstance(ident, ast.Identifier):
            raise self.loc.error(target, "this bit operand is not supported")
        scope = b.env.find(ident.name)
        bound = None if scope is None else scope[ident.name]
        if bound is UNKNOWN:
            width, sized = self.info.outputs[ident.name]
        elif isinstance(bound, cl.Value) and bound.type.kind == "bit":
            width, sized = bound.type.bits, bound.type.width is not None
        else:
            raise self.loc.error(ident, f"bit register '{ident.name}' is not declared")
        if isinstance(target, ast.Identifier):
            positions = list(range(width))
        else:
            positions = self._positions(target, width, sized, b)
        offset = self.info.offsets.get(ident.name) if scope is b.env.scopes[0] else None
        clbits = [None if offset is None else offset + p for p in positions]
        return ident.name, positions, clbits

    def _reset(self, stmt: ast.QuantumReset, branches: list[Branch]) -> Flow:
        if self.inline:
            raise self.loc.error(stmt, "a subroutine that resets cannot be called in an expression")
        out: list[Branch] = []
        for b in branches:
            current = [b]
            for q in self._qubits(stmt.qubits, b):
                current = [r for br in current for r in self.backend.reset(br, q, stmt)]
            out += current
        return Flow(normal=out)

    def _barrier(self, stmt: ast.QuantumBarrier, branches: list[Branch]) -> Flow:
        for b in branches[:1]:
            if stmt.qubits:
                qubits = [q for op in stmt.qubits for q in self._qubits(op, b)]
            else:
                qubits = list(range(self.importer.circuit.num_qubits))
            self.backend.barrier(qubits, stmt)
        return Flow(normal=branches)


def _set_bit(env: Env, name: str, position: int, outcome: object) -> None:
    scope = env.find(name)
    assert scope is not None  # found just before the measurement
    old = scope[name]
    if old is UNKNOWN or outcome is UNKNOWN:
        scope[name] = UNKNOWN
    else:
        scope[name] = cl.set_bit(old, position, cl.Value(cl.BIT, int(outcome)))  # type: ignore[arg-type]


def _with_params(stmt: ast.QuantumGate | ast.QuantumPhase, count: int) -> ast.QASMNode:
    """The call with its angles replaced by names bound to the values computed here."""
    mods, i = [], 0
    for mod in stmt.modifiers:
        if mod.argument is None:
            mods.append(mod)
            continue
        named = dataclasses.replace(mod, argument=_name(f"\0m{i}", mod.argument))
        named.span = mod.span
        mods.append(named)
        i += 1
    if isinstance(stmt, ast.QuantumPhase):
        call = dataclasses.replace(stmt, argument=_name("\0" + "0", stmt.argument), modifiers=mods)
    else:
        names = [_name(f"\0{i}", a) for i, a in enumerate(stmt.arguments)]
        call = dataclasses.replace(stmt, arguments=names[:count], modifiers=mods)
    call.span = stmt.span  # replace() leaves out the position: errors need it
    return call


def _name(name: str, where: ast.QASMNode) -> ast.Identifier:
    ident = ast.Identifier(name)
    ident.span = where.span
    return ident


class _Floats(Mapping[str, ParamValue]):
    """A branch's numeric variables as gate-angle values (for modifier arguments and expr)."""

    def __init__(self, env: Env, symbols: bool = False) -> None:
        self.env = env
        self.symbols = symbols

    def __getitem__(self, name: str) -> ParamValue:
        bound = self.env.lookup(name)
        if isinstance(bound, cl.Value) and bound.type.kind != "bool":
            return cl.to_float(bound)
        if self.symbols and isinstance(bound, Symbol):
            return bound.expr
        if bound is UNKNOWN:
            raise NeedsDynamic(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
