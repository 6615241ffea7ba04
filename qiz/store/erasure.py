"""k-of-n erasure coding of one stored chunk with zfec (docs/store.md, "Erasure coding").

zfec is the Reed-Solomon coder Tahoe-LAFS uses: systematic (shares 0..k-1 are the data cut in
k blocks), so a getter that reaches the first k holders decodes with a copy. A chunk of length
L is padded with zeros to k * S, S = ceil(L / k); the padding is cut off again with L, which
the manifest gives, so a share carries no header of its own.

Encoders and decoders are cached per (k, n): building one computes its generator matrix.

The code works byte position by byte position (each parity byte is a combination of the k
data bytes at the same position), so the shares of consecutive chunks of one share size,
laid end to end, are the shares of their concatenated blocks: :func:`encode_run` encodes a
whole piece of a column (several chunks) in one zfec call, the same bytes as
:func:`encode_chunk` chunk by chunk, without the per-chunk calls and copies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import zfec

from qiz import QizError
from qiz.store.limits import MAX_SHARES
from qiz.store.parity import parity_shares
from qiz.store.parity import ready as parity_ready


class ErasureError(QizError, ValueError):
    """Shares or parameters that cannot decode (too few, wrong length, index out of range)."""


def check_params(k: int, n: int) -> None:
    """1 <= k <= n <= MAX_SHARES, or an :class:`ErasureError` saying so."""
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n <= MAX_SHARES):
        raise ErasureError(f"erasure parameters need 1 <= k <= n <= {MAX_SHARES}, got k={k} n={n}")


def share_length(length: int, k: int) -> int:
    """Bytes of each share of a stored chunk of ``length`` bytes: ceil(length / k)."""
    if length < 0 or k < 1:
        raise ErasureError("a chunk length is >= 0 and k >= 1")
    return -(-length // k)


@functools.lru_cache(maxsize=64)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@functools.lru_cache(maxsize=64)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


def encode_chunk(stored: bytes, k: int, n: int) -> list[bytes | memoryview]:
    """The n shares of ``stored``; share j goes to the holder of column j. The data shares
    are views of ``stored`` (only padded ones are copied), the parity shares bytes."""
    check_params(k, n)
    size = share_length(len(stored), k)
    if size == 0:
        return [b""] * n
    view = memoryview(stored)
    blocks: list[bytes | memoryview] = []
    for i in range(k):
        block = view[i * size : (i + 1) * size]
        # blocks past the end of a short chunk are padded with zeros to the share size
        blocks.append(block if len(block) == size else bytes(block) + bytes(size - len(block)))
    if n == k:
        return blocks
    # the code is systematic: shares 0..k-1 are the blocks themselves, so zfec (which holds
    # the GIL while it works) computes only the parity shares
    return blocks + [bytes(b) for b in _encoder(k, n).encode(blocks, list(range(k, n)))]


def encode_run(
    chunks: Sequence[bytes | memoryview],
    k: int,
    n: int,
    columns: Iterable[int],
    *,
    compiled: bool = False,
) -> dict[int, bytes]:
    """For each column j in ``columns``: share j of every chunk of ``chunks``, end to end (the
    bytes of ``b"".join(encode_chunk(c, k, n)[j] for c in chunks)``). Chunks of one share
    size are coded together, one zfec call for all (see the module's docstring); data
    columns cost one copy of their blocks, parity columns none beyond zfec's output.
    ``compiled``: the parity comes from :mod:`qiz.store.parity` (the same bytes, several
    times faster) once its kernel is loaded, which the first such call starts; zfec until
    then."""
    check_params(k, n)
    wanted = sorted(set(columns))
    if any(not 0 <= j < n for j in wanted):
        raise ErasureError(f"a column index is from 0 to {n - 1}")
    runs: list[tuple[int, list[memoryview]]] = []  # (share size, chunks), in order
    for chunk in chunks:
        size = share_length(len(chunk), k)
        if runs and runs[-1][0] == size:
            runs[-1][1].append(memoryview(chunk))
        else:
            runs.append((size, [memoryview(chunk)]))
    parts: dict[int, list[bytes]] = {j: [] for j in wanted}
    parity = [j for j in wanted if j >= k]
    for size, run in runs:
        if size == 0:
            continue
        blocks: list[bytes] = []
        for i in range(k):
            pieces: list[bytes | memoryview] = []
            for view in run:
                block = view[i * size : (i + 1) * size]
                pieces.append(block)
                if len(block) < size:  # past the end of a short chunk: zeros
                    pieces.append(bytes(size - len(block)))
            blocks.append(b"".join(pieces))
        for j in wanted:
            if j < k:
                parts[j].append(blocks[j])
        if parity:
            if compiled and parity_ready():
                coded = parity_shares(blocks, k, n)
                for j in parity:
                    parts[j].append(coded[j - k])
            else:
                for j, share in zip(parity, _encoder(k, n).encode(blocks, parity), strict=True):
                    parts[j].append(bytes(share))
    return {j: got[0] if len(got) == 1 else b"".join(got) for j, got in parts.items()}


def decode_chunk(shares: Mapping[int, bytes], k: int, n: int, length: int) -> bytes:
    """The stored chunk of ``length`` bytes from any k of its shares (index -> bytes).

    More than k shares may be given; the data shares (index < k) are preferred, as they decode
    by copying. Which k were used does not matter to the result when every share is honest; a
    caller that finds a bad chunk hash decodes from another k (docs/store.md).
    """
    check_params(k, n)
    size = share_length(length, k)
    for index, share in shares.items():
        if not (isinstance(index, int) and 0 <= index < n):
            raise ErasureError(f"share index {index} is outside 0..{n - 1}")
        if len(share) != size:
            raise ErasureError(
                f"share {index} is {len(share)} bytes; a chunk of {length} bytes with k={k} "
                f"has shares of {size}"
            )
    if len(shares) < k:
        raise ErasureError(f"decoding needs {k} distinct shares, got {len(shares)}")
    if size == 0:
        return b""
    chosen = sorted(shares)[:k]
    if chosen == list(range(k)):  # a concatenation, cut to length: one copy in all
        views, left = [], length
        for i in chosen:
            view = memoryview(shares[i])[:left]
            views.append(view)
            left -= len(view)
        return b"".join(views)
    # zfec wants each data share at its own position, the parity shares in the gaps.
    slots: list[int | None] = [None] * k
    extra = [i for i in chosen if i >= k]
    for i in chosen:
        if i < k:
            slots[i] = i
    for pos in range(k):
        if slots[pos] is None:
            slots[pos] = extra.pop(0)
    order = [int(i) for i in slots if i is not None]
    blocks = _decoder(k, n).decode([bytes(shares[i]) for i in order], order)
    return b"".join(blocks)[:length]
