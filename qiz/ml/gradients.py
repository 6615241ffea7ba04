"""A variational model's loss and gradient over a shard of samples, without scikit-learn.

:class:`qiz.ml.variational.VQC`/``VQR`` (the scikit-learn face) and the mesh's ``gradient`` job
kind (qiz/compute/gradient_kind.py, on nodes that may not have scikit-learn) both compute here.
The loss is a mean over ``total`` samples, so a shard's loss and gradient are its share of the
whole batch's: the shards' sums are the full-batch figures (to the last bits of floating
addition), which is what lets the mesh split an epoch across workers.
"""

from __future__ import annotations

import functools

import numpy as np

from qiz.ml.batched import _zsign
from qiz.ml.feature_maps import FeatureMap, reuploading_map

LOSSES = ("logistic", "softmax", "mse")


def observables(num_qubits: int, outputs: int) -> np.ndarray:
    """The diagonals D_k (outputs, 2**n) of the readout: <Z_k> for up to n outputs, else the
    probability of the basis states b with b mod K = k."""
    if outputs <= num_qubits:
        return np.array([_zsign(num_qubits, [k]) for k in range(outputs)])
    if outputs > 1 << num_qubits:
        raise ValueError(f"{outputs} classes do not fit the {1 << num_qubits} basis states")
    index = np.arange(1 << num_qubits)
    return np.array([(index % outputs == k).astype(np.float64) for k in range(outputs)])


@functools.lru_cache(maxsize=16)
def model(num_qubits: int, num_features: int, layers: int, entanglement: str) -> FeatureMap:
    """The trainable re-uploading circuit (built once per shape; never changed once built)."""
    return reuploading_map(num_qubits, num_features, layers, entanglement)


def loss_of(kind: str, out: np.ndarray, target: np.ndarray, total: int) -> tuple[float, np.ndarray]:
    """This batch's share of the mean loss over ``total`` samples, and d(that)/d(out)."""
    if kind == "logistic":  # one output: the logit of class 1
        z = out[:, 0]
        t = target.astype(np.float64)
        loss = float(np.sum(np.logaddexp(0.0, z) - t * z)) / total
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        return loss, ((p - t) / total)[:, None]
    if kind == "softmax":
        n = out.shape[0]
        labels = target.astype(np.int64)
        shifted = out - out.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-np.sum(logp[np.arange(n), labels])) / total
        d = np.exp(logp)
        d[np.arange(n), labels] -= 1.0
        return loss, d / total
    if kind == "mse":
        r = out[:, 0] - target
        return float(0.5 * np.sum(r * r)) / total, (r / total)[:, None]
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")


def split(fmap: FeatureMap, obs: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, ...]:
    """(circuit parameters, output scales, output biases) of a parameter vector."""
    k = fmap.program.num_params
    m = obs.shape[0]
    return params[:k], params[k : k + m], params[k + m :]


def expectations(
    fmap: FeatureMap,
    obs: np.ndarray,
    X: np.ndarray,  # noqa: N803
    theta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(states, e) for a batch: e[i, k] = <psi_i|D_k|psi_i>."""
    psi = fmap.program.states(fmap.encode(X), theta)
    prob = psi.real**2 + psi.imag**2
    return psi, prob @ obs.T


def loss_grad(
    fmap: FeatureMap,
    obs: np.ndarray,
    kind: str,
    *,
    params: np.ndarray,
    X: np.ndarray,  # noqa: N803 - scikit-learn's name
    target: np.ndarray,
    total: int,
) -> tuple[float, np.ndarray]:
    """This batch's share of the mean loss over ``total`` samples and its gradient in every
    parameter: one forward pass, one adjoint sweep (no regularisation: the caller adds it)."""
    theta, scale, bias = split(fmap, obs, params)
    psi, e = expectations(fmap, obs, X, theta)
    out = e * scale + bias
    loss, d_out = loss_of(kind, out, target, total)
    lam = ((d_out * scale) @ obs) * psi
    g_theta = fmap.program.backward(psi, lam, fmap.encode(X), theta)
    return loss, np.concatenate([g_theta, (d_out * e).sum(axis=0), d_out.sum(axis=0)])
