"""Writing a get's bytes to disk off the event loop, in batches.

Writing into the page cache is not free: on the virtual machines measured here a page the guest
has not used lately (memory it freed goes back to the host) costs the host a fault, about 4 us,
and a 256 MiB get spent about as long in ``write`` as in everything else together. On the
event loop that time stops the links. In a worker thread each write would instead wait for the
interpreter lock on its way back (up to the switch interval, 5 ms, while the loop is busy), so
the writer hands the thread one *batch* at a time: while one batch is written, the next
gathers, and each batch is one ``writev`` per file. At most ``max_pending`` bytes wait beyond
the batch being written (backpressure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

Sink = Callable[[Sequence[bytes]], None]


class BackgroundWriter:
    """Feeds ``sink`` (e.g. :meth:`qiz.store.tree.Unpacker.write_many`) from one thread."""

    def __init__(self, sink: Sink, *, max_pending: int) -> None:
        self.sink = sink
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qiz-store-writer")
        self._batch: list[bytes] = []
        self._batched = 0
        self._inflight: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while ``max_pending`` bytes are already queued. An error of
        an earlier batch is raised here (or by :meth:`drain`)."""
        self._batch.append(data)
        self._batched += len(data)
        self._pump()
        while self._batched >= self.max_pending and self._inflight is not None:
            await asyncio.wait({self._inflight})
            self._pump()

    async def drain(self) -> None:
        """Write everything queued; raise the first error a batch met."""
        self._pump()
        while self._inflight is not None:
            await asyncio.wait({self._inflight})
            self._pump()

    async def settle(self) -> None:
        """Drop what is queued and wait (without blocking the loop, and through a
        cancellation) for the batch being written: the error path, before the caller closes
        the files that batch writes to."""
        self._batch, self._batched = [], 0
        inflight = self._inflight
        if inflight is not None:
            inflight.add_done_callback(_retrieve)
            await asyncio.wait({inflight})

    def close(self) -> None:
        """Stop the thread. Blocks only if a batch is still being written, which
        :meth:`drain` or :meth:`settle` have already waited for on every path of a get;
        safe to call again, whatever state the writer is in."""
        self._batch, self._batched = [], 0
        if self._inflight is not None:
            self._inflight.add_done_callback(_retrieve)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _pump(self) -> None:
        """Collect a finished batch (raising its error) and start the next one. Driven by
        the callers, not by a completion callback, so the state is never behind the
        future's (a done future awaited does not yield to the loop)."""
        finished = self._inflight
        if finished is not None and finished.done():
            self._inflight = None
            if finished.cancelled():
                self._error = self._error or asyncio.CancelledError()
            elif finished.exception() is not None:
                self._error = self._error or finished.exception()
        if self._error is not None:
            raise self._error
        if self._inflight is None and self._batch:
            batch, self._batch, self._batched = self._batch, [], 0
            loop = asyncio.get_running_loop()
            self._inflight = loop.run_in_executor(self._pool, self.sink, batch)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's error as seen (it was raised already, or the get is ending anyway), so
    asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
