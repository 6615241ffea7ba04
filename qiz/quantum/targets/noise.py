"""A target's noise model on some of its qubits, by the recipe of Aer's ``NoiseModel.from_backend``.

Rebuilt from the calibration rather than stored, and only for the qubits a circuit uses (a
127-qubit device's full model is ~400 composed channels; a GHZ state on 3 qubits needs a dozen).
For each calibrated instruction except ``measure`` (Aer's ``_basic_device_target_gate_errors``):

* with a duration: thermal relaxation on each of its qubits over that duration (T2 cut to 2 T1,
  an unknown T1 or T2 infinite, no excited population: Aer's default temperature 0), the
  gate's qubit i as the channel's qubit i;
* for a gate (not ``reset``) with an error e above the relaxation's infidelity: a depolarizing
  channel with p = d (e - r) / (d F_r - 1), d = 2^n, F_r the relaxation's average gate
  fidelity and r = 1 - F_r (so the composition's average gate infidelity is e), e capped at
  d / (d + 1) and p at 4^n / (4^n - 1);
* the depolarizing channel first, then the relaxation.

Readout: per qubit, ``[[1 - P(1|0), P(1|0)], [P(0|1), 1 - P(0|1)]]``. ``tests/test_targets.py``
checks the result equals Aer's ``from_backend`` (imported) on Qiskit's ``GenericBackendV2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qiz.quantum.noise import channels as ch
from qiz.quantum.noise.channels import Channel, ReadoutError
from qiz.quantum.noise.model import NoiseModel
from qiz.quantum.targets.device import DIRECTIVES, Target
from qiz.quantum.targets.lowering import ECR_NOISE_GATE, ecr_channel_operators


def relaxation(target: Target, qubits: tuple[int, ...], duration: float) -> Channel:
    """Thermal relaxation on each of ``qubits`` over ``duration`` (qubit i of the gate is the
    channel's qubit i, the least significant first)."""
    ops: list[np.ndarray] = [np.ones((1, 1), dtype=np.complex128)]
    for q in qubits:
        t1, t2 = target.t1[q], target.t2[q]
        if t1 is not None:
            t2 = 2 * t1 if t2 is None else min(t2, 2 * t1)
        one = ch.thermal_relaxation(
            math.inf if t1 is None else t1, math.inf if t2 is None else t2, duration
        )
        ops = [np.kron(b, a) for a in ops for b in one.kraus]
    if len(qubits) == 1:
        return one
    return ch.kraus(ops)


def average_gate_fidelity(channel: Channel) -> float:
    """(d F_pro + 1) / (d + 1), F_pro = sum_i |tr K_i|^2 / d^2."""
    d = 1 << channel.num_qubits
    f_pro = sum(abs(np.trace(k)) ** 2 for k in channel.kraus) / (d * d)
    return float((d * f_pro + 1) / (d + 1))


def depolarizing_for(error: float, num_qubits: int, relax: Channel | None) -> Channel | None:
    """The depolarizing channel that, followed by ``relax``, has average gate error ``error``."""
    relax_fid = 1.0 if relax is None else average_gate_fidelity(relax)
    relax_infid = 1.0 - relax_fid
    if not error > relax_infid:
        return None
    dim = 1 << num_qubits
    error = min(error, dim / (dim + 1))
    p = dim * (error - relax_infid) / (dim * relax_fid - 1)
    return ch.depolarizing(min(p, 4**num_qubits / (4**num_qubits - 1)), num_qubits)


def gate_channels(target: Target, name: str, qubits: tuple[int, ...]) -> list[Channel]:
    """The channels (in order) after ``name`` on ``qubits`` of the device; [] if none."""
    cal = target.calibration(name, qubits)
    if cal is None:
        return []
    relax = relaxation(target, qubits, cal.duration) if cal.duration else None
    depol = None
    if name not in DIRECTIVES and cal.error:
        depol = depolarizing_for(cal.error, len(qubits), relax)
    return [c for c in (depol, relax) if c is not None]


def model_for(target: Target, physical: Sequence[int]) -> NoiseModel:
    """The model on engine qubits 0..k-1 that are the device's ``physical[0..k-1]``; an ecr's
    channels are placed after the lowering's ``rzz`` (``lowering.ecr_channel_operators``)."""
    index = {q: i for i, q in enumerate(physical)}
    model = NoiseModel()
    for name, cals in target.gates.items():
        for cal in cals:
            if not all(q in index for q in cal.qubits):
                continue
            local = tuple(index[q] for q in cal.qubits)
            for channel in gate_channels(target, name, cal.qubits):
                if name == "ecr":
                    moved = ch.kraus(ecr_channel_operators(channel.kraus))
                    model.add_error(moved, ECR_NOISE_GATE, local)
                else:
                    model.add_error(channel, name, local)
    for q, i in index.items():
        r = target.readout[q]
        if r is not None:
            model.add_readout_error(ReadoutError(((1 - r[0], r[0]), (r[1], 1 - r[1]))), i)
    return model
