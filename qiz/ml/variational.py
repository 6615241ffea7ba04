"""VQC and VQR: data re-uploading circuits trained with batched adjoint gradients.

The model: a ``reuploading_map`` (trainable encoding weights and rotations), read out as
expectation values e_k = <psi(x)|D_k|psi(x)> of diagonal observables, then an affine map with
classical parameters (a scale and a bias per output): logits a_k e_k + b_k for the classifier,
a e + b (in standardised target units) for the regressor. Readouts:

* two classes: one logit from <Z_0>;
* K classes, K <= qubits: <Z_k> on qubit k;
* more classes than qubits: the probability of the basis states b with b mod K = k.

A loss L over the batch gives dL/de (n, K); lambda = (dL/de @ D) * psi is dL/d<psi| for every
sample at once, and one adjoint sweep of ``batched.Program.backward`` turns it into the
gradient of every circuit parameter. Optimizers: scipy's L-BFGS-B on the full batch (default)
or Adam on shuffled minibatches.
"""

# ruff: noqa: N803, N806 - X and Y are scikit-learn's names for data matrices

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from qiz.ml import gradients
from qiz.ml.feature_maps import FeatureMap
from qiz.ml.fidelity import default_qubits
from qiz.ml.gradients import observables  # noqa: F401 - its name here too

OPTIMIZERS = ("L-BFGS-B", "adam")


class _Variational(BaseEstimator):
    """What the classifier and the regressor share: the circuit, the readout, training."""

    def __init__(
        self,
        *,
        num_qubits: int | None = None,
        layers: int = 2,
        entanglement: str = "linear",
        optimizer: str = "L-BFGS-B",
        max_iter: int = 100,
        learning_rate: float = 0.05,
        batch_size: int = 32,
        alpha: float = 0.0,
        tol: float = 1e-7,
        random_state: int | np.random.RandomState | None = None,
        backend: object = None,
    ) -> None:
        self.num_qubits = num_qubits
        self.layers = layers
        self.entanglement = entanglement
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.alpha = alpha
        self.tol = tol
        self.random_state = random_state
        self.backend = backend  # None: this machine; a qiz.client.Mesh: gradient jobs on it

    # -- the model -----------------------------------------------------------------------

    def _build(self, num_features: int, outputs: int, min_qubits: int) -> FeatureMap:
        n = default_qubits(max(num_features, min_qubits), self.num_qubits)
        fmap = gradients.model(n, num_features, self.layers, self.entanglement)
        self.n_qubits_ = n
        self.observables_ = gradients.observables(n, outputs)
        return fmap

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(circuit parameters, output scales, output biases)."""
        return gradients.split(self.fmap_, self.observables_, params)

    def _expectations(self, X: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(states, e) for a batch: e[i, k] = <psi_i|D_k|psi_i>."""
        return gradients.expectations(self.fmap_, self.observables_, X, theta)

    def _outputs(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        theta, scale, bias = self._split(self.params_)
        _, e = self._expectations(X, theta)
        return e * scale + bias

    def _loss_grad(
        self, params: np.ndarray, X: np.ndarray, target: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """The mean loss over the batch and its gradient in every parameter (on the mesh: one
        gradient job whose shards are blocks of the batch, their shares summed)."""
        theta = self._split(params)[0]
        if self.backend is not None:
            from qiz.ml.mesh import gradient_on_mesh

            if not hasattr(self, "runs_"):
                from qiz.ml.mesh import MeshKernelRun

                self.runs_ = MeshKernelRun()
            loss, grad = gradient_on_mesh(
                self.backend, self._model_options(), self._loss_kind(),
                params=params, X=X, target=target, run=self.runs_,
            )  # fmt: skip
        else:
            loss, grad = gradients.loss_grad(
                self.fmap_, self.observables_, self._loss_kind(),
                params=params, X=X, target=target, total=X.shape[0],
            )  # fmt: skip
        if self.alpha:
            loss += 0.5 * self.alpha * float(theta @ theta)
            grad[: theta.size] += self.alpha * theta
        return loss, grad

    def _loss_kind(self) -> str:
        raise NotImplementedError

    def _model_options(self) -> dict:
        """The circuit and readout as a mesh gradient job names them."""
        return {
            "qubits": self.n_qubits_,
            "layers": self.layers,
            "entanglement": self.entanglement,
            "outputs": int(self.observables_.shape[0]),
        }

    # -- training ------------------------------------------------------------------------

    def _init_params(self, rng: np.random.RandomState, scale0: float) -> np.ndarray:
        centre = self.fmap_.init_centre
        theta = centre + rng.normal(0.0, 0.1, centre.size)
        m = self.observables_.shape[0]
        return np.concatenate([theta, np.full(m, scale0), np.zeros(m)])

    def _train(self, X: np.ndarray, target: np.ndarray, scale0: float) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.max_iter < 1:
            raise ValueError("max_iter must be at least 1")
        rng = check_random_state(self.random_state)
        x0 = self._init_params(rng, scale0)
        self.loss_curve_: list[float] = []
        if self.optimizer == "L-BFGS-B":
            from scipy.optimize import minimize

            def fg(p: np.ndarray) -> tuple[float, np.ndarray]:
                loss, grad = self._loss_grad(p, X, target)
                self.loss_curve_.append(loss)
                return loss, grad

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = minimize(fg, x0, jac=True, method="L-BFGS-B",
                               options={"maxiter": self.max_iter, "ftol": self.tol})  # fmt: skip
            self.params_ = res.x
            self.n_iter_ = int(res.nit)
        else:
            self.params_, self.n_iter_ = self._adam(x0, X, target, rng)

    def _adam(
        self, x0: np.ndarray, X: np.ndarray, target: np.ndarray, rng: np.random.RandomState
    ) -> tuple[np.ndarray, int]:
        """Adam (Kingma and Ba) on shuffled minibatches; ``max_iter`` epochs."""
        p = x0.copy()
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        b1, b2, eps = 0.9, 0.999, 1e-8
        step = 0
        size = max(1, min(self.batch_size, X.shape[0]))
        for _ in range(self.max_iter):
            order = rng.permutation(X.shape[0])
            total = 0.0
            for start in range(0, X.shape[0], size):
                idx = order[start : start + size]
                loss, g = self._loss_grad(p, X[idx], target[idx])
                total += loss * idx.size
                step += 1
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                p -= self.learning_rate * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
            self.loss_curve_.append(total / X.shape[0])
        return p, self.max_iter


class VQC(ClassifierMixin, _Variational):
    """Variational quantum classifier: softmax (or logistic) cross-entropy on the readout."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> VQC:
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        k = len(self.classes_)
        if k < 2:
            raise ValueError("VQC needs samples of at least 2 classes; got 1 class")
        outputs = 1 if k == 2 else k
        self.fmap_ = self._build(X.shape[1], outputs, outputs)
        self._train(X, enc.transform(y), scale0=3.0)
        return self

    def _loss_kind(self) -> str:
        """Logistic cross-entropy for two classes (one logit), softmax for more."""
        return "logistic" if self.observables_.shape[0] == 1 else "softmax"

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)
        if out.shape[1] == 1:
            p = 0.5 * (1.0 + np.tanh(0.5 * out[:, 0]))
            return np.column_stack([1.0 - p, p])
        return softmax(out)

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)
        idx = (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
        return self.classes_[idx]


class VQR(RegressorMixin, _Variational):
    """Variational quantum regressor: mean squared error on a <Z_0> readout, in units of the
    standardised target (its mean and spread are restored on predict)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> VQR:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        self.y_mean_ = float(np.mean(y))
        spread = float(np.std(y))
        self.y_scale_ = spread if spread > 0 else 1.0
        self.fmap_ = self._build(X.shape[1], 1, 1)
        self._train(X, (y - self.y_mean_) / self.y_scale_, scale0=1.0)
        return self

    def _loss_kind(self) -> str:
        return "mse"

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)[:, 0]
        return self.y_mean_ + self.y_scale_ * out
