"""The submitter's side over the network: an asyncio driver around :class:`JobCore`.

The node a job is submitted to coordinates it to the end. Every decision (where replicas go,
when one is lost, when a task is decided, when the job fails) is the sans-IO core's
(:mod:`qiz.compute.core`); this module only does what the core cannot:

* the owner's API (``submit``, ``status``, ``list``, ``cancel``, ``result``, ``resolve_id``,
  ``attested``, ``counts_by_state``) and the ``job.done`` / ``job.progress`` RPC handlers;
* I/O: it parses specs off the event loop, refreshes the worker directory before placement,
  asks unlinked workers whether they are there, looks up DHT-announced results, and performs
  the core's actions over RPC (``send(peer, method, body, timeout=)``: ``job.offer``,
  ``job.fetch``, ``job.cancel``), feeding every answer or failure back into the core;
* time: :meth:`Coordinator.watch` sleeps until the core's ``next_deadline()`` (at most
  ``tick_max``, at least ``tick_min``) or until an input arrives (a report, an answer to an
  offer or a fetch, a submission, a cancellation, a link going down), whichever is first,
  then ``tick()`` hands the core the clock and the links' state and places what is due: an
  idle coordinator wakes every ``tick_max`` seconds, not four times a second. Progress does
  not wake it: progress only pushes a replica's silence deadline later;
* sends in the background: every ``job.offer``, ``job.fetch`` and ``job.cancel`` runs as a task
  of the coordinator's :class:`~qiz.tasks.TaskOwner`, and its answer goes to the core and sets
  the wake event. A tick never awaits a peer: one worker that never answers an offer (60 s)
  must not hold the single watch loop, and with it every other job's deadline, poll and
  straggler check. The core keeps the bookkeeping of what is in flight (an offer not answered
  is never offered again nor fetched, a fetch not answered is not sent twice);
* signing: the attestation is signed with the node's identity when the core finishes a job.

Events go to the node's :class:`~qiz.events.EventBus`; background sends are owned by a
:class:`~qiz.tasks.TaskOwner` that :meth:`Coordinator.close` awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from qiz.compute import bodies, execute
from qiz.compute import spec as specs
from qiz.compute.actions import (
    Action,
    CancelAt,
    Emit,
    Fetch,
    Forget,
    Offer,
)
from qiz.compute.attest import make_attestation
from qiz.compute.checker import SpecChecker
from qiz.compute.core import (
    JobCore,
    JobState,
    WorkerView,
    check_capacity,
)
from qiz.compute.directory import WorkerDirectory
from qiz.compute.errors import CheckerBusy, JobError, JobNotFound, SpecError, Unreachable
from qiz.compute.inputs import InputFetcher
from qiz.compute.jobdb import DONE, FAILED, RUNNING, CoordinatorTables, JobRow
from qiz.compute.quorum import Decision
from qiz.compute.status import JobStatus, job_status, log_entry, spec_body, spec_summary
from qiz.crypto.ids import NodeId
from qiz.events import Event, EventBus, EventKind
from qiz.identity import NodeIdentity
from qiz.qmp.rpc import CallContext, RpcError
from qiz.tasks import TaskOwner
from qiz.trust.scores import PeerScores

__all__ = ["Coordinator", "Unreachable"]

log = logging.getLogger("qiz.coordinator")
Send = Callable[..., Awaitable[Any]]
OFFER_TIMEOUT = 60.0
FETCH_TIMEOUT = 5.0
CANCEL_TIMEOUT = 3.0
CONFIRM_TIMEOUT = 3.0
SPEC_CACHE_JOBS = 256  # jobs whose decoded spec body and summary a coordinator keeps at hand


class Coordinator:
    def __init__(
        self,
        identity: NodeIdentity,
        tables: CoordinatorTables,
        scores: PeerScores,
        directory: WorkerDirectory,
        send: Send,
        *,
        events: EventBus,
        placement: str = "greedy",
        poll_after: float = 3.0,
        clock: Callable[[], float] = time.time,
        checker: SpecChecker | None = None,
    ) -> None:
        self.identity = identity
        self.checker = checker  # parses submitted specs in a limited process (None: a thread)
        # content-id inputs, fetched before a check (the service sets the node's pool fetch)
        self.inputs = InputFetcher(None)
        self.tables = tables
        self.scores = scores
        self.directory = directory
        self.send = send
        self.events = events
        self.clock = clock
        # qubits and work are the workers' to judge (their memory, their patience)
        self.limits = specs.Limits(max_qubits=40, max_work=math.inf)
        self.core = JobCore(
            tables,
            scores,
            self_id=identity.node_id.digest,
            attest=self._attest,
            poll_after=poll_after,
            placement=placement,
        )
        # per placement round: directory refresh, placement, and (for a submission, which waits
        # for them) the offers' answers; the watch loop's rounds do not wait for answers
        self.schedule_seconds: deque[float] = deque(maxlen=10_000)
        # nodes that announced (DHT provider records) results of a job waiting for us
        self.find_holders: Callable[[bytes], Awaitable[list[bytes]]] | None = None
        self._owner = TaskOwner("coordinator", log)
        # set by every input that may make work due; :meth:`watch` waits on it
        self.wake = asyncio.Event()
        # job id -> (spec body, spec summary): a status is polled every 0.3 s by a waiting
        # CLI and by the dashboard, and a spec may carry a large QASM program; decoded once
        self._specs: OrderedDict[bytes, tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()
        self._unsubscribe = events.subscribe(self._on_event)

    @property
    def counters(self) -> dict[str, int]:
        return self.core.counters

    @property
    def jobs(self) -> dict[bytes, JobState]:
        """Jobs running now (read-only use: the core owns them)."""
        return self.core.jobs

    def handlers(self) -> dict[str, Any]:
        return {"job.done": self._rpc_done, "job.progress": self._rpc_progress}

    async def close(self) -> None:
        """End every background send this coordinator started."""
        self._unsubscribe()
        await self._owner.close()

    def _on_event(self, event: Event) -> None:
        """A link that went down may carry replicas: the core fetches them at once (a tick),
        which ``next_deadline`` cannot foresee."""
        if event.kind == EventKind.PEER_UNLINKED:
            self.wake.set()

    def _attest(self, spec: specs.JobSpec, decisions: Sequence[Decision], now: float) -> bytes:
        return make_attestation(self.identity, spec, decisions, execute.ENGINE, now)

    # ------------------------------------------------------------------ the owner's API

    async def submit(self, raw: bytes) -> JobStatus:
        """Check a signed spec and start it; the same spec again names the same job and
        returns its status (a failed or cancelled job starts afresh)."""
        try:
            inputs = await self.inputs.texts(raw, self.limits)
            if self.checker is not None:
                spec = await self.checker.parse(raw, self.limits, inputs=inputs)
            else:
                spec = await asyncio.to_thread(specs.parse, raw, self.limits, None, inputs)
        except CheckerBusy:
            raise
        except SpecError as exc:
            raise JobError(f"the spec was refused: {exc}") from None
        row = self.tables.job(spec.job_id)
        if row is not None and row.state in (RUNNING, DONE):
            return self.status(spec.job_id)
        await self.directory.refresh()
        await self._confirm_unlinked()
        check_capacity(spec, self._workers())
        self._perform(self.core.submit(spec, self.clock()))
        self.wake.set()
        if row is None:
            await self._collect_waiting(spec)
        if spec.job_id in self.core.jobs:  # not already finished by collected results
            # the submitter waits for its own offers' answers (its status then shows replicas
            # queued, or refused); the watch loop never does
            await self._place([spec.job_id], wait=True)
        return self.status(spec.job_id)

    def resolve_id(self, text: str) -> bytes:
        """A job id from its hex form or a unique prefix of it."""
        text = text.strip().lower()
        if len(text) == 64:
            return specs.parse_job_id(text)
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise JobError(f"{text!r} is not a job id (hex, at least 4 digits)")
        found = self.tables.find(text)
        if not found:
            raise JobNotFound(f"no job submitted here starts with {text!r}")
        if len(found) > 1:
            raise JobError(f"{len(found)} jobs start with {text!r}: give more of its digits")
        return found[0]

    def known(self, job: bytes) -> bool:
        """Whether ``job`` was submitted here."""
        return self.tables.job(job) is not None

    def _spec_of(self, row: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The decoded body and summary of a job's spec, from the cache when there."""
        cached = self._specs.get(row.job)
        if cached is None:
            body = spec_body(row)
            cached = (body, spec_summary(body))
            self._specs[row.job] = cached
            if len(self._specs) > SPEC_CACHE_JOBS:
                self._specs.popitem(last=False)
        else:
            self._specs.move_to_end(row.job)
        return cached

    def status(self, job: bytes, *, with_spec: bool = False) -> JobStatus:
        """A job's status; ``with_spec`` adds what its spec asked for (the status of one job,
        ``qiz job status``, ``GET /api/jobs/{job}``)."""
        row = self.tables.job(job)
        if row is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        body, summary = self._spec_of(row)
        return job_status(
            row,
            self.tables.replicas(job),
            self.core.live(job),
            self.clock(),
            body=body,
            spec=summary if with_spec else None,
        )

    def list(self) -> list[JobStatus]:
        """Every job submitted here, newest first."""
        rows = sorted(self.tables.jobs(), key=lambda row: row.created, reverse=True)
        return [self.status(row.job) for row in rows]

    def logs(self, job: bytes) -> dict[str, Any]:
        """A job's timeline (``qiz job logs``): what the core decided, when, oldest first."""
        if self.tables.job(job) is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        return {"job_id": job.hex(), "entries": [log_entry(e) for e in self.tables.log(job)]}

    def result(self, job: bytes) -> bytes:
        """The attestation file of a finished job."""
        row = self.tables.job(job)
        if row is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        if row.state != DONE or row.attestation is None:
            raise JobError(f"job {job.hex()[:12]} is {row.state}; it has no attested result")
        return row.attestation

    def attested(self) -> list[tuple[bytes, bytes]]:
        """(job id, attestation file) of every finished job, oldest first."""
        return [
            (row.job, row.attestation)
            for row in self.tables.jobs((DONE,))
            if row.attestation is not None
        ]

    def counts_by_state(self) -> dict[str, int]:
        """How many jobs submitted here are in each state (for metrics)."""
        return self.tables.count_by_state()

    async def cancel(self, job: bytes) -> JobStatus:
        if self.tables.job(job) is None:
            raise JobNotFound(f"no job {job.hex()} was submitted here")
        actions = self.core.cancel(job, self.clock())
        self.wake.set()
        self._perform([a for a in actions if not isinstance(a, CancelAt)])
        # the owner's call waits for the workers to hear of it (each send is bounded)
        await asyncio.gather(*(self._cancel_at(a) for a in actions if isinstance(a, CancelAt)))
        return self.status(job)

    def resume(self) -> None:
        """Pick up the running jobs of a previous run; their replicas are polled at once.
        Jobs whose specs name content-id inputs are picked up once those are fetched again
        (in the background: the pool may take a while)."""
        later = {row.job for row in self.tables.jobs((RUNNING,)) if self._names_inputs(row.spec)}
        self._perform(
            self.core.resume(self.limits, self.clock(), select=lambda row: row.job not in later)
        )
        self.wake.set()
        if later:
            self._owner.spawn(self._resume_fetched(later), "resume jobs with stored inputs")

    def _names_inputs(self, raw: bytes) -> bool:
        try:
            return bool(specs.input_refs(raw, self.limits))
        except SpecError:
            return False  # the core refuses it with its reason

    async def _resume_fetched(self, jobs: set[bytes]) -> None:
        """Fetch the inputs of the stored specs of ``jobs``, then resume them; a job whose
        input cannot be had fails with the reason."""
        fetched: dict[bytes, dict[str, str]] = {}
        for row in self.tables.jobs((RUNNING,)):
            if row.job not in jobs or row.spec in fetched:
                continue
            try:
                fetched[row.spec] = await self.inputs.texts(row.spec, self.limits)
            except SpecError as exc:
                self.tables.set_job(row.job, FAILED, self.clock(), error=f"stored spec: {exc}")

        def chosen(row: JobRow) -> bool:  # not resubmitted (and so running) meanwhile
            return row.job in jobs and row.job not in self.core.jobs and row.spec in fetched

        self._perform(self.core.resume(self.limits, self.clock(), select=chosen, inputs=fetched))
        self.wake.set()

    # ------------------------------------------------------------------ performing actions

    def _perform(self, actions: list[Action]) -> list[asyncio.Task[None]]:
        """Do the core's actions without waiting for any peer: events and the directory at
        once, every send as a background task (returned, for a caller that chooses to wait).

        Why never await a send here: this runs inside :meth:`tick` and the RPC handlers, and
        an offer may take its whole 60 s timeout; each answer reaches the core and sets the
        wake event by itself (:meth:`_offer`, :meth:`_fetch`). A closed coordinator sends
        nothing more (its jobs are picked up again by :meth:`resume` after a restart)."""
        sends: list[asyncio.Task[None]] = []
        for action in actions:
            if isinstance(action, Emit):
                self.events.emit(action.kind, **action.data)
            elif isinstance(action, Forget):
                self.directory.forget(action.worker)
            elif self._owner.closed:
                continue
            elif isinstance(action, CancelAt):
                sends.append(self._owner.spawn(self._cancel_at(action), "cancel"))
            elif isinstance(action, Offer):
                sends.append(self._owner.spawn(self._offer(action), "offer"))
            elif isinstance(action, Fetch):
                sends.append(self._owner.spawn(self._fetch(action), "fetch"))
            # JobFinished / JobFailed: already stored and announced by an Emit
        return sends

    async def _offer(self, offer: Offer) -> None:
        body = {"spec": offer.spec, "task": offer.task, "seed": offer.seed}
        try:
            reply = await self.send(offer.worker, "job.offer", body, timeout=OFFER_TIMEOUT)
        except RpcError as exc:
            if exc.code == "busy":  # not an attempt: the worker is full; place it elsewhere
                self.directory.busy(offer.worker)
            actions = self.core.offer_refused(
                offer.job,
                offer.task,
                offer.worker,
                code=exc.code,
                message=exc.message,
                now=self.clock(),
            )
        except Exception as exc:  # any other failure to deliver is the core's "lost"
            log.debug("offer to %s failed", NodeId(offer.worker).short(), exc_info=True)
            actions = self.core.offer_failed(
                offer.job, offer.task, offer.worker, str(exc) or type(exc).__name__, self.clock()
            )
        else:
            self.directory.note(offer.worker, reply)
            actions = self.core.offer_accepted(
                offer.job, offer.task, offer.worker, reply, self.clock()
            )
        self.wake.set()
        self._perform(actions)

    async def _fetch(self, fetch: Fetch) -> None:
        body = {"job": fetch.job, "task": fetch.task}
        try:
            report = await self.send(fetch.worker, "job.fetch", body, timeout=FETCH_TIMEOUT)
        except Unreachable as exc:  # no link and no way to dial it
            actions = self.core.fetch_failed(
                fetch.job, fetch.task, fetch.worker, str(exc), unreachable=True, now=self.clock()
            )
        except Exception as exc:  # a timeout or refusal: the core counts misses
            log.debug("fetch from %s failed", NodeId(fetch.worker).short(), exc_info=True)
            actions = self.core.fetch_failed(
                fetch.job,
                fetch.task,
                fetch.worker,
                str(exc) or type(exc).__name__,
                unreachable=False,
                now=self.clock(),
            )
        else:
            actions = self.core.fetched(fetch.job, fetch.task, fetch.worker, report, self.clock())
        self.wake.set()
        self._perform(actions)

    async def _cancel_at(self, cancel: CancelAt) -> None:
        body: dict[str, Any] = {"job": cancel.job}
        if cancel.task is not None:
            body["task"] = cancel.task
        try:
            await self.send(cancel.worker, "job.cancel", body, timeout=CANCEL_TIMEOUT)
        except Exception as exc:  # the worker's own deadline bounds the task anyway
            log.info("job.cancel to %s failed: %s", NodeId(cancel.worker).short(), exc)

    # ------------------------------------------------------------------ the directory

    def _workers(self) -> list[WorkerView]:
        return [
            WorkerView.of(node, capacity, self.directory.rtt(node))
            for node, capacity in self.directory.workers()
        ]

    def _linked(self, worker: bytes) -> bool:
        if worker == self.identity.node_id.digest:
            return True
        peer = self.directory.links.peers.get(NodeId(worker))
        return peer is not None and peer.link.is_open

    async def _confirm_unlinked(self) -> None:
        """Ask the known workers we have no link to whether they are there (a capacity record
        outlives its node by up to its TTL): the ones that do not answer are left out."""
        unlinked = [node for node in self.directory.entries if not self._linked(node)]
        replies = await asyncio.gather(
            *(self.send(node, "job.capacity", None, timeout=CONFIRM_TIMEOUT) for node in unlinked),
            return_exceptions=True,
        )
        for node, reply in zip(unlinked, replies, strict=True):
            if isinstance(reply, BaseException):
                self.directory.absent(node)
            else:
                self.directory.note(node, reply)

    async def _collect_waiting(self, spec: specs.JobSpec) -> None:
        """A job new to this coordinator may have results waiting at workers already (this
        node lost its records, or another run of it submitted the same spec): ask the DHT who
        holds some and take theirs as replicas before placing new ones."""
        if self.find_holders is None:
            return
        job = spec.job_id
        for holder in await self.find_holders(job):
            for task in spec.tasks:
                try:
                    report = await self.send(
                        holder, "job.fetch", {"job": job, "task": task.index}, timeout=FETCH_TIMEOUT
                    )
                except Exception as exc:
                    log.info("results of %s at %s: %s", job.hex()[:12], NodeId(holder).short(), exc)
                    break
                now = self.clock()
                self._perform(self.core.collected(job, task.index, holder, report, now))

    async def _place(self, jobs: list[bytes], *, wait: bool = False) -> None:
        """Refresh the directory if some job wants workers, then place each job's missing
        replicas; the offers go out in the background, and only with ``wait`` (a submission)
        are their answers awaited (``asyncio.wait``: a caller cancelled meanwhile leaves the
        sends running, owned by the coordinator)."""
        started = time.perf_counter()
        if any(self.core.wants(job) for job in jobs):
            await self.directory.refresh()
        sends: list[asyncio.Task[None]] = []
        for job in jobs:
            sends += self._perform(self.core.place(job, self._workers(), self.clock()))
        if wait and sends:
            await asyncio.wait(sends)
        self.schedule_seconds.append(time.perf_counter() - started)

    # ------------------------------------------------------------------ RPC from workers

    async def _rpc_done(self, ctx: CallContext, body: Any) -> Any:
        """A worker's finished report. Its key fields are checked here (``bad-request``);
        the rest (state, claim, result shape) is the core's to judge against the replica."""
        body = bodies.fields(body, "job.done", "job, task, state, ...")
        bodies.job_id(body, "job.done", exact=False)
        bodies.task_index(body, "job.done")
        self.wake.set()
        self._perform(self.core.report(ctx.peer_id.digest, body, self.clock()))
        return {"ok": True}

    async def _rpc_progress(self, ctx: CallContext, body: Any) -> Any:
        """A worker's progress. It sets no wake: progress only marks a replica heard of, which
        pushes its next check later; nothing becomes due sooner (the core returns no action),
        so a busy worker's pushes do not tick the loop once per ``tick_min``. A malformed body
        is checked first (the core never sees it), counted with the other dropped reports,
        and answered ``bad-request``."""
        try:
            checked = bodies.fields(body, "job.progress", "job, task, progress")
            bodies.job_id(checked, "job.progress", exact=False)
            bodies.task_index(checked, "job.progress")
            bodies.fraction(checked, "job.progress")
        except RpcError:
            self.core.counters["progress_dropped"] += 1
            raise
        self._perform(self.core.progress(ctx.peer_id.digest, checked, self.clock()))
        return {"ok": True}

    # ------------------------------------------------------------------ watching

    async def tick(self) -> None:
        """Deadlines, unreachable workers, silent replicas, and placement of what is missing.
        It awaits no peer (the sends run in the background), only the directory's refresh
        before a placement."""
        self._perform(self.core.tick(self.clock(), self._linked))
        due = self.core.placement_due(self.clock())
        if due:
            await self._place(due)

    def sleep_for(self, tick_min: float, tick_max: float) -> float:
        """Seconds until the core next has something to do: its next deadline, bounded to
        [``tick_min``, ``tick_max``] (the floor keeps a deadline already past from spinning
        the loop; the ceiling catches what no deadline foresees, as a stored job's replicas)."""
        due = self.core.next_deadline()
        if due is None:
            return tick_max
        return min(tick_max, max(tick_min, due - self.clock()))

    async def watch(self, tick_min: float = 0.05, tick_max: float = 5.0) -> None:
        """Tick, then sleep until the core's next deadline or the next input, forever.

        The wake flag is cleared *before* each tick: an input that arrives while the tick runs
        (an answer to a send of an earlier tick) sets it again, and the loop ticks once more at
        once to place what that input made due, instead of missing it until the next
        deadline.

        A cancellation always ends the loop (``Node.stop()`` waits for it): the sleep awaits
        the event itself under ``asyncio.timeout``, never ``asyncio.wait_for``, which in Python
        3.11 returns the inner result and drops the cancellation when both come in the same
        turn (a link closing just before a stop set the wake flag and hung the stop, issue
        13); and a cancellation that something awaited inside a tick swallowed all the same
        ends the loop at the top of the next turn."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                raise asyncio.CancelledError  # requested, but lost on the way (see above)
            self.wake.clear()
            started = loop.time()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged, and the loop goes on: a bug must not stop every job
                log.exception("coordinator tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sleep_for(tick_min, tick_max)):
                    await self.wake.wait()
            # inputs that keep coming wake it at most once per tick_min
            await asyncio.sleep(max(0.0, started + tick_min - loop.time()))
