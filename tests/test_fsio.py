"""qiz.fsio: bounded reads (the limit holds for what is read, not for a stat taken before)."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from qiz.fsio import FileTooLarge, read_bounded


def test_read_bounded_reads_up_to_the_limit_and_refuses_one_byte_more(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 10)
    assert read_bounded(path, 10) == b"a" * 10
    with pytest.raises(FileTooLarge) as info:
        read_bounded(path, 9, "spec file")
    assert str(info.value) == f"spec file {path} is larger than the 9-byte limit"
    assert info.value.errno == errno.EFBIG and isinstance(info.value, OSError)


def test_read_bounded_holds_for_a_fifo(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as writer:
            writer.write(b"x" * 4096)

    thread = threading.Thread(target=feed)
    thread.start()
    with pytest.raises(FileTooLarge, match="1000-byte limit"):
        read_bounded(fifo, 1000)
    thread.join()


def test_read_bounded_leaves_other_errors_to_the_caller(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10)
    with pytest.raises(IsADirectoryError):
        read_bounded(tmp_path, 10)
