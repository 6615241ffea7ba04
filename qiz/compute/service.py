"""Compute on a node: the worker, the coordinator, their database, and how they reach peers.

:class:`ComputeService` is what :class:`~qiz.node.Node` wires in. It owns

* one SQLite database (``jobs.sqlite`` in the home) for jobs, replicas, held work and scores;
* the worker process pool and the :class:`~qiz.compute.worker.Worker` (unless the node only
  submits: ``ComputeConfig.worker = False``);
* the :class:`~qiz.compute.coordinator.Coordinator` for jobs submitted here;
* the fetcher of jobs' content-id inputs (:mod:`qiz.compute.inputs`, over ``fetch_input``);
* the capacity record it publishes in the DHT, and its loops: the coordinator's watch (which
  sleeps until the job core's next deadline or an input), delivering results that waited, and
  republishing capacity.

``call(peer, method, body)`` reaches a peer by id: this node itself directly (a node is its own
worker and coordinator without a loopback link), a linked peer over its link, anyone else by
resolving its peer record through the DHT and dialling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiz.compute import spec as specs
from qiz.compute.checker import SpecChecker
from qiz.compute.coordinator import Coordinator
from qiz.compute.directory import CAPACITY_LABEL, CAPACITY_TTL, WorkerDirectory, encode_capacity
from qiz.compute.inputs import FetchInput, InputFetcher
from qiz.compute.jobdb import CoordinatorTables, RunTables, WorkerTables, open_db
from qiz.compute.pool import WorkerPool, default_slots
from qiz.compute.worker import WAIT_TTL, Worker, qubits_for
from qiz.crypto.ids import ContentId, NodeId
from qiz.events import EventBus
from qiz.identity import NodeIdentity
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import Handler
from qiz.quantum.core.memory import available_memory
from qiz.resolve.dht import Dht
from qiz.resolve.reach import PeerCaller
from qiz.resolve.records import RecordKind, make_provider_record
from qiz.tasks import TaskOwner
from qiz.trust.scores import PeerScores

log = logging.getLogger("qiz.compute")
JOBS_DB = "jobs.sqlite"


@dataclass
class ComputeConfig:
    worker: bool = True  # run other nodes' tasks (False: only submit and coordinate)
    slots: int = 0  # worker processes; 0: one per core, within what memory allows
    threads: int = 1  # numba threads per worker process
    memory: int = 0  # bytes for simulations; 0: 80% of what is available at start
    warm_up: bool = True  # worker processes load every kind's kernels before the first task
    max_queue: int = 64
    placement: str = "greedy"
    # the coordinator sleeps until its next deadline or an input, but at least tick_min (so a
    # deadline just past does not spin) and at most tick_max seconds (what nothing foresees)
    tick_min: float = 0.05
    tick_max: float = 5.0
    poll_after: float = 3.0  # fetch a replica not heard of for this long
    deliver_every: float = 2.0  # retry undelivered results this often
    republish_every: float = 300.0  # capacity record


class ComputeService:
    def __init__(
        self,
        identity: NodeIdentity,
        links: LinkManager,
        dht: Dht,
        handlers: dict[str, Handler],
        *,
        config: ComputeConfig | None = None,
        home: Path | None = None,
        clock: Callable[[], float] = time.time,
        events: EventBus | None = None,
        fetch_input: FetchInput | None = None,
    ) -> None:
        """``fetch_input(cid, max_size=n) -> bytes`` reads a job's content-id input (the
        node passes its storage pool's checked fetch); None: specs naming one are refused."""
        self.identity = identity
        self.events = events if events is not None else EventBus(clock)
        self.links = links
        self.dht = dht
        self.config = config or ComputeConfig()
        self.clock = clock
        self.handlers = handlers
        self.caller = PeerCaller(identity, links, dht, handlers)
        self.db = open_db(home / JOBS_DB if home is not None else None)
        self.scores = PeerScores(self.db)
        memory = self.config.memory or int(available_memory() * 0.8)
        self.limits = specs.Limits(max_qubits=qubits_for(memory))
        # every spec from a peer or the owner is parsed in a limited process (started lazily)
        self.checker = SpecChecker()
        # one fetcher (and cache) for the coordinator's checks and the worker's
        self.inputs = InputFetcher(fetch_input)
        self.worker: Worker | None = None
        self.pool: WorkerPool | None = None
        if self.config.worker:
            self.pool = WorkerPool(
                self.config.slots or default_slots(),
                threads=self.config.threads,
                memory_limit=memory,
                warm_up=self.config.warm_up,
            )
            self.worker = Worker(
                identity,
                WorkerTables(self.db),
                self.pool,
                self.limits,
                self.call,
                max_queue=self.config.max_queue,
                announce=self.announce_results,
                clock=clock,
                checker=self.checker,
                runs=RunTables(self.db),
            )
            self.worker.inputs = self.inputs
            handlers.update(self.worker.handlers())
        self.directory = WorkerDirectory(
            identity.node_id,
            lambda: self.worker.capacity() if self.worker is not None else None,
            dht,
            links,
        )
        self.coordinator = Coordinator(
            identity,
            CoordinatorTables(self.db),
            self.scores,
            self.directory,
            self.call,
            events=self.events,
            placement=self.config.placement,
            poll_after=self.config.poll_after,
            clock=clock,
            checker=self.checker,
        )
        self.coordinator.find_holders = self.find_holders
        self.coordinator.inputs = self.inputs
        handlers.update(self.coordinator.handlers())
        self._owner = TaskOwner("compute", log)

    # ------------------------------------------------------------------ reaching peers

    async def call(self, peer: bytes, method: str, body: Any, *, timeout: float = 10.0) -> Any:
        """Reach ``peer`` by id (:class:`~qiz.resolve.reach.PeerCaller`: this node directly, a
        linked peer over its link, anyone else through the DHT)."""
        return await self.caller.call(peer, method, body, timeout=timeout)

    # ------------------------------------------------------------------ results in the DHT

    async def announce_results(self, job: bytes) -> None:
        """Publish "results of this job wait here": a provider record under the job id."""
        raw = make_provider_record(
            self.identity,
            ContentId(job),
            [self.links.listener.address],
            now=self.clock(),
            ttl=WAIT_TTL,
        )
        await self.dht.publish(raw, RecordKind.PROVIDER)

    async def find_holders(self, job: bytes) -> list[bytes]:
        """Nodes that published a provider record for ``job`` (the DHT returns the best one)."""
        try:
            async with asyncio.timeout(5.0):
                lookup = await self.dht.lookup(job, RecordKind.PROVIDER)
        except (TimeoutError, OSError):
            return []
        best = lookup.best
        return [best.holder] if best is not None else []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resume stored work and start the loops (the node has joined the mesh)."""
        if self.worker is not None:
            self.worker.resume()
            assert self.pool is not None
            self.pool.warm()
        self.coordinator.resume()
        self._owner.spawn(
            self.coordinator.watch(self.config.tick_min, self.config.tick_max), "watch jobs"
        )
        self._owner.every(self.config.republish_every, self.publish_capacity, "publish capacity")
        if self.worker is not None:
            self._owner.every(
                self.config.deliver_every, self.worker.deliver_pending, "deliver results"
            )

    async def publish_capacity(self) -> None:
        if self.worker is None:
            return
        value = encode_capacity(self.worker.capacity())
        await self.dht.publish_name(CAPACITY_LABEL, value, ttl=CAPACITY_TTL)

    async def stop(self) -> None:
        """End the loops, the coordinator's background sends, the worker and its processes,
        each awaited. The database stays open for peers' calls still in flight on the links
        (the node closes those next), then :meth:`close` closes it."""
        await self._owner.close()
        await self.coordinator.close()
        if self.worker is not None:
            await self.worker.close()
        if self.pool is not None:
            await self.pool.close()
        await self.checker.close()

    def close(self) -> None:
        """Close the database: after :meth:`stop`, once no RPC handler can run any more."""
        self.db.close()

    def status(self) -> dict[str, Any]:
        return {
            "worker": self.worker.capacity() if self.worker is not None else None,
            "worker_counters": dict(self.worker.counters) if self.worker is not None else None,
            "spec_checks": self.checker.stats(),
            "inputs": dict(self.inputs.counters),
            "jobs": dict(self.coordinator.counters),
            "running_jobs": len(self.coordinator.jobs),
            "known_workers": len(self.directory.entries),
            "directory": dict(self.directory.counters),
            "scores": [{**row, "peer": str(NodeId(row["peer"]))} for row in self.scores.table()],
        }
