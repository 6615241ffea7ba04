"""One engine's persistent worker for ``bench/ml.py``: ``bench/quantum_worker.py`` itself (its
JSON-lines protocol, warm-up, timing and memory requests), with the machine-learning workloads
below in place of the quantum ones.

    python bench/ml_worker.py ENGINE        (qiz or lightning)

Workloads, all on BATCH fresh samples of n features (one per qubit) per call, drawn from the
round's seed (``round_params`` gives every engine the same ``marked`` integer):

- ``ml-epoch``: one full-batch training step of the VQC: the logistic loss of the binary VQC
  (data re-uploading, LAYERS layers, <Z_0> readout with a scale and a bias) and its gradient in
  every parameter. Ours: ``VQC._loss_grad``, the estimator's own code path (``qiz.ml.fused``:
  each sample's whole circuit in one numba call, then one adjoint sweep). Lightning: one
  tape per sample, all BATCH tapes in one ``execute_and_compute_derivatives`` call with the
  adjoint method (d<Z_0>/d angle of every gate of every sample), then the same chain rule to
  the parameters in numpy.
- ``ml-kernel``: the BATCH x BATCH fidelity kernel matrix of the fixed re-uploading map (our
  QSVC's default, LAYERS repetitions). Ours: ``QuantumKernel.evaluate``: the map (RY
  encodings and CZ ladders, one feature per qubit) keeps amplitudes real, so its states are
  float64 and K = (S S^T)^2 one real symmetric product (``qiz.ml.fidelity``; a map with RZ or
  ZZ rotations would take the complex path). Lightning: the BATCH states (``qml.state()``,
  one ``execute`` of BATCH tapes; complex128, as PennyLane returns them), then |S S^H|^2 by
  our complex code (``QuantumKernel.from_states``, the path our own complex maps take). A state
  per sample is Lightning's fastest way to this matrix; PennyLane's usual compute-uncompute
  kernel circuit would run one circuit per pair (4,950 for 100 samples).
- ``ml-kernel-zz``: the same matrix (same samples, sizes and bandwidth) on our ZZ feature map
  (``feature_map="zz"``, LAYERS repetitions of H, RZ(2 x_j), RZZ(2 (pi - x_a)(pi - x_b)) on
  neighbouring qubits). Its RZ and RZZ rotations make amplitudes complex, so ours takes the
  COMPLEX path: complex128 states and |S S^H|^2, the same Gram code as Lightning's row. This
  is the kernel workload that does not favour us. Lightning runs the same gates: our
  ``rzz(theta)`` = exp(-i theta/2 Z Z) (``qiz.quantum.core.gates``) is ``qml.IsingZZ(theta)``
  = exp(-i theta/2 Z Z), the same angle; the 1e-8 check of every entry holds them to it.

Building and preprocessing Lightning's tapes happens in ``bind``, untimed, as in
``bench/quantum_peers.py``; only the device calls and the numpy around them are timed.
The answer is (loss, gradient) or (the matrix's mean, the matrix flattened), compared to
1e-8 (relative to the larger of 1 and the value: absolute for kernel entries, which are <= 1).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import quantum_worker
from bench.quantum_peers import Call, Prepared, version_of

BATCH = 100
LAYERS = 2
BANDWIDTH = 0.5  # QuantumKernel's default
WORKLOADS = ("ml-epoch", "ml-kernel", "ml-kernel-zz")
KERNEL_MAPS = {"ml-kernel": "reuploading", "ml-kernel-zz": "zz"}  # QuantumKernel's feature_map
# each engine's code path, as the table labels it (and bench/ml.py checks that its workers ran)
PATHS = {
    ("qiz", "ml-epoch"): "a fused program per sample, one adjoint sweep (complex128)",
    ("qiz", "ml-kernel"): "real states (RY, CZ): a fused program per sample, one syrk (float64)",
    ("lightning", "ml-epoch"): "a tape per sample, one adjoint batch call (complex128)",
    ("lightning", "ml-kernel"): "a state per sample, one batch call, then our |S S^H|^2",
    ("qiz", "ml-kernel-zz"): "complex states (H, RZ, RZZ): a fused program per sample, "
    "then |S S^H|^2 (complex128)",
    ("lightning", "ml-kernel-zz"): "a state per sample, one batch call, then our |S S^H|^2",
}
# the path each kernel workload's map must take in our engine (True: real states); setup_qiz
# labels the path the map really takes, and bench/ml.py refuses a run whose label differs
REAL_KERNEL = {"ml-kernel": True, "ml-kernel-zz": False}
# the labels of our kernel when its map takes the other path than REAL_KERNEL says: what
# setup_qiz reports then, and bench/ml.py refuses the run (its label is not in PATHS)
COMPLEX_KERNEL_PATH = "a map expected real took the complex path (complex128)"
REAL_KERNEL_PATH = "a map expected complex took the real path (float64)"


def inputs(n: int, marked: int, num_params: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, params) of one call: BATCH samples, binary labels, parameters near the VQC's
    initial point (encoding weights ~1, rotations ~0, readout scale 3, bias 0)."""
    rng = np.random.default_rng([n, marked, 2024])
    X = rng.normal(size=(BATCH, n))  # noqa: N806
    y = rng.integers(0, 2, BATCH)
    params = rng.normal(0.0, 0.5, num_params)
    return X, y, params


def _vqc(n: int) -> Any:
    """Our VQC with its circuit and readout built for n features, two classes."""
    from qiz.ml.variational import VQC

    vqc = VQC(num_qubits=n, layers=LAYERS)
    vqc.fmap_ = vqc._build(n, 1, 1)
    return vqc


def _num_params(vqc: Any) -> int:
    return vqc.fmap_.program.num_params + 2  # circuit, readout scale and bias


def _check(workload: str) -> None:
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}")


def setup_qiz(workload: str, n: int, seed: int) -> Prepared:
    _check(workload)
    if workload == "ml-epoch":
        vqc = _vqc(n)
        count = _num_params(vqc)

        def bind_epoch(p: dict[str, Any]) -> Call:
            X, y, params = inputs(n, int(p["marked"]), count)  # noqa: N806
            return lambda: vqc._loss_grad(params, X, y)

        return Prepared(bind_epoch, PATHS["qiz", "ml-epoch"], count)
    from qiz.ml.kernel import QuantumKernel

    kernel = QuantumKernel(feature_map=KERNEL_MAPS[workload], num_qubits=n, reps=LAYERS,
                           bandwidth=BANDWIDTH)  # fmt: skip
    real = kernel.build(n).real_plan is not None  # the path this map takes, as labelled

    def bind_kernel(p: dict[str, Any]) -> Call:
        X, _, _ = inputs(n, int(p["marked"]), 0)  # noqa: N806

        def call() -> tuple[float, np.ndarray]:
            k = kernel.evaluate(X)
            return float(k.mean()), k.ravel()

        return call

    if real != REAL_KERNEL[workload]:  # a label for the path the map did not take
        return Prepared(bind_kernel, REAL_KERNEL_PATH if real else COMPLEX_KERNEL_PATH)
    return Prepared(bind_kernel, PATHS["qiz", workload])


def _tape_ops(program: Any, row: np.ndarray, theta: np.ndarray) -> list[Any]:
    """PennyLane operations of one sample's circuit: our program's gates, angles bound."""
    import pennylane as qml

    # rzz(t) = exp(-i t/2 Z Z) in qiz.quantum.core.gates, as IsingZZ(t): the same angle
    kinds = {"rx": qml.RX, "ry": qml.RY, "rz": qml.RZ, "cz": qml.CZ, "h": qml.Hadamard,
             "rzz": qml.IsingZZ}  # fmt: skip
    ops = []
    circuit = program.circuit(row, theta)
    for inst in circuit.instructions:
        gate = kinds[inst.name]
        ops.append(gate(*inst.params, wires=list(inst.qubits)))
    return ops


def setup_lightning(workload: str, n: int, seed: int) -> Prepared:
    import pennylane as qml

    from qiz.ml.gradients import loss_of

    _check(workload)
    dev = qml.device("lightning.qubit", wires=n)
    if workload == "ml-epoch":
        vqc = _vqc(n)
        program = vqc.fmap_.program
        count = _num_params(vqc)
        trainable = [op for op in program.ops if op.gate in ("rx", "ry", "rz")]
        config = qml.devices.ExecutionConfig(gradient_method="adjoint")
        transforms, config = dev.preprocess(config)

        def bind_epoch(p: dict[str, Any]) -> Call:
            X, y, params = inputs(n, int(p["marked"]), count)  # noqa: N806
            theta, scale, bias = vqc._split(params)
            tapes = []
            for row in X:
                tape = qml.tape.QuantumScript(
                    _tape_ops(program, row, theta), [qml.expval(qml.PauliZ(0))]
                )
                tapes.append(tape)
            batch, _ = transforms(tuple(tapes))
            if len(batch) != len(tapes):
                raise RuntimeError("lightning preprocessing split the tapes")

            def call() -> tuple[float, np.ndarray]:
                results, jacobians = dev.execute_and_compute_derivatives(batch, config)
                e = np.asarray(results, dtype=float)[:, None]  # <Z_0> per sample
                jac = np.asarray(jacobians, dtype=float)  # (BATCH, rotations)
                out = e * scale + bias
                loss, d_out = loss_of(vqc._loss_kind(), out, y, out.shape[0])
                d_angle = (d_out * scale) * jac  # dL/d(angle) per sample and gate
                g = np.zeros(theta.size)
                for j, op in enumerate(trainable):
                    if op.weight >= 0:
                        g[op.weight] += d_angle[:, j] @ X[:, op.feature]
                    if op.bias >= 0:
                        g[op.bias] += d_angle[:, j].sum()
                grad = np.concatenate([g, (d_out * e).sum(axis=0), d_out.sum(axis=0)])
                return loss, grad

            return call

        return Prepared(bind_epoch, PATHS["lightning", "ml-epoch"], count)
    from qiz.ml.feature_maps import make_feature_map
    from qiz.ml.kernel import QuantumKernel

    fmap = make_feature_map(KERNEL_MAPS[workload], n, n, LAYERS, bandwidth=BANDWIDTH)
    program = fmap.program
    transforms, config = dev.preprocess(qml.devices.ExecutionConfig())

    def bind_kernel(p: dict[str, Any]) -> Call:
        X, _, _ = inputs(n, int(p["marked"]), 0)  # noqa: N806
        data = fmap.encode(X)  # the map's angle sources per sample (the ZZ map's pair products)
        tapes = tuple(qml.tape.QuantumScript(_tape_ops(program, row, np.zeros(0)), [qml.state()])
                      for row in data)  # fmt: skip
        batch, _ = transforms(tapes)

        def call() -> tuple[float, np.ndarray]:
            states = np.asarray(dev.execute(batch, config), dtype=np.complex128)
            k = QuantumKernel.from_states(states)  # the same numpy product as ours
            return float(k.mean()), k.ravel()

        return call

    return Prepared(bind_kernel, PATHS["lightning", workload])


SETUPS = {"qiz": setup_qiz, "lightning": setup_lightning}
IMPORTS = {"qiz": ("qiz.ml", "sklearn"), "lightning": ("pennylane", "qiz.ml", "sklearn")}


def main() -> None:
    """``bench/quantum_worker.py``'s loop, with these workloads."""
    quantum_worker.SETUPS = SETUPS
    quantum_worker.IMPORTS = IMPORTS
    quantum_worker.version_of = version_of
    quantum_worker.main()


if __name__ == "__main__":
    main()
