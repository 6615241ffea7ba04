"""The fidelity quantum kernel k(x, y) = |<phi(x)|phi(y)>|^2 of a fixed feature map.

Each sample's state is computed once, the whole batch in one pass of ``batched.Program``; the
kernel matrix is then one complex matrix product, |S_x S_y^H|^2, never a circuit per pair
(the compute-uncompute circuit a device would run per pair gives the same number:
|<0|U(y)^H U(x)|0>|^2). Samples go through in blocks of at most ``BLOCK_AMPLITUDES``
amplitudes, so memory stays bounded whatever the data set's size.
"""

# ruff: noqa: N803, N806 - X and Y are scikit-learn's names for data matrices

from __future__ import annotations

import contextlib
import functools

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from qiz.ml.feature_maps import FeatureMap, make_feature_map

# amplitudes of one block of states (16 B each): 64 MiB
BLOCK_AMPLITUDES = 1 << 22
MAX_QUBITS = 16


# multiply-adds of a Gram product below which BLAS runs on one thread: below it a product
# takes milliseconds, and a second OpenBLAS thread saves little there while, beside another
# busy process, its waiting costs much more (a 100 x 16 complex product measured 0.024 ms on
# one thread, 16 ms on two; 100 x 4096, 6.3 against 88 ms)
BLAS_PARALLEL_WORK = 1 << 28


@functools.cache
def _blas() -> object:
    from threadpoolctl import ThreadpoolController  # scikit-learn's dependency

    return ThreadpoolController()


def _blas_threads(work: int) -> contextlib.AbstractContextManager[object]:
    """One BLAS thread for a product of fewer than BLAS_PARALLEL_WORK multiply-adds."""
    if work >= BLAS_PARALLEL_WORK:
        return contextlib.nullcontext()
    return _blas().limit(limits=1, user_api="blas")  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=32)
def _feature_map(
    name: str, num_qubits: int, num_features: int, reps: int, *, entanglement: str,
    bandwidth: float,
) -> FeatureMap:
    """Built once per set of options (its tables cost about a millisecond at 12 qubits, a
    tenth of a 100-sample kernel matrix there); the map is never changed once built."""
    return make_feature_map(
        name, num_qubits, num_features, reps, entanglement=entanglement, bandwidth=bandwidth
    )


def default_qubits(num_features: int, num_qubits: int | None, cap: int = 10) -> int:
    """The register: as given, else one qubit per feature up to ``cap``."""
    n = min(num_features, cap) if num_qubits is None else int(num_qubits)
    if not 1 <= n <= MAX_QUBITS:
        raise ValueError(f"num_qubits must be between 1 and {MAX_QUBITS}, not {num_qubits}")
    return n


class QuantumKernel(TransformerMixin, BaseEstimator):
    """Fidelity kernel of a ``zz`` or fixed ``reuploading`` feature map.

    ``evaluate(X, Y)`` (or calling the object) gives the (len(X), len(Y)) kernel matrix, for
    ``SVC(kernel="precomputed")`` or as ``SVC(kernel=QuantumKernel())``. As a transformer,
    ``fit(X)`` keeps X and ``transform(Z)`` gives K(Z, X): ``make_pipeline(QuantumKernel(),
    SVC(kernel="precomputed"))`` is a quantum-kernel SVM.
    """

    def __init__(
        self,
        *,
        feature_map: str = "reuploading",
        num_qubits: int | None = None,
        reps: int = 2,
        entanglement: str = "linear",
        bandwidth: float = 0.5,
    ) -> None:
        self.feature_map = feature_map
        self.num_qubits = num_qubits
        self.reps = reps
        self.entanglement = entanglement
        self.bandwidth = bandwidth

    def build(self, num_features: int) -> FeatureMap:
        """The feature map for data with ``num_features`` columns."""
        n = default_qubits(num_features, self.num_qubits)
        return _feature_map(self.feature_map, n, num_features, self.reps,
                            entanglement=self.entanglement, bandwidth=self.bandwidth)  # fmt: skip

    def states(self, X: np.ndarray, fmap: FeatureMap | None = None) -> np.ndarray:
        """|phi(x)> for every row of X, shape (len(X), 2**n), in blocks of bounded size."""
        X = check_array(X, dtype=np.float64)
        fmap = fmap if fmap is not None else self.build(X.shape[1])
        rows = max(1, BLOCK_AMPLITUDES >> fmap.program.num_qubits)
        if X.shape[0] <= rows:  # one block: its states are the answer, not copied
            return fmap.program.states(fmap.encode(X))
        out = np.empty((X.shape[0], 1 << fmap.program.num_qubits), dtype=np.complex128)
        for start in range(0, X.shape[0], rows):
            block = X[start : start + rows]
            out[start : start + rows] = fmap.program.states(fmap.encode(block))
        return out

    @staticmethod
    def from_states(sx: np.ndarray, sy: np.ndarray | None = None) -> np.ndarray:
        """|<x|y>|^2 for every pair: one matrix product. Symmetrised when sy is None.

        The Gram matrix of one set is taken in real arithmetic: with S = A + iB, Re S S^H is
        the real product of S's (re, im) float view with itself (a symmetric product, which
        numpy hands to BLAS's syrk, half the work) and Im S S^H = B A^T - A B^T from one real
        product: half the multiplications of the complex product (measured at 100 x 4096 on
        one thread: 3.5 ms against 5.3 ms)."""
        if sy is None:
            v = np.ascontiguousarray(sx, dtype=np.complex128).view(np.float64)
            with _blas_threads(sx.shape[0] ** 2 * sx.shape[1] * 2):
                re = v @ v.T
                ab = np.ascontiguousarray(v[:, 0::2]) @ np.ascontiguousarray(v[:, 1::2]).T
            im = ab - ab.T
            k = re * re + im * im
            return 0.5 * (k + k.T)
        with _blas_threads(sx.shape[0] * sy.shape[0] * sx.shape[1] * 4):
            overlap = sx.conj() @ sy.T
        return overlap.real**2 + overlap.imag**2

    def evaluate(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        """The kernel matrix K[i, j] = |<phi(X_i)|phi(Y_j)>|^2 (Y defaults to X)."""
        X = check_array(X, dtype=np.float64)
        fmap = self.build(X.shape[1])
        sx = self.states(X, fmap)
        if Y is None:
            return self.from_states(sx)
        Y = check_array(Y, dtype=np.float64)
        if Y.shape[1] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, Y has {Y.shape[1]}")
        return self.from_states(sx, self.states(Y, fmap))

    __call__ = evaluate

    # -- the transformer face ------------------------------------------------------------

    def fit(self, X: np.ndarray, y: object = None) -> QuantumKernel:
        X = validate_data(self, X, dtype=np.float64)
        self.fmap_ = self.build(X.shape[1])
        self.n_qubits_ = self.fmap_.program.num_qubits
        self.fit_states_ = self.states(X, self.fmap_)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """K(X, X_fit): one column per training sample."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.from_states(self.states(X, self.fmap_), self.fit_states_)

    def fit_transform(self, X: np.ndarray, y: object = None, **_: object) -> np.ndarray:
        self.fit(X)
        return self.from_states(self.fit_states_)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
