"""Fetching a job's content-id inputs before its spec is checked or run.

A spec may name a text input by content id (:data:`qiz.compute.spec.INPUT_FIELDS`). Whoever
must read it (the coordinator's check at submit, a worker's check on an offer, a worker resuming
stored work) fetches the text here first, then hands it to the spec check with the raw spec.

The fetch itself is an injected async callable, ``fetch_input(cid, max_size=...) -> bytes``
(the node passes its storage pool's ``fetch_bytes``, which checks the content's hash chain):
compute never imports the store. Here the bytes are bounded (``execute.MAX_TEXT``, the limit of
inline text), decoded as UTF-8, and cached by content id (a sweep's shards arrive as separate
offers of one spec; content ids name immutable bytes, so a cached text never goes stale).
Every failure is a :class:`SpecError` naming the field and the content id.

Peers' offers make a worker fetch: at most ``MAX_FETCHING`` distinct fetches for peers run at
once, beyond which an offer is answered busy (:class:`CheckerBusy`, the coordinator places the
task elsewhere) instead of queueing; the node's own fetches (a submit, a restart) are never
refused for that.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.errors import CheckerBusy, SpecError
from qiz.crypto.ids import ContentId

log = logging.getLogger("qiz.compute")

FetchInput = Callable[..., Awaitable[bytes]]  # fetch_input(cid, max_size=n) -> bytes
FETCH_SECONDS = 60.0  # one input's fetch, holders asked included
CACHE = 16  # texts remembered (each at most execute.MAX_TEXT bytes)
MAX_FETCHING = 8  # distinct fetches for peers' offers at once


class InputFetcher:
    """``await texts(raw, limits)``: the inputs a signed spec names, fetched and decoded."""

    def __init__(
        self,
        fetch: FetchInput | None,
        *,
        cache: int = CACHE,
        timeout: float = FETCH_SECONDS,
        max_fetching: int = MAX_FETCHING,
    ) -> None:
        self.fetch = fetch
        self.cache_size = cache
        self.timeout = timeout
        self.max_fetching = max_fetching
        self._cache: OrderedDict[ContentId, str] = OrderedDict()
        self._inflight: dict[ContentId, asyncio.Future[str]] = {}
        self.counters = {"fetched": 0, "cached": 0, "failed": 0, "busy": 0}

    async def texts(self, raw: Any, limits: specs.Limits, *, peer: bool = False) -> dict[str, str]:
        """Content id (text) -> text for each input ``raw`` names; ``{}`` when it names none.
        SpecError when the spec is malformed or an input cannot be had; CheckerBusy when
        ``peer`` (a peer's offer) and ``MAX_FETCHING`` fetches already run."""
        refs = specs.input_refs(raw, limits)
        out: dict[str, str] = {}
        for path, cid in refs:
            out[str(cid)] = await self._one(path, cid, peer)
        return out

    async def _one(self, path: str, cid: ContentId, peer: bool) -> str:
        cached = self._cache.get(cid)
        if cached is not None:
            self._cache.move_to_end(cid)
            self.counters["cached"] += 1
            return cached
        if self.fetch is None:
            raise SpecError(f"{path}: input {cid} is stored content, and this node has no pool")
        running = self._inflight.get(cid)
        if running is None and peer and len(self._inflight) >= self.max_fetching:
            self.counters["busy"] += 1
            raise CheckerBusy(f"{self.max_fetching} job inputs are being fetched here; try later")
        if running is None:
            running = asyncio.ensure_future(self._fetch(path, cid))
            self._inflight[cid] = running
            running.add_done_callback(lambda _: self._inflight.pop(cid, None))
        else:
            self.counters["cached"] += 1
        return await asyncio.shield(running)

    async def _fetch(self, path: str, cid: ContentId) -> str:
        assert self.fetch is not None
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.fetch(cid, max_size=execute.MAX_TEXT)
        except TimeoutError:
            self.counters["failed"] += 1
            raise SpecError(f"{path}: input {cid} not fetched within {self.timeout:g} s") from None
        except Exception as exc:  # the store's one-line errors: not found, too big, a dir
            self.counters["failed"] += 1
            raise SpecError(f"{path}: {input_error(cid, exc)}") from None
        if not isinstance(data, bytes | bytearray) or len(data) > execute.MAX_TEXT:
            self.counters["failed"] += 1
            raise SpecError(f"{path}: input {cid} is over {execute.MAX_TEXT} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            self.counters["failed"] += 1
            raise SpecError(
                f"{path}: input {cid} is not UTF-8 text (byte {exc.start} is not)"
            ) from None
        self.counters["fetched"] += 1
        self._cache[cid] = text
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return text


def input_error(cid: ContentId, exc: BaseException) -> str:
    """The store's error about ``cid`` as an input's: ``input qizc1... not found after N
    holders asked`` (the store says ``content qizc1... ...``)."""
    text = str(exc).strip() or type(exc).__name__
    name = str(cid)
    for prefix in (f"content {name}", name):
        if text.startswith(prefix):
            return f"input {name}{text[len(prefix) :]}"
    return f"input {name}: {text}"
