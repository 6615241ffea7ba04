"""Quantum machine learning with scikit-learn's estimator API: fidelity kernels (QuantumKernel,
QSVC) and data re-uploading circuits (VQC, VQR) trained with batched adjoint gradients.

Everything runs on ``qiz.ml.batched``: a batch of samples is one (batch, 2**n) array that goes
through the circuit in one call (``qiz.ml.fused``: each sample's whole program while its state
stays in cache), so a kernel matrix or a gradient is never a circuit per sample or per pair.
``qiz.ml.experiment`` is ``qiz ml train``: a model beside classical baselines on scikit-learn's
data sets. See docs/ml.md.
"""

from qiz.ml.kernel import QuantumKernel
from qiz.ml.qsvc import QSVC
from qiz.ml.variational import VQC, VQR

__all__ = ["QSVC", "VQC", "VQR", "QuantumKernel"]
