"""A child process that dies with its parent: the one primitive every process QIZ starts
needs (node processes, the worker pool, the spec checker).

It sits low in the house (beside :mod:`qiz.fsio`) so that the compute layer's children and the
process harness in :mod:`qiz.procs` share it instead of each calling ``prctl`` its own way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent: a ``preexec_fn`` runs between fork and
    exec, where looking a symbol up (dlopen's lock, held by another thread at fork) could
    hang the child."""
    global _PRCTL  # noqa: PLW0603 - a cache filled once
    if _PRCTL is None:
        with contextlib.suppress(Exception):  # not Linux: no such call
            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    return _PRCTL


_PRCTL: Callable[..., int] | None = None


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere: the
    caller's own cleanup still holds there).

    Call it in the child: as (part of) a ``preexec_fn``, or first thing in a child's main.
    ``parent`` is the pid the child expects as its parent: if that parent already died
    between fork and this call, the signal would never come, so the child exits now.
    SIGKILL by default, because a parent that died can no longer stop its children cleanly
    and a child that is stuck must go too."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig))
    if parent is not None and os.getppid() != parent:
        os._exit(1)


PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def guard_memory() -> bool:
    """Make this process non-dumpable: its ``/proc/PID/environ``, ``mem`` and file descriptors
    are then closed to other processes of the same user (ptrace too), such as a bundle the
    node runs for a publisher it follows, which could otherwise read the passphrase a detached
    node was started with from the environment. Root's processes can still look: run a node
    as its own user. A node does it only when its passphrase is in its environment: the rest
    of what it holds is on disk, where a bundle of the same user reads it anyway, and tools
    that find a run's processes by their environment (the demo's leftover check) keep
    working. True when Linux took it."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_DUMPABLE, 0) == 0
