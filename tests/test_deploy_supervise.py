"""The supervisor's driver (issue 17, item 5) with real child processes: small python scripts
installed as bundle versions and run with sys.executable. Policies use short backoffs and
intervals; every wait is for a state (bounded only as a guard against a hang), never a time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from qiz.deploy.bundle import BundleSpec, HealthCheck, ResourceLimits, RestartPolicy
from qiz.deploy.install import Installer
from qiz.deploy.supervise import RotatingLog, Supervisor, SupervisorError
from qiz.deploy.supervisor_core import IDLE, STATUS_KEYS
from tests.helpers import run

FAST = RestartPolicy(backoff=0.01, backoff_max=0.05, max_starts=3, window=60.0)

SERVICE = """
import json, os, subprocess, sys, time
print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}), flush=True)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(os.environ["HOME"], "helper.pid"), "w") as f:
    f.write(str(helper.pid))
while True:
    time.sleep(0.05)
"""
CRASH = "import sys; print('crashing', flush=True); sys.exit(3)\n"
IGNORE_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.05)
"""
HANG = "import time; time.sleep(600)\n"
FAIL = "import sys; sys.exit(1)\n"
OK = "import sys; sys.exit(0)\n"
EAT_MEMORY = "x = bytearray(400 * 1024 * 1024)\nprint('allocated')\n"
BURN_CPU = "while True:\n    pass\n"
OPEN_FILES = "fs = [open(__file__) for _ in range(100)]\nprint('opened')\n"


def install(
    inst: Installer, version: str, script: str, health: str | None = None
) -> dict[str, bytes]:
    files = {"run.py": script.encode()}
    if health is not None:
        files["health.py"] = health.encode()
    table = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    inst.install(version, files, table)
    return files


def spec(
    version: str,
    *,
    health: bool = False,
    policy: RestartPolicy = FAST,
    limits: ResourceLimits | None = None,
    env: dict[str, str] | None = None,
) -> BundleSpec:
    check = None
    if health:
        check = HealthCheck(
            command=(sys.executable, "health.py"),
            interval=0.05,
            timeout=0.3,
            start_period=0.0,
            retries=2,
        )
    return BundleSpec(
        name="app",
        version=version,
        command=(sys.executable, "run.py"),
        env=env or {},
        limits=limits or ResourceLimits(),
        health=check,
        restart=policy,
    )


def log_text(log: RotatingLog) -> str:
    return "".join(p.read_text(errors="replace") for p in reversed(log.files()))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie not yet reaped by its (dead) parent's reaper still counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_healthy_service_runs_clean_and_stops_as_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QIZ_PASSPHRASE", "secret-of-the-node")
    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE, health=OK)
    specs = {"1": spec("1", health=True, env={"GREETING": "hi"})}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__, stop_grace=2.0)
        await sup.start()
        status = await sup.wait_for(lambda s: s["state"] == "healthy")
        assert status["version"] == "1" and status["pid"] and status["restarts"] == 0
        assert status["last_health"]["ok"] is True
        pid = status["pid"]
        helper = tmp_path / "app" / "data" / "helper.pid"
        await sup.wait_for(lambda _s: helper.exists() and helper.read_text().strip() != "")
        helper_pid = int(helper.read_text())
        status = await sup.stop()
        assert status["state"] == "stopped" and status["pid"] is None
        await sup.close()
        assert gone(pid) and gone(helper_pid)  # the whole group went

        first = json.loads(next(line for line in log_text(sup.log).splitlines() if line[:1] == "{"))
        env = first["env"]
        assert "QIZ_PASSPHRASE" not in env and "secret-of-the-node" not in json.dumps(env)
        assert env["QIZ_BUNDLE_NAME"] == "app" and env["QIZ_BUNDLE_VERSION"] == "1"
        assert env["GREETING"] == "hi" and env["HOME"] == str(tmp_path / "app" / "data")
        assert Path(first["cwd"]) == tmp_path / "app" / "1"

    run(scenario())


def test_a_version_that_crashes_at_start_is_rolled_back(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE)
    install(inst, "2", CRASH)
    specs = {"1": spec("1"), "2": spec("2")}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        await sup.start()
        status = await sup.wait_for(lambda s: s["version"] == "1" and s["state"] == "running")
        assert status["rolled_back_from"] == "2" and status["last_exit"]["code"] == 3
        assert ("rolling-back", "2") in sup.states
        assert [state for state, version in sup.states if version == "2"].count("starting") == 3
        await sup.stop()
        await sup.close()

    run(scenario())
    assert inst.current() == "1" and inst.bad() == {"2"}
    text = log_text(RotatingLog(tmp_path / "app" / "logs" / "output.log"))
    assert text.count("crashing") == 3 and "crash-looped (3 starts" in text


def test_a_crash_loop_during_another_change_still_rolls_back_once_it_ends(
    tmp_path: Path,
) -> None:
    """A follower stages its next version (holding the bundle's lock) while the current one
    crash-loops: the rollback waits for the lock instead of giving up, so the crashing version
    still ends marked bad and the previous one runs."""
    import threading

    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE)
    install(inst, "2", CRASH)
    specs = {"1": spec("1"), "2": spec("2")}
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with inst._locked():  # what Installer.install(..., switch=False) holds while staging
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(5)

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        await sup.start()
        await sup.wait_for(lambda s: s["state"] == "rolling-back")
        await asyncio.sleep(0.3)  # the rollback is waiting for the lock, not failing
        assert sup.status()["state"] == "rolling-back"
        release.set()
        status = await sup.wait_for(lambda s: s["version"] == "1" and s["state"] == "running")
        assert status["rolled_back_from"] == "2"
        await sup.stop()
        await sup.close()

    try:
        run(scenario())
    finally:
        release.set()
        holder.join(10)
    assert inst.current() == "1" and inst.bad() == {"2"}


def test_a_version_failing_its_health_check_is_rolled_back(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE, health=OK)
    install(inst, "2", SERVICE, health=FAIL)
    specs = {"1": spec("1", health=True), "2": spec("2", health=True)}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        await sup.start()
        status = await sup.wait_for(lambda s: s["version"] == "1" and s["state"] == "healthy")
        assert status["rolled_back_from"] == "2"
        await sup.stop()
        await sup.close()
        assert "failed its health check 2 times (exit 1)" in log_text(sup.log)

    run(scenario())
    assert inst.current() == "1" and inst.bad() == {"2"}


def test_a_hanging_health_check_with_no_previous_version_gives_up(tmp_path: Path) -> None:
    """The health command overruns its timeout and is killed; with no previous version to roll
    back to, the supervisor stops the service and gives up, saying why."""
    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE, health=HANG)
    specs = {"1": spec("1", health=True)}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        await sup.start()
        status = await sup.wait_for(lambda s: s["state"] in IDLE)
        assert status["state"] == "failed" and status["version"] == "1"
        assert "failed its health check 2 times (timed out after 0.3 s)" in status["reason"]
        assert "no earlier good version" in status["reason"]
        assert status["last_exit"]["code"] == -signal.SIGTERM
        assert status["last_health"] == {"ok": False, "detail": "timed out after 0.3 s", "run": 1}
        await sup.close()

    run(scenario())
    assert inst.current() == "1" and inst.bad() == set()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", IGNORE_TERM)
    specs = {"1": spec("1")}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__, stop_grace=0.2)
        await sup.start()
        await sup.wait_for(lambda _s: "ignoring SIGTERM" in log_text(sup.log))
        status = await sup.stop()
        assert status["state"] == "stopped"
        assert status["last_exit"]["code"] == -signal.SIGKILL
        await sup.close()

    run(scenario())


def test_a_command_that_cannot_start_gives_up(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", OK)
    broken = BundleSpec(name="app", version="1", command=("./no-such-program",), restart=FAST)

    async def scenario() -> None:
        sup = Supervisor(inst, lambda _v: broken)
        await sup.start()
        status = await sup.wait_for(lambda s: s["state"] in IDLE)
        assert status["state"] == "failed" and "crash-looped" in status["reason"]
        assert status["last_exit"]["detail"].startswith("could not start")
        await sup.close()

    run(scenario())


def test_an_upgrade_is_stop_install_start(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", SERVICE)
    specs = {"1": spec("1"), "2": spec("2")}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        assert sup.status()["state"] == "stopped" and set(sup.status()) >= set(STATUS_KEYS)
        await sup.start()
        first = await sup.wait_for(lambda s: s["state"] == "running")
        await sup.stop()
        install(inst, "2", SERVICE)
        await sup.start()
        second = await sup.wait_for(lambda s: s["state"] == "running")
        assert (first["version"], second["version"]) == ("1", "2") and first["pid"] != second["pid"]
        assert second["rolled_back_from"] is None and inst.previous() == "1"
        await sup.stop()
        await sup.close()

    run(scenario())


def test_a_spec_for_another_version_is_refused(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", OK)

    async def scenario() -> None:
        sup = Supervisor(inst, lambda _v: spec("2"))
        with pytest.raises(SupervisorError) as exc:
            await sup.start()
        assert "is app 2" in str(exc.value)
        await sup.close()

    run(scenario())


@pytest.mark.parametrize(
    ("script", "limits", "expect_code", "expect_log"),
    [
        (EAT_MEMORY, ResourceLimits(memory_mb=200), 1, "MemoryError"),
        (BURN_CPU, ResourceLimits(cpu_seconds=1), -signal.SIGXCPU, ""),
        (OPEN_FILES, ResourceLimits(open_files=32), 1, "Too many open files"),
    ],
    ids=["memory", "cpu", "open-files"],
)
def test_resource_limits_hold_in_the_child(
    tmp_path: Path, script: str, limits: ResourceLimits, expect_code: int, expect_log: str
) -> None:
    inst = Installer(tmp_path, "app")
    install(inst, "1", script)
    never = RestartPolicy(mode="never")
    specs = {"1": spec("1", limits=limits, policy=never)}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__)
        await sup.start()
        status = await sup.wait_for(lambda s: s["state"] in IDLE)
        assert status["state"] == "failed"
        assert status["last_exit"]["code"] == expect_code
        text = log_text(sup.log)
        assert expect_log in text and "allocated" not in text and "opened" not in text
        await sup.close()

    run(scenario())


def test_logs_rotate_by_size(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    chatty = "for i in range(2000):\n    print('line', i, 'x' * 40)\n"
    install(inst, "1", chatty)
    specs = {"1": spec("1", policy=RestartPolicy(mode="never"))}

    async def scenario() -> None:
        sup = Supervisor(inst, specs.__getitem__, log_bytes=10_000, log_files=3)
        await sup.start()
        status = await sup.wait_for(lambda s: s["state"] in IDLE)
        assert status["state"] == "exited"
        await sup.close()
        files = sup.log.files()
        assert [p.name for p in files] == [
            "output.log",
            "output.log.1",
            "output.log.2",
            "output.log.3",
        ]
        assert all(p.stat().st_size <= 10_000 for p in files)
        assert "line 1999" in files[0].read_text() + files[1].read_text()
        assert "line 0 " not in log_text(sup.log)  # the oldest were dropped

    run(scenario())


def test_rotating_log_keeps_at_most_keep_files(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log", max_bytes=100, keep=2)
    for k in range(50):
        log.write(f"{k:03d}".encode() * 10)
    log.close()
    assert [p.name for p in log.files()] == ["x.log", "x.log.1", "x.log.2"]
    assert (tmp_path / "x.log").read_bytes() == b"048" * 10 + b"049" * 10
    assert not (tmp_path / "x.log.3").exists()
