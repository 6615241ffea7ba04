"""The local HTTP API and dashboard, served by the node itself on 127.0.0.1 (aiohttp).

Who may talk to it: only this machine (it binds 127.0.0.1), only with the token from the node's
home (``api.token``, mode 0600; ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``), and only
through a Host this server answers to (``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``),
so a web page elsewhere that rebinds its DNS name to 127.0.0.1 is refused (its Host is its own
name). A request carrying an Origin must come from the same host and port; a POST must be JSON
(no HTML form can send that without a CORS preflight, which this server never grants). The
dashboard's files need no token (they hold no data); everything under ``/api/`` and
``/metrics`` does. ``openapi.json`` documents the API.

What one local process can take from it is bounded (:class:`ApiLimits`): at most
``max_connections`` connections at once (1,100 idle ones once took every file descriptor of the
node, and with them every QMP dial); when a new one arrives at the cap, the oldest connection
that has not sent a whole request head is closed to make room (an idle or half-sent connection
is cheap to take back; a request whose head is in is never cut). A real client sends its head
at once and is protected from then until its answer, so a flood of silent or slowloris
connections, even one reopened as fast as the node closes it, churns through itself. Only when
every connection holds a request is the newcomer answered 503 and closed. A connection must
deliver its request line and headers within ``idle_timeout`` seconds of opening or of its last
answer (aiohttp's keep-alive timer, which also runs before the first request: a slowloris
client is closed at it), and a body within ``body_timeout`` seconds (408). JSON bodies are
nested at most :data:`qiz.web.json_input.MAX_JSON_DEPTH` levels.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qiz.node_api import OPERATIONS, Download, NodeAPI, Operation, error_answer, invoke
from qiz.web import metrics
from qiz.web.json_input import JsonInputError, parse_json
from qiz.web.token import load_or_create_token

if TYPE_CHECKING:
    from qiz.node import FaceStarter, Node

log = logging.getLogger("qiz.web")
MAX_BODY = 1024 * 1024
# Each API connection holds a file descriptor and a parser; the cap leaves most of the node's
# descriptors (often 1,024 in all) to its QMP links, databases and worker pipes.
MAX_CONNECTIONS = 128
# Seconds a connection may take to send a whole request line and headers, counted from its
# opening or its last answer: what a slowloris client (or an idle one) can hold a slot for.
IDLE_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0  # seconds to receive a request body (a body sent a byte at a time)
# Connects the kernel queues for the API before it accepts them: a flood of connects fills a
# short queue (asyncio's default is 100) and a real client's SYN is then dropped and retried.
LISTEN_BACKLOG = 1024
# Connections taken off that queue per wakeup. asyncio accepts up to its ``backlog`` argument in
# one go, each holding a descriptor before the cap can evict anything; with the queue's 1,024 a
# flood could take every descriptor in one wakeup (and asyncio logs EMFILE with a traceback).
ACCEPT_BATCH = 16
LINGER = 1.0  # seconds an unread body is drained after an answer, so the answer can be read
STATIC = resources.files("qiz.web") / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_REFUSAL_BODY = b'{"error": "every API connection is busy; retry later"}\n'
REFUSAL = (  # the whole answer to a connection over the cap when none can be let go
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiLimits:
    """What one client may hold of the API (the ``[api]`` table of config.toml)."""

    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    body_timeout: float = BODY_TIMEOUT


def serve_api(port: int = 0, limits: ApiLimits | None = None) -> FaceStarter:
    """What a node calls at start to serve its HTTP API on 127.0.0.1:``port`` (0: any free
    port), with the token of its home: ``Node(..., http=serve_api(port))``."""

    async def start(node: Node) -> WebServer:
        server = WebServer(node, load_or_create_token(node.control_dir), limits)
        await server.start(port)
        return server

    return start


class _Handler(web.RequestHandler):
    """aiohttp's connection protocol, admitted by the :class:`WebServer`'s connection cap when
    the connection is made and released when it is lost."""

    def __init__(self, owner: WebServer, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.owner = owner
        self.admitted = False
        self.headed = False  # a whole request head is in and not answered yet: never evicted
        self._tail = b""  # the last bytes of the head so far, for a CRLFCRLF split in two

    def data_received(self, data: bytes) -> None:
        if not self.headed:
            window = self._tail + data
            self.headed = b"\r\n\r\n" in window
            self._tail = window[-3:]
        super().data_received(data)

    def answered(self) -> None:
        """Its request was answered: it may be evicted again while it idles."""
        self.headed = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.owner.admit(self):
            transport.write(REFUSAL)  # type: ignore[attr-defined]
            transport.close()
            return
        self.admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.admitted:
            self.owner.release(self)
            super().connection_lost(exc)


class _Site(web.BaseSite):
    """A TCP site on 127.0.0.1 whose connections are :class:`_Handler`\\ s."""

    def __init__(self, runner: web.AppRunner, port: int, factory: Callable[[], _Handler]) -> None:
        super().__init__(runner)
        self._port = port
        self._factory = factory

    @property
    def name(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # IPPROTO_TCP named, so that asyncio turns Nagle off on every accepted connection
        # (qiz.qmp.transport._begin_connect says why)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self._port))
            listener.setblocking(False)
            # asyncio uses one number for the kernel's queue and its accept batch: serve with
            # the small batch, then widen the queue (listen() again only resizes it).
            self._server = await loop.create_server(
                self._factory, sock=listener, backlog=ACCEPT_BATCH
            )
            listener.listen(LISTEN_BACKLOG)
        except BaseException:
            listener.close()
            raise


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _BodyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")


class WebServer:
    """``await start(port)``; ``url`` is then ``http://127.0.0.1:PORT/``.

    Every route under ``/api/`` is an operation of :data:`qiz.node_api.OPERATIONS`, answered
    by the node's :class:`~qiz.node_api.NodeAPI`; this class adds only what is HTTP's: the
    guard, static files, the OpenAPI document and the Prometheus exposition.
    """

    def __init__(self, node: Node, token: str, limits: ApiLimits | None = None) -> None:
        self.api: NodeAPI = node.api
        self.token = token
        self.limits = limits or ApiLimits()
        self.registry = metrics.registry_for(self.api, self._guard_figures)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._static_names = {
            entry.name
            for entry in STATIC.iterdir()
            if os.path.splitext(entry.name)[1] in STATIC_TYPES
        }
        self._open: dict[_Handler, None] = {}  # admitted connections, oldest first
        self.connections_refused = 0
        self.connections_evicted = 0
        self.bodies_timed_out = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _guard_figures(self) -> tuple[int, dict[str, int]]:
        """Open connections and refusals by reason, for ``/metrics``."""
        return len(self._open), {
            "connection_refused": self.connections_refused,
            "connection_evicted": self.connections_evicted,
            "body_timeout": self.bodies_timed_out,
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/metrics", self._metrics)
        for operation in OPERATIONS.values():
            if operation.method is not None and operation.path is not None:
                app.router.add_route(operation.method, operation.path, self._handler(operation))
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def connection() -> _Handler:
            return _Handler(
                self,
                manager,
                loop=loop,
                keepalive_timeout=self.limits.idle_timeout,
                lingering_time=LINGER,
            )

        site = _Site(self._runner, port, connection)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ the connection cap

    def admit(self, handler: _Handler) -> bool:
        """Take ``handler``'s connection under the cap, closing the oldest idle connection to
        make room if need be; False (the caller refuses it) if every connection is busy."""
        if len(self._open) >= self.limits.max_connections:
            idle = next((h for h in self._open if not h.headed), None)
            if idle is None:
                self.connections_refused += 1
                log.warning("API connection refused: %d connections busy", len(self._open))
                return False
            self.connections_evicted += 1
            log.info(
                "API connection cap (%d) reached: closing the oldest idle one", len(self._open)
            )
            del self._open[idle]
            idle.force_close()
        self._open[handler] = None
        return True

    def release(self, handler: _Handler) -> None:
        self._open.pop(handler, None)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ operations

    def _handler(self, operation: Operation) -> Handler:
        """The route of one operation: its arguments from the JSON body (POST), the query and
        the path, the path winning (``POST /api/jobs/A/cancel {"job": "B"}`` cancels A); its
        result as JSON, or as an attachment when it is a :class:`~qiz.node_api.Download`."""

        async def handle(request: web.Request) -> web.StreamResponse:
            args: dict[str, Any] = {}
            if request.method == "POST" and request.can_read_body:
                body = parse_json(await self._body(request), "the body")
                if not isinstance(body, dict):
                    return _error(400, "the body must be a JSON object")
                args.update(body)
            args.update(request.query)
            args.update(request.match_info)
            result = await invoke(self.api, operation.name, args)
            if isinstance(result, Download):
                return web.Response(
                    body=result.data,
                    content_type=result.content_type,
                    headers={"Content-Disposition": f'attachment; filename="{result.filename}"'},
                )
            return web.json_response(result, status=operation.status)

        handle.__name__ = f"op_{operation.name}"
        return handle

    async def _body(self, request: web.Request) -> bytes:
        """The request's body, if it arrives within ``body_timeout`` (else 408, and the
        connection is closed after the answer)."""
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                return await request.read()
        except TimeoutError:
            self.bodies_timed_out += 1
            raise _BodyTimeout(self.limits.body_timeout) from None

    # ------------------------------------------------------------------ the guard

    def _hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await self._checked(request, handler)
        finally:
            if isinstance(request.protocol, _Handler):
                request.protocol.answered()

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
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
        except _BodyTimeout as exc:
            response = _error(408, str(exc))
            response.force_close()
        except JsonInputError as exc:
            return _error(400, str(exc))
        except web.HTTPException as exc:  # unknown paths and methods answer in JSON too
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            return _error(exc.status, exc.reason)
        except Exception as exc:  # the same answer the control socket gives (500 for a bug)
            return _error(*error_answer(exc))
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
        # only the names listed at start: no path the client wrote reaches the file system
        # (a 5,000-character name once made the lookup itself fail with a 500)
        if name not in self._static_names:
            raise web.HTTPNotFound()
        suffix = os.path.splitext(name)[1]
        return web.Response(body=(STATIC / name).read_bytes(), content_type=STATIC_TYPES[suffix])

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        body = (resources.files("qiz.web") / "openapi.json").read_bytes()
        return web.Response(body=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.render(self.registry),
            headers={"Content-Type": metrics.CONTENT_TYPE},
        )
