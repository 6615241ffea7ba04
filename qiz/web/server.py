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

import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qiz.node_api import OPERATIONS, Download, NodeAPI, Operation, error_answer, invoke
from qiz.web import metrics
from qiz.web.token import load_or_create_token

if TYPE_CHECKING:
    from qiz.node import FaceStarter, Node

log = logging.getLogger("qiz.web")
MAX_BODY = 1024 * 1024
STATIC = resources.files("qiz.web") / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def serve_api(port: int = 0) -> FaceStarter:
    """What a node calls at start to serve its HTTP API on 127.0.0.1:``port`` (0: any free
    port), with the token of its home: ``Node(..., http=serve_api(port))``."""

    async def start(node: Node) -> WebServer:
        server = WebServer(node, load_or_create_token(node.control_dir))
        await server.start(port)
        return server

    return start


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebServer:
    """``await start(port)``; ``url`` is then ``http://127.0.0.1:PORT/``.

    Every route under ``/api/`` is an operation of :data:`qiz.node_api.OPERATIONS`, answered
    by the node's :class:`~qiz.node_api.NodeAPI`; this class adds only what is HTTP's: the
    guard, static files, the OpenAPI document and the Prometheus exposition.
    """

    def __init__(self, node: Node, token: str) -> None:
        self.api: NodeAPI = node.api
        self.token = token
        self.registry = metrics.registry_for(self.api)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

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
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

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
                try:
                    body = await request.json()
                except ValueError:
                    return _error(400, "the body is not JSON")
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
