"""One noisy simulator's persistent worker process for ``bench/noise.py``.

    python bench/noise_worker.py ENGINE

The protocol of ``bench/quantum_worker.py`` (JSON lines on stdin, answers on its own copy of
stdout, fd 1 pointed at stderr), so ``bench/quantum_rounds.py``'s ``WorkerProcess`` and
``Session`` drive it. Requests:

- ``{"op": "ready"}``: answered once the start-up imports are done.
- ``{"op": "hello", "workload", "seed"}``: the workload once at ``WARM_QUBITS`` qubits and
  ``WARM_SHOTS`` shots (timed: the warm-up, JIT compilation included); the engine's version.
- ``{"op": "setup", "workload", "n", "seed"}``: build the circuit and the noise model.
- ``{"op": "eval", "params": {"shots", "seed"}}``: one timed run of ``shots`` shots with that
  simulator seed; the counts and (ours) the number of distinct trajectory states.
- ``{"op": "memory"}``: RSS before setup and VmHWM since, in KiB.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.noise_peers import IMPORTS, SETUPS, Prepared, version_of
from bench.quantum_worker import reset_peak, status_kib

WARM_QUBITS = 6
WARM_SHOTS = 50


class Worker:
    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.prepared: Prepared | None = None
        self.base_kib = 0
        self.peak_reset = False
        self.import_error = ""
        try:
            for module in IMPORTS[engine]:
                importlib.import_module(module)
        except ImportError as e:
            self.import_error = str(e)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ready":
            return {"ok": True}
        if op == "hello":
            if self.import_error:
                return {"ok": False, "status": "not installed", "error": self.import_error}
            t0 = time.perf_counter()
            tiny = SETUPS[self.engine](req["workload"], WARM_QUBITS, int(req["seed"]))
            tiny.run(WARM_SHOTS, int(req["seed"]))
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
                "num_parameters": 0,
            }
        if op == "eval":
            if self.prepared is None:
                return {"ok": False, "error": "eval before setup"}
            params = req["params"]
            t0 = time.perf_counter_ns()
            counts, states = self.prepared.run(int(params["shots"]), int(params["seed"]))
            seconds = (time.perf_counter_ns() - t0) / 1e9
            return {"ok": True, "counts": counts, "states": states, "seconds": seconds}
        if op == "memory":
            return {
                "ok": True,
                "base_kib": self.base_kib,
                "peak_kib": status_kib()["VmHWM"],
                "peak_reset": self.peak_reset,
            }
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
        except Exception as e:  # every failure goes back as one line
            reply = {"ok": False, "status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
