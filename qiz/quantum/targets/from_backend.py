"""A Qiskit ``BackendV2``'s calibration as a ``Target``: what ``bench/gen_targets.py`` writes
for the shipped targets, and what the tests read from Qiskit's ``GenericBackendV2``.

It reads exactly what Aer's ``NoiseModel.from_backend`` reads from ``backend.target`` (each
instruction's error and duration, each qubit's T1 and T2), so the model ``targets.noise``
rebuilds from it is Aer's. Readout errors come from the backend's ``properties()`` when it has
them (``prob_meas1_prep0``/``prob_meas0_prep1``, as the model a qiskit-ibm-runtime fake backend
simulates with reads them), else from the target's measurement error (Aer's ``from_backend``).
Qiskit is never imported here: the caller hands over the backend.
"""

from __future__ import annotations

from typing import Any

from qiz.quantum.targets.device import DIRECTIVES, RUNNABLE, GateCalibration, Target
from qiz.quantum.targets.errors import TargetError

SKIPPED = frozenset({"measure", "delay", "if_else", "for_loop", "while_loop", "switch_case"})


def from_backend(
    backend: Any, name: str | None = None, source: dict[str, str] | None = None
) -> Target:
    """The calibration in ``backend.target`` as a Target named ``name`` (the backend's name)."""
    target = backend.target
    n = int(target.num_qubits)
    basis = [op for op in target.operation_names if op not in SKIPPED and op not in DIRECTIVES]
    unknown = sorted(set(basis) - RUNNABLE)
    if unknown:
        raise TargetError(f"{backend.name}: basis gate(s) the engine cannot run: {unknown}")
    order = sorted(basis, key=lambda g: (g not in {"ecr", "cx", "cz"}, g))
    gates: dict[str, tuple[GateCalibration, ...]] = {}
    for op in [*order, *sorted(DIRECTIVES & set(target.operation_names))]:
        rows = []
        for qargs, props in sorted((target[op] or {}).items(), key=lambda kv: kv[0] or ()):
            if qargs is None or props is None:
                continue
            error = None if op in DIRECTIVES else _float(props.error)
            rows.append(
                GateCalibration(tuple(int(q) for q in qargs), error, _float(props.duration))
            )
        gates[op] = tuple(rows)
    qprops = target.qubit_properties or [None] * n
    t1 = tuple(_float(getattr(p, "t1", None)) for p in qprops)
    t2 = tuple(_float(getattr(p, "t2", None)) for p in qprops)
    readout = _readout_from_properties(backend, n) or tuple(_readout(target, q) for q in range(n))
    return Target(
        name=name or str(backend.name),
        num_qubits=n,
        basis_gates=tuple(order),
        t1=t1,
        t2=t2,
        readout=readout,
        gates=gates,
        source=dict(source or {"backend": str(backend.name)}),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _readout_from_properties(backend: Any, n: int) -> tuple[tuple[float, float] | None, ...]:
    """(P(1|0), P(0|1)) per qubit from a backend's ``properties()`` (qiskit-ibm-runtime's
    backends and fake backends have them: the fake backends simulate with these, which may be
    asymmetric, where the ``target`` keeps only their mean); () if it has none."""
    get = getattr(backend, "properties", None)
    props = get() if callable(get) else None
    if props is None or len(getattr(props, "qubits", ())) != n:
        return ()
    out: list[tuple[float, float] | None] = []
    for items in props.qubits:
        named = {getattr(item, "name", None): getattr(item, "value", None) for item in items}
        p10, p01, both = (
            named.get(k) for k in ("prob_meas1_prep0", "prob_meas0_prep1", "readout_error")
        )
        if p10 is not None and p01 is not None:
            out.append((float(p10), float(p01)))
        else:
            out.append(None if both is None else (float(both), float(both)))
    return tuple(out)


def _readout(target: Any, qubit: int) -> tuple[float, float] | None:
    """(P(1|0), P(0|1)) as Aer's ``basic_device_readout_errors`` reads them."""
    meas = target.get("measure", None) if hasattr(target, "get") else None
    prop = None if meas is None else meas.get((qubit,), None)
    if prop is None:
        return None
    if hasattr(prop, "prob_meas1_prep0") and hasattr(prop, "prob_meas0_prep1"):
        return (float(prop.prob_meas1_prep0), float(prop.prob_meas0_prep1))
    if prop.error is None:
        return None
    return (float(prop.error), float(prop.error))


def differences_from_aer(target: Target, aer_model: Any, tolerance: float = 1e-9) -> list[str]:
    """Where the model ``targets.noise`` rebuilds from ``target`` differs from an Aer noise
    model (e.g. ``NoiseModel.from_backend(backend)``, or the one a fake backend simulates with):
    the noisy instructions, each channel's superoperator and each readout error, within
    ``tolerance``. Errors on instructions that are not among the target's basis gates (a Heron's
    fractional ``rx``/``rzz``) are not compared: a circuit transpiled to the target has none.
    Empty when they agree."""
    import numpy as np

    from qiz.quantum.noise.aer_import import from_aer
    from qiz.quantum.targets.noise import gate_channels

    theirs = from_aer(aer_model)
    known = set(target.basis_gates) | DIRECTIVES  # e.g. a Heron's fractional rx/rzz: not ours
    theirs.local = {k: v for k, v in theirs.local.items() if k[0] in known}
    problems = []
    if theirs.all_qubit:
        problems.append(f"Aer made all-qubit errors for {sorted(theirs.all_qubit)}")
    ours = {
        (name, c.qubits)
        for name, cals in target.gates.items()
        for c in cals
        if gate_channels(target, name, c.qubits)
    }
    if ours != set(theirs.local):
        problems.append(f"different noisy instructions: {sorted(ours ^ set(theirs.local))}")
    for (name, qubits), channel in theirs.local.items():
        mine = gate_channels(target, name, qubits)
        if not mine:
            continue
        composed = mine[0] if len(mine) == 1 else mine[0].compose(mine[1])
        diff = float(np.max(np.abs(composed.superoperator() - channel.superoperator())))
        if diff > tolerance:
            problems.append(f"{name} on {qubits} differs from Aer's by {diff:.3g}")
    for q in range(target.num_qubits):
        r, got = target.readout[q], theirs.readout_for(q)
        want = (0.0, 0.0) if r is None else r
        have = (0.0, 0.0) if got is None else (got.matrix[0][1], got.matrix[1][0])
        if abs(have[0] - want[0]) + abs(have[1] - want[1]) > tolerance:
            problems.append(f"readout of qubit {q}: Aer {have}, ours {want}")
    return problems
