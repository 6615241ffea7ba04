"""Quantum ML on the mesh: a kernel matrix as one ``kernel`` job (qiz/compute/kernel_kind.py),
a variational model's loss and gradient as one ``gradient`` job per optimizer step
(gradient_kind.py); their tasks (blocks of rows, shards of samples) spread over the workers,
replicated and attested.

Why: a kernel matrix costs one state per sample and one product per pair, and the products
grow with the square of the data set; row blocks are independent, so the mesh computes them in
parallel; so are a batch's samples in a gradient (each shard returns its share of the mean).
The answers equal this machine's within the 12 significant digits every job result is rounded
to (a symmetric kernel matrix is computed here in real arithmetic, on the mesh as products of
blocks: they agree to about 1e-15 before rounding; a gradient's shards add up in another
order than one batch's sum).
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
    from qiz.ml.fidelity import max_rows

    params: dict[str, Any] = {"map": options, "x": np.asarray(X, dtype=np.float64).tolist()}
    if Y is not None:
        params["y"] = np.asarray(Y, dtype=np.float64).tolist()
    params["shard"] = min(shard, max_rows(len(X) if Y is None else len(Y)))
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


def gradient_on_mesh(
    mesh: Any,
    options: dict[str, Any],
    loss: str,
    *,
    params: np.ndarray,
    X: np.ndarray,  # noqa: N803 - scikit-learn's names
    target: np.ndarray,
    shard: int = DEFAULT_SHARD,
    replicas: int = 2,
    timeout: float | None = None,
    run: MeshKernelRun | None = None,
) -> tuple[float, np.ndarray]:
    """The mean loss over the batch and its gradient (:func:`qiz.ml.gradients.loss_grad`) as
    one gradient job on ``mesh``, its shards' shares added up; ``run`` collects the job."""
    targets = [int(t) for t in target] if loss != "mse" else [float(t) for t in target]
    spec = {
        "kind": "gradient",
        "params": {
            "model": options,
            "loss": loss,
            "theta": [float(v) for v in params],
            "x": np.asarray(X, dtype=np.float64).tolist(),
            "target": targets,
            "shard": shard,
        },
        "replicas": replicas,
        "seed": 0,
    }
    result = mesh.submit(spec).result(timeout)
    if run is not None:
        run.jobs.append(result.job_id)
        run.attestations.append(result.attestation)
    shares = result.results
    total = sum(float(share["loss"]) for share in shares)
    grad = np.sum([np.asarray(share["grad"], dtype=np.float64) for share in shares], axis=0)
    if grad.shape != (len(params),):  # the coordinator checked every share; belt and braces
        raise ValueError(f"the mesh answered {grad.shape[0]} derivatives, not {len(params)}")
    return total, grad
