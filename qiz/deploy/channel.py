"""The publisher's side: one channel is one TUF repository, kept as files in a directory.

Layout (what a channel source serves, and what the store tree behind the name record
``OWNER/deploy/NAME`` holds)::

    metadata/1.root.json, 2.root.json, ...   every root version, kept forever (followers walk them)
    metadata/N.targets.json                  consistent snapshots: versioned file names, so a
    metadata/N.snapshot.json                   follower mid-update never mixes two states
    metadata/timestamp.json                  the only unversioned file: the entry point
    targets/<sha256>.<VERSION>.qizd          each version's descriptor, hash-prefixed

Every role is k-of-n (:class:`RoleKeys`); a key rotation is a new root version signed by a
threshold of the old root's keys *and* of the new root's keys, so a follower can walk from any
root it trusts to the newest. Expiries default to: timestamp 1 day, snapshot and targets 1
week, root 1 year (:class:`Expiry`); the clock is injected so tests can publish in the past.

Files are written with :func:`qiz.fsio.write_atomic`, descriptors and versioned metadata first
and ``timestamp.json`` last: a follower reading the directory at any moment sees the old
channel or the new one. Every signed file is verified by its delegator before it is written, so
a publisher that lacks a threshold of keys fails here with one clear line, not at its followers.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    TOP_LEVEL_ROLE_NAMES,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from qiz.deploy import limits
from qiz.deploy import signing as _signing  # noqa: F401  (registers our key types)
from qiz.deploy.bundle import check_name
from qiz.deploy.descriptor import TARGET_SUFFIX, target_path
from qiz.deploy.errors import ChannelError
from qiz.fsio import read_bounded, write_atomic

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
PUBLIC_MODE = 0o644
HASH_ALGORITHM = "sha256"
KEEP_VERSIONS = 2  # snapshot/targets versions kept beside the current one's predecessor
ROLE_ORDER = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_ROOT_FILE = re.compile(r"(\d+)\.root\.json")

S = TypeVar("S", bound=Signed)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=7)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def of(self, role: str) -> timedelta:
        return getattr(self, role)


@dataclass(frozen=True)
class RoleKeys:
    """The n public keys of a role and its threshold k."""

    keys: tuple[Key, ...]
    threshold: int = 1

    def __post_init__(self) -> None:
        ids = {k.keyid for k in self.keys}
        if len(ids) != len(self.keys):
            raise ChannelError("a role lists the same key twice")
        if not 1 <= len(self.keys) <= limits.MAX_KEYS_PER_ROLE:
            raise ChannelError(f"a role has 1 to {limits.MAX_KEYS_PER_ROLE} keys")
        if not 1 <= self.threshold <= len(self.keys):
            raise ChannelError(
                f"a threshold of {self.threshold} cannot be met by {len(self.keys)} keys"
            )


def _serializer() -> JSONSerializer:
    return JSONSerializer(compact=True)


class Channel:
    """A channel's TUF repository in ``directory``. Open an existing one with ``Channel(dir)``;
    make a new one with :meth:`create`."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime] = utc_now,
        expiry: Expiry | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self.expiry = expiry or Expiry()
        self._reload()

    def _reload(self) -> None:
        """Read the channel's current state from its files (also after a failed change, so
        the object never holds a half-made state)."""
        self.root = self._load_root()
        self.timestamp = self._load(Timestamp, "timestamp.json")
        snap_version = self.timestamp.signed.snapshot_meta.version
        self.snapshot = self._load(Snapshot, f"{snap_version}.snapshot.json")
        targets_version = self.snapshot.signed.meta["targets.json"].version
        self.targets = self._load(Targets, f"{targets_version}.targets.json")

    # --- creating -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        roles: Mapping[str, RoleKeys],
        signers: Sequence[Signer],
        *,
        clock: Callable[[], datetime] = utc_now,
        expiry: Expiry | None = None,
    ) -> Channel:
        """A new channel: root v1 with ``roles`` (all four top-level roles), empty targets."""
        directory = Path(directory)
        if set(roles) != TOP_LEVEL_ROLE_NAMES:
            raise ChannelError(f"a channel needs keys for exactly {', '.join(ROLE_ORDER)}")
        if (directory / METADATA_DIR / "1.root.json").exists():
            raise ChannelError(f"{directory} already holds a channel")
        (directory / METADATA_DIR).mkdir(parents=True, exist_ok=True)
        (directory / TARGETS_DIR).mkdir(exist_ok=True)
        expiry = expiry or Expiry()
        now = clock()
        root = Root(expires=now + expiry.root, consistent_snapshot=True)
        _set_roles(root, roles)
        root_md = Metadata(root)
        _sign(root_md, Root.type, signers, [root])
        targets_md = Metadata(Targets(expires=now + expiry.targets))
        _sign(targets_md, Targets.type, signers, [root])
        snapshot_md = Metadata(Snapshot(expires=now + expiry.snapshot))
        snapshot_md.signed.meta["targets.json"] = _metafile(targets_md)
        _sign(snapshot_md, Snapshot.type, signers, [root])
        timestamp_md = Metadata(Timestamp(expires=now + expiry.timestamp))
        timestamp_md.signed.snapshot_meta = _metafile(snapshot_md)
        _sign(timestamp_md, Timestamp.type, signers, [root])
        for md in (root_md, targets_md, snapshot_md, timestamp_md):
            _check_size(md)  # before any file: a refused channel leaves nothing behind
        _write_md(directory, "1.root.json", root_md)
        _write_md(directory, "1.targets.json", targets_md)
        _write_md(directory, "1.snapshot.json", snapshot_md)
        _write_md(directory, "timestamp.json", timestamp_md)
        return cls(directory, clock=clock, expiry=expiry)

    # --- reading ----------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.directory / METADATA_DIR / name

    def _load(self, kind: type[S], name: str) -> Metadata[S]:
        path = self._path(name)
        try:
            data = read_bounded(path, limits.MAX_TARGETS_BYTES, f"channel file {name}")
            md = Metadata.from_bytes(data)
        except FileNotFoundError:
            raise ChannelError(f"{self.directory} is not a channel: {name} is missing") from None
        except (OSError, DeserializationError) as exc:
            raise ChannelError(f"channel file {path} is unreadable: {exc}") from None
        if not isinstance(md.signed, kind):
            raise ChannelError(f"channel file {path} is not {kind.type} metadata")
        return md

    def _load_root(self) -> Metadata[Root]:
        versions = sorted(
            int(m.group(1))
            for p in (self.directory / METADATA_DIR).glob("*.root.json")
            if (m := _ROOT_FILE.fullmatch(p.name))
        )
        if not versions:
            raise ChannelError(f"{self.directory} is not a channel: no root metadata")
        return self._load(Root, f"{versions[-1]}.root.json")

    @property
    def role_keys(self) -> dict[str, RoleKeys]:
        """The current root's roles as :class:`RoleKeys`."""
        root = self.root.signed
        return {
            role: RoleKeys(tuple(root.keys[k] for k in root.roles[role].keyids), r.threshold)
            for role, r in root.roles.items()
        }

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        return versions_of(self.targets.signed)

    # --- publishing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _change(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._reload()
            raise

    def publish(self, version: str, target: bytes, signers: Sequence[Signer]) -> TargetFile:
        """Add ``version`` whose descriptor (or sealed pointer) is ``target``; re-sign targets,
        snapshot and timestamp. A version is published once."""
        path = target_path(version)
        targets = self.targets.signed.targets
        if path in targets:
            raise ChannelError(f"version {version} is already published on this channel")
        if len(targets) >= limits.MAX_CHANNEL_VERSIONS:
            raise ChannelError(f"a channel lists at most {limits.MAX_CHANNEL_VERSIONS} versions")
        if len(target) > limits.MAX_DESCRIPTOR_BYTES:
            raise ChannelError(f"a descriptor is at most {limits.MAX_DESCRIPTOR_BYTES} bytes")
        seq = max((sequence(t) for t in targets.values()), default=0) + 1
        info = TargetFile.from_data(path, target, [HASH_ALGORITHM])
        info.unrecognized_fields["custom"] = {"qiz": {"seq": seq}}
        digest = info.hashes[HASH_ALGORITHM]
        with self._change():
            targets[path] = info
            self._commit(
                signers,
                bump={Targets.type, Snapshot.type, Timestamp.type},
                files={f"{digest}.{path}": target},
            )
        return info

    def renew(self, signers: Sequence[Signer]) -> None:
        """Re-sign what expires soon: the timestamp always, snapshot and targets when less
        than half their period is left. A publisher runs this at least daily."""
        now = self.clock()
        bump = {Timestamp.type}
        for md in (self.targets, self.snapshot):
            role = md.signed.type
            if md.signed.expires - now < self.expiry.of(role) / 2:
                bump.add(role)
        with self._change():
            if self.root.signed.expires - now < self.expiry.root / 2:
                self.rotate(self.role_keys, signers)
            self._commit(signers, bump=bump)

    def rotate(self, roles: Mapping[str, RoleKeys], signers: Sequence[Signer]) -> None:
        """A new root version with ``roles``: signed by a threshold of the old root's keys and
        of the new one's. Roles whose keys changed are re-signed with their new keys (new
        versions), so the channel stays valid for followers that trust the new root."""
        if set(roles) != TOP_LEVEL_ROLE_NAMES:
            raise ChannelError(f"a rotation names keys for exactly {', '.join(ROLE_ORDER)}")
        with self._change():
            self._rotate(roles, signers)

    def _rotate(self, roles: Mapping[str, RoleKeys], signers: Sequence[Signer]) -> None:
        old = self.root.signed
        new = Root.from_dict(self.root.signed.to_dict())
        new.version = old.version + 1
        new.expires = self.clock() + self.expiry.root
        new.keys = {}
        _set_roles(new, roles)
        new_md = Metadata(new)
        _sign(new_md, Root.type, signers, [old, new])
        self.root = new_md
        bump = {
            role
            for role in (Targets.type, Snapshot.type, Timestamp.type)
            if old.roles[role] != new.roles[role]
        }
        # Everything is signed before the new root is written: a root whose roles' new keys
        # have not signed yet would leave followers that take it with a channel they refuse.
        self._commit(signers, bump=bump, first=[(f"{new.version}.root.json", new_md)])

    def _commit(
        self,
        signers: Sequence[Signer],
        *,
        bump: set[str],
        files: Mapping[str, bytes] | None = None,
        first: Sequence[tuple[str, Metadata[Any]]] = (),
    ) -> None:
        """Sign the bumped roles (raising before anything is written if a threshold is
        missing; bumping targets bumps snapshot, and snapshot timestamp), then write: target
        ``files``, then the ``first`` metadata (a new root), the versioned metadata, and
        timestamp.json last."""
        now = self.clock()
        root = self.root.signed
        written: list[tuple[str, Metadata[Any]]] = []
        if Targets.type in bump:
            md = self.targets
            md.signed.version += 1
            md.signed.expires = now + self.expiry.targets
            _sign(md, Targets.type, signers, [root])
            self.snapshot.signed.meta["targets.json"] = _metafile(md)
            written.append((f"{md.signed.version}.targets.json", md))
            bump = bump | {Snapshot.type}
        if Snapshot.type in bump:
            md = self.snapshot
            md.signed.version += 1
            md.signed.expires = now + self.expiry.snapshot
            _sign(md, Snapshot.type, signers, [root])
            self.timestamp.signed.snapshot_meta = _metafile(md)
            written.append((f"{md.signed.version}.snapshot.json", md))
            bump = bump | {Timestamp.type}
        if Timestamp.type in bump:
            md = self.timestamp
            md.signed.version += 1
            md.signed.expires = now + self.expiry.timestamp
            _sign(md, Timestamp.type, signers, [root])
            written.append(("timestamp.json", md))
        for _, md in [*first, *written]:
            _check_size(md)
        for name, data in (files or {}).items():
            write_atomic(self.directory / TARGETS_DIR / name, data, PUBLIC_MODE)
        # versioned files first, timestamp.json (the entry point) last
        for name, md in [*first, *written]:
            _write_md(self.directory, name, md)
        self._prune()

    def _prune(self) -> None:
        """Drop snapshot/targets versions older than the last KEEP_VERSIONS (a follower that
        read an older timestamp a moment ago still finds its files)."""
        for role, current in (
            (Snapshot.type, self.snapshot.signed.version),
            (Targets.type, self.targets.signed.version),
        ):
            for path in (self.directory / METADATA_DIR).glob(f"*.{role}.json"):
                head = path.name.split(".", 1)[0]
                if head.isdigit() and int(head) <= current - KEEP_VERSIONS:
                    path.unlink(missing_ok=True)


def sequence(info: TargetFile) -> int:
    custom = info.custom if isinstance(info.custom, dict) else {}
    qiz = custom.get("qiz") if isinstance(custom, dict) else None
    seq = qiz.get("seq") if isinstance(qiz, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def versions_of(targets: Targets) -> list[str]:
    """The versions verified targets metadata lists, in the order they were published."""
    found = sorted(
        (sequence(info), path.removesuffix(TARGET_SUFFIX))
        for path, info in targets.targets.items()
        if path.endswith(TARGET_SUFFIX)
    )
    return [version for _, version in found]


def newest_version(targets: Targets) -> str | None:
    """The version published last (highest ``custom.qiz.seq``) in verified targets metadata."""
    versions = versions_of(targets)
    return versions[-1] if versions else None


def _set_roles(root: Root, roles: Mapping[str, RoleKeys]) -> None:
    for role in ROLE_ORDER:
        spec = roles[role]
        root.roles[role] = Role([], spec.threshold)
        for key in spec.keys:
            root.add_key(key, role)


def _metafile(md: Metadata[Any]) -> MetaFile:
    data = md.to_bytes(_serializer())
    return MetaFile(md.signed.version, len(data), {HASH_ALGORITHM: _sha256(data)})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sign(
    md: Metadata[Any], role: str, signers: Sequence[Signer], delegators: Sequence[Root]
) -> None:
    """Sign ``md`` with every signer some delegator trusts for ``role``, then check that each
    delegator's threshold is met (ChannelError naming the role otherwise)."""
    md.signatures.clear()
    wanted = {k for root in delegators for k in root.roles[role].keyids}
    for signer in signers:
        if signer.public_key.keyid in wanted and signer.public_key.keyid not in md.signatures:
            md.sign(signer, append=True)
    payload = md.signed_bytes
    for root in delegators:
        result = root.get_verification_result(role, payload, md.signatures)
        if not result:
            raise ChannelError(
                f"cannot sign {role} metadata: root v{root.version} needs {result.threshold} of "
                f"its {role} keys and the signers given hold {len(result.signed)}"
            )


_MAX_BYTES = {
    Root.type: limits.MAX_ROOT_BYTES,
    Timestamp.type: limits.MAX_TIMESTAMP_BYTES,
    Snapshot.type: limits.MAX_SNAPSHOT_BYTES,
    Targets.type: limits.MAX_TARGETS_BYTES,
}


def _check_size(md: Metadata[Any]) -> bytes:
    data = md.to_bytes(_serializer())
    bound = _MAX_BYTES[md.signed.type]
    if len(data) > bound:  # followers would refuse it as endless data
        raise ChannelError(
            f"{md.signed.type} metadata would be {len(data)} bytes, over the {bound} bytes "
            "followers accept (use fewer keys for the role)"
        )
    return data


def _write_md(directory: Path, name: str, md: Metadata[Any]) -> None:
    write_atomic(directory / METADATA_DIR / name, _check_size(md), PUBLIC_MODE)


def check_channel_name(name: str) -> str:
    """A channel is named like its bundles (it is the NAME of ``OWNER/deploy/NAME``)."""
    return check_name(name, "channel name")
