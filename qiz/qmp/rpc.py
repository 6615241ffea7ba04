"""Multiplexed request/response RPC over one QMP link.

Messages are canonical CBOR arrays inside channel APP messages::

    [0, id, method, body]      request          [1, id, body]            result
    [2, id, code, message]     error            [3, id]                  cancel

Kinds 4, 5 and 6 are stream messages (docs/nat.md §4.1), handed to the link's
:class:`~qiz.qmp.streams.StreamMux` (``endpoint.streams``).

``id`` is chosen by the caller (unique among its requests in flight on the link), ``method`` a
text name such as ``"qmp.ping"``, ``body`` any plain CBOR value. Limits: a cap on requests in
flight each way, and on the bytes of the inbound ones (a request over either is answered
``busy`` at once, without running it), a per-call timeout, and cancellation (a caller
that gives up sends ``cancel`` and the handler task is cancelled). Sends wait on the link's
backpressure.

Handler and reply tasks belong to a :class:`~qiz.tasks.TaskOwner`: the link manager's (so that
``LinkManager.close()`` cancels and awaits them) or, for a bare endpoint, the endpoint's own.

A handler is an ``async def`` (it runs in a task of its own and may wait) or a plain function
(it runs inline, in the receive path, and its reply is sent before the next frame is read).
Plain handlers are for answers computed from memory, such as the DHT's FIND_NODE and
FIND_VALUE: they skip the task a request would otherwise cost (about a fifth of a small
call's round trip, docs/qmp.md "RPC"), and cannot be cancelled because they never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qiz import QizError, wire
from qiz.crypto.ids import NodeId
from qiz.qmp.streams import STREAM_KINDS, StreamMux
from qiz.qmp.transport import Link, LinkError
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.rpc")

REQUEST, RESULT, ERROR, CANCEL = 0, 1, 2, 3
MAX_METHOD = 64
# bytes a peer's requests hold on one link: a running request's message (its body lives until
# the handler ends) and a reply waiting for a peer that does not read (a 1 MiB store.read
# answer); what 64 of the 256 KiB messages QMP had before its 1 MiB frames came to
MAX_INFLIGHT_BYTES_IN = 16 * 1024 * 1024


class RpcError(QizError):
    """A call failed: ``code`` is one of ``unknown-method``, ``bad-request``, ``busy``,
    ``internal``, ``timeout``, ``cancelled``, ``link-closed`` or a handler's own code."""

    http_status = 502  # a peer failed or refused: the owner's request itself was fine

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about the caller: its authenticated node id and link."""

    peer_id: NodeId
    link: Link


# An async handler, or a plain function answered inline (see the module docstring).
Handler = Callable[[CallContext, Any], Awaitable[Any] | Any]


class RpcEndpoint:
    """Both sides of RPC on one link: calls out, dispatch in."""

    def __init__(
        self,
        link: Link,
        handlers: dict[str, Handler],
        *,
        max_inflight_in: int = 64,
        max_inflight_out: int = 64,
        max_inflight_bytes_in: int = MAX_INFLIGHT_BYTES_IN,
        default_timeout: float = 10.0,
        max_message: int | None = None,
        tasks: TaskOwner | None = None,
        meter: Callable[[str], str | None] | None = None,
    ) -> None:
        self.link = link
        # asked before a request runs: why the peer may not call this method now, or None
        # (per-peer rate limits, qiz.qmp.rpc_limits)
        self.meter = meter
        self.tasks = tasks or TaskOwner("rpc", log)
        self.handlers = handlers
        self.max_inflight_in = max_inflight_in
        self.max_inflight_bytes_in = max_inflight_bytes_in
        self.default_timeout = default_timeout
        self.max_message = max_message or link.conn.config.max_payload
        self._out_free = max_inflight_out  # in-flight slots for calls (see call)
        self._out_waiters: deque[asyncio.Future[None]] = deque()
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # Call deadlines (loop time) of the calls whose request went out at once, and the one
        # timer that enforces them, armed at the earliest (see _watch): not a timer per call.
        self._due: dict[int, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._context: CallContext | None = None  # the same for every request of the link
        # The link's loop, asked once: on Python 3.11, asking for the running loop costs a
        # getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._running: dict[int, asyncio.Task[None]] = {}
        # bytes each running request holds (its message, and its reply while it waits for the
        # link), and their sum (max_inflight_bytes_in)
        self._held: dict[int, int] = {}
        self._held_bytes = 0
        self._replies_queued = 0  # refusals waiting for the link to take them
        self.bad_messages = 0  # malformed messages from the peer (dropped, counted)
        self.replies_dropped = 0  # refusals never sent: the peer does not read them
        self.last_activity = link.clock()
        self.streams = StreamMux(link, self.tasks)
        link.on_message = self._on_message
        link.closed.add_done_callback(self._on_closed)
        for early in link.take_queued():  # arrived before this endpoint attached
            self._on_message(link, early)

    # ------------------------------------------------------------------ calling

    async def call(self, method: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` on the peer and return its result, or raise :class:`RpcError`."""
        # An in-flight slot: a counter while slots are free (the usual case), a FIFO queue of
        # waiters when not; asyncio.Semaphore did the same in six calls per round trip.
        if self._out_free > 0 and not self._out_waiters:
            self._out_free -= 1
        else:
            await self._wait_out_slot()
        try:
            self._next_id = (self._next_id + 1) % (1 << 62)
            call_id = self._next_id
            loop = self._loop
            future: asyncio.Future[Any] = loop.create_future()
            self._pending[call_id] = future
            limit = timeout or self.default_timeout
            try:
                data = self._encode([REQUEST, call_id, method, body])
                try:
                    sent = self.link.send_nowait(data)  # _send_now, inline
                except LinkError as exc:
                    raise RpcError("link-closed", str(exc)) from None
                if sent:
                    # The fast path: the request is on its way, only the answer is awaited,
                    # its deadline kept by the endpoint's one timer.
                    self._watch(call_id, loop.time() + limit)
                    return await future
                # The timeout covers sending too: a peer that stops reading cannot hold us.
                async with asyncio.timeout(limit):  # not wait_for: see Link.wait_established
                    await self._send_data(data)
                    return await future
            except TimeoutError:
                await self._send_quietly([CANCEL, call_id])
                raise RpcError("timeout", f"{method} got no answer in time") from None
            except asyncio.CancelledError:
                await self._send_quietly([CANCEL, call_id])
                raise
            finally:
                self._pending.pop(call_id, None)
                self._due.pop(call_id, None)
        finally:
            self._release_out_slot()

    async def _wait_out_slot(self) -> None:
        """Wait for an in-flight slot; a releasing call hands its slot over (see
        :meth:`_release_out_slot`), so the count is not touched here."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._out_waiters.append(waiter)
        try:
            await waiter
        except BaseException:  # cancelled, or the call's coroutine closed (GeneratorExit)
            if waiter.done() and not waiter.cancelled():
                self._release_out_slot()  # handed a slot as we were cancelled: pass it on
            elif waiter in self._out_waiters:
                self._out_waiters.remove(waiter)
            raise

    def _release_out_slot(self) -> None:
        """Give the slot to the oldest waiter still waiting, or back to the free count."""
        waiters = self._out_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._out_free += 1

    def _watch(self, call_id: int, due: float) -> None:
        """Fail ``call_id`` with TimeoutError at ``due`` unless it is answered first.

        One timer serves all of the endpoint's calls: it is armed at the earliest deadline and
        only re-armed when a call's deadline comes before it. Calls made one after another
        with one timeout have ever later deadlines, so a busy endpoint arms about one timer
        per timeout, not one per call (a timer per call cost a handle, a heap push and a
        cancel on every round trip)."""
        self._due[call_id] = due
        if self._sweep is None or due < self._sweep_at:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep = self._loop.call_at(due, self._expire_due)
            self._sweep_at = due

    def _expire_due(self) -> None:
        """The endpoint's call timer: fail the calls whose deadline has come, re-arm at the
        earliest of the others. At most ``max_inflight_out`` calls are watched."""
        self._sweep = None
        now = self._loop.time()
        earliest: float | None = None
        for call_id, due in list(self._due.items()):
            if due <= now:
                del self._due[call_id]
                future = self._pending.get(call_id)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError())
            elif earliest is None or due < earliest:
                earliest = due
        if earliest is not None and not self.link.closed.done():
            self._sweep = self._loop.call_at(earliest, self._expire_due)
            self._sweep_at = earliest

    # ------------------------------------------------------------------ internals

    def _encode(self, message: list) -> bytes:
        data = wire.encode(message)
        if len(data) > self.max_message:
            raise RpcError("bad-request", f"message of {len(data)} bytes is over the link limit")
        return data

    def _send_now(self, data: bytes) -> bool:
        """Send at once if the link takes it without waiting (the usual case)."""
        try:
            return self.link.send_nowait(data)
        except LinkError as exc:
            raise RpcError("link-closed", str(exc)) from None

    async def _send_data(self, data: bytes) -> None:
        try:
            await self.link.send(data)
        except LinkError as exc:
            raise RpcError("link-closed", str(exc)) from None

    async def _send(self, message: list) -> None:
        data = self._encode(message)
        if not self._send_now(data):
            await self._send_data(data)

    async def _send_quietly(self, message: list) -> None:
        with contextlib.suppress(RpcError):
            await self._send(message)

    def _on_message(self, link: Link, data: bytes) -> None:
        try:
            message = wire.decode(data, max_size=self.max_message, what="RPC message")
            kind, call_id = message[0], message[1]
            if not isinstance(call_id, int) or isinstance(call_id, bool):
                raise ValueError("bad id")
        except (wire.WireError, ValueError, TypeError, IndexError, KeyError):
            self.bad_messages += 1
            return
        self.last_activity = link.clock()  # only well-formed traffic keeps a link in use
        if kind == RESULT and len(message) == 3 and type(kind) is int:  # the commonest first
            future = self._pending.get(call_id)
            if future is not None and not future.done():
                future.set_result(message[2])
            return
        if isinstance(kind, int) and kind in STREAM_KINDS:
            self.streams.on_message(message)
            return
        if kind == REQUEST and len(message) == 4 and isinstance(message[2], str):
            self._on_request(call_id, message[2], message[3], len(data))
        elif kind == RESULT and len(message) == 3:
            future = self._pending.get(call_id)
            if future is not None and not future.done():
                future.set_result(message[2])
        elif kind == ERROR and len(message) == 4:
            future = self._pending.get(call_id)
            if future is not None and not future.done():
                future.set_exception(RpcError(str(message[2]), str(message[3])))
        elif kind == CANCEL and len(message) == 2:
            task = self._running.pop(call_id, None)
            self._unhold(call_id)
            if task is not None:
                task.cancel()
        else:
            self.bad_messages += 1

    def _on_request(self, call_id: int, method: str, body: Any, size: int) -> None:
        if self.link.closed.done():  # an earlier message of this read closed the link
            return
        handler = self.handlers.get(method) if len(method) <= MAX_METHOD else None
        if handler is None:
            self._reply_later([ERROR, call_id, "unknown-method", f"no method {method[:64]!r}"])
            return
        if len(self._running) >= self.max_inflight_in or call_id in self._running:
            self._reply_later([ERROR, call_id, "busy", "too many requests in flight"])
            return
        if self._held_bytes + size > self.max_inflight_bytes_in:
            self._reply_later([ERROR, call_id, "busy", "too many bytes of requests in flight"])
            return
        refusal = self.meter(method) if self.meter is not None else None
        if refusal is not None:
            self._reply_later([ERROR, call_id, "busy", refusal])
            return
        context = self._context
        if context is None:  # built once: the peer and the link never change
            assert self.link.peer_id is not None
            context = self._context = CallContext(self.link.peer_id, self.link)
        if self.tasks.closed:  # the node is stopping: the link closes next
            self._reply_later([ERROR, call_id, "busy", "the node is stopping"])
            return
        try:
            outcome = handler(context, body)
        except asyncio.CancelledError:  # as for an async handler: no reply
            return
        except Exception as exc:  # a plain handler refused or failed, inline
            self._reply_inline(call_id, _error_reply(call_id, method, exc))
            return
        if type(outcome) not in _PLAIN_RESULTS and inspect.isawaitable(outcome):
            task = self.tasks.spawn(self._run(call_id, method, outcome), method)
            if inspect.iscoroutine(outcome):
                # A link that closes before the task's first step cancels it unstarted: the
                # handler's coroutine is then closed here, not left "never awaited".
                task.add_done_callback(lambda _task, handler_run=outcome: handler_run.close())
            self._running[call_id] = task
            self._hold(call_id, size)
        else:
            self._reply_inline(call_id, [RESULT, call_id, outcome])

    def _reply_inline(self, call_id: int, reply: list) -> None:
        """Send a plain handler's reply now; when the link does not take it at once, the
        request keeps its in-flight slot until a task has sent it (as an async one would)."""
        try:
            data = self._encode(reply)
        except RpcError:  # result too large for one message
            data = self._encode([ERROR, call_id, "internal", "result too large"])
        except wire.WireError as exc:  # a result that is not plain data: ours to fix
            log.error("handler reply for call %d is not plain data: %s", call_id, exc)
            data = self._encode([ERROR, call_id, "internal", "result is not plain data"])
        try:
            if self.link.send_nowait(data):
                return
        except LinkError:
            return
        self._running[call_id] = self.tasks.spawn(self._deliver(call_id, data), "reply")
        self._hold(call_id, len(data))

    async def _deliver(self, call_id: int, data: bytes) -> None:
        try:
            with contextlib.suppress(RpcError):
                await self._send_data(data)
        finally:
            self._release(call_id)

    async def _run(self, call_id: int, method: str, outcome: Awaitable[Any]) -> None:
        # The request keeps its in-flight slot until its reply is on the wire: a peer that
        # sends requests but does not read replies is held to max_inflight_in of them.
        try:
            try:
                reply = [RESULT, call_id, await outcome]
            except asyncio.CancelledError:
                return
            except Exception as exc:
                reply = _error_reply(call_id, method, exc)
            try:
                data = self._encode(reply)  # _send, inline: a coroutine fewer per request
                if not self._send_now(data):
                    if self._owns(call_id):
                        self._hold(call_id, len(data))  # the reply waits: it counts too
                    await self._send_data(data)
            except RpcError as exc:
                if exc.code == "bad-request":  # result too large for one message
                    await self._send_quietly([ERROR, call_id, "internal", "result too large"])
            except wire.WireError as exc:  # a result that is not plain data: ours to fix
                log.error("%s returned what is not plain data: %s", method, exc)
                await self._send_quietly([ERROR, call_id, "internal", "result is not plain data"])
        finally:
            self._release(call_id)

    def _release(self, call_id: int) -> None:
        """Free ``call_id``'s in-flight slot, if it is still the calling task's: a CANCEL
        frees it at once, and the peer may reuse the id before the cancelled task ends; that
        task must not free (and so untrack) the new request's slot."""
        if self._owns(call_id):
            del self._running[call_id]
            self._unhold(call_id)

    def _owns(self, call_id: int) -> bool:
        """Whether ``call_id``'s slot is still the calling task's (a CANCEL may have freed it,
        and the peer reused the id)."""
        return self._running.get(call_id) is asyncio.current_task(self._loop)  # no getpid()

    def _hold(self, call_id: int, size: int) -> None:
        self._held[call_id] = self._held.get(call_id, 0) + size
        self._held_bytes += size

    def _unhold(self, call_id: int) -> None:
        self._held_bytes -= self._held.pop(call_id, 0)

    def _reply_later(self, message: list) -> None:
        """Send a refusal without blocking the receive path. A peer that floods requests and
        does not read the refusals gets no more than ``max_inflight_in`` of them queued; the
        rest are dropped (and counted), as the requests themselves would have been."""
        try:
            if self.link.send_nowait(wire.encode(message)):
                return
        except LinkError:
            return
        if self._replies_queued >= self.max_inflight_in or self.tasks.closed:
            self.replies_dropped += 1
            return
        self._replies_queued += 1
        self.tasks.spawn(self._send_refusal(message), "refusal")

    async def _send_refusal(self, message: list) -> None:
        try:
            await self._send_quietly(message)
        finally:
            self._replies_queued -= 1

    def _on_closed(self, _future: asyncio.Future) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RpcError("link-closed", "the link closed"))
        for task in self._running.values():
            task.cancel()
        self._running.clear()
        self._held.clear()
        self._held_bytes = 0


async def invoke(handler: Handler, context: CallContext, body: Any) -> Any:
    """Run ``handler`` here, without a link (a node calling itself): awaited when async."""
    outcome = handler(context, body)
    return await outcome if inspect.isawaitable(outcome) else outcome


def _error_reply(call_id: int, method: str, exc: Exception) -> list:
    """The ERROR message a handler's exception becomes: its own code for an RpcError,
    ``bad-request`` for a body it could not use, ``internal`` (logged here, not sent) else."""
    if isinstance(exc, RpcError):
        return [ERROR, call_id, exc.code, exc.message]
    if isinstance(exc, ValueError | TypeError | KeyError):
        return [ERROR, call_id, "bad-request", str(exc)[:200]]
    log.error("handler %s failed", method, exc_info=exc)
    return [ERROR, call_id, "internal", type(exc).__name__]


# Results of these exact types are answered inline without asking inspect.isawaitable (an
# abstract-class check per request): none of them can be awaited.
_PLAIN_RESULTS = frozenset({bytes, str, int, float, bool, type(None), list, dict, tuple})
