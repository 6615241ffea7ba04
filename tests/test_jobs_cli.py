"""The job commands against real node processes: submit (spec file and shortcut), wait, status,
list, result, cancel, and ``verify-result`` on a good and a tampered attestation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qiz import wire

from .helpers import eventually, node_processes, node_state, ok_json, one_line_error, qiz, qiz_init

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def mesh_homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("jobs")
    return work, qiz_init(work, "A", "B", "C")


def test_jobs_through_the_cli_on_three_node_processes(mesh_homes) -> None:
    work, ids = mesh_homes
    with node_processes(work) as start:
        nodes = {"A": start("A", args=["--slots", "1"])}
        assert nodes["A"].node_id == ids["A"]
        for name in "BC":
            nodes[name] = start(name, [nodes["A"].bootstrap], args=["--slots", "1"])

        def ready() -> bool:
            status = node_state(nodes["A"])
            return bool(status) and status["dht"]["contacts"] >= 2

        eventually(ready, 30, "the mesh")
        spec = {
            "kind": "sweep",
            "params": {
                "over": "qaoa",
                "base": {"graph": "random:10,3", "p": 1, "gammas": [0.0], "betas": [0.0]},
                "axes": {"gammas.0": [0.1, 0.2, 0.3, 0.4], "betas.0": [0.1, 0.2]},
                "shard": 2,
            },
        }
        (work / "sweep.json").write_text(json.dumps(spec))
        done = ok_json(
            qiz(
                work,
                "--home",
                "A",
                "job",
                "submit",
                "sweep.json",
                "--replicas",
                "2",
                "--wait",
                "--out",
                "sweep.att",
                "--json",
                timeout=120,
            )
        )
        assert done["state"] == "done" and done["tasks"] == 4 and done["decided"] == 4
        verified = ok_json(qiz(work, "verify-result", "sweep.att", "--json"))
        assert verified["verified"] and verified["submitter"] == ids["A"]
        assert verified["tasks"] == 4 and verified["tests"] == ["exact"]
        assert set(verified["workers"]) <= set(ids.values()) and len(verified["workers"]) >= 2

        status = ok_json(qiz(work, "--home", "A", "job", "status", done["job_id"][:10], "--json"))
        assert status["job_id"] == done["job_id"] and status["state"] == "done"
        assert status["reason"] is None and "error" not in status  # 'error': a failed command
        # what the signed spec asked for, for the dashboard of jobs without an attestation
        assert status["spec"] == {
            "kind": "sweep", "params": spec["params"], "replicas": 2, "quorum": 2,
            "seed": status["seed"], "deadline_s": 3600, "submitter": ids["A"],
        }  # fmt: skip
        # a node that ran tasks of the job only as a worker: not its job, said so, and where
        worker_home = next(h for h in "BC" if ids[h] in verified["workers"])
        line = one_line_error(
            qiz(work, "--home", worker_home, "job", "status", done["job_id"][:10])
        )
        assert f"no job submitted here starts with '{done['job_id'][:10]}'" in line
        assert "qiz job list --worker" in line
        listed = ok_json(qiz(work, "--home", "A", "job", "list", "--json"))
        assert [j["job_id"] for j in listed["jobs"]] == [done["job_id"]]
        assert "spec" not in listed["jobs"][0]
        result = ok_json(
            qiz(work, "--home", "A", "job", "result", done["job_id"], "-o", "flat.json",
                "--attestation", "again.att", "--json")
        )  # fmt: skip
        # a sweep's points: one flat list, each with its point (not one list per shard)
        points = result["points"]
        assert len(points) == 8 and all("expectation" in p and "point" in p for p in points)
        assert "results" not in result
        assert json.loads((work / "flat.json").read_text())["points"] == points
        assert (work / "again.att").read_bytes() == (work / "sweep.att").read_bytes()
        # the readable summary: the best point with its parameters, and the number of points
        best = max(points, key=lambda p: p["expectation"])
        assert result["num_points"] == 8 and result["best"]["point"] == best["point"]
        assert result["best"]["value"] == best["expectation"] and result["over"] == "qaoa"
        shown = qiz(work, "--home", "A", "job", "result", done["job_id"])
        assert shown.returncode == 0 and "8 points over qaoa" in shown.stdout
        assert f"best expectation {best['expectation']:.10g} at betas.0 = " in shown.stdout
        # the timeline: every replica placed, done, every task decided, the job done
        timeline = ok_json(qiz(work, "--home", "A", "job", "logs", done["job_id"], "--json"))
        seen = [e["event"] for e in timeline["entries"]]
        assert seen[0] == "submitted" and seen[-1] == "done" and seen.count("decided") == 4
        assert seen.count("placed") >= 8 and seen.count("replica_done") >= 8
        assert {e["worker"] for e in timeline["entries"] if e["worker"]} <= set(ids.values())

        # the shortcut form; a second submission of the same job is the same job
        short = [
            "--home",
            "A",
            "job",
            "submit",
            "--qaoa",
            "maxcut",
            "--graph",
            "random:8,3",
            "--p",
            "1",
            "--replicas",
            "2",
            "--wait",
            "--json",
        ]
        first = ok_json(qiz(work, *short, timeout=120))
        again = ok_json(qiz(work, *short, timeout=60))
        assert first["state"] == "done" and again["job_id"] == first["job_id"]
        assert "approximation ratio" in first["summary"] and "optimum" in first["summary"]
        done_cancel = qiz(work, "--home", "A", "job", "cancel", first["job_id"])
        assert done_cancel.returncode == 0 and "nothing to cancel" in done_cancel.stdout
        shown = qiz(work, "--home", "A", "job", "status", first["job_id"])
        assert "1/1 task decided" in shown.stdout and "2 replicas per task" in shown.stdout
        line = one_line_error(
            qiz(
                work,
                "--home",
                "A",
                "job",
                "submit",
                "--grover",
                "5",
                "--marked",
                "3",
                "--out",
                "x.att",
            )
        )
        assert "--out needs --wait" in line
        program = (
            'OPENQASM 3.0; include "stdgates.inc"; input angle theta; qubit[1] q; bit[1] c; '
            "rx(theta) q[0]; c = measure q;\n// " + "x" * 3000 + "\n"
        )
        (work / "angle.qasm").write_text(program)
        flipped = ok_json(
            qiz(
                work,
                "--home",
                "A",
                "job",
                "submit",
                "--sampler",
                "angle.qasm",
                "--param",
                "theta=3.141592653589793",
                "--shots",
                "200",
                "--replicas",
                "2",
                "--wait",
                "--json",
                timeout=120,
            )
        )
        assert flipped["state"] == "done" and "1: 200" in flipped["summary"]
        qasm = flipped["spec"]["params"]["qasm"]  # --wait: the final status, with the spec
        assert qasm == program[:2000] + f"\u2026  ({len(program):,} characters)"

        # a tampered attestation fails verification, with exit code 1
        outer = wire.decode((work / "sweep.att").read_bytes())
        outer["results"][0][0]["expectation"] += 1e-6
        (work / "tampered.att").write_bytes(wire.encode(outer))
        line = one_line_error(qiz(work, "verify-result", "tampered.att"), code=1)
        assert "NOT verified" in line and "do not match" in line

        # a long job cancelled
        long_job = [
            "--home",
            "A",
            "job",
            "submit",
            "--grover",
            "24",
            "--marked",
            "5",
            "--replicas",
            "2",
            "--json",
        ]
        running = ok_json(qiz(work, *long_job))
        cancelled = ok_json(qiz(work, "--home", "A", "job", "cancel", running["job_id"], "--json"))
        assert (
            cancelled["state"] == "cancelled"
            and cancelled["reason"] == "cancelled by its submitter"
        )
        again = qiz(work, "--home", "A", "job", "cancel", running["job_id"][:12])
        assert again.returncode == 0, again.stderr
        assert (
            f"job {running['job_id'][:16]} is already cancelled: nothing to cancel" in again.stdout
        )
        assert again.stdout.count("cancelled by its submitter") == 1  # said once, not doubled
        line = one_line_error(qiz(work, "--home", "A", "job", "result", running["job_id"]))
        assert "cancelled; it has no attested result" in line

        # bad input: one clear line each, nothing submitted
        (work / "bad.json").write_text("{not json")
        assert "is not JSON" in one_line_error(
            qiz(work, "--home", "A", "job", "submit", "bad.json")
        )
        (work / "invalid.json").write_text(
            json.dumps({"kind": "qaoa", "params": {"graph": "random:8,3"}})
        )
        line = one_line_error(qiz(work, "--home", "A", "job", "submit", "invalid.json"))
        assert "params.p: is required for qaoa" in line
        line = one_line_error(qiz(work, "--home", "A", "job", "submit"))
        assert "exactly one of --qaoa" in line
        line = one_line_error(qiz(work, "--home", "A", "job", "status", "ffff"))
        assert "no job submitted here starts with 'ffff'" in line and "--worker" not in line
        jobs = ok_json(qiz(work, "--home", "A", "job", "list", "--json"))["jobs"]
        assert len(jobs) == 4 and jobs[0]["job_id"] == running["job_id"]  # newest first
        assert [j["submitted_at"] for j in jobs] == sorted(
            (j["submitted_at"] for j in jobs), reverse=True
        )
        shown = qiz(work, "--home", "A", "job", "list", "--limit", "1").stdout.splitlines()
        assert len(shown) == 3 and running["job_id"][:16] in shown[1]
        assert shown[2] == "3 older jobs not shown: --all, or --limit N"
        assert (
            len(ok_json(qiz(work, "--home", "A", "job", "list", "--limit", "2", "--json"))["jobs"])
            == 2
        )
        line = one_line_error(qiz(work, "verify-result", "missing.att"))
        assert "does not exist" in line


def test_job_commands_without_a_node(mesh_homes) -> None:
    work, _ = mesh_homes
    line = one_line_error(qiz(work, "--home", "B", "job", "list"))
    assert "no node is" in line and "node start" in line  # never started, or killed


@pytest.mark.parametrize(
    "content",
    [b"hello\n", b"\xa1\x61a\x01", bytes(range(256)), b"\xd8\x1e\x82\x01\x02"],
    ids=["text", "other-cbor", "binary", "cbor-tag"],
)
def test_verify_result_refuses_a_file_that_is_not_an_attestation(tmp_path, content) -> None:
    """A wrong file is a user error (exit 2) told in words, not a failed check (exit 1) in the
    codec's words."""
    (tmp_path / "wrong.att").write_bytes(content)
    for args in (["verify-result", "wrong.att"], ["verify-result", "wrong.att", "--json"]):
        line = one_line_error(qiz(tmp_path, *args), code=2)
        assert "is not a QIZ attestation file" in line
        for word in ("CBOR", "cbor", "canonical", "stream", "tag", "Fraction"):
            assert word not in line, line
