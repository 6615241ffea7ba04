"""Feature maps: how a sample's features become rotation angles, as ``batched.Program``s.

Two families:

* ``zz`` (Havlicek et al., Nature 567, 209 (2019); Qiskit's ``ZZFeatureMap``): ``reps`` x
  [H on every qubit, RZ(2 x_j), then RZZ(2 (pi - x_a)(pi - x_b)) on neighbouring qubits].
  RZ and RZZ differ from Qiskit's P and CX-P-CX by a global phase per sample only, so the
  fidelity kernel is the same. Features are first multiplied by ``bandwidth`` (Shaydulin and
  Wild, PRA 106, 042407 (2022): a bandwidth below 1 keeps the kernel from concentrating).
* ``reuploading`` (Perez-Salinas et al., Quantum 4, 226 (2020)): ``layers`` x [encode every
  feature as RY(w x_j) (then RZ for the next n features, and so on), trainable RY and RZ on
  every qubit, a CZ ladder]. With ``trainable=False`` it is a fixed map for kernels (w =
  bandwidth, no trainable rotations).

When there are more features than qubits, feature j goes to qubit j mod n (alternating RY and
RZ for successive rounds), so any data set fits any register; the encoded data is a matrix
with one column per angle source (``encode``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qiz.ml.batched import Op, Program
from qiz.ml.fused import PhaseRuns

FEATURE_MAPS = ("zz", "reuploading")
ENTANGLEMENTS = ("linear", "ring", "none")


@dataclass
class FeatureMap:
    """A program and the function that turns raw features (batch, d) into its data columns."""

    program: Program
    encode: Callable[[np.ndarray], np.ndarray]
    # for each trainable parameter: its initial value's centre (weights 1, rotations 0)
    init_centre: np.ndarray

    @functools.cached_property
    def real_plan(self) -> RealPlan | None:
        """How :mod:`qiz.ml.fidelity` runs this map on real states, or None when it cannot:
        the program has a gate that makes amplitudes complex (``fused.is_real``), or an angle
        that depends on trainable parameters (a kernel's map has none). Built on first use and
        kept: the map is never changed once built."""
        from qiz.ml import fused

        f = self.program.fused
        linear = self._linear_angles()
        if f is None or linear is None or not fused.is_real(f.kinds, f.mats):
            return None
        return RealPlan(np.ascontiguousarray(f.mats.real), *linear)

    @functools.cached_property
    def fixed_plan(self) -> FixedPlan | None:
        """How :mod:`qiz.ml.fidelity` runs this map on complex states with its runs of
        diagonal rotations merged (``fused.forward_fixed``), or None (no fused program, or a
        trainable angle: then ``Program.states``)."""
        from qiz.ml import fused

        f = self.program.fused
        linear = self._linear_angles()
        if f is None or linear is None:
            return None
        on = [src[0].qubits if src else (int(q),)
              for src, q in zip(f.sources, f.qubits, strict=True)]  # fmt: skip
        runs = fused.phase_runs(self.program.num_qubits, f.kinds, on, f.prefix)
        return FixedPlan(*linear, runs)

    def _linear_angles(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The fused gates' angles as data @ weights + offsets, or None when an angle depends
        on a trainable parameter (or the program has no fused form)."""
        f = self.program.fused
        if f is None:
            return None
        weights = np.zeros((self.program.num_encoded, len(f.sources)))
        offsets = np.zeros(len(f.sources))
        for g, source in enumerate(f.sources):
            for op in source:
                if op.trainable:
                    return None
                if op.feature >= 0:
                    weights[op.feature, g] += op.scale
                offsets[g] += op.offset
        return weights, offsets


@dataclass(frozen=True)
class RealPlan:
    """A fixed real map's program as ``fused.forward_real`` takes it: the real parts of its
    fixed matrices, and its gates' angles as one linear function of the encoded data, angles
    = data @ weights + offsets (one small product where ``Program``'s general rule loops over
    the ops in Python: 27 against 3 us for 100 samples at 8 qubits)."""

    mats: np.ndarray
    weights: np.ndarray  # (encoded columns, fused gates)
    offsets: np.ndarray  # (fused gates,)


@dataclass(frozen=True)
class FixedPlan:
    """A fixed map's program as ``fused.forward_fixed`` takes it: angles = data @ weights +
    offsets (as ``RealPlan``), and where its runs of RZ/RZZ gates are, each run one phase."""

    weights: np.ndarray  # (encoded columns, fused gates)
    offsets: np.ndarray  # (fused gates,)
    runs: PhaseRuns


def identity(x: np.ndarray) -> np.ndarray:
    """The re-uploading map's data columns are the features themselves."""
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class ZZEncoder:
    """The ZZ map's data columns: bandwidth-scaled features folded onto the n qubits, then
    (pi - x_a)(pi - x_b) per entangled pair. A class, not a closure: fitted estimators pickle."""

    num_qubits: int
    num_features: int
    pairs: tuple[tuple[int, int], ...]
    bandwidth: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self.bandwidth * np.asarray(x, dtype=np.float64)
        folded = np.zeros((x.shape[0], self.num_qubits))
        for j in range(self.num_features):
            folded[:, j % self.num_qubits] += x[:, j]
        cols = [folded] + [((np.pi - folded[:, a]) * (np.pi - folded[:, b]))[:, None]
                           for a, b in self.pairs]  # fmt: skip
        return np.hstack(cols)


def _pairs(n: int, entanglement: str) -> list[tuple[int, int]]:
    if entanglement == "none" or n < 2:
        return []
    pairs = [(q, q + 1) for q in range(n - 1)]
    if entanglement == "ring" and n > 2:
        pairs.append((n - 1, 0))
    return pairs


def _check(num_qubits: int, num_features: int, reps: int, entanglement: str) -> None:
    if num_qubits < 1 or num_features < 1 or reps < 1:
        raise ValueError("a feature map needs at least one qubit, one feature and one layer")
    if entanglement not in ENTANGLEMENTS:
        raise ValueError(f"entanglement must be one of {', '.join(ENTANGLEMENTS)}")


def zz_map(
    num_qubits: int,
    num_features: int,
    reps: int = 2,
    entanglement: str = "linear",
    bandwidth: float = 1.0,
) -> FeatureMap:
    """The ZZ feature map (no trainable parameters)."""
    _check(num_qubits, num_features, reps, entanglement)
    n, d = num_qubits, num_features
    # per qubit: the features folded onto it (their sum is the qubit's angle source)
    pairs = _pairs(n, entanglement)
    ops: list[Op] = []
    for _ in range(reps):
        ops += [Op("h", (q,)) for q in range(n)]
        ops += [Op("rz", (q,), feature=q, scale=2.0) for q in range(min(n, d))]
        ops += [Op("rzz", p, feature=n + k, scale=2.0) for k, p in enumerate(pairs)]

    encode = ZZEncoder(n, d, tuple(pairs), bandwidth)
    return FeatureMap(Program(n, ops, 0, n + len(pairs)), encode, np.zeros(0))


def reuploading_map(
    num_qubits: int,
    num_features: int,
    layers: int = 2,
    entanglement: str = "linear",
    *,
    trainable: bool = True,
    bandwidth: float = 1.0,
) -> FeatureMap:
    """The data re-uploading map; trainable encoding weights and rotations when ``trainable``.

    Parameter order: per layer, the d encoding weights, then RY and RZ angles of every qubit."""
    _check(num_qubits, num_features, layers, entanglement)
    n, d = num_qubits, num_features
    ops: list[Op] = []
    centre: list[float] = []
    k = 0
    for _ in range(layers):
        for j in range(d):
            gate = "ry" if (j // n) % 2 == 0 else "rz"
            if trainable:
                ops.append(Op(gate, (j % n,), feature=j, weight=k))
                centre.append(1.0)
                k += 1
            else:
                ops.append(Op(gate, (j % n,), feature=j, scale=bandwidth))
        if trainable:
            for gate in ("ry", "rz"):
                for q in range(n):
                    ops.append(Op(gate, (q,), bias=k))
                    centre.append(0.0)
                    k += 1
        ops += [Op("cz", p) for p in _pairs(n, entanglement)]

    return FeatureMap(Program(n, ops, k, d), identity, np.array(centre))


def make_feature_map(
    name: str,
    num_qubits: int,
    num_features: int,
    reps: int,
    *,
    entanglement: str = "linear",
    bandwidth: float = 1.0,
) -> FeatureMap:
    """A fixed (non-trainable) map by name, for kernels."""
    if name == "zz":
        return zz_map(num_qubits, num_features, reps, entanglement, bandwidth)
    if name == "reuploading":
        return reuploading_map(
            num_qubits, num_features, reps, entanglement, trainable=False, bandwidth=bandwidth
        )
    raise ValueError(f"feature_map must be one of {', '.join(FEATURE_MAPS)}, not {name!r}")
