"""Fidelity-kernel arithmetic without scikit-learn: feature-map states in bounded blocks, and
|<x|y>|^2 for every pair in one matrix product.

:class:`qiz.ml.kernel.QuantumKernel` (the scikit-learn face) and the mesh's ``kernel`` job
kind (qiz/compute/kernel_kind.py, on nodes that may not have scikit-learn) both compute here,
so a block computed by a worker is bit for bit the block this machine computes.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import numpy as np

from qiz.ml import fused
from qiz.ml.feature_maps import FeatureMap, FixedPlan, RealPlan, make_feature_map

# amplitudes of one block of states (16 B each complex: 64 MiB; 8 B each real: 32 MiB)
BLOCK_AMPLITUDES = 1 << 22
MAX_QUBITS = 16

# bytes of one mesh kernel task's result (a block of floats, 9 bytes each in CBOR): under the
# RPC message limit (1 MiB; 256 KiB until session 16, when this was chosen) with room for the
# claim around it (qiz/compute/kernel_kind.py)
MAX_KERNEL_RESULT = 192 * 1024


def max_rows(cols: int) -> int:
    """The most rows of X one kernel task may take when Y has ``cols`` rows."""
    return max(1, MAX_KERNEL_RESULT // (9 * cols + 8))


# multiply-adds of a Gram product below which BLAS runs on one thread: below it a product
# takes milliseconds, and a second OpenBLAS thread saves little there while, beside another
# busy process, its waiting costs much more (a 100 x 16 complex product measured 0.024 ms on
# one thread, 16 ms on two; 100 x 4096, 6.3 against 88 ms)
BLAS_PARALLEL_WORK = 1 << 28


@functools.cache
def _blas() -> tuple[object, ...]:
    """numpy's BLAS libraries (threadpoolctl's controllers of them), found once."""
    from threadpoolctl import ThreadpoolController  # comes with scikit-learn

    return tuple(c for c in ThreadpoolController().lib_controllers if c.user_api == "blas")


@contextlib.contextmanager
def _one_blas_thread(libs: tuple[object, ...]) -> Iterator[None]:
    """BLAS on one thread inside, its thread counts restored after. The libraries' own setters,
    not ``ThreadpoolController.limit``: that builds a limiter over every library per call (12
    us warm, several times that cold, against a 20 us product at 4 qubits)."""
    with _PIN.lock:  # the count is process-wide: threads overlapping here share one pin
        if _PIN.inside == 0:
            _PIN.previous = [lib.num_threads for lib in libs]  # type: ignore[attr-defined]
            for lib in libs:
                lib.set_num_threads(1)  # type: ignore[attr-defined]
        _PIN.inside += 1
    try:
        yield
    finally:
        with _PIN.lock:
            _PIN.inside -= 1
            if _PIN.inside == 0:
                for lib, count in zip(libs, _PIN.previous, strict=True):
                    lib.set_num_threads(count)  # type: ignore[attr-defined]


class _BlasPin:
    """Threads inside :func:`_one_blas_thread` now, and the counts to restore when the last
    one leaves: a second thread saving the pinned count (1) and restoring it last would pin
    BLAS to one thread for good."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.previous: list[int] = []


_PIN = _BlasPin()


def _blas_threads(work: int) -> contextlib.AbstractContextManager[None]:
    """One BLAS thread for a product of fewer than BLAS_PARALLEL_WORK multiply-adds."""
    if work >= BLAS_PARALLEL_WORK:
        return contextlib.nullcontext()
    try:
        libs = _blas()
    except ImportError:  # without threadpoolctl, BLAS's default
        return contextlib.nullcontext()
    return _one_blas_thread(libs)


@functools.lru_cache(maxsize=32)
def feature_map(
    name: str,
    num_qubits: int,
    num_features: int,
    reps: int,
    *,
    entanglement: str,
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


def real_mats(fmap: FeatureMap) -> np.ndarray | None:
    """The real parts of the map's fixed matrices when it runs on real states (its
    ``real_plan``: RY, real fixed gates and sign tables only, no trainable angle), else None
    (the complex path)."""
    plan = fmap.real_plan
    return None if plan is None else plan.mats


def _plan_angles(fmap: FeatureMap, X: np.ndarray, plan: RealPlan | FixedPlan) -> np.ndarray:  # noqa: N803
    """Every gate's angle for every row of X: a fixed map's angles are one product."""
    program = fmap.program
    data = np.asarray(fmap.encode(X), dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != program.num_encoded:
        raise ValueError(f"expected data of shape (batch, {program.num_encoded})")
    return data @ plan.weights + plan.offsets


def _real_block(fmap: FeatureMap, X: np.ndarray, out: np.ndarray, plan: RealPlan) -> None:  # noqa: N803
    """A real map's states of the rows of X into ``out`` (float64), one parallel numba call."""
    program, f = fmap.program, fmap.program.fused
    assert f is not None
    angles = _plan_angles(fmap, X, plan)
    with fused.threads_for_fused(X.shape[0], program.num_qubits, fused.FUSED_REAL_PARALLEL_LOG2):
        fused.forward_real(out, f.kinds, f.qubits, f.slots, angles, plan.mats, f.diags, f.prefix)


def _fixed_block(fmap: FeatureMap, X: np.ndarray, out: np.ndarray, plan: FixedPlan) -> None:  # noqa: N803
    """A fixed complex map's states of the rows of X into ``out`` (complex128), one parallel
    numba call with each run of RZ/RZZ gates one phase pass (``fused.forward_fixed``)."""
    program, f = fmap.program, fmap.program.fused
    assert f is not None
    angles = _plan_angles(fmap, X, plan)
    r = plan.runs
    with fused.threads_for_fused(X.shape[0], program.num_qubits):
        fused.forward_fixed(out, f.kinds, f.qubits, f.slots, angles, f.mats, f.diags, f.prefix,
                            r.stop, r.run, r.owner, r.term, r.partners, r.counts)  # fmt: skip


def states(fmap: FeatureMap, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn's name
    """|phi(x)> for every row of X, shape (len(X), 2**n), in blocks of bounded size.

    A real map (RY, CZ and real fixed gates only, as the fixed re-uploading map with one
    feature per qubit: :func:`real_mats`) gives float64 states, the same numbers as the
    complex path's real parts (its imaginary parts are exactly zero): half the memory, and
    :func:`gram` then takes a real product, a quarter of the complex one's multiplications.
    Other maps (ZZ's RZ and RZZ, RZ encodings) give complex128 states; a fixed map's runs of
    RZ/RZZ gates are then one phase pass each (its ``fixed_plan``, ``fused.forward_fixed``)."""
    rows = max(1, BLOCK_AMPLITUDES >> fmap.program.num_qubits)
    plan = fmap.real_plan
    if plan is not None:
        out = np.empty((X.shape[0], 1 << fmap.program.num_qubits))
        for start in range(0, X.shape[0], rows):
            _real_block(fmap, X[start : start + rows], out[start : start + rows], plan)
        return out
    fixed = fmap.fixed_plan
    if fixed is not None:
        out = np.empty((X.shape[0], 1 << fmap.program.num_qubits), dtype=np.complex128)
        for start in range(0, X.shape[0], rows):
            _fixed_block(fmap, X[start : start + rows], out[start : start + rows], fixed)
        return out
    if X.shape[0] <= rows:  # one block: its states are the answer, not copied
        return fmap.program.states(fmap.encode(X))
    out = np.empty((X.shape[0], 1 << fmap.program.num_qubits), dtype=np.complex128)
    for start in range(0, X.shape[0], rows):
        block = X[start : start + rows]
        out[start : start + rows] = fmap.program.states(fmap.encode(block))
    return out


def gram(sx: np.ndarray, sy: np.ndarray | None = None) -> np.ndarray:
    """|<x|y>|^2 for every pair: one matrix product. Symmetric when sy is None.

    Real states (a real map, see :func:`states`): K = (S_x S_y^T)^2, and for one set S S^T is
    a symmetric product that numpy hands to BLAS's syrk (one triangle computed, the other
    copied: exactly symmetric). Complex states: the Gram matrix of one set is taken in real
    arithmetic: with S = A + iB, Re S S^H is the real product of S's (re, im) float view with
    itself (syrk again) and Im S S^H = B A^T - A B^T from one real product: half the
    multiplications of the complex product (measured at 100 x 4096 on one thread: 3.5 ms
    against 5.3 ms; the real states' product: 0.9 ms)."""
    real = sx.dtype == np.float64 and (sy is None or sy.dtype == np.float64)
    if real:
        if sy is None:
            with _blas_threads(sx.shape[0] ** 2 * sx.shape[1] // 2):
                g = sx @ sx.T
            return g * g
        with _blas_threads(sx.shape[0] * sy.shape[0] * sx.shape[1]):
            g = sx @ sy.T
        return g * g
    if sy is None:
        v = np.ascontiguousarray(sx, dtype=np.complex128).view(np.float64)
        with _blas_threads(sx.shape[0] ** 2 * sx.shape[1] * 2):
            re = v @ v.T
            ab = np.ascontiguousarray(v[:, 0::2]) @ np.ascontiguousarray(v[:, 1::2]).T
        im = ab - ab.T
        k = re * re + im * im
        return 0.5 * (k + k.T)
    sx = np.asarray(sx, dtype=np.complex128)  # a real set beside a complex one
    sy = np.asarray(sy, dtype=np.complex128)
    with _blas_threads(sx.shape[0] * sy.shape[0] * sx.shape[1] * 4):
        overlap = sx.conj() @ sy.T
    return overlap.real**2 + overlap.imag**2
