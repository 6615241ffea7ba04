"""Floods of the local HTTP API (issue 13, item 7), before and after, against a real node.

Two attacks, each run for the same time against a node from this checkout and one from an
older checkout (``--before DIR``, default /tmp/qiz-before), the node started with the
descriptor limit of the report (``ulimit -n 1024``), beside the legitimate probe of
:mod:`bench.attacks.probe` (a newcomer dials over QMP and pings, four times a second) and a
legitimate API client (``GET /api/node`` with the token on a fresh connection, four times a
second):

* ``api idle flood``: 1,100 idle API connections, each reopened as soon as the node closes it
  (the report's attack: it took every descriptor, so QMP dials timed out, and asyncio logged
  676,359 lines in 40 s);
* ``api slowloris``: 200 connections that send a request's headers one line every 0.5 s and
  never finish, each reopened when the node closes it.

For each: QMP pings and API requests served / failed, the node's peak RSS, CPU seconds and
descriptors, its log's size, and what the attacker held.

    .venv/bin/python -m bench.attacks.api [--seconds 15] [--before /tmp/qiz-before]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.attacks.probe import measure, start_target, table
from qiz.procs import NodeProcess

NODE_FD_LIMIT = 1024  # the node's `ulimit -n` in the report
IDLE_CONNECTIONS = 1100
SLOWLORIS_CONNECTIONS = 200
OPEN_TIMEOUT = 1.0  # a connect the node does not accept within this is counted as refused


@contextlib.contextmanager
def descriptor_limit(limit: int) -> Iterator[None]:
    """Processes started inside inherit a soft descriptor limit of ``limit``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _endpoint(node: NodeProcess) -> tuple[int, str]:
    assert node.api is not None
    port = int(node.api.rstrip("/").rsplit(":", 1)[1])
    token = (node.cwd / node.home / "api.token").read_text().strip()
    return port, token


async def api_probe(node: NodeProcess, stop: asyncio.Event, interval: float = 0.25) -> dict:
    """A legitimate API client: ``GET /api/node`` on a fresh connection, 5 s to answer."""
    port, token = _endpoint(node)
    served = failed = 0
    request = (
        f"GET /api/node HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            return (await reader.read()).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    while not stop.is_set():
        try:
            ok = await asyncio.wait_for(one(), 5.0)
        except (OSError, TimeoutError):
            ok = False
        served, failed = served + ok, failed + (not ok)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return {"api_served": served, "api_failed": failed}


def flood(node: NodeProcess, count: int, trickle: bool) -> Callable[[asyncio.Event], Any]:
    """``count`` connections kept open (reopened when closed); with ``trickle``, each sends a
    request line and then one more header line every 0.5 s, never the blank line."""
    port, _ = _endpoint(node)

    async def attack(stop: asyncio.Event) -> dict[str, Any]:
        figures = {"opened": 0, "refused": 0, "closed_by_node": 0}

        async def one() -> None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), OPEN_TIMEOUT
                )
            except (OSError, TimeoutError):
                figures["refused"] += 1
                await asyncio.sleep(OPEN_TIMEOUT)
                return
            figures["opened"] += 1
            try:
                if trickle:
                    writer.write(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
                line = 0
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(4096), 0.5) == b"":
                            figures["closed_by_node"] += 1
                            return
                    if trickle:
                        line += 1
                        writer.write(f"X-Slow-{line}: a\r\n".encode())
            except OSError:
                figures["closed_by_node"] += 1
            finally:
                writer.close()

        async def keep() -> None:
            while not stop.is_set():
                await one()

        held = [asyncio.ensure_future(keep()) for _ in range(count)]
        api = asyncio.ensure_future(api_probe(node, stop))
        await stop.wait()
        await asyncio.gather(*held, return_exceptions=True)
        return {**figures, **(await api)}

    return attack


async def run_one(name: str, node: NodeProcess, code: str, seconds: float) -> dict[str, Any]:
    count = IDLE_CONNECTIONS if name == "api idle flood" else SLOWLORIS_CONNECTIONS
    return await measure(
        name, node, flood(node, count, name == "api slowloris"), seconds, code=code
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--before", type=Path, default=Path("/tmp/qiz-before"))
    args = parser.parse_args()
    rows = []
    for name in ("api idle flood", "api slowloris"):
        for code, tree in (("before", args.before), ("after", None)):
            with descriptor_limit(NODE_FD_LIMIT):
                target = start_target(tree)
                node = target.__enter__()
            try:
                row = asyncio.run(run_one(name, node, code, args.seconds))
                rows.append(row)
            finally:
                target.__exit__(None, None, None)
    print(table(rows))
    print()
    print("| attack | code | API served/failed | connections opened/refused/closed by node |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['attack']} | {r['code']} | {r['api_served']}/{r['api_failed']} "
            f"| {r['opened']}/{r['refused']}/{r['closed_by_node']} |"
        )


if __name__ == "__main__":
    main()
