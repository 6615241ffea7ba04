"""``qiz node start --detach``: run the node in the background and return once it is ready.

As ``ray start`` or ``ipfs daemon &`` done right: the command a user (or a script, or the
README's tour) types comes back only when the node listens and its control socket answers, so
the next command never races the start. The node runs as a new session (a terminal's Ctrl-C
or hang-up does not reach it) with its output in ``HOME/node.log``; ``qiz node stop`` ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qiz.cli.output import UserError

# qiz.node.LOCK_FILE, the file a running node holds locked, named again here so that 'qiz node
# stop' and this module need not load the node's code (tests/test_cli_startup.py checks both)
LOCK_FILE = "node.lock"
LOG_NAME = "node.log"  # the detached node's stdout and stderr, rewritten at each start
READY_TIMEOUT = 120.0  # seconds to wait for the ready line (a large id puzzle takes a while)
POLL_INTERVAL = 0.05


def start_detached(
    home: Path,
    options: list[str],
    *,
    passphrase: str | None,
    stop_hint: str,
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """Start ``qiz --home HOME node start --json OPTIONS`` in the background and wait for its
    ready line; its record, with ``pid`` and ``log``. A node that exits or stays silent first
    is a :class:`UserError` quoting the end of its log."""
    log_path = home / LOG_NAME
    # before the log is rewritten: a running node still writes to it
    _require_no_node(home, stop_hint)
    env = dict(os.environ)
    if passphrase is not None:
        env["QIZ_PASSPHRASE"] = passphrase  # read once here; the child must not prompt
    command = [sys.executable, "-m", "qiz", "--home", str(home), "node", "start", "--json"]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [*command, *options],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        record = _ready_in(log_path)
        if record is not None:
            return {**record, "pid": process.pid, "log": str(log_path)}
        if process.poll() is not None:
            raise UserError(f"the node exited before it was ready: {_last_error(log_path)}")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            raise UserError(f"the node was not ready within {timeout:.0f} s (see {log_path})")
        time.sleep(POLL_INTERVAL)


def _require_no_node(home: Path, stop_hint: str) -> None:
    """Refuse when a node already holds the home's lock (the node itself checks again)."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"a node is already running for {home}; stop it with '{stop_hint}'"
        ) from None
    finally:
        os.close(fd)  # releases the lock if it was taken


def _ready_in(log_path: Path) -> dict[str, Any] | None:
    from qiz.procs import ready_record  # with asyncio: only a detached start waits for one

    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            record = ready_record(line)
            if record is not None:
                return record
    return None


def _last_error(log_path: Path) -> str:
    """The node's own one-line error (``qiz: error: ...``), else the last line of its log."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return f"no log at {log_path}"
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if line.startswith("qiz: "):
            return line.removeprefix("qiz: ").removeprefix("error: ")
    return lines[-1] if lines else f"nothing in {log_path}"
