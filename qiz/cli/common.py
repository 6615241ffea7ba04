"""Shared option handling: the home, the passphrase, reading input files with clear errors."""

from __future__ import annotations

import getpass
import os
import shlex
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiz.cli.output import UserError, err_console
from qiz.crypto import keyfile
from qiz.fsio import FileTooLarge, read_bounded
from qiz.home import Home
from qiz.identity import NodeIdentity

PASSPHRASE_ENV = "QIZ_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
MAX_INPUT_FILE = 64 << 20  # for inputs without a tighter limit of their own
MAX_PASSPHRASE_FILE = 64 * 1024


@dataclass
class Session:
    """What the global options established, passed to commands via the typer context."""

    home: Home
    passphrase_file: Path | None = None

    def command(self, words: str) -> str:
        """The command line a hint tells the user to type: ``qiz node start`` with the
        ``--home`` they typed, as they typed it (a relative path stays relative); none when
        the home came from $QIZ_HOME or the default, which the next command finds again."""
        home = f" --home {shlex.quote(str(self.home.path))}" if self.home.given else ""
        return f"qiz{home} {words}"

    def passphrase(self) -> str | None:
        if self.passphrase_file is not None:
            try:
                text = read_file(
                    self.passphrase_file, what="passphrase file", max_size=MAX_PASSPHRASE_FILE
                ).decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(
                    f"passphrase file {self.passphrase_file} is not UTF-8 text"
                ) from None
            phrase = text.splitlines()[0] if text else ""
            if not phrase:
                raise UserError(f"passphrase file {self.passphrase_file} is empty")
            return phrase
        return os.environ.get(PASSPHRASE_ENV) or None

    def secure_home(self) -> None:
        """Make the home private (0700, files 0600) and say on stderr what that changed; a
        home already private says nothing, so each change is told once."""
        for change in self.home.secure():
            err_console.print(f"qiz: note: made the home private: {change}", markup=False)

    def unlock_passphrase(self) -> str | None:
        """The passphrase that unlocks this home's key: given, or asked for on a terminal if
        the key is locked; None for a key without one."""
        phrase = self.passphrase()
        if phrase is None and self.home.identity_locked() and os.isatty(0):
            phrase = getpass.getpass(f"passphrase for {self.home.identity_path}: ")
        return phrase

    def identity(self, phrase: str | None = None) -> NodeIdentity:
        """Load this home's identity (with ``phrase``, else :meth:`unlock_passphrase`)."""
        try:
            return self.home.load_identity(phrase or self.unlock_passphrase())
        except keyfile.KeyFileError as exc:
            raise UserError(str(exc)) from None


def read_file(path: Path, *, what: str = "file", max_size: int = MAX_INPUT_FILE) -> bytes:
    """Read a whole input file, at most ``max_size`` bytes (checked while reading, see
    ``qiz.fsio.read_bounded``), turning OS errors into one clear sentence."""
    try:
        return read_bounded(path, max_size, what)
    except FileTooLarge as exc:
        raise UserError(str(exc)) from None
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except PermissionError:
        raise UserError(f"{what} {path} cannot be read (permission denied)") from None


def run_async(work: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """``asyncio.run(work(*args))`` for a command that a Ctrl-C may stop at any moment.

    asyncio loads here, in the commands that need it, not with every command; and a Ctrl-C is
    held back (a few milliseconds) while it loads and the event loop is made: an interrupt
    inside the loop's constructor leaves half an object whose collection prints a traceback
    after the command's one line. Once the loop exists the Ctrl-C comes as usual."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        import asyncio

        runner = asyncio.Runner()
        runner.get_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    with runner:
        return runner.run(work(*args))


def node_call(session: Session, command: str, timeout: float = 60.0, **arguments: Any) -> Any:
    """One operation on the node running in this home (the control socket), for every
    command that talks to a node: its result, or its error as the node stated it."""
    from qiz.control import NodeNotRunning, ask

    try:
        return run_async(lambda: ask(session.home.path, command, timeout, **arguments))
    except NodeNotRunning as exc:
        home = session.home
        if not home.path.is_dir() or not home.identity_path.exists():  # as `qiz id` says it
            raise UserError(
                f"no QIZ home at {home.path}; create it with: {session.command('init')}"
            ) from None
        raise UserError(f"{exc}; start it with: {session.command('node start')}") from None
    except TimeoutError:
        raise UserError(f"the node did not answer within {timeout:.0f} s") from None
