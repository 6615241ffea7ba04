"""A node's own recent past (qiz/history.py): the ring keeps the last samples and no more, each
sample measures what it says (median RTT, CPU over wall time), and a running node serves its
samples as ``GET /api/history`` and over the control socket alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.control import control_request
from qiz.history import MAX_HISTORY_SAMPLES, History, cpu_seconds, rss_bytes
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.node_api import OPERATIONS
from qiz.qmp.manager import ManagerConfig
from qiz.web.server import serve_api

from .helpers import async_eventually, run

FAST = ManagerConfig(keepalive_interval=0.2)
FIELDS = {"at", "rtt_ms", "jobs_done", "cpu_percent", "rss_bytes"}


class Ticks:
    """A clock and a CPU counter the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 5.0

    def clock(self) -> float:
        return self.now

    def used(self) -> float:
        return self.cpu


@given(limit=st.integers(1, 20), count=st.integers(0, 60))
def test_the_ring_keeps_the_last_samples_oldest_first(limit: int, count: int) -> None:
    ticks = Ticks()
    history = History(ticks.clock, limit=limit, cpu=ticks.used, rss=lambda: 4096)
    for i in range(count):
        ticks.now += 1
        history.record([], jobs_done=i)
    answer = history.answer()
    assert len(history) == min(count, limit)
    assert [s["jobs_done"] for s in answer["samples"]] == list(range(count))[-limit:]
    assert all(set(s) == FIELDS for s in answer["samples"])


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e4)), max_size=12))
def test_the_rtt_is_the_median_of_the_links_that_have_one(rtts: list[float | None]) -> None:
    sample = History(Ticks().clock).record(rtts, jobs_done=0)
    measured = sorted(r for r in rtts if r is not None)
    if not measured:
        assert sample.rtt_ms is None
    else:
        assert measured[0] - 1e-3 <= sample.rtt_ms <= measured[-1] + 1e-3  # type: ignore[operator]


def test_cpu_is_the_processes_use_over_the_wall_time_between_samples() -> None:
    ticks = Ticks()
    history = History(ticks.clock, cpu=ticks.used, rss=lambda: 1 << 20)
    first = history.record([1.5], jobs_done=0)
    assert first.cpu_percent is None and first.rss_bytes == 1 << 20  # nothing to compare with
    ticks.now += 4.0
    ticks.cpu += 1.0  # one CPU second in four wall seconds
    assert history.record([], jobs_done=0).cpu_percent == 25.0
    ticks.now += 2.0
    ticks.cpu += 3.0  # two threads busy: above one core
    assert history.record([], jobs_done=0).cpu_percent == 150.0


def test_the_process_measures_are_real() -> None:
    before = cpu_seconds()
    sum(i * i for i in range(200_000))
    assert cpu_seconds() >= before
    assert rss_bytes() > 1 << 20  # a Python interpreter holds more than a MiB


def test_a_bad_limit_is_refused_and_the_limit_is_a_named_constant() -> None:
    with pytest.raises(ValueError):
        History(Ticks().clock, limit=0)
    assert History(Ticks().clock)._samples.maxlen == MAX_HISTORY_SAMPLES


def test_a_running_node_serves_its_history_over_http_and_the_socket(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "a").mkdir()
        a = Node(
            NodeIdentity.generate(), control_dir=tmp_path / "a", http=serve_api(0), config=FAST
        )
        a.history = History(a.clock, interval_s=0.1)  # sample often: the test waits less
        await a.start()
        b = Node(NodeIdentity.generate(), peers=[a.address], config=FAST)
        await b.start()
        try:
            assert a.web is not None
            url = a.web.url + OPERATIONS["history"].path.lstrip("/")  # type: ignore[union-attr]
            headers = {"Authorization": f"Bearer {a.web.token}"}  # type: ignore[attr-defined]

            async def served() -> dict[str, Any]:
                async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as r:
                    assert r.status == 200
                    return await r.json()

            async def with_rtt() -> dict[str, Any] | None:
                answer = await served()
                samples = answer["samples"]
                has_rtt = any(s["rtt_ms"] is not None for s in samples)
                return answer if has_rtt and len(samples) >= 2 else None

            answer = await async_eventually(with_rtt, 20, "samples with the link's RTT")
            assert answer["interval_s"] == 0.1
            samples = answer["samples"]
            assert all(set(s) == FIELDS for s in samples)
            assert [s["at"] for s in samples] == sorted(s["at"] for s in samples)
            assert all(s["rss_bytes"] > 0 and s["jobs_done"] == 0 for s in samples)
            assert samples[0]["cpu_percent"] is None
            assert all(s["cpu_percent"] >= 0 for s in samples[1:])
            reply = await control_request(tmp_path / "a", "history")
            assert reply["ok"] and reply["result"]["interval_s"] == 0.1
            assert len(reply["result"]["samples"]) >= len(samples)
        finally:
            await b.stop()
            await a.stop()
        assert a.tasks.closed and not len(a.tasks)  # the sampler stopped with the node

    run(scenario(), timeout=60)
