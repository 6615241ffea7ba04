"""Short names in a job spec that name a large size (issue 13, fuzz findings 4-6), before and after.

Each case is one spec's params, checked with ``execute.shape`` (what a worker's checker, a
coordinator and the CLI do with a peer's offer): ``tfim:<5,000 digits>`` and its siblings in the
Hamiltonian text, ``random:20000,2`` and a dense ``random:34,32``, an edge list naming node
10^4000, ``hva:20000``, ``hea:<5,000 digits>``, ``p cnf <5,000 digits> 1``. The row says what the
check answered (accepted, the layer's error, or another exception: an internal error), the
tracemalloc peak of the check and its wall time, in a fresh process of the code under test (this
tree, or ``--before`` for the checkout before the fix), after the kinds' imports are warm.

Run: ``.venv/bin/python -m bench.attacks.quantum_names [--before /tmp/qiz-before]``. Prints one
JSON row per case and code, then a markdown table. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.attacks.probe import child_in_tree

ROOT = Path(__file__).resolve().parents[2]
DIGITS = "9" * 5000
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("tfim:<5000 digits>", "vqe", {"hamiltonian": "tfim:" + DIGITS}),
    ("qubits <5000 digits>", "vqe", {"hamiltonian": "qubits " + DIGITS + "\n1 Z0"}),
    ("1 Z<5000 digits>", "vqe", {"hamiltonian": "1 Z" + DIGITS}),
    ("dense label, 150k letters", "vqe", {"hamiltonian": "1 " + "X" * 150_000}),
    ("random:20000,2", "qaoa", {"graph": "random:20000,2", "p": 1}),
    ("random:34,32", "qaoa", {"graph": "random:34,32", "p": 1}),
    ("edge list node 10^4000", "qaoa", {"graph": "0 1" + "0" * 4000, "p": 1}),
    ("hva:20000 on tfim:4", "vqe", {"hamiltonian": "tfim:4", "ansatz": "hva:20000"}),
    ("hea:<5000 digits>", "vqe", {"hamiltonian": "tfim:4", "ansatz": "hea:" + DIGITS}),
    ("p cnf <5000 digits> 1", "grover", {"qubits": 3, "cnf": f"p cnf {DIGITS} 1\n1 0"}),
]

CHILD = """
import json, sys, time, tracemalloc
from qiz.compute import execute
from qiz.compute.errors import SpecError
kind, params = json.loads(sys.stdin.read())
for k, p in execute.WARM_UP:
    execute.shape(k, p)
tracemalloc.start()
began = time.perf_counter()
try:
    s = execute.shape(kind, params)
    answer = f"accepted ({str(s.num_qubits)[:12]} qubits, {str(s.instructions)[:12]} instr.)"
except SpecError as exc:
    answer = "refused: " + str(exc)[:70]
except Exception as exc:
    answer = f"{type(exc).__name__} (internal error)"
seconds = time.perf_counter() - began
peak = tracemalloc.get_traced_memory()[1]
row = {"answer": answer, "peak_mib": round(peak / 2**20, 2), "seconds": round(seconds, 2)}
print(json.dumps(row))
"""


def run(code: Path, kind: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    answer = child_in_tree(code, CHILD, json.dumps([kind, params]), timeout)
    if isinstance(answer, str):
        return {"answer": answer, "peak_mib": None, "seconds": None}
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="checkout of the code before the fix")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    codes = [("before", args.before)] if args.before else []
    codes.append(("after", ROOT))
    rows = []
    for name, kind, params in CASES:
        for label, code in codes:
            row = {"case": name, "code": label, **run(code, kind, params, args.timeout)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| case | code | answer | tracemalloc peak (MiB) | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['code']} | {r['answer']} | {r['peak_mib']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
