"""Quantum machine learning benchmark: our batched state-vector path against PennyLane-Lightning
(lightning.qubit, the adjoint method) on the same VQC and the same fidelity kernel, and the
quantum models beside classical baselines on data sets scikit-learn ships.

    python bench/ml.py [--quick] [--busy-ok]

Peer comparison: for each workload (``ml-epoch``: one full-batch loss and gradient of a data
re-uploading VQC over 100 samples; ``ml-kernel``: a 100 x 100 fidelity kernel matrix of the
fixed re-uploading map, whose RY and CZ gates let ours run real float64 states; ``ml-kernel-zz``:
the same matrix on the ZZ feature map, whose RZ and RZZ gates put ours on its complex path like
Lightning: the kernel row that does not favour us; all in ``bench/ml_worker.py``) and
n = 8, 10, 12 qubits, each engine runs in its own persistent worker, rounds alternate the
engines on fresh inputs that both share, busy rounds are discarded and re-run:
``bench/quantum_rounds.py``'s protocol, unchanged, with this benchmark's worker. Every call's
answers must agree to 1e-8 (the loss and every gradient component; every kernel entry), or
the run prints the disagreement and exits non-zero before any table.

Classical baselines: ``qiz.ml.experiment`` (what ``qiz ml train`` runs): QSVC and VQC beside
logistic regression, an RBF SVM and an MLP, accuracy and training and inference time. Those
times are one fit and one predict each, in this process, after a cross-validation that warms
everything up.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, check_quiet, machine
from bench.ml_worker import BATCH, LAYERS, PATHS, WORKLOADS
from bench.quantum_rounds import Session, SizePlan, SizeResult, log, publishable, rotation

HEADING = "\n## Quantum machine learning (`bench/ml.py`)\n"
WORKER = Path(__file__).resolve().parent / "ml_worker.py"
SEED = 20261204
ENGINES = ("qiz", "lightning")
SIZES = (8, 10, 12)
QUICK_SIZES = (4, 6)
EXPECTED_SPEEDUP = 5.0  # issue 22: ours at least 5x Lightning per epoch and per kernel matrix
LABELS = {
    "ml-epoch": "VQC epoch (loss + gradient)",
    "ml-kernel": "kernel matrix",
    "ml-kernel-zz": "kernel matrix, ZZ map",
}
# (data set, model, qubits, layers, folds)
BASELINES = (
    ("breast_cancer", "qsvc", 8, 2, 5),
    ("breast_cancer", "vqc", 8, 2, 5),
    ("wine", "qsvc", 8, 2, 5),
    ("wine", "vqc", 8, 2, 5),
    ("digits", "qsvc", 8, 2, 5),
)
QUICK_BASELINES = (("iris", "qsvc", 2, 1, 2), ("iris", "vqc", 2, 1, 2))


class MLSession(Session):
    """``bench/quantum_rounds.py``'s session on this benchmark's workers."""

    worker_script = WORKER


def measure_size(workload: str, n: int, engines: tuple[str, ...], plan: SizePlan) -> SizeResult:
    """As ``quantum_rounds.measure_size``, on ``MLSession``: workers up, setup, the first
    calls (kept apart), the alternating rounds, memory; workers stopped."""
    session = MLSession(workload, n, SEED, engines)
    try:
        session.start(plan.timeout)
        first = session.call_round(rotation(session.alive, 0), plan.timeout, first=True)
        for engine, t in first.items():
            r = session.result.engines[engine]
            r.first_seconds, r.first_value = t, r.value
        session.run_rounds(plan)
        session.finish(plan)
    finally:
        session.close()
    return session.result


class Disagreement(SystemExit):
    """The engines' answers differ: no figure is published."""


@dataclass
class Results:
    sizes: list[SizeResult] = field(default_factory=list)
    baselines: list[Any] = field(default_factory=list)  # qiz.ml.experiment.Report
    load: float = 0.0
    quick: bool = False


def refuse_disagreements(sizes: list[SizeResult]) -> None:
    """Exit non-zero, loudly, when any call's answers differed or an engine failed."""
    problems = [p for r in sizes for p in r.problems]
    for r in sizes:  # a worker that ran another benchmark's workload is no measurement
        for engine, e in r.engines.items():
            if e.status == "ok" and e.path != PATHS.get((engine, r.workload)):
                problems.append(f"{r.workload} n={r.n} {engine} ran {e.path!r}, not this bench")
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        raise Disagreement(f"{len(problems)} problem(s): no figures are published")


def median_ms(times: list[float]) -> float | None:
    return statistics.median(times) * 1e3 if times else None


def engine_ms(size: SizeResult, engine: str) -> tuple[float | None, bool]:
    """The engine's median call in ms, and whether it is from busy rounds only."""
    r = size.engines.get(engine)
    if r is None or r.status != "ok":
        return None, False
    if r.times:
        return median_ms(r.times), False
    return median_ms(r.busy_times), True


def ratio(size: SizeResult) -> float | None:
    """Lightning's median over ours (> 1: ours is faster)."""
    ours, _ = engine_ms(size, "qiz")
    peer, _ = engine_ms(size, "lightning")
    if ours is None or peer is None or ours == 0:
        return None
    return peer / ours


def figures(results: Results) -> list[Figure]:
    out = []
    for size in results.sizes:
        for engine in ENGINES:
            ms, busy = engine_ms(size, engine)
            if ms is None:
                continue
            r = size.engines[engine]
            extra = {"engine": engine, "version": r.version, "path": r.path, "busy": busy,
                     "deviation": r.deviation, "first_ms": r.first_seconds * 1e3}  # fmt: skip
            if engine == "qiz":
                extra["lightning_over_ours"] = ratio(size)
            out.append(Figure("ml", f"{LABELS[size.workload]} n={size.n} {engine}", ms, "ms",
                              extra=extra))  # fmt: skip
    for report in results.baselines:
        for row in report.rows:
            extra = {
                "train_s": row.train_s,
                "predict_s": row.predict_s,
                "cv_accuracy_mean": row.cv_accuracy_mean,
                "parameters": row.parameters,
                "qubits": report.qubits,
            }
            name = f"{report.dataset} {row.name} ({report.model} run)"
            out.append(Figure("ml-baselines", name, row.accuracy, "accuracy",
                              higher_is_better=True, extra=extra))  # fmt: skip
    return out


def run(quick: bool = False, busy_ok: bool = False) -> Results:
    """Measure everything; refuse to go on when the engines disagree."""
    results = Results(load=check_quiet(quick, busy_ok), quick=quick)
    for workload in WORKLOADS:
        for n in QUICK_SIZES if quick else SIZES:
            plan = SizePlan(rounds=3 if quick else 7, timeout=300.0 if quick else 900.0,
                            budget=60.0 if quick else 180.0)  # fmt: skip
            log(f"{workload} n={n}: {', '.join(ENGINES)} ({plan.rounds} rounds)")
            size = measure_size(workload, n, ENGINES, plan)
            results.sizes.append(size)
            refuse_disagreements([size])
            ours, peer = engine_ms(size, "qiz")[0], engine_ms(size, "lightning")[0]
            x = ratio(size)
            log(f"{workload} n={n}: ours {ours} ms, lightning {peer} ms, ratio {x}")
    from qiz.ml import experiment

    for dataset, model, qubits, layers, folds in QUICK_BASELINES if quick else BASELINES:
        log(f"baselines: {dataset} {model} {qubits} qubits {layers} layers")
        results.baselines.append(
            experiment.run(dataset, model, qubits=qubits, layers=layers, folds=folds, seed=0)
        )
    for f in figures(results):
        f.emit()
    return results


def our_states(size: SizeResult) -> str:
    """The state type our engine's worker reported for this row (its path label says it)."""
    r = size.engines.get("qiz")
    if r is None or r.status != "ok":
        return "-"
    return "real (float64)" if "(float64)" in r.path else "complex (complex128)"


def _fmt(ms: float | None, busy: bool = False) -> str:
    if ms is None:
        return "-"
    return f"{ms:,.2f}" + (" (busy)" if busy else "")


def peer_table(results: Results) -> str:
    lines = [
        "| workload | qubits | our states | ours (ms) | Lightning adjoint (ms) | "
        f"Lightning / ours | expected >= {EXPECTED_SPEEDUP:.0f}x | max deviation | quiet rounds |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for size in results.sizes:
        ours, ours_busy = engine_ms(size, "qiz")
        peer, peer_busy = engine_ms(size, "lightning")
        x = ratio(size)
        ok = publishable(size.quiet_rounds, size.planned_rounds)
        lightning = size.engines.get("lightning")
        status = lightning.status if lightning is not None else "-"
        peer_text = _fmt(peer, peer_busy) if status == "ok" else status
        if x is None:
            ratio_text, held = "-", "-"
        elif not ok:
            ratio_text, held = f"({x:.2f}x, busy)", "not judged (busy)"
        else:
            ratio_text = f"{x:.2f}x"
            held = "yes" if x >= EXPECTED_SPEEDUP else "no"
        dev = max((r.deviation for r in size.engines.values() if r.status == "ok"), default=0.0)
        lines.append(
            f"| {LABELS[size.workload]} | {size.n} | {our_states(size)} | "
            f"{_fmt(ours, ours_busy)} | {peer_text} | {ratio_text} | {held} | {dev:.1e} | "
            f"{size.quiet_rounds}/{size.planned_rounds} |"
        )
    return "\n".join(lines)


def baseline_table(results: Results) -> str:
    lines = [
        "| data set | qubits, layers | model | parameters | test accuracy | k-fold accuracy | "
        "training (ms) | inference (ms) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    seen: set[tuple[str, str]] = set()
    for report in results.baselines:
        for row in report.rows:
            key = (report.dataset, row.name)
            if row.kind == "classical" and key in seen:
                continue  # the same baseline, refitted beside another quantum model
            seen.add(key)
            lines.append(
                f"| {report.dataset} | {report.qubits}, {report.layers} | {row.name} | "
                f"{row.parameters} | {row.accuracy:.1%} | {row.cv_accuracy_mean:.1%} ± "
                f"{row.cv_accuracy_std:.1%} | {row.train_s * 1e3:,.1f} | "
                f"{row.predict_s * 1e3:,.2f} |"
            )
    return "\n".join(lines)


def versions(results: Results) -> str:
    for size in results.sizes:
        r = size.engines.get("lightning")
        if r is not None and r.status == "ok":
            return f"pennylane-lightning {r.version}"
    return "pennylane-lightning not run"


def notes(results: Results) -> str:
    ratios = {(s.workload, s.n): ratio(s) for s in results.sizes}
    measured = "; ".join(
        f"{LABELS[w].split(' (')[0]} n={n}: {x:.1f}x" for (w, n), x in ratios.items() if x
    )
    wins = []
    accurate = faster = 0
    for report in results.baselines:
        quantum = report.rows[0]
        classical = [r for r in report.rows if r.kind == "classical"]
        best = max(classical, key=lambda r: r.accuracy)
        fastest = min(classical, key=lambda r: r.train_s)
        accurate += best.accuracy >= quantum.accuracy
        faster += fastest.train_s < quantum.train_s
        wins.append(
            f"{report.dataset} {report.model} {quantum.accuracy:.1%} in "
            f"{quantum.train_s * 1e3:,.0f} ms against {best.name} {best.accuracy:.1%} "
            f"(fastest baseline: {fastest.name}, {fastest.train_s * 1e3:,.0f} ms)"
        )
    runs = len(results.baselines)
    return f"""
Notes:
- {BATCH} samples per call, data re-uploading circuits of {LAYERS} layers (RY encodings,
  trainable RY and RZ, a CZ ladder; one feature per qubit) and the fixed map of the same shape
  for the kernel. Ours: `qiz.ml.fused` (each sample's whole circuit in one numba call while its
  state stays in cache, samples over the threads, one adjoint sweep); Lightning
  ({versions(results)}): one tape per sample, all of them in one device call, adjoint
  derivatives, and the same chain rule to the parameters. Building Lightning's tapes is not
  timed (as in `bench/quantum.py`). Every call's answers agreed to 1e-8 or the run stopped.
- State types: both engines simulate complex128 states for the VQC (its RZ rotations make
  amplitudes complex). The kernel's fixed map has only RY and CZ gates, which keep amplitudes
  real: ours computes its states in float64 and K = (S S^T)^2 by one real symmetric product
  (syrk), the path any real map takes in `qiz.ml.fidelity` (maps with RZ or ZZ rotations take
  the complex one). Lightning returns complex128 states; their Gram product is our complex
  code, four times the multiplications of the real one (PennyLane has no real-state mode).
  That favours us, so the "kernel matrix" rows are not a like-for-like comparison.
- The "kernel matrix, ZZ map" rows are the kernel workload that does NOT favour us: the same
  samples, sizes and matrix on our ZZ feature map ({LAYERS} repetitions of H, RZ(2 x_j) and
  RZZ(2 (pi - x_a)(pi - x_b)) on neighbouring qubits), whose RZ and RZZ gates make amplitudes
  complex, so ours takes its complex path: complex128 states and the same complex Gram code
  that Lightning's states go through. Lightning runs the same gates (our rzz(t) =
  exp(-i t/2 Z Z) is `qml.IsingZZ(t)`, the same angle), and every entry agreed to 1e-8. The
  "our states" column is the path our worker reported running.
- Expected (issue 22): ours at least {EXPECTED_SPEEDUP:.0f}x Lightning. Measured: {measured or "-"}.
  Rows marked busy were measured while other processes held the CPUs; their ratios are shown
  in parentheses and not judged.
- Where classical models win: a classical baseline was at least as accurate as the quantum
  model in {accurate} of {runs} runs and trained faster in {faster} of {runs}:
  {"; ".join(wins) or "-"}. Simulating n qubits costs 2^n amplitudes per sample where logistic
  regression or an SVM costs n numbers, so a simulated quantum model is at best close to them
  in time (a QSVC on a few qubits and a small set) and far behind as qubits, samples or
  training iterations grow (the VQC); the whitepaper's "5x faster training, 3x faster
  inference, 97% against 95%" is not what a classical simulator shows (`qiz ml train` prints
  the same comparison for one data set). The training and inference times of this table are
  one fit and one predict each (after a cross-validation that warms everything up).
- Machine: {machine()}; 1-minute load average at the start {results.load:.2f}.
"""


def section(results: Results) -> str:
    return (
        HEADING
        + "\nOurs against PennyLane-Lightning on the same models and inputs:\n\n"
        + peer_table(results)
        + "\n\nQuantum models beside classical baselines (`qiz.ml.experiment`, one fit each):\n\n"
        + baseline_table(results)
        + "\n"
        + notes(results)
    )


def main() -> None:
    quick = "--quick" in sys.argv
    results = run(quick, "--busy-ok" in sys.argv)
    print(section(results))


if __name__ == "__main__":
    main()
