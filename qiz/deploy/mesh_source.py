"""A channel source over the mesh: the signed name record ``OWNER/deploy/NAME`` names a store
tree, and the tree's files are the channel (docs/deploy.md, "From a name record to the
metadata").

:meth:`MeshSource.load` does the network part, once per refresh and on the event loop: resolve
the owner's name record (never from a cache: a cached pointer would freeze the follower until
it expired), read the content id it holds, fetch the tree with the storage pool's bounded fetch
(refused over :data:`~qiz.deploy.mesh_limits.MAX_CHANNEL_TREE_BYTES` before a byte is read),
and keep its files in memory. :meth:`get` then serves python-tuf's fetcher from them, from any
thread, with no I/O.

Nothing here is trusted beyond the name record's signature (which the DHT checked): a stale or
forged tree is refused by TUF as a freeze, a rollback or arbitrary software. The record does
carry OWNER's composite public key, which is what trust on first use is anchored to
(:attr:`MeshSource.owner_key`, checked here to hash to OWNER's id).

Why the label is ``deploy:NAME`` and not ``deploy/NAME``: a DHT label may not hold ``/``
(:func:`qiz.crypto.ids.normalize_label`). People still write ``OWNER/deploy/NAME`` or
``OWNER/NAME``; :func:`parse_channel` reads both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from qiz import wire
from qiz.crypto.composite import CompositePublicKey
from qiz.crypto.errors import CryptoError, InvalidIdentifier
from qiz.crypto.ids import ContentId, NodeId
from qiz.deploy.bundle import check_name
from qiz.deploy.errors import BundleError, ChannelUnavailable
from qiz.deploy.mesh_limits import MAX_CHANNEL_TREE_BYTES, MAX_CHANNEL_TREE_FILES
from qiz.deploy.updater import _SAFE_PATH, ChannelSource, SourceMissing

LABEL_PREFIX = "deploy:"

FetchFiles = Callable[[ContentId, int], Awaitable[Mapping[str, bytes]]]


def channel_label(name: str) -> str:
    """The DHT label of channel NAME's name record."""
    return f"{LABEL_PREFIX}{check_name(name, 'channel name')}"


@dataclass(frozen=True)
class ChannelRef:
    """A channel as a follower names it: its owner's node id and its NAME."""

    owner: NodeId
    name: str

    def __str__(self) -> str:
        return f"{self.owner}/deploy/{self.name}"


def split_channel(text: str) -> tuple[str, str]:
    """``OWNER/deploy/NAME`` or ``OWNER/NAME`` as (OWNER as written, NAME checked)."""
    parts = text.strip().split("/") if isinstance(text, str) else []
    if len(parts) == 3 and parts[1] == "deploy":
        parts = [parts[0], parts[2]]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise BundleError(f"{text!r} is not a channel: write OWNER/deploy/NAME or OWNER/NAME")
    return parts[0], check_name(parts[1], "channel name")


def parse_channel(text: str) -> ChannelRef:
    """``OWNER/deploy/NAME`` or ``OWNER/NAME`` with OWNER a whole node id. One-line
    :class:`BundleError` otherwise."""
    owner_text, name = split_channel(text)
    try:
        owner = NodeId.parse(owner_text)
    except InvalidIdentifier as exc:
        raise BundleError(f"channel {text!r}: its owner is not a node id ({exc})") from None
    return ChannelRef(owner, name)


def owner_key(record: bytes, owner: NodeId) -> CompositePublicKey:
    """The composite public key a (DHT-verified) name record of ``owner`` carries."""
    try:
        fields = wire.decode(record, max_size=len(record), what="name record")
        key = CompositePublicKey(fields["owner"])
    except (wire.WireError, CryptoError, KeyError, TypeError) as exc:
        raise ChannelUnavailable(f"the name record of {owner} is unreadable: {exc}") from None
    if NodeId.from_public_key(key.raw) != owner:
        raise ChannelUnavailable(f"the name record of {owner} carries another node's key")
    return key


class TreeSource(ChannelSource):
    """A channel's files held in memory (what :class:`MeshSource` fetched)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = dict(files)

    def get(self, path: str, max_length: int) -> bytes:
        if not _SAFE_PATH.fullmatch(path) or ".." in path:
            raise SourceMissing(path)
        data = self.files.get(path)
        if data is None:
            raise SourceMissing(path)
        return data[: max_length + 1]


class MeshSource(TreeSource):
    """Channel ``ref`` read through the mesh: :meth:`load` (async) before each refresh.
    ``last``: the (content id, files) of the tree a previous load fetched, reused when the
    record still names it (a follower refreshing every minute fetches a tree once per
    publication; TUF still runs each time, so an unchanged tree still expires).

    ``resolve(owner, label)`` returns the verified name record's raw bytes and value (the node
    passes the DHT's ``resolve_name`` without its cache); ``fetch(cid, max_size)`` the files of
    a store tree (the storage pool's ``fetch_files``)."""

    def __init__(
        self,
        ref: ChannelRef,
        resolve: Callable[[NodeId, str], Awaitable[tuple[bytes, str]]],
        fetch: FetchFiles,
        *,
        last: tuple[ContentId, Mapping[str, bytes]] | None = None,
    ) -> None:
        super().__init__({})
        self.ref = ref
        self._resolve = resolve
        self._fetch = fetch
        self._last = last  # the tree fetched last time: not fetched again while it is named
        self.tree: ContentId | None = None
        self.owner_key: CompositePublicKey | None = None

    async def load(self) -> ContentId:
        """Resolve the name record and fetch the tree it names; the tree's content id."""
        try:
            raw, value = await self._resolve(self.ref.owner, channel_label(self.ref.name))
        except ChannelUnavailable:
            raise
        except Exception as exc:  # the DHT's ResolveError, a timeout: the channel is not found
            raise ChannelUnavailable(
                f"channel {self.ref} is not found on the mesh ({_text(exc)})"
            ) from None
        self.owner_key = owner_key(raw, self.ref.owner)
        try:
            cid = ContentId.parse(value)
        except InvalidIdentifier:
            raise ChannelUnavailable(
                f"channel {self.ref}: its name record does not name a content id"
            ) from None
        if self._last is not None and self._last[0] == cid:
            self.files = dict(self._last[1])  # content-addressed: the same bytes
            self.tree = cid
            return cid
        try:
            files = await self._fetch(cid, MAX_CHANNEL_TREE_BYTES)
        except Exception as exc:  # StoreError, NotEnoughHolders, ContentNotFound...
            raise ChannelUnavailable(
                f"channel {self.ref}: its metadata {cid} cannot be fetched ({_text(exc)})"
            ) from None
        if len(files) > MAX_CHANNEL_TREE_FILES:
            raise ChannelUnavailable(
                f"channel {self.ref}: its tree holds {len(files)} files, over the "
                f"{MAX_CHANNEL_TREE_FILES} a follower reads"
            )
        self.files = dict(files)
        self.tree = cid
        return cid


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
