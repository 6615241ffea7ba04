"""An operator's word on a peer, from the command line, against real node processes on
127.0.0.1: ``qiz peers ban`` closes the peer's link and refuses it (either way, on the wire as
``REFUSED``) until ``qiz peers unban``; ``qiz peers trust`` pins its score at 1; the peer list
shows it; bad requests are one line and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qiz.procs import NodeProcess

from .helpers import eventually, ok_json, one_line_error, qiz, qiz_init

pytestmark = pytest.mark.timeout(180)


def rows(node: NodeProcess) -> dict[str, dict]:
    return {row["node_id"]: row for row in node.request("peers")["result"]["peers"]}


def test_ban_refuses_a_peer_until_unbanned_and_trust_pins_its_score(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    qiz_init(tmp_path, "A", "B")
    a = start_node("A")
    b = start_node("B", [a.bootstrap])

    def run(node: NodeProcess, *args: str) -> object:
        return qiz(tmp_path, "--home", str(node.home), *args)

    eventually(lambda: b.node_id in rows(a), 30, "B to link to A")
    # bad requests first: one line each, nothing changed
    assert "'frob' is not one of trust, ban, unban" in one_line_error(run(a, "peers", "frob", "x"))
    assert "needs a PEER" in one_line_error(run(a, "peers", "ban", "--json"))
    assert "no known peer" in one_line_error(run(a, "peers", "ban", "qizn1zzzzzzzz"))
    assert rows(a)[b.node_id]["trust"] is None and rows(a)[b.node_id]["state"] == "online"

    banned = ok_json(run(a, "peers", "ban", b.node_id[:14], "--json"))
    assert (banned["node_id"], banned["override"], banned["score"]) == (b.node_id, "banned", 0.0)
    assert banned["trail"][0]["reason"] == "banned"
    eventually(lambda: rows(a)[b.node_id]["state"] == "offline", 20, "A to close B's link")
    row = ok_json(run(a, "peers", "--json"))["peers"]
    gone = next(r for r in row if r["node_id"] == b.node_id)
    assert gone["trust"] == "banned" and gone["score"] == 0.0
    assert gone["left_reason"].startswith("refused:"), gone["left_reason"]
    # B dialling A is refused after the handshake, with the reason; so is A dialling B
    said = one_line_error(run(b, "connect", a.address))
    assert "banned" in said, said
    assert "banned" in one_line_error(run(a, "connect", b.address)), "A's own dial"
    assert "banned" in run(a, "peers").stdout

    back = ok_json(run(a, "peers", "unban", b.node_id, "--json"))
    assert back["override"] is None and 0.0 < back["score"] <= 1.0
    linked = ok_json(run(b, "connect", a.address, "--json"))
    assert linked["node_id"] == a.node_id
    trusted = ok_json(run(a, "peers", "trust", b.node_id[:14], "--json"))
    assert (trusted["override"], trusted["score"]) == ("trusted", 1.0)
    assert [e["reason"] for e in trusted["trail"][:3]] == ["trusted", "unbanned", "banned"]
    eventually(lambda: rows(a)[b.node_id]["trust"] == "trusted", 10, "the list to say trusted")
