"""One engine's persistent worker process for ``bench/quantum.py``.

    python bench/quantum_worker.py ENGINE

reads one JSON request per line on stdin and answers one JSON line on its own copy of stdout
(fd 1 itself is pointed at stderr, so whatever a library prints cannot break the protocol).
The process lives for one (workload, n): the problem is built once (``setup``, timed), then
every ``eval`` binds that round's parameters (not timed) and times one call. Requests:

- ``{"op": "ready"}``: answered once the start-up imports are done.
- ``{"op": "hello", "workload", "seed", "params"}``: run the workload once at 6 qubits (timed:
  the warm-up; the engine's modules were imported at start-up); the engine's version.
- ``{"op": "setup", "workload", "n", "seed"}``: build the problem; the peak is reset first.
- ``{"op": "eval", "params", "reset_peak"}``: one timed call; ``reset_peak`` resets VmHWM after
  it (after the first call, so a JIT compiler's transient memory is not the engine's peak).
- ``{"op": "sample", "params"}``: one timed call of the engine's sampler, if it has one.
- ``{"op": "memory"}``: RSS before setup and VmHWM since the last reset, in KiB.
- ``{"op": "grover_norm", "n", "iterations"}``: one full fused Grover run, its time and norm.
- ``{"op": "membw"}``: this machine's copy bandwidth.

Every answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quantum_peers import IMPORTS, SETUPS, Prepared, version_of

WARM_QUBITS = 6


def status_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    s = status_kib()
    return s["VmHWM"] <= s["VmRSS"] + 1024


def jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return [float(value[0]), [float(x) for x in value[1]]]
    return float(value)


def memory_bandwidth(gib: float = 1.0) -> dict[str, float]:
    """STREAM-style copy bandwidth (bytes read + bytes written per second), best of 5, with
    numpy (one thread) and a numba parallel copy on THREADS threads."""
    count = int(gib * (1 << 30)) // 8
    src = np.ones(count)
    dst = np.zeros(count)
    out: dict[str, float] = {}

    def best(fn: Callable[[], None]) -> float:
        fn()
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return 2 * src.nbytes / min(samples)

    out["numpy_copy"] = best(lambda: np.copyto(dst, src))
    import numba

    @numba.njit(parallel=True, cache=False)
    def copy(a: np.ndarray, b: np.ndarray) -> None:
        for i in numba.prange(a.size):
            b[i] = a[i]

    out["numba_copy"] = best(lambda: copy(src, dst))
    return out


class Worker:
    """The state one engine's process keeps between requests."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.prepared: Prepared | None = None
        self.base_kib = 0
        self.peak_reset = False
        # Imports at start-up, before the first request: every engine's worker starts at the
        # same time, so their imports overlap while nothing is being timed.
        self.import_error = ""
        try:
            for module in IMPORTS[engine]:
                importlib.import_module(module)
        except ImportError as e:
            self.import_error = str(e)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ready":  # answered once the start-up imports are done
            return {"ok": True}
        if op == "hello":
            if self.import_error:
                return {"ok": False, "status": "not installed", "error": self.import_error}
            # Warm-up on a tiny instance of the same workload, the same for every engine:
            # lazy initialisation and most JIT compilation happen here, so the memory measured
            # from setup on is the problem's, not the compiler's. Its time is reported.
            t0 = time.perf_counter()
            tiny = SETUPS[self.engine](req["workload"], WARM_QUBITS, int(req["seed"]))
            params = dict(req["params"])
            if "theta" in params:  # the coordinator sends more angles than any ansatz takes
                params["theta"] = params["theta"][: tiny.num_parameters]
            tiny.bind(params)()
            warmup = time.perf_counter() - t0
            return {"ok": True, "version": version_of(self.engine), "warmup_seconds": warmup}
        if op == "setup":
            gc.collect()
            self.base_kib = status_kib()["VmRSS"]
            self.peak_reset = reset_peak()
            t0 = time.perf_counter()
            self.prepared = SETUPS[self.engine](req["workload"], int(req["n"]), int(req["seed"]))
            return {
                "ok": True,
                "setup_seconds": time.perf_counter() - t0,
                "path": self.prepared.path,
                "num_parameters": self.prepared.num_parameters,
            }
        if op == "eval":
            if self.prepared is None:
                return {"ok": False, "error": "eval before setup"}
            call = self.prepared.bind(req["params"])
            t0 = time.perf_counter_ns()
            value = call()
            seconds = (time.perf_counter_ns() - t0) / 1e9
            if req.get("reset_peak"):
                self.peak_reset = reset_peak()
            return {"ok": True, "value": jsonable(value), "seconds": seconds}
        if op == "sample":
            if self.prepared is None or self.prepared.sample is None:
                return {"ok": True, "seconds": None}
            call = self.prepared.sample(req["params"])
            t0 = time.perf_counter_ns()
            call()
            return {"ok": True, "seconds": (time.perf_counter_ns() - t0) / 1e9}
        if op == "memory":
            return {
                "ok": True,
                "base_kib": self.base_kib,
                "peak_kib": status_kib()["VmHWM"],
                "peak_reset": self.peak_reset,
            }
        if op == "grover_norm":
            from qiz.quantum.algorithms.grover import GroverSimulator

            sim = GroverSimulator(int(req["n"]), marked=[int(req.get("marked", 1))])
            t0 = time.perf_counter()
            probability = sim.run(int(req["iterations"]))
            seconds = time.perf_counter() - t0
            return {
                "ok": True,
                "seconds": seconds,
                "probability": probability,
                "norm_error": sim.norm_error(),
            }
        if op == "membw":
            return {"ok": True, "bandwidth": memory_bandwidth()}
        return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> None:
    engine = sys.argv[1]
    if engine not in SETUPS:
        raise SystemExit(f"unknown engine {engine!r}")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # libraries that print to stdout now print to stderr
    sys.stdout = sys.stderr
    worker = Worker(engine)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            reply = worker.handle(req)
        except NotImplementedError as e:  # a code path another change has not landed yet
            reply = {"ok": False, "status": "pending", "error": str(e)[:500]}
        except Exception as e:  # every failure goes back as one line
            # our engine refusing a size that does not fit in memory is a skip, not a failure
            status = "skipped" if type(e).__name__ == "ProblemTooLarge" else "failed"
            reply = {"ok": False, "status": status, "error": f"{type(e).__name__}: {e}"[:500]}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
