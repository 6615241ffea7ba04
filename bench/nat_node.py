"""``python -m bench.nat_node ARGS``: ``qiz ARGS`` with two benchmark hooks, for bench/nat.py.

Measuring a link's throughput needs bulk bytes over *that* link (relayed or punched), and no
operation of a node moves bytes over a chosen link on request. This wrapper adds, in the node
process only and without touching qiz:

* an RPC handler ``bench.blob`` ``{"n": int}`` -> ``n`` zero bytes (at most 1 MiB), and
* a control operation ``bench_bulk`` ``{"target", "seconds", "chunk", "depth"}``: pull blobs
  from the linked peer ``target`` over the node's primary link to it, ``depth`` calls in
  flight, for ``seconds``; answers the bytes, seconds, Mbit/s and the link's path.

Everything else is the ``qiz`` CLI, unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

MAX_BLOB = 1 << 20


def install() -> None:
    from qiz import node as node_module
    from qiz.node_api import OPERATIONS, BadRequest, Operation, arg

    original = node_module.Node.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

        async def blob(_ctx: Any, body: Any) -> bytes:
            n = body.get("n") if isinstance(body, dict) else None
            if not isinstance(n, int) or not 0 <= n <= MAX_BLOB:
                raise ValueError("n: 0 .. 1 MiB")
            return bytes(n)

        self.handlers["bench.blob"] = blob

    node_module.Node.__init__ = init  # type: ignore[method-assign]

    async def bulk(api: Any, args: dict[str, Any]) -> dict[str, Any]:
        node = api.node
        seconds = float(arg(args, "seconds", float))
        chunk = int(arg(args, "chunk", int))
        depth = int(arg(args, "depth", int))
        if not (0 < seconds <= 60 and 0 < chunk <= MAX_BLOB and 0 < depth <= 64):
            raise BadRequest("seconds 0..60, chunk 1..1 MiB, depth 1..64")
        link, _taken = await node.link_to(arg(args, "target"))
        rpc = node.links.rpc_for(link)
        if rpc is None:
            raise BadRequest("no RPC endpoint on that link")
        path = "relayed" if link in node.links.relayed else "direct"
        total = 0
        started = time.perf_counter()
        end = started + seconds

        async def pull() -> None:
            nonlocal total
            while time.perf_counter() < end:
                data = await rpc.call("bench.blob", {"n": chunk}, timeout=30.0)
                total += len(data)

        await asyncio.gather(*(pull() for _ in range(depth)))
        elapsed = time.perf_counter() - started
        return {
            "path": path,
            "still": "relayed" if link in node.links.relayed else "direct",
            "open": link.is_open,
            "bytes": total,
            "seconds": elapsed,
            "mbit_s": total * 8 / elapsed / 1e6,
        }

    OPERATIONS["bench_bulk"] = Operation("bench_bulk", bulk)


if __name__ == "__main__":
    install()
    from qiz.cli.main import entry

    entry()
