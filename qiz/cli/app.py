"""The ``qiz`` command itself: global options, command registration, and the one place where
exceptions become exit codes and single error lines. Loaded by :mod:`qiz.cli.main`, which
catches a Ctrl-C that comes while this module's (heavy) imports still run."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from qiz import __version__
from qiz.cli import (
    cut_cmds,
    deploy_cmds,
    help_format,
    identity_cmds,
    job_cmds,
    ml_cmds,
    node_cmds,
    quantum_cmds,
    resolve_cmds,
    store_cmds,
    target_cmds,
    web_cmds,
)
from qiz.cli.common import Session
from qiz.cli.output import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    Interrupt,
    console,
    emit,
    err_console,
    guarded,
)
from qiz.crypto import require_pq_support
from qiz.home import Home

app = typer.Typer(
    name="qiz",
    help="QIZ: a zero-infrastructure, post-quantum-secure mesh for quantum workloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=help_format.QizGroup,
    context_settings=help_format.context_settings(),
)


def _print_version(given: bool) -> None:
    """``qiz --version``: the same line as ``qiz version``, before anything else runs."""
    if given:
        print(f"qiz {__version__}")
        raise typer.Exit()


@app.callback()
@guarded
def main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="Node home directory (default: $QIZ_HOME or the user data dir)."
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file", help="Read the key passphrase from this file (or $QIZ_PASSPHRASE)."
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Global options, then a command."""
    require_pq_support()
    ctx.obj = Session(home=Home(home), passphrase_file=passphrase_file)


@app.command(rich_help_panel=help_format.OTHER)
@guarded
def version(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the QIZ version."""
    emit(as_json, {"version": __version__}, lambda: print(f"qiz {__version__}"))


@app.command(rich_help_panel=help_format.OTHER)
@guarded
def demo(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the five nodes running; print the dashboard URL."),
    ] = False,
) -> None:
    """Run the end-to-end demo in a temporary home."""
    from qiz.demo import run_demo

    report = run_demo(as_json=as_json, keep=keep, console=console)
    mesh = report["mesh"]
    emit(
        as_json,
        report,
        lambda: console.print(
            f"all nodes stopped; {mesh['left_running']} processes left running; "
            f"the mesh part took {mesh['duration_s']:.1f} s",
            markup=False,
        ),
    )


identity_cmds.register(app)
node_cmds.register(app)
resolve_cmds.register(app)
quantum_cmds.register(app)
cut_cmds.register(app)
target_cmds.register(app)
ml_cmds.register(app)
job_cmds.register(app)
store_cmds.register(app)
deploy_cmds.register(app)
web_cmds.register(app)
help_format.apply(app)  # every group's help grouped and uncut, whoever registered it


def _fail(message: str, code: int, argv: list[str] | None = None) -> int:
    """One line on stderr; under ``--json`` also the failure object on stdout
    (docs/json/error.schema.json), whatever stage of the command line failed."""
    if argv is not None and "--json" in argv:
        body = {"ok": False, "error": message.removeprefix("error: "), "exit_code": code}
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
        sys.stdout.flush()
    err_console.print(f"qiz: {message}", markup=False)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code. Typer reports usage errors (exit 2); the
    commands turn QIZ's own errors into exit codes (:func:`qiz.cli.output.guarded`); anything
    left is a bug, reported in one line. Under ``--json`` every failure is also one JSON
    object on stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args and set(args) <= {"--version", "--json"}:  # qiz --version --json
        emit("--json" in args, {"version": __version__}, lambda: print(f"qiz {__version__}"))
        return 0
    try:
        result = app(args=args, prog_name="qiz", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.TyperException as exc:  # typer's usage errors: missing argument, bad value...
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":
            # plain `qiz` (or `qiz job`): the help is the answer, on stdout so that a pager
            # or grep gets it; still exit 2, as no command ran
            sys.stdout.write(message.rstrip("\n") + "\n")
            return EXIT_USER_ERROR
        context = getattr(exc, "ctx", None)
        where = f" (see '{context.command_path} --help')" if context is not None else ""
        code = getattr(exc, "exit_code", EXIT_USER_ERROR)
        return _fail(f"error: {message}{where}", code, args)
    except (KeyboardInterrupt, typer.Abort):
        return _fail("interrupted", 130, args)
    except Exception as exc:
        if os.environ.get("QIZ_DEBUG"):
            traceback.print_exc()
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set QIZ_DEBUG=1 for details)",
            EXIT_INTERNAL,
            args,
        )
    if result == EXIT_INTERRUPTED and not Interrupt.said:
        # a Ctrl-C while typer parsed the command line: it returns 130 without a word
        return _fail("interrupted", EXIT_INTERRUPTED, args)
    return result if isinstance(result, int) else 0
