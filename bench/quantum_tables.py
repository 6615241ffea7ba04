"""Figures, markdown tables and notes of the quantum benchmark (``bench/quantum.py``).

A row's time is the median of its quiet rounds; a ratio is printed only when the size had
enough quiet rounds (``quantum_rounds.publishable``), else the cell says the machine was busy
and how busy. Beside every time: passes over the state at the measured bandwidth, and the
floor, the fewest passes the algorithm needs (counted in ``floor_passes``).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness import Figure, machine
from bench.quantum_peers import (
    GROVER_ITERATIONS,
    QAOA_DEPTH,
    SAMPLE_SHOTS,
    THREADS,
    VQE_DEPTH,
    Y_FIELD,
    grover_optimal_iterations,
)
from bench.quantum_rounds import BUSY_SHARE, PRE_WINDOW, RETRIES, SizeResult, publishable

GROUPS = {
    "qaoa": f"QAOA MaxCut p={QAOA_DEPTH}, integer weights (one energy)",
    "qaoa-float": f"QAOA MaxCut p={QAOA_DEPTH}, float weights in [0.5, 1.5] (one energy)",
    "vqe": f"VQE TFIM, RY+CZ depth {VQE_DEPTH}, real amplitudes (energy + gradient)",
    "vqe-complex": f"VQE TFIM + {Y_FIELD} sum Y, general ansatz, complex (energy + gradient)",
    "grover-gates": f"Grover, the same gate-level circuit for all ({GROVER_ITERATIONS} iterations)",
    "grover-fused": "Grover, our fused mean-inversion path alone (not the peers' gate circuit)",
    "large": f"Large: QAOA p={QAOA_DEPTH} one energy, and {SAMPLE_SHOTS} shots",
}
LABELS = {
    "qiz": "qiz (ours)",
    "qiz-single": "qiz (ours, single)",
    "qokit": "QOKit (C fur)",
    "aer": "Qiskit Aer",
    "lightning": "PennyLane-Lightning",
    "qulacs": "Qulacs",
}
OURS = ("qiz", "qiz-single")


def floor_passes(workload: str, path: str, layers: int) -> float:
    """The fewest read+write passes over a complex128 state the algorithm needs; a read-only
    sweep counts 1/2. QAOA: 2 per layer (phase with the low-qubit mixer, then the high-qubit
    mixer) + 1/2 for <C> or for the sampling's read. VQE energy + adjoint gradient: one pass
    per layer forward, one for H|psi>, two per layer backward (psi and lambda). Grover: one per
    iteration. Halved where the amplitudes take 8 bytes (real float64, or single precision)."""
    if workload.startswith("qaoa") or workload.startswith("large"):
        passes = 2.0 * QAOA_DEPTH + 0.5
    elif workload.startswith("vqe"):
        passes = 3.0 * layers + 1
    else:
        passes = 1.0
    if "real" in path or "single precision" in path:
        passes /= 2
    return passes


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def row_figures(result: SizeResult, bandwidth: float) -> list[Figure]:
    """One figure per engine, then the contended and check figures of this size."""
    workload, n = result.workload, result.n
    state_bytes = (1 << n) * 16
    per = GROVER_ITERATIONS if workload.startswith("grover") else 1
    published = publishable(result.quiet_rounds, result.planned_rounds)
    busy_share = _median(result.busy_shares) or 0.0
    params = result.extras.get("num_parameters", 0)
    layers = VQE_DEPTH + 1 if params == 2 * n * (VQE_DEPTH + 1) else VQE_DEPTH
    times = {}
    for engine, r in result.engines.items():
        t = _median(r.times) if r.times else _median(r.busy_times)
        if r.status == "ok" and t is not None:
            times[engine] = t / per
    peers = [t for e, t in times.items() if e not in OURS]
    fastest = min(peers) if peers else None
    figures = []
    for engine, r in result.engines.items():
        extra: dict[str, Any] = {
            "workload": workload,
            "n": n,
            "engine": engine,
            "status": r.status,
        }
        if r.error:
            extra["error"] = r.error
        name = f"n={n} {LABELS[engine]}"
        if engine not in times:
            figures.append(Figure(GROUPS[workload], name, 0.0, "", extra=extra))
            continue
        seconds = times[engine]
        floor = floor_passes(workload, r.path, layers)
        extra.update(
            version=r.version,
            path=r.path,
            runs=len(r.times) or len(r.busy_times),
            busy=not r.times,
            published=published,
            busy_share=busy_share,
            discarded_rounds=result.discarded_rounds,
            warmup_seconds=r.warmup_seconds,
            setup_seconds=r.setup_seconds,
            first_seconds=r.first_seconds,
            value=r.value[0] if isinstance(r.value, list) else r.value,
            deviation=r.deviation,
            memory_states=(r.peak_kib - r.base_kib) * 1024 / state_bytes,
            peak_reset=r.peak_reset,
            passes=seconds * bandwidth / (2 * state_bytes),
            floor_passes=floor,
            floor_seconds=floor * 2 * state_bytes / bandwidth,
            vs_fastest_peer=seconds / fastest if fastest and published else None,
            speedup=fastest / seconds if fastest and published and engine in OURS else None,
        )
        if r.sample_seconds is not None:
            extra["sample_seconds"] = r.sample_seconds
        if workload.startswith("grover"):
            extra["full_run_seconds"] = seconds * grover_optimal_iterations(n)
        unit = "ms/iteration" if per > 1 else "ms"
        figures.append(Figure(GROUPS[workload], name, seconds * 1e3, unit, extra=extra))
        if r.contended_times and engine in times:
            quiet = _median(r.times) or _median(r.busy_times) or 0.0
            contended = _median(r.contended_times) or 0.0
            figures.append(
                Figure(
                    "contended",
                    f"{GROUPS[workload]} n={n} {LABELS[engine]}",
                    contended * 1e3,
                    "ms",
                    extra={
                        "workload": workload,
                        "n": n,
                        "engine": engine,
                        "quiet_seconds": quiet,
                        "quiet_busy": not r.times,
                        "slowdown": contended / quiet if quiet else None,
                        "runs": len(r.contended_times),
                        "other_cpu": _median(result.contended_shares),
                    },
                )
            )
    norm = result.extras.get("grover_norm")
    if norm:
        figures.append(
            Figure(
                "checks",
                f"Grover fused, |1 - <psi|psi>| after the optimal run at n={n}",
                norm["norm_error"],
                "",
                extra={"n": n, **norm, "iterations": grover_optimal_iterations(n)},
            )
        )
    return figures


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _ratio_cells(x: dict[str, Any]) -> list[str]:
    if not x["published"]:
        text = f"not published: machine busy ({x['busy_share']:.0%} other CPU)"
        return [text, ""]
    vs = f"{x['vs_fastest_peer']:.2f}x" if x.get("vs_fastest_peer") else ""
    sp = f"**{x['speedup']:.2f}x**" if x.get("speedup") else ""
    return [vs, sp]


def _table(workload: str, rows: list[Figure]) -> list[str]:
    grover = workload.startswith("grover")
    per = "time / iteration" if grover else "time / call"
    cols = [
        "n",
        "engine",
        "code path",
        f"{per} (median, rounds)",
        "vs fastest peer",
        "our speedup",
    ]
    if grover:
        cols.append("full run (projected)")
    if workload == "large":
        cols.append(f"{SAMPLE_SHOTS} shots (state + sampling)")
    cols += [
        "first call",
        "warm-up (n=6)",
        "setup",
        "peak memory (states)",
        "passes",
        "floor passes (time)",
        "result",
        "deviation",
    ]
    rule = "|".join("---" if c in ("engine", "code path") else "---:" for c in cols)
    out = ["| " + " | ".join(cols) + " |", "|" + rule + "|"]
    for f in rows:
        x = f.extra
        label = LABELS[x["engine"]] + (f" {x['version']}" if x.get("version") else "")
        if "path" not in x:
            status = x.get("error") or x["status"]
            cells = [str(x["n"]), label, f"{x['status']}: {status}" if x.get("error") else status]
            cells += [""] * (len(cols) - len(cells))
            out.append("| " + " | ".join(cells) + " |")
            continue
        mark = " busy" if x["busy"] else ""
        cells = [
            str(x["n"]),
            label,
            x["path"],
            f"{fmt_time(f.value / 1e3)} (x{x['runs']}){mark}",
            *_ratio_cells(x),
        ]
        if grover:
            cells.append(fmt_time(x["full_run_seconds"]))
        if workload == "large":
            cells.append(fmt_time(x["sample_seconds"]) if "sample_seconds" in x else "no sampler")
        mem = x["memory_states"]
        cells += [
            fmt_time(x["first_seconds"]),
            fmt_time(x["warmup_seconds"]),
            fmt_time(x["setup_seconds"]),
            f"{mem:.2f}" + ("" if x["peak_reset"] else " (peak not reset)"),
            f"{x['passes']:.1f}",
            f"{x['floor_passes']:g} ({fmt_time(x['floor_seconds'])})",
            "" if x["value"] is None else f"{x['value']:.10g}",
            "(reference)" if x["engine"] == "qiz" else f"{x['deviation']:.1e}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def markdown(figures: list[Figure]) -> str:
    out = []
    bw = next((f for f in figures if f.group == "machine"), None)
    if bw is not None:
        quick = " (quick mode: small sizes, 3 rounds)" if bw.extra.get("quick") else ""
        out.append(
            f"Memory bandwidth measured in this run: {bw.value:.1f} GB/s ({bw.name}); 1-minute "
            f"load average at the start: {bw.extra['load_average_1min']:.2f}{quick}.\n"
        )
    for workload, group in GROUPS.items():
        rows = [f for f in figures if f.group == group]
        if rows:
            out += [f"### {group}\n", *_table(workload, rows), ""]
    contended = [f for f in figures if f.group == "contended"]
    if contended:
        out += [
            "### Contended: the same rounds beside one busy process\n",
            "Not the published ratios above: each engine's median beside one competing "
            "`python -c 'while True: pass'`, and its slowdown from the quiet median.\n",
            "| workload | engine | quiet | contended (rounds) | slowdown | other CPU |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for f in contended:
            x = f.extra
            other = x["other_cpu"]
            out.append(
                f"| {GROUPS[x['workload']]} n={x['n']} | {LABELS[x['engine']]} | "
                f"{fmt_time(x['quiet_seconds'])}{' (busy)' if x['quiet_busy'] else ''} | "
                f"{fmt_time(f.value / 1e3)} (x{x['runs']}) | "
                f"{x['slowdown']:.2f}x | {'' if other is None else f'{other:.0%}'} |"
            )
        out.append("")
    return "\n".join(out)


def notes(figures: list[Figure], sizes: dict[str, tuple[int, ...]]) -> str:
    k_opt = {n: grover_optimal_iterations(n) for n in sizes["grover-gates"]}
    checks = [f for f in figures if f.group == "checks"]
    norm = "".join(
        f"\n- Grover fused, full optimal run at n = {f.extra['n']} ({f.extra['iterations']} "
        f"iterations, {fmt_time(f.extra['seconds'])}): |1 - <psi|psi>| = {f.value:.1e}, "
        f"P(marked) = {f.extra['probability']:.12f}."
        for f in checks
    )
    pending = (
        " Single precision is pending (QaoaSimulator takes no precision here yet)."
        if any(f.extra.get("status") == "pending" for f in figures)
        else ""
    )
    wall = next((f for f in figures if f.group == "run"), None)
    took = f" The quantum benchmark took {wall.value / 60:.1f} minutes." if wall else ""
    return f"""
Notes:
- {machine()}. Every engine runs with {THREADS} threads (OMP_NUM_THREADS, NUMBA_NUM_THREADS,
  QULACS_NUM_THREADS = {THREADS}; Aer max_parallel_threads = {THREADS}).{took}
- Method: for each size, one persistent worker process per engine builds the problem once
  ("setup", timed), then rounds run: in each round every engine evaluates once, in an order
  that rotates each round, on fresh random parameters (angles, or Grover's marked item) drawn
  from one seeded stream, the same for every engine in that round. Every call's answers are
  compared; above 1e-8 (single precision: 1e-4) the run fails. Times are medians over the
  rounds (their count in brackets). Binding a round's parameters into an engine's circuit
  object is not timed (Lightning builds its tape, Qulacs sets its angles, Aer assigns its
  parameters; Aer's parameter-shift batch binds inside its timed run).
- Quiet rounds only: a round during which processes other than ours used more than
  {BUSY_SHARE:.0%} of the CPUs (/proc/stat, less our processes' CPU, from {PRE_WINDOW} s before the
  round to its end) is discarded and re-run with fresh parameters, up to {RETRIES} times; after
  that it is kept, its time marked "busy". When fewer than half the planned rounds were quiet,
  no ratio is published for that size ("not published: machine busy (X% other CPU)").
- An engine left out of a size says why in its row: a method limit (Aer's parameter shift),
  memory, or time (a call projected, at 2x per qubit from its median at the size before,
  beyond what a 30-minute run allows; the slowest QAOA peers at n = 24).
- The contended table is the other half of that method, labelled as such: the same rounds
  with one busy process started by the bench, never mixed into the quiet medians.
- "first call": each engine's first evaluation at this size (first touch of its buffers, any
  JIT specialisation still pending), never in the medians. "warm-up (n=6)": the same workload
  once at 6 qubits in a fresh process, after imports (most of numba's JIT compilation for
  ours; lazy initialisation for the peers), done for every engine alike before its memory
  baseline is read.
- Peak memory: the worker's VmHWM (reset through /proc/self/clear_refs after the first call)
  minus its RSS before setup, in complex128 state vectors (2^n x 16 bytes). It covers the
  problem's precomputed data and every buffer; below n = 20 it is mostly allocator noise.
- Passes = time x measured copy bandwidth / (2 x 2^n x 16 bytes): how many times the call
  could have read and written a complex128 state. Floor passes: the fewest the algorithm
  needs, counted as follows (a read-only sweep counts 1/2): QAOA {QAOA_DEPTH} layers x 2
  (phase with the low-qubit mixer, then the high-qubit mixer) + 1/2 for <C> (or for the
  sampling read); VQE energy + gradient by the adjoint method 3 x layers + 1 (forward, H psi,
  psi and lambda backward); Grover 1 per iteration; halved where amplitudes take 8 bytes
  (our real float64 paths, single precision). The time in brackets is what the floor implies.
- Code paths (the "code path" column): QAOA with integer weights takes our level-table phase
  path (uint8/uint16 cost levels); with float weights, a float64 cost diagonal when there are
  more than 65,536 distinct cuts. VQE "real": RY + CZ with a real Hamiltonian keeps the state
  real (our float64 path; the peers stay complex). VQE "complex": TFIM + {Y_FIELD} sum Y_j in
  the general ansatz (RY + RZ per qubit per layer, CZ ladder, a final RY + RZ layer); the
  peers' circuits are built from our ansatz's instructions, so all run the same circuit.
- QAOA: gamma multiplies C = the weight of the cut, beta the sum of X; the result is the
  expected cut. Aer, Lightning and Qulacs apply RZZ(-w gamma) per edge and RX(2 beta) per
  qubit and measure C as a Pauli sum; QOKit runs its C simulator (libcsim.so built by
  bench/build_qokit.sh; the run fails if QOKit would fall back to numpy) on its own diagonal
  built from weighted terms, with gamma doubled (its phase layer is exp(-i gamma/2 C)).
- VQE: Lightning by the adjoint method (execute_and_compute_derivatives), Qulacs by
  backprop (the adjoint method in C++) plus one forward pass for the energy, Aer by the
  parameter-shift rule (1 + 2P circuits in one batched run), so only up to n = 16.
- Grover, gate level: start |+>^n; each iteration is the oracle (X on the marked item's zero
  bits, a multi-controlled Z, X again) then the diffusion H X MCZ X H. Ours runs it through
  our general engine's gate kernels (the multi-controlled Z as a Z with n-1 controls through
  the same apply_matrix: our Circuit gate set stops at two controls, and OpenQASM 3
  `ctrl(k) @ z` with k >= 3 does not import, "ctrl @ ch is not supported"). Grover fused: our
  mean-inversion path (one pass per iteration over a real float64 vector): the same
  probabilities but not the same algorithm as the peers' gate circuit, so no ratio.
  {GROVER_ITERATIONS} iterations are timed; the full run is projected to the optimal count
  ({", ".join(f"{k_opt[n]} at n = {n}" for n in k_opt)}); every probability must match
  sin^2((2k+1) asin(2^(-n/2))).{norm}
- Large: one engine's worker at a time (two 16 GiB states would not fit side by side), one
  round after the first call; the engines' first calls (the same parameters) are compared.
  Ours refuses before allocating a size that does not fit (the row says skipped, with the
  bytes needed and available). Single precision: float32 state arrays, sums in float64,
  compared with our double precision to 1e-4.{pending} "{SAMPLE_SHOTS} shots" is one call
  that evolves the state again and draws the shots, timed once after the rounds. Peers run
  there only where they fit and finish in minutes; each skip says why.
- Qulacs's rotation gates are exp(+i angle/2 P), the opposite sign of Qiskit's and
  PennyLane's: its adapter negates every angle (and the gradient).
"""
