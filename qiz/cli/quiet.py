"""Silence library warnings while a command's answer is machine-read.

Under ``--json`` stdout carries one JSON object and stderr is kept for errors: an optimizer's
OptimizeWarning or a numpy RuntimeWarning there would read as a failure to a caller that
checks stderr. The commands report why an optimizer stopped in their output instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_warnings(enabled: bool = True) -> Iterator[None]:
    """Inside, Python warnings are ignored and numpy's floating-point errors are not reported
    (both restored on exit); a no-op when ``enabled`` is false."""
    if not enabled:
        yield
        return
    import numpy as np  # here: the CLI loads this module for every command, numpy only for some

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield
