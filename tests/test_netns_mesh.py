"""Real ``qiz node start`` processes in network namespaces (tests/netns.py): a bootstrap node
on the public network and one node in each home network, behind a port-preserving NAT (two of
them) or a symmetric one. Each home node links to the bootstrap, which sees it at its NAT
router's public address, and the CLI (`qiz node status`, `qiz peers`, run in the root
namespace over the node's control socket) shows the link.

This is the base the relay and hole-punching tests build on: ``start_mesh`` and
``Topology.start_node`` give handles with ``.status()`` and ``.stop()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import CLEAN_ENV, eventually, node_status, ok_json, qiz, qiz_init
from .netns import PORT_PRESERVING, SYMMETRIC, NetnsNode, Topology, home_networks, require_netns
from .netns import start_mesh as start_netns_mesh

require_netns()
pytestmark = pytest.mark.timeout(120)

HOMES = {"a": PORT_PRESERVING, "b": PORT_PRESERVING, "c": SYMMETRIC}


def online_links(node: NetnsNode) -> dict[str, dict]:
    """The node's online links by peer id (its status over the control socket)."""
    status = node.status() or {}
    return {link["node_id"]: link for link in status.get("links", []) if link["state"] == "online"}


def test_home_nodes_behind_nat_link_to_a_public_bootstrap(tmp_path: Path) -> None:
    ids = qiz_init(tmp_path, "boot", *HOMES)
    with Topology() as net:
        net.public_host("boot")
        hosts = home_networks(net, HOMES)
        boot, homes = start_netns_mesh(net, tmp_path, "boot", hosts.values(), env=CLEAN_ENV)
        assert boot.node_id == ids["boot"]
        assert boot.address.rsplit(":", 1)[0] == net.ip_of("boot")
        for name, node in homes.items():
            assert node.node_id == ids[name]
            assert node.address.rsplit(":", 1)[0] == net.ip_of(name)  # its private address

        links = eventually(
            lambda: (seen := online_links(boot)).keys() >= {ids[h] for h in HOMES} and seen,
            timeout=20,
            what="the bootstrap linked to every home node",
        )
        for name in HOMES:
            link = links[ids[name]]
            # the bootstrap sees each home node at its NAT router's public address
            assert link["direction"] == "in" and link["path"] == "direct"
            assert link["remote_address"].rsplit(":", 1)[0] == net.ip_of(f"r{name}")
            assert link["remote_address"].rsplit(":", 1)[0] == net.public_ip_of(name)

        for name, node in homes.items():
            mine = eventually(lambda n=node: online_links(n).get(ids["boot"]), timeout=20)
            assert mine["direction"] == "out" and mine["path"] == "direct"
            assert mine["remote_address"] == boot.address
            # what a user is shown: the CLI in the root namespace, over the control socket
            status = eventually(lambda n=node: node_status(n), timeout=20)
            assert status["node_id"] == ids[name]
            assert ids["boot"] in {link["node_id"] for link in status["links"]}
            peers = ok_json(qiz(tmp_path, "--home", name, "peers", "--json"))["peers"]
            assert [(p["node_id"], p["state"]) for p in peers] == [(ids["boot"], "online")]

        # a handle stops its node cleanly; the bootstrap sees the link go
        homes["c"].stop()
        assert homes["c"].proc.returncode == 0, homes["c"].tail()
        eventually(lambda: ids["c"] not in online_links(boot), timeout=20, what="c's link gone")
        assert "Traceback" not in homes["c"].output()[1]
        assert not (tmp_path / "c" / "node.sock").exists()
