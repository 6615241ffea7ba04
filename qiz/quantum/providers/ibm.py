"""IBM Quantum through ``qiskit-ibm-runtime``: a circuit sampled by its ``SamplerV2``, on a fake
backend (offline: the runtime simulates locally with Aer and the snapshot's noise model) or on
the user's own backend (online: a ``QiskitRuntimeService(...).backend(name)`` made with their
credentials; we never see them).

The circuit is transpiled for the backend by Qiskit's preset pass manager (seeded), or taken as
it is when it is already a device circuit (a ``DeviceCircuit`` from ``qiz.quantum.targets``, on
physical qubits in the device's gates): that is how a run through our target and a run through
the runtime are made to sample the very same transpiled circuit (``tests/test_providers_ibm.py``).
``target_of`` reads a backend's calibration as our ``Target``, so the device the user is about to
spend time on can be simulated with our noise first.

Needs ``qiskit-ibm-runtime`` (``pip install 'qiz[ibm]'``); without it importing this module
raises a one-line :class:`ProviderMissing`.
"""

from __future__ import annotations

from typing import Any

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.providers.common import measured
from qiz.quantum.providers.errors import ProviderError, require
from qiz.quantum.targets.device import Target
from qiz.quantum.targets.from_backend import from_backend
from qiz.quantum.targets.lowering import DeviceCircuit
from qiz.quantum.targets.transpile import OPTIMIZATION_LEVEL, to_qiskit

runtime = require("qiskit_ibm_runtime", "ibm", "ibm")
fake_provider = require("qiskit_ibm_runtime.fake_provider", "ibm", "ibm")

__all__ = ["FAKES", "counts", "fake_backend", "isa_circuit", "run", "submit", "target_of"]

# our shipped targets' names -> the fake backend each was generated from (bench/gen_targets.py)
FAKES = {
    "fake_manila": "FakeManilaV2",
    "fake_sherbrooke": "FakeSherbrooke",
    "fake_kyiv": "FakeKyiv",
    "fake_torino": "FakeTorino",
}


def fake_backend(name: str) -> Any:
    """A qiskit-ibm-runtime fake backend by our target name (``fake_manila``) or its class name
    (``FakeBrisbane``)."""
    cls = getattr(fake_provider, FAKES.get(name, name), None)
    if cls is None or not isinstance(cls, type):
        raise ProviderError(
            f"no fake backend {name!r} in qiskit-ibm-runtime {runtime.__version__} "
            f"(ours: {', '.join(FAKES)}; or a class of qiskit_ibm_runtime.fake_provider)"
        )
    return cls()


def target_of(backend: Any) -> Target:
    """The backend's calibration (fake or real) as our Target, named after it."""
    source = {
        "backend": str(backend.name),
        "package": f"qiskit-ibm-runtime {runtime.__version__}",
        "generator": "qiz.quantum.providers.ibm.target_of",
    }
    date = getattr(getattr(backend, "properties", lambda: None)(), "last_update_date", None)
    if date is not None:
        source["snapshot_date"] = date.isoformat() if hasattr(date, "isoformat") else str(date)
    return from_backend(backend, str(backend.name), source)


def isa_circuit(circuit: Circuit | DeviceCircuit, backend: Any, seed: int | None = None) -> Any:
    """The Qiskit circuit the backend accepts: a DeviceCircuit as it is, any other circuit
    (measured, bound) through Qiskit's preset pass manager for the backend, seeded."""
    if isinstance(circuit, DeviceCircuit):
        if circuit.num_qubits != backend.num_qubits:
            raise ProviderError(
                f"the device circuit has {circuit.num_qubits} qubits; {backend.name} has "
                f"{backend.num_qubits}"
            )
        return to_qiskit(circuit)  # type: ignore[arg-type]
    if circuit.parameters:
        raise ProviderError(f"unbound parameters: {', '.join(circuit.parameters)}")
    from qiskit.transpiler import generate_preset_pass_manager

    pm = generate_preset_pass_manager(
        optimization_level=OPTIMIZATION_LEVEL, backend=backend, seed_transpiler=seed
    )
    return pm.run(to_qiskit(measured(circuit)))


def submit(
    circuit: Circuit | DeviceCircuit,
    backend: Any,
    shots: int = 1024,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> Any:
    """The runtime job sampling ``circuit`` on ``backend`` (``SamplerV2(mode=backend)``): local
    for a fake backend, a queued IBM Quantum job for a real one. ``seed`` seeds the transpiler,
    and on a fake backend the simulator too (hardware is not seeded). ``options`` go to
    ``SamplerV2`` as they are."""
    if shots < 1:
        raise ProviderError(f"shots must be at least 1, not {shots}")
    opts = dict(options or {})
    if seed is not None and isinstance(backend, fake_provider.fake_backend.FakeBackendV2):
        opts.setdefault("simulator", {}).setdefault("seed_simulator", seed)
    sampler = runtime.SamplerV2(mode=backend, options=opts or None)
    return sampler.run([isa_circuit(circuit, backend, seed)], shots=shots)


def counts(result: Any) -> dict[str, int]:
    """A SamplerV2 job result's counts for its first circuit, keyed as ours (Qiskit's keys are
    already bit 0 rightmost; our circuits have one classical register)."""
    data = result[0].data
    names = list(data.keys()) if hasattr(data, "keys") else []
    if len(names) != 1:
        raise ProviderError(f"expected one classical register in the result, got {names}")
    return dict(data[names[0]].get_counts())


def run(
    circuit: Circuit | DeviceCircuit,
    backend: Any,
    shots: int = 1024,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """``submit`` and wait: the counts of ``shots`` samples of ``circuit`` on ``backend``."""
    return counts(submit(circuit, backend, shots, seed, options).result())
