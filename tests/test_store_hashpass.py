"""The put's first pass cut in ranges hashed in threads (qiz.store.chunks.hash_stream): the
same table, root and fingerprints as one pass in order, and a file changed since the scan is
still caught whichever range reads it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from qiz.store import chunks
from qiz.store.merkle import merkle_root
from qiz.store.tree import scan

KIB = 1024
C = 16 * KIB
KEY = bytes(range(32))
# range boundaries fall inside files, on file boundaries and between empty files
SIZES = {"a": 5 * C + 7, "b": 0, "c/d": 3 * C, "c/e": 1, "f": 0, "g": 9 * C - 1, "h": C}


def make_tree(root: Path) -> bytes:
    for rel, size in SIZES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return b"".join((root / rel).read_bytes() for rel in sorted(SIZES, key=str.encode))


@pytest.fixture
def in_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stream of two chunks or more is hashed in ranges."""
    monkeypatch.setattr(chunks, "PARALLEL_FROM", 1)


@pytest.mark.parametrize("workers", [2, 3, 7])
@pytest.mark.parametrize("key", [None, KEY])
def test_ranges_give_the_table_of_one_pass(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_ranges: None,
    workers: int,
    key: bytes | None,
) -> None:
    stream = make_tree(tmp_path / "t")
    found = scan(tmp_path / "t")
    monkeypatch.setattr(chunks, "HASH_WORKERS", workers)
    check = chunks.ChangeCheck()
    table, root = chunks.hash_stream(found, C, key, check)
    pieces = [stream[i : i + C] for i in range(0, len(stream), C)]
    stored = pieces if key is None else [chunks.seal_chunk(key, i, p) for i, p in enumerate(pieces)]
    digests = [hashlib.sha256(s).digest() for s in stored]
    assert table == b"".join(digests)
    assert root == merkle_root(digests)
    assert len(check) == len(pieces)
    # the fingerprints are the ones the second pass compares with, chunk by chunk
    again = list(chunks.iter_stored_chunks(found, C, key, check=check))
    assert [s for _, s in again] == stored


def test_a_file_edited_after_the_ranges_is_caught(tmp_path: Path, in_ranges: None) -> None:
    make_tree(tmp_path / "t")
    found = scan(tmp_path / "t")
    check = chunks.ChangeCheck()
    chunks.hash_stream(found, C, None, check)
    data = bytearray((tmp_path / "t" / "g").read_bytes())
    data[-1] ^= 1  # "g" starts at stream offset 8C + 8: its last byte is in chunk 17
    (tmp_path / "t" / "g").write_bytes(data)
    with pytest.raises(chunks.ChunkError, match="chunk 17 changed since it was hashed"):
        list(chunks.iter_stored_chunks(found, C, check=check))


@pytest.mark.parametrize("victim", ["a", "g", "h"])
@pytest.mark.parametrize(("delta", "message"), [(-1, "shrank"), (2, "grew")])
def test_a_size_change_is_caught_in_any_range(
    tmp_path: Path, in_ranges: None, victim: str, delta: int, message: str
) -> None:
    """ "a" is read by the first range, "g" by both (its end by the second), "h" by the
    last."""
    make_tree(tmp_path / "t")
    found = scan(tmp_path / "t")
    path = tmp_path / "t" / victim
    data = path.read_bytes()
    path.write_bytes(data[:delta] if delta < 0 else data + b"x" * delta)
    with pytest.raises(chunks.ChunkError, match=message):
        chunks.hash_stream(found, C)


def test_a_small_stream_is_one_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under 2 * PARALLEL_FROM chunks no thread is started."""
    (tmp_path / "f").write_bytes(os.urandom(3 * C))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a thread pool for a small stream")

    monkeypatch.setattr(chunks, "ThreadPoolExecutor", refuse)
    table, _ = chunks.hash_stream(scan(tmp_path / "f"), C)
    assert len(table) == 3 * 32
