"""Typed events, pushed by the part of a node where they happen, to whoever subscribed.

Links, the DHT and the job coordinator each hold the node's :class:`EventBus` and call
:meth:`EventBus.emit` at the moment something happens (a link comes up, a lookup ends, a task is
decided). The bus stamps the event with the next number of one monotonic sequence, so an
observer can put events from different sources in the order they happened, and hands it to
every subscriber at once: nothing polls a table to find out what changed.

:class:`qiz.event_log.EventLog` is one such subscriber: a bounded ring that long-polling
clients (the HTTP API's ``/api/events``, the dashboard) read with "everything after sequence
number N".

This module sits below every service that emits (``qmp``, ``resolve``, ``compute``) and above
none of them: it imports nothing of qiz, and no asyncio, so the sans-IO cores may emit too.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("qiz.events")


class EventKind(enum.StrEnum):
    """Every kind of event a node emits; the value is the name clients see."""

    PEER_LINKED = "peer.linked"
    PEER_UNLINKED = "peer.unlinked"
    LOOKUP_DONE = "lookup.done"
    RECORD_PUBLISHED = "record.published"
    JOB_SUBMITTED = "job.submitted"
    REPLICA_PLACED = "replica.placed"
    REPLICA_COLLECTED = "replica.collected"
    REPLICA_LOST = "replica.lost"
    REPLICA_STRAGGLING = "replica.straggling"
    TASK_DECIDED = "task.decided"
    JOB_DONE = "job.done"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    STORE_PROGRESS = "store.progress"  # a put or get moved: transfer, op, done, total bytes
    STORE_PUT = "store.put"  # content stored: cid, size, holders
    STORE_GOT = "store.got"  # content fetched and checked: cid, size
    STORE_REPAIRED = "store.repaired"  # a column rebuilt on a new holder: cid, index, holder
    STORE_BAD_SHARE = "store.bad-share"  # a holder served bytes that did not check out


@dataclass(frozen=True)
class Event:
    """One thing that happened: its place in the node's sequence, when, what, and details."""

    seq: int
    time: float
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape clients read: ``{"id", "time", "kind", ...data}``."""
        return {"id": self.seq, "time": round(self.time, 3), "kind": str(self.kind), **self.data}


Subscriber = Callable[[Event], None]


class EventBus:
    """Stamps events with one monotonic sequence and pushes them to subscribers.

    Subscribers are called synchronously, in the emitter's context, and must not block; one that
    raises is logged and the others still get the event (an observer's bug must not break the
    link manager or the coordinator that emitted).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seq = itertools.count(1)
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns the call that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, kind: EventKind, /, **data: Any) -> Event:
        event = Event(next(self._seq), self.clock(), EventKind(kind), data)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("an event subscriber failed on %s", event.kind)
        return event
