"""Prometheus metrics of one node, read through its API at scrape time.

A custom collector on a registry of the node's own (several nodes can share a process in tests),
rendered by prometheus-client's text exposition. Families:

* ``qiz_links``: linked peers; ``qiz_handshakes_total{result}``; ``qiz_inbound_refused_total``;
* ``qiz_link_guard{counter}``: the link layer's admission and KEM counters (pending handshakes,
  refusals by reason, decapsulations, rate-limited INITs, refused replays, cookies);
* ``qiz_frames_dropped_total{reason}``: replayed or too-old frames, RPC messages that did not
  parse, RPC replies that could not be sent;
* ``qiz_dht_lookups_total``, ``qiz_dht_lookup_seconds`` (histogram), ``qiz_dht_records``,
  ``qiz_dht_contacts``, ``qiz_dht_invalid_records_total``, ``qiz_dht_refused_stores_total``,
  ``qiz_dht_hedged_requests_total`` and ``qiz_dht_lookup_timeouts_total`` (requests hedged past
  a peer's usual RTT, and unanswered past its adaptive timeout);
* ``qiz_jobs{state}`` (jobs this node coordinates), ``qiz_worker_tasks_total{outcome}``,
  ``qiz_worker_queue``, ``qiz_task_simulator_seconds`` (histogram, per task run here);
* ``qiz_store_bytes_stored``, ``qiz_store_columns_held``, ``qiz_store_quota_bytes`` (what this
  node holds for the storage pool, and its total quota), ``qiz_store_repairs_total`` and
  ``qiz_store_bad_shares_total`` (columns rebuilt, shares that did not check out), when the
  pool is enabled;
* ``qiz_links_by_path{path}`` (open links, direct or relayed), ``qiz_reachability{state}`` (1
  for the node's current verdict: public, private or unknown; docs/nat.md),
  ``qiz_relay_circuits`` and ``qiz_relay_bytes_forwarded_total`` (this node as a relay),
  ``qiz_punches_total{outcome}``;
* ``qiz_peer_score`` (histogram, buckets at the trust thresholds) and
  ``qiz_trust_events_total{reason}`` (quorum outcomes and misbehaviour scored; qiz.trust.scores);
* ``qiz_api_connections`` (open now) and ``qiz_api_refused_total{reason}``: the HTTP API's own
  guard (connections refused or closed to make room at the cap, bodies that timed out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from qiz.node_api import NodeAPI

LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# link counters exported under families of their own above, not again in qiz_link_guard
_LINK_FIELDS = {
    "links",
    "handshakes_ok",
    "handshakes_failed",
    "inbound_refused",
    "frames_dropped_replayed",
    "rpc_malformed",
    "rpc_reply_unsent",
}


def histogram(name: str, doc: str, samples: Iterable[float], bounds: Sequence[float]) -> Metric:
    values = list(samples)
    buckets = [(str(b), sum(1 for v in values if v <= b)) for b in bounds]
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=sum(values))


class NodeCollector(Collector):
    """Reads one :class:`~qiz.node_api.MetricsSnapshot` per scrape and exports it."""

    def __init__(self, api: NodeAPI) -> None:
        self.api = api

    def collect(self) -> Iterator[Metric]:
        m = self.api.metrics()
        yield GaugeMetricFamily("qiz_links", "Peers with an open QMP link.", value=m.links)
        handshakes = CounterMetricFamily(
            "qiz_handshakes", "QMP handshakes, by result.", labels=["result"]
        )
        handshakes.add_metric(["ok"], m.handshakes_ok)
        handshakes.add_metric(["failed"], m.handshakes_failed)
        yield handshakes
        yield CounterMetricFamily(
            "qiz_inbound_refused", "Inbound connections refused (limits).", value=m.inbound_refused
        )
        guard = GaugeMetricFamily(
            "qiz_link_guard", "Link admission and KEM work counters.", labels=["counter"]
        )
        for name in sorted(set(m.link_counters) - _LINK_FIELDS):
            guard.add_metric([name], m.link_counters[name])
        yield guard
        dropped = CounterMetricFamily(
            "qiz_frames_dropped", "Frames or messages dropped, by reason.", labels=["reason"]
        )
        dropped.add_metric(["replayed_or_too_old"], m.frames_dropped_replayed)
        dropped.add_metric(["rpc_malformed"], m.rpc_malformed)
        dropped.add_metric(["rpc_reply_unsent"], m.rpc_reply_unsent)
        yield dropped
        yield CounterMetricFamily("qiz_dht_lookups", "DHT lookups started.", value=m.dht_lookups)
        yield histogram(
            "qiz_dht_lookup_seconds", "DHT lookup latency.", m.dht_lookup_seconds, LOOKUP_BUCKETS
        )
        yield GaugeMetricFamily("qiz_dht_contacts", "Routing table contacts.", value=m.dht_contacts)
        yield GaugeMetricFamily(
            "qiz_dht_records", "Records in the local store.", value=m.dht_records
        )
        yield CounterMetricFamily(
            "qiz_dht_invalid_records", "Records refused in lookups.", value=m.dht_invalid_records
        )
        yield CounterMetricFamily(
            "qiz_dht_refused_stores", "STORE requests refused.", value=m.dht_refused_stores
        )
        yield CounterMetricFamily(
            "qiz_dht_hedged_requests",
            "Lookup requests hedged past their peer's usual RTT.",
            value=m.dht_hedged_requests,
        )
        yield CounterMetricFamily(
            "qiz_dht_lookup_timeouts",
            "Lookup requests unanswered past their peer's adaptive timeout.",
            value=m.dht_lookup_timeouts,
        )
        yield from store_metrics(m.store)
        yield from nat_metrics(m.nat)
        yield from trust_metrics(m.peer_scores, m.trust_events)
        if m.jobs_by_state is None:
            return
        jobs = GaugeMetricFamily("qiz_jobs", "Jobs coordinated here, by state.", labels=["state"])
        counts = {"running": 0, "done": 0, "failed": 0, "cancelled": 0, **m.jobs_by_state}
        for state, count in sorted(counts.items()):
            jobs.add_metric([state], count)
        yield jobs
        if m.worker_outcomes is None:
            return
        outcomes = CounterMetricFamily(
            "qiz_worker_tasks", "Tasks offered to this worker, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(m.worker_outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield GaugeMetricFamily(
            "qiz_worker_queue", "Accepted, unfinished tasks.", value=m.worker_queue
        )
        yield histogram(
            "qiz_task_simulator_seconds",
            "Simulator time per task run here.",
            m.task_seconds or [],
            TASK_BUCKETS,
        )


SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def trust_metrics(
    scores: Sequence[float] | None, events: Mapping[str, int] | None
) -> Iterator[Metric]:
    """Peer scores as a histogram (its buckets at the trust thresholds), and every event
    scored by reason (qiz.trust.scores), when the node keeps scores."""
    if scores is None or events is None:
        return
    yield histogram("qiz_peer_score", "Trust scores of the peers tracked.", scores, SCORE_BUCKETS)
    family = CounterMetricFamily(
        "qiz_trust_events", "Events scored against (or for) peers, by reason.", labels=["reason"]
    )
    for reason, count in sorted(events.items()):
        family.add_metric([reason], count)
    yield family


def nat_metrics(nat: Mapping[str, Any] | None) -> Iterator[Metric]:
    """Links by path and the node's reachability (docs/nat.md); none without the NAT view."""
    if nat is None:
        return
    paths = GaugeMetricFamily(
        "qiz_links_by_path", "Peers with an open link, by path.", labels=["path"]
    )
    paths.add_metric(["direct"], nat["links_direct"])
    paths.add_metric(["relayed"], nat["links_relayed"])
    yield paths
    reach = GaugeMetricFamily(
        "qiz_reachability", "1 for this node's reachability verdict.", labels=["state"]
    )
    for state in ("public", "private", "unknown"):
        reach.add_metric([state], 1 if nat["reachability"] == state else 0)
    yield reach
    relay = nat["relay"]
    yield GaugeMetricFamily(
        "qiz_relay_circuits", "Circuits this node relays now.", value=relay["circuits"]
    )
    yield CounterMetricFamily(
        "qiz_relay_bytes_forwarded", "Bytes forwarded as a relay.", value=relay["bytes_forwarded"]
    )
    punches = CounterMetricFamily(
        "qiz_punches", "Hole punches tried here, by outcome.", labels=["outcome"]
    )
    punches.add_metric(["direct"], nat["punch_direct"])
    punches.add_metric(["failed"], nat["punch_failed"])
    yield punches


def store_metrics(stats: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The storage pool's families from ``StoreService.stats()``; none when it is disabled."""
    if stats is None:
        return
    yield GaugeMetricFamily(
        "qiz_store_bytes_stored",
        "Bytes of shares and chunk tables this node holds.",
        value=stats.get("bytes_stored", 0),
    )
    yield GaugeMetricFamily(
        "qiz_store_columns_held",
        "Share columns this node holds.",
        value=stats.get("columns_held", stats.get("columns", 0)),
    )
    yield GaugeMetricFamily(
        "qiz_store_quota_bytes",
        "Bytes this node agrees to hold in total.",
        value=stats.get("quota_bytes", 0),
    )
    yield CounterMetricFamily(
        "qiz_store_repairs", "Columns rebuilt on a new holder.", value=stats.get("repairs", 0)
    )
    yield CounterMetricFamily(
        "qiz_store_bad_shares",
        "Shares a holder served that did not check out.",
        value=stats.get("bad_shares", 0),
    )


class ApiCollector(Collector):
    """The HTTP server's own counters (the node's API does not see its carrier's
    connections): ``read()`` returns the open-connection count and the refusal counters."""

    def __init__(self, read: Callable[[], tuple[int, dict[str, int]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        open_now, refused = self.read()
        yield GaugeMetricFamily("qiz_api_connections", "Open HTTP API connections.", value=open_now)
        family = CounterMetricFamily(
            "qiz_api_refused",
            "HTTP API connections or requests refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(refused.items()):
            family.add_metric([reason], count)
        yield family


def registry_for(
    api: NodeAPI, carrier: Callable[[], tuple[int, dict[str, int]]] | None = None
) -> CollectorRegistry:
    """The registry one node's ``/metrics`` renders: its API's figures and, with ``carrier``,
    the HTTP server's own (see :class:`ApiCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(api))
    if carrier is not None:
        registry.register(ApiCollector(carrier))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
