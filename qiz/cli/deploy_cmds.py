"""Deploy engine commands: ``deploy build|publish|install|follow|unfollow|ls|status|logs|
rollback|stop|run`` (docs/deploy.md), and ``deploy keygen|rotate`` for a channel's keys
(docs/deploy-node.md, "Channel keys").

The home's running node does the work (it holds the identity, the pool, the channel and the
supervised children); these commands name what to do. What can be checked here is checked here
(a bundle directory and its ``qiz-bundle.toml``, a channel's form, a bundle name), so a mistake
is one line before anything is sent. Paths are made absolute: the node does not share the
command's working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from qiz.cli.common import node_call
from qiz.cli.output import UserError, console, emit, err_console, guarded
from qiz.cli.store_cmds import recipient
from qiz.fsio import write_atomic
from qiz.store.limits import MAX_RECIPIENTS

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
NameArgument = Annotated[str, typer.Argument(help="The bundle's NAME.")]
ChannelArgument = Annotated[
    str, typer.Argument(help="OWNER/deploy/NAME (or OWNER/NAME; OWNER a node id or prefix).")
]
ToOption = Annotated[
    list[str] | None,
    typer.Option(
        "--to", help="Seal it to this recipient: a peer record file or node id (repeatable)."
    ),
]
SignerOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--signer",
        help="A key file (qiz deploy keygen) to sign with beside the node's key (repeatable).",
    ),
]
ROLE_NAMES = ("root", "targets", "snapshot", "timestamp")
# qiz.deploy.signing.NODE_KEY, named again here for the help text: the channel code (tuf,
# securesystemslib) loads only in the commands that sign (tests/test_cli_startup.py checks)
NODE_KEY = "node"
deploy_app = typer.Typer(
    help="Publish signed bundles on a channel; install, follow and run them supervised."
)
PANEL = "Deploy"  # the heading these commands have in 'qiz --help'
SLOW = 600.0  # seconds a publish or an install may take (a large bundle over the pool)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy", rich_help_panel=PANEL)
    for name, command in (
        ("build", build),
        ("publish", publish),
        ("install", install),
        ("follow", follow),
        ("unfollow", unfollow),
        ("ls", ls),
        ("status", status),
        ("logs", logs),
        ("rollback", rollback),
        ("stop", stop),
        ("run", run),
        ("keygen", keygen),
        ("rotate", rotate),
    ):
        deploy_app.command(name)(guarded(command))


def bundle_dir(path: Path) -> str:
    """A bundle directory as the node must see it (absolute), its manifest checked here."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (a bundle is a directory with qiz-bundle.toml)")
    from qiz.deploy.bundle import load_bundle

    load_bundle(path)
    return os.path.abspath(path)


def key_files(paths: list[Path] | None, option: str) -> list[str]:
    """Key files as the node must see them (absolute), each checked to exist here."""
    found = []
    for path in paths or ():
        if not path.is_file():
            raise UserError(f"{option} {path}: no such key file (make one with qiz deploy keygen)")
        found.append(os.path.abspath(path))
    return found


def recipients(to: list[str] | None) -> list[str]:
    found = [recipient(text) for text in to or ()]
    if len(found) > MAX_RECIPIENTS:
        raise UserError(f"--to: at most {MAX_RECIPIENTS} recipients")
    return found


def channel(text: str) -> str:
    from qiz.deploy.mesh_source import split_channel

    split_channel(text)  # one line for a malformed channel before the node is asked
    return text.strip()


def name_of(text: str) -> str:
    from qiz.deploy.bundle import check_name

    return check_name(text, "bundle name")


def _state_line(row: dict[str, Any]) -> str:
    parts = [
        row["name"],
        row.get("current") or "-",
        row.get("state") or "stopped",
        f"restarts {row.get('restarts', 0)}",
    ]
    if row.get("following"):
        parts.append("following")
    if row.get("bad"):
        parts.append(f"bad {','.join(row['bad'])}")
    if row.get("channel"):
        parts.append(row["channel"])
    return "  ".join(parts)


def build(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A bundle directory (with qiz-bundle.toml).")],
    *,
    to: ToOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store a bundle's files in the pool; print the content id and every file's hash."""
    answer = node_call(ctx.obj, "deploy_build", SLOW, path=bundle_dir(path), to=recipients(to))

    def human() -> None:
        console.print(answer["content"], markup=False)
        err_console.print(
            f"{answer['name']} {answer['version']}: {len(answer['files'])} files", markup=False
        )

    emit(as_json, answer, human)


def publish(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A bundle directory (with qiz-bundle.toml).")],
    *,
    channel_name: Annotated[
        str | None,
        typer.Option("--channel", help="The channel's NAME (default: the bundle's name)."),
    ] = None,
    to: ToOption = None,
    signer: SignerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a bundle as a new version of its channel OWNER/deploy/NAME (signed with TUF)."""
    arguments: dict[str, Any] = {
        "path": bundle_dir(path),
        "to": recipients(to),
        "signers": key_files(signer, "--signer"),
    }
    if channel_name is not None:
        arguments["channel"] = name_of(channel_name)
    answer = node_call(ctx.obj, "deploy_publish", SLOW, **arguments)

    def human() -> None:
        console.print(answer["channel"], markup=False)
        what = (
            "its tree and name record, which had failed"
            if answer.get("retried")
            else f"{answer['files']} files, {answer['size']} bytes"
        )
        err_console.print(
            f"published {answer['name']} {answer['version']} ({what}); "
            f"versions: {', '.join(answer['versions'])}",
            markup=False,
        )

    emit(as_json, answer, human)


def _installed_text(answer: dict[str, Any]) -> str:
    if answer.get("skipped"):
        return (
            f"{answer['name']}: the newest version {answer['skipped']} was rolled back from "
            f"here; staying on {answer.get('version')}"
        )
    verb = "installed" if answer.get("installed") else "already on"
    return f"{answer['name']}: {verb} {answer.get('version')} from {answer['channel']}"


def install(ctx: typer.Context, target: ChannelArgument, as_json: JsonOption = False) -> None:
    """Install the newest version of a channel (TUF-verified, atomic)."""
    answer = node_call(ctx.obj, "deploy_install", SLOW, channel=channel(target))
    emit(as_json, answer, lambda: console.print(_installed_text(answer), markup=False))


def follow(ctx: typer.Context, target: ChannelArgument, as_json: JsonOption = False) -> None:
    """Install a channel's newest version, run it, and keep this node on the newest."""
    answer = node_call(ctx.obj, "deploy_follow", SLOW, channel=channel(target))

    def human() -> None:
        console.print(_installed_text(answer), markup=False)
        console.print(f"following {answer['channel']} every {answer['every']:g} s", markup=False)

    emit(as_json, answer, human)


def unfollow(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Stop following a channel (what is installed stays, and runs if it ran)."""
    answer = node_call(ctx.obj, "deploy_unfollow", name=name_of(name))
    emit(as_json, answer, lambda: console.print(f"unfollowed {answer['channel']}", markup=False))


def ls(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Bundles installed on this node, and channels it publishes."""
    answer = node_call(ctx.obj, "deploy_ls")

    def human() -> None:
        if not answer["bundles"] and not answer["channels"]:
            console.print("no bundles installed and no channels published", markup=False)
        for row in answer["bundles"]:
            console.print(_state_line(row), markup=False)
        for row in answer["channels"]:
            versions = ", ".join(row["versions"]) or "no versions"
            console.print(f"publishes {row['channel']}: {versions}", markup=False)

    emit(as_json, answer, human)


def status(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """One bundle: its versions, its state, restarts, rollbacks, the last refresh."""
    answer = node_call(ctx.obj, "deploy_status", name=name_of(name))

    def human() -> None:
        console.print(_state_line(answer), markup=False)
        console.print(f"installed: {', '.join(answer['installed'])}", markup=False)
        if answer.get("reason") and answer.get("state") in ("failed", "backoff", "exited"):
            console.print(f"reason: {answer['reason']}", markup=False)
        if answer.get("rolled_back"):
            console.print(f"rolled back from: {', '.join(answer['rolled_back'])}", markup=False)
        if answer.get("job"):
            console.print(f"job: {answer['job']} (qiz job status {answer['job']})", markup=False)
        refresh = answer.get("last_refresh")
        if refresh and refresh.get("error"):
            console.print(f"last refresh failed: {refresh['error']}", markup=False)

    emit(as_json, answer, human)


def logs(
    ctx: typer.Context,
    name: NameArgument,
    *,
    size: Annotated[
        int, typer.Option("--bytes", min=1, max=64 * 1024, help="How much of the log's end.")
    ] = 16 * 1024,
    as_json: JsonOption = False,
) -> None:
    """The end of a bundle's log: its output and the supervisor's [qiz] lines."""
    answer = node_call(ctx.obj, "deploy_logs", name=name_of(name), size=size)
    emit(as_json, answer, lambda: console.print(answer["text"], markup=False, end=""))


def rollback(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Switch a bundle back to its previous good version (the one left is marked bad)."""
    answer = node_call(ctx.obj, "deploy_rollback", 120.0, name=name_of(name))
    emit(
        as_json,
        answer,
        lambda: console.print(
            f"{answer['name']}: rolled back from {answer['from']} to {answer['to']}", markup=False
        ),
    )


def stop(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Stop a running bundle (and keep it stopped across node restarts)."""
    answer = node_call(ctx.obj, "deploy_stop", 120.0, name=name_of(name))
    emit(as_json, answer, lambda: console.print(_state_line(answer), markup=False))


def run(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Run a bundle's current version under supervision (and again after node restarts)."""
    answer = node_call(ctx.obj, "deploy_run", 60.0, name=name_of(name))
    emit(as_json, answer, lambda: console.print(_state_line(answer), markup=False))


def keygen(
    out: Annotated[Path, typer.Argument(help="The key file to write (never overwritten).")],
    *,
    slh_dsa: Annotated[
        bool, typer.Option("--slh-dsa", help="An SLH-DSA key (for a long-lived root).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a channel signing key file (composite ML-DSA-65 + Ed25519, or SLH-DSA), mode 0600."""
    if out.exists() or out.is_symlink():
        raise UserError(f"{out} already exists: keygen never overwrites a key file")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} is not a directory")
    from qiz.deploy.signing import generate_signer, key_file_bytes

    signer = generate_signer(slh_dsa)
    write_atomic(out, key_file_bytes(signer), 0o600)
    key = signer.public_key
    answer = {"path": os.path.abspath(out), "keyid": key.keyid, "keytype": key.keytype}

    def human() -> None:
        console.print(key.keyid, markup=False)
        err_console.print(f"wrote {key.keytype} key {out} (keep it offline)", markup=False)

    emit(as_json, answer, human)


def rotate(
    ctx: typer.Context,
    name: NameArgument,
    *,
    role: Annotated[str, typer.Option("--role", help="root, targets, snapshot or timestamp.")],
    key: Annotated[
        list[str],
        typer.Option(
            "--key",
            help=f"A key file to hold the role, or '{NODE_KEY}' for this node's key (repeatable).",
        ),
    ],
    threshold: Annotated[
        int, typer.Option("--threshold", min=1, help="How many of the keys must sign.")
    ] = 1,
    signer: SignerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a role of a channel you publish new keys, k of n (a new root version, pushed)."""
    if role not in ROLE_NAMES:
        raise UserError(f"--role must be one of {', '.join(ROLE_NAMES)}, not {role!r}")
    if threshold > len(key):
        raise UserError(f"--threshold {threshold} is more than the {len(key)} keys given")
    keys = [k if k == NODE_KEY else key_files([Path(k)], "--key")[0] for k in key]
    answer = node_call(
        ctx.obj,
        "deploy_rotate",
        120.0,
        name=name_of(name),
        role=role,
        keys=keys,
        threshold=threshold,
        signers=key_files(signer, "--signer"),
    )

    def human() -> None:
        console.print(answer["channel"], markup=False)
        for each, spec in answer["roles"].items():
            ids = ", ".join(k[:16] for k in spec["keyids"])
            console.print(f"{each}: {spec['threshold']} of {ids}", markup=False)
        err_console.print(f"root v{answer['root_version']} published", markup=False)

    emit(as_json, answer, human)
