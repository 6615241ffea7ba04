"""NAT traversal at 10,000 nodes, modelled (:mod:`qiz.sim.nat`): how many node pairs can link
at all, how many directly (first try, after punching), how many only through a relay, and what
the reachable nodes carry as relays, for the default mix (30 % public, 50 % behind
port-preserving NAT, 20 % behind symmetric NAT) and variants: lossy punching, the majority
AutoNAT rule, scarce relays.

These are figures of a model, not measurements: the punch success of two port-preserving NATs
is an input (``punch_failure`` per attempt, ``preservation_fails``), not something observed.
The namespace tests and benchmarks of issue 18 measure real NATs.

    python bench/nat_sim.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, machine, markdown_table
from qiz.sim.nat import KINDS, OUTCOMES, NatReport, NatSimConfig, simulate

SCENARIOS: list[tuple[str, dict]] = [
    ("default mix, ideal NATs", {}),
    (
        "default mix, 10 % lost ports, 20 % failed attempts",
        {
            "preservation_fails": 0.10,
            "punch_failure": 0.20,
        },
    ),
    ("default mix, majority AutoNAT", {"autonat_rule": "majority"}),
    # DCUtR's campaign: ~70 % success, 97.6 % of successes on the first of 3 attempts, which
    # an independent per-attempt failure p explains only if (1 - p) / (1 - p**3) = 0.976, p ~ 2.4 %;
    # the rest must be structural: (0.59 / 0.70) ** 2 ~ 71 % of NATed pairs both port-preserving
    (
        "calibrated to DCUtR (30/59/11, 2.4 % failed attempts)",
        {
            "preserving": 0.59,
            "symmetric": 0.11,
            "punch_failure": 0.024,
        },
    ),
    ("5 % public (scarce relays)", {"public": 0.05, "preserving": 0.75}),
    ("2 % public (reservations nearly full)", {"public": 0.02, "preserving": 0.78}),
    ("1 % public (too few relays)", {"public": 0.01, "preserving": 0.79}),
]

DCUTR = "libp2p DCUtR: ~70 % of NATed peers, measured (ours is an input)"


def figures(label: str, report: NatReport, seconds: float) -> list[Figure]:
    n = report.config.nodes
    group = f"NAT model, {n:,} nodes, {label}"
    e, load, res, times = report.exact, report.relay_load, report.reservations, report.times
    out = [
        Figure(group, "pairs that can link at all (relays admitting)", report.linkable * 100, "%"),
        Figure(group, "pairs linked directly (first try + punched)", report.direct * 100, "%"),
        Figure(group, "  direct on the first try", e["direct first try"] * 100, "%"),
        Figure(group, "  direct after punching", e["direct after punching"] * 100, "%"),
        Figure(group, "pairs relayed only", e["relayed only"] * 100, "%"),
        Figure(group, "pairs never linked", e["never"] * 100, "%"),
        Figure(
            group,
            "punch success, both behind NAT",
            report.punch_success_natted * 100,
            "%",
            claim_text=DCUTR,
        ),
        Figure(
            group,
            f"sampled pairs ({report.sampled_pairs:,}) linkable, beside the exact share",
            (1 - report.sampled["never"]) * 100,
            "%",
        ),
        Figure(
            group, "AutoNAT accuracy, docs/nat.md rule", report.autonat["spec accuracy"] * 100, "%"
        ),
        Figure(
            group,
            "AutoNAT accuracy, majority of 3",
            report.autonat["majority accuracy"] * 100,
            "%",
        ),
        Figure(
            group,
            "reservations per relay, mean / p99 / max",
            res["per relay mean"],
            "reservations",
            extra={"p99": res["per relay p99"], "max": res["per relay max"]},
        ),
        Figure(
            group,
            "reservation requests refused",
            res["refused"],
            "requests",
            extra={k: v for k, v in res.items() if k.startswith("refused: ")},
        ),
        Figure(
            group,
            f"private nodes holding fewer than {report.config.reserve_on} relays",
            res["nodes short of reserve_on"],
            "nodes",
            extra={"without any": res["nodes without a relay"]},
        ),
        Figure(
            group,
            f"circuits per relay at {report.config.links_per_node} links per node, mean",
            load["circuits mean"],
            "circuits",
            extra={"p99": load["circuits p99"], "max": load["circuits max"]},
        ),
        Figure(group, "circuits per relay, p99", load["circuits p99"], "circuits"),
        Figure(
            group,
            f"circuits per relay, max (limit {report.config.max_circuits})",
            load["circuits max"],
            "circuits",
        ),
        Figure(
            group, "circuits asked of the busiest relay (no limits)", load["demand max"], "circuits"
        ),
        Figure(
            group,
            f"circuits refused, of {load['relayed links']:,.0f} relayed links",
            load["circuits refused"],
            "circuits",
            extra={"share": load["refused share"]},
        ),
        Figure(
            group,
            "circuit requests refused by one relay (the dialler tries the next)",
            sum(v for k, v in load.items() if k.startswith("refusals: ")),
            "requests",
            extra={k: v for k, v in load.items() if k.startswith("refusals: ")},
        ),
        Figure(group, "links that exist in the end", load["linked share"] * 100, "%"),
        Figure(group, "time to first link, p50", times["first link p50"] * 1000, "ms"),
        Figure(
            group,
            "time to a punched direct link, p50",
            times["direct after punching p50"] * 1000,
            "ms",
        ),
        Figure(
            group,
            "time to a punched direct link, p95",
            times["direct after punching p95"] * 1000,
            "ms",
        ),
        Figure(group, "model run time", seconds, "s"),
    ]
    return out


def by_class_table(report: NatReport) -> str:
    """Outcome shares per (dialler kind, target kind): the exact counts behind the totals."""
    lines = [
        "| dialler -> target | share of pairs | " + " | ".join(OUTCOMES) + " |",
        "|---|---:|" + "---:|" * len(OUTCOMES),
    ]
    shares = {k: report.counts[k] / report.config.nodes for k in KINDS}
    for pair, outcomes in report.by_class.items():
        a, b = pair.split(" -> ")
        cells = " | ".join(f"{outcomes[o] * 100:.2f} %" for o in OUTCOMES)
        lines.append(f"| {pair} | {shares[a] * shares[b] * 100:.1f} % | {cells} |")
    return "\n".join(lines)


def summary_table(reports: dict[str, NatReport]) -> str:
    """One row per scenario: the shares of pairs, then what the relays carry."""
    lines = [
        "| scenario | linkable | direct (first + punched) | relayed only | never "
        "| punch success, both NATed | reservations per relay mean / max "
        "| circuits per relay mean / p99 / max | circuits refused | links in the end "
        "| punched link p50 / p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in reports.items():
        e, load, res, t = r.exact, r.relay_load, r.reservations, r.times
        lines.append(
            f"| {label} | {r.linkable:.2%} | {r.direct:.2%} ({e['direct first try']:.1%} + "
            f"{e['direct after punching']:.1%}) | {e['relayed only']:.2%} | {e['never']:.2%} "
            f"| {r.punch_success_natted:.1%} "
            f"| {res['per relay mean']:.1f} / {res['per relay max']:.0f} "
            f"| {load['circuits mean']:.1f} / {load['circuits p99']:.0f} / "
            f"{load['circuits max']:.0f} "
            f"| {load['circuits refused']:,.0f} of {load['relayed links']:,.0f} "
            f"| {load['linked share']:.1%} "
            f"| {t['direct after punching p50']:.2f} / {t['direct after punching p95']:.2f} s |"
        )
    return "\n".join(lines)


def run(quick: bool = False) -> tuple[list[Figure], dict[str, NatReport]]:
    out: list[Figure] = []
    reports: dict[str, NatReport] = {}
    for label, overrides in SCENARIOS[:2] if quick else SCENARIOS:
        config = NatSimConfig(**{"pairs": 50_000 if quick else 200_000, **overrides})
        start = time.perf_counter()
        report = simulate(config, seed=1)
        seconds = time.perf_counter() - start
        reports[label] = report
        for f in figures(label, report, seconds):
            f.emit()
            out.append(f)
    return out, reports


def main() -> None:
    out, reports = run("--quick" in sys.argv)
    print()
    print(f"## NAT model ({machine()})\n")
    print(markdown_table(out))
    print("\nScenarios side by side (seed 1):\n")
    print(summary_table(reports))
    print("\nBy kind, default mix (exact shares over all ordered pairs):\n")
    print(by_class_table(next(iter(reports.values()))))


if __name__ == "__main__":
    main()
