"""OpenQASM 3 programs with classical control: declared once, unrolled if possible, else dynamic.

``codec.loads`` sends a program here when it uses anything beyond a plain gate circuit (``for``,
``while``, ``if``, classical variables, ``def``, ...). ``build`` first declares what is global
and fixed (qubits, gates, subroutines, constants, inputs, the output bit registers) and checks
every statement, nested ones included, for constructs we do not run, so those are refused at
load time with their line. Then it *traces* the program once: an ``interp.Interpreter`` with no
state, recording gates into a ``Circuit``. Loops with constant bounds unroll and conditions on
constants resolve, so a program that never reads a measured bit (a ``for``-loop
Bernstein-Vazirani) becomes the same static ``Circuit`` a written-out one gives. As soon as a
value depends on a measurement (or on an unbound ``input`` outside a gate angle), the trace
stops and the program is a ``DynamicProgram``: run shot-batched by ``core.dynamic``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from openqasm3 import ast

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.core.dynamic import Branch, Machine
from qiz.quantum.core.errors import CircuitError, QasmError
from qiz.quantum.core.params import ParamExpr
from qiz.quantum.core.sampling import sample_counts
from qiz.quantum.qasm import classical as cl
from qiz.quantum.qasm.cexpr import UNKNOWN, Evaluator, NeedsDynamic, NeedsSymbol, Symbol, ctype_of
from qiz.quantum.qasm.expr import CONSTANTS, FUNCTIONS
from qiz.quantum.qasm.importer import Importer
from qiz.quantum.qasm.interp import Interpreter
from qiz.quantum.qasm.limits import Budget
from qiz.quantum.qasm.scope import Const, Env

# Statements only the static importer knew; a program of these alone never comes here.
_STATIC = (
    ast.Include,
    ast.QubitDeclaration,
    ast.IODeclaration,
    ast.ConstantDeclaration,
    ast.QuantumGateDefinition,
    ast.QuantumGate,
    ast.QuantumPhase,
    ast.QuantumMeasurementStatement,
    ast.QuantumReset,
    ast.QuantumBarrier,
    ast.Pragma,
)
_CONTROL = (
    ast.ClassicalDeclaration,
    ast.ConstantDeclaration,
    ast.ClassicalAssignment,
    ast.ExpressionStatement,
    ast.BranchingStatement,
    ast.WhileLoop,
    ast.ForInLoop,
    ast.BreakStatement,
    ast.ContinueStatement,
    ast.EndStatement,
    ast.ReturnStatement,
    ast.CompoundStatement,
    ast.QuantumGate,
    ast.QuantumPhase,
    ast.QuantumMeasurementStatement,
    ast.QuantumReset,
    ast.QuantumBarrier,
    ast.Pragma,
)
_GLOBAL_ONLY = (ast.QubitDeclaration, ast.QuantumGateDefinition, ast.SubroutineDefinition)


def is_static(program: ast.Program) -> bool:
    """Only what the static importer always read: it keeps that path, unchanged."""
    for stmt in program.statements:
        if isinstance(stmt, ast.ClassicalDeclaration):
            init = stmt.init_expression
            if not isinstance(stmt.type, ast.BitType) or not (
                init is None or isinstance(init, ast.QuantumMeasurement)
            ):
                return False
        elif isinstance(stmt, ast.ConstantDeclaration):
            if not isinstance(stmt.type, (ast.FloatType, ast.AngleType, ast.IntType, ast.UintType)):
                return False
        elif isinstance(stmt, ast.IODeclaration):
            if not isinstance(stmt.type, (ast.FloatType, ast.AngleType)):
                return False
        elif not isinstance(stmt, _STATIC):
            return False
    return True


class ProgramInfo:
    """What is global and fixed in a program: declared once, shared by every run."""

    def __init__(self, importer: Importer, program: ast.Program) -> None:
        self.importer = importer
        self.loc = importer.loc
        self.statements = list(program.statements)
        self.subroutines: dict[str, ast.SubroutineDefinition] = {}
        self.outputs: dict[str, tuple[int, bool]] = {}  # bit registers: width, sized
        self.offsets: dict[str, int] = {}  # their first clbit
        self.output_ids: set[int] = set()
        self.global_consts: set[int] = set()
        self.consts: dict[str, cl.Value] = {}
        self.inputs: dict[str, cl.CType] = {}
        self.size = 0  # statements written, nested ones included: the program's size
        self.measures = False  # any measure or reset, anywhere (else the sampler measures all)

    def unsupported(self, node: ast.QASMNode, where: str = "") -> QasmError:
        return self.importer._unsupported(node, where)

    def is_output(self, stmt: ast.ClassicalDeclaration) -> bool:
        return id(stmt) in self.output_ids

    def check_name(self, ident: ast.Identifier) -> None:
        name = ident.name
        if self.importer.is_gate_name(name):
            raise self.loc.error(
                ident, f"'{name}' is the name of a gate and cannot name a register or variable"
            )
        if name in CONSTANTS or name in FUNCTIONS:
            raise self.loc.error(ident, f"'{name}' is a built-in name and cannot be redeclared")

    def _global_name(self, ident: ast.Identifier) -> str:
        self.check_name(ident)
        name = ident.name
        imp = self.importer
        if name in imp.qregs or name in imp.values or name in imp.taken:
            raise self.loc.error(ident, f"'{name}' is already declared")
        imp.taken.add(name)
        return name

    def _lookup(self, name: str) -> object:
        if name in self.consts:
            return self.consts[name]
        if name in self.inputs:
            return Symbol(ParamExpr.symbol(name), self.inputs[name])
        return None

    def constant(self, node: ast.Expression, ctype: cl.CType | None = None) -> cl.Value:
        """A compile-time constant: literals, built-in constants and earlier ``const``s."""
        try:
            value = Evaluator(self._lookup, self.loc).eval(node)
        except (NeedsSymbol, NeedsDynamic) as exc:
            message = f"the value must be a constant, but it depends on '{exc}'"
            raise self.loc.error(node, message) from None
        try:
            return value if ctype is None else cl.cast(value, ctype)
        except cl.ClassicalError as exc:
            raise self.loc.error(node, str(exc)) from None

    def constant_int(self, node: ast.Expression) -> int:
        value = self.constant(node)
        number = cl.to_float(value)
        if not number.is_integer():
            raise self.loc.error(node, f"a width or size must be an integer, got {number!r}")
        return int(number)

    def ctype(self, node: ast.ClassicalType) -> cl.CType:
        return ctype_of(node, self.constant_int, self.loc)

    # -- declaring what is global

    def declare(self) -> None:
        self.tail = len(self.statements)  # the final measurements start here (see execute)
        while self.tail and isinstance(
            self.statements[self.tail - 1], (ast.QuantumMeasurementStatement, ast.QuantumBarrier)
        ):
            self.tail -= 1
        imp = self.importer
        for stmt in self.statements:
            if not isinstance(stmt, _DECLARATIONS):
                self._check_block([stmt])  # counts it, and what it holds
                continue
            self.size += 1
            if isinstance(stmt, ast.Include):
                imp._include(stmt)
            elif isinstance(stmt, ast.QubitDeclaration):
                imp._declare_qubits(stmt)
            elif isinstance(stmt, ast.QuantumGateDefinition):
                imp._define(stmt)
            elif isinstance(stmt, ast.SubroutineDefinition):
                self.subroutines[self._global_name(stmt.name)] = stmt
                self._check_block(stmt.body)
            elif isinstance(stmt, ast.ConstantDeclaration):
                self._declare_const(stmt)
            elif isinstance(stmt, ast.IODeclaration):
                self._declare_input(stmt)
            else:
                self._declare_variable(stmt)

    def _declare_const(self, stmt: ast.ConstantDeclaration) -> None:
        name = self._global_name(stmt.identifier)
        value = self.constant(stmt.init_expression, self.ctype(stmt.type))
        self.consts[name] = value
        if value.type.kind != "bool":
            self.importer.consts[name] = self.importer.values[name] = cl.to_float(value)
        self.global_consts.add(id(stmt))

    def _declare_input(self, stmt: ast.IODeclaration) -> None:
        if stmt.io_identifier.name != "input":
            raise self.loc.error(stmt, f"{stmt.io_identifier.name} declarations are not supported")
        ctype = self.ctype(stmt.type)
        name = self._global_name(stmt.identifier)
        try:
            self.importer.values[name] = ParamExpr.symbol(name)
        except CircuitError as exc:
            raise self.loc.error(stmt.identifier, str(exc)) from None
        self.inputs[name] = ctype

    def _declare_variable(self, stmt: ast.ClassicalDeclaration) -> None:
        self.measures = self.measures or _measures(stmt)
        name = self._global_name(stmt.identifier)
        ctype = self.ctype(stmt.type)
        if ctype.kind == "bit":
            width = ctype.bits
            start = self.importer.circuit.num_clbits
            if start + width > self.importer.limits.bits:
                raise self.loc.error(stmt, f"more than {self.importer.limits.bits} bits")
            self.outputs[name] = (width, ctype.width is not None)
            self.offsets[name] = start
            self.output_ids.add(id(stmt))
            self.importer.circuit.num_clbits = start + width

    def _check_block(self, stmts: Sequence[ast.Statement]) -> None:
        """Refuse, at load time, every statement (nested too) that no run could execute."""
        for stmt in stmts:
            self.size += 1
            self.measures = self.measures or _measures(stmt)
            if isinstance(stmt, _GLOBAL_ONLY):
                raise self.loc.error(stmt, f"{_what(stmt)} is only allowed at the top level")
            if not isinstance(stmt, _CONTROL):
                raise self.unsupported(stmt)
            if isinstance(stmt, ast.BranchingStatement):
                self._check_block(stmt.if_block)
                self._check_block(stmt.else_block)
            elif isinstance(stmt, (ast.WhileLoop, ast.ForInLoop)):
                self._check_block(stmt.block)
            elif isinstance(stmt, ast.CompoundStatement):
                self._check_block(stmt.statements)
            elif isinstance(stmt, ast.ClassicalDeclaration):
                self.ctype(stmt.type)  # refuses arrays, durations, complex, ...


_DECLARATIONS = (
    ast.Include,
    ast.QubitDeclaration,
    ast.QuantumGateDefinition,
    ast.SubroutineDefinition,
    ast.ConstantDeclaration,
    ast.IODeclaration,
    ast.ClassicalDeclaration,
)


def _measures(stmt: ast.Statement) -> bool:
    if isinstance(stmt, ast.ClassicalDeclaration):
        return isinstance(stmt.init_expression, ast.QuantumMeasurement)
    return isinstance(stmt, (ast.QuantumMeasurementStatement, ast.QuantumReset))


def _what(stmt: ast.Statement) -> str:
    return {
        "QubitDeclaration": "a qubit declaration",
        "QuantumGateDefinition": "a gate definition",
        "SubroutineDefinition": "a subroutine definition",
    }[type(stmt).__name__]


# -- backends --------------------------------------------------------------------------------


class Trace:
    """Import-time backend: one stateless branch; gates are recorded, measured bits unknown."""

    def __init__(self, importer: Importer) -> None:
        self.importer = importer

    def gate(self, branch: Branch, insts: list[Instruction], node: ast.QASMNode) -> None:
        self.importer._emit(insts, node)

    def measure(
        self, branch: Branch, qubit: int, clbit: int | None, node: ast.QASMNode
    ) -> list[tuple[Branch, object]]:
        if clbit is None:
            raise NeedsDynamic("a measurement into a local bit")
        self.importer._spend(1, node)
        self.importer._emit([Instruction("measure", (qubit,), (), (clbit,))], node)
        return [(branch, UNKNOWN)]

    def reset(self, branch: Branch, qubit: int, node: ast.QASMNode) -> list[Branch]:
        self.importer._spend(1, node)
        self.importer._emit([Instruction("reset", (qubit,))], node)
        return [branch]

    def barrier(self, qubits: list[int], node: ast.QASMNode) -> None:
        self.importer._spend(len(qubits), node)
        self.importer._emit([Instruction("barrier", tuple(qubits))], node)


class Run:
    """Run-time backend: the branches' states, through ``core.dynamic.Machine``."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def gate(self, branch: Branch, insts: list[Instruction], node: ast.QASMNode) -> None:
        for inst in insts:
            if inst.name != "barrier":
                self.machine.apply(branch, inst)

    def measure(
        self, branch: Branch, qubit: int, clbit: int | None, node: ast.QASMNode
    ) -> list[tuple[Branch, object]]:
        return list(self.machine.measure([branch], qubit))

    def reset(self, branch: Branch, qubit: int, node: ast.QASMNode) -> list[Branch]:
        return self.machine.reset([branch], qubit)

    def barrier(self, qubits: list[int], node: ast.QASMNode) -> None:
        return None


def _global_env(info: ProgramInfo, inputs: Mapping[str, cl.Value | Symbol]) -> Env:
    scope: dict[str, object] = {name: Const(v) for name, v in info.consts.items()}
    scope.update({name: Const(v) for name, v in inputs.items()})
    return Env([scope], [])


def build(importer: Importer, program: ast.Program) -> Circuit | DynamicProgram:
    """The program as a static ``Circuit`` when it unrolls, else as a ``DynamicProgram``."""
    info = ProgramInfo(importer, program)
    info.declare()
    symbols = {n: Symbol(ParamExpr.symbol(n), t) for n, t in info.inputs.items()}
    branch = Branch(None, _global_env(info, symbols), 0)  # type: ignore[arg-type]
    interp = Interpreter(info, Trace(importer), trace=True)
    try:
        flow = interp.block(info.statements, [branch], False)
        _check_top(info, flow.brk + flow.cont + flow.ret)
        return importer.circuit
    except (NeedsDynamic, NeedsSymbol):
        circuit = importer.circuit
        importer.circuit = Circuit(circuit.num_qubits, circuit.num_clbits, [], circuit.name)
        return DynamicProgram(info, {})


def _sample(
    branch: Branch, pairs: list[tuple[int, int]], bits: list[int], machine: Machine
) -> list[tuple[Sequence[int], int]]:
    """The final measurements of a branch drawn at once from its state (a multinomial over
    basis states, as the static sampler draws), not by splitting: nothing reads them after,
    so a branch is not copied per outcome of the last measurements."""
    if not pairs:
        return [(bits, branch.shots)]
    out: list[tuple[Sequence[int], int]] = []
    for index, count in sample_counts(branch.state, branch.shots, machine.rng).items():
        drawn = list(bits)
        for qubit, clbit in pairs:
            drawn[clbit] = (index >> qubit) & 1
        out.append((drawn, count))
    return out


def _check_top(info: ProgramInfo, stray: list[Branch]) -> None:
    if stray:
        raise QasmError("break, continue or return outside a loop or subroutine")


class DynamicProgram:
    """A program whose control flow depends on measurements: sampled by ``core.dynamic``.

    It has what the sampler and the CLI ask of a ``Circuit`` (``num_qubits``, ``num_clbits``,
    ``parameters``, ``bind``); it is not a ``Circuit``, so the estimator, the exporter and the
    algorithm drivers refuse it instead of misreading it.
    """

    def __init__(self, info: ProgramInfo, values: Mapping[str, float]) -> None:
        self.info = info
        self.values = dict(values)
        circuit = info.importer.circuit
        self.num_qubits = circuit.num_qubits
        self.num_clbits = circuit.num_clbits
        # No measurement and no bit register: sampled as such a circuit is, every qubit
        # measured at the end (a program that writes its bits classically keeps them).
        self.measure_all = not info.measures and not info.outputs
        if self.measure_all:
            self.num_clbits = circuit.num_qubits
        self.name = circuit.name

    def has_measurements(self) -> bool:
        """False when the sampler measures every qubit i into bit i at the end, as it does a
        ``Circuit`` without measurements: no measure, no reset and no bit register."""
        return not self.measure_all

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(name for name in self.info.inputs if name not in self.values)

    @property
    def size(self) -> int:
        """Statements written (nested ones included): a size, as a circuit's length is; what a
        run may cost is bounded by the limits (steps, while rounds, branches), not by this."""
        return self.info.size

    @property
    def max_branches(self) -> int:
        return self.info.importer.limits.branches

    def bind(self, values: Mapping[str, float] | Sequence[float]) -> DynamicProgram:
        names = self.parameters
        if not isinstance(values, Mapping):
            if len(values) != len(names):
                raise CircuitError(f"expected {len(names)} parameter values, got {len(values)}")
            values = dict(zip(names, values, strict=True))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise CircuitError(f"the program has no input named {', '.join(unknown)}")
        return DynamicProgram(self.info, {**self.values, **values})

    def _inputs(self) -> dict[str, cl.Value]:
        if self.parameters:
            raise CircuitError(f"unbound parameters: {', '.join(self.parameters)}")
        out = {}
        for name, ctype in self.info.inputs.items():
            try:
                number = float(self.values[name])
                if ctype.kind not in ("float", "angle") and not number.is_integer():
                    raise cl.ClassicalError(f"{ctype} needs a whole number, got {number!r}")
                out[name] = cl.cast(cl.make(cl.FLOAT, number), ctype)
            except (cl.ClassicalError, TypeError, ValueError, OverflowError) as exc:
                raise CircuitError(f"input {name}: {exc}") from None
        return out

    def execute(self, machine: Machine, shots: int) -> list[tuple[Sequence[int], int]]:
        info = self.info
        info.importer.budget = Budget(info.importer.limits.expansion)
        start = machine.start(_global_env(info, self._inputs()), shots)
        interp = Interpreter(info, Run(machine), trace=False)
        interp.steps = machine.steps_spent  # one step budget for all the run's groups
        body, tail = info.statements[: info.tail], info.statements[info.tail :]
        try:
            flow = interp.block(body, [start], False)
        except RecursionError:
            raise QasmError("the program nests too deeply to run") from None
        finally:
            machine.steps_spent = interp.steps
        _check_top(info, flow.brk + flow.cont + flow.ret)
        out: list[tuple[Sequence[int], int]] = []
        ended = {id(b) for b in flow.end}
        for b in flow.normal + flow.end:
            bits = self._bits_of(b)
            if id(b) in ended:  # `end`: the final measurements are not reached
                out.append((bits, b.shots))
                continue
            if self.measure_all:
                pairs = [(q, q) for q in range(self.num_qubits)]
            else:
                pairs = [pair for stmt in tail for pair in self._pairs(interp, stmt, b)]
            out += _sample(b, pairs, bits, machine)
        return out

    def _bits_of(self, b: Branch) -> list[int]:
        info = self.info
        bits = [0] * self.num_clbits
        globals_ = b.env.scopes[0]
        for name, offset in info.offsets.items():
            value = globals_.get(name)
            if isinstance(value, cl.Value):
                for i in range(info.outputs[name][0]):
                    bits[offset + i] = (int(value.value) >> i) & 1
        return bits

    def _pairs(self, interp: Interpreter, stmt: ast.Statement, b: Branch) -> list[tuple[int, int]]:
        """(qubit, clbit) of a final measurement statement in branch ``b``."""
        if not isinstance(stmt, ast.QuantumMeasurementStatement) or stmt.target is None:
            return []  # a barrier
        qubits = interp._qubits(stmt.measure.qubit, b)
        _name, _positions, clbits = interp._bits(stmt.target, b)
        if len(qubits) != len(clbits):
            raise self.info.loc.error(
                stmt, f"measure of {len(qubits)} qubit(s) into {len(clbits)} bit(s)"
            )
        return [(q, c) for q, c in zip(qubits, clbits, strict=True) if c is not None]
