"""Qiskit's primitives V2 on the mesh: ``MeshSamplerV2`` and ``MeshEstimatorV2``.

A Qiskit user keeps their script and changes the primitive's constructor::

    sampler = StatevectorSampler(seed=7)            # before
    sampler = MeshSamplerV2(Mesh(), seed=7)         # on the mesh: replicated, attested
    sampler = MeshSamplerV2(local=True, seed=7)     # on this machine's engine, no node needed

Both implement ``BaseSamplerV2``/``BaseEstimatorV2``: PUBs are coerced by Qiskit's own
``SamplerPub``/``EstimatorPub`` (so shapes, broadcasting and their errors are Qiskit's), and the
results are ``PrimitiveResult``s of ``SamplerPubResult`` (one ``BitArray`` per classical
register) or ``PubResult`` (``evs``, ``stds``), as ``StatevectorSampler``/``StatevectorEstimator``
give. Circuits are translated gate by gate (``qiz.quantum.core.from_qiskit``); what the engine
cannot run is refused by ``run`` at once, the instruction named.

On the mesh a sampler's PUBs become as few jobs as their parameter values allow: a PUB whose
distinct points form a grid (one parameter, or a broadcast of separate axes: the product of
each parameter's values) is one sweep; every other point of every PUB of one ``run`` (a PUB
without parameters is one point) is a circuit of one ``circuits`` job, each with its PUB's
seed (several jobs only past that kind's bounds: 256 circuits, 192 KiB of programs, a million
shots). The estimator's PUBs are a job, a sweep, or one job per scattered point. Every job is
seeded (the seed given, else a fresh random one), so its replicas agree exactly and the
quorum checks them bit for bit. Each PUB result's metadata keeps the jobs and their verified
attestations (``metadata["attestations"]``, :class:`qiz.client.Attestation`; ``.save(path)``
writes the file ``qiz verify-result`` checks).

Seeds follow the reference primitives: an integer seed samples every point of every PUB with
that seed (as ``StatevectorSampler`` does), a ``numpy.random.Generator`` draws one seed per PUB,
and no seed gives each PUB a fresh random one, shared by its points (a sweep runs every point
with its job's seed, so the local runs do the same).
The estimator is exact; with ``precision > 0`` it adds Gaussian noise of that standard
deviation (as ``StatevectorEstimator``) and reports it in ``stds``.

This module needs Qiskit (:class:`QiskitMissing` otherwise). It talks to a node only through
the object it is given (a :class:`qiz.client.Mesh`, or anything with its ``submit_async``): the
integrations sit below the client in the layering, so the client is passed in, never imported.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from qiz import QizError
from qiz.quantum.core.errors import CircuitError
from qiz.quantum.core.from_qiskit import Translated, translate
from qiz.quantum.core.pauli import PauliSum


class QiskitMissing(QizError, ImportError):
    """Qiskit is not installed, and this part of QIZ is a bridge to it."""


try:
    from qiskit.primitives import (
        BaseEstimatorV2,
        BaseSamplerV2,
        BitArray,
        DataBin,
        PrimitiveResult,
        PubResult,
        SamplerPubResult,
    )
    from qiskit.primitives.containers.estimator_pub import EstimatorPub
    from qiskit.primitives.containers.sampler_pub import SamplerPub
    from qiskit.primitives.primitive_job import PrimitiveJob
except ImportError as exc:
    raise QiskitMissing(
        f"qiz.integrations.qiskit needs Qiskit 2 ({exc}); install it: pip install 'qiskit>=2.0'"
    ) from None

if TYPE_CHECKING:
    from qiz.client import Mesh

__all__ = ["MeshEstimatorV2", "MeshSamplerV2", "QiskitMissing"]

Point = dict[str, float]


class _Options:
    """What both primitives share: where they run, the seed, the mesh job's fields."""

    def __init__(
        self,
        mesh: Mesh | None,
        *,
        local: bool,
        seed: int | np.random.Generator | None,
        replicas: int,
        quorum: int | None,
        deadline: int | None,
        shard: int,
        timeout: float | None,
    ) -> None:
        if local and mesh is not None:
            raise CircuitError("give a mesh or local=True, not both")
        if not local and mesh is None:
            raise CircuitError(
                "a mesh primitive needs the node to run on: pass qiz.client.Mesh() (the node of "
                "a QIZ home), or local=True to run on this machine's engine"
            )
        self.engine: _Engine = (
            _Local()
            if local
            else _OnMesh(mesh, replicas, quorum or replicas, deadline, shard, timeout)
        )
        self._seed = seed

    @property
    def seed(self) -> int | np.random.Generator | None:
        return self._seed

    def pub_seed(self) -> int:
        """The seed of one PUB's runs (see the module's notes)."""
        if isinstance(self._seed, np.random.Generator):
            return int(self._seed.integers(2**63))
        if self._seed is None:
            return secrets.randbits(63)
        return int(self._seed)


class MeshSamplerV2(BaseSamplerV2):
    """``BaseSamplerV2`` on the mesh (``mesh``), or on this machine (``local=True``).

    ``default_shots`` as ``StatevectorSampler``; ``replicas``/``quorum``/``deadline`` are the
    mesh jobs' fields (docs/jobs.md), ``shard`` the points per task of a sweep, ``timeout`` how
    long to wait for each job (None: until its deadline)."""

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        local: bool = False,
        default_shots: int = 1024,
        seed: int | np.random.Generator | None = None,
        replicas: int = 2,
        quorum: int | None = None,
        deadline: int | None = None,
        shard: int = 8,
        timeout: float | None = None,
    ) -> None:
        self._options = _Options(
            mesh,
            local=local,
            seed=seed,
            replicas=replicas,
            quorum=quorum,
            deadline=deadline,
            shard=shard,
            timeout=timeout,
        )
        self._default_shots = default_shots

    @property
    def default_shots(self) -> int:
        return self._default_shots

    @property
    def seed(self) -> int | np.random.Generator | None:
        return self._options.seed

    def run(
        self, pubs: Iterable[Any], *, shots: int | None = None
    ) -> PrimitiveJob[PrimitiveResult[SamplerPubResult]]:
        coerced = [SamplerPub.coerce(pub, shots or self._default_shots) for pub in pubs]
        if any(len(pub.circuit.cregs) == 0 for pub in coerced):
            warnings.warn(
                "One of your circuits has no output classical registers and so the result "
                "will be empty. Did you mean to add measurement instructions?",
                UserWarning,
                stacklevel=2,
            )
        work = [(pub, translate(pub.circuit), self._options.pub_seed()) for pub in coerced]
        job = PrimitiveJob(self._run, work)
        job._submit()
        return job

    def _run(self, work: list[tuple[Any, Translated, int]]) -> PrimitiveResult[SamplerPubResult]:
        async def all_pubs() -> list[SamplerPubResult]:
            points = [
                _points(pub.parameter_values, pub.circuit, c, pub.shape) for pub, c, _ in work
            ]
            measured = [i for i, (_, c, _) in enumerate(work) if c.circuit.has_measurements()]
            # every PUB at once: on the mesh their single and scattered points share jobs
            answers = await self._options.engine.sample_many(
                [(work[i][1], points[i], work[i][0].shots, work[i][2]) for i in measured]
            )
            found = dict(zip(measured, answers, strict=True))
            return [
                self._pub_result(pub, circuit, seed, len(points[i]), found.get(i))
                for i, (pub, circuit, seed) in enumerate(work)
            ]

        return PrimitiveResult(asyncio.run(all_pubs()), metadata={"version": 2})

    @staticmethod
    def _pub_result(
        pub: Any,
        circuit: Translated,
        seed: int,
        size: int,
        answer: tuple[list[dict[str, int]], dict[str, Any]] | None,
    ) -> SamplerPubResult:
        if answer is None:  # nothing is measured: every bit reads 0 (our sampler would measure all)
            counts, metadata = [{"0" * circuit.circuit.num_clbits: pub.shots}] * size, {}
        else:
            counts, metadata = answer
        data = {
            name: _bit_array(counts, bits, pub.shots, pub.shape, seed)
            for name, bits in circuit.registers
        }
        return SamplerPubResult(
            DataBin(**data, shape=pub.shape),
            metadata={"shots": pub.shots, "circuit_metadata": pub.circuit.metadata, **metadata},
        )


class MeshEstimatorV2(BaseEstimatorV2):
    """``BaseEstimatorV2`` on the mesh (``mesh``), or on this machine (``local=True``): exact
    expectation values, plus Gaussian noise of standard deviation ``precision`` when that is
    above 0 (``default_precision`` 0.0, as ``StatevectorEstimator``). The other arguments as
    for :class:`MeshSamplerV2`."""

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        local: bool = False,
        default_precision: float = 0.0,
        seed: int | np.random.Generator | None = None,
        replicas: int = 2,
        quorum: int | None = None,
        deadline: int | None = None,
        shard: int = 8,
        timeout: float | None = None,
    ) -> None:
        self._options = _Options(
            mesh,
            local=local,
            seed=seed,
            replicas=replicas,
            quorum=quorum,
            deadline=deadline,
            shard=shard,
            timeout=timeout,
        )
        self._default_precision = default_precision

    @property
    def default_precision(self) -> float:
        return self._default_precision

    @property
    def seed(self) -> int | np.random.Generator | None:
        return self._options.seed

    def run(
        self, pubs: Iterable[Any], *, precision: float | None = None
    ) -> PrimitiveJob[PrimitiveResult[PubResult]]:
        if precision is None:
            precision = self._default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        work = []
        for pub in coerced:
            circuit = translate(pub.circuit)
            if not _terminal_only(circuit):
                raise CircuitError(
                    "the estimator needs a circuit without mid-circuit measurement or reset "
                    f"(circuit {pub.circuit.name!r})"
                )
            work.append((pub, circuit, _observables(pub), self._options.pub_seed()))
        job = PrimitiveJob(self._run, work)
        job._submit()
        return job

    def _run(self, work: list[tuple[Any, ...]]) -> PrimitiveResult[PubResult]:
        async def all_pubs() -> list[PubResult]:
            return list(await asyncio.gather(*(self._run_pub(*w) for w in work)))

        return PrimitiveResult(asyncio.run(all_pubs()), metadata={"version": 2})

    async def _run_pub(
        self,
        pub: Any,
        circuit: Translated,
        observables: tuple[list[PauliSum], np.ndarray],
        seed: int,
    ) -> PubResult:
        distinct, which = observables
        shape_p = pub.parameter_values.shape
        points = _points(pub.parameter_values, pub.circuit, circuit, shape_p)
        values, metadata = await self._options.engine.estimate(circuit, points, distinct)
        by_point = np.arange(len(points)).reshape(shape_p)
        index_p, index_o = np.broadcast_arrays(by_point, which)
        evs = np.asarray(values)[index_p, index_o].astype(np.float64).reshape(pub.shape)
        if pub.precision:
            evs = np.random.default_rng(seed).normal(evs, pub.precision)
        stds = np.full(pub.shape, float(pub.precision))
        return PubResult(
            DataBin(evs=evs, stds=stds, shape=pub.shape),
            metadata={
                "target_precision": pub.precision,
                "circuit_metadata": pub.circuit.metadata,
                **metadata,
            },
        )


# ----------------------------------------------------------------------------- PUB pieces


def _points(bindings: Any, qc: Any, circuit: Translated, shape: tuple[int, ...]) -> list[Point]:
    """The parameter values of each point of a PUB (flattened in C order), by our names."""
    size = int(np.prod(shape, dtype=np.int64))
    values = np.asarray(bindings.as_array(qc.parameters), dtype=np.float64)
    rows = values.reshape(size, len(circuit.parameters))
    return [circuit.bindings(row) for row in rows]


def _terminal_only(circuit: Translated) -> bool:
    seen: set[int] = set()
    for inst in circuit.circuit:
        if inst.name == "reset":
            return False
        if inst.name == "measure":
            seen.add(inst.qubits[0])
        elif inst.name != "barrier" and seen.intersection(inst.qubits):
            return False
    return True


def _observables(pub: Any) -> tuple[list[PauliSum], np.ndarray]:
    """A PUB's observables as distinct Pauli sums and, per element of its observables array,
    the index of its sum; refused in one line if one is not a Hermitian Pauli sum."""
    n = pub.circuit.num_qubits
    distinct: list[PauliSum] = []
    seen: dict[tuple[Any, ...], int] = {}
    which = np.zeros(pub.observables.shape, dtype=np.int64)
    for index in np.ndindex(*pub.observables.shape):
        terms = pub.observables[index]
        key = tuple(sorted(terms.items()))
        if key not in seen:
            pairs = []
            for label, coeff in terms.items():
                if set(label) - set("IXYZ"):
                    raise CircuitError(
                        f"observable term {label!r}: the engine takes Pauli terms (I, X, Y, Z)"
                    )
                if complex(coeff).imag:
                    raise CircuitError(
                        f"observable term {label!r} has the complex coefficient {coeff}: "
                        "not Hermitian"
                    )
                pairs.append((complex(coeff).real, label))
            seen[key] = len(distinct)
            distinct.append(PauliSum.from_labels(pairs, num_qubits=n))
        which[index] = seen[key]
    return distinct, which


def _bit_array(
    counts: Sequence[dict[str, int]],
    bits: tuple[int, ...],
    shots: int,
    shape: tuple[int, ...],
    seed: int,
) -> BitArray:
    """One register's ``BitArray``: its bits picked out of each point's counts (keys over all
    bits, bit 0 rightmost), the shots in a random order as a device would return them (drawn
    from ``seed`` at each point: equal counts give equal shot lists, as the reference's)."""
    width = len(bits)
    num_bytes = max(1, (width + 7) // 8)
    out = np.zeros((len(counts), shots, num_bytes), dtype=np.uint8)
    for i, point in enumerate(counts):
        outcomes = []
        for key in point:
            whole = int(key, 2) if key else 0
            outcomes.append(sum(((whole >> b) & 1) << j for j, b in enumerate(bits)))
        # one row of big-endian bytes per outcome (as BitArray stores them), one per shot
        rows = (
            np.array(
                [value.to_bytes(num_bytes, "big") for value in outcomes], dtype=f"S{num_bytes}"
            )
            .view(np.uint8)
            .reshape(len(outcomes), num_bytes)
        )
        per_shot = np.repeat(np.arange(len(outcomes)), list(point.values()))
        out[i] = rows[per_shot[np.random.default_rng(seed).permutation(shots)]]
    return BitArray(out.reshape(*shape, shots, num_bytes), width)


# ----------------------------------------------------------------------------- engines


Sample = tuple[Translated, list[Point], int, int]  # circuit, points, shots, seed
Counts = tuple[list[dict[str, int]], dict[str, Any]]  # counts per point, metadata


class _Engine:
    """Where a PUB's points run: counts per point, values per point and observable."""

    async def sample_many(self, requests: list[Sample]) -> list[Counts]:
        """Each request's counts per point (and metadata): one after another by default."""
        return [await self.sample(*request) for request in requests]

    async def sample(
        self, circuit: Translated, points: list[Point], shots: int, seed: int
    ) -> tuple[list[dict[str, int]], dict[str, Any]]:
        raise NotImplementedError

    async def estimate(
        self, circuit: Translated, points: list[Point], observables: list[PauliSum]
    ) -> tuple[list[list[float]], dict[str, Any]]:
        raise NotImplementedError


class _Local(_Engine):
    """This machine's engine, in this process."""

    async def sample(
        self, circuit: Translated, points: list[Point], shots: int, seed: int
    ) -> tuple[list[dict[str, int]], dict[str, Any]]:
        from qiz.quantum.core.primitives import Sampler

        runs = [Sampler().run(circuit.circuit, shots, seed, parameters=p) for p in points]
        return [r.counts for r in runs], {"engine": runs[0].engine if runs else "", "local": True}

    async def estimate(
        self, circuit: Translated, points: list[Point], observables: list[PauliSum]
    ) -> tuple[list[list[float]], dict[str, Any]]:
        from qiz.quantum.core.primitives import Estimator

        runs = [Estimator().run(circuit.circuit, observables, parameters=p) for p in points]
        return [r.values for r in runs], {"engine": runs[0].engine if runs else "", "local": True}


class _OnMesh(_Engine):
    """Jobs on the mesh through a node: as few as the points allow (module notes)."""

    def __init__(  # noqa: PLR0917 - the constructor's options, passed on in a row
        self,
        mesh: Any,
        replicas: int,
        quorum: int,
        deadline: int | None,
        shard: int,
        timeout: float | None,
    ) -> None:
        self.mesh = mesh
        self.fields = {"replicas": replicas, "quorum": quorum}
        if deadline is not None:
            self.fields["deadline"] = deadline
        self.shard = shard
        self.timeout = timeout

    async def sample(
        self, circuit: Translated, points: list[Point], shots: int, seed: int
    ) -> tuple[list[dict[str, int]], dict[str, Any]]:
        return (await self.sample_many([(circuit, points, shots, seed)]))[0]

    async def sample_many(self, requests: list[Sample]) -> list[Counts]:
        """Grids as sweeps (one per request); every other point of every request, each with its
        request's seed, in as few ``circuits`` jobs as their bounds allow (:func:`pack`)."""
        from qiz.compute.spec import Limits
        from qiz.quantum import qasm

        jobs: list[tuple[dict[str, Any], list[tuple[int, tuple[float, ...]]]]] = []
        entries: list[tuple[int, tuple[float, ...], dict[str, Any]]] = []
        rows_of: list[list[tuple[float, ...]]] = []
        for k, (circuit, points, shots, seed) in enumerate(requests):
            used = sorted(circuit.circuit.parameters)
            base = {"qasm": qasm.dumps(circuit.circuit), "shots": shots}
            rows = [tuple(p[name] for name in used) for p in points]
            rows_of.append(rows)
            specs = plan(
                "sampler", base, used, rows, max_points=Limits().max_points, shard=self.shard
            )
            for spec, order in specs:
                if spec["kind"] == "sweep":
                    jobs.append(({**spec, "seed": seed}, [(k, row) for row in order]))
                else:
                    entries.append((k, order[0], {**spec["params"], "seed": seed}))
        for batch in pack([entry for _, _, entry in entries]):
            chosen = [entries[i] for i in batch]
            if len(chosen) == 1 and not _fits([chosen[0][2]]):  # one program over the bound
                entry = {k: v for k, v in chosen[0][2].items() if k != "seed"}
                spec = {"kind": "sampler", "params": entry, "seed": chosen[0][2]["seed"]}
            else:
                circuits = [entry for _, _, entry in chosen]
                spec = {"kind": "circuits", "params": {"circuits": circuits, "shard": self.shard}}
                spec["seed"] = 0  # every entry carries its own seed
            jobs.append((spec, [(k, row) for k, row, _ in chosen]))
        handles = await asyncio.gather(
            *(self.mesh.submit_async({**spec, **self.fields}) for spec, _ in jobs)
        )
        done = await asyncio.gather(*(h.result_async(self.timeout) for h in handles))
        found: dict[tuple[int, tuple[float, ...]], tuple[dict[str, Any], int]] = {}
        for j, ((spec, order), result) in enumerate(zip(jobs, done, strict=True)):
            if spec["kind"] == "sweep":
                answers = result.points
            elif spec["kind"] == "circuits":
                answers = result.circuits
            else:
                answers = [result.value]
            found.update(zip(order, ((a, j) for a in answers), strict=True))
        out: list[Counts] = []
        for k, rows in enumerate(rows_of):
            mine = sorted({found[(k, row)][1] for row in rows})
            out.append(
                (
                    [found[(k, row)][0]["counts"] for row in rows],
                    _jobs_metadata([done[j] for j in mine]),
                )
            )
        return out

    async def estimate(
        self, circuit: Translated, points: list[Point], observables: list[PauliSum]
    ) -> tuple[list[list[float]], dict[str, Any]]:
        from qiz.compute.execute import MAX_OBSERVABLES  # an estimator job's bound

        columns: list[list[list[float]]] = []
        metadata: dict[str, Any] = {"jobs": [], "attestations": []}
        for start in range(0, len(observables), MAX_OBSERVABLES):
            texts = [o.dumps() for o in observables[start : start + MAX_OBSERVABLES]]
            results, more = await self._run("estimator", circuit, {"observables": texts}, points, 0)
            columns.append([r["values"] for r in results])
            metadata["jobs"] += more["jobs"]
            metadata["attestations"] += more["attestations"]
        values = [[v for part in columns for v in part[i]] for i in range(len(points))]
        return values, metadata

    async def _run(
        self, kind: str, circuit: Translated, params: dict[str, Any], points: list[Point], seed: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Each point's result, and the jobs' metadata, for ``kind`` at ``points``."""
        from qiz.compute.spec import Limits
        from qiz.quantum import qasm

        used = sorted(circuit.circuit.parameters)
        base = {"qasm": qasm.dumps(circuit.circuit), **params}
        rows = [tuple(p[name] for name in used) for p in points]
        specs = plan(kind, base, used, rows, max_points=Limits().max_points, shard=self.shard)
        handles = await asyncio.gather(
            *(self.mesh.submit_async({**spec, "seed": seed, **self.fields}) for spec, _ in specs)
        )
        done = await asyncio.gather(*(h.result_async(self.timeout) for h in handles))
        found: dict[tuple[float, ...], dict[str, Any]] = {}
        for (spec, order), result in zip(specs, done, strict=True):
            answers = result.points if spec["kind"] == "sweep" else [result.value]
            found.update(zip(order, answers, strict=True))
        return [found[row] for row in rows], _jobs_metadata(done)


def _jobs_metadata(done: Sequence[Any]) -> dict[str, Any]:
    """A PUB result's metadata about the mesh jobs that answered it (``JobResult``s)."""
    return {
        "jobs": [
            {
                "job_id": r.job_id,
                "kind": r.kind,
                "workers": list(r.attestation.workers),
                "replicas": r.attestation.replicas,
                "quorum": r.attestation.quorum,
                "tests": list(r.attestation.tests),
            }
            for r in done
        ],
        "attestations": [r.attestation for r in done],
    }


def _fits(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether ``entries`` may be one ``circuits`` job (its bounds, docs/jobs.md)."""
    from qiz.compute import circuits

    return (
        len(entries) <= circuits.MAX_CIRCUITS
        and sum(len(e["qasm"].encode("utf-8")) for e in entries) <= circuits.MAX_CIRCUITS_TEXT
        and sum(int(e.get("shots", 1024)) for e in entries) <= circuits.MAX_CIRCUITS_SHOTS
    )


def pack(entries: Sequence[dict[str, Any]]) -> list[list[int]]:
    """``entries`` (circuits of a ``circuits`` job) in order, split into as few jobs as the
    kind's bounds allow: each list the indices of one job (one that is over the bounds alone
    goes alone, as a sampler job)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in range(len(entries)):
        if current and not _fits([entries[j] for j in (*current, i)]):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


Plan = list[tuple[dict[str, Any], list[tuple[float, ...]]]]


def plan(
    kind: str,
    base: dict[str, Any],
    used: Sequence[str],
    rows: Sequence[tuple[float, ...]],
    *,
    max_points: int,
    shard: int,
) -> Plan:
    """The job documents that run ``kind`` at every row (values of the inputs ``used``), each
    with the rows its results answer, in their order: one job without inputs; sweeps when the
    distinct rows are a grid (the product of each input's values; split along its first axis
    into sweeps of at most ``max_points``); else one job per distinct row."""
    distinct = list(dict.fromkeys(rows))
    if not used:
        return [({"kind": kind, "params": base}, [()])]
    axes = [list(dict.fromkeys(row[i] for row in distinct)) for i in range(len(used))]
    names = sorted(f"inputs.{name}" for name in used)  # the sweep's own order (spec.py)
    ordered = [axes[list(used).index(n.removeprefix("inputs."))] for n in names]
    inner = math.prod(len(values) for values in ordered[1:])
    if math.prod(map(len, axes)) == len(distinct) > 1 and inner <= max_points:
        jobs: Plan = []
        step = max_points // inner
        for start in range(0, len(ordered[0]), step):
            part = [ordered[0][start : start + step], *ordered[1:]]
            sweep = {
                "over": kind,
                "base": {
                    **base,
                    "inputs": {
                        n.removeprefix("inputs."): v[0] for n, v in zip(names, part, strict=True)
                    },
                },
                "axes": dict(zip(names, part, strict=True)),
                "shard": shard,
            }
            order = [
                tuple(combo[names.index(f"inputs.{name}")] for name in used)
                for combo in itertools.product(*part)
            ]
            jobs.append(({"kind": "sweep", "params": sweep}, order))
        return jobs
    return [
        ({"kind": kind, "params": {**base, "inputs": dict(zip(used, row, strict=True))}}, [row])
        for row in distinct
    ]
