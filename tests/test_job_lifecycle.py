"""A job's lifecycle from the command line, on two real node processes: Ctrl-C during
``job submit --wait`` leaves the job running and says how to follow or cancel it;
``job status --wait/--follow`` and ``job logs --follow`` block until the end and exit by the
job's outcome; ``job logs`` shows the timeline; ``job list`` shows times and, with
``--worker``, what a node ran for others.

How the test holds a job back without timing: both nodes run one slot each, and a long
Grover search (the "blocker") takes both slots first; the small job queued behind it cannot
finish until the blocker is cancelled, so the CLI is surely waiting when it gets SIGINT."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
from pathlib import Path

import pytest

from qiz.compute.jobdb import (
    MAX_LOG_ENTRIES_PER_JOB,
    MAX_WORKER_RUNS,
    CoordinatorTables,
    RunTables,
    open_db,
)
from tests.json_shapes import check_shape

from .helpers import eventually, node_processes, node_state, ok_json, qiz, qiz_init, qiz_popen

pytestmark = pytest.mark.timeout(180)
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_interrupt_follow_wait_logs_and_worker_lists(tmp_path: Path) -> None:
    work = tmp_path
    ids = qiz_init(work, "A", "B")
    with node_processes(work) as start:
        a = start("A", args=["--slots", "1"])
        start("B", [a.bootstrap], args=["--slots", "1"])
        eventually(lambda: (node_state(a) or {}).get("dht", {}).get("contacts"), 30, "B")

        blocker = ok_json(
            qiz(work, "--home", "A", "job", "submit", "--grover", "24", "--marked", "5",
                "--replicas", "2", "--json")
        )["job_id"]  # fmt: skip
        # (a submission answers once its offers are answered: both slots are the blocker's)

        # two small jobs, waited for (one with --json), then Ctrl-C: the commands stop, the
        # jobs do not
        small = ["job", "submit", "--qaoa", "maxcut", "--graph", "random:6,3", "--replicas", "2"]
        waiting = qiz_popen(work, "--home", "A", *small, "--seed", "3", "--wait")
        waiting_json = qiz_popen(work, "--home", "A", *small, "--seed", "4", "--wait", "--json")

        def small_jobs() -> dict[int, str] | None:
            """The two small jobs by seed, once the node has both (their commands sent
            them: they wait now, or are about to). Asked over the control socket: a CLI
            process per poll would take the CPU the commands need to get there."""
            jobs = a.request("job_list")["result"]["jobs"]
            mine = {j["seed"]: j["job_id"] for j in jobs if j["kind"] == "qaoa"}
            return mine if len(mine) == 2 else None

        found = eventually(small_jobs, 30, "both small jobs submitted")
        job, other = found[3], found[4]
        assert waiting.poll() is None and waiting_json.poll() is None  # behind the blocker
        waiting_json.send_signal(signal.SIGINT)
        out, err = waiting_json.communicate(timeout=30)
        assert waiting_json.returncode == 130, (out, err)
        failure = json.loads(out)
        check_shape("job submit", failure)
        assert failure["exit_code"] == 130 and failure["job_id"] == other
        assert "goes on in the node" in failure["error"] and failure["error"] in err
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 130, (out, err)
        line = err.strip()
        assert "\n" not in line and "Traceback" not in err, err
        short = job[:16]
        assert "goes on in the node" in line
        assert f"qiz --home A job status {short} --follow" in line
        assert f"qiz --home A job logs {short}" in line
        assert f"qiz --home A job cancel {short}" in line

        # followers started while it waits; they end when it ends
        follow = qiz_popen(work, "--home", "A", "job", "status", short, "--follow")
        wait_json = qiz_popen(work, "--home", "A", "job", "status", short, "--wait", "--json")
        logs_follow = qiz_popen(work, "--home", "A", "job", "logs", short, "--follow")
        running = ok_json(qiz(work, "--home", "A", "job", "status", short, "--json"))
        assert running["state"] == "running" and running["finished_at"] is None
        assert running["reason"] is None and running["spec"]["kind"] == "qaoa"
        assert running["progress"] < 1 and all(r["progress"] < 1 for r in running["replicas"])

        cancelled = qiz(work, "--home", "A", "job", "cancel", blocker, "--json")
        assert ok_json(cancelled)["state"] == "cancelled"
        stopped = qiz(work, "--home", "A", "job", "status", blocker, "--wait")
        assert stopped.returncode == 1 and "cancelled by its submitter" in stopped.stderr
        assert f"qiz: job {blocker[:16]} cancelled by its submitter\n" in stopped.stderr
        assert "cancelled: cancelled" not in stopped.stdout + stopped.stderr
        assert "reason: " not in stopped.stdout

        out, err = wait_json.communicate(timeout=60)
        assert wait_json.returncode == 0, err
        final = json.loads(out)
        check_shape("job status", final)
        assert final["state"] == "done" and final["job_id"] == job
        assert final["finished_at"] >= final["submitted_at"]  # the duration is their difference
        span = final["finished_at"] - final["submitted_at"]
        assert final["duration_s"] == pytest.approx(span, abs=0.01)
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert ISO.search(out) and "done: 1/1 task decided" in out  # one task, singular
        out, err = logs_follow.communicate(timeout=60)
        assert logs_follow.returncode == 0, err
        assert out.rstrip().splitlines()[-1].split()[1] == "done"  # the job's last entry

        # the timeline: submitted, placed twice, accepted, started, done, decided, done
        timeline = ok_json(qiz(work, "--home", "A", "job", "logs", short, "--json"))
        entries = timeline["entries"]
        seen = [e["event"] for e in entries]
        assert seen[0] == "submitted" and seen[-1] == "done"
        for event in ("placed", "accepted", "started", "replica_done"):
            assert seen.count(event) >= 2, seen
        assert seen.count("decided") == 1
        placed = {e["worker"] for e in entries if e["event"] == "placed"}
        assert placed == set(ids.values())
        assert all(e["at"] >= entries[0]["at"] for e in entries)
        decided = next(e for e in entries if e["event"] == "decided")
        assert decided["task"] == 0 and "2 agreeing" in decided["detail"]
        human = qiz(work, "--home", "A", "job", "logs", short)
        assert human.returncode == 0 and ISO.match(human.stdout) and "decided" in human.stdout
        blocked = ok_json(qiz(work, "--home", "A", "job", "logs", blocker, "--json"))
        assert blocked["entries"][-1]["event"] == "cancelled"

        # the other interrupted job finishes too
        assert (
            ok_json(
                qiz(work, "--home", "A", "job", "status", other, "--wait", "--json", timeout=60)
            )["state"]
            == "done"
        )

        # job list: submit time, duration, state, kind, replicas; --worker on each node
        listed = qiz(work, "--home", "A", "job", "list")
        assert listed.returncode == 0
        rows = listed.stdout.splitlines()
        assert rows[0].split()[:6] == ["JOB", "SUBMITTED", "DURATION", "STATE", "KIND", "REPLICAS"]
        assert any(job[:16] in r and "done" in r and "qaoa" in r and ISO.search(r) for r in rows)
        assert any(blocker[:16] in r and "cancelled" in r for r in rows)
        for home in "AB":
            runs = ok_json(qiz(work, "--home", home, "job", "list", "--worker", "--json"))["runs"]
            ran = {(r["job_id"], r["state"]) for r in runs}
            assert all("error" not in r and "reason" in r for r in runs)
            assert (job, "done") in ran and (blocker, "cancelled") in ran, ran
            assert all(r["coordinator"] == ids["A"] for r in runs)
        shown = qiz(work, "--home", "B", "job", "list", "--worker")
        assert shown.returncode == 0 and job[:16] in shown.stdout and ISO.search(shown.stdout)

        # the result, readable, and in full to a file
        result = qiz(work, "--home", "A", "job", "result", short, "-o", "full.json")
        assert result.returncode == 0, result.stderr
        assert "approximation ratio" in result.stdout and "full.json" in result.stdout
        full = json.loads((work / "full.json").read_text())
        check_shape("job result", full)
        assert full["job_id"] == job and full["results"][0]["optimum"] == 7


def _writer(fifo: Path) -> int | None:
    """The write end of ``fifo`` once a reader has it open (None before: ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def _reading_a_pipe(pid: int) -> bool:
    """Whether process ``pid`` sleeps in a read of a pipe (Linux: its state and wait channel
    in /proc; ``anon_pipe_read`` or ``pipe_read`` by kernel version, ``0`` without symbols).

    Having the FIFO open is not yet reading it. Python runs a signal's handler between
    bytecodes, and a read only ends early for a signal that arrives while it waits: a SIGINT
    landing between the open and the read is noted, then the read blocks with nobody looking
    at the note, until the write end closes. The open wakes the command and the test at the
    same moment, so that gap of a few microseconds was hit now and then (the 30 s timeout)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return state == "S" and ("pipe_read" in wchan or wchan == "0")


def test_ctrl_c_before_the_spec_leaves_says_nothing_was_submitted(tmp_path: Path) -> None:
    """Ctrl-C while ``job submit --wait`` still prepares its spec ended as typer's silent exit
    130. The spec file is a FIFO nobody writes to: the command blocks reading it (its write
    end opens only once the command has it open; the SIGINT goes once the read waits, see
    :func:`_reading_a_pipe`), before anything reaches a node."""
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    for extra in ([], ["--json"]):
        command = qiz_popen(tmp_path, "job", "submit", "spec.json", "--wait", *extra)
        fd = eventually(lambda: _writer(fifo), 60, "the command opening its spec")
        try:
            reading = functools.partial(_reading_a_pipe, command.pid)
            eventually(reading, 30, "the command reading its spec")
            command.send_signal(signal.SIGINT)
            out, err = command.communicate(timeout=30)
        finally:
            os.close(fd)
        assert command.returncode == 130, (out, err)
        assert err == "qiz: interrupted; nothing was submitted\n", err
        if extra:
            answer = json.loads(out)
            check_shape("job submit", answer)
            assert answer == {
                "ok": False, "error": "interrupted; nothing was submitted", "exit_code": 130
            }  # fmt: skip


def test_a_timeline_keeps_its_first_entry_and_the_newest_within_its_bound() -> None:
    tables = CoordinatorTables(open_db(None))
    job, other = b"\x01" * 32, b"\x02" * 32
    tables.add_log(other, 0.0, "submitted")
    tables.add_log(job, 0.0, "submitted", detail="x" * 10_000)
    for i in range(1, MAX_LOG_ENTRIES_PER_JOB + 20):
        tables.add_log(job, float(i), "retried", task=0, worker=b"\x03" * 32, detail=str(i))
    kept = tables.log(job)
    assert len(kept) == MAX_LOG_ENTRIES_PER_JOB
    assert kept[0].event == "submitted" and len(kept[0].detail) < 10_000
    assert kept[-1].detail == str(MAX_LOG_ENTRIES_PER_JOB + 19)
    assert [e.at for e in kept] == sorted(e.at for e in kept)
    assert len(tables.log(other)) == 1  # another job's timeline is its own


def test_the_worker_history_keeps_the_newest_runs() -> None:
    runs = RunTables(open_db(None))
    coordinator = b"\x04" * 32
    for i in range(MAX_WORKER_RUNS + 5):
        runs.started(i.to_bytes(32, "big"), 0, coordinator, float(i))
    runs.finished((MAX_WORKER_RUNS + 4).to_bytes(32, "big"), 0, coordinator, 1e6, outcome="done")
    kept = runs.all()
    assert len(kept) == MAX_WORKER_RUNS and kept[0].started == 5.0
    assert kept[-1].outcome == "done" and kept[-1].finished == 1e6
    assert all(r.outcome == "running" and r.finished is None for r in kept[:-1])
