"""Node commands: ``node start|status|stop`` (the mesh commands are in :mod:`qiz.cli.peer_cmds`)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qiz import peer_memory
from qiz.allocator import tune_allocator
from qiz.cli import logs, peer_cmds
from qiz.cli.common import PASSPHRASE_ENV, Session, node_call
from qiz.cli.detach import LOCK_FILE, LOG_NAME
from qiz.cli.human import duration, moment, plural, size
from qiz.cli.output import UserError, console, emit, guarded
from qiz.crypto.errors import InvalidIdentifier
from qiz.home import PRIVATE_UMASK
from qiz.identity.peer_record import parse_address
from qiz.identity.puzzle import solves
from qiz.lifeline import guard_memory
from qiz.store.config import StoreConfig, StoreConfigError

if TYPE_CHECKING:
    from qiz.compute.service import ComputeConfig
    from qiz.identity import NodeIdentity
    from qiz.node import FaceStarter, Node
    from qiz.qmp.autonat import NatConfig, NatConfigError
    from qiz.qmp.manager import ManagerConfig
    from qiz.qmp.relay import RelayConfig, RelayConfigError

# The node's own code (qiz.node: the mesh, compute, store, deploy services; about half a second
# to import) loads only in 'node start', by _load_node below, so that 'node status', 'node stop'
# and every other command start quickly.

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
node_app = typer.Typer(help="Run and inspect this home's node.", no_args_is_help=True)


PANEL = "Node and mesh"  # the heading these commands have in 'qiz --help'
# said by a node that starts with nobody to dial: no --peer, no bootstrap, no peers remembered
# from its last run (qiz.peer_memory), no --lan
NO_PEERS = "no peers to join: pass --peer ADDR or set bootstrap in config.toml"


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node", rich_help_panel=PANEL)
    peer_cmds.register(app)
    node_app.command("start")(guarded(start))
    node_app.command("status")(guarded(status))
    node_app.command("stop")(guarded(stop))


def _load_node() -> None:
    """Import what running a node needs, once 'node start' is sure to need it; binds the
    names the config readers below use that live with the node's own code."""
    global NatConfig, NatConfigError, RelayConfig, RelayConfigError  # noqa: PLW0603 - see top
    from qiz.qmp.autonat import NatConfig, NatConfigError
    from qiz.qmp.relay import RelayConfig, RelayConfigError


def _check_peers(peers: list[str]) -> None:
    if not peers:
        return
    from qiz.node import parse_peer

    for peer in peers:
        try:
            address, _ = parse_peer(peer)
            parse_address(address)
        except (ValueError, InvalidIdentifier) as exc:
            raise UserError(f"--peer {peer!r}: {exc}") from None


def start(
    ctx: typer.Context,
    *,
    listen: Annotated[
        str | None, typer.Option("--listen", help="ip:port to listen on (default: config).")
    ] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option("--peer", help="Bootstrap peer ip:port or ID@ip:port (repeatable)."),
    ] = None,
    lan: Annotated[
        bool, typer.Option("--lan", help="Find peers on the local network (multicast beacon).")
    ] = False,
    worker: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Run other nodes' quantum tasks (default: on)."),
    ] = True,
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots",
            help="Worker processes (default: one per core; at most 2 per core and one per "
            "512 MiB of available memory).",
        ),
    ] = None,
    api_port: Annotated[
        int | None,
        typer.Option("--api-port", help="HTTP API + dashboard port on 127.0.0.1 (0: any).", min=0),
    ] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Serve no HTTP API.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs.")] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Run in the background and return once ready (output in HOME/node.log).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON line when ready ({"ok": true, "event": "ready", "node_id", '
            '"address", "addresses", "api_url", "control", "home"}) and nothing else.',
        ),
    ] = False,
) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM or 'qiz node stop'.

    With ``--listen ip:0`` the port is chosen by the system and reported: in the ready line
    (``--json``), the first line printed, and ``qiz node status``."""
    session: Session = ctx.obj
    # Everything the node creates is its owner's alone: the databases and SQLite's -wal/-shm
    # files (which take the database's mode), the token, the sockets. Set before the first.
    os.umask(PRIVATE_UMASK)
    config = session.home.load_config()
    phrase = session.unlock_passphrase()
    identity = session.identity(phrase)
    session.secure_home()
    address = listen or config.listen
    peers = list(peer or config.bootstrap)
    try:
        parse_address(address, allow_port_zero=True)
    except ValueError as exc:
        raise UserError(f"--listen: {exc}") from None
    _check_peers(peers)
    compute = _compute_config(config.extra.get("compute", {}), worker, slots)
    links = _link_config(config.extra.get("links", {}))
    api = None if no_api else _api_settings(config.extra.get("api", {}), api_port)
    if detach:
        alone = not peers and not lan and not peer_memory.load(session.home.path)
        _start_detached(session, ctx, phrase, as_json, alone)
        return
    logs.configure(verbose)
    tune_allocator()  # a node moves data in 100-200 KiB pieces: see qiz/allocator.py
    if os.environ.get(PASSPHRASE_ENV):
        # the one secret not on disk: no bundle this node runs may read it from /proc
        guard_memory()
    import asyncio

    _load_node()
    asyncio.run(_run_node(session, identity, address, peers, lan, compute, links, api, as_json))


def _start_detached(
    session: Session, ctx: typer.Context, phrase: str | None, as_json: bool, alone: bool
) -> None:
    """``node start --detach``: the same command, options checked here, run in the background
    (:mod:`qiz.cli.detach`); print its ready record and return."""
    from qiz.cli.detach import start_detached

    options: list[str] = []
    for name, value in ctx.params.items():
        flag = "--" + name.replace("_", "-")
        if name == "worker":
            options.append("--worker" if value else "--no-worker")
        elif name in ("detach", "as_json") or value is None or value is False:
            continue
        elif name == "peer":
            for each in value:
                options += ["--peer", each]
        elif value is True:
            options.append("-v" if name == "verbose" else flag)
        else:
            options += [flag, str(value)]
    ready = start_detached(
        session.home.path, options, passphrase=phrase, stop_hint=session.command("node stop")
    )
    emit(
        as_json,
        ready,
        lambda: console.print(
            f"node {ready['node_id']} runs in the background (pid {ready['pid']})\n"
            f"  listening on {ready.get('address')}\n"
            f"  log          {ready['log']}\n"
            f"  stop it with '{session.command('node stop')}'" + (f"\n{NO_PEERS}" if alone else ""),
            markup=False,
        ),
    )


def _serve_api(settings: tuple[int, dict[str, float]]) -> FaceStarter:
    from qiz.web.server import ApiLimits, serve_api  # aiohttp only for nodes that serve it

    port, limits = settings
    return serve_api(port, ApiLimits(**limits))  # type: ignore[arg-type]


def _number(table: dict, key: str, name: str, low: float, high: float, *, whole: bool) -> Any:
    """``table[key]`` if it is a number (whole, if ``whole``) from ``low`` to ``high``; else a
    one-line error naming ``name``."""
    value = table[key]
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise UserError(f"config.toml: {name} must be {kind} from {low:g} to {high:g}")
    return value


def _flag(table: dict, key: str, name: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise UserError(f"config.toml: {name} must be true or false")
    return value


# what the [api] table may set, with its bounds (ApiLimits's fields)
API_LIMIT_KEYS = {
    "max_connections": (1, 10_000, True),
    "idle_timeout": (0.1, 3600, False),
    "body_timeout": (0.1, 3600, False),
}


def _api_settings(table: object, given: int | None) -> tuple[int, dict[str, float]] | None:
    """The ``[api]`` table of config.toml: ``enabled`` (true), ``port`` (0: any free port),
    and the connection limits (``max_connections``, ``idle_timeout``, ``body_timeout``)."""
    if not isinstance(table, dict):
        raise UserError("config.toml: [api] must be a table")
    port = table.get("port", 0) if given is None else given
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UserError("config.toml: api.port must be a port number (0: any free port)")
    if not _flag(table, "enabled", "api.enabled", True) and given is None:
        return None
    limits = {
        key: _number(table, key, f"api.{key}", low, high, whole=whole)
        for key, (low, high, whole) in API_LIMIT_KEYS.items()
        if key in table
    }
    return port, limits


# what the [links] table may set, with its bounds (ManagerConfig's admission limits: a node
# behind a NAT shared with many others may need a larger per-network budget)
LINK_LIMIT_KEYS = {
    "max_inbound": (1, 65_536, True),
    "max_inbound_per_prefix": (1, 65_536, True),
    "reserved_known": (0, 65_536, True),
    "max_pending": (1, 65_536, True),
    "max_pending_per_prefix": (1, 65_536, True),
    "pending_timeout": (0.5, 600, False),
    "kem_rate_per_prefix": (0.1, 100_000, False),
    "kem_burst_per_prefix": (1, 1_000_000, True),
    # upkeep: keepalive pings (RTT) and closing links nobody uses (pinned peers stay)
    "keepalive_interval": (0.1, 3600, False),
    "idle_close": (0.5, 86_400, False),
}


def _link_config(table: object) -> ManagerConfig:
    """The ``[links]`` table of config.toml: who may make this node work before they have
    proved who they are (docs/security.md). Absent keys keep their defaults."""
    from qiz.qmp.manager import ManagerConfig

    if not isinstance(table, dict):
        raise UserError("config.toml: [links] must be a table")
    values = {
        key: _number(table, key, f"links.{key}", low, high, whole=whole)
        for key, (low, high, whole) in LINK_LIMIT_KEYS.items()
        if key in table
    }
    config = ManagerConfig(**values)
    if config.reserved_known > config.max_inbound // 4:
        raise UserError("config.toml: links.reserved_known must be at most max_inbound / 4")
    if config.max_pending_per_prefix > config.max_pending:
        raise UserError("config.toml: links.max_pending_per_prefix must be at most max_pending")
    return config


def _compute_config(table: object, worker: bool, slots: int | None) -> ComputeConfig:
    """The ``[compute]`` table of config.toml (worker, slots, threads, memory_mib, placement),
    overridden by the command line. ``slots`` is bounded by cores and memory
    (:func:`qiz.compute.pool.max_slots`); 0 or absent means one per core, within that bound."""
    from qiz.compute.placement import METHODS
    from qiz.compute.pool import SlotsError, check_slots, default_slots

    if not isinstance(table, dict):
        raise UserError("config.toml: [compute] must be a table")
    # checked first, the compute service (a fifth of a second to import) loaded once all is
    # well: a wrong key is refused without it
    chosen: dict[str, Any] = {"worker": worker and _flag(table, "worker", "compute.worker", True)}
    try:
        if slots is not None:
            chosen["slots"] = check_slots(slots, "--slots")
        elif table.get("slots", 0) != 0 or isinstance(table.get("slots"), bool):
            chosen["slots"] = check_slots(table["slots"], "config.toml: compute.slots")
        else:
            chosen["slots"] = default_slots()
    except SlotsError as exc:
        raise UserError(str(exc)) from None
    cores = os.cpu_count() or 1
    if "threads" in table:
        chosen["threads"] = _number(table, "threads", "compute.threads", 1, cores, whole=True)
    if "memory_mib" in table:
        mib = _number(table, "memory_mib", "compute.memory_mib", 0, 1 << 30, whole=True)
        chosen["memory"] = mib << 20
    placement = table.get("placement", "greedy")
    if not isinstance(placement, str) or placement not in METHODS:
        raise UserError(f"config.toml: compute.placement must be one of {', '.join(METHODS)}")
    chosen["placement"] = placement
    from qiz.compute.service import ComputeConfig

    config = ComputeConfig()
    for name, value in chosen.items():
        setattr(config, name, value)
    return config


def _store_config(table: object) -> StoreConfig:
    """The ``[store]`` table of config.toml (quotas, leases, k/n); a bad key is one line."""
    try:
        return StoreConfig.from_table(table)
    except StoreConfigError as exc:
        raise UserError(str(exc)) from None


def _nat_config(table: object) -> NatConfig:
    """The ``[nat]`` table of config.toml (reachability checks); a bad key is one line."""
    try:
        return NatConfig.from_table(table)
    except NatConfigError as exc:
        raise UserError(str(exc)) from None


def _relay_config(table: object) -> RelayConfig:
    """The ``[relay]`` table of config.toml (docs/nat.md §6); a bad key is one line."""
    try:
        return RelayConfig.from_table(table)
    except RelayConfigError as exc:
        raise UserError(str(exc)) from None


async def _run_node(  # noqa: PLR0917 - the command's options, passed on
    session: Session,
    identity: NodeIdentity,
    address: str,
    peers: list[str],
    lan: bool,
    compute: ComputeConfig,
    links: ManagerConfig,
    api: tuple[int, dict[str, float]] | None,
    as_json: bool = False,
) -> None:
    import asyncio

    from qiz.deploy.service import DeployConfig
    from qiz.node import ControlSocketError, Node
    from qiz.resolve.dht import DhtConfig

    config = session.home.load_config()
    if not solves(identity.node_id.digest, config.puzzle_bits):
        raise UserError(
            f"this node's id does not solve the {config.puzzle_bits}-bit id puzzle its config "
            "asks for (dht.puzzle_bits); lower it or make a new identity"
        )
    node = Node(
        identity,
        listen=address,
        peers=peers,
        control_dir=session.home.path,
        config=links,
        lan={} if lan else None,
        dht_config=DhtConfig.from_table(
            config.extra.get("dht", {}), puzzle_bits=config.puzzle_bits
        ),
        compute=compute,
        http=_serve_api(api) if api is not None else None,
        store=_store_config(config.extra.get("store", {})),
        deploy=DeployConfig.from_table(config.extra.get("deploy", {})),
        nat=_nat_config(config.extra.get("nat", {})),
        relay=_relay_config(config.extra.get("relay", {})),
    )
    # Both signals stop the node, whatever disposition they were inherited with: a shell's
    # background job starts with SIGINT ignored, and add_signal_handler replaces SIG_IGN.
    # Installed before start() so that a signal during start-up also ends in a clean stop.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.stop_requested.set)
    try:
        await node.start()
    except ControlSocketError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    api = node.web.url if node.web is not None else None
    if as_json:  # the one line a parent process waits for: the node is up, and where
        emit(True, _ready(session, node, api), lambda: None)
    else:
        console.print(f"node {node.node_id} listening on {node.address}", markup=False)
        if api is not None:
            console.print(f"API and dashboard on {api} (qiz dashboard prints the URL)")
        if not peers and not node.remembered and node.lan is None:
            console.print(NO_PEERS, markup=False)
    await node.stop_requested.wait()
    logging.getLogger("qiz.node").info("shutting down")
    await node.stop()
    if not as_json:  # under --json the ready line is all stdout ever gets
        console.print("node stopped", markup=False)


def _ready(session: Session, node: Node, api: str | None) -> dict[str, Any]:
    """The ready line of ``node start --json`` (docs/json/node-start.schema.json)."""
    from qiz.control import CONTROL_SOCKET

    home = session.home.path.absolute()
    return {
        "event": "ready",
        "node_id": str(node.node_id),
        "address": node.address,
        "addresses": list(node.record().addresses) or [node.address],
        "api_url": api,
        "control": str(home / CONTROL_SOCKET),
        "home": str(home),
        "pid": os.getpid(),
    }


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the running node's id, address, links, DHT and jobs (from its HTTP API)."""
    from qiz.cli.web_cmds import api_get

    session: Session = ctx.obj
    info = node_call(session, "status", 5.0)
    jobs: list[dict] = []
    if info.get("api_url"):  # the summary comes from the same API the dashboard uses
        info = api_get(session, info["api_url"], "node")
        if info.get("compute") is not None:
            jobs = api_get(session, info["api_url"], "jobs")["jobs"]

    def human() -> None:
        started = time.time() - info["uptime_s"]
        console.print(f"node     {info['node_id']}", markup=False)
        console.print(f"address  {', '.join(info['addresses'])}", markup=False)
        console.print(
            f"uptime   {duration(info['uptime_s'])} (since {moment(started)}), "
            f"version {info['version']}",
            markup=False,
        )
        if info.get("api_url"):
            console.print(f"api      {info['api_url']}  (qiz dashboard)", markup=False)
        dht = info["dht"]
        slow = ""  # silent or slow peers the lookups went around (docs/dht.md)
        if dht.get("hedged_requests") or dht.get("lookup_timeouts"):
            slow = (
                f" ({plural(dht.get('hedged_requests', 0), 'request')} hedged, "
                f"{dht.get('lookup_timeouts', 0)} timed out)"
            )
        console.print(
            f"dht      {plural(dht['contacts'], 'contact')}, {plural(dht['records'], 'record')}, "
            f"{plural(dht['lookups'], 'lookup')}{slow}",
            markup=False,
        )
        compute = info.get("compute")
        if compute and compute.get("worker"):
            w = compute["worker"]
            console.print(
                f"worker   {plural(w['qubits'], 'qubit')}, {plural(w['slots'], 'slot')}, "
                f"queue {w['queue']}, {w['engine']}",
                markup=False,
            )
        if jobs:
            states: dict[str, int] = {}
            for job in jobs:
                states[job["state"]] = states.get(job["state"], 0) + 1
            console.print(
                "jobs     " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
                markup=False,
            )
        store = info.get("store")
        if store:
            console.print(
                f"store    {plural(store['owned'], 'content')} of its own; holds "
                f"{plural(store['columns'], 'column')} of {plural(store['contents'], 'content')} "
                f"for {plural(store['peers'], 'peer')}, {size(store['bytes_stored'])} of "
                f"{size(store['quota_bytes'])} lent (qiz store ls)",
                markup=False,
            )
        nat = info.get("nat")
        if nat:
            relays = f", via {plural(len(nat['relays']), 'relay')}" if nat["relays"] else ""
            seen = ", ".join(nat["public_addresses"]) or "not yet"
            console.print(
                f"reach    {nat['reachability']}{relays}; seen at {seen}; NAT mapping "
                f"{nat['mapping']} (qiz netcheck)",
                markup=False,
            )
        links = info["links"]
        online = plural(len(links), "peer")
        console.print(f"links    {online} online (qiz peers: also those that left)", markup=False)
        if links:
            peer_cmds.print_lines(peer_cmds.peer_lines(links))

    emit(as_json, info, human)


STOP_WAIT_S = 30.0  # how long 'node stop' waits for the node to let go of its home


def stop(
    ctx: typer.Context,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Return once the stop is requested, not when it is done."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop the running node cleanly, and wait (at most 30 s) until it has: a 'node start'
    right after it finds the home free."""
    session: Session = ctx.obj
    node_call(session, "stop", 5.0)
    if no_wait:
        emit(as_json, {"stopped": False}, lambda: console.print("stop requested"))
        return
    if not _wait_released(session.home.path / LOCK_FILE, STOP_WAIT_S):
        raise UserError(
            f"the node was asked to stop but still holds its home after {STOP_WAIT_S:.0f} s "
            f"(see {session.home.path / LOG_NAME} if it runs detached)"
        )
    emit(as_json, {"stopped": True}, lambda: console.print("stopped"))


def _wait_released(lock: Path, timeout: float) -> bool:
    """Whether the node's lock on its home (:data:`qiz.node.LOCK_FILE`, held until its last
    file is closed) is free within ``timeout`` seconds. The lock, not the socket: the socket
    goes first, the lock last, and it is what the next node start takes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True  # released (closing the fd below lets go of ours at once)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
