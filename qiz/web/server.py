"""The local HTTP API and dashboard, served by the node itself on 127.0.0.1 (aiohttp).

Who may talk to it: only this machine (it binds 127.0.0.1), only with the token from the node's
home (``api.token``, mode 0600; ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``), and only
through a Host this server answers to (``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``),
so a web page elsewhere that rebinds its DNS name to 127.0.0.1 is refused (its Host is its own
name). A request carrying an Origin must come from the same host and port; a POST must be JSON
(no HTML form can send that without a CORS preflight, which this server never grants). The
dashboard's files need no token (they hold no data); everything under ``/api/`` and
``/metrics`` does. ``openapi.json`` documents the API.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qiz import __version__
from qiz.compute import spec as specs
from qiz.compute.attest import verify_file
from qiz.compute.errors import AttestationError, JobError, JobNotFound, SpecError
from qiz.compute.execute import summarise
from qiz.crypto.ids import NodeId
from qiz.web import metrics
from qiz.web.events import EventLog

if TYPE_CHECKING:
    from qiz.node import Node

log = logging.getLogger("qiz.web")
MAX_BODY = 1024 * 1024
STATIC = resources.files("qiz.web") / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# the whitepaper's figures that this node can measure about itself
CLAIMS = {
    "encryption_gb_s": (1.0, "1 GB/s encryption"),
    "key_exchange_ms": (1.0, "1 ms key exchange"),
    "authentication_ms": (1.0, "1 ms authentication"),
    "latency_ms": (5.0, "5 ms average latency"),
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebServer:
    """``await start(port)``; ``url`` is then ``http://127.0.0.1:PORT/``."""

    def __init__(self, node: Node, token: str) -> None:
        self.node = node
        self.token = token
        self.events: EventLog = node.events
        self.registry = metrics.registry_for(node)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self._bench: dict[str, Any] | None = None
        self._verified: dict[tuple[bytes, bytes], dict[str, Any]] = {}
        self._bench_task: asyncio.Task[dict[str, Any]] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        get, post = app.router.add_get, app.router.add_post
        get("/", self._index)
        get("/static/{name}", self._static)
        get("/openapi.json", self._openapi)
        get("/metrics", self._metrics)
        get("/api/node", self._node)
        get("/api/peers", self._peers)
        get("/api/routing", self._routing)
        get("/api/records", self._records)
        get("/api/jobs", self._jobs)
        post("/api/jobs", self._submit)
        get("/api/jobs/{job}", self._job)
        post("/api/jobs/{job}/cancel", self._cancel)
        get("/api/attestations", self._attestations)
        get("/api/attestations/{job}", self._attestation_file)
        get("/api/scores", self._scores)
        get("/api/events", self._events)
        get("/api/bench", self._bench_figures)
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._watch = asyncio.ensure_future(self._watch_links())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._bench_task is not None:
            self._bench_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ the guard

    def _hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = self._hosts()
        if request.host not in hosts:
            return _error(403, f"Host {request.host!r} is not this node's API (DNS rebinding?)")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in {f"http://{h}" for h in hosts}:
            return _error(403, f"Origin {origin!r} may not use this node's API")
        if request.path.startswith("/api/") or request.path == "/metrics":
            given = request.headers.get("Authorization", "")
            token = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
            token = token or request.query.get("token", "")
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                return _error(401, "a valid API token is required (see 'qiz dashboard')")
        if request.method == "POST" and request.content_type != "application/json":
            return _error(415, "POST bodies must be application/json")
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # unknown paths and methods answer in JSON too
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            return _error(exc.status, exc.reason)
        except JobNotFound as exc:
            return _error(404, str(exc))
        except (JobError, SpecError) as exc:
            return _error(400, str(exc))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:"
        )
        return response

    # ------------------------------------------------------------------ static files

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        suffix = os.path.splitext(name)[1]
        if "/" in name or name.startswith(".") or suffix not in kinds:
            raise web.HTTPNotFound()
        target = STATIC / name
        if not target.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=target.read_bytes(), content_type=kinds[suffix])

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        body = (resources.files("qiz.web") / "openapi.json").read_bytes()
        return web.Response(body=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.render(self.registry),
            headers={"Content-Type": metrics.CONTENT_TYPE},
        )

    # ------------------------------------------------------------------ node and mesh

    async def _node(self, request: web.Request) -> web.StreamResponse:
        status = self.node.status()
        status["api"] = self.url
        status["addresses"] = [self.node.address]
        return web.json_response(status)

    async def _peers(self, request: web.Request) -> web.StreamResponse:
        scores = {}
        if self.node.compute is not None:
            scores = {str(NodeId(r["peer"])): r["score"] for r in self.node.compute.scores.table()}
        peers = []
        for stats in self.node.links.stats():
            if stats["peer"] is None:
                continue
            peers.append({**stats, "score": scores.get(stats["peer"])})
        return web.json_response({"self": str(self.node.node_id), "peers": peers})

    async def _routing(self, request: web.Request) -> web.StreamResponse:
        own = self.node.node_id.digest
        contacts = [
            {
                "node_id": str(NodeId(c.node_id)),
                "address": c.address,
                "last_seen": c.last_seen,
                "failures": c.failures,
                "bucket": 256
                - (int.from_bytes(own, "big") ^ int.from_bytes(c.node_id, "big")).bit_length(),
            }
            for c in self.node.dht.table.contacts()
        ]
        return web.json_response({"k": self.node.dht.config.k, "contacts": contacts})

    async def _records(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"records": self.node.dht.store.listing()})

    # ------------------------------------------------------------------ jobs

    def _coordinator(self) -> Any:
        if self.node.compute is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "this node runs without compute"}),
                content_type="application/json",
            )
        return self.node.compute.coordinator

    async def _jobs(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"jobs": self._coordinator().list()})

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        coordinator = self._coordinator()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        document = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(document, dict):
            return _error(400, 'expected {"spec": {...}}: a job spec as a JSON object')
        identity = self.node.identity
        raw = specs.sign(specs.make_body(document, identity), identity)
        await self.node.joined.wait()
        state = await coordinator.submit(raw)
        return web.json_response(state, status=201)

    def _job_id(self, request: web.Request) -> bytes:
        return self._coordinator().resolve_id(request.match_info["job"])

    async def _job(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._coordinator().status(self._job_id(request)))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._coordinator().cancel(self._job_id(request)))

    async def _attestations(self, request: web.Request) -> web.StreamResponse:
        rows = self._coordinator().tables.jobs(("done",))
        return web.json_response({"attestations": [self._checked(row[0], row[6]) for row in rows]})

    def _checked(self, job: bytes, data: bytes) -> dict[str, Any]:
        """One attestation, verified the first time it is listed (it never changes after):
        the dashboard lists them every second, and each check is many ML-DSA verifications."""
        key = (job, data)
        if key not in self._verified:
            try:
                verified = verify_file(data)
                entry: dict[str, Any] = {
                    "job": job.hex(),
                    "verified": True,
                    "kind": verified.spec.kind,
                    "tasks": len(verified.results),
                    "tests": sorted(set(verified.tests)),
                    "workers": [str(w) for w in verified.workers],
                    "issued": verified.issued,
                    "summary": summarise(verified.spec.kind, verified.results),
                }
            except AttestationError as exc:
                entry = {"job": job.hex(), "verified": False, "error": str(exc)}
            self._verified[key] = entry
        return self._verified[key]

    async def _attestation_file(self, request: web.Request) -> web.StreamResponse:
        job = self._job_id(request)
        data = self._coordinator().result(job)
        name = f"{job.hex()[:16]}.att"
        return web.Response(
            body=data,
            content_type="application/cbor",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _scores(self, request: web.Request) -> web.StreamResponse:
        if self.node.compute is None:
            return web.json_response({"scores": []})
        rows = [{**r, "peer": str(NodeId(r["peer"]))} for r in self.node.compute.scores.table()]
        return web.json_response({"scores": rows})

    # ------------------------------------------------------------------ events

    async def _events(self, request: web.Request) -> web.StreamResponse:
        try:
            after = int(request.query.get("after", "0"))
            timeout = min(30.0, max(0.0, float(request.query.get("timeout", "25"))))
        except ValueError:
            return _error(400, "after must be an integer and timeout a number of seconds")
        events, missed = await self.events.wait(after, timeout)
        return web.json_response({"events": events, "last": self.events.last_id, "missed": missed})

    async def _watch_links(self) -> None:
        """Turn changes of the link table into events (links have no callbacks of their own)."""
        known: set[str] = set()
        while True:
            current = {str(peer) for peer in self.node.links.peers}
            for peer in sorted(current - known):
                self.events.emit("peer.linked", peer=peer)
            for peer in sorted(known - current):
                self.events.emit("peer.unlinked", peer=peer)
            known = current
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ benchmark figures

    async def _bench_figures(self, request: web.Request) -> web.StreamResponse:
        if self._bench is None:
            if self._bench_task is None:
                self._bench_task = asyncio.ensure_future(asyncio.to_thread(measure_crypto))
            self._bench = await asyncio.shield(self._bench_task)
        rtts = [s["rtt_ms"] for s in self.node.links.stats() if s["rtt_ms"] is not None]
        lookups = self.node.dht.lookup_latencies[-1000:]
        measured = {
            **self._bench,
            "latency_ms": round(statistics.median(rtts), 3) if rtts else None,
        }
        figures = []
        for key, (claim, text) in CLAIMS.items():
            value = measured.get(key)
            better = key == "encryption_gb_s"
            ratio = None
            if value:
                ratio = round(value / claim if better else claim / value, 2)
            figures.append(
                {
                    "figure": key,
                    "measured": value,
                    "claim": claim,
                    "claim_text": text,
                    "ratio": ratio,
                }
            )
        if lookups:
            figures.append(
                {
                    "figure": "dht_lookup_ms_median",
                    "measured": round(statistics.median(lookups) * 1000, 3),
                    "claim": 5.0,
                    "claim_text": "5 ms average (resolution)",
                    "ratio": round(5.0 / (statistics.median(lookups) * 1000), 2),
                }
            )
        return web.json_response({"version": __version__, "figures": figures})


def aead_speed(records: int = 32) -> float:
    """AES-256-GCM over 1 MiB records on this machine, in GB/s."""
    from qiz.crypto.aead import Aead, AeadAlgorithm, counter_nonce

    aead = Aead(os.urandom(32), AeadAlgorithm.AES_256_GCM)
    block = os.urandom(1 << 20)
    began = time.perf_counter()
    for i in range(records):
        aead.encrypt(counter_nonce(i), block, b"")
    return records * len(block) / (time.perf_counter() - began) / 1e9


def measure_crypto() -> dict[str, Any]:
    """AEAD speed, one X-Wing key exchange, one composite sign + verify, on this machine."""
    from qiz.crypto.composite import CompositeSigningKey
    from qiz.crypto.xwing import XWingPrivateKey

    speed = aead_speed()
    kem = XWingPrivateKey.generate()
    public = kem.public_key()

    def median_ms(fn: Callable[[], object], runs: int = 30) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 3)

    def exchange() -> None:
        _shared, ciphertext = public.encapsulate()
        kem.decapsulate(ciphertext)

    key = CompositeSigningKey.generate()
    verify_key = key.public_key()

    def authenticate() -> None:
        verify_key.verify(key.sign(b"qiz", "qiz/bench"), b"qiz", "qiz/bench")

    return {
        "encryption_gb_s": round(speed, 3),
        "key_exchange_ms": median_ms(exchange),
        "authentication_ms": median_ms(authenticate),
    }
