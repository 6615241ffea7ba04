"""Job commands: ``job submit|status|result|cancel|list`` and ``verify-result``.

The spec is signed here, with this home's identity, and handed to the home's running node,
which coordinates it over the mesh. ``verify-result`` needs no node: it checks an attestation
file offline.
"""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qiz.cli.common import Session, node_call, read_file
from qiz.cli.output import CheckFailed, UserError, console, emit, err_console, guarded
from qiz.cli.quantum_cmds import parse_bindings
from qiz.compute import spec as specs
from qiz.compute.attest import VerifiedAttestation
from qiz.compute.errors import AttestationError, SpecError
from qiz.fsio import write_atomic
from qiz.web.json_input import JsonInputError, parse_json

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
job_app = typer.Typer(help="Submit quantum jobs to the mesh and collect attested results.")
MAX_SPEC_FILE = 1024 * 1024
FINAL = ("done", "failed", "cancelled")
SHOW_TASKS = 4  # task results printed for people; --json prints all


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job")
    job_app.command("submit")(guarded(submit))
    job_app.command("status")(guarded(status))
    job_app.command("result")(guarded(result))
    job_app.command("cancel")(guarded(cancel))
    job_app.command("list")(guarded(list_jobs))
    app.command("verify-result")(guarded(verify_result))


def _shortcut(
    *,
    qaoa: str | None,
    graph: str | None,
    p: int,
    vqe: str | None,
    ansatz: str,
    grover: int | None,
    marked: str | None,
    sampler: Path | None,
    shots: int,
) -> dict[str, Any]:
    chosen = [x for x in (qaoa, vqe, grover, sampler) if x is not None]
    if len(chosen) != 1:
        raise UserError("give a SPECFILE, or exactly one of --qaoa, --vqe, --grover, --sampler")
    if qaoa is not None:
        if qaoa != "maxcut":
            raise UserError("--qaoa: only 'maxcut' is built in (write a spec file for more)")
        if graph is None:
            raise UserError("--qaoa maxcut needs --graph FILE or random:N,D")
        text = graph
        if not graph.startswith("random:"):
            text = read_file(Path(graph), what="graph file").decode("utf-8", "replace")
        return {"kind": "qaoa", "params": {"graph": text, "p": p, "shots": shots}}
    if vqe is not None:
        text = vqe
        if ":" not in vqe or Path(vqe).exists():
            text = read_file(Path(vqe), what="Hamiltonian file").decode("utf-8", "replace")
        return {"kind": "vqe", "params": {"hamiltonian": text, "ansatz": ansatz}}
    if grover is not None:
        if marked is None:
            raise UserError("--grover N needs --marked LIST")
        try:
            items = [int(m, 0) for m in marked.split(",") if m.strip()]
        except ValueError:
            raise UserError(f"--marked {marked!r}: comma-separated indices") from None
        return {"kind": "grover", "params": {"qubits": grover, "marked": items, "shots": shots}}
    assert sampler is not None
    qasm = read_file(sampler, what="OpenQASM file").decode("utf-8", "replace")
    return {"kind": "sampler", "params": {"qasm": qasm, "shots": shots}}


def submit(
    ctx: typer.Context,
    specfile: Annotated[
        Path | None, typer.Argument(help="A JSON job spec (see docs/jobs.md).")
    ] = None,
    *,
    replicas: Annotated[int | None, typer.Option("--replicas", help="Replicas per task.")] = None,
    quorum: Annotated[
        int | None, typer.Option("--quorum", help="Agreeing replicas needed (default: all).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="The job's seed.", min=0)] = None,
    deadline: Annotated[
        int | None, typer.Option("--deadline", help="Seconds until the job fails.", min=1)
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --wait: write the attestation here.")
    ] = None,
    qaoa: Annotated[str | None, typer.Option("--qaoa", help="Shortcut: maxcut.")] = None,
    graph: Annotated[str | None, typer.Option("--graph", help="Edge list or random:N,D.")] = None,
    p: Annotated[int, typer.Option("--p", help="QAOA depth.", min=1)] = 1,
    vqe: Annotated[
        str | None, typer.Option("--vqe", help="Shortcut: a Hamiltonian file or tfim:N[:ring].")
    ] = None,
    ansatz: Annotated[str, typer.Option("--ansatz", help="VQE ansatz.")] = "hea:2",
    grover: Annotated[int | None, typer.Option("--grover", help="Shortcut: qubits.")] = None,
    marked: Annotated[str | None, typer.Option("--marked", help="Grover's marked items.")] = None,
    sampler: Annotated[
        Path | None, typer.Option("--sampler", help="Shortcut: an OpenQASM 3 file to sample.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="--sampler: bind an input angle, NAME=VALUE (repeatable)."),
    ] = None,
    shots: Annotated[int, typer.Option("--shots", min=1)] = 1024,
    as_json: JsonOption = False,
) -> None:
    """Sign a job spec with this home's identity and submit it through the home's node."""
    session: Session = ctx.obj
    if specfile is not None:
        if any(x is not None for x in (qaoa, vqe, grover, sampler)):
            raise UserError("give a SPECFILE or a shortcut option, not both")
        raw = read_file(specfile, what="spec file", max_size=MAX_SPEC_FILE)
        try:
            document = parse_json(raw, f"spec file {specfile}")
        except JsonInputError as exc:
            raise UserError(str(exc)) from None
        if not isinstance(document, dict):
            raise UserError(f"{specfile}: a job spec is a JSON object")
    else:
        document = _shortcut(
            qaoa=qaoa,
            graph=graph,
            p=p,
            vqe=vqe,
            ansatz=ansatz,
            grover=grover,
            marked=marked,
            sampler=sampler,
            shots=shots,
        )
        if param:
            if document["kind"] != "sampler":
                raise UserError("--param binds the inputs of a --sampler circuit")
            document["params"]["inputs"] = parse_bindings(param)
    for key, value in (
        ("replicas", replicas),
        ("quorum", quorum),
        ("seed", seed),
        ("deadline", deadline),
    ):
        if value is not None:
            document[key] = value
    if replicas is not None and quorum is None:
        document.setdefault("quorum", replicas)
    if out is not None and not wait:
        raise UserError("--out needs --wait (or later: qiz job result JOB --out FILE)")
    _check_out(out)
    identity = session.identity()
    try:
        raw = specs.sign(specs.make_body(document, identity), identity)
        # clear errors before sending; qubits and work are for the workers to judge
        specs.parse(raw, specs.Limits(max_qubits=40, max_work=math.inf))
    except SpecError as exc:
        raise UserError(f"the spec is invalid: {exc}") from None
    state = node_call(session, "job_submit", spec=base64.b64encode(raw).decode("ascii"))
    summary = None
    if wait:
        state = _wait(session, state["job"], quiet=as_json)
        if state["state"] == "done":
            summary = _finished(session, state, out)
            state["summary"] = summary

    def human() -> None:
        _show(state)
        if summary:
            console.print(f"  result: {summary}", markup=False)
        if out is not None and summary is not None:
            console.print(f"  attestation written to {out} (check it: qiz verify-result)")

    emit(as_json, state, human)
    if wait and state["state"] != "done":
        raise typer.Exit(1)


def _wait(session: Session, job: str, *, quiet: bool) -> dict[str, Any]:
    with Progress(
        TextColumn("job {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as progress:
        bar = progress.add_task(job[:12], total=1.0)
        while True:
            state = node_call(session, "job_status", job=job)
            progress.update(bar, completed=state["progress"])
            if state["state"] in FINAL:
                return state
            time.sleep(0.2)


def _check_out(out: Path | None) -> None:
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name")


def _verified_result(session: Session, job: str, out: Path | None) -> VerifiedAttestation:
    """A done job's attestation, fetched from the node, verified here, kept in ``out``."""
    from qiz.compute.attest import verify_file

    reply = node_call(session, "job_result", job=job)
    data = base64.b64decode(reply["attestation"])
    try:
        verified = verify_file(data)
    except AttestationError as exc:
        raise CheckFailed(f"job {job}: the attestation does NOT verify: {exc}") from None
    if out is not None:
        write_atomic(out, data, mode=0o644)
    return verified


def _finished(session: Session, state: dict[str, Any], out: Path | None) -> str:
    """A done job's verified result in one line; the attestation written to ``out``."""
    from qiz.compute.execute import summarise

    verified = _verified_result(session, state["job"], out)
    return summarise(verified.spec.kind, verified.results)


def _show(state: dict[str, Any]) -> None:
    over = state["over"] if state["kind"] == "sweep" else ""
    console.print(
        f"job {state['job']}  {state['kind']} {over}  [bold]{state['state']}[/bold]  "
        f"{state['decided']}/{state['tasks']} tasks decided, {state['progress'] * 100:.0f}%"
    )
    if state.get("error"):
        console.print(f"  error: {state['error']}", markup=False)
    workers: dict[str, list[str]] = {}
    for r in state["replicas"]:
        workers.setdefault(r["worker"], []).append(f"{r['task']}:{r['state']}")
    for worker, runs in sorted(workers.items()):
        console.print(f"  {worker[:16]}  {' '.join(runs)}", markup=False)


def status(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    as_json: JsonOption = False,
) -> None:
    """A job's state, progress and where its replicas ran."""
    state = node_call(ctx.obj, "job_status", job=job)
    emit(as_json, state, lambda: _show(state))


def result(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the attestation file here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A finished job's results, checked from its attestation (saved with --out)."""
    from qiz.compute.execute import summarise

    _check_out(out)
    verified = _verified_result(ctx.obj, job, out)
    payload = {
        "job": verified.job_id.hex(),
        "verified": True,
        "results": verified.results,
        "workers": [str(w) for w in verified.workers],
        "attestation": str(out) if out else None,
        "summary": summarise(verified.spec.kind, verified.results),
    }

    def human() -> None:
        console.print(f"job {payload['job']}: verified, {len(verified.workers)} workers")
        console.print(f"  {payload['summary']}", markup=False)
        shown = verified.results[:SHOW_TASKS]
        console.print_json(json.dumps(shown))
        if len(verified.results) > SHOW_TASKS:
            console.print(f"... {len(verified.results) - SHOW_TASKS} more tasks (--json or --out)")
        if out:
            console.print(f"attestation written to {out}", markup=False)

    emit(as_json, payload, human)


def cancel(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    as_json: JsonOption = False,
) -> None:
    """Cancel a running job on every worker."""
    state = node_call(ctx.obj, "job_cancel", job=job)

    def human() -> None:
        if state["state"] != "cancelled":
            console.print(f"job {state['job'][:12]} is already {state['state']}: nothing to cancel")
        _show(state)

    emit(as_json, state, human)


def list_jobs(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Jobs submitted through this home's node."""
    jobs = node_call(ctx.obj, "job_list")["jobs"]

    def human() -> None:
        if not jobs:
            console.print("no jobs were submitted through this node yet")
            return
        table = Table("job", "kind", "state", "tasks", "progress")
        for j in jobs:
            kind = j["kind"] + (f"/{j['over']}" if j["kind"] == "sweep" else "")
            table.add_row(
                j["job"][:16],
                kind,
                j["state"],
                f"{j['decided']}/{j['tasks']}",
                f"{j['progress']:.0%}",
            )
        console.print(table)

    emit(as_json, {"jobs": jobs}, human)


def verify_result(
    attestation: Annotated[
        Path, typer.Argument(help="An attestation file (qiz job result --out).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Check an attestation offline: spec signature, job id, worker claims, quorum, digests."""
    from qiz.compute.attest import verify_file

    data = read_file(attestation, what="attestation file")
    try:
        verified = verify_file(data)
    except AttestationError as exc:
        raise CheckFailed(f"{attestation}: NOT verified: {exc}", {"verified": False}) from None
    payload = {
        "verified": True,
        "job": verified.job_id.hex(),
        "submitter": str(verified.spec.submitter),
        "coordinator": str(verified.coordinator),
        "workers": [str(w) for w in verified.workers],
        "kind": verified.spec.kind,
        "tasks": len(verified.results),
        "tests": sorted(set(verified.tests)),
        "quorum": verified.spec.quorum,
        "issued": verified.issued,
    }

    def human() -> None:
        console.print(f"{attestation}: verified", markup=False)
        console.print(
            f"  job          {payload['job']} ({payload['kind']}, {payload['tasks']} tasks)"
        )
        console.print(f"  submitter    {payload['submitter']}", markup=False)
        console.print(f"  coordinator  {payload['coordinator']}", markup=False)
        console.print(
            f"  workers      {len(payload['workers'])}, quorum {payload['quorum']} per task"
        )

    emit(as_json, payload, human)
