"""RPC call bookkeeping without a per-call asyncio object: one endpoint timer, armed at the
earliest deadline, enforces every call's own timeout (rpc.RpcEndpoint._watch), and the
in-flight slots are a counter with a FIFO of waiters (RpcEndpoint._wait_out_slot)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.rpc import CallContext, RpcEndpoint, RpcError
from qiz.qmp.transport import Listener, dial

from .helpers import async_eventually as eventually
from .helpers import run


@contextlib.asynccontextmanager
async def _pair(handlers: dict[str, Any], **limits: Any) -> AsyncIterator[RpcEndpoint]:
    """A client endpoint linked to a listener serving ``handlers``; both closed on exit."""
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    now = time.time()
    server_record = PeerRecord.create(server, ["127.0.0.1:1"], seq=1, now=now)
    client_record = PeerRecord.create(client, ["127.0.0.1:1"], seq=1, now=now)

    def on_link(link: Any) -> None:
        RpcEndpoint(link, handlers)

    listener = Listener(server, lambda: server_record, on_link=on_link)
    await listener.start("127.0.0.1:0")
    link = await dial(listener.address, client, client_record, expected=server.node_id)
    rpc = RpcEndpoint(link, {}, **limits)
    try:
        yield rpc
    finally:
        rpc.link.close()
        await listener.close()


class Gate:
    """An RPC handler that holds every call until :meth:`open`, noting the bodies it started.
    Made inside the test's loop (an Event belongs to the loop it is first awaited in)."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self._opened = asyncio.Event()

    async def handler(self, ctx: CallContext, body: Any) -> Any:
        self.started.append(body)
        await self._opened.wait()
        return body

    def open(self) -> None:
        self._opened.set()


def test_each_call_keeps_its_own_deadline_under_one_timer() -> None:
    async def scenario() -> None:
        gate = Gate()
        async with _pair({"gate": gate.handler, "echo": lambda ctx, body: body}) as rpc:
            long_call = asyncio.ensure_future(rpc.call("gate", "long", timeout=30.0))
            await asyncio.sleep(0.05)
            assert rpc._sweep is not None and len(rpc._due) == 1
            # A later call with an earlier deadline: the timer must move earlier for it.
            with pytest.raises(RpcError) as short:
                await rpc.call("gate", "short", timeout=0.2)
            assert short.value.code == "timeout"
            assert not long_call.done()  # its own deadline is far off
            assert len(rpc._due) == 1 and rpc._sweep is not None  # re-armed for the long one
            assert rpc._sweep_at == next(iter(rpc._due.values()))
            gate.open()
            assert await long_call == "long"
            assert not rpc._due and not rpc._pending
            rpc.link.close()
            await rpc.link.wait_closed()
            await asyncio.sleep(0)  # the endpoint hears of the close in a done callback
            assert rpc._sweep is None  # a closed link leaves no timer behind

    run(scenario())


def test_calls_one_after_another_arm_one_timer_not_one_each() -> None:
    async def scenario() -> None:
        async with _pair({"echo": lambda ctx, body: body}) as rpc:
            loop = asyncio.get_running_loop()
            armed: list[float] = []
            call_at = loop.call_at

            def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
                if getattr(callback, "__func__", None) is RpcEndpoint._expire_due:
                    armed.append(when)
                return call_at(when, callback, *args, **kwargs)

            loop.call_at = counting_call_at  # type: ignore[method-assign]
            try:
                for i in range(50):
                    assert await rpc.call("echo", i, timeout=10.0) == i
                assert len(armed) == 1
                assert not rpc._due and not rpc._pending
            finally:
                loop.call_at = call_at  # type: ignore[method-assign]

    run(scenario())


def test_an_answer_after_the_deadline_is_a_timeout_and_the_next_call_works() -> None:
    answered_late: list[Any] = []

    async def slow(ctx: CallContext, body: Any) -> Any:
        # a handler that answers anyway when the caller's CANCEL (sent at its timeout)
        # interrupts it: its answer arrives after the deadline
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.3)
        answered_late.append(body)
        return body

    async def scenario() -> None:
        async with _pair({"slow": slow, "echo": lambda ctx, body: body}) as rpc:
            with pytest.raises(RpcError) as late:
                await rpc.call("slow", 1, timeout=0.1)
            assert late.value.code == "timeout"
            assert await rpc.call("echo", 2, timeout=5.0) == 2
            await eventually(lambda: answered_late == [1], what="the late answer sent")
            await asyncio.sleep(0.05)  # and received: a result for a call no longer pending
            assert await rpc.call("echo", 3) == 3
            assert rpc.bad_messages == 0

    run(scenario())


def test_in_flight_slots_queue_calls_in_order_and_survive_a_cancelled_waiter() -> None:
    async def scenario() -> None:
        gate = Gate()
        started = gate.started
        async with _pair({"gate": gate.handler}, max_inflight_out=2) as rpc:
            calls = [asyncio.ensure_future(rpc.call("gate", i, timeout=10.0)) for i in range(5)]
            await eventually(lambda: len(started) == 2, what="two calls in flight")
            await asyncio.sleep(0.05)  # time for a third to start, if one wrongly could
            assert started == [0, 1]  # two in flight, three waiting for a slot
            calls[2].cancel()  # a waiter gives up: its place goes to the next
            await asyncio.sleep(0)
            gate.open()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert results[:2] == [0, 1] and results[3:] == [3, 4]
            assert isinstance(results[2], asyncio.CancelledError)
            assert sorted(started) == [0, 1, 3, 4]
            assert rpc._out_free == 2 and not rpc._out_waiters  # every slot came back

    run(scenario())


def test_a_call_closed_while_it_waits_for_a_slot_gives_its_place_back() -> None:
    """A waiting call's coroutine closed (not cancelled: ``close()``, or a BaseException thrown
    in) leaves the queue; the slot must not be handed to its dead waiter and lost for good
    (with one slot, every later call would then wait for ever)."""

    async def scenario() -> None:
        gate = Gate()
        async with _pair(
            {"gate": gate.handler, "echo": lambda ctx, body: body}, max_inflight_out=1
        ) as rpc:
            holder = asyncio.ensure_future(rpc.call("gate", 0, timeout=10.0))
            await eventually(lambda: rpc._out_free == 0, what="the only slot taken")
            waiting = rpc.call("echo", 1, timeout=10.0)
            waiting.send(None)  # runs up to its wait for a slot
            assert len(rpc._out_waiters) == 1
            waiting.close()
            assert not rpc._out_waiters  # it left the queue
            gate.open()
            assert await holder == 0
            assert await rpc.call("echo", 2, timeout=5.0) == 2  # the slot came back
            assert rpc._out_free == 1

    run(scenario())
