"""Prometheus metrics of one node, read from its state at scrape time.

A custom collector on a registry of the node's own (several nodes can share a process in tests),
rendered by prometheus-client's text exposition. Families:

* ``qiz_links``: linked peers; ``qiz_handshakes_total{result}``; ``qiz_inbound_refused_total``;
* ``qiz_frames_dropped_total{reason}``: replayed or too-old frames, RPC messages that did not
  parse, RPC replies that could not be sent;
* ``qiz_dht_lookups_total``, ``qiz_dht_lookup_seconds`` (histogram), ``qiz_dht_records``,
  ``qiz_dht_contacts``, ``qiz_dht_invalid_records_total``, ``qiz_dht_refused_stores_total``;
* ``qiz_jobs{state}`` (jobs this node coordinates), ``qiz_worker_tasks_total{outcome}``,
  ``qiz_worker_queue``, ``qiz_task_simulator_seconds`` (histogram, per task run here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from qiz.node import Node

LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def histogram(name: str, doc: str, samples: Iterable[float], bounds: Sequence[float]) -> Metric:
    values = list(samples)
    buckets = [(str(b), sum(1 for v in values if v <= b)) for b in bounds]
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=sum(values))


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        links = node.links
        yield GaugeMetricFamily("qiz_links", "Peers with an open QMP link.", value=len(links.peers))
        handshakes = CounterMetricFamily(
            "qiz_handshakes", "QMP handshakes, by result.", labels=["result"]
        )
        handshakes.add_metric(["ok"], links.counters["handshakes"])
        handshakes.add_metric(
            ["failed"], links.counters["dials_failed"] + links.listener.handshakes_failed
        )
        yield handshakes
        yield CounterMetricFamily(
            "qiz_inbound_refused",
            "Inbound connections refused (limits).",
            value=links.listener.refused,
        )
        live = [p.link for p in links._all_links()]
        replayed = links.counters["frames_dropped_closed"] + sum(
            link.counters["frames_dropped"] for link in live
        )
        bad_rpc = sum(p.rpc.bad_messages for p in links._all_links())
        unsent = sum(p.rpc.replies_dropped for p in links._all_links())
        dropped = CounterMetricFamily(
            "qiz_frames_dropped", "Frames or messages dropped, by reason.", labels=["reason"]
        )
        dropped.add_metric(["replayed_or_too_old"], replayed)
        dropped.add_metric(["rpc_malformed"], bad_rpc)
        dropped.add_metric(["rpc_reply_unsent"], unsent)
        yield dropped
        dht = node.dht
        yield CounterMetricFamily(
            "qiz_dht_lookups", "DHT lookups started.", value=dht.counters["lookups"]
        )
        yield histogram(
            "qiz_dht_lookup_seconds",
            "DHT lookup latency.",
            dht.lookup_latencies[-10_000:],
            LOOKUP_BUCKETS,
        )
        yield GaugeMetricFamily("qiz_dht_contacts", "Routing table contacts.", value=len(dht.table))
        yield GaugeMetricFamily(
            "qiz_dht_records", "Records in the local store.", value=len(dht.store)
        )
        yield CounterMetricFamily(
            "qiz_dht_invalid_records",
            "Records refused in lookups.",
            value=dht.counters["invalid_records"],
        )
        yield CounterMetricFamily(
            "qiz_dht_refused_stores",
            "STORE requests refused.",
            value=dht.counters["refused_stores"],
        )
        if node.compute is None:
            return
        jobs = GaugeMetricFamily("qiz_jobs", "Jobs coordinated here, by state.", labels=["state"])
        counts = {"running": 0, "done": 0, "failed": 0, "cancelled": 0}
        for row in node.compute.coordinator.tables.jobs():
            counts[row[2]] = counts.get(row[2], 0) + 1
        for state, count in sorted(counts.items()):
            jobs.add_metric([state], count)
        yield jobs
        worker = node.compute.worker
        if worker is None:
            return
        outcomes = CounterMetricFamily(
            "qiz_worker_tasks", "Tasks offered to this worker, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(worker.counters.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield GaugeMetricFamily(
            "qiz_worker_queue", "Accepted, unfinished tasks.", value=len(worker._tasks)
        )
        yield histogram(
            "qiz_task_simulator_seconds",
            "Simulator time per task run here.",
            worker.task_seconds,
            TASK_BUCKETS,
        )


def registry_for(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
