"""The mesh channel source (qiz/deploy/mesh_source.py) over a real channel, real signed name
records and the real follower: what the name record names is served, bounded, and anything
else is one clear line. The whole path over real nodes is tests/test_deploy_mesh.py."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from qiz.crypto.ids import ContentId, NodeId
from qiz.deploy.channel import Channel, RoleKeys
from qiz.deploy.descriptor import Descriptor, FileEntry
from qiz.deploy.errors import BundleError, ChannelUnavailable
from qiz.deploy.mesh_limits import MAX_CHANNEL_TREE_BYTES
from qiz.deploy.mesh_source import (
    ChannelRef,
    MeshSource,
    channel_label,
    parse_channel,
)
from qiz.deploy.signing import CompositeSigner
from qiz.deploy.updater import ChannelFollower, SourceMissing
from qiz.identity import NodeIdentity
from qiz.resolve.records import make_name_record

ROLES = ("root", "targets", "snapshot", "timestamp")


def descriptor(version: str) -> Descriptor:
    manifest = f'name = "app"\nversion = "{version}"\ncommand = ["python3", "app.py"]\n'
    app = b"print('hi')\n"
    files = (
        FileEntry("app.py", len(app), hashlib.sha256(app).digest()),
        FileEntry("qiz-bundle.toml", len(manifest), hashlib.sha256(manifest.encode()).digest()),
    )
    return Descriptor("app", version, manifest, str(ContentId.of(app)), files)


def tree_of(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


class Mesh:
    """A stand-in for the DHT and the pool: name records and trees, as the node serves them."""

    def __init__(self) -> None:
        self.records: dict[tuple[NodeId, str], bytes] = {}
        self.trees: dict[ContentId, dict[str, bytes]] = {}
        self.asked: list[int] = []

    def publish(self, owner: NodeIdentity, name: str, files: dict[str, bytes]) -> ContentId:
        cid = ContentId.of(repr(sorted(files.items())).encode())
        self.trees[cid] = files
        raw = make_name_record(
            owner, channel_label(name), str(cid), seq=len(self.records) + 1, now=0, ttl=60
        )
        self.records[(owner.node_id, channel_label(name))] = raw
        return cid

    async def resolve(self, owner: NodeId, label: str) -> tuple[bytes, str]:
        raw = self.records.get((owner, label))
        if raw is None:
            raise LookupError(f"no record for {owner}/{label} was found")
        from qiz import wire

        return raw, wire.decode(raw)["value"]

    async def fetch(self, cid: ContentId, max_size: int) -> dict[str, bytes]:
        self.asked.append(max_size)
        return self.trees[cid]


def test_a_channel_named_by_a_name_record_is_followed_to_its_newest_version(
    tmp_path: Path,
) -> None:
    owner = NodeIdentity.generate()
    signer = CompositeSigner(owner.signing_key)
    roles = {role: RoleKeys((signer.public_key,)) for role in ROLES}
    channel = Channel.create(tmp_path / "channel", roles, [signer])
    channel.publish("1.0", descriptor("1.0").to_bytes(), [signer])
    mesh = Mesh()
    mesh.publish(owner, "app", tree_of(tmp_path / "channel"))
    ref = ChannelRef(owner.node_id, "app")
    source = MeshSource(ref, mesh.resolve, mesh.fetch)
    asyncio.run(source.load())
    assert mesh.asked == [MAX_CHANNEL_TREE_BYTES]
    assert source.owner_key is not None and source.owner_key.raw == owner.public_key.raw
    follower = ChannelFollower(tmp_path / "trust", source, name="app", owner=source.owner_key)
    assert follower.latest().version == "1.0"
    channel.publish("2.0", descriptor("2.0").to_bytes(), [signer])
    mesh.publish(owner, "app", tree_of(tmp_path / "channel"))
    asyncio.run(source.load())
    assert follower.latest().version == "2.0"
    # a tree still named is not fetched again; a new one is
    again = MeshSource(ref, mesh.resolve, mesh.fetch, last=(source.tree, source.files))
    assert asyncio.run(again.load()) == source.tree and len(mesh.asked) == 2
    assert again.files == source.files
    # only channel paths are served, cut one byte past the bound
    with pytest.raises(SourceMissing):
        source.get("../state.json", 100)
    assert len(source.get("metadata/timestamp.json", 10)) == 11


def test_an_unknown_channel_is_one_line(tmp_path: Path) -> None:
    mesh = Mesh()
    ref = ChannelRef(NodeIdentity.generate().node_id, "nothing")
    with pytest.raises(ChannelUnavailable, match=r"^channel qizn1\S+/deploy/nothing is not found"):
        asyncio.run(MeshSource(ref, mesh.resolve, mesh.fetch).load())


def test_a_record_that_names_no_content_id_is_refused(tmp_path: Path) -> None:
    owner = NodeIdentity.generate()
    mesh = Mesh()
    mesh.records[(owner.node_id, channel_label("app"))] = make_name_record(
        owner, channel_label("app"), "not a cid", seq=1, now=0, ttl=60
    )
    source = MeshSource(ChannelRef(owner.node_id, "app"), mesh.resolve, mesh.fetch)
    with pytest.raises(ChannelUnavailable, match="does not name a content id"):
        asyncio.run(source.load())


def test_channel_names_are_parsed_in_both_forms() -> None:
    owner = NodeIdentity.generate().node_id
    assert parse_channel(f"{owner}/deploy/app") == ChannelRef(owner, "app")
    assert parse_channel(f"{owner}/app") == ChannelRef(owner, "app")
    assert str(ChannelRef(owner, "app")) == f"{owner}/deploy/app"
    for bad in ("app", f"{owner}/", "qizn1xyz/app", f"{owner}/deploy/App!", "a/b/c/d"):
        with pytest.raises(BundleError):
            parse_channel(bad)
