"""The shape a task's result must have, per kind, before it may count as a replica.

Why this exists: a worker's claim signature proves who reported a result, not that the result
is one. The quorum compares results, and an unseeded sampled job compares *counts* with a
chi-square test: counts of ``1e308`` overflowed the statistic into an "agreeing" p-value (a
liar won the vote with two honest workers), and a count that is text, or ``counts`` that is a
number, made the comparison raise, so the task could never be decided. The coordinator's core
therefore refuses, before storing it, a result whose shape is wrong for the spec:

* the fields of the kind's result (:func:`qiz.compute.execute.result_fields`), no more, no less;
* for the sampled kinds, ``counts`` is a map from bitstrings of the task's outcome width to
  whole numbers >= 1, and they sum to ``shots``, which is the spec's (or 0 for a grover search
  with no solution, which samples nothing). Honest samplers never list an outcome they did not
  draw (``sample_counts`` counts draws, the per-shot path counts shots), so a zero count can
  only pad the map: 600,000 zero-count keys once cost one chi-square test seconds in the event
  loop. With every count >= 1 a map has at most ``shots`` keys, and distinct bitstrings at
  most ``2**width``; the number of keys is checked first, before any key is looked at;
* for an estimator, one number per observable;
* for a sweep shard, a list with one such result per point, each carrying its point.

Tasks of kinds this node does not know (the simulator's sized tasks) have no shape to check.
:func:`problem` is pure and total: any value a peer sends gets an answer, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from qiz.compute import circuits, execute, gradient_kind, kernel_kind
from qiz.compute.errors import SpecError
from qiz.compute.spec import Task

MAX_SHOWN = 40  # characters of a peer's value quoted in a refusal


@dataclass(frozen=True, slots=True)
class ResultShape:
    """What one task's result must look like; built once per task from its checked spec."""

    kind: str
    fields: frozenset[str]
    width: int | None  # bits per outcome in ``counts``; None: the kind has no counts
    shots: int
    values: int | None  # an estimator's number of observables
    points: tuple[Any, ...] | None  # a sweep shard's points (canonical), or None
    circuits: tuple[ResultShape, ...] | None = None  # a circuits task's: one per circuit
    block: tuple[int, int] | None = None  # a kernel task's rows and columns
    parameters: int | None = None  # a gradient task's parameter count


def shape_of(task: Task, like: ResultShape | None = None) -> ResultShape | None:
    """The shape of ``task``'s result, or None for a kind with no known shape.

    ``like``, the shape of another task of the same job, saves the work: every task of a job
    has the same kind, base parameters and shots (a sweep varies only angles and inputs, never
    sizes or circuits), so only its points are taken from ``task``. Without it the circuit is
    parsed for its width: a sweep of thousands of one-point shards must not parse it thousands
    of times in the coordinator's event loop."""
    if task.kind == circuits.KIND:  # each task has its own circuits: never ``like``
        return _circuits_shape(task)
    if task.kind == kernel_kind.KIND:  # each task has its own block
        block = (len(task.params["x"]), len(task.params["y"]))
        return ResultShape(kernel_kind.KIND, frozenset({"rows"}), None, 0, None, None, None, block)
    if task.kind == gradient_kind.KIND:
        count = len(task.params["theta"])
        fields = frozenset({"loss", "grad"})
        return ResultShape(gradient_kind.KIND, fields, None, 0, None, None, parameters=count)
    if like is not None:
        return replace(like, points=_points(task))
    params = task.params
    if task.points:
        params = execute.apply_point(params, task.points[0])  # sizes never vary in a sweep
    fields = execute.result_fields(task.kind, params)
    if fields is None:
        return None
    try:
        width = execute.outcome_width(task.kind, params)
    except SpecError:  # cannot happen for a parsed spec; then the width is simply not checked
        width = None
    return ResultShape(
        task.kind,
        fields,
        width,
        task.shape.shots,
        execute.observables(task.kind, params),
        _points(task),
    )


def _circuits_shape(task: Task) -> ResultShape:
    """A circuits task's result: a list of sampler results, one per circuit, each of its
    circuit's width and shots."""
    fields = frozenset({"counts", "shots"})
    shapes = []
    for entry in task.params["circuits"]:
        params = circuits.sampler_params(entry)
        try:
            width = execute.outcome_width("sampler", params)
        except SpecError:  # cannot happen for a parsed spec (as in shape_of)
            width = None
        shapes.append(
            ResultShape("sampler", fields, width, int(params.get("shots", 1024)), None, None)
        )
    return ResultShape(circuits.KIND, fields, None, task.shape.shots, None, None, tuple(shapes))


def _points(task: Task) -> tuple[Any, ...] | None:
    """A sweep shard's points as its results carry them (canonical), or None."""
    if task.points is None:
        return None
    return tuple(execute.canonical(dict(p)) for p in task.points)


def problem(shape: ResultShape, result: Any) -> str | None:
    """Why ``result`` cannot be a result of a task of ``shape``, or None if it can."""
    if shape.block is not None:
        return kernel_kind.problem(*shape.block, result)
    if shape.parameters is not None:
        return gradient_kind.problem(shape.parameters, result)
    if shape.circuits is not None:
        count = len(shape.circuits)
        if not isinstance(result, list) or len(result) != count:
            return f"a task of {count} circuits needs a list of {count} results"
        for i, (item, one) in enumerate(zip(result, shape.circuits, strict=True)):
            why = _one(one, item, one.fields)
            if why is not None:
                return f"circuit {i}: {why}"
        return None
    if shape.points is None:
        return _one(shape, result, shape.fields)
    if not isinstance(result, list) or len(result) != len(shape.points):
        return f"a shard of {len(shape.points)} points needs a list of {len(shape.points)} results"
    for i, (item, point) in enumerate(zip(result, shape.points, strict=True)):
        if not isinstance(item, dict) or item.get("point") != point:
            return f"result {i} is not for point {i} of the shard"
        why = _one(shape, item, shape.fields | {"point"})
        if why is not None:
            return f"point {i}: {why}"
    return None


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _one(shape: ResultShape, result: Any, fields: frozenset[str]) -> str | None:
    if not isinstance(result, dict):
        return f"a {shape.kind} result is a map, not {type(result).__name__}"
    keys = set(result)
    if keys != fields:
        missing = ", ".join(sorted(str(k) for k in fields - keys)) or "none"
        extra = ", ".join(sorted(_show(k) for k in keys - fields)) or "none"
        return f"a {shape.kind} result's fields: missing {missing}; unexpected {extra}"
    if shape.values is not None:
        values = result["values"]
        if (
            not isinstance(values, list)
            or len(values) != shape.values
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            return f"values must be a list of {shape.values} numbers"
    if shape.width is not None:
        return counts_problem(result["counts"], result["shots"], shape)
    return None


def counts_problem(counts: Any, shots: Any, shape: ResultShape) -> str | None:
    """Why ``counts``/``shots`` are not a sample of ``shape.shots`` outcomes, or None."""
    allowed = (shape.shots, 0) if shape.kind == "grover" else (shape.shots,)
    if not _plain_int(shots) or shots not in allowed:
        return f"shots is {_show(shots)}; the spec asks for {shape.shots}"
    if not isinstance(counts, Mapping):
        return f"counts must be a map, not {type(counts).__name__}"
    most = shots if shape.width >= 64 else min(shots, 1 << shape.width)
    if len(counts) > most:
        return f"{len(counts)} outcomes; {shots} shots of {shape.width} bits give at most {most}"
    total = 0
    for outcome, count in counts.items():
        if not isinstance(outcome, str) or len(outcome) != shape.width or outcome.strip("01") != "":
            return f"outcome {_show(outcome)} is not a bitstring of {shape.width} bits"
        if not _plain_int(count) or count < 1:
            return f"the count of {outcome!r} is {_show(count)}, not a whole number >= 1"
        total += count
    if total != shots:
        return f"the counts sum to {total}, not the {shots} shots"
    return None
