"""The one API of a running node: what its faces (HTTP API, dashboard, metrics, control socket,
CLI) may read and do, as plain typed data.

Faces never reach into the routing table, the record store, the coordinator's tables or a
link's counters: they call :class:`NodeAPI`. The operations a client can invoke are listed once,
in :data:`OPERATIONS`; the HTTP server builds its routes from that table and the control socket
dispatches on it, so both serve the same operations with the same arguments, results and
errors (a face only chooses how to carry them: JSON over HTTP, one JSON line over the socket).

This module sits between :mod:`qiz.node` (the composition root that builds a :class:`NodeAPI`
for itself) and the faces; it never imports a face, and the node only under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import statistics
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qiz import QizError, __version__
from qiz.compute import spec as specs
from qiz.compute import stored
from qiz.compute.attest import verify_file
from qiz.compute.errors import AttestationError, JobNotFound
from qiz.compute.execute import summarise
from qiz.crypto.ids import ContentId, NodeId
from qiz.crypto.measure import measure_crypto
from qiz.deploy.descriptor import to_json as descriptor_json
from qiz.deploy.mesh_limits import MAX_LOG_TAIL_BYTES
from qiz.deploy.mesh_source import ChannelRef, parse_channel
from qiz.deploy.signing import NODE_KEY
from qiz.fsio import FileTooLarge, read_bounded
from qiz.identity.armor import ArmorError, dearmor
from qiz.identity.peer_record import MAX_RECORD_SIZE, PeerRecord, PeerRecordError
from qiz.qmp.errors import ErrorCode
from qiz.store.errors import StoreDisabled
from qiz.store.limits import MAX_RECIPIENTS
from qiz.trust.scores import BANNED, TRUSTED

if TYPE_CHECKING:
    from qiz.compute.coordinator import Coordinator
    from qiz.deploy.service import DeployService
    from qiz.node import Node
    from qiz.store.service import StoreService

RECORD_ARMOR = "QIZ PEER RECORD"  # the armor 'qiz record' writes (qiz.cli.identity_cmds)

# the whitepaper's figures that this node can measure about itself: key -> (claim, its words)
CLAIMS = {
    "encryption_gb_s": (1.0, "1 GB/s encryption"),
    "key_exchange_ms": (1.0, "1 ms key exchange"),
    "authentication_ms": (1.0, "1 ms authentication"),
    "latency_ms": (5.0, "5 ms average latency"),
}
LOOKUP_CLAIM_MS = 5.0
MAX_EVENT_WAIT = 30.0  # seconds a long poll may hold a request
MAX_PING_COUNT = 10_000  # pings one ping operation sends back to back
log = logging.getLogger("qiz.api")


class BadRequest(QizError):
    """An operation's arguments are missing or malformed."""


class ComputeDisabled(QizError):
    """The node runs without compute; job operations have nothing to talk to."""

    http_status = 503


@dataclass(frozen=True)
class Download:
    """A result that is a file, not data: HTTP sends it as an attachment, the control socket
    as base64."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


def error_answer(exc: BaseException) -> tuple[int, str]:
    """The one mapping from an error to what every carrier answers: (HTTP status, message).

    A :class:`~qiz.QizError` says both itself; anything else is a bug, logged with its
    traceback here and answered as a one-line internal error (500), never a silent socket."""
    if isinstance(exc, QizError):
        return exc.http_status, str(exc)
    log.error("operation failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- typed views


@dataclass(frozen=True)
class LinkView:
    """One peer, as ``qiz peers``, ``GET /api/peers`` and node status's ``links`` show it
    (docs/json/peers.schema.json): online, from its primary link, or offline, a peer that left
    (``left_at``, ``left_reason``) and is remembered for a while (qiz.qmp.manager)."""

    node_id: str
    address: str  # where the peer listens (its record's first address), else where the link goes
    remote_address: str  # the link's far end (an inbound link: the peer's source address)
    listens_at: list[str]  # where the peer says it listens
    state: str  # "online" | "offline"
    direction: str  # "in" | "out"
    path: str  # "direct", or "relayed" through a relay (docs/nat.md)
    rtt_ms: float | None
    bytes_sent: int
    bytes_received: int
    connected_at: float
    last_seen_at: float | None  # the last bytes received from the peer
    left_at: float | None = None
    left_reason: str | None = None
    score: float | None = None
    relay: str | None = None  # the relay's node id, for a relayed link
    trust: str | None = None  # "trusted" or "banned" by this node's operator
    reasons: list[str] = field(default_factory=list)  # misbehaviour counting against its score


@dataclass(frozen=True)
class DhtView:
    contacts: int
    records: int
    lookups: int
    invalid_records: int
    refused_stores: int
    # the record store's budget in use, and what the DHT's store limits did (docs/dht.md)
    store_bytes: int = 0
    evicted_records: int = 0
    rate_limited_stores: int = 0
    # lookups' requests hedged past their peer's usual RTT, and those that passed its adaptive
    # timeout unanswered (docs/dht.md: silent peers are hedged past, not waited for)
    hedged_requests: int = 0
    lookup_timeouts: int = 0


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    version: str
    address: str
    addresses: list[str]
    uptime_s: float
    links: list[LinkView]
    inbound_refused: int
    handshakes_failed: int
    dht: DhtView
    compute: dict[str, Any] | None
    api_url: str | None
    # the link layer's counters (LinkManager.counters_snapshot): handshakes, refusals, KEM work
    link_counters: dict[str, int] = field(default_factory=dict)
    # the storage pool's figures (StoreService.stats); None when it is disabled
    store: dict[str, Any] | None = None
    # reachability, observed addresses, NAT mapping, relays (docs/nat.md)
    nat: dict[str, Any] | None = None


@dataclass(frozen=True)
class ContactView:
    node_id: str
    address: str
    last_seen_at: float
    failures: int
    bucket: int


@dataclass(frozen=True)
class ScoreView:
    node_id: str
    score: float
    agreed: int
    disagreed: int
    failed: int
    override: str | None = None  # "trusted" or "banned" by this node's operator
    # the score now less the score before the latest hour with events (qiz.trust.scores)
    trend: float = 0.0
    reasons: list[str] = field(default_factory=list)  # misbehaviour still counting against it


@dataclass(frozen=True)
class AttestationView:
    job_id: str
    verified: bool
    kind: str | None = None
    tasks: int | None = None
    tests: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    issued_at: float | None = None
    summary: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Figure:
    figure: str
    measured: float | None
    claim: float
    claim_text: str
    ratio: float | None


@dataclass(frozen=True)
class MetricsSnapshot:
    """Every number the Prometheus collector exports, read at one moment."""

    links: int
    handshakes_ok: int
    handshakes_failed: int
    inbound_refused: int
    frames_dropped_replayed: int
    rpc_malformed: int
    rpc_reply_unsent: int
    dht_lookups: int
    dht_lookup_seconds: list[float]
    dht_contacts: int
    dht_records: int
    dht_invalid_records: int
    dht_refused_stores: int
    dht_hedged_requests: int
    dht_lookup_timeouts: int
    jobs_by_state: dict[str, int] | None
    worker_outcomes: dict[str, int] | None
    worker_queue: int | None
    task_seconds: list[float] | None
    # every counter of the link layer by name (the fields above are some of them)
    link_counters: dict[str, int] = field(default_factory=dict)
    # the storage pool's figures (StoreService.stats); None when it is disabled
    store: dict[str, Any] | None = None
    # reachability, links by path, relay and punch counters (Node.nat_view)
    nat: dict[str, Any] | None = None
    # peer scores now, and events scored by reason (qiz.trust.scores); None without scores
    peer_scores: list[float] | None = None
    trust_events: dict[str, int] | None = None


def plain(value: Any) -> Any:
    """Views, statuses and containers of them as JSON-ready dicts and lists."""
    if hasattr(value, "as_dict"):
        return plain(value.as_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- the facade


class NodeAPI:
    """Everything a face may ask of one running :class:`~qiz.node.Node`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._verified: dict[tuple[bytes, bytes], AttestationView] = {}
        self._bench: asyncio.Task[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ the node and mesh

    def links(self) -> list[LinkView]:
        """The peers linked now (online), one row each, by id."""
        return [view for view in self.peer_views() if view.state == "online"]

    def peer_views(self) -> list[LinkView]:
        """Linked peers by id, then the peers that left, the most recent first."""
        scores = {s.node_id: s for s in self.scores()}
        views = []
        for row in self.node.links.peer_rows():
            known = scores.get(row["node_id"])
            views.append(
                LinkView(
                    **row,
                    score=known.score if known is not None else None,
                    trust=known.override if known is not None else None,
                    reasons=list(known.reasons) if known is not None else [],
                )
            )
        online = sorted((v for v in views if v.state == "online"), key=lambda v: v.node_id)
        return online + [v for v in views if v.state != "online"]

    def status(self) -> NodeStatus:
        node = self.node
        dht = node.dht
        compute = node.compute.status() if node.compute is not None else None
        return NodeStatus(
            node_id=str(node.node_id),
            version=__version__,
            address=node.address,
            addresses=list(node.record().addresses) or [node.address],
            uptime_s=round(node.clock() - node.started_at, 1),
            links=self.links(),
            inbound_refused=node.links.listener.refused,
            handshakes_failed=node.links.listener.handshakes_failed,
            dht=DhtView(
                contacts=len(dht.table),
                records=len(dht.store),
                **dht.counters,
                store_bytes=dht.store.bytes,
                evicted_records=dht.store.evicted,
                rate_limited_stores=dht.rate_limited_stores,
                hedged_requests=dht.hedged_requests,
                lookup_timeouts=dht.lookup_timeouts,
            ),
            compute=compute,
            api_url=node.web.url if node.web is not None else None,
            link_counters=node.links.counters_snapshot(),
            store=self._store_stats(),
            nat=node.nat_view(),
        )

    async def netcheck(self) -> dict[str, Any]:
        """Check reachability now (peers dial this node back) and say what the node knows of
        its addresses: the ``netcheck`` operation."""
        await self.node.joined.wait()
        await self.node.nat.check()
        return self.node.nat_view()

    def peers(self) -> dict[str, Any]:
        """This node's id and its peers: linked (online) and departed (offline)."""
        return {"node_id": str(self.node.node_id), "peers": self.peer_views()}

    async def ping(self, target: str, count: int) -> dict[str, Any]:
        """RTTs to a peer named by id, prefix or address (linking first, through the DHT for
        an id not linked)."""
        if not 1 <= count <= MAX_PING_COUNT:
            raise BadRequest(f"count must be from 1 to {MAX_PING_COUNT}")
        await self.node.joined.wait()
        return await self.node.ping_peer(target, count)

    async def connect(self, target: str) -> dict[str, Any]:
        """Open a link to a peer named by address (``ID@ADDR`` pins its id), id or prefix."""
        await self.node.joined.wait()
        return await self.node.connect_peer(target)

    def routing(self) -> dict[str, Any]:
        own = int.from_bytes(self.node.node_id.digest, "big")
        contacts = [
            ContactView(
                node_id=str(NodeId(c.node_id)),
                address=c.address,
                last_seen_at=c.last_seen,
                failures=c.failures,
                bucket=256 - (own ^ int.from_bytes(c.node_id, "big")).bit_length(),
            )
            for c in self.node.dht.table.contacts()
        ]
        return {"k": self.node.dht.config.k, "contacts": contacts}

    def records(self) -> dict[str, Any]:
        return {"records": self.node.dht.store.listing()}

    def scores(self) -> list[ScoreView]:
        if self.node.compute is None:
            return []
        return [
            ScoreView(
                node_id=str(NodeId(row["peer"])),
                **{k: v for k, v in row.items() if k != "peer"},
            )
            for row in self.node.compute.scores.table()
        ]

    async def peer_trust(self, target: str, action: str) -> dict[str, Any]:
        """An operator's word on a peer (``qiz peers trust|ban|unban``): trusted peers always
        score 1, banned ones 0 and their links are closed and refused; unban returns the peer
        to its measured score. Answers why the peer scores what it does now."""
        verbs = {"trust": TRUSTED, "ban": BANNED, "unban": None}
        if action not in verbs:
            raise BadRequest(f"action must be one of {', '.join(verbs)}, not {action!r}")
        compute = self.node.compute
        if compute is None:
            raise BadRequest("this node keeps no peer scores: its compute service is off")
        peer = await self.node.peer_id(target)
        if peer == self.node.node_id:
            raise BadRequest("a node does not score itself")
        compute.scores.override(peer.digest, verbs[action])
        if action == "ban":
            entry = self.node.links.peers.get(peer)
            if entry is not None:
                entry.link.close(ErrorCode.REFUSED, "banned by the other node's operator")
        return {"node_id": str(peer), **compute.scores.explain(peer.digest)}

    def request_stop(self) -> dict[str, Any]:
        self.node.stop_requested.set()
        return {"stopping": True}

    async def resolve(self, node_id: str) -> dict[str, Any]:
        await self.node.joined.wait()
        return await self.node.resolve(await self.node.peer_id(node_id))

    async def publish_name(self, label: str, value: str, ttl: int) -> dict[str, Any]:
        await self.node.joined.wait()
        return await self.node.publish_name(label, value, ttl)

    async def resolve_name(self, name: str) -> dict[str, Any]:
        owner, _, label = name.partition("/")
        if not label:
            raise BadRequest(f"{name!r} is not a name: expected OWNER_ID/LABEL")
        await self.node.joined.wait()
        return await self.node.resolve_name(await self.node.peer_id(owner), label)

    # ------------------------------------------------------------------ jobs

    def _coordinator(self) -> Coordinator:
        if self.node.compute is None:
            raise ComputeDisabled("this node runs without compute (start it with a worker)")
        return self.node.compute.coordinator

    def jobs(self) -> dict[str, Any]:
        return {"jobs": self._coordinator().list()}

    def job(self, job: str) -> Any:
        """The status of one job, with the summary of its spec (``spec``)."""
        return self._coordinator().status(self._job_id(job), with_spec=True)

    def _job_id(self, text: str) -> bytes:
        """The id of a job submitted here, from its hex form or a unique prefix. A job this
        node only ran tasks of as a worker is not here: the refusal points to where it is."""
        coordinator = self._coordinator()
        try:
            job_id = coordinator.resolve_id(text)
            if not coordinator.known(job_id):
                raise JobNotFound(f"no job {job_id.hex()} was submitted here")
        except JobNotFound as exc:
            worker = self.node.compute.worker if self.node.compute is not None else None
            prefix = text.strip().lower()
            ran = [
                r.job.hex()
                for r in (worker.history() if worker is not None else ())
                if r.job.hex().startswith(prefix)
            ]
            if not ran:
                raise
            raise JobNotFound(
                f"{exc}; this node ran tasks of job {ran[-1][:16]} as a worker, for another "
                "submitter: see 'qiz job list --worker'"
            ) from None
        return job_id

    async def submit(self, spec: Any) -> Any:
        """A spec as a JSON document (signed here, by this node) or as the base64 of a spec
        already signed by its submitter."""
        coordinator = self._coordinator()
        if isinstance(spec, dict):
            identity = self.node.identity
            raw = specs.sign(specs.make_body(spec, identity), identity)
        elif isinstance(spec, str):
            try:
                raw = base64.b64decode(spec, validate=True)
            except ValueError:
                raise BadRequest("spec: not base64 (a signed spec) nor a JSON object") from None
        else:
            raise BadRequest('expected {"spec": {...}}: a job spec as a JSON object')
        await self.node.joined.wait()
        return await coordinator.submit(raw)

    async def cancel(self, job: str) -> Any:
        return await self._coordinator().cancel(self._job_id(job))

    def job_logs(self, job: str) -> dict[str, Any]:
        """A job's timeline: ``{"job_id", "entries": [{at, event, task, worker, detail}]}``."""
        return self._coordinator().logs(self._job_id(job))

    def worker_runs(self) -> dict[str, Any]:
        """The tasks this node ran as a worker for any submitter, oldest first."""
        if self.node.compute is None or self.node.compute.worker is None:
            return {"worker": False, "runs": []}
        return {
            "worker": True,
            "runs": [
                {
                    "job_id": r.job.hex(),
                    "task": r.task,
                    "coordinator": str(NodeId(r.coordinator)),
                    "started_at": r.started,
                    "finished_at": r.finished,
                    "duration_s": None if r.finished is None else round(r.finished - r.started, 3),
                    "state": r.outcome,
                    "reason": r.error,
                }
                for r in self.node.compute.worker.history()
            ],
        }

    def attestation_file(self, job: str) -> Download:
        coordinator = self._coordinator()
        job_id = self._job_id(job)
        data = coordinator.result(job_id)
        return Download(f"{job_id.hex()[:16]}.att", data, "application/cbor")

    def job_result(self, job: str) -> dict[str, Any]:
        """A finished job's state and its attestation file (base64), in one answer."""
        coordinator = self._coordinator()
        job_id = self._job_id(job)
        return {
            "status": coordinator.status(job_id),
            "attestation": base64.b64encode(coordinator.result(job_id)).decode("ascii"),
        }

    async def job_store(
        self, job: str, *, k: int | None = None, n: int | None = None
    ) -> dict[str, Any]:
        """Put a done job's result and attestation into the pool (a "dir" content, see
        :mod:`qiz.compute.stored`): ``{"job_id", "cid", "files", "size", "k", "n", "holders"}``."""
        job_id = self._job_id(job)
        files = stored.result_files(self._coordinator().result(job_id))
        store = self._store()
        await self.node.joined.wait()
        put = await store.put_files(files, k=k, n=n)
        return {
            "job_id": job_id.hex(),
            "cid": str(put.cid),
            "files": sorted(files),
            "size": put.size,
            "k": put.k,
            "n": put.n,
            "holders": [str(h) for h in put.holders],
        }

    async def job_fetch_result(self, cid: str) -> dict[str, Any]:
        """A stored job result's attestation file (base64), fetched from the pool and checked
        against its content id; the caller verifies the attestation itself."""
        content = _content_id(cid)
        store = self._store()
        await self.node.joined.wait()
        files = await store.fetch_files(content, max_size=stored.MAX_STORED)
        data = stored.attestation_of(files)
        return {"cid": str(content), "attestation": base64.b64encode(data).decode("ascii")}

    def attestations(self) -> dict[str, Any]:
        if self.node.compute is None:
            return {"attestations": []}
        attested = self._coordinator().attested()
        return {"attestations": [self._checked(job, data) for job, data in attested]}

    def _checked(self, job: bytes, data: bytes) -> AttestationView:
        """One attestation, verified the first time it is listed (it never changes after):
        the dashboard lists them every second, and each check is many ML-DSA verifications."""
        key = (job, data)
        if key not in self._verified:
            try:
                verified = verify_file(data)
                view = AttestationView(
                    job_id=job.hex(),
                    verified=True,
                    kind=verified.spec.kind,
                    tasks=len(verified.results),
                    tests=sorted(set(verified.tests)),
                    workers=[str(w) for w in verified.workers],
                    issued_at=verified.issued,
                    summary=summarise(verified.spec.kind, verified.results),
                )
            except AttestationError as exc:
                view = AttestationView(job_id=job.hex(), verified=False, error=str(exc))
            self._verified[key] = view
        return self._verified[key]

    # ------------------------------------------------------------------ the storage pool

    def _store(self) -> StoreService:
        store = getattr(self.node, "store", None)
        if store is None:
            raise StoreDisabled(
                "this node runs without the storage pool ([store] enabled = false in its "
                "config.toml)"
            )
        return store

    def _store_stats(self) -> dict[str, Any] | None:
        store = getattr(self.node, "store", None)
        return None if store is None else dict(store.stats())

    async def _recipient(self, text: str) -> PeerRecord:
        """A recipient of sealed content: a node id (or unique prefix), its record found
        through the DHT; or the absolute path of a peer record file on this machine."""
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("to: each recipient is a node id or a peer record file's path")
        if text.strip().startswith(NodeId.PREFIX) or not text.startswith("/"):
            await self.node.joined.wait()
            return await self.node.dht.resolve_peer(await self.node.peer_id(text))
        return _record_file(Path(text), self.node.clock())

    async def store_put(
        self,
        path: str,
        *,
        k: int | None = None,
        n: int | None = None,
        to: list[str] | None = None,
        transfer: str | None = None,
    ) -> dict[str, Any]:
        """Put the file or directory at ``path`` (absolute, on this machine) into the pool;
        sealed to ``to`` (node ids or record file paths) when given."""
        store = self._store()
        given = to or []
        if len(given) > MAX_RECIPIENTS:
            raise BadRequest(f"to: at most {MAX_RECIPIENTS} recipients")
        recipients = [await self._recipient(text) for text in given]
        await self.node.joined.wait()
        result = await store.put(
            _absolute(path, "path"), k=k, n=n, to=recipients, transfer=transfer
        )
        return _named(result)

    async def store_get(
        self,
        cid: str,
        output: str,
        *,
        force: bool = False,
        into: bool = False,
        transfer: str | None = None,
    ) -> dict[str, Any]:
        """Fetch content ``cid`` into ``output`` (absolute); with ``into``, ``output`` is a
        directory and the content lands there under its own name."""
        store = self._store()
        content = _content_id(cid)
        target = _absolute(output, "output")
        await self.node.joined.wait()
        if into:
            target = target / await self._content_name(store, content)
        result = await store.get(content, target, force=force, transfer=transfer)
        return _named(result)

    async def _content_name(self, store: StoreService, cid: ContentId) -> str:
        """The name a content lands under when no output name is given: a public file's own
        name (its manifest's single entry), else its id (a directory tree has no name of its
        own; a sealed one's names are not readable by its holders)."""
        name = (await store.manifest(cid)).name
        return name if name else str(cid)

    async def store_content(self, cid: str) -> Download:
        """A public or readable ``file`` content's bytes, checked, as an attachment: how the
        HTTP API hands out content without writing files anywhere (at most MAX_DOWNLOAD
        bytes, held in memory; larger content and trees: ``qiz store get``)."""
        store = self._store()
        content = _content_id(cid)
        await self.node.joined.wait()
        manifest = await store.manifest(content)
        if manifest.kind != "file":
            raise BadRequest(f"content {content} is a directory: fetch it with qiz store get")
        if manifest.size > MAX_DOWNLOAD:
            raise BadRequest(
                f"content {content} is {manifest.size} bytes, over the {MAX_DOWNLOAD >> 20} MiB "
                "this API hands out in one answer: fetch it with qiz store get"
            )
        data = await store.fetch_bytes(content, max_size=MAX_DOWNLOAD)
        return Download(_filename(manifest.name, content), data)

    def store_ls(self) -> dict[str, Any]:
        """The content this node owns (published) or pins, with its health."""
        return {"content": _named(self._store().listing())}

    async def store_status(self, cid: str) -> dict[str, Any]:
        """One content's shares: index, holder, state, lease expiry; and its health."""
        return _named(await self._store().status(_content_id(cid)))

    async def store_pin(self, cid: str) -> dict[str, Any]:
        store = self._store()
        await self.node.joined.wait()
        content = _content_id(cid)
        return {"cid": str(content), **_named(await store.pin(content))}

    async def store_unpin(self, cid: str) -> dict[str, Any]:
        content = _content_id(cid)
        return {"cid": str(content), **_named(await self._store().unpin(content))}

    async def store_rm(self, cid: str) -> dict[str, Any]:
        content = _content_id(cid)
        return {"cid": str(content), **_named(await self._store().rm(content))}

    async def store_gc(self) -> dict[str, Any]:
        return _named(await self._store().gc())

    # ------------------------------------------------------------------ the deploy engine

    def _deploy(self) -> DeployService:
        deploy = getattr(self.node, "deploy", None)
        if deploy is None:
            self._store()  # the pool is off: say that
            raise BadRequest("the deploy engine needs a node with a home (qiz node start)")
        return deploy

    async def _channel_ref(self, text: Any) -> ChannelRef:
        """``OWNER/deploy/NAME`` or ``OWNER/NAME`` with OWNER a whole node id: installing or
        following anchors trust in OWNER's key for good, so never a prefix a stranger could
        grind to match, nor an address whoever answers there would own."""
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("channel must be OWNER/deploy/NAME")
        return parse_channel(text)

    async def deploy_build(self, path: str, *, to: list[str] | None = None) -> dict[str, Any]:
        """Put the bundle directory ``path`` into the pool; its descriptor (files, hashes)."""
        deploy = self._deploy()
        recipients = await self._recipients_of(to)
        await self.node.joined.wait()
        descriptor, put = await deploy.build(_absolute(path, "path"), to=recipients)
        return {**descriptor_json(descriptor), "sealed_to": _named(put).get("sealed_to", [])}

    async def _recipients_of(self, to: list[str] | None) -> list[PeerRecord]:
        given = to or []
        if len(given) > MAX_RECIPIENTS:
            raise BadRequest(f"to: at most {MAX_RECIPIENTS} recipients")
        return [await self._recipient(text) for text in given]

    async def deploy_publish(
        self,
        path: str,
        *,
        channel: str | None = None,
        to: list[str] | None = None,
        signers: list[str] | None = None,
    ) -> dict[str, Any]:
        """Publish the bundle at ``path`` as a new version of its channel (``signers``: key
        files for roles the node's key does not hold)."""
        deploy = self._deploy()
        recipients = await self._recipients_of(to)
        keys = [_absolute(f, "signer") for f in signers or []]
        await self.node.joined.wait()
        answer = await deploy.publish(
            _absolute(path, "path"), channel=channel, to=recipients, signers=keys
        )
        return _named(answer)

    async def deploy_rotate(
        self,
        name: str,
        role: str,
        keys: list[str],
        *,
        threshold: int = 1,
        signers: list[str] | None = None,
    ) -> dict[str, Any]:
        """Give ``role`` of channel ``name`` the ``keys`` (key file paths, or ``node``),
        ``threshold`` of them; a new root signed by ``signers`` and the node's key."""
        deploy = self._deploy()
        held = [key if key == NODE_KEY else str(_absolute(key, "key")) for key in keys]
        files = [_absolute(f, "signer") for f in signers or []]
        await self.node.joined.wait()
        answer = await deploy.rotate(name, role, held, threshold=threshold, signers=files)
        return _named(answer)

    async def deploy_install(self, channel: str) -> dict[str, Any]:
        deploy = self._deploy()
        ref = await self._channel_ref(channel)
        await self.node.joined.wait()
        return _named(await deploy.install(ref))

    async def deploy_follow(self, channel: str) -> dict[str, Any]:
        deploy = self._deploy()
        ref = await self._channel_ref(channel)
        await self.node.joined.wait()
        return _named(await deploy.follow(ref))

    async def deploy_unfollow(self, name: str) -> dict[str, Any]:
        return await self._deploy().unfollow(name)

    async def deploy_run(self, name: str) -> dict[str, Any]:
        return _named(await self._deploy().run(name))

    async def deploy_stop(self, name: str) -> dict[str, Any]:
        return _named(await self._deploy().stop(name))

    async def deploy_rollback(self, name: str) -> dict[str, Any]:
        return _named(await self._deploy().rollback(name))

    def deploy_ls(self) -> dict[str, Any]:
        return _named(self._deploy().ls())

    def deploy_status(self, name: str) -> dict[str, Any]:
        return _named(self._deploy().status(name))

    def deploy_logs(self, name: str, size: int = MAX_LOG_TAIL_BYTES) -> dict[str, Any]:
        return self._deploy().logs(name, size)

    # ------------------------------------------------------------------ events and figures

    async def events(self, after: int, timeout: float) -> dict[str, Any]:
        timeout = min(MAX_EVENT_WAIT, max(0.0, timeout))
        log = self.node.event_log
        events, missed = await log.wait(after, timeout)
        return {"events": events, "last": log.last_id, "missed": missed}

    async def figures(self) -> dict[str, Any]:
        """This node's measured crypto speed, link RTT and lookup time beside the claims."""
        failed = (
            self._bench is not None
            and self._bench.done()
            and (self._bench.cancelled() or self._bench.exception() is not None)
        )
        if self._bench is None or failed:
            self._bench = self.node.tasks.spawn(asyncio.to_thread(measure_crypto), "self-measure")
        bench = await asyncio.shield(self._bench)  # a failure is measured again next time
        rtts = [v.rtt_ms for v in self.links() if v.rtt_ms is not None]
        measured = {**bench, "latency_ms": round(statistics.median(rtts), 3) if rtts else None}
        figures = []
        for key, (claim, text) in CLAIMS.items():
            value = measured.get(key)
            ratio = None
            if value:
                ratio = round(value / claim if key == "encryption_gb_s" else claim / value, 2)
            figures.append(Figure(key, value, claim, text, ratio))
        lookups = list(self.node.dht.lookup_latencies)[-1000:]
        if lookups:
            median_ms = statistics.median(lookups) * 1000
            figures.append(
                Figure(
                    "dht_lookup_ms_median",
                    round(median_ms, 3),
                    LOOKUP_CLAIM_MS,
                    "5 ms average (resolution)",
                    round(LOOKUP_CLAIM_MS / median_ms, 2),
                )
            )
        return {"version": __version__, "figures": figures}

    def history(self) -> dict[str, Any]:
        """The node's recent samples (qiz/history.py): RTT, jobs done, CPU, memory."""
        return self.node.history.answer()

    def metrics(self) -> MetricsSnapshot:
        node = self.node
        links = node.links.counters_snapshot()
        dht = node.dht
        compute = node.compute
        worker = compute.worker if compute is not None else None
        return MetricsSnapshot(
            links=links["links"],
            handshakes_ok=links["handshakes_ok"],
            handshakes_failed=links["handshakes_failed"],
            inbound_refused=links["inbound_refused"],
            frames_dropped_replayed=links["frames_dropped_replayed"],
            rpc_malformed=links["rpc_malformed"],
            rpc_reply_unsent=links["rpc_reply_unsent"],
            dht_lookups=dht.counters["lookups"],
            dht_lookup_seconds=list(dht.lookup_latencies),
            dht_contacts=len(dht.table),
            dht_records=len(dht.store),
            dht_invalid_records=dht.counters["invalid_records"],
            dht_refused_stores=dht.counters["refused_stores"],
            dht_hedged_requests=dht.hedged_requests,
            dht_lookup_timeouts=dht.lookup_timeouts,
            jobs_by_state=compute.coordinator.counts_by_state() if compute is not None else None,
            worker_outcomes=dict(worker.counters) if worker is not None else None,
            worker_queue=worker.queue_length if worker is not None else None,
            task_seconds=list(worker.task_seconds) if worker is not None else None,
            link_counters=links,
            store=self._store_stats(),
            nat=node.nat_view(),
            peer_scores=compute.scores.all_scores() if compute is not None else None,
            trust_events=dict(compute.scores.events) if compute is not None else None,
        )


# ---------------------------------------------------------------------------- operations

Args = Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    """One thing a client can ask a node: how it is reached over HTTP (None: only over the
    control socket) and what it does with its arguments."""

    name: str
    run: Callable[[NodeAPI, Args], Any | Awaitable[Any]]
    method: str | None = None
    path: str | None = None
    status: int = 200  # HTTP status of a success


def arg(args: Args, name: str, kind: type = str) -> Any:
    """A required argument of ``kind`` (query strings arrive as text: numbers are converted)."""
    if name not in args:
        raise BadRequest(f"missing argument {name!r}")
    value = args[name]
    if kind is int and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise BadRequest(f"{name} must be an integer") from None
    if kind is float and isinstance(value, str | int) and not isinstance(value, bool):
        try:
            value = float(value)
        except ValueError:
            raise BadRequest(f"{name} must be a number") from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a ' + kind.__name__}")
    return value


# ---------------------------------------------------------------------------- store arguments

MAX_TRANSFER_ID = 64  # characters of a transfer id (it names a put's or get's progress events)
MAX_DOWNLOAD = 16 << 20  # bytes of a file content one store_content answer carries (in memory)


def _filename(name: str | None, cid: ContentId) -> str:
    """A download's file name for a Content-Disposition header: the content's own name with
    anything but letters, digits, '.', '-' and '_' replaced (a manifest's name may hold quotes
    or line breaks), else its short id."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name or "")
    return safe.strip(".")[:128] or cid.short()


def _absolute(text: Any, name: str) -> Path:
    """A path on this machine that the client resolved: the node's working directory is not
    the client's, so a relative path would silently mean somewhere else."""
    if not isinstance(text, str) or not text or "\x00" in text:
        raise BadRequest(f"{name} must be a path")
    path = Path(text)
    if not path.is_absolute():
        raise BadRequest(f"{name} must be an absolute path (the node does not share your cwd)")
    return path


def _content_id(text: Any) -> ContentId:
    """A content id from its text form (``qizc1...``); a typo is named, not looked up."""
    if not isinstance(text, str):
        raise BadRequest("cid must be a content id (qizc1...)")
    return ContentId.parse(text)


def _transfer(args: Args) -> str | None:
    value = args.get("transfer")
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_TRANSFER_ID
        or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
    ):
        raise BadRequest(f"transfer must be 1 to {MAX_TRANSFER_ID} letters, digits, - or _")
    return value


def _optional_int(args: Args, name: str) -> int | None:
    return None if args.get(name) is None else arg(args, name, int)


def _flag(args: Args, name: str) -> bool:
    value = args.get(name, False)
    if isinstance(value, str):  # a query string's flag
        value = value.lower() in ("1", "true", "yes")
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def _paths(args: Args, name: str) -> list[str]:
    value = args.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name} must be a list of paths")
    return value


def _recipients(args: Args) -> list[str]:
    value = args.get("to") or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("to must be a list of node ids or peer record file paths")
    return value


def _texts(value: Any) -> Any:
    """A service's answer as JSON-ready data: ids (content, node) as their text form (before
    :func:`plain`, which would take those dataclasses apart), paths as text, bytes as hex."""
    if isinstance(value, ContentId | NodeId | Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _texts(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _texts(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_texts(v) for v in value]
    return plain(value)


# the service's field names in the faces' words (docs/json/README.md: *_s durations, *_at moments)
_RENAMED = {"seconds": "duration_s", "expires": "expires_at", "created": "created_at"}


def _named(value: Any) -> Any:
    """:func:`_texts`, with the service's field names as every face names them."""
    value = _texts(value)
    if isinstance(value, dict):
        return {_RENAMED.get(k, k): _named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v) for v in value]
    return value


def _record_file(path: Path, now: float) -> PeerRecord:
    """A verified peer record from a file written by ``qiz record`` (armored or binary)."""
    try:
        blob = read_bounded(path, 4 * MAX_RECORD_SIZE, "record file")
        raw = dearmor(RECORD_ARMOR, blob, max_size=MAX_RECORD_SIZE)
        return PeerRecord.verify(raw, now=now)
    except FileTooLarge as exc:
        raise BadRequest(str(exc)) from None
    except OSError as exc:
        raise BadRequest(f"record file {path}: {exc.strerror or exc}") from None
    except (ArmorError, PeerRecordError, QizError) as exc:
        raise BadRequest(f"record file {path} is not a valid peer record: {exc}") from None


def _store_put(api: NodeAPI, args: Args) -> Awaitable[dict[str, Any]]:
    return api.store_put(
        arg(args, "path"),
        k=_optional_int(args, "k"),
        n=_optional_int(args, "n"),
        to=_recipients(args),
        transfer=_transfer(args),
    )


def _store_get(api: NodeAPI, args: Args) -> Awaitable[dict[str, Any]]:
    return api.store_get(
        arg(args, "cid"),
        arg(args, "output"),
        force=_flag(args, "force"),
        into=_flag(args, "into"),
        transfer=_transfer(args),
    )


def _events(api: NodeAPI, args: Args) -> Awaitable[dict[str, Any]]:
    after = arg(args, "after", int) if "after" in args else 0
    timeout = arg(args, "timeout", float) if "timeout" in args else 25.0
    if "wait" in args:  # its other name: the control socket's ask() keeps 'timeout' for itself
        timeout = arg(args, "wait", float)
    return api.events(after, timeout)


def _name_resolve(api: NodeAPI, args: Args) -> Awaitable[dict[str, Any]]:
    name = args["name"] if "name" in args else f"{arg(args, 'owner')}/{arg(args, 'label')}"
    return api.resolve_name(str(name))


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("status", lambda api, a: api.status(), "GET", "/api/node"),
        # stop and name_publish act with the node's identity or end it: only the owner's
        # control socket (mode 0600) carries them, never a token that may sit in a URL
        Operation("stop", lambda api, a: api.request_stop()),
        Operation("peers", lambda api, a: api.peers(), "GET", "/api/peers"),
        # an operator's word on a peer changes what the node gives it: the owner's socket only
        Operation("peer_trust", lambda api, a: api.peer_trust(arg(a, "target"), arg(a, "action"))),
        Operation("routing", lambda api, a: api.routing(), "GET", "/api/routing"),
        Operation("records", lambda api, a: api.records(), "GET", "/api/records"),
        Operation("scores", lambda api, a: {"scores": api.scores()}, "GET", "/api/scores"),
        Operation("events", _events, "GET", "/api/events"),
        Operation("bench", lambda api, a: api.figures(), "GET", "/api/bench"),
        Operation("history", lambda api, a: api.history(), "GET", "/api/history"),
        Operation("resolve", lambda api, a: api.resolve(arg(a, "id")), "POST", "/api/resolve"),
        # ping may run for minutes (count): only the owner's socket carries it; connect dials
        # as resolve does, so it is served over HTTP too (docs/qmp.md, "Naming a peer")
        Operation("ping", lambda api, a: api.ping(arg(a, "target"), arg(a, "count", int))),
        Operation("connect", lambda api, a: api.connect(arg(a, "target")), "POST", "/api/connect"),
        Operation("netcheck", lambda api, a: api.netcheck(), "POST", "/api/netcheck"),
        Operation(
            "name_publish",
            lambda api, a: api.publish_name(arg(a, "label"), arg(a, "value"), arg(a, "ttl", int)),
        ),
        Operation("name_resolve", _name_resolve, "GET", "/api/names/{owner}/{label}"),
        Operation("job_list", lambda api, a: api.jobs(), "GET", "/api/jobs"),
        Operation("job_submit", lambda api, a: api.submit(a.get("spec")), "POST", "/api/jobs", 201),
        Operation("job_status", lambda api, a: api.job(arg(a, "job")), "GET", "/api/jobs/{job}"),
        Operation(
            "job_cancel", lambda api, a: api.cancel(arg(a, "job")), "POST", "/api/jobs/{job}/cancel"
        ),
        Operation(
            "job_result",
            lambda api, a: api.job_result(arg(a, "job")),
            "GET",
            "/api/jobs/{job}/result",
        ),
        Operation(
            "job_logs", lambda api, a: api.job_logs(arg(a, "job")), "GET", "/api/jobs/{job}/logs"
        ),
        Operation("job_worked", lambda api, a: api.worker_runs(), "GET", "/api/worker/runs"),
        # a stored result is published with this node's identity: the owner's socket only
        Operation(
            "job_store",
            lambda api, a: api.job_store(
                arg(a, "job"), k=_optional_int(a, "k"), n=_optional_int(a, "n")
            ),
        ),
        Operation("job_fetch_result", lambda api, a: api.job_fetch_result(arg(a, "cid"))),
        Operation("attestations", lambda api, a: api.attestations(), "GET", "/api/attestations"),
        Operation(
            "attestation_file",
            lambda api, a: api.attestation_file(arg(a, "job")),
            "GET",
            "/api/attestations/{job}",
        ),
        # put and get read and write files where the caller says: only the owner's control
        # socket carries them (as stop), never a token that may sit in a URL
        Operation("store_put", _store_put),
        Operation("store_get", _store_get),
        Operation("store_ls", lambda api, a: api.store_ls(), "GET", "/api/store"),
        Operation(
            "store_status",
            lambda api, a: api.store_status(arg(a, "cid")),
            "GET",
            "/api/store/{cid}",
        ),
        Operation(
            "store_pin", lambda api, a: api.store_pin(arg(a, "cid")), "POST", "/api/store/{cid}/pin"
        ),
        Operation(
            "store_unpin",
            lambda api, a: api.store_unpin(arg(a, "cid")),
            "POST",
            "/api/store/{cid}/unpin",
        ),
        Operation(
            "store_rm", lambda api, a: api.store_rm(arg(a, "cid")), "POST", "/api/store/{cid}/rm"
        ),
        Operation("store_gc", lambda api, a: api.store_gc(), "POST", "/api/store/gc"),
        # deploy: publish and install act with the node's identity and read or write files,
        # run and stop start processes: only the owner's control socket carries those
        Operation(
            "deploy_build", lambda api, a: api.deploy_build(arg(a, "path"), to=_recipients(a))
        ),
        Operation(
            "deploy_publish",
            lambda api, a: api.deploy_publish(
                arg(a, "path"),
                channel=a.get("channel"),
                to=_recipients(a),
                signers=_paths(a, "signers"),
            ),
        ),
        Operation(
            "deploy_rotate",
            lambda api, a: api.deploy_rotate(
                arg(a, "name"),
                arg(a, "role"),
                _paths(a, "keys"),
                threshold=_optional_int(a, "threshold") or 1,
                signers=_paths(a, "signers"),
            ),
        ),
        Operation("deploy_install", lambda api, a: api.deploy_install(arg(a, "channel"))),
        Operation("deploy_follow", lambda api, a: api.deploy_follow(arg(a, "channel"))),
        Operation("deploy_unfollow", lambda api, a: api.deploy_unfollow(arg(a, "name"))),
        Operation("deploy_run", lambda api, a: api.deploy_run(arg(a, "name"))),
        Operation("deploy_stop", lambda api, a: api.deploy_stop(arg(a, "name"))),
        Operation("deploy_rollback", lambda api, a: api.deploy_rollback(arg(a, "name"))),
        # reading what is installed and running is served over HTTP too (the dashboard's)
        Operation("deploy_ls", lambda api, a: api.deploy_ls(), "GET", "/api/deploy"),
        Operation(
            "deploy_status",
            lambda api, a: api.deploy_status(arg(a, "name")),
            "GET",
            "/api/deploy/{name}",
        ),
        Operation(
            "deploy_logs",
            lambda api, a: api.deploy_logs(
                arg(a, "name"), _optional_int(a, "size") or MAX_LOG_TAIL_BYTES
            ),
            "GET",
            "/api/deploy/{name}/logs",
        ),
        Operation(
            "store_content",
            lambda api, a: api.store_content(arg(a, "cid")),
            "GET",
            "/api/store/{cid}/content",
        ),
    )
}


async def invoke(api: NodeAPI, name: str, args: Args) -> Any:
    """Run operation ``name``; its result as plain data (a :class:`Download` stays one)."""
    operation = OPERATIONS.get(name)
    if operation is None:
        raise BadRequest(f"unknown operation {name!r}")
    result = operation.run(api, args)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result if isinstance(result, Download) else plain(result)
