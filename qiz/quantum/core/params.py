"""Symbolic circuit parameters: affine expressions ``c0 + sum(c_i * theta_i)``.

Affine is what variational circuits and OpenQASM ``input`` angles need (``2*theta``,
``theta + pi/2``, ``-gamma``), and it keeps the adjoint gradient exact: d(angle)/d(theta_i)
is the coefficient ``c_i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qiz.quantum.core.errors import CircuitError


@dataclass(frozen=True)
class ParamExpr:
    """``const + sum(coeff * parameter)``; immutable and hashable."""

    terms: tuple[tuple[str, float], ...] = ()
    const: float = 0.0

    @staticmethod
    def symbol(name: str) -> ParamExpr:
        """The expression made of one named parameter."""
        if not name or not name.replace("_", "a").isalnum():
            raise CircuitError(f"parameter name {name!r} must be an identifier")
        return ParamExpr(((name, 1.0),), 0.0)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)

    def bind(self, values: Mapping[str, float]) -> float:
        """The number this expression takes for ``values``; every parameter must be given."""
        total = self.const
        for name, coeff in self.terms:
            if name not in values:
                raise CircuitError(f"parameter {name!r} is not bound")
            total += coeff * float(values[name])
        return total

    def _combine(self, other: ParamValue, sign: float) -> ParamExpr:
        if isinstance(other, ParamExpr):
            merged = dict(self.terms)
            for name, coeff in other.terms:
                merged[name] = merged.get(name, 0.0) + sign * coeff
            terms = tuple((n, c) for n, c in merged.items() if c != 0.0)
            return ParamExpr(terms, self.const + sign * other.const)
        return ParamExpr(self.terms, self.const + sign * float(other))

    def __add__(self, other: ParamValue) -> ParamExpr:
        return self._combine(other, 1.0)

    __radd__ = __add__

    def __sub__(self, other: ParamValue) -> ParamExpr:
        return self._combine(other, -1.0)

    def __rsub__(self, other: ParamValue) -> ParamExpr:
        return (-self)._combine(other, 1.0)

    def __neg__(self) -> ParamExpr:
        return self * -1.0

    def __mul__(self, other: ParamValue) -> ParamExpr:
        if isinstance(other, ParamExpr):
            if other.terms and self.terms:
                raise CircuitError("a product of two parameters is not affine")
            return self * other.const if not other.terms else other * self.const
        k = float(other)
        return ParamExpr(tuple((n, c * k) for n, c in self.terms if c * k != 0.0), self.const * k)

    __rmul__ = __mul__

    def __truediv__(self, other: ParamValue) -> ParamExpr:
        if isinstance(other, ParamExpr):
            if other.terms:
                raise CircuitError("division by a parameter is not affine")
            other = other.const
        return self * (1.0 / float(other))

    def __str__(self) -> str:
        parts = [] if self.const == 0.0 and self.terms else [repr(self.const)]
        for name, coeff in self.terms:
            parts.append(name if coeff == 1.0 else f"{coeff!r}*{name}")
        return " + ".join(parts)


ParamValue = float | ParamExpr


def Parameter(name: str) -> ParamExpr:  # noqa: N802 - reads like a type at call sites
    """A named free parameter, as in ``theta = Parameter("theta")``."""
    return ParamExpr.symbol(name)


def bind_value(value: ParamValue, values: Mapping[str, float]) -> float:
    """A float, or an expression evaluated at ``values``."""
    return value.bind(values) if isinstance(value, ParamExpr) else float(value)
