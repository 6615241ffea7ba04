"""What the tests share: running coroutines and CLI commands, waiting for conditions, node
processes and small in-process meshes. Test modules import from here (or get fixtures from
conftest.py), never from each other.

Two rules this module exists to make easy:

* wait for a condition (:func:`eventually`, :func:`async_eventually`, a node's ready line),
  never sleep a fixed time and hope;
* bind port 0 and read the port back (``127.0.0.1:0`` everywhere), never "find a free port,
  then bind it".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from pathlib import Path
from typing import Any

from qiz.identity import NodeIdentity, PeerRecord
from qiz.node import Node
from qiz.procs import NodeProcess
from qiz.qmp.connection import QmpConfig
from qiz.qmp.manager import ManagerConfig
from qiz.qmp.rpc import RpcEndpoint
from qiz.qmp.transport import Link, dial
from tests.json_shapes import check_answer, check_shape

__all__ = [
    "CLEAN_ENV",
    "HOST",
    "NodeProcess",
    "assert_one_line_error",
    "async_eventually",
    "client",
    "eventually",
    "make_node",
    "manager",
    "node_processes",
    "node_state",
    "node_status",
    "ok_json",
    "one_line_error",
    "qiz",
    "qiz_each",
    "qiz_init",
    "qiz_popen",
    "qiz_raw",
    "qmp",
    "read_until_closed",
    "record_of",
    "run",
    "running",
    "running_mesh",
    "start_mesh",
    "stop_all",
]

# The environment of every CLI subprocess: no home, passphrase or debug switch leaks in from
# the developer's shell.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in ("QIZ_HOME", "QIZ_PASSPHRASE", "QIZ_DEBUG")
}

# ------------------------------------------------------------------------------ running


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run ``coro`` in a fresh event loop, bounded by ``timeout``; fail on anything the loop
    reports as unhandled (a task that crashed, a callback that raised) while it ran."""
    problems: list[dict] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        return await asyncio.wait_for(coro, timeout)

    result = asyncio.run(main())
    assert not problems, [describe_problem(p) for p in problems]
    return result


def describe_problem(context: dict) -> str:
    """One line per problem the loop reported, with the exception and where it was raised:
    a failure seen once in CI must say enough to be fixed without reproducing it."""
    text = str(context.get("message"))
    exc = context.get("exception")
    if exc is not None:
        where = "".join(traceback.format_exception(exc)[-6:])
        text += f": {exc!r}\n{where}"
    return text


def qiz(cwd: Path, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m qiz ARGS`` in ``cwd``, stdin closed, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "qiz", *map(str, args)],
        cwd=cwd,
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def qiz_raw(
    cwd: Path, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, bytes, str]:
    """Like :func:`qiz` for commands with binary output: (returncode, stdout bytes, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qiz", *map(str, args)],
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


def qiz_popen(cwd: Path, *args: str | Path) -> subprocess.Popen[str]:
    """A ``qiz`` command left running (to be interrupted, killed under, or followed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "qiz", *map(str, args)],
        cwd=cwd,
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def qiz_each(
    cwd: Path, commands: Sequence[Sequence[str | Path]], at_once: int = 2, timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands (each as :func:`qiz` runs one), ``at_once`` of them side by side:
    their results in order. A CLI process keeps one core busy, so a test that runs many
    commands whose answers do not depend on each other waits half as long on two cores."""
    results: list[subprocess.CompletedProcess[str]] = []
    for first in range(0, len(commands), at_once):
        batch = [[sys.executable, "-m", "qiz", *map(str, c)] for c in commands[first:][:at_once]]
        running = [
            subprocess.Popen(
                argv,
                cwd=cwd,
                env=CLEAN_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for argv in batch
        ]
        try:
            for argv, proc in zip(batch, running, strict=True):
                out, err = proc.communicate(timeout=timeout)
                results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        finally:
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return results


def qiz_init(cwd: Path, *homes: str) -> dict[str, str]:
    """``qiz --home H init --json`` for each of ``homes`` (relative to ``cwd``), run side by
    side: their node ids by home."""
    started = {home: qiz_popen(cwd, "--home", home, "init", "--json") for home in homes}
    ids = {}
    for home, proc in started.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err, err
        ids[home] = check_answer(["--home", home, "init", "--json"], out)["node_id"]
    return ids


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, after checking it succeeded cleanly."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    argv = [str(a) for a in result.args]
    return check_answer(argv[argv.index("qiz") + 1 :] if "qiz" in argv else argv, result.stdout)


def assert_one_line_error(stderr: str, *words: str) -> str:
    """The CLI's own error report: one non-empty ``qiz: ...`` line, never a traceback."""
    assert "Traceback" not in stderr
    line = stderr.strip()
    assert line, "expected an error message on stderr"
    assert "\n" not in line, stderr
    assert line.startswith("qiz: "), line
    assert "internal error" not in line, line
    for word in words:
        assert word in line, line
    return line


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A command that failed with exit ``code`` and said why in one line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    if "--json" in [str(a) for a in result.args]:
        failure = json.loads(result.stdout)
        check_shape("(failed)", failure)
        assert failure["ok"] is False and failure["exit_code"] == code, failure
    return assert_one_line_error(result.stderr)


# ------------------------------------------------------------------------------ waiting


def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Wait until ``check()`` returns something true and return it; fail after ``timeout``.

    For state in other processes, which notifies nobody: poll the condition itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


async def async_eventually(
    check: Callable[[], Any | Awaitable[Any]], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """:func:`eventually` inside an event loop; ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------ node processes


@contextlib.contextmanager
def node_processes(cwd: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``start(home, peers=(), args=())`` starts ``qiz node start`` on 127.0.0.1:0 with
    ``home`` relative to ``cwd`` (short control-socket paths) and waits for its ready line
    (``ready=False``: the caller waits); every process group started is SIGKILLed on the way
    out, however the test ends."""
    started: list[NodeProcess] = []

    def start(
        home: str,
        peers: Iterable[str] = (),
        args: Iterable[str] = (),
        *,
        ready: bool = True,
        **kwargs: Any,
    ) -> NodeProcess:
        kwargs.setdefault("cwd", cwd)
        node = NodeProcess(home, peers=peers, args=args, env=CLEAN_ENV, **kwargs)
        started.append(node)
        if ready:
            node.wait_ready(60)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.kill()


@contextlib.contextmanager
def deploy_mesh(work: Path, names: Sequence[str]) -> Iterator[dict[str, NodeProcess]]:
    """``qiz node start`` processes (no workers) named ``names`` in ``work``, all linked to the
    first, with the pool at k=1 of n=2 (a small mesh still places a column) and followers that
    refresh every 0.5 s: the deploy engine's CLI and dashboard tests. Killed on the way out."""
    for name in names:
        ok_json(qiz(work, "--home", name, "init", "--json"))
        with (work / name / "config.toml").open("a") as config:
            config.write("\n[store]\nk = 1\nn = 2\n\n[deploy]\nrefresh_every = 0.5\n")
    with node_processes(work) as start:
        first = start(names[0], args=["--no-worker"])
        rest = [start(n, peers=[first.bootstrap], args=["--no-worker"]) for n in names[1:]]
        links = len(names) - 1
        eventually(lambda: len((node_status(first) or {}).get("links", [])) == links, 60, "links")
        yield dict(zip(names, [first, *rest], strict=True))


def node_status(node: NodeProcess) -> dict | None:
    """``qiz node status --json`` of a running node process (the CLI path a user takes), or
    None if it does not answer."""
    if not node.alive():
        raise AssertionError(f"node {node.name} exited: {node.tail()}")
    result = qiz(node.cwd, "--home", str(node.home), "node", "status", "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def node_state(node: NodeProcess) -> dict | None:
    """The status a running node process gives over its control socket, or None if it does
    not answer. For waiting on a node: a poll here takes milliseconds, where a CLI process
    (:func:`node_status`, for checking what the user is shown) takes most of a second of the
    CPU the nodes need to get there."""
    if not node.alive():
        raise AssertionError(f"node {node.name} exited: {node.tail()}")
    try:
        return node.request("status", 5.0)["result"]
    except (ConnectionError, TimeoutError):  # NodeNotRunning is a ConnectionError
        return None


# ------------------------------------------------------------------------------ in-process meshes


def qmp(**overrides: Any) -> QmpConfig:
    """QMP settings with a handshake timeout that fits a test."""
    return QmpConfig(**{"handshake_timeout": 3.0, **overrides})


def manager(**overrides: Any) -> ManagerConfig:
    """Link-manager settings scaled down so that every timer fits in a test."""
    values: dict[str, Any] = {
        "keepalive_interval": 5.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "duplicate_grace": 0.2,
        "qmp": qmp(),
        **overrides,
    }
    return ManagerConfig(**values)


async def start_mesh(
    size: int, make: Callable[[list[str] | None, int], Node], join_timeout: float = 30
) -> list[Node]:
    """``size`` in-process nodes on 127.0.0.1:0, made by ``make(peers, index)``: the first
    with no peers, every other one given only the first's address; returns once every node
    has joined the DHT. Nodes that started are stopped if a later one fails."""
    nodes: list[Node] = []
    try:
        for i in range(size):
            node = make([nodes[0].address] if nodes else None, i)
            await node.start()
            nodes.append(node)
        await asyncio.gather(*(asyncio.wait_for(n.joined.wait(), join_timeout) for n in nodes))
    except BaseException:
        await stop_all(nodes)
        raise
    return nodes


async def stop_all(nodes: Iterable[Node]) -> None:
    """Stop every node not already stopped (a test may have stopped some)."""
    for node in nodes:
        if not node.stopped.is_set():
            await node.stop()


@contextlib.asynccontextmanager
async def running_mesh(
    size: int, make: Callable[[list[str] | None, int], Node]
) -> AsyncIterator[list[Node]]:
    """:func:`start_mesh` as a context: every node is stopped on the way out."""
    nodes = await start_mesh(size, make)
    try:
        yield nodes
    finally:
        await stop_all(nodes)


# ------------------------------------------------------------------------- links and raw sockets

HOST = "127.0.0.1"


def make_node(identity: NodeIdentity | None = None, **kwargs: Any) -> Node:
    kwargs.setdefault("config", manager())
    kwargs.setdefault("listen", f"{HOST}:0")
    return Node(identity or NodeIdentity.generate(), **kwargs)


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[tuple[Node, ...]]:
    """Start ``nodes``; stop every one that started, whatever happens."""
    started: list[Node] = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
        yield nodes
    finally:
        for node in reversed(started):
            await node.stop()


def record_of(identity: NodeIdentity) -> PeerRecord:
    now = time.time()
    return PeerRecord.create(identity, [], seq=int(now * 1000), now=now)


async def client(
    address: str, identity: NodeIdentity | None = None, **kwargs: Any
) -> tuple[Link, RpcEndpoint]:
    """A bare RPC client (no node of its own): dial, then an endpoint with no handlers."""
    identity = identity or NodeIdentity.generate()
    limits = {k: kwargs.pop(k) for k in ("max_inflight_out",) if k in kwargs}
    kwargs.setdefault("config", qmp())
    link = await dial(address, identity, record_of(identity), **kwargs)
    return link, RpcEndpoint(link, {}, **limits)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, float]:
    """Everything the node sent before closing, and when it closed (monotonic seconds).
    Fails if the connection is still open after ``timeout`` seconds."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the node kept the connection open for {timeout} s")
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the node kept the connection open for {timeout} s") from None
    except ConnectionError:  # reset: closed as well
        pass
    return bytes(received), time.monotonic()
