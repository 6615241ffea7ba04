"""Mesh commands: ``ping``, ``peers`` and ``connect`` (as kubo's ``swarm peers`` and
tailscale's ``ping`` by name).

A peer is named the same way everywhere (:mod:`qiz.peer_ref`): ``ip:port``, ``ID@ip:port``, a
node id, or a unique prefix of one. ``ping ADDRESS`` dials directly with this home's identity
(no node needs to run); every other form goes to the running node, which knows the peers a
prefix may name and looks a full id up in the DHT.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from qiz.cli.common import Session, node_call, run_async
from qiz.cli.human import duration, moment, plural, size
from qiz.cli.output import UserError, console, emit, guarded
from qiz.identity import PeerRecord
from qiz.peer_ref import PeerRef, parse_peer_ref

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
PEER_HELP = "ip:port, ID@ip:port, a node id, or a unique prefix of one (as job ids take)."
LOOKUP_TIMEOUT = 60.0  # seconds for a DHT lookup and a handshake
PING_TIMEOUT = 5.0  # seconds each ping may take (the link's own default)
SHOWN_ID = 20  # characters of a node id human tables show ("qizn1" and 15 more)


PANEL = "Node and mesh"  # the heading these commands have in 'qiz --help'


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL)(guarded(ping))
    app.command(rich_help_panel=PANEL)(guarded(peers))
    app.command(rich_help_panel=PANEL)(guarded(connect))
    app.command(rich_help_panel=PANEL)(guarded(netcheck))


def peer_ref(text: str) -> PeerRef:
    """``text`` as a peer, or one line saying why it is none."""
    try:
        return parse_peer_ref(text)
    except ValueError as exc:  # InvalidIdentifier too
        raise UserError(str(exc)) from None


def short_id(node_id: str | None) -> str:
    """A node id cut for a table (``--json`` has it whole)."""
    if not node_id:
        return "?"
    return node_id if len(node_id) <= SHOWN_ID else node_id[:SHOWN_ID] + "..."


# ---------------------------------------------------------------------------- ping


def ping(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PEER", help=PEER_HELP)],
    count: Annotated[int, typer.Option("--count", "-c", min=1, max=10000)] = 4,
    as_json: JsonOption = False,
) -> None:
    """Measure round-trip times over a secure link to a node.

    An address is dialled from here (no node needs to run); an id or a prefix is pinged by
    this home's running node, which finds an id it is not linked to through the DHT."""
    session: Session = ctx.obj
    ref = peer_ref(target)
    if ref.address is not None:
        result = run_async(_dial_and_ping, session, ref, count)
    else:
        timeout = LOOKUP_TIMEOUT + count * PING_TIMEOUT
        result = node_call(session, "ping", timeout, target=target, count=count)

    def human() -> None:
        how = []
        if result.get("resolve_ms") is not None:
            how.append(f"found in the DHT in {result['resolve_ms']:.1f} ms")
        if result.get("handshake_ms") is not None:
            how.append(f"linked in {result['handshake_ms']:.1f} ms")
        else:
            how.append("over the node's link")
        console.print(f"{result['node_id']} at {result['address']}: {', '.join(how)}", markup=False)
        for i, rtt in enumerate(result["rtt_ms"], 1):
            console.print(f"  ping {i}: {rtt:.3f} ms", markup=False)
        console.print(f"median {result['rtt_median_ms']:.3f} ms", markup=False)

    emit(as_json, result, human)


async def _dial_and_ping(session: Session, ref: PeerRef, count: int) -> dict[str, Any]:
    """Ping an address over a link of our own (this home's identity, a short-lived record)."""
    import statistics

    from qiz.qmp.transport import LinkError, dial  # the mesh's code: only 'ping ADDRESS' dials

    assert ref.address is not None
    identity = session.identity()
    record = PeerRecord.create(identity, [], seq=int(time.time() * 1000), now=time.time())
    started = time.perf_counter()
    try:
        link = await dial(ref.address, identity, record, expected=ref.node_id)
    except LinkError as exc:
        raise UserError(str(exc)) from None
    handshake = time.perf_counter() - started
    rtts: list[float] = []
    try:
        for _ in range(count):
            rtts.append(await link.ping(PING_TIMEOUT))
    except (LinkError, TimeoutError) as exc:
        raise UserError(
            f"the link failed after {plural(len(rtts), 'ping')}: {exc or 'timed out'}"
        ) from None
    finally:
        link.close()
    return {
        "node_id": str(link.peer_id),
        "address": ref.address,
        "handshake_ms": round(handshake * 1000, 3),
        "resolve_ms": None,
        "rtt_ms": [round(r * 1000, 3) for r in rtts],
        "rtt_median_ms": round(statistics.median(rtts) * 1000, 3),
    }


# ---------------------------------------------------------------------------- peers


TRUST_ACTIONS = ("trust", "ban", "unban")


def peers(
    ctx: typer.Context,
    action: Annotated[
        str | None,
        typer.Argument(
            metavar="[trust|ban|unban]",
            help="Trust a peer (it always scores 1), ban it (its links are closed and "
            "refused, it gets nothing) or unban it (back to its measured score).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Argument(metavar="[PEER]", help=PEER_HELP, show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the running node's peers: linked ones (online) and those that left (offline,
    with when and why), with RTT, traffic, score and what counts against it; or trust, ban
    or unban one (docs/security.md, "Peer scores")."""
    if action is not None:
        _trust(ctx, action, target, as_json)
        return
    answer = node_call(ctx.obj, "peers", 10.0)

    def human() -> None:
        rows = answer["peers"]
        online = [row for row in rows if row["state"] == "online"]
        left = [row for row in rows if row["state"] != "online"]
        console.print(f"node {answer['node_id']}", markup=False)
        console.print(f"{plural(len(online), 'peer')} online", markup=False)
        print_lines(peer_lines(online))
        if left:
            console.print(f"{plural(len(left), 'peer')} left", markup=False)
            print_lines(departed_lines(left))

    emit(as_json, answer, human)


def _trust(ctx: typer.Context, action: str, target: str | None, as_json: bool) -> None:
    if action not in TRUST_ACTIONS:
        raise UserError(f"'{action}' is not one of {', '.join(TRUST_ACTIONS)} (or nothing: list)")
    if not target:
        raise UserError(f"qiz peers {action} needs a PEER: {PEER_HELP}")
    answer = node_call(ctx.obj, "peer_trust", LOOKUP_TIMEOUT, target=target, action=action)

    def human() -> None:
        word = {"trust": "trusted", "ban": "banned", "unban": "back to its measured score"}
        console.print(
            f"{answer['node_id']} {word[action]}: score {answer['score']:.2f}", markup=False
        )
        for reason, figures in answer["reasons"].items():
            console.print(
                f"  {reason}: {figures['count']:g} (costs {figures['cost']:.2f})", markup=False
            )

    emit(as_json, answer, human)


def print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def columns(header: list[str], rows: list[list[str]]) -> list[str]:
    """A plain text table, each column as wide as its widest cell: never cut or wrapped to a
    terminal's width (a piped table stays greppable), the last column left ragged."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _where(row: dict[str, Any]) -> str:
    return row["address"]  # where it listens (remote_address: an inbound link's source port)


def peer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Online peers (``qiz peers``, ``qiz node status``): ids cut (``--json`` has them
    whole), moments in ISO 8601, sizes with units."""
    header = ["peer", "address", "dir", "path", "rtt", "connected", "last seen", "score"]
    header += ["sent", "received"]
    return columns(
        header,
        [
            [
                short_id(row["node_id"]),
                _where(row),
                row["direction"],
                row["path"],
                "-" if row["rtt_ms"] is None else f"{row['rtt_ms']:.2f} ms",
                moment(row["connected_at"]),
                moment(row["last_seen_at"]),
                _score_cell(row),
                size(row["bytes_sent"]),
                size(row["bytes_received"]),
            ]
            for row in rows
        ],
    )


def _score_cell(row: dict[str, Any]) -> str:
    """The score, an operator's word on it, and what counts against it."""
    if row.get("score") is None:
        return "-"
    cell = f"{row['score']:.2f}"
    if row.get("trust"):
        cell += f" ({row['trust']})"
    elif row.get("reasons"):
        cell += " (" + ", ".join(row["reasons"]) + ")"
    return cell


def departed_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Peers that left: when they had linked, when they left and why."""
    header = ["peer", "address", "dir", "connected", "left", "sent", "received", "why"]
    return columns(
        header,
        [
            [
                short_id(row["node_id"]),
                _where(row),
                row["direction"],
                moment(row["connected_at"]),
                moment(row["left_at"]),
                size(row["bytes_sent"]),
                size(row["bytes_received"]),
                row["left_reason"] or "-",
            ]
            for row in rows
        ],
    )


# ---------------------------------------------------------------------------- connect


def connect(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PEER", help=PEER_HELP)],
    as_json: JsonOption = False,
) -> None:
    """Ask the running node to open a link to a peer (ADDR, ID@ADDR to pin its id, an id
    it finds through the DHT, or a prefix of a peer it knows); print the peer's id and RTT."""
    peer_ref(target)
    result = node_call(ctx.obj, "connect", LOOKUP_TIMEOUT + PING_TIMEOUT, target=target)

    def human() -> None:
        if result["already_linked"]:
            how = "already linked"
        else:
            how = f"linked in {duration(result['handshake_ms'] / 1000)}"
        console.print(
            f"{result['node_id']} at {result['address']} ({result['direction']}): {how}, "
            f"rtt {result['rtt_ms']:.2f} ms",
            markup=False,
        )

    emit(as_json, result, human)


# ---------------------------------------------------------------------------- netcheck


def netcheck(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Ask the running node whether peers can dial it (they try to, now), and show where they
    see it, how a NAT in front of it maps ports, and the relays it uses (docs/nat.md)."""
    result = node_call(ctx.obj, "netcheck", 30.0)

    def human() -> None:
        reach = result["reachability"]
        explain = {
            "public": "peers can dial this node",
            "private": "peers cannot dial this node: it is reached through relays",
            "unknown": "not known yet (no peer could check)",
        }[reach]
        console.print(f"reachability  {reach}: {explain}", markup=False)
        console.print(f"listening     {', '.join(result['listen']) or '-'}", markup=False)
        seen = ", ".join(result["public_addresses"]) or "-"
        console.print(f"seen at       {seen}", markup=False)
        console.print(f"NAT mapping   {result['mapping']}", markup=False)
        console.print(f"published     {', '.join(result['published']) or '-'}", markup=False)
        console.print(f"relays        {', '.join(result['relays']) or '-'}", markup=False)
        console.print(
            f"links         {result['links_direct']} direct, {result['links_relayed']} relayed",
            markup=False,
        )

    emit(as_json, result, human)
