"""Child processes that must not outlive their parent, and ``qiz node start`` processes.

The demo (:mod:`qiz.demo_mesh`) and the tests start the same node processes, wait for the same
ready line and clean up the same way, so that logic lives here once. Three rules hold for
every process started through this module:

* it binds ``127.0.0.1:0`` and reports the address it got (the ``ready`` line of
  ``qiz node start --json``): no "find a free port, then bind it", which races with every
  other process on the machine;
* readiness is read from the process's own output, never guessed with a fixed sleep;
* it dies with its parent (``PR_SET_PDEATHSIG``) and runs in a process group of its own that
  is killed as a whole (``os.killpg``), so its worker processes go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from qiz import QizError
from qiz.lifeline import _prctl, die_with_parent

READY = "ready"  # the "event" of the line ``qiz node start --json`` prints once it listens
STOPPED = "stopped"  # ... and of its last line


class NodeStartError(QizError, RuntimeError):
    """A node process exited, or said nothing, before it reported ready; the message has the
    end of its stderr."""


def child_setup(*, ignore_sigint: bool = False) -> Callable[[], None]:
    """A ``preexec_fn`` that ties the child to this (the parent) process, and optionally
    starts it with SIGINT ignored, as a shell's background job is."""
    parent = os.getpid()
    _prctl()  # looked up here, before the fork

    def setup() -> None:
        die_with_parent(parent)
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return setup


def kill_group(group: int, sig: int = signal.SIGKILL) -> None:
    """Signal every process in process group ``group`` (a node and its worker processes);
    nothing if the group is already empty."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def processes_with_env(name: str, value: str) -> list[int]:
    """Live (not zombie) processes other than this one whose environment has
    ``name=value``: how a run finds every process it started, worker processes included,
    even after they were re-parented."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
    return found


class LineReader:
    """Drains a child's output pipe in a thread (a full pipe would block the child), keeps
    every line and wakes whoever waits for a particular one."""

    def __init__(self, stream: IO[bytes], copy: IO[bytes] | None = None) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._stream, self._copy = stream, copy
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                if self._copy is not None:
                    self._copy.write(raw)
                    self._copy.flush()
                with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the child is gone
        finally:
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def wait_for(self, match: Callable[[str], Any], timeout: float) -> Any:
        """The first value ``match`` returns true for a line (seen or yet to come); None if the
        stream ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    value = match(line)
                    if value:
                        return value
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._changed.wait(left)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def ready_record(line: str) -> dict[str, Any] | None:
    """The ``{"event": "ready", ...}`` record if ``line`` is one."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("event") == READY else None


class NodeProcess:
    """One ``qiz node start --json`` process on ``127.0.0.1:0``.

    Its stdout (the ready line, then the stopped line) is read in a thread; its stderr (the
    logs, which may be long) goes to ``log``. It runs in its own process group unless
    ``group`` names another's (the demo puts its nodes in one group), and it dies with this
    process. ``home`` may be relative to ``cwd``: AF_UNIX paths are short (108 bytes) and a
    relative home keeps the control socket's path short wherever ``cwd`` is."""

    def __init__(
        self,
        home: Path | str,
        *,
        peers: Iterable[str] = (),
        args: Iterable[str] = (),
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        group: int = 0,
        ignore_sigint: bool = False,
        name: str | None = None,
        as_json: bool = True,
    ) -> None:
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.home = Path(home)
        self.name = name or self.home.name
        self.log_path = log or (self.cwd / self.home / "node.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready: dict[str, Any] | None = None
        command = [sys.executable, "-m", "qiz", "--home", str(self.home), "node", "start"]
        command += ["--json"] if as_json else []
        command += ["--listen", "127.0.0.1:0", *args]
        for peer in peers:
            command += ["--peer", peer]
        self._stdout_copy = self.log_path.with_suffix(".out").open("wb")
        with self.log_path.open("wb") as stderr:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                process_group=group,
                preexec_fn=child_setup(ignore_sigint=ignore_sigint),  # noqa: PLW1509 - prctl is looked up before the fork
            )
        self.group = self.proc.pid if group == 0 else group
        assert self.proc.stdout is not None
        self.stdout = LineReader(self.proc.stdout, self._stdout_copy)

    # ------------------------------------------------------------------ readiness

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the node prints its ready record (its id, address and API URL) and
        return it; :class:`NodeStartError` if it exits or stays silent first."""
        if self.ready is None:
            self.ready = self.stdout.wait_for(ready_record, timeout)
            if self.ready is None:
                state = "exited" if self.proc.poll() is not None else f"silent for {timeout} s"
                raise NodeStartError(f"node {self.name} {state} before it was ready:{self.tail()}")
        return self.ready

    @property
    def node_id(self) -> str:
        return str(self.wait_ready()["node_id"])

    @property
    def address(self) -> str:
        return str(self.wait_ready()["address"])

    @property
    def api(self) -> str | None:
        return self.wait_ready().get("api_url")

    @property
    def bootstrap(self) -> str:
        """``ID@ip:port``: how other nodes are told to join through this one."""
        return f"{self.node_id}@{self.address}"

    # ------------------------------------------------------------------ talking to it

    def request(self, command: str, timeout: float = 30.0, **arguments: Any) -> dict[str, Any]:
        """One control-socket command (the socket's path must fit AF_UNIX's limit)."""
        from qiz.control import control_request

        return asyncio.run(control_request(self.cwd / self.home, command, timeout, **arguments))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> tuple[str, str]:
        """What it printed so far: stdout, stderr."""
        return "\n".join(self.stdout.lines), self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n" + "\n".join(self.output()[1].splitlines()[-lines:])

    # ------------------------------------------------------------------ ending it

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.stdout.join(5.0)
        return code

    def kill(self) -> None:
        """SIGKILL it and reap it; its whole process group (its worker processes too) when
        it leads one. A node sharing another's group is killed alone: the group's owner
        kills the group."""
        if self.group == self.proc.pid:
            kill_group(self.group)  # even when the node is gone: its workers may not be
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        self.stdout.join(5.0)
        with contextlib.suppress(OSError):
            self._stdout_copy.close()
