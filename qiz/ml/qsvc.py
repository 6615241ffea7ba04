"""QSVC: scikit-learn's SVC on the precomputed fidelity kernel of ``QuantumKernel``.

The training states are kept after ``fit``, so predicting a batch costs its own states and
one matrix product against them; nothing is re-simulated per pair.
"""

# ruff: noqa: N803, N806 - X and Y are scikit-learn's names for data matrices

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from qiz.ml.kernel import QuantumKernel


class QSVC(ClassifierMixin, BaseEstimator):
    """A support-vector classifier whose kernel is |<phi(x)|phi(y)>|^2.

    Feature-map options are those of :class:`QuantumKernel`; ``C``, ``class_weight`` and
    ``random_state`` go to ``sklearn.svm.SVC``. No ``predict_proba``: SVC's ``probability``
    is deprecated in scikit-learn 1.9; wrap a QSVC in ``CalibratedClassifierCV`` instead."""

    def __init__(
        self,
        *,
        feature_map: str = "reuploading",
        num_qubits: int | None = None,
        reps: int = 2,
        entanglement: str = "linear",
        bandwidth: float = 0.5,
        C: float = 1.0,
        class_weight: dict | str | None = None,
        random_state: int | None = None,
        backend: object = None,
    ) -> None:
        self.feature_map = feature_map
        self.num_qubits = num_qubits
        self.reps = reps
        self.entanglement = entanglement
        self.bandwidth = bandwidth
        self.C = C
        self.class_weight = class_weight
        self.random_state = random_state
        self.backend = backend  # None: this machine; a qiz.client.Mesh: kernel jobs on it

    def _kernel(self) -> QuantumKernel:
        return QuantumKernel(
            feature_map=self.feature_map,
            num_qubits=self.num_qubits,
            reps=self.reps,
            entanglement=self.entanglement,
            bandwidth=self.bandwidth,
            backend=self.backend,
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> QSVC:
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.kernel_ = self._kernel()
        gram = self.kernel_.fit_transform(X)
        self.n_qubits_ = self.kernel_.n_qubits_
        self.svc_ = SVC(
            kernel="precomputed",
            C=self.C,
            class_weight=self.class_weight,
            random_state=self.random_state,
        ).fit(gram, y)
        self.classes_ = self.svc_.classes_
        return self

    def _gram(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.kernel_.transform(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        gram = self._gram(X)
        return self.svc_.predict(gram)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        gram = self._gram(X)
        return self.svc_.decision_function(gram)
