"""The deploy engine's command line (issue 17, item 6): arguments a user gets wrong are one
line before anything is sent, and on real node processes (three, over real links) a bundle
published from one node is installed, run, stopped and inspected from another with
``qiz deploy ...``, every ``--json`` answer checked against docs/json/deploy-*.schema.json."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    NodeProcess,
    deploy_mesh,
    eventually,
    ok_json,
    one_line_error,
    qiz,
)

NAMES = ("a", "b", "c")
APP = """\
import os, time
print("hello from", os.environ["QIZ_BUNDLE_VERSION"], flush=True)
while True:
    time.sleep(1)
"""


def bundle(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "app.py").write_text(APP)
    (directory / "qiz-bundle.toml").write_text(
        f'name = "hello"\nversion = "{version}"\ncommand = ["{sys.executable}", "app.py"]\n'
    )
    return directory


def test_arguments_a_user_gets_wrong_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    missing = one_line_error(qiz(tmp_path, "--home", home, "deploy", "publish", "nope"))
    assert "nope is not a directory" in missing
    (tmp_path / "empty").mkdir()
    empty = one_line_error(qiz(tmp_path, "--home", home, "deploy", "build", "empty", "--json"))
    assert "has no qiz-bundle.toml" in empty
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "qiz-bundle.toml").write_text('name = "x"\nversion = "1"\nmemory = 3\n')
    bad = one_line_error(qiz(tmp_path, "--home", home, "deploy", "publish", "bad"))
    assert "qiz-bundle.toml" in bad and "memory" in bad
    channel = one_line_error(qiz(tmp_path, "--home", home, "deploy", "install", "justaname"))
    assert "is not a channel: write OWNER/deploy/NAME" in channel
    name = one_line_error(qiz(tmp_path, "--home", home, "deploy", "status", "Bad/Name", "--json"))
    assert "bundle name" in name


class Mesh:
    def __init__(self, work: Path, nodes: dict[str, NodeProcess]) -> None:
        self.work = work
        self.nodes = nodes
        self.ids = {name: node.node_id for name, node in nodes.items()}

    def http(self, name: str, path: str, *, token: bool = True) -> tuple[int, Any]:
        """GET ``path`` of node ``name``'s HTTP API."""
        node = self.nodes[name]
        assert node.api is not None
        headers = {}
        if token:
            secret = (self.work / name / "api.token").read_text().strip()
            headers["Authorization"] = f"Bearer {secret}"
        request = urllib.request.Request(node.api.rstrip("/") + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def cli(self, name: str, *args: str | Path) -> Any:
        return qiz(self.work, "--home", name, *args, timeout=120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("deploy")
    with deploy_mesh(work, NAMES) as nodes:
        yield Mesh(work, nodes)


def test_publish_on_one_node_install_and_run_on_another(mesh: Mesh) -> None:
    bundle(mesh.work / "v1", "1")
    built = ok_json(mesh.cli("a", "deploy", "build", "v1", "--json"))
    assert [f["path"] for f in built["files"]] == ["app.py", "qiz-bundle.toml"]
    assert (built["name"], built["version"], built["sealed_to"]) == ("hello", "1", [])
    published = ok_json(mesh.cli("a", "deploy", "publish", "v1", "--json"))
    channel = f"{mesh.ids['a']}/deploy/hello"
    assert published["channel"] == channel and published["versions"] == ["1"]
    installed = ok_json(mesh.cli("b", "deploy", "install", channel, "--json"))
    assert installed["installed"] and installed["version"] == "1"
    again = ok_json(mesh.cli("b", "deploy", "install", channel, "--json"))
    assert not again["installed"] and again["version"] == "1"
    running = ok_json(mesh.cli("b", "deploy", "run", "hello", "--json"))
    assert running["current"] == "1" and running["keep_running"]

    def logged() -> bool:
        return "hello from 1" in ok_json(mesh.cli("b", "deploy", "logs", "hello", "--json"))["text"]

    eventually(logged, 30, "the bundle's output in its log")
    human = mesh.cli("b", "deploy", "status", "hello")
    assert human.returncode == 0 and human.stdout.startswith("hello  1  running"), human.stdout
    assert "installed: 1" in human.stdout and "Traceback" not in human.stderr
    listing = ok_json(mesh.cli("b", "deploy", "ls", "--json"))
    assert [row["name"] for row in listing["bundles"]] == ["hello"]
    # what is installed and running is read over HTTP too, with the token
    code, body = mesh.http("b", "/api/deploy")
    assert code == 200 and [row["name"] for row in body["bundles"]] == ["hello"]
    code, body = mesh.http("b", "/api/deploy/hello")
    assert code == 200 and body["current"] == "1" and body["state"] == "running"
    code, body = mesh.http("b", "/api/deploy/hello/logs?size=4096")
    assert code == 200 and "hello from 1" in body["text"]
    assert mesh.http("b", "/api/deploy/ghost")[0] == 404
    assert mesh.http("b", "/api/deploy", token=False)[0] == 401
    stopped = ok_json(mesh.cli("b", "deploy", "stop", "hello", "--json"))
    assert stopped["state"] == "stopped" and not stopped["keep_running"]
    publisher = ok_json(mesh.cli("a", "deploy", "ls", "--json"))
    assert publisher["channels"][0]["versions"] == ["1"]


def test_a_follower_upgrades_when_a_new_version_is_published(mesh: Mesh) -> None:
    channel = f"{mesh.ids['a']}/hello"  # OWNER/NAME works too
    following = ok_json(mesh.cli("c", "deploy", "follow", channel, "--json"))
    assert following["following"] and following["version"] == "1" and following["every"] == 0.5
    bundle(mesh.work / "v2", "2")
    ok_json(mesh.cli("a", "deploy", "publish", "v2", "--channel", "hello", "--json"))

    def upgraded() -> bool:
        status = ok_json(mesh.cli("c", "deploy", "status", "hello", "--json"))
        return status["current"] == "2" and status["state"] == "running"

    eventually(upgraded, 60, "the follower on v2")
    eventually(
        lambda: "hello from 2" in mesh.cli("c", "deploy", "logs", "hello").stdout, 30, "v2's output"
    )
    rolled = ok_json(mesh.cli("c", "deploy", "rollback", "hello", "--json"))
    assert (rolled["from"], rolled["to"], rolled["bad"]) == ("2", "1", ["2"])
    unfollowed = ok_json(mesh.cli("c", "deploy", "unfollow", "hello", "--json"))
    assert unfollowed["following"] is False


def test_node_errors_are_one_line_too(mesh: Mesh) -> None:
    unknown = one_line_error(
        mesh.cli("b", "deploy", "install", f"{mesh.ids['a']}/deploy/nothing", "--json")
    )
    assert "deploy/nothing is not found" in unknown
    ghost = one_line_error(mesh.cli("b", "deploy", "status", "ghost"))
    assert "no bundle ghost is installed" in ghost
    twice = one_line_error(mesh.cli("a", "deploy", "unfollow", "hello"))
    assert "does not follow a channel hello" in twice


def test_keygen_writes_a_private_key_file_once(tmp_path: Path) -> None:
    made = ok_json(qiz(tmp_path, "deploy", "keygen", "c.key", "--json"))
    assert made["keytype"] == "qiz-composite" and len(made["keyid"]) == 64
    assert (tmp_path / "c.key").stat().st_mode & 0o777 == 0o600
    slh = ok_json(qiz(tmp_path, "deploy", "keygen", "s.key", "--slh-dsa", "--json"))
    assert slh["keytype"] == "qiz-slh-dsa" and slh["path"] == str(tmp_path / "s.key")
    again = one_line_error(qiz(tmp_path, "deploy", "keygen", "c.key"))
    assert "c.key already exists: keygen never overwrites" in again
    home = tmp_path / "home"
    role = one_line_error(
        qiz(tmp_path, "--home", home, "deploy", "rotate", "x", "--role", "boss", "--key", "c.key")
    )
    assert "--role must be one of root, targets, snapshot, timestamp" in role
    over = ["deploy", "rotate", "x", "--role", "root", "--key", "c.key", "--threshold", "2"]
    assert "--threshold 2 is more than the 1 keys given" in one_line_error(qiz(tmp_path, *over))
    gone = ["deploy", "rotate", "x", "--role", "root", "--key", "nope.key", "--json"]
    assert "--key nope.key: no such key file" in one_line_error(qiz(tmp_path, *gone))


def test_rotate_moves_targets_to_a_key_file_that_publish_then_needs(mesh: Mesh) -> None:
    made = ok_json(mesh.cli("a", "deploy", "keygen", "targets.key", "--json"))
    ghost = one_line_error(
        mesh.cli("a", "deploy", "rotate", "nothing", "--role", "root", "--key", "node")
    )
    assert "this node publishes no channel nothing" in ghost
    moved = ok_json(
        mesh.cli(
            "a", "deploy", "rotate", "hello", "--role", "targets", "--key", "targets.key",
            "--signer", "targets.key", "--json",
        )
    )  # fmt: skip
    assert moved["roles"]["targets"]["keyids"] == [made["keyid"]]
    assert moved["roles"]["root"]["node_key"] and not moved["roles"]["targets"]["node_key"]
    bundle(mesh.work / "v3", "3")
    refused = one_line_error(mesh.cli("a", "deploy", "publish", "v3", "--json"))
    assert f"targets of root v{moved['root_version']} needs 1 more of keys" in refused
    assert made["keyid"][:16] in refused and "--signer" in refused
    done = ok_json(mesh.cli("a", "deploy", "publish", "v3", "--signer", "targets.key", "--json"))
    assert done["versions"][-1] == "3"
    installed = ok_json(mesh.cli("b", "deploy", "install", f"{mesh.ids['a']}/hello", "--json"))
    assert installed["version"] == "3"
