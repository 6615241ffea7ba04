"""Choosing holders for a content's columns (docs/store.md, "Owners").

Candidates are the nodes closest to the content id that a DHT lookup found plus the peers this
node is linked to, never this node itself nor a node that already holds a column of the content
(n columns go to n distinct holders). They are tried in order: peers whose score fell below
``LOW_SCORE`` last (under ``qiz.trust.scores.GIVE``: never), then by XOR distance to the
content id, so two owners of the same content tend to pick the same holders (and a public
column already held is not sent again). A holder that refuses an offer (``quota``, ``full``)
or cannot be reached is skipped and the next one is asked: placement moves on, it never waits
for a full node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from qiz.qmp.rpc import RpcError
from qiz.resolve.keyspace import distance
from qiz.resolve.reach import Unreachable
from qiz.store.manifest import Manifest
from qiz.trust.scores import GIVE

log = logging.getLogger("qiz.store")
LOW_SCORE = 0.5  # below this a peer is asked only when nobody better is left
OFFER_TIMEOUT = 10.0


@dataclass
class Placement:
    """Indices that found a holder (index -> holder, and whether it already held the column)
    and the reasons the others were refused, for a clear error."""

    holders: dict[int, bytes] = field(default_factory=dict)
    already_held: set[int] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)
    asked: int = 0


def order_candidates(
    target: bytes,
    candidates: Iterable[bytes],
    score: Callable[[bytes], float],
    *,
    exclude: set[bytes],
) -> list[bytes]:
    # a peer under the trust threshold for giving (qiz.trust.scores.GIVE) gets no shares
    unique = {c for c in candidates if c not in exclude and score(c) >= GIVE}
    return sorted(unique, key=lambda c: (score(c) < LOW_SCORE, distance(c, target)))


async def place(
    manifest: Manifest,
    indices: Iterable[int],
    candidates: list[bytes],
    call: Callable[..., Awaitable[object]],
    lease: int,
) -> Placement:
    """Offer each index to the next candidate until one accepts; a candidate takes at most one
    index. Returns what was placed (possibly fewer than asked: the caller decides)."""
    result = Placement()
    queue = list(candidates)
    for index in indices:
        while queue:
            holder = queue.pop(0)
            result.asked += 1
            body = {"manifest": manifest.raw, "index": index, "lease": lease}
            try:
                answer = await call(holder, "store.offer", body, timeout=OFFER_TIMEOUT)
            except (RpcError, Unreachable, OSError, TimeoutError) as exc:
                result.refusals.append(str(exc))
                log.info("store: %s refused share %d: %s", holder.hex()[:12], index, exc)
                continue
            result.holders[index] = holder
            if isinstance(answer, dict) and answer.get("have") is True:
                result.already_held.add(index)
            break
    return result
