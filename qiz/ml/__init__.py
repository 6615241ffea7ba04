"""Quantum machine learning with scikit-learn's estimator API: fidelity kernels (QuantumKernel,
QSVC) and data re-uploading circuits (VQC, VQR) trained with batched adjoint gradients.

Everything runs on ``qiz.ml.batched``: a batch of samples is one (batch, 2**n) array, so a
kernel matrix or a gradient is a few numpy sweeps, not a circuit per sample or per pair.
See docs/ml.md.
"""

from qiz.ml.kernel import QuantumKernel
from qiz.ml.qsvc import QSVC
from qiz.ml.variational import VQC, VQR

__all__ = ["QSVC", "VQC", "VQR", "QuantumKernel"]
