"""The ``gradient`` kind: a variational model's loss and gradient over a batch, in shards of
samples across the mesh (issue 22: quantum ML's heavy part on the mesh).

Why a kind of its own: one training step of a data re-uploading classifier is a forward pass
and one adjoint sweep per sample (:mod:`qiz.ml.gradients`); samples are independent, so the
batch splits into shards, each returning its share of the mean loss and gradient, and the
submitter adds them up. Deterministic: replicas agree on the digest (results rounded to 12
significant digits, like every kind's).

Params: ``{"model": {"qubits": n, "layers": L, "entanglement": "linear"|"ring"|"none",
"outputs": K}, "loss": "logistic"|"softmax"|"mse", "theta": [parameters], "x": [[float, ...],
...], "target": [label or value, ...], "shard": samples per task (32)}``. A task's result is
``{"loss": its share, "grad": [its share of every parameter's derivative]}``.

Bounds (before anything is built): at most ``MAX_GRADIENT_SAMPLES`` samples,
``MAX_KERNEL_FEATURES`` features (the kernel kind's), ``MAX_GRADIENT_LAYERS`` layers,
``MAX_GRADIENT_OUTPUTS`` outputs, qubits within :data:`qiz.ml.fidelity.MAX_QUBITS` and the
node's own limit; every number finite; the parameter vector exactly the model's length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiz.compute import execute
from qiz.compute.errors import SpecError
from qiz.compute.kernel_kind import ENTANGLEMENTS, _matrix, _whole

KIND = "gradient"
FIELDS = {"model": True, "loss": True, "theta": True, "x": True, "target": True, "shard": False}
MODEL_FIELDS = {"qubits", "layers", "entanglement", "outputs"}
LOSSES = ("logistic", "softmax", "mse")
MAX_GRADIENT_SAMPLES = 4096  # samples in one job
MAX_GRADIENT_LAYERS = 16  # re-uploading layers
MAX_GRADIENT_OUTPUTS = 64  # readout outputs (classes)
DEFAULT_SHARD = 32  # samples per task


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Checked:
    """A gradient job's checked params."""

    options: dict[str, Any]
    loss: str
    theta: list
    x: list
    target: list
    shard: int


def _model(model: Any, max_qubits: int) -> dict[str, Any]:
    """The model options checked."""
    from qiz.ml.fidelity import MAX_QUBITS

    if not isinstance(model, dict) or not all(isinstance(k, str) for k in model):
        raise SpecError("params.model: must be a map of model options")
    extra = sorted(set(model) - MODEL_FIELDS)
    if extra:
        raise SpecError(f"params.model.{extra[0]}: is not a model option")
    qubits = _whole(model.get("qubits"), "params.model.qubits", 1, MAX_QUBITS)
    if qubits > max_qubits:
        raise SpecError(
            f"params.model.qubits: {qubits} qubits; this node's memory allows at most {max_qubits}"
        )
    layers = _whole(model.get("layers", 2), "params.model.layers", 1, MAX_GRADIENT_LAYERS)
    entanglement = model.get("entanglement", "linear")
    if entanglement not in ENTANGLEMENTS:
        raise SpecError(f"params.model.entanglement: must be one of {', '.join(ENTANGLEMENTS)}")
    outputs = _whole(model.get("outputs", 1), "params.model.outputs", 1, MAX_GRADIENT_OUTPUTS)
    return {"qubits": qubits, "layers": layers, "entanglement": entanglement, "outputs": outputs}


def _targets(target: Any, rows: int, loss: str, outputs: int) -> list:
    if not isinstance(target, list) or len(target) != rows:
        raise SpecError(f"params.target: must be a list of {rows} values, one per row of x")
    for i, t in enumerate(target):
        if loss == "mse":
            ok = _finite(t)
        elif loss == "logistic":
            ok = isinstance(t, int) and not isinstance(t, bool) and t in (0, 1)
        else:
            ok = isinstance(t, int) and not isinstance(t, bool) and 0 <= t < outputs
        if not ok:
            raise SpecError(f"params.target[{i}]: not a target of a {loss} loss")
    return target


def check(params: Any, max_qubits: int) -> Checked:
    """A gradient job's params checked: model options, loss, theta, X, targets, shard size."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise SpecError("params: must be a map of gradient fields")
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        known = ", ".join(sorted(FIELDS))
        raise SpecError(f"params.{unknown[0]}: is not a gradient field (known: {known})")
    missing = [k for k, required in FIELDS.items() if required and k not in params]
    if missing:
        raise SpecError(f"params.{missing[0]}: is required for gradient")
    options = _model(params["model"], max_qubits)
    outputs = options["outputs"]
    loss = params["loss"]
    if loss not in LOSSES:
        raise SpecError(f"params.loss: must be one of {', '.join(LOSSES)}")
    if (loss in ("logistic", "mse")) != (outputs == 1):
        raise SpecError("params.loss: logistic and mse read one output, softmax several")
    x = params["x"]
    if not isinstance(x, list) or len(x) > MAX_GRADIENT_SAMPLES:
        raise SpecError(f"params.x: must be a list of at most {MAX_GRADIENT_SAMPLES} rows")
    x = _matrix(x, "params.x", None)
    target = _targets(params["target"], len(x), loss, outputs)
    try:
        fmap, obs = _build(options, len(x[0]))
    except ValueError as exc:
        raise SpecError(f"params.model: {exc}") from None
    theta = params["theta"]
    count = fmap.program.num_params + 2 * obs.shape[0]
    if not isinstance(theta, list) or len(theta) != count:
        raise SpecError(f"params.theta: the model has {count} parameters")
    if not all(_finite(v) for v in theta):
        raise SpecError("params.theta: every parameter must be a finite number")
    shard = _whole(params.get("shard", DEFAULT_SHARD), "params.shard", 1, MAX_GRADIENT_SAMPLES)
    return Checked(options, loss, theta, x, target, shard)


def _build(options: Mapping[str, Any], features: int):  # noqa: ANN202 - (FeatureMap, array)
    from qiz.ml import gradients

    fmap = gradients.model(options["qubits"], features, options["layers"], options["entanglement"])
    return fmap, gradients.observables(options["qubits"], options["outputs"])


def tasks(job: Checked) -> list[tuple[dict[str, Any], execute.Shape]]:
    """Each task's params (its shard of the batch, the batch's size for the mean) and size."""
    fmap, _ = _build(job.options, len(job.x[0]))
    gates = len(fmap.program.ops)
    out = []
    for start in range(0, len(job.x), job.shard):
        rows = job.x[start : start + job.shard]
        params = {
            "model": job.options,
            "loss": job.loss,
            "theta": job.theta,
            "x": rows,
            "target": job.target[start : start + job.shard],
            "total": len(job.x),
        }
        # a forward pass and an adjoint sweep (about three passes) per sample
        out.append((params, execute.Shape(job.options["qubits"], gates, 0, 3 * len(rows))))
    return out


def task_count(params: Mapping[str, Any]) -> int:
    return math.ceil(len(params["x"]) / params.get("shard", DEFAULT_SHARD))


def run(params: Mapping[str, Any]) -> dict[str, Any]:
    """One task: its shard's share of the mean loss and gradient, rounded as every result."""
    import numpy as np

    from qiz.ml.gradients import loss_grad

    x = np.asarray(params["x"], dtype=np.float64)
    fmap, obs = _build(params["model"], x.shape[1])
    loss, grad = loss_grad(
        fmap,
        obs,
        params["loss"],
        params=np.asarray(params["theta"], dtype=np.float64),
        X=x,
        target=np.asarray(params["target"]),
        total=int(params["total"]),
    )
    return execute.canonical({"loss": float(loss), "grad": grad.tolist()})


def problem(parameters: int, result: Any) -> str | None:
    """Why ``result`` is not a loss and ``parameters`` derivatives, or None."""
    if not isinstance(result, dict) or set(result) != {"loss", "grad"}:
        return "a gradient result is a map of loss and grad"
    if not _finite(result["loss"]):
        return "loss must be a finite number"
    grad = result["grad"]
    if not isinstance(grad, list) or len(grad) != parameters:
        return f"grad must hold {parameters} numbers"
    if not all(_finite(v) for v in grad):
        return "grad must hold finite numbers"
    return None


def summarise(results: Sequence[Any]) -> str:
    """One line about a gradient job's results (one share per task), for people."""
    losses = [r["loss"] for r in results if isinstance(r, dict) and _finite(r.get("loss"))]
    return f"loss {sum(losses):.6g} over {len(losses)} shards"
