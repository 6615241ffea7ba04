"""Resolution commands: ``resolve ID`` and ``name publish|resolve``, served by the running node."""

from __future__ import annotations

from typing import Annotated

import typer

from qiz.cli.common import node_call
from qiz.cli.human import moment, plural
from qiz.cli.output import UserError, console, emit, guarded
from qiz.cli.peer_cmds import peer_ref
from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import normalize_label
from qiz.resolve.records import MAX_TTL

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
name_app = typer.Typer(help="Publish and resolve signed names.", no_args_is_help=True)
LOOKUP_TIMEOUT = 60.0


PANEL = "Node and mesh"  # the heading these commands have in 'qiz --help'


def register(app: typer.Typer) -> None:
    app.command("resolve", rich_help_panel=PANEL)(guarded(resolve))
    app.add_typer(name_app, name="name", rich_help_panel=PANEL)
    name_app.command("publish")(guarded(publish))
    name_app.command("resolve")(guarded(name_resolve))


def resolve(
    ctx: typer.Context,
    node_id: Annotated[
        str,
        typer.Argument(
            metavar="PEER", help="A node id (qizn1...), a unique prefix of one, or ip:port."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Find a node's signed peer record through the DHT, verify it, and link to it.

    A prefix names a node the running node knows; an address is linked to, and the record is
    the one its node proved in the handshake."""
    peer_ref(node_id)
    result = node_call(ctx.obj, "resolve", LOOKUP_TIMEOUT, id=node_id)

    def human() -> None:
        console.print(f"node      {result['node_id']}", markup=False)
        console.print(f"addresses {', '.join(result['addresses']) or '(none)'}", markup=False)
        console.print(
            f"seq {result['seq']}, expires {moment(result['expires_at'])}, "
            f"resolved in {result['resolve_ms']:.1f} ms"
            + (f", linked at {result['linked']}" if result["linked"] else "")
        )

    emit(as_json, result, human)


def publish(
    ctx: typer.Context,
    label: Annotated[str, typer.Argument(help="The name's label, under this node's id.")],
    value: Annotated[str, typer.Argument(help="What the name points to (text, <= 1 KiB).")],
    ttl: Annotated[int, typer.Option("--ttl", min=1, max=MAX_TTL, help="Seconds.")] = 3600,
    as_json: JsonOption = False,
) -> None:
    """Publish LABEL -> VALUE, signed by this node, for OWNER_ID/LABEL lookups."""
    try:
        normalize_label(label)
    except InvalidIdentifier as exc:
        raise UserError(str(exc)) from None
    if len(value.encode("utf-8")) > 1024:
        raise UserError("a name's value is at most 1024 bytes")
    result = node_call(ctx.obj, "name_publish", LOOKUP_TIMEOUT, label=label, value=value, ttl=ttl)
    emit(
        as_json,
        result,
        lambda: console.print(
            f"published {result['owner']}/{label} ({result['name']}), "
            f"stored on {plural(result['stored_on'], 'node')}",
            markup=False,
        ),
    )


def name_resolve(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="OWNER/LABEL; OWNER is a node id, a unique prefix of one, or ip:port."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Resolve OWNER_ID/LABEL to its value (the newest signed record)."""
    owner, sep, label = name.partition("/")
    if not sep or not label:
        raise UserError("a name is OWNER_ID/LABEL")
    peer_ref(owner)
    try:
        normalize_label(label)
    except InvalidIdentifier as exc:
        raise UserError(str(exc)) from None
    result = node_call(ctx.obj, "name_resolve", LOOKUP_TIMEOUT, name=name)
    emit(as_json, result, lambda: console.print(result["value"], markup=False))
