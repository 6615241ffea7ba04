"""Reading the quantum processor's input files: Hamiltonians, CNF formulas, edge lists, OpenQASM.

One reader for all of them, so each file is read with a size limit checked on the bytes read
(at most ``max_size + 1``), not on a ``stat`` taken before (a file that grows, or a FIFO, would
pass that), and every failure is the caller's ``QuantumError`` subclass with a message that
starts with the file's name. It is the quantum layer's own copy of ``qiz.fsio.read_bounded``:
the layering lets ``qiz.quantum`` import only itself, ``crypto`` and ``wire``.
"""

from __future__ import annotations

import os
from pathlib import Path

from qiz.quantum.core.errors import QuantumError


def read_text(
    path: str | os.PathLike[str],
    *,
    max_size: int,
    error: type[QuantumError] = QuantumError,
    kind: str = "input file",
    missing_hint: str = "",
) -> str:
    """The UTF-8 text of ``path`` (at most ``max_size`` bytes), or ``error("<path>: ...")``.

    ``kind`` names what the file should be ("a CNF file"), for the directory case;
    ``missing_hint`` is added to the missing-file message ("or use random:N,D"). OS errors
    stay chained as the cause.
    """
    p = Path(path)
    try:
        with p.open("rb") as handle:
            data = handle.read(max_size + 1)
    except FileNotFoundError as exc:
        raise error(f"{p}: no such file{f' ({missing_hint})' if missing_hint else ''}") from exc
    except IsADirectoryError as exc:
        raise error(f"{p}: is a directory, not {kind}") from exc
    except OSError as exc:
        raise error(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_size:
        raise error(f"{p}: larger than the {_size(max_size)} limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n}-byte"
