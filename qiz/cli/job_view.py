"""How the job commands render for people: a status, timeline entries, the job tables, and a
result's key figures (a sweep's best point with its parameters).

Pure functions over the JSON shapes the node answers (docs/json/job-*.schema.json): the
commands in :mod:`qiz.cli.job_cmds` fetch, this module prints, so what a person reads and
what ``--json`` prints come from the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qiz.cli.human import duration, moment, plural
from qiz.cli.output import console

SHORT_ID = 16  # hex digits of a job id, characters of a node id, shown in tables
# the figures worth a line, per kind, in the order printed (all of them are under --json)
KEY_FIGURES: dict[str, tuple[str, ...]] = {
    "qaoa": (
        "expectation",
        "best_cut",
        "best_bitstring",
        "optimum",
        "approximation_ratio",
        "evaluations",
    ),
    "vqe": ("energy", "exact", "converged", "evaluations"),
    "grover": ("success_probability", "iterations", "shots"),
    "sampler": ("shots",),
    "estimator": ("values",),
}
TOP_OUTCOMES = 3


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under a header, in columns as wide as their widest cell: nothing is cut or
    wrapped, whatever the terminal's width (a pipe gets one line per row, as ``kubectl get``)."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        console.print("  ".join(cells).rstrip(), markup=False, soft_wrap=True)


def reason_text(state: Mapping[str, Any]) -> str | None:
    """Why a job ended as it did, said once: "cancelled by its submitter", not "cancelled:
    cancelled by its submitter" (None when there is no reason: a done or running job)."""
    reason = state.get("reason")
    if not reason:
        return None
    return reason if reason.startswith(state["state"]) else f"{state['state']}: {reason}"


def decided_text(state: Mapping[str, Any]) -> str:
    """ "0/1 task decided, 42%": how far a job is, as the status and --follow print it."""
    return (
        f"{state['decided']}/{plural(state['tasks'], 'task')} decided, "
        f"{state['progress'] * 100:.0f}%"
    )


def kind_of(state: Mapping[str, Any]) -> str:
    return state["kind"] + (f"/{state['over']}" if state["kind"] == "sweep" else "")


def show_status(state: Mapping[str, Any]) -> None:
    """A job's state, progress, times and where its replicas run."""
    console.print(
        f"job {state['job_id']}  {kind_of(state)}  [bold]{state['state']}[/bold]  "
        f"{decided_text(state)}"
    )
    ended = f", finished {moment(state['finished_at'])}" if state.get("finished_at") else ""
    console.print(
        f"  submitted {moment(state['submitted_at'])}{ended}, "
        f"{duration(state['duration_s'])}; {plural(state['replicas_wanted'], 'replica')} per "
        f"task, quorum {state['quorum']}",
        markup=False,
    )
    why = reason_text(state)
    if why:
        console.print(f"  {why}", markup=False)
    workers: dict[str, list[str]] = {}
    for r in state["replicas"]:
        workers.setdefault(r["worker"], []).append(f"{r['task']}:{r['state']}")
    for worker, runs in sorted(workers.items()):
        console.print(f"  {worker[:SHORT_ID]}  {' '.join(runs)}", markup=False)


def log_line(entry: Mapping[str, Any]) -> str:
    """One timeline entry: ISO moment, event, task, worker, why."""
    task = f"task {entry['task']}" if entry["task"] is not None else "job"
    worker = entry["worker"][:SHORT_ID] if entry["worker"] else ""
    detail = f"  {entry['detail']}" if entry["detail"] else ""
    return f"{moment(entry['at'])}  {entry['event']:<14} {task:<8} {worker:<{SHORT_ID}}{detail}"


def show_logs(entries: Sequence[Mapping[str, Any]]) -> None:
    if not entries:
        console.print("no timeline for this job (it was submitted before timelines were kept)")
    for entry in entries:
        console.print(log_line(entry), markup=False)


def show_jobs(jobs: Sequence[Mapping[str, Any]], older: int = 0) -> None:
    """The jobs submitted here, newest first; ``older``: how many more are not shown."""
    if not jobs and not older:
        console.print("no jobs were submitted through this node yet")
        return
    header = ("JOB", "SUBMITTED", "DURATION", "STATE", "KIND", "REPLICAS", "TASKS", "PROGRESS")
    rows = [
        (
            j["job_id"][:SHORT_ID],
            moment(j["submitted_at"]),
            duration(j["duration_s"]),
            j["state"],
            kind_of(j),
            f"{j['replicas_wanted']}, quorum {j['quorum']}",
            f"{j['decided']}/{j['tasks']}",
            f"{j['progress']:.0%}",
        )
        for j in jobs
    ]
    columns(header, rows)
    if older:
        console.print(f"{plural(older, 'older job')} not shown: --all, or --limit N", markup=False)


def show_runs(answer: Mapping[str, Any]) -> None:
    """The tasks this node ran as a worker."""
    if not answer["worker"]:
        console.print("this node runs no worker (it only submits and coordinates)")
        return
    if not answer["runs"]:
        console.print("this node has not run any task for others yet")
        return
    header = ("JOB", "TASK", "COORDINATOR", "STARTED", "DURATION", "STATE", "REASON")
    rows = [
        (
            r["job_id"][:SHORT_ID],
            str(r["task"]),
            r["coordinator"][:SHORT_ID],
            moment(r["started_at"]),
            duration(r["duration_s"]),
            r["state"],
            r.get("reason") or "",
        )
        for r in answer["runs"]
    ]
    columns(header, rows)


# ---------------------------------------------------------------------------- results


def _scalar(point: Mapping[str, Any]) -> tuple[str, float] | None:
    """The number a sweep point is judged by, and its name (``expectation``: higher is
    better, a QAOA cut; ``energy``: lower is better)."""
    for name in ("expectation", "energy"):
        value = point.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return name, float(value)
    return None


def flat_points(results: Sequence[Any]) -> list[Any]:
    """A sweep's points in one list, in order: the attested results are one list per shard."""
    return [point for task in results for point in (task if isinstance(task, list) else ())]


def best_point(results: Sequence[Any]) -> dict[str, Any] | None:
    """A sweep's best point: its parameters, the figure and its value (None if the points
    carry no single number to compare, as a sampler's counts)."""
    best: dict[str, Any] | None = None
    for task in results:
        for point in task if isinstance(task, list) else ():
            judged = _scalar(point) if isinstance(point, dict) else None
            if judged is None:
                continue
            name, value = judged
            better = best is None or (
                value > best["value"] if name == "expectation" else value < best["value"]
            )
            if better:
                best = {"point": point.get("point", {}), "figure": name, "value": value}
    return best


def key_figures(kind: str, result: Any) -> dict[str, Any]:
    """The figures of one task's result worth printing for ``kind`` (see KEY_FIGURES)."""
    if not isinstance(result, dict):
        return {}
    figures = {k: result[k] for k in KEY_FIGURES.get(kind, ()) if k in result}
    counts = result.get("counts")
    if isinstance(counts, dict) and counts:
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_OUTCOMES]
        figures["top outcomes"] = ", ".join(f"{k}: {v}" for k, v in top)
    return figures


def _number(value: Any) -> str:
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def show_result(payload: Mapping[str, Any]) -> None:
    """A verified result: who ran it, then the best point of a sweep or the key figures."""
    console.print(
        f"job {payload['job_id']}: {payload['kind']}, verified, "
        f"{plural(len(payload['workers']), 'worker')}, {plural(payload['tasks'], 'task')}",
        markup=False,
    )
    best = payload.get("best")
    if payload["kind"] == "sweep":
        console.print(
            f"  {plural(payload['num_points'], 'point')} over {payload['over']}", markup=False
        )
        if best is not None:
            where = ", ".join(f"{k} = {_number(v)}" for k, v in sorted(best["point"].items()))
            console.print(f"  best {best['figure']} {best['value']:.10g} at {where}", markup=False)
    else:
        results = payload.get("results") or [{}]
        figures = key_figures(payload["kind"], results[0])
        for name, value in figures.items():
            shown = _number(value)
            console.print(f"  {name.replace('_', ' '):<20} {shown}", markup=False)
    if payload.get("attestation_file"):
        console.print(f"  attestation written to {payload['attestation_file']}", markup=False)
    if payload.get("output_file"):
        console.print(f"  full result written to {payload['output_file']}", markup=False)
    else:
        console.print("  the full data: --json, or -o FILE", markup=False)
