"""Checking job specs from others in a separate, limited process: the spec checker.

Why a process: checking a spec means parsing its OpenQASM circuits and Pauli sums, and the cost
of that is the sender's to choose (issue 13: a 192 KiB program cost the parser 1.6 GB and 4.6 s;
nested gate macros 10-17 s of CPU). Parsed in the node's process, one peer's ``job.offer`` would
stall the event loop (every link, every other peer's offer) or take the node's memory. So the
node's process only decodes the envelope and verifies the signature (bounded by the spec's byte
limit), and the parse runs in a checker process:

* a fresh interpreter running this module (never a ``fork`` of the node, which has threads and
  an event loop) that dies with the node (:func:`qiz.lifeline.die_with_parent`) and talks canonical
  CBOR over a socket pair (never pickle: a subverted checker cannot run code in the node);
* under an address-space limit (``RLIMIT_AS``: its size once warmed up plus ``memory``) and a
  CPU-time limit per check (``RLIMIT_CPU`` set to ``cpu_seconds`` more than it used so far: the
  kernel ends it with SIGXCPU); the node also waits at most ``wall_seconds`` for an answer (a
  checker starved or stopped);
* a check that blows a limit is refused with a :class:`SpecError` naming the limit, the process
  is killed, and a fresh one takes its place at the next check. The node goes on serving.

The checker answers with the shapes it measured (qubits, instructions, shots, evaluations per
run); the node then runs :func:`qiz.compute.spec.parse` itself with those shapes in place of
:func:`execute.shape`, so every limit is still judged by the node's own code and the
:class:`JobSpec` it gets is the same as an in-process parse would give.

Fairness and bounds: at most ``processes`` checks run at once; the checks waiting for a process
are served round robin by peer, so one peer's queue of offers delays another's by at most one
check of each peer ahead; at most ``max_waiting_per_peer`` wait per peer and ``max_waiting``
in all, beyond which a check is refused at once with :class:`CheckerBusy` (the worker answers
``busy``, its coordinator places the task elsewhere). The node's owner (``peer=b""``: ``job
submit``, a restart's stored specs) has a lane of its own: its checks wait apart (at most
``max_waiting_owner``, never counted in the peers' ``max_waiting``) and take the next free
process ahead of every peer, so peers flooding the checker cannot refuse the owner (issue 13
review). The same bytes checked twice at once are checked once; answers are cached (accepted
and refused, each a bounded LRU), so a refused spec offered again costs a hash. Only the
parser's own refusals (and a blown CPU or memory limit: the spec's own cost) are cached; a check
that ran out of wall-clock time or whose checker died may have been the machine's load, so
that spec is checked again when offered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import os
import signal
import socket
import subprocess
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from qiz import wire
from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.errors import CheckerBusy, SpecError
from qiz.lifeline import die_with_parent

# what one check may cost: the node's memory and CPU are what these protect. A legitimate spec at
# the byte limit (256 KiB, ~24,000 instructions) measured ~135 MiB and ~7 s of CPU to parse here
CHECK_MEMORY = 512 << 20  # address space a check may add to the warmed-up checker
CHECK_CPU_SECONDS = 20  # CPU seconds one check may take (RLIMIT_CPU, whole seconds)
CHECK_WALL_SECONDS = 60.0  # the node's own backstop: a checker that does not answer
CHECK_START_SECONDS = 60.0  # a fresh checker's imports and warm-up
CHECK_PROCESSES = 1  # checks at once: each takes a core; the worker pool needs the others
MAX_WAITING = 32  # checks waiting for a process, all peers together
MAX_WAITING_PER_PEER = 4  # ... and per peer: one peer cannot fill the queue
MAX_WAITING_OWNER = 16  # the owner's checks waiting, apart from the peers' (peers cannot fill it)
CACHE = 64  # accepted specs remembered (a sweep's shards are offered one by one)
REFUSED_CACHE = 256  # refused specs remembered: offering a refused spec again costs a hash
MAX_REQUEST = 1 << 20  # a spec (256 KiB by default), its limits and inputs (192 KiB each)
MAX_REPLY = 64 << 10  # a few shapes or one error line
MAX_MESSAGE = 2000  # characters of a refusal passed on from the checker
RESERVE = 1 << 20  # bytes a checker holds back to answer "out of memory" with
REAP_SECONDS = 2.0  # a killed checker's reaping, in a thread (never on the event loop)
OWNER = b""  # the ``peer`` of the node's owner's own checks


@dataclass(eq=False)
class _Checker:
    """One checker process and its end of the socket pair."""

    process: subprocess.Popen
    conn: Connection
    ready: bool = False  # its "ready" line was read
    retired: bool = False


class _Overtime(Exception):
    """No answer within the wall-clock backstop."""


class _Died(Exception):
    """The checker's pipe closed: it exited or was killed."""


class _NotStarted(Exception):
    """A fresh checker died (or said something else) before its ready line."""


class _LoadRefusal(SpecError):
    """Refused because the check ran out of wall-clock time or its checker died: maybe the
    machine's load, not the spec, so the refusal is not cached."""


@dataclass
class _Counters:
    checked: int = 0  # checks run in a checker process
    accepted: int = 0
    refused: int = 0  # refused by the checks themselves (a bad or oversized spec)
    over_limit: int = 0  # refused because a check blew the memory or time limit
    busy: int = 0  # refused at once: too many checks waiting
    cached: int = 0  # answered from the caches or by a check already running
    started: int = 0  # checker processes started (a replaced one counts again)
    waiting_peak: int = 0


@dataclass
class SpecChecker:
    """``await parse(raw, limits, peer)``: a :class:`JobSpec` checked in a limited process."""

    memory: int = CHECK_MEMORY
    cpu_seconds: int = CHECK_CPU_SECONDS
    wall_seconds: float = CHECK_WALL_SECONDS
    processes: int = CHECK_PROCESSES
    max_waiting: int = MAX_WAITING
    max_waiting_per_peer: int = MAX_WAITING_PER_PEER
    max_waiting_owner: int = MAX_WAITING_OWNER
    counters: _Counters = field(default_factory=_Counters)

    def __post_init__(self) -> None:
        if self.processes < 1 or self.cpu_seconds < 1 or self.memory < 1:
            raise ValueError("a spec checker needs a process, a CPU limit and a memory limit")
        self._idle: list[_Checker] = []
        self._all: set[_Checker] = set()
        self._running = 0  # admitted checks (each holds a process)
        self._waiting: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._order: deque[bytes] = deque()  # peers with waiting checks, in turn order
        self._owner: deque[asyncio.Future[None]] = deque()  # the owner's, served first
        self._inflight: dict[tuple, asyncio.Task[specs.JobSpec]] = {}
        self._accepted: OrderedDict[tuple, specs.JobSpec] = OrderedDict()
        self._refused: OrderedDict[tuple, str] = OrderedDict()
        self.closed = False

    # ------------------------------------------------------------------ the node's side

    @property
    def waiting(self) -> int:
        """Checks of peers waiting for a process (the owner's wait apart)."""
        return sum(len(q) for q in self._waiting.values())

    def stats(self) -> dict[str, int]:
        return {**dataclasses.asdict(self.counters), "processes": len(self._all)}

    async def parse(
        self,
        raw: Any,
        limits: specs.Limits,
        peer: bytes = b"",
        inputs: dict[str, str] | None = None,
    ) -> specs.JobSpec:
        """Check ``raw`` (a signed spec) against ``limits`` for ``peer`` (whose turn and
        waiting count it uses; ``b""`` is the node's owner). ``inputs``: the text of the
        content ids the spec names (:mod:`qiz.compute.inputs`; the ids fix the text, so the
        caches stay keyed by the spec's bytes). Raises SpecError (refused, the reason in one
        line) or CheckerBusy (too many checks waiting; try later)."""
        if self.closed:
            raise CheckerBusy("the spec checker is closed (the node is stopping)")
        if not isinstance(raw, bytes) or len(raw) > limits.max_spec_bytes:
            return specs.parse(raw, limits, inputs=inputs)  # refused by the cheap checks
        key = (hashlib.sha3_256(raw).digest(), tuple(_limits_key(limits)))
        if key in self._accepted:
            self._accepted.move_to_end(key)
            self.counters.cached += 1
            return self._accepted[key]
        if key in self._refused:
            self.counters.cached += 1
            raise SpecError(self._refused[key])
        check = self._inflight.get(key)
        if check is None:
            await self._admit(peer)  # before the task: a busy refusal is this caller's
            check = asyncio.ensure_future(self._check(key, raw, limits, inputs or {}))
            self._inflight[key] = check
            check.add_done_callback(lambda _: self._inflight.pop(key, None))
        else:
            self.counters.cached += 1
        # shielded: a caller that goes away (its link closed) leaves the check running to its
        # end, and its answer is cached for the offer that comes again
        return await asyncio.shield(check)

    async def close(self) -> None:
        """Kill the checker processes; checks still running are refused as busy."""
        self.closed = True
        for check in list(self._inflight.values()):
            check.cancel()
        for checker in list(self._all):
            self._retire(checker)
        for queue in self._waiting.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(CheckerBusy("the node is stopping"))
        for waiter in self._owner:
            if not waiter.done():
                waiter.set_exception(CheckerBusy("the node is stopping"))
        self._waiting.clear()
        self._order.clear()
        self._owner.clear()

    # ------------------------------------------------------------------ turns

    async def _admit(self, peer: bytes) -> None:
        """Wait for this peer's turn at a checker process (round robin over peers; the
        owner's checks wait apart and go first)."""
        if self._running < self.processes and not self._order and not self._owner:
            self._running += 1
            return
        if peer == OWNER:
            await self._admit_owner()
            return
        queue = self._waiting.get(peer)
        waiting = self.waiting
        if queue is not None and len(queue) >= self.max_waiting_per_peer:
            self.counters.busy += 1
            raise CheckerBusy(
                f"{len(queue)} spec checks of this peer wait here already; offer it again later"
            )
        if waiting >= self.max_waiting:
            self.counters.busy += 1
            raise CheckerBusy(f"{waiting} spec checks wait here already; offer it again later")
        if queue is None:
            queue = self._waiting[peer] = deque()
            self._order.append(peer)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        self.counters.waiting_peak = max(self.counters.waiting_peak, waiting + 1)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()  # granted as the caller left: pass the process on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(turn)
                if not queue and self._waiting.get(peer) is queue:
                    del self._waiting[peer]
                    with contextlib.suppress(ValueError):
                        self._order.remove(peer)
            raise

    async def _admit_owner(self) -> None:
        """The owner's turn: its own bound, and ahead of every peer."""
        if len(self._owner) >= self.max_waiting_owner:
            self.counters.busy += 1
            raise CheckerBusy(
                f"{len(self._owner)} of the owner's spec checks wait here already; try later"
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._owner.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()
            else:
                with contextlib.suppress(ValueError):
                    self._owner.remove(turn)
            raise

    def _release(self) -> None:
        """A check ended: the owner's next check, else the next peer in turn takes its
        process, or it goes idle."""
        while self._owner:
            turn = self._owner.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        while self._order:
            peer = self._order.popleft()
            queue = self._waiting[peer]
            turn = queue.popleft()
            if queue:
                self._order.append(peer)  # its next check waits for its next turn
            else:
                del self._waiting[peer]
            if not turn.done():
                turn.set_result(None)
                return
        self._running -= 1

    # ------------------------------------------------------------------ one check

    async def _check(
        self, key: tuple, raw: bytes, limits: specs.Limits, inputs: dict[str, str]
    ) -> specs.JobSpec:
        try:
            shapes = await self._measure(raw, limits, inputs)
            replay = iter(shapes)

            def measured(kind: str, params: Any, path: str, max_shots: int) -> execute.Shape:
                shape = next(replay, None)
                if shape is None:  # the checker and the node disagree: never accept then
                    raise SpecError("the spec checker's answer does not fit the spec")
                return shape

            spec = specs.parse(raw, limits, measured, inputs)
        except _LoadRefusal:
            raise  # maybe the load: checked again when offered again
        except SpecError as exc:
            self.counters.refused += 1
            _remember(self._refused, key, str(exc), REFUSED_CACHE)
            raise
        finally:
            self._release()
        self.counters.accepted += 1
        _remember(self._accepted, key, spec, CACHE)
        return spec

    async def _measure(
        self, raw: bytes, limits: specs.Limits, inputs: dict[str, str]
    ) -> list[execute.Shape]:
        """Run the full check in a checker process; the shapes it measured."""
        checker = self._idle.pop() if self._idle else self._start()
        request = wire.encode([raw, _limits_key(limits), inputs])
        self.counters.checked += 1
        exchange = asyncio.get_running_loop().run_in_executor(
            None, self._exchange, checker, request
        )
        try:
            reply = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            self._kill(checker)  # the thread sees the pipe close; retire it after
            exchange.add_done_callback(lambda _: self._retire(checker))
            raise
        except _NotStarted:
            why = await _exit_reason(checker.process)
            self._retire(checker)
            raise CheckerBusy(
                f"the spec checker could not start ({why}); its error is in the node's log"
            ) from None
        except _Overtime:
            self._retire(checker)
            self.counters.over_limit += 1
            raise _LoadRefusal(
                f"checking the spec took over {self.wall_seconds:g} s (the limit); refused"
            ) from None
        except _Died:
            why = await _exit_reason(checker.process)
            self._retire(checker)
            self.counters.over_limit += 1
            if why == "SIGXCPU":
                raise SpecError(
                    f"checking the spec took over {self.cpu_seconds} s of CPU time "
                    "(the checker's limit); refused"
                ) from None
            raise _LoadRefusal(
                f"the spec checker died checking it ({why}: over its memory, or a crash); refused"
            ) from None
        tag = reply[0] if isinstance(reply, list) and reply else None
        if tag == "ok" and len(reply) == 2 and isinstance(reply[1], list):
            self._idle.append(checker)
            try:
                return [execute.Shape(**shape) for shape in reply[1]]
            except TypeError:
                raise SpecError("the spec checker's answer does not fit the spec") from None
        if tag == "refused" and len(reply) == 2:
            self._idle.append(checker)
            raise SpecError(str(reply[1])[:MAX_MESSAGE])
        self._retire(checker)  # out of memory (it exits), or an answer that makes no sense
        if tag == "memory":
            self.counters.over_limit += 1
            raise SpecError(
                f"checking the spec needed more than {self.memory >> 20} MiB "
                "(the checker's limit); refused"
            )
        raise SpecError(f"the spec checker failed: {str(reply[-1])[:MAX_MESSAGE]}")

    def _exchange(self, checker: _Checker, request: bytes) -> Any:
        """In a thread: wait for a fresh checker's ready line, send the check, read the
        answer. Blocking reads with timeouts, so the event loop never waits on a checker."""
        if not checker.ready:
            try:
                ready = _read(checker, CHECK_START_SECONDS)
            except (_Died, _Overtime):
                raise _NotStarted from None
            if ready != ["ready"]:
                raise _NotStarted
            checker.ready = True
        try:
            checker.conn.send_bytes(request)
        except (OSError, ValueError):
            raise _Died from None
        return _read(checker, self.wall_seconds)

    # ------------------------------------------------------------------ processes

    def _start(self) -> _Checker:
        parent, child = socket.socketpair()
        env = {
            **os.environ,
            # one thread each: a check is single-threaded, and BLAS thread pools reserve
            # address space that would count against the limit
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
        }
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "qiz.compute.checker",
                    str(child.fileno()),
                    str(os.getpid()),
                    str(self.memory),
                    str(self.cpu_seconds),
                ],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        checker = _Checker(process, Connection(parent.detach()))
        self._all.add(checker)
        self.counters.started += 1
        return checker

    def _kill(self, checker: _Checker) -> None:
        if checker.process.poll() is None:
            checker.process.kill()

    def _retire(self, checker: _Checker) -> None:
        """Stop using a checker: kill it, reap it, close its pipe."""
        if checker.retired:
            return
        checker.retired = True
        self._all.discard(checker)
        if checker in self._idle:
            self._idle.remove(checker)
        self._kill(checker)
        _reap(checker.process)
        checker.conn.close()


def _read(checker: _Checker, timeout: float) -> Any:
    try:
        if not checker.conn.poll(timeout):
            raise _Overtime
        data = checker.conn.recv_bytes(MAX_REPLY)
    except (EOFError, OSError, ValueError):
        raise _Died from None
    try:
        return wire.decode(data, max_size=MAX_REPLY, what="spec checker answer")
    except wire.WireError:
        raise _Died from None


def _remember(cache: OrderedDict, key: tuple, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def _limits_key(limits: specs.Limits) -> list:
    """The limits as plain data (an infinite bound travels as null)."""
    return [
        None if isinstance(v, float) and math.isinf(v) else v for v in dataclasses.astuple(limits)
    ]


def _limits_of(values: list) -> specs.Limits:
    names = [f.name for f in dataclasses.fields(specs.Limits)]
    return specs.Limits(
        **{n: (math.inf if v is None else v) for n, v in zip(names, values, strict=True)}
    )


def _wait(process: subprocess.Popen) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=REAP_SECONDS)


def _reap(process: subprocess.Popen) -> None:
    """Reap a killed checker: in a thread when an event loop runs (the wait must not block
    it), at once otherwise."""
    if process.poll() is not None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _wait(process)
        return
    loop.run_in_executor(None, _wait, process)


async def _exit_reason(process: subprocess.Popen) -> str:
    if process.poll() is None:
        await asyncio.to_thread(_wait, process)
    code = process.returncode
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"exit code {code}"


# ----------------------------------------------------------------------------- the child


def _child_main(conn: Connection, parent: int, memory: int, cpu_seconds: int) -> None:
    """A checker process: load what checks need, set the memory limit, answer checks."""
    import resource

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):  # SIGXCPU must not leave a core file
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for kind, params in execute.WARM_UP:  # imports every kind's parsers before the limit
        execute.shape(kind, params)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + memory
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _reply(conn, "ready")
    while True:
        try:
            raw, limits, inputs = wire.decode(conn.recv_bytes(MAX_REQUEST), max_size=MAX_REQUEST)
        except (EOFError, OSError):
            return
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used) + cpu_seconds, cpu_hard))
        shapes: list[dict[str, int]] = []

        def measure(
            kind: str, params: Any, path: str, max_shots: int, shapes: list = shapes
        ) -> execute.Shape:
            shape = execute.shape(kind, params, path, max_shots)
            shapes.append(dataclasses.asdict(shape))
            return shape

        reserve = bytearray(RESERVE)  # freed when memory runs out, to answer with
        outcome: tuple = ("ok", shapes)
        try:
            specs.parse(raw, _limits_of(limits), measure, inputs)
        except SpecError as exc:  # a parser may have turned running out into its own error
            outcome = ("memory",) if _ran_out(exc) else ("refused", str(exc)[:MAX_MESSAGE])
        except MemoryError:
            outcome = ("memory",)
        except RecursionError:
            outcome = ("refused", "the spec is nested too deeply to check")
        except Exception as exc:  # a bug in a parser: refused, said, and the checker goes on
            outcome = ("refused", f"the spec could not be checked: {type(exc).__name__}")
        # the handler has ended, so the parse's frames (and what they held) are freed by now
        del reserve
        _reply(conn, *outcome)
        if outcome[0] == "memory":
            return  # a heap that ran out is not trusted again: a fresh checker takes over


def _ran_out(exc: BaseException) -> bool:
    """Whether a MemoryError is among the causes of ``exc`` (``raise ... from None`` hides it
    from a traceback but keeps it as the context)."""
    seen: BaseException | None = exc
    for _ in range(32):
        if seen is None:
            return False
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reply(conn: Connection, *message: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        conn.send_bytes(wire.encode(list(message)))


def _address_space() -> int:
    """This process's virtual size now (VmSize), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    _fd, _parent, _memory, _cpu = sys.argv[1:5]
    _child_main(Connection(int(_fd)), int(_parent), int(_memory), int(_cpu))
