"""A Qiskit Aer ``NoiseModel`` (or one built from a backend's properties) as our ``NoiseModel``.

Only this module touches qiskit, and only when called: ``qiz.quantum`` works without it. Each
Aer ``QuantumError`` becomes a Kraus channel through ``qiskit.quantum_info.Kraus`` (the same
qubit order as ours: the error's qubit 0 is the least significant bit), with its instruction
names mapped to ours (``u3`` -> ``u``, ``u1`` -> ``p``); each single-qubit ``ReadoutError``
becomes ours. Aer keeps its errors in attributes without a public reader (its ``to_dict`` writes
them as instruction lists), so they are read there, and a model of an Aer version laid out
differently is refused by name rather than misread. Multi-qubit (correlated) readout errors and
custom noise passes have no counterpart here and are refused too, except the pass
``from_backend`` adds for ``delay`` instructions, which our circuits never contain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qiz.quantum.noise.channels import Channel, ReadoutError, kraus
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.model import NoiseModel, canonical_name

_FIELDS = (
    "_default_quantum_errors",
    "_local_quantum_errors",
    "_default_readout_error",
    "_local_readout_errors",
)


def from_aer(aer_model: Any) -> NoiseModel:
    """Our model of ``aer_model`` (a ``qiskit_aer.noise.NoiseModel``)."""
    missing = [f for f in _FIELDS if not hasattr(aer_model, f)]
    if missing:
        raise NoiseError(
            f"not a Qiskit Aer NoiseModel this version can read (no {', '.join(missing)})"
        )
    for noise_pass in getattr(aer_model, "_custom_noise_passes", None) or ():
        if not _only_delays(noise_pass):
            raise NoiseError(
                f"the Aer noise model has a custom noise pass ({type(noise_pass).__name__}) "
                "that acts on gates; it cannot be imported"
            )
    model = NoiseModel()
    for name, error in aer_model._default_quantum_errors.items():
        model.add_all_qubit_error(_channel(error, name), canonical_name(name))
    for name, by_qubits in aer_model._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            model.add_error(_channel(error, name), canonical_name(name), tuple(qubits))
    if aer_model._default_readout_error is not None:
        model.add_readout_error(_readout(aer_model._default_readout_error, "all qubits"))
    for qubits, error in aer_model._local_readout_errors.items():
        if len(qubits) != 1:
            raise NoiseError(
                f"the Aer noise model has a correlated readout error on qubits {list(qubits)}; "
                "only single-qubit readout errors can be imported"
            )
        model.add_readout_error(_readout(error, f"qubit {qubits[0]}"), qubits[0])
    return model


def _only_delays(noise_pass: Any) -> bool:
    """A pass that adds noise only to ``delay`` instructions, which our circuits never contain:
    ``NoiseModel.from_backend`` adds one (thermal relaxation during idle delays)."""
    ops = getattr(noise_pass, "_ops", None)
    return bool(ops) and all(getattr(op, "__name__", "") == "Delay" for op in ops)


def from_backend(backend: Any, **options: Any) -> NoiseModel:
    """Our model of ``qiskit_aer.noise.NoiseModel.from_backend(backend, **options)``: gate
    errors (depolarizing + thermal relaxation) and readout errors from a backend's calibration,
    e.g. a fake backend of ``qiskit-ibm-runtime``."""
    try:
        from qiskit_aer.noise import NoiseModel as AerNoiseModel
    except ImportError:
        raise NoiseError(
            "importing a backend's noise needs qiskit-aer (pip install 'qiz[test]')"
        ) from None
    return from_aer(AerNoiseModel.from_backend(backend, **options))


def _channel(error: Any, name: str) -> Channel:
    """A mixture of unitary circuits (depolarizing, Pauli errors and their compositions) stays a
    mixture: its unitaries, equal ones merged, with sqrt(p) weights, so the trajectories need no
    probabilities from the state and skip the identity. Anything else (reset, Kraus
    instructions) goes through ``qiskit.quantum_info.Kraus``."""
    try:
        from qiskit.exceptions import QiskitError
        from qiskit.quantum_info import Kraus, Operator
    except ImportError:
        raise NoiseError("importing an Aer noise model needs qiskit") from None
    try:
        unitaries = [np.asarray(Operator(c).data, dtype=np.complex128) for c in error.circuits]
        ops = _merged(unitaries, [float(p) for p in error.probabilities])
    except QiskitError:  # a circuit with a non-unitary instruction
        try:
            ops = [np.asarray(k, dtype=np.complex128) for k in Kraus(error).data]
        except QiskitError as exc:
            raise NoiseError(f"the Aer error on {name!r} has no Kraus form: {exc}") from None
    return kraus(ops, name="kraus")


def _merged(unitaries: list[np.ndarray], probs: list[float]) -> list[np.ndarray]:
    """sqrt(p) U for each distinct U (up to a global phase), probabilities of equal ones added:
    a composed Pauli error's 256 products are 16 Paulis."""
    total: dict[bytes, float] = {}
    first: dict[bytes, np.ndarray] = {}
    for u, p in zip(unitaries, probs, strict=True):
        flat = u.reshape(-1)
        pivot = flat[int(np.argmax(np.abs(flat)))]
        v = u * (abs(pivot) / pivot)  # the phase that makes the largest entry real positive
        key = (np.round(v, 9) + 0.0).tobytes()  # + 0.0 turns -0.0 into 0.0
        total[key] = total.get(key, 0.0) + p
        first.setdefault(key, v)
    return [np.sqrt(max(total[k], 0.0)) * first[k] for k in total]


def _readout(error: Any, where: str) -> ReadoutError:
    probs = np.asarray(error.probabilities, dtype=np.float64)
    if probs.shape != (2, 2):
        raise NoiseError(f"the Aer readout error on {where} is not a single-qubit one")
    return ReadoutError(((probs[0, 0], probs[0, 1]), (probs[1, 0], probs[1, 1])))
