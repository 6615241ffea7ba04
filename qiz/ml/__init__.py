"""Quantum machine learning with scikit-learn's estimator API: fidelity kernels (QuantumKernel,
QSVC) and data re-uploading circuits (VQC, VQR) trained with batched adjoint gradients.

Everything runs on ``qiz.ml.batched``: a batch of samples is one (batch, 2**n) array that goes
through the circuit in one call (``qiz.ml.fused``: each sample's whole program while its state
stays in cache), so a kernel matrix or a gradient is never a circuit per sample or per pair.
``qiz.ml.experiment`` is ``qiz ml train``: a model beside classical baselines on scikit-learn's
data sets. See docs/ml.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qiz.ml.kernel import QuantumKernel
    from qiz.ml.qsvc import QSVC
    from qiz.ml.variational import VQC, VQR

__all__ = ["QSVC", "VQC", "VQR", "QuantumKernel"]

# The estimators need scikit-learn (the ml extra); the computing parts (batched, fused,
# feature_maps, fidelity) do not, and a worker node runs the mesh's kernel jobs with them
# alone: the estimators are imported when first named.
_HOMES = {
    "QuantumKernel": "qiz.ml.kernel",
    "QSVC": "qiz.ml.qsvc",
    "VQC": "qiz.ml.variational",
    "VQR": "qiz.ml.variational",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'qiz.ml' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
