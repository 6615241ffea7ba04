"""Grover keeps its norm and its analytic success probability over a full optimal run.

The bulk pass sums its new amplitudes block by block and the next pass divides by the norm; the
former single running total per thread drifted by 8.6e-12 at n = 16 and 7.3e-8 at n = 24 over the
optimal run, so a bound of 1e-12 at n = 16..18 fails on that code and holds on this one.
"""

from __future__ import annotations

import pytest

from qiz.quantum.algorithms.grover import GroverSimulator, analytic_success, optimal_iterations
from qiz.quantum.problems.cnf import Cnf

NORM_BOUND = 1e-12


@pytest.mark.parametrize(("n", "marked"), [(16, [0xBEEF]), (18, [3, 77_777, 200_001])])
def test_marked_items_keep_the_norm_over_the_optimal_run(n: int, marked: list[int]) -> None:
    sim = GroverSimulator(n, marked=marked)
    k = optimal_iterations(n, len(marked))
    p = sim.run(k)
    assert sim.norm_error() < NORM_BOUND
    assert abs(p - analytic_success(n, len(marked), k)) < NORM_BOUND
    # a second run on the reused buffer starts afresh
    assert sim.run(k) == p


def test_a_cnf_oracle_keeps_the_norm_over_the_optimal_run() -> None:
    # x1..x16 with x1 = x2 = ... = x12 = 1: 2^4 solutions of 2^16
    n = 16
    clauses = "".join(f"{v} 0\n" for v in range(1, 13))
    sim = GroverSimulator(n, cnf=Cnf.loads(f"p cnf {n} 12\n{clauses}"))
    assert sim.num_solutions == 16
    k = optimal_iterations(n, 16)
    p = sim.run(k)
    assert sim.norm_error() < NORM_BOUND
    assert abs(p - analytic_success(n, 16, k)) < NORM_BOUND


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_registers(n: int) -> None:
    sim = GroverSimulator(n, marked=[0])
    for k in range(4):
        assert sim.run(k) == pytest.approx(analytic_success(n, 1, k), abs=1e-14)
        assert sim.norm_error() < 1e-14
