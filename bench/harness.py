"""Shared benchmark plumbing: timing loops, one JSON line per figure, and markdown tables.

Figures are medians over many runs, never single runs. Each benchmark prints its JSON lines as
it goes and returns the rows, so ``bench/report.py`` can rebuild ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured figure, with the whitepaper's claim beside it when the paper made one."""

    group: str
    name: str
    value: float
    unit: str
    claim: float | None = None
    claim_text: str = ""
    higher_is_better: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """How many times better than the claim (>1 beats it), None without a claim."""
        if self.claim is None or self.value == 0:
            return None
        return self.value / self.claim if self.higher_is_better else self.claim / self.value

    def emit(self) -> None:
        row = asdict(self)
        row["ratio_vs_claim"] = self.ratio
        print(json.dumps(row, sort_keys=True), flush=True)


def emit_with_loads(figures: list[Figure], start_load: float, **extra: Any) -> list[Figure]:
    """Stamp every figure with the 1-minute load average at the run's start (unless a
    figure carries its own) and now, plus ``extra``, and print them: a reader of the JSON
    can tell a quiet run from a busy one."""
    end_load = os.getloadavg()[0]
    for f in figures:
        f.extra.setdefault("load_average_1min", round(start_load, 2))
        f.extra["load_average_1min_end"] = round(end_load, 2)
        f.extra.update(extra)
        f.emit()
    return figures


def time_op(
    fn: Callable[[], object], *, min_seconds: float = 0.3, min_runs: int = 20
) -> list[float]:
    """Per-call wall times in seconds: at least ``min_runs`` calls and ``min_seconds`` total."""
    fn()  # warm up
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e9)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_table(figures: list[Figure]) -> str:
    lines = [
        "| group | figure | measured | whitepaper claim | ratio (>1 beats the claim) |",
        "|---|---|---:|---:|---:|",
    ]
    for f in figures:
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        lines.append(
            f"| {f.group} | {f.name} | {f.value:,.3f} {f.unit} | {f.claim_text} | {ratio} |"
        )
    return "\n".join(lines)


# 1-minute load average above which a full benchmark run is refused: a quarter of this
# machine's 2 cores. At 1.0 (before session 16) a run could start beside a whole core of
# someone else's work, and a ratio measured so is the other work's as much as the code's.
MAX_LOAD = 0.5


def check_quiet(quick: bool, busy_ok: bool) -> float:
    """The 1-minute load average; a full run on a busy machine is refused unless ``busy_ok``
    (its figures would be the other processes' as much as the code's). ``--quick`` runs are
    smoke tests and never refused."""
    load = os.getloadavg()[0]
    if load > MAX_LOAD and not quick:
        if not busy_ok:
            raise SystemExit(
                f"the machine is busy (1-minute load average {load:.2f} > {MAX_LOAD}): "
                "rerun when it is quiet, or pass --busy-ok to measure anyway"
            )
        print(f"WARNING: measuring on a busy machine (load average {load:.2f})", file=sys.stderr)
    return load
