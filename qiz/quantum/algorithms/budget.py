"""The iteration budget handed to scipy's optimizers.

Why a module of its own: VQE and QAOA both call COBYLA, which needs at least ``n + 2``
evaluations for ``n`` parameters. Given fewer, scipy raises the budget itself and prints a
UserWarning on the user's terminal; raising it here runs the same optimisation silently.
"""

from __future__ import annotations

from collections.abc import Sized


def cobyla_budget(method: str, maxiter: int, x0: Sized) -> int:
    """``maxiter``, raised to COBYLA's minimum of ``len(x0) + 2`` when the method is COBYLA."""
    return max(maxiter, len(x0) + 2) if method.upper() == "COBYLA" else maxiter
