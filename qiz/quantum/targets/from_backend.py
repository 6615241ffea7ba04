"""A Qiskit ``BackendV2``'s calibration as a ``Target``: what ``bench/gen_targets.py`` writes
for the shipped targets, and what the tests read from Qiskit's ``GenericBackendV2``.

It reads exactly what Aer's ``NoiseModel.from_backend`` reads from ``backend.target`` (each
instruction's error and duration, each qubit's T1 and T2, the measurement's error or its
``prob_meas1_prep0``/``prob_meas0_prep1``), so the model ``targets.noise`` rebuilds from it is
Aer's. Qiskit is never imported here: the caller hands over the backend.
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
    readout = tuple(_readout(target, q) for q in range(n))
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
