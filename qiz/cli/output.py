"""How every command speaks: JSON on stdout with ``--json``, rich text otherwise, and errors as
one line on stderr with a meaningful exit code."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from qiz import CheckFailed as _CheckFailed
from qiz import QizError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_INVALID = 1  # a check ran and said no (bad signature, forged record)
EXIT_USER_ERROR = 2  # the command could not run as asked (missing file, bad id, locked key)
EXIT_INTERNAL = 3  # a bug: reported in one line, traceback with QIZ_DEBUG=1
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

PIPE_WIDTH = 160  # columns for tables and rules when the output is not a terminal


def make_console(*, stderr: bool = False) -> Console:
    """A console for people's text that never breaks a line by itself (``soft_wrap``: a
    sentence stays one line, in a terminal or a pipe), and that lays out tables and rules for
    :data:`PIPE_WIDTH` columns when writing to a pipe or file, not rich's 80, so that
    ``qiz ... | cat`` shows what a wide terminal would. $COLUMNS still wins when set."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH
    return out


console = make_console()
err_console = make_console(stderr=True)


class Interrupt:
    """Whether this process has told the user that a Ctrl-C stopped it. Typer turns a Ctrl-C
    that lands while it parses the command line (before any command runs) into a silent exit
    130; :func:`qiz.cli.app.run` says it then, unless a command already did."""

    said = False


class UserError(QizError):
    """The user asked for something that cannot be done; the message says what and how."""


class CheckFailed(_CheckFailed):
    """A verification ran and failed (exit code 1); ``payload`` goes into the JSON answer."""

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


def emit(as_json: bool, data: dict[str, Any], human: Callable[[], None]) -> None:
    """Print ``data`` as one JSON object, or call ``human`` to render it for people.

    Every JSON answer carries ``"ok"``: true here, false from :func:`guarded` when the command
    failed (docs/json/ has the shape of each command's answer)."""
    if as_json:
        sys.stdout.write(json.dumps({"ok": True, **data}, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        human()


def _json_error(
    kwargs: dict[str, Any], message: str, code: int, payload: dict[str, Any] | None = None
) -> None:
    """With --json, a failure is also one JSON object on stdout (the line on stderr stays)."""
    if kwargs.get("as_json"):
        body = {"ok": False, "error": message, "exit_code": code, **(payload or {})}
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so QIZ's errors become one stderr line and the right exit code.

    Every error a user can cause is a :class:`qiz.QizError`, which carries its own exit code:
    there is no table of error types here to keep in step with the layers below."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except QizError as exc:
            code = exc.exit_code
            _json_error(kwargs, str(exc), code, getattr(exc, "payload", None))
            prefix = "qiz: " if code == EXIT_INVALID else "qiz: error: "
            err_console.print(f"{prefix}{exc}", markup=False)
            raise typer.Exit(code) from None
        except OSError as exc:
            # A path the user named cannot be read or written (missing directory, permissions).
            where = f" {exc.filename}:" if exc.filename else ""
            _json_error(kwargs, f"{where} {exc.strerror or exc}".strip(), EXIT_USER_ERROR)
            err_console.print(f"qiz: error:{where} {exc.strerror or exc}", markup=False)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            # Ctrl-C in a command that does not handle it itself (typer would exit 130 without
            # a word): the same line, and object under --json, as anywhere else
            _json_error(kwargs, "interrupted", EXIT_INTERRUPTED)
            err_console.print("qiz: interrupted", markup=False)
            Interrupt.said = True
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command line's own ways out (typer.Exit is a RuntimeError)
        except Exception as exc:
            # A bug: still one line, and still one JSON object under --json, so a script
            # reading stdout learns that the command failed.
            if os.environ.get("QIZ_DEBUG"):
                traceback.print_exc()
            message = f"internal error: {type(exc).__name__}: {exc}"
            _json_error(kwargs, message, EXIT_INTERNAL)
            err_console.print(f"qiz: {message} (set QIZ_DEBUG=1 for details)", markup=False)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper
