"""The adversarial suite's table: six attacks against the real lookup, records, scores,
placement and job core, with only the network and time simulated (qiz/sim/adversary.py,
docs/adversary.md).

    python bench/adversary.py [--quick] [--busy-ok]

Full size: the DHT scenarios at 10,000 honest nodes (50 ms RTT, k = 20, alpha = 3), 20 honest
users x 10 lookups per round; the jobs at 1,000 workers and 2,000 one-task jobs per row; the
storage pool at 1,000 holders, 10 owners x 10 contents per round, 10 rounds. ``--quick``: the
DHT at 1,000 nodes, 300 jobs, 200 holders (a smoke run, a minute or so).

Every figure is a count in simulated time, a function of the seeds (equal on any machine);
only the wall time printed depends on the machine. The runs are spread over two processes.
There is nothing to compare side by side here (one implementation against its attackers), so
the harness's alternation of peers does not apply; a full run still refuses a busy machine.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import check_quiet, machine
from qiz.identity.puzzle import MAX_BITS
from qiz.sim import adversary
from qiz.sim.adversary import Row

PUZZLE_BITS = 8  # the default of a node's config (qiz.home.DEFAULT_PUZZLE_BITS)
FRACTIONS = (0.1, 0.2, 0.3)


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {
            "nodes": 1000,
            "users": 10,
            "lookups": 5,
            "rounds": 4,
            "jobs": 300,
            "holders": 200,
            "owners": 5,
            "contents": 5,
            "store_rounds": 8,
            "eclipse_tries": 1 << 16,
        }
    return {
        "nodes": 10_000,
        "users": 20,
        "lookups": 10,
        "rounds": 5,
        "jobs": 2000,
        "holders": 1000,
        "owners": 10,
        "contents": 10,
        "store_rounds": 10,
        "eclipse_tries": 1 << 20,
    }


def runs(s: dict[str, int]) -> list[tuple[str, dict]]:
    """Every measurement: (function name in qiz.sim.adversary, its arguments)."""
    dht = {"users": s["users"], "lookups": s["lookups"]}
    n = s["nodes"]
    out: list[tuple[str, dict]] = [
        ("sybil_flood", {"nodes": n, "budget": n, "bits": 0, "rounds": s["rounds"], **dht}),
        (
            "sybil_flood",
            {"nodes": n, "budget": n, "bits": PUZZLE_BITS, "rounds": s["rounds"], **dht},
        ),
        # the same number of sybils as without the puzzle, at 2**bits the price
        (
            "sybil_flood",
            {
                "nodes": n,
                "budget": n << PUZZLE_BITS,
                "bits": PUZZLE_BITS,
                "rounds": s["rounds"],
                **dht,
            },
        ),
        ("eclipse", {"nodes": n, "tries": s["eclipse_tries"], "bits": 0, "paths": (1, 4), **dht}),
        (
            "eclipse",
            {"nodes": n, "tries": s["eclipse_tries"], "bits": PUZZLE_BITS, "paths": (1, 4), **dht},
        ),
    ]
    for f in FRACTIONS:
        for adaptive in (False, True):
            out.append(("colluding_liars", {"liars": f, "jobs": s["jobs"], "adaptive": adaptive}))
    for f in FRACTIONS:
        out.append(("slow_and_silent", {"nodes": n, "fraction": f, "rounds": s["rounds"], **dht}))
    for f in FRACTIONS:
        out.append(("record_poisoning", {"nodes": n, "fraction": f, "rounds": s["rounds"], **dht}))
    for f in FRACTIONS:
        out.append(
            (
                "bad_holders",
                {
                    "holders": s["holders"],
                    "fraction": f,
                    "owners": s["owners"],
                    "contents": s["contents"],
                    "rounds": s["store_rounds"],
                },
            )
        )
    return out


def one(run: tuple[str, dict]) -> tuple[list[Row], float]:
    name, kwargs = run
    began = time.perf_counter()
    result = getattr(adversary, name)(**kwargs)
    rows = result if isinstance(result, list) else [result]
    return rows, time.perf_counter() - began


def main() -> None:
    quick = "--quick" in sys.argv
    load = check_quiet(quick, "--busy-ok" in sys.argv)
    s = sizes(quick)
    assert PUZZLE_BITS <= MAX_BITS
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, runs(s)))
    wall = time.perf_counter() - began
    rows = [r for rs, _ in results for r in rs]
    rows.sort(key=lambda r: r.scenario[:1])  # the scenarios in their numbered order
    print(
        f"adversarial suite ({'--quick' if quick else 'full'}): DHT at {s['nodes']:,} honest "
        f"nodes, {s['users']} users x {s['lookups']} lookups x {s['rounds']} rounds; jobs "
        f"{s['jobs']:,} per row at 1,000 workers; storage {s['holders']:,} holders, "
        f"{s['store_rounds']} rounds"
    )
    print(
        f"on {machine()}, 1-minute load {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end; {wall:.0f} s wall"
    )
    print(adversary.table(rows))
    poisoned = [
        r for r in rows if r.scenario.startswith("5") and "forged accepted 0," not in r.note
    ]
    if poisoned:
        raise SystemExit("a forged record was accepted: " + poisoned[0].note)


if __name__ == "__main__":
    main()
