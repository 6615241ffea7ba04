"""Noisy simulation benchmark: our quantum trajectories against Qiskit Aer's statevector method
with the same noise model, at 16, 20 and 24 qubits (``bench/noise_peers.py``: the workloads,
the one noise model and the adapters).

For each (workload, n), one persistent worker per engine (``bench/noise_worker.py``, driven by
``bench/quantum_rounds.py``'s ``Session``: the same thread environment, a warm-up at 6 qubits,
each engine's first full-size call timed and kept apart, rounds in an order that rotates, busy
rounds re-run) runs a batch of shots per call with a fresh simulator seed every call. Every
call's counts are pooled per engine, and the pooled samples are checked against Aer's:

- every <Z_i> and every <Z_i Z_j> on the circuit's 2-qubit gate pairs, by a two-sample z test
  (the pooled standard error), Bonferroni over the observables at family-wise ``DELTA``;
- the total variation distance on the marginal of qubits 0..3 against the bound two correct
  samplers stay within with probability 1 - ``DELTA`` (docs/noise.md, "The statistics").

A disagreement is printed loudly and the run exits non-zero. The same observables are also
compared with the noiseless values (our exact state vector): a large z there says the noise is
resolved at this shot count, so the agreement means something.

    python bench/noise.py [--quick] [--busy-ok] [--only qaoa,random,random-noisy]
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, check_quiet, machine
from bench.noise_peers import ENGINES, WORKLOADS, gates, pairs
from bench.quantum_rounds import (
    BUSY_SHARE,
    EngineResult,
    Session,
    SizePlan,
    WorkerFailed,
    log,
    publishable,
    rotation,
)

SEED = 20261204
NOISE_WORKER = Path(__file__).resolve().parent / "noise_worker.py"
DELTA = 1e-4  # family-wise false-alarm probability of one (workload, n, engine) check
REFERENCE = "aer"  # every engine's pooled sample is compared with this one's
MARGINAL = 4  # qubits 0..MARGINAL-1: the marginal whose TVD is checked


@dataclass(frozen=True)
class Plan:
    """Shots per call and timed rounds at one size (each engine also makes one first call)."""

    shots: int
    rounds: int


# The full run fits in ~5 minutes on 2 cores: the shots per call shrink as a trajectory's cost
# grows 16x per 4 qubits (at 24 qubits one trajectory of the random circuit took ~12-24 s here,
# a pass over a 256 MiB state per gate and per non-unitary channel).
PLANS = {16: Plan(shots=100, rounds=2), 20: Plan(shots=10, rounds=2), 24: Plan(shots=2, rounds=1)}
QUICK_PLANS = {8: Plan(shots=200, rounds=2)}
# random-noisy (nearly every shot its own trajectory) only where a batch stays affordable
SIZES = {"qaoa": (16, 20, 24), "random": (16, 20, 24), "random-noisy": (16,)}
RUN_BUDGET = 5 * 60.0  # seconds the full run should take on a quiet 2-core machine
CALL_CAP = 45.0  # seconds a call may be projected to take (from the size before) in a full run
LAST: dict[tuple[str, str], tuple[int, float]] = {}  # (workload, engine) -> (n, s per shot)


def skip_reason(workload: str, engine: str, n: int, plan: Plan, quick: bool) -> str:
    """Why an engine does not run at this size ('' when it does)."""
    if quick:
        return ""
    if engine == "aer-branching" and n >= 24:
        return (
            f"dropped at n={n} to keep the run near {RUN_BUDGET / 60:.0f} minutes: with "
            f"{plan.shots} shots a call there is little to share; its ratio is in the n=20 row"
        )
    last = LAST.get((workload, engine))
    if last is not None:
        projected = last[1] * 2.0 ** (n - last[0]) * plan.shots  # 2x per qubit, per shot
        if projected > CALL_CAP:
            return (
                f"projected {projected:.0f} s a call from its {last[1]:.2f} s a shot at "
                f"n={last[0]}: over the {CALL_CAP:.0f} s a call this run allows"
            )
    return ""


# ----------------------------------------------------------------------------- statistics


def expectations(
    counts: dict[str, int], n: int, observables: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """<prod_{q in O} Z_q> for each observable O, from counts keyed by bitstrings (bit 0
    rightmost)."""
    total = sum(counts.values())
    out = np.zeros(len(observables))
    for key, count in counts.items():
        bits = [int(key[n - 1 - q]) for q in range(n)]
        for k, obs in enumerate(observables):
            out[k] += count * (1 - 2 * (sum(bits[q] for q in obs) & 1))
    return out / max(total, 1)


def ideal_expectations(
    workload: str, n: int, seed: int, observables: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """The noiseless values, exactly, from our state vector."""
    from qiz.quantum.core.circuit import Circuit
    from qiz.quantum.core.statevector import statevector

    circuit = Circuit(n, 0)
    for name, qubits, params in gates(workload, n, seed):
        circuit.append(name, qubits, params)
    probs = (np.abs(statevector(circuit)) ** 2).reshape((2,) * n)  # axis n-1-q is qubit q
    out = []
    for obs in observables:
        axes = tuple(n - 1 - q for q in range(n) if q not in obs)
        marginal = probs.sum(axis=axes)  # remaining axes in decreasing qubit order
        sign = np.ones(1)
        for _ in obs:
            sign = np.multiply.outer(sign, np.array([1.0, -1.0]))
        out.append(float((marginal * sign.reshape(marginal.shape)).sum()))
    return np.array(out)


def z_scores(m1: np.ndarray, n1: int, m2: np.ndarray, n2: int) -> np.ndarray:
    """Two-sample z of each difference of means of +-1 variables, with the pooled standard
    error (the usual two-proportion test): 0 where both samples are all one value."""
    pooled = (m1 * n1 + m2 * n2) / (n1 + n2)
    se = np.sqrt(np.clip(1 - pooled**2, 0.0, None) * (1 / n1 + 1 / n2))
    diff = np.abs(m1 - m2)
    return np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)


def z_against_exact(m: np.ndarray, n: int, exact: np.ndarray) -> np.ndarray:
    se = np.sqrt(np.clip(1 - exact**2, 1e-12, None) / n)
    return np.abs(m - exact) / se


def z_critical(observables: int, delta: float = DELTA) -> float:
    """Bonferroni: each of ``observables`` two-sided tests at delta / observables."""
    return NormalDist().inv_cdf(1 - delta / (2 * max(observables, 1)))


def marginal(counts: dict[str, int], n: int, qubits: int) -> dict[str, int]:
    out: Counter[str] = Counter()
    for key, count in counts.items():
        out[key[n - qubits :]] += count
    return dict(out)


def tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def tvd_bound(n1: int, n2: int, outcomes: int, delta: float = DELTA) -> float:
    """docs/noise.md: eps(N, K, delta/2) for each sample, added."""

    def eps(count: int) -> float:
        return math.sqrt((outcomes * math.log(2) + math.log(2 / delta)) / (2 * count))

    return eps(n1) + eps(n2)


# ----------------------------------------------------------------------------- rounds


@dataclass
class Pooled:
    counts: Counter[str] = field(default_factory=Counter)
    shots: int = 0
    states: list[int] = field(default_factory=list)


class NoiseSession(Session):
    """``Session`` on the noise workers: a call is a batch of shots with a fresh seed, whose
    counts are pooled per engine (every call's, the first and any re-run busy round's included:
    each is an independent sample of the same distribution)."""

    worker_script = NOISE_WORKER

    def __init__(self, workload: str, n: int, engines: Sequence[str], shots: int) -> None:
        super().__init__(workload, n, SEED, engines)
        self.shots = shots
        self.pooled = {e: Pooled() for e in engines}

    def call_round(self, order: Sequence[str], timeout: float, first: bool = False) -> dict:
        seconds: dict[str, float] = {}
        for k, engine in enumerate(order):
            if engine not in self.workers:
                continue
            seed = int(np.random.default_rng([SEED, self.n, self.calls, k]).integers(1 << 31))
            req = {"op": "eval", "params": {"shots": self.shots, "seed": seed}}
            try:
                reply = self.workers[engine].request(req, timeout)
            except WorkerFailed as e:
                self.fail(engine, e)
                continue
            seconds[engine] = reply["seconds"]
            pool = self.pooled[engine]
            pool.counts.update(reply["counts"])
            pool.shots += self.shots
            if reply.get("states") is not None:
                pool.states.append(int(reply["states"]))
        self.calls += 1
        return seconds


@dataclass
class Check:
    engine: str
    shots: int
    max_z: float
    z_critical: float
    tvd: float
    tvd_bound: float
    z_vs_ideal: float

    @property
    def agrees(self) -> bool:
        return self.max_z <= self.z_critical and self.tvd <= self.tvd_bound


def check(workload: str, n: int, pooled: dict[str, Pooled]) -> tuple[list[Check], list[str]]:
    """Each engine's pooled sample against the reference engine's (and against the noiseless
    values); a loud message per disagreement."""
    observables = [(q,) for q in range(n)] + list(pairs(workload, n, SEED))
    ideal = ideal_expectations(workload, n, SEED, observables)
    crit = z_critical(len(observables))
    ran = {e: p for e, p in pooled.items() if p.shots}
    if not ran:
        return [], []
    ref_name = REFERENCE if REFERENCE in ran else next(iter(ran))
    ref = ran[ref_name]
    ref_m = expectations(ref.counts, n, observables)
    out, problems = [], []
    k = min(MARGINAL, n)
    for engine, pool in ran.items():
        m = expectations(pool.counts, n, observables)
        z_ref = float(z_scores(m, pool.shots, ref_m, ref.shots).max())
        distance = tvd(marginal(pool.counts, n, k), marginal(ref.counts, n, k))
        bound = tvd_bound(pool.shots, ref.shots, 1 << k)
        z_ideal = float(z_against_exact(m, pool.shots, ideal).max())
        c = Check(engine, pool.shots, z_ref, crit, distance, bound, z_ideal)
        out.append(c)
        if engine != ref_name and not c.agrees:
            problems.append(
                f"DISAGREEMENT noise {workload} n={n}: {engine} vs {ref_name}: max z {z_ref:.2f} "
                f"(limit {crit:.2f}), TVD of qubits 0..{k - 1} {distance:.3f} "
                f"(bound {bound:.3f}), {pool.shots} vs {ref.shots} shots"
            )
    return out, problems


@dataclass
class SizeRun:
    workload: str
    n: int
    plan: Plan
    session: NoiseSession
    checks: list[Check]
    problems: list[str]
    gate_count: int


def measure(
    workload: str, n: int, plan: Plan, engines: Sequence[str], timeout: float, quick: bool = False
) -> SizeRun:
    """Workers up (warm-up, setup), first calls, rounds, memory; workers killed; the check."""
    skipped = {e: skip_reason(workload, e, n, plan, quick) for e in engines}
    running = [e for e in engines if not skipped[e]]
    session = NoiseSession(workload, n, running, plan.shots)
    size_plan = SizePlan(rounds=plan.rounds, timeout=timeout, budget=1e9)
    try:
        session.start(timeout)
        # the first calls in the order the last round of a cycle takes, so that with one timed
        # round (24 qubits) each engine still goes first once
        first = session.call_round(rotation(session.alive, -1), timeout, first=True)
        for engine, t in first.items():
            session.result.engines[engine].first_seconds = t
        session.run_rounds(size_plan)
        session.finish(size_plan)
    finally:
        session.close()
    for engine, r in session.result.engines.items():
        times = r.times or r.busy_times
        if r.status == "ok" and times:
            LAST[(workload, engine)] = (n, statistics.median(times) / plan.shots)
    for engine in engines:
        if skipped[engine]:
            session.result.engines[engine] = EngineResult(
                engine, status="skipped", error=skipped[engine]
            )
            session.pooled[engine] = Pooled()
    session.result.engines = {e: session.result.engines[e] for e in engines}
    checks, problems = check(workload, n, session.pooled)
    problems = session.result.problems + problems
    return SizeRun(workload, n, plan, session, checks, problems, len(gates(workload, n, SEED)))


# ----------------------------------------------------------------------------- figures


def figures_of(run: SizeRun) -> list[Figure]:
    res = run.session.result
    quiet = publishable(res.quiet_rounds, res.planned_rounds)
    med: dict[str, float] = {}
    for engine, r in res.engines.items():
        times = r.times if quiet else r.times + r.busy_times
        if r.status == "ok" and times:
            med[engine] = statistics.median(times)
    checks = {c.engine: c for c in run.checks}
    ours = med.get("qiz")
    out = []
    for engine, r in res.engines.items():
        c = checks.get(engine)
        pool = run.session.pooled[engine]
        value = med.get(engine, math.nan)
        ratio = value / ours if ours and engine != "qiz" and engine in med and quiet else None
        extra: dict[str, Any] = {
            "workload": run.workload,
            "n": run.n,
            "engine": engine,
            "version": r.version,
            "status": r.status,
            "error": r.error,
            "path": r.path,
            "gates": run.gate_count,
            "shots_per_call": run.plan.shots,
            "rounds": len(r.times) + len(r.busy_times),
            "quiet": quiet,
            "busy_share": statistics.mean(res.busy_shares) if res.busy_shares else 0.0,
            "first_seconds": r.first_seconds,
            "warmup_seconds": r.warmup_seconds,
            "setup_seconds": r.setup_seconds,
            "peak_mib": max(0, r.peak_kib - r.base_kib) / 1024,
            "states_per_call": statistics.median(pool.states) if pool.states else None,
            "pooled_shots": pool.shots,
            "ratio_vs_qiz": ratio,
            "max_z": c.max_z if c else None,
            "z_critical": c.z_critical if c else None,
            "tvd": c.tvd if c else None,
            "tvd_bound": c.tvd_bound if c else None,
            "z_vs_ideal": c.z_vs_ideal if c else None,
            "agrees": c.agrees if c else None,
        }
        out.append(Figure("noise", f"{run.workload} n={run.n} {engine}", value, "s", extra=extra))
    return out


def markdown(figures: list[Figure]) -> str:
    lines = [
        "| workload | n | gates | engine | shots/call | s per call | ms per shot | states/call "
        "| time vs qiz | max z vs Aer (limit) | TVD q0-3 (bound) | z vs noiseless |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        x = f.extra
        if x.get("engine") is None:
            continue
        if x["status"] != "ok" or math.isnan(f.value):
            lines.append(
                f"| {x['workload']} | {x['n']} | {x['gates']} | {x['engine']} | | "
                f"{x['status']}: {x['error'][:300]} | | | | | | |"
            )
            continue
        ratio = (
            ""
            if x["engine"] == "qiz"
            else (f"{x['ratio_vs_qiz']:.2f}x" if x["ratio_vs_qiz"] else "not published: busy")
        )
        states = f"{x['states_per_call']:.0f}" if x["states_per_call"] is not None else ""
        z = f"{x['max_z']:.2f} ({x['z_critical']:.2f})" if x["max_z"] is not None else ""
        t = f"{x['tvd']:.3f} ({x['tvd_bound']:.3f})" if x["tvd"] is not None else ""
        if x["engine"] == REFERENCE:
            z = t = "reference"
        zi = f"{x['z_vs_ideal']:.1f}" if x["z_vs_ideal"] is not None else ""
        busy = "" if x["quiet"] else " (busy)"
        lines.append(
            f"| {x['workload']} | {x['n']} | {x['gates']} | {x['engine']} | "
            f"{x['shots_per_call']} | {f.value:.3f}{busy} | "
            f"{1e3 * f.value / x['shots_per_call']:.3g} | {states} | {ratio} | {z} | {t} | {zi} |"
        )
    return "\n".join(lines)


def paths(figures: list[Figure]) -> str:
    seen: dict[str, str] = {}
    for f in figures:
        x = f.extra
        if x.get("path") and x["engine"] not in seen:
            seen[x["engine"]] = f"  - `{x['engine']}` ({x['version']}): {x['path']}"
    return "\n".join(seen[e] for e in ENGINES if e in seen)


NOTES = """
Notes:
- Every engine runs the same gate list and the same noise model: built once in Qiskit Aer
  (`bench/noise_peers.py`: depolarizing 5e-4 then thermal relaxation T1 = 100 us, T2 = 80 us,
  35 ns after every 1-qubit gate; 2-qubit depolarizing 5e-3 then thermal relaxation of both
  qubits, 300 ns, after every `rzz`/`cx`; readout 2 % (0 -> 1) and 4 % (1 -> 0)), imported into
  ours by `from_aer` and a round trip through our JSON format. `random-noisy` is the random
  circuit with every error 10x as likely.
- Shots per call (and timed rounds after the first call): {shots}. A 24-qubit trajectory
  costs a pass over a 256 MiB state per gate and per non-unitary channel, so the larger sizes
  take few shots to keep the whole run near 5 minutes; their accuracy columns are
  correspondingly weak (see "z vs noiseless").
- "s per call" is the median over the timed rounds (each engine's first full-size call is
  timed apart, after a warm-up at 6 qubits); every call has a fresh simulator seed. "time vs
  qiz" is the engine's time over ours: above 1, we are faster. "states/call" is the number of
  distinct trajectory states our simulator carried to the end (shots share a state until a
  channel's draw splits them).
- Accuracy: every call's counts are pooled per engine and compared with Aer's pooled counts:
  <Z_i> for every qubit and <Z_i Z_j> for every 2-qubit gate's pair by a two-sample z test,
  the limit Bonferroni-corrected over the observables at family-wise 1e-4; and the total
  variation distance of the qubits 0-3 marginal against the bound of docs/noise.md (the two
  samples of one distribution exceed it with probability at most 1e-4). "z vs noiseless" is the
  largest z of the engine's values against the exact noiseless ones: above the limit, the
  noise is resolved at this shot count.
- Code paths:
{paths}
- Why a trajectory of ours costs more than one of Aer's here: the imported thermal relaxation
  is a general Kraus channel for us (4 operators after a 1-qubit gate, 16 after a 2-qubit
  gate), so every trajectory computes the operators' probabilities from its state and applies
  the one drawn, passes over the state after every gate, where Aer samples its error as a
  mixture of circuits (identity, Z, reset) with fixed probabilities and mostly applies
  nothing. Shots that share a state pay that once, which is where we gain.
- A round during which other processes used more than {busy:.0%} of the CPUs is re-run (at
  most twice); a size whose rounds stayed busy publishes no ratio.
"""


def notes(figures: list[Figure], plans: dict[int, Plan]) -> str:
    shots = ", ".join(f"{p.shots} at n={n} ({p.rounds} timed)" for n, p in plans.items())
    return NOTES.format(shots=shots, paths=paths(figures), busy=BUSY_SHARE)


def run(
    quick: bool = False,
    busy_ok: bool = False,
    workloads: Sequence[str] = WORKLOADS,
    plans: dict[int, Plan] | None = None,
    engines: Sequence[str] = ENGINES,
) -> list[Figure]:
    """Measure everything; one JSON line per figure; exit non-zero on any disagreement."""
    load = check_quiet(quick, busy_ok)
    plans = plans or (QUICK_PLANS if quick else PLANS)
    timeout = 300.0 if quick else 900.0
    started = time.perf_counter()
    figures: list[Figure] = []
    problems: list[str] = []
    for workload in workloads:
        for n, plan in plans.items():
            if not quick and n not in SIZES[workload]:
                continue
            t0 = time.perf_counter()
            log(f"noise {workload} n={n}: {plan.shots} shots a call, {plan.rounds} rounds")
            size = measure(workload, n, plan, engines, timeout, quick)
            problems += size.problems
            for fig in figures_of(size):
                fig.emit()
                figures.append(fig)
            log(f"noise {workload} n={n}: done in {time.perf_counter() - t0:.0f} s")
    elapsed = time.perf_counter() - started
    if not quick and elapsed > RUN_BUDGET:
        log(f"WARNING: the noise benchmark took {elapsed:.0f} s, over its {RUN_BUDGET:.0f} s")
    wall = Figure("run", "noise benchmark wall time", elapsed, "s")
    wall.extra = {"load_average_1min": load, "quick": quick}
    wall.emit()
    figures.append(wall)
    if problems:
        bar = "!" * 78
        print(f"\n{bar}\n" + "\n".join(problems) + f"\n{bar}\n", file=sys.stderr, flush=True)
        print("\n" + markdown(figures), file=sys.stderr)
        raise SystemExit(1)
    return figures


HEADING = "\n## Noisy simulation: trajectories vs Aer (`bench/noise.py`)\n"


def section(figures: list[Figure], quick: bool = False) -> str:
    """The section of docs/benchmarks.md (heading included)."""
    plans = QUICK_PLANS if quick else PLANS
    wall = next((f.value for f in figures if f.group == "run"), math.nan)
    kind = "A --quick run (smoke test, not a measurement)" if quick else "Measured"
    return (
        HEADING
        + f"\n{kind} on {machine()}, {time.strftime('%Y-%m-%d')}; the run took "
        + f"{wall:.0f} s.\n\n"
        + markdown(figures)
        + "\n"
        + notes(figures, plans)
    )


def main() -> None:
    quick = "--quick" in sys.argv
    workloads: Sequence[str] = WORKLOADS
    if "--only" in sys.argv:
        workloads = tuple(sys.argv[sys.argv.index("--only") + 1].split(","))
        if not set(workloads) <= set(WORKLOADS):
            raise SystemExit(f"--only takes a comma-separated subset of {','.join(WORKLOADS)}")
    figures = run(quick, "--busy-ok" in sys.argv, workloads)
    print(section(figures, quick))


if __name__ == "__main__":
    main()
