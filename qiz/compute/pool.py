"""The worker process pool: simulations run outside the node's event loop.

Each slot is one long-lived process (a fresh interpreter running this module, never a ``fork``
of the node, which has threads and an event loop), talking to the node over a socket pair with
``multiprocessing.connection`` framing. A process runs one task at a time, with
``threads`` numba threads (default 1, so ``slots`` processes fill the cores without fighting
over them, and so a replica's floating-point reductions do not depend on the thread count),
under an address-space limit (``RLIMIT_AS``) so a runaway simulation fails alone with a clear
error. Cancelling the task awaiting :meth:`WorkerPool.run` kills the process that runs it; a
fresh one takes the slot on the next task. A process that dies (killed, out of memory) fails its
task with :class:`TaskFailed`. Children ask the kernel to kill them when the node dies
(``PR_SET_PDEATHSIG``), so a killed node leaves no simulation running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from qiz import QizError, wire
from qiz.compute.errors import TaskCancelled, TaskFailed
from qiz.lifeline import die_with_parent
from qiz.quantum.core.memory import total_memory

BASELINE_ADDRESS_SPACE = 3 << 30  # interpreter + numpy + numba + LLVM, measured ~0.7 GiB
# The bound on ``slots``: each is a whole process, so an unbounded number fork-bombed and
# OOM-killed a host. At most SLOTS_PER_CORE per core (more only queue for the same cores) and
# one per SLOT_MEMORY_FLOOR of the memory available at start (a warm worker holds ~210 MiB
# resident before its first task; the rest is room for a small simulation).
SLOTS_PER_CORE = 2
SLOT_MEMORY_FLOOR = 512 << 20
PROGRESS_INTERVAL = 0.2
MAX_REPLY = 1 << 30  # a task's result: counts over up to 2^26 outcomes fit


def _send(conn: Connection, *message: Any) -> None:
    """A message from a worker process: canonical CBOR (results are plain data)."""
    try:
        data = wire.encode(list(message))
    except wire.WireError as exc:
        data = wire.encode(["error", f"the result is not plain data: {exc}"])
    conn.send_bytes(data)


class SlotsError(QizError, ValueError):
    """A number of worker slots outside 1..:func:`max_slots` (exit 2 / 400)."""


def max_slots(cores: int | None = None, memory: int | None = None) -> int:
    """The most worker processes this machine may run: ``SLOTS_PER_CORE`` x cores, and one
    per ``SLOT_MEMORY_FLOOR`` of the machine's (or cgroup's) total memory; never less than 1.
    Total, not available, memory: a bound that moved with a browser's footprint would let a
    config.toml start today and refuse it tomorrow on the same machine."""
    cores = cores if cores is not None else os.cpu_count() or 1
    memory = memory if memory is not None else total_memory()
    return max(1, min(SLOTS_PER_CORE * cores, memory // SLOT_MEMORY_FLOOR))


def default_slots() -> int:
    """Slots when the owner chose none: one per core, within :func:`max_slots`."""
    return min(os.cpu_count() or 1, max_slots())


def check_slots(slots: object, field: str = "slots") -> int:
    """``slots`` if it is a whole number from 1 to :func:`max_slots`, else :class:`SlotsError`
    naming ``field`` and the bound with its reason."""
    limit = max_slots()
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= limit:
        cores = os.cpu_count() or 1
        raise SlotsError(
            f"{field} must be a whole number from 1 to {limit} (at most {SLOTS_PER_CORE} per "
            f"core on {cores} cores and one per {SLOT_MEMORY_FLOOR >> 20} MiB of memory), "
            f"not {slots!r}"
        )
    return slots


@dataclass(eq=False)
class _Slot:
    process: subprocess.Popen
    conn: Connection
    future: asyncio.Future | None = None
    progress: Callable[[float], None] | None = None
    cancelled: bool = False
    ready: bool = False  # the process finished its imports and warm-up


class WorkerPool:
    """``slots`` worker processes; ``await run(job)`` runs one job dict in one of them."""

    def __init__(
        self,
        slots: int,
        *,
        threads: int = 1,
        memory_limit: int | None = None,
        warm_up: bool = True,
    ) -> None:
        self.slots = check_slots(slots)
        self.threads = threads
        self.memory_limit = memory_limit
        self.warm_up = warm_up
        self._free = asyncio.Semaphore(slots)
        self._idle: list[_Slot] = []
        self._all: set[_Slot] = set()
        self.started_processes = 0
        self.closed = False

    @property
    def ready(self) -> bool:
        """Every slot's process is started and warmed up (benchmarks wait for this)."""
        return len(self._all) == self.slots and all(s.ready for s in self._all)

    @property
    def busy(self) -> int:
        return sum(1 for s in self._all if s.future is not None)

    def _start(self) -> _Slot:
        parent, child = socket.socketpair()
        env = {**os.environ, "NUMBA_NUM_THREADS": str(max(1, self.threads))}
        limit = "" if self.memory_limit is None else str(self.memory_limit)
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "qiz.compute.pool",
                    str(child.fileno()),
                    limit,
                    str(os.getpid()),
                    "warm" if self.warm_up else "cold",
                ],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        conn = Connection(parent.detach())
        slot = _Slot(process, conn)
        self._all.add(slot)
        self.started_processes += 1
        asyncio.get_running_loop().add_reader(conn.fileno(), self._readable, slot)
        return slot

    def warm(self) -> None:
        """Start the processes now, so the first tasks do not wait for the imports."""
        while len(self._all) < self.slots:
            self._idle.append(self._start())

    async def run(
        self, job: dict[str, Any], progress: Callable[[float], None] | None = None
    ) -> Any:
        """Run ``job`` (kind, params, points, seed) in a worker process and return its result.

        Raises TaskFailed (the job's error, or the process died) or, when the awaiting task is
        cancelled, kills the process and re-raises the cancellation.
        """
        if self.closed:
            raise TaskFailed("the worker pool is closed")
        async with self._free:
            slot = self._idle.pop() if self._idle else self._start()
            future = asyncio.get_running_loop().create_future()
            slot.future, slot.progress, slot.cancelled = future, progress, False
            try:
                slot.conn.send(job)
            except (OSError, ValueError) as exc:
                self._retire(slot)
                raise TaskFailed(f"the worker process could not take the task: {exc}") from None
            try:
                return await future
            except asyncio.CancelledError:
                slot.cancelled = True
                self._retire(slot)
                raise
            finally:
                if slot in self._all and slot.future is future:
                    slot.future = slot.progress = None
                    self._idle.append(slot)

    def _readable(self, slot: _Slot) -> None:
        try:
            while slot.conn.poll():
                try:  # canonical CBOR, never pickle: a subverted worker cannot run code here
                    message = wire.decode(slot.conn.recv_bytes(), max_size=MAX_REPLY, what="reply")
                except wire.WireError as exc:
                    future = slot.future
                    self._retire(slot)
                    if future is not None and not future.done():
                        future.set_exception(TaskFailed(f"the worker process sent {exc}"))
                    return
                self._on_message(slot, message)
        except (EOFError, OSError):
            code = _exit_code(slot.process)
            future = slot.future
            self._retire(slot)
            if future is not None and not future.done():
                if slot.cancelled:
                    future.set_exception(TaskCancelled("cancelled"))
                else:
                    future.set_exception(TaskFailed(f"the worker process died ({code})"))

    def _on_message(self, slot: _Slot, message: Any) -> None:
        if not isinstance(message, list) or not 1 <= len(message) <= 2:
            message = ["error", "the worker process sent an unreadable message"]
        tag, value = message[0], message[-1]
        future = slot.future
        if tag == "ready":
            slot.ready = True
            return
        if tag == "progress":
            if slot.progress is not None and isinstance(value, float | int):
                slot.progress(min(1.0, max(0.0, float(value))))
            return
        if future is None or future.done():
            return
        if tag == "ok" and len(message) == 2:
            future.set_result(value)
        else:
            future.set_exception(TaskFailed(str(value)))

    def _retire(self, slot: _Slot) -> None:
        """Stop using a slot's process: kill it, close its pipe."""
        if slot not in self._all:
            return
        self._all.discard(slot)
        if slot in self._idle:
            self._idle.remove(slot)
        with contextlib.suppress(RuntimeError, OSError, ValueError):  # no loop, closed pipe
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
        if slot.process.poll() is None:
            slot.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            slot.process.wait(timeout=2)
        slot.conn.close()
        slot.future = None

    async def close(self) -> None:
        self.closed = True
        for slot in list(self._all):
            future = slot.future
            slot.cancelled = True
            self._retire(slot)
            if future is not None and not future.done():
                future.set_exception(TaskCancelled("the node is stopping"))


def _exit_code(process: subprocess.Popen) -> str:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1)
    code = process.returncode
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


# ----------------------------------------------------------------------------- the child


def _child_main(conn: Connection, memory_limit: int | None, parent: int, warm: bool) -> None:
    """A worker process: set limits, then run jobs from the pipe until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)  # Linux: a killed node leaves no worker behind
    if memory_limit is not None:
        import resource

        limit = memory_limit + BASELINE_ADDRESS_SPACE
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from qiz.compute import (  # after the environment: numba reads it on import
        circuits,
        execute,
        gradient_kind,
        kernel_kind,
    )

    if warm:
        try:
            execute.warm_up()
        except Exception as exc:  # a failed warm-up only slows the first task: say so
            sys.stderr.write(f"qiz worker process: warm-up failed: {type(exc).__name__}: {exc}\n")
    try:
        _send(conn, "ready")
    except (OSError, ValueError):
        return

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        last = [0.0]

        def progress(fraction: float, last: list[float] = last) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                _send(conn, "progress", fraction)

        try:
            if job["kind"] == circuits.KIND:
                result = circuits.run(job["params"], job["seed"], progress)
            elif job["kind"] == kernel_kind.KIND:
                result = kernel_kind.run(job["params"])
            elif job["kind"] == gradient_kind.KIND:
                result = gradient_kind.run(job["params"])
            elif job.get("points") is None:
                result = execute.run(job["kind"], job["params"], job["seed"], progress)
            else:
                result = execute.run_points(
                    job["kind"], job["params"], job["points"], job["seed"], progress
                )
            reply: tuple = ("ok", result)
        except MemoryError:
            reply = ("error", "out of memory: the task needs more than this worker's limit")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            _send(conn, *reply)
        except (OSError, ValueError):
            return


if __name__ == "__main__":
    _fd, _limit, _parent, _warm = sys.argv[1:5]
    _child_main(
        Connection(int(_fd)), int(_limit) if _limit else None, int(_parent), _warm == "warm"
    )
