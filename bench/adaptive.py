"""Adaptive replication against colluding liars: accepted wrong results, before and after.

    python bench/adaptive.py [--quick] [--busy-ok]

The coordinator's real decision core (:class:`qiz.compute.core.JobCore`, real peer scores)
runs in simulated time (:mod:`qiz.sim.jobs`) against 1000 workers of which 10, 20 or 30% are
*colluding liars*: every liar returns the same wrong result for a task under a valid claim, so
two liars always agree. Each job is one task with 2 replicas and quorum 2, so jobs = tasks.
No other faults (no deaths, stragglers or slow workers) and no joins: the only adversary is the
liars, and every worker starts as a stranger (score 0.8) at the start of the run.

Two cores side by side on the same seed and the same jobs: the **plain quorum** (2 agreeing
replicas decide, ``adaptive=False``) and **adaptive replication** (the agreeing group must
also carry the trust of 2 established workers, see docs/jobs.md "Trust"). Per row: accepted
wrong results (count and rate), jobs failed, replicas offered per task (the cost), and the share
of offers that reached liars in the first, second and last tenth of the run.

The analytic bound printed beside it is for *random* placement with *no history*: the plain
quorum accepts a wrong result when both replicas are liars, ``f^2``; adaptive replication needs
``k`` agreeing strangers to carry the trust of 2 established workers (``k = 4``: a stranger at
score 0.8 carries half an established worker's trust), so ``f^k``. What history adds (a liar
caught once carries no trust and gets less work) is in docs/jobs.md.

Figures are counts in simulated time, equal for equal seeds on any machine; only the wall time
depends on the machine. The six runs go to two processes.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import check_quiet, machine
from qiz.compute.core import credit
from qiz.sim.jobs import Behaviour, JobsConfig, run_jobs
from qiz.trust.scores import INITIAL

FRACTIONS = (0.1, 0.2, 0.3)
QUORUM = 2
GOAL = 0.001  # the issue's: below 0.1% accepted wrong results at 30% liars


def config(jobs: int, liars: float, adaptive: bool) -> JobsConfig:
    return JobsConfig(
        workers=1000,
        jobs=jobs,
        tasks=(1, 1),
        replicas=(QUORUM, QUORUM),
        quorum=QUORUM,
        deadline=3600,
        arrivals=jobs / 10,  # ten jobs a second: enough load to spread work over many workers
        joins=0,
        dies=0.0,
        stragglers=0.0,
        slow=0.0,
        liars=liars,
        adaptive=adaptive,
    )


def strangers_needed() -> int:
    """Agreeing replicas of new workers (score ``INITIAL``) that carry the quorum's trust."""
    return math.ceil(QUORUM / credit(INITIAL) - 1e-9)


def analytic(f: float, adaptive: bool) -> float:
    """P(every replica deciding a task is a liar), random placement, no history."""
    return f ** (strangers_needed() if adaptive else QUORUM)


def one(args: tuple[int, float, bool, int]) -> dict:
    jobs, liars, adaptive, seed = args
    report = run_jobs(config(jobs, liars, adaptive), seed=seed)
    liar_ids = {n for n, b in report.behaviours.items() if b is Behaviour.LIAR}
    tasks = sum(len(d) for d in report.decisions.values())
    failed = [e for e in report.errors.values() if e]
    end = max((t for t, _ in report.offers), default=0.0) or 1.0
    tenths = [[0, 0] for _ in range(10)]
    for t, to_liar in report.offers:
        k = min(9, int(10 * t / end))
        tenths[k][0] += 1
        tenths[k][1] += to_liar
    agreeing_liars = sum(
        all(r.worker in liar_ids for r in d.agreeing)
        for ds in report.decisions.values()
        for d in ds
    )
    return {
        "liars": liars,
        "adaptive": adaptive,
        "jobs": jobs,
        "decided": tasks,
        "wrong": report.wrong_tasks(),
        "all_liar_groups": agreeing_liars,
        "failed": len(failed),
        "failures": sorted(set(failed))[:3],
        "offers_per_task": len(report.offers) / max(tasks + len(failed), 1),
        "liar_share": [b / a if a else 0.0 for a, b in tenths],
        "wall": report.wall_seconds,
        "running": report.running,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| liars | quorum | wrong accepted | rate | analytic bound (random, no history) "
        "| failed | replicas per task | liar share of work: 1st / 2nd / last tenth |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        share = r["liar_share"]
        lines.append(
            f"| {r['liars']:.0%} | {'adaptive' if r['adaptive'] else 'plain 2'} "
            f"| {r['wrong']} of {r['decided']} | {r['wrong'] / max(r['decided'], 1):.3%} "
            f"| {analytic(r['liars'], r['adaptive']):.3%} | {r['failed']} "
            f"| {r['offers_per_task']:.3f} | {share[0]:.1%} / {share[1]:.1%} / {share[9]:.2%} |"
        )
    return "\n".join(lines)


def run(quick: bool, busy_ok: bool, jobs: int | None = None, workers: int = 2) -> list[dict]:
    """The six rows (10/20/30% liars, plain and adaptive) over ``jobs`` jobs each (500 with
    ``--quick``, 10,000 in full), in ``workers`` processes (1: in this one). Exits non-zero if
    the core got stuck or accepted a wrong result from a group that was not all liars."""
    check_quiet(quick, busy_ok)
    jobs = jobs or (500 if quick else 10_000)
    runs = [(jobs, f, adaptive, 1) for f in FRACTIONS for adaptive in (False, True)]
    began = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(one, runs))
    else:
        rows = [one(r) for r in runs]
    wall = time.perf_counter() - began
    for r in rows:
        r["run_wall"] = wall
        if r["running"]:
            raise SystemExit(f"a run left {r['running']} jobs running: the core is stuck")
        if r["wrong"] != r["all_liar_groups"]:
            raise SystemExit("a wrong result was accepted from a group that was not all liars")
    return rows


def header(rows: list[dict]) -> str:
    """Two lines: the run's size and machine, then how many strangers decide and the wall."""
    return (
        f"adaptive replication, {rows[0]['jobs']} one-task jobs per row, 1000 workers, on "
        f"{machine()}\n(a stranger at score {INITIAL} carries {credit(INITIAL):.2f} of an "
        f"established worker's trust: {strangers_needed()} agreeing strangers decide; "
        f"{rows[0]['run_wall']:.0f} s wall)"
    )


def failures(rows: list[dict]) -> list[str]:
    """One line per row whose jobs failed, with examples of why."""
    return [
        f"- {r['liars']:.0%} {'adaptive' if r['adaptive'] else 'plain'}: failed jobs, "
        f"e.g. {r['failures']}"
        for r in rows
        if r["failures"]
    ]


def goal(rows: list[dict]) -> tuple[float, bool]:
    """The accepted-wrong rate at 30% liars with adaptive replication, and whether it is
    under the issue's goal."""
    at30 = next(r for r in rows if r["adaptive"] and r["liars"] == 0.3)
    rate = at30["wrong"] / max(at30["decided"], 1)
    return rate, rate < GOAL


def main() -> None:
    rows = run("--quick" in sys.argv, "--busy-ok" in sys.argv)
    print(header(rows))
    print(table(rows))
    for line in failures(rows):
        print(line)
    rate, met = goal(rows)
    print(
        f"goal (< {GOAL:.1%} wrong at 30% liars, adaptive): {rate:.3%}, "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
