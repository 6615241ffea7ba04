"""``python -m bench.nat_node ARGS``: ``qiz ARGS`` with two benchmark hooks, for bench/nat.py.

Measuring a link's throughput needs bulk bytes over *that* link (relayed or punched), and no
operation of a node moves bytes over a chosen link on request. This wrapper adds, in the node
process only and without touching qiz:

* an RPC handler ``bench.blob`` ``{"n": int}`` -> ``n`` zero bytes (at most 1 MiB), and
* a control operation ``bench_bulk`` ``{"target", "seconds", "chunk", "depth", "max_bytes"}``:
  pull blobs from the linked peer ``target`` over the node's primary link to it, ``depth``
  calls in flight, for ``seconds`` or until ``max_bytes`` arrived (a relay forwards at most
  ``qiz.qmp.relay.RelayConfig.circuit_bytes`` on one circuit, then closes it); answers the
  bytes, seconds, Mbit/s and the link's path.

Everything else is the ``qiz`` CLI, unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

MAX_BLOB = 1 << 20
BLOB_RATE = 100_000.0  # bench.blob calls a second one peer may make (far above any link)


def install() -> None:
    from qiz import node as node_module
    from qiz.node_api import OPERATIONS, BadRequest, Operation, arg
    from qiz.qmp import rpc_limits

    # bulk pulls are many thousands of calls a second: not metered at the default 200 a
    # second, over which the pull was refused as busy (it stayed under it only while the
    # dialling side's Nagle delays held every link to a few hundred calls a second)
    rpc_limits.METHOD_RATES["bench.blob"] = (BLOB_RATE, BLOB_RATE)

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
        max_bytes = int(arg(args, "max_bytes", int))
        if not (0 < seconds <= 60 and 0 < chunk <= MAX_BLOB and 0 < depth <= 64 and max_bytes > 0):
            raise BadRequest("seconds 0..60, chunk 1..1 MiB, depth 1..64, max_bytes > 0")
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
            while time.perf_counter() < end and total < max_bytes:
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
