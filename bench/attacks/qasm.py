"""OpenQASM programs that cost far more than their size (issue 13 item 1), before and after.

* ``definitions``: 11,000 trivial ``gate`` definitions (~236 KiB), the last one called; the old
  importer copied the whole gate table for every definition (quadratic).
* ``nested-N``: N levels of macros, each calling the one before twice (~1 KiB), the last one
  called: 2**N gates after inlining.
* ``gphase-40``: the same with a body of ``gphase(pi)``: no instruction is made, so only a
  budget that counts calls stops it (the old code never stops: it is cut off here).

Each program is imported in a fresh process of the code under test (this tree, or ``--before``
for the checkout before the fix), twice: once plain for the wall time and the peak RSS, once
under tracemalloc for the peak bytes allocated (parser included; tracemalloc slows the run).
A run is cut off after ``--timeout`` seconds. Not a node flood: the parse is what a worker, a
coordinator or the CLI does with a peer's spec, so the figures are the parse's own.

Run: ``.venv/bin/python -m bench.attacks.qasm [--before /tmp/qiz-before]``. Prints one JSON row
per attack and code, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.attacks.probe import child_in_tree

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.setrecursionlimit(10000)
from qiz.quantum import qasm
text = sys.stdin.read()
if sys.argv[1] == "traced":
    tracemalloc.start()
start = time.perf_counter()
try:
    outcome = f"accepted, {len(qasm.loads(text))} instructions"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if sys.argv[1] == "traced" else None
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak": peak, "rss": rss}))
"""


def definitions(count: int = 11_000) -> str:
    lines = ["OPENQASM 3.0;", "qubit[1] q;", *(f"gate g{i} a {{ x a; }}" for i in range(count))]
    return "\n".join([*lines, f"g{count - 1} q[0];"]) + "\n"


def nested(levels: int, base: str = "x a;") -> str:
    lines = ["OPENQASM 3.0;", "qubit[1] q;", f"gate m0 a {{ {base} }}"]
    lines += [f"gate m{i} a {{ m{i - 1} a; m{i - 1} a; }}" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"m{levels} q[0];"]) + "\n"


ATTACKS = {
    "definitions": definitions,
    "nested-20": lambda: nested(20),
    "nested-30": lambda: nested(30),
    "gphase-40": lambda: nested(40, "gphase(pi);"),
}


def run(code: Path, text: str, mode: str, timeout: float) -> dict[str, Any]:
    answer = child_in_tree(code, _CHILD, text, timeout, (mode,))
    if isinstance(answer, str):
        return {"outcome": answer, "cut": answer.startswith("still running")}
    return answer


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| attack | code | bytes | outcome | wall s | RSS MiB | traced peak MiB |"]
    lines.append("|" + "---|" * 7)
    for r in rows:
        lines.append(
            f"| {r['attack']} | {r['code']} | {r['bytes']} | {r['outcome']} | {r['wall_s']} "
            f"| {r['rss_mb']} | {r['traced_peak_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="checkout of the code before the fix")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--only", choices=sorted(ATTACKS), action="append")
    args = parser.parse_args()
    codes = [("before", args.before)] if args.before else []
    codes.append(("after", ROOT))
    rows = []
    for name in args.only or ATTACKS:
        text = ATTACKS[name]()
        for label, code in codes:
            plain = run(code, text, "plain", args.timeout)
            traced = run(code, text, "traced", args.timeout)
            row = {
                "attack": name,
                "code": label,
                "bytes": len(text.encode()),
                "outcome": plain["outcome"][:90],
                "wall_s": round(plain["seconds"], 2) if "seconds" in plain else None,
                "rss_mb": round(plain["rss"] / 2**20) if "rss" in plain else None,
                "traced_peak_mb": round(traced["peak"] / 2**20, 1) if traced.get("peak") else None,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
