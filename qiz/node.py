"""The composition root: one :class:`Node` wires identity, links and RPC services together.

A node listens on one address, keeps links to its bootstrap peers, answers ``qmp.ping`` and
``node.info``, and exposes its state to the local owner through a control socket (a Unix
socket in the home, mode 0600) that ``qiz node status`` and ``qiz node stop`` talk to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qiz import __version__
from qiz.compute.errors import JobError
from qiz.compute.service import ComputeConfig, ComputeService
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity, PeerRecord, PeerRecordError
from qiz.qmp.manager import LinkManager, ManagerConfig
from qiz.qmp.rpc import CallContext, Handler, RpcEndpoint, RpcError
from qiz.qmp.transport import LinkError
from qiz.resolve.dht import Dht, DhtConfig, ResolveError
from qiz.resolve.discovery import LanDiscovery
from qiz.resolve.records import RecordError
from qiz.resolve.store import RecordStore
from qiz.web.events import EventLog

if TYPE_CHECKING:
    from qiz.web.server import WebServer

log = logging.getLogger("qiz.node")
CONTROL_SOCKET = "node.sock"
RECORD_DB = "records.sqlite"
MAX_CONTROL_LINE = 64 * 1024 * 1024  # a job spec or an attestation file fits


class ControlSocketError(RuntimeError):
    """The home's control socket cannot be set up: another node runs there, or the OS refused."""


def parse_peer(text: str) -> tuple[str, NodeId | None]:
    """``ip:port`` or ``qizn1...@ip:port`` (the id pins who must answer)."""
    if "@" in text:
        ident, _, address = text.partition("@")
        return address, NodeId.parse(ident)
    return text, None


class Node:
    """A running QIZ node (asyncio). ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        listen: str = "127.0.0.1:0",
        peers: list[str] | None = None,
        config: ManagerConfig | None = None,
        dht_config: DhtConfig | None = None,
        lan: dict[str, Any] | None = None,
        control_dir: Path | None = None,
        compute: ComputeConfig | None = None,
        api_port: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.listen = listen
        self.bootstrap = [parse_peer(p) for p in peers or []]
        self.clock = clock
        self.started_at = clock()
        self.control_dir = control_dir
        self._record: PeerRecord | None = None
        self._addresses: list[str] = []
        self.handlers: dict[str, Handler] = {
            "qmp.ping": self._rpc_ping,
            "node.info": self._rpc_info,
        }
        self.links = LinkManager(identity, self.record, self.handlers, config=config, clock=clock)
        store = RecordStore(control_dir / RECORD_DB if control_dir is not None else None)
        self.dht = Dht(identity, self.links, store, self.record, config=dht_config, clock=clock)
        self.handlers.update(self.dht.handlers())
        self.links.on_peer = self.dht.on_link
        self.events = EventLog(clock=clock)
        self.api_port = api_port  # None: no HTTP API; 0: any free port
        self.web: WebServer | None = None  # started with the node when api_port is set
        self.compute = (
            ComputeService(
                identity,
                self.links,
                self.dht,
                self.handlers,
                config=compute,
                home=control_dir,
                clock=clock,
            )
            if compute is not None
            else None
        )
        if self.compute is not None:
            self.compute.coordinator.on_event = self.events.emit
        self.joined = asyncio.Event()  # set once the first join (bootstrap + publish) ran
        self.lan = (
            LanDiscovery(identity.node_id.digest, lambda: self.address, self._on_beacon, **lan)
            if lan is not None
            else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._join_task: asyncio.Task[None] | None = None
        self._control: asyncio.base_events.Server | None = None
        self.stopped = asyncio.Event()
        self.stop_requested = asyncio.Event()

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def address(self) -> str:
        return self.links.listener.address

    def record(self) -> PeerRecord:
        """This node's signed peer record, re-signed when it is close to expiry."""
        now = self.clock()
        if self._record is None or self._record.expires - now < 3600:
            self._record = PeerRecord.create(
                self.identity, self._addresses, seq=int(now * 1000), now=now
            )
        return self._record

    async def start(self) -> None:
        """Listen, then open the control socket; :class:`OSError` if the address cannot be
        bound, :class:`ControlSocketError` if the control socket cannot (nothing is left
        running in either case)."""
        if self.control_dir is not None:
            await self._refuse_if_running()
        await self.links.start(self.listen)
        if self.control_dir is not None:
            try:
                await self._start_control()
            except OSError as exc:
                await self.links.close()
                path = self.control_dir / CONTROL_SOCKET
                raise ControlSocketError(
                    f"cannot open the control socket {path}: {exc.strerror or exc}"
                ) from None
        if self.api_port is not None:
            from qiz.web.server import WebServer  # aiohttp only for nodes that serve the API
            from qiz.web.token import load_or_create_token

            try:
                self.web = WebServer(self, load_or_create_token(self.control_dir))
                await self.web.start(self.api_port)
            except OSError as exc:
                await self.links.close()
                if self._control is not None:
                    self._control.close()
                raise ControlSocketError(
                    f"cannot serve the HTTP API on 127.0.0.1:{self.api_port}: {exc.strerror or exc}"
                ) from None
        self._addresses = [self.address]
        self._record = None
        for address, expected in self.bootstrap:
            self.links.pin(address, expected)
        if self.lan is not None:
            await self.lan.start()
        self._join_task = asyncio.ensure_future(self._join())
        log.info("node %s listening on %s", self.node_id, self.address)

    async def _join(self) -> None:
        """Link to the bootstrap peers, fill the routing table, publish our record."""
        try:
            for address, expected in self.bootstrap:
                try:
                    await self.links.connect(address, expected)
                except (LinkError, OSError) as exc:
                    log.info("bootstrap peer %s: %s", address, exc)
            await self.dht.bootstrap()
            stored = await self.dht.publish_self()
            log.info(
                "joined: %d contacts, our record stored at %d nodes", len(self.dht.table), stored
            )
            self.dht.start()
        except Exception:
            log.exception("joining the mesh failed")
        finally:
            if self.compute is not None:  # jobs are served even if the first join failed
                self.compute.start()
            self.joined.set()

    async def stop(self) -> None:
        if self._join_task is not None:
            self._join_task.cancel()
        await self.dht.stop()
        if self.lan is not None:
            await self.lan.stop()
        for task in self._tasks:
            task.cancel()
        if self.web is not None:
            await self.web.stop()
        if self.compute is not None:
            await self.compute.stop()
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(Exception):
                await self._control.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                (self.control_dir / CONTROL_SOCKET).unlink()  # type: ignore[operator]
        await self.links.close()
        self.dht.store.close()
        self.stopped.set()

    async def connect(
        self, address: str, expected: PeerRecord | NodeId | None = None
    ) -> RpcEndpoint:
        return await self.links.connect(address, expected)

    def status(self) -> dict[str, Any]:
        return {
            "node_id": str(self.node_id),
            "version": __version__,
            "address": self.address,
            "uptime_s": round(self.clock() - self.started_at, 1),
            "links": sorted(self.links.stats(), key=lambda s: s["peer"] or ""),
            "inbound_refused": self.links.listener.refused,
            "handshakes_failed": self.links.listener.handshakes_failed,
            "dht": {
                "contacts": len(self.dht.table),
                "records": len(self.dht.store),
                **self.dht.counters,
            },
            "compute": self.compute.status() if self.compute is not None else None,
            "api": self.web.url if self.web is not None else None,
        }

    def _on_beacon(self, node_id: bytes, address: str) -> None:
        """A LAN beacon named a node we may not know: dial it, expecting that id."""
        peer = NodeId(node_id)
        if peer in self.links.peers or self.links.closing or len(self._tasks) >= 8:
            return

        async def link_up() -> None:
            try:
                await self.links.connect(address, peer, timeout=5.0)
                if len(self.dht.table) < self.dht.config.k:  # still joining: fill the table
                    await self.dht.bootstrap()
                    await self.dht.publish_self()
            except (LinkError, OSError, TimeoutError) as exc:
                log.info("LAN peer %s at %s: %s", peer.short(), address, exc)

        task = asyncio.ensure_future(link_up())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ resolution

    async def resolve(self, node_id: NodeId) -> dict[str, Any]:
        """Find ``node_id``'s verified peer record and open a link to it."""
        started = time.perf_counter()
        record = await self.dht.resolve_peer(node_id)
        resolved = time.perf_counter() - started
        linked = None
        if node_id != self.node_id and record.addresses:
            await self.links.connect(record.addresses[0], record)
            linked = record.addresses[0]
        return {
            "node_id": str(record.node_id),
            "addresses": list(record.addresses),
            "seq": record.seq,
            "expires": record.expires,
            "resolve_ms": round(resolved * 1000, 3),
            "linked": linked,
            "record": base64.b64encode(record.raw).decode("ascii"),
        }

    async def publish_name(self, label: str, value: str, ttl: int) -> dict[str, Any]:
        name, stored = await self.dht.publish_name(label, value, ttl=ttl)
        return {"name": str(name), "owner": str(self.node_id), "label": label, "stored_at": stored}

    async def resolve_name(self, owner: NodeId, label: str) -> dict[str, Any]:
        record = await self.dht.resolve_name(owner, label)
        return {
            "owner": str(owner),
            "label": label,
            "value": record.value,
            "seq": record.seq,
            "expires": record.expires,
        }

    # ------------------------------------------------------------------ RPC services

    async def _rpc_ping(self, ctx: CallContext, body: Any) -> Any:
        return body

    async def _rpc_info(self, ctx: CallContext, body: Any) -> Any:
        return {"node_id": str(self.node_id), "version": __version__, "address": self.address}

    # ------------------------------------------------------------------ jobs

    async def _control_job(self, command: str, request: dict[str, Any]) -> Any:
        """job_submit / job_status / job_result / job_cancel / job_list for the local owner."""
        if self.compute is None:
            raise JobError("this node runs without compute (start it with compute enabled)")
        await self.joined.wait()
        coordinator = self.compute.coordinator
        if command == "job_list":
            return coordinator.list()
        if command == "job_submit":
            return await coordinator.submit(base64.b64decode(request["spec"], validate=True))
        job = coordinator.resolve_id(str(request["job"]))
        if command == "job_status":
            return coordinator.status(job)
        if command == "job_cancel":
            return await coordinator.cancel(job)
        if command == "job_result":
            return {
                "status": coordinator.status(job),
                "attestation": base64.b64encode(coordinator.result(job)).decode("ascii"),
            }
        raise JobError(f"unknown job command {command!r}")

    # ------------------------------------------------------------------ control socket

    async def _refuse_if_running(self) -> None:
        """Another node answering on this home's socket keeps it; a stale one is replaced."""
        assert self.control_dir is not None
        path = self.control_dir / CONTROL_SOCKET
        if not path.exists():
            return
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
        except (OSError, TimeoutError):
            return  # left behind by a node that died
        writer.close()
        raise ControlSocketError(f"a node is already running for {self.control_dir} ({path})")

    async def _start_control(self) -> None:
        assert self.control_dir is not None
        path = self.control_dir / CONTROL_SOCKET
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._control = await asyncio.start_unix_server(
                self._serve_control, path=str(path), limit=MAX_CONTROL_LINE
            )
        finally:
            os.umask(old_umask)

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            request = json.loads(line or b"{}")
            command = request.get("cmd") if isinstance(request, dict) else None
            if command == "status":
                reply: dict[str, Any] = {"ok": True, "status": self.status()}
            elif command == "stop":
                reply = {"ok": True}
                self.stop_requested.set()
            elif command == "resolve":
                await self.joined.wait()
                reply = {"ok": True, "result": await self.resolve(NodeId.parse(request["id"]))}
            elif command == "name_publish":
                await self.joined.wait()
                result = await self.publish_name(
                    str(request["label"]), str(request["value"]), int(request["ttl"])
                )
                reply = {"ok": True, "result": result}
            elif command == "name_resolve":
                await self.joined.wait()
                owner, _, label = str(request["name"]).partition("/")
                result = await self.resolve_name(NodeId.parse(owner), label)
                reply = {"ok": True, "result": result}
            elif isinstance(command, str) and command.startswith("job_"):
                reply = {"ok": True, "result": await self._control_job(command, request)}
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
        except (ValueError, KeyError, TypeError, TimeoutError, asyncio.LimitOverrunError) as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        except (ResolveError, RecordError, LinkError, RpcError, PeerRecordError, JobError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not leave the owner with a silent socket
            log.exception("control command failed")
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def control_request(
    home_path: Path, command: str, timeout: float = 5.0, **arguments: Any
) -> dict[str, Any]:
    """Send one command to the node running in ``home_path``; raise ConnectionError if none."""
    path = home_path / CONTROL_SOCKET
    if not path.exists():
        raise ConnectionError(f"no node is running for {home_path} (no {path})")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=MAX_CONTROL_LINE), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"no node is answering on {path}: {exc}") from None
    writer.write(json.dumps({"cmd": command, **arguments}).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), timeout)
    writer.close()
    return json.loads(line)
