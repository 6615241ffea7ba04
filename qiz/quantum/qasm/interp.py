"""The statement interpreter of OpenQASM 3 classical control, run over a set of branches.

Every statement is executed on a list of branches (``core.dynamic.Branch``: a state, an
``Env`` and a shot count). Conditions are evaluated per branch and split the list, loops run
while any branch is still inside, and ``break``/``continue``/``return``/``end`` are kinds of
exit a block hands back with the branches that took them (``Flow``). Quantum operations go to a
*backend*: at import time ``program.Trace`` records them into a ``Circuit`` (one branch, no
state; a value that depends on a measurement stops it), and at run time ``program.Run`` applies
them to the branches' states through ``core.dynamic.Machine``, which splits at measurements.

The quantum statements (operands, gate calls, measure, reset) are the ``qops.QuantumOps``
mixin; the per-branch state and the block exits are ``scope``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from openqasm3 import ast

from qiz.quantum.qasm import classical as cl
from qiz.quantum.qasm.cexpr import (
    UNKNOWN,
    Evaluator,
    NeedsDynamic,
    QubitRef,
    ctype_of,
)
from qiz.quantum.qasm.qops import QuantumOps
from qiz.quantum.qasm.scope import Backend, Const, Flow

if TYPE_CHECKING:
    from qiz.quantum.core.dynamic import Branch
    from qiz.quantum.qasm.program import ProgramInfo


_SKIPPED = (
    ast.Include,
    ast.Pragma,
    ast.QubitDeclaration,
    ast.QuantumGateDefinition,
    ast.SubroutineDefinition,
    ast.IODeclaration,
)


class Interpreter(QuantumOps):
    """Runs a program's statements over branches (one ``execute`` per group of shots)."""

    def __init__(self, info: ProgramInfo, backend: Backend, trace: bool) -> None:
        self.info = info
        self.importer = info.importer
        self.loc = info.importer.loc
        self.limits = info.importer.limits
        self.backend = backend
        self.trace = trace
        self.steps = 0
        self._weights: dict[int, int] = {}
        self.inline = 0  # > 0 while a subroutine runs inside an expression: no splits there

    # -- blocks

    def block(self, stmts: Sequence[ast.Statement], branches: list[Branch], scope: bool) -> Flow:
        if scope:
            for b in branches:
                b.env.scopes.append({})
        flow = Flow()
        active = branches
        for stmt in stmts:
            if not active:
                break
            self._step(stmt, len(active))
            out = self.statement(stmt, active)
            flow.add(out, normal=False)
            active = out.normal
        flow.normal = active
        if scope:
            for b in (*flow.normal, *flow.brk, *flow.cont):
                b.env.scopes.pop()
        return flow

    def _step(self, node: ast.QASMNode, count: int) -> None:
        """Charge a statement or a loop round, once per branch (``count``), by its own
        expression nodes (``statement_weight``) against the limit: the run's time, empty loop
        bodies included, long expressions charged by their length."""
        weight = self._weights.get(id(node))  # the AST outlives this run: ids stay unique
        if weight is None:
            weight = self._weights[id(node)] = statement_weight(node)
        self.steps += count * weight
        if self.steps > self.limits.dynamic_steps:
            raise self.loc.error(
                node,
                f"the program runs past {self.limits.dynamic_steps} statement steps "
                "(the dynamic step limit)",
            )

    def statement(self, stmt: ast.Statement, branches: list[Branch]) -> Flow:
        if isinstance(stmt, _SKIPPED) or (
            isinstance(stmt, ast.ConstantDeclaration) and id(stmt) in self.info.global_consts
        ):
            return Flow(normal=branches)
        handler = _HANDLERS.get(type(stmt))
        if handler is None:
            raise self.info.unsupported(stmt)
        try:
            return handler(self, stmt, branches)
        except cl.ClassicalError as exc:  # a cast or an operation outside an expression
            raise self.loc.error(stmt, str(exc)) from None

    def _evaluator(self, branch: Branch) -> Evaluator:
        return Evaluator(branch.env.lookup, self.loc, lambda node: self._inline_call(node, branch))

    def _value(self, node: ast.Expression, branch: Branch) -> cl.Value:
        return self._evaluator(branch).eval(node)

    def _condition(self, node: ast.Expression, branches: list[Branch]) -> tuple[list, list]:
        yes, no = [], []
        for b in branches:
            (yes if cl.truth(self._value(node, b)) else no).append(b)
        return yes, no

    # -- control flow

    def _if(self, stmt: ast.BranchingStatement, branches: list[Branch]) -> Flow:
        yes, no = self._condition(stmt.condition, branches)
        flow = self.block(stmt.if_block, yes, True)
        flow.add(self.block(stmt.else_block, no, True))
        return flow

    def _while(self, stmt: ast.WhileLoop, branches: list[Branch]) -> Flow:
        flow = Flow()
        active, rounds = branches, 0
        while active:
            active, done = self._condition(stmt.while_condition, active)
            flow.normal += done
            if not active:
                break
            rounds += 1
            self._step(stmt, len(active))
            if rounds > self.limits.while_iterations:
                raise self.loc.error(
                    stmt,
                    f"the while loop runs more than {self.limits.while_iterations} iterations "
                    "(the while iteration limit)",
                )
            body = self.block(stmt.block, active, True)
            flow.normal += body.brk
            flow.ret += body.ret
            flow.end += body.end
            active = body.normal + body.cont
        return flow

    def _for(self, stmt: ast.ForInLoop, branches: list[Branch]) -> Flow:
        ctype = self._ctype(stmt.type)
        groups: dict[tuple, list[Branch]] = {}
        for b in branches:
            groups.setdefault(self._iteration(stmt, b), []).append(b)
        flow = Flow()
        name = stmt.identifier.name
        self.info.check_name(stmt.identifier)
        for values, members in groups.items():
            active = members
            for raw in values:
                if not active:
                    break
                self._step(stmt, len(active))
                value = cl.cast(cl.make(cl.INT, raw) if isinstance(raw, int) else raw, ctype)
                for b in active:
                    b.env.scopes.append({name: value})
                body = self.block(stmt.block, active, True)
                for b in (*body.normal, *body.brk, *body.cont):
                    b.env.scopes.pop()
                flow.normal += body.brk
                flow.ret += body.ret
                flow.end += body.end
                active = body.normal + body.cont
            flow.normal += active
        return flow

    def _iteration(self, stmt: ast.ForInLoop, branch: Branch) -> range | tuple[cl.Value, ...]:
        """The values a for loop takes in ``branch``: a range stays a (lazy) range."""
        ev = self._evaluator(branch)
        spec = stmt.set_declaration
        cap = self.limits.while_iterations
        if isinstance(spec, ast.RangeDefinition):
            if spec.start is None or spec.end is None:
                raise self.loc.error(spec, "a for-loop range needs a start and an end")
            start, end = (
                ev.integer(spec.start, "a range start"),
                ev.integer(spec.end, "a range end"),
            )
            step = 1 if spec.step is None else ev.integer(spec.step, "a range step")
            if step == 0:
                raise self.loc.error(spec, "a range step must not be zero")
            rounds = (end - start) // step + 1  # counted before a range is built or measured
            if rounds > cap:
                raise self.loc.error(
                    spec, f"the for loop runs more than {cap} iterations (the iteration limit)"
                )
            return range(start, end + (1 if step > 0 else -1), step)
        if isinstance(spec, ast.DiscreteSet):
            return tuple(ev.eval(v) for v in spec.values)
        value = ev.eval(spec)
        if value.type.kind not in ("bit", "int", "uint"):
            raise self.loc.error(spec, f"cannot loop over a {value.type}")
        if value.type.bits > cap:
            raise self.loc.error(spec, f"the for loop runs more than {cap} iterations")
        return tuple(cl.get_bit(value, i) for i in range(value.type.bits))

    def _jump(self, stmt: ast.Statement, branches: list[Branch]) -> Flow:
        if isinstance(stmt, ast.BreakStatement):
            return Flow(brk=branches)
        if isinstance(stmt, ast.ContinueStatement):
            return Flow(cont=branches)
        return Flow(end=branches)

    def _return(self, stmt: ast.ReturnStatement, branches: list[Branch]) -> Flow:
        if not any(b.env.frames for b in branches):
            raise self.loc.error(stmt, "return outside a subroutine is not supported")
        if isinstance(stmt.expression, ast.QuantumMeasurement):
            raise self.loc.error(stmt, "return measure is not supported; measure into a bit")
        for b in branches:
            b.env.retval = None if stmt.expression is None else self._value(stmt.expression, b)
        return Flow(ret=branches)

    def _compound(self, stmt: ast.CompoundStatement, branches: list[Branch]) -> Flow:
        return self.block(stmt.statements, branches, True)

    # -- classical data

    def _ctype(self, node: ast.ClassicalType) -> cl.CType:
        return ctype_of(node, self.info.constant_int, self.loc)

    def _declare(self, stmt: ast.ClassicalDeclaration, branches: list[Branch]) -> Flow:
        name = stmt.identifier.name
        ctype = self._ctype(stmt.type)
        init = stmt.init_expression
        top = self.info.is_output(stmt)
        if not top:
            self.info.check_name(stmt.identifier)
        for b in branches:
            scope = b.env.scopes[-1]
            if name in scope and not top:
                raise self.loc.error(stmt.identifier, f"'{name}' is already declared")
            scope[name] = cl.make(ctype, 0)
        if init is None:
            return Flow(normal=branches)
        if isinstance(init, ast.QuantumMeasurement):
            return Flow(normal=self._measure_into(init.qubit, stmt.identifier, branches, stmt))
        if top and self.trace:
            raise NeedsDynamic(name)  # a Circuit's bits start at 0 and only measure sets them
        return self._assign_from(stmt.identifier, "=", init, branches, ctype)

    def _const(self, stmt: ast.ConstantDeclaration, branches: list[Branch]) -> Flow:
        self.info.check_name(stmt.identifier)
        ctype = self._ctype(stmt.type)
        value = self.info.constant(stmt.init_expression, ctype)
        for b in branches:
            b.env.scopes[-1][stmt.identifier.name] = Const(value)
        return Flow(normal=branches)

    def _assignment(self, stmt: ast.ClassicalAssignment, branches: list[Branch]) -> Flow:
        op = stmt.op.name.removesuffix("=") or "="
        if op == "~":
            raise self.loc.error(stmt, "'~=' is not an assignment operator")
        return self._assign_from(stmt.lvalue, op, stmt.rvalue, branches, None)

    def _assign_from(
        self,
        target: ast.Identifier | ast.IndexedIdentifier,
        op: str,
        rvalue: ast.Expression,
        branches: list[Branch],
        ctype: cl.CType | None,
    ) -> Flow:
        if isinstance(rvalue, ast.FunctionCall) and rvalue.name.name in self.info.subroutines:
            pairs = self._call(rvalue, branches)
        else:
            pairs = [(b, self._value(rvalue, b)) for b in branches]
        for b, value in pairs:
            if value is None:
                raise self.loc.error(rvalue, f"subroutine '{rvalue.name.name}' returns no value")
            self._store(target, op, value, b)
        return Flow(normal=[b for b, _ in pairs])

    def _store(
        self, target: ast.Identifier | ast.IndexedIdentifier, op: str, value: cl.Value, b: Branch
    ) -> None:
        ident = target if isinstance(target, ast.Identifier) else target.name
        name = ident.name
        scope = b.env.find(name)
        if scope is None:
            raise self.loc.error(ident, f"'{name}' is not declared (or not visible here)")
        old = scope[name]
        if isinstance(old, Const):
            raise self.loc.error(ident, f"'{name}' is a constant and cannot be assigned")
        if not isinstance(old, cl.Value):
            if self.trace and old is UNKNOWN:
                raise NeedsDynamic(name)
            raise self.loc.error(ident, f"'{name}' cannot be assigned")
        if self.trace and scope is b.env.scopes[0] and name in self.info.outputs:
            raise NeedsDynamic(name)
        try:
            if isinstance(target, ast.Identifier):
                new = value if op == "=" else cl.binary(op, old, value)
                scope[name] = cl.cast(new, old.type)
                return
            index = self._bit_index(target, b)
            current = cl.get_bit(old, index)
            new = value if op == "=" else cl.binary(op, current, value)
            scope[name] = cl.set_bit(old, index, new)
        except cl.ClassicalError as exc:
            raise self.loc.error(target, str(exc)) from None

    def _bit_index(self, target: ast.IndexedIdentifier, b: Branch) -> int:
        if len(target.indices) != 1 or isinstance(target.indices[0], ast.DiscreteSet):
            raise self.loc.error(target, "only a single index of a classical value is supported")
        item = target.indices[0]
        if len(item) != 1 or isinstance(item[0], ast.RangeDefinition):
            raise self.loc.error(target, "only a single index of a classical value is supported")
        return self._evaluator(b).integer(item[0], "an index")

    def _expression(self, stmt: ast.ExpressionStatement, branches: list[Branch]) -> Flow:
        expr = stmt.expression
        if isinstance(expr, ast.FunctionCall) and expr.name.name in self.info.subroutines:
            return Flow(normal=[b for b, _ in self._call(expr, branches)])
        for b in branches:
            self._value(expr, b)
        return Flow(normal=branches)

    # -- subroutines

    def _call(self, node: ast.FunctionCall, branches: list[Branch]) -> list[tuple[Branch, object]]:
        name = node.name.name
        sub = self.info.subroutines.get(name)
        if sub is None:
            raise self.loc.error(node, f"function '{name}' is not defined")
        if len(node.arguments) != len(sub.arguments):
            raise self.loc.error(
                node, f"{name} takes {len(sub.arguments)} argument(s), got {len(node.arguments)}"
            )
        for b in branches:
            if len(b.env.frames) >= self.limits.call_depth:
                raise self.loc.error(
                    node,
                    f"subroutine calls nest deeper than {self.limits.call_depth} "
                    "(the call depth limit)",
                )
            frame: dict[str, object] = {}
            for param, arg in zip(sub.arguments, node.arguments, strict=True):
                frame[param.name.name] = self._argument(param, arg, b, name)
            b.env.frames.append(len(b.env.scopes))
            b.env.scopes.append(frame)
            b.env.retval = None
        flow = self.block(sub.body, branches, False)
        if flow.brk or flow.cont:
            raise self.loc.error(node, f"break or continue outside a loop in subroutine '{name}'")
        out: list[tuple[Branch, object]] = []
        for b in flow.normal + flow.ret:
            value = b.env.retval
            if sub.return_type is not None:
                if value is None:
                    raise self.loc.error(node, f"subroutine '{name}' ended without a return value")
                value = cl.cast(value, self._ctype(sub.return_type))
            del b.env.scopes[b.env.frames.pop() :]
            b.env.retval = None
            out.append((b, value))
        if flow.end:
            raise self.loc.error(node, f"end inside subroutine '{name}' is not supported")
        return out

    def _argument(self, param: ast.QASMNode, arg: ast.Expression, b: Branch, name: str) -> object:
        if isinstance(param, ast.QuantumArgument):
            qubits = self._qubits(arg, b)
            size = 1 if param.size is None else self.info.constant_int(param.size)
            if len(qubits) != size:
                raise self.loc.error(
                    arg, f"{name}: qubit argument '{param.name.name}' needs {size} qubit(s)"
                )
            return QubitRef(tuple(qubits), param.size is not None)
        ctype = self._ctype(param.type)
        return cl.cast(self._value(arg, b), ctype)

    def _inline_call(self, node: ast.FunctionCall, branch: Branch) -> cl.Value:
        self.inline += 1
        try:
            [(_, value)] = self._call(node, [branch])
        finally:
            self.inline -= 1
        if not isinstance(value, cl.Value):
            raise self.loc.error(node, f"subroutine '{node.name.name}' returns no value")
        return value


_HANDLERS = {
    ast.ClassicalDeclaration: Interpreter._declare,
    ast.ConstantDeclaration: Interpreter._const,
    ast.ClassicalAssignment: Interpreter._assignment,
    ast.ExpressionStatement: Interpreter._expression,
    ast.BranchingStatement: Interpreter._if,
    ast.WhileLoop: Interpreter._while,
    ast.ForInLoop: Interpreter._for,
    ast.BreakStatement: Interpreter._jump,
    ast.ContinueStatement: Interpreter._jump,
    ast.EndStatement: Interpreter._jump,
    ast.ReturnStatement: Interpreter._return,
    ast.CompoundStatement: Interpreter._compound,
    ast.QuantumGate: Interpreter._gate,
    ast.QuantumPhase: Interpreter._gate,
    ast.QuantumMeasurementStatement: Interpreter._measure,
    ast.QuantumReset: Interpreter._reset,
    ast.QuantumBarrier: Interpreter._barrier,
}


def statement_weight(node: ast.QASMNode) -> int:
    """The AST nodes of a statement's own header and expressions, nested blocks excluded (they
    are charged when they run)."""
    weight = 0
    stack: list[object] = [node]
    while stack:
        item = stack.pop()
        weight += 1
        for f in dataclasses.fields(item):  # type: ignore[arg-type]
            if f.name == "span":
                continue
            value = getattr(item, f.name)
            for child in value if isinstance(value, list) else (value,):
                if isinstance(child, ast.QASMNode) and not isinstance(child, ast.Statement):
                    stack.append(child)
    return weight
