"""A noise model: which channel follows which gate on which qubits, and how bits are misread.

The semantics are Qiskit Aer's ``NoiseModel`` (docs/noise.md says it in full), so a model
imported from Aer simulates as Aer does:

* an *all-qubit* error for gate ``g`` follows every ``g``, on the gate's qubits in its own
  order (controls first); a *local* error for ``g`` on qubits ``(a, b)`` follows ``g`` on
  exactly those qubits in that order, and replaces the all-qubit error there;
* errors added twice for the same gate (and qubits) compose, the first added acting first;
* an error on ``measure`` acts *before* the measurement, one on ``reset`` after it;
* a readout error changes the recorded bit, never the state; a qubit's local one replaces the
  all-qubit one.

The file format is JSON (``dumps``/``loads``/``load``; docs/noise.md): the standard channels are
written by their parameters, anything else as Kraus matrices of [re, im] pairs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from qiz.quantum.core.files import read_text
from qiz.quantum.core.gates import ALIASES, GATES
from qiz.quantum.noise import channels as ch
from qiz.quantum.noise.channels import Channel, ReadoutError
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.limits import MAX_NOISE_ENTRIES, MAX_NOISE_FILE_BYTES

FORMAT = "qiz-noise/1"
DIRECTIVES = {"measure": 1, "reset": 1}


def canonical_name(name: str) -> str:
    """Our instruction name for a gate name as OpenQASM or Qiskit spells it (``u3`` -> ``u``,
    ``u1`` -> ``p``, ``CX`` -> ``cx``); other names stay as they are."""
    if name in GATES or name in DIRECTIVES:
        return name
    alias = ALIASES.get(name)
    if alias is not None and name != "u2":  # u2 becomes u with fixed angles: not the same gate
        return alias[0]
    return name


def _arity(name: str) -> int | None:
    if name in DIRECTIVES:
        return DIRECTIVES[name]
    spec = GATES.get(name)
    return spec.num_qubits if spec is not None else None


@dataclass
class NoiseModel:
    """Channels after gates (all-qubit and local) and readout errors (all-qubit and local)."""

    all_qubit: dict[str, Channel] = field(default_factory=dict)
    local: dict[tuple[str, tuple[int, ...]], Channel] = field(default_factory=dict)
    readout_all: ReadoutError | None = None
    readout_local: dict[int, ReadoutError] = field(default_factory=dict)

    # -- building

    def add_all_qubit_error(self, channel: Channel, gates: Iterable[str] | str) -> NoiseModel:
        """``channel`` after every one of ``gates`` (composed after any already there)."""
        for name in _names(gates):
            self._check_arity(name, channel.num_qubits)
            old = self.all_qubit.get(name)
            self.all_qubit[name] = channel if old is None else old.compose(channel)
        return self

    def add_error(
        self, channel: Channel, gates: Iterable[str] | str, qubits: Iterable[int]
    ) -> NoiseModel:
        """``channel`` after ``gates`` on exactly ``qubits`` (in that order)."""
        qs = tuple(int(q) for q in qubits)
        if len(qs) != channel.num_qubits:
            raise NoiseError(
                f"a {channel.num_qubits}-qubit {channel.name} channel cannot act on qubits {qs}"
            )
        if any(q < 0 for q in qs) or len(set(qs)) != len(qs):
            raise NoiseError(f"qubits {list(qs)}: must be distinct and non-negative")
        for name in _names(gates):
            self._check_arity(name, channel.num_qubits)
            old = self.local.get((name, qs))
            self.local[(name, qs)] = channel if old is None else old.compose(channel)
        return self

    def add_readout_error(self, error: ReadoutError, qubit: int | None = None) -> NoiseModel:
        """``error`` on every measured bit, or on measurements of ``qubit`` only."""
        if qubit is None:
            self.readout_all = error
        else:
            if int(qubit) < 0:
                raise NoiseError(f"qubit {qubit}: must be non-negative")
            self.readout_local[int(qubit)] = error
        return self

    @staticmethod
    def _check_arity(name: str, num_qubits: int) -> None:
        arity = _arity(name)
        if arity is not None and arity != num_qubits:
            raise NoiseError(
                f"{name} acts on {arity} qubit(s); a {num_qubits}-qubit channel cannot follow it"
            )

    # -- reading

    def channel_for(self, name: str, qubits: tuple[int, ...]) -> Channel | None:
        """The channel that follows (or, for ``measure``, precedes) this instruction."""
        found = self.local.get((name, qubits))
        return found if found is not None else self.all_qubit.get(name)

    def readout_for(self, qubit: int) -> ReadoutError | None:
        found = self.readout_local.get(qubit)
        error = found if found is not None else self.readout_all
        return None if error is None or error.is_ideal else error

    @property
    def is_ideal(self) -> bool:
        """No channel and no readout error: the noiseless engine runs instead."""
        return (
            not self.all_qubit
            and not self.local
            and all(e.is_ideal for e in self.readout_local.values())
            and (self.readout_all is None or self.readout_all.is_ideal)
        )

    def max_qubit(self) -> int:
        """The highest qubit a local entry names (-1 if none): checked against a circuit."""
        qs = [q for (_, qubits) in self.local for q in qubits] + list(self.readout_local)
        return max(qs, default=-1)

    # -- the file format

    def to_dict(self) -> dict[str, object]:
        errors: list[dict[str, object]] = []
        by_channel: dict[int, dict[str, object]] = {}
        for name, channel in self.all_qubit.items():  # one entry per channel object
            entry = by_channel.get(id(channel))
            if entry is None:
                entry = by_channel[id(channel)] = {"gates": [], "channel": _channel_dict(channel)}
                errors.append(entry)
            entry["gates"].append(name)  # type: ignore[union-attr]
        for (name, qubits), channel in self.local.items():
            channel_dict = _channel_dict(channel)
            errors.append({"gates": [name], "qubits": list(qubits), "channel": channel_dict})
        readout: list[dict[str, object]] = []
        if self.readout_all is not None:
            readout.append({"matrix": [list(r) for r in self.readout_all.matrix]})
        for qubit, error in self.readout_local.items():
            readout.append({"qubit": qubit, "matrix": [list(r) for r in error.matrix]})
        return {"format": FORMAT, "errors": errors, "readout": readout}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: object) -> NoiseModel:
        if not isinstance(data, Mapping):
            raise NoiseError("a noise model must be a JSON object")
        if data.get("format") != FORMAT:
            got = data.get("format")
            raise NoiseError(f"noise model: 'format' must be {FORMAT!r}, got {got!r}")
        unknown = set(data) - {"format", "errors", "readout", "description"}
        if unknown:
            raise NoiseError(f"noise model: unknown key(s) {sorted(unknown)}")
        errors = _list(data.get("errors", []), "errors")
        readout = _list(data.get("readout", []), "readout")
        if len(errors) + len(readout) > MAX_NOISE_ENTRIES:
            raise NoiseError(f"noise model: more than {MAX_NOISE_ENTRIES} entries")
        model = cls()
        for i, item in enumerate(errors):
            where = f"errors[{i}]"
            entry = _object(item, where, {"gates", "qubits", "channel"})
            gates = _list(entry.get("gates"), f"{where}.gates")
            if not gates or not all(isinstance(g, str) for g in gates):
                raise NoiseError(f"noise model: {where}.gates must be a non-empty list of names")
            channel = _channel_from(entry.get("channel"), f"{where}.channel")
            names = [canonical_name(g) for g in gates]
            try:
                if entry.get("qubits") is None:
                    model.add_all_qubit_error(channel, names)
                else:
                    qubits = _list(entry["qubits"], f"{where}.qubits")
                    model.add_error(channel, names, [_int(q, f"{where}.qubits") for q in qubits])
            except NoiseError as exc:
                raise NoiseError(f"noise model: {where}: {exc}") from None
        for i, item in enumerate(readout):
            where = f"readout[{i}]"
            entry = _object(item, where, {"qubit", "matrix"})
            try:
                error = ReadoutError(_matrix(entry.get("matrix"), where))  # type: ignore[arg-type]
            except NoiseError as exc:
                raise NoiseError(f"noise model: {where}: {exc}") from None
            qubit = entry.get("qubit")
            model.add_readout_error(error, None if qubit is None else _int(qubit, where))
        return model

    @classmethod
    def loads(cls, text: str) -> NoiseModel:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise NoiseError(f"noise model: not JSON ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NoiseModel:
        text = read_text(
            path, max_size=MAX_NOISE_FILE_BYTES, error=NoiseError, kind="a noise-model file"
        )
        try:
            return cls.loads(text)
        except NoiseError as exc:
            raise NoiseError(f"{path}: {exc}") from None


def _names(gates: Iterable[str] | str) -> list[str]:
    names = [gates] if isinstance(gates, str) else list(gates)
    if not names:
        raise NoiseError("no gate names given")
    return [canonical_name(str(n)) for n in names]


# -- channel (de)serialisation


_PARAMS: dict[str, tuple[str, ...]] = {
    "depolarizing": ("p", "num_qubits"),
    "amplitude_damping": ("gamma",),
    "phase_damping": ("lambda",),
    "thermal_relaxation": ("t1", "t2", "time", "excited_population"),
}


def _channel_dict(channel: Channel) -> dict[str, object]:
    spec = dict(channel.spec)
    if spec.get("type") in _PARAMS:  # JSON has no infinity: an infinite T1 or T2 is "inf"
        return {k: "inf" if v == math.inf else v for k, v in spec.items()}
    return {
        "type": "kraus",
        "operators": [
            [[[float(z.real), float(z.imag)] for z in row] for row in k] for k in channel.kraus
        ],
    }


def _channel_from(data: object, where: str) -> Channel:
    entry = _object(data, where, None)
    kind = entry.get("type")
    try:
        if kind == "kraus":
            _object(entry, where, {"type", "operators"})
            ops = _list(entry.get("operators"), f"{where}.operators")
            return ch.kraus([_complex_matrix(k, f"{where}.operators") for k in ops])
        if kind not in _PARAMS:
            known = ", ".join([*_PARAMS, "kraus"])
            raise NoiseError(f"unknown channel type {kind!r} (known: {known})")
        allowed = {"type", *_PARAMS[kind]}
        _object(entry, where, allowed)
        args = {k: _number(entry[k], f"{where}.{k}") for k in _PARAMS[kind] if k in entry}
        if kind == "depolarizing":
            return ch.depolarizing(args["p"], int(args.get("num_qubits", 1)))
        if kind == "amplitude_damping":
            return ch.amplitude_damping(args["gamma"])
        if kind == "phase_damping":
            return ch.phase_damping(args["lambda"])
        return ch.thermal_relaxation(
            args["t1"], args["t2"], args["time"], args.get("excited_population", 0.0)
        )
    except KeyError as exc:
        raise NoiseError(f"noise model: {where}: missing {exc.args[0]!r}") from None
    except NoiseError as exc:
        if str(exc).startswith("noise model:"):
            raise
        raise NoiseError(f"noise model: {where}: {exc}") from None


def _object(data: object, where: str, allowed: set[str] | None) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise NoiseError(f"noise model: {where} must be an object")
    if allowed is not None and set(data) - allowed:
        raise NoiseError(f"noise model: {where}: unknown key(s) {sorted(set(data) - allowed)}")
    return data


def _list(data: object, where: str) -> list[object]:
    if not isinstance(data, list):
        raise NoiseError(f"noise model: {where} must be a list")
    return data


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value == "inf":
            return math.inf
        raise NoiseError(f"noise model: {where} must be a number, got {value!r}")
    return float(value)


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NoiseError(f"noise model: {where} must hold integers, got {value!r}")
    return value


def _matrix(data: object, where: str) -> list[list[float]]:
    rows = _list(data, f"{where}.matrix")
    return [[_number(v, f"{where}.matrix") for v in _list(r, f"{where}.matrix")] for r in rows]


def _complex_matrix(data: object, where: str) -> np.ndarray:
    rows = _list(data, where)
    out = []
    for row in rows:
        cells = []
        for cell in _list(row, where):
            pair = _list(cell, where)
            if len(pair) != 2:
                raise NoiseError(f"noise model: {where}: each entry is a [re, im] pair")
            cells.append(complex(_number(pair[0], where), _number(pair[1], where)))
        out.append(cells)
    try:
        return np.array(out, dtype=np.complex128)
    except ValueError:
        raise NoiseError(f"noise model: {where}: rows of different lengths") from None
