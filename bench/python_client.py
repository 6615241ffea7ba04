"""Python client benchmark: Qiskit's primitives on the mesh against this machine, and a cut run.

    python bench/python_client.py [--quick] [--busy-ok] [--nodes N]

* **PUB throughput, many small circuits**: one 5-qubit parametrized circuit (2 layers of ry and
  rz on every qubit and a CNOT chain: 20 parameters) at N scattered parameter points (random,
  not a grid), 256 shots each, as one PUB through three samplers side by side: ``MeshSamplerV2``
  on a loopback mesh of ``qiz node start`` processes (one worker slot per node, replicas 2:
  every point is a circuit of one ``circuits`` job), ``MeshSamplerV2(local=True)`` (this
  process, our engine) and Qiskit's ``StatevectorSampler``. Each round draws fresh points and
  a fresh seed (a mesh job submitted twice is the same job: a repeated seed would measure a
  lookup) and runs the three in a rotating order; figures are medians over rounds, after one
  warm-up round alike for all three. Every round checks the answers: the mesh's counts equal
  the local ones bit for bit (same seeds, same engine), and each sampler's counts fit the
  exact distributions (qiskit's ``Statevector``): each point's chi-square test, Bonferroni-
  corrected over the points (:func:`agreement`).
* **The estimator path**: scattered points through ``MeshEstimatorV2`` run as one estimator job
  per point (only the sampler has a batched kind), against ``local=True`` and
  ``StatevectorEstimator``; values must agree to 1e-9. This shows what per-point jobs cost.
* **A cut circuit**: two 20-qubit blocks joined by one CNOT (the 40-qubit circuit of
  docs/python.md), ``run_cut`` with ``max_qubits=24`` and 4,000 shots, on the mesh and locally,
  alternating, with ``CutResult.seconds`` split into cutting, sub-experiments and
  reconstruction, and each value's error against the exact answer (contracted from the two
  blocks' 20-qubit states through the joining CNOT's control, checked against a full
  statevector on a narrow copy of the circuit first).

A full run refuses a busy machine (1-minute load above 1) unless ``--busy-ok``; ``--quick`` is
a smoke test (8 points, one round, a 12-qubit cut circuit) and is never refused. Qiskit and
qiskit-addon-cutting are imported when the benchmark runs, so ``bench/report.py`` loads
without them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, check_quiet, machine

NODES = 3  # qiz node start processes, one worker slot each
REPLICAS = 2
QUBITS, LAYERS = 5, 2
SHOTS = 256
POINTS, QUICK_POINTS = (64, 256), (8,)
ESTIMATOR_POINTS, QUICK_ESTIMATOR_POINTS = 32, 8
ROUNDS, QUICK_ROUNDS = 3, 1
CUT_WIDTH, QUICK_CUT_WIDTH = 20, 6  # qubits per block (two blocks)
CUT_MAX_QUBITS, QUICK_CUT_MAX_QUBITS = 24, 8
CUT_SHOTS, QUICK_CUT_SHOTS = 4000, 1000
CUT_ROUNDS, QUICK_CUT_ROUNDS = 2, 1
CHI2_FLOOR = 1e-4  # a Bonferroni-corrected chi-square p-value below this is a disagreement
EXPECTED_MIN = 5.0  # outcomes expected fewer times than this are pooled into one bin
EV_TOLERANCE = 1e-9  # exact expectation values: mesh, local and Qiskit agree to this
JOB_TIMEOUT = 600.0
SAMPLERS = ("mesh", "local", "qiskit")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the mesh


class LoopbackMesh:
    """``size`` ``qiz node start`` processes on 127.0.0.1, one worker slot each, in homes under
    ``root`` (relative homes: the control sockets' paths stay short), the first the others'
    bootstrap; the client (:class:`qiz.client.Mesh`) talks to the first, as a user's script
    talks to their own node. Stopped (then killed, if need be) by :meth:`close`."""

    def __init__(self, root: Path, size: int = NODES) -> None:
        from qiz.client import Mesh
        from qiz.home import Home
        from qiz.procs import NodeProcess

        env = {k: v for k, v in os.environ.items() if k not in ("QIZ_HOME", "QIZ_PASSPHRASE")}
        self.nodes: list[NodeProcess] = []
        try:
            for i in range(size):
                Home(root / f"n{i}").init()
            first = NodeProcess("n0", args=["--slots", "1"], cwd=root, env=env)
            self.nodes.append(first)
            first.wait_ready(60)
            for i in range(1, size):
                self.nodes.append(
                    NodeProcess(
                        f"n{i}",
                        peers=[first.bootstrap],
                        args=["--slots", "1"],
                        cwd=root,
                        env=env,
                    )
                )
            for node in self.nodes:
                node.wait_ready(60)
            self.client = Mesh(root / "n0", timeout=120.0)
            deadline = time.monotonic() + 90
            while not self._joined(size):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the benchmark mesh of {size} nodes did not form in 90 s")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def _joined(self, size: int) -> bool:
        """Every node sees the others (the workers' capacity is looked up when a job is
        placed: the warm-up rounds pay for that, and for the worker processes' start)."""
        states = []
        for node in self.nodes:
            with contextlib.suppress(ConnectionError, TimeoutError):
                states.append(node.request("status", 5.0).get("result") or {})
        return len(states) == size and all(
            s.get("dht", {}).get("contacts", 0) >= size - 1 for s in states
        )

    def close(self) -> None:
        for node in self.nodes:
            if node.alive():
                with contextlib.suppress(Exception):
                    node.request("stop", 5.0)
        for node in self.nodes:
            try:
                node.wait(20)
                node.close()
            except Exception:
                node.kill()  # its worker processes too (its process group)


@contextlib.contextmanager
def loopback_mesh(size: int) -> Iterator[LoopbackMesh]:
    with tempfile.TemporaryDirectory(prefix="qiz-bench-client-") as tmp:
        mesh = LoopbackMesh(Path(tmp), size)
        try:
            yield mesh
        finally:
            mesh.close()


# ----------------------------------------------------------------------------- circuits


def ansatz() -> Any:
    """The small circuit of the throughput part: LAYERS x (ry, rz on every qubit, CNOT chain),
    measured; one named parameter per angle."""
    from qiskit.circuit import Parameter, QuantumCircuit

    qc = QuantumCircuit(QUBITS)
    for layer in range(LAYERS):
        for q in range(QUBITS):
            qc.ry(Parameter(f"y{layer}_{q}"), q)
            qc.rz(Parameter(f"z{layer}_{q}"), q)
        for q in range(QUBITS - 1):
            qc.cx(q, q + 1)
    qc.measure_all()
    return qc


def scattered(rng: np.random.Generator, points: int, parameters: int) -> np.ndarray:
    """``points`` random parameter vectors: no two share a value, so they form no grid and the
    mesh sampler sends them as one circuits job."""
    return rng.uniform(0.0, 2 * np.pi, size=(points, parameters))


def block_parts(width: int, start: int) -> tuple[Any, Any]:
    """One block of :func:`blocks`: its layer before the joining CNOT (ry on each qubit, a
    CNOT chain) and after it (rx on each, a CZ chain), angles by global qubit index."""
    from qiskit import QuantumCircuit

    before, after = QuantumCircuit(width), QuantumCircuit(width)
    for q in range(width):
        before.ry(0.3 + 0.2 * (start + q), q)
        after.rx(0.2 + 0.1 * (start + q), q)
    for q in range(width - 1):
        before.cx(q, q + 1)
        after.cz(q, q + 1)
    return before, after


def blocks(width: int) -> Any:
    """Two blocks of ``width`` qubits, the first's last qubit joined to the second's first by
    one CNOT between the blocks' two layers (docs/python.md's cut circuits; the tests'
    ``two_blocks``)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2 * width)
    parts = [block_parts(width, 0), block_parts(width, width)]
    first, second = list(range(width)), list(range(width, 2 * width))
    qc.compose(parts[0][0], first, inplace=True)
    qc.compose(parts[1][0], second, inplace=True)
    qc.cx(width - 1, width)
    qc.compose(parts[0][1], first, inplace=True)
    qc.compose(parts[1][1], second, inplace=True)
    return qc


def cut_observables(width: int) -> list[Any]:
    """Z on the first and last qubits, ZZ across the joint, Z2 X1 Z0 (docs/python.md)."""
    from qiskit.quantum_info import SparsePauliOp

    n = 2 * width

    def label(ops: dict[int, str]) -> str:
        return "".join(ops.get(q, "I") for q in reversed(range(n)))

    return [
        SparsePauliOp(label({0: "Z", n - 1: "Z"})),
        SparsePauliOp(label({width - 1: "Z", width: "Z"})),
        SparsePauliOp(label({0: "Z", 1: "X", 2: "Z"})),
    ]


def exact_blocks(width: int, observables: Sequence[Any]) -> list[float]:
    """The exact values of single Pauli strings on :func:`blocks`, from two ``width``-qubit
    states: after the joining CNOT the state is sum_c U_A P_c|A> (x) U_B X^c|B> (P_c projects
    the control on c), so <P_A (x) P_B> = sum_{c,d} <a_c|P_A|a_d> <b_c|P_B|b_d>."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Statevector

    (before_a, after_a), (before_b, after_b) = block_parts(width, 0), block_parts(width, width)
    a = Statevector(before_a).data
    control = (np.arange(a.size) >> (width - 1)) & 1
    a_parts = [Statevector(np.where(control == c, a, 0)).evolve(after_a) for c in (0, 1)]
    b = Statevector(before_b)
    flip = QuantumCircuit(width)
    flip.x(0)
    b_parts = [b.evolve(after_b), b.evolve(flip).evolve(after_b)]
    values = []
    for op in observables:
        if len(op) != 1:
            raise ValueError("exact_blocks takes single Pauli strings")
        pauli = op.paulis[0]
        low, high = pauli[list(range(width))], pauli[list(range(width, 2 * width))]
        total = 0j
        for c in (0, 1):
            for d in (0, 1):
                pa = np.vdot(a_parts[c].data, a_parts[d].evolve(gates(low)).data)
                pb = np.vdot(b_parts[c].data, b_parts[d].evolve(gates(high)).data)
                total += pa * pb
        values.append(float((op.coeffs[0] * total).real))
    return values


def gates(pauli: Any) -> Any:
    """A Pauli string as a circuit of one-qubit gates (``Statevector.evolve`` would build a
    Pauli's full matrix: 16 TiB at 20 qubits)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(pauli.num_qubits)
    for q in range(pauli.num_qubits):
        name = str(pauli[q])
        if name != "I":
            getattr(qc, name.lower())(q)
    return qc


def check_exact(width: int = 3) -> float:
    """:func:`exact_blocks` against a full statevector of a narrow copy: the largest
    difference (it must be below 1e-10, or nothing of the cut part is reported)."""
    from qiskit.quantum_info import Statevector

    observables = cut_observables(width)
    full = Statevector(blocks(width))
    want = [float(full.expectation_value(op).real) for op in observables]
    got = exact_blocks(width, observables)
    worst = max(abs(x - y) for x, y in zip(got, want, strict=True))
    if worst > 1e-10:
        raise RuntimeError(f"the contracted exact values are off by {worst} at width {width}")
    return worst


# ----------------------------------------------------------------------------- agreement


def exact_distributions(qc: Any, values: np.ndarray) -> list[dict[str, float]]:
    from qiskit.quantum_info import Statevector

    bare = qc.remove_final_measurements(inplace=False)
    return [Statevector(bare.assign_parameters(row)).probabilities_dict() for row in values]


def chi_square(observed: dict[str, int], probs: dict[str, float]) -> float:
    """The p-value of Pearson's chi-square test of one point's counts against its exact
    distribution; outcomes expected fewer than EXPECTED_MIN times share one bin (folded into
    the least expected other bin if even together they are too few). An outcome of
    probability 0 that was observed gives 0."""
    from scipy.stats import chi2

    shots = sum(observed.values())
    bins, small_o, small_e = [], 0, 0.0
    for key in set(observed) | {k for k, p in probs.items() if p > 0}:
        e = shots * probs.get(key, 0.0)
        if e >= EXPECTED_MIN:
            bins.append((observed.get(key, 0), e))
        else:
            small_o += observed.get(key, 0)
            small_e += e
    if small_o and not small_e:
        return 0.0
    if small_e >= EXPECTED_MIN or (small_e > 0 and not bins):
        bins.append((small_o, small_e))
    elif small_e > 0:
        i = min(range(len(bins)), key=lambda j: bins[j][1])
        bins[i] = (bins[i][0] + small_o, bins[i][1] + small_e)
    statistic = sum((o - e) ** 2 / e for o, e in bins)
    return float(chi2.sf(statistic, len(bins) - 1)) if len(bins) > 1 else 1.0


def agreement(counts: Sequence[dict[str, int]], exact: Sequence[dict[str, float]]) -> float:
    """The smallest of the points' chi-square p-values times the number of points (Bonferroni,
    at most 1). Not a pooled test: every point of a PUB is sampled with the PUB's seed (as
    ``StatevectorSampler`` does), so the points' sampling errors are correlated and a sum of
    their statistics is not chi-square distributed (pooled, 10 of 40 seeds of the full run's
    64-point PUB fell below 1e-4 with exact sampling); each point's own test stays valid."""
    smallest = min(chi_square(c, p) for c, p in zip(counts, exact, strict=True))
    return min(1.0, smallest * len(counts))


def tvd(counts: dict[str, int], probs: dict[str, float]) -> float:
    shots = sum(counts.values())
    keys = set(counts) | set(probs)
    return 0.5 * sum(abs(counts.get(k, 0) / shots - probs.get(k, 0.0)) for k in keys)


# ----------------------------------------------------------------------------- rounds


@dataclass
class Timed:
    seconds: float
    answer: Any


def timed(fn: Callable[[], Any]) -> Timed:
    began = time.perf_counter()
    answer = fn()
    return Timed(time.perf_counter() - began, answer)


def rotated(names: Sequence[str], k: int) -> list[str]:
    """``names`` starting at the k-th: who goes first changes from round to round."""
    return [names[(k + i) % len(names)] for i in range(len(names))]


def sampler_round(mesh: LoopbackMesh, points: int, seed: int, k: int) -> dict[str, Any]:
    """The three samplers on one PUB of ``points`` fresh scattered points, in rotated order;
    their times, counts, and the checks."""
    from qiskit.primitives import StatevectorSampler

    from qiz.integrations.qiskit import MeshSamplerV2

    qc = ansatz()
    values = scattered(np.random.default_rng(seed), points, qc.num_parameters)
    make = {
        "mesh": lambda: MeshSamplerV2(
            mesh.client, seed=seed, replicas=REPLICAS, timeout=JOB_TIMEOUT
        ),
        "local": lambda: MeshSamplerV2(local=True, seed=seed),
        "qiskit": lambda: StatevectorSampler(seed=seed),
    }
    runs: dict[str, Timed] = {}
    for name in rotated(SAMPLERS, k):
        sampler = make[name]()
        runs[name] = timed(lambda s=sampler: s.run([(qc, values)], shots=SHOTS).result()[0])
    counts = {
        name: [run.answer.data.meas.get_counts(loc=i) for i in range(points)]
        for name, run in runs.items()
    }
    exact = exact_distributions(qc, values)
    jobs = runs["mesh"].answer.metadata.get("jobs", [])
    return {
        "seconds": {name: run.seconds for name, run in runs.items()},
        "equal": counts["mesh"] == counts["local"],
        "equal_qiskit": counts["local"] == counts["qiskit"],
        "p": {name: agreement(c, exact) for name, c in counts.items()},
        "tvd": {
            name: statistics.median(tvd(x, p) for x, p in zip(c, exact, strict=True))
            for name, c in counts.items()
        },
        "jobs": len(jobs),
        "kinds": sorted({j["kind"] for j in jobs}),
        "workers": len({w for j in jobs for w in j["workers"]}),
    }


def estimator_round(mesh: LoopbackMesh, points: int, seed: int, k: int) -> dict[str, Any]:
    """The three estimators on one PUB of ``points`` fresh scattered points (a sum of two
    Pauli strings), rotated; their times and the largest difference of values."""
    from qiskit.primitives import StatevectorEstimator
    from qiskit.quantum_info import SparsePauliOp

    from qiz.integrations.qiskit import MeshEstimatorV2

    qc = ansatz().remove_final_measurements(inplace=False)
    values = scattered(np.random.default_rng(seed), points, qc.num_parameters)
    observable = SparsePauliOp(["ZZIII", "IXXIZ"], [1.0, 0.5])
    make = {
        "mesh": lambda: MeshEstimatorV2(mesh.client, replicas=REPLICAS, timeout=JOB_TIMEOUT),
        "local": lambda: MeshEstimatorV2(local=True),
        "qiskit": StatevectorEstimator,
    }
    runs: dict[str, Timed] = {}
    for name in rotated(SAMPLERS, k):
        estimator = make[name]()
        runs[name] = timed(lambda e=estimator: e.run([(qc, observable, values)]).result()[0])
    evs = {name: np.asarray(run.answer.data.evs) for name, run in runs.items()}
    jobs = runs["mesh"].answer.metadata.get("jobs", [])
    return {
        "seconds": {name: run.seconds for name, run in runs.items()},
        "diff": max(
            float(np.max(np.abs(evs["mesh"] - evs["qiskit"]))),
            float(np.max(np.abs(evs["local"] - evs["qiskit"]))),
        ),
        "jobs": len(jobs),
        "kinds": sorted({j["kind"] for j in jobs}),
    }


def cut_round(
    mesh: LoopbackMesh, width: int, max_qubits: int, shots: int, seed: int, k: int
) -> dict[str, Timed]:
    """``run_cut`` of :func:`blocks` on the mesh and here, in rotated order, same seed."""
    from qiz.integrations.cutting import run_cut

    qc, observables = blocks(width), cut_observables(width)
    runs = {}
    for where in rotated(("mesh", "local"), k):
        where_args: dict[str, Any] = (
            {"mesh": mesh.client, "replicas": REPLICAS, "timeout": JOB_TIMEOUT}
            if where == "mesh"
            else {"local": True}
        )
        runs[where] = timed(
            lambda a=where_args: run_cut(
                qc, observables, max_qubits=max_qubits, shots=shots, seed=seed, **a
            )
        )
    return runs


# ----------------------------------------------------------------------------- the parts


def seed_stream(seed: int | None) -> Iterator[int]:
    """A new seed for every run: fresh random ones, or drawn from ``seed`` when given."""
    source = np.random.default_rng(seed)
    while True:
        yield int(source.integers(2**62)) if seed is not None else secrets.randbits(62)


def sampler_figures(
    mesh: LoopbackMesh, sizes: Sequence[int], rounds: int, seeds: Iterator[int], nodes: int
) -> list[Figure]:
    log(f"warm-up: the three samplers on {sizes[0]} points")
    warm = sampler_round(mesh, sizes[0], next(seeds), 0)
    check_sampler_round(warm, sizes[0])
    figures = []
    for points in sizes:
        done = []
        for k in range(rounds):
            one = sampler_round(mesh, points, next(seeds), k)
            check_sampler_round(one, points)
            log(
                f"sampler, {points} points, round {k + 1}: "
                + ", ".join(f"{n} {s:.3f} s" for n, s in one["seconds"].items())
                + f"; mesh {one['jobs']} job(s) {one['kinds']} on {one['workers']} workers"
            )
            done.append(one)
        walls = {n: statistics.median(r["seconds"][n] for r in done) for n in SAMPLERS}
        checking = spec_check_seconds(mesh, points, next(seeds))
        log(f"sampler, {points} points: the client signs and checks the spec in {checking:.3f} s")
        for name in SAMPLERS:
            extra: dict[str, Any] = {
                "path": "sampler",
                "engine": name,
                "points": points,
                "shots": SHOTS,
                "wall_s": walls[name],
                "walls_s": [r["seconds"][name] for r in done],
                "chi2_p_min": min(r["p"][name] for r in done),
                "tvd_median": statistics.median(r["tvd"][name] for r in done),
                "vs_local": walls["local"] / walls[name],
                "vs_qiskit": walls["qiskit"] / walls[name],
                "rounds": rounds,
            }
            if name == "mesh":
                extra |= {
                    "nodes": nodes,
                    "replicas": REPLICAS,
                    "jobs": done[-1]["jobs"],
                    "kinds": done[-1]["kinds"],
                    "equal_to_local": all(r["equal"] for r in done),
                    "spec_check_s": checking,
                }
            if name == "local":
                extra["equal_to_qiskit"] = all(r["equal_qiskit"] for r in done)
            figures.append(
                Figure(
                    "client",
                    f"sampler, {points} scattered points x {SHOTS} shots: {label(name, nodes)}",
                    points / walls[name],
                    "circuits/s",
                    higher_is_better=True,
                    extra=extra,
                )
            )
    return figures


def spec_check_seconds(mesh: LoopbackMesh, points: int, seed: int) -> float:
    """The client's time to sign and check the circuits job(s) a sampler run of ``points``
    scattered points makes (``Mesh.sign``: every entry's program parsed and measured, as the
    node's checker and every worker offered a task do again): where a mesh run's time goes
    before anything is simulated."""
    from qiz.integrations.qiskit import pack
    from qiz.quantum import qasm
    from qiz.quantum.core.from_qiskit import translate

    qc = ansatz()
    circuit = translate(qc)
    text, used = qasm.dumps(circuit.circuit), sorted(circuit.circuit.parameters)
    values = scattered(np.random.default_rng(seed), points, qc.num_parameters)
    entries = []
    for row in values:
        point = circuit.bindings(row)
        inputs = {name: float(point[name]) for name in used}
        entries.append({"qasm": text, "shots": SHOTS, "inputs": inputs, "seed": seed})
    began = time.perf_counter()
    for batch in pack(entries):
        circuits = [entries[i] for i in batch]
        doc = {"kind": "circuits", "params": {"circuits": circuits, "shard": 8}, "seed": 0}
        mesh.client.sign({**doc, "replicas": REPLICAS, "quorum": REPLICAS})
    return time.perf_counter() - began


def check_sampler_round(one: dict[str, Any], points: int) -> None:
    if not one["equal"]:
        raise RuntimeError(f"{points} points: the mesh's counts differ from the local run's")
    for name, p in one["p"].items():
        if p < CHI2_FLOOR:
            raise RuntimeError(
                f"{points} points: {name}'s counts do not fit the exact distributions "
                f"(smallest chi-square p times {points} points = {p:.2e})"
            )


def estimator_figures(
    mesh: LoopbackMesh, points: int, rounds: int, seeds: Iterator[int], nodes: int
) -> list[Figure]:
    log(f"warm-up: the three estimators on {min(points, 4)} points")
    estimator_round(mesh, min(points, 4), next(seeds), 0)
    done = []
    for k in range(rounds):
        one = estimator_round(mesh, points, next(seeds), k)
        if one["diff"] > EV_TOLERANCE:
            raise RuntimeError(f"estimator: values differ by {one['diff']:.2e}")
        log(
            f"estimator, {points} points, round {k + 1}: "
            + ", ".join(f"{n} {s:.3f} s" for n, s in one["seconds"].items())
            + f"; mesh {one['jobs']} job(s) {one['kinds']}"
        )
        done.append(one)
    walls = {n: statistics.median(r["seconds"][n] for r in done) for n in SAMPLERS}
    figures = []
    for name in SAMPLERS:
        extra: dict[str, Any] = {
            "path": "estimator",
            "engine": name,
            "points": points,
            "wall_s": walls[name],
            "walls_s": [r["seconds"][name] for r in done],
            "max_abs_diff": max(r["diff"] for r in done),
            "vs_local": walls["local"] / walls[name],
            "vs_qiskit": walls["qiskit"] / walls[name],
            "rounds": rounds,
        }
        if name == "mesh":
            extra |= {"nodes": nodes, "replicas": REPLICAS, "jobs": done[-1]["jobs"]}
            extra["kinds"] = done[-1]["kinds"]
        figures.append(
            Figure(
                "client",
                f"estimator, {points} scattered points: {label(name, nodes)}",
                points / walls[name],
                "circuits/s",
                higher_is_better=True,
                extra=extra,
            )
        )
    return figures


def cut_figures(mesh: LoopbackMesh, quick: bool, seeds: Iterator[int], nodes: int) -> list[Figure]:
    width = QUICK_CUT_WIDTH if quick else CUT_WIDTH
    max_qubits = QUICK_CUT_MAX_QUBITS if quick else CUT_MAX_QUBITS
    shots = QUICK_CUT_SHOTS if quick else CUT_SHOTS
    rounds = QUICK_CUT_ROUNDS if quick else CUT_ROUNDS
    checked = check_exact()
    log(f"exact values of the {2 * width}-qubit circuit (contraction checked to {checked:.1e})")
    exact = exact_blocks(width, cut_observables(width))
    log("warm-up: a 6-qubit cut on the mesh and here")
    cut_round(mesh, 3, 4, 500, next(seeds), 0)
    done = []
    for k in range(rounds):
        runs = cut_round(mesh, width, max_qubits, shots, next(seeds), k)
        mesh_values, local_values = runs["mesh"].answer.values, runs["local"].answer.values
        if not np.allclose(mesh_values, local_values, rtol=0, atol=1e-12):
            raise RuntimeError(f"cut: the mesh's values {mesh_values} differ from {local_values}")
        for where, run in runs.items():
            result = run.answer
            errors = [abs(v - x) for v, x in zip(result.values, exact, strict=True)]
            for error, bound in zip(errors, result.std_bounds, strict=True):
                if error > 5 * bound:
                    raise RuntimeError(f"cut ({where}): error {error} above 5 bounds ({bound})")
            log(
                f"cut {2 * width} qubits, {where}, round {k + 1}: {run.seconds:.2f} s "
                f"({', '.join(f'{s} {v:.2f}' for s, v in result.seconds.items())}); "
                f"largest error {max(errors):.4f}, bound {max(result.std_bounds):.4f}"
            )
        done.append(runs)
    figures = []
    for where in ("mesh", "local"):
        results = [r[where].answer for r in done]
        last = results[-1]
        split = {
            part: statistics.median(r.seconds[part] for r in results)
            for part in ("cut", "run", "reconstruct")
        }
        errors = [abs(v - x) for r in results for v, x in zip(r.values, exact, strict=True)]
        extra: dict[str, Any] = {
            "path": "cut",
            "engine": where,
            "qubits": 2 * width,
            "max_qubits": max_qubits,
            "shots": shots,
            "cut_s": split["cut"],
            "run_s": split["run"],
            "reconstruct_s": split["reconstruct"],
            "walls_s": [r[where].seconds for r in done],
            "cuts": len(last.cuts),
            "overhead": last.sampling_overhead,
            "subcircuit_widths": sorted(last.subcircuit_widths.values()),
            "subexperiments": last.num_subexperiments,
            "runs": last.num_runs,
            "max_error": max(errors),
            "std_bound": max(last.std_bounds),
            "rounds": rounds,
        }
        if where == "mesh":
            extra |= {"nodes": nodes, "replicas": REPLICAS, "jobs": len(last.jobs)}
        figures.append(
            Figure(
                "client",
                f"cut run, {2 * width} qubits (2 blocks, max_qubits {max_qubits}): "
                f"{label(where, nodes)}",
                statistics.median(r[where].seconds for r in done),
                "s",
                extra=extra,
            )
        )
    return figures


def label(engine: str, nodes: int) -> str:
    return {
        "mesh": f"mesh ({nodes} nodes, replicas {REPLICAS})",
        "local": "local=True (this process)",
        "qiskit": "Qiskit Statevector primitive",
    }[engine]


def run(
    quick: bool = False, busy_ok: bool = False, nodes: int = NODES, seed: int | None = None
) -> list[Figure]:
    """Every part on one mesh of ``nodes`` node processes; seeds drawn fresh (from ``seed``
    when given, for a reproducible smoke test)."""
    load = check_quiet(quick, busy_ok)
    seeds = seed_stream(seed)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    figures: list[Figure] = []
    log(f"starting {nodes} node processes on loopback ...")
    with loopback_mesh(nodes) as mesh:
        figures += sampler_figures(mesh, QUICK_POINTS if quick else POINTS, rounds, seeds, nodes)
        points = QUICK_ESTIMATOR_POINTS if quick else ESTIMATOR_POINTS
        figures += estimator_figures(mesh, points, rounds, seeds, nodes)
        figures += cut_figures(mesh, quick, seeds, nodes)
    end_load = os.getloadavg()[0]
    for f in figures:
        f.extra |= {
            "load_average_1min": round(load, 2),
            "load_average_1min_end": round(end_load, 2),
            "quick": quick,
        }
        f.emit()
    return figures


# ----------------------------------------------------------------------------- the tables

HEADING = "\n## Python client and Qiskit primitives (`bench/python_client.py`)\n"

NOTES = """
Notes:
- The mesh is {nodes} `qiz node start` processes on loopback, one worker slot (one process, one
  numba thread) each, on this machine's 2 cores; the client talks to the first node over its
  control socket, as a user's script does. local=True and Qiskit's `StatevectorSampler` /
  `StatevectorEstimator` run in the benchmark's own process. Each round draws fresh parameter
  points and a fresh seed (a mesh job submitted again is the same job, answered from the node:
  a repeated seed would measure a lookup), and the three run in a rotating order; figures are
  medians over rounds, after one warm-up round alike for all.
- Where the mesh loses, and why: a 5-qubit circuit costs microseconds to simulate, and a mesh
  run costs one signed spec, a spec check at every worker (every circuit parsed and measured),
  placement, offers over QMP links, each replica's signed claim and the coordinator's
  attestation, which the client verifies. On one 2-core machine the nodes, their workers and
  the client share the cores, so the mesh cannot win on small circuits; its point is what a
  local run cannot give: every result replicated on distinct workers and attested, and circuits
  larger than one node (the cut run below). A sampler run's scattered points go as one
  `circuits` job (two past its 192 KiB of programs); the estimator has no batched kind yet,
  so each scattered point is a job of its own: compare their time per point.
- Where a circuits job's time goes: its spec is checked circuit by circuit on every hop (the
  client when it signs, the "spec check" in the table; the node's checker; each worker
  offered a task; the client again when it verifies the attestation), and each replica runs
  its circuits. Each distinct program is parsed once per process (the openqasm3 package's
  ANTLR parser, 15-70 ms a program; `qiz.compute.execute` keeps the last 16 parsed): entries
  carrying one program with other inputs cost a copy, not a parse. Before that cache (and on
  a busy machine) the 64-point run took 10.0 s and the 256-point one 55.9 s.
- Agreement: with the same seed the mesh's counts equal the local run's bit for bit (the same
  engine and seeds, run by the workers), and so far Qiskit's too (the column says when); every
  sampler's counts are tested against the exact distributions (qiskit's `Statevector`), point
  by point with Pearson's chi-square (outcomes expected fewer than 5 times share a bin),
  Bonferroni-corrected: the smallest p-value times the points must stay above 1e-4, or the run
  stops. Not pooled over points: every point of a PUB is sampled with the PUB's seed (as
  `StatevectorSampler` does), so the points' errors are correlated and their summed statistic
  is not chi-square distributed. The median TVD is between one point's 256 shots and its
  exact distribution (sampling error alone, over 32 outcomes). Estimator values are exact and
  agree with Qiskit's to 1e-9.
- The cut run is docs/python.md's: two blocks joined by one CNOT, `run_cut` with every
  distinct sub-experiment in one `circuits` job on the mesh (replicas 2) or in this process
  (local=True, our engine). Its time split is `CutResult.seconds`: finding the cut and
  building the sub-experiments, running them, reconstructing the values. The mesh
  and local runs take the same seed and must return the same values; the error is against the
  exact values, contracted from the two blocks' states through the joining CNOT's control
  (checked against a full statevector on a 6-qubit copy).
"""


def section(figures: list[Figure]) -> str:
    """The client section of docs/benchmarks.md (heading included)."""
    nodes = next((f.extra["nodes"] for f in figures if "nodes" in f.extra), NODES)
    return HEADING + "\n" + markdown(figures) + NOTES.format(nodes=nodes)


def markdown(figures: list[Figure]) -> str:
    """Two tables (the primitives side by side with ratios; the cut runs' time split) and
    the load the run saw."""
    lines = [
        "| PUB | engine | wall time | circuits/s | time / local=True's | time / Qiskit's "
        "| agreement |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for f in figures:
        x = f.extra
        if x.get("path") not in ("sampler", "estimator"):
            continue
        if x["path"] == "sampler":
            pub = f"sampler, {x['points']} points x {x['shots']} shots"
            agree = (
                f"chi-square p (Bonferroni) >= {x['chi2_p_min']:.2g}, "
                f"median TVD {x['tvd_median']:.3f}"
            )
            if x["engine"] == "mesh":
                agree += "; counts = local's" if x["equal_to_local"] else "; counts differ"
            if x.get("equal_to_qiskit"):
                agree += "; counts = Qiskit's"
        else:
            pub = f"estimator, {x['points']} points"
            agree = f"values within {x['max_abs_diff']:.1e} of Qiskit's"
        engine = label(x["engine"], x.get("nodes", 0))
        if x["engine"] == "mesh":
            engine += f": {x['jobs']} {'/'.join(x['kinds'])} job(s)"
            if "spec_check_s" in x:
                engine += f", the client's spec check {x['spec_check_s']:.2f} s"
        lines.append(
            f"| {pub} | {engine} | {x['wall_s']:.3f} s | {f.value:,.1f} | "
            f"{1 / x['vs_local']:.3g}x | {1 / x['vs_qiskit']:.3g}x | {agree} |"
        )
    lines += [
        "",
        "| cut run | where | wall time | cutting | sub-experiments | reconstruction "
        "| cuts, overhead | sub-experiments (runs) | largest error / std bound |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for f in figures:
        x = f.extra
        if x.get("path") != "cut":
            continue
        where = label(x["engine"], x.get("nodes", 0))
        if x["engine"] == "mesh":
            where += f": {x['jobs']} circuits job(s)"
        lines.append(
            f"| {x['qubits']} qubits, max_qubits {x['max_qubits']}, {x['shots']} shots | "
            f"{where} | {f.value:.2f} s | {x['cut_s']:.2f} s | {x['run_s']:.2f} s | "
            f"{x['reconstruct_s']:.2f} s | {x['cuts']}, {x['overhead']:g} | "
            f"{x['subexperiments']} ({x['runs']}) | {x['max_error']:.4f} / {x['std_bound']:.4f} |"
        )
    head = figures[0].extra if figures else {}
    lines += [
        "",
        f"Load average (1 min) at the start {head.get('load_average_1min')}, at the end "
        f"{head.get('load_average_1min_end')}; {machine()}"
        + ("; a --quick run (smoke test, not a measurement)." if head.get("quick") else "."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if {"-h", "--help"} & set(sys.argv):
        print(__doc__)
        return
    nodes = int(sys.argv[sys.argv.index("--nodes") + 1]) if "--nodes" in sys.argv else NODES
    figures = run("--quick" in sys.argv, "--busy-ok" in sys.argv, nodes)
    print()
    print(section(figures))


if __name__ == "__main__":
    main()
