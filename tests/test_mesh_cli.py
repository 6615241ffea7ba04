"""Mesh operations from the command line: ``ping``, ``peers``, ``connect``, ``resolve`` and a
name's owner by id, prefix or address, against real node processes on 127.0.0.1.

The pure part (how a peer is named, why a link closed) is checked with hypothesis first; then
three ``qiz node start`` processes: A, C linked through A, and B, which closes links it does not
use after a second (``[links] idle_close``), so that its link to C goes and a ping by C's id
has to find C through the DHT.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz import __version__, peer_memory
from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity
from qiz.peer_ref import MIN_PREFIX, AmbiguousPeer, UnknownPeer, match_prefix, parse_peer_ref
from qiz.procs import NodeProcess
from qiz.qmp.errors import NOT_QMP, ErrorCode, QmpError
from qiz.qmp.frames import FrameDecoder, FrameKind
from qiz.qmp.manager import DEPARTED_PEER_TTL, MAX_DEPARTED_PEERS, LinkManager, leave_reason

from .helpers import eventually, ok_json, one_line_error, qiz, qiz_init, record_of

pytestmark = pytest.mark.timeout(180)

digests = st.binary(min_size=32, max_size=32)
ports = st.integers(min_value=1, max_value=65535)
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

# ------------------------------------------------------------------------------ naming a peer


@given(digests, st.integers(min_value=MIN_PREFIX, max_value=56), st.booleans(), st.booleans())
def test_an_id_or_any_long_enough_prefix_of_it_names_it(
    digest: bytes, length: int, with_prefix: bool, upper: bool
) -> None:
    node = NodeId(digest)
    assert parse_peer_ref(str(node)).node_id == node
    body = str(node)[len(NodeId.PREFIX) :][:length]
    text = (NodeId.PREFIX if with_prefix else "") + body
    ref = parse_peer_ref(text.upper() if upper else text)
    if length == 56:
        assert ref.node_id == node
    else:
        assert ref.prefix == NodeId.PREFIX + body and ref.node_id is None
        assert match_prefix(ref.prefix, [node]) == node


@given(digests, st.integers(min_value=0, max_value=255), ports)
def test_an_address_with_or_without_the_id_it_pins(digest: bytes, last: int, port: int) -> None:
    address = f"10.0.0.{last}:{port}"
    assert parse_peer_ref(address).address == address
    assert parse_peer_ref(address).node_id is None
    pinned = parse_peer_ref(f"{NodeId(digest)}@{address}")
    assert (pinned.address, pinned.node_id) == (address, NodeId(digest))


@given(st.text(max_size=70))
def test_anything_else_is_one_clear_error_or_a_reference(text: str) -> None:
    try:
        ref = parse_peer_ref(text)
    except (InvalidIdentifier, ValueError) as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert [ref.address, ref.node_id, ref.prefix].count(None) >= 1


@given(digests, digests)
def test_a_prefix_two_ids_share_is_ambiguous_and_names_both(a: bytes, b: bytes) -> None:
    first, second = NodeId(a[:5] + b"\x00" + a[6:]), NodeId(a[:5] + b"\x01" + b[6:])
    shared = str(first)[: len(NodeId.PREFIX) + 8]  # 5 equal bytes: 8 equal base32 characters
    with pytest.raises(AmbiguousPeer) as caught:
        match_prefix(shared, [first, second, first])
    message = str(caught.value)
    assert "2 peers" in message and "\n" not in message
    assert str(first)[: len(shared) + 6] in message and str(second)[: len(shared) + 6] in message
    assert match_prefix(str(first), [first, second]) == first
    with pytest.raises(UnknownPeer, match="no known peer"):
        match_prefix(shared, [])


@given(st.integers(min_value=0, max_value=255), st.sampled_from(["10.0.0", "localhost", "a.b"]))
def test_a_host_without_its_port_is_told_so(last: int, host: str) -> None:
    text = f"{host}.{last}"
    with pytest.raises(InvalidIdentifier) as caught:
        parse_peer_ref(text)
    assert str(caught.value) == f"{text}: an address needs a port, e.g. {text}:7451"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=MIN_PREFIX, max_size=40))
def test_an_unknown_prefix_is_echoed_as_typed(typed: str) -> None:
    ref = parse_peer_ref(typed)
    assert ref.prefix is not None
    with pytest.raises(UnknownPeer) as caught:
        match_prefix(ref.prefix, [], ref.text)
    assert str(caught.value).startswith(f"{typed!r} names no known peer")


@settings(max_examples=50)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=90),
            st.integers(),
            st.none(),
            st.builds(lambda d, p: f"{NodeId(d)}@10.0.0.1:{p}", digests, ports),
        ),
        max_size=40,
    )
)
def test_the_remembered_peers_file_is_read_forgivingly(entries: list) -> None:
    """Whatever peers.json holds, reading it gives at most MAX_REMEMBERED_PEERS entries, each a
    peer by id and address; a write then a read gives the list back."""
    home = Path(tempfile.mkdtemp())
    try:
        (home / peer_memory.PEERS_FILE).write_text(json.dumps({"peers": entries}))
        got = peer_memory.load(home)
        assert len(got) <= peer_memory.MAX_REMEMBERED_PEERS
        for entry in got:
            ref = parse_peer_ref(entry)
            assert ref.address is not None and ref.node_id is not None
        (home / peer_memory.PEERS_FILE).write_bytes(b"\xff not json")
        assert peer_memory.load(home) == []
        peer_memory.save(home, got)
        assert peer_memory.load(home) == got
    finally:
        shutil.rmtree(home)


def test_remembered_peers_are_bounded_newest_first_one_per_id() -> None:
    ids = [NodeIdentity.generate().node_id for _ in range(peer_memory.MAX_REMEMBERED_PEERS + 3)]
    before = [f"{node}@10.0.0.1:{7000 + i}" for i, node in enumerate(ids)]
    now = [f"{ids[-1]}@10.0.0.2:1", f"{ids[-1]}@10.0.0.3:1"]
    merged = peer_memory.merge(now, before)
    assert len(merged) == peer_memory.MAX_REMEMBERED_PEERS
    assert merged[0] == now[0] and merged[1:] == before[: len(merged) - 1]


def test_bytes_that_are_not_qmp_are_said_to_be_so_only_before_the_first_frame() -> None:
    with pytest.raises(QmpError, match=f"^{NOT_QMP} "):
        FrameDecoder(1024).feed(b"HTTP/1.1 400 Bad Request\r\n")
    decoder = FrameDecoder(1024)
    assert len(decoder.feed(bytes([FrameKind.HELLO]) + b"\x00\x00\x01x")) == 1
    with pytest.raises(QmpError, match=r"^unknown frame kind 72$"):
        decoder.feed(b"HTTP")


def test_too_short_or_foreign_text_is_no_peer() -> None:
    for text in ("qizn1", "abc", "qizn1ab!", "qizc1aaaa", "1.2.3.4:99999", "x@1.2.3.4:5"):
        with pytest.raises(ValueError):  # InvalidIdentifier is one
            parse_peer_ref(text)


@pytest.mark.parametrize(
    ("code", "reason", "by_peer", "said"),
    [
        (ErrorCode.SHUTDOWN, "node shutting down", True, "peer stopping"),
        (ErrorCode.SHUTDOWN, "node shutting down", False, "node stopping"),
        (ErrorCode.IDLE_TIMEOUT, "idle", False, "idle"),
        (ErrorCode.IDLE_TIMEOUT, "nothing received for too long", False, "keepalive timeout"),
        (ErrorCode.NORMAL_CLOSE, "peer closed the connection", True, "closed by peer"),
        (ErrorCode.NORMAL_CLOSE, "connection lost: reset", True, "IO error: reset"),
        (ErrorCode.PROTOCOL_ERROR, "bad frame", False, "protocol error: bad frame"),
    ],
)
def test_why_a_peer_left(code: ErrorCode, reason: str, by_peer: bool, said: str) -> None:
    assert leave_reason(code, reason, by_peer) == said


def test_departed_peers_are_bounded_in_number_and_age() -> None:
    """The memory of peers that left holds the newest MAX_DEPARTED_PEERS, none older than
    DEPARTED_PEER_TTL, and lists the most recent first."""
    now = [1_000_000.0]
    identity = NodeIdentity.generate()
    links = LinkManager(identity, lambda: record_of(identity), {}, clock=lambda: now[0])
    for i in range(MAX_DEPARTED_PEERS + 10):
        links.departed[NodeId(i.to_bytes(32, "big"))] = {"left_at": now[0], "n": i}
        now[0] += 1
        links._forget_departed()
    rows = links.peer_rows()
    assert len(rows) == MAX_DEPARTED_PEERS
    assert [row["n"] for row in rows[:2]] == [MAX_DEPARTED_PEERS + 9, MAX_DEPARTED_PEERS + 8]
    now[0] += DEPARTED_PEER_TTL - MAX_DEPARTED_PEERS / 2
    assert 0 < len(links.peer_rows()) < MAX_DEPARTED_PEERS
    now[0] += DEPARTED_PEER_TTL
    assert links.peer_rows() == []


# ------------------------------------------------------------------------------ three nodes


def peers_of(node: NodeProcess) -> dict[str, dict]:
    """``qiz peers --json`` of a node, by peer id (its shape checked against docs/json)."""
    answer = ok_json(qiz(node.cwd, "--home", str(node.home), "peers", "--json"))
    assert answer["node_id"] == node.node_id
    return {row["node_id"]: row for row in answer["peers"]}


def offline(node: NodeProcess, peer: str) -> bool:
    """Whether ``node`` lists ``peer`` as offline (asked over its control socket: cheaper than
    a CLI process per poll)."""
    rows = node.request("peers")["result"]["peers"]
    return any(row["node_id"] == peer and row["state"] == "offline" for row in rows)


def test_ping_peers_connect_and_resolve_by_id_prefix_and_address(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    qiz_init(tmp_path, "A", "B", "C")
    # B closes links it does not use within a second (its bootstrap link to A is pinned)
    with (tmp_path / "B" / "config.toml").open("a") as config:
        config.write("\n[links]\nkeepalive_interval = 0.3\nidle_close = 1.0\n")
    a = start_node("A")
    c = start_node("C", [a.bootstrap])
    b = start_node("B", [a.bootstrap])

    def run(node: NodeProcess, *args: str) -> object:
        return qiz(tmp_path, "--home", str(node.home), *args)

    # B links to C while joining, then closes that idle link: C is shown offline, with why
    eventually(lambda: offline(b, c.node_id), 30, "B to close its idle link to C")
    left = peers_of(b)[c.node_id]
    assert left["left_reason"] == "idle" and left["left_at"] >= left["connected_at"]
    assert peers_of(b)[a.node_id]["state"] == "online"

    # ping C by a prefix of its id: B's node is not linked to it, so it finds C in the DHT
    prefix = c.node_id[:12]
    ping = ok_json(run(b, "ping", prefix, "-c", "2", "--json"))
    assert ping["node_id"] == c.node_id and len(ping["rtt_ms"]) == 2
    assert ping["address"] == c.address and all(r > 0 for r in ping["rtt_ms"])

    # the node's own view: A online with RTT, traffic, ISO times in the table
    # a row's address is where the peer listens, whoever dialled; remote_address the far end
    # of the socket (for C's inbound link to A: its source port)
    for node, peer in ((a, c), (a, b), (b, a)):
        row = peers_of(node)[peer.node_id]
        assert row["address"] == peer.address, row
        assert row["remote_address"] == peer.address or row["direction"] == "in", row
    row = peers_of(b)[a.node_id]
    assert row["direction"] in ("in", "out") and row["path"] == "direct"
    assert row["bytes_sent"] > 0 and row["last_seen_at"] >= row["connected_at"]
    table = run(b, "peers")
    assert table.returncode == 0 and a.node_id[:20] in table.stdout
    assert "KiB" in table.stdout and ISO.search(table.stdout), table.stdout

    # connect: by address (C's node says who answered), by ID@ADDR, and failures in one line
    linked = ok_json(run(a, "connect", c.address, "--json"))
    assert linked["node_id"] == c.node_id and linked["rtt_ms"] > 0
    pinned = ok_json(run(b, "connect", f"{a.node_id}@{a.address}", "--json"))
    assert pinned["node_id"] == a.node_id and pinned["already_linked"] is True
    stranger = NodeIdentity.generate().node_id
    assert a.node_id in one_line_error(run(b, "connect", f"{stranger}@{a.address}", "--json"))
    refused = one_line_error(run(b, "connect", "127.0.0.1:1"))
    assert refused == "qiz: error: cannot reach 127.0.0.1:1: connection refused"
    # something that answers but is no QIZ node (A's own HTTP API), by the node and from here
    assert a.api is not None
    http = a.api.removeprefix("http://").rstrip("/")
    for command in ("connect", "ping"):
        line = one_line_error(run(b, command, http))
        assert line == f"qiz: error: {http} answered but is not a QIZ node (it does not speak QMP)"
    # what the user typed, not what it was read as; a missing port said as such
    assert "'nonsense' names no known peer" in one_line_error(run(b, "connect", "nonsense"))
    assert "needs a port" in one_line_error(run(b, "connect", "127.0.0.1", "--json"))

    # unknown and malformed prefixes: one line each, exit 2
    assert "no known peer" in one_line_error(run(b, "ping", "qizn1zzzzzzzz", "--json"))
    assert "at least" in one_line_error(run(b, "ping", "qizn1a"))

    # resolve and a name's owner by prefix
    resolved = ok_json(run(b, "resolve", a.node_id[:14], "--json"))
    assert resolved["node_id"] == a.node_id and resolved["expires_at"] > 0
    published = ok_json(run(a, "name", "publish", "lab", "v1", "--json"))
    assert published["owner"] == a.node_id and published["stored_on"] >= 1
    said = run(a, "name", "publish", "lab", "v2").stdout + run(a, "node", "status").stdout
    assert "stored on " in said and "dht " in said
    assert not re.search(r"\b1 (node|contact|record|lookup|peer|slot|qubit)s\b", said), said
    named = ok_json(run(b, "name", "resolve", f"{a.node_id[:14]}/lab", "--json"))
    assert (named["owner"], named["value"]) == (a.node_id, "v2")  # the newest

    # a peer that stops is kept, offline, with when and why it left
    c.proc.send_signal(signal.SIGTERM)
    assert c.wait(20) == 0

    eventually(lambda: offline(a, c.node_id), 20, "A to see C leave")
    gone = peers_of(a)[c.node_id]
    assert gone["left_reason"] == "peer stopping" and gone["rtt_ms"] is not None
    status = ok_json(run(a, "node", "status", "--json"))
    assert c.node_id not in [link["node_id"] for link in status["links"]]
    assert all(link["state"] == "online" for link in status["links"])
    human = run(a, "peers")
    assert "1 peer left" in human.stdout and "peer stopping" in human.stdout
    # its prefix still names it (a departed peer is known), so the error is about the link
    assert "no known peer" not in one_line_error(run(a, "ping", c.node_id[:12], "-c", "1"))


def test_version_flag() -> None:
    result = qiz(Path.cwd(), "--version")
    assert (result.returncode, result.stdout) == (0, f"qiz {__version__}\n")
    assert json.loads(qiz(Path.cwd(), "version", "--json").stdout)["version"] == __version__
