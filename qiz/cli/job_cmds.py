"""Job commands: ``job submit|status|logs|result|cancel|list`` and ``verify-result``.

The spec is signed here, with this home's identity, and handed to the home's running node,
which coordinates it over the mesh: the job lives in the node, so a command that waits for it
(``submit --wait``, ``status --wait/--follow``, ``logs --follow``) may be stopped with Ctrl-C
and the job goes on (:mod:`qiz.cli.job_follow`). ``submit --wait --store`` puts the verified
result and its attestation into the storage pool and prints the content id. ``verify-result``
needs no node for a file: it checks an attestation offline; given a content id (``qizc1...``),
the home's node fetches the stored result from the pool (checked against the id) and the
attestation is verified here all the same. Rendering for people is in :mod:`qiz.cli.job_view`;
the JSON shapes are docs/json/job-*.schema.json and verify-result.schema.json.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qiz.cli import job_follow, job_view
from qiz.cli.common import Session, node_call, read_file
from qiz.cli.human import moment, plural
from qiz.cli.output import CheckFailed, UserError, console, emit, guarded
from qiz.cli.quantum_cmds import parse_bindings
from qiz.compute.errors import AttestationError, NotAnAttestation, SpecError
from qiz.fsio import write_atomic
from qiz.web.json_input import JsonInputError, parse_json

if TYPE_CHECKING:  # the spec and attestation code loads when a command needs it
    from qiz.compute.attest import VerifiedAttestation

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
job_app = typer.Typer(help="Submit quantum jobs to the mesh and collect attested results.")
JobArgument = Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]
MAX_SPEC_FILE = 1024 * 1024
LIST_SHOWN = 50  # jobs 'qiz job list' shows without --limit/--all (the newest)


PANEL = "Jobs"  # the heading these commands have in 'qiz --help'


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job", rich_help_panel=PANEL)
    job_app.command("submit")(guarded(submit))
    job_app.command("status")(guarded(status))
    job_app.command("logs")(guarded(logs))
    job_app.command("result")(guarded(result))
    job_app.command("cancel")(guarded(cancel))
    job_app.command("list")(guarded(list_jobs))
    app.command("verify-result", rich_help_panel=PANEL)(guarded(verify_result))


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


def _spec_file(specfile: Path) -> dict[str, Any]:
    raw = read_file(specfile, what="spec file", max_size=MAX_SPEC_FILE)
    try:
        document = parse_json(raw, f"spec file {specfile}")
    except JsonInputError as exc:
        raise UserError(str(exc)) from None
    if not isinstance(document, dict):
        raise UserError(f"{specfile}: a job spec is a JSON object")
    return document


# the earlier name of --attestation, kept working for scripts (and the README's tour)
OutAlias = Annotated[Path | None, typer.Option("--out", hidden=True)]


def _attestation_path(attestation: Path | None, out: Path | None) -> tuple[Path | None, str]:
    """The attestation file asked for (``--attestation``, or its old name ``--out``), and the
    flag as typed, for messages about it."""
    if attestation is not None and out is not None:
        raise UserError("give --attestation FILE once (--out is its old name)")
    if out is not None:
        return out, "--out"
    return attestation, "--attestation"


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
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the result (Ctrl-C stops waiting only).")
    ] = False,
    attestation: Annotated[
        Path | None,
        typer.Option("--attestation", help="With --wait: write the attestation file here."),
    ] = None,
    out: OutAlias = None,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="With --wait: put the result and its attestation into the storage pool "
            "and print the content id (qiz verify-result ID checks it).",
        ),
    ] = False,
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
    # Ctrl-C before the spec leaves for the node: say that nothing was submitted (a
    # KeyboardInterrupt leaving the command would be typer's silent exit 130)
    try:
        document = _document(
            specfile,
            qaoa=qaoa,
            graph=graph,
            p=p,
            vqe=vqe,
            ansatz=ansatz,
            grover=grover,
            marked=marked,
            sampler=sampler,
            param=param,
            shots=shots,
        )
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
        keep, flag = _attestation_path(attestation, out)
        if keep is not None and not wait:
            raise UserError(
                f"{flag} needs --wait (or later: qiz job result JOB --attestation FILE)"
            )
        if store and not wait:
            raise UserError("--store needs --wait (the result is stored once the job is done)")
        _check_out(keep, flag)
        raw, job_id = _signed(session, document)
    except KeyboardInterrupt:
        raise job_follow.not_submitted(as_json=as_json) from None
    try:
        state = node_call(session, "job_submit", spec=base64.b64encode(raw).decode("ascii"))
    except KeyboardInterrupt:
        raise job_follow.interrupted_submitting(ctx, session, job_id, as_json=as_json) from None
    if wait:
        try:
            state = job_follow.wait_with_bar(session, job_id, quiet=as_json)
        except KeyboardInterrupt:
            raise job_follow.interrupted(ctx, job_id, as_json=as_json) from None
    summary = None
    if wait and state["state"] == "done":
        summary = _finished(session, state, keep)
        state["summary"] = summary
        if store:
            state["result_cid"] = node_call(session, "job_store", job=state["job_id"])["cid"]

    def human() -> None:
        job_view.show_status(state)
        if summary:
            console.print(f"  result: {summary}", markup=False)
        if keep is not None and summary is not None:
            console.print(f"  attestation written to {keep} (check it: qiz verify-result)")
        if state.get("result_cid"):
            console.print(
                f"  stored in the pool as {state['result_cid']} "
                f"(anyone: qiz verify-result {state['result_cid']})",
                markup=False,
            )
        if not wait:
            follow = job_follow.command_text(ctx, "job", "status", job_id[:16], "--follow")
            console.print(f"  follow it: {follow}", markup=False)

    emit(as_json, state, human)
    if wait and state["state"] != "done":
        raise typer.Exit(1)


def _document(specfile: Path | None, *, param: list[str] | None, **shortcut: Any) -> dict[str, Any]:
    """The job document from a spec file or from one shortcut option."""
    if specfile is not None:
        if any(shortcut[k] is not None for k in ("qaoa", "vqe", "grover", "sampler")):
            raise UserError("give a SPECFILE or a shortcut option, not both")
        return _spec_file(specfile)
    document = _shortcut(**shortcut)
    if param:
        if document["kind"] != "sampler":
            raise UserError("--param binds the inputs of a --sampler circuit")
        document["params"]["inputs"] = parse_bindings(param)
    return document


def _signed(session: Session, document: dict[str, Any]) -> tuple[bytes, str]:
    """The signed spec and its job id; a spec the node would refuse is refused here."""
    from qiz.compute import spec as specs

    identity = session.identity()
    try:
        raw = specs.sign(specs.make_body(document, identity), identity)
        # clear errors before sending; qubits and work are for the workers to judge
        # (inputs named by content id are fetched and measured by the node)
        limits = specs.Limits(max_qubits=40, max_work=math.inf)
        job_id = specs.parse(raw, limits, unresolved=True).job_id.hex()
    except SpecError as exc:
        raise UserError(f"the spec is invalid: {exc}") from None
    return raw, job_id


def _check_out(out: Path | None, flag: str = "--attestation") -> None:
    if out is not None and out.is_dir():
        raise UserError(f"{flag} {out} is a directory; give a file name")


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

    verified = _verified_result(session, state["job_id"], out)
    return summarise(verified.spec.kind, verified.results)


def status(
    ctx: typer.Context,
    job: JobArgument,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Block until the job ends: exit 0 done, 1 failed/cancelled."),
    ] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Print its state and progress as they change, to its end."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's state, progress, times and where its replicas ran."""
    session: Session = ctx.obj
    state = node_call(session, "job_status", job=job)
    if (wait or follow) and not job_follow.is_final(state):
        try:
            if follow:
                state = job_follow.follow(session, state["job_id"], timeline=False, quiet=as_json)
            else:
                state = job_follow.wait_with_bar(session, state["job_id"], quiet=as_json)
        except KeyboardInterrupt:
            raise job_follow.interrupted(ctx, state["job_id"], as_json=as_json) from None
    emit(as_json, state, lambda: job_view.show_status(state))
    if wait or follow:
        job_follow.final_exit(state)


def logs(
    ctx: typer.Context,
    job: JobArgument,
    follow: Annotated[
        bool, typer.Option("--follow", help="Print new entries as they come, to the job's end.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's timeline: placements, retries and why, replicas started, done, failed or lost,
    the quorum's decisions and the job's end, each with its moment."""
    session: Session = ctx.obj
    answer = node_call(session, "job_logs", job=job)
    if follow:
        try:
            job_follow.follow(session, answer["job_id"], timeline=True, quiet=as_json)
        except KeyboardInterrupt:
            raise job_follow.interrupted(ctx, answer["job_id"], as_json=as_json) from None
        if not as_json:
            return  # every entry was printed as it came
        answer = node_call(session, "job_logs", job=answer["job_id"])
    emit(as_json, answer, lambda: job_view.show_logs(answer["entries"]))


def result(
    ctx: typer.Context,
    job: JobArgument,
    *,
    attestation: Annotated[
        Path | None,
        typer.Option("--attestation", help="Write the attestation file (CBOR) here."),
    ] = None,
    out: OutAlias = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the full result as JSON to this file."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A finished job's results, checked from its attestation: a sweep's best point with its
    parameters, or the kind's key figures (all of it with --json or -o FILE; a sweep's points
    as one list)."""
    from qiz.compute.execute import summarise

    keep, flag = _attestation_path(attestation, out)
    _check_out(keep, flag)
    if output is not None and output.is_dir():
        raise UserError(f"-o {output} is a directory; give a file name")
    verified = _verified_result(ctx.obj, job, keep)
    spec = verified.spec
    payload: dict[str, Any] = {
        "job_id": verified.job_id.hex(),
        "verified": True,
        "kind": spec.kind,
        "over": spec.body["params"].get("over") if spec.kind == "sweep" else spec.kind,
        "tasks": len(verified.results),
        "workers": [str(w) for w in verified.workers],
        "summary": summarise(spec.kind, verified.results),
        "attestation_file": str(keep) if keep else None,
        "output_file": str(output) if output else None,
    }
    if spec.kind == "sweep":
        # one list of points, in order (the attestation holds one list per shard)
        payload["points"] = job_view.flat_points(verified.results)
        payload["num_points"] = len(payload["points"])
        payload["best"] = job_view.best_point(verified.results)
    else:
        payload["results"] = verified.results
    if output is not None:
        text = json.dumps({"ok": True, **payload}, sort_keys=True, indent=1) + "\n"
        write_atomic(output, text.encode("utf-8"), mode=0o644)
    emit(as_json, payload, lambda: job_view.show_result(payload))


def cancel(ctx: typer.Context, job: JobArgument, as_json: JsonOption = False) -> None:
    """Cancel a running job on every worker."""
    state = node_call(ctx.obj, "job_status", job=job)
    ended = job_follow.is_final(state)  # done, failed, or cancelled before
    if not ended:
        state = node_call(ctx.obj, "job_cancel", job=state["job_id"])
    state.pop("spec", None)  # a cancel answers the status without the spec's summary

    def human() -> None:
        if ended:
            console.print(
                f"job {state['job_id'][:16]} is already {state['state']}: nothing to cancel"
            )
        job_view.show_status(state)

    emit(as_json, state, human)


def list_jobs(
    ctx: typer.Context,
    worker: Annotated[
        bool,
        typer.Option("--worker", help="The tasks this node ran as a worker, for any submitter."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help=f"Show the newest N jobs (default {LIST_SHOWN}; --json: all)."
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every job.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Jobs submitted through this home's node, newest first (with --worker: tasks it ran
    for others)."""
    if worker:
        runs = node_call(ctx.obj, "job_worked")
        emit(as_json, runs, lambda: job_view.show_runs(runs))
        return
    jobs = node_call(ctx.obj, "job_list")["jobs"]  # newest first
    shown = len(jobs) if show_all else (limit or (len(jobs) if as_json else LIST_SHOWN))
    listed = jobs[:shown]
    emit(as_json, {"jobs": listed}, lambda: job_view.show_jobs(listed, len(jobs) - len(listed)))


def verify_result(
    ctx: typer.Context,
    attestation: Annotated[
        str,
        typer.Argument(
            help="An attestation file (qiz job result --attestation), or the content id of "
            "a result stored with 'qiz job submit --store' (fetched by the home's node)."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Check an attestation offline: spec signature, job id, worker claims, quorum, digests."""
    from qiz.compute.attest import verify_file

    data, cid = _attestation_bytes(ctx, attestation)
    try:
        verified = verify_file(data)
    except NotAnAttestation:
        raise UserError(
            f"{attestation} is not a QIZ attestation file (written by 'qiz job submit --wait "
            "--attestation' or 'qiz job result --attestation')"
        ) from None
    except AttestationError as exc:
        raise CheckFailed(f"{attestation}: NOT verified: {exc}", {"verified": False}) from None
    payload = {
        "verified": True,
        "job_id": verified.job_id.hex(),
        "submitter": str(verified.spec.submitter),
        "coordinator": str(verified.coordinator),
        "workers": [str(w) for w in verified.workers],
        "kind": verified.spec.kind,
        "tasks": len(verified.results),
        "tests": sorted(set(verified.tests)),
        "quorum": verified.spec.quorum,
        "issued_at": verified.issued,
        "cid": cid,
    }

    def human() -> None:
        console.print(f"{attestation}: verified", markup=False)
        console.print(
            f"  job          {payload['job_id']} ({payload['kind']}, "
            f"{plural(payload['tasks'], 'task')})"
        )
        console.print(f"  submitter    {payload['submitter']}", markup=False)
        console.print(f"  coordinator  {payload['coordinator']}", markup=False)
        console.print(
            f"  workers      {len(payload['workers'])}, quorum {payload['quorum']} per task"
        )
        console.print(f"  issued       {moment(payload['issued_at'])}")

    emit(as_json, payload, human)


def _attestation_bytes(ctx: typer.Context, given: str) -> tuple[bytes, str | None]:
    """The attestation file's bytes, and the content id they came from (None: a file). A
    ``qizc1...`` that is not a file here is a content id: the home's node fetches it."""
    from qiz.crypto.ids import ContentId

    path = Path(given)
    if not given.strip().startswith(ContentId.PREFIX) or path.exists():
        return read_file(path, what="attestation file"), None
    try:
        cid = ContentId.parse(given)
    except ValueError as exc:
        raise UserError(f"{given[:24]}: {exc}") from None
    reply = node_call(ctx.obj, "job_fetch_result", cid=str(cid))
    return base64.b64decode(reply["attestation"]), str(cid)
