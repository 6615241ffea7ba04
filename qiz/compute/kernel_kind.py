"""The ``kernel`` kind: a fidelity-kernel matrix of a data set, computed in row blocks across
the mesh (issue 22: quantum ML's heavy part on the mesh).

Why a kind of its own: a kernel matrix is |<phi(x)|phi(y)>|^2 for every pair, and the cheap way
to get it computes each sample's state once (:mod:`qiz.ml.fidelity`), never a circuit per
pair; no OpenQASM job can say that. The job carries the feature map's options and the data,
and its tasks are blocks of ``shard`` rows of X against all of Y, spread over the workers,
replicated and attested like any job. The work is deterministic: replicas agree on the digest
(results are rounded to 12 significant digits, like every kind's).

Params: ``{"map": {"name": "zz"|"reuploading", "qubits": n, "reps": r, "entanglement":
"linear"|"ring"|"none", "bandwidth": b}, "x": [[float, ...], ...], "y": [[...], ...] (X when
absent), "shard": rows of X per task (32)}``. A task's result is ``{"rows": [[k, ...], ...]}``,
its block's rows of K in order; the job's tasks, in order, are K's rows.

Bounds (before anything is built): at most ``MAX_KERNEL_SAMPLES`` rows of X and Y together,
``MAX_KERNEL_FEATURES`` features, ``MAX_KERNEL_REPS`` repetitions, qubits within
:data:`qiz.ml.fidelity.MAX_QUBITS` and the node's own limit; every number finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from qiz.compute import execute
from qiz.compute.errors import SpecError

KIND = "kernel"
FIELDS = {"map": True, "x": True, "y": False, "shard": False}
MAP_FIELDS = {"name", "qubits", "reps", "entanglement", "bandwidth"}
MAX_KERNEL_SAMPLES = 4096  # rows of X and Y together in one job
MAX_KERNEL_FEATURES = 256  # features per sample
MAX_KERNEL_REPS = 16  # feature-map repetitions
DEFAULT_SHARD = 32  # rows of X per task
MAP_NAMES = ("zz", "reuploading")
ENTANGLEMENTS = ("linear", "ring", "none")


def _whole(value: Any, path: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{path}: must be a whole number from {lo} to {hi}")
    return value


def _matrix(value: Any, path: str, width: int | None) -> list[list[float]]:
    """A list of equally long rows of finite numbers (checked in full: data is cheap)."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{path}: must be a non-empty list of rows of numbers")
    for i, row in enumerate(value):
        if not isinstance(row, list) or not 1 <= len(row) <= MAX_KERNEL_FEATURES:
            raise SpecError(f"{path}[{i}]: must be a list of 1 to {MAX_KERNEL_FEATURES} numbers")
        if width is not None and len(row) != width:
            raise SpecError(f"{path}[{i}]: has {len(row)} features; the first row has {width}")
        width = len(row)
        for j, v in enumerate(row):
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise SpecError(f"{path}[{i}][{j}]: must be a finite number")
    return value


def check(params: Any, max_qubits: int) -> tuple[dict[str, Any], list, list | None, int]:
    """A kernel job's params checked: its map options, X, Y (or None) and the shard size."""
    from qiz.ml.fidelity import MAX_QUBITS

    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise SpecError("params: must be a map of kernel fields")
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise SpecError(f"params.{unknown[0]}: is not a kernel field (known: map, shard, x, y)")
    missing = [k for k, required in FIELDS.items() if required and k not in params]
    if missing:
        raise SpecError(f"params.{missing[0]}: is required for kernel")
    fmap = params["map"]
    if not isinstance(fmap, dict) or not all(isinstance(k, str) for k in fmap):
        raise SpecError("params.map: must be a map of feature-map options")
    extra = sorted(set(fmap) - MAP_FIELDS)
    if extra:
        raise SpecError(f"params.map.{extra[0]}: is not a feature-map option")
    name = fmap.get("name", "reuploading")
    if name not in MAP_NAMES:
        raise SpecError(f"params.map.name: must be one of {', '.join(MAP_NAMES)}")
    entanglement = fmap.get("entanglement", "linear")
    if entanglement not in ENTANGLEMENTS:
        raise SpecError(f"params.map.entanglement: must be one of {', '.join(ENTANGLEMENTS)}")
    qubits = _whole(fmap.get("qubits"), "params.map.qubits", 1, MAX_QUBITS)
    if qubits > max_qubits:
        raise SpecError(
            f"params.map.qubits: {qubits} qubits; this node's memory allows at most {max_qubits}"
        )
    reps = _whole(fmap.get("reps", 2), "params.map.reps", 1, MAX_KERNEL_REPS)
    bandwidth = fmap.get("bandwidth", 0.5)
    if (
        not isinstance(bandwidth, int | float)
        or isinstance(bandwidth, bool)
        or not math.isfinite(bandwidth)
        or bandwidth <= 0
    ):
        raise SpecError("params.map.bandwidth: must be a finite number above 0")
    if not isinstance(params["x"], list) or len(params["x"]) > MAX_KERNEL_SAMPLES:
        raise SpecError(f"params.x: must be a list of at most {MAX_KERNEL_SAMPLES} rows")
    x = _matrix(params["x"], "params.x", None)
    y = params.get("y")
    if y is not None:
        if not isinstance(y, list) or len(x) + len(y) > MAX_KERNEL_SAMPLES:
            raise SpecError(f"params.y: X and Y together are over {MAX_KERNEL_SAMPLES} rows")
        y = _matrix(y, "params.y", len(x[0]))
    shard = _whole(params.get("shard", DEFAULT_SHARD), "params.shard", 1, MAX_KERNEL_SAMPLES)
    from qiz.ml.fidelity import MAX_KERNEL_RESULT, max_rows

    cols = len(y) if y is not None else len(x)
    most = max_rows(cols)
    if shard > most:
        raise SpecError(
            f"params.shard: a block of {shard} rows x {cols} values is over the "
            f"{MAX_KERNEL_RESULT}-byte result a task may return; at most {most} rows here"
        )
    options = {
        "name": name,
        "qubits": qubits,
        "reps": reps,
        "entanglement": entanglement,
        "bandwidth": float(bandwidth),
    }
    try:
        _build(options, len(x[0]))  # the map's own checks (e.g. a ring of 2 qubits)
    except ValueError as exc:
        raise SpecError(f"params.map: {exc}") from None
    return options, x, y, shard


def _build(options: Mapping[str, Any], features: int):  # noqa: ANN202 - a FeatureMap
    from qiz.ml.fidelity import feature_map

    return feature_map(
        options["name"],
        options["qubits"],
        features,
        options["reps"],
        entanglement=options["entanglement"],
        bandwidth=options["bandwidth"],
    )


def tasks(
    options: dict[str, Any], x: list, y: list | None, shard: int
) -> list[tuple[dict[str, Any], execute.Shape]]:
    """Each task's params (its block of X, and Y: X itself when Y is absent) and size."""
    ys = y if y is not None else x
    gates = len(_build(options, len(x[0])).program.ops)
    out = []
    for start in range(0, len(x), shard):
        block = x[start : start + shard]
        # one state per row of the block and of Y, then the block's products with Y
        products = math.ceil(len(block) * len(ys) / (gates + 1))
        size = execute.Shape(options["qubits"], gates, 0, len(block) + len(ys) + products)
        out.append(({"map": options, "x": block, "y": ys}, size))
    return out


def task_count(params: Mapping[str, Any]) -> int:
    """How many tasks a checked kernel job splits into."""
    return math.ceil(len(params["x"]) / params.get("shard", DEFAULT_SHARD))


def run(params: Mapping[str, Any]) -> dict[str, Any]:
    """One task: its block's rows of K, rounded as every result is."""
    import numpy as np

    from qiz.ml.fidelity import gram, states

    x = np.asarray(params["x"], dtype=np.float64)
    y = np.asarray(params["y"], dtype=np.float64)
    fmap = _build(params["map"], x.shape[1])
    block = gram(states(fmap, x), states(fmap, y))
    return execute.canonical({"rows": block.tolist()})


def problem(rows: int, cols: int, result: Any) -> str | None:
    """Why ``result`` is not a block of ``rows`` x ``cols`` kernel values, or None."""
    if not isinstance(result, dict) or set(result) != {"rows"}:
        return "a kernel result is a map with rows only"
    block = result["rows"]
    if not isinstance(block, list) or len(block) != rows:
        return f"a kernel result has {rows} rows"
    for i, row in enumerate(block):
        if not isinstance(row, list) or len(row) != cols:
            return f"row {i} must hold {cols} values"
        for v in row:
            if not isinstance(v, float | int) or isinstance(v, bool) or not -1e-9 <= v <= 1 + 1e-9:
                return f"row {i}: a kernel value is a number from 0 to 1"
    return None


def summarise(results: Sequence[Any]) -> str:
    """One line about a kernel job's results (one block per task), for people."""
    rows = [r for block in results if isinstance(block, dict) for r in block.get("rows", [])]
    cols = len(rows[0]) if rows else 0
    return f"a {len(rows)} x {cols} kernel matrix"
