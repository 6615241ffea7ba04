"""Watching a job from the command line: wait for its end, follow its timeline, and what Ctrl-C
means while doing so.

A job runs in the node, not in the command that submitted it: stopping the command (Ctrl-C)
stops only the watching. :func:`interrupted` says so in one line, with the commands that
follow or cancel the job, written with the ``--home`` the user typed (as ``ray job submit``
says how to reattach). Watching polls the node's control socket (status and timeline), which
is cheap and needs no subscription that a killed command would leave behind.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any

import typer

from qiz.cli.common import Session, node_call
from qiz.cli.human import moment
from qiz.cli.job_view import decided_text, log_line, reason_text
from qiz.cli.output import EXIT_INTERRUPTED, Interrupt, console, err_console

POLL_S = 0.3  # seconds between two looks at the node while following (a line per change)
# while waiting (--wait: a bar, or nothing under --json): a look costs the node a status
# lookup, and the wait ends on average half a period after the job did
WAIT_POLL_S = 0.1
HINT_ID = 16  # hex digits of the job id in the printed commands (any unique prefix works)


def command_text(ctx: typer.Context, *words: str) -> str:
    """A command printed back to the user, with the --home they typed (Session.command)."""
    return ctx.obj.command(shlex.join(words))


def interrupted(ctx: typer.Context, job_id: str, *, as_json: bool) -> typer.Exit:
    """Ctrl-C while waiting: the job goes on in the node; say how to follow or cancel it.
    Returns the exit (130) for the caller to raise."""
    short = job_id[:HINT_ID]
    follow = command_text(ctx, "job", "status", short, "--follow")
    logs = command_text(ctx, "job", "logs", short)
    cancel = command_text(ctx, "job", "cancel", short)
    message = (
        f"interrupted; job {short} goes on in the node. Follow it: {follow} (or {logs}); "
        f"cancel it: {cancel}"
    )
    return _say_interrupted(message, as_json=as_json, job_id=job_id)


def _say_interrupted(message: str, *, as_json: bool, **extra: Any) -> typer.Exit:
    if as_json:
        answer = {"ok": False, "error": message, "exit_code": EXIT_INTERRUPTED, **extra}
        sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
        sys.stdout.flush()
    err_console.print(f"qiz: {message}", markup=False)
    Interrupt.said = True
    return typer.Exit(EXIT_INTERRUPTED)


def not_submitted(*, as_json: bool) -> typer.Exit:
    """Ctrl-C before the spec went to the node: nothing runs. Returns the exit (130) to raise.

    Said here because a KeyboardInterrupt that leaves a command is turned by typer into a
    silent exit 130, which leaves the user wondering whether a job runs."""
    return _say_interrupted("interrupted; nothing was submitted", as_json=as_json)


def interrupted_submitting(
    ctx: typer.Context, session: Session, job_id: str, *, as_json: bool
) -> typer.Exit:
    """Ctrl-C while the spec was on its way to the node: whether the node has it decides
    what to say (it goes on there, or nothing was submitted). Returns the exit (130)."""
    try:
        node_call(session, "job_status", job=job_id, timeout=5.0)
    except Exception:  # not there (or no answer): nothing of it runs that we know of
        short = job_id[:HINT_ID]
        return _say_interrupted(
            f"interrupted; job {short} was not submitted, as far as the node says "
            f"(check: {command_text(ctx, 'job', 'status', short)})",
            as_json=as_json,
            job_id=job_id,
        )
    return interrupted(ctx, job_id, as_json=as_json)


def wait_with_bar(session: Session, job_id: str, *, quiet: bool) -> dict[str, Any]:
    """Poll until the job is final, with a progress bar on stderr (none when ``quiet``)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from qiz.compute.status import FINAL

    with Progress(
        TextColumn("job {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as progress:
        bar = progress.add_task(job_id[:12], total=1.0)
        while True:
            state = node_call(session, "job_status", job=job_id)
            progress.update(bar, completed=state["progress"])
            if state["state"] in FINAL:
                return state
            time.sleep(WAIT_POLL_S)


def new_entries(session: Session, job_id: str, last: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Timeline entries after ``last`` (the last one printed). Not by count: past its bound
    the timeline drops its oldest entries after the first, so positions shift."""
    entries = node_call(session, "job_logs", job=job_id)["entries"]
    if last is None:
        return entries
    for i in range(len(entries) - 1, -1, -1):
        if entries[i] == last:
            return entries[i + 1 :]
    return entries


def follow(session: Session, job_id: str, *, timeline: bool, quiet: bool) -> dict[str, Any]:
    """Print the job's new timeline entries (``timeline``) and its state and progress as they
    change, until it is final; returns the final status. ``quiet`` prints nothing (--json)."""
    from qiz.compute.status import FINAL

    printed: dict[str, Any] | None = None
    last: tuple[Any, ...] | None = None
    for state in _polls(session, job_id):
        if timeline:
            fresh = new_entries(session, job_id, printed)
            printed = fresh[-1] if fresh else printed
            if not quiet:
                for entry in fresh:
                    console.print(log_line(entry), markup=False)
        now = (state["state"], state["decided"], round(state["progress"], 2))
        if not quiet and now != last and not timeline:
            console.print(
                f"{moment(time.time())}  {state['state']}: {decided_text(state)}", markup=False
            )
        last = now
        if state["state"] in FINAL:
            return state
    raise AssertionError("unreachable")


def _polls(session: Session, job_id: str) -> Iterator[dict[str, Any]]:
    while True:
        yield node_call(session, "job_status", job=job_id)
        time.sleep(POLL_S)


def final_exit(state: dict[str, Any]) -> None:
    """Exit 1 (after saying so on stderr) unless the job is done."""
    if state["state"] != "done":
        why = reason_text(state) or state["state"]
        err_console.print(f"qiz: job {state['job_id'][:HINT_ID]} {why}", markup=False)
        raise typer.Exit(1)


def is_final(state: dict[str, Any]) -> bool:
    """Whether the job ``state`` (a node's job status) has ended: done, failed or cancelled
    (:data:`qiz.compute.status.FINAL`, loaded here when asked, not with every command)."""
    from qiz.compute.status import FINAL

    return state["state"] in FINAL
