"""Thread counts for the numba kernels: parallel only where the size pays.

Waking the worker threads costs tens of microseconds per parallel region, and far more when
another process holds a core; a small state vector is done sooner by one thread. Entry points
wrap their kernel calls in ``threads_for(num_qubits)``.

Idle workers spin only briefly, then sleep. Numba's threading layer here is OpenMP (GNU
libgomp), whose idle threads spin for about 300,000 iterations between parallel regions; the
fast paths run many short regions, so under one competing busy process on two cores a spinning
worker steals the core the working thread needs. Measured on a VQE evaluation at n = 20 (min
quiet; median beside one busy process): libgomp's default 57-65 ms quiet, 238-262 ms busy;
OMP_WAIT_POLICY=PASSIVE 62-72 ms quiet (10% slower), 116-122 ms busy; GOMP_SPINCOUNT=3000
58-63 ms quiet, 122-135 ms busy. A QAOA evaluation at n = 22 (84-89 ms quiet) was alike
under all three.
libgomp reads its settings once, when the thread pool is loaded, which numba does on the first
parallel call or thread-count query: this module is imported by every kernel entry point before
either, so it sets the spin count here. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
wins.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

SPIN_COUNT = "3000"  # libgomp spins before an idle worker sleeps (its default: 300,000)


def _short_spin() -> None:
    """Ask OpenMP for a short spin before idle workers sleep, unless the user chose a policy."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


_short_spin()

import numba  # noqa: E402  (after the policy: numba may load the OpenMP pool)

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
