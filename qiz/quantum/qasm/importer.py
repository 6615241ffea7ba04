"""The OpenQASM importer proper: walks the reference AST and expands gate calls.

``qiz.quantum.qasm`` parses the text and hands the AST here. Gate calls are expanded at once
into instructions of the gate set: user ``gate`` bodies are inlined with their arguments
substituted, and the modifiers are applied to the expanded list (``inv`` reverses and inverts
it, ``pow(k)`` repeats it, ``ctrl`` adds a control to every instruction and turns the carried
global phase into a phase gate on the control). Every call returns its global phase alongside
its instructions for that last reason: dropped at top level, it is physical under ``ctrl``.

What a program may cost is bounded by ``limits.QasmLimits``: a definition sees the gates defined
before it through a view by position (no copy of the table, so definitions are linear), and the
expansion spends a ``limits.Budget`` as it goes, each gate call first checked against a lower
bound of its cost that every definition keeps (so nested macros are refused before they grow).
"""

from __future__ import annotations

import math
import re
from collections import ChainMap, Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from openqasm3 import ast

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.core.errors import CircuitError, QasmError
from qiz.quantum.core.gates import ALIASES, GATES, GateSpec
from qiz.quantum.core.params import ParamExpr, ParamValue
from qiz.quantum.qasm.expr import (
    CONSTANTS,
    FUNCTIONS,
    Locator,
    describe_expression,
    evaluate,
    evaluate_constant,
    evaluate_int,
    is_zero,
    normalize,
)
from qiz.quantum.qasm.limits import (
    DEFAULT_LIMITS,
    MAX_BITS,
    MAX_EXPANSION,
    MAX_GATE_DEFINITIONS,
    MAX_GATE_DEPTH,
    MAX_INSTRUCTIONS,
    MAX_NATIVE_CHECK,
    MAX_QUBITS,
    Budget,
    QasmLimits,
)

__all__ = [
    "MAX_BITS",
    "MAX_EXPANSION",
    "MAX_GATE_DEFINITIONS",
    "MAX_GATE_DEPTH",
    "MAX_INSTRUCTIONS",
    "MAX_QUBITS",
    "Importer",
    "QasmLimits",
]

Ops = tuple[list[Instruction], ParamValue]  # instructions and the global phase they carry


@dataclass
class _Register:
    indices: range  # a range, not a list: a declared size costs no memory until it is used
    is_array: bool  # 'qubit q;' declares one qubit, which cannot be indexed


@dataclass
class _GateDef:
    name: str
    params: list[str]
    qubits: list[str]
    body: list[ast.QuantumStatement]
    scope: _Visible  # the gates visible where it was defined (so no recursion)
    native: bool = False  # its unitary equals GATES[name] up to a global phase ...
    exact: bool = False  # ... and the phase is zero, so it may stand in for it under ctrl
    depth: int = 1  # 1 + the deepest definition its body calls
    # Lower bounds of what one call of the body spends: budget steps and instructions made.
    min_steps: int = 0
    min_insts: int = 0


class _Visible(Mapping[str, _GateDef]):
    """The gates defined before position ``end`` of ``table``: a view, not a copy.

    Gates cannot be redefined, so a name's entry never changes and its position in the
    table tells whether a definition written before it can see it.
    """

    def __init__(self, table: dict[str, _GateDef], end: int, order: dict[str, int]) -> None:
        self.table = table
        self.end = end
        self.order = order

    def __getitem__(self, name: str) -> _GateDef:
        if self.order.get(name, self.end) >= self.end:
            raise KeyError(name)
        return self.table[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.table if self.order[name] < self.end)

    def __len__(self) -> int:
        return min(self.end, len(self.table))


# Aliases from qelib1.inc that gates.ALIASES does not carry, and parameter counts of aliases
# that differ from their target's.
_EXTRA_ALIASES: dict[str, tuple[str, Callable[[list[ParamValue]], list[ParamValue]]]] = {
    "cu1": ("cp", lambda p: p),
    "cu3": ("cu", lambda p: [*p, 0.0]),
}
_ALIAS_PARAMS = {"u2": 2, "cu3": 3}


def _alias_phase(name: str, params: Sequence[ParamValue]) -> ParamValue:
    """stdgates.inc defines u2 and u3 with gphase(-(φ+λ)/2); it matters only under ctrl @."""
    if name == "u2":
        return -(params[0] + params[1]) / 2
    if name == "u3":
        return -(params[1] + params[2]) / 2
    return 0.0


_UNSUPPORTED: dict[str, str] = {
    "BranchingStatement": "if/else",
    "WhileLoop": "while loop",
    "ForInLoop": "for loop",
    "SwitchStatement": "switch",
    "SubroutineDefinition": "def (subroutine definition)",
    "ExternDeclaration": "extern",
    "DelayInstruction": "delay",
    "Box": "box",
    "AliasStatement": "let (alias)",
    "CalibrationGrammarDeclaration": "defcalgrammar",
    "CalibrationStatement": "cal block",
    "CalibrationDefinition": "defcal",
    "EndStatement": "end",
    "ReturnStatement": "return",
    "BreakStatement": "break",
    "ContinueStatement": "continue",
    "ClassicalAssignment": "assignment to a classical variable",
    "ExpressionStatement": "an expression statement",
    "CompoundStatement": "a scope block { ... }",
    "QuantumGateDefinition": "a gate definition",
    "QuantumMeasurementStatement": "measure",
    "QuantumReset": "reset",
}


def _type_name(node: ast.ClassicalType) -> str:
    return type(node).__name__.removesuffix("Type").lower()


class Importer:
    """Walks the reference AST once, expanding gate calls into ``Circuit`` instructions."""

    def __init__(
        self, text: str, loc: Locator, name: str, limits: QasmLimits = DEFAULT_LIMITS
    ) -> None:
        self.text = text
        self.loc = loc
        self.limits = limits
        self.budget = Budget(limits.expansion)
        self.circuit = Circuit(0, 0, name=name)
        self.qregs: dict[str, _Register] = {}
        self.cregs: dict[str, _Register] = {}
        self.consts: dict[str, ParamValue] = {}
        self.values: dict[str, ParamValue] = {}  # consts and inputs: what top level can see
        self.gates: dict[str, _GateDef] = {}
        self.order: dict[str, int] = {}  # each gate's position in definition order
        self.taken: set[str] = set()  # other global names (variables, subroutines)

    def run(self, program: ast.Program) -> Circuit:
        self._check_version(program.version)
        handlers: dict[type, Callable] = {
            ast.Include: self._include,
            ast.QubitDeclaration: self._declare_qubits,
            ast.ClassicalDeclaration: self._declare_bits,
            ast.IODeclaration: self._declare_input,
            ast.ConstantDeclaration: self._declare_const,
            ast.QuantumGateDefinition: self._define,
            ast.QuantumGate: self._gate_statement,
            ast.QuantumPhase: self._gate_statement,
            ast.QuantumMeasurementStatement: self._measure,
            ast.QuantumReset: self._reset,
            ast.QuantumBarrier: self._barrier,
            ast.Pragma: lambda _node: None,  # hints for other tools; nothing to do here
        }
        for statement in program.statements:
            handler = handlers.get(type(statement))
            if handler is None:
                raise self._unsupported(statement)
            handler(statement)
        return self.circuit

    # -- errors and positions

    def _unsupported(self, node: ast.QASMNode, where: str = "") -> QasmError:
        kind = type(node).__name__
        what = _UNSUPPORTED.get(kind) or describe_expression(node)
        return self.loc.error(node, f"{what}{where} is not supported")

    def _check_version(self, version: str | None) -> None:
        if version is None or version.split(".")[0] in ("2", "3"):
            return
        found = re.search(r"\bOPENQASM\b", self.text)
        start = found.start() if found else 0
        line = self.text.count("\n", 0, start) + 1
        column = start - (self.text.rfind("\n", 0, start) + 1) + 1
        raise QasmError(f"OPENQASM {version} is not supported (only 2.x and 3.x)", line, column)

    # -- declarations

    def _include(self, node: ast.Include) -> None:
        if node.filename not in ("stdgates.inc", "qelib1.inc"):
            raise self.loc.error(
                node,
                f"include {node.filename!r} is not supported: only stdgates.inc and "
                "qelib1.inc are built in",
            )

    def _new_name(self, ident: ast.Identifier) -> str:
        name = ident.name
        if name in CONSTANTS or name in FUNCTIONS:
            raise self.loc.error(ident, f"'{name}' is a built-in name and cannot be redeclared")
        if self.is_gate_name(name):
            raise self.loc.error(
                ident, f"'{name}' is the name of a gate and cannot name a register or variable"
            )
        if name in self.qregs or name in self.cregs or name in self.values or name in self.taken:
            raise self.loc.error(ident, f"'{name}' is already declared")
        return name

    def is_gate_name(self, name: str) -> bool:
        """Is ``name`` a gate in scope here? Such a name cannot be given to anything else,
        as Qiskit's importer also refuses: ``h q;`` would be ambiguous."""
        return (
            name in GATES
            or name in ALIASES
            or name in _EXTRA_ALIASES
            or name == "gphase"
            or name in self.gates
        )

    def _size(self, expr: ast.Expression | None, what: str) -> int:
        if expr is None:
            return 1
        size = evaluate_int(expr, self.values, self.loc, f"the size of {what}")
        if size < 0:
            raise self.loc.error(expr, f"the size of {what} must not be negative")
        return size

    def _declare_qubits(self, node: ast.QubitDeclaration) -> None:
        name = self._new_name(node.qubit)
        size = self._size(node.size, f"qubit register '{name}'")
        start = self.circuit.num_qubits
        if start + size > self.limits.qubits:
            raise self.loc.error(node, f"more than {self.limits.qubits} qubits (the qubit limit)")
        self.qregs[name] = _Register(range(start, start + size), node.size is not None)
        self.circuit.num_qubits = start + size

    def _declare_bits(self, node: ast.ClassicalDeclaration) -> None:
        if not isinstance(node.type, ast.BitType):
            raise self.loc.error(
                node,
                f"a classical variable of type {_type_name(node.type)} is not supported "
                "(only bit and creg)",
            )
        init = node.init_expression
        if init is not None and not isinstance(init, ast.QuantumMeasurement):
            raise self.loc.error(init, "initialising bits with a value is not supported")
        name = self._new_name(node.identifier)
        size = self._size(node.type.size, f"bit register '{name}'")
        start = self.circuit.num_clbits
        if start + size > self.limits.bits:
            raise self.loc.error(node, f"more than {self.limits.bits} bits (the bit limit)")
        self.cregs[name] = _Register(range(start, start + size), node.type.size is not None)
        self.circuit.num_clbits = start + size
        if init is not None:
            self._measure_into(init.qubit, node.identifier, node)

    def _declare_input(self, node: ast.IODeclaration) -> None:
        if node.io_identifier.name != "input":
            raise self.loc.error(node, f"{node.io_identifier.name} declarations are not supported")
        if not isinstance(node.type, (ast.FloatType, ast.AngleType)):
            raise self.loc.error(
                node,
                f"input of type {_type_name(node.type)} is not supported (only float and angle, "
                "which become circuit parameters)",
            )
        name = self._new_name(node.identifier)
        try:
            self.values[name] = ParamExpr.symbol(name)
        except CircuitError as exc:
            raise self.loc.error(node.identifier, str(exc)) from None

    def _declare_const(self, node: ast.ConstantDeclaration) -> None:
        kind = _type_name(node.type)
        if kind not in ("float", "angle", "int", "uint"):
            raise self.loc.error(node, f"a const of type {kind} is not supported")
        name = self._new_name(node.identifier)
        value = evaluate_constant(node.init_expression, self.values, self.loc, f"const '{name}'")
        if kind in ("int", "uint") and not value.is_integer():
            raise self.loc.error(node.init_expression, f"const {kind} '{name}' is not an integer")
        self.consts[name] = self.values[name] = value

    def _define(self, node: ast.QuantumGateDefinition) -> None:
        name = node.name.name
        if name in self.gates or name == "gphase":
            raise self.loc.error(node.name, f"gate '{name}' is already defined")
        if name in self.qregs or name in self.cregs or name in self.values or name in self.taken:
            raise self.loc.error(node.name, f"'{name}' is already declared and cannot name a gate")
        if len(self.gates) >= self.limits.gate_definitions:
            raise self.loc.error(
                node,
                f"more than {self.limits.gate_definitions} gate definitions "
                "(the gate definition limit)",
            )
        params = [ident.name for ident in node.arguments]
        qubits = [ident.name for ident in node.qubits]
        counts = Counter([*params, *qubits])
        for ident in [*node.arguments, *node.qubits]:
            if counts[ident.name] > 1:
                raise self.loc.error(ident, f"'{ident.name}' appears twice in the gate signature")
        scope = _Visible(self.gates, len(self.gates), self.order)
        definition = _GateDef(name, params, qubits, list(node.body), scope)
        self._measure_definition(definition, node)
        spec = GATES.get(name)
        if spec and len(params) == spec.num_params and len(qubits) == spec.num_qubits:
            definition.native, definition.exact = self._compare_native(definition, spec)
        self.order[name] = len(self.gates)
        self.gates[name] = definition

    def _measure_definition(self, definition: _GateDef, node: ast.QuantumGateDefinition) -> None:
        """Its nesting depth (capped) and lower bounds of a call's cost, from its callees'.

        One pass over the body, each callee's figures already known: linear in the program.
        A bound only ever leaves out work, so refusing a call on it never refuses a program
        that would have fitted. Unknown gates count nothing here; calling them fails anyway.
        """
        cap = self.limits.expansion + 1  # figures saturate here: more is refused all the same
        depth, steps, insts = 0, 0, 0
        for stmt in definition.body:
            if isinstance(stmt, ast.QuantumBarrier):
                steps += len(stmt.qubits) or len(definition.qubits)
                insts += 1
                continue
            if not isinstance(stmt, (ast.QuantumGate, ast.QuantumPhase)):
                continue  # refused when called, as before
            callee = None
            if isinstance(stmt, ast.QuantumGate):
                callee = definition.scope.get(stmt.name.name)
            if callee is not None:
                depth = max(depth, callee.depth)
                base = (
                    (min(1, callee.min_steps), min(1, callee.min_insts))
                    if callee.native
                    else (callee.min_steps, callee.min_insts)
                )
            elif isinstance(stmt, ast.QuantumPhase):
                base = (0, 0)
            else:
                base = (1, 1)  # a gate of the set or an alias: one instruction
            mods = [self._static_modifier(mod, definition) for mod in stmt.modifiers]
            call_steps, call_insts = _lower_bound(base, mods, cap)
            steps, insts = min(cap, steps + call_steps), min(cap, insts + call_insts)
        definition.depth = depth + 1
        definition.min_steps, definition.min_insts = steps, insts
        if definition.depth > self.limits.gate_depth:
            raise self.loc.error(
                node,
                f"gate '{definition.name}' nests gate calls {definition.depth} deep; "
                f"the gate depth limit is {self.limits.gate_depth}",
            )

    def _static_modifier(
        self, mod: ast.QuantumGateModifier, definition: _GateDef
    ) -> tuple[str, int | None]:
        """A modifier as ``_lower_bound`` takes it; a pow exponent is None unless constant."""
        kind = mod.modifier.name
        if kind != "pow":
            return kind, 1
        consts = _Hiding(self.consts, frozenset(definition.params))  # a parameter is unknown
        try:
            k = evaluate_constant(mod.argument, consts, self.loc, "the exponent of pow")
        except QasmError:
            return kind, None  # depends on the gate's parameters (or fails when called)
        return kind, int(abs(k)) if k.is_integer() else None

    def _compare_native(self, definition: _GateDef, spec: GateSpec) -> tuple[bool, bool]:
        """Does the body equal our gate (up to a global phase; exactly)? Checked numerically.

        Two random angle sets make an accidental match at one point irrelevant; the tolerance
        is far above rounding (~1e-15) and far below any real difference of a gate.
        """
        if definition.min_insts > MAX_NATIVE_CHECK:
            return False, False
        rng = np.random.default_rng(20240601)
        size = 1 << spec.num_qubits
        exact = True
        for _ in range(2):
            params = [float(x) for x in rng.uniform(-math.pi, math.pi, spec.num_params)]
            insts, phase = self._body(definition, params, list(range(spec.num_qubits)), True)
            if len(insts) > MAX_NATIVE_CHECK:
                return False, False  # a long body is inlined: cheaper than its matrix
            unitary = _unitary(insts, spec.num_qubits) * np.exp(1j * float(phase))
            overlap = np.vdot(spec.full_matrix(params), unitary) / size
            if abs(abs(overlap) - 1.0) > 1e-9:
                return False, False
            exact = exact and abs(overlap - 1.0) < 1e-9
        return True, exact

    # -- operands

    def _operand(self, node: ast.QASMNode, kind: str) -> list[int]:
        """The flat qubit (or bit) indices an operand names, in order."""
        regs, other = (self.qregs, self.cregs) if kind == "qubit" else (self.cregs, self.qregs)
        ident = node if isinstance(node, ast.Identifier) else getattr(node, "name", None)
        if not isinstance(ident, ast.Identifier):
            raise self._unsupported(node, f" as a {kind} operand")
        name = ident.name
        reg = regs.get(name)
        if reg is None:
            if name.startswith("$"):
                raise self.loc.error(ident, f"hardware qubit {name} is not supported")
            if name in other:
                raise self.loc.error(ident, f"'{name}' is not a {kind} register")
            raise self.loc.error(ident, f"{kind} register '{name}' is not declared")
        if isinstance(node, ast.Identifier):
            return list(reg.indices)
        if not reg.is_array:
            raise self.loc.error(node, f"'{name}' is a single {kind} and cannot be indexed")
        if len(node.indices) != 1:
            raise self.loc.error(node, "only one index per operand is supported")
        index = node.indices[0]
        if isinstance(index, ast.DiscreteSet):
            positions = [self._index(item, reg, name) for item in index.values]
        elif len(index) != 1:
            raise self.loc.error(node, f"'{name}' is one-dimensional")
        elif isinstance(index[0], ast.RangeDefinition):
            positions = self._range(index[0], reg, name)
        else:
            positions = [self._index(index[0], reg, name)]
        return [reg.indices[p] for p in positions]

    def _index(self, expr: ast.Expression, reg: _Register, name: str) -> int:
        i = evaluate_int(expr, self.values, self.loc, "an index")
        size = len(reg.indices)
        if not -size <= i < size:
            raise self.loc.error(expr, f"index {i} is out of range for '{name}' of size {size}")
        return i % size

    def _range(self, rng: ast.RangeDefinition, reg: _Register, name: str) -> list[int]:
        """OpenQASM ranges include both ends: ``q[0:2]`` is q[0], q[1], q[2]."""
        start = 0 if rng.start is None else self._index(rng.start, reg, name)
        end = len(reg.indices) - 1 if rng.end is None else self._index(rng.end, reg, name)
        step = 1 if rng.step is None else evaluate_int(rng.step, self.values, self.loc, "a step")
        if step == 0:
            raise self.loc.error(rng, "a range step must not be zero")
        return list(range(start, end + (1 if step > 0 else -1), step))

    # -- statements

    def _spend(self, steps: int, node: ast.QASMNode, what: str = "the program") -> None:
        """Charge the expansion budget, refusing at ``node`` once it is spent."""
        if not self.budget.spend(steps):
            raise self.loc.error(node, self.budget.message(what))

    def _room(self) -> int:
        """Instructions the circuit may still take: no expansion may grow past this."""
        return self.limits.instructions - len(self.circuit.instructions)

    def _emit(self, insts: list[Instruction], node: ast.QASMNode) -> None:
        circuit = self.circuit
        if len(insts) > self._room():
            limit = self.limits.instructions
            raise self.loc.error(node, f"the circuit grows past {limit} instructions")
        try:
            for inst in insts:
                if inst.name == "barrier":
                    circuit.barrier(*dict.fromkeys(inst.qubits))
                elif inst.name == "measure":
                    circuit.measure(inst.qubits[0], inst.clbits[0])
                elif inst.name == "reset":
                    circuit.reset(inst.qubits[0])
                else:
                    circuit.append(inst.name, inst.qubits, inst.params)
        except CircuitError as exc:
            raise self.loc.error(node, str(exc)) from None

    def _gate_statement(self, node: ast.QuantumGate | ast.QuantumPhase) -> None:
        operands = [self._operand(q, "qubit") for q in node.qubits]
        for qubits in self._broadcast(operands, node):
            insts, _global_phase = self._call(node, qubits, self.values, self.gates, False)
            self._emit(insts, node)

    def _broadcast(self, operands: list[list[int]], node: ast.QASMNode) -> Iterator[list[int]]:
        """``h q;`` applies h to each qubit of q; ``cx q, r;`` pairs equal-size registers."""
        sizes = {len(op) for op in operands if len(op) != 1}
        if len(sizes) > 1:
            raise self.loc.error(node, f"registers of different sizes {sorted(sizes)} in one call")
        count = sizes.pop() if sizes else 1
        for i in range(count):
            yield [op[i] if len(op) != 1 else op[0] for op in operands]

    def _measure(self, node: ast.QuantumMeasurementStatement) -> None:
        if node.target is None:
            raise self.loc.error(
                node, "measure without a target bit is not supported; write 'c = measure q;'"
            )
        self._measure_into(node.measure.qubit, node.target, node)

    def _measure_into(self, qubit: ast.QASMNode, target: ast.QASMNode, node: ast.QASMNode) -> None:
        qubits, bits = self._operand(qubit, "qubit"), self._operand(target, "bit")
        if len(qubits) != len(bits):
            raise self.loc.error(node, f"measure of {len(qubits)} qubit(s) into {len(bits)} bit(s)")
        self._spend(len(qubits), node)
        self._emit(
            [Instruction("measure", (q,), (), (b,)) for q, b in zip(qubits, bits, strict=True)],
            node,
        )

    def _reset(self, node: ast.QuantumReset) -> None:
        qubits = self._operand(node.qubits, "qubit")
        self._spend(len(qubits), node)
        self._emit([Instruction("reset", (q,)) for q in qubits], node)

    def _barrier(self, node: ast.QuantumBarrier) -> None:
        if node.qubits:
            qubits = [q for operand in node.qubits for q in self._operand(operand, "qubit")]
        else:
            qubits = list(range(self.circuit.num_qubits))
        self._spend(len(qubits), node)  # a barrier's qubits are its size
        self._emit([Instruction("barrier", tuple(qubits))], node)

    # -- gate calls, definitions and modifiers

    def _call(
        self,
        node: ast.QuantumGate | ast.QuantumPhase,
        qubits: list[int],
        env: Mapping[str, ParamValue],
        gates: Mapping[str, _GateDef],
        phase_matters: bool,
    ) -> Ops:
        """One gate call on concrete qubits: its instructions and the global phase they carry.

        ``phase_matters`` is true under a ``ctrl @`` (here or in a caller), where a global
        phase turns into a relative one and must not be dropped.
        """
        if isinstance(node, ast.QuantumGate) and node.duration is not None:
            raise self.loc.error(node, "a gate duration is not supported")
        self._spend(1, node)  # every call counts, even one that makes no instruction
        budget = self.budget
        is_phase = isinstance(node, ast.QuantumPhase)
        name = "gphase" if is_phase else node.name.name
        args = [node.argument] if is_phase else node.arguments
        params = [evaluate(arg, env, self.loc, budget) for arg in args]
        plan: list[tuple[str, int | list[int]]] = []
        used = 0
        for mod in node.modifiers:
            kind = mod.modifier.name
            if kind in ("ctrl", "negctrl"):
                count = 1
                if mod.argument is not None:
                    what = f"the count of {kind}"
                    count = evaluate_int(mod.argument, env, self.loc, what, budget)
                if count < 1:
                    raise self.loc.error(mod, f"{kind}({count}) needs at least one control")
                plan.append((kind, qubits[used : used + count]))
                used += count
            elif kind == "pow":
                k = evaluate_constant(mod.argument, env, self.loc, "the exponent of pow", budget)
                if not k.is_integer():
                    raise self.loc.error(mod, f"pow({k!r}) @ is not supported: only integer powers")
                plan.append(("pow", int(k)))
            else:
                plan.append(("inv", 0))
        definition = None if is_phase else gates.get(name)  # looked up once: calls are hot
        num_params, num_qubits = self._signature(name, definition, node)
        if len(params) != num_params:
            raise self.loc.error(node, f"{name} takes {num_params} parameter(s), got {len(params)}")
        if len(qubits) != used + num_qubits:
            controls = f" with {used} control(s)" if used else ""
            raise self.loc.error(
                node, f"{name}{controls} acts on {used + num_qubits} qubit(s), got {len(qubits)}"
            )
        if len(set(qubits)) != len(qubits):
            raise self.loc.error(node, f"{name} is given the same qubit twice")
        phase_matters = phase_matters or used > 0
        if definition is not None:
            self._check_cost(definition, plan, phase_matters, node)
        insts, phase = self._base(name, params, qubits[used:], definition, phase_matters)
        for kind, arg in reversed(plan):
            if kind == "inv":
                self._spend(len(insts) + _terms(phase), node)
                insts, phase = _inverse(insts), normalize(-phase)
            elif kind == "pow":
                insts, phase = self._power(insts, phase, arg, node)  # type: ignore[arg-type]
            else:
                for control in reversed(arg):  # type: ignore[arg-type]
                    insts = self._control(insts, phase, control, kind == "negctrl", node)
                    phase = 0.0
        return insts, phase

    def _check_cost(
        self,
        definition: _GateDef,
        plan: list[tuple[str, int | list[int]]],
        phase_matters: bool,
        node: ast.QASMNode,
    ) -> None:
        """Refuse a call of a user gate before expanding it when even a lower bound of its
        cost is more than the budget has left: nested macros fail here, not after growing."""
        if definition.native and (definition.exact or not phase_matters):
            base = (1, 1)
        else:
            base = (definition.min_steps, definition.min_insts)
        mods = [
            (kind, abs(arg) if kind == "pow" else 1)  # type: ignore[arg-type]
            for kind, arg in plan
        ]
        steps, _insts = _lower_bound(base, mods, self.budget.limit + 1)
        if steps - 1 > self.budget.left:  # the call's own step is already paid
            raise self.loc.error(node, self.budget.message(f"gate '{definition.name}'"))

    def _signature(
        self, name: str, definition: _GateDef | None, node: ast.QuantumGate | ast.QuantumPhase
    ) -> tuple[int, int]:
        if name == "gphase":
            return 1, 0
        if definition is not None:
            return len(definition.params), len(definition.qubits)
        if name in GATES:
            return GATES[name].num_params, GATES[name].num_qubits
        alias = ALIASES.get(name) or _EXTRA_ALIASES.get(name)
        if alias is not None:
            target = GATES[alias[0]]
            return _ALIAS_PARAMS.get(name, target.num_params), target.num_qubits
        raise self.loc.error(getattr(node, "name", node), f"unknown gate '{name}'")

    def _base(
        self,
        name: str,
        params: list[ParamValue],
        targets: list[int],
        definition: _GateDef | None,
        phase_matters: bool,
    ) -> Ops:
        if name == "gphase":
            return [], params[0]
        if definition is not None:
            if definition.native and (definition.exact or not phase_matters):
                self.budget.spend(1)  # checked with the call's cost, just before
                return [Instruction(name, tuple(targets), tuple(params))], 0.0
            return self._body(definition, params, targets, phase_matters)
        self.budget.spend(1)  # the call's own step already passed the check; one over at most
        if name in GATES:
            return [Instruction(name, tuple(targets), tuple(params))], 0.0
        native, mapping = ALIASES.get(name) or _EXTRA_ALIASES[name]
        mapped = tuple(mapping(list(params)))
        return [Instruction(native, tuple(targets), mapped)], normalize(_alias_phase(name, params))

    def _body(
        self,
        definition: _GateDef,
        params: Sequence[ParamValue],
        targets: list[int],
        phase_matters: bool,
    ) -> Ops:
        """Inline a user gate: its body with arguments and qubits substituted."""
        # A view over the consts, not a copy: a call costs its own parameters, not the program's.
        env = ChainMap(dict(zip(definition.params, params, strict=True)), self.consts)
        wires = dict(zip(definition.qubits, targets, strict=True))
        insts: list[Instruction] = []
        phase: ParamValue = 0.0
        room = self._room()
        for stmt in definition.body:
            if isinstance(stmt, ast.QuantumBarrier):
                qubits = [self._wire(op, wires, definition) for op in stmt.qubits] or targets
                self._spend(len(qubits), stmt, f"gate '{definition.name}'")
                insts.append(Instruction("barrier", tuple(qubits)))
                continue
            if not isinstance(stmt, (ast.QuantumGate, ast.QuantumPhase)):
                raise self._unsupported(stmt, f" inside gate '{definition.name}'")
            qubits = [self._wire(op, wires, definition) for op in stmt.qubits]
            sub, sub_phase = self._call(stmt, qubits, env, definition.scope, phase_matters)
            insts.extend(sub)
            if not is_zero(sub_phase):
                self._spend(_terms(phase) + _terms(sub_phase), stmt, f"gate '{definition.name}'")
                phase = normalize(phase + sub_phase)
            if len(insts) > room:
                raise self.loc.error(
                    stmt,
                    f"gate '{definition.name}' expands past the limit of "
                    f"{self.limits.instructions} instructions",
                )
        return insts, phase

    def _wire(self, node: ast.QASMNode, wires: Mapping[str, int], definition: _GateDef) -> int:
        if not isinstance(node, ast.Identifier):
            raise self.loc.error(node, "qubit arguments of a gate cannot be indexed inside it")
        if node.name not in wires:
            raise self.loc.error(
                node, f"'{node.name}' is not a qubit argument of gate '{definition.name}'"
            )
        return wires[node.name]

    def _power(
        self, insts: list[Instruction], phase: ParamValue, k: int, node: ast.QASMNode
    ) -> Ops:
        """pow(k) @ g for integer k: g repeated k times (its inverse for negative k)."""
        if len(insts) * abs(k) > self._room():
            limit = self.limits.instructions
            raise self.loc.error(node, f"pow({abs(k)}) expands past {limit} instructions")
        self._spend(len(insts) * abs(k) + _terms(phase), node)
        if k < 0:
            insts, phase, k = _inverse(insts), -phase, -k
        return insts * k, normalize(phase * k)

    def _control(
        self,
        insts: list[Instruction],
        phase: ParamValue,
        control: int,
        negative: bool,
        node: ast.QASMNode,
    ) -> list[Instruction]:
        """ctrl @ (g1; g2; ...; gphase(a)) = ctrl @ g1; ctrl @ g2; ...; p(a) on the control."""
        flip = [Instruction("x", (control,))] if negative else []
        out = list(flip)
        room = self._room()
        self._spend(len(insts), node)  # at least one instruction out for each in, paid first
        for inst in insts:
            if inst.name == "barrier":
                out.append(inst)
            else:
                more = self._control_one(inst, control, node)
                self._spend(len(more) - 1, node)
                out.extend(more)
            if len(out) > room:
                limit = self.limits.instructions
                raise self.loc.error(node, f"ctrl @ expands past {limit} instructions")
        if not is_zero(phase):
            out.append(Instruction("p", (control,), (phase,)))
        out.extend(flip)
        self._spend(len(flip) * 2 + 1, node)
        return out

    def _control_one(self, inst: Instruction, c: int, node: ast.QASMNode) -> list[Instruction]:
        name, qubits, params = inst.name, inst.qubits, inst.params
        if name in _CONTROLLED:
            return [Instruction(_CONTROLLED[name], (c, *qubits), params)]
        if name == "u":
            return [Instruction("cu", (c, *qubits), (*params, 0.0))]
        if name == "id":
            return [inst]
        if name in _PHASE_GATES:
            return [Instruction("cp", (c, *qubits), (_PHASE_GATES[name],))]
        if name in _CU_FORMS:
            return [Instruction("cu", (c, *qubits), _CU_FORMS[name])]
        expansion = _decompose(inst)
        if expansion is None:
            raise self.loc.error(
                node, f"ctrl @ {name} is not supported: the gate set has no controlled {name}"
            )
        return [out for sub in expansion for out in self._control_one(sub, c, node)]


# Adding one control to a gate of the set, when the result is again one gate of the set.
_CONTROLLED = {
    "x": "cx",
    "y": "cy",
    "z": "cz",
    "h": "ch",
    "rx": "crx",
    "ry": "cry",
    "rz": "crz",
    "p": "cp",
    "swap": "cswap",
    "cx": "ccx",
}
_PHASE_GATES = {"s": math.pi / 2, "sdg": -math.pi / 2, "t": math.pi / 4, "tdg": -math.pi / 4}
# sx = exp(i pi/4) rx(pi/2) and sxdg = exp(-i pi/4) rx(-pi/2), as cu(theta, phi, lambda, gamma).
_CU_FORMS = {
    "sx": (math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 4),
    "sxdg": (-math.pi / 2, -math.pi / 2, math.pi / 2, -math.pi / 4),
}


def _decompose(inst: Instruction) -> list[Instruction] | None:
    """An exact (phase-free) expansion into gates that do have a controlled form, or None."""
    name, q, p = inst.name, inst.qubits, inst.params

    def g(gate: str, *qubits: int, params: tuple[ParamValue, ...] = ()) -> Instruction:
        return Instruction(gate, qubits, params)

    if name == "cz":
        return [g("h", q[1]), g("cx", *q), g("h", q[1])]
    if name == "cy":
        return [g("sdg", q[1]), g("cx", *q), g("s", q[1])]
    if name == "cp":
        half = p[0] / 2
        return [
            g("p", q[0], params=(half,)),
            g("cx", *q),
            g("p", q[1], params=(-half,)),
            g("cx", *q),
            g("p", q[1], params=(half,)),
        ]
    if name in ("crz", "cry"):
        half, single = p[0] / 2, name[1:]
        return [
            g(single, q[1], params=(half,)),
            g("cx", *q),
            g(single, q[1], params=(-half,)),
            g("cx", *q),
        ]
    if name == "crx":
        return [g("h", q[1]), g("crz", *q, params=p), g("h", q[1])]
    if name == "rzz":
        return [g("cx", *q), g("rz", q[1], params=p), g("cx", *q)]
    if name in ("rxx", "ryy"):
        into, back = (
            (("h", ()), ("h", ()))
            if name == "rxx"
            else (
                ("rx", (math.pi / 2,)),
                ("rx", (-math.pi / 2,)),
            )
        )
        return [
            *(g(into[0], x, params=into[1]) for x in q),
            g("rzz", *q, params=p),
            *(g(back[0], x, params=back[1]) for x in q),
        ]
    return None


class _Hiding(Mapping[str, ParamValue]):
    """``base`` without the names in ``hidden`` (a gate's parameters shadow consts)."""

    def __init__(self, base: Mapping[str, ParamValue], hidden: frozenset[str]) -> None:
        self.base = base
        self.hidden = hidden

    def __getitem__(self, name: str) -> ParamValue:
        if name in self.hidden:
            raise KeyError(name)
        return self.base[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.base if name not in self.hidden)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _terms(value: ParamValue) -> int:
    """The free parameters a value carries: what an affine operation on it costs."""
    return len(value.terms) if isinstance(value, ParamExpr) else 0


def _lower_bound(
    base: tuple[int, int], mods: Sequence[tuple[str, int | None]], cap: int
) -> tuple[int, int]:
    """Budget steps and instructions a call spends at least, from its base's and modifiers.

    ``base`` is what the gate itself costs (steps, instructions); ``mods`` the modifiers in
    source order, a pow with its exponent's size (None when unknown until the call). The call
    counts one step, each modifier (applied innermost first) at least one per instruction it
    makes, and none makes fewer than it is given except pow. Results saturate at ``cap``.
    """
    steps, insts = min(cap, 1 + base[0]), min(cap, base[1])
    for kind, k in reversed(mods):
        if kind == "pow":
            insts = 0 if k is None else min(cap, insts * k)
        steps = min(cap, steps + insts)
    return steps, insts


def _inverse(insts: list[Instruction]) -> list[Instruction]:
    width = 1 + max((q for inst in insts for q in inst.qubits), default=-1)
    return Circuit(width, 0, list(insts)).inverse().instructions


def _unitary(insts: list[Instruction], num_qubits: int) -> np.ndarray:
    """The matrix of a short gate list on a few qubits (gate definitions have at most three).

    Plain numpy tensor contractions: for matrices this small the engine's per-call overhead
    would dominate. Axis ``num_qubits - 1 - q`` of the tensor is qubit ``q`` (little-endian).
    """
    dim = 1 << num_qubits
    tensor = np.eye(dim, dtype=np.complex128).reshape([2] * num_qubits + [dim])
    for inst in insts:
        if not inst.is_gate:
            continue
        spec = GATES[inst.name]
        k = spec.num_qubits
        gate = spec.full_matrix([float(p) for p in inst.params]).reshape([2] * (2 * k))
        # Gate axes run from its qubit k-1 down to 0, outputs first and then inputs.
        axes = [num_qubits - 1 - inst.qubits[k - 1 - i] for i in range(k)]
        tensor = np.moveaxis(
            np.tensordot(gate, tensor, axes=(range(k, 2 * k), axes)), range(k), axes
        )
    return tensor.reshape(dim, dim)
