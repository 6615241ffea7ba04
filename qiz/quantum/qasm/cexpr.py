"""Classical expressions of OpenQASM 3 (reference AST) evaluated to ``classical.Value``s.

Gate angles of static programs go through ``expr`` (floats and affine ``ParamExpr``s); this
module evaluates everything a classical program computes: conditions, loop ranges, assignments,
casts, indexing of bit registers, subroutine arguments. Names are looked up through a function
the interpreter gives (its per-branch environment), so the same code runs at import time and
inside every branch of a dynamic run.

At import time two kinds of names cannot be read yet: bits that hold a measurement outcome
(``UNKNOWN``) and ``input`` parameters (``Symbol``). Reading one raises ``NeedsDynamic`` or
``NeedsSymbol``: the importer then keeps the program dynamic instead of unrolling it, or, for a
gate angle, falls back to ``expr``'s affine evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from openqasm3 import ast

from qiz.quantum.core.params import ParamExpr
from qiz.quantum.qasm import classical as cl
from qiz.quantum.qasm.expr import CONSTANTS, FUNCTIONS, Locator, describe_expression


class NeedsDynamic(Exception):
    """The value depends on a measurement outcome: only a dynamic run can know it."""


class NeedsSymbol(Exception):
    """The value depends on an unbound ``input`` parameter."""


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # a bit register holding measurement outcomes, read at import time


@dataclass(frozen=True)
class Symbol:
    """An unbound ``input`` of a given type (import time only)."""

    expr: ParamExpr
    type: cl.CType


@dataclass(frozen=True)
class QubitRef:
    """A qubit argument inside a subroutine: the global qubits it names."""

    qubits: tuple[int, ...]
    is_array: bool


Lookup = Callable[[str], object]  # a name's binding, or None when it is not declared
Call = Callable[[ast.FunctionCall], cl.Value]


def ctype_of(
    node: ast.ClassicalType, size: Callable[[ast.Expression], int], loc: Locator
) -> cl.CType:
    """The ``CType`` a type node names; ``size`` evaluates a width (a compile-time constant)."""
    kinds = {
        ast.BoolType: "bool",
        ast.BitType: "bit",
        ast.IntType: "int",
        ast.UintType: "uint",
        ast.FloatType: "float",
        ast.AngleType: "angle",
    }
    kind = kinds.get(type(node))
    if kind is None:
        name = type(node).__name__.removesuffix("Type").lower()
        raise loc.error(node, f"the classical type {name} is not supported")
    width = None
    sized = getattr(node, "size", None)
    if sized is not None:
        width = size(sized)
    try:
        return cl.CType(kind, width)
    except cl.ClassicalError as exc:
        raise loc.error(node, str(exc)) from None


class Evaluator:
    """Evaluates expressions against one environment (one branch, or the importer's)."""

    def __init__(self, lookup: Lookup, loc: Locator, call: Call | None = None) -> None:
        self.lookup = lookup
        self.loc = loc
        self.call = call

    def eval(self, node: ast.QASMNode) -> cl.Value:
        try:
            return self._eval(node)
        except cl.ClassicalError as exc:
            raise self.loc.error(node, str(exc)) from None

    def integer(self, node: ast.QASMNode, what: str) -> int:
        value = self.eval(node)
        if value.type.kind in ("float", "angle"):
            number = cl.to_float(value)
            if not number.is_integer():
                raise self.loc.error(node, f"{what} must be an integer, got {number!r}")
            return int(number)
        return int(value.value)

    def _eval(self, node: ast.QASMNode) -> cl.Value:
        if isinstance(node, ast.IntegerLiteral):
            return cl.from_python(int(node.value))
        if isinstance(node, ast.FloatLiteral):
            return cl.from_python(float(node.value))
        if isinstance(node, ast.BooleanLiteral):
            return cl.from_python(bool(node.value))
        if isinstance(node, ast.BitstringLiteral):
            return cl.make(cl.CType("bit", max(1, node.width)), node.value)
        if isinstance(node, ast.Identifier):
            return self._name(node)
        if isinstance(node, ast.UnaryExpression):
            return cl.unary(node.op.name, self.eval(node.expression))
        if isinstance(node, ast.BinaryExpression):
            op = node.op.name
            if op in cl.LOGICAL:  # short-circuit, as C does
                left = cl.truth(self.eval(node.lhs))
                if (op == "&&" and not left) or (op == "||" and left):
                    return cl.Value(cl.BOOL, left)
                return cl.Value(cl.BOOL, cl.truth(self.eval(node.rhs)))
            return cl.binary(op, self.eval(node.lhs), self.eval(node.rhs))
        if isinstance(node, ast.Cast):
            target = ctype_of(node.type, lambda e: self.integer(e, "a width"), self.loc)
            return cl.cast(self.eval(node.argument), target)
        if isinstance(node, ast.IndexExpression):
            return self._index(node)
        if isinstance(node, ast.FunctionCall):
            return self._call(node)
        if isinstance(node, ast.QuantumMeasurement):
            raise self.loc.error(
                node, "measure inside an expression is not supported; assign it to a bit first"
            )
        raise self.loc.error(node, f"{describe_expression(node)} is not supported")

    def _name(self, node: ast.Identifier) -> cl.Value:
        bound = self.lookup(node.name)
        if isinstance(bound, cl.Value):
            return bound
        if bound is UNKNOWN:
            raise NeedsDynamic(node.name)
        if isinstance(bound, Symbol):
            raise NeedsSymbol(node.name)
        if isinstance(bound, QubitRef):
            raise self.loc.error(node, f"'{node.name}' is a qubit, not a classical value")
        if bound is None and node.name in CONSTANTS:
            return cl.make(cl.FLOAT, CONSTANTS[node.name])
        if bound is None:
            raise self.loc.error(node, f"'{node.name}' is not declared (or not visible here)")
        raise self.loc.error(node, f"'{node.name}' is not a classical value")

    def _index(self, node: ast.IndexExpression) -> cl.Value:
        value = self.eval(node.collection)
        index = node.index
        if isinstance(index, ast.DiscreteSet) or len(index) != 1:
            raise self.loc.error(node, "only a single index of a classical value is supported")
        item = index[0]
        if isinstance(item, ast.RangeDefinition):
            raise self.loc.error(node, "slicing a classical value is not supported")
        return cl.get_bit(value, self.integer(item, "an index"))

    def _call(self, node: ast.FunctionCall) -> cl.Value:
        name = node.name.name
        func = FUNCTIONS.get(name)
        if func is not None and self.lookup(name) is None:
            if len(node.arguments) != 1:
                raise self.loc.error(node, f"{name} takes 1 argument, got {len(node.arguments)}")
            arg = cl.to_float(self.eval(node.arguments[0]))
            try:
                result = func(arg)
            except (ValueError, OverflowError) as exc:
                raise self.loc.error(node, f"cannot evaluate {name}({arg!r}): {exc}") from None
            return cl.make(cl.FLOAT, result)
        if name == "popcount" and len(node.arguments) == 1 and self.lookup(name) is None:
            value = self.eval(node.arguments[0])
            bits = int(value.value) & ((1 << value.type.bits) - 1)
            return cl.make(cl.UINT, bin(bits).count("1"))
        if self.call is None:
            raise self.loc.error(node, f"function '{name}' is not supported here")
        return self.call(node)


def as_angle(value: cl.Value) -> float:
    """A classical value used as a gate angle."""
    number = cl.to_float(value)
    if not math.isfinite(number):
        raise cl.ClassicalError("a gate angle must be a finite number")
    return number
