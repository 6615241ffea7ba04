"""The statistics the noisy-simulation tests compare with (docs/noise.md, "The statistics the
tests use"): total variation distance, and the bound a correct sampler passes with probability
1 - delta (Hoeffding on every set of outcomes, union bound over the 2^K sets)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

DELTA = 1e-6  # a correct simulator fails one seed in a million


def tvd(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """1/2 sum |p(x) - q(x)| over every outcome either gives weight."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def frequencies(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def tvd_bound(shots: int, outcomes: int, delta: float = DELTA) -> float:
    """eps with P(TVD(empirical, true) >= eps) <= 2^K exp(-2 N eps^2) = delta."""
    return math.sqrt((outcomes * math.log(2) + math.log(1 / delta)) / (2 * shots))


def two_sample_bound(n1: int, n2: int, outcomes: int, delta: float = DELTA) -> float:
    """Two independent samples of one distribution: the triangle inequality, delta/2 each."""
    return tvd_bound(n1, outcomes, delta / 2) + tvd_bound(n2, outcomes, delta / 2)


def test_the_documented_figures() -> None:
    assert tvd_bound(40_000, 16) == pytest.approx(0.0176, abs=1e-4)
    assert two_sample_bound(40_000, 40_000, 16) == pytest.approx(0.0358, abs=1e-4)


def test_the_bound_holds_for_an_exact_multinomial_sampler() -> None:
    """A loose check that the bound is on the safe side: 200 samples of a known distribution
    never reach it (at delta = 1e-6 none should), and typical distances are well below it."""
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(16))
    truth = {format(i, "04b"): float(v) for i, v in enumerate(p)}
    eps = tvd_bound(2_000, 16)
    worst = 0.0
    for _ in range(200):
        drawn = rng.multinomial(2_000, p)
        sample = {format(i, "04b"): c / 2_000 for i, c in enumerate(drawn)}
        worst = max(worst, tvd(sample, truth))
    assert worst < eps
