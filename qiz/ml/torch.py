"""A PyTorch layer whose backward is our adjoint gradient: a quantum circuit inside a network.

:class:`QuantumLayer` is a ``torch.nn.Module`` mapping a (batch, features) tensor to (batch,
outputs) expectation values <Z_k> of the same data re-uploading circuit the VQC trains
(``qiz.ml.gradients.model``), through ``qiz.ml.batched`` in one call per batch. Its trainable
circuit parameters are one ``nn.Parameter`` (``weight``). PyTorch never sees the simulation:
``forward`` runs the batch on our engine, and ``backward`` (a ``torch.autograd.Function``) is one
adjoint sweep that gives the gradient in the weights and, per sample, in the inputs, so the
layers before it train too (PennyLane's ``TorchLayer`` with the adjoint method is the model).

Everything inside runs in float64 on the CPU; float32 inputs are accepted and the outputs come
back in the input's dtype and on its device. Needs the ``torch`` extra
(``pip install -e '.[torch]' -c constraints.txt``: the pin takes PyTorch's CPU build).
"""

from __future__ import annotations

try:
    import torch
except ImportError as exc:  # one line a person can act on, as QizError messages are
    raise ImportError(
        "qiz.ml.torch needs PyTorch, which is not installed: "
        "pip install -e '.[torch]' -c constraints.txt"
    ) from exc

import numpy as np
from torch.autograd.function import FunctionCtx, once_differentiable

from qiz.ml import gradients
from qiz.ml.feature_maps import ENTANGLEMENTS, FeatureMap
from qiz.ml.fidelity import default_qubits

__all__ = ["QuantumLayer"]


class _Expectations(torch.autograd.Function):
    """e[i, k] = <psi(x_i; w)|Z_k|psi(x_i; w)> forward; the adjoint sweep backward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        fmap: FeatureMap,
        obs: np.ndarray,
    ) -> torch.Tensor:
        # copies: the sweep backward needs these values even if the caller changes x in place
        data = x.detach().cpu().numpy().copy()
        theta = weight.detach().cpu().numpy().copy()
        psi, e = gradients.expectations(fmap, obs, data, theta)
        ctx.fmap, ctx.obs = fmap, obs  # type: ignore[attr-defined]
        ctx.psi, ctx.data, ctx.theta = psi, data, theta  # type: ignore[attr-defined]
        return torch.from_numpy(e).to(x.device)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        fmap, obs = ctx.fmap, ctx.obs  # type: ignore[attr-defined]
        psi, data, theta = ctx.psi, ctx.data, ctx.theta  # type: ignore[attr-defined]
        g = grad_out.detach().cpu().numpy().astype(np.float64)
        # dL/d<psi_i| = sum_k dL/de_ik D_k psi_i: the readout is diagonal
        lam = (g @ obs) * psi
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        d_data = np.zeros_like(data) if want_x else None
        g_theta = fmap.program.backward(psi, lam, data, theta, data_grad=d_data)
        device = grad_out.device
        grad_x = torch.from_numpy(d_data).to(device) if d_data is not None else None
        grad_w = torch.from_numpy(g_theta).to(device) if want_w else None
        return grad_x, grad_w, None, None


class QuantumLayer(torch.nn.Module):
    """<Z_k> (k < ``outputs``) of a trainable data re-uploading circuit on ``num_qubits``.

    The circuit is the VQC's (``qiz.ml.variational``): ``layers`` x [each feature as RY(w x_j)
    (RZ for the next round when there are more features than qubits), trainable RY and RZ on
    every qubit, a CZ ladder per ``entanglement``]. ``weight`` holds the encoding weights and
    rotations in that order, initialised as the VQC does for the same ``seed`` (weights 1,
    rotations 0, plus normal noise of spread 0.1), so the layer and a VQC with
    ``random_state=seed`` start from the same circuit. The outputs lie in [-1, 1]: put a
    ``torch.nn.Linear`` after the layer for logits of another scale. ``num_qubits`` defaults
    to one per feature (at most 10), as the VQC's does.
    """

    def __init__(
        self,
        in_features: int,
        num_qubits: int | None = None,
        *,
        outputs: int = 1,
        layers: int = 2,
        entanglement: str = "linear",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or layers < 1:
            raise ValueError("a QuantumLayer needs at least one feature and one layer")
        n = default_qubits(max(in_features, outputs), num_qubits)  # as the VQC chooses
        if not 1 <= outputs <= n:
            raise ValueError(f"outputs are <Z_k> of distinct qubits: 1 to {n}, not {outputs}")
        if entanglement not in ENTANGLEMENTS:
            raise ValueError(f"entanglement must be one of {', '.join(ENTANGLEMENTS)}")
        self.in_features = in_features
        self.num_qubits = n
        self.outputs = outputs
        self.layers = layers
        self.entanglement = entanglement
        self.fmap = gradients.model(n, in_features, layers, entanglement)
        # The backward sweep gives dL/d(data columns); they are dL/dx only when the map feeds
        # the features in as they are (the re-uploading map does): a map that encodes them
        # (the ZZ map's products) would need its encoding's Jacobian too.
        probe = np.random.default_rng(0).normal(size=(2, in_features))
        if not np.array_equal(self.fmap.encode(probe), probe):
            raise NotImplementedError("QuantumLayer needs a feature map that uses x as it is")
        self.obs = gradients.observables(n, outputs)
        centre = self.fmap.init_centre
        noise = np.random.RandomState(seed).normal(0.0, 0.1, centre.size)
        self.weight = torch.nn.Parameter(torch.from_numpy(centre + noise))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_features) -> (batch, outputs), in x's dtype; one engine call."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"QuantumLayer expects input of shape (batch, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"QuantumLayer expects a floating-point input, got {x.dtype}")
        # float64 inside, whatever dtype the module was cast to: autograd casts the gradients back
        w = self.weight.to(torch.float64)
        e = _Expectations.apply(x.to(torch.float64), w, self.fmap, self.obs)
        return e.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_qubits={self.num_qubits}, "
            f"outputs={self.outputs}, layers={self.layers}, entanglement={self.entanglement!r}"
        )
