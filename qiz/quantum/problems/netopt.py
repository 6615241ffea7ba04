"""Network-optimisation problems of the mesh as QUBOs: job placement and shortest paths.

Each encoder returns an *encoding*: the ``QuboProblem`` (sense "min") that any solver in
``qiz.quantum.algorithms.solvers`` accepts, plus what is needed to read an answer back in
domain terms (``decode``) and to check it against a classical search (``objective`` /
``encode``). Keeping the domain data next to the problem means a bitstring that came back from
a remote worker can be
decoded and judged without trusting how it was produced.

Constraints become quadratic penalties ``A * violation^2``. A penalty that is too small lets an
infeasible bitstring win; one far larger than needed flattens the landscape every heuristic
solver sees (and makes QAOA's phases wrap). So ``A`` is chosen from a bound derived per encoding
and documented at each encoder (a value above which *every* infeasible bitstring is provably
worse than the best feasible one) times a margin (``PENALTY_MARGIN``, ``PATH_PENALTY_FACTOR``).
The bound is kept on the encoding (``penalty_bound``) so callers can check their own penalty.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.problems.qubo import QuboProblem, bits_of

PENALTY_MARGIN = 1.25  # automatic assignment penalty = margin * derived bound (strictly above)
# automatic path penalty = factor * derived bound. Near the bound D/2 the empty selection
# (energy 2A) sits just above the optimum D, and single-flip annealing, which must build a whole
# path one uphill arc at a time to leave it, mostly stays there. Measured with the default
# annealing on 20 runs (5x5, 8x8 and 10x10 grids, 4 seeds each): factor 1.25 left 17 runs
# infeasible, 2 left 10, 4 left 1, 8 none (but found costlier paths than 4).
PATH_PENALTY_FACTOR = 4.0
ZERO_BOUND_PENALTY = 1.0  # used when the bound is 0: any positive penalty is then enough


# -- shared helpers ---------------------------------------------------------------------------


def _finite(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise QuantumError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(v):
        raise QuantumError(f"{what} must be a finite number, not {v}")
    return v


def _given_penalty(penalty: float | None, bound: float, margin: float) -> float:
    """The caller's penalty, or ``margin`` x ``bound`` (strictly above the bound, which is >= 0)."""
    if penalty is None:
        return margin * bound if bound > 0 else ZERO_BOUND_PENALTY
    a = _finite(penalty, "penalty")
    if a <= 0:
        raise QuantumError(f"penalty must be positive, not {a}")
    return a


def _bits(assignment: int | Sequence[int], num_vars: int) -> list[int]:
    """A basis index or a 0/1 sequence, checked against the problem's size."""
    if isinstance(assignment, int | np.integer) and not isinstance(assignment, bool):
        index = int(assignment)
        if not 0 <= index < 1 << num_vars:
            raise QuantumError(f"index {index} is outside 0 .. 2^{num_vars} - 1")
        return bits_of(index, num_vars)
    bits = [int(b) for b in assignment]
    if len(bits) != num_vars:
        raise QuantumError(f"expected {num_vars} bits, got {len(bits)}")
    if any(b not in (0, 1) for b in bits):
        raise QuantumError("bits must be 0 or 1")
    return bits


# -- job-to-node assignment -------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """A decoded placement.

    ``job_to_node[j]`` is the node of job j, or None when the bitstring puts it on no node or on
    several. ``makespan`` (max over nodes of placed load / capacity) and ``link_cost`` (sum of
    c[j][node]) count only the jobs that were placed on exactly one node.
    """

    job_to_node: list[int | None]
    feasible: bool
    makespan: float
    link_cost: float


@dataclass(frozen=True)
class AssignmentEncoding:
    """``assignment_qubo``'s result: the problem plus the data to decode and judge answers."""

    problem: QuboProblem
    job_loads: tuple[float, ...]
    node_capacities: tuple[float, ...]
    link_costs: tuple[tuple[float, ...], ...]
    balance_weight: float
    cost_weight: float
    penalty: float
    penalty_bound: float
    gap_bound: float
    repair_bound: float
    target_utilisation: float

    @property
    def num_jobs(self) -> int:
        return len(self.job_loads)

    @property
    def num_nodes(self) -> int:
        return len(self.node_capacities)

    def variable(self, job: int, node: int) -> int:
        """The index of x_{job,node}: ``job * num_nodes + node``."""
        if not (0 <= job < self.num_jobs and 0 <= node < self.num_nodes):
            raise QuantumError(f"no variable for job {job} on node {node}")
        return job * self.num_nodes + node

    def encode(self, job_to_node: Sequence[int]) -> list[int]:
        """The one-hot bitstring of a complete placement."""
        self._check_map(job_to_node)
        bits = [0] * self.problem.num_vars
        for j, n in enumerate(job_to_node):
            bits[self.variable(j, int(n))] = 1
        return bits

    def objective(self, job_to_node: Sequence[int]) -> float:
        """balance_weight * sum_n (u_n - u*)^2 + cost_weight * sum_j c[j][node(j)].

        Computed from the domain, independently of the QUBO; for a complete placement it equals
        the QUBO's value (the penalty is then zero), which is what the tests check.
        """
        self._check_map(job_to_node)
        util = self._utilisation(list(job_to_node))
        balance = sum((u - self.target_utilisation) ** 2 for u in util)
        cost = sum(self.link_costs[j][int(n)] for j, n in enumerate(job_to_node))
        return self.balance_weight * balance + self.cost_weight * cost

    def decode(self, assignment: int | Sequence[int]) -> Assignment:
        """Read a bitstring (or basis index) back as a placement; feasible iff one-hot per job."""
        bits = _bits(assignment, self.problem.num_vars)
        nodes: list[int | None] = []
        for j in range(self.num_jobs):
            row = bits[j * self.num_nodes : (j + 1) * self.num_nodes]
            nodes.append(row.index(1) if sum(row) == 1 else None)
        util = self._utilisation(nodes)
        cost = sum(self.link_costs[j][n] for j, n in enumerate(nodes) if n is not None)
        return Assignment(nodes, all(n is not None for n in nodes), max(util), cost)

    def _utilisation(self, nodes: Sequence[int | None]) -> list[float]:
        load = [0.0] * self.num_nodes
        for j, n in enumerate(nodes):
            if n is not None:
                load[int(n)] += self.job_loads[j]
        return [ld / cap for ld, cap in zip(load, self.node_capacities, strict=True)]

    def _check_map(self, job_to_node: Sequence[int]) -> None:
        if len(job_to_node) != self.num_jobs:
            raise QuantumError(f"expected a node for each of {self.num_jobs} jobs")
        for j, n in enumerate(job_to_node):
            if n is None or not 0 <= int(n) < self.num_nodes:
                raise QuantumError(f"job {j}: node {n!r} is not one of 0 .. {self.num_nodes - 1}")


def assignment_qubo(
    job_loads: Sequence[float],
    node_capacities: Sequence[float],
    link_cost: Sequence[Sequence[float]],
    *,
    balance_weight: float = 1.0,
    cost_weight: float = 1.0,
    penalty: float | None = None,
) -> AssignmentEncoding:
    """Place J jobs on N nodes: balanced utilisation and cheap links, one node per job.

    Variables: x_{j,n} = 1 when job j runs on node n, at index ``j * N + n``. With
    d_{jn} = load_j / cap_n, u_n = sum_j d_{jn} x_{jn} (node n's utilisation, i.e. its finishing
    time when it serves load at rate cap_n) and u* = sum_j load_j / sum_n cap_n (the utilisation
    every node would have under a perfectly proportional split), the objective is

        P(x) = balance_weight * sum_n (u_n - u*)^2 + cost_weight * sum_{j,n} c_{jn} x_{jn}
        F(x) = P(x) + A * sum_j (1 - sum_n x_{jn})^2.

    The balance term is the quadratic makespan proxy: the *fixed* target u* (rather than the
    mean of the u_n, or sum u_n^2) is what makes it zero exactly at equal utilisation, so with
    unequal capacities it does not push load onto the big nodes.

    Penalty bound (``penalty=None``). Every infeasible x has sum_j (1 - s_j)^2 >= 1. Two
    sufficient conditions, each making every infeasible x strictly worse than some feasible one;
    the smaller is used:

    * gap: A > P(g) - L, where g is a greedy feasible placement (so P(g) >= min feasible P) and
      L = cost_weight * sum min(c_{jn}, 0) <= P(x) for every x (the balance term is >= 0);
    * repair: A > max(R1, R2), which makes every one-bit repair step lower F. R1 bounds removing
      a duplicate placement of job j from node n (the violation drops by 2 s_j - 3 >= 1):
      R1 = max_{j,n} [-cost_weight c_{jn} + balance_weight d_{jn} (2 u* - d_{jn})], using
      u_n >= d_{jn}. R2 bounds placing an unplaced job once every job is on at most one node
      (so u_n <= (T - load_j) / cap_n, T the total load), on its best node:
      R2 = max_j min_n [cost_weight c_{jn} + balance_weight d_{jn} (2 ((T - load_j)/cap_n - u*)
      + d_{jn})]. Repeating the steps reaches a feasible placement with strictly lower F.

    The repair bound is per job where the gap bound grows with the whole objective, so it is
    usually the smaller one on larger instances (``gap_bound``/``repair_bound`` keep both).
    ``penalty`` = ``PENALTY_MARGIN`` x max(0, min of the two) (1.0 if that is 0).
    """
    loads = [_finite(v, f"load of job {j}") for j, v in enumerate(job_loads)]
    caps = [_finite(v, f"capacity of node {n}") for n, v in enumerate(node_capacities)]
    if not loads:
        raise QuantumError("at least one job is needed")
    if not caps:
        raise QuantumError("at least one node is needed")
    if any(v < 0 for v in loads):
        raise QuantumError("job loads must not be negative")
    if any(v <= 0 for v in caps):
        raise QuantumError("node capacities must be positive")
    bw = _finite(balance_weight, "balance_weight")
    cw = _finite(cost_weight, "cost_weight")
    if bw < 0 or cw < 0:
        raise QuantumError("balance_weight and cost_weight must not be negative")
    inst = _Placement(loads, caps, _cost_table(link_cost, len(loads), len(caps)), bw, cw)
    gap, repair = inst.gap_bound(), inst.repair_bound()
    bound = max(0.0, min(gap, repair))
    a = _given_penalty(penalty, bound, PENALTY_MARGIN)
    return AssignmentEncoding(
        inst.qubo(a),
        tuple(loads),
        tuple(caps),
        tuple(tuple(r) for r in inst.costs),
        bw,
        cw,
        a,
        bound,
        gap,
        repair,
        inst.target,
    )


def _cost_table(link_cost: Sequence[Sequence[float]], jobs: int, nodes: int) -> list[list[float]]:
    if isinstance(link_cost, np.ndarray):
        rows = link_cost.tolist()
    else:
        try:
            rows = [list(r) for r in link_cost]
        except TypeError:
            raise QuantumError("link_cost must be a jobs x nodes table of numbers") from None
    if len(rows) != jobs or any(not isinstance(r, list) or len(r) != nodes for r in rows):
        raise QuantumError(f"link_cost must be {jobs} rows (jobs) of {nodes} numbers (nodes)")
    return [
        [_finite(v, f"link cost of job {j} on node {n}") for n, v in enumerate(r)]
        for j, r in enumerate(rows)
    ]


@dataclass
class _Placement:
    """The validated assignment instance, with the bounds and the QUBO built from it."""

    loads: list[float]
    caps: list[float]
    costs: list[list[float]]
    bw: float
    cw: float

    def __post_init__(self) -> None:
        self.total = sum(self.loads)
        self.target = self.total / sum(self.caps)
        self.d = [[ld / cap for cap in self.caps] for ld in self.loads]

    def objective(self, nodes: Sequence[int]) -> float:
        placed = [0.0] * len(self.caps)
        for j, n in enumerate(nodes):
            placed[n] += self.loads[j]
        balance = sum((p / c - self.target) ** 2 for p, c in zip(placed, self.caps, strict=True))
        return self.bw * balance + self.cw * sum(self.costs[j][n] for j, n in enumerate(nodes))

    def greedy(self) -> list[int]:
        """Largest job first, each on the node that raises P least: a cheap, decent placement."""
        placed = [0.0] * len(self.caps)
        nodes = [0] * len(self.loads)
        for j in sorted(range(len(self.loads)), key=lambda k: -self.loads[k]):

            def delta(n: int, j: int = j) -> float:
                before = (placed[n] / self.caps[n] - self.target) ** 2
                after = ((placed[n] + self.loads[j]) / self.caps[n] - self.target) ** 2
                return self.bw * (after - before) + self.cw * self.costs[j][n]

            best = min(range(len(self.caps)), key=delta)
            nodes[j] = best
            placed[best] += self.loads[j]
        return nodes

    def gap_bound(self) -> float:
        """P(greedy) - L with L = cost_weight * sum of the negative link costs (see above)."""
        lower = self.cw * sum(min(c, 0.0) for row in self.costs for c in row)
        return self.objective(self.greedy()) - lower

    def repair_bound(self) -> float:
        """max(R1, R2): every one-bit repair step of an infeasible x lowers F (see above)."""
        jobs, nodes = range(len(self.loads)), range(len(self.caps))
        d, c, t = self.d, self.costs, self.target
        r1 = max(
            -self.cw * c[j][n] + self.bw * d[j][n] * (2 * t - d[j][n]) for j in jobs for n in nodes
        )
        r2 = max(
            min(
                self.cw * c[j][n]
                + self.bw
                * d[j][n]
                * (2 * ((self.total - self.loads[j]) / self.caps[n] - t) + d[j][n])
                for n in nodes
            )
            for j in jobs
        )
        return max(r1, r2)

    def qubo(self, a: float) -> QuboProblem:
        num_nodes = len(self.caps)
        linear: dict[int, float] = {}
        quad: dict[tuple[int, int], float] = {}
        offset = 0.0
        for j in range(len(self.loads)):
            # A (1 - s_j)^2 = A (1 - sum_n x_jn + 2 sum_{n<m} x_jn x_jm), using x^2 = x
            offset += a
            for n in range(num_nodes):
                i = j * num_nodes + n
                linear[i] = linear.get(i, 0.0) - a + self.cw * self.costs[j][n]
                for m in range(n + 1, num_nodes):
                    quad[(i, j * num_nodes + m)] = 2 * a
        for n in range(num_nodes):
            # bw (sum_j d_jn x_jn - u*)^2 = bw (sum_j d_jn^2 x_jn + 2 sum_{j<k} d_jn d_kn x_jn x_kn
            #                                    - 2 u* sum_j d_jn x_jn + u*^2)
            offset += self.bw * self.target**2
            for j in range(len(self.loads)):
                i = j * num_nodes + n
                dj = self.d[j][n]
                linear[i] += self.bw * (dj * dj - 2 * self.target * dj)
                for k in range(j + 1, len(self.loads)):
                    quad[(i, k * num_nodes + n)] = 2 * self.bw * dj * self.d[k][n]
        return QuboProblem(len(linear), linear, quad, offset, "min", "assignment")


# -- shortest path ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """A decoded route.

    ``feasible`` means the selected arcs satisfy flow conservation exactly (the QUBO's penalty is
    zero). Such a selection is always one source->target path plus zero or more cycles; the
    cycles are *dropped* (``dropped_arcs`` counts their arcs) and ``nodes`` is the cheapest
    source->target path inside the selection, with ``cost`` its weight. When conservation fails,
    ``nodes`` is None and ``cost`` is the total weight of the selected arcs.
    """

    nodes: list[int] | None
    cost: float
    feasible: bool
    dropped_arcs: int = 0


@dataclass(frozen=True)
class PathEncoding:
    """``shortest_path_qubo``'s result: variable i is arc ``arcs[i]`` = (u, v, weight)."""

    problem: QuboProblem
    num_nodes: int
    source: int
    target: int
    arcs: tuple[tuple[int, int, float], ...]
    directed: bool
    penalty: float
    penalty_bound: float
    shortest: float

    @cached_property
    def _index(self) -> dict[tuple[int, int], int]:
        return {(u, v): i for i, (u, v, _) in enumerate(self.arcs)}

    def variable(self, u: int, v: int) -> int:
        """The variable of arc u -> v (QuantumError if it has none, e.g. it was pruned)."""
        try:
            return self._index[(u, v)]
        except KeyError:
            raise QuantumError(f"arc {u} -> {v} has no variable in this encoding") from None

    def encode(self, nodes: Sequence[int]) -> list[int]:
        """The bitstring selecting the arcs of a node sequence."""
        bits = [0] * self.problem.num_vars
        for u, v in itertools.pairwise(nodes):
            bits[self.variable(int(u), int(v))] = 1
        return bits

    def path_cost(self, nodes: Sequence[int]) -> float:
        """The total weight of the arcs along ``nodes``."""
        return sum(
            self.arcs[self.variable(int(u), int(v))][2] for u, v in itertools.pairwise(nodes)
        )

    def decode(self, assignment: int | Sequence[int]) -> Path:
        """Read a bitstring (or basis index) back as a route; see ``Path`` for the rules."""
        bits = _bits(assignment, self.problem.num_vars)
        chosen = [self.arcs[i] for i, b in enumerate(bits) if b]
        balance = [0] * self.num_nodes
        for u, v, _ in chosen:
            balance[u] += 1
            balance[v] -= 1
        balance[self.source] -= 1
        balance[self.target] += 1
        if any(balance):
            return Path(None, sum(w for _, _, w in chosen), False, 0)
        found = _dijkstra(self.num_nodes, chosen, self.source, self.target)
        if found is None:  # cannot happen: a conserving selection holds a source->target path
            raise AssertionError("flow-conserving selection without a path")
        cost, nodes = found
        return Path(nodes, cost, True, len(chosen) - (len(nodes) - 1))


def shortest_path_qubo(
    num_nodes: int,
    edges: Sequence[tuple[int, int, float]],
    source: int,
    target: int,
    *,
    directed: bool = True,
    penalty: float | None = None,
    prune: bool = True,
) -> PathEncoding:
    """The cheapest source->target route as a QUBO, one binary variable per usable arc.

    ``edges`` are (u, v, weight) with weight >= 0, directed u -> v by default; with
    ``directed=False`` each edge is usable both ways and becomes two arcs (two variables).
    With ``prune`` (default), arcs that cannot lie on a simple source->target path get no
    variable: arcs into the source, out of the target, from nodes the source cannot reach, or
    to nodes that cannot reach the target. ``PathEncoding.arcs`` lists the variables' arcs.

    Objective: F(x) = sum_a w_a x_a + A sum_v (out_v(x) - in_v(x) - b_v)^2 with b = +1 at the
    source, -1 at the target, 0 elsewhere. Any selection with zero penalty is one path plus
    cycles; a cycle costs its (non-negative) weight and no penalty, so an optimum never needs
    one, and ``decode`` drops those it finds. Negative weights are refused for that reason: a
    negative cycle would be a penalty-free improvement and the optimum would not be a path.

    Penalty bound (``penalty=None``): the residuals r_v = out_v - in_v - b_v are integers that
    sum to zero over all nodes (each arc adds +1 at its tail and -1 at its head, and the b_v sum
    to zero), so an infeasible selection has at least two non-zero r_v and a penalty of at least
    2A. Its weight is >= 0, and the best feasible value is the shortest-path distance D (found
    here by Dijkstra, O(E log V)). So A > D / 2 suffices (``penalty_bound``). The automatic
    ``penalty`` is ``PATH_PENALTY_FACTOR`` x D / 2 = 2 D (1.0 if D = 0): with a penalty near the
    bound the empty selection (2A) is almost optimal and annealing rarely leaves it (see the
    constant). Without classical help, D could be replaced by any upper bound, such as the sum
    of the num_nodes - 1 largest weights.
    """
    if not isinstance(num_nodes, int | np.integer) or num_nodes < 2:
        raise QuantumError("a path problem needs at least two nodes")
    num_nodes = int(num_nodes)
    for name, node in (("source", source), ("target", target)):
        if not isinstance(node, int | np.integer) or not 0 <= node < num_nodes:
            raise QuantumError(f"{name} {node!r} is not one of the nodes 0 .. {num_nodes - 1}")
    source, target = int(source), int(target)
    if source == target:
        raise QuantumError("source and target must differ")
    arcs = _arcs(num_nodes, edges, directed)
    if prune:
        forward = _reachable(num_nodes, [(u, v) for u, v, _ in arcs], source)
        backward = _reachable(num_nodes, [(v, u) for u, v, _ in arcs], target)
        arcs = [
            (u, v, w)
            for u, v, w in arcs
            if u in forward and v in backward and v != source and u != target
        ]
    found = _dijkstra(num_nodes, arcs, source, target)
    if found is None:
        raise QuantumError(f"there is no path from node {source} to node {target}")
    shortest = found[0]
    bound = shortest / 2
    a = _given_penalty(penalty, bound, PATH_PENALTY_FACTOR)

    b = [0] * num_nodes
    b[source], b[target] = 1, -1
    incident: list[list[tuple[int, int]]] = [[] for _ in range(num_nodes)]  # (variable, sign)
    for i, (u, v, _) in enumerate(arcs):
        incident[u].append((i, 1))
        incident[v].append((i, -1))
    linear: dict[int, float] = {i: w for i, (_, _, w) in enumerate(arcs)}
    quad: dict[tuple[int, int], float] = {}
    offset = 0.0
    for v in range(num_nodes):
        # A (sum_a s_a x_a - b_v)^2 = A (sum_a x_a + 2 sum_{a<a'} s_a s_a' x_a x_a'
        #                               - 2 b_v sum_a s_a x_a + b_v^2), with s = +-1, x^2 = x
        offset += a * b[v] ** 2
        inc = incident[v]
        for p, (i, si) in enumerate(inc):
            linear[i] = linear.get(i, 0.0) + a * (1 - 2 * b[v] * si)
            for k, sk in inc[p + 1 :]:
                key = (min(i, k), max(i, k))
                quad[key] = quad.get(key, 0.0) + 2 * a * si * sk
    problem = QuboProblem(len(arcs), linear, quad, offset, "min", "shortest_path")
    return PathEncoding(
        problem, num_nodes, source, target, tuple(arcs), directed, a, bound, shortest
    )


def _arcs(
    num_nodes: int, edges: Sequence[tuple[int, int, float]], directed: bool
) -> list[tuple[int, int, float]]:
    """The validated arcs of ``edges`` (both directions of each edge unless ``directed``)."""
    arcs: list[tuple[int, int, float]] = []
    seen: set[tuple[int, int]] = set()
    for k, edge in enumerate(edges):
        try:
            u, v, w = edge
        except (TypeError, ValueError):
            raise QuantumError(f"edge {k}: expected (u, v, weight), got {edge!r}") from None
        for node in (u, v):
            if not isinstance(node, int | np.integer) or not 0 <= node < num_nodes:
                raise QuantumError(
                    f"edge {k}: node {node!r} is not one of the nodes 0 .. {num_nodes - 1}"
                )
        u, v = int(u), int(v)
        w = _finite(w, f"weight of edge {k}")
        if w < 0:
            raise QuantumError(
                f"edge {k}: weight {w} is negative; negative weights would make penalty-free "
                "cycles profitable"
            )
        if u == v:
            raise QuantumError(f"edge {k}: self-loop on node {u}")
        for a, b in ((u, v),) if directed else ((u, v), (v, u)):
            if (a, b) in seen:
                raise QuantumError(f"edge {k}: arc {a} -> {b} is given twice")
            seen.add((a, b))
            arcs.append((a, b, w))
    return arcs


def _reachable(num_nodes: int, arcs: Sequence[tuple[int, int]], start: int) -> set[int]:
    out: list[list[int]] = [[] for _ in range(num_nodes)]
    for u, v in arcs:
        out[u].append(v)
    seen = {start}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in out[u]:
            if v not in seen:
                seen.add(v)
                queue.append(v)
    return seen


def _dijkstra(
    num_nodes: int, arcs: Sequence[tuple[int, int, float]], source: int, target: int
) -> tuple[float, list[int]] | None:
    """(distance, node list) of a cheapest source->target path over ``arcs``, or None."""
    out: list[list[tuple[int, float]]] = [[] for _ in range(num_nodes)]
    for u, v, w in arcs:
        out[u].append((v, w))
    dist = {source: 0.0}
    prev: dict[int, int] = {}
    heap = [(0.0, source)]
    done: set[int] = set()
    while heap:
        d, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if u == target:
            nodes = [target]
            while nodes[-1] != source:
                nodes.append(prev[nodes[-1]])
            return d, nodes[::-1]
        for v, w in out[u]:
            nd = d + w
            if v not in done and nd < dist.get(v, math.inf):
                dist[v] = nd
                prev[v] = u
                heapq.heappush(heap, (nd, v))
    return None
