"""Placing task replicas on workers: one problem, one interface, four solvers.

The model. Worker w has ``slots`` parallel process slots, a ``backlog`` (seconds of work already
queued), a round-trip time and a ``score`` in [0, 1] from past verification. An item (one
replica of one task) takes ``seconds`` of one slot. Worker w finishes its items at

    finish(w) = rtt(w) + (backlog(w) + sum of its items' seconds) / (slots(w) * reliability(w))

with reliability = max(score, 0.1): a worker that was caught returning wrong results looks
slower, so it gets less work but is never the only choice. The objective is the **makespan**,
the largest finish over the workers that got items. Constraints: an item needs a worker with
enough qubits and every feature it needs (a device target, Qiskit: ``qiz.compute.devices``),
and the replicas of one task go to distinct workers.

Solvers (``solve(problem, method)``):

* ``greedy``: longest item first, each to the worker that would finish it earliest (LPT; within
  4/3 of the optimum for identical workers, Graham 1969). Microseconds; the scheduler's default.
* ``annealing``: simulated annealing from the greedy answer (move and swap steps, seeded).
* ``exact``: depth-first branch and bound, for small instances (refused above ``EXACT_NODES``).
* ``qaoa``: the placement as a QUBO (``qiz.quantum.problems.netopt.assignment_qubo``: a quadratic
  balance proxy for the makespan plus RTT costs) solved by QAOA on the state-vector engine, at
  most ``QAOA_VARIABLES`` variables. The QUBO knows neither backlogs nor the distinct-replica
  rule, so its answer is repaired greedily; the makespan is always computed from the model.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

METHODS = ("greedy", "annealing", "exact", "qaoa")
SECONDS_PER_UNIT = 1 / 3e8  # Shape.work units per second on one core (measured order)
TASK_OVERHEAD = 0.01  # seconds: offer, process hand-off and delivery of a tiny task
EXACT_NODES = 2_000_000
QAOA_VARIABLES = 16
MIN_RELIABILITY = 0.1


class PlacementError(ValueError):
    """The instance cannot be placed (no eligible worker) or is too large for the solver."""


class _Work(Protocol):
    @property
    def work(self) -> float: ...


def estimate_seconds(task: _Work) -> float:
    """Seconds one core needs for a task (a :class:`qiz.compute.spec.Task`): the model's
    item size, and the yardstick for stragglers."""
    return TASK_OVERHEAD + task.work * SECONDS_PER_UNIT


@dataclass(frozen=True)
class WorkerInfo:
    slots: int
    max_qubits: int
    backlog: float = 0.0
    rtt: float = 0.0
    score: float = 1.0
    features: frozenset[str] = frozenset()  # what it can run besides plain circuits

    @property
    def rate(self) -> float:
        return self.slots * max(self.score, MIN_RELIABILITY)


@dataclass(frozen=True)
class Item:
    task: int  # replicas of one task share this and must land on distinct workers
    seconds: float
    qubits: int
    needs: frozenset[str] = frozenset()  # features its worker must offer (a target, qiskit)

    def fits(self, worker: WorkerInfo) -> bool:
        """Whether ``worker`` has the qubits and the features this item needs."""
        return worker.max_qubits >= self.qubits and self.needs <= worker.features


@dataclass(frozen=True)
class PlacementProblem:
    items: tuple[Item, ...]
    workers: tuple[WorkerInfo, ...]
    excluded: tuple[frozenset[int], ...] = ()  # per item: workers it must avoid (retries)

    def eligible(self, item: int) -> list[int]:
        it = self.items[item]
        banned = self.excluded[item] if self.excluded else frozenset()
        return [w for w, info in enumerate(self.workers) if it.fits(info) and w not in banned]

    def finish_times(self, assignment: Sequence[int]) -> list[float]:
        load = [0.0] * len(self.workers)
        used = [False] * len(self.workers)
        for item, w in zip(self.items, assignment, strict=True):
            load[w] += item.seconds
            used[w] = True
        return [
            info.rtt + (info.backlog + load[w]) / info.rate if used[w] else 0.0
            for w, info in enumerate(self.workers)
        ]

    def makespan(self, assignment: Sequence[int]) -> float:
        return max(self.finish_times(assignment), default=0.0)

    def valid(self, assignment: Sequence[int]) -> bool:
        seen: set[tuple[int, int]] = set()
        for i, w in enumerate(assignment):
            key = (self.items[i].task, w)
            if w not in self.eligible(i) or key in seen:
                return False
            seen.add(key)
        return True


@dataclass(frozen=True)
class Placement:
    assignment: tuple[int, ...]  # worker index per item
    makespan: float
    method: str
    seconds: float
    optimal: bool  # proven optimal (exact only)


def solve(problem: PlacementProblem, method: str = "greedy", *, seed: int = 0) -> Placement:
    """Place every item; PlacementError if some item has no eligible distinct worker."""
    if method not in METHODS:
        raise PlacementError(f"unknown placement method {method!r}: use {', '.join(METHODS)}")
    if not problem.items:
        return Placement((), 0.0, method, 0.0, True)
    started = time.perf_counter()
    optimal = False
    if method == "greedy":
        assignment = _greedy(problem)
    elif method == "annealing":
        assignment = _anneal(problem, _greedy(problem), seed)
    elif method == "exact":
        assignment = _exact(problem)
        optimal = True
    else:
        assignment = _qaoa(problem, seed)
    return Placement(
        tuple(assignment),
        problem.makespan(assignment),
        method,
        time.perf_counter() - started,
        optimal,
    )


def _order(problem: PlacementProblem) -> list[int]:
    return sorted(range(len(problem.items)), key=lambda i: (-problem.items[i].seconds, i))


def _place(problem: PlacementProblem, order: Sequence[int], assignment: list[int]) -> list[int]:
    """Greedy completion: each item in ``order`` to the worker that finishes it earliest."""
    load = [0.0] * len(problem.workers)
    holds: set[tuple[int, int]] = set()
    for i, w in enumerate(assignment):
        if w >= 0:
            load[w] += problem.items[i].seconds
            holds.add((problem.items[i].task, w))
    for i in order:
        if assignment[i] >= 0:
            continue
        item = problem.items[i]
        best, best_finish = -1, math.inf
        for w in problem.eligible(i):
            if (item.task, w) in holds:
                continue
            info = problem.workers[w]
            finish = info.rtt + (info.backlog + load[w] + item.seconds) / info.rate
            if finish < best_finish - 1e-12:
                best, best_finish = w, finish
        if best < 0:
            extra = f" and {', '.join(sorted(item.needs))}" if item.needs else ""
            raise PlacementError(
                f"task {item.task} needs {item.qubits} qubits{extra} on a distinct worker; "
                "none is left"
            )
        assignment[i] = best
        load[best] += item.seconds
        holds.add((item.task, best))
    return assignment


def _greedy(problem: PlacementProblem) -> list[int]:
    return _place(problem, _order(problem), [-1] * len(problem.items))


def _anneal(problem: PlacementProblem, start: list[int], seed: int) -> list[int]:
    """Metropolis over move and swap steps; the energy is the makespan plus a tiny sum of
    squared finish times (so that steps that do not move the makespan still have a slope)."""
    rng = random.Random(seed)
    items, workers = problem.items, problem.workers
    eligible = [problem.eligible(i) for i in range(len(items))]
    assign = list(start)
    load = [0.0] * len(workers)
    count = [0] * len(workers)
    holds: set[tuple[int, int]] = set()
    for i, w in enumerate(assign):
        load[w] += items[i].seconds
        count[w] += 1
        holds.add((items[i].task, w))

    def energy() -> float:
        finishes = [
            info.rtt + (info.backlog + load[w]) / info.rate if count[w] else 0.0
            for w, info in enumerate(workers)
        ]
        return max(finishes) + 1e-6 * sum(f * f for f in finishes)

    def shift(i: int, old: int, new: int) -> None:
        load[old] -= items[i].seconds
        count[old] -= 1
        holds.discard((items[i].task, old))
        load[new] += items[i].seconds
        count[new] += 1
        holds.add((items[i].task, new))
        assign[i] = new

    def propose() -> list[tuple[int, int, int]]:
        """Apply a random valid move or swap; return how to undo it (empty: none found)."""
        i = rng.randrange(len(items))
        if rng.random() < 0.5 or len(items) < 2:
            old, new = assign[i], rng.choice(eligible[i])
            if new == old or (items[i].task, new) in holds:
                return []
            shift(i, old, new)
            return [(i, new, old)]
        j = rng.randrange(len(items))
        wi, wj = assign[i], assign[j]
        ti, tj = items[i].task, items[j].task
        if wi == wj or ti == tj or wj not in eligible[i] or wi not in eligible[j]:
            return []
        if (ti, wj) in holds or (tj, wi) in holds:
            return []
        shift(i, wi, wj)
        shift(j, wj, wi)
        return [(j, wi, wj), (i, wj, wi)]

    e_cur = energy()
    best, e_best = list(assign), e_cur
    steps = min(50_000, 200 * len(items) * len(workers))
    t0 = max(e_cur * 0.05, 1e-9)
    for step in range(steps):
        temperature = t0 * (1e-4 ** (step / steps))
        undo = propose()
        if not undo:
            continue
        e_new = energy()
        if e_new <= e_cur or rng.random() < math.exp((e_cur - e_new) / temperature):
            e_cur = e_new
            if e_cur < e_best:
                best, e_best = list(assign), e_cur
        else:
            for k, frm, to in undo:
                shift(k, frm, to)
    return best


def _exact(problem: PlacementProblem) -> list[int]:
    order = _order(problem)
    best = _greedy(problem)
    best_value = [problem.makespan(best)]
    assignment = [-1] * len(problem.items)
    load = [0.0] * len(problem.workers)
    holds: set[tuple[int, int]] = set()
    nodes = [0]

    def finish(w: int) -> float:
        info = problem.workers[w]
        return info.rtt + (info.backlog + load[w]) / info.rate

    def visit(depth: int, current: float) -> None:
        nodes[0] += 1
        if nodes[0] > EXACT_NODES:
            raise PlacementError(
                f"exact placement gave up after {EXACT_NODES} search nodes; use greedy or annealing"
            )
        if depth == len(order):
            if current < best_value[0] - 1e-12:
                best_value[0] = current
                best[:] = assignment
            return
        i = order[depth]
        item = problem.items[i]
        tried_empty: set[tuple[float, float, float]] = set()
        for w in problem.eligible(i):
            if (item.task, w) in holds:
                continue
            info = problem.workers[w]
            if load[w] == 0.0:  # identical idle workers are interchangeable: try one of them
                signature = (info.rtt, info.backlog, info.rate)
                if signature in tried_empty:
                    continue
                tried_empty.add(signature)
            load[w] += item.seconds
            value = max(current, finish(w))
            if value < best_value[0] - 1e-12:
                assignment[i] = w
                holds.add((item.task, w))
                visit(depth + 1, value)
                holds.discard((item.task, w))
                assignment[i] = -1
            load[w] -= item.seconds

    visit(0, 0.0)
    return best


def _qaoa(problem: PlacementProblem, seed: int) -> list[int]:
    from qiz.quantum.algorithms.solvers import solve as solve_qubo
    from qiz.quantum.problems.netopt import assignment_qubo

    items, workers = len(problem.items), len(problem.workers)
    if items * workers > QAOA_VARIABLES:
        raise PlacementError(
            f"QAOA placement takes at most {QAOA_VARIABLES} variables (items x workers); "
            f"this instance has {items * workers}"
        )
    unreachable = 1e3 * max(it.seconds for it in problem.items)  # ineligible pairs cost this
    costs = [
        [
            problem.workers[w].rtt if w in problem.eligible(i) else unreachable
            for w in range(workers)
        ]
        for i in range(items)
    ]
    encoding = assignment_qubo(
        [it.seconds for it in problem.items],
        [info.rate for info in problem.workers],
        costs,
    )
    solution = solve_qubo(encoding.problem, "qaoa", seed=seed, p=2)
    decoded = encoding.decode(solution.bits)
    assignment = [-1] * items
    holds: set[tuple[int, int]] = set()
    for i, w in enumerate(decoded.job_to_node):
        key = (problem.items[i].task, w)
        if w is not None and w in problem.eligible(i) and key not in holds:
            assignment[i] = w
            holds.add(key)
    return _place(problem, _order(problem), assignment)  # repair what the QUBO left open
