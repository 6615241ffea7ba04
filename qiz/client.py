"""The Python client of a running node: submit signed jobs, follow them, collect verified results.

``Mesh(home)`` talks to the node running in a QIZ home exactly as the CLI does: over the home's
control socket (:mod:`qiz.control`, one JSON request per operation of
:data:`qiz.node_api.OPERATIONS`), signing job specs with the home's identity
(:mod:`qiz.compute.spec`) and verifying each result's attestation here, offline
(:mod:`qiz.compute.attest`), before handing it over. A job lives in the node, not in this
process: a :class:`JobHandle` is only its id, so a script may stop and a later one pick the job
up again with ``Mesh().job(job_id)``.

Every method has an ``_async`` twin for code that already runs an event loop (Jupyter, an
asyncio service); the plain ones run their own loop and refuse to be called inside a running
one, saying which twin to use. Errors are :class:`qiz.QizError` subclasses whose messages are
the CLI's own lines (``qiz job ...`` prints the same text after ``qiz: error: ``).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qiz import CheckFailed, QizError
from qiz.control import NodeNotRunning, ask
from qiz.home import Home

T = TypeVar("T")
POLL_S = 0.1  # seconds between two looks at a job while waiting (as `qiz job submit --wait`)
FINAL = ("done", "failed", "cancelled")  # qiz.compute.status.FINAL, without loading compute
PASSPHRASE_ENV = "QIZ_PASSPHRASE"  # noqa: S105 - a variable name, as the CLI reads it
SHORT_ID = 16  # hex digits of a job id in messages (any unique prefix names the job)


class ClientError(QizError):
    """What the client was asked cannot be done; the message says what and how."""


class JobFailed(ClientError):
    """The job ended failed or cancelled: the message is the CLI's ``job ID failed: why``;
    ``status`` is its final :class:`JobStatus`."""

    exit_code = 1

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


class JobTimeout(ClientError, TimeoutError):
    """The job did not end within the time given; it goes on in the node."""


class ResultNotVerified(CheckFailed):
    """A result's attestation does not verify: the result is not handed over."""


@dataclass(frozen=True)
class Replica:
    """One replica of one task, on one worker."""

    task: int
    worker: str
    state: str
    reason: str | None
    progress: float


@dataclass(frozen=True)
class JobStatus:
    """A job as its coordinator sees it (``qiz job status --json``; every field in ``raw``)."""

    job_id: str
    state: str  # running, done, failed or cancelled
    reason: str | None
    kind: str
    over: str  # the kind a sweep runs at each point; the kind itself otherwise
    tasks: int
    decided: int
    progress: float  # 0..1
    replicas: tuple[Replica, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def done(self) -> bool:
        return self.state == "done"

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> JobStatus:
        replicas = tuple(
            Replica(r["task"], r["worker"], r["state"], r.get("reason"), r["progress"])
            for r in state.get("replicas", ())
        )
        return cls(
            state["job_id"],
            state["state"],
            state.get("reason"),
            state["kind"],
            state.get("over", state["kind"]),
            state["tasks"],
            state["decided"],
            float(state["progress"]),
            replicas,
            dict(state),
        )

    def why(self) -> str:
        """Why the job ended as it did, as the CLI says it ("failed: ...", "cancelled ...")."""
        reason = self.reason
        if not reason:
            return self.state
        return reason if reason.startswith(self.state) else f"{self.state}: {reason}"


@dataclass(frozen=True)
class Attestation:
    """A result's signed attestation, verified: who asked, who ran it, who decided.

    ``data`` is the attestation file (``qiz verify-result`` checks it anywhere, offline)."""

    data: bytes = field(repr=False)
    job_id: str
    kind: str
    submitter: str
    coordinator: str
    workers: tuple[str, ...]
    replicas: int
    quorum: int
    tests: tuple[str, ...]
    issued_at: int

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the attestation file (atomically) and return its path."""
        from qiz.fsio import write_atomic

        target = Path(path)
        write_atomic(target, self.data, mode=0o644)
        return target


@dataclass(frozen=True)
class JobResult:
    """A done job's verified results: ``results`` holds one entry per task (a sweep's task: a
    list of points), ``value`` the one result of a single-task job, ``points`` a sweep's points
    in order, each ``{"point": {...}, ...result}``, ``circuits`` a circuits job's results in
    order, each ``{"counts", "shots"}``."""

    job_id: str
    kind: str
    over: str
    results: list[Any] = field(repr=False)
    attestation: Attestation = field(repr=False)

    @property
    def value(self) -> dict[str, Any]:
        if self.kind == "sweep":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is a sweep: read its .points")
        if self.kind == "circuits":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is a circuits job: read its .circuits")
        if self.kind == "kernel":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is a kernel job: read its .matrix")
        return self.results[0]

    @property
    def matrix(self) -> list[list[float]]:
        """A ``kernel`` job's kernel matrix: its tasks' row blocks in order."""
        if self.kind != "kernel":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is no kernel job: read its .value")
        return [row for block in self.results for row in block["rows"]]

    @property
    def circuits(self) -> list[dict[str, Any]]:
        """A ``circuits`` job's results, one ``{"counts", "shots"}`` per circuit in order."""
        if self.kind != "circuits":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is no circuits job: read its .value")
        return [run for task in self.results for run in task]

    @property
    def points(self) -> list[dict[str, Any]]:
        if self.kind != "sweep":
            raise ClientError(f"job {self.job_id[:SHORT_ID]} is no sweep: read its .value")
        return [point for shard in self.results for point in shard]


Progress = Callable[[JobStatus], None]


def _blocking(work: Coroutine[Any, Any, T], name: str) -> T:
    """Run ``work`` to its end on a loop of its own; refused inside a running loop (where it
    would block that loop), naming the ``_async`` twin to await instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    work.close()
    raise ClientError(f"{name} blocks; inside a running event loop use: await {name}_async(...)")


class Mesh:
    """The node running in a QIZ home (``home``: a path, else ``$QIZ_HOME``, else the
    platform's default, as for the CLI).

    ``passphrase`` unlocks a passphrase-protected identity (else ``$QIZ_PASSPHRASE``), needed
    only to submit. ``timeout`` bounds each request to the node, not a job."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        passphrase: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.home = Home(home)
        self._given = home is not None
        self._passphrase = passphrase
        self.timeout = timeout
        self._identity: Any = None
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __repr__(self) -> str:
        return f"Mesh(home={str(self.home.path)!r})"

    def _command(self, words: str) -> str:
        """The CLI command a message tells the user to type, with this home if one was given."""
        import shlex

        home = f" --home {shlex.quote(str(self.home.path))}" if self._given else ""
        return f"qiz{home} {words}"

    # -- talking to the node ------------------------------------------------------------------

    async def call_async(self, operation: str, **arguments: Any) -> Any:
        """One operation of the node's API (:data:`qiz.node_api.OPERATIONS`), its result; the
        node's refusal as a :class:`qiz.control.NodeRefused` with the node's own line."""
        try:
            return await ask(self.home.path, operation, self.timeout, **arguments)
        except NodeNotRunning as exc:
            home = self.home
            if not home.path.is_dir() or not home.identity_path.exists():
                raise ClientError(
                    f"no QIZ home at {home.path}; create it with: {self._command('init')}"
                ) from None
            raise ClientError(f"{exc}; start it with: {self._command('node start')}") from None
        except TimeoutError:
            raise ClientError(f"the node did not answer within {self.timeout:.0f} s") from None

    def call(self, operation: str, **arguments: Any) -> Any:
        return _blocking(self.call_async(operation, **arguments), "Mesh.call")

    async def status_async(self) -> dict[str, Any]:
        """The node's status (``qiz node status --json``): id, addresses, links, compute."""
        return await self.call_async("status")

    def status(self) -> dict[str, Any]:
        return _blocking(self.status_async(), "Mesh.status")

    async def jobs_async(self) -> list[JobStatus]:
        """Jobs submitted through this node, newest first."""
        listed = await self.call_async("job_list")
        return [JobStatus.of(j) for j in listed["jobs"]]

    def jobs(self) -> list[JobStatus]:
        return _blocking(self.jobs_async(), "Mesh.jobs")

    def job(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (its id, or a unique prefix of it)."""
        return JobHandle(self, job_id)

    # -- submitting ---------------------------------------------------------------------------

    def sign(self, spec: Mapping[str, Any]) -> tuple[bytes, str]:
        """The signed spec for a job document (docs/jobs.md) and its job id; a spec the node
        would refuse is refused here, with the CLI's line."""
        from qiz.compute import spec as specs
        from qiz.compute.errors import SpecError

        identity = self._load_identity()
        try:
            raw = specs.sign(specs.make_body(dict(spec), identity), identity)
            # as `qiz job submit`: qubits and work are for the workers to judge
            limits = specs.Limits(max_qubits=40, max_work=math.inf)
            job_id = specs.parse(raw, limits, unresolved=True).job_id.hex()
        except SpecError as exc:
            raise ClientError(f"the spec is invalid: {exc}") from None
        return raw, job_id

    def _load_identity(self) -> Any:
        if self._identity is None:
            from qiz.crypto import keyfile

            phrase = self._passphrase or os.environ.get(PASSPHRASE_ENV) or None
            try:
                self._identity = self.home.load_identity(phrase)
            except keyfile.KeyFileError as exc:
                raise ClientError(str(exc)) from None
        return self._identity

    async def submit_async(self, spec: Mapping[str, Any], **fields: Any) -> JobHandle:
        """Sign ``spec`` (a job document as in docs/jobs.md: kind, params, and optionally
        replicas, quorum, seed, deadline; ``fields`` override those) and submit it through the
        node. Submitting the same document twice is the same job."""
        document = {**spec, **{k: v for k, v in fields.items() if v is not None}}
        if fields.get("replicas") is not None and "quorum" not in document:
            document["quorum"] = document["replicas"]
        raw, job_id = self.sign(document)
        async with self._submit_turn():
            state = await self.call_async("job_submit", spec=base64.b64encode(raw).decode("ascii"))
        handle = JobHandle(self, job_id)
        handle.last = JobStatus.of(state)
        return handle

    def _submit_turn(self) -> asyncio.Semaphore:
        """Submissions of this client in flight at once, on the running loop: half of what the
        node lets its owner queue for its spec checker (``checker.MAX_WAITING_OWNER``), so a
        burst (a Qiskit run of many PUBs) waits here instead of being refused there, and the
        CLI still finds room beside it."""
        from qiz.compute.checker import MAX_WAITING_OWNER

        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Semaphore(max(1, MAX_WAITING_OWNER // 2)))
        return self._turns[1]

    def submit(self, spec: Mapping[str, Any], **fields: Any) -> JobHandle:
        return _blocking(self.submit_async(spec, **fields), "Mesh.submit")

    # -- Qiskit -------------------------------------------------------------------------------

    def sampler(self, **options: Any) -> Any:
        """A Qiskit ``BaseSamplerV2`` running on this mesh (needs qiskit; see
        :mod:`qiz.integrations.qiskit`)."""
        from qiz.integrations.qiskit import MeshSamplerV2

        return MeshSamplerV2(self, **options)

    def estimator(self, **options: Any) -> Any:
        """A Qiskit ``BaseEstimatorV2`` running on this mesh (needs qiskit)."""
        from qiz.integrations.qiskit import MeshEstimatorV2

        return MeshEstimatorV2(self, **options)

    def run_cut(self, circuit: Any, observables: Any, *, max_qubits: int, **options: Any) -> Any:
        """Expectation values of a circuit wider than a worker, cut into sub-experiments of
        at most ``max_qubits`` qubits that run here as mesh jobs, reconstructed with their
        error bound (a :class:`qiz.integrations.cutting.CutResult`; needs qiskit and
        qiskit-addon-cutting). ``options`` as for :func:`qiz.integrations.cutting.run_cut`."""
        from qiz.integrations.cutting import run_cut

        return run_cut(circuit, observables, max_qubits=max_qubits, mesh=self, **options)

    async def run_cut_async(
        self, circuit: Any, observables: Any, *, max_qubits: int, **options: Any
    ) -> Any:
        from qiz.integrations.cutting import run_cut_async

        return await run_cut_async(
            circuit, observables, max_qubits=max_qubits, mesh=self, **options
        )


class JobHandle:
    """A job in the node: ask its status, wait for it, fetch its verified result, cancel it.

    ``job_id`` may be a unique prefix until the first status answer fills in the whole id."""

    def __init__(self, mesh: Mesh, job_id: str) -> None:
        self.mesh = mesh
        self.job_id = job_id
        self.last: JobStatus | None = None  # the latest status seen

    def __repr__(self) -> str:
        state = self.last.state if self.last else "?"
        return f"JobHandle({self.job_id[:SHORT_ID]}, {state})"

    async def status_async(self) -> JobStatus:
        state = JobStatus.of(await self.mesh.call_async("job_status", job=self.job_id))
        self.job_id = state.job_id
        self.last = state
        return state

    def status(self) -> JobStatus:
        return _blocking(self.status_async(), "JobHandle.status")

    async def wait_async(
        self, timeout: float | None = None, progress: Progress | None = None
    ) -> JobStatus:
        """Wait until the job ends (done, failed or cancelled) and return its final status;
        ``progress`` is called with each status that differs from the last one told (state,
        tasks decided, progress to 1 %). :class:`JobTimeout` after ``timeout`` seconds: the
        job goes on in the node."""
        deadline = None if timeout is None else time.monotonic() + timeout
        told: tuple[Any, ...] | None = None
        while True:
            state = await self.status_async()
            now = (state.state, state.decided, round(state.progress, 2))
            if progress is not None and now != told:
                progress(state)
            told = now
            if state.final:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(
                    f"job {state.job_id[:SHORT_ID]} did not end within {timeout:g} s; it goes "
                    f"on in the node (follow it: {self.mesh._command('job status')} "
                    f"{state.job_id[:SHORT_ID]} --follow)"
                )
            await asyncio.sleep(POLL_S)

    def wait(self, timeout: float | None = None, progress: Progress | None = None) -> JobStatus:
        return _blocking(self.wait_async(timeout, progress), "JobHandle.wait")

    async def result_async(
        self, timeout: float | None = None, progress: Progress | None = None
    ) -> JobResult:
        """Wait for the job and return its results once their attestation verifies here;
        :class:`JobFailed` if it failed or was cancelled."""
        state = await self.wait_async(timeout, progress)
        if not state.done:
            raise JobFailed(f"job {state.job_id[:SHORT_ID]} {state.why()}", state)
        attestation, verified = await self._verified()
        over = verified.spec.body["params"].get("over") if verified.spec.kind == "sweep" else None
        return JobResult(
            attestation.job_id,
            verified.spec.kind,
            over or verified.spec.kind,
            verified.results,
            attestation,
        )

    def result(self, timeout: float | None = None, progress: Progress | None = None) -> JobResult:
        return _blocking(self.result_async(timeout, progress), "JobHandle.result")

    async def attestation_async(self) -> Attestation:
        """The done job's attestation, verified here (:class:`ResultNotVerified` if not)."""
        attestation, _ = await self._verified()
        return attestation

    def attestation(self) -> Attestation:
        return _blocking(self.attestation_async(), "JobHandle.attestation")

    async def _verified(self) -> tuple[Attestation, Any]:
        from qiz.compute.attest import verify_file
        from qiz.compute.errors import AttestationError

        reply = await self.mesh.call_async("job_result", job=self.job_id)
        data = base64.b64decode(reply["attestation"])
        try:
            verified = verify_file(data)
        except AttestationError as exc:
            raise ResultNotVerified(
                f"job {self.job_id}: the attestation does NOT verify: {exc}"
            ) from None
        spec = verified.spec
        attestation = Attestation(
            data,
            verified.job_id.hex(),
            spec.kind,
            str(spec.submitter),
            str(verified.coordinator),
            tuple(str(w) for w in verified.workers),
            spec.replicas,
            spec.quorum,
            tuple(verified.tests),
            verified.issued,
        )
        self.job_id = attestation.job_id
        return attestation, verified

    async def cancel_async(self) -> JobStatus:
        """Cancel the job on every worker (nothing to do if it already ended); its status."""
        state = await self.status_async()
        if state.final:
            return state
        cancelled = JobStatus.of(await self.mesh.call_async("job_cancel", job=state.job_id))
        self.last = cancelled
        return cancelled

    def cancel(self) -> JobStatus:
        return _blocking(self.cancel_async(), "JobHandle.cancel")
