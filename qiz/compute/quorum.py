"""Deciding a task from its replicas (BOINC-style quorum), and the statistical test behind it.

Deterministic work (a seed in the spec, one engine version) must agree exactly: replicas are
grouped by result digest and a group of ``quorum`` wins. Sampled work run with independent seeds
(``seed`` null; sampler and grover) cannot agree exactly, so two replicas *agree* when every
non-count field is equal and every pair of count maps passes Pearson's chi-square test of
homogeneity at ``ALPHA`` (Bonferroni-corrected over a shard's points). Outcomes whose pooled
count is below ``MIN_BIN`` are merged into one bin so that the chi-square approximation holds.

A replica outside the winning group *disagrees*: its worker's score falls.

Counts a peer sent are not trusted here either (the core checks a result's shape first, see
:mod:`qiz.compute.results`, but this module must not be the weak link): a count map that is not
a map of non-negative whole numbers, or a comparison whose p-value is not a finite number (an
overflow), counts as *disagreement*, never as agreement.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiz import wire

ALPHA = 1e-3  # false alarm rate per comparison: honest replicas are called liars 1 time in 1000
MIN_BIN = 10
RESULT_TAG = b"qiz/result/v1\x00"
EXACT, CHI2 = "exact", "chi2"


def result_digest(result: Any) -> bytes:
    """SHA3-256 over a tag and the canonical CBOR of a (canonical) result."""
    return hashlib.sha3_256(RESULT_TAG + wire.encode(result)).digest()


@dataclass(frozen=True)
class Replica:
    """One worker's finished run of a task, as the coordinator holds it."""

    worker: bytes  # node id digest
    key: bytes  # the worker's composite public key (to check its claim offline)
    seed: int | None
    engine: str
    result: Any
    digest: bytes
    sig: bytes  # the worker's signature over its claim


@dataclass(frozen=True)
class Decision:
    accepted: Replica
    agreeing: tuple[Replica, ...]  # includes ``accepted``
    disagreeing: tuple[Replica, ...]
    test: str
    p_value: float | None  # the smallest p over the agreeing pairs (chi2 only)


def chi2_homogeneity(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """p-value of Pearson's chi-square test that two count maps come from one distribution.

    0.0 (they differ) for anything that is not two maps of non-negative whole numbers, and for
    a statistic that overflows: a NaN or infinite p must never read as agreement."""
    from scipy.stats import chi2

    if not (_counts(a) and _counts(b)):
        return 0.0
    na, nb = sum(a.values()), sum(b.values())
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    bins: list[tuple[int, int]] = []
    rest_a = rest_b = 0
    for key in sorted(set(a) | set(b)):
        ca, cb = a.get(key, 0), b.get(key, 0)
        if ca + cb < MIN_BIN:
            rest_a, rest_b = rest_a + ca, rest_b + cb
        else:
            bins.append((ca, cb))
    if rest_a + rest_b:
        bins.append((rest_a, rest_b))
    if len(bins) < 2:
        return 1.0
    total = na + nb
    stat = 0.0
    try:
        for ca, cb in bins:
            pooled = ca + cb
            ea, eb = na * pooled / total, nb * pooled / total
            stat += (ca - ea) ** 2 / ea + (cb - eb) ** 2 / eb
    except (OverflowError, ZeroDivisionError):  # counts beyond a float's range
        return 0.0
    p = float(chi2.sf(stat, len(bins) - 1))
    return p if math.isfinite(p) else 0.0


def _counts(m: Any) -> bool:
    """Whether ``m`` is a count map: text outcomes to whole numbers >= 0 (bool is not one)."""
    return isinstance(m, Mapping) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in m.items()
    )


def _count_maps(result: Any) -> tuple[list[Mapping[str, int]], Any]:
    """The count maps of a result (one per sweep point) and the rest, for exact comparison."""
    if isinstance(result, list):
        maps, rests = [], []
        for item in result:
            m, r = _count_maps(item)
            maps += m
            rests.append(r)
        return maps, rests
    if isinstance(result, dict) and "counts" in result:
        return [result["counts"]], {k: v for k, v in result.items() if k != "counts"}
    return [], result


def sampled_agreement(a: Any, b: Any) -> float:
    """The smallest Bonferroni-scaled p over the count maps (0.0 if anything else differs)."""
    maps_a, rest_a = _count_maps(a)
    maps_b, rest_b = _count_maps(b)
    if rest_a != rest_b or len(maps_a) != len(maps_b):
        return 0.0
    if not maps_a:
        return 1.0
    worst = min(chi2_homogeneity(x, y) for x, y in zip(maps_a, maps_b, strict=True))
    if not math.isfinite(worst):  # min(1.0, nan) is 1.0: a NaN must not read as agreement
        return 0.0
    return min(1.0, worst * len(maps_a))


Weight = Callable[[bytes], float]  # a worker's trust, in units of an established worker


def candidates(
    replicas: Sequence[Replica], sampled: bool, weight: Weight | None = None
) -> tuple[tuple[Replica, ...], tuple[Replica, ...], float | None]:
    """The leading group of agreeing replicas, the others, and the group's smallest p (chi2).

    Without ``weight`` the largest group leads (ties: the larger digest, or the more
    agreeable and earlier leader). With ``weight`` the group carrying the most trust leads,
    then the larger: two colluding liars a quorum has caught before cannot outvote one
    established worker merely by being two."""
    if not replicas:
        return (), (), None

    def heft(group: Sequence[Replica]) -> float:
        return sum(weight(r.worker) for r in group) if weight is not None else 0.0

    if not sampled:
        groups: dict[bytes, list[Replica]] = {}
        for r in replicas:
            groups.setdefault(r.digest, []).append(r)
        digest, group = max(groups.items(), key=lambda kv: (heft(kv[1]), len(kv[1]), kv[0]))
        others = tuple(r for r in replicas if r.digest != digest)
        return tuple(group), others, None
    best: tuple[float, int, float, int] | None = None
    best_group: list[Replica] = []
    for i, leader in enumerate(replicas):
        group, p_min = [leader], 1.0
        for other in replicas:
            if other is leader:
                continue
            p = sampled_agreement(leader.result, other.result)
            if p >= ALPHA:
                group.append(other)
                p_min = min(p_min, p)
        rank = (heft(group), len(group), p_min, -i)
        if best is None or rank > best:
            best, best_group = rank, group
    p_value = best[2] if best is not None and len(best_group) > 1 else None
    others = tuple(r for r in replicas if all(r is not g for g in best_group))
    return tuple(best_group), others, p_value


def margin(group: Sequence[Replica], others: Sequence[Replica], weight: Weight) -> float:
    """The trust behind a group: its weight less the weight of the replicas that disagree
    with it (a dissent by a trusted worker must be outweighed, not outnumbered)."""
    return sum(weight(r.worker) for r in group) - sum(weight(r.worker) for r in others)


def decide(
    replicas: Sequence[Replica],
    quorum: int,
    sampled: bool,
    *,
    weight: Weight | None = None,
    need: float = 0.0,
) -> Decision | None:
    """The winning group if ``quorum`` replicas agree, else None (more replicas are needed).

    With ``weight`` (adaptive replication, see :mod:`qiz.compute.core`), the leading group
    must also carry a :func:`margin` of at least ``need``; the quorum stays the floor."""
    group, others, p_value = candidates(replicas, sampled, weight)
    if len(group) < quorum:
        return None
    if weight is not None and margin(group, others, weight) < need - 1e-9:
        return None
    return Decision(group[0], group, others, CHI2 if sampled else EXACT, p_value)
