"""The holder's RPC handlers (qiz.store.holder), called directly with a CallContext: the
protocol round trip, the announcement after a commit, collection, and hostile bodies that
must come back as RpcError and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiz.crypto.ids import ContentId, NodeId
from qiz.qmp.rpc import CallContext, RpcError, invoke
from qiz.store.config import StoreConfig
from qiz.store.holder import METHODS, HolderService
from qiz.store.holdings import TABLE, Holdings
from qiz.store.limits import MAX_PIECE, STORE_WRITE_BURST, STORE_WRITE_RATE
from tests.test_store_holdings import PUBLISHER, Clock, Content, make_content

ALICE = CallContext(PUBLISHER.node_id, None)  # type: ignore[arg-type]
BOB = CallContext(NodeId(bytes([2]) * 32), None)  # type: ignore[arg-type]
DAY = 86_400


@pytest.fixture(scope="module")
def content() -> Content:
    return make_content(PUBLISHER, 300_000, seed=7)


class Service:
    """A holder on a temporary store, with its announcements recorded."""

    def __init__(self, clock: Clock) -> None:
        self.announced: list[tuple[ContentId, float]] = []
        self.holdings = Holdings(None, StoreConfig(max_bytes=64 << 20), clock)
        self.service = HolderService(self.holdings, announce=self._announce, clock=clock)
        self.handlers = self.service.handlers()

    async def _announce(self, cid: ContentId, expires: float) -> None:
        self.announced.append((cid, expires))

    async def call(self, ctx: CallContext, method: str, body: Any) -> Any:
        return await invoke(self.handlers[method], ctx, body)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def holder(clock: Clock):
    h = Service(clock)
    yield h
    h.holdings.close()


async def send_column(h: Service, ctx: CallContext, c: Content, index: int) -> None:
    cid = c.manifest.cid.digest
    column = c.columns[index]
    pieces = [
        h.call(
            ctx,
            "store.put",
            {"cid": cid, "part": index, "offset": o, "data": column[o : o + MAX_PIECE]},
        )
        for o in range(0, len(column), MAX_PIECE)
    ]
    pieces.append(
        h.call(ctx, "store.put", {"cid": cid, "part": TABLE, "offset": 0, "data": c.table})
    )
    assert await asyncio.gather(*pieces) == [{}] * len(pieces)


def test_the_protocol_round_trip(holder: Service, content: Content, clock: Clock):
    cid = content.manifest.cid

    async def scenario() -> None:
        offer = {"manifest": content.raw, "index": 1, "lease": DAY}
        assert await holder.call(ALICE, "store.offer", offer) == {"have": False}
        await send_column(holder, ALICE, content, 1)
        answer = await holder.call(ALICE, "store.commit", {"cid": cid.digest, "index": 1})
        assert answer == {"expires": int(clock.now + DAY)}
        await asyncio.sleep(0)  # the announcement runs in the background
        assert holder.announced == [(cid, clock.now + DAY)]
        assert await holder.call(BOB, "store.have", {"cid": cid.digest}) == {"indices": [1]}
        got = await holder.call(BOB, "store.manifest", {"cid": cid.digest})
        assert got == {"manifest": content.raw}
        read = {"cid": cid.digest, "part": 1, "offset": 10, "length": 1000}
        assert await holder.call(BOB, "store.read", read) == {"data": content.columns[1][10:1010]}
        table = {"cid": cid.digest, "part": TABLE, "offset": 0, "length": len(content.table)}
        assert (await holder.call(BOB, "store.read", table))["data"] == content.table
        # Bob offers the same column: held already, nothing to send, commit confirms
        assert await holder.call(BOB, "store.offer", offer) == {"have": True}
        assert await holder.call(BOB, "store.commit", {"cid": cid.digest, "index": 1}) == {
            "expires": int(clock.now + DAY)
        }
        renew = {"cid": cid.digest, "index": 1, "lease": 2 * DAY}
        assert await holder.call(ALICE, "store.renew", renew) == {
            "expires": int(clock.now + 2 * DAY)
        }
        for ctx in (ALICE, BOB):
            assert await holder.call(ctx, "store.release", {"cid": cid.digest, "index": 1}) == {}
        assert holder.service.collect()["columns"] == 1
        with pytest.raises(RpcError) as excinfo:
            await holder.call(BOB, "store.have", {"cid": cid.digest})
        assert excinfo.value.code == "not-found"
        with pytest.raises(RpcError) as excinfo:
            await holder.call(BOB, "store.manifest", {"cid": cid.digest})
        assert excinfo.value.code == "not-found"
        counters = holder.service.counters
        assert counters["commits"] == 1
        assert counters["offers"] == 2
        assert counters["bytes_written"] == len(content.columns[1]) + len(content.table)
        assert counters["bytes_served"] == 1000 + len(content.table)
        assert counters["collected"] == 1
        assert counters["refused"] == 2

    asyncio.run(scenario())


def test_refusals_carry_the_protocol_codes(holder: Service, content: Content):
    cid = content.manifest.cid.digest

    async def scenario() -> None:
        async def code(ctx: CallContext, method: str, body: dict) -> str:
            with pytest.raises(RpcError) as excinfo:
                await holder.call(ctx, method, body)
            return excinfo.value.code

        put = {"cid": cid, "part": 0, "offset": 0, "data": b"x"}
        assert await code(ALICE, "store.put", put) == "no-offer"
        assert await code(ALICE, "store.commit", {"cid": cid, "index": 0}) == "no-offer"
        bad = {"manifest": b"\xa1\x01\x02", "index": 0, "lease": DAY}
        assert await code(ALICE, "store.offer", bad) == "bad-manifest"
        await holder.call(ALICE, "store.offer", {"manifest": content.raw, "index": 0, "lease": DAY})
        far = {"cid": cid, "part": 0, "offset": len(content.columns[0]), "data": b"x"}
        assert await code(ALICE, "store.put", far) == "out-of-range"
        assert await code(ALICE, "store.commit", {"cid": cid, "index": 0}) == "incomplete"
        await holder.call(
            ALICE,
            "store.put",
            {"cid": cid, "part": TABLE, "offset": 0, "data": bytes(len(content.table))},
        )
        await holder.call(
            ALICE,
            "store.put",
            {"cid": cid, "part": 0, "offset": 0, "data": content.columns[0]},
        )
        assert await code(ALICE, "store.commit", {"cid": cid, "index": 0}) == "bad-table"
        assert holder.announced == []
        renew = {"cid": cid, "index": 0, "lease": DAY}
        assert await code(BOB, "store.renew", renew) == "no-lease"
        assert await code(BOB, "store.release", {"cid": cid, "index": 0}) == "no-lease"
        read = {"cid": cid, "part": 0, "offset": 0, "length": 1}
        assert await code(BOB, "store.read", read) == "not-found"

    asyncio.run(scenario())


def test_a_commit_whose_caller_gives_up_still_ends(holder: Service, content: Content, clock: Clock):
    """Cancelling the commit's RPC (the owner timed out, the link closed) does not cancel the
    thread checking the files: the commit ends when it does, and a retried commit finds the
    lease instead of racing it."""
    cid = content.manifest.cid.digest

    async def scenario() -> None:
        await holder.call(ALICE, "store.offer", {"manifest": content.raw, "index": 3, "lease": DAY})
        await send_column(holder, ALICE, content, 3)
        task = asyncio.get_running_loop().create_task(
            holder.call(ALICE, "store.commit", {"cid": cid, "index": 3})
        )
        await asyncio.sleep(0)  # into the thread
        assert task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(400):
            if holder.holdings.have(content.manifest.cid):
                break
            await asyncio.sleep(0.005)
        assert holder.holdings.have(content.manifest.cid) == [3]
        answer = await holder.call(ALICE, "store.commit", {"cid": cid, "index": 3})
        assert answer == {"expires": int(clock.now + DAY)}
        assert holder.service.counters["commits"] == 1

    asyncio.run(scenario())


def test_the_collect_loop_runs_until_cancelled(holder: Service, content: Content, clock: Clock):
    async def scenario() -> None:
        holder.holdings.offer(ALICE.peer_id, content.raw, 0, DAY)
        clock.now += 3600
        task = asyncio.get_running_loop().create_task(holder.service.collect_loop(0.001))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if holder.holdings.usage()["bytes_reserved"] == 0:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert holder.holdings.usage()["bytes_reserved"] == 0

    asyncio.run(scenario())


def test_index_writes_are_rate_limited_per_peer(holder: Service, content: Content, clock: Clock):
    """A peer replaying offers (each a transaction and an fsync) gets STORE_WRITE_RATE at most;
    reads are not limited, and other peers keep their own budget."""
    offer = {"manifest": content.raw, "index": 0, "lease": DAY}

    async def scenario() -> None:
        for _ in range(STORE_WRITE_BURST):
            await holder.call(ALICE, "store.offer", offer)
        with pytest.raises(RpcError) as excinfo:
            await holder.call(ALICE, "store.offer", offer)
        assert excinfo.value.code == "busy"
        with pytest.raises(RpcError) as excinfo:
            await holder.call(ALICE, "store.have", {"cid": content.manifest.cid.digest})
        assert excinfo.value.code == "not-found"  # answered: reads are not limited
        assert await holder.call(BOB, "store.offer", offer) == {"have": False}
        clock.now += 1.0
        for _ in range(int(STORE_WRITE_RATE)):
            await holder.call(ALICE, "store.offer", offer)
        with pytest.raises(RpcError):
            await holder.call(ALICE, "store.offer", offer)
        assert holder.service.counters["rate_limited"] == 2

    asyncio.run(scenario())


# --------------------------------------------------------------------------- hostile bodies

FIELDS = ("manifest", "index", "lease", "cid", "part", "offset", "data", "length")
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([bytes(32), -1, 0, 2**63, MAX_PIECE, MAX_PIECE + 1, 2**40, -(2**63)]),
)
BODIES = st.one_of(
    VALUES,
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=len(FIELDS)),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(METHODS), body=BODIES)
def test_hostile_bodies_are_refused_with_rpc_errors(holder: Service, method: str, body: Any):
    async def scenario() -> None:
        try:
            await holder.call(ALICE, method, body)
        except RpcError as exc:
            assert exc.code in {
                "bad-request",
                "bad-manifest",
                "no-offer",
                "out-of-range",
                "no-lease",
                "not-found",
            }

    asyncio.run(scenario())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    part=st.integers(-(2**64), 2**64),
    offset=st.integers(-(2**64), 2**64),
    length=st.integers(-(2**64), 2**64),
    size=st.integers(0, 300),
)
def test_hostile_numbers_on_a_live_offer(
    holder: Service, content: Content, part: int, offset: int, length: int, size: int
):
    """With a real offer in place, any part/offset/length either works within the bounds or
    is refused with a code; nothing outside the offered column is ever written or read."""
    cid = content.manifest.cid.digest

    async def scenario() -> None:
        await holder.call(ALICE, "store.offer", {"manifest": content.raw, "index": 0, "lease": DAY})
        bounds = {0: len(content.columns[0]), TABLE: len(content.table)}
        for method, body in (
            ("store.put", {"cid": cid, "part": part, "offset": offset, "data": bytes(size)}),
            ("store.read", {"cid": cid, "part": part, "offset": offset, "length": length}),
        ):
            try:
                await holder.call(ALICE, method, body)
            except RpcError as exc:
                assert exc.code in {"bad-request", "no-offer", "out-of-range", "not-found"}
            else:
                assert method == "store.put"
                assert part in bounds
                assert offset >= 0 and offset + size <= bounds[part]

    asyncio.run(scenario())
