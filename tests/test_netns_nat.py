"""NAT traversal end to end (docs/nat.md, issue 18 item 5), with real ``qiz node start``
processes in network namespaces (tests/netns.py, docs/netns.md):

    public network:  boot (bootstrap, relay)        relay2 (a second relay)
    home networks:   a behind ra (port-preserving)  b behind rb (port-preserving)
                     c behind rc (symmetric)

The home nodes keep one reservation each (``[relay] reserve_on = 1``) so that a second relay
is free to take over when the first dies; ``[nat] check_every = 10`` keeps the checks quick.
Only a and b run workers, so a job submitted by c runs its replicas over c's relayed links.

The tests run in file order on one mesh (a module fixture; the namespaces, nodes and captures
are torn down however they end). What they establish:

* every node reaches every other by id (``qiz connect ID``: DHT record, direct address or
  relay circuit) and ``qiz peers`` lists them; home nodes call themselves private, public
  nodes public (``qiz netcheck``);
* a and b end up on a direct link through punched holes: each sees the other at the other
  router's public address;
* c's links to a and b stay relayed, and a replicated job runs over them;
* the relays never see the job in plaintext: a marker in the job spec is never in the bytes
  on a relay's wire (a raw AF_PACKET capture in its namespace, checked to find a plaintext
  marker sent to it on purpose) nor anywhere in a relay process's memory (read through
  /proc/PID/mem, checked to find the marker in the submitter's and a worker's memory);
* killing the relay c reserved on makes every home node that used it reserve on the other
  one, and publish it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .helpers import CLEAN_ENV, eventually, ok_json, qiz, qiz_init, qiz_popen
from .netns import (
    PORT_PRESERVING,
    SYMMETRIC,
    Capture,
    NetnsNode,
    Topology,
    capture,
    home_networks,
    memory_holds,
    require_netns,
)

require_netns()
pytestmark = pytest.mark.timeout(150)

PUBLIC = ("boot", "relay2")
HOMES = {"a": PORT_PRESERVING, "b": PORT_PRESERVING, "c": SYMMETRIC}
NAMES = (*PUBLIC, *HOMES)
WORKERS = ("a", "b")  # the only nodes running tasks
CONFIG = "\n[nat]\ncheck_every = 10\n"
HOME_CONFIG = CONFIG + "\n[relay]\nreserve_on = 1\n"


@dataclass
class Mesh:
    """The running mesh: the topology, node handles and ids by name, and the work directory
    holding their homes."""

    net: Topology
    work: Path
    nodes: dict[str, NetnsNode]
    ids: dict[str, str]
    notes: dict[str, Any] = field(default_factory=dict)  # what a test leaves for the next

    def cli(self, name: str, *args: str, timeout: float = 60) -> Any:
        """``qiz --home NAME ARGS --json`` in the root namespace (over the control socket)."""
        return ok_json(qiz(self.work, "--home", name, *args, "--json", timeout=timeout))

    def side_by_side(self, commands: dict[Any, list[str]], timeout: float = 60) -> dict[Any, Any]:
        """Several ``qiz ... --json`` commands at once; their answers by key."""
        started = {key: qiz_popen(self.work, *argv, "--json") for key, argv in commands.items()}
        answers = {}
        for key, proc in started.items():
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0 and "Traceback" not in err, (key, err)
            answers[key] = json.loads(out)
        return answers

    def peers(self, name: str) -> dict[str, dict[str, Any]]:
        """NAME's online peers by node id, from ``qiz peers --json``."""
        rows = self.cli(name, "peers")["peers"]
        return {row["node_id"]: row for row in rows if row["state"] == "online"}

    def nat(self, name: str) -> dict[str, Any]:
        """NAME's ``nat`` section of its status (cheap: no check is run)."""
        status = self.nodes[name].status() or {}
        return status.get("nat") or {}

    def name_of(self, node_id: str) -> str:
        return next(name for name, known in self.ids.items() if known == node_id)


def until(check: Any, timeout: float, what: str, show: Any) -> Any:
    """:func:`eventually`, failing with ``show()`` (the state it last saw) in the message: the
    report says what the nodes said, not only that they did not say it in time."""
    try:
        return eventually(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {show()}") from None


def forwarded(mesh: Mesh, name: str) -> int | None:
    """Bytes NAME's relay forwarded, when its status shows its relay (``relay`` section,
    RelayService.snapshot); None when it does not."""
    relay = (mesh.nodes[name].status() or {}).get("relay")
    return relay.get("bytes_forwarded") if isinstance(relay, dict) else None


def relay_ids(nat: dict[str, Any]) -> list[str]:
    """The node ids of the relays a ``nat`` view lists (entries ``ID@ip:port``)."""
    return [entry.split("@", 1)[0] for entry in nat.get("relays", [])]


def ip(address: str) -> str:
    return address.rsplit(":", 1)[0]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("nat")
    ids = qiz_init(work, *NAMES)
    for name in NAMES:
        with (work / name / "config.toml").open("a") as config:
            config.write(HOME_CONFIG if name in HOMES else CONFIG)
    with Topology() as net:
        for name in PUBLIC:
            net.public_host(name)
        home_networks(net, HOMES)

        def args(name: str) -> list[str]:
            return ["--no-api", "--slots", "1"] if name in WORKERS else ["--no-api", "--no-worker"]

        boot = net.start_node("boot", "boot", cwd=work, args=args("boot"), env=CLEAN_ENV)
        nodes = {"boot": boot}
        for name in NAMES[1:]:
            nodes[name] = net.start_node(
                name,
                name,
                cwd=work,
                peers=[boot.bootstrap],
                args=args(name),
                env=CLEAN_ENV,
                ready=False,
            )
        for node in nodes.values():
            node.wait_ready(60)
        yield Mesh(net, work, nodes, ids)


def test_reachability_public_and_private(mesh: Mesh) -> None:
    """``qiz netcheck`` (a check run now) says private behind either NAT, public on the public
    network; a private node publishes no address, only its relay, and the public ones are
    seen at their own address."""
    ids = mesh.ids

    def settled() -> dict[str, Any] | None:
        views = {name: mesh.nat(name) for name in NAMES}
        for name, view in views.items():
            expected = "private" if name in HOMES else "public"
            if view.get("reachability") != expected:
                return None
            if name in HOMES and len(view.get("relays", [])) != 1:
                return None
        return views

    until(
        settled,
        40,
        "every node's reachability (private at home, public) and one relay per home node",
        lambda: {name: mesh.nat(name) for name in NAMES},
    )
    checks = mesh.side_by_side({name: ["--home", name, "netcheck"] for name in NAMES})
    for name in PUBLIC:
        check = checks[name]
        assert check["reachability"] == "public", (name, check)
        assert mesh.net.ip_of(name) in {ip(a) for a in check["public_addresses"]}, check
        assert check["published"] and {ip(a) for a in check["published"]} == {mesh.net.ip_of(name)}
    for name in HOMES:
        check = checks[name]
        assert check["reachability"] == "private", (name, check)
        assert check["published"] == [], check  # nobody could dial it there
        # peers see it at its router's public address
        assert {ip(a) for a in check["public_addresses"]} == {mesh.net.public_ip_of(name)}, check
        assert relay_ids(check)[0] in {ids[p] for p in PUBLIC}, check
        relay_at = check["relays"][0].split("@", 1)[1]
        assert ip(relay_at) in {mesh.net.ip_of(p) for p in PUBLIC}, check
    # the symmetric NAT changes ports per destination, the port-preserving ones do not (it
    # may take more observations than a few seconds give to say so: only the contradiction
    # is an error)
    for name, kind in HOMES.items():
        wrong = "port-changing" if kind == PORT_PRESERVING else "port-preserving"
        assert checks[name]["mapping"] != wrong, (name, checks[name])


def test_every_node_links_to_every_other_by_id(mesh: Mesh) -> None:
    """``qiz connect ID`` from each node to each other (the id only: the record comes from
    the DHT, then a direct address or a relay circuit), then ``qiz peers`` lists them all."""
    ids = mesh.ids
    pairs = [(src, dst) for src in NAMES for dst in NAMES if src != dst]
    # one source's connects in a row, the sources side by side (2 cores: 5 processes at once)
    for dst_round in range(1, len(NAMES)):
        commands = {
            (src, NAMES[(i + dst_round) % len(NAMES)]): [
                "--home",
                src,
                "connect",
                ids[NAMES[(i + dst_round) % len(NAMES)]],
            ]
            for i, src in enumerate(NAMES)
        }
        answers = mesh.side_by_side(commands, timeout=60)
        for (src, dst), answer in answers.items():
            assert answer["node_id"] == ids[dst], (src, dst, answer)
    assert len(pairs) == len(NAMES) * (len(NAMES) - 1)
    for name in NAMES:
        others = {ids[n] for n in NAMES if n != name}
        seen = eventually(
            lambda n=name, o=others: (p := mesh.peers(n)).keys() >= o and p,
            timeout=20,
            what=f"{name} lists every other node",
        )
        for peer_id in others:
            assert seen[peer_id]["path"] in ("direct", "relayed"), seen[peer_id]
            if seen[peer_id]["path"] == "relayed":
                assert seen[peer_id]["relay"] in {ids[p] for p in PUBLIC}, seen[peer_id]


def test_the_port_preserving_pair_ends_up_direct(mesh: Mesh) -> None:
    """a and b can only have met through a relay (neither publishes an address); the punch
    moves them to a direct link, on which each sees the other at the other's router."""
    ids, net = mesh.ids, mesh.net
    for me, other in (("a", "b"), ("b", "a")):
        row = eventually(
            lambda m=me, o=other: (
                (r := mesh.peers(m).get(ids[o])) is not None and r["path"] == "direct" and r
            ),
            timeout=30,
            what=f"{me}'s link to {other} direct (punched)",
        )
        assert row["relay"] is None, row
        assert ip(row["remote_address"]) == net.public_ip_of(other) == net.ip_of(f"r{other}"), row
    for name in ("a", "b"):
        assert mesh.nat(name)["links_direct"] >= 1


def test_symmetric_pairs_stay_relayed_and_run_a_replicated_job(mesh: Mesh) -> None:
    """c (symmetric NAT) and a, b: the punch cannot work, the links stay relayed, and a job
    c submits with 2 replicas runs on a and b through the relays. Meanwhile every relay's
    wire is captured and, after, every relay's memory searched for a marker in the spec."""
    ids, net, work = mesh.ids, mesh.net, mesh.work
    for me, other in (("c", "a"), ("c", "b"), ("a", "c"), ("b", "c")):
        row = mesh.peers(me)[ids[other]]
        assert row["path"] == "relayed", (me, other, row)
        assert row["relay"] in {ids[p] for p in PUBLIC}, row
        assert row["remote_address"].startswith("relay:"), row

    marker = "qiz-plaintext-" + secrets.token_hex(8)
    control = "qiz-control-" + secrets.token_hex(8)
    program = (
        "OPENQASM 3.0;\n"
        'include "stdgates.inc";\n'
        f"// {marker}\n"
        "qubit[2] q;\nbit[2] m;\nh q[0];\ncx q[0], q[1];\nm = measure q;\n"
    )
    (work / "marked.qasm").write_text(program)
    forwarded_before = {name: forwarded(mesh, name) for name in PUBLIC}
    captures: dict[str, Capture] = {name: capture(net, name, [marker, control]) for name in PUBLIC}
    try:
        done = mesh.cli(
            "c",
            "job",
            "submit",
            "--sampler",
            "marked.qasm",
            "--shots",
            "64",
            "--replicas",
            "2",
            "--wait",
            "--out",
            "marked.att",
            timeout=90,
        )
        # the control: plaintext sent from a home host to a relay's port is found on its wire
        for name in PUBLIC:
            sent = net.python(
                "a",
                "import socket, sys\n"
                "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
                "s.sendall(sys.argv[3].encode())\n"
                "s.close()\n",
                net.ip_of(name),
                mesh.nodes[name].address.rsplit(":", 1)[1],
                control,
            )
            assert sent.returncode == 0, sent.stderr
    finally:
        seen = {}
        for name, running in captures.items():
            try:
                seen[name] = running.stop()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                seen[name] = {"error": str(exc)}
    assert done["state"] == "done", done
    verified = ok_json(qiz(work, "verify-result", "marked.att", "--json"))
    assert verified["verified"], verified
    assert set(verified["workers"]) == {ids[w] for w in WORKERS}, verified

    # the job ran over the relays: still relayed after it, and the relays forwarded its bytes
    for me, other in (("c", "a"), ("c", "b")):
        assert mesh.peers(me)[ids[other]]["path"] == "relayed"
    rc = net.ip_of("rc")
    for name in PUBLIC:
        assert "error" not in seen[name], seen[name]
        assert seen[name]["found"][control] >= 1, (name, seen[name])  # the capture works
        assert seen[name]["found"][marker] == 0, f"{name}'s wire carried the plaintext marker"
    assert sum(
        n for name in PUBLIC for pair, n in seen[name]["by_pair"].items() if rc in pair
    ) > len(program), seen

    # when the node's status shows its relay's counters, the circuits carried the job
    after = {name: forwarded(mesh, name) for name in PUBLIC}
    if all(v is not None for v in (*forwarded_before.values(), *after.values())):
        grew = sum(after[n] - forwarded_before[n] for n in PUBLIC)  # type: ignore[operator]
        assert grew > len(program), (forwarded_before, after)

    # nor does any relay process hold it in memory, where the submitter and a worker do
    needle = marker.encode()
    assert memory_holds(mesh.nodes["c"].proc.pid, needle), "the memory search finds nothing"
    assert any(memory_holds(mesh.nodes[w].proc.pid, needle) for w in WORKERS)
    for name in PUBLIC:
        assert not memory_holds(mesh.nodes[name].proc.pid, needle), (
            f"relay {name}'s process memory holds the job's plaintext marker: it read the "
            "circuit, or it was sent the spec over a link of its own"
        )


def test_killing_a_relay_moves_reservations_to_the_other(mesh: Mesh) -> None:
    """The relay c reserved on dies (SIGKILL): c, and any home node that used it, reserve on
    the other relay and publish it (netcheck, from the node's signed record)."""
    ids = mesh.ids
    first = relay_ids(mesh.nat("c"))
    assert len(first) == 1, mesh.nat("c")
    dead = mesh.name_of(first[0])
    other = next(name for name in PUBLIC if name != dead)
    moved = [name for name in HOMES if relay_ids(mesh.nat(name)) == first]
    assert "c" in moved
    mesh.nodes[dead].kill()
    for name in moved:
        eventually(
            lambda n=name: relay_ids(mesh.nat(n)) == [ids[other]],
            timeout=30,
            what=f"{name} reserved on {other} once {dead} died",
        )
    checks = mesh.side_by_side({name: ["--home", name, "netcheck"] for name in moved})
    for name in moved:
        assert relay_ids(checks[name]) == [ids[other]], checks[name]
        assert checks[name]["reachability"] == "private", checks[name]
        address = checks[name]["relays"][0].split("@", 1)[1]
        assert address == mesh.nodes[other].address, checks[name]
