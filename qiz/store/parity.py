"""zfec's parity shares, computed by a compiled kernel several times as fast as zfec.

Why: a put codes every byte of its content (k=3, n=5: two parity blocks, each a combination
of the three data blocks), and zfec's encoder, a byte-at-a-time table lookup, was a quarter
of the putting node's CPU (0.6 ms per MB of content, `docs/store.md`, "Throughput"). The
shares must stay byte for byte what zfec makes: zfec decodes them (gets, repairs) and every
stored column in the pool was coded by it. So this module computes the same linear code.

The code: parity share ``r`` is ``XOR_i c[r][i] * block_i`` in GF(2^8), each byte position on
its own, the products in zfec's field (polynomial x^8 + x^4 + x^3 + x^2 + 1, 0x11d). The
coefficients ``c`` are zfec's own: :func:`coefficients` reads them from zfec by coding unit
blocks, so the matrix is never copied here. Multiplying by ``c`` is XOR-ing the block times
the powers of two set in ``c``, and doubling eight bytes at once in a 64-bit word is
``((x & 0x7f..7f) << 1) ^ (((x >> 7) & 0x01..01) * 0x1d)``: shifts, masks and XORs that the
compiler vectorises (numba, already the state-vector kernels' compiler). Work goes tile by
tile (:data:`TILE` words), so the doublings of one tile stay in the first-level cache.

Measured on this machine, one thread: the kernel alone on 218 KiB blocks, k=3 n=5 6.3 GB/s
against zfec's 1.5, k=10 n=16 2.9 against 0.5; through ``erasure.encode_run`` (with its copies)
per 128-256 KiB chunk, 3.6-3.9 GB/s against 1.4 (``bench/store.py`` repeats that).

Loading the compiled kernel costs about 0.4 s in each process (from numba's cache; compiling
it the first time on a machine, about 0.9 s), so a process loads it only when a large content
is first coded (:data:`COMPILED_FROM`), in a thread of its own (:func:`ready`), and codes
with zfec until it is loaded: no put waits for it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np
import zfec

log = logging.getLogger("qiz.store")

TILE = 256  # 64-bit words per tile: 8 powers of two of one tile are 16 KiB
COMPILED_FROM = 16 << 20  # contents from this size on load the kernel (0.4 s) for later use

_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_LSB = np.uint64(0x0101010101010101)
_POLY = np.uint64(0x1D)  # 0x11d without its x^8 term
_ONE = np.uint64(1)
_SEVEN = np.uint64(7)


@functools.lru_cache(maxsize=64)
def coefficients(k: int, n: int) -> np.ndarray:
    """zfec's parity rows for (k, n): ``c[r][i]`` multiplies data block ``i`` in parity share
    ``k + r``. Read from zfec: coding unit blocks (1 in block ``i``, 0 elsewhere) gives
    column ``i`` of the matrix."""
    encoder = zfec.Encoder(k, n)
    matrix = np.zeros((n - k, k), dtype=np.uint8)
    for i in range(k):
        unit = [bytes([1 if j == i else 0]) for j in range(k)]
        for r, share in enumerate(encoder.encode(unit, list(range(k, n)))):
            matrix[r, i] = share[0]
    matrix.setflags(write=False)
    return matrix


def _parity_words(data: np.ndarray, coefs: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = XOR_i coefs[r, i] * data[i]`` over rows of 64-bit words (the kernel's plain
    Python source; :func:`_kernel` compiles it)."""
    k, words = data.shape
    rows = coefs.shape[0]
    powers = np.empty((8, TILE), np.uint64)  # a tile of block i times 2^b
    acc = np.empty((rows, TILE), np.uint64)
    for start in range(0, words, TILE):
        m = min(TILE, words - start)
        acc[:, :m] = 0
        for i in range(k):
            top = 0  # the powers of two block i needs: up to its column's highest bit
            for r in range(rows):
                while (coefs[r, i] >> top) != 0:
                    top += 1
            for t in range(m):
                powers[0, t] = data[i, start + t]
            for b in range(1, top):
                for t in range(m):
                    x = powers[b - 1, t]
                    powers[b, t] = ((x & _LOW7) << _ONE) ^ (((x >> _SEVEN) & _LSB) * _POLY)
            for r in range(rows):
                c = coefs[r, i]
                for b in range(top):
                    if (c >> b) & 1:
                        for t in range(m):
                            acc[r, t] ^= powers[b, t]
        for r in range(rows):
            for t in range(m):
                out[r, start + t] = acc[r, t]


@functools.cache
def _kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """:func:`_parity_words` compiled (or loaded from numba's cache) at its first use:
    numba is imported only by a node that codes a large content."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(_parity_words)
    except RuntimeError:  # no writable cache directory: compiled in every process (0.9 s)
        return njit(nogil=True)(_parity_words)


def parity_shares(blocks: Sequence[bytes | memoryview], k: int, n: int) -> list[bytes]:
    """Shares ``k .. n-1`` of the k equal-length data ``blocks``: the bytes zfec's
    ``Encoder(k, n).encode(blocks, range(k, n))`` returns."""
    if len(blocks) != k or n <= k:
        raise ValueError(f"parity needs k={k} blocks and n > k, got {len(blocks)} and n={n}")
    size = len(blocks[0])
    if any(len(block) != size for block in blocks):
        raise ValueError("the data blocks differ in length")
    words = -(-size // 8)
    data = np.zeros((k, words), dtype=np.uint64)
    as_bytes = data.view(np.uint8)
    for i, block in enumerate(blocks):
        as_bytes[i, :size] = np.frombuffer(block, dtype=np.uint8)
    out = np.empty((n - k, words), dtype=np.uint64)
    _kernel()(data, coefficients(k, n), out)
    coded = out.view(np.uint8)
    return [coded[r, :size].tobytes() for r in range(n - k)]


_state_lock = threading.Lock()
_loaded = threading.Event()


def warm() -> None:
    """Load the kernel now, in this thread (its first call's cost)."""
    parity_shares([b"\0" * 8] * 2, 2, 3)
    _loaded.set()


def ready() -> bool:
    """Whether the kernel is loaded; the first call starts loading it in a thread of its own
    (a process that never codes a large content never imports numba)."""
    if _loaded.is_set():
        return True
    with _state_lock:
        _start_loading()
    return False


@functools.cache
def _start_loading() -> threading.Thread:
    """The loading thread, started once (under ``_state_lock``)."""
    thread = threading.Thread(target=_load, name="qiz-parity-load", daemon=True)
    thread.start()
    return thread


def _load() -> None:
    try:
        warm()
    except Exception as exc:  # numba missing or broken here: zfec codes everything
        log.warning("store: the compiled parity kernel is unavailable (%s); zfec codes", exc)
