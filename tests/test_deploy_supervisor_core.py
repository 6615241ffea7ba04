"""The supervisor's sans-IO core (issue 17, item 5): its rules on examples, and hypothesis
histories that check what must hold whatever the child and the driver do."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from qiz.deploy.bundle import BundleSpec, HealthCheck, RestartPolicy
from qiz.deploy.supervisor_core import (
    BACKOFF,
    FAILED,
    HEALTHY,
    ROLLING_BACK,
    RUNNING,
    STATES,
    STATUS_KEYS,
    STOPPED,
    STOPPING,
    CheckHealth,
    GiveUp,
    Kill,
    RestartAt,
    Rollback,
    Start,
    SupervisorCore,
)

POLICY = RestartPolicy(backoff=1.0, backoff_max=4.0, max_starts=3, window=60.0)
CHECK = HealthCheck(command=("check",), interval=1.0, timeout=1.0, start_period=0.5, retries=2)


def spec(version: str, *, policy: RestartPolicy = POLICY, health: HealthCheck | None = None):
    return BundleSpec(name="app", version=version, command=("run",), restart=policy, health=health)


def test_a_crash_loop_backs_off_then_rolls_back_to_the_version_given() -> None:
    core = SupervisorCore(spec("2"))
    assert core.start(0.0) == [Start(1, "2")]
    core.started(1, 100, 0.0)
    assert core.exited(1, 1, 0.1) == [RestartAt(1.1, 1.0)]
    assert core.state == BACKOFF and core.next_deadline() == 1.1
    assert core.tick(1.0) == []
    assert core.tick(1.1) == [Start(2, "2")]
    core.started(2, 101, 1.1)
    assert core.exited(2, -9, 1.2) == [RestartAt(3.2, 2.0)]  # doubled
    assert core.tick(3.2) == [Start(3, "2")]
    core.started(3, 102, 3.2)
    [rollback] = core.exited(3, 1, 3.3)  # a fourth start within 60 s would be one too many
    assert isinstance(rollback, Rollback) and rollback.version == "2"
    assert "crash-looped (3 starts" in rollback.reason and core.state == ROLLING_BACK
    assert core.rolled_back(spec("1"), 3.4) == [Start(4, "1")]
    status = core.status()
    assert tuple(status) == STATUS_KEYS
    assert status["version"] == "1" and status["rolled_back_from"] == "2"
    assert status["restarts"] == 2 and status["last_exit"]["detail"] == "exit 1"


def test_no_previous_version_gives_up_with_the_reason() -> None:
    core = SupervisorCore(spec("1", policy=RestartPolicy(max_starts=1)))
    core.start(0.0)
    core.started(1, 100, 0.0)
    [_rollback] = core.exited(1, 3, 0.5)
    [give_up] = core.rollback_failed("no earlier good version", 0.6)
    assert isinstance(give_up, GiveUp) and core.state == FAILED
    assert "crash-looped" in core.reason and "no earlier good version" in core.reason
    assert core.next_deadline() is None and core.tick(100.0) == []


def test_failing_health_rolls_back_a_version_never_seen_healthy() -> None:
    core = SupervisorCore(spec("2", health=CHECK), stop_grace=2.0)
    core.start(0.0)
    core.started(1, 100, 0.0)
    assert core.next_deadline() == 0.5
    assert core.tick(0.5) == [CheckHealth(1)]
    assert core.health(1, False, 0.6, "exit 1") == []
    assert core.tick(1.6) == [CheckHealth(1)]
    assert core.health(1, False, 1.7, "timed out") == [Kill(1, hard=False)]
    assert core.state == STOPPING and core.tick(3.7) == [Kill(1, hard=True)]
    [rollback] = core.exited(1, -9, 3.8)
    assert isinstance(rollback, Rollback) and "health check 2 times" in rollback.reason


def test_failing_health_restarts_a_version_that_was_healthy() -> None:
    core = SupervisorCore(spec("2", health=CHECK))
    core.start(0.0)
    core.started(1, 100, 0.0)
    core.tick(0.5)
    core.health(1, True, 0.5)
    assert core.state == HEALTHY
    for t in (1.5, 2.5):
        assert core.tick(t) == [CheckHealth(1)]
        actions = core.health(1, False, t)
    assert actions == [Kill(1, hard=False)]
    assert core.exited(1, -15, 3.0) == [RestartAt(4.0, 1.0)]


def test_stale_answers_are_ignored() -> None:
    core = SupervisorCore(spec("2", health=CHECK))
    core.start(0.0)
    core.started(1, 100, 0.0)
    assert core.tick(0.5) == [CheckHealth(1)]
    core.exited(1, 1, 0.6)
    assert core.health(1, True, 0.7) == [] and core.state == BACKOFF
    assert core.exited(1, 1, 0.8) == []  # the same exit twice
    assert core.started(7, 1, 0.9) == []


def test_stop_terms_then_kills_and_stays_stopped() -> None:
    core = SupervisorCore(spec("1"), stop_grace=5.0)
    core.start(0.0)
    assert core.stop(0.1) == []  # not spawned yet: the kill waits for its pid
    assert core.started(1, 100, 0.2) == [Kill(1, hard=False)]
    assert core.next_deadline() == 5.2 and core.tick(5.2) == [Kill(1, hard=True)]
    assert core.exited(1, -9, 5.3) == [] and core.state == STOPPED
    assert core.tick(1000.0) == []
    assert core.start(1000.0) == [Start(2, "1")]


def test_policies_never_and_on_failure_end_cleanly() -> None:
    core = SupervisorCore(spec("1", policy=RestartPolicy(mode="never")))
    core.start(0.0)
    core.started(1, 100, 0.0)
    assert core.exited(1, 1, 1.0) == [] and core.state == FAILED
    core = SupervisorCore(spec("1"))
    core.start(0.0)
    core.started(1, 100, 0.0)
    assert core.exited(1, 0, 1.0) == [] and core.state == "exited"


def test_the_core_loads_no_event_loop() -> None:
    probe = "import sys, qiz.deploy.supervisor_core; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------- histories

policies = st.builds(
    RestartPolicy,
    mode=st.sampled_from(["on-failure", "always", "never"]),
    backoff=st.floats(0.0, 5.0),
    backoff_max=st.floats(0.0, 10.0),
    max_starts=st.integers(1, 5),
    window=st.floats(0.01, 100.0),
)
checks = st.none() | st.builds(
    HealthCheck,
    command=st.just(("check",)),
    interval=st.floats(0.01, 10.0),
    timeout=st.just(1.0),
    start_period=st.floats(0.0, 10.0),
    retries=st.integers(1, 4),
)


@given(
    data=st.data(),
    policy=policies,
    health=checks,
    older=st.integers(0, 3),
    grace=st.floats(0.0, 5.0),
)
def test_any_history_keeps_the_rules(
    data: st.DataObject, policy: RestartPolicy, health: HealthCheck | None, older: int, grace: float
) -> None:
    """Whatever the child does (exit codes, health answers, their timing) and whatever the
    driver answers: one process at a time; never more than max_starts starts of a version
    within a window; each version rolled back from at most once and never started again; kills
    and health checks only for the live run; tick leaves no deadline in the past."""
    available = [f"v{k}" for k in range(older)]  # previous good versions, latest last
    core = SupervisorCore(spec(f"v{older}", policy=policy, health=health), stop_grace=grace)
    now = 0.0
    pending: int | None = None  # a run Start was issued for, not yet reported
    live: int | None = None  # a run with a process
    health_out: set[int] = set()  # checks running (one of an earlier run may still be)
    rollback_out = False
    stopped = False
    starts: list[tuple[str, float]] = []
    rolled_from: list[str] = []

    def apply(actions: list) -> None:
        nonlocal pending, rollback_out
        for action in actions:
            if isinstance(action, Start):
                assert pending is None and live is None and not rollback_out and not stopped
                assert action.version not in rolled_from and action.version == core.version
                pending = action.run
                starts.append((action.version, now))
                window = core.spec.restart.window
                recent = [t for v, t in starts if v == action.version and t > now - window]
                assert len(recent) <= core.spec.restart.max_starts
            elif isinstance(action, Kill):
                assert action.run == live
            elif isinstance(action, CheckHealth):
                assert action.run == live and action.run not in health_out
                health_out.add(action.run)
            elif isinstance(action, Rollback):
                assert live is None and pending is None and not rollback_out
                assert action.version not in rolled_from
                rolled_from.append(action.version)
                rollback_out = True
            else:
                assert isinstance(action, RestartAt | GiveUp)

    apply(core.start(now))
    for _ in range(data.draw(st.integers(1, 80))):
        choices = ["time", "stop"]
        choices += ["started", "spawn_failed"] if pending is not None else []
        choices += ["exit"] if live is not None else []
        choices += ["health"] if health_out else []
        choices += ["rollback"] if rollback_out else []
        choice = data.draw(st.sampled_from(choices))
        if choice == "time":
            deadline = core.next_deadline()
            if deadline is not None and data.draw(st.booleans()):
                now = max(now, deadline)
            else:
                now += data.draw(st.floats(0.0, 30.0))
            apply(core.tick(now))
            after = core.next_deadline()
            assert after is None or after > now
        elif choice == "stop":
            stopped = True
            apply(core.stop(now))
        elif choice == "started":
            live, pending = pending, None
            apply(core.started(live, 1000 + live, now))
        elif choice == "spawn_failed":
            run, pending = pending, None
            apply(core.spawn_failed(run, "no such file", now))
        elif choice == "exit":
            run, live = live, None
            apply(core.exited(run, data.draw(st.sampled_from([0, 1, -9, -15])), now))
        elif choice == "health":
            run = data.draw(st.sampled_from(sorted(health_out)))
            health_out.discard(run)
            apply(core.health(run, data.draw(st.booleans()), now, "detail"))
        elif choice == "rollback":
            rollback_out = False
            if available:
                apply(core.rolled_back(spec(available.pop(), policy=policy, health=health), now))
            else:
                apply(core.rollback_failed("no earlier good version", now))
        assert core.state in STATES
        if core.state in (RUNNING, HEALTHY):
            assert live is not None
        json.dumps(core.status())
