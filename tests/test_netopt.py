"""Network-optimisation encodings (qiz.quantum.problems.netopt) and the common solver interface.

The encodings are checked against searches over the *domain* (every job->node map, every
simple path via networkx), not against the QUBO itself, and the derived penalty bounds are
checked at the bound (a penalty just above it must already make every infeasible bitstring
worse than the best feasible one).
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from qiz.quantum.algorithms.solvers import QUANTUM_LIMIT, solve
from qiz.quantum.core.errors import QuantumError
from qiz.quantum.problems.netopt import assignment_qubo, shortest_path_qubo
from qiz.quantum.problems.qubo import QuboProblem

# -- helpers ------------------------------------------------------------------------------------


def random_assignment(rng: np.random.Generator, max_vars: int = 12, negative: bool = False):
    while True:
        jobs, nodes = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        if jobs * nodes <= max_vars:
            break
    loads = rng.uniform(0.0, 5.0, jobs).round(2)
    caps = rng.uniform(0.3, 4.0, nodes).round(2)
    costs = rng.uniform(-1.0 if negative else 0.0, 5.0, (jobs, nodes)).round(2)
    weights = {"balance_weight": rng.uniform(0, 3), "cost_weight": rng.uniform(0, 3)}
    return loads, caps, costs, weights


def assignment_feasible_mask(num_jobs: int, num_nodes: int) -> np.ndarray:
    idx = np.arange(1 << (num_jobs * num_nodes))
    ok = np.ones(idx.shape[0], dtype=bool)
    for j in range(num_jobs):
        count = sum((idx >> (j * num_nodes + n)) & 1 for n in range(num_nodes))
        ok &= count == 1
    return ok


def path_feasible_mask(enc) -> np.ndarray:
    idx = np.arange(1 << enc.problem.num_vars)
    residual = np.zeros((enc.num_nodes, idx.shape[0]), dtype=np.int64)
    for i, (u, v, _) in enumerate(enc.arcs):
        bit = (idx >> i) & 1
        residual[u] += bit
        residual[v] -= bit
    residual[enc.source] -= 1
    residual[enc.target] += 1
    return ~residual.any(axis=0)


def random_graph(rng: np.random.Generator, directed: bool, integer: bool):
    n = int(rng.integers(2, 7))
    pairs = [(u, v) for u in range(n) for v in range(n) if u != v and (directed or u < v)]
    edges = [
        (u, v, float(rng.integers(0, 6)) if integer else float(rng.uniform(0.1, 5.0)))
        for u, v in pairs
        if rng.random() < 0.45
    ]
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from(edges)
    return n, edges, graph


def path_instances(count: int, max_vars: int = 14):
    """(n, edges, directed, graph, encoding) for random solvable instances, seeded."""
    rng = np.random.default_rng(2024)
    out = []
    while len(out) < count:
        directed = bool(rng.integers(0, 2))
        n, edges, graph = random_graph(rng, directed, integer=len(out) % 2 == 0)
        if not nx.has_path(graph, 0, n - 1):
            with pytest.raises(QuantumError, match="no path"):
                shortest_path_qubo(n, edges, 0, n - 1, directed=directed)
            continue
        enc = shortest_path_qubo(n, edges, 0, n - 1, directed=directed)
        if enc.problem.num_vars <= max_vars:
            out.append((n, edges, directed, graph, enc))
    return out


# -- assignment: encoding ---------------------------------------------------------------------


def test_assignment_optimum_equals_domain_search() -> None:
    rng = np.random.default_rng(7)
    for _ in range(15):
        loads, caps, costs, weights = random_assignment(rng)
        enc = assignment_qubo(loads, caps, costs, **weights)
        maps = list(itertools.product(range(len(caps)), repeat=len(loads)))
        domain_best = min(enc.objective(m) for m in maps)
        best, optima, _ = enc.problem.brute_force()
        assert best == pytest.approx(domain_best, abs=1e-9)
        decoded = enc.decode(optima[0])
        assert decoded.feasible
        assert enc.objective(decoded.job_to_node) == pytest.approx(domain_best, abs=1e-9)
        for m in maps[:20]:  # on a complete placement the QUBO is the domain objective
            assert enc.problem.evaluate(enc.encode(m)) == pytest.approx(enc.objective(m))
            assert enc.decode(enc.encode(m)).job_to_node == list(m)


@pytest.mark.parametrize("which", ["gap", "repair", "auto"])
def test_assignment_penalty_bounds_hold_at_the_bound(which: str) -> None:
    rng = np.random.default_rng({"gap": 1, "repair": 2, "auto": 3}[which])
    for k in range(15):
        loads, caps, costs, weights = random_assignment(rng, negative=k % 3 == 0)
        base = assignment_qubo(loads, caps, costs, **weights)
        assert base.penalty > base.penalty_bound >= 0
        assert base.penalty_bound == pytest.approx(max(0.0, min(base.gap_bound, base.repair_bound)))
        bound = {"gap": base.gap_bound, "repair": base.repair_bound, "auto": base.penalty_bound}
        penalty = max(bound[which], 0.0) * (1 + 1e-6) + 1e-9
        enc = assignment_qubo(loads, caps, costs, penalty=penalty, **weights)
        diag = enc.problem.diagonal()
        feasible = assignment_feasible_mask(len(loads), len(caps))
        if (~feasible).any():
            assert diag[~feasible].min() > diag[feasible].min()


def test_assignment_auto_penalty_makes_every_optimum_feasible() -> None:
    rng = np.random.default_rng(11)
    for _ in range(10):
        loads, caps, costs, weights = random_assignment(rng, negative=True)
        enc = assignment_qubo(loads, caps, costs, **weights)
        _, optima, _ = enc.problem.brute_force()
        assert all(enc.decode(i).feasible for i in optima)


def test_assignment_balance_targets_equal_utilisation() -> None:
    # loads 2 and 1 on capacities 2 and 1: job 0 -> node 0 and job 1 -> node 1 gives both
    # nodes utilisation 0.75 = u*, so the balance term is zero there and nowhere else
    enc = assignment_qubo([2, 1], [2, 1], [[0, 0], [0, 0]], cost_weight=0)
    sol = solve(enc.problem, "exact")
    assert sol.value == pytest.approx(0.0)
    assert enc.decode(sol.index).job_to_node == [0, 1]
    assert enc.decode(sol.index).makespan == pytest.approx(1.0)
    # link cost alone: every job goes to its cheapest node
    enc = assignment_qubo([1, 1, 1], [1, 1], [[3, 1], [0, 2], [5, 4]], balance_weight=0)
    assert enc.decode(solve(enc.problem).index).job_to_node == [1, 0, 1]


def test_assignment_decoder_flags_infeasible() -> None:
    enc = assignment_qubo([1, 2, 3], [1, 2], [[1, 2], [3, 4], [5, 6]])
    # job 0 on both nodes, job 1 on none, job 2 on node 1
    bits = [1, 1, 0, 0, 0, 1]
    got = enc.decode(bits)
    assert got.job_to_node == [None, None, 1]
    assert not got.feasible
    assert got.link_cost == 6
    assert got.makespan == pytest.approx(3 / 2)
    index = sum(b << i for i, b in enumerate(bits))
    assert enc.decode(index) == got
    ok = enc.decode(enc.encode([0, 1, 1]))
    assert ok.feasible
    assert ok.job_to_node == [0, 1, 1]
    assert ok.makespan == pytest.approx(max(1 / 1, 5 / 2))
    assert ok.link_cost == 1 + 4 + 6
    assert enc.variable(2, 1) == 5
    assert not enc.decode(0).feasible


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([1, 2], [1, 1], [[1, 1]]), {}, "2 rows"),
        (([1, 2], [1, 1], [[1, 1], [1]]), {}, "2 rows"),
        (([1], [1, 1], 5), {}, "table"),
        (([1], [-1, 1], [[1, 1]]), {}, "capacities must be positive"),
        (([1], [0, 1], [[1, 1]]), {}, "capacities must be positive"),
        (([-1], [1, 1], [[1, 1]]), {}, "loads must not be negative"),
        (([], [1], []), {}, "at least one job"),
        (([1], [], [[]]), {}, "at least one node"),
        (([1], [1], [[float("nan")]]), {}, "finite"),
        (([1], [1], [["x"]]), {}, "number"),
        (([1], [1], [[1]]), {"balance_weight": -1}, "must not be negative"),
        (([1], [1], [[1]]), {"penalty": 0}, "penalty must be positive"),
    ],
)
def test_assignment_bad_input(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(QuantumError, match=match):
        assignment_qubo(*args, **kwargs)


def test_assignment_decode_bad_input() -> None:
    enc = assignment_qubo([1], [1, 1], [[1, 1]])
    with pytest.raises(QuantumError, match="expected 2 bits"):
        enc.decode([1])
    with pytest.raises(QuantumError, match="0 or 1"):
        enc.decode([2, 0])
    with pytest.raises(QuantumError, match="outside"):
        enc.decode(4)
    with pytest.raises(QuantumError, match="not one of"):
        enc.objective([2])


# -- shortest path: encoding ------------------------------------------------------------------


def test_path_optimum_equals_simple_path_search() -> None:
    instances = path_instances(20)
    assert {directed for _, _, directed, _, _ in instances} == {True, False}
    for n, _, _, graph, enc in instances:
        best = min(nx.path_weight(graph, p, "weight") for p in nx.all_simple_paths(graph, 0, n - 1))
        assert enc.shortest == pytest.approx(best)
        value, optima, _ = enc.problem.brute_force()
        assert value == pytest.approx(best, abs=1e-9)
        for index in optima:
            path = enc.decode(index)
            assert path.feasible
            assert nx.is_simple_path(graph, path.nodes)
            assert path.nodes[0] == 0
            assert path.nodes[-1] == n - 1
            assert path.cost == pytest.approx(best, abs=1e-9)


def test_path_penalty_bound_holds_at_the_bound() -> None:
    for n, edges, directed, _, base in path_instances(20):
        assert base.penalty > base.penalty_bound == pytest.approx(base.shortest / 2)
        penalty = base.penalty_bound * (1 + 1e-6) + 1e-9
        enc = shortest_path_qubo(n, edges, 0, n - 1, directed=directed, penalty=penalty)
        diag = enc.problem.diagonal()
        feasible = path_feasible_mask(enc)
        assert feasible.any()
        if (~feasible).any():
            assert diag[~feasible].min() > diag[feasible].min()


def test_path_decoder_drops_cycles_and_flags_broken_selections() -> None:
    edges = [(0, 1, 1), (1, 3, 1), (0, 2, 5), (2, 3, 5), (1, 2, 1), (2, 1, 1), (4, 5, 1), (5, 4, 1)]
    enc = shortest_path_qubo(6, edges, 0, 3, prune=False)
    path = enc.decode(enc.encode([0, 1, 3]))
    assert path == type(path)([0, 1, 3], 2.0, True, 0)
    assert enc.path_cost([0, 2, 1, 3]) == 7.0
    # a disconnected cycle 4 -> 5 -> 4: penalty-free, dropped by the decoder
    bits = enc.encode([0, 1, 3])
    bits[enc.variable(4, 5)] = bits[enc.variable(5, 4)] = 1
    assert enc.problem.evaluate(bits) == pytest.approx(4.0)  # the cycle costs, no penalty
    path = enc.decode(bits)
    assert path.feasible
    assert path.nodes == [0, 1, 3]
    assert path.cost == 2.0
    assert path.dropped_arcs == 2
    # a cycle touching the path (1 -> 2 -> 1) is dropped the same way
    bits = enc.encode([0, 1, 3])
    bits[enc.variable(1, 2)] = bits[enc.variable(2, 1)] = 1
    path = enc.decode(bits)
    assert (path.feasible, path.nodes, path.dropped_arcs) == (True, [0, 1, 3], 2)
    # a path that stops short, and one with an extra arc, break flow conservation
    broken = enc.decode(enc.encode([0, 1]))
    assert (broken.feasible, broken.nodes, broken.cost) == (False, None, 1.0)
    bits = enc.encode([0, 1, 3])
    bits[enc.variable(0, 2)] = 1
    assert not enc.decode(bits).feasible
    assert not enc.decode(0).feasible


def test_path_zero_weight_cycle_optimum_decodes_to_the_path() -> None:
    edges = [(0, 1, 1), (1, 2, 0), (2, 1, 0), (1, 3, 1)]
    enc = shortest_path_qubo(4, edges, 0, 3)
    value, optima, _ = enc.problem.brute_force()
    assert value == 2.0
    assert len(optima) == 2  # with and without the free 1 -> 2 -> 1 cycle
    for index in optima:
        assert enc.decode(index).nodes == [0, 1, 3]
        assert enc.decode(index).cost == 2.0


def test_path_undirected_and_pruning() -> None:
    edges = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 3.0), (2, 3, 1.0)]
    enc = shortest_path_qubo(4, edges, 0, 3, directed=False)
    arcs = {(u, v) for u, v, _ in enc.arcs}
    assert (1, 0) not in arcs  # into the source
    assert (3, 2) not in arcs  # out of the target
    assert {(0, 1), (1, 2), (2, 1), (0, 2), (2, 3)} == arcs
    assert enc.decode(solve(enc.problem).index).nodes == [0, 1, 2, 3]
    with pytest.raises(QuantumError, match="no variable"):
        enc.variable(1, 0)
    full = shortest_path_qubo(4, edges, 0, 3, directed=False, prune=False)
    assert full.problem.num_vars == 8
    assert full.decode(solve(full.problem).index).nodes == [0, 1, 2, 3]
    # a dead end (node 4) gets no variables
    enc = shortest_path_qubo(5, [(0, 1, 1), (1, 2, 1), (1, 4, 1)], 0, 2)
    assert [(u, v) for u, v, _ in enc.arcs] == [(0, 1), (1, 2)]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((3, [(0, 1, 1)], 0, 0), {}, "must differ"),
        ((3, [(0, 1, 1)], 0, 3), {}, "target 3 is not one of"),
        ((3, [(0, 1, 1)], -1, 2), {}, "source -1 is not one of"),
        ((3, [(0, 5, 1)], 0, 2), {}, "node 5 is not one of"),
        ((3, [(0, 1, -1), (1, 2, 1)], 0, 2), {}, "negative"),
        ((3, [(0, 0, 1)], 0, 2), {}, "self-loop"),
        ((3, [(0, 1, 1), (0, 1, 2)], 0, 2), {}, "given twice"),
        ((3, [(0, 1, 1), (1, 0, 2)], 0, 2), {"directed": False}, "given twice"),
        ((3, [(0, 1)], 0, 2), {}, "expected \\(u, v, weight\\)"),
        ((3, [(0, 1, 1), (2, 1, 1)], 0, 2), {}, "no path"),
        ((3, [(0, 1, float("inf"))], 0, 2), {}, "finite"),
        ((1, [], 0, 0), {}, "at least two nodes"),
        ((3, [(0, 2, 1)], 0, 2), {"penalty": -1}, "penalty must be positive"),
    ],
)
def test_path_bad_input(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(QuantumError, match=match):
        shortest_path_qubo(*args, **kwargs)


# -- solvers ------------------------------------------------------------------------------------


def assignment_4x4():
    return assignment_qubo(
        [3, 1, 2, 2],
        [2, 1, 1, 3],
        [[1, 2, 3, 1], [2, 2, 1, 0], [0, 1, 2, 3], [3, 1, 1, 2]],
        balance_weight=1.0,
        cost_weight=0.5,
    )


def grid_edges(rows: int, cols: int, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    edges = []
    for r in range(rows):
        for c in range(cols):
            u = r * cols + c
            if c + 1 < cols:
                edges.append((u, u + 1, float(rng.integers(1, 9))))
            if r + 1 < rows:
                edges.append((u, u + cols, float(rng.integers(1, 9))))
    return edges


def test_exact_and_auto() -> None:
    enc = assignment_4x4()
    exact = solve(enc.problem, "exact")
    best, optima, _ = enc.problem.brute_force()
    assert exact.value == pytest.approx(best)
    assert exact.index in optima
    assert exact.optimum_known
    assert exact.bits == [(exact.index >> i) & 1 for i in range(16)]
    assert exact.evaluations == 1 << 16
    assert solve(enc.problem).method == "exact"
    big = QuboProblem(30, {i: -1.0 for i in range(30)}, {(i, i + 1): 1.5 for i in range(29)})
    auto = solve(big, sweeps=200, restarts=4)
    assert auto.method == "annealing"
    assert not auto.optimum_known
    assert auto.value == -15.0  # alternate bits


def test_annealing_finds_the_optimum_on_small_instances() -> None:
    rng = np.random.default_rng(5)
    problems = [assignment_4x4().problem]
    for *_, enc in path_instances(40, max_vars=16):
        if enc.problem.num_vars >= 12:
            problems.append(enc.problem)
    grid = shortest_path_qubo(8, grid_edges(2, 4, rng), 0, 7, directed=False)
    problems.append(grid.problem)
    dense = QuboProblem(
        14,
        {i: float(rng.normal()) for i in range(14)},
        {(i, j): float(rng.normal()) for i in range(14) for j in range(i + 1, 14)},
    )
    problems.append(dense)
    assert len(problems) >= 4
    assert any(p.num_vars >= 12 and p.name == "shortest_path" for p in problems)
    for problem in problems:
        assert 12 <= problem.num_vars <= 16
        sol = solve(problem, "annealing", seed=3)
        assert sol.value == pytest.approx(problem.brute_force()[0], abs=1e-9)
        assert sol.evaluations == 1000 * 16 * problem.num_vars


def test_annealing_is_seeded_and_handles_maximisation() -> None:
    ring = QuboProblem.maxcut(10, [(i, (i + 1) % 10) for i in range(10)])
    a = solve(ring, "annealing", seed=9, sweeps=100, restarts=4)
    b = solve(ring, "annealing", seed=9, sweeps=100, restarts=4)
    assert (a.index, a.value, a.details["restart_values"]) == (
        b.index,
        b.value,
        b.details["restart_values"],
    )
    assert a.value == 10.0  # an even ring is bipartite: every edge cut


def test_annealing_hundreds_of_variables() -> None:
    # 10 jobs x 20 nodes on link cost alone: the optimum puts every job on its cheapest node
    rng = np.random.default_rng(8)
    costs = rng.integers(1, 20, (10, 20)).astype(float)
    enc = assignment_qubo([1.0] * 10, [1.0] * 20, costs, balance_weight=0.0)
    sol = solve(enc.problem, "annealing", seed=1, sweeps=2000, restarts=4)
    assert enc.decode(sol.bits).feasible
    assert sol.value == pytest.approx(costs.min(axis=1).sum())
    # a planted, frustration-free sparse QUBO: sum of w (x_i + x_j - p_i - p_j)^2 is 0 at p
    n = 300
    planted = rng.integers(0, 2, n)
    terms = [(i, (i + 1) % n) for i in range(n)] + [
        tuple(int(v) for v in rng.choice(n, 2, replace=False)) for _ in range(300)
    ]
    linear: dict[int, float] = {}
    quad: dict[tuple[int, int], float] = {}
    offset = 0.0
    for i, j in terms:
        w, t = float(rng.uniform(0.5, 2.0)), int(planted[i] + planted[j])
        # (x_i + x_j - t)^2 = x_i + x_j + 2 x_i x_j - 2 t (x_i + x_j) + t^2
        linear[i] = linear.get(i, 0.0) + w * (1 - 2 * t)
        linear[j] = linear.get(j, 0.0) + w * (1 - 2 * t)
        quad[(i, j)] = quad.get((i, j), 0.0) + 2 * w
        offset += w * t * t
    problem = QuboProblem(n, linear, quad, offset)
    assert problem.evaluate(planted.tolist()) == pytest.approx(0.0)
    assert solve(problem, "annealing", seed=2, restarts=4).value == pytest.approx(0.0, abs=1e-9)
    # a 220-arc shortest path: single flips find a feasible route (not usually the shortest)
    grid = shortest_path_qubo(64, grid_edges(8, 8, rng), 0, 63, directed=False)
    assert grid.problem.num_vars > 150
    sol = solve(grid.problem, "annealing", seed=1)
    path = grid.decode(sol.bits)
    assert path.feasible
    assert path.cost >= grid.shortest
    assert sol.value >= path.cost


def test_qaoa_and_vqe_on_tiny_instances() -> None:
    assign = assignment_qubo([1, 2], [1, 1], [[1, 2], [2, 1]])
    route = shortest_path_qubo(4, [(0, 1, 1), (1, 3, 1), (0, 2, 1), (2, 3, 2), (1, 2, 1)], 0, 3)
    assert route.problem.num_vars <= 6
    for enc in (assign, route):
        optimum = enc.problem.brute_force()[0]
        for method in ("qaoa", "vqe"):
            sol = solve(enc.problem, method, seed=0)
            assert sol.method == method
            assert enc.decode(sol.bits).feasible, method
            assert sol.value >= optimum - 1e-9
            assert sol.details["optimum"] == pytest.approx(optimum)
            assert sol.optimum_known == (abs(sol.value - optimum) < 1e-9)
            assert sol.evaluations > 0


def test_vqe_and_qaoa_respect_maximisation() -> None:
    square = QuboProblem.maxcut(4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    for method in ("vqe", "qaoa"):
        sol = solve(square, method, seed=0)
        assert sol.value <= 4.0
        assert sol.details["optimum"] == 4.0
    assert solve(square, "vqe", seed=0).value == 4.0


def test_solver_errors() -> None:
    big = QuboProblem(QUANTUM_LIMIT + 1, {0: 1.0})
    for method in ("qaoa", "vqe"):
        with pytest.raises(QuantumError, match="at most 20 variables"):
            solve(big, method)
    with pytest.raises(QuantumError, match="at most 24 variables"):
        solve(QuboProblem(25, {0: 1.0}), "exact")
    small = QuboProblem(2, {0: 1.0})
    with pytest.raises(QuantumError, match="unknown method"):
        solve(small, "magic")
    with pytest.raises(QuantumError, match="unknown option"):
        solve(small, "annealing", sweep=10)
    with pytest.raises(QuantumError, match="unknown option"):
        solve(small, "exact", p=1)
    with pytest.raises(QuantumError, match="positive integers"):
        solve(small, "annealing", sweeps=0)
    with pytest.raises(QuantumError, match="temperatures"):
        solve(small, "annealing", t_start=-1.0)
    with pytest.raises(QuantumError, match="QuboProblem"):
        solve("not a problem")  # type: ignore[arg-type]
