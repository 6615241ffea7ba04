"""zfec k-of-n coding of one stored chunk (docs/store.md, "Erasure coding"): any k of the n
shares rebuild the chunk, whatever its length, and the shares are what the format says."""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections.abc import Iterator

import pytest
import zfec
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.store import parity
from qiz.store.erasure import (
    ErasureError,
    check_params,
    decode_chunk,
    encode_chunk,
    encode_run,
    share_length,
)
from qiz.store.parity import coefficients, parity_shares


@st.composite
def coded(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    n = draw(st.integers(1, 16))
    k = draw(st.integers(1, n))
    data = draw(st.binary(max_size=300) | st.sampled_from([b"", b"\x00", b"\xff"]))
    chosen = draw(st.permutations(range(n)))[: draw(st.integers(k, n))]
    return data, k, n, chosen


@given(case=coded())
def test_any_k_shares_decode_to_the_chunk(case: tuple[bytes, int, int, list[int]]) -> None:
    data, k, n, chosen = case
    shares = encode_chunk(data, k, n)
    assert len(shares) == n
    assert {len(s) for s in shares} == {share_length(len(data), k)}
    assert decode_chunk({j: shares[j] for j in chosen}, k, n, len(data)) == data


def test_every_choice_of_three_of_five_decodes() -> None:
    data = os.urandom(10_007)  # not a multiple of k
    shares = encode_chunk(data, 3, 5)
    for chosen in itertools.combinations(range(5), 3):
        assert decode_chunk({j: shares[j] for j in chosen}, 3, 5, len(data)) == data


def test_the_code_is_systematic_and_zero_padded() -> None:
    shares = encode_chunk(b"abcdefg", 3, 5)
    assert shares[:3] == [b"abc", b"def", b"g\x00\x00"]
    assert shares[3] != shares[4]


def test_k_equal_one_stores_whole_copies() -> None:
    assert encode_chunk(b"hello", 1, 4) == [b"hello"] * 4
    assert decode_chunk({3: b"hello"}, 1, 4, 5) == b"hello"


@pytest.mark.parametrize(
    ("length", "k", "size"),
    [(0, 3, 0), (1, 3, 1), (3, 3, 1), (4, 3, 2), (131072, 3, 43691), (131088, 16, 8193)],
)
def test_share_length_is_the_ceiling(length: int, k: int, size: int) -> None:
    assert share_length(length, k) == size


def test_too_few_shares_are_refused() -> None:
    shares = encode_chunk(b"x" * 30, 3, 5)
    with pytest.raises(ErasureError, match="needs 3 distinct shares, got 2"):
        decode_chunk({0: shares[0], 4: shares[4]}, 3, 5, 30)


def test_a_share_of_the_wrong_length_is_refused() -> None:
    shares = encode_chunk(b"x" * 30, 3, 5)
    with pytest.raises(ErasureError, match="share 1 is 9 bytes"):
        decode_chunk({0: shares[0], 1: shares[1][:9], 2: shares[2]}, 3, 5, 30)


def test_a_share_index_out_of_range_is_refused() -> None:
    with pytest.raises(ErasureError, match=r"outside 0\.\.4"):
        decode_chunk({5: b"x", 0: b"x", 1: b"x"}, 3, 5, 3)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (2, 1), (1, 17), (3, "5")])
def test_bad_parameters_are_refused(k: object, n: object) -> None:
    with pytest.raises(ErasureError, match="1 <= k <= n <= 16"):
        check_params(k, n)  # type: ignore[arg-type]
    with pytest.raises(ErasureError):
        encode_chunk(b"x", k, n)  # type: ignore[arg-type]


def test_a_flipped_share_decodes_to_a_different_chunk() -> None:
    """Shares carry no hash: the getter's chunk-hash check is what catches a bad holder."""
    data = os.urandom(999)
    shares = encode_chunk(data, 3, 5)
    bad = bytearray(shares[3])
    bad[0] ^= 1
    assert decode_chunk({1: shares[1], 2: shares[2], 3: bytes(bad)}, 3, 5, 999) != data


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[bytes], int, int, list[int]]:
    n = draw(st.integers(1, 16))
    k = draw(st.integers(1, n))
    size = draw(st.integers(0, 64))
    # mostly chunks of one length (one zfec call), then a shorter last one, as a put has
    chunks = [draw(st.binary(min_size=size, max_size=size)) for _ in range(draw(st.integers(0, 5)))]
    chunks += draw(st.lists(st.binary(max_size=80), max_size=2))
    columns = draw(st.lists(st.integers(0, n - 1), unique=True))
    return chunks, k, n, columns


@pytest.mark.parametrize("compiled", [False, True], ids=["zfec", "compiled"])
@given(case=runs())
def test_a_run_of_chunks_codes_to_their_shares_end_to_end(
    compiled: bool, case: tuple[list[bytes], int, int, list[int]]
) -> None:
    """encode_run gives each column exactly the bytes that chunk-by-chunk coding (zfec's)
    sends it, whichever computes the parity."""
    chunks, k, n, columns = case
    if compiled:
        parity.warm()  # loaded: encode_run then uses it (before, it codes with zfec)
    got = encode_run(chunks, k, n, columns, compiled=compiled)
    assert sorted(got) == sorted(columns)
    for j in columns:
        assert got[j] == b"".join(bytes(encode_chunk(c, k, n)[j]) for c in chunks)


@settings(max_examples=60, deadline=None)
@given(
    kn=st.integers(1, 16).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))),
    size=st.integers(1, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_compiled_parity_is_zfecs(kn: tuple[int, int], size: int, seed: int) -> None:
    """Any k of n up to 16 and any block length (whole 64-bit words or not): the compiled
    kernel's parity shares are byte for byte zfec's, whose coefficients it reads."""
    k, n = kn
    if n == k:
        return
    rng = random.Random(seed)
    blocks = [rng.randbytes(size) for _ in range(k)]
    want = zfec.Encoder(k, n).encode(blocks, list(range(k, n)))
    assert parity_shares(blocks, k, n) == [bytes(share) for share in want]


def test_the_compiled_parity_of_large_blocks_crosses_tiles() -> None:
    """Blocks of several tiles and a partial last tile, as a put's pieces are (218 KiB)."""
    blocks = [os.urandom(218_455) for _ in range(3)]
    want = zfec.Encoder(3, 5).encode(blocks, [3, 4])
    assert parity_shares(blocks, 3, 5) == [bytes(share) for share in want]
    assert coefficients(3, 5).shape == (2, 3)


def test_the_compiled_parity_refuses_what_it_cannot_code() -> None:
    with pytest.raises(ValueError, match="k=3 blocks"):
        parity_shares([b"ab", b"cd"], 3, 5)
    with pytest.raises(ValueError, match="differ in length"):
        parity_shares([b"ab", b"cd", b"e"], 3, 5)


def test_a_piece_of_full_chunks_and_a_short_last_one() -> None:
    """The put's case: five 128 KiB chunks at k=3 (shares padded by one byte), then a short
    chunk; every column, data and parity."""
    chunks = [os.urandom(128 * 1024) for _ in range(5)] + [os.urandom(1000)]
    got = encode_run(chunks, 3, 5, range(5))
    for j in range(5):
        assert got[j] == b"".join(bytes(encode_chunk(c, 3, 5)[j]) for c in chunks)
    with pytest.raises(ErasureError, match="column index"):
        encode_run(chunks, 3, 5, [5])


@pytest.fixture
def unloaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The parity module as in a process that has not loaded its kernel yet."""
    monkeypatch.setattr(parity, "_loaded", threading.Event())
    parity._start_loading.cache_clear()
    yield
    parity._start_loading.cache_clear()


def test_the_kernel_loads_in_a_thread_of_its_own(unloaded: None) -> None:
    """ready() starts loading the kernel and answers at once (False); the parity is zfec's
    meanwhile and after, when ready() says True."""
    blocks = [os.urandom(5000) for _ in range(3)]
    want = encode_run(blocks, 3, 5, range(5))
    assert parity.ready() is False
    assert encode_run(blocks, 3, 5, range(5), compiled=True) == want  # zfec meanwhile
    parity._start_loading().join(120)
    assert parity.ready() is True
    assert encode_run(blocks, 3, 5, range(5), compiled=True) == want


def test_without_the_kernel_zfec_codes(unloaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that cannot load (numba missing or broken here): ready() stays False and
    every parity share is zfec's."""

    def broken() -> None:
        raise ImportError("no numba here")

    monkeypatch.setattr(parity, "_kernel", broken)
    blocks = [os.urandom(3000) for _ in range(3)]
    want = encode_run(blocks, 3, 5, range(5))
    assert parity.ready() is False
    parity._start_loading().join(30)
    assert parity.ready() is False
    assert encode_run(blocks, 3, 5, range(5), compiled=True) == want
