"""How much memory a simulation needs, and a clear refusal before allocating what cannot fit."""

from __future__ import annotations

import os

from qiz.quantum.core.errors import ProblemTooLarge

AMPLITUDE_BYTES = 16  # complex128
PRECISION_BYTES = {"double": 16, "single": 8}  # bytes per amplitude: complex128, complex64
MAX_QUBITS = 34  # a hard ceiling regardless of memory: indices and counts stay in int64


def state_bytes(num_qubits: int, precision: str = "double") -> int:
    """Bytes of one state vector of ``num_qubits`` qubits (complex128, or complex64 for
    ``precision="single"``)."""
    return PRECISION_BYTES[precision] << num_qubits


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit if any."""
    limit = _cgroup_limit()
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    return min(avail, limit) if limit else avail
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(pages, limit) if limit else pages


def total_memory() -> int:
    """Bytes of memory this machine (or its cgroup) has in all: MemTotal, capped by a cgroup
    limit. Unlike :func:`available_memory` it does not change with what else is running, so a
    bound derived from it holds from one start to the next."""
    limit = _cgroup_limit()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(total, limit) if limit else total


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdecimal() and int(text) < (1 << 60):
            return int(text)
    return None


def require_memory(
    num_qubits: int, state_vectors: float, available: int | None = None, precision: str = "double"
) -> None:
    """Raise ProblemTooLarge unless ``state_vectors`` states of ``num_qubits`` fit in memory.

    ``state_vectors`` is the peak the algorithm keeps (e.g. 1.1 for QAOA, 2.2 for adjoint VQE),
    in states of ``precision`` ("double": 16 bytes an amplitude, "single": 8).
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {precision!r}")
    one = state_bytes(min(num_qubits, 62), precision)
    needed = int(one * state_vectors) if num_qubits <= 62 else 1 << 62
    avail = available_memory() if available is None else available
    if num_qubits > MAX_QUBITS or needed > avail:
        raise ProblemTooLarge(num_qubits, needed, avail)
