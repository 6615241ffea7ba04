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
from dataclasses import dataclass
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


@dataclass
class Suite:
    """One run of the suite: its rows and how it ran."""

    quick: bool
    sizes: dict[str, int]
    rows: list[Row]
    wall: float
    load_start: float
    load_end: float

    def header(self) -> str:
        """Two lines: the run's sizes, then the machine, its load and the wall time."""
        s = self.sizes
        return (
            f"adversarial suite ({'--quick' if self.quick else 'full'}): DHT at "
            f"{s['nodes']:,} honest nodes, {s['users']} users x {s['lookups']} lookups x "
            f"{s['rounds']} rounds; jobs {s['jobs']:,} per row at 1,000 workers; storage "
            f"{s['holders']:,} holders, {s['store_rounds']} rounds\n"
            f"on {machine()}, 1-minute load {self.load_start:.2f} at the start, "
            f"{self.load_end:.2f} at the end; {self.wall:.0f} s wall"
        )

    def forged_accepted(self) -> list[Row]:
        """Record-poisoning rows where a forged record was accepted (there must be none)."""
        return [
            r
            for r in self.rows
            if r.scenario.startswith("5") and "forged accepted 0," not in r.note
        ]


def run(quick: bool, busy_ok: bool, sized: dict[str, int] | None = None, workers: int = 2) -> Suite:
    """Run the suite (``sized``: other sizes than :func:`sizes`, for tests) in ``workers``
    processes (1: in this one)."""
    load = check_quiet(quick, busy_ok)
    s = sized or sizes(quick)
    assert PUZZLE_BITS <= MAX_BITS
    began = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, runs(s)))
    else:
        results = [one(r) for r in runs(s)]
    wall = time.perf_counter() - began
    rows = [r for rs, _ in results for r in rs]
    rows.sort(key=lambda r: r.scenario[:1])  # the scenarios in their numbered order
    return Suite(quick, s, rows, wall, load, os.getloadavg()[0])


def main() -> None:
    suite = run("--quick" in sys.argv, "--busy-ok" in sys.argv)
    print(suite.header())
    print(adversary.table(suite.rows))
    poisoned = suite.forged_accepted()
    if poisoned:
        raise SystemExit("a forged record was accepted: " + poisoned[0].note)


if __name__ == "__main__":
    main()
