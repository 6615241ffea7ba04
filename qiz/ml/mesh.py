"""Kernel matrices on the mesh: one ``kernel`` job (qiz/compute/kernel_kind.py) whose tasks,
blocks of rows, spread over the workers, replicated and attested.

Why: a kernel matrix costs one state per sample and one product per pair, and the products
grow with the square of the data set; row blocks are independent, so the mesh computes them in
parallel. The answer equals this machine's :func:`qiz.ml.fidelity.gram` within the 12
significant digits every job result is rounded to (a symmetric matrix is computed here in real
arithmetic, on the mesh as products of blocks: they agree to about 1e-15 before rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_SHARD = 32  # rows of X per task (as the kind's default)


@dataclass
class MeshKernelRun:
    """What a mesh kernel computation ran: its jobs' ids and verified attestations."""

    jobs: list[str] = field(default_factory=list)
    attestations: list[Any] = field(default_factory=list, repr=False)


def kernel_on_mesh(
    mesh: Any,
    options: dict[str, Any],
    X: np.ndarray,  # noqa: N803 - scikit-learn's names
    Y: np.ndarray | None = None,  # noqa: N803
    *,
    shard: int = DEFAULT_SHARD,
    replicas: int = 2,
    timeout: float | None = None,
    run: MeshKernelRun | None = None,
) -> np.ndarray:
    """K[i, j] = |<phi(X_i)|phi(Y_j)>|^2 (Y defaults to X) as one kernel job on ``mesh`` (a
    :class:`qiz.client.Mesh`); ``run`` collects the job and its attestation."""
    params: dict[str, Any] = {"map": options, "x": np.asarray(X, dtype=np.float64).tolist()}
    if Y is not None:
        params["y"] = np.asarray(Y, dtype=np.float64).tolist()
    params["shard"] = shard
    spec = {"kind": "kernel", "params": params, "replicas": replicas, "seed": 0}
    result = mesh.submit(spec).result(timeout)
    if run is not None:
        run.jobs.append(result.job_id)
        run.attestations.append(result.attestation)
    matrix = np.asarray(result.matrix, dtype=np.float64)
    expected = (len(X), len(X) if Y is None else len(Y))
    if matrix.shape != expected:  # the coordinator checked every block; this is belt and braces
        raise ValueError(f"the mesh answered a {matrix.shape} matrix, not {expected}")
    return matrix
