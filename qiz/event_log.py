"""The last events of a node, for clients that ask "what happened after N?" and wait.

:class:`EventLog` subscribes to the node's :class:`~qiz.events.EventBus` and keeps a bounded
ring; the HTTP API's ``/api/events`` and the control socket's ``events`` operation read it with
a long poll. It lives apart from the bus because waiting needs asyncio, and the bus must stay
importable by the sans-IO cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from qiz.events import Event, EventBus


class EventLog:
    """The last ``size`` events of a bus, for clients that ask "what happened after N?"."""

    def __init__(self, bus: EventBus, size: int = 2000) -> None:
        self._events: deque[Event] = deque(maxlen=size)
        self._last = 0
        self._changed: asyncio.Event | None = None
        self.closed = False
        self.waiting = 0  # clients in a long poll right now
        self.unsubscribe = bus.subscribe(self._append)

    @property
    def last_id(self) -> int:
        return self._last

    def _append(self, event: Event) -> None:
        self._events.append(event)
        self._last = event.seq
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def close(self) -> None:
        """The node is stopping: every waiting client gets its answer now, and later ones do
        not wait (a dashboard's long poll must not hold the node's stop for 20 s)."""
        self.closed = True
        self.unsubscribe()
        self._wake()

    def since(self, after: int, limit: int = 500) -> tuple[list[dict[str, Any]], bool]:
        """Events with a sequence number above ``after`` (oldest first), as dicts, and whether
        some of them were already dropped from the ring."""
        out = [e.as_dict() for e in self._events if e.seq > after][:limit]
        oldest = self._events[0].seq if self._events else self._last + 1
        return out, after + 1 < oldest and after < self._last

    async def wait(self, after: int, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """Like :meth:`since`, but waits up to ``timeout`` seconds for a first event."""
        events, missed = self.since(after)
        if events or timeout <= 0 or self.closed:
            return events, missed
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        self.waiting += 1
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
            # that arrives in the same turn as the event (a stopping node's request then
            # returns instead of being cancelled)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await changed.wait()
        finally:
            self.waiting -= 1
        return self.since(after)
