"""The deploy engine end to end on an in-process loopback mesh (issue 17, items 1-5 and 8):
real nodes, real QMP links, the DHT's signed name record, the storage pool, python-tuf over
the mesh source, the atomic installer and the supervisor running real child processes.

On five nodes, a publisher publishes v1 of a small python bundle that writes a heartbeat file;
three followers install and run it; v2 reaches them and they upgrade; v3 crashes at start and
they roll back to v2 by themselves (v3 marked bad, never installed again); a follower offline
meanwhile catches up to the same state. Also: a health check failing, a sealed bundle, errors."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from qiz.compute.attest import verify_file
from qiz.compute.service import ComputeConfig
from qiz.deploy.errors import (
    BundleError,
    ChannelError,
    ChannelUnavailable,
    DeployError,
    SealedToOthers,
)
from qiz.deploy.mesh_source import ChannelRef
from qiz.deploy.service import DeployConfig, DeployService, UnknownBundle, _target
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.node_api import NodeAPI
from qiz.store.config import StoreConfig
from qiz.store.errors import StoreError
from tests.helpers import async_eventually, make_node, run, start_mesh, stop_all

APP = """\
import os, pathlib, sys, time
version = os.environ["QIZ_BUNDLE_VERSION"]
if os.environ.get("CRASH"):
    sys.exit(3)
beat = pathlib.Path(os.environ["HOME"]) / "heartbeat"
while True:
    tmp = beat.with_suffix(".tmp")
    tmp.write_text(f"{version} {os.getpid()}")
    tmp.replace(beat)
    time.sleep(0.05)
"""


def bundle(
    directory: Path, version: str, *, crash: bool = False, healthy: bool | None = None
) -> Path:
    """The heartbeat bundle; ``crash``: it exits 3 at start; ``healthy``: with a health check
    that passes (True) or fails (False)."""
    directory.mkdir(parents=True)
    (directory / "app.py").write_text(APP)
    # the command is a script run by path: its execute bit travels in the descriptor
    (directory / "run.sh").write_text(f'#!/bin/sh\nexec "{sys.executable}" app.py\n')
    (directory / "run.sh").chmod(0o755)
    env = '[env]\nCRASH = "1"\n' if crash else ""
    health = ""
    if healthy is not None:
        code = 0 if healthy else 1
        health = (
            f'[health]\ncommand = ["{sys.executable}", "-c", "raise SystemExit({code})"]\n'
            "interval = 0.1\nstart_period = 0.0\nretries = 2\n"
        )
    (directory / "qiz-bundle.toml").write_text(
        f'name = "beat"\nversion = "{version}"\n'
        'command = ["./run.sh"]\n'
        f"{env}{health}"
        "[restart]\nbackoff = 0.05\nbackoff_max = 0.1\nmax_starts = 2\nwindow = 60.0\n"
    )
    return directory


def node_in(home: Path, identity: NodeIdentity, peers: list[str] | None) -> Node:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return make_node(
        identity,
        peers=peers,
        control_dir=home,
        store=StoreConfig(k=1, n=2, renew_every=3600.0, repair_every=3600.0, collect_every=3600.0),
        compute=ComputeConfig(worker=False),
        deploy=DeployConfig(refresh_every=0.2, stop_grace=1.0),
    )


def on_mesh(
    tmp_path: Path, size: int, body: Callable[[list[Node]], Awaitable[None]], timeout: float = 60
) -> None:
    """Run ``body`` on a fresh in-process mesh of ``size`` deploy nodes (stopped however it
    ends)."""
    identities = [NodeIdentity.generate() for _ in range(size)]

    async def main() -> None:
        nodes = await start_mesh(
            size, lambda peers, i: node_in(tmp_path / f"n{i}", identities[i], peers)
        )
        try:
            await body(nodes)
        finally:
            await stop_all(nodes)

    run(main(), timeout=timeout)


def heartbeat(node: Node) -> str | None:
    """The version whose heartbeat the bundle's live process writes (a file left by an earlier
    process, whose pid the supervisor no longer runs, does not count)."""
    assert node.control_dir is not None and node.deploy is not None
    path = node.control_dir / "deploy" / "beat" / "data" / "heartbeat"
    try:
        version, pid = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return version if str(node.deploy.status("beat")["pid"]) == pid else None


def test_publish_follow_upgrade_and_roll_back_by_themselves(tmp_path: Path) -> None:
    """Item 8 on five nodes: three followers install and run v1; one goes offline; v2 reaches
    the two others, v3 crashes at start and they roll back to v2 by themselves and stay
    there; the third comes back, installs v3 (the newest), sees it crash, rolls back, and
    settles on v2 like the others (its following and running survived the restart)."""
    identities = [NodeIdentity.generate() for _ in range(5)]

    async def main() -> None:
        nodes = await start_mesh(
            5, lambda peers, i: node_in(tmp_path / f"n{i}", identities[i], peers)
        )
        try:
            publisher, followers = nodes[0], nodes[1:4]
            assert publisher.deploy is not None
            ref = ChannelRef(publisher.node_id, "beat")
            first = await publisher.deploy.publish(bundle(tmp_path / "v1", "1"))
            assert first["channel"] == str(ref) and first["versions"] == ["1"]
            for node in followers:
                assert node.deploy is not None
                answer = await node.deploy.follow(ref)
                assert answer["version"] == "1" and answer["installed"]
            for node in followers:
                await async_eventually(lambda n=node: heartbeat(n) == "1", 20, "v1 running")
            offline = followers.pop()
            await offline.stop()

            await publisher.deploy.publish(bundle(tmp_path / "v2", "2"))
            for node in followers:
                await async_eventually(lambda n=node: heartbeat(n) == "2", 20, "v2 running")
                status = node.deploy.status("beat")  # type: ignore[union-attr]
                assert status["current"] == "2" and status["previous"] == "1"

            await publisher.deploy.publish(bundle(tmp_path / "v3", "3", crash=True))

            def rolled_back(node: Node) -> bool:
                status = node.deploy.status("beat")  # type: ignore[union-attr]
                return status["bad"] == ["3"] and status["current"] == "2"

            for node in followers:
                await async_eventually(lambda n=node: rolled_back(n), 30, "rollback to v2")
                await async_eventually(lambda n=node: heartbeat(n) == "2", 20, "v2 again")
            # later refreshes see v3 as the newest and leave it alone
            for node in followers:
                await async_eventually(
                    lambda n=node: (n.deploy._refreshed.get("beat") or {}).get("skipped") == "3",
                    10,
                    "v3 skipped",
                )
                await async_eventually(lambda n=node: heartbeat(n) == "2", 20, "v2 still up")
                status = node.deploy.status("beat")  # type: ignore[union-attr]
                assert status["current"] == "2" and status["state"] == "running"
                assert status["rolled_back"] == ["3"]
                log = node.deploy.logs("beat")["text"]  # type: ignore[union-attr]
                assert "rolled back to 2" in log

            back = node_in(tmp_path / "n3", identities[3], [publisher.address])
            nodes[3] = back
            await back.start()
            await asyncio.wait_for(back.joined.wait(), 30)
            assert back.deploy is not None
            await async_eventually(lambda: rolled_back(back), 30, "the returning node on v2")
            await async_eventually(lambda: heartbeat(back) == "2", 20, "v2 running there")
            status = back.deploy.status("beat")
            assert status["following"] and status["keep_running"]
        finally:
            await stop_all(nodes)

    run(main(), timeout=120)


def test_a_version_failing_its_health_check_is_rolled_back_on_the_follower(
    tmp_path: Path,
) -> None:
    async def body(nodes: list[Node]) -> None:
        publisher, follower = nodes[0], nodes[1]
        assert publisher.deploy is not None and follower.deploy is not None
        service = follower.deploy
        await publisher.deploy.publish(bundle(tmp_path / "v1", "1", healthy=True))
        await service.follow(ChannelRef(publisher.node_id, "beat"))
        await async_eventually(
            lambda: service.status("beat")["state"] == "healthy", 20, "v1 healthy"
        )
        await publisher.deploy.publish(bundle(tmp_path / "v2", "2", healthy=False))

        def rolled_back() -> bool:
            status = service.status("beat")
            return status["bad"] == ["2"] and status["state"] == "healthy"

        await async_eventually(rolled_back, 30, "v2 rolled back for its health check")
        status = service.status("beat")
        assert status["current"] == "1" and status["rolled_back"] == ["2"]
        assert "health check failed" in service.logs("beat")["text"]

    on_mesh(tmp_path, 3, body)


def test_one_line_errors_for_what_a_user_gets_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(nodes: list[Node]) -> None:
        service = nodes[1].deploy
        assert service is not None
        with pytest.raises(ChannelUnavailable, match=r"deploy/nothing is not found"):
            await service.install(ChannelRef(nodes[0].node_id, "nothing"))
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(BundleError, match=r"has no qiz-bundle\.toml"):
            await service.publish(empty)
        with pytest.raises(BundleError, match="cannot go on channel other"):
            await service.publish(bundle(tmp_path / "b", "1"), channel="other")
        with pytest.raises(UnknownBundle, match="no bundle ghost is installed"):
            service.status("ghost")
        # a channel grown past what followers read is refused at publish, not published
        from qiz.deploy import service as service_module

        with monkeypatch.context() as patch:
            patch.setattr(service_module, "MAX_CHANNEL_TREE_FILES", 1)
            with pytest.raises(ChannelError, match="followers read at most 1 files"):
                await nodes[0].deploy.publish(bundle(tmp_path / "grown", "1"))  # type: ignore[union-attr]
        # trust is anchored to a whole node id: never a prefix nor an address
        api = NodeAPI(nodes[1])
        owner = str(nodes[0].node_id)
        for channel in (f"{owner[:12]}/deploy/beat", f"{nodes[0].address}/deploy/beat"):
            with pytest.raises(BundleError, match="its owner is not a node id"):
                await api.deploy_install(channel)
            with pytest.raises(BundleError, match="its owner is not a node id"):
                await api.deploy_follow(channel)

    on_mesh(tmp_path, 3, body)


def test_a_follower_never_moves_backwards_nor_to_a_bad_version() -> None:
    versions = ["1", "2", "3"]
    assert _target(versions, None, set()) == "3"
    assert _target(versions, "1", set()) == "3"
    assert _target(versions, "3", set()) is None
    assert _target(versions, "2", {"3"}) is None  # rolled back from 3: stays on 2
    assert _target(versions, "1", {"3"}) == "2"  # the newest good one
    assert _target(versions, "3", {"2"}) is None  # never backwards
    assert _target(versions, "1", {"1", "2", "3"}) is None
    assert _target(versions, "9", set()) == "3"  # a version the channel does not list


def test_a_sealed_bundle_installs_on_its_recipient_only(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        publisher, recipient, other = nodes[0], nodes[1], nodes[2]
        assert publisher.deploy and recipient.deploy and other.deploy
        ref = ChannelRef(publisher.node_id, "beat")
        answer = await publisher.deploy.publish(
            bundle(tmp_path / "v1", "1"), to=[recipient.record()]
        )
        assert answer["sealed_to"] == [str(recipient.node_id)]
        assert answer["sealed_descriptor"] is not None
        # the channel's files name no bundle file, command or manifest
        channel = publisher.control_dir / "deploy-channels" / "beat"  # type: ignore[operator]
        served = b"".join(p.read_bytes() for p in channel.rglob("*") if p.is_file())
        assert b"app.py" not in served and b"qiz-bundle.toml" not in served
        installed = await recipient.deploy.install(ref)
        assert installed["installed"] and installed["version"] == "1"
        current = recipient.control_dir / "deploy" / "beat" / "current"  # type: ignore[operator]
        assert (current / "run.sh").stat().st_mode & 0o777 == 0o555
        assert (current / "app.py").stat().st_mode & 0o777 == 0o444
        with pytest.raises(SealedToOthers, match="sealed to other nodes"):
            await other.deploy.install(ref)

    on_mesh(tmp_path, 4, body)


def test_the_deploy_table_of_config_toml_is_checked() -> None:
    assert DeployConfig.from_table({"refresh_every": 5}).refresh_every == 5
    with pytest.raises(DeployError, match=r"deploy\.refresh is not a \[deploy\] setting"):
        DeployConfig.from_table({"refresh": 5})
    with pytest.raises(DeployError, match="must be over 0"):
        DeployConfig.from_table({"refresh_every": 0})
    with pytest.raises(DeployError, match="name_ttl must be 1 to"):
        DeployConfig.from_table({"name_ttl": 10**9})


def test_a_damaged_service_state_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "deploy" / ".service.json"
    state.parent.mkdir(parents=True)
    for text in (
        "{",
        '{"format": 1, "follow": {"app": "qizn1nope"}}',
        '{"format": 1, "run": ["A/B"]}',
    ):
        state.write_text(text)
        with pytest.raises(DeployError, match=r"\.service\.json is not a deploy state file"):
            DeployService(NodeIdentity.generate(), None, None, tmp_path)  # type: ignore[arg-type]


def test_a_quantum_container_submits_its_qaoa_job_whose_verified_result_appears(
    tmp_path: Path,
) -> None:
    """Item 8's last part: a bundle whose manifest names a job spec instead of a command is
    submitted to the mesh by each follower (signed by it), once per version; a worker runs
    it and the follower's coordinator holds the attested result, which verifies."""
    identities = [NodeIdentity.generate() for _ in range(4)]

    def make(peers: list[str] | None, i: int) -> Node:
        home = tmp_path / f"n{i}"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return make_node(
            identities[i],
            peers=peers,
            control_dir=home,
            store=StoreConfig(k=1, n=2, renew_every=3600.0, repair_every=3600.0),
            compute=ComputeConfig(worker=i == 3, slots=1, poll_after=1.0, warm_up=False),
            deploy=DeployConfig(refresh_every=0.2),
        )

    async def main() -> None:
        nodes = await start_mesh(4, make)
        try:
            for node in nodes:
                await node.compute.publish_capacity()  # type: ignore[union-attr]
            publisher, follower = nodes[0], nodes[1]
            assert publisher.deploy is not None and follower.deploy is not None
            source = tmp_path / "qaoa"
            source.mkdir()
            (source / "qiz-bundle.toml").write_text(
                'name = "maxcut"\nversion = "1"\njob = "jobs/maxcut.json"\n'
            )
            (source / "jobs").mkdir()
            (source / "jobs" / "maxcut.json").write_text(
                json.dumps(
                    {"kind": "qaoa", "params": {"graph": "random:6,3", "p": 1}, "replicas": 1}
                )
            )
            await publisher.deploy.publish(source)
            answer = await follower.deploy.follow(ChannelRef(publisher.node_id, "maxcut"))
            assert answer["version"] == "1"
            status = follower.deploy.status("maxcut")
            assert status["state"] == "submitted" and status["job"]
            job = bytes.fromhex(status["job"])
            coordinator = follower.compute.coordinator  # type: ignore[union-attr]
            await async_eventually(
                lambda: coordinator.status(job).state == "done", 60, "the job done"
            )
            verified = verify_file(coordinator.result(job))
            assert verified.job_id == job and verified.spec.kind == "qaoa"
            assert verified.coordinator == follower.node_id and verified.results
            # another run (or a restart) does not submit the same version again
            again = await follower.deploy.run("maxcut")
            assert again["job"] == status["job"]
        finally:
            await stop_all(nodes)

    run(main(), timeout=120)


def test_old_versions_are_pruned_as_new_ones_arrive(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        publisher, follower = nodes[0], nodes[1]
        assert publisher.deploy is not None and follower.deploy is not None
        ref = ChannelRef(publisher.node_id, "beat")
        for version in ("1", "2", "3", "4", "5"):
            await publisher.deploy.publish(bundle(tmp_path / version, version))
            assert (await follower.deploy.install(ref))["version"] == version
        status = follower.deploy.status("beat")
        assert status["installed"] == ["3", "4", "5"]
        assert (status["current"], status["previous"]) == ("5", "4")
        home = follower.control_dir
        assert home is not None and not (home / "deploy" / "beat" / "1").exists()

    on_mesh(tmp_path, 3, body)


def test_a_publication_whose_tree_failed_is_retried_by_publishing_again(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        publisher, follower = nodes[0], nodes[1]
        service = publisher.deploy
        assert service is not None and follower.deploy is not None
        source = bundle(tmp_path / "v1", "1")
        real_put = service.store.put

        async def failing_put(path: Path, **kwargs: object) -> object:
            if Path(path).name == "beat":  # the channel's tree, not the bundle
                raise StoreError("0 of the 2 holders needed accepted")
            return await real_put(path, **kwargs)  # type: ignore[arg-type]

        service.store.put = failing_put  # type: ignore[method-assign]
        with pytest.raises(StoreError):
            await service.publish(source)
        service.store.put = real_put  # type: ignore[method-assign]
        with pytest.raises(ChannelUnavailable):
            await follower.deploy.install(ChannelRef(publisher.node_id, "beat"))
        again = await service.publish(source)
        assert again["retried"] and again["versions"] == ["1"]
        with pytest.raises(DeployError, match="already published"):
            await service.publish(source)
        installed = await follower.deploy.install(ChannelRef(publisher.node_id, "beat"))
        assert installed["version"] == "1"

    on_mesh(tmp_path, 3, body)


def test_channel_keys_rotate_to_two_of_three_and_move_targets_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 2's k-of-n and key rotation through the node: root goes to 2 of (the node's key, a
    composite key file, an SLH-DSA key file); a follower keeps following across the new root
    and a new one bootstraps through the chain of roots. Then targets moves to the offline
    composite key: publish without it is refused in one line naming the key, with it works."""
    from qiz.deploy import service as service_module
    from qiz.deploy.channel import Channel, utc_now
    from qiz.deploy.signing import generate_signer, key_file_bytes

    identities = [NodeIdentity.generate() for _ in range(3)]
    keys = {}
    for name, slh in (("offline", False), ("root-slh", True)):
        signer = generate_signer(slh)
        keys[name] = (tmp_path / f"{name}.key", signer.public_key.keyid)
        keys[name][0].write_bytes(key_file_bytes(signer))
    offline, offline_id = keys["offline"]
    slh, slh_id = keys["root-slh"]

    async def main() -> None:
        nodes = await start_mesh(
            3, lambda peers, i: node_in(tmp_path / f"n{i}", identities[i], peers)
        )
        try:
            publisher, old, new = nodes
            service = publisher.deploy
            assert service is not None and old.deploy is not None and new.deploy is not None
            ref = ChannelRef(publisher.node_id, "beat")
            with pytest.raises(UnknownBundle, match="publishes no channel beat"):
                await service.rotate("beat", "root", ["node"])
            await service.publish(bundle(tmp_path / "v1", "1"))
            assert (await old.deploy.follow(ref))["version"] == "1"

            three = ["node", str(offline), str(slh)]
            with pytest.raises(ChannelError, match="threshold of 4 cannot be met by the 3 keys"):
                await service.rotate("beat", "root", three, threshold=4)
            with pytest.raises(
                ChannelError, match=rf"root of root v2 needs 1 more of keys {offline_id[:16]}"
            ):
                await service.rotate("beat", "root", three, threshold=2)
            rotated = await service.rotate("beat", "root", three, threshold=2, signers=[offline])
            assert rotated["root_version"] == 2
            root = rotated["roles"]["root"]
            assert root["threshold"] == 2 and root["node_key"]
            assert set(root["keyids"]) >= {offline_id, slh_id}

            await service.publish(bundle(tmp_path / "v2", "2"))  # targets: still the node's
            await async_eventually(
                lambda: old.deploy.status("beat")["current"] == "2", 20, "v2 across the rotation"
            )
            assert (await new.deploy.install(ref))["version"] == "2"  # walks root 1 -> 2

            # targets to the offline key; root v2 wants 2 signatures: the node's and SLH-DSA's
            with pytest.raises(ChannelError) as short:
                await service.rotate("beat", "targets", [str(offline)])
            assert "root of root v2 needs 1 more of keys" in str(short.value)
            assert f"targets of root v3 needs 1 more of keys {offline_id[:16]}" in str(short.value)
            moved = await service.rotate("beat", "targets", [str(offline)], signers=[slh, offline])
            assert moved["roles"]["targets"] == {
                "keyids": [offline_id],
                "threshold": 1,
                "node_key": False,
            }
            with pytest.raises(ChannelError) as refused:
                await service.publish(bundle(tmp_path / "v3", "3"))
            line = str(refused.value)
            assert "\n" not in line and "(pass --signer FILE)" in line
            assert f"targets of root v3 needs 1 more of keys {offline_id[:16]}" in line
            done = await service.publish(tmp_path / "v3", signers=[offline])
            assert done["versions"] == ["1", "2", "3"]
            await async_eventually(
                lambda: old.deploy.status("beat")["current"] == "3", 20, "v3 on the follower"
            )
            assert (await new.deploy.install(ref))["version"] == "3"
            # the node renews what it holds (the timestamp) on its own
            assert await service.renew() == ["beat"]
            assert (await new.deploy.install(ref))["version"] == "3"
            # four days on, targets (offline) is due: the node re-signs the timestamp only,
            # and says what it cannot sign
            later = functools.partial(Channel, clock=lambda: utc_now() + timedelta(days=4))
            before = Channel(publisher.control_dir / "deploy-channels" / "beat")  # type: ignore[operator]
            with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, "qiz.deploy"):
                patch.setattr(service_module, "Channel", later)
                assert await service.renew() == ["beat"]
            after = Channel(before.directory)
            assert after.timestamp.signed.version == before.timestamp.signed.version + 1
            assert after.targets.signed.version == before.targets.signed.version
            assert "renewing its timestamp only: cannot sign targets" in caplog.text
        finally:
            await stop_all(nodes)

    run(main(), timeout=120)
