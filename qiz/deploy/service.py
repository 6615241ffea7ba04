"""The deploy engine on a node: what :class:`~qiz.node.Node` wires in (docs/deploy.md).

:class:`DeployService` joins the parts built on their own:

* the **publisher**: ``build`` puts a bundle directory into the storage pool and describes it;
  ``publish`` also adds the version to the channel's TUF repository (kept under the home in
  ``deploy-channels/NAME/``, signed at first with the node's identity key for every role;
  ``rotate`` gives a role other keys, k of n, and ``publish`` then takes the signers the node
  lacks, see docs/deploy-node.md "Channel keys"), puts the
  channel's files into the pool as one tree and signs the name record ``OWNER/deploy/NAME``
  (label ``deploy:NAME``) that points at it. With recipients, the bundle's files and its
  descriptor are sealed to them and the channel lists only a pointer. An upkeep pass re-signs
  the timestamp (and what else expires soon) and re-publishes the tree and the record, so
  followers never see the channel freeze;
* the **follower**: ``install`` runs the TUF client workflow over the mesh
  (:class:`~qiz.deploy.mesh_source.MeshSource` + :class:`~qiz.deploy.updater.ChannelFollower`,
  in a worker thread: python-tuf is synchronous), fetches the version's files from the pool,
  checks each against the verified descriptor and installs them with the atomic
  :class:`~qiz.deploy.install.Installer`; ``follow`` does that every ``refresh_every`` seconds
  and restarts the running bundle on its new version, skipping versions the supervisor rolled
  back from;
* the **runner**: one :class:`~qiz.deploy.supervise.Supervisor` per bundle it runs.

What survives a restart is in ``deploy/.service.json`` (which channels are followed, which
bundles run; a name starting with a dot is never a bundle's): the node restarts them on start.
Every mistake a user can make is one :class:`~qiz.QizError` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qiz import NotFound, QizError
from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import ContentId, NodeId
from qiz.deploy.bundle import (
    MANIFEST_NAME,
    BundleSpec,
    check_name,
    check_version,
    load_bundle,
)
from qiz.deploy.channel import (
    Channel,
    Expiry,
    RoleKeys,
    check_channel_name,
    versions_of,
)
from qiz.deploy.descriptor import Descriptor, describe_directory, seal_pointer
from qiz.deploy.errors import (
    AttackRefused,
    BundleError,
    ChannelError,
    ChannelUnavailable,
    DeployError,
    SealedToOthers,
)
from qiz.deploy.install import Installer
from qiz.deploy.limits import MAX_DESCRIPTOR_BYTES
from qiz.deploy.mesh_limits import (
    MAX_CACHED_TREE_BYTES,
    MAX_CHANNEL_TREE_BYTES,
    MAX_CHANNEL_TREE_FILES,
    MAX_FOLLOWED_CHANNELS,
    MAX_JOB_SPEC_BYTES,
    MAX_LOG_TAIL_BYTES,
    MAX_SERVICE_STATE_BYTES,
)
from qiz.deploy.mesh_source import ChannelRef, MeshSource, channel_label
from qiz.deploy.runtime_limits import MAX_INSTALL_BYTES
from qiz.deploy.signing import NODE_KEY, CompositeSigner, QizSigner, load_key_file
from qiz.deploy.supervise import LOG_NAME, Supervisor
from qiz.deploy.supervisor_core import IDLE
from qiz.deploy.updater import ChannelFollower
from qiz.fsio import FileTooLarge, read_bounded, write_atomic
from qiz.identity import NodeIdentity, PeerRecord
from qiz.resolve.records import MAX_TTL
from qiz.tasks import TaskOwner

if TYPE_CHECKING:
    from qiz.resolve.dht import Dht
    from qiz.store.service import StoreService

log = logging.getLogger("qiz.deploy")
DEPLOY_DIR = "deploy"
CHANNELS_DIR = "deploy-channels"
TRUST_DIR = "deploy-trust"
STATE_FILE = ".service.json"
FORMAT = 1
ROLES = ("root", "targets", "snapshot", "timestamp")
KEEP_TREES = 2  # channel trees kept pinned: the newest, and the one a follower may be reading
KEEP_INSTALLED = 3  # versions kept installed beside the current and previous ones (history)
RENEW_RETRY = 60.0  # seconds before a renewal pass that left a channel stale is tried again
SEALED_TIMEOUT = 120.0  # seconds a worker thread waits for a sealed descriptor from the pool
# a renewal that cannot sign every role it would bump signs the timestamp only: an expiry of
# zero for the others makes Channel.renew leave them alone until they have expired
_TIMESTAMP_ONLY = Expiry(root=timedelta(0), targets=timedelta(0), snapshot=timedelta(0))
_ROLE_CHAIN = {"targets": ("snapshot", "timestamp"), "snapshot": ("timestamp",)}


def _shortfalls(
    version: int, roles: dict[str, RoleKeys], wanted: Sequence[str], signers: Sequence[QizSigner]
) -> list[str]:
    """For each role of ``wanted`` whose threshold in ``roles`` (root ``version``'s) the
    ``signers`` cannot meet: "ROLE of root vN needs K more of keys ID, ID" (ids shortened to
    16 hex digits): checked before anything is built or signed, so the user hears which keys
    to bring rather than a signing failure half-way."""
    have = {signer.public_key.keyid for signer in signers}
    found = []
    for role in wanted:
        spec = roles[role]
        ids = [k.keyid for k in spec.keys]
        missing = spec.threshold - len(have & set(ids))
        if missing > 0:
            absent = ", ".join(k[:16] for k in ids if k not in have)
            found.append(f"{role} of root v{version} needs {missing} more of keys {absent}")
    return found


def _ids(spec: RoleKeys) -> tuple[set[str], int]:
    return {k.keyid for k in spec.keys}, spec.threshold


def _target(versions: list[str], current: str | None, bad: set[str]) -> str | None:
    """The version a follower moves to: the newest the channel lists that this node has not
    rolled back from, if it is newer (in the channel's order) than the current one; None to
    stay. So a node that rolled back from the newest version settles on the newest good one
    (a follower that was offline while v2 came and v3 failed ends on v2, as the others did),
    and never moves backwards on its own."""
    good = [v for v in versions if v not in bad]
    if not good or good[-1] == current:
        return None
    if current in versions and versions.index(good[-1]) < versions.index(current):
        return None
    return good[-1]


class UnknownBundle(DeployError, NotFound):
    """No bundle (or channel) of that name on this node."""


@dataclass(frozen=True)
class DeployConfig:
    """How often a follower looks for a new version and a publisher re-signs its channels."""

    refresh_every: float = 60.0  # seconds between a followed channel's refreshes
    renew_every: float = 6 * 3600.0  # seconds between a publisher's re-sign + re-publish passes
    name_ttl: int = 2 * 24 * 3600  # seconds a channel's name record lives (renewed before)
    stop_grace: float = 5.0  # seconds a bundle has between SIGTERM and SIGKILL

    def __post_init__(self) -> None:
        for name in ("refresh_every", "renew_every", "stop_grace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DeployError(f"config.toml: deploy.{name} must be a number of seconds")
            if not 0 < value <= 86400:
                raise DeployError(f"config.toml: deploy.{name} must be over 0 and at most 86400")
        ttl = self.name_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL:
            raise DeployError(f"config.toml: deploy.name_ttl must be 1 to {MAX_TTL} seconds")

    @classmethod
    def from_table(cls, table: object) -> DeployConfig:
        """Read ``[deploy]`` of config.toml: known keys only, each checked (one line)."""
        if not isinstance(table, dict):
            raise DeployError("config.toml: [deploy] must be a table")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in table if key not in known)
        if unknown:
            raise DeployError(
                f"config.toml: deploy.{unknown[0][:64]} is not a [deploy] setting "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**table)


@dataclass
class _State:
    """What the service keeps across restarts."""

    follow: dict[str, str] = field(default_factory=dict)  # NAME -> OWNER of a followed channel
    channels: dict[str, str] = field(default_factory=dict)  # NAME -> OWNER it was installed from
    run: set[str] = field(default_factory=set)  # bundles to keep running
    trees: dict[str, list[str]] = field(default_factory=dict)  # NAME -> published tree ids
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)  # NAME -> VERSION -> job id
    unpushed: set[str] = field(default_factory=set)  # channels changed but not yet put + named

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "follow": self.follow,
            "channels": self.channels,
            "run": sorted(self.run),
            "trees": self.trees,
            "jobs": self.jobs,
            "unpushed": sorted(self.unpushed),
        }
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> _State:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("not a deploy service state")

        def owners(table: Any) -> dict[str, str]:
            return {check_name(k): str(NodeId.parse(v)) for k, v in dict(table).items()}

        try:
            return cls(
                owners(body.get("follow", {})),
                owners(body.get("channels", {})),
                {check_name(v) for v in body.get("run", [])},
                {
                    check_name(k): [str(ContentId.parse(c)) for c in v]
                    for k, v in dict(body.get("trees", {})).items()
                },
                {
                    check_name(k): {check_version(ver): str(job) for ver, job in dict(v).items()}
                    for k, v in dict(body.get("jobs", {})).items()
                },
                {check_name(v) for v in body.get("unpushed", [])},
            )
        except (QizError, InvalidIdentifier) as exc:
            raise ValueError(str(exc)) from None


class DeployService:
    """Publish, install, follow and run bundles on one node (see the module's docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        store: StoreService,
        dht: Dht,
        home: Path,
        *,
        config: DeployConfig | None = None,
        clock: Callable[[], float] = time.time,
        submit_job: Callable[[dict[str, Any]], Awaitable[str]] | None = None,
    ) -> None:
        self.identity = identity
        self.submit_job = submit_job  # signs and submits a job spec; its job id (hex)
        self.store = store
        self.dht = dht
        self.home = Path(home)
        self.config = config or DeployConfig()
        self.clock = clock
        self.root = self.home / DEPLOY_DIR
        self.signer = CompositeSigner(identity.signing_key)
        self.state = self._load_state()
        self._installers: dict[str, Installer] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._refreshed: dict[str, dict[str, Any]] = {}  # NAME -> the last refresh's outcome
        self._trees: dict[str, tuple[ContentId, dict[str, bytes]]] = {}  # NAME -> last tree
        self._upkeep: asyncio.Task[None] | None = None
        self._owner = TaskOwner("deploy", log)
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resume what the state file says: run the bundles marked to run, follow the followed
        channels, keep the published channels fresh. Nothing at all for a node that never used
        the deploy engine."""
        self.started = True
        for name in sorted(self.state.run):
            self._owner.spawn(self._resume(name), f"run {name}")
        for name, owner in sorted(self.state.follow.items()):  # checked when the file was read
            self._start_loop(ChannelRef(NodeId.parse(owner), name))
        if self._channel_names():
            self._start_upkeep(first=0.0)  # a publisher back from a stop is stale until then

    async def _resume(self, name: str) -> None:
        try:
            async with self._lock(name):
                await self._run(name)
        except (QizError, OSError) as exc:
            log.warning("deploy: cannot run %s again: %s", name, exc)

    async def shutdown(self) -> None:
        """Stop the loops and every supervised bundle (killed as groups)."""
        await self._owner.close()
        for supervisor in list(self._supervisors.values()):
            with contextlib.suppress(Exception):
                await supervisor.stop(timeout=self.config.stop_grace + 5)
            await supervisor.close()
        self._supervisors.clear()

    # ------------------------------------------------------------------ state

    @property
    def _state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load_state(self) -> _State:
        try:
            data = read_bounded(self._state_path, MAX_SERVICE_STATE_BYTES, "deploy state")
        except FileNotFoundError:
            return _State()
        except (OSError, FileTooLarge) as exc:
            raise DeployError(f"cannot read {self._state_path}: {exc}") from None
        try:
            return _State.from_bytes(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise DeployError(f"{self._state_path} is not a deploy state file: {exc}") from None

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._state_path, self.state.to_bytes())

    def _installer(self, name: str) -> Installer:
        installer = self._installers.get(name)
        if installer is None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            installer = self._installers[name] = Installer(self.root, name)
        return installer

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _known(self, name: str) -> Installer:
        """The installer of a bundle this node has installed (UnknownBundle otherwise)."""
        check_channel_name(name)
        if not (self.root / name).is_dir() or self._installer(name).current() is None:
            raise UnknownBundle(
                f"no bundle {name} is installed on this node (see qiz deploy ls; install one "
                "with qiz deploy install OWNER/NAME)"
            )
        return self._installer(name)

    # ------------------------------------------------------------------ publishing

    async def build(
        self, directory: Path, *, to: Sequence[PeerRecord] = ()
    ) -> tuple[Descriptor, dict[str, Any]]:
        """Put the bundle at ``directory`` into the pool (sealed to ``to`` when given); its
        descriptor (every file's size and sha256, the content id) and the put's answer."""
        directory = Path(directory)
        if not directory.is_dir():
            raise BundleError(
                f"{directory} is not a directory (a bundle is a directory with a {MANIFEST_NAME})"
            )
        load_bundle(directory)  # one clear line for a bad manifest before anything is stored
        placeholder = str(ContentId.of(b"qiz deploy build"))
        before = await asyncio.to_thread(describe_directory, directory, placeholder)
        put = await self.store.put(directory, to=to)
        after = await asyncio.to_thread(describe_directory, directory, placeholder)
        if after != before:
            raise BundleError(f"{directory} changed while it was being stored; build it again")
        return dataclasses.replace(before, content=str(put.cid)), put.as_dict()

    async def publish(
        self,
        directory: Path,
        *,
        channel: str | None = None,
        to: Sequence[PeerRecord] = (),
        signers: Sequence[Path] = (),
    ) -> dict[str, Any]:
        """Build ``directory``, add its version to the channel (created on first use) and point
        the channel's name record at the new tree. ``signers``: key files for the roles the
        node's own key does not hold (after a rotation); checked before anything is built."""
        spec = load_bundle(Path(directory))
        keys = self._signers(signers)
        name = check_channel_name(channel or spec.name)
        if name != spec.name:
            raise BundleError(
                f"bundle {spec.name} cannot go on channel {name}: a channel carries the bundle "
                "of its own name"
            )
        async with self._lock(f"publish:{name}"):
            chan = self._channel(name)
            if f"{spec.version}.qizd" in chan.targets.signed.targets:
                if name in self.state.unpushed:  # signed, but its tree or record failed
                    pushed = await self._push(name)
                    return {
                        "channel": str(ChannelRef(self.identity.node_id, name)),
                        "name": name,
                        "version": spec.version,
                        "retried": True,
                        "versions": chan.versions(),
                        **pushed,
                    }
                raise ChannelError(f"version {spec.version} is already published on {name}")
            short = _shortfalls(
                chan.root.signed.version, chan.role_keys, ("targets", "snapshot", "timestamp"), keys
            )
            if short:
                raise ChannelError(
                    f"cannot publish on {name}: {'; '.join(short)} (pass --signer FILE)"
                )
            descriptor, put = await self.build(Path(directory), to=to)
            target = descriptor.to_bytes()
            sealed = None
            if to:
                sealed_put = await self.store.put_files(
                    {f"{spec.version}.qizd": target}, name=f"{spec.version}.qizd", to=to
                )
                sealed = str(sealed_put.cid)
                target = seal_pointer(sealed, descriptor).to_bytes()
            self.state.unpushed.add(name)
            self._save()
            await asyncio.to_thread(chan.publish, spec.version, target, keys)
            pushed = await self._push(name)
        self._start_upkeep()
        answer = {
            "channel": str(ChannelRef(self.identity.node_id, name)),
            "name": name,
            "version": spec.version,
            "content": descriptor.content,
            "files": len(descriptor.files),
            "size": sum(f.size for f in descriptor.files),
            "sealed_to": put.get("sealed_to", []),
            "sealed_descriptor": sealed,
            "versions": chan.versions(),
            **pushed,
        }
        return answer

    def _signers(self, files: Sequence[Path]) -> list[QizSigner]:
        """The node's own signer and those of the key ``files`` (read now, held for one
        change only)."""
        return [self.signer, *(load_key_file(Path(f)) for f in files)]

    async def rotate(
        self,
        name: str,
        role: str,
        keys: Sequence[str],
        *,
        threshold: int = 1,
        signers: Sequence[Path] = (),
    ) -> dict[str, Any]:
        """A new root version of channel NAME in which ``role`` is held by ``keys`` (key file
        paths, or ``node`` for this node's own key), ``threshold`` of them: signed by the
        current root's threshold and, as TUF asks, the new one's; the roles whose keys changed
        are re-signed by their new keys. Then the channel is pushed as publish does."""
        name = check_channel_name(name)
        if role not in ROLES:
            raise ChannelError(f"role must be one of {', '.join(ROLES)}, not {role[:32]!r}")
        if not keys:
            raise ChannelError(f"give the {role} role at least one key (--key FILE or node)")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ChannelError("the threshold must be a whole number of at least 1")
        if threshold > len(keys):
            raise ChannelError(
                f"a threshold of {threshold} cannot be met by the {len(keys)} keys given"
            )
        if name not in self._channel_names():
            raise UnknownBundle(
                f"this node publishes no channel {name} (qiz deploy ls lists them; the first "
                "qiz deploy publish makes one)"
            )
        public = [
            self.signer.public_key if key == NODE_KEY else load_key_file(Path(key)).public_key
            for key in keys
        ]
        held = self._signers(signers)
        async with self._lock(f"publish:{name}"):
            chan = Channel(self._channel_dir(name))
            old = chan.role_keys
            roles = {**old, role: RoleKeys(tuple(public), threshold)}
            version = chan.root.signed.version
            changed = [r for r in ROLES[1:] if _ids(old[r]) != _ids(roles[r])]
            resigned = sorted({r for c in changed for r in (c, *_ROLE_CHAIN.get(c, ()))})
            short = _shortfalls(version, old, ["root"], held) + _shortfalls(
                version + 1, roles, ["root", *resigned], held
            )
            if short:
                raise ChannelError(f"cannot rotate {name}: {'; '.join(short)} (pass --signer FILE)")
            await asyncio.to_thread(chan.rotate, roles, held)
            self.state.unpushed.add(name)  # signed: the next renewal pushes it if this fails
            self._save()
            pushed = await self._push(name)
        self._start_upkeep()
        return {
            "channel": str(ChannelRef(self.identity.node_id, name)),
            "name": name,
            "root_version": chan.root.signed.version,
            "roles": self._roles_of(chan),
            **pushed,
        }

    def _roles_of(self, chan: Channel) -> dict[str, Any]:
        """Each role's key ids and threshold (``node`` marks this node's own key)."""
        own = self.signer.public_key.keyid
        return {
            role: {
                "keyids": [k.keyid for k in spec.keys],
                "threshold": spec.threshold,
                "node_key": any(k.keyid == own for k in spec.keys),
            }
            for role, spec in chan.role_keys.items()
        }

    def _channel_dir(self, name: str) -> Path:
        return self.home / CHANNELS_DIR / name

    def _channel_names(self) -> list[str]:
        base = self.home / CHANNELS_DIR
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "metadata" / "1.root.json").exists())

    def _channel(self, name: str) -> Channel:
        directory = self._channel_dir(name)
        if (directory / "metadata" / "1.root.json").exists():
            return Channel(directory)
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        roles = {role: RoleKeys((self.signer.public_key,)) for role in ROLES}
        return Channel.create(directory, roles, [self.signer])

    async def _push(self, name: str) -> dict[str, Any]:
        """Put the channel's files into the pool as one tree, sign the name record pointing
        at it, and let trees older than the last KEEP_TREES lapse."""
        directory = self._channel_dir(name)
        files, size = await asyncio.to_thread(_tree_size, directory)
        if files > MAX_CHANNEL_TREE_FILES or size > MAX_CHANNEL_TREE_BYTES:
            # followers refuse such a tree: say so here rather than publish what none can read
            raise ChannelError(
                f"channel {name} has grown to {files} files, {size} bytes: followers read at "
                f"most {MAX_CHANNEL_TREE_FILES} files, {MAX_CHANNEL_TREE_BYTES} bytes"
            )
        put = await self.store.put(directory)
        _, stored = await self.dht.publish_name(
            channel_label(name), str(put.cid), ttl=self.config.name_ttl
        )
        trees = [c for c in self.state.trees.get(name, []) if c != str(put.cid)] + [str(put.cid)]
        for old in trees[:-KEEP_TREES]:
            with contextlib.suppress(QizError):
                await self.store.unpin(ContentId.parse(old))
        self.state.trees[name] = trees[-KEEP_TREES:]
        self.state.unpushed.discard(name)
        self._save()
        return {"tree": str(put.cid), "record_stored_on": stored}

    def _start_upkeep(self, first: float | None = None) -> None:
        if self._upkeep is None and self.started and not self._owner.closed:
            delay = self.config.renew_every if first is None else first
            self._upkeep = self._owner.spawn(self._renew_loop(delay), "renew channels")

    async def _renew_loop(self, delay: float) -> None:
        """Renew after ``delay`` and then every ``renew_every``. A pass that left a channel
        unrenewed (the DHT or the pool not ready, a full disk) is tried again within
        ``RENEW_RETRY`` seconds, and nothing ends the loop: a channel nobody renews freezes
        for its followers a day later."""
        while True:
            await asyncio.sleep(delay)
            delay = self.config.renew_every
            try:
                if len(await self.renew()) < len(self._channel_names()):
                    delay = min(delay, RENEW_RETRY)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("deploy: renewing the published channels failed")
                delay = min(delay, RENEW_RETRY)

    async def renew(self) -> list[str]:
        """Re-sign every published channel's timestamp (and what expires soon), put its tree
        and re-publish its name record: a follower's view never goes stale while this node
        runs. The channels renewed."""
        done = []
        for name in self._channel_names():
            try:
                async with self._lock(f"publish:{name}"):
                    await self._renew_one(name)
                    await self._push(name)
                done.append(name)
            except QizError as exc:
                log.warning("deploy: cannot renew channel %s: %s", name, exc)
        return done

    async def _renew_one(self, name: str) -> None:
        """Renew with the node's own key what it can. When a role due for renewal is held by
        offline keys, only the timestamp is re-signed (if the node holds it) and the rest is
        logged: its keys' holder must publish with --signer before it expires."""
        chan = Channel(self._channel_dir(name))
        try:
            await asyncio.to_thread(chan.renew, [self.signer])
            return
        except ChannelError as exc:
            if _shortfalls(chan.root.signed.version, chan.role_keys, ["timestamp"], [self.signer]):
                log.warning("deploy: cannot renew channel %s with this node's key: %s", name, exc)
                return
            log.warning("deploy: channel %s: renewing its timestamp only: %s", name, exc)
        only = Channel(self._channel_dir(name), expiry=_TIMESTAMP_ONLY)
        await asyncio.to_thread(only.renew, [self.signer])

    # ------------------------------------------------------------------ following

    async def _resolve(self, owner: NodeId, label: str) -> tuple[bytes, str]:
        record = await self.dht.resolve_name(owner, label, use_cache=False)
        return record.raw, str(record.value)

    async def _fetch_tree(self, cid: ContentId, max_size: int) -> dict[str, bytes]:
        return await self.store.fetch_files(cid, max_size=max_size)

    async def _open_sealed(self, cid: str) -> bytes:
        from qiz.store.sealing import NotARecipient

        try:
            return await self.store.fetch_bytes(ContentId.parse(cid), max_size=MAX_DESCRIPTOR_BYTES)
        except NotARecipient:
            raise SealedToOthers(
                f"refused a sealed version: its descriptor {cid} is sealed to other nodes, not "
                f"to {self.identity.node_id}"
            ) from None

    def _follower(self, ref: ChannelRef, source: MeshSource) -> ChannelFollower:
        loop = asyncio.get_running_loop()

        def open_sealed(cid: str) -> bytes:  # called in the worker thread
            future = asyncio.run_coroutine_threadsafe(self._open_sealed(cid), loop)
            try:
                return future.result(SEALED_TIMEOUT)
            except TimeoutError:
                future.cancel()
                raise ChannelUnavailable(
                    f"channel {ref}: its sealed descriptor {cid} was not fetched within "
                    f"{SEALED_TIMEOUT:g} s"
                ) from None

        return ChannelFollower(
            self.home / TRUST_DIR / str(ref.owner) / ref.name,
            source,
            what=f"channel {ref}",
            name=ref.name,
            owner=source.owner_key,
            open_sealed=open_sealed,
        )

    async def install(self, ref: ChannelRef) -> dict[str, Any]:
        """Bring bundle NAME to the channel's newest version (TUF-verified; files checked
        against the descriptor; installed atomically) and restart it if it runs. A version
        this node rolled back from is not installed again."""
        owner = self.state.channels.get(ref.name)
        if owner is not None and owner != str(ref.owner):
            raise BundleError(
                f"bundle {ref.name} on this node comes from {owner}/deploy/{ref.name}, not "
                f"{ref}; remove it first"
            )
        async with self._lock(ref.name):
            try:
                answer = await self._install(ref)
            except QizError as exc:
                self._refreshed[ref.name] = {"at": self.clock(), "ok": False, "error": str(exc)}
                raise
        self._refreshed[ref.name] = {"at": self.clock(), "ok": True, "error": None, **answer}
        return answer

    async def _install(self, ref: ChannelRef) -> dict[str, Any]:
        source = MeshSource(ref, self._resolve, self._fetch_tree, last=self._trees.get(ref.name))
        tree = await source.load()
        # the tree is kept to save refetching it while its name record still names it, but
        # only a small one: a publisher must not make followers hold 64 MiB per channel
        if sum(len(data) for data in source.files.values()) <= MAX_CACHED_TREE_BYTES:
            self._trees[ref.name] = (tree, source.files)
        else:
            self._trees.pop(ref.name, None)
        follower = self._follower(ref, source)
        targets = await asyncio.to_thread(follower.refresh)
        versions = versions_of(targets)
        if not versions:
            raise ChannelUnavailable(f"channel {ref} has no published version yet")
        installer = self._installer(ref.name)
        if str(ref.owner) != self.state.channels.get(ref.name):
            self.state.channels[ref.name] = str(ref.owner)
            self._save()
        latest, current, bad = versions[-1], installer.current(), installer.bad()
        answer: dict[str, Any] = {
            "channel": str(ref),
            "name": ref.name,
            "latest": latest,
            "tree": str(tree),
            "installed": False,
            "version": current,
        }
        if latest in bad:
            answer["skipped"] = latest
        version = _target(versions, current, bad)
        if version is None:
            return answer
        descriptor = await asyncio.to_thread(follower.descriptor, version)
        if version not in installer.installed():
            files = await self._fetch_files(descriptor)
            await asyncio.to_thread(
                installer.install,
                version,
                files,
                {f.path: f.sha256.hex() for f in descriptor.files},
                executables={f.path for f in descriptor.files if f.executable},
                sizes={f.path: f.size for f in descriptor.files},
                switch=False,
            )
        await self._switch(ref.name, version)
        return {**answer, "version": version, "installed": True}

    async def _fetch_files(self, descriptor: Descriptor) -> dict[str, bytes]:
        total = sum(f.size for f in descriptor.files)
        if total > MAX_INSTALL_BYTES:
            raise BundleError(
                f"bundle {descriptor.name} {descriptor.version} is {total} bytes, over the "
                f"{MAX_INSTALL_BYTES} bytes a node installs"
            )
        try:
            cid = ContentId.parse(descriptor.content)
            return await self.store.fetch_files(cid, max_size=total)
        except QizError as exc:
            if isinstance(exc, AttackRefused):
                raise
            raise ChannelUnavailable(
                f"bundle {descriptor.name} {descriptor.version}: its files "
                f"{descriptor.content} cannot be fetched ({exc})"
            ) from None

    async def _switch(self, name: str, version: str) -> None:
        """Make ``version`` current; a running bundle is stopped first and started on it."""
        installer = self._installer(name)
        supervisor = self._supervisors.get(name)
        running = supervisor is not None and supervisor.status()["state"] not in IDLE
        if running:
            assert supervisor is not None
            await supervisor.stop(timeout=self.config.stop_grace + 30)
        await asyncio.to_thread(installer.switch, version)
        try:  # while nothing runs: the supervisor's own rollback never meets the prune's lock
            removed = await asyncio.to_thread(installer.prune, KEEP_INSTALLED)
        except (QizError, OSError) as exc:
            log.warning("deploy: pruning %s: %s", name, exc)
        else:
            if removed:
                log.info("deploy: %s: removed old versions %s", name, ", ".join(removed))
        if running or name in self.state.run:
            await self._run(name)

    async def follow(self, ref: ChannelRef) -> dict[str, Any]:
        """Install the channel's newest version now, run it, and keep it on the newest."""
        if ref.name not in self.state.follow and len(self.state.follow) >= MAX_FOLLOWED_CHANNELS:
            raise DeployError(f"this node follows at most {MAX_FOLLOWED_CHANNELS} channels")
        answer = await self.install(ref)
        async with self._lock(ref.name):
            self.state.follow[ref.name] = str(ref.owner)
            self.state.run.add(ref.name)
            self._save()
            try:
                await self._run(ref.name)
            finally:  # followed is followed: a run that failed now is tried at each refresh
                self._start_loop(ref)
        return {**answer, "following": True, "every": self.config.refresh_every}

    def _start_loop(self, ref: ChannelRef) -> None:
        old = self._loops.pop(ref.name, None)
        if old is not None:
            old.cancel()
        if not self._owner.closed:
            self._loops[ref.name] = self._owner.spawn(self._follow_loop(ref), f"follow {ref}")

    async def _follow_loop(self, ref: ChannelRef) -> None:
        first = ref.name not in self._refreshed  # after a restart: catch up at once
        while True:
            if not first:
                await asyncio.sleep(self.config.refresh_every)
            first = False
            try:
                await self.install(ref)
            except AttackRefused as exc:  # the channel's source is stale, broken or hostile
                log.warning("deploy: refreshing %s: %s", ref, exc)
            except QizError as exc:
                log.info("deploy: refreshing %s: %s", ref, exc)
            except Exception:  # a surprise in one refresh never ends the following
                log.exception("deploy: refreshing %s", ref)

    async def unfollow(self, name: str) -> dict[str, Any]:
        """Stop following channel NAME (the installed version stays, and runs if it ran)."""
        check_channel_name(name)
        if name not in self.state.follow:
            raise UnknownBundle(f"this node does not follow a channel {name}")
        owner = self.state.follow.pop(name)
        self._save()
        self._trees.pop(name, None)
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.cancel()
        return {"name": name, "channel": f"{owner}/deploy/{name}", "following": False}

    # ------------------------------------------------------------------ running

    def _spec_for(self, name: str) -> Callable[[str], BundleSpec]:
        def spec_for(version: str) -> BundleSpec:
            return load_bundle(self._installer(name).path(version))

        return spec_for

    async def _run(self, name: str) -> dict[str, Any]:
        installer = self._known(name)
        version = installer.current()
        assert version is not None
        spec = await asyncio.to_thread(load_bundle, installer.path(version))
        if spec.job is not None:
            return await self._submit(name, version, installer.path(version) / spec.job)
        supervisor = self._supervisors.get(name)
        if supervisor is None:
            supervisor = self._supervisors[name] = Supervisor(
                installer, self._spec_for(name), stop_grace=self.config.stop_grace
            )
        if supervisor.status()["state"] not in IDLE:
            return supervisor.status()
        await supervisor.start()
        await supervisor.wait_for(lambda s: s["state"] != "stopped", timeout=10)
        return supervisor.status()

    async def _submit(self, name: str, version: str, path: Path) -> dict[str, Any]:
        """A quantum container: its version's job spec (a JSON object, as ``qiz job submit``
        takes) is signed by this node and submitted to the mesh, once per version (the job id
        is kept, so a restart or another run does not submit it again)."""
        done = self.state.jobs.get(name, {}).get(version)
        if done is not None:
            return {"state": "submitted", "job": done}
        if self.submit_job is None:
            raise DeployError(
                f"bundle {name} {version} is a quantum container: this node runs no compute "
                "service to submit its job to"
            )
        try:
            raw = await asyncio.to_thread(read_bounded, path, MAX_JOB_SPEC_BYTES, "job spec")
            document = json.loads(raw)
        except FileTooLarge:
            raise BundleError(
                f"bundle {name} {version}: its job spec is over {MAX_JOB_SPEC_BYTES} bytes"
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(
                f"bundle {name} {version}: its job spec is unreadable: {exc}"
            ) from None
        if not isinstance(document, dict):
            raise BundleError(f"bundle {name} {version}: its job spec is not a JSON object")
        job = await self.submit_job(document)
        self.state.jobs.setdefault(name, {})[version] = job
        self._save()
        log.info("deploy: %s %s submitted job %s", name, version, job)
        return {"state": "submitted", "job": job}

    async def run(self, name: str) -> dict[str, Any]:
        """Run bundle NAME's current version under supervision (again after a restart)."""
        async with self._lock(name):
            status = await self._run(name)
            self.state.run.add(name)
            self._save()
        return self._status(name, status)

    async def stop(self, name: str) -> dict[str, Any]:
        """Stop bundle NAME (and keep it stopped across restarts)."""
        installer = self._known(name)
        async with self._lock(name):
            self.state.run.discard(name)
            self._save()
            supervisor = self._supervisors.get(name)
            if supervisor is not None:
                await supervisor.stop(timeout=self.config.stop_grace + 30)
        return self._status(name, self._supervisor_status(installer))

    async def rollback(self, name: str) -> dict[str, Any]:
        """Switch bundle NAME back to its previous good version (the one left is marked bad,
        so following does not bring it back); a running bundle is restarted on it."""
        installer = self._known(name)
        async with self._lock(name):
            supervisor = self._supervisors.get(name)
            running = supervisor is not None and supervisor.status()["state"] not in IDLE
            if running:
                assert supervisor is not None
                await supervisor.stop(timeout=self.config.stop_grace + 30)
            leaving = installer.current()
            try:
                version = await asyncio.to_thread(installer.rollback)
            finally:
                if running or name in self.state.run:
                    await self._run(name)
        return {"name": name, "from": leaving, "to": version, **self._status(name)}

    # ------------------------------------------------------------------ reading

    def _supervisor_status(self, installer: Installer) -> dict[str, Any]:
        supervisor = self._supervisors.get(installer.name)
        if supervisor is not None:
            return supervisor.status()
        return {"name": installer.name, "state": "stopped", "restarts": 0, "rolled_back": []}

    def _status(self, name: str, supervisor: dict[str, Any] | None = None) -> dict[str, Any]:
        installer = self._installer(name)
        owner = self.state.channels.get(name)
        sup = supervisor if supervisor is not None else self._supervisor_status(installer)
        job = self.state.jobs.get(name, {}).get(installer.current() or "")
        if job is not None and name not in self._supervisors:
            sup = {**sup, "state": "submitted"}  # a quantum container: its job runs on the mesh
        return {
            "name": name,
            "channel": f"{owner}/deploy/{name}" if owner else None,
            "following": name in self.state.follow,
            "keep_running": name in self.state.run,
            "current": installer.current(),
            "previous": installer.previous(),
            "installed": installer.installed(),
            "bad": sorted(installer.bad()),
            "state": sup.get("state"),
            "pid": sup.get("pid"),
            "restarts": sup.get("restarts", 0),
            "reason": sup.get("reason"),
            "rolled_back": list(sup.get("rolled_back") or []),
            "last_refresh": self._refreshed.get(name),
            "job": job,
        }

    def status(self, name: str) -> dict[str, Any]:
        """Bundle NAME on this node: versions, supervisor state, the last refresh."""
        self._known(name)
        return self._status(name)

    def ls(self) -> dict[str, Any]:
        """Every bundle installed here, and every channel this node publishes."""
        names = []
        if self.root.is_dir():
            names = sorted(
                entry.name
                for entry in os.scandir(self.root)
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
            )
        bundles = [self._status(n) for n in names if self._installer(n).current() is not None]
        channels = []
        for name in self._channel_names():
            try:
                versions = Channel(self._channel_dir(name)).versions()
            except QizError as exc:
                versions, error = [], str(exc)
            else:
                error = None
            channels.append(
                {
                    "name": name,
                    "channel": str(ChannelRef(self.identity.node_id, name)),
                    "versions": versions,
                    "tree": (self.state.trees.get(name) or [None])[-1],
                    "error": error,
                }
            )
        return {"bundles": bundles, "channels": channels}

    def logs(self, name: str, max_bytes: int = MAX_LOG_TAIL_BYTES) -> dict[str, Any]:
        """The end of bundle NAME's log (its output and the supervisor's [qiz] lines)."""
        installer = self._known(name)
        path = installer.dirs.logs / LOG_NAME
        size = min(max(0, max_bytes), MAX_LOG_TAIL_BYTES)
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                end = handle.tell()
                handle.seek(max(0, end - size))
                data = handle.read(size)
        except FileNotFoundError:
            data, end = b"", 0
        return {
            "name": name,
            "log": str(path),
            "size": end,
            "text": data.decode("utf-8", "replace"),
        }


def _tree_size(directory: Path) -> tuple[int, int]:
    """(files, bytes) of a channel's directory, as its store tree will hold them."""
    files = size = 0
    for path in directory.rglob("*"):
        if path.is_file():
            files += 1
            size += path.stat().st_size
    return files, size
