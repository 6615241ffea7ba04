"""The event bus (one sequence across sources, pushed to subscribers), the event log behind the
long poll, and the task owner every service uses for its background work."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.event_log import EventLog
from qiz.events import EventBus, EventKind
from qiz.tasks import TaskOwner


def test_events_from_several_sources_share_one_increasing_sequence() -> None:
    bus = EventBus(clock=lambda: 100.0)
    seen = []
    bus.subscribe(seen.append)
    links = bus.emit(EventKind.PEER_LINKED, peer="a")
    job = bus.emit(EventKind.JOB_SUBMITTED, job="00")
    lookup = bus.emit(EventKind.LOOKUP_DONE, target="ff")
    assert [e.seq for e in seen] == [links.seq, job.seq, lookup.seq] == [1, 2, 3]
    assert seen[0].as_dict() == {"id": 1, "time": 100.0, "kind": "peer.linked", "peer": "a"}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        EventBus().emit("no.such.kind")  # type: ignore[arg-type]


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got = []

    def broken(event: object) -> None:
        raise RuntimeError("observer bug")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    with caplog.at_level(logging.ERROR):
        bus.emit(EventKind.JOB_DONE, job="00")
    assert len(got) == 1
    assert "subscriber failed" in caplog.text


def test_unsubscribe_stops_delivery() -> None:
    bus = EventBus()
    got = []
    stop = bus.subscribe(got.append)
    bus.emit(EventKind.JOB_DONE)
    stop()
    stop()  # twice is harmless
    bus.emit(EventKind.JOB_DONE)
    assert len(got) == 1


@given(size=st.integers(1, 20), emitted=st.integers(0, 60), after=st.integers(0, 70))
def test_the_log_returns_what_came_after_and_says_when_some_were_dropped(
    size: int, emitted: int, after: int
) -> None:
    bus = EventBus()
    log = EventLog(bus, size=size)
    for _ in range(emitted):
        bus.emit(EventKind.LOOKUP_DONE)
    events, missed = log.since(after)
    kept = range(max(1, emitted - size + 1), emitted + 1)
    assert [e["id"] for e in events] == [i for i in kept if i > after]
    assert missed == (after < emitted and after + 1 < (kept.start if emitted else 1))
    assert log.last_id == emitted


def test_a_long_poll_wakes_on_the_next_event() -> None:
    async def scenario() -> list[dict]:
        bus = EventBus()
        log = EventLog(bus)
        waiting = asyncio.ensure_future(log.wait(0, timeout=30.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        bus.emit(EventKind.PEER_UNLINKED, peer="b")
        events, missed = await asyncio.wait_for(waiting, 5.0)
        assert not missed
        return events

    (event,) = asyncio.run(scenario())
    assert event["kind"] == "peer.unlinked"


def test_close_cancels_and_awaits_every_owned_task() -> None:
    async def scenario() -> tuple[list[str], int]:
        owner = TaskOwner("test")
        ended: list[str] = []

        async def forever(name: str) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)  # cleanup that itself awaits
                ended.append(name)

        for name in ("a", "b", "c"):
            owner.spawn(forever(name), name)
        await asyncio.sleep(0)
        await owner.close()
        return sorted(ended), len(owner)

    ended, left = asyncio.run(scenario())
    assert ended == ["a", "b", "c"]
    assert left == 0


def test_a_failed_task_is_logged_and_a_closed_owner_refuses_new_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        owner = TaskOwner("svc")

        async def boom() -> None:
            raise ValueError("went wrong")

        task = owner.spawn(boom(), "boom")
        with pytest.raises(ValueError):
            await task
        await owner.close()

        async def late() -> None:
            return None

        with pytest.raises(RuntimeError, match="stopping"):
            owner.spawn(late(), "late")

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert "svc:boom failed: ValueError: went wrong" in caplog.text


def test_a_periodic_job_goes_on_after_a_failure() -> None:
    async def scenario() -> int:
        owner = TaskOwner("loop")
        calls = 0
        three = asyncio.Event()

        async def job() -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                three.set()
            if calls == 1:
                raise OSError("first call fails")

        owner.every(0.0, job, "job")
        await asyncio.wait_for(three.wait(), 5.0)
        await owner.close()
        return calls

    assert asyncio.run(scenario()) >= 3


def test_a_caller_cancelled_while_closing_is_cancelled_still() -> None:
    """``wait_for(service.stop(), t)`` must be able to time out: the owner passes the caller's
    own cancellation on instead of swallowing it."""

    async def scenario() -> bool:
        owner = TaskOwner("slow")
        release = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()  # a clean-up that takes its time

        owner.spawn(stubborn(), "stubborn")
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(owner.close())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        release.set()
        await owner.close()
        return len(owner) == 0

    assert asyncio.run(scenario())


def test_a_long_poll_cancelled_as_its_event_arrives_is_cancelled() -> None:
    """The event and the cancellation land in the same turn: the poll must end cancelled
    (``asyncio.wait_for`` on Python 3.11 returned the events and lost the cancel)."""

    async def scenario() -> bool:
        bus = EventBus()
        log = EventLog(bus)
        waiting = asyncio.ensure_future(log.wait(0, timeout=30.0))
        await asyncio.sleep(0)
        bus.emit(EventKind.PEER_UNLINKED, peer="b")
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(scenario())


def test_a_periodic_job_that_swallows_its_cancellation_still_ends_its_loop() -> None:
    """A job that catches the loop's CancelledError and returns: close() still returns."""

    async def scenario() -> int:
        owner = TaskOwner("test")
        calls = 0
        started = asyncio.Event()

        async def swallowing() -> None:
            nonlocal calls
            calls += 1
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return  # the defect: the cancel is dropped here

        owner.every(0.0, swallowing, "swallow")
        await started.wait()
        closing = asyncio.ensure_future(owner.close())
        done, _ = await asyncio.wait({closing}, timeout=5.0)  # a hang guard, not a speed test
        assert done, "close() waited on a loop that lost its cancellation"
        return calls

    assert asyncio.run(scenario()) == 1
