"""A circuit and a noise model turned into the steps both noisy simulators run.

Done once per run, not per trajectory: each gate's matrices are built, each instruction's
channel is looked up in the model, and measurements are sorted into the *terminal* ones (nothing
acts on the qubit, nor writes the bit, afterwards: sampled from the final state, as the noiseless
sampler does) and mid-circuit ones (a split of the trajectories). Reset is the channel with Kraus
operators |0><0| and |0><1|. Each measured bit remembers the readout error of the qubit that
last wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import CircuitError
from qiz.quantum.core.gates import gate_spec
from qiz.quantum.core.statevector import numeric_params
from qiz.quantum.noise.channels import Channel, ReadoutError
from qiz.quantum.noise.model import NoiseModel

RESET = Channel(
    1,
    (
        np.array([[1, 0], [0, 0]], dtype=np.complex128),
        np.array([[0, 1], [0, 0]], dtype=np.complex128),
    ),
    {"type": "reset"},
)


@dataclass(frozen=True, eq=False)
class Step:
    """``gate`` (matrices), ``channel`` (a Channel), or ``measure`` (mid-circuit, into clbit)."""

    kind: str
    qubits: tuple[int, ...]
    full: np.ndarray | None = None  # gate: its whole matrix on ``qubits`` (controls included)
    target: np.ndarray | None = None  # gate: the matrix on its targets, for the numba kernels
    controls: int = 0
    channel: Channel | None = None
    clbit: int = -1


@dataclass
class Plan:
    num_qubits: int
    num_clbits: int
    steps: list[Step] = field(default_factory=list)
    terminal: list[tuple[int, int]] = field(default_factory=list)  # (qubit, clbit), sampled last
    readout: dict[int, ReadoutError] = field(default_factory=dict)  # clbit -> its error

    @property
    def has_mid_circuit_measurement(self) -> bool:
        return any(s.kind == "measure" for s in self.steps)


def make_plan(circuit: Circuit, model: NoiseModel) -> Plan:
    """The steps of ``circuit`` (bound, numeric angles) under ``model``."""
    last_touch: dict[int, int] = {}
    last_write: dict[int, int] = {}
    for i, inst in enumerate(circuit):
        if inst.name != "barrier":
            for q in inst.qubits:
                last_touch[q] = i
        for c in inst.clbits:
            last_write[c] = i
    plan = Plan(circuit.num_qubits, circuit.num_clbits)
    for i, inst in enumerate(circuit):
        if inst.name == "barrier":
            continue
        if inst.name == "measure":
            q, c = inst.qubits[0], inst.clbits[0]
            _noise(plan, model, "measure", inst.qubits)  # Aer: a measure error acts before
            if last_touch[q] == i and last_write[c] == i:
                plan.terminal.append((q, c))
            else:
                plan.steps.append(Step("measure", (q,), clbit=c))
            error = model.readout_for(q)
            if error is None:
                plan.readout.pop(c, None)
            else:
                plan.readout[c] = error
            continue
        if inst.name == "reset":
            plan.steps.append(Step("channel", inst.qubits, channel=RESET))
        else:
            spec = gate_spec(inst.name)
            params = numeric_params(inst)
            if len(inst.qubits) > 3:
                raise CircuitError(f"{inst.name}: no noisy simulation of a gate on > 3 qubits")
            plan.steps.append(
                Step(
                    "gate",
                    inst.qubits,
                    full=spec.full_matrix(params),
                    target=np.ascontiguousarray(spec.matrix(params), dtype=np.complex128),
                    controls=spec.controls,
                )
            )
        _noise(plan, model, inst.name, inst.qubits)
    return plan


def _noise(plan: Plan, model: NoiseModel, name: str, qubits: tuple[int, ...]) -> None:
    channel = model.channel_for(name, qubits)
    if channel is not None:
        plan.steps.append(Step("channel", qubits, channel=channel))
