"""Classical values of OpenQASM 3 and the operators on them: pure functions, no AST.

A ``Value`` is a ``CType`` (kind and width) and a plain Python number, kept normalised so that
two equal values compare equal:

- ``int[n]`` wraps to two's complement of n bits, ``uint[n]`` and ``bit[n]`` to n bits
  (``bit`` with no width is one bit); an unsized ``int``/``uint`` is 64 bits wide;
- ``bool`` is a Python bool; ``float`` is a Python float (``float[32]`` rounds to single);
- ``angle[n]`` is kept as the n-bit integer k the specification describes (the angle is
  2πk/2^n, exactly, at any width); an unsized ``angle`` is a float in [0, 2π).
  ``to_float`` gives any value as the float a gate angle or a float operation uses.

Arithmetic follows the specification's promotions where they are clear: integers stay integers
(division truncates toward zero, like C), anything with a float is a float, angles add to angles
and scale by integers. Every integer result is wrapped to its width, so a width bounds the work:
widths are capped by ``MAX_WIDTH`` before any value is made.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.qasm.limits import MAX_CLASSICAL_WIDTH as MAX_WIDTH

KINDS = ("bool", "bit", "int", "uint", "float", "angle")
_INTEGRAL = ("bool", "bit", "int", "uint")
DEFAULT_INT_WIDTH = 64
TAU = 2 * math.pi


class ClassicalError(QuantumError):
    """A classical operation has no value (division by zero, a bad cast, a bad width)."""


@dataclass(frozen=True)
class CType:
    """A classical type: ``kind`` (one of ``KINDS``) and a width in bits, or None if unsized."""

    kind: str
    width: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ClassicalError(f"unknown classical type {self.kind!r}")
        if self.width is not None and not 1 <= self.width <= MAX_WIDTH:
            raise ClassicalError(f"a {self.kind} width must be between 1 and {MAX_WIDTH}")
        if self.kind == "float" and self.width not in (None, 16, 32, 64):
            raise ClassicalError("float widths are 16, 32 or 64")

    @property
    def bits(self) -> int:
        """The integer width the value wraps to (integral kinds)."""
        if self.kind == "bool":
            return 1
        if self.kind == "bit":
            return self.width or 1
        return self.width or DEFAULT_INT_WIDTH

    def __str__(self) -> str:
        return self.kind if self.width is None else f"{self.kind}[{self.width}]"


BOOL = CType("bool")
BIT = CType("bit")
INT = CType("int")
UINT = CType("uint")
FLOAT = CType("float")
ANGLE = CType("angle")


@dataclass(frozen=True)
class Value:
    """A normalised classical value (build it with ``make``)."""

    type: CType
    value: int | float | bool

    def __float__(self) -> float:
        return to_float(self)


def to_float(value: Value) -> float:
    """The value as a float (an ``angle[n]`` in radians)."""
    if value.type.kind == "angle" and value.type.width is not None:
        return int(value.value) / (1 << value.type.width) * TAU  # int / int: never overflows
    try:
        return float(value.value)
    except OverflowError:
        raise ClassicalError(f"{value.type} value is too large for a float") from None


def wrap(kind: str, bits: int, number: int) -> int:
    """``number`` reduced to ``bits`` bits: two's complement for int, modulo for the rest."""
    mask = (1 << bits) - 1
    number &= mask
    if kind == "int" and number >> (bits - 1):
        number -= 1 << bits
    return number


def make(ctype: CType, raw: int | float | bool) -> Value:
    """The value of ``ctype`` that ``raw`` stands for (wrapping, rounding, reducing mod 2π)."""
    kind = ctype.kind
    if kind == "bool":
        return Value(ctype, bool(raw))
    if kind == "float":
        try:
            number = float(raw)
        except OverflowError:
            raise ClassicalError(f"the value is too large for {ctype}") from None
        if ctype.width == 32:
            number = _round_f32(number)
        return Value(ctype, number)
    if kind == "angle":
        try:
            number = float(raw)
        except OverflowError:
            raise ClassicalError(f"the value is too large for {ctype}") from None
        if not math.isfinite(number):
            raise ClassicalError("an angle must be a finite number")
        if ctype.width is None:
            return Value(ctype, math.fmod(number, TAU) % TAU)
        steps = 1 << ctype.width
        return Value(ctype, round(math.ldexp(math.fmod(number, TAU) / TAU, ctype.width)) % steps)
    if isinstance(raw, float):
        raw = _truncate(raw)
    return Value(ctype, wrap(kind, ctype.bits, int(raw)))


def _round_f32(number: float) -> float:
    try:
        return struct.unpack("f", struct.pack("f", number))[0]
    except OverflowError:
        return math.copysign(math.inf, number)


def _truncate(number: float) -> int:
    if not math.isfinite(number):
        raise ClassicalError(f"cannot convert {number!r} to an integer")
    return int(number)  # toward zero


def angle_steps(value: Value) -> int:
    """An ``angle[n]``'s n-bit integer (an unsized angle's, at 64 bits)."""
    if value.type.width is not None:
        return int(value.value)
    return round(float(value.value) / TAU * (1 << 64)) % (1 << 64)


def cast(value: Value, target: CType) -> Value:
    """Explicit cast (and the conversion an assignment or a declaration makes)."""
    src = value.type.kind
    kind = target.kind
    if kind == "bool":
        return make(target, value.value != 0)
    if src == "angle" and kind in ("bit", "uint", "int"):
        if kind == "bit" and target.bits != value.type.bits:
            raise ClassicalError(f"cannot cast {value.type} to {target}: the widths differ")
        if kind != "bit":
            raise ClassicalError(f"cannot cast {value.type} to {target}")
        return make(target, angle_steps(value))
    if kind == "angle" and src == "bit" and value.type.width is not None:
        bits = target.width or value.type.bits
        if bits != value.type.bits:
            raise ClassicalError(f"cannot cast {value.type} to {target}: the widths differ")
        return Value(CType("angle", bits), int(value.value))
    if kind == "angle" and src in ("int", "uint", "bool"):
        raise ClassicalError(f"cannot cast {value.type} to {target}")
    if kind == "angle" and src == "angle" and target.width == value.type.width:
        return Value(target, value.value)
    if kind in ("float", "angle"):
        return make(target, to_float(value))
    return make(target, value.value)


def truth(value: Value) -> bool:
    """The value as a condition (``if (c)``, ``while (n)``): nonzero is true."""
    return value.value != 0


def _int_type(a: CType, b: CType) -> CType:
    """The integer type of an arithmetic or bitwise result of two integral operands: int if
    either is signed, as wide as the wider (``int[8] + int[8]`` wraps at 8 bits); an unsized
    operand (a literal) widens it to 64 bits, so ``x + 1`` does not wrap before assignment."""
    if a.kind == "bit" and b.kind == "bit":
        return CType("bit", max(a.bits, b.bits))
    kind = "int" if "int" in (a.kind, b.kind) else "uint"
    unsized = any(t.kind in ("int", "uint") and t.width is None for t in (a, b))
    width = max(a.bits, b.bits, DEFAULT_INT_WIDTH if unsized else 1)
    return CType(kind, width)


_COMPARE = {
    ">": lambda x, y: x > y,
    "<": lambda x, y: x < y,
    ">=": lambda x, y: x >= y,
    "<=": lambda x, y: x <= y,
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
}
ARITHMETIC = ("+", "-", "*", "/", "%", "**")
BITWISE = ("&", "|", "^", "<<", ">>")
LOGICAL = ("&&", "||")
BINARY_OPS = (*_COMPARE, *ARITHMETIC, *BITWISE, *LOGICAL)


def binary(op: str, a: Value, b: Value) -> Value:
    """``a op b`` with OpenQASM's result type."""
    if op in _COMPARE:
        if a.type.kind in _INTEGRAL and b.type.kind in _INTEGRAL:
            return Value(BOOL, bool(_COMPARE[op](a.value, b.value)))
        return Value(BOOL, bool(_COMPARE[op](to_float(a), to_float(b))))
    if op in LOGICAL:
        x, y = truth(a), truth(b)
        return Value(BOOL, (x and y) if op == "&&" else (x or y))
    ka, kb = a.type.kind, b.type.kind
    if op in BITWISE:
        return _bitwise(op, a, b)
    if op not in ARITHMETIC:
        raise ClassicalError(f"operator '{op}' is not supported")
    if "angle" in (ka, kb):
        return _angle_arithmetic(op, a, b)
    if "float" in (ka, kb):
        return make(FLOAT, _float_op(op, to_float(a), to_float(b)))
    ctype = _int_type(a.type, b.type)
    return make(ctype, _int_op(op, int(a.value), int(b.value), ctype.bits))


def _float_op(op: str, x: float, y: float) -> float:
    try:
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y
        if op == "%":
            return math.fmod(x, y)
        return float(x**y)
    except ZeroDivisionError:
        raise ClassicalError("division by zero") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ClassicalError(f"cannot evaluate '{op}': {exc}") from None


def _int_op(op: str, x: int, y: int, bits: int) -> int:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op in ("/", "%"):
        if y == 0:
            raise ClassicalError("division by zero")
        q = abs(x) // abs(y) * (1 if (x >= 0) == (y >= 0) else -1)  # toward zero, like C
        return q if op == "/" else x - q * y
    if y < 0:
        raise ClassicalError("a negative power of an integer is not an integer")
    return pow(x, y, 1 << bits)  # wrapped anyway: modular power keeps it small


def _bitwise(op: str, a: Value, b: Value) -> Value:
    for v in (a, b):
        if v.type.kind not in _INTEGRAL:
            raise ClassicalError(f"operator '{op}' needs integers or bits, not {v.type}")
    x, y = int(a.value), int(b.value)
    if op in ("<<", ">>"):
        ctype = a.type if a.type.kind != "bool" else UINT
        if y < 0:
            raise ClassicalError("a shift amount must not be negative")
        bits = ctype.bits
        if op == "<<":
            return make(ctype, 0 if y >= bits else x << y)
        return make(ctype, x >> min(y, bits))  # arithmetic for int, logical for the rest
    ctype = _int_type(a.type, b.type)
    result = x & y if op == "&" else x | y if op == "|" else x ^ y
    return make(ctype, result)


def _angle_arithmetic(op: str, a: Value, b: Value) -> Value:
    ka, kb = a.type.kind, b.type.kind
    width = max((t.width for t in (a.type, b.type) if t.kind == "angle" and t.width), default=None)
    angle = CType("angle", width)
    x, y = to_float(a), to_float(b)
    if width is not None and a.type == b.type == angle and op in ("+", "-"):
        k = a.value + b.value if op == "+" else a.value - b.value  # exact: n-bit integers
        return Value(angle, int(k) % (1 << width))
    if op in ("+", "-") and ka == kb == "angle":
        return make(angle, x + y if op == "+" else x - y)
    if op == "*" and {ka, kb} <= {"angle", "int", "uint", "bit", "bool"} and ka != kb:
        return make(angle, x * y)
    if op == "/" and ka == "angle" and kb in ("int", "uint"):
        if y == 0:
            raise ClassicalError("division by zero")
        return make(angle, x / y)
    if op == "/" and ka == kb == "angle":
        if y == 0:
            raise ClassicalError("division by zero")
        return make(UINT, math.floor(x / y))
    return make(FLOAT, _float_op(op, x, y))


def unary(op: str, a: Value) -> Value:
    """``-a``, ``~a`` or ``!a``."""
    if op == "!":
        return Value(BOOL, not truth(a))
    if op == "~":
        if a.type.kind not in _INTEGRAL:
            raise ClassicalError(f"operator '~' needs integers or bits, not {a.type}")
        if a.type.kind == "bool":
            return Value(BOOL, not a.value)
        return make(a.type, ~int(a.value))
    if op == "-":
        if a.type.kind == "bool":
            return make(INT, -int(a.value))
        if a.type.kind == "bit":
            return make(INT, -int(a.value))
        if a.type.kind == "angle" and a.type.width is not None:
            return Value(a.type, -int(a.value) % (1 << a.type.width))
        return make(a.type, -a.value)
    raise ClassicalError(f"operator '{op}' is not supported")


def get_bit(value: Value, index: int) -> Value:
    """Bit ``index`` of an integral value (``c[0]``), counting from the least significant."""
    if value.type.kind not in ("bit", "int", "uint"):
        raise ClassicalError(f"cannot index a {value.type}")
    width = value.type.bits
    if not -width <= index < width:
        raise ClassicalError(f"index {index} is out of range for a value of {width} bits")
    return Value(BIT, (int(value.value) >> (index % width)) & 1)


def set_bit(value: Value, index: int, bit: Value) -> Value:
    """``value`` with bit ``index`` replaced by the truth of ``bit``."""
    if value.type.kind not in ("bit", "int", "uint"):
        raise ClassicalError(f"cannot index a {value.type}")
    width = value.type.bits
    if not -width <= index < width:
        raise ClassicalError(f"index {index} is out of range for a value of {width} bits")
    i = index % width
    raw = int(value.value) & ((1 << width) - 1)
    raw = (raw & ~(1 << i)) | (int(truth(bit)) << i)
    return make(value.type, raw)


def from_python(raw: int | float | bool) -> Value:
    """A literal's value: ``true`` a bool, ``3`` an unsized int, ``0.5`` a float."""
    if isinstance(raw, bool):
        return Value(BOOL, raw)
    if isinstance(raw, int):
        return make(INT, raw)
    return make(FLOAT, raw)
