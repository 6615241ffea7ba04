"""The supervisor's rules as a sans-IO state machine: events and ``now`` in, actions out.

Usage (the asyncio driver in :mod:`qiz.deploy.supervise`, or a test)::

    core = SupervisorCore(spec)
    actions = core.start(now)                       # [Start(run=1, version)]
    core.started(run, pid, now) / core.spawn_failed(run, reason, now)
    core.exited(run, code, now)                     # the child's returncode (-N: signal N)
    core.health(run, ok, now, detail)               # the answer to a CheckHealth action
    core.rolled_back(spec, now) / core.rollback_failed(reason, now)   # after a Rollback action
    core.stop(now)
    core.tick(now)                                  # at core.next_deadline(), or any time

Why split it out: restart, backoff, crash-loop and rollback rules are the part worth testing
hard (hypothesis drives it through thousands of histories in a second), and with no processes,
no event loop and time passed in, the same code runs in the node and in a test.

The policy (:class:`~qiz.deploy.bundle.RestartPolicy`, :class:`~qiz.deploy.bundle.HealthCheck`):

* ``on-failure`` restarts after a non-zero exit or a signal, ``always`` after any exit,
  ``never`` after none (a failed exit ends in ``failed``, a clean one in ``exited``);
* restart *n* after consecutive failures waits ``backoff * 2**(n-1)``, at most
  ``backoff_max``; a run that passed a health check, or lived ``window`` seconds, resets *n*;
* a version is never started more than ``max_starts`` times within ``window`` seconds: an exit
  that would need one more start is a crash loop, and the version is rolled back;
* health checks start ``start_period`` after a start and repeat every ``interval``;
  ``retries`` failures in a row fail the run: a version never seen healthy is rolled back, one
  that was healthy before is restarted (its restarts still count against ``max_starts``);
* a rollback asks the driver to switch to the previous good version (the installer marks the
  version left bad); the core then starts the version it is given, with fresh counters; if the
  driver has no previous version, the core gives up in ``failed`` with the reason;
* a stop sends SIGTERM to the process group, then SIGKILL after ``stop_grace`` seconds.

Every action names the run (a counter of starts) it is about, and the driver echoes it in the
events it feeds back, so an answer about an earlier run (a late health check, an exit already
handled) is ignored instead of acted on twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qiz.deploy.bundle import BundleSpec

STOPPED = "stopped"  # not running, not asked to
STARTING = "starting"  # Start issued, waiting for started / spawn_failed
RUNNING = "running"  # the process is up, not (yet) seen healthy
HEALTHY = "healthy"  # up and its last health check passed
BACKOFF = "backoff"  # waiting to restart at next_restart_at
STOPPING = "stopping"  # Kill issued, waiting for the exit
ROLLING_BACK = "rolling-back"  # Rollback issued, waiting for the driver's answer
EXITED = "exited"  # ended cleanly and the policy does not restart it
FAILED = "failed"  # given up: see reason
STATES = (STOPPED, STARTING, RUNNING, HEALTHY, BACKOFF, STOPPING, ROLLING_BACK, EXITED, FAILED)
IDLE = (STOPPED, EXITED, FAILED)
STATUS_KEYS = (
    "name",
    "version",
    "state",
    "reason",
    "pid",
    "run",
    "restarts",
    "last_exit",
    "last_health",
    "rolled_back_from",
    "rolled_back",
)


@dataclass(frozen=True, slots=True)
class Start:
    """Spawn the current version's command; answer with ``started`` or ``spawn_failed``."""

    run: int
    version: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Signal run ``run``'s process group: SIGTERM, or SIGKILL when ``hard``."""

    run: int
    hard: bool


@dataclass(frozen=True, slots=True)
class CheckHealth:
    """Run the health command (bounded by its timeout); answer with ``health``."""

    run: int


@dataclass(frozen=True, slots=True)
class RestartAt:
    """Informational: the next start is due at ``at`` (the driver wakes at next_deadline)."""

    at: float
    delay: float


@dataclass(frozen=True, slots=True)
class Rollback:
    """Switch back to the previous good version, marking ``version`` bad; answer with
    ``rolled_back`` (the new spec) or ``rollback_failed``."""

    version: str
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Informational: the supervisor stopped trying; ``reason`` says why."""

    version: str
    reason: str


Action = Start | Kill | CheckHealth | RestartAt | Rollback | GiveUp


def describe_exit(code: int | None) -> str:
    """``exit 1`` / ``killed by signal 9`` / ``did not start``."""
    if code is None:
        return "did not start"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit {code}"


@dataclass
class _Run:
    """What the core knows of its latest run."""

    started_at: float = 0.0
    pid: int | None = None
    alive: bool = False  # spawned or being spawned, exit not seen yet
    healthy: bool = False  # passed a health check during this run
    health_failures: int = 0
    health_due: float | None = None
    health_in_flight: bool = False
    kill_sent: bool = False
    kill_deadline: float | None = None
    after_exit: str | None = None  # "stop" | "rollback" | "restart"


@dataclass
class SupervisorCore:
    """One bundle's supervision; see the module docstring for the rules."""

    spec: BundleSpec
    stop_grace: float = 5.0
    state: str = STOPPED
    reason: str = ""
    run: int = 0
    restarts: int = 0
    last_exit: dict[str, Any] | None = None
    last_health: dict[str, Any] | None = None
    rolled_back_from: list[str] = field(default_factory=list)
    next_restart_at: float | None = None
    _now: _Run = field(default_factory=_Run)
    _starts: list[float] = field(default_factory=list)  # this version's start times
    _failures: int = 0  # consecutive failed runs: the backoff exponent
    _stop_wanted: bool = False
    _healthy_versions: set[str] = field(default_factory=set)  # seen healthy in some run

    @property
    def version(self) -> str:
        return self.spec.version

    # ------------------------------------------------------------------ asked by the owner

    def start(self, now: float) -> list[Action]:
        """Run the current version (a no-op unless idle); counters start afresh, as systemd's
        ``reset-failed`` then ``start``."""
        if self.state not in IDLE:
            return []
        self._starts, self._failures, self._stop_wanted = [], 0, False
        return self._start(now)

    def use(self, spec: BundleSpec) -> bool:
        """Supervise ``spec`` (another version, after an install) from the next start; only
        while idle (False otherwise: stop first)."""
        if self.state not in IDLE:
            return False
        self.spec, self._starts, self._failures = spec, [], 0
        return True

    def stop(self, now: float) -> list[Action]:
        """Stop the process (SIGTERM, SIGKILL after ``stop_grace``) and stay stopped."""
        self._stop_wanted = True
        if self.state == BACKOFF:
            self.next_restart_at = None
            return self._set(STOPPED, "stopped by request")
        if self.state in (RUNNING, HEALTHY, STARTING):
            return self._kill(now, "stop", "stopped by request")
        if self.state == STOPPING and self._now.after_exit != "rollback":
            self._now.after_exit = "stop"
        return []

    # ------------------------------------------------------------------ reported by the driver

    def started(self, run: int, pid: int, now: float) -> list[Action]:
        if run != self.run or not self._now.alive or self._now.pid is not None:
            return []
        self._now.pid = pid
        if self.state == STOPPING:  # a stop came while it was being spawned
            return self._send_kill(now)
        self.state, self.reason = RUNNING, f"started {self.version} (pid {pid})"
        if self.spec.health is not None:
            self._now.health_due = now + self.spec.health.start_period
        return []

    def spawn_failed(self, run: int, reason: str, now: float) -> list[Action]:
        return self.exited(run, None, now, reason)

    def exited(self, run: int, code: int | None, now: float, detail: str = "") -> list[Action]:
        if run != self.run or not self._now.alive:
            return []
        run_ = self._now
        run_.alive, run_.pid = False, None
        self.last_exit = {"code": code, "detail": detail or describe_exit(code)}
        what = self.last_exit["detail"]
        if run_.after_exit == "stop":
            return self._set(STOPPED, "stopped by request")
        if run_.after_exit == "rollback":
            return self._rollback(self.reason)
        if run_.healthy or now - run_.started_at >= self.spec.restart.window:
            self._failures = 0  # it had been stable: back off from the start again
        failed = code != 0 or run_.after_exit == "restart"
        mode = self.spec.restart.mode
        if mode == "never" or (mode == "on-failure" and not failed):
            return self._set(FAILED if failed else EXITED, f"{self.version} {what}; not restarted")
        if failed:
            self._failures += 1
        recent = [t for t in self._starts if t > now - self.spec.restart.window]
        if len(recent) >= self.spec.restart.max_starts:
            return self._rollback(
                f"{self.version} crash-looped ({len(recent)} starts within "
                f"{self.spec.restart.window:g} s, last {what})"
            )
        delay = min(
            self.spec.restart.backoff * 2 ** max(self._failures - 1, 0),
            self.spec.restart.backoff_max,
        )
        self.next_restart_at = now + delay
        self._set(BACKOFF, f"{self.version} {what}; restarting in {delay:g} s")
        return [RestartAt(now + delay, delay)]

    def health(self, run: int, ok: bool, now: float, detail: str = "") -> list[Action]:
        run_ = self._now
        if run != self.run or not run_.alive or not run_.health_in_flight:
            return []
        run_.health_in_flight = False
        self.last_health = {"ok": ok, "detail": detail, "run": run}
        if self.state not in (RUNNING, HEALTHY) or self.spec.health is None:
            return []
        run_.health_due = now + self.spec.health.interval
        if ok:
            run_.healthy, run_.health_failures, self._failures = True, 0, 0
            self.state, self.reason = HEALTHY, f"{self.version} passed its health check"
            return []
        run_.health_failures += 1
        if run_.health_failures < self.spec.health.retries:
            return []
        why = f"{self.version} failed its health check {run_.health_failures} times ({detail})"
        return self._kill(now, "restart" if self._ever_healthy() else "rollback", why)

    def rolled_back(self, spec: BundleSpec, now: float) -> list[Action]:
        """The driver switched to ``spec``'s version; run it (unless a stop came meanwhile)."""
        if self.state != ROLLING_BACK:
            return []
        self.rolled_back_from.append(self.version)
        self.spec, self._starts, self._failures = spec, [], 0
        if self._stop_wanted:
            return self._set(STOPPED, f"rolled back to {spec.version}; stopped by request")
        return self._start(now)

    def rollback_failed(self, reason: str, now: float) -> list[Action]:
        if self.state != ROLLING_BACK:
            return []
        why = f"{self.reason}; no rollback: {reason}"
        self._set(FAILED, why)
        return [GiveUp(self.version, why)]

    def tick(self, now: float) -> list[Action]:
        run_ = self._now
        if self.state == BACKOFF and self.next_restart_at is not None:
            if now >= self.next_restart_at:
                self.restarts += 1
                return self._start(now)
        elif self.state == STOPPING and run_.kill_deadline is not None:
            if now >= run_.kill_deadline and run_.alive:
                run_.kill_deadline = None
                return [Kill(self.run, hard=True)]
        elif (
            self.state in (RUNNING, HEALTHY)
            and run_.health_due is not None
            and now >= run_.health_due
            and not run_.health_in_flight
        ):
            run_.health_in_flight, run_.health_due = True, None
            return [CheckHealth(self.run)]
        return []

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: only an event will change things)."""
        if self.state == BACKOFF:
            return self.next_restart_at
        if self.state == STOPPING:
            return self._now.kill_deadline
        if self.state in (RUNNING, HEALTHY) and not self._now.health_in_flight:
            return self._now.health_due
        return None

    def status(self) -> dict[str, Any]:
        """Plain data for the faces (CLI ``--json``, API, dashboard)."""
        return {
            "name": self.spec.name,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
            "pid": self._now.pid if self._now.alive else None,
            "run": self.run,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_health": self.last_health,
            "rolled_back_from": self.rolled_back_from[-1] if self.rolled_back_from else None,
            "rolled_back": list(self.rolled_back_from),
        }

    # ------------------------------------------------------------------ inside

    def _ever_healthy(self) -> bool:
        return self.version in self._healthy_versions or self._now.healthy

    def _start(self, now: float) -> list[Action]:
        if self._now.healthy:
            self._healthy_versions.add(self.version)
        self.run += 1
        self._now = _Run(started_at=now, alive=True)
        window = self.spec.restart.window
        self._starts = [t for t in self._starts if t > now - window] + [now]
        self.next_restart_at = None
        self._set(STARTING, f"starting {self.version}")
        return [Start(self.run, self.version)]

    def _kill(self, now: float, after: str, why: str) -> list[Action]:
        if self._now.healthy:
            self._healthy_versions.add(self.version)
        self._now.after_exit = after
        self._set(STOPPING, why)
        if self._now.pid is None:  # still being spawned: killed once it is reported started
            return []
        return self._send_kill(now)

    def _send_kill(self, now: float) -> list[Action]:
        self._now.kill_sent = True
        self._now.kill_deadline = now + self.stop_grace
        return [Kill(self.run, hard=False)]

    def _rollback(self, why: str) -> list[Action]:
        self._set(ROLLING_BACK, why)
        return [Rollback(self.version, why)]

    def _set(self, state: str, reason: str) -> list[Action]:
        self.state, self.reason = state, reason
        return []
