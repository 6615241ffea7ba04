"""One owner for a service's background tasks: nothing runs unowned, nothing fails silently.

Every long-lived service of a node (links, DHT, compute, the node itself) keeps one
:class:`TaskOwner` instead of scattered ``ensure_future`` sets. The owner names each task,
logs a task that dies with an exception (with the traceback, once), and ``close()`` cancels and
*awaits* every task it still holds, so a service's ``stop()`` returns only when none of its code
is still running.

Why not :class:`asyncio.TaskGroup` itself: a TaskGroup lives inside one ``async with`` block and
cancels every sibling when one child fails. A node's services start in ``start()`` and end in
``stop()``, and one failed background push must not take the link manager down with it; the
owner gives the same guarantee that matters (every task is owned and awaited at stop) with
failures isolated and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from qiz import QizError

T = TypeVar("T")


class ServiceStopping(QizError, RuntimeError):
    """The service is stopping and takes no new work."""

    http_status = 503


class TaskOwner:
    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.log = logger or logging.getLogger(f"qiz.{name}")
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` in the background, owned by this service."""
        if self.closed:
            coro.close()
            raise ServiceStopping(f"{self.name} is stopping: no new task {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def every(
        self, seconds: float | Callable[[], float], job: Callable[[], Awaitable[Any]], name: str
    ) -> asyncio.Task[None]:
        """Call ``job`` now and then every ``seconds`` (a number, or a callable read before each
        wait); a failed call is logged and the loop goes on. A job that swallows the loop's
        cancellation (a ``wait_for`` deep inside it can, on Python 3.11) still ends the loop:
        it checks ``cancelling()`` after every call, so :meth:`close` never waits for ever."""

        async def loop() -> None:
            me = asyncio.current_task()
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("%s: periodic %s failed", self.name, name)
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                await asyncio.sleep(seconds() if callable(seconds) else seconds)

        return self.spawn(loop(), name)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error(
                "%s failed: %s: %s", task.get_name(), type(exc).__name__, exc, exc_info=exc
            )

    async def close(self) -> None:
        """Cancel every owned task and wait until all of them have ended.

        If the caller itself is cancelled meanwhile (``wait_for(node.stop(), t)`` ran out),
        that cancellation is the caller's and goes on up; the owned tasks were cancelled
        already and end on their own."""
        self.closed = True
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            # asyncio.wait, not gather: a cancelled caller leaves at once (gather would wait
            # for the children's clean-up); each task's outcome is read by _done
            await asyncio.wait(pending)
            self._tasks.difference_update(pending)
