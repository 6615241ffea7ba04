"""Reaching a peer by its id: this node itself directly, a linked peer over its link, anyone else
by resolving its signed peer record through the DHT and dialling one of its addresses, or a
circuit through one of its relays.

Services that talk to peers they know only by id (the storage pool's holders, the compute
coordinator's workers) call through one :class:`PeerCaller`, so "how do I reach X" has one
answer and one error (:class:`Unreachable`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import CallContext, Handler, invoke
from qiz.resolve.dht import Dht
from qiz.resolve.errors import Unreachable

__all__ = ["DIAL_TIMEOUT", "PeerCaller", "Unreachable"]

DIAL_TIMEOUT = 3.0  # seconds to open a link to a peer found in the DHT


class PeerCaller:
    def __init__(
        self, identity: NodeIdentity, links: LinkManager, dht: Dht, handlers: dict[str, Handler]
    ) -> None:
        self.identity = identity
        self.links = links
        self.dht = dht
        self.handlers = handlers

    @property
    def self_id(self) -> bytes:
        return self.identity.node_id.digest

    async def call(self, peer: bytes, method: str, body: Any, *, timeout: float = 10.0) -> Any:
        """Call ``method`` on ``peer`` (a node id digest) and return its answer; RpcError from
        the peer's handler, :class:`Unreachable` when no link can be had."""
        if peer == self.self_id:
            handler = self.handlers[method]
            # asyncio.timeout, not wait_for, here and below: in Python 3.11 wait_for drops a
            # cancellation that comes with the inner result, and callers run inside loops that
            # Node.stop() cancels (the worker's deliveries, the coordinator's sends)
            async with asyncio.timeout(timeout):
                return await invoke(handler, CallContext(self.identity.node_id, None), body)  # type: ignore[arg-type]
        node = NodeId(peer)
        linked = self.links.peers.get(node)
        if linked is not None and linked.link.is_open:
            rpc = linked.rpc
        else:
            try:
                # one deadline for the lookup and every address and relay tried
                async with asyncio.timeout(timeout):
                    record = await self.dht.resolve_peer(node)
                    if not record.addresses and not record.relays:
                        raise Unreachable(f"{node.short()} publishes no address and no relay")
                    # its addresses, then its relays (docs/nat.md §4.3)
                    rpc = await self.links.connect_record(
                        record, timeout=min(timeout, DIAL_TIMEOUT)
                    )
            except Unreachable:
                raise
            except Exception as exc:
                raise Unreachable(f"{node.short()}: {exc}") from None
        return await rpc.call(method, body, timeout=timeout)
