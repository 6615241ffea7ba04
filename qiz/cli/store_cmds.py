"""Storage pool commands: ``store put|get|ls|status|pin|unpin|rm|gc`` (docs/store.md).

The home's running node does the work (it holds the identity, the links and the pool); these
commands name what to do. Paths are made absolute here, since the node does not share the
command's working directory; ids are checked here, so a typo is one line before anything is
sent. Rendering for people is in :mod:`qiz.cli.store_view`; the JSON shapes are
docs/json/store-*.schema.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from qiz.cli import store_view
from qiz.cli.common import Session, node_call
from qiz.cli.output import UserError, console, emit, err_console, guarded
from qiz.cli.store_transfer import run_transfer
from qiz.crypto.ids import BODY_LENGTH, ContentId, NodeId
from qiz.store.limits import MAX_RECIPIENTS, MAX_SHARES

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ContentArgument = Annotated[str, typer.Argument(help="Content id (qizc1...).")]
store_app = typer.Typer(help="Store content in the mesh (erasure-coded, optionally sealed).")
PANEL = "Storage"  # the heading these commands have in 'qiz --help'


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store", rich_help_panel=PANEL)
    store_app.command("put")(guarded(put))
    store_app.command("get")(guarded(get))
    store_app.command("ls")(guarded(ls))
    store_app.command("status")(guarded(status))
    store_app.command("pin")(guarded(pin))
    store_app.command("unpin")(guarded(unpin))
    store_app.command("rm")(guarded(rm))
    store_app.command("gc")(guarded(gc))


def absolute(path: Path) -> str:
    """``path`` as the node must see it: absolute, symlinks left as they are (the node names a
    symlink it refuses rather than following it)."""
    return os.path.abspath(path)


def content_id(text: str) -> str:
    """The content id as typed, checked (prefix, length, alphabet, checksum)."""
    return str(ContentId.parse(text))


def recipient(text: str) -> str:
    """A ``--to`` value as the node takes it: a node id (checked when whole, a prefix as is)
    or the absolute path of a peer record file (``qiz record``)."""
    if text.startswith(NodeId.PREFIX):
        if len(text) >= len(NodeId.PREFIX) + BODY_LENGTH:
            return str(NodeId.parse(text))
        return text
    path = Path(text)
    if not path.is_file():
        raise UserError(f"--to {text}: no such peer record file, and not a node id (qizn1...)")
    return absolute(path)


def _bar(as_json: bool) -> bool:
    return not as_json and err_console.is_terminal


def put(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A file or directory to store.")],
    *,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to", help="Seal it to this recipient: a peer record file or node id (repeatable)."
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("--k", min=1, max=MAX_SHARES, help="Shares needed to read it (default 3)."),
    ] = None,
    n: Annotated[
        int | None,
        typer.Option("--n", min=1, max=MAX_SHARES, help="Shares made, one per holder (default 5)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Store PATH in the pool through the home's node; print its content id."""
    session: Session = ctx.obj
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist")
    if k is not None and n is not None and k > n:
        raise UserError(f"--k {k} is more than --n {n}: k of the n shares rebuild the content")
    recipients = [recipient(text) for text in to or ()]
    if len(recipients) > MAX_RECIPIENTS:
        raise UserError(f"--to: at most {MAX_RECIPIENTS} recipients")
    answer = run_transfer(
        session,
        "store_put",
        bar=_bar(as_json),
        path=absolute(path),
        k=k,
        n=n,
        to=recipients,
    )

    def human() -> None:
        console.print(answer["cid"], markup=False)  # alone on stdout: ID=$(qiz store put F)
        err_console.print(store_view.put_text(answer), markup=False)

    emit(as_json, answer, human)


def get(
    ctx: typer.Context,
    cid: ContentArgument,
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write it here (default: its own name in this directory)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace what is there.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fetch content by id, check every chunk, and write it (never over a file without
    --force)."""
    session: Session = ctx.obj
    wanted = content_id(cid)
    target: dict[str, Any]
    if output is None:
        target = {"output": absolute(Path.cwd()), "into": True}
    else:
        if (output.exists() or output.is_symlink()) and not force:
            raise UserError(f"{output} exists; give --force to replace it")
        target = {"output": absolute(output), "into": False}
    answer = run_transfer(
        session, "store_get", bar=_bar(as_json), cid=wanted, force=force, **target
    )
    emit(as_json, answer, lambda: console.print(store_view.get_text(answer), markup=False))


def ls(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Content this node published or pins, with its health."""
    answer = node_call(ctx.obj, "store_ls")
    emit(as_json, answer, lambda: store_view.show_listing(answer["content"]))


def status(ctx: typer.Context, cid: ContentArgument, as_json: JsonOption = False) -> None:
    """Each share of a content: its holder, state and lease; and the content's health."""
    answer = node_call(ctx.obj, "store_status", cid=content_id(cid))
    emit(as_json, answer, lambda: store_view.show_status(answer))


def pin(ctx: typer.Context, cid: ContentArgument, as_json: JsonOption = False) -> None:
    """Keep content alive from this node too (renew its leases, repair it)."""
    answer = node_call(ctx.obj, "store_pin", cid=content_id(cid))
    emit(as_json, answer, lambda: console.print(f"pinned {answer['cid']}", markup=False))


def unpin(ctx: typer.Context, cid: ContentArgument, as_json: JsonOption = False) -> None:
    """Stop keeping content alive from this node (its leases lapse unless renewed)."""
    answer = node_call(ctx.obj, "store_unpin", cid=content_id(cid))
    emit(as_json, answer, lambda: console.print(f"unpinned {answer['cid']}", markup=False))


def rm(ctx: typer.Context, cid: ContentArgument, as_json: JsonOption = False) -> None:
    """Release this node's leases on content and forget it."""
    answer = node_call(ctx.obj, "store_rm", cid=content_id(cid))
    emit(as_json, answer, lambda: console.print(f"removed {answer['cid']}", markup=False))


def gc(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Delete the shares this node holds that no live lease keeps (the collector, now)."""
    answer = node_call(ctx.obj, "store_gc")
    emit(as_json, answer, lambda: console.print(store_view.gc_text(answer), markup=False))
