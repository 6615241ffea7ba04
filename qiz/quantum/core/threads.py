"""Thread counts for the numba kernels: parallel only where the size pays.

Waking the worker threads costs tens of microseconds per parallel region, and far more when
another process holds a core; a small state vector is done sooner by one thread. Entry points
wrap their kernel calls in ``threads_for(num_qubits)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import numba

P = ParamSpec("P")
R = TypeVar("R")
PARALLEL_MIN_QUBITS = 14  # 2^14 amplitudes: below this one thread wins on this machine


@contextmanager
def threads_for(num_qubits: int) -> Iterator[None]:
    """Run the enclosed kernels on one thread when the state is small."""
    if num_qubits >= PARALLEL_MIN_QUBITS:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def sized_by_qubits(method: Callable[P, R]) -> Callable[P, R]:
    """Method decorator: run under ``threads_for(self.num_qubits)``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with threads_for(args[0].num_qubits):  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return wrapper
