"""The measuring protocol of ``bench/quantum.py``: persistent workers, alternating rounds.

For one (workload, n), one worker process per engine (``bench/quantum_worker.py``, the same
thread environment for all) builds the problem once; then, round after round, every engine
evaluates once, in an order that rotates each round, on fresh parameters that every engine
shares in that round, and their answers are compared call by call. So a slow moment of the
machine lands on every engine alike, and no engine is timed on inputs it has already seen.

A round during which other processes used more than ``BUSY_SHARE`` of the CPUs (read from
/proc/stat, less our own processes' CPU, over a short window before the round and over the
round) is discarded and re-run, a bounded number of times; a size whose rounds stay busy gets
no published ratio. Each engine's first call (JIT compilation, first touch of its buffers) is
timed and kept apart from the rounds.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.quantum_peers import GROVER_ITERATIONS as GROVER_K
from bench.quantum_peers import QAOA_DEPTH, THREADS, grover_probability

WORKER = Path(__file__).resolve().parent / "quantum_worker.py"
WARM_QUBITS = 6  # as bench/quantum_worker.py
BUSY_SHARE = 0.10  # other processes' share of the CPUs above which a round is busy
RETRIES = 2  # re-runs of one busy round before it is kept, marked busy
PRE_WINDOW = 0.25  # seconds of quiet sampled before each round
TOLERANCE = 1e-8
TOLERANCES = {"qiz-single": 1e-4}  # single precision against our double-precision answer
THREAD_ENV = {
    "OMP_NUM_THREADS": str(THREADS),
    "NUMBA_NUM_THREADS": str(THREADS),
    "QULACS_NUM_THREADS": str(THREADS),
    "OPENBLAS_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "RAYON_NUM_THREADS": str(THREADS),
}


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pure rules


def rotation(engines: Sequence[str], round_index: int) -> list[str]:
    """The order of one round: the engines rotated by the round's index, so each engine goes
    first (and follows each other engine) equally often over len(engines) rounds."""
    if not engines:
        return []
    k = round_index % len(engines)
    return list(engines[k:]) + list(engines[:k])


@dataclass(frozen=True)
class CpuSample:
    """Busy jiffies of the whole machine, jiffies of our processes, and the wall time."""

    machine: int
    ours: int
    wall: float


def other_share(before: CpuSample, after: CpuSample, cpus: int, hz: int) -> float:
    """The share of all CPUs that processes other than ours used between two samples."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    other = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, other / (hz * wall * cpus))


def round_verdict(share: float, retries_used: int) -> str:
    """``keep`` a quiet round, ``retry`` a busy one while retries remain, else ``keep-busy``."""
    if share <= BUSY_SHARE:
        return "keep"
    return "retry" if retries_used < RETRIES else "keep-busy"


def publishable(quiet_rounds: int, planned: int) -> bool:
    """A ratio is published only when at least half the planned rounds (and one) were quiet."""
    return quiet_rounds >= max(1, math.ceil(planned / 2))


def round_params(
    workload: str, n: int, seed: int, index: int, num_parameters: int
) -> dict[str, Any]:
    """Call ``index``'s parameters, the same for every engine: a seeded stream per size."""
    rng = np.random.default_rng([seed, n, index, sum(map(ord, workload))])
    if workload.startswith("qaoa") or workload.startswith("large"):
        return {
            "gammas": rng.uniform(-math.pi, math.pi, QAOA_DEPTH).tolist(),
            "betas": rng.uniform(-math.pi / 2, math.pi / 2, QAOA_DEPTH).tolist(),
        }
    if workload.startswith("vqe"):
        return {"theta": rng.uniform(-math.pi, math.pi, num_parameters).tolist()}
    return {"marked": int(rng.integers(0, 1 << n))}


def deviation(value: Any, reference: Any) -> float:
    """Largest deviation relative to max(1, |reference|): the energy, and for (energy,
    gradient) pairs also the gradient relative to its largest component."""
    if isinstance(reference, list):
        (e, g), (re, rg) = value, reference
        if len(g) != len(rg):
            return math.inf
        scale = max(1.0, *(abs(x) for x in rg)) if rg else 1.0
        dev = max((abs(a - b) for a, b in zip(g, rg, strict=True)), default=0.0) / scale
        return max(abs(e - re) / max(1.0, abs(re)), dev)
    return abs(value - reference) / max(1.0, abs(reference))


def check_call(
    workload: str, n: int, values: dict[str, Any], label: str = ""
) -> tuple[dict[str, float], list[str]]:
    """Compare one call's answers: every engine against ours (or the first engine when ours
    did not run), and Grover against the analytic probability. Returns the deviations and a
    loud message per disagreement."""
    problems: list[str] = []
    devs: dict[str, float] = {}
    answered = {e: v for e, v in values.items() if v is not None}
    if not answered:
        return devs, problems
    ref_name = "qiz" if "qiz" in answered else next(iter(answered))
    reference = answered[ref_name]
    for engine, value in answered.items():
        devs[engine] = deviation(value, reference)
        if devs[engine] > TOLERANCES.get(engine, TOLERANCE):
            problems.append(
                f"DISAGREEMENT {workload} n={n}{label}: {engine} = {_short(value)}, {ref_name} = "
                f"{_short(reference)} (deviation {devs[engine]:.2e})"
            )
        if workload.startswith("grover"):
            exact = grover_probability(n, GROVER_K)
            if abs(value - exact) > TOLERANCE:
                problems.append(
                    f"DISAGREEMENT {workload} n={n}{label}: {engine} = {value!r}, "
                    f"analytic {exact!r}"
                )
    return devs, problems


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"(E={value[0]!r}, grad[:3]={value[1][:3]!r})"
    return repr(value)


# ----------------------------------------------------------------------------- processes


class WorkerFailed(Exception):
    """A worker that answered with an error, timed out, or died."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status


class WorkerProcess:
    """One engine's worker: JSON lines over its stdin/stdout, every request with a deadline."""

    def __init__(self, engine: str, script: Path = WORKER) -> None:
        self.engine = engine
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        env = {**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), engine],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait at most ``timeout`` seconds for its answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailed(f"worker died ({self._tail()})") from None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerFailed(f"no answer to {req['op']} within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerFailed(f"worker died, exit {self.proc.wait(5)} ({self._tail()})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerFailed(str(reply.get("error")), reply.get("status", "failed"))
        return reply

    def _tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "no output"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.stderr.close()


def proc_jiffies(pid: int) -> int:
    """utime + stime of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def cpu_sample(pids: Sequence[int]) -> CpuSample:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user..steal, minus idle and iowait; guest and guest_nice are already inside user and nice
    busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    ours = sum(proc_jiffies(p) for p in (os.getpid(), *pids))
    return CpuSample(busy, ours, time.monotonic())


CPUS = os.cpu_count() or 1
HZ = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- one size


@dataclass
class EngineResult:
    """Everything measured for one engine at one (workload, n)."""

    engine: str
    status: str = "ok"
    error: str = ""
    version: str = ""
    path: str = ""
    warmup_seconds: float = 0.0
    setup_seconds: float = 0.0
    first_seconds: float = 0.0
    times: list[float] = field(default_factory=list)  # quiet rounds
    busy_times: list[float] = field(default_factory=list)  # rounds kept although busy
    contended_times: list[float] = field(default_factory=list)
    value: Any = None
    first_value: Any = None  # the answer to call 0, the same parameters in every session
    sample_seconds: float | None = None
    deviation: float = 0.0
    base_kib: int = 0
    peak_kib: int = 0
    peak_reset: bool = False


@dataclass
class SizeResult:
    workload: str
    n: int
    engines: dict[str, EngineResult]
    planned_rounds: int
    quiet_rounds: int = 0
    busy_rounds: int = 0
    discarded_rounds: int = 0
    busy_shares: list[float] = field(default_factory=list)
    contended_shares: list[float] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class SizePlan:
    rounds: int
    timeout: float = 600.0
    budget: float = 240.0  # seconds of rounds at this size; fewer rounds when calls are slow
    contended_rounds: int = 0
    grover_norm_iterations: int = 0
    sample: bool = False  # time one SAMPLE_SHOTS-shot sampling call after the rounds


class Session:
    """The workers of one (workload, n) and the calls made on them."""

    worker_script = WORKER  # another benchmark's sessions (bench/noise.py) start its own

    def __init__(self, workload: str, n: int, seed: int, engines: Sequence[str]) -> None:
        self.workload, self.n, self.seed = workload, n, seed
        self.result = SizeResult(workload, n, {e: EngineResult(e) for e in engines}, 0)
        self.workers: dict[str, WorkerProcess] = {}
        self.calls = 0
        self.num_parameters = 0
        self.last_params: dict[str, Any] = {}

    @property
    def alive(self) -> list[str]:
        return [e for e in self.result.engines if e in self.workers]

    def fail(self, engine: str, err: WorkerFailed) -> None:
        r = self.result.engines[engine]
        r.status, r.error = err.status, str(err)
        if err.status == "failed":
            self.result.problems.append(f"{self.workload} n={self.n} {engine} failed: {err}")
        log(f"{self.workload} n={self.n} {engine}: {err.status}: {err}")
        worker = self.workers.pop(engine, None)
        if worker is not None:
            worker.kill()

    def start(self, timeout: float) -> None:
        for engine in self.result.engines:
            self.workers[engine] = WorkerProcess(engine, self.worker_script)
        warm = {
            "op": "hello",
            "workload": self.workload,
            "seed": self.seed,
            "params": round_params(self.workload, WARM_QUBITS, self.seed, 0, 2 * WARM_QUBITS * 8),
        }
        for engine in list(self.workers):  # every worker's imports done before any warm-up
            try:
                self.workers[engine].request({"op": "ready"}, timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
        for engine in list(self.workers):
            try:
                hello = self.workers[engine].request(warm, timeout)
                r = self.result.engines[engine]
                r.version, r.warmup_seconds = hello["version"], hello["warmup_seconds"]
            except WorkerFailed as e:
                self.fail(engine, e)
        for engine in self.alive:  # one at a time: setup is timed
            req = {"op": "setup", "workload": self.workload, "n": self.n, "seed": self.seed}
            try:
                reply = self.workers[engine].request(req, timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
                continue
            r = self.result.engines[engine]
            r.setup_seconds, r.path = reply["setup_seconds"], reply["path"]
            self.num_parameters = max(self.num_parameters, reply["num_parameters"])
            self.result.extras["num_parameters"] = self.num_parameters

    def call_round(self, order: Sequence[str], timeout: float, first: bool = False) -> dict:
        """One call per engine in ``order`` on the next parameters; checked; times returned."""
        params = round_params(self.workload, self.n, self.seed, self.calls, self.num_parameters)
        self.calls += 1
        self.last_params = params
        values: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for engine in order:
            if engine not in self.workers:
                continue
            req = {"op": "eval", "params": params, "reset_peak": first}
            try:
                reply = self.workers[engine].request(req, timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
                continue
            values[engine], seconds[engine] = reply["value"], reply["seconds"]
        devs, problems = check_call(self.workload, self.n, values, f" (call {self.calls})")
        self.result.problems.extend(problems)
        for engine, dev in devs.items():
            r = self.result.engines[engine]
            r.deviation, r.value = max(r.deviation, dev), values[engine]
        return seconds

    def share_of_others(self, before: CpuSample) -> tuple[float, CpuSample]:
        now = cpu_sample([w.pid for w in self.workers.values()])
        return other_share(before, now, CPUS, HZ), now

    def run_rounds(self, plan: SizePlan) -> None:
        """Up to ``plan.rounds`` rounds, fewer when the next one would overrun the size's time
        budget (then the rounds done are the plan, for the publishing rule)."""
        res = self.result
        res.planned_rounds = plan.rounds
        started = time.monotonic()
        index = 0
        while index < plan.rounds and self.workers:
            retries = 0
            while True:
                # one window from a short quiet wait before the round to its end: a round of
                # milliseconds alone would be a few clock ticks, too coarse to judge
                start = cpu_sample([w.pid for w in self.workers.values()])
                time.sleep(PRE_WINDOW)
                seconds = self.call_round(rotation(self.alive, index), plan.timeout)
                share, _ = self.share_of_others(start)
                verdict = round_verdict(share, retries)
                if verdict == "retry":
                    retries += 1
                    res.discarded_rounds += 1
                    log(f"{self.workload} n={self.n}: round discarded ({share:.0%} other CPU)")
                    continue
                for engine, t in seconds.items():
                    r = res.engines[engine]
                    (r.times if verdict == "keep" else r.busy_times).append(t)
                if verdict == "keep":
                    res.quiet_rounds += 1
                else:
                    res.busy_rounds += 1
                    res.busy_shares.append(share)
                break
            index += 1
            spent = time.monotonic() - started
            if index < plan.rounds and spent * (index + 1) / index > plan.budget:
                log(f"{self.workload} n={self.n}: {index} rounds, the size's {plan.budget:.0f} s")
                res.planned_rounds = index
                break

    def run_contended(self, plan: SizePlan) -> None:
        """The same rounds with one competing busy process on the machine."""
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            for index in range(plan.contended_rounds):
                start = cpu_sample([w.pid for w in self.workers.values()])
                seconds = self.call_round(rotation(self.alive, index), plan.timeout)
                share, _ = self.share_of_others(start)
                self.result.contended_shares.append(share)
                for engine, t in seconds.items():
                    self.result.engines[engine].contended_times.append(t)
        finally:
            hog.kill()
            hog.wait(10)

    def finish(self, plan: SizePlan) -> None:
        for engine in self.alive:
            try:
                mem = self.workers[engine].request({"op": "memory"}, plan.timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
                continue
            r = self.result.engines[engine]
            r.base_kib, r.peak_kib, r.peak_reset = (
                mem["base_kib"],
                mem["peak_kib"],
                mem["peak_reset"],
            )
        for engine in self.alive if plan.sample else ():
            req = {"op": "sample", "params": self.last_params}
            try:
                reply = self.workers[engine].request(req, plan.timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
                continue
            self.result.engines[engine].sample_seconds = reply["seconds"]
        if plan.grover_norm_iterations and "qiz" in self.workers:
            req = {"op": "grover_norm", "n": self.n, "iterations": plan.grover_norm_iterations}
            try:
                self.result.extras["grover_norm"] = self.workers["qiz"].request(req, 3600)
            except WorkerFailed as e:
                self.result.problems.append(f"grover norm check failed: {e}")

    def close(self) -> None:
        for worker in self.workers.values():
            worker.kill()
        self.workers.clear()


def measure_size(
    workload: str, n: int, seed: int, engines: Sequence[str], plan: SizePlan
) -> SizeResult:
    """Workers up, setup, first calls, rounds (and contended rounds), memory; workers killed."""
    session = Session(workload, n, seed, engines)
    try:
        session.start(plan.timeout)
        first = session.call_round(rotation(session.alive, 0), plan.timeout, first=True)
        for engine, t in first.items():
            r = session.result.engines[engine]
            r.first_seconds, r.first_value = t, r.value
        session.run_rounds(plan)
        if plan.contended_rounds:
            session.run_contended(plan)
        session.finish(plan)
    finally:
        session.close()
    return session.result


def one_shot(engine: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request on a fresh worker (e.g. the memory bandwidth), killed afterwards."""
    worker = WorkerProcess(engine)
    try:
        return worker.request(req, timeout)
    finally:
        worker.kill()
