"""Entry point of the ``qiz`` command, kept light on purpose.

The command itself (:mod:`qiz.cli.app`) imports typer, rich, cryptography and numpy, which takes
a noticeable fraction of a second: a Ctrl-C in that time must still end as ``qiz: interrupted``
(exit 130), not as a traceback out of some import. So this module imports nothing heavy, and
loads the command inside the ``try`` that catches the interrupt.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

EXIT_INTERRUPTED = 130


def __getattr__(name: str) -> Any:
    """``qiz.cli.main.app``: the typer app, loaded on first use."""
    if name == "app":
        from qiz.cli.app import app

        return app
    raise AttributeError(name)


def _interrupted(args: list[str]) -> int:
    if "--json" in args:
        body = {"ok": False, "error": "interrupted", "exit_code": EXIT_INTERRUPTED}
        sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
    sys.stderr.write("qiz: interrupted\n")
    return EXIT_INTERRUPTED


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a Ctrl-C is behind ``exc``: Python wraps one that lands inside a class body's
    ``__set_name__`` (rich's console, while it is imported) in a RuntimeError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see :func:`qiz.cli.app.run`); a Ctrl-C however
    early, imports included, is ``qiz: interrupted`` and exit 130 (with the failure object on
    stdout under ``--json``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args and set(args) <= {"--version", "--json"}:
        # `qiz --version [--json]` before loading the command: the same answer as
        # qiz.cli.app.run gives it (and `qiz version`), in a fraction of the time
        from qiz import __version__

        if "--json" in args:
            body = {"ok": True, "version": __version__}
            sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
        else:
            sys.stdout.write(f"qiz {__version__}\n")
        sys.stdout.flush()
        return 0
    try:
        from qiz.cli.app import run as run_command

        return run_command(args)
    except KeyboardInterrupt:
        return _interrupted(args)
    except Exception as exc:
        if _caused_by_interrupt(exc):
            return _interrupted(args)
        raise


def entry() -> None:
    code = run()
    if code == EXIT_INTERRUPTED:
        # CPython marks a Ctrl-C that passed through code a C extension ran (PyRun_*) during
        # an import as unhandled even when it was caught here, and then kills itself with
        # SIGINT at exit instead of returning 130: leave at once, output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
