"""Gate-parameter expressions of OpenQASM 3, evaluated to floats or affine ``ParamExpr``s.

The importer (``qiz.quantum.qasm``) folds every constant sub-expression to a float, so
``rx(pi/2)`` arrives as the float ``pi/2`` and round-trips exactly. ``input`` angles stay
symbolic, and only affine uses of them are accepted (``2*theta + pi``, ``-gamma/2``): that is
what ``ParamExpr`` can carry and what keeps parameter-shift and adjoint gradients exact. A
non-affine use (``sin(theta)``, ``theta*phi``) is refused at its line and column rather than
silently approximated.

``Locator`` also lives here because both the expression evaluator and the statement importer
need to turn reference-AST spans into 1-based (line, column) pairs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping

from openqasm3 import ast

from qiz.quantum.core.errors import CircuitError, QasmError
from qiz.quantum.core.params import ParamExpr, ParamValue
from qiz.quantum.qasm.limits import Budget

# Built-in constants of OpenQASM 3 (both spellings each).
CONSTANTS: dict[str, float] = {
    "pi": math.pi,
    "π": math.pi,
    "tau": math.tau,
    "τ": math.tau,
    "euler": math.e,
    "ℇ": math.e,
}

# Built-in real functions, evaluated on constants only (none is affine).
FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "exp": math.exp,
    "ln": math.log,
    "sqrt": math.sqrt,
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
}

_BINARY: dict[str, Callable[[ParamValue, ParamValue], ParamValue]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


class Locator:
    """Maps reference-AST nodes to the 1-based (line, column) that ``QasmError`` reports.

    The reference parser gives statement and expression spans with 0-based columns, but the
    spans of identifiers it builds straight from lexer tokens (declared names, gate names,
    register names in operands) carry the token's offset in the whole text instead of its
    column. ``where`` recognises that case by checking the source text and converts it.
    """

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        self._starts: list[int] = []
        offset = 0
        for line in self._lines:
            self._starts.append(offset)
            offset += len(line) + 1

    def where(self, node: ast.QASMNode | None) -> tuple[int | None, int | None]:
        span = getattr(node, "span", None)
        if span is None:
            return None, None
        line, column = span.start_line, span.start_column
        if isinstance(node, ast.Identifier) and 1 <= line <= len(self._lines):
            text = self._lines[line - 1]
            name = node.name
            if text[column : column + len(name)] != name:
                relative = column - self._starts[line - 1]
                if text[relative : relative + len(name)] == name:
                    column = relative
        return line, column + 1

    def error(self, node: ast.QASMNode | None, message: str) -> QasmError:
        line, column = self.where(node)
        return QasmError(message, line, column)


def normalize(value: ParamValue) -> ParamValue:
    """A ``ParamExpr`` with no free parameter left is just its constant."""
    if isinstance(value, ParamExpr) and not value.terms:
        return float(value.const)
    return value


def is_zero(value: ParamValue) -> bool:
    value = normalize(value)
    return not isinstance(value, ParamExpr) and value == 0.0


def evaluate(
    node: ast.Expression,
    env: Mapping[str, ParamValue],
    loc: Locator,
    budget: Budget | None = None,
) -> ParamValue:
    """The value of a gate-parameter expression: a float, or an affine ``ParamExpr``.

    With a ``budget``, every node evaluated spends one step plus one per free parameter its
    value carries (the cost of an affine operation on it), so an expression inside a gate body
    that is inlined many times is paid for each time.
    """
    value = normalize(_Evaluator(env, loc, budget).eval(node))
    numbers = (
        [value.const, *(c for _, c in value.terms)] if isinstance(value, ParamExpr) else [value]
    )
    if not all(math.isfinite(x) for x in numbers):
        raise loc.error(node, "the expression is not a finite number (overflow or nan)")
    return value


def evaluate_constant(
    node: ast.Expression,
    env: Mapping[str, ParamValue],
    loc: Locator,
    what: str,
    budget: Budget | None = None,
) -> float:
    """A compile-time constant (sizes, indices, ``pow`` exponents, ``const`` values)."""
    value = evaluate(node, env, loc, budget)
    if isinstance(value, ParamExpr):
        names = ", ".join(value.names)
        raise loc.error(node, f"{what} must be a constant, but it depends on input {names}")
    return value


def evaluate_int(
    node: ast.Expression,
    env: Mapping[str, ParamValue],
    loc: Locator,
    what: str,
    budget: Budget | None = None,
) -> int:
    """A constant that must be a whole number, such as an index or a register size."""
    value = evaluate_constant(node, env, loc, what, budget)
    if not value.is_integer():
        raise loc.error(node, f"{what} must be an integer, got {value!r}")
    return int(value)


class _Evaluator:
    def __init__(
        self, env: Mapping[str, ParamValue], loc: Locator, budget: Budget | None = None
    ) -> None:
        self.env = env
        self.loc = loc
        self.budget = budget

    def eval(self, node: ast.QASMNode) -> ParamValue:
        value = self._eval(node)
        if self.budget is not None:
            terms = len(value.terms) if isinstance(value, ParamExpr) else 0
            if not self.budget.spend(1 + terms):
                raise self.loc.error(node, self.budget.message("the expression"))
        return value

    def _eval(self, node: ast.QASMNode) -> ParamValue:
        if isinstance(node, ast.IntegerLiteral):
            try:
                return float(node.value)
            except OverflowError:
                raise self.loc.error(node, "integer literal is too large") from None
        if isinstance(node, ast.FloatLiteral):
            return float(node.value)
        if isinstance(node, ast.Identifier):
            return self._identifier(node)
        if isinstance(node, ast.UnaryExpression):
            if node.op.name != "-":
                raise self.loc.error(node, f"operator '{node.op.name}' is not supported here")
            return -self.eval(node.expression)
        if isinstance(node, ast.BinaryExpression):
            return self._binary(node)
        if isinstance(node, ast.FunctionCall):
            return self._call(node)
        raise self.loc.error(node, f"{describe_expression(node)} is not supported in a gate angle")

    def _identifier(self, node: ast.Identifier) -> ParamValue:
        if node.name in self.env:
            return self.env[node.name]
        if node.name in CONSTANTS:
            return CONSTANTS[node.name]
        raise self.loc.error(node, f"'{node.name}' is not declared (or not visible here)")

    def _binary(self, node: ast.BinaryExpression) -> ParamValue:
        op = node.op.name
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        try:
            if op in _BINARY:
                return normalize(_BINARY[op](lhs, rhs))
            if op == "/":
                if isinstance(normalize(rhs), ParamExpr):
                    raise CircuitError("division by an input parameter is not affine")
                return normalize(lhs / float(normalize(rhs)))  # type: ignore[arg-type]
            if op in ("**", "%"):
                a, b = normalize(lhs), normalize(rhs)
                if isinstance(a, ParamExpr) or isinstance(b, ParamExpr):
                    raise CircuitError(f"'{op}' on an input parameter is not affine")
                return float(a**b) if op == "**" else math.fmod(a, b)
        except CircuitError as exc:
            message = f"{exc}; only affine angle expressions are supported"
            raise self.loc.error(node, message) from None
        except ZeroDivisionError:
            raise self.loc.error(node, "division by zero") from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise self.loc.error(node, f"cannot evaluate '{op}': {exc}") from None
        raise self.loc.error(node, f"operator '{op}' is not supported in a gate angle")

    def _call(self, node: ast.FunctionCall) -> float:
        name = node.name.name
        func = FUNCTIONS.get(name)
        if func is None:
            raise self.loc.error(node, f"function '{name}' is not supported")
        if len(node.arguments) != 1:
            raise self.loc.error(node, f"{name} takes 1 argument, got {len(node.arguments)}")
        arg = normalize(self.eval(node.arguments[0]))
        if isinstance(arg, ParamExpr):
            raise self.loc.error(
                node,
                f"{name}() of input parameter(s) {', '.join(arg.names)} is not affine; "
                "only affine angle expressions are supported",
            )
        try:
            return func(arg)
        except (ValueError, OverflowError) as exc:
            raise self.loc.error(node, f"cannot evaluate {name}({arg!r}): {exc}") from None


def describe_expression(node: ast.QASMNode) -> str:
    """A human name for an expression kind, for 'X is not supported' messages."""
    names = {
        "ImaginaryLiteral": "an imaginary literal",
        "BooleanLiteral": "a boolean literal",
        "BitstringLiteral": "a bitstring literal",
        "DurationLiteral": "a duration literal",
        "ArrayLiteral": "an array literal",
        "Cast": "a type cast",
        "IndexExpression": "indexing a classical value",
        "Concatenation": "register concatenation",
        "DurationOf": "durationof",
        "SizeOf": "sizeof",
        "QuantumMeasurement": "measure as an expression",
    }
    return names.get(type(node).__name__, f"the expression {type(node).__name__}")
