"""The get's background writer (qiz/store/writer.py): bytes reach the sink in order, a failed
batch is raised to the writer's caller, and no more than the bound waits in memory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from qiz.store.writer import BackgroundWriter
from tests.helpers import run


class SlowSink:
    """Records what it was given, from which thread, and how much was queued at most."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.delay = delay
        self.fail_at = fail_at
        self.got: list[bytes] = []
        self.threads: set[int] = set()

    def __call__(self, pieces: Sequence[bytes]) -> None:
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        for piece in pieces:
            if self.fail_at is not None and len(self.got) == self.fail_at:
                raise OSError(28, "No space left on device")
            self.got.append(piece)


def test_every_piece_reaches_the_sink_in_order_off_the_loop_thread() -> None:
    sink = SlowSink(delay=0.001)
    pieces = [bytes([i % 256]) * 1000 for i in range(300)]

    async def main() -> None:
        writer = BackgroundWriter(sink, max_pending=10_000)
        try:
            for piece in pieces:
                await writer.write(piece)
                assert writer._batched < 10_000  # after each write, under the bound
            await writer.drain()
        finally:
            writer.close()

    run(main(), timeout=30)
    assert sink.got == pieces
    assert threading.get_ident() not in sink.threads


def test_a_failed_batch_is_raised_and_later_pieces_are_not_written() -> None:
    sink = SlowSink(fail_at=5)

    async def main() -> None:
        writer = BackgroundWriter(sink, max_pending=1)  # one piece per batch
        try:
            with pytest.raises(OSError, match="No space left"):
                for _ in range(50):
                    await writer.write(b"x" * 10)
                await writer.drain()
        finally:
            writer.close()

    run(main(), timeout=30)
    assert len(sink.got) == 5


def test_drain_with_nothing_written_returns_and_close_is_idempotent() -> None:
    async def main() -> None:
        writer = BackgroundWriter(SlowSink(), max_pending=1)
        await writer.drain()
        writer.close()
        writer.close()

    run(main(), timeout=10)


def test_settle_waits_for_the_batch_in_the_thread_without_blocking_the_loop() -> None:
    """The error path: settle() drops what is queued and waits for the batch being written
    (the caller closes its files next), while the loop keeps running; a batch's error is not
    left for asyncio to report as never retrieved."""
    sink = SlowSink(delay=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        writer = BackgroundWriter(sink, max_pending=1 << 20)
        ticker = asyncio.ensure_future(tick())
        await writer.write(b"a" * 100)  # starts a batch at once
        await writer.write(b"b" * 100)  # queued behind it: dropped by settle
        await writer.settle()
        ticker.cancel()
        writer.close()
        assert sink.got == [b"a" * 100]
        assert ticks >= 5  # the loop ran while the batch was written

    run(main(), timeout=10)


def test_a_failed_batch_met_while_settling_is_not_logged_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = SlowSink(delay=0.05, fail_at=0)

    async def main() -> None:
        writer = BackgroundWriter(sink, max_pending=1 << 20)
        await writer.write(b"x")
        await writer.settle()
        writer.close()

    run(main(), timeout=10)
    import gc

    gc.collect()
    assert "never retrieved" not in caplog.text
