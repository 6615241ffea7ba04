"""The circuit model: a list of instructions on numbered qubits and classical bits.

A circuit is plain data. Engines (``statevector``), exporters (``qasm``) and algorithm drivers
read it; nothing here simulates. Gate angles are floats or affine ``ParamExpr``s, bound later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from qiz.quantum.core.errors import CircuitError
from qiz.quantum.core.gates import gate_spec
from qiz.quantum.core.params import ParamExpr, ParamValue, bind_value

DIRECTIVES = ("measure", "reset", "barrier")


@dataclass(frozen=True)
class Instruction:
    """A gate, ``measure`` (qubits[i] -> clbits[i]), ``reset`` or ``barrier``."""

    name: str
    qubits: tuple[int, ...]
    params: tuple[ParamValue, ...] = ()
    clbits: tuple[int, ...] = ()

    @property
    def is_gate(self) -> bool:
        return self.name not in DIRECTIVES

    @property
    def is_parameterized(self) -> bool:
        return any(isinstance(p, ParamExpr) and p.terms for p in self.params)


@dataclass
class Circuit:
    """``num_qubits`` qubits, ``num_clbits`` classical bits, and the instructions in order."""

    num_qubits: int
    num_clbits: int = 0
    instructions: list[Instruction] = field(default_factory=list)
    name: str = "circuit"

    def __post_init__(self) -> None:
        if self.num_qubits < 0 or self.num_clbits < 0:
            raise CircuitError("qubit and bit counts must be non-negative")

    # -- building ---------------------------------------------------------------------------

    def append(
        self, name: str, qubits: Sequence[int], params: Sequence[ParamValue] = ()
    ) -> Circuit:
        """Add gate ``name`` on ``qubits`` (controls first); checks arity and qubit range."""
        spec = gate_spec(name)
        qubits = tuple(int(q) for q in qubits)
        if len(qubits) != spec.num_qubits:
            raise CircuitError(f"{name} acts on {spec.num_qubits} qubit(s), got {len(qubits)}")
        if len(params) != spec.num_params:
            raise CircuitError(f"{name} takes {spec.num_params} parameter(s), got {len(params)}")
        self._check_qubits(qubits, distinct=True)
        values = tuple(p if isinstance(p, ParamExpr) else float(p) for p in params)
        for p in values:
            numbers = [p.const, *(c for _, c in p.terms)] if isinstance(p, ParamExpr) else [p]
            if not all(math.isfinite(x) for x in numbers):
                raise CircuitError(f"{name}: angle {p} is not a finite number")
        self.instructions.append(Instruction(name, qubits, values))
        return self

    def measure(self, qubit: int, clbit: int) -> Circuit:
        self._check_qubits((qubit,), distinct=True)
        if not 0 <= clbit < self.num_clbits:
            raise CircuitError(f"bit {clbit} out of range (circuit has {self.num_clbits} bits)")
        self.instructions.append(Instruction("measure", (qubit,), (), (clbit,)))
        return self

    def measure_all(self) -> Circuit:
        """Measure qubit i into bit i, growing the classical register if needed."""
        self.num_clbits = max(self.num_clbits, self.num_qubits)
        for q in range(self.num_qubits):
            self.measure(q, q)
        return self

    def reset(self, qubit: int) -> Circuit:
        self._check_qubits((qubit,), distinct=True)
        self.instructions.append(Instruction("reset", (qubit,)))
        return self

    def barrier(self, *qubits: int) -> Circuit:
        qs = tuple(qubits) if qubits else tuple(range(self.num_qubits))
        self._check_qubits(qs, distinct=True)
        self.instructions.append(Instruction("barrier", qs))
        return self

    def __getattr__(self, name: str):  # noqa: ANN204 - returns a bound gate method
        """``circ.h(0)``, ``circ.rx(0.5, 1)``, ``circ.cx(0, 1)``: params first, then qubits."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            spec = gate_spec(name)
        except CircuitError:
            raise AttributeError(name) from None

        def add(*args: ParamValue | int) -> Circuit:
            params, qubits = args[: spec.num_params], args[spec.num_params :]
            return self.append(name, [int(q) for q in qubits], list(params))  # type: ignore[arg-type]

        return add

    def compose(self, other: Circuit) -> Circuit:
        """Append ``other``'s instructions (same qubit numbering)."""
        if other.num_qubits > self.num_qubits or other.num_clbits > self.num_clbits:
            raise CircuitError("the appended circuit is wider than this one")
        self.instructions.extend(other.instructions)
        return self

    def _check_qubits(self, qubits: Iterable[int], distinct: bool) -> None:
        qs = list(qubits)
        for q in qs:
            if not 0 <= q < self.num_qubits:
                raise CircuitError(f"qubit {q} out of range (circuit has {self.num_qubits})")
        if distinct and len(set(qs)) != len(qs):
            raise CircuitError(f"repeated qubit in {qs}")

    # -- reading ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Free parameter names in order of first use."""
        seen: dict[str, None] = {}
        for inst in self.instructions:
            for p in inst.params:
                if isinstance(p, ParamExpr):
                    for n in p.names:
                        seen.setdefault(n, None)
        return tuple(seen)

    def bind(self, values: Mapping[str, float] | Sequence[float]) -> Circuit:
        """A copy with every parameter replaced by a number (a sequence follows ``parameters``)."""
        if not isinstance(values, Mapping):
            names = self.parameters
            if len(values) != len(names):
                raise CircuitError(f"expected {len(names)} parameter values, got {len(values)}")
            values = dict(zip(names, values, strict=True))
        bound = [
            Instruction(i.name, i.qubits, tuple(bind_value(p, values) for p in i.params), i.clbits)
            for i in self.instructions
        ]
        for inst in bound:
            if not all(math.isfinite(float(p)) for p in inst.params):  # type: ignore[arg-type]
                raise CircuitError(f"{inst.name}: a bound angle is not a finite number")
        return Circuit(self.num_qubits, self.num_clbits, bound, self.name)

    def has_measurements(self) -> bool:
        return any(i.name in ("measure", "reset") for i in self.instructions)

    def count_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instructions:
            counts[inst.name] = counts.get(inst.name, 0) + 1
        return counts

    def inverse(self) -> Circuit:
        """The adjoint circuit (gates only): reversed order, each gate's matrix conjugated."""
        out: list[Instruction] = []
        for inst in reversed(self.instructions):
            if not inst.is_gate:
                if inst.name == "barrier":
                    out.append(inst)
                    continue
                raise CircuitError(f"{inst.name} has no inverse")
            out.extend(_inverse_of(inst))
        return Circuit(self.num_qubits, self.num_clbits, out, f"{self.name}_dg")


_SELF_INVERSE = {"id", "x", "y", "z", "h", "cx", "cy", "cz", "ch", "swap", "ccx", "cswap"}
_DAGGER = {"s": "sdg", "sdg": "s", "t": "tdg", "tdg": "t", "sx": "sxdg", "sxdg": "sx"}
_NEGATE = {"rx", "ry", "rz", "p", "crx", "cry", "crz", "cp", "rxx", "ryy", "rzz"}


def _inverse_of(inst: Instruction) -> list[Instruction]:
    if inst.name in _SELF_INVERSE:
        return [inst]
    if inst.name in _DAGGER:
        return [Instruction(_DAGGER[inst.name], inst.qubits)]
    if inst.name in _NEGATE:
        return [Instruction(inst.name, inst.qubits, tuple(-p for p in inst.params))]
    if inst.name == "u":
        theta, phi, lam = inst.params
        return [Instruction("u", inst.qubits, (-theta, -lam, -phi))]
    if inst.name == "cu":
        theta, phi, lam, gamma = inst.params
        return [Instruction("cu", inst.qubits, (-theta, -lam, -phi, -gamma))]
    raise CircuitError(f"no inverse rule for {inst.name}")
