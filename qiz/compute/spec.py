"""Job specs: data, never code, signed by the submitter, checked against limits on arrival.

A spec's **body** is canonical CBOR::

    {"v": 1, "kind": "qaoa" | ... | "sweep", "params": {...}, "replicas": r, "quorum": q,
     "seed": int | null, "deadline": seconds, "resources": {"qubits": n, "shots": s},
     "submitter": composite public key}

and the signed spec is ``{"body": body bytes, "sig": composite signature}`` under the context
``"qiz/job-spec/v1"``. The **job id** is SHA3-256 over a domain tag and the body bytes, so
submitting the same spec twice names the same job (resubmission is idempotent) while two
submitters never collide. ML-DSA signatures are randomised, which is why the id does not cover
the signature.

A **sweep** is ``{"kind": "sweep", "params": {"over": KIND, "base": {...}, "axes": {PATH:
[values]}, "shard": points per task}}``: the product of the axes (in canonical key order, the
last key varying fastest) applied to ``base`` by dotted path, split into tasks of ``shard``
points. Every other kind is a single task.

``seed`` null asks for independent randomness per replica; it is allowed only for the sampled
kinds (sampler, grover), whose replicas are then compared statistically.

**Inputs by content id.** A kind's text input (``INPUT_FIELDS``: a QASM program, a Hamiltonian,
a graph, a CNF) may be given as ``{"cid": "qizc1..."}``, content in the storage pool. The body
(and so the job id and the submitter's signature) covers the content id, and the content id
covers the bytes, so the input is as fixed as inline text. Whoever checks or runs the spec
fetches the text first (:mod:`qiz.compute.inputs`) and passes it to :func:`parse` as
``inputs``; the tasks then carry the text, the body keeps the reference.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qiz import wire
from qiz.compute import circuits, execute, gradient_kind, kernel_kind
from qiz.compute.errors import SpecError
from qiz.crypto.composite import CompositePublicKey
from qiz.crypto.errors import InvalidIdentifier, InvalidKey, InvalidSignature
from qiz.crypto.ids import ContentId, NodeId
from qiz.identity import NodeIdentity

SPEC_CONTEXT = "qiz/job-spec/v1"
JOB_ID_TAG = b"qiz/job-id/v1\x00"
FORMAT = 1
TOP_FIELDS = {"kind", "params", "replicas", "quorum", "seed", "deadline", "resources"}
SWEEP_FIELDS = {"over", "base", "axes", "shard"}
DEFAULT_SHARD = 8  # sweep points per task
# every whole number in a spec fits a signed 64-bit SQLite INTEGER (seeds and sizes are stored
# as such): anything outside is refused by name before it can overflow a column or the encoder
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# a body is ``{..., "params": {...}}``: params sits one level below the body, and the wire
# codec refuses nesting deeper than wire.cbor.DEFAULT_MAX_DEPTH; the same cap is checked here on
# the user's document first, so the error names the field instead of coming from the encoder
MAX_NESTING = 16
# how a spec check measures one run: execute.shape, or (in the node) the shapes a limited
# checker process measured (qiz.compute.checker), so the node's own process never parses QASM
Measure = Callable[[str, Any, str, int], "execute.Shape"]
# the text inputs a spec may name by content id ({"cid": "qizc1..."}), per kind
INPUT_FIELDS: dict[str, tuple[str, ...]] = {
    "sampler": ("qasm",),
    "estimator": ("qasm",),
    "vqe": ("hamiltonian",),
    "qaoa": ("graph",),
    "grover": ("cnf",),
}
INPUT_REF = "cid"
# what a sweep may vary, per kind: angles and input values, which never change a task's size
SWEEPABLE = {
    "qaoa": ("gammas", "betas"),
    "vqe": ("theta",),
    "sampler": ("inputs",),
    "estimator": ("inputs",),
}


@dataclass(frozen=True)
class Limits:
    """What one node accepts. ``max_qubits`` comes from the node's memory (see ``capacity``)."""

    max_spec_bytes: int = 256 * 1024
    max_qubits: int = 26
    max_instructions: int = 200_000
    max_shots: int = 1_000_000
    max_points: int = 4096
    max_replicas: int = 7
    max_deadline: int = 7 * 24 * 3600
    max_work: float = 2.0**46  # Shape.work over all points: about a day at the estimated rate


@dataclass(frozen=True)
class Task:
    """One schedulable unit: a whole job, or one shard of a sweep's points."""

    index: int
    kind: str
    params: dict
    points: tuple[dict, ...] | None  # None: not a sweep
    shape: execute.Shape

    @property
    def work(self) -> float:
        return self.shape.work * (len(self.points) if self.points is not None else 1)


@dataclass(frozen=True)
class JobSpec:
    """A signed spec that passed every check; ``raw`` is what travels and is stored."""

    raw: bytes
    body: dict
    body_bytes: bytes
    job_id: bytes
    submitter: NodeId
    tasks: tuple[Task, ...] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def replicas(self) -> int:
        return self.body["replicas"]

    @property
    def quorum(self) -> int:
        return self.body["quorum"]

    @property
    def seed(self) -> int | None:
        return self.body["seed"]

    @property
    def deadline(self) -> int:
        return self.body["deadline"]

    @property
    def sampled(self) -> bool:
        base = self.body["params"]["over"] if self.kind == "sweep" else self.kind
        return base in execute.SAMPLED_KINDS or base == circuits.KIND

    @property
    def num_qubits(self) -> int:
        return max(t.shape.num_qubits for t in self.tasks)


def job_id_of(body_bytes: bytes) -> bytes:
    return hashlib.sha3_256(JOB_ID_TAG + body_bytes).digest()


def job_id_text(job_id: bytes) -> str:
    return job_id.hex()


def parse_job_id(text: str) -> bytes:
    """A job id from its hex form (64 digits) or a unique prefix is resolved by the caller."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SpecError(f"{text!r} is not a job id (64 hex digits)") from None
    if len(raw) != 32:
        raise SpecError(f"{text!r} is not a job id (64 hex digits)")
    return raw


# ----------------------------------------------------------------------------- building


def make_body(document: Mapping[str, Any], submitter: NodeIdentity) -> dict:
    """The spec body of a user's document (a JSON object): defaults filled in, submitter set."""
    if not isinstance(document, Mapping):
        raise SpecError("a job spec is a JSON object with kind and params")
    unknown = sorted(set(document) - TOP_FIELDS)
    if unknown:
        raise SpecError(
            f"{unknown[0]}: not a job spec field (known: {', '.join(sorted(TOP_FIELDS))})"
        )
    kind = document.get("kind")
    replicas = document.get("replicas", 2)
    sampled_kind = kind in (*execute.SAMPLED_KINDS, circuits.KIND) or (
        kind == "sweep"
        and isinstance(document.get("params"), Mapping)
        and document["params"].get("over") in execute.SAMPLED_KINDS
    )
    default_seed = None if sampled_kind else 0
    body = {
        "v": FORMAT,
        "kind": _plain(kind, "kind", 1),
        "params": _plain(document.get("params"), "params", 1),
        "replicas": _plain(replicas, "replicas", 1),
        "quorum": _plain(
            document.get("quorum", replicas if isinstance(replicas, int) else 1), "quorum", 1
        ),
        "seed": _plain(document.get("seed", default_seed), "seed", 1),
        "deadline": _plain(document.get("deadline", 3600), "deadline", 1),
        "resources": _plain(document.get("resources", {}), "resources", 1),
        "submitter": submitter.public_key.raw,
    }
    return body


def _plain(value: Any, path: str, depth: int) -> Any:
    """JSON data as CBOR-ready plain data, each refusal naming its field: NaN and infinities
    (JSON allows them), whole numbers outside the signed 64-bit range, nesting deeper than
    ``MAX_NESTING`` (``depth`` is the value's level in the body). The depth is checked before
    each step down, so a document nested thousands deep is refused, never a RecursionError."""
    if depth > MAX_NESTING:
        raise SpecError(f"{path}: nested deeper than {MAX_NESTING} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{path}: must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise SpecError(f"{path}: {_digits(value)} is outside the 64-bit range")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def _digits(value: int) -> str:
    """A huge number for an error line: short (and never str() of a 5,000-digit int, which
    Python refuses)."""
    if value < 0:
        return f"-2^{(-value).bit_length() - 1} or less"
    return f"2^{value.bit_length() - 1} or more"


def sign(body: dict, identity: NodeIdentity) -> bytes:
    """The signed spec bytes. The body's submitter must be ``identity``."""
    if body.get("submitter") != identity.public_key.raw:
        raise SpecError("the spec's submitter is not the signing identity")
    body_bytes = wire.encode(body)
    return wire.encode({"body": body_bytes, "sig": identity.sign(body_bytes, SPEC_CONTEXT)})


# ----------------------------------------------------------------------------- checking


def parse(
    raw: Any,
    limits: Limits | None = None,
    measure: Measure | None = None,
    inputs: Mapping[str, str] | None = None,
    *,
    unresolved: bool = False,
) -> JobSpec:
    """Decode, verify the submitter's signature, and check every field against ``limits``.

    ``measure`` (default :func:`execute.shape`) parses circuits and Hamiltonians: the costly,
    attacker-shaped part. The node passes the shapes its limited checker process measured.
    ``inputs`` maps the content ids the spec names (text form) to their fetched text.
    ``unresolved`` leaves content-id inputs unfetched and unmeasured: for checking what was
    signed (an attestation), never for running."""
    limits = limits or Limits()
    body, body_bytes, key = _open(raw, limits)
    tasks = check_body(body, limits, measure, inputs, unresolved=unresolved)
    return JobSpec(
        raw, body, body_bytes, job_id_of(body_bytes), NodeId.from_public_key(key.raw), tasks
    )


def input_refs(raw: Any, limits: Limits | None = None) -> list[tuple[str, ContentId]]:
    """The content ids a signed spec names as inputs, each with its field's path (checked:
    the envelope, the signature and the reference's form; not the rest). A spec without the
    text ``cid`` anywhere in its bytes names none and costs no decoding."""
    limits = limits or Limits()
    if isinstance(raw, bytes) and b"\x63cid" not in raw:  # CBOR text "cid": 0x63 'c' 'i' 'd'
        return []
    body, _, _ = _open(raw, limits)
    kind = body["kind"]
    params = body["params"]
    path = "params"
    if kind == "sweep" and isinstance(params, dict):
        kind, params, path = params.get("over"), params.get("base"), "params.base"
    if not isinstance(kind, str) or not isinstance(params, dict):
        return []
    return [(f"{path}.{name}", cid) for name, cid in _refs(kind, params, path)]


def _refs(kind: str, params: Mapping[str, Any], path: str) -> list[tuple[str, ContentId]]:
    """The ``{"cid": ...}`` references among ``kind``'s text inputs, each checked in form."""
    found = []
    for name in INPUT_FIELDS.get(kind, ()):
        value = params.get(name)
        if not isinstance(value, dict):
            continue
        text = value.get(INPUT_REF)
        if set(value) != {INPUT_REF} or not isinstance(text, str):
            raise SpecError(f'{path}.{name}: text, or {{"cid": "qizc1..."}} naming stored content')
        try:
            cid = ContentId.parse(text)
        except InvalidIdentifier as exc:
            raise SpecError(f"{path}.{name}: {exc}") from None
        if str(cid) != text:
            raise SpecError(f"{path}.{name}: write the content id without spaces")
        found.append((name, cid))
    return found


def _resolve(
    kind: str,
    params: Any,
    path: str,
    inputs: Mapping[str, str] | None,
    unresolved: bool,
) -> tuple[Any, bool]:
    """``params`` with each content-id input replaced by its fetched text, and whether any
    reference was left in place (``unresolved``)."""
    if not isinstance(params, dict) or kind not in INPUT_FIELDS:
        return params, False
    refs = _refs(kind, params, path)
    if not refs:
        return params, False
    if unresolved:
        return params, True
    out = dict(params)
    for name, cid in refs:
        text = (inputs or {}).get(str(cid))
        if not isinstance(text, str):
            raise SpecError(f"{path}.{name}: input {cid} was not fetched before the check")
        out[name] = text
    return out, False


def _open(raw: Any, limits: Limits) -> tuple[dict, bytes, CompositePublicKey]:
    """The envelope decoded and the submitter's signature verified: body, its bytes, key."""
    if not isinstance(raw, bytes):
        raise SpecError("a signed job spec is a byte string")
    if len(raw) > limits.max_spec_bytes:
        raise SpecError(
            f"the spec is {len(raw)} bytes; this node takes at most {limits.max_spec_bytes}"
        )
    try:
        envelope = wire.decode(raw, max_size=limits.max_spec_bytes, what="job spec")
    except wire.WireError as exc:
        raise SpecError(str(exc)) from None
    if not isinstance(envelope, dict) or set(envelope) != {"body", "sig"}:
        raise SpecError(
            "the spec is not signed: expected {body, sig} (sign it with 'qiz job submit')"
        )
    body_bytes, sig = envelope["body"], envelope["sig"]
    if not isinstance(body_bytes, bytes) or not isinstance(sig, bytes):
        raise SpecError("the spec's body and signature must be byte strings")
    try:
        body = wire.decode(body_bytes, max_size=limits.max_spec_bytes, what="job spec body")
    except wire.WireError as exc:
        raise SpecError(str(exc)) from None
    if not isinstance(body, dict) or body.get("v") != FORMAT:
        raise SpecError(f"the spec body is not format {FORMAT}")
    if set(body) != TOP_FIELDS | {"v", "submitter"}:
        raise SpecError("the spec body does not have the expected fields")
    try:
        key = CompositePublicKey(body["submitter"])
        key.verify(sig, body_bytes, SPEC_CONTEXT)
    except (InvalidKey, TypeError):
        raise SpecError("the spec's submitter key is malformed") from None
    except InvalidSignature:
        raise SpecError("the spec's signature does not verify (altered after signing?)") from None
    return body, body_bytes, key


def _count(body: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{key}: must be a whole number from {lo} to {hi}")
    return value


def check_body(
    body: Mapping[str, Any],
    limits: Limits,
    measure: Measure | None = None,
    inputs: Mapping[str, str] | None = None,
    *,
    unresolved: bool = False,
) -> tuple[Task, ...]:
    """Every check but the signature; the tasks the job splits into (their params carry the
    fetched text of content-id inputs; see :func:`parse`)."""
    replicas = _count(body, "replicas", 1, limits.max_replicas)
    _count(body, "quorum", 1, replicas)
    _count(body, "deadline", 1, limits.max_deadline)
    seed = body["seed"]
    if seed is not None and (
        not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63
    ):
        raise SpecError("seed: must be a whole number from 0 to 2^63 - 1, or null")
    kind = body["kind"]
    if kind == circuits.KIND:
        return _circuits(body, limits, measure, seed is not None)
    if kind == kernel_kind.KIND:
        return _kernel(body, limits, seed is not None)
    if kind == gradient_kind.KIND:
        return _gradient(body, limits, seed is not None)
    if kind == "sweep":
        over, base, points, shard = _sweep(body["params"], limits)
    else:
        over, base, points, shard = kind, body["params"], None, 1
    if not isinstance(over, str) or over not in execute.KINDS:
        shown = repr(over[:40]) if isinstance(over, str) else f"a {type(over).__name__}"
        if kind == "sweep":
            raise SpecError(f"params.over: {shown} is not one of {', '.join(execute.KINDS)}")
        raise SpecError(
            f"kind: {shown} is not one of {', '.join(execute.KINDS)}, sweep, circuits, kernel "
            "or gradient"
        )
    if seed is None and over not in execute.SAMPLED_KINDS:
        raise SpecError(
            f"seed: null (independent replicas) is only for sampler and grover, not {over}"
        )
    _check_resources(body["resources"])
    path = "params" if points is None else "params.base"
    base, left = _resolve(over, base, path, inputs, unresolved)
    if left:  # a reference left unfetched is not measured: nothing runs from this spec
        measure = _unmeasured
    tasks: list[Task] = []
    if points is None:
        tasks.append(Task(0, over, base, None, _shape(over, base, path, limits, measure)))
    else:
        _check_axes(over, points[0])
        # axes only move angles and input values (never sizes), so one full check of the
        # first point holds for all; every other point is checked for its paths and numbers
        first = execute.apply_point(base, points[0])
        shape = _shape(over, first, path, limits, measure)
        for point in points[1:]:
            execute.apply_point(base, point)
        for index, start in enumerate(range(0, len(points), shard)):
            tasks.append(Task(index, over, base, tuple(points[start : start + shard]), shape))
    total = sum(t.work for t in tasks)
    if total > limits.max_work:
        raise SpecError(
            f"the job is about {total:.3g} units of work; this node takes {limits.max_work:.3g}"
        )
    return tuple(tasks)


def _circuits(
    body: Mapping[str, Any], limits: Limits, measure: Measure | None, seeded: bool
) -> tuple[Task, ...]:
    """A circuits job's tasks: its bounds checked, then each circuit as a sampler run (with
    its own path in errors), ``shard`` circuits per task (see :mod:`qiz.compute.circuits`)."""
    entries, shard = circuits.check(body["params"], seeded, limits.max_shots)
    _check_resources(body["resources"])
    tasks: list[Task] = []
    for index, (start, part) in enumerate(circuits.tasks(entries, shard)):
        shapes = [
            _shape(
                "sampler",
                circuits.sampler_params(entry),
                f"params.circuits[{start + i}]",
                limits,
                measure,
            )
            for i, entry in enumerate(part)
        ]
        params = {"circuits": part}
        tasks.append(Task(index, circuits.KIND, params, None, circuits.total_shape(shapes)))
    total = sum(t.work for t in tasks)
    if total > limits.max_work:
        raise SpecError(
            f"the job is about {total:.3g} units of work; this node takes {limits.max_work:.3g}"
        )
    return tuple(tasks)


def _kernel(body: Mapping[str, Any], limits: Limits, seeded: bool) -> tuple[Task, ...]:
    """A kernel job's tasks: its fields and bounds checked, then blocks of ``shard`` rows of X
    (see :mod:`qiz.compute.kernel_kind`)."""
    if not seeded:
        raise SpecError("seed: null (independent replicas) is only for sampled kinds, not kernel")
    options, x, y, shard = kernel_kind.check(body["params"], limits.max_qubits)
    _check_resources(body["resources"])
    tasks = tuple(
        Task(index, kernel_kind.KIND, params, None, size)
        for index, (params, size) in enumerate(kernel_kind.tasks(options, x, y, shard))
    )
    total = sum(t.work for t in tasks)
    if total > limits.max_work:
        raise SpecError(
            f"the job is about {total:.3g} units of work; this node takes {limits.max_work:.3g}"
        )
    return tasks


def _gradient(body: Mapping[str, Any], limits: Limits, seeded: bool) -> tuple[Task, ...]:
    """A gradient job's tasks: its fields and bounds checked, then shards of ``shard`` samples
    (see :mod:`qiz.compute.gradient_kind`)."""
    if not seeded:
        raise SpecError("seed: null (independent replicas) is only for sampled kinds, not gradient")
    checked = gradient_kind.check(body["params"], limits.max_qubits)
    _check_resources(body["resources"])
    tasks = tuple(
        Task(index, gradient_kind.KIND, params, None, size)
        for index, (params, size) in enumerate(gradient_kind.tasks(checked))
    )
    total = sum(t.work for t in tasks)
    if total > limits.max_work:
        raise SpecError(
            f"the job is about {total:.3g} units of work; this node takes {limits.max_work:.3g}"
        )
    return tasks


def _unmeasured(kind: str, params: Any, path: str, max_shots: int) -> execute.Shape:
    """The shape of a task whose input was not fetched: its fields only (see ``unresolved``)."""
    return execute.Shape(0, 0, 0, 1)


def _check_axes(kind: str, point: dict[str, Any]) -> None:
    roots = SWEEPABLE.get(kind, ())
    for path in point:
        root, _, rest = path.partition(".")
        if root not in roots:
            if not roots:
                raise SpecError(f"params.axes.{path}: a {kind} job has nothing a sweep can vary")
            allowed = ", ".join(f"{r}.N" if r != "inputs" else "inputs.NAME" for r in roots)
            raise SpecError(
                f"params.axes.{path}: a {kind} sweep may only vary {allowed} "
                "(sizes, circuits and shots are fixed per job)"
            )
        if not rest:
            example = f"{root}.0" if root != "inputs" else "inputs.theta"
            raise SpecError(f"params.axes.{path}: name one value, e.g. {example}")


def _check_resources(resources: Any) -> None:
    if not isinstance(resources, dict) or set(resources) - {"qubits", "shots"}:
        raise SpecError("resources: a map with at most qubits and shots")
    for key, value in resources.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT_MAX:
            raise SpecError(f"resources.{key}: must be a whole number from 0 to 2^63 - 1")


def _shape(
    kind: str, params: Any, path: str, limits: Limits, measure: Measure | None
) -> execute.Shape:
    shape = (measure or execute.shape)(kind, params, path, limits.max_shots)
    if shape.num_qubits > limits.max_qubits:
        raise SpecError(
            f"{path}: {shape.num_qubits} qubits; "
            f"this node's memory allows at most {limits.max_qubits}"
        )
    if shape.instructions > limits.max_instructions:
        raise SpecError(
            f"{path}: {shape.instructions} instructions; the limit is {limits.max_instructions}"
        )
    return shape


def _sweep(params: Any, limits: Limits) -> tuple[Any, Any, list[dict], int]:
    if (
        not isinstance(params, dict)
        or set(params) - SWEEP_FIELDS
        or not {"over", "base", "axes"} <= set(params)
    ):
        raise SpecError("params: a sweep needs over, base and axes (and optionally shard)")
    axes = params["axes"]
    if not isinstance(axes, dict) or not axes:
        raise SpecError("params.axes: a map of dotted parameter paths to lists of values")
    names = sorted(axes)  # canonical CBOR order: the order every node sees
    count = 1
    for name in names:
        values = axes[name]
        if not isinstance(values, list) or not values:
            raise SpecError(f"params.axes.{name}: must be a non-empty list of numbers")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(f"params.axes.{name}: must be a non-empty list of numbers")
            if not math.isfinite(value):
                raise SpecError(f"params.axes.{name}: must hold finite numbers")
        count *= len(values)
        if count > limits.max_points:
            raise SpecError(f"params.axes: more than {limits.max_points} points")
    shard = params.get("shard", DEFAULT_SHARD)
    if not isinstance(shard, int) or isinstance(shard, bool) or not 1 <= shard <= limits.max_points:
        raise SpecError(f"params.shard: must be a whole number from 1 to {limits.max_points}")
    points = [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(axes[n] for n in names))
    ]
    return params["over"], params["base"], points, shard
