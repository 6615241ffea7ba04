"""The composition root: one :class:`Node` wires identity, links, the DHT, compute and events.

A node listens on one address, keeps links to its bootstrap peers, answers ``qmp.ping`` and
``node.info``, and offers its owner one API (:class:`~qiz.node_api.NodeAPI`): over the HTTP API
when it serves one, and always over a control socket (a Unix socket in the home, mode 0600)
that ``qiz node status``, ``qiz job ...`` and ``qiz node stop`` talk to. Both dispatch on the
same table of operations (:data:`qiz.node_api.OPERATIONS`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qiz import QizError, __version__, peer_memory
from qiz.compute import spec as specs
from qiz.compute.service import ComputeConfig, ComputeService
from qiz.control import CONTROL_SOCKET, MAX_CONTROL_LINE
from qiz.crypto.ids import ContentId, NodeId
from qiz.deploy.service import DeployConfig, DeployService
from qiz.event_log import EventLog
from qiz.events import EventBus
from qiz.history import History
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import MAX_ADDRESSES, MAX_RECORD_RELAYS, RelayAddress
from qiz.node_api import BadRequest, Download, NodeAPI, error_answer, invoke, plain
from qiz.peer_ref import PeerRef, match_prefix, parse_peer_ref
from qiz.qmp.autonat import NatConfig, NatService
from qiz.qmp.connection import Connection
from qiz.qmp.errors import ErrorCode
from qiz.qmp.interfaces import listen_addresses
from qiz.qmp.manager import LinkManager, ManagerConfig, PeerLink
from qiz.qmp.punch import PunchService
from qiz.qmp.relay import RelayConfig
from qiz.qmp.relay_service import RelayService
from qiz.qmp.rpc import CallContext, Handler, RpcEndpoint, RpcError
from qiz.qmp.transport import Link, LinkError
from qiz.resolve.dht import Dht, DhtConfig
from qiz.resolve.discovery import LanDiscovery
from qiz.resolve.store import RecordStore
from qiz.store.config import StoreConfig
from qiz.store.errors import StoreDisabled
from qiz.store.service import StoreService
from qiz.tasks import TaskOwner
from qiz.trust.scores import BANNED
from qiz.trust.scores import INITIAL as INITIAL_SCORE

if TYPE_CHECKING:
    from collections.abc import Awaitable


class Face(Protocol):
    """A face the node serves while it runs (the HTTP API): started by a :data:`FaceStarter`,
    stopped with the node. The node knows faces only through this, so it imports none."""

    url: str

    async def stop(self) -> None: ...


FaceStarter = Callable[["Node"], "Awaitable[Face]"]

log = logging.getLogger("qiz.node")
RECORD_DB = "records.sqlite"
MAX_LAN_DIALS = 8  # LAN beacons answered at once
REMEMBERED_DIAL_TIMEOUT = 5.0  # seconds a remembered peer may take to link at start
LOCK_FILE = "node.lock"
# Seconds between checks that a private node holds its relays and publishes the right ones.
RELAY_CHECK_S = 5.0
# Seconds before a peer that refused a reservation is asked again, and how many such peers are
# remembered (the oldest forgotten first).
RELAY_RETRY_S = 60.0
MAX_RELAY_REFUSALS = 256
CONTROL_READ_TIMEOUT = 5.0  # seconds an owner's client may take to send its request line


class ControlSocketError(QizError):
    """A node cannot start: another node runs in its home, or a socket it serves (control,
    HTTP, LAN discovery) cannot be opened."""


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
        http: FaceStarter | None = None,
        store: StoreConfig | None = None,
        deploy: DeployConfig | None = None,
        nat: NatConfig | None = None,
        relay: RelayConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.listen = listen
        self.bootstrap = [parse_peer(p) for p in peers or []]
        # the peers this home was linked to last time (qiz.peer_memory): dialled at start when
        # no bootstrap peer is given, so that a restarted node rejoins its mesh
        self._memory = peer_memory.load(control_dir) if control_dir is not None else []
        self.remembered = [] if self.bootstrap else list(self._memory)
        self.clock = clock
        self.started_at = clock()
        self.control_dir = control_dir
        self._record: PeerRecord | None = None
        self._addresses: list[str] = []
        # one sequence of events for the whole node: links, DHT and jobs push into it
        self.events = EventBus(clock)
        self.event_log = EventLog(self.events)
        self.tasks = TaskOwner("node", log)
        self.history = History(clock)  # its own recent past, for the dashboard
        self.handlers: dict[str, Handler] = {
            "qmp.ping": self._rpc_ping,
            "node.info": self._rpc_info,
        }
        self.links = LinkManager(
            identity, self.record, self.handlers, config=config, clock=clock, events=self.events
        )
        records = RecordStore(control_dir / RECORD_DB if control_dir is not None else None)
        self.dht = Dht(
            identity,
            self.links,
            records,
            self.record,
            config=dht_config,
            clock=clock,
            events=self.events,
            scores=self._peer_score,  # lookups ask low-scored peers last (docs/dht.md)
            report=self._report_peer,  # forged records, garbage and timeouts cost trust
        )
        self.handlers.update(self.dht.handlers())
        # observed addresses and reachability (docs/nat.md): a private node publishes no
        # address nobody could dial
        self.nat = NatService(self.links, config=nat, clock=clock, on_change=self._nat_changed)
        self.handlers.update(self.nat.handlers())
        # relays: this node serves as one when it can ([relay]), and a private node reserves
        # on reachable peers and publishes them; over a relayed link the dialler tries a punch
        self.relays = RelayService(self.links, relay, clock)
        self.relays.may_give = self._may_give
        self.handlers.update(self.relays.handlers())
        self.punch = PunchService(
            identity,
            self.record,
            self.nat.state,
            bound=lambda: self.links.listener.address,
            listen=lambda: list(self._addresses),
            adopt=self.links.adopt,
            responder=self._punch_responder,
            direct_link=self._direct_link,
            config=self.links.config.qmp,
            clock=clock,
        )
        self.handlers.update(self.punch.handlers())
        self.relays.on_incoming = self.punch.note_incoming  # who a circuit comes from, where
        self._relay_refused: dict[NodeId, float] = {}  # peer -> when to ask it again
        self.links.on_peer = self._on_link
        self.links.refuse_peer = self._refuse_peer  # banned, or cooling off (qiz.trust.scores)
        self.links.report_peer = self._report_peer  # failed handshakes, relay abuse
        # a contact in our routing table is a peer we rely on: it may use the inbound slots kept
        # for known peers and is not held to the per-prefix cap on unknown ones
        self.links.known_peer = lambda peer_id: peer_id.digest in self.dht.table
        self.api = NodeAPI(self)
        self._start_http = http  # e.g. qiz.web.server.serve_api(port); None: no HTTP API
        self.web: Face | None = None  # the HTTP API, once started
        self.compute = (
            ComputeService(
                identity,
                self.links,
                self.dht,
                self.handlers,
                config=compute,
                home=control_dir,
                clock=clock,
                events=self.events,
                fetch_input=self._fetch_input,
            )
            if compute is not None
            else None
        )
        # the storage pool ([store]; None: this node neither holds nor owns content)
        self.store = (
            StoreService(
                identity,
                self.links,
                self.dht,
                self.handlers,
                config=store,
                home=control_dir,
                scores=self.compute.scores if self.compute is not None else None,
                clock=clock,
                events=self.events,
            )
            if store is not None and store.enabled
            else None
        )
        # the deploy engine (docs/deploy.md): needs the pool and a home; idle until used
        self.deploy = (
            DeployService(
                identity,
                self.store,
                self.dht,
                control_dir,
                config=deploy,
                clock=clock,
                submit_job=self._submit_job if self.compute is not None else None,
            )
            if self.store is not None and control_dir is not None
            else None
        )
        self.joined = asyncio.Event()  # set once the first join (bootstrap + publish) ran
        self.lan = (
            LanDiscovery(identity.node_id.digest, lambda: self.address, self._on_beacon, **lan)
            if lan is not None
            else None
        )
        self._lan_dials = 0
        self._control: asyncio.base_events.Server | None = None
        self._lock_fd: int | None = None
        self.stopped = asyncio.Event()
        self.stop_requested = asyncio.Event()

    async def _fetch_input(self, cid: ContentId, *, max_size: int) -> bytes:
        """A job's content-id input, read from the storage pool (compute never imports it)."""
        if self.store is None:
            raise StoreDisabled("this node runs without the storage pool ([store] enabled = false)")
        return await self.store.fetch_bytes(cid, max_size=max_size)

    async def _submit_job(self, document: dict[str, Any]) -> str:
        """A quantum container's job spec, signed by this node and submitted to the mesh (the
        deploy engine never imports compute); its job id."""
        assert self.compute is not None
        raw = specs.sign(specs.make_body(document, self.identity), self.identity)
        status = await self.compute.coordinator.submit(raw)
        return status.job.hex()

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def address(self) -> str:
        return self.links.listener.address

    def record(self) -> PeerRecord:
        """This node's signed peer record, re-signed when it is close to expiry or when what
        it publishes changed. A node found unreachable (private) publishes no address: nobody
        could dial it there."""
        now = self.clock()
        if self._record is None or self._record.expires - now < 3600:
            addresses, relays = self._record_content()
            self._record = PeerRecord.create(
                self.identity,
                addresses,
                seq=max(int(now * 1000), self._record.seq + 1 if self._record else 0),
                now=now,
                relays=relays,
            )
        return self._record

    def _record_content(self) -> tuple[list[str], list[RelayAddress]]:
        """What the record should say now: a private node its relays and no address, any
        other node the outside addresses a dial-back reached, then where it listens."""
        if self.nat.state.reachability == "private":
            return [], self._relays_held()
        addresses = list(dict.fromkeys([*self.nat.state.verified, *self._addresses]))
        return addresses[:MAX_ADDRESSES], []

    def _relays_held(self) -> list[RelayAddress]:
        """The relays this node holds a reservation on, at the address it reached each one
        (where it dialled it; else the first its record names)."""
        out = []
        for relay, held in self.relays.held.items():
            entry = self.links.peers.get(relay)
            if entry is None or entry.link.peer is None:
                continue
            if entry.link.conn.is_initiator and entry.link not in self.links.relayed:
                out.append(RelayAddress(relay, held.address))
            elif entry.link.peer.addresses:
                out.append(RelayAddress(relay, entry.link.peer.addresses[0]))
        return out[:MAX_RECORD_RELAYS]

    async def _keep_relays(self) -> None:
        """A private node keeps reservations on ``[relay] reserve_on`` reachable peers (best
        score, then lowest RTT; one that refused is asked again a minute later); a node that
        is no longer private lets its reservations go. The record follows."""
        if self.nat.state.reachability != "private":
            for relay in list(self.relays.held):
                self.relays.release(relay)
            return
        now = self.clock()
        want = self.relays.config.reserve_on - len(self.relays.held)
        for peer_id, entry in self._relay_candidates():
            if want <= 0:
                break
            if self._relay_refused.get(peer_id, 0.0) > now:
                continue
            try:
                await self.relays.reserve(entry.rpc)
                want -= 1
            except (RpcError, LinkError) as exc:
                self._relay_refused[peer_id] = now + RELAY_RETRY_S
                while len(self._relay_refused) > MAX_RELAY_REFUSALS:
                    del self._relay_refused[next(iter(self._relay_refused))]
                log.debug("relay %s refused a reservation: %s", peer_id.short(), exc)
        self._publish_if_changed()

    def _relay_candidates(self) -> list[tuple[NodeId, PeerLink]]:
        scores = self.compute.scores if self.compute is not None else None
        found = []
        for peer_id, entry in self.links.peers.items():
            record = entry.link.peer
            if (
                peer_id in self.relays.held
                or not entry.link.is_open
                or entry.link in self.links.relayed
                or record is None
                or not record.addresses  # a peer nobody can dial cannot relay
            ):
                continue
            score = scores.get(peer_id.digest) if scores is not None else 0.0
            if scores is not None and not scores.may(peer_id.digest, "give"):
                continue  # under the trust line: no slot of ours goes through it
            found.append((-score, entry.link.rtt or 1e9, peer_id, entry))
        found.sort(key=lambda item: item[:2])
        return [(peer_id, entry) for _, _, peer_id, entry in found]

    def _punch_responder(self) -> Connection:
        listener = self.links.listener
        return Connection.responder(
            self.identity,
            self.record(),
            cookies=listener.cookies,
            peer_address="",
            now=self.clock(),
            config=self.links.config.qmp,
            records=listener.records,
        )

    def _direct_link(self, peer: NodeId) -> Link | None:
        entry = self.links.peers.get(peer)
        if entry is None or not entry.link.is_open or entry.link in self.links.relayed:
            return None
        return entry.link

    async def _punch(self, link: Link) -> None:
        """Over a relayed link this node dialled: try to meet the peer directly."""
        await asyncio.sleep(0)  # the manager files the link after telling us of it
        rpc = self.links.rpc_for(link)
        if rpc is None or not link.is_open:
            return
        outcome = await self.punch.try_punch(link, rpc)
        log.info("punch to %s: %s", link.peer_id, outcome.reason)

    def nat_view(self) -> dict[str, Any]:
        """Reachability, observed addresses, NAT mapping, relays in use, links by path, punch
        counters and what this node did as a relay: for ``node status`` and ``qiz netcheck``."""
        record = self.record()
        paths = Counter(
            row.get("path", "direct")
            for row in self.links.peer_rows()
            if row.get("state") == "online"
        )
        return {
            **self.nat.state.snapshot(),
            "published": list(record.addresses),
            "relays": [str(relay) for relay in record.relays],
            "links_direct": paths.get("direct", 0),
            "links_relayed": paths.get("relayed", 0),
            **self.nat.counters,
            **self.punch.book.counters,
            # what this node did as a relay (reservations, circuits, bytes, refusals)
            "relay": self.relays.snapshot(),
        }

    def _on_link(self, link: Link) -> None:
        self.dht.on_link(link)
        self.nat.on_link(link)
        if link in self.links.relayed and link.conn.is_initiator and not self.tasks.closed:
            self.tasks.spawn(self._punch(link), "punch")

    def _record_changed(self) -> bool:
        addresses, relays = self._record_content()
        current = self._record
        return not (
            current is not None
            and list(current.addresses) == addresses
            and [r.node_id for r in current.relays] == [r.node_id for r in relays]
        )

    def _nat_changed(self) -> None:
        """Reachability or public addresses changed: when what the record says changes, sign
        and publish a new one (reserving on relays first when the node just turned private:
        the reservations then publish it)."""
        if not self._record_changed():
            return
        self._record = None  # what record() answers from now on says the new state
        if self.tasks.closed or not self.joined.is_set():
            return
        if self.nat.state.reachability == "private" and not self.relays.held:
            self.tasks.spawn(self._keep_relays(), "reserve on relays")
        else:
            self._publish_if_changed()

    def _publish_if_changed(self) -> None:
        if self._record is None or self._record_changed():
            self._record = None
            if not self.tasks.closed:
                self.tasks.spawn(self._republish_self(), "republish record")

    async def _republish_self(self) -> None:
        with contextlib.suppress(LinkError, OSError, TimeoutError, QizError):
            await self.dht.publish_self()

    async def start(self) -> None:
        """Take the home, listen, open the control socket and the faces, start discovery;
        :class:`OSError` if the address cannot be bound, :class:`ControlSocketError` if the
        home is in use or a socket cannot be served. On any failure nothing is left running,
        no socket file is left and the databases are closed."""
        if self.control_dir is not None:
            self._take_home()
        try:
            await self.links.start(self.listen)
            try:
                await self._start_faces()
                self._addresses = listen_addresses(self.address)
                self._record = None
                self.nat.start(self._addresses)
                for address, expected in self.bootstrap:
                    self.links.pin(address, expected)
                if self.lan is not None:
                    try:
                        await self.lan.start()
                    except OSError as exc:
                        raise ControlSocketError(
                            f"cannot start LAN discovery: {exc.strerror or exc} "
                            "(does this host have multicast? start without --lan)"
                        ) from None
            except BaseException:
                if self.web is not None:
                    await self.web.stop()
                await self._close_control()
                await self.links.close()
                raise
        except BaseException:
            self._close_files()
            raise
        self.tasks.spawn(self._join(), "join")
        self.tasks.every(self.history.interval_s, self._sample_history, "history")
        self.tasks.every(RELAY_CHECK_S, self._keep_relays, "relays")
        if self.control_dir is not None:
            self.tasks.every(peer_memory.SAVE_INTERVAL_S, self._save_peers, "remember peers")
        # the CLI prints this on stdout; at info level it showed twice on a terminal
        log.debug("node %s listening on %s", self.node_id, self.address)

    async def _start_faces(self) -> None:
        if self.control_dir is not None:
            try:
                await self._start_control()
            except OSError as exc:
                path = self.control_dir / CONTROL_SOCKET
                raise ControlSocketError(
                    f"cannot open the control socket {path}: {exc.strerror or exc}"
                ) from None
        if self._start_http is not None:
            try:
                self.web = await self._start_http(self)
            except OSError as exc:
                raise ControlSocketError(
                    f"cannot serve the HTTP API: {exc.strerror or exc}"
                ) from None

    def _take_home(self) -> None:
        """Hold the home's lock for the node's whole run: one node per home, decided by the
        kernel (a killed node's lock goes with its process), not by probing the socket, so a
        node still stopping cannot delete the socket of the one that follows it."""
        assert self.control_dir is not None
        fd = os.open(self.control_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ControlSocketError(
                f"a node is already running for {self.control_dir} (it holds {LOCK_FILE})"
            ) from None
        self._lock_fd = fd

    def _close_files(self) -> None:
        """The databases, then the home's lock: the last thing a node lets go of."""
        if self.compute is not None:
            self.compute.close()
        if self.store is not None:
            self.store.close()
        self.dht.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    async def _join(self) -> None:
        """Link to the bootstrap peers, fill the routing table, publish our record."""
        try:
            for address, expected in self.bootstrap:
                try:
                    await self.links.connect(address, expected)
                except (LinkError, OSError, TimeoutError, QizError) as exc:
                    log.info("bootstrap peer %s: %s", address, exc)
                except Exception:  # one bad bootstrap peer never stops the join: say it, go on
                    log.exception("bootstrap peer %s", address)
            await asyncio.gather(*(self._dial_remembered(entry) for entry in self.remembered))
            await self.dht.bootstrap()
            stored = await self.dht.publish_self()
            log.info(
                "joined: %d contacts, our record stored at %d nodes", len(self.dht.table), stored
            )
        except (LinkError, OSError, TimeoutError, QizError) as exc:
            log.warning("joining the mesh failed: %s", exc)
        except Exception:  # whatever a peer sent, the node goes on to its upkeep
            log.exception("joining the mesh failed")
        finally:
            # DHT upkeep runs even if the first join failed (expiry, republishing, refresh)
            if not self.tasks.closed:
                self.dht.start()
            # jobs are served even if the first join failed, but not by a node that stops
            if self.compute is not None and not self.tasks.closed:
                self.compute.start()
            if self.store is not None and not self.tasks.closed:
                self.store.start()
            if self.deploy is not None and not self.tasks.closed:
                self.deploy.start()  # followed channels, bundles to run, channels to renew
            self.joined.set()

    async def _dial_remembered(self, entry: str) -> None:
        """Link to a peer remembered from the last run (not pinned: one that is gone is
        skipped, and forgotten once newer peers fill the list)."""
        address, expected = parse_peer(entry)
        try:
            await self.links.connect(address, expected, timeout=REMEMBERED_DIAL_TIMEOUT)
        except (LinkError, OSError, TimeoutError, QizError) as exc:
            log.info("remembered peer %s: %s", address, exc)
        except Exception:
            log.exception("remembered peer %s", address)

    async def _save_peers(self) -> None:
        self.remember_peers()

    def remember_peers(self) -> None:
        """Write the peers linked now (most recently used first), then those remembered
        before, to the home (:mod:`qiz.peer_memory`); nothing when the list did not change."""
        if self.control_dir is None:
            return
        linked = []
        for peer_id, peer in sorted(self.links.peers.items(), key=lambda p: -p[1].last_used):
            link = peer.link
            # where we reached it (proven dialable), or for an inbound link where it says it
            # listens (its source port is not)
            claimed = list(link.peer.addresses) if link.peer is not None else []
            where = link.remote_address if link.conn.is_initiator else (claimed or [None])[0]
            if link.is_open and where:
                linked.append(f"{peer_id}@{where}")
        entries = peer_memory.merge(linked, self._memory)
        if entries == self._memory:
            return
        try:
            peer_memory.save(self.control_dir, entries)
        except OSError as exc:
            log.warning("cannot remember the peers in %s: %s", self.control_dir, exc)
            return
        self._memory = entries

    async def stop(self) -> None:
        """Stop every service: the owner's faces first, then the node's own work, the links,
        and the databases last. When this returns no task of the node runs and its files are
        closed. Safe to call twice."""
        if self.stopped.is_set():
            return
        self.event_log.close()  # long polls answer now instead of holding the HTTP server
        if self._control is not None:  # no new requests from the owner
            self._control.close()
        if self.web is not None:
            await self.web.stop()
        await self.tasks.close()  # join, LAN dials, self-measure, control requests in flight
        self.remember_peers()  # while the links are still up
        await self._close_control()
        await self.dht.stop()
        await self.nat.close()
        await self.punch.close()
        if self.lan is not None:
            await self.lan.stop()
        if self.compute is not None:
            await self.compute.stop()  # its loops and worker processes; its database stays open
        if self.deploy is not None:
            await self.deploy.shutdown()  # its loops and supervised children, before the pool
        if self.store is not None:
            await self.store.stop()  # its upkeep loops; its databases stay open for peers' calls
        await self.links.close()  # peers' calls in flight end here, while the databases are open
        self._close_files()
        self.stopped.set()

    async def _close_control(self) -> None:
        if self._control is None:
            return
        self._control.close()
        with contextlib.suppress(OSError):
            await self._control.wait_closed()
        self._control = None
        with contextlib.suppress(FileNotFoundError):
            (self.control_dir / CONTROL_SOCKET).unlink()  # type: ignore[operator]

    async def _sample_history(self) -> None:
        """One sample of the node's recent past (GET /api/history): links' RTT, jobs done."""
        rtts = [stats.get("rtt_ms") for stats in self.links.peer_stats()]
        done = self.compute.coordinator.counts_by_state().get("done", 0) if self.compute else 0
        self.history.record(rtts, done)

    async def connect(
        self, address: str, expected: PeerRecord | NodeId | None = None
    ) -> RpcEndpoint:
        return await self.links.connect(address, expected)

    def status(self) -> dict[str, Any]:
        """The ``status`` operation's answer, as plain data (for scripts and tests)."""
        return plain(self.api.status())

    def _on_beacon(self, node_id: bytes, address: str) -> None:
        """A LAN beacon named a node we may not know: dial it, expecting that id."""
        peer = NodeId(node_id)
        if peer in self.links.peers or self.links.closing or self.tasks.closed:
            return
        if self._lan_dials >= MAX_LAN_DIALS:
            return

        async def link_up() -> None:
            try:
                await self.links.connect(address, peer, timeout=5.0)
                if len(self.dht.table) < self.dht.config.k:  # still joining: fill the table
                    await self.dht.bootstrap()
                    await self.dht.publish_self()
            except (LinkError, OSError, TimeoutError, QizError) as exc:
                log.info("LAN peer %s at %s: %s", peer.short(), address, exc)
            finally:
                self._lan_dials -= 1

        self._lan_dials += 1
        self.tasks.spawn(link_up(), f"lan-dial {peer.short()}")

    # ------------------------------------------------------------------ naming peers

    def known_ids(self) -> set[NodeId]:
        """Every node a prefix may name: this one, linked and departed peers, contacts."""
        ids = {self.node_id, *self.links.peers, *self.links.departed}
        ids.update(NodeId(contact.node_id) for contact in self.dht.table.contacts())
        return ids

    async def peer_id(self, text: str) -> NodeId:
        """The node ``text`` names (docs/qmp.md, "Naming a peer"): a full id as is, a prefix
        among :meth:`known_ids`, an address by linking to it and reading who answered."""
        ref = _peer_ref(text)
        if ref.address is not None:
            link, _ = await self.link_to(text)
            assert link.peer_id is not None
            return link.peer_id
        return ref.node_id or match_prefix(ref.prefix or "", self.known_ids(), ref.text)

    async def link_to(self, text: str) -> tuple[Link, dict[str, float | None]]:
        """An open link to the peer ``text`` names, and what it took: ``resolve_ms`` (a DHT
        lookup, for an id not linked) and ``handshake_ms`` (a new link), each None when not
        needed. An address is dialled unless a link to it is up; an id or prefix uses the
        peer's link if there is one, else its record from the DHT."""
        ref = _peer_ref(text)
        taken: dict[str, float | None] = {"resolve_ms": None, "handshake_ms": None}
        expected: PeerRecord | NodeId | None = ref.node_id
        if ref.address is not None:
            target = ref.address
            # one link per peer: a pinned id already linked is reused, wherever it listens
            current = self._linked_at(ref.address, ref.node_id) or (
                self.links.peers.get(ref.node_id) if ref.node_id is not None else None
            )
        else:
            node_id = ref.node_id or match_prefix(ref.prefix or "", self.known_ids(), ref.text)
            if node_id == self.node_id:
                raise BadRequest(f"{text!r} names this node itself")
            current = self.links.peers.get(node_id)
            if current is None or not current.link.is_open:
                started = time.perf_counter()
                record = await self.dht.resolve_peer(node_id)
                taken["resolve_ms"] = _ms(time.perf_counter() - started)
                started = time.perf_counter()
                endpoint = await self.links.connect_record(record)  # addresses, then relays
                taken["handshake_ms"] = _ms(time.perf_counter() - started)
                return endpoint.link, taken
        if current is not None and current.link.is_open:
            current.last_used = self.clock()
            return current.link, taken
        started = time.perf_counter()
        endpoint = await self.links.connect(target, expected)
        taken["handshake_ms"] = _ms(time.perf_counter() - started)
        return endpoint.link, taken

    def _linked_at(self, address: str, expected: NodeId | None) -> PeerLink | None:
        """The primary link to the peer at ``address`` (dialled there, or listening there by
        its record), if one is up and it is ``expected`` (when given)."""
        for peer_id, peer in self.links.peers.items():
            link = peer.link
            here = address == link.remote_address or (
                link.peer is not None and address in link.peer.addresses
            )
            if here and link.is_open and expected in (None, peer_id):
                return peer
        return None

    async def ping_peer(self, text: str, count: int) -> dict[str, Any]:
        """``count`` encrypted pings over the link to the peer ``text`` names (linking first
        if needed, through the DHT for an id not linked): the ``ping`` operation."""
        link, taken = await self.link_to(text)
        rtts: list[float] = []
        try:
            for _ in range(count):
                rtts.append(await link.ping())
        except (LinkError, TimeoutError) as exc:
            raise LinkError(
                ErrorCode.NORMAL_CLOSE,
                f"the link failed after {len(rtts)} ping{'' if len(rtts) == 1 else 's'}: {exc}",
            ) from None
        return {
            **_link_answer(link),
            "rtt_ms": [_ms(r) for r in rtts],
            "rtt_median_ms": _ms(statistics.median(rtts)),
            **taken,
        }

    async def connect_peer(self, text: str) -> dict[str, Any]:
        """Open (or reuse) a link to the peer ``text`` names and measure one RTT over it: the
        ``connect`` operation."""
        link, taken = await self.link_to(text)
        try:
            rtt = await link.ping()
        except (LinkError, TimeoutError) as exc:
            raise LinkError(
                ErrorCode.NORMAL_CLOSE, f"linked, then the link failed: {exc}"
            ) from None
        return {
            **_link_answer(link),
            "direction": "out" if link.conn.is_initiator else "in",
            "already_linked": taken["handshake_ms"] is None,
            "rtt_ms": _ms(rtt),
            **taken,
        }

    # ------------------------------------------------------------------ resolution

    async def resolve(self, node_id: NodeId) -> dict[str, Any]:
        """Find ``node_id``'s verified peer record and open a link to it."""
        started = time.perf_counter()
        record = await self.dht.resolve_peer(node_id)
        resolved = time.perf_counter() - started
        linked = None
        if node_id != self.node_id and (record.addresses or record.relays):
            endpoint = await self.links.connect_record(record)
            linked = endpoint.link.remote_address
        return {
            "node_id": str(record.node_id),
            "addresses": list(record.addresses),
            "seq": record.seq,
            "expires_at": record.expires,
            "resolve_ms": _ms(resolved),
            "linked": linked,
            "record": base64.b64encode(record.raw).decode("ascii"),
        }

    async def publish_name(self, label: str, value: str, ttl: int) -> dict[str, Any]:
        name, stored = await self.dht.publish_name(label, value, ttl=ttl)
        return {"name": str(name), "owner": str(self.node_id), "label": label, "stored_on": stored}

    async def resolve_name(self, owner: NodeId, label: str) -> dict[str, Any]:
        record = await self.dht.resolve_name(owner, label)
        return {
            "owner": str(owner),
            "label": label,
            "value": record.value,
            "seq": record.seq,
            "expires_at": record.expires,
        }

    # ------------------------------------------------------------------ RPC services

    def _peer_score(self, peer: bytes) -> float:
        """A peer's trust score (compute keeps them); neutral on a node without compute."""
        compute = getattr(self, "compute", None)
        return compute.scores.get(peer) if compute is not None else INITIAL_SCORE

    def _report_peer(self, peer: bytes, reason: str, detail: str) -> None:
        """A peer misbehaved (qiz.trust.scores.REASONS): its score pays, where scores are kept."""
        compute = getattr(self, "compute", None)
        if compute is not None:
            compute.scores.record(peer, reason, detail)

    def _may_give(self, peer: bytes) -> bool:
        """Whether ``peer`` may still have our slots (relay, storage, work)."""
        compute = getattr(self, "compute", None)
        return compute is None or compute.scores.may(peer, "give")

    def _refuse_peer(self, peer: bytes) -> str | None:
        """Why a link to ``peer`` is refused now (banned, or its score under the link
        threshold until its misbehaviour decays), or None."""
        compute = getattr(self, "compute", None)
        if compute is None:
            return None
        scores = compute.scores
        if scores.override_of(peer) == BANNED:
            return "this node's operator banned the peer"
        if not scores.may(peer, "link"):
            return "the peer's trust score is under the link threshold (cooling off)"
        return None

    async def _rpc_ping(self, ctx: CallContext, body: Any) -> Any:
        return body

    async def _rpc_info(self, ctx: CallContext, body: Any) -> Any:
        return {"node_id": str(self.node_id), "version": __version__, "address": self.address}

    # ------------------------------------------------------------------ control socket

    async def _start_control(self) -> None:
        assert self.control_dir is not None
        path = self.control_dir / CONTROL_SOCKET
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._control = await asyncio.start_unix_server(
                self._accept_control, path=str(path), limit=MAX_CONTROL_LINE
            )
        finally:
            os.umask(old_umask)

    def _accept_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each owner request runs as a task of the node, so stop() ends and awaits it."""
        if self.tasks.closed:
            writer.close()
            return
        self.tasks.spawn(self._serve_control(reader, writer), "control request")

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One request line ``{"cmd": OPERATION, ...arguments}``, one reply line
        ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "status": ...}``: the
        same operations, answers and errors as the HTTP API."""
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CONTROL_READ_TIMEOUT)
                request = json.loads(line or b"{}")
            except (ValueError, TimeoutError) as exc:  # over the line limit, slow, not JSON
                why = str(exc) or "no request line in time"
                raise BadRequest(f"bad control request: {why}") from None
            if not isinstance(request, dict):
                raise BadRequest("bad control request: expected one JSON object")
            result = await invoke(self.api, str(request.pop("cmd", "")), request)
            if isinstance(result, Download):
                result = base64.b64encode(result.data).decode("ascii")
            reply: dict[str, Any] = {"ok": True, "result": result}
        except asyncio.CancelledError:  # the node stops: say so before the line goes dead
            stopping = {"ok": False, "error": "the node is stopping", "status": 503}
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(json.dumps(stopping).encode() + b"\n")
            writer.close()
            raise
        except Exception as exc:  # every error gets the answer the HTTP API would give
            status, message = error_answer(exc)
            reply = {"ok": False, "error": message, "status": status}
        try:
            line = json.dumps(reply).encode() + b"\n"
        except (TypeError, ValueError) as exc:  # a result that is not JSON: a bug, said as one
            status, message = error_answer(exc)
            line = json.dumps({"ok": False, "error": message, "status": status}).encode() + b"\n"
        try:
            writer.write(line)
            await writer.drain()
        except ConnectionError:
            pass  # the owner hung up: nothing to tell
        finally:
            writer.close()


def _peer_ref(text: str) -> PeerRef:
    """``text`` as a peer reference, or the reason it is none, as a bad request."""
    try:
        return parse_peer_ref(text)
    except ValueError as exc:  # InvalidIdentifier is one too
        raise BadRequest(str(exc)) from None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _link_answer(link: Link) -> dict[str, Any]:
    """Who is at the other end of ``link`` and where it listens (for an inbound link, the
    address its record gives, not the source port it dialled from)."""
    listens = list(link.peer.addresses) if link.peer is not None else []
    address = link.remote_address if link.conn.is_initiator or not listens else listens[0]
    return {"node_id": str(link.peer_id), "address": address}
