"""The noisy sampler: the noiseless ``Sampler``'s call with a ``noise=`` model added.

``sample(circuit, noise, shots, seed)`` returns the same ``SamplerResult`` (counts keyed by
bitstrings, bit 0 rightmost) as ``qiz.quantum.core.primitives.Sampler.run``. A missing or ideal
model *is* that sampler, called as is, so the noiseless path cannot change. With noise, the
circuit (a ``Circuit``, e.g. from ``qiz.quantum.qasm.loads``: its gate definitions are already
inlined into native gates, and the model's gate names refer to those) runs by ``trajectories``
(any size the state vector allows, mid-circuit measurement and reset included) or exactly by
``density`` matrix (small registers, measurements at the end), then is sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.dynamic import DynamicCircuit
from qiz.quantum.core.errors import CircuitError, QuantumError
from qiz.quantum.core.primitives import MAX_SHOTS, Sampler, SamplerResult
from qiz.quantum.noise import density
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.model import NoiseModel
from qiz.quantum.noise.plan import Plan, make_plan
from qiz.quantum.noise.trajectories import run_trajectories

METHODS = ("trajectories", "density")


def prepare(
    circuit: Circuit | DynamicCircuit,
    noise: NoiseModel,
    parameters: Mapping[str, float] | Sequence[float] | None = None,
) -> Plan:
    """The plan a noisy run follows: parameters bound, every qubit measured if none is (as the
    sampler does), the model's channels placed."""
    if not isinstance(circuit, Circuit):
        raise NoiseError(
            "noisy simulation of a program with classical control on measurements is not "
            "supported yet; it needs a circuit without if/while on measured bits"
        )
    if parameters is not None:
        circuit = circuit.bind(parameters)
    elif circuit.parameters:
        raise CircuitError(f"unbound parameters: {', '.join(circuit.parameters)}")
    if not circuit.has_measurements():
        circuit = Circuit(
            circuit.num_qubits, circuit.num_clbits, list(circuit.instructions), circuit.name
        ).measure_all()
    return make_plan(circuit, noise)


def sample(
    circuit: Circuit | DynamicCircuit,
    noise: NoiseModel | None = None,
    shots: int = 1024,
    seed: int | None = None,
    *,
    parameters: Mapping[str, float] | Sequence[float] | None = None,
    method: str = "trajectories",
) -> SamplerResult:
    """``shots`` noisy outcomes of ``circuit`` under ``noise``, reproducible for a ``seed``."""
    if method not in METHODS:
        raise NoiseError(f"unknown noisy method {method!r}; choose one of {', '.join(METHODS)}")
    if noise is None or noise.is_ideal:
        return Sampler().run(circuit, shots=shots, seed=seed, parameters=parameters)
    if not 0 < shots <= MAX_SHOTS:
        raise QuantumError(f"shots must be between 1 and {MAX_SHOTS}")
    plan = prepare(circuit, noise, parameters)
    rng = np.random.default_rng(seed)
    if method == "density":
        by_bits = density.sample_distribution(density.distribution(plan), shots, rng)
        meta: dict[str, object] = {"exact": True}
    else:
        by_bits, meta = run_trajectories(plan, shots, rng)
    counts = {bitstring(bits): count for bits, count in by_bits.items()}
    return SamplerResult(counts, shots, seed, plan.num_clbits, f"noisy {method}", metadata=meta)


def probabilities(
    circuit: Circuit,
    noise: NoiseModel,
    parameters: Mapping[str, float] | Sequence[float] | None = None,
) -> dict[str, float]:
    """The exact outcome distribution under ``noise`` (density matrix; small registers)."""
    plan = prepare(circuit, noise, parameters)
    return {bitstring(bits): p for bits, p in density.distribution(plan).items()}


def bitstring(bits: Sequence[int]) -> str:
    """Bits (bit 0 first) as the sampler's key: bit 0 rightmost."""
    return "".join(str(b) for b in reversed(bits))
