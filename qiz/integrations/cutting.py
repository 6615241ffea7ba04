"""Circuits wider than any worker, cut into sub-experiments that fit one, run across the mesh.

A statevector needs 16 bytes per amplitude, so a node with 24 GiB holds about 30 qubits. Circuit
cutting (the mathematics is ``qiskit-addon-cutting``'s) replaces chosen two-qubit gates and
wires by quasi-probability decompositions (QPD): the circuit falls apart into narrower
sub-circuits, each run in a few variants (the *sub-experiments*), and the expectation values of
the whole circuit are weighted sums of products of the sub-circuits' ones. The price is
statistical: the weights' absolute sum ``gamma`` multiplies the standard error, so the same
precision needs ``gamma**2`` (the *sampling overhead*, 9 per cut CNOT) times the shots.

``run_cut`` does it end to end:

1. **cut**: ``find_cuts`` (gate and wire cuts) with ``qubits_per_subcircuit``, ``cut_wires``,
   ``expand_observables``, ``partition_problem``, and ``generate_cutting_experiments`` with every
   QPD term enumerated (``num_samples=inf``: no sampling of terms, only of shots);
2. **make them terminal**: a sub-experiment measures mid-circuit (the QPD's measurements), and
   our engine runs such a circuit once per shot, where a circuit measured only at its end runs
   once and is sampled. So a measurement of a qubit that is used again becomes a CNOT onto a
   fresh ancilla measured at the end (deferred measurement: no outcome is used in the circuit,
   so the statistics are the same), and a reset of a qubit that is used again moves it to a
   fresh qubit. The ancillas count toward ``max_qubits``: a sub-experiment they would push past
   it keeps its mid-circuit measurements (and runs shot by shot), so leaving a qubit or two of
   headroom below a worker's width makes a cut run much faster;
3. **run** each distinct sub-experiment once, through
   :class:`qiz.integrations.qiskit.MeshSamplerV2`: on the mesh (a :class:`qiz.client.Mesh`)
   all of them as one ``circuits`` job (docs/jobs.md; several only past its bounds of 256
   circuits, 192 KiB of programs and a million shots), whose shards spread over the workers,
   replicated and attested like any job; or on this machine's engine (``local=True``). Every
   sub-experiment draws its own seed (the job's entries carry them), so runs are independent;
4. **reconstruct** with ``reconstruct_expectation_values``.

The error bound stated with each value: a sub-experiment's estimate is a mean of ``shots``
values of +-1, so its variance is at most ``1/shots``; a QPD term multiplies ``P`` independent
such estimates (one per sub-circuit), whose product has variance at most
``(1 + 1/shots)**P - 1``; the term weights sum to ``gamma`` in absolute value, and an
observable's Pauli terms add with their coefficients. So the standard deviation of a value is
at most ``sum|coeff| * gamma * sqrt((1 + 1/shots)**P - 1)`` (about
``sum|coeff| * sqrt(overhead * P / shots)``), whatever the correlations between terms.

Circuits: a Qiskit ``QuantumCircuit`` or OpenQASM 3 text, without mid-circuit measurement
(final measurements are dropped: observables say what is measured). Needs Qiskit and
``qiskit-addon-cutting`` (:class:`CuttingMissing` otherwise).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qiz import QizError

if TYPE_CHECKING:
    from qiz.client import Mesh

__all__ = ["CutError", "CutPlan", "CutResult", "CuttingMissing", "plan_cut", "run_cut"]

MOST_SUBEXPERIMENTS = 4096  # distinct sub-experiments one cut run may make (each is a job)
INSTALL = "pip install -e '.[qiskit]' (or: pip install qiskit-addon-cutting)"


class CuttingMissing(QizError, ImportError):
    """Qiskit or qiskit-addon-cutting is not installed."""


class CutError(QizError):
    """A cut that cannot be made as asked: the message says why."""


def _addon() -> Any:
    """The addon's module; :class:`CuttingMissing` in one line without it (or Qiskit)."""
    try:
        import qiskit  # noqa: F401
        import qiskit_addon_cutting
    except ImportError as exc:
        missing = "qiskit" if exc.name == "qiskit" or "qiskit." in str(exc.name) else exc.name
        raise CuttingMissing(
            f"circuit cutting needs qiskit and qiskit-addon-cutting ({missing} is not "
            f"installed); install them: {INSTALL}"
        ) from None
    return qiskit_addon_cutting


@dataclass(frozen=True)
class CutPlan:
    """The cuts of one circuit and the sub-experiments they make, ready to run."""

    num_qubits: int
    observables: list[Any]  # SparsePauliOp, one per value asked
    paulis: Any  # PauliList: every Pauli term of the observables, in the order reconstructed
    cuts: list[dict[str, Any]]  # {type: gate | wire, gate: its name | None, qubits: [...]}
    sampling_overhead: float
    minimum_reached: bool
    subobservables: dict[Any, Any]
    coefficients: list[tuple[float, Any]]
    experiments: dict[Any, list[Any]]  # per sub-circuit: terminal sub-experiments, in order
    distinct: dict[Any, list[int]]  # per sub-circuit: the index of each experiment's run
    runs: list[tuple[Any, Any]]  # (sub-circuit label, terminal circuit) to run, once each
    subcircuit_widths: dict[Any, int]  # qubits of each sub-circuit, ancillas included

    @property
    def gamma(self) -> float:
        return float(sum(abs(weight) for weight, _ in self.coefficients))

    def std_bound(self, shots: int) -> list[float]:
        """Each value's standard deviation is at most this (module notes)."""
        parts = len(self.experiments)
        spread = self.gamma * math.sqrt((1.0 + 1.0 / shots) ** parts - 1.0)
        return [float(np.sum(np.abs(obs.coeffs))) * spread for obs in self.observables]


@dataclass(frozen=True)
class CutResult:
    """Expectation values of a cut circuit, their error bound, and what it took."""

    values: list[float]
    std_bounds: list[float]  # each value's standard deviation is at most this
    sampling_overhead: float  # gamma**2: the factor on shots for the precision of no cut
    cuts: list[dict[str, Any]]  # as CutPlan.cuts
    subcircuit_widths: dict[Any, int]
    num_subexperiments: int  # QPD terms x sub-circuits
    num_runs: int  # distinct sub-experiments run (mesh: circuits of one circuits job)
    shots: int  # per sub-experiment run
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the mesh jobs, as the primitives'
    attestations: list[Any] = field(default_factory=list, repr=False)
    seconds: dict[str, float] = field(default_factory=dict)  # cut, run, reconstruct

    @property
    def total_shots(self) -> int:
        return self.shots * self.num_runs

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``qiz cut --json``)."""
        return {
            "values": self.values,
            "std_bounds": self.std_bounds,
            "sampling_overhead": self.sampling_overhead,
            "cuts": self.cuts,
            "subcircuit_widths": [
                self.subcircuit_widths[k] for k in sorted(self.subcircuit_widths)
            ],
            "num_subexperiments": self.num_subexperiments,
            "num_runs": self.num_runs,
            "shots": self.shots,
            "total_shots": self.total_shots,
            "jobs": [{"job_id": job["job_id"], "workers": job["workers"]} for job in self.jobs],
            "cut_s": self.seconds.get("cut", 0.0),
            "run_s": self.seconds.get("run", 0.0),
            "reconstruct_s": self.seconds.get("reconstruct", 0.0),
        }


# ----------------------------------------------------------------------------- inputs


def _circuit(circuit: Any) -> Any:
    """A Qiskit circuit from a ``QuantumCircuit`` or OpenQASM 3 text, final measurements and
    barriers dropped, gates on more than two qubits decomposed (the cut finder takes at most
    two); mid-circuit measurement, reset and classical control refused."""
    from qiskit import QuantumCircuit

    if isinstance(circuit, str):
        from qiskit import qasm3

        try:
            circuit = qasm3.loads(circuit)
        except Exception as exc:  # the importer's own errors, of several types
            raise CutError(f"the OpenQASM program does not load: {exc}") from None
    if not isinstance(circuit, QuantumCircuit):
        raise CutError(
            f"a circuit to cut is a Qiskit QuantumCircuit or OpenQASM 3 text, not "
            f"{type(circuit).__name__}"
        )
    if circuit.num_parameters:
        names = ", ".join(p.name for p in circuit.parameters)
        raise CutError(f"bind the circuit's parameters before cutting it ({names})")
    plain = circuit.remove_final_measurements(inplace=False)
    for _ in range(8):
        wide = {i.operation.name for i in plain.data if i.operation.num_qubits > 2}
        if not wide:
            break
        plain = plain.decompose(gates_to_decompose=list(wide))
    for inst in plain.data:
        name = inst.operation.name
        if name in {"measure", "reset"} or inst.operation.num_clbits or inst.clbits:
            raise CutError(
                f"the circuit has '{name}' before its end: cutting takes a circuit measured "
                "only at its end (the observables say what is measured)"
            )
        if inst.operation.num_qubits > 2:
            raise CutError(
                f"'{name}' acts on {inst.operation.num_qubits} qubits and has no "
                "decomposition into gates on at most two"
            )
    return _without_barriers(plain)


def _without_barriers(circuit: Any) -> Any:
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name != "barrier":
            out.append(inst)
    return out


def _observables(observables: Any, num_qubits: int) -> list[Any]:
    """Observables as ``SparsePauliOp``s of the circuit's width: one, or a list of Pauli labels
    (``"ZZII"``, qubit 0 rightmost as in Qiskit), ``Pauli``s or ``SparsePauliOp``s."""
    from qiskit.quantum_info import Pauli, SparsePauliOp

    if isinstance(observables, str | Pauli | SparsePauliOp):
        observables = [observables]
    out = []
    for given in observables:
        try:
            op = SparsePauliOp(given)
        except Exception as exc:  # Qiskit's own errors, of several types
            raise CutError(f"observable {given!r} is not a Pauli operator: {exc}") from None
        if op.num_qubits != num_qubits:
            label = given if isinstance(given, str) else str(op.paulis[0])
            raise CutError(
                f"observable {label!r} acts on {op.num_qubits} qubits; the circuit has {num_qubits}"
            )
        if np.any(np.abs(op.coeffs.imag) > 1e-12):
            raise CutError(f"observable {given!r} has complex coefficients: not Hermitian")
        out.append(op)
    if not out:
        raise CutError("give at least one observable")
    return out


# ----------------------------------------------------------------------------- planning


def plan_cut(
    circuit: Any, observables: Any, max_qubits: int, *, seed: int = 0, max_gamma: float = 1024.0
) -> CutPlan:
    """Find cuts so that every sub-experiment (ancillas included) has at most ``max_qubits``
    qubits, and make the sub-experiments; :class:`CutError` if none fit."""
    addon = _addon()
    if max_qubits < 1:
        raise CutError(f"max_qubits must be at least 1, not {max_qubits}")
    qc = _circuit(circuit)
    ops = _observables(observables, qc.num_qubits)
    from qiskit.quantum_info import PauliList

    paulis = PauliList([p for op in ops for p in op.paulis])
    return _attempt(addon, qc, ops, paulis, max_qubits, seed=seed, max_gamma=max_gamma)


def _attempt(
    addon: Any, qc: Any, ops: list[Any], paulis: Any, width: int, *, seed: int, max_gamma: float
) -> CutPlan:
    if qc.num_qubits <= width:
        cut, metadata = qc.copy(), {"cuts": [], "sampling_overhead": 1.0, "minimum_reached": True}
    else:
        try:
            cut, metadata = addon.find_cuts(
                qc,
                addon.OptimizationParameters(seed=seed, max_gamma=max_gamma),
                addon.DeviceConstraints(qubits_per_subcircuit=width),
            )
        except ValueError as exc:
            raise CutError(f"no cuts found for {width} qubits per sub-circuit: {exc}") from None
    overhead = float(metadata["sampling_overhead"])
    if overhead > max_gamma**2 * (1 + 1e-9):
        raise CutError(
            f"the cuts that fit {width} qubits per sub-circuit cost a sampling overhead of "
            f"{overhead:.3g} (more than max_gamma**2 = {max_gamma**2:.3g}); allow more qubits"
        )
    wired = addon.cut_wires(cut)
    expanded = addon.expand_observables(paulis, qc, wired)
    problem = addon.partition_problem(circuit=wired, observables=expanded)
    terms = math.prod(len(basis.coeffs) for basis in problem.bases)
    if terms * len(problem.subcircuits) > MOST_SUBEXPERIMENTS:
        raise CutError(
            f"the cuts that fit {width} qubits per sub-circuit make {terms} QPD terms x "
            f"{len(problem.subcircuits)} sub-circuits, more than {MOST_SUBEXPERIMENTS} "
            "sub-experiments; allow more qubits"
        )
    experiments, coefficients = addon.generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    terminal: dict[Any, list[Any]] = {}
    distinct: dict[Any, list[int]] = {}
    runs: list[tuple[Any, Any]] = []
    widths: dict[Any, int] = {}
    for label, circuits in experiments.items():
        seen: dict[Any, int] = {}
        terminal[label] = [_runnable(c, width) for c in circuits]
        distinct[label] = []
        for made in terminal[label]:
            key = _key(made)
            if key not in seen:  # within one sub-circuit only: parts must stay independent
                seen[key] = len(runs)
                runs.append((label, made))
            distinct[label].append(seen[key])
        widths[label] = max(c.num_qubits for c in terminal[label])
    return CutPlan(
        qc.num_qubits,
        ops,
        paulis,
        [_cut(cut, index) for _, index in metadata["cuts"]],
        overhead,
        bool(metadata["minimum_reached"]),
        problem.subobservables,
        coefficients,
        terminal,
        distinct,
        runs,
        widths,
    )


def _cut(circuit: Any, index: int) -> dict[str, Any]:
    """One cut for people: a gate cut names the gate and its qubits, a wire cut its qubit."""
    inst = circuit.data[index]
    qubits = [circuit.find_bit(q).index for q in inst.qubits]
    if inst.operation.name == "cut_wire":
        return {"type": "wire", "gate": None, "qubits": qubits}
    label = inst.operation.label or inst.operation.name
    return {"type": "gate", "gate": label.removeprefix("cut_"), "qubits": qubits}


def _runnable(circuit: Any, width: int) -> Any:
    """The experiment in terminal form when that fits ``width`` qubits, else as it is (with
    its mid-circuit measurements: our engine then runs it once per shot)."""
    made = terminal_form(circuit)
    return made if made.num_qubits <= width else _without_barriers(circuit)


def _key(circuit: Any) -> tuple[Any, ...]:
    """What makes two circuits the same run: their instructions, qubits, bits and registers."""
    rows = [circuit.num_qubits, tuple((r.name, r.size) for r in circuit.cregs)]
    for inst in circuit.data:
        rows.append(
            (
                inst.operation.name,
                tuple(float(p) for p in inst.operation.params),
                tuple(circuit.find_bit(q).index for q in inst.qubits),
                tuple(circuit.find_bit(c).index for c in inst.clbits),
            )
        )
    return tuple(rows)


def terminal_form(circuit: Any) -> Any:
    """The same experiment measured only at its end (module notes, step 2): a measurement of
    a qubit used again becomes a CNOT onto a fresh ancilla measured last; a reset of a qubit
    used again moves the qubit to a fresh one; barriers go."""
    from qiskit import QuantumCircuit, QuantumRegister

    data = [i for i in circuit.data if i.operation.name != "barrier"]
    nxt: list[dict[Any, str | None]] = [{} for _ in data]
    upcoming: dict[Any, str | None] = {}
    for index in range(len(data) - 1, -1, -1):
        for qubit in data[index].qubits:
            nxt[index][qubit] = upcoming.get(qubit)
            upcoming[qubit] = data[index].operation.name
    fresh = sum(
        1
        for index, inst in enumerate(data)
        if inst.operation.name in {"measure", "reset"}
        and nxt[index][inst.qubits[0]] not in {None, "reset"}
    )
    extra = QuantumRegister(fresh, "cut_ancilla") if fresh else None
    out = QuantumCircuit(*circuit.qregs, *([extra] if extra else []), *circuit.cregs)
    where = {q: q for q in circuit.qubits}
    free = list(extra) if extra else []
    touched: set[Any] = set()
    last: list[tuple[Any, Any]] = []
    for index, inst in enumerate(data):
        name = inst.operation.name
        qubit = inst.qubits[0] if inst.qubits else None
        if name == "measure":
            if nxt[index][qubit] in {None, "reset"}:
                last.append((where[qubit], inst.clbits[0]))
            else:
                ancilla = free.pop(0)
                out.cx(where[qubit], ancilla)
                last.append((ancilla, inst.clbits[0]))
        elif name == "reset":
            if where[qubit] not in touched:
                continue  # still |0>
            if nxt[index][qubit] not in {None, "reset"}:
                where[qubit] = free.pop(0)
        else:
            moved = [where[q] for q in inst.qubits]
            touched.update(moved)
            out.append(inst.operation, moved, inst.clbits)
    for qubit, clbit in last:
        out.measure(qubit, clbit)
    return out


# ----------------------------------------------------------------------------- running


def run_cut(
    circuit: Any,
    observables: Any,
    *,
    max_qubits: int,
    shots: int = 4000,
    mesh: Mesh | None = None,
    local: bool = False,
    seed: int | None = None,
    replicas: int = 2,
    quorum: int | None = None,
    timeout: float | None = None,
    max_gamma: float = 1024.0,
) -> CutResult:
    """Expectation values of ``observables`` (a Pauli label, a ``SparsePauliOp``, or a list of
    them) on ``circuit``, cut so that no sub-experiment needs more than ``max_qubits`` qubits,
    each sub-experiment sampled ``shots`` times: on the mesh (``mesh``: a
    :class:`qiz.client.Mesh`, each distinct sub-experiment one sampler job with ``replicas``)
    or here (``local=True``). ``seed`` makes the run reproducible; ``max_gamma`` bounds the
    cuts' cost (gamma, the square root of the sampling overhead)."""
    return _blocking(
        run_cut_async(
            circuit,
            observables,
            max_qubits=max_qubits,
            shots=shots,
            mesh=mesh,
            local=local,
            seed=seed,
            replicas=replicas,
            quorum=quorum,
            timeout=timeout,
            max_gamma=max_gamma,
        )
    )


def _blocking(work: Any) -> CutResult:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    work.close()
    raise CutError("run_cut blocks; inside a running event loop use: await run_cut_async(...)")


async def run_cut_async(
    circuit: Any,
    observables: Any,
    *,
    max_qubits: int,
    shots: int = 4000,
    mesh: Mesh | None = None,
    local: bool = False,
    seed: int | None = None,
    replicas: int = 2,
    quorum: int | None = None,
    timeout: float | None = None,
    max_gamma: float = 1024.0,
) -> CutResult:
    """:func:`run_cut` for code that runs an event loop."""
    if local == (mesh is not None):
        raise CutError(
            "give a mesh (qiz.client.Mesh(), the node of a QIZ home) or local=True, not "
            + ("both" if local else "neither")
        )
    if not 1 <= shots <= 1_000_000:
        raise CutError(f"shots must be a whole number from 1 to 1000000, not {shots}")
    started = time.perf_counter()
    plan = plan_cut(circuit, observables, max_qubits, seed=seed or 0, max_gamma=max_gamma)
    cut_s = time.perf_counter() - started
    started = time.perf_counter()
    results, jobs, attestations = await _run(
        plan, shots, mesh=mesh, seed=seed, replicas=replicas, quorum=quorum, timeout=timeout
    )
    run_s = time.perf_counter() - started
    started = time.perf_counter()
    values = reconstruct(plan, results)
    reconstruct_s = time.perf_counter() - started
    return CutResult(
        values,
        plan.std_bound(shots),
        plan.sampling_overhead,
        plan.cuts,
        plan.subcircuit_widths,
        sum(len(v) for v in plan.experiments.values()),
        len(plan.runs),
        shots,
        jobs,
        attestations,
        {"cut": cut_s, "run": run_s, "reconstruct": reconstruct_s},
    )


async def _run(
    plan: CutPlan,
    shots: int,
    *,
    mesh: Mesh | None,
    seed: int | None,
    replicas: int,
    quorum: int | None,
    timeout: float | None,
) -> tuple[list[Any], list[dict[str, Any]], list[Any]]:
    """Each distinct sub-experiment's ``SamplerPubResult``, and the mesh jobs that ran them.

    Every run gets its own seed (a generator's draws): two sub-circuits that happen to be the
    same circuit must not return the same shots, or their product would be biased."""
    from qiz.integrations.qiskit import MeshSamplerV2

    rng = np.random.default_rng(seed)
    if mesh is None:
        sampler = MeshSamplerV2(local=True, seed=rng)
    else:
        sampler = MeshSamplerV2(mesh, seed=rng, replicas=replicas, quorum=quorum, timeout=timeout)
    pubs = [made for _, made in plan.runs]
    job = await asyncio.to_thread(sampler.run, pubs, shots=shots)
    done = await asyncio.to_thread(job.result)
    results = list(done)
    # PUBs share jobs (their sub-experiments go as one circuits job): each job listed once
    jobs: list[dict[str, Any]] = []
    attestations: list[Any] = []
    seen: set[str] = set()
    for r in results:
        for job, attestation in zip(
            r.metadata.get("jobs", []), r.metadata.get("attestations", []), strict=True
        ):
            if job["job_id"] not in seen:
                seen.add(job["job_id"])
                jobs.append(job)
                attestations.append(attestation)
    return results, jobs, attestations


def reconstruct(plan: CutPlan, results: Sequence[Any]) -> list[float]:
    """The observables' values from each distinct run's ``SamplerPubResult``."""
    from qiskit.primitives import PrimitiveResult

    addon = _addon()
    by_part = {
        label: PrimitiveResult([results[i] for i in plan.distinct[label]], metadata={})
        for label in plan.experiments
    }
    terms = np.asarray(
        addon.reconstruct_expectation_values(by_part, plan.coefficients, plan.subobservables)
    )
    values, start = [], 0
    for op in plan.observables:
        part = terms[start : start + len(op.paulis)]
        values.append(float(np.real(np.dot(part, op.coeffs))))
        start += len(op.paulis)
    return values
