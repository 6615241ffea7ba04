"""The workloads of ``bench/noise.py`` and one adapter per noisy simulator.

A workload is a gate list (name, qubits, angles) built from (workload, n, seed), so every engine
runs the very same circuit, and one noise model built once in Qiskit Aer's terms: Aer runs that
object; ours runs it after ``qiz.quantum.noise.aer_import.from_aer`` and a round trip through
our JSON file format (``dumps``/``loads``), so both engines apply the SAME channels.

- ``qaoa``: a QAOA-like layer on a random 3-regular graph (``bench/quantum_peers.qaoa_edges``):
  H on every qubit, ``rzz(2 gamma)`` on every edge, ``rx(2 beta)`` on every qubit, p = 1.
- ``random``: ``RANDOM_LAYERS`` layers of a random ``u(theta, phi, lambda)`` on every qubit and
  CX on a brickwork (pairs (0,1), (2,3), ... then (1,2), (3,4), ...).
- ``random-noisy``: the same circuit with every error ``NOISY_SCALE`` times as likely: nearly
  every shot is its own trajectory, so sharing states between shots saves little.

Noise (device-like, of the order of today's superconducting qubits): after every 1-qubit gate a
depolarizing error ``P1`` then thermal relaxation (``T1``, ``T2``, ``TIME_1Q``); after every
2-qubit gate a 2-qubit depolarizing error ``P2`` then thermal relaxation of both qubits
(``TIME_2Q``); every measured bit misread with ``READOUT``. Measurement at the end, every qubit.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.quantum_peers import THREADS, qaoa_edges

WORKLOADS = ("qaoa", "random", "random-noisy")
RANDOM_LAYERS = 4
P1 = 5e-4
P2 = 5e-3
T1 = 100e3  # ns
T2 = 80e3  # ns
TIME_1Q = 35.0  # ns
TIME_2Q = 300.0  # ns
READOUT = ((0.98, 0.02), (0.04, 0.96))  # P(recorded | true), rows: true 0, true 1
NOISY_SCALE = 10.0
ONE_QUBIT = ("h", "rx", "u")
TWO_QUBIT = ("rzz", "cx")

ENGINES = ("qiz", "aer", "aer-branching")
DISTRIBUTIONS = {"qiz": "qiz", "aer": "qiskit-aer", "aer-branching": "qiskit-aer"}

Gate = tuple[str, tuple[int, ...], tuple[float, ...]]


def gates(workload: str, n: int, seed: int) -> list[Gate]:
    """The circuit of ``workload`` on ``n`` qubits, without measurements."""
    rng = np.random.default_rng([seed, n, sum(map(ord, workload))])
    out: list[Gate] = []
    if workload == "qaoa":
        gamma, beta = rng.uniform(0.2, math.pi - 0.2, 2)
        out += [("h", (q,), ()) for q in range(n)]
        out += [("rzz", (a, b), (2 * gamma,)) for a, b in qaoa_edges(n, seed)]
        out += [("rx", (q,), (2 * beta,)) for q in range(n)]
        return out
    if workload in ("random", "random-noisy"):
        for layer in range(RANDOM_LAYERS):
            for q in range(n):
                theta, phi, lam = rng.uniform(0, 2 * math.pi, 3)
                out.append(("u", (q,), (theta, phi, lam)))
            out += [("cx", (a, a + 1), ()) for a in range(layer % 2, n - 1, 2)]
        return out
    raise ValueError(f"unknown workload {workload!r}")


def pairs(workload: str, n: int, seed: int) -> list[tuple[int, int]]:
    """The qubit pairs whose <Z_i Z_j> the accuracy check compares: the 2-qubit gates' pairs."""
    return sorted({qs for name, qs, _ in gates(workload, n, seed) if len(qs) == 2})


def noise_scale(workload: str) -> float:
    return NOISY_SCALE if workload == "random-noisy" else 1.0


def aer_noise_model(scale: float = 1.0) -> Any:
    """The one noise model, in Qiskit Aer's terms (every error ``scale`` times as likely)."""
    from qiskit_aer.noise import (
        NoiseModel,
        ReadoutError,
        depolarizing_error,
        thermal_relaxation_error,
    )

    t1, t2 = T1 / scale, T2 / scale
    relax_1q = thermal_relaxation_error(t1, t2, TIME_1Q)
    relax_2q = thermal_relaxation_error(t1, t2, TIME_2Q)
    model = NoiseModel()
    model.add_all_qubit_quantum_error(
        depolarizing_error(P1 * scale, 1).compose(relax_1q), list(ONE_QUBIT)
    )
    model.add_all_qubit_quantum_error(
        depolarizing_error(P2 * scale, 2).compose(relax_2q.expand(relax_2q)), list(TWO_QUBIT)
    )
    flip0, flip1 = READOUT[0][1] * scale, READOUT[1][0] * scale
    model.add_all_qubit_readout_error(ReadoutError([[1 - flip0, flip0], [flip1, 1 - flip1]]))
    return model


def version_of(engine: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[engine])
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- adapters


@dataclass
class Prepared:
    """One engine's circuit and model, built once: ``run(shots, seed)`` is what is timed; it
    returns the counts (bitstrings, bit 0 rightmost) and the number of distinct states (None
    where the engine does not say)."""

    run: Callable[[int, int], tuple[dict[str, int], int | None]]
    path: str


def setup_qiz(workload: str, n: int, seed: int) -> Prepared:
    from qiz.quantum.core.circuit import Circuit
    from qiz.quantum.noise.aer_import import from_aer
    from qiz.quantum.noise.model import NoiseModel
    from qiz.quantum.noise.sampler import sample

    model = NoiseModel.loads(from_aer(aer_noise_model(noise_scale(workload))).dumps())
    circuit = Circuit(n, n)
    for name, qubits, params in gates(workload, n, seed):
        circuit.append(name, qubits, params)
    circuit.measure_all()

    def run(shots: int, call_seed: int) -> tuple[dict[str, int], int | None]:
        result = sample(circuit, model, shots, seed=call_seed)
        return dict(result.counts), int(result.metadata["states"])  # type: ignore[call-overload]

    return Prepared(
        run,
        "trajectories on complex128 state vectors; shots share a state until a channel's "
        "draw splits them",
    )


def _setup_aer(workload: str, n: int, seed: int, branching: bool) -> Prepared:
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    options: dict[str, Any] = {"shot_branching_enable": True} if branching else {}
    sim = AerSimulator(
        method="statevector",
        precision="double",
        noise_model=aer_noise_model(noise_scale(workload)),
        max_parallel_threads=THREADS,
        max_parallel_experiments=1,
        **options,
    )
    circuit = QuantumCircuit(n, n)
    for name, qubits, params in gates(workload, n, seed):
        getattr(circuit, name)(*params, *qubits)
    circuit.measure(range(n), range(n))

    def run(shots: int, call_seed: int) -> tuple[dict[str, int], int | None]:
        result = sim.run(circuit, shots=shots, seed_simulator=call_seed).result()
        if not result.success:
            raise RuntimeError(f"Aer failed: {result.status}")
        return dict(result.get_counts()), None

    if branching:
        path = "statevector, shot branching: shots share a state until noise splits them"
    else:
        path = "statevector, one trajectory per shot (Aer's default)"
    return Prepared(run, path)


SETUPS: dict[str, Callable[[str, int, int], Prepared]] = {
    "qiz": setup_qiz,
    "aer": lambda w, n, s: _setup_aer(w, n, s, branching=False),
    "aer-branching": lambda w, n, s: _setup_aer(w, n, s, branching=True),
}

# the modules each engine's worker imports at start-up, before anything is timed
IMPORTS = {
    "qiz": ("qiz.quantum.noise.sampler", "qiz.quantum.noise.aer_import", "qiskit_aer.noise"),
    "aer": ("qiskit", "qiskit_aer", "networkx"),
    "aer-branching": ("qiskit", "qiskit_aer", "networkx"),
}
