"""Writing a get's large files around the page cache (qiz.store.direct), on real files: every
split of a stream lands bit-identical, the descriptor is left in plain mode for its fsync, and
a descriptor that refuses O_DIRECT is reported as such."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiz.store import direct
from qiz.store.direct import ALIGN, Bounce, DirectAppender, align_down, align_up, set_direct
from qiz.store.tree import DIR, FILE, TreeEntry, Unpacker

needs_direct = pytest.mark.skipif(not direct.O_DIRECT, reason="this platform has no O_DIRECT")


def flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_alignment_helpers() -> None:
    assert align_down(0) == 0 and align_up(0) == 0
    assert align_down(ALIGN - 1) == 0 and align_up(1) == ALIGN
    assert align_down(3 * ALIGN + 5) == 3 * ALIGN and align_up(3 * ALIGN + 5) == 4 * ALIGN
    assert Bounce(ALIGN + 1).size == 2 * ALIGN  # rounded up to whole blocks


@needs_direct
def test_a_descriptor_that_refuses_o_direct_is_reported() -> None:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        assert set_direct(fd, True) is False
        assert not flags(fd) & direct.O_DIRECT
    finally:
        os.close(fd)


@needs_direct
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5 * ALIGN + 7), min_size=1, max_size=12),
    bounce_blocks=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_split_of_a_stream_lands_bit_identical(
    tmp_path: Path, sizes: list[int], bounce_blocks: int, seed: int
) -> None:
    rng = random.Random(seed)
    pieces = [rng.randbytes(size) for size in sizes]
    path = tmp_path / f"out-{os.urandom(8).hex()}.bin"
    bounce = Bounce(bounce_blocks * ALIGN)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        appender = DirectAppender(fd, bounce)
        direct_at_start = appender.direct
        for piece in pieces:
            appender.write(piece)
        appender.finish()
        # left in plain mode: the caller's fsync and any later write need no alignment
        assert not flags(fd) & direct.O_DIRECT
        os.fsync(fd)
    finally:
        os.close(fd)
        bounce.close()
    assert path.read_bytes() == b"".join(pieces)
    assert appender.end == sum(sizes)
    if sum(sizes) >= bounce.size:  # at least one whole buffer went out directly
        assert direct_at_start


@needs_direct
def test_unpacker_writes_large_and_small_files_of_a_tree(tmp_path: Path) -> None:
    """A tree with files over and under DIRECT_FROM, streamed in odd pieces, some spanning
    file boundaries: every file comes out whole (the large ones through the appender)."""
    rng = random.Random(7)
    big = direct.DIRECT_FROM + 3 * ALIGN + 11
    files = {"a/big.bin": big, "a/small.txt": 1000, "b.bin": direct.DIRECT_FROM, "c/empty": 0}
    contents = {name: rng.randbytes(size) for name, size in files.items()}
    entries = [TreeEntry(FILE, name, size) for name, size in sorted(files.items())]
    entries = [TreeEntry(DIR, "a", 0), TreeEntry(DIR, "c", 0), *entries]
    entries.sort(key=lambda e: e.path)
    stream = b"".join(contents[e.path] for e in entries if e.type == FILE)
    target = tmp_path / "tree"
    unpacker = Unpacker(target, "dir", entries)
    at = 0
    while at < len(stream):
        size = rng.choice([1, 4095, 4096, 65_537, 300_000])
        unpacker.write_many([stream[at : at + size], stream[at + size : at + 2 * size]])
        at += 2 * size
    unpacker.finish()
    for name, data in contents.items():
        got = (target / name).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name


def test_unpacker_single_large_file_through_write(tmp_path: Path) -> None:
    """The one-piece-at-a-time path (``write``) of a file large enough for direct I/O."""
    data = random.Random(3).randbytes(direct.DIRECT_FROM + 12_345)
    target = tmp_path / "blob.bin"
    unpacker = Unpacker(target, "file", [TreeEntry(FILE, "blob.bin", len(data))])
    for at in range(0, len(data), 100_000):
        unpacker.write(data[at : at + 100_000])
    unpacker.finish()
    assert target.read_bytes() == data


# ------------------------------------------------------------- a holder's pieces and reads


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3 * ALIGN + 7), min_size=1, max_size=12),
    flush_after=st.sets(st.integers(min_value=0, max_value=11)),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_a_piece_writer_lands_any_split_bit_identical(
    tmp_path: Path, sizes: list[int], flush_after: set[int], seed: int
) -> None:
    """Pieces of any sizes, each written through a fresh descriptor; a flush between any two
    (a commit attempt that found bytes missing) leaves the file whole so far, and the pieces
    after it still land."""
    rng = random.Random(seed)
    pieces = [rng.randbytes(size) for size in sizes]
    path = tmp_path / f"col-{os.urandom(8).hex()}.part"
    bounce = Bounce(3 * ALIGN + 7 + 2 * ALIGN)
    writer = direct.PieceWriter()
    written = b""
    try:
        for i, piece in enumerate(pieces):
            assert writer.next_offset == len(written)
            writer.write(path, piece, bounce)
            written += piece
            if i in flush_after:
                writer.flush(path)
                assert (path.read_bytes() if path.exists() else b"") == written
        writer.flush(path)
    finally:
        bounce.close()
    assert (path.read_bytes() if path.exists() else b"") == written
    if direct.O_DIRECT and len(written) >= ALIGN:
        assert writer.direct  # whole blocks went around the page cache
        assert writer.end % ALIGN == 0


def test_a_piece_writer_on_tmpfs_lands_the_bytes() -> None:
    """tmpfs takes O_DIRECT on recent kernels and refuses it at open on older ones: either
    way every byte lands and reads back."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm here")
    path = shm / f"qiz-test-{os.getpid()}-{os.urandom(4).hex()}.part"
    bounce = Bounce(64 * 1024)
    data = random.Random(5).randbytes(40_000)
    try:
        writer = direct.PieceWriter()
        for at in range(0, len(data), 9_000):
            writer.write(path, data[at : at + 9_000], bounce)
        writer.flush(path)
        assert path.read_bytes() == data
        assert direct.read_direct(path, 1234, 20_000, bounce) == data[1234:21_234]
    finally:
        path.unlink(missing_ok=True)
        bounce.close()


def test_without_o_direct_the_writer_and_reader_go_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform without O_DIRECT (the constant is 0 there): plain writes from the first
    piece, each at its offset, and plain reads."""
    monkeypatch.setattr(direct, "O_DIRECT", 0)
    path = tmp_path / "plain.part"
    bounce = Bounce(64 * 1024)
    data = random.Random(6).randbytes(50_000)
    try:
        writer = direct.PieceWriter()
        assert not writer.direct
        for at in range(0, len(data), 7_000):
            writer.write(path, data[at : at + 7_000], bounce)
            assert path.stat().st_size == min(len(data), at + 7_000)  # nothing staged
        assert direct.read_direct(path, 4095, 30_000, bounce) == data[4095:34_095]
    finally:
        bounce.close()
    assert path.read_bytes() == data


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offset=st.integers(min_value=0, max_value=5 * ALIGN),
    length=st.integers(min_value=0, max_value=3 * ALIGN),
)
def test_a_direct_read_returns_what_a_plain_read_does(
    tmp_path: Path, offset: int, length: int
) -> None:
    """Any offset and length, aligned or not, up to and past the end of the file."""
    path = tmp_path / "column.bin"
    if not path.exists():
        path.write_bytes(random.Random(11).randbytes(5 * ALIGN + 123))
    data = path.read_bytes()
    bounce = Bounce(3 * ALIGN + 2 * ALIGN)
    try:
        assert direct.read_direct(path, offset, length, bounce) == data[offset : offset + length]
    finally:
        bounce.close()


def test_a_direct_read_of_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    bounce = Bounce(ALIGN)
    try:
        with pytest.raises(FileNotFoundError):
            direct.read_direct(tmp_path / "gone", 0, 10, bounce)
    finally:
        bounce.close()


# ------------------------------------------------------------ a disk that refuses or fills


class FaultyDisk:
    """``os.pwrite`` and ``os.open`` as a file system that refuses ``O_DIRECT`` (at open or
    at write) and fills up at chosen writes: the failures a real disk gives, injected,
    since this machine's disk does neither on demand."""

    def __init__(self, refuse_open: bool, refuse_write: bool, full_at: set[int]) -> None:
        self.refuse_open = refuse_open
        self.refuse_write = refuse_write
        self.full_at = full_at
        self.writes = 0
        self._pwrite, self._open = os.pwrite, os.open

    def pwrite(self, fd: int, data: object, offset: int) -> int:
        self.writes += 1
        if self.writes in self.full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.refuse_write and flags(fd) & direct.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return self._pwrite(fd, data, offset)  # type: ignore[arg-type]

    def open(self, path: object, how: int, *args: object) -> int:
        if self.refuse_open and how & direct.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return self._open(path, how, *args)  # type: ignore[arg-type]


@needs_direct
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3 * ALIGN + 7), min_size=1, max_size=10),
    refuse=st.sampled_from(["none", "open", "write"]),
    full_at=st.sets(st.integers(min_value=1, max_value=12), max_size=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_a_piece_that_failed_is_sent_again_and_the_file_comes_out_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[int],
    refuse: str,
    full_at: set[int],
    seed: int,
) -> None:
    """Whatever refuses O_DIRECT (nothing, the open, the write) and whichever writes find the
    disk full: each failed piece raises, is sent again from the same offset (as an owner
    does), and the file holds exactly the stream; the writer ends plain when refused."""
    rng = random.Random(seed)
    pieces = [rng.randbytes(size) for size in sizes]
    path = tmp_path / f"col-{os.urandom(8).hex()}.part"
    disk = FaultyDisk(refuse == "open", refuse == "write", full_at)
    bounce = Bounce(3 * ALIGN + 7 + 2 * ALIGN)
    writer = direct.PieceWriter()
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", disk.pwrite)
        patch.setattr(os, "open", disk.open)
        try:
            for piece in pieces:
                at = writer.next_offset
                for _attempt in range(5):
                    try:
                        writer.write(path, piece, bounce)
                        break
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        assert writer.next_offset == at  # nothing moved: send it again
                else:
                    raise AssertionError("a piece failed five times")
            for _attempt in range(5):
                try:
                    writer.flush(path)
                    break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        finally:
            bounce.close()
    assert path.read_bytes() == b"".join(pieces)
    if refuse != "none" and sum(sizes) >= ALIGN:
        assert not writer.direct
