"""A device target: its gates, connectivity and calibration, and its JSON file (``qiz-target/1``).

What is stored is the calibration itself (per qubit T1, T2 and readout error; per gate and
qubits its error and duration), not a noise model: the model is rebuilt from it by the recipe
Aer's ``NoiseModel.from_backend`` uses (``targets.noise``), which keeps a 127-qubit device's
file near 40 KB and says where every number came from. ``source`` names the backend and the
date of its calibration snapshot. Times are in seconds, as in a Qiskit ``Target``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qiz.quantum.core.files import read_text
from qiz.quantum.core.gates import GATES
from qiz.quantum.noise.limits import MAX_NOISE_FILE_BYTES
from qiz.quantum.targets.errors import TargetError

FORMAT = "qiz-target/1"
# the device's basis gates the engine (or the lowering, for ecr) can run
RUNNABLE = frozenset(GATES) | {"ecr"}
# instructions a calibration may list besides gates: they carry a duration, never a gate error
DIRECTIVES = frozenset({"reset"})
SOURCE_KEYS = frozenset({"backend", "snapshot_date", "package", "generator"})


@dataclass(frozen=True)
class GateCalibration:
    """One gate on one tuple of qubits: its error (1 - average gate fidelity) and duration (s)."""

    qubits: tuple[int, ...]
    error: float | None
    duration: float | None


@dataclass(frozen=True)
class Target:
    """A device: ``num_qubits``, ``basis_gates``, per-qubit ``t1``/``t2`` (s, None if unknown)
    and ``readout`` ((P(1|0), P(0|1)), None if unknown), ``gates`` (name -> calibrations; a
    two-qubit gate's calibrated pairs are the coupling map), and ``source``."""

    name: str
    num_qubits: int
    basis_gates: tuple[str, ...]
    t1: tuple[float | None, ...]
    t2: tuple[float | None, ...]
    readout: tuple[tuple[float, float] | None, ...]
    gates: Mapping[str, tuple[GateCalibration, ...]]
    source: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    # -- derived

    @property
    def two_qubit_gates(self) -> tuple[str, ...]:
        return tuple(g for g in self.basis_gates if _arity(g) == 2)

    @property
    def coupling_map(self) -> list[tuple[int, int]]:
        """The directed pairs a two-qubit basis gate is calibrated on, sorted."""
        pairs = {c.qubits for g in self.two_qubit_gates for c in self.gates.get(g, ())}
        return sorted(pairs)  # type: ignore[arg-type]

    def calibration(self, name: str, qubits: tuple[int, ...]) -> GateCalibration | None:
        for cal in self.gates.get(name, ()):
            if cal.qubits == qubits:
                return cal
        return None

    def summary(self) -> dict[str, object]:
        """What ``qiz targets`` shows: sizes, gates, and the medians of the calibration."""
        two_q = [
            c.error
            for g in self.two_qubit_gates
            for c in self.gates.get(g, ())
            if c.error is not None
        ]
        readout = [(r[0] + r[1]) / 2 for r in self.readout if r is not None]
        return {
            "name": self.name,
            "num_qubits": self.num_qubits,
            "basis_gates": list(self.basis_gates),
            "num_couplings": len(self.coupling_map),
            "two_qubit_error_median": _median(two_q),
            "t1_median_us": _median([t * 1e6 for t in self.t1 if t is not None]),
            "t2_median_us": _median([t * 1e6 for t in self.t2 if t is not None]),
            "readout_error_median": _median(readout),
            "backend": self.source.get("backend"),
            "snapshot_date": self.source.get("snapshot_date"),
        }

    # -- the file format

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "source": dict(self.source),
            "num_qubits": self.num_qubits,
            "basis_gates": list(self.basis_gates),
            "qubits": {
                "t1": list(self.t1),
                "t2": list(self.t2),
                "readout": [None if r is None else list(r) for r in self.readout],
            },
            "gates": {
                name: [[list(c.qubits), c.error, c.duration] for c in cals]
                for name, cals in self.gates.items()
            },
        }

    def dumps(self) -> str:
        """Compact JSON, one gate calibration per line (diffs stay readable)."""
        data = self.to_dict()
        gates = data.pop("gates")
        head = json.dumps(data, separators=(",", ":"))[:-1]
        lines = []
        for name, rows in gates.items():  # type: ignore[union-attr]
            body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
            lines.append(f"{json.dumps(name)}:[\n{body}]")
        return head + ',\n"gates":{\n' + ",\n".join(lines) + "}}\n"

    @classmethod
    def from_dict(cls, data: object, where: str = "target") -> Target:
        d = _obj(
            data,
            where,
            {
                "format",
                "name",
                "description",
                "source",
                "num_qubits",
                "basis_gates",
                "qubits",
                "gates",
            },
        )
        if d.get("format") != FORMAT:
            raise TargetError(f"{where}: 'format' must be {FORMAT!r}, got {d.get('format')!r}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise TargetError(f"{where}: 'name' must be a non-empty string")
        n = d.get("num_qubits")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TargetError(f"{where}: 'num_qubits' must be a positive integer")
        source = _obj(d.get("source", {}), f"{where}.source", set(SOURCE_KEYS))
        if not all(isinstance(v, str) for v in source.values()):
            raise TargetError(f"{where}.source: values must be strings")
        basis = _list(d.get("basis_gates"), f"{where}.basis_gates")
        if not basis or not all(isinstance(g, str) for g in basis):
            raise TargetError(f"{where}.basis_gates must be a non-empty list of names")
        unknown = sorted(set(basis) - RUNNABLE)
        if unknown:
            raise TargetError(f"{where}.basis_gates: gate(s) the engine cannot run: {unknown}")
        q = _obj(d.get("qubits"), f"{where}.qubits", {"t1", "t2", "readout"})
        t1 = _per_qubit(q.get("t1"), n, f"{where}.qubits.t1", _time)
        t2 = _per_qubit(q.get("t2"), n, f"{where}.qubits.t2", _time)
        readout = _per_qubit(q.get("readout"), n, f"{where}.qubits.readout", _readout)
        gates: dict[str, tuple[GateCalibration, ...]] = {}
        for gname, rows in _obj(d.get("gates"), f"{where}.gates", None).items():
            if gname not in basis and gname not in DIRECTIVES:
                raise TargetError(f"{where}.gates: {gname!r} is not a basis gate or reset")
            arity = _arity(gname)
            cals = []
            for i, row in enumerate(_list(rows, f"{where}.gates.{gname}")):
                at = f"{where}.gates.{gname}[{i}]"
                cals.append(_calibration(row, at, arity, n))
            gates[gname] = tuple(cals)
        return cls(
            name=name,
            num_qubits=n,
            basis_gates=tuple(basis),  # type: ignore[arg-type]
            t1=tuple(t1),
            t2=tuple(t2),
            readout=tuple(readout),
            gates=gates,
            source=dict(source),  # type: ignore[arg-type]
            description=str(d.get("description", "")),
        )

    @classmethod
    def loads(cls, text: str, where: str = "target") -> Target:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise TargetError(f"{where}: not JSON ({exc})") from None
        return cls.from_dict(data, where)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Target:
        text = read_text(
            path, max_size=MAX_NOISE_FILE_BYTES, error=TargetError, kind="a target file"
        )
        return cls.loads(text, str(path))


def _arity(name: str) -> int:
    if name == "ecr":
        return 2
    spec = GATES.get(name)
    return spec.num_qubits if spec is not None else 1


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _obj(data: object, where: str, allowed: set[str] | None) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise TargetError(f"{where} must be an object")
    if allowed is not None and set(data) - allowed:
        raise TargetError(f"{where}: unknown key(s) {sorted(set(data) - allowed)}")
    return data


def _list(data: object, where: str) -> list[object]:
    if not isinstance(data, list):
        raise TargetError(f"{where} must be a list")
    return data


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TargetError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _time(value: object, where: str) -> float | None:
    if value is None:
        return None
    t = _number(value, where)
    if t <= 0:
        raise TargetError(f"{where} must be positive, got {t!r}")
    return t


def _readout(value: object, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    pair = _list(value, where)
    if len(pair) != 2:
        raise TargetError(f"{where} must be [P(1|0), P(0|1)]")
    p = (_number(pair[0], where), _number(pair[1], where))
    if not all(0 <= x <= 1 for x in p):
        raise TargetError(f"{where}: probabilities must be in [0, 1], got {list(p)}")
    return p


def _per_qubit(data: object, n: int, where: str, read: Callable[[object, str], Any]) -> list:
    items = _list(data, where)
    if len(items) != n:
        raise TargetError(f"{where} must have one entry per qubit ({n}), got {len(items)}")
    return [read(v, f"{where}[{i}]") for i, v in enumerate(items)]


def _calibration(row: object, where: str, arity: int, n: int) -> GateCalibration:
    items = _list(row, where)
    if len(items) != 3:
        raise TargetError(f"{where} must be [qubits, error, duration]")
    qubits = _list(items[0], where)
    if (
        len(qubits) != arity
        or not all(isinstance(q, int) and not isinstance(q, bool) and 0 <= q < n for q in qubits)
        or len(set(qubits)) != len(qubits)
    ):
        raise TargetError(f"{where}: qubits must be {arity} distinct indices below {n}")
    error = None if items[1] is None else _number(items[1], where)
    if error is not None and not 0 <= error <= 1:
        raise TargetError(f"{where}: error must be in [0, 1], got {error!r}")
    duration = None if items[2] is None else _number(items[2], where)
    if duration is not None and duration < 0:
        raise TargetError(f"{where}: duration must be non-negative, got {duration!r}")
    return GateCalibration(tuple(qubits), error, duration)  # type: ignore[arg-type]
