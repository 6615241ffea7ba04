"""The supervisor's asyncio driver: runs a bundle's command as a child process and performs
what :class:`~qiz.deploy.supervisor_core.SupervisorCore` decides.

Each child runs

* in its version's own directory (not through ``current``: a later switch does not move it);
* in a session and process group of its own, killed as a group (its children go with it);
* with rlimits set between fork and exec (address space, CPU seconds, open files: the bundle's
  :class:`~qiz.deploy.bundle.ResourceLimits`, else :mod:`qiz.deploy.runtime_limits` defaults),
  and dying with the node (``PR_SET_PDEATHSIG``);
* with a clean environment: nothing inherited from the node (no passphrase, no API token),
  only a minimal ``PATH``/``LANG``, ``HOME`` = ``deploy/NAME/data`` (kept across versions), the
  bundle's own ``env`` and ``QIZ_BUNDLE_NAME``/``QIZ_BUNDLE_VERSION``;
* with stdout and stderr captured into ``deploy/NAME/logs/output.log``, rotated by size
  (:class:`RotatingLog`), interleaved with the supervisor's own ``[qiz]`` lines.

The health command runs the same way, bounded by its timeout (its whole group is killed when it
overruns). A rollback goes through the :class:`~qiz.deploy.install.Installer`, which switches
``current`` back and marks the failed version bad.

All decisions are the core's; this module only turns actions into processes and signals, and
process events back into core calls, one at a time on one task (so the core needs no lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qiz.deploy.bundle import BundleSpec, HealthCheck, ResourceLimits
from qiz.deploy.install import Installer
from qiz.deploy.runtime_errors import DeployRuntimeError, InstallerBusy, VersionNotInstalled
from qiz.deploy.runtime_limits import (
    DEFAULT_CPU_SECONDS,
    DEFAULT_MEMORY_MB,
    DEFAULT_OPEN_FILES,
    MAX_LOG_BYTES,
    MAX_LOG_FILES,
)
from qiz.deploy.supervisor_core import (
    IDLE,
    STATUS_KEYS,
    Action,
    CheckHealth,
    GiveUp,
    Kill,
    RestartAt,
    Rollback,
    Start,
    SupervisorCore,
    describe_exit,
)
from qiz.lifeline import _prctl, die_with_parent

log = logging.getLogger("qiz.deploy")
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
LOG_NAME = "output.log"
_READ = 64 * 1024
_DRAIN_AFTER_EXIT = 2.0  # seconds the output pipe may stay open after the child's exit
_POLL = 0.05  # seconds between two looks of wait_for when nothing changes
_ROLLBACK_WAIT = 60.0  # seconds a rollback waits for another change of the bundle to end


class SupervisorError(DeployRuntimeError):
    """The bundle cannot be supervised as it is (a job bundle, no installed version)."""


# ---------------------------------------------------------------------------------- logs


class RotatingLog:
    """An append-only log kept under ``max_bytes * (keep + 1)``: when the live file would grow
    past ``max_bytes`` it becomes ``.1`` (``.1`` becomes ``.2``, ... the oldest is dropped)."""

    def __init__(
        self, path: Path, max_bytes: int = MAX_LOG_BYTES, keep: int = MAX_LOG_FILES
    ) -> None:
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def write(self, data: bytes) -> None:
        """Append ``data``; a write that would overflow the live file goes to a fresh one
        (so a line is split only when it is longer than a whole file)."""
        if self._file.tell() and self._file.tell() + len(data) > self.max_bytes:
            self.rotate()
        while len(data) > self.max_bytes:
            self._file.write(data[: self.max_bytes])
            data = data[self.max_bytes :]
            self.rotate()
        self._file.write(data)
        self._file.flush()

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(f"[qiz {stamp}] {text}\n".encode(errors="replace"))

    def rotate(self) -> None:
        self._file.close()
        for index in range(self.keep, 0, -1):
            newer = self._rotated(index - 1) if index > 1 else self.path
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, self._rotated(index))  # the oldest is replaced: dropped
        self._file = self.path.open("ab" if self.keep else "wb")

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def files(self) -> list[Path]:
        """The live file then the rotated ones, newest first."""
        rotated = [self._rotated(index) for index in range(1, self.keep + 1)]
        return [path for path in (self.path, *rotated) if path.exists()]

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------- the child


def child_env(spec: BundleSpec, home: Path) -> dict[str, str]:
    """The child's whole environment: nothing of the node's own."""
    env = {"PATH": MINIMAL_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(spec.env)
    env["QIZ_BUNDLE_NAME"] = spec.name
    env["QIZ_BUNDLE_VERSION"] = spec.version
    return env


def rlimits(limits: ResourceLimits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for each bound, never above the node's own hard limit (an
    unprivileged process cannot raise it). CPU gets a hard limit one second above the soft one,
    so the child first receives SIGXCPU, then SIGKILL."""
    wanted = [
        (resource.RLIMIT_AS, limits.memory_mb or DEFAULT_MEMORY_MB, 1 << 20),
        (resource.RLIMIT_CPU, limits.cpu_seconds or DEFAULT_CPU_SECONDS, 1),
        (resource.RLIMIT_NOFILE, limits.open_files or DEFAULT_OPEN_FILES, 1),
    ]
    result = []
    for which, value, unit in wanted:
        if value is None:
            continue
        _soft, hard = resource.getrlimit(which)
        soft = value * unit
        top = soft + 1 if which == resource.RLIMIT_CPU else soft
        if hard != resource.RLIM_INFINITY:
            soft, top = min(soft, hard), min(top, hard)
        result.append((which, soft, top))
    return result


def child_setup(limits: ResourceLimits) -> Callable[[], None]:
    """A ``preexec_fn``: die with this process and apply the limits (computed here, before the
    fork, so the child only makes system calls)."""
    parent, bounds = os.getpid(), rlimits(limits)
    _prctl()

    def setup() -> None:
        die_with_parent(parent)
        for which, soft, hard in bounds:
            resource.setrlimit(which, (soft, hard))

    return setup


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def spawn(
    argv: tuple[str, ...], cwd: Path, env: dict[str, str], limits: ResourceLimits, output: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own session and process group: killed as a group
        preexec_fn=child_setup(limits),  # prctl is looked up before the fork
    )


async def run_health_check(
    check: HealthCheck, cwd: Path, env: dict[str, str], limits: ResourceLimits
) -> tuple[bool, str]:
    """(passed, what happened): the command's exit status, or that it overran its timeout."""
    try:
        proc = await spawn(check.command, cwd, env, limits, asyncio.subprocess.DEVNULL)
    except OSError as exc:
        return False, f"could not run: {exc.strerror or exc}"
    try:
        code = await asyncio.wait_for(proc.wait(), check.timeout)
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        return False, f"timed out after {check.timeout:g} s"
    finally:
        kill_group(proc.pid)  # anything it left behind
    return code == 0, describe_exit(code)


# ---------------------------------------------------------------------------------- driver


class Supervisor:
    """Runs the installed ``current`` version of one bundle under the core's rules.

    ``spec_for(version)`` gives a version's :class:`BundleSpec` (the node passes the parsed
    ``qiz-bundle.toml`` of the installed directory). Use from one event loop::

        sup = Supervisor(installer, spec_for)
        await sup.start()
        sup.status()
        await sup.wait_for(lambda s: s["state"] == "healthy")
        await sup.stop(); await sup.close()
    """

    def __init__(
        self,
        installer: Installer,
        spec_for: Callable[[str], BundleSpec],
        *,
        stop_grace: float = 5.0,
        log_bytes: int = MAX_LOG_BYTES,
        log_files: int = MAX_LOG_FILES,
    ) -> None:
        self.installer = installer
        self.spec_for = spec_for
        self.stop_grace = stop_grace
        self.log = RotatingLog(installer.dirs.logs / LOG_NAME, log_bytes, log_files)
        self.core: SupervisorCore | None = None
        self.states: list[tuple[str, str]] = []  # (state, version) each time one changed
        self._events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ the owner's side

    async def start(self) -> None:
        """Start the current version; after a stop (or an ``exited``/``failed`` end), start
        whatever version is current now (how an upgrade is done: stop, install, start)."""
        version = self.installer.current()
        if version is None:
            raise VersionNotInstalled(f"bundle {self.installer.name} has no current version")
        spec = self._spec(version)
        if self.core is None:
            self.core = SupervisorCore(spec, stop_grace=self.stop_grace)
            self._record()
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        await self._events.put(("start", spec))

    async def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the child (SIGTERM, then SIGKILL after ``stop_grace``) and wait until it is."""
        await self._events.put(("stop",))
        return await self.wait_for(lambda s: s["state"] in IDLE, timeout)

    async def close(self) -> None:
        """Kill whatever still runs and end the driver's tasks (after :meth:`stop`, or on
        the node's shutdown)."""
        for proc in list(self._procs.values()):
            kill_group(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        tasks = [*self._tasks, *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self.log.close()

    def status(self) -> dict[str, Any]:
        if self.core is None:
            status = dict.fromkeys(STATUS_KEYS)
            status.update(name=self.installer.name, state="stopped", restarts=0, rolled_back=[])
            return status
        status = self.core.status()
        status["log"] = str(self.log.path)
        return status

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The status once ``predicate`` holds for it (TimeoutError after ``timeout``). It is
        tried at each change of state and every ``_POLL`` seconds, so a predicate may also look
        at things outside the status (a file the child writes, its log)."""

        async def until() -> None:
            while not predicate(self.status()):
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), _POLL)

        await asyncio.wait_for(until(), timeout)
        return self.status()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.core is not None
        while True:
            deadline = self.core.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                event = await asyncio.wait_for(self._events.get(), wait)
            except TimeoutError:
                event = None
            now = loop.time()
            try:
                actions = [] if event is None else self._dispatch(event, now)
                self._record()
                actions += self.core.tick(now)
                await self._perform(actions)
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk under the log, a spawn that failed oddly: go on
                log.exception("deploy: supervising %s", self.installer.name)
                await asyncio.sleep(_POLL)
            self._record()
            async with self._changed:
                self._changed.notify_all()

    def _dispatch(self, event: tuple[Any, ...], now: float) -> list[Action]:
        core = self.core
        assert core is not None
        kind = event[0]
        if kind == "start":
            core.use(event[1])
            return core.start(now)
        if kind == "stop":
            return core.stop(now)
        if kind == "exited":
            _kind, run, code = event
            self.log.line(f"{core.version} run {run} ended: {describe_exit(code)}")
            return core.exited(run, code, now)
        if kind == "health":
            _kind, run, ok, detail = event
            if not ok:
                self.log.line(f"{core.version} health check failed: {detail}")
            return core.health(run, ok, now, detail)
        raise AssertionError(kind)

    async def _perform(self, actions: list[Action]) -> None:
        core = self.core
        assert core is not None
        loop = asyncio.get_running_loop()
        todo = list(actions)
        while todo:
            self._record()
            action = todo.pop(0)
            if isinstance(action, Start):
                todo += await self._start(action)
            elif isinstance(action, Kill):
                proc = self._procs.get(action.run)
                if proc is not None:
                    kill_group(proc.pid, signal.SIGKILL if action.hard else signal.SIGTERM)
            elif isinstance(action, CheckHealth):
                self._spawn_task(self._health(action.run))
            elif isinstance(action, Rollback):
                self.log.line(f"rolling back from {action.version}: {action.reason}")
                try:
                    version = await self._rollback_when_free()
                    spec = self._spec(version)
                except (DeployRuntimeError, OSError) as exc:
                    self.log.line(f"no rollback: {exc}")
                    todo += core.rollback_failed(str(exc), loop.time())
                else:
                    self.log.line(f"rolled back to {version}; {action.version} marked bad")
                    todo += core.rolled_back(spec, loop.time())
            elif isinstance(action, RestartAt):
                self.log.line(f"restarting in {action.delay:g} s")
            elif isinstance(action, GiveUp):
                self.log.line(f"gave up: {action.reason}")

    async def _rollback_when_free(self) -> str:
        """The installer's rollback, waiting up to ``_ROLLBACK_WAIT`` seconds while another
        change holds the bundle (a follower staging the next version holds it while it
        writes): a crash loop then still ends rolled back, with the version marked bad."""
        deadline = time.monotonic() + _ROLLBACK_WAIT
        while True:
            try:
                return await asyncio.to_thread(self.installer.rollback)
            except InstallerBusy:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(_POLL)

    async def _start(self, action: Start) -> list[Action]:
        core = self.core
        assert core is not None
        spec = core.spec
        loop = asyncio.get_running_loop()
        try:
            cwd = self.installer.path(action.version)
            self.installer.dirs.data.mkdir(parents=True, exist_ok=True)
            assert spec.command is not None
            proc = await spawn(
                spec.command,
                cwd,
                child_env(spec, self.installer.dirs.data),
                spec.limits,
                asyncio.subprocess.PIPE,
            )
        except (OSError, DeployRuntimeError) as exc:
            reason = f"could not start: {getattr(exc, 'strerror', None) or exc}"
            self.log.line(f"{action.version} run {action.run} {reason}")
            return core.spawn_failed(action.run, reason, loop.time())
        self._procs[action.run] = proc
        self.log.line(f"{action.version} run {action.run} started, pid {proc.pid}")
        self._spawn_task(self._watch(action.run, proc))
        return core.started(action.run, proc.pid, loop.time())

    async def _watch(self, run: int, proc: asyncio.subprocess.Process) -> None:
        """Copy the child's output into the log until it exits, then report the exit (after
        killing whatever of its group is left)."""
        assert proc.stdout is not None
        reader = asyncio.ensure_future(self._copy(proc.stdout))
        code = await proc.wait()
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(reader, _DRAIN_AFTER_EXIT)
        self._procs.pop(run, None)
        await self._events.put(("exited", run, code))

    async def _copy(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ):
            self.log.write(chunk)

    async def _health(self, run: int) -> None:
        core = self.core
        assert core is not None and core.spec.health is not None
        spec = core.spec
        try:
            cwd = self.installer.path(spec.version)
        except DeployRuntimeError as exc:
            ok, detail = False, str(exc)
        else:
            env = child_env(spec, self.installer.dirs.data)
            assert spec.health is not None
            ok, detail = await run_health_check(spec.health, cwd, env, spec.limits)
        await self._events.put(("health", run, ok, detail))

    # ------------------------------------------------------------------ helpers

    def _spec(self, version: str) -> BundleSpec:
        spec = self.spec_for(version)
        if spec.version != version or spec.name != self.installer.name:
            raise SupervisorError(
                f"the spec given for {self.installer.name} {version} is {spec.name} {spec.version}"
            )
        if spec.command is None:
            raise SupervisorError(
                f"bundle {spec.name} {version} is a job bundle: it is submitted, not run"
            )
        return spec

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self) -> None:
        if self.core is not None:
            entry = (self.core.state, self.core.version)
            if not self.states or self.states[-1] != entry:
                self.states.append(entry)
