"""The follower's side: python-tuf's ``ngclient.Updater`` over a channel source.

A *channel source* maps the channel's relative paths (``metadata/timestamp.json``,
``targets/<sha256>.<VERSION>.qizd``, see :mod:`qiz.deploy.channel`) to bytes. Where the bytes
come from is the source's business: a local directory (:class:`DirectorySource`, for tests and
for a channel on this disk) or, later, the store tree whose content id the signed name record
``OWNER/deploy/NAME`` points at. A source is untrusted: every byte it returns goes through the
whole TUF client workflow (root walk, timestamp, snapshot, targets, target hash) in python-tuf,
with our key types verified through securesystemslib's registry (:mod:`qiz.deploy.signing`).

Trust starts at the channel's first root. :class:`ChannelFollower` takes it either as bytes the
caller already trusts, or fetches ``metadata/1.root.json`` and accepts it only if the channel's
owner (the node whose signed name record named the channel) holds a root key and signed it.
From then on the trusted metadata lives in ``state_dir`` (written atomically and fsynced) and
only a chain of roots signed by old and new thresholds can move it.

Every refusal is one :class:`~qiz.deploy.errors.AttackRefused` line naming the attack.
"""

from __future__ import annotations

import contextlib
import io
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from qiz.crypto.composite import CompositePublicKey
from qiz.deploy import limits
from qiz.deploy.channel import METADATA_DIR, TARGETS_DIR, newest_version, versions_of
from qiz.deploy.descriptor import Descriptor, open_target, target_path
from qiz.deploy.errors import (
    ArbitrarySoftware,
    AttackRefused,
    ChannelUnavailable,
    EndlessDataRefused,
    FreezeRefused,
    MalformedMetadata,
    MixAndMatchRefused,
    RollbackRefused,
    TamperedTarget,
    ThresholdNotMet,
)
from qiz.deploy.signing import CompositeKey
from qiz.fsio import read_bounded, write_atomic

BASE = "qiz-channel:/"
_SAFE_PATH = re.compile(r"(metadata|targets)/[A-Za-z0-9._+%-]+")
STATE_MODE = 0o600


class SourceMissing(Exception):
    """The source has no file at that path (python-tuf reads it as 'no newer root')."""


class ChannelSource(ABC):
    """Where a channel's files come from. Untrusted: only bounds and presence matter here."""

    @abstractmethod
    def get(self, path: str, max_length: int) -> bytes:
        """The bytes at ``path``, at most ``max_length + 1`` of them (one more than allowed,
        so an overlong file is seen for what it is); :class:`SourceMissing` if absent."""


class DirectorySource(ChannelSource):
    """A channel directory on this disk (what :class:`~qiz.deploy.channel.Channel` writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def get(self, path: str, max_length: int) -> bytes:
        if not _SAFE_PATH.fullmatch(path) or ".." in path:
            raise SourceMissing(path)
        full = self.directory / path
        try:
            with open(full, "rb") as handle:
                return handle.read(max_length + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise SourceMissing(path) from None


class _SourceFetcher(FetcherInterface):
    """python-tuf's fetcher interface over a :class:`ChannelSource`. The length bound each
    download carries is handed to the source, so endless data is cut at the bound + 1."""

    def __init__(self, source: ChannelSource) -> None:
        self._source = source
        self.last = ""  # the path fetched last: what a refusal that follows is about

    def _get(self, url: str, max_length: int) -> bytes:
        if not url.startswith(BASE):
            raise tuf_errors.DownloadError(f"not a channel path: {url}")
        path = self.last = url[len(BASE) :]
        try:
            data = self._source.get(path, max_length)
        except SourceMissing:
            raise tuf_errors.DownloadHTTPError(f"{path} is not in the channel", 404) from None
        except OSError as exc:
            raise tuf_errors.DownloadError(f"{path}: {exc}") from None
        if len(data) > max_length:
            raise tuf_errors.DownloadLengthMismatchError(
                f"{path} is longer than the {max_length} bytes its metadata allows"
            )
        return data

    def _fetch(self, url: str) -> Iterator[bytes]:
        return iter([self._get(url, limits.MAX_DESCRIPTOR_BYTES)])

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        yield io.BytesIO(self._get(url, max_length))


class _DurableUpdater(Updater):
    """ngclient's Updater, with its trusted-metadata writes made durable (fsynced file and
    directory, :func:`qiz.fsio.write_atomic`) instead of a plain rename."""

    def _persist_file(self, filename: str, data: bytes) -> None:
        write_atomic(Path(filename), data, STATE_MODE)


def _config() -> UpdaterConfig:
    return UpdaterConfig(
        max_root_rotations=limits.MAX_ROOT_ROTATIONS,
        root_max_length=limits.MAX_ROOT_BYTES,
        timestamp_max_length=limits.MAX_TIMESTAMP_BYTES,
        snapshot_max_length=limits.MAX_SNAPSHOT_BYTES,
        targets_max_length=limits.MAX_TARGETS_BYTES,
        prefix_targets_with_hash=True,
    )


_SIGNED_BY = re.compile(r"(\S+) was signed by (\d+)/(\d+) keys")
_META_ROLLBACK = re.compile(r"Expected (\S+) version (\d+), got (\d+)\.$")
_ROOT_VERSION = re.compile(r"Expected root version (\d+) instead got version (\d+)")
_ROLLBACK = re.compile(r"must be >=|Expected root version|, below the trusted ")


def refusal(exc: Exception, what: str, path: str = "") -> AttackRefused | ChannelUnavailable:
    """python-tuf's exception as our one-line error naming the attack it defeated (``path``:
    the channel file fetched last, which the exception is about)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return EndlessDataRefused(f"endless data attack refused: {what} serves {text}")
    # python-tuf words a snapshot's rollback of a file as "Expected <file> version <new>, got
    # <trusted>." (the two numbers the other way round from what it means): say it plainly
    swapped = _META_ROLLBACK.search(text)
    if swapped:
        name, new, old = swapped.groups()
        text = f"the new snapshot names {name} version {new}, below the trusted {old}"
    if path:
        what = f"{what} ({path})"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        match = _SIGNED_BY.search(text)
        if match and int(match.group(2)) > 0:
            role, got, need = match.groups()
            return ThresholdNotMet(
                f"threshold not met: refused {role} metadata of {what} signed by {got} of the "
                f"{need} trusted keys it needs"
            )
        role = match.group(1) if match else "the"
        return ArbitrarySoftware(
            f"arbitrary software refused: {role} metadata of {what} carries no valid signature "
            "by a trusted key (bad signature or wrong key)"
        )
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return FreezeRefused(
            f"freeze attack refused: {what} serves expired metadata ({text}); the source is "
            "stale or replaying an old state, or the publisher stopped renewing"
        )
    skipped = _ROOT_VERSION.search(text)
    if skipped and int(skipped.group(2)) > int(skipped.group(1)):
        return MalformedMetadata(
            f"refused root metadata from {what}: a root version may not be skipped ({text})"
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        if isinstance(exc, tuf_errors.EqualVersionNumberError) or _ROLLBACK.search(text):
            return RollbackRefused(
                f"rollback attack refused: {what} serves metadata older than what this node "
                f"already trusts ({text})"
            )
        return MixAndMatchRefused(
            f"mix-and-match attack refused: {what} serves metadata that is not the version its "
            f"signed parent names ({text})"
        )
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return MixAndMatchRefused(
            f"mix-and-match attack refused: {what} serves metadata whose length or hash is not "
            f"what its signed parent pins ({text})"
        )
    if isinstance(exc, tuf_errors.DownloadHTTPError | tuf_errors.DownloadError):
        return ChannelUnavailable(f"{what} is unavailable: {text}")
    if isinstance(exc, DeserializationError):
        return MalformedMetadata(f"refused malformed metadata from {what}: {text}")
    if isinstance(exc, tuf_errors.RepositoryError):
        if "missing info" in text:
            return RollbackRefused(f"rollback attack refused: {what}: {text}")
        return MalformedMetadata(f"refused metadata from {what}: {text}")
    raise exc


class ChannelFollower:
    """Keeps one channel's trusted metadata in ``state_dir`` and hands out verified
    descriptors.

    ``trusted_root``: root metadata bytes the caller trusts (e.g. shipped with the node). Or
    ``owner``: the composite public key of the node whose name record named this channel; the
    first root is then fetched and accepted only if that key is a root key and signed it.
    ``open_sealed(cid)``: the plaintext of sealed store content addressed to this node.
    ``name``: the channel's NAME; a descriptor of another bundle is then refused.
    ``clock``: "now" for the expiry checks (tests let time pass for a follower with it).
    """

    def __init__(
        self,
        state_dir: Path,
        source: ChannelSource,
        *,
        what: str = "the channel",
        name: str | None = None,
        trusted_root: bytes | None = None,
        owner: CompositePublicKey | None = None,
        open_sealed: Callable[[str], bytes] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.source = source
        self.what = what
        self.name = name
        self._trusted_root = trusted_root
        self._owner = owner
        self._open_sealed = open_sealed
        self._clock = clock
        self._updater: Updater | None = None
        self._fetcher = _SourceFetcher(source)

    @property
    def _metadata_dir(self) -> Path:
        return self.state_dir / "metadata"

    @property
    def _targets_dir(self) -> Path:
        return self.state_dir / "targets"

    def _bootstrap(self) -> bytes | None:
        """The root to start from: None once a trusted root is cached here."""
        if (self._metadata_dir / "root.json").exists():
            return None
        kept = self._newest_kept_root()
        if kept is not None:  # root.json lost between python-tuf's unlink and its relink
            return kept
        if self._trusted_root is not None:
            return self._trusted_root
        if self._owner is None:
            raise ChannelUnavailable(
                f"{self.what} has no trusted root here yet: give its root or its owner's key"
            )
        fetcher = _SourceFetcher(self.source)
        try:
            data = fetcher.download_bytes(
                f"{BASE}{METADATA_DIR}/1.root.json", limits.MAX_ROOT_BYTES
            )
            md = Metadata[Root].from_bytes(data)
            if not isinstance(md.signed, Root):
                raise DeserializationError("1.root.json is not root metadata")
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise refusal(exc, self.what) from None
        owner_key = CompositeKey.of(self._owner)
        keyid = owner_key.keyid
        sig = md.signatures.get(keyid)
        try:
            if keyid not in md.signed.roles[Root.type].keyids or sig is None:
                raise ValueError
            # the owner's own key, never what the untrusted root files under its id
            if md.signed.keys[keyid].to_dict() != owner_key.to_dict():
                raise ValueError
            owner_key.verify_signature(sig, md.signed_bytes)
        except Exception:
            raise ArbitrarySoftware(
                f"arbitrary software refused: the first root of {self.what} is not signed by "
                "the channel's owner"
            ) from None
        return data

    def _newest_kept_root(self) -> bytes | None:
        """The newest root this follower trusted before (``root_history/N.root.json``), so
        that a crash that cost ``root.json`` never sends it back to trust on first use."""
        history = self._metadata_dir / "root_history"
        versions = []
        if history.is_dir():
            for path in history.iterdir():
                number, _, rest = path.name.partition(".")
                if rest == "root.json" and number.isdigit() and len(number) <= 9:
                    versions.append(int(number))
        if not versions:
            return None
        newest = history / f"{max(versions)}.root.json"
        return read_bounded(newest, limits.MAX_ROOT_BYTES, "trusted root")

    def _new_updater(self) -> Updater:
        self._metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._targets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        bootstrap = self._bootstrap()
        self._fetcher = _SourceFetcher(self.source)
        try:
            updater = _DurableUpdater(
                str(self._metadata_dir),
                f"{BASE}{METADATA_DIR}/",
                str(self._targets_dir),
                f"{BASE}{TARGETS_DIR}/",
                fetcher=self._fetcher,
                config=_config(),
                bootstrap=bootstrap,
            )
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise refusal(exc, self.what, self._fetcher.last) from None
        if self._clock is not None:
            # ngclient takes "now" once, when the Updater is made, for every expiry check of
            # the refresh; a test's clock replaces it (python-tuf 7.0.1's TrustedMetadataSet).
            updater._trusted_set.reference_time = self._clock()
        return updater

    def refresh(self) -> Targets:
        """Run the TUF client workflow once; the verified top-level targets."""
        self._updater = updater = self._new_updater()
        try:
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise refusal(exc, self.what, self._fetcher.last) from None
        # The file ngclient has just verified and persisted (single writer: this follower).
        data = read_bounded(self._metadata_dir / "targets.json", limits.MAX_TARGETS_BYTES)
        targets = Metadata[Targets].from_bytes(data).signed
        assert isinstance(targets, Targets)
        return targets

    def latest(self) -> Descriptor:
        """Refresh, then the verified descriptor of the newest published version."""
        version = newest_version(self.refresh())
        if version is None:
            raise ChannelUnavailable(f"{self.what} has no published version yet")
        return self.descriptor(version)

    def versions(self) -> list[str]:
        """Refresh, then every published version, oldest first."""
        return versions_of(self.refresh())

    def descriptor(self, version: str) -> Descriptor:
        """The verified descriptor of ``version`` (after a refresh in this follower)."""
        updater = self._updater or self._refreshed()
        path = target_path(version)
        try:
            info = updater.get_targetinfo(path)
            if info is None:
                raise ChannelUnavailable(f"{self.what} has no version {version}")
            if info.length > limits.MAX_DESCRIPTOR_BYTES:
                raise EndlessDataRefused(
                    f"endless data attack refused: version {version}'s descriptor is declared "
                    f"{info.length} bytes, over {limits.MAX_DESCRIPTOR_BYTES}"
                )
            local = updater.find_cached_target(info)
            if local is None:
                local = updater.download_target(info)
        except tuf_errors.LengthOrHashMismatchError:
            raise TamperedTarget(
                f"refused version {version} of {self.what}: its descriptor does not hash to what "
                "the signed targets metadata pins"
            ) from None
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise refusal(exc, self.what, self._fetcher.last) from None
        data = read_bounded(local, limits.MAX_DESCRIPTOR_BYTES, "descriptor")
        found = open_target(data, self._open_sealed, version=version)
        if self.name is not None and found.name != self.name:
            raise TamperedTarget(
                f"refused version {version} of {self.what}: it describes bundle {found.name!r}, "
                f"not this channel's {self.name!r}"
            )
        return found

    def _refreshed(self) -> Updater:
        self.refresh()
        assert self._updater is not None
        return self._updater
