"""The ``circuits`` kind: many OpenQASM 3 programs sampled as one job.

Why: a cut circuit's sub-experiments, or a Qiskit PUB's scattered parameter points, are dozens
to hundreds of small sampler runs. As one sampler job each they cost one signed spec, one
checker round trip, one placement and one attestation apiece; as one ``circuits`` job they
cost one of each, and its shards still spread over the workers like a sweep's.

Params: ``{"circuits": [ENTRY, ...], "shard": circuits per task}``, where each ENTRY is a
sampler job's params plus an optional seed: ``{"qasm": text, "shots": n (1024), "inputs":
{name: angle}, "seed": int}``, and a device target's fields (``target``, ``transpile``,
``transpile_seed``: :mod:`qiz.compute.devices`). Each circuit runs through the sampler kind's
own path (:func:`qiz.compute.execute.run` with ``"sampler"``) with the entry's seed, else the job's
seed: an unseeded job (``seed`` null) samples every circuit independently, and may not give
entry seeds (its replicas are compared statistically). A task's result is the list of its
circuits' sampler results ``[{"counts", "shots"}, ...]`` in order; the job's results, task by
task, are the circuits in the order given.

Each circuit is checked in full as a sampler job is (``params.circuits[3].qasm: ...``), against
the node's qubit and instruction limits, and the job as a whole against the bounds below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from qiz.compute import execute
from qiz.compute.errors import SpecError

KIND = "circuits"
FIELDS = {"circuits": True, "shard": False}
ENTRY_FIELDS = {
    "qasm",
    "shots",
    "inputs",
    "seed",
    "target",
    "transpile",
    "transpile_seed",
    "adapter",
}
MAX_CIRCUITS = 256  # circuits in one job (the checker's reply carries one shape per circuit)
MAX_CIRCUITS_TEXT = 192 * 1024  # OpenQASM text of all of a job's circuits together
MAX_CIRCUITS_SHOTS = 1_000_000  # shots of all of a job's circuits together (bounds its results)
DEFAULT_SHARD = 16  # circuits per task
SEED_MAX = 2**63 - 1


def check(params: Any, seeded: bool, max_shots: int) -> tuple[list[dict], int]:
    """The fields of a circuits job checked for form and the job-wide bounds (not the circuits
    themselves: each entry is measured as a sampler run by the caller); its entries as sampler
    params with their seeds, and the shard size."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise SpecError("params: must be a map of circuits fields")
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise SpecError(f"params.{unknown[0]}: is not a circuits field (known: circuits, shard)")
    entries = params.get("circuits")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_CIRCUITS:
        raise SpecError(f"params.circuits: must be a list of 1 to {MAX_CIRCUITS} circuits")
    shard = params.get("shard", DEFAULT_SHARD)
    if not isinstance(shard, int) or isinstance(shard, bool) or not 1 <= shard <= MAX_CIRCUITS:
        raise SpecError(f"params.shard: must be a whole number from 1 to {MAX_CIRCUITS}")
    text = shots = 0
    for i, entry in enumerate(entries):
        path = f"params.circuits[{i}]"
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            raise SpecError(f"{path}: must be a map with qasm (and shots, inputs, seed)")
        extra = sorted(set(entry) - ENTRY_FIELDS)
        if extra:
            raise SpecError(
                f"{path}.{extra[0]}: is not a circuit field "
                f"(known: {', '.join(sorted(ENTRY_FIELDS))})"
            )
        qasm = entry.get("qasm")
        if isinstance(qasm, str):  # its form is the sampler check's; here only the total
            text += len(qasm.encode("utf-8"))
            if text > MAX_CIRCUITS_TEXT:
                raise SpecError(
                    f"params.circuits: the programs together are over {MAX_CIRCUITS_TEXT} bytes"
                )
        count = entry.get("shots", 1024)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= max_shots:
            raise SpecError(f"{path}.shots: must be a whole number from 1 to {max_shots}")
        shots += count
        if shots > MAX_CIRCUITS_SHOTS:
            raise SpecError(
                f"params.circuits: more than {MAX_CIRCUITS_SHOTS} shots in all "
                "(split the circuits over several jobs)"
            )
        if "seed" in entry:
            seed = entry["seed"]
            if not seeded:
                raise SpecError(
                    f"{path}.seed: a job with seed null samples every circuit independently; "
                    "give the job a seed to seed circuits"
                )
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
                raise SpecError(f"{path}.seed: must be a whole number from 0 to 2^63 - 1")
    return entries, shard


def sampler_params(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as the sampler kind's params (its seed left out)."""
    return {k: v for k, v in entry.items() if k != "seed"}


def total_shape(shapes: Sequence[execute.Shape]) -> execute.Shape:
    """One task's size from its circuits': the widest circuit, the gates and shots of all, and
    the state preparations of all (one per plain circuit, a noisy target run's trajectories:
    :mod:`qiz.compute.devices`); ``Shape.work`` then over-counts narrow ones: safe."""
    return execute.Shape(
        max(s.num_qubits for s in shapes),
        max(s.instructions for s in shapes),
        sum(s.shots for s in shapes),
        sum(s.evaluations for s in shapes),
    )


def tasks(entries: list[dict], shard: int) -> list[tuple[int, list[dict]]]:
    """The tasks' first circuit index and entries, ``shard`` circuits each."""
    return [(start, entries[start : start + shard]) for start in range(0, len(entries), shard)]


def task_count(params: Mapping[str, Any]) -> int:
    """How many tasks a checked circuits job splits into."""
    return math.ceil(len(params["circuits"]) / params.get("shard", DEFAULT_SHARD))


def run(
    params: Mapping[str, Any], seed: int | None, progress: execute.Progress | None = None
) -> list[dict]:
    """Sample each circuit of a task through the sampler kind: its results in order."""
    entries = params["circuits"]
    out = []
    for i, entry in enumerate(entries):
        out.append(execute.run("sampler", sampler_params(entry), entry.get("seed", seed)))
        if progress is not None:
            progress(min(execute.RUNNING_CAP, (i + 1) / len(entries)))
    return out


def summarise(results: list) -> str:
    """One line about a circuits job's results (one list per task), for people."""
    runs = [r for task in results if isinstance(task, list) for r in task]
    shots = sum(r.get("shots", 0) for r in runs if isinstance(r, dict))
    return f"{len(runs)} circuits, {shots} shots in all"
