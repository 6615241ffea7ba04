"""A node's event log: what happened, with increasing ids, for long-polling clients.

Events are small dicts ``{"id", "time", "kind", ...}`` kept in a bounded ring; a client asks for
the events after the last id it saw and, if there are none yet, waits up to a timeout. Ids never
repeat within a node's run; a client that fell behind the ring is told so (``"missed": true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class EventLog:
    def __init__(self, size: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._next = 1
        self._changed: asyncio.Event | None = None
        self.clock = clock

    @property
    def last_id(self) -> int:
        return self._next - 1

    def emit(self, kind: str, /, **data: Any) -> int:
        event = {"id": self._next, "time": round(self.clock(), 3), "kind": kind, **data}
        self._next += 1
        self._events.append(event)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return event["id"]

    def since(self, after: int, limit: int = 500) -> tuple[list[dict[str, Any]], bool]:
        """Events with id > ``after`` (oldest first) and whether some were already dropped."""
        out = [e for e in self._events if e["id"] > after][:limit]
        oldest = self._events[0]["id"] if self._events else self._next
        return out, after + 1 < oldest and after < self.last_id

    async def wait(self, after: int, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        events, missed = self.since(after)
        if events or timeout <= 0:
            return events, missed
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return self.since(after)
