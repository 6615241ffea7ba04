"""The channel's TUF chain, attacked the way the TUF specification lists (issue 17, item 7).

Every test plays a real publisher (qiz.deploy.channel, real composite ML-DSA-65+Ed25519 keys)
and a real follower (python-tuf's ngclient through qiz.deploy.updater) over a directory source
that the attacker controls: it rewrites, replays, pads or re-signs files in that directory with
the Metadata API, and the follower must refuse with the one-line error naming the attack.
Each test is named after the attack it plays; the scenarios follow python-tuf's own
tests/test_updater_top_level_update.py and tests/test_updater_key_rotations.py.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature
from tuf.api.metadata import Metadata, MetaFile, Root, TargetFile
from tuf.api.serialization.json import JSONSerializer

from qiz import QizError
from qiz.crypto.composite import CompositeSigningKey
from qiz.crypto.errors import DecryptionFailed
from qiz.crypto.ids import ContentId
from qiz.crypto.seal import open_sealed, seal
from qiz.crypto.xwing import XWingPrivateKey
from qiz.deploy import limits
from qiz.deploy.channel import Channel, ChannelError, Expiry, RoleKeys
from qiz.deploy.descriptor import Descriptor, FileEntry, seal_pointer
from qiz.deploy.errors import (
    ArbitrarySoftware,
    AttackRefused,
    EndlessDataRefused,
    FreezeRefused,
    MixAndMatchRefused,
    RollbackRefused,
    SealedToOthers,
    TamperedTarget,
    ThresholdNotMet,
)
from qiz.deploy.signing import (
    COMPOSITE_KEYTYPE,
    COMPOSITE_SCHEME,
    CompositeKey,
    CompositeSigner,
    SlhDsaSigner,
)
from qiz.deploy.updater import ChannelFollower, DirectorySource

ROLES = ("root", "targets", "snapshot", "timestamp")


def new_signer() -> CompositeSigner:
    return CompositeSigner(CompositeSigningKey.generate())


def descriptor(version: str, name: str = "app") -> Descriptor:
    manifest = f'name = "{name}"\nversion = "{version}"\ncommand = ["python3", "app.py"]\n'
    app = f"print('hello from {version}')\n".encode()
    files = sorted(
        [
            FileEntry("app.py", len(app), hashlib.sha256(app).digest()),
            FileEntry("qiz-bundle.toml", len(manifest), hashlib.sha256(manifest.encode()).digest()),
        ],
        key=lambda f: f.path,
    )
    return Descriptor(name, version, manifest, str(ContentId.of(app)), tuple(files))


@dataclass
class Publisher:
    """A channel in ``directory`` and every key its roles hold (one per role by default)."""

    directory: Path
    signers: dict[str, list[CompositeSigner]]
    channel: Channel

    @property
    def all_signers(self) -> list[CompositeSigner]:
        return [s for group in self.signers.values() for s in group]

    def publish(self, version: str) -> None:
        self.channel.publish(version, descriptor(version).to_bytes(), self.all_signers)

    def path(self, name: str) -> Path:
        return self.directory / "metadata" / name

    def read(self, name: str) -> Metadata:
        return Metadata.from_bytes(self.path(name).read_bytes())

    def write(self, name: str, md: Metadata) -> None:
        self.path(name).write_bytes(md.to_bytes(JSONSerializer(compact=True)))

    def current(self, role: str) -> tuple[str, Metadata]:
        """The file name and metadata of ``role`` as the channel serves it now."""
        ts = self.read("timestamp.json")
        if role == "timestamp":
            return "timestamp.json", ts
        snap_name = f"{ts.signed.snapshot_meta.version}.snapshot.json"
        if role == "snapshot":
            return snap_name, self.read(snap_name)
        snap = self.read(snap_name)
        name = f"{snap.signed.meta['targets.json'].version}.targets.json"
        return name, self.read(name)

    def root_bytes(self) -> bytes:
        return self.path("1.root.json").read_bytes()


def make_publisher(
    directory: Path,
    *,
    n: dict[str, int] | None = None,
    k: dict[str, int] | None = None,
    expiry: Expiry | None = None,
    clock=None,
) -> Publisher:
    n = n or {}
    k = k or {}
    signers = {role: [new_signer() for _ in range(n.get(role, 1))] for role in ROLES}
    roles = {
        role: RoleKeys(tuple(s.public_key for s in signers[role]), k.get(role, 1)) for role in ROLES
    }
    kwargs = {"expiry": expiry}
    if clock is not None:
        kwargs["clock"] = clock
    channel = Channel.create(directory, roles, [s for g in signers.values() for s in g], **kwargs)
    return Publisher(directory, signers, channel)


@pytest.fixture
def pub(tmp_path: Path) -> Publisher:
    p = make_publisher(tmp_path / "channel")
    p.publish("1.0.0")
    return p


def follower(tmp_path: Path, pub: Publisher, node: str = "node", **kwargs) -> ChannelFollower:
    """A fresh follower object each time, on persistent state (as a node restarting)."""
    kwargs.setdefault("trusted_root", pub.root_bytes())
    return ChannelFollower(tmp_path / node, DirectorySource(pub.directory), **kwargs)


def resign(md: Metadata, *signers) -> Metadata:
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return md


def metafile(md: Metadata) -> MetaFile:
    data = md.to_bytes(JSONSerializer(compact=True))
    return MetaFile(md.signed.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def point_timestamp_at(pub: Publisher, snapshot: Metadata, version: int | None = None) -> None:
    """What a holder of the timestamp key can do: a new timestamp naming ``snapshot``."""
    _, ts = pub.current("timestamp")
    ts.signed.version = version or ts.signed.version + 1
    ts.signed.snapshot_meta = metafile(snapshot)
    pub.write("timestamp.json", resign(ts, *pub.signers["timestamp"]))


def point_snapshot_at(pub: Publisher, targets: Metadata) -> Metadata:
    """What a holder of the snapshot and timestamp keys can do."""
    _, snap = pub.current("snapshot")
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = metafile(targets)
    resign(snap, *pub.signers["snapshot"])
    pub.write(f"{snap.signed.version}.snapshot.json", snap)
    point_timestamp_at(pub, snap)
    return snap


def refused(follow: ChannelFollower, kind: type[AttackRefused], *words: str) -> str:
    with pytest.raises(kind) as caught:
        follow.latest()
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- the happy path ------------------------------------------------------------------------------


def test_a_follower_gets_the_newest_version_and_then_each_new_one(tmp_path, pub):
    assert follower(tmp_path, pub).latest() == descriptor("1.0.0")
    pub.publish("1.1.0")
    pub.publish("2.0.0")
    follow = follower(tmp_path, pub)
    assert follow.latest() == descriptor("2.0.0")
    assert follow.versions() == ["1.0.0", "1.1.0", "2.0.0"]
    assert follow.descriptor("1.1.0") == descriptor("1.1.0")


def test_trusted_state_survives_a_restart_without_the_root_given_again(tmp_path, pub):
    follower(tmp_path, pub).latest()
    pub.publish("1.1.0")
    again = ChannelFollower(tmp_path / "node", DirectorySource(pub.directory))
    assert again.latest().version == "1.1.0"
    assert (tmp_path / "node" / "metadata" / "root_history" / "1.root.json").exists()


def test_the_first_root_is_accepted_from_the_source_when_the_owner_signed_it(tmp_path):
    owner = CompositeSigningKey.generate()
    signer = CompositeSigner(owner)
    roles = {role: RoleKeys((signer.public_key,)) for role in ROLES}
    channel = Channel.create(tmp_path / "channel", roles, [signer])
    channel.publish("1.0.0", descriptor("1.0.0").to_bytes(), [signer])
    source = DirectorySource(tmp_path / "channel")
    follow = ChannelFollower(tmp_path / "node", source, owner=owner.public_key())
    assert follow.latest().version == "1.0.0"


def test_arbitrary_software_first_root_not_signed_by_the_owner(tmp_path, pub):
    stranger = CompositeSigningKey.generate()
    follow = ChannelFollower(
        tmp_path / "node", DirectorySource(pub.directory), owner=stranger.public_key()
    )
    refused(follow, ArbitrarySoftware, "arbitrary software refused", "owner")


def test_a_follower_that_lost_root_json_starts_from_its_root_history(tmp_path, pub):
    """python-tuf replaces root.json by unlinking and relinking it: a crash in between must not
    send the follower back to trust on first use (which needs a root or the owner again)."""
    follower(tmp_path, pub).latest()
    metadata = tmp_path / "node" / "metadata"
    assert (metadata / "root_history" / "1.root.json").exists()
    (metadata / "root.json").unlink()
    pub.publish("1.1.0")
    again = ChannelFollower(tmp_path / "node", DirectorySource(pub.directory))  # no root given
    assert again.latest().version == "1.1.0"
    assert (metadata / "root.json").exists()


def test_arbitrary_software_first_root_filing_a_key_under_the_owners_id(tmp_path):
    """A root whose root role names the owner's key id while the key filed under that id is
    the attacker's (and the attacker signed): refused, since a key id must be the hash of the
    key it names, and the owner's own key checks the signature."""
    from tuf.api.metadata import Metadata as TufMetadata

    owner = CompositeSigningKey.generate()
    attacker = new_signer()
    roles = {role: RoleKeys((attacker.public_key,)) for role in ROLES}
    channel = Channel.create(tmp_path / "channel", roles, [attacker])
    channel.publish("6.6.6", descriptor("6.6.6").to_bytes(), [attacker])
    path = tmp_path / "channel" / "metadata" / "1.root.json"
    md = TufMetadata[Root].from_bytes(path.read_bytes())
    owner_id = CompositeKey.of(owner.public_key()).keyid
    forged = attacker.public_key
    md.signed.keys[owner_id] = CompositeKey(owner_id, forged.keytype, forged.scheme, forged.keyval)
    md.signed.roles["root"].keyids = [owner_id]
    signature = attacker.sign(md.signed_bytes)
    md.signatures.clear()
    md.signatures[owner_id] = type(signature)(owner_id, signature.signature)
    path.write_bytes(md.to_bytes(JSONSerializer(compact=True)))
    follow = ChannelFollower(
        tmp_path / "node", DirectorySource(tmp_path / "channel"), owner=owner.public_key()
    )
    with pytest.raises(QizError) as caught:
        follow.latest()
    assert "\n" not in str(caught.value) and "refused" in str(caught.value)
    assert not (tmp_path / "node" / "metadata" / "root.json").exists()


def test_publisher_refuses_to_sign_without_a_threshold_of_keys(tmp_path):
    pub = make_publisher(tmp_path / "channel", n={"targets": 3}, k={"targets": 2})
    with pytest.raises(
        ChannelError, match="needs 2 of its targets keys and the signers given hold 1"
    ):
        pub.channel.publish("1.0.0", descriptor("1.0.0").to_bytes(), [pub.signers["targets"][0]])


# --- arbitrary software: bad signature, wrong key ------------------------------------------------


@pytest.mark.parametrize("half", ["ml-dsa-65", "ed25519"])
def test_arbitrary_software_bad_signature(tmp_path, pub, half):
    """A composite signature is valid only if both halves verify: flipping one bit in either
    half of the timestamp's signature is refused."""
    name, ts = pub.current("timestamp")
    sig = next(iter(ts.signatures.values()))
    raw = bytearray(bytes.fromhex(sig.signature))
    raw[0 if half == "ml-dsa-65" else -1] ^= 1
    ts.signatures[sig.keyid] = Signature(sig.keyid, raw.hex())
    pub.write(name, ts)
    refused(follower(tmp_path, pub), ArbitrarySoftware, "arbitrary software refused", "timestamp")


def test_arbitrary_software_bad_signature_on_changed_targets(tmp_path, pub):
    """Targets metadata edited after signing (an extra version slipped in), the hashes above it
    updated by holders of the snapshot and timestamp keys: its signature no longer covers it."""
    follower(tmp_path, pub).latest()
    _, targets = pub.current("targets")
    targets.signed.version += 1
    evil = descriptor("6.6.6").to_bytes()
    targets.signed.targets["6.6.6.qizd"] = TargetFile.from_data("6.6.6.qizd", evil, ["sha256"])
    pub.write(f"{targets.signed.version}.targets.json", targets)  # old signatures kept
    point_snapshot_at(pub, targets)
    refused(follower(tmp_path, pub), ArbitrarySoftware, "arbitrary software refused", "targets")


def test_arbitrary_software_wrong_key(tmp_path, pub):
    """A whole channel state signed by an attacker's own (valid) keys: refused at the first
    file, since the trusted root names none of them."""
    follower(tmp_path, pub).latest()
    attacker = new_signer()
    for role in ("targets", "snapshot", "timestamp"):
        name, md = pub.current(role)
        md.signed.version += 1
        pub.write(
            name if role == "timestamp" else f"{md.signed.version}.{role}.json",
            resign(md, attacker),
        )
    refused(follower(tmp_path, pub), ArbitrarySoftware, "arbitrary software refused", "timestamp")


def test_arbitrary_software_wrong_key_under_a_trusted_keyid(tmp_path, pub):
    """An attacker's signature filed under the trusted key's id does not verify either."""
    name, ts = pub.current("timestamp")
    attacker = new_signer()
    ts.signed.version += 1
    real_id = next(iter(ts.signatures))
    forged = attacker.sign(ts.signed_bytes)
    ts.signatures.clear()
    ts.signatures[real_id] = Signature(real_id, forged.signature)
    pub.write(name, ts)
    refused(follower(tmp_path, pub), ArbitrarySoftware, "timestamp")


# --- threshold not met ---------------------------------------------------------------------------


def test_threshold_not_met(tmp_path):
    """targets is 2-of-3: one stolen targets key (with snapshot and timestamp keys) is not
    enough to publish."""
    pub = make_publisher(tmp_path / "channel", n={"targets": 3}, k={"targets": 2})
    pub.publish("1.0.0")
    follower(tmp_path, pub).latest()
    _, targets = pub.current("targets")
    targets.signed.version += 1
    evil = descriptor("6.6.6").to_bytes()
    targets.signed.targets["6.6.6.qizd"] = TargetFile.from_data("6.6.6.qizd", evil, ["sha256"])
    resign(targets, pub.signers["targets"][0])
    pub.write(f"{targets.signed.version}.targets.json", targets)
    point_snapshot_at(pub, targets)
    refused(follower(tmp_path, pub), ThresholdNotMet, "threshold not met", "targets", "1 of the 2")


def test_threshold_met_by_any_k_of_n(tmp_path):
    pub = make_publisher(tmp_path / "channel", n={"targets": 3}, k={"targets": 2})
    keys = pub.signers["targets"]
    for version, pair in (("1", keys[:2]), ("2", keys[1:]), ("3", [keys[0], keys[2]])):
        others = [s for role in ("root", "snapshot", "timestamp") for s in pub.signers[role]]
        pub.channel.publish(version, descriptor(version).to_bytes(), [*pair, *others])
        assert follower(tmp_path, pub).latest().version == version


# --- rollback ------------------------------------------------------------------------------------


def test_rollback_to_an_older_bundle_version(tmp_path, pub):
    """The source replays the whole channel as it was at 1.0.0 after the follower saw 2.0.0."""
    old = tmp_path / "old-channel"
    shutil.copytree(pub.directory, old)
    pub.publish("2.0.0")
    assert follower(tmp_path, pub).latest().version == "2.0.0"
    replay = ChannelFollower(tmp_path / "node", DirectorySource(old))
    with pytest.raises(RollbackRefused, match="rollback attack refused") as caught:
        replay.latest()
    assert "timestamp" in str(caught.value)


def test_rollback_older_timestamp(tmp_path, pub):
    saved = pub.path("timestamp.json").read_bytes()
    pub.publish("1.1.0")
    follower(tmp_path, pub).latest()
    pub.path("timestamp.json").write_bytes(saved)
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "timestamp")


def test_rollback_older_snapshot(tmp_path, pub):
    """A new timestamp (its key stolen) naming an older snapshot version."""
    _, old_snapshot = pub.current("snapshot")
    pub.publish("1.1.0")
    follower(tmp_path, pub).latest()
    point_timestamp_at(pub, old_snapshot)
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "snapshot")


def test_rollback_older_targets(tmp_path, pub):
    """A new snapshot (snapshot and timestamp keys stolen) naming an older targets version."""
    _, old_targets = pub.current("targets")
    pub.publish("1.1.0")
    follower(tmp_path, pub).latest()
    point_snapshot_at(pub, old_targets)
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "targets")


def test_rollback_older_root(tmp_path, pub):
    """A source serving root v1 where root v2 is asked for."""
    pub.channel.rotate(pub.channel.role_keys, pub.all_signers)
    pub.path("2.root.json").write_bytes(pub.path("1.root.json").read_bytes())
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "root")


# --- indefinite freeze ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_indefinite_freeze_expired_metadata(tmp_path, role):
    """Each role published already expired (as a source replaying a stale state would serve
    it once time passes): refused."""
    expiry = Expiry(**{role: timedelta(seconds=-1)})
    pub = make_publisher(tmp_path / "channel", expiry=expiry)
    pub.publish("1.0.0")
    refused(follower(tmp_path, pub), FreezeRefused, "freeze attack refused")


def test_indefinite_freeze_replay_of_a_state_signed_in_the_past(tmp_path):
    """A publisher clock two days back: everything it signed with a 1-day timestamp is stale."""
    past = datetime.now(UTC) - timedelta(days=2)
    pub = make_publisher(tmp_path / "channel", clock=lambda: past)
    pub.publish("1.0.0")
    refused(follower(tmp_path, pub), FreezeRefused, "freeze attack refused", "timestamp")
    pub.channel.clock = lambda: datetime.now(UTC)
    pub.channel.renew(pub.all_signers)
    assert follower(tmp_path, pub).latest().version == "1.0.0"


# --- mix-and-match -------------------------------------------------------------------------------


def test_mix_and_match_targets_not_matching_snapshot(tmp_path, pub):
    """Validly signed targets of the same version but other content than the snapshot pins."""
    pub.publish("1.1.0")
    name, targets = pub.current("targets")
    del targets.signed.targets["1.1.0.qizd"]
    pub.write(name, resign(targets, *pub.signers["targets"]))
    refused(follower(tmp_path, pub), MixAndMatchRefused, "mix-and-match attack refused", "targets")


def test_mix_and_match_targets_of_another_version(tmp_path, pub):
    """The targets file of an older state served where the snapshot names the newer one."""
    old_name, _ = pub.current("targets")
    old = pub.path(old_name).read_bytes()
    pub.publish("1.1.0")
    name, _ = pub.current("targets")
    pub.path(name).write_bytes(old)
    refused(follower(tmp_path, pub), MixAndMatchRefused, "mix-and-match attack refused")


def test_mix_and_match_snapshot_not_matching_timestamp(tmp_path, pub):
    pub.publish("1.1.0")
    name, snap = pub.current("snapshot")
    snap.signed.expires += timedelta(seconds=1)
    pub.write(name, resign(snap, *pub.signers["snapshot"]))
    refused(follower(tmp_path, pub), MixAndMatchRefused, "mix-and-match attack refused", "snapshot")


def test_mix_and_match_targets_version_not_the_one_snapshot_names(tmp_path, pub):
    """Snapshot names targets v3 (no hashes pinned); the source serves a signed v2 as 3."""
    pub.publish("1.1.0")
    name, targets = pub.current("targets")
    _, snap = pub.current("snapshot")
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = MetaFile(targets.signed.version + 1)
    pub.write(f"{snap.signed.version}.snapshot.json", resign(snap, *pub.signers["snapshot"]))
    point_timestamp_at(pub, snap)
    pub.path(f"{targets.signed.version + 1}.targets.json").write_bytes(pub.path(name).read_bytes())
    refused(follower(tmp_path, pub), MixAndMatchRefused, "mix-and-match attack refused", "targets")


# --- endless data --------------------------------------------------------------------------------


def test_endless_data_timestamp(tmp_path, pub):
    with pub.path("timestamp.json").open("ab") as handle:
        handle.write(b" " * (limits.MAX_TIMESTAMP_BYTES + 1))
    refused(follower(tmp_path, pub), EndlessDataRefused, "endless data attack refused", "timestamp")


def test_endless_data_snapshot_longer_than_the_timestamp_says(tmp_path, pub):
    name, _ = pub.current("snapshot")
    with pub.path(name).open("ab") as handle:
        handle.write(b" " * 1000)
    refused(follower(tmp_path, pub), EndlessDataRefused, "endless data attack refused", "snapshot")


def test_endless_data_descriptor_longer_than_targets_says(tmp_path, pub):
    target = next((pub.directory / "targets").iterdir())
    with target.open("ab") as handle:
        handle.write(b"\0" * 4096)
    refused(follower(tmp_path, pub), EndlessDataRefused, "endless data attack refused")


def test_endless_data_root(tmp_path, pub):
    pub.path("2.root.json").write_bytes(b" " * (limits.MAX_ROOT_BYTES + 1))
    refused(follower(tmp_path, pub), EndlessDataRefused, "endless data attack refused")


def test_tampered_descriptor_same_length(tmp_path, pub):
    target = next((pub.directory / "targets").iterdir())
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    refused(follower(tmp_path, pub), TamperedTarget, "does not hash")


# --- fast-forward attacks and recovery by key rotation -------------------------------------------


def publisher_continues_above(pub: Publisher, *roles: str) -> None:
    """After an attack the publisher's own timestamp and snapshot go on above the versions the
    attacker signed (as they would once it reads its channel back); its targets stay honest."""
    for role in roles:
        _, md = pub.current(role)
        getattr(pub.channel, role).signed.version = md.signed.version


def test_fast_forward_recovery_after_timestamp_key_rotation(tmp_path, pub):
    """A stolen timestamp key signs version 99999: the follower takes it and every honest
    timestamp after looks like a rollback, until the publisher rotates the timestamp key."""
    _, snap = pub.current("snapshot")
    point_timestamp_at(pub, snap, version=99999)
    assert follower(tmp_path, pub).latest().version == "1.0.0"
    pub.publish("1.1.0")  # honest timestamp: a low version again
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused")

    roles = dict(pub.channel.role_keys)
    fresh = new_signer()
    roles["timestamp"] = RoleKeys((fresh.public_key,))
    pub.channel.rotate(roles, [*pub.all_signers, fresh])
    pub.signers["timestamp"] = [fresh]
    assert follower(tmp_path, pub).latest().version == "1.1.0"


def test_fast_forward_recovery_after_snapshot_key_rotation(tmp_path, pub):
    _, targets = pub.current("targets")
    _, snap = pub.current("snapshot")
    snap.signed.version = 99999
    snap.signed.meta["targets.json"] = metafile(targets)
    pub.write("99999.snapshot.json", resign(snap, *pub.signers["snapshot"]))
    point_timestamp_at(pub, snap)
    assert follower(tmp_path, pub).latest().version == "1.0.0"
    publisher_continues_above(pub, "timestamp")
    pub.publish("1.1.0")
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "snapshot")

    roles = dict(pub.channel.role_keys)
    fresh = {role: new_signer() for role in ("snapshot", "timestamp")}
    for role, signer in fresh.items():
        roles[role] = RoleKeys((signer.public_key,))
    pub.channel.rotate(roles, [*pub.all_signers, *fresh.values()])
    for role, signer in fresh.items():
        pub.signers[role] = [signer]
    assert follower(tmp_path, pub).latest().version == "1.1.0"


def test_fast_forward_recovery_after_targets_key_rotation(tmp_path, pub):
    _, targets = pub.current("targets")
    targets.signed.version = 99999
    pub.write("99999.targets.json", resign(targets, *pub.signers["targets"]))
    point_snapshot_at(pub, targets)
    assert follower(tmp_path, pub).latest().version == "1.0.0"
    publisher_continues_above(pub, "timestamp", "snapshot")
    pub.publish("1.1.0")
    refused(follower(tmp_path, pub), RollbackRefused, "rollback attack refused", "targets")

    roles = dict(pub.channel.role_keys)
    fresh = {role: new_signer() for role in ("targets", "snapshot", "timestamp")}
    for role, signer in fresh.items():
        roles[role] = RoleKeys((signer.public_key,))
    pub.channel.rotate(roles, [*pub.all_signers, *fresh.values()])
    for role, signer in fresh.items():
        pub.signers[role] = [signer]
    assert follower(tmp_path, pub).latest().version == "1.1.0"


# --- root key rotation (k-of-n), after python-tuf's test_updater_key_rotations -------------------


def rotate_root(pub: Publisher, keys: list[CompositeSigner], threshold: int, sign_with) -> None:
    """Root v+1 with ``keys``/``threshold``, signed by exactly ``sign_with`` (may be short)."""
    root_md = pub.channel.root
    new = Root.from_dict(root_md.signed.to_dict())
    new.version += 1
    for keyid in list(new.roles["root"].keyids):
        new.revoke_key(keyid, "root")
    for signer in keys:
        new.add_key(signer.public_key, "root")
    new.roles["root"].threshold = threshold
    md = Metadata(new)
    for signer in sign_with:
        md.sign(signer, append=True)
    pub.write(f"{new.version}.root.json", md)


def test_root_rotation_3_of_5_one_key_rotated(tmp_path):
    pub = make_publisher(tmp_path / "channel", n={"root": 5}, k={"root": 3})
    pub.publish("1.0.0")
    follower(tmp_path, pub).latest()
    old = pub.signers["root"]
    fresh = new_signer()
    new_keys = [old[0], old[1], old[3], old[4], fresh]
    rotate_root(pub, new_keys, 3, [old[0], old[4], old[1]])
    follow = follower(tmp_path, pub)
    follow.latest()
    assert (tmp_path / "node" / "metadata" / "root_history" / "2.root.json").exists()


@pytest.mark.parametrize(
    "case", ["not signed by 3 new keys", "not signed by 3 old keys", "new key only"]
)
def test_root_rotation_refused_without_both_thresholds(tmp_path, case):
    pub = make_publisher(tmp_path / "channel", n={"root": 5}, k={"root": 3})
    pub.publish("1.0.0")
    follower(tmp_path, pub).latest()
    old = pub.signers["root"]
    fresh = new_signer()
    new_keys = [old[0], old[1], old[3], old[4], fresh]
    sign_with = {
        "not signed by 3 new keys": [old[0], old[2], old[4]],
        "not signed by 3 old keys": [old[0], old[4], fresh],
        "new key only": [fresh],
    }[case]
    rotate_root(pub, new_keys, 3, sign_with)
    message = refused(follower(tmp_path, pub), AttackRefused, "root")
    assert "threshold not met" in message or "arbitrary software" in message


def test_root_rotation_by_the_publisher_moves_every_role_to_new_keys(tmp_path, pub):
    follower(tmp_path, pub).latest()
    fresh = {role: new_signer() for role in ROLES}
    pub.channel.rotate(
        {role: RoleKeys((s.public_key,)) for role, s in fresh.items()},
        [*pub.all_signers, *fresh.values()],
    )
    pub.signers = {role: [s] for role, s in fresh.items()}
    pub.publish("2.0.0")
    assert follower(tmp_path, pub).latest().version == "2.0.0"
    # the old keys are worthless now: a timestamp signed by the old timestamp key is refused
    stale = make_publisher(tmp_path / "unused")  # only for a stranger-signed timestamp
    name, ts = pub.current("timestamp")
    ts.signed.version += 1
    pub.write(name, resign(ts, *stale.signers["timestamp"]))
    refused(follower(tmp_path, pub), ArbitrarySoftware, "timestamp")


def test_rotation_refused_by_the_publisher_without_the_old_threshold(tmp_path, pub):
    fresh = {role: new_signer() for role in ROLES}
    with pytest.raises(ChannelError, match="cannot sign root metadata: root v1 needs 1"):
        pub.channel.rotate(
            {role: RoleKeys((s.public_key,)) for role, s in fresh.items()}, list(fresh.values())
        )


# --- SLH-DSA for the long-lived root key ---------------------------------------------------------


def test_slh_dsa_root_key_with_composite_online_keys(tmp_path):
    """Root is 2-of-2: an SLH-DSA key (kept offline, hash-based) and the owner's composite key;
    the online roles use composite keys. python-tuf verifies both through the registry."""
    slh = SlhDsaSigner.generate()
    owner = new_signer()
    online = {role: new_signer() for role in ("targets", "snapshot", "timestamp")}
    roles = {role: RoleKeys((s.public_key,)) for role, s in online.items()}
    roles["root"] = RoleKeys((slh.public_key, owner.public_key), 2)
    channel = Channel.create(tmp_path / "channel", roles, [slh, owner, *online.values()])
    channel.publish("1.0.0", descriptor("1.0.0").to_bytes(), list(online.values()))
    root = Metadata.from_bytes((tmp_path / "channel/metadata/1.root.json").read_bytes())
    assert {k.keytype for k in root.signed.keys.values()} == {"qiz-slh-dsa", "qiz-composite"}
    follow = ChannelFollower(
        tmp_path / "node", DirectorySource(tmp_path / "channel"), owner=owner._key.public_key()
    )
    assert follow.latest().version == "1.0.0"
    # the composite key alone cannot rotate root
    with pytest.raises(ChannelError, match="needs 2"):
        channel.rotate(channel.role_keys, [owner, *online.values()])


# --- sealed bundles ------------------------------------------------------------------------------


class SealedStore:
    """Sealed store content as the storage pool would hand it: bytes sealed (HPKE X-Wing) to a
    recipient, opened with a node's own X-Wing key."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}

    def put_sealed(self, plaintext: bytes, recipient: XWingPrivateKey) -> str:
        sealed = seal(plaintext, recipient.public_key())
        cid = str(ContentId.of(sealed))
        self.contents[cid] = sealed
        return cid

    def opener(self, key: XWingPrivateKey):
        def open_content(cid: str) -> bytes:
            try:
                return open_sealed(self.contents[cid], key)
            except DecryptionFailed:
                raise SealedToOthers(
                    f"refused {cid[:16]}...: the bundle is sealed to other nodes"
                ) from None

        return open_content


def test_bundle_sealed_to_someone_else(tmp_path, pub):
    store = SealedStore()
    recipient, other = XWingPrivateKey.generate(), XWingPrivateKey.generate()
    desc = descriptor("2.0.0")
    cid = store.put_sealed(desc.to_bytes(), recipient)
    pub.channel.publish("2.0.0", seal_pointer(cid, desc).to_bytes(), pub.all_signers)

    mine = follower(tmp_path, pub, "recipient", open_sealed=store.opener(recipient))
    assert mine.latest() == desc
    theirs = follower(tmp_path, pub, "other", open_sealed=store.opener(other))
    refused(theirs, SealedToOthers, "sealed to other nodes")
    # the metadata and the pointer reveal no file name, hash or manifest
    served = b"".join(p.read_bytes() for p in pub.directory.rglob("*") if p.is_file())
    assert b"app.py" in served  # version 1.0.0 was published in the clear
    pointer = next(p for p in (pub.directory / "targets").iterdir() if "2.0.0" in p.name)
    assert b"app.py" not in pointer.read_bytes() and desc.manifest.encode() not in served


def test_sealed_descriptor_swapped_for_another_is_refused(tmp_path, pub):
    store = SealedStore()
    me = XWingPrivateKey.generate()
    desc = descriptor("2.0.0")
    cid = store.put_sealed(desc.to_bytes(), me)
    pub.channel.publish("2.0.0", seal_pointer(cid, desc).to_bytes(), pub.all_signers)
    store.contents[cid] = seal(descriptor("2.0.0", name="evil").to_bytes(), me.public_key())
    refused(follower(tmp_path, pub, open_sealed=store.opener(me)), TamperedTarget, "sealed")


# --- the key types themselves --------------------------------------------------------------------


def test_composite_keys_go_through_securesystemslib_registry():
    signer = new_signer()
    as_dict = signer.public_key.to_dict()
    assert (as_dict["keytype"], as_dict["scheme"]) == (COMPOSITE_KEYTYPE, COMPOSITE_SCHEME)
    key = Key.from_dict(signer.public_key.keyid, dict(as_dict))
    assert isinstance(key, CompositeKey) and key == signer.public_key
    sig = signer.sign(b"payload")
    key.verify_signature(sig, b"payload")
    with pytest.raises(UnverifiedSignatureError):
        key.verify_signature(sig, b"other payload")
    with pytest.raises(UnverifiedSignatureError):
        key.verify_signature(Signature(sig.keyid, sig.signature[:-2]), b"payload")


def test_a_tuf_signature_is_not_a_qiz_signature_for_another_context():
    """The composite signature is made for the context qiz/deploy/tuf: the same key's
    signature over the same bytes for another purpose does not verify as TUF metadata."""
    sk = CompositeSigningKey.generate()
    signer = CompositeSigner(sk)
    other = Signature(signer.public_key.keyid, sk.sign(b"payload", "qiz/file").hex())
    with pytest.raises(UnverifiedSignatureError):
        signer.public_key.verify_signature(other, b"payload")


def test_garbage_metadata_is_refused_in_one_line(tmp_path, pub):
    pub.path("timestamp.json").write_bytes(b"{not json")
    message = refused(follower(tmp_path, pub), AttackRefused, "timestamp")
    assert "malformed" in message


def test_a_skipped_root_version_is_refused(tmp_path, pub):
    """2.root.json holding a root v3 (validly signed): root versions are walked one by one."""
    root = Root.from_dict(pub.channel.root.signed.to_dict())
    root.version = 3
    md = Metadata(root)
    for signer in pub.signers["root"]:
        md.sign(signer, append=True)
    pub.write("2.root.json", md)
    refused(follower(tmp_path, pub), AttackRefused, "may not be skipped")


def test_a_descriptor_of_another_bundle_is_refused(tmp_path, pub):
    pub.channel.publish("2.0.0", descriptor("2.0.0", name="other").to_bytes(), pub.all_signers)
    follow = follower(tmp_path, pub, name="app")
    assert follow.descriptor("1.0.0").name == "app"
    refused(follower(tmp_path, pub, name="app"), TamperedTarget, "describes bundle 'other'")


# --- time passing for the follower ---------------------------------------------------------------


def test_indefinite_freeze_source_stops_updating(tmp_path, pub):
    """The follower synced; the source then serves the same state for two days (the publisher's
    renewals withheld): the 1-day timestamp has expired and the state is refused."""
    assert follower(tmp_path, pub).latest().version == "1.0.0"
    later = datetime.now(UTC) + timedelta(days=2)
    frozen = follower(tmp_path, pub, clock=lambda: later)
    refused(frozen, FreezeRefused, "freeze attack refused", "timestamp")
    pub.channel.clock = lambda: later
    pub.channel.renew(pub.all_signers)
    assert follower(tmp_path, pub, clock=lambda: later).latest().version == "1.0.0"


def test_rollback_older_timestamp_while_the_trusted_one_has_expired(tmp_path, pub):
    """An expired trusted timestamp still guards its version: a fresh-dated timestamp with a
    lower version (a stolen timestamp key) is refused (python-tuf's
    test_expired_timestamp_version_rollback)."""
    pub.publish("1.1.0")
    follower(tmp_path, pub).latest()
    later = datetime.now(UTC) + timedelta(days=2)
    name, ts = pub.current("timestamp")
    ts.signed.version -= 1
    ts.signed.expires = later + timedelta(days=1)
    pub.write(name, resign(ts, *pub.signers["timestamp"]))
    refused(follower(tmp_path, pub, clock=lambda: later), RollbackRefused, "timestamp")


def test_a_refused_change_leaves_the_channel_as_it_was(tmp_path, pub):
    """A publish or rotation that lacks a key fails before any file is written, and the
    Channel object goes on from the state on disk."""
    before = {p: p.read_bytes() for p in pub.directory.rglob("*") if p.is_file()}
    with pytest.raises(ChannelError):
        pub.channel.publish("2.0.0", descriptor("2.0.0").to_bytes(), pub.signers["targets"])
    fresh = new_signer()
    roles = dict(pub.channel.role_keys)
    roles["timestamp"] = RoleKeys((fresh.public_key,))
    with pytest.raises(ChannelError, match="timestamp"):
        pub.channel.rotate(roles, pub.all_signers)  # the new timestamp key's signer is missing
    after = {p: p.read_bytes() for p in pub.directory.rglob("*") if p.is_file()}
    assert after == before
    assert pub.channel.versions() == ["1.0.0"] and pub.channel.root.signed.version == 1
    pub.publish("2.0.0")
    assert follower(tmp_path, pub).latest().version == "2.0.0"


def test_a_node_home_is_a_signer_uri(tmp_path):
    """securesystemslib's Signer.from_priv_key_uri("qiz-home:PATH", key): the identity key of
    a QIZ home signs TUF metadata; a home holding another key is refused."""
    from securesystemslib.signer import Signer

    from qiz.home import Home
    from qiz.identity.node_identity import NodeIdentity

    identity = NodeIdentity.generate()
    Home(tmp_path / "home").init(identity=identity)
    key = CompositeKey.of(identity.public_key)
    signer = Signer.from_priv_key_uri(f"qiz-home:{tmp_path / 'home'}", key)
    key.verify_signature(signer.sign(b"metadata"), b"metadata")
    with pytest.raises(ValueError, match="is not key"):
        Signer.from_priv_key_uri(f"qiz-home:{tmp_path / 'home'}", new_signer().public_key)


def test_renew_re_signs_what_expires_soon_and_root_before_its_year_is_out(tmp_path, pub):
    now = datetime.now(UTC).replace(microsecond=0)
    ts_before = pub.channel.timestamp.signed.version
    targets_before = pub.channel.targets.signed.version
    pub.channel.clock = lambda: now + timedelta(hours=20)
    pub.channel.renew(pub.all_signers)
    assert pub.channel.timestamp.signed.version == ts_before + 1
    assert pub.channel.targets.signed.version == targets_before  # 6+ days left of 7
    pub.channel.clock = lambda: now + timedelta(days=200)
    pub.channel.renew(pub.all_signers)
    assert pub.channel.root.signed.version == 2  # a root past half its year is renewed
    assert pub.channel.targets.signed.version == targets_before + 1
    later = follower(tmp_path, pub, clock=lambda: now + timedelta(days=200, hours=1))
    assert later.latest().version == "1.0.0"


def test_the_publisher_refuses_metadata_its_followers_would_refuse_as_endless_data(tmp_path):
    """16 composite signatures (6746 hex characters each) do not fit the 64 KiB timestamp."""
    with pytest.raises(ChannelError, match="timestamp metadata would be"):
        make_publisher(tmp_path / "channel", n={"timestamp": 16}, k={"timestamp": 16})
    assert not list((tmp_path / "channel" / "metadata").iterdir())
