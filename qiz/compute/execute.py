"""What a job kind means: its parameters, how big it is, and how to run it.

Pure functions over plain data (the spec's ``params``), used in three places: the submitter
checks a spec before signing it, a worker checks it again on arrival, and a worker process runs
it. Each kind's fields are listed in ``FIELDS``; anything else is refused by name.

Results are plain data with floats rounded to ``SIGNIFICANT_DIGITS`` significant digits
(:func:`canonical`), so replicas that ran the same seeded work agree bit for bit on the result's
digest even when a last-place rounding differs between machines.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qiz.compute.errors import SpecError
from qiz.quantum.core.engine import ENGINE_NAME, ENGINE_VERSION
from qiz.quantum.core.errors import QuantumError

ENGINE = f"{ENGINE_NAME}/{ENGINE_VERSION}"
SIGNIFICANT_DIGITS = 12
KINDS = ("sampler", "estimator", "vqe", "qaoa", "grover")
SAMPLED_KINDS = ("sampler", "grover")  # results are counts: compared statistically when unseeded

# kind -> {field: required?}
FIELDS: dict[str, dict[str, bool]] = {
    "sampler": {
        "qasm": True,
        "shots": False,
        "inputs": False,
        "target": False,  # a device target and its transpiler: qiz.compute.devices
        "transpile": False,
        "transpile_seed": False,
        "adapter": False,  # a provider's SDK runs it instead (braket, ibm): qiz.compute.devices
    },
    "estimator": {"qasm": True, "observables": True, "inputs": False},
    "vqe": {
        "hamiltonian": True,
        "ansatz": False,
        "optimizer": False,
        "maxiter": False,
        "theta": False,
        "exact": False,
    },
    "qaoa": {
        "graph": True,
        "graph_seed": False,
        "p": True,
        "gammas": False,
        "betas": False,
        "maxiter": False,
        "shots": False,
        "start": False,
        "precision": False,
    },
    "grover": {"qubits": True, "marked": False, "cnf": False, "iterations": False, "shots": False},
}
# complex128 state vectors each kind holds at its peak (measured in the quantum layer's tests)
STATE_VECTORS = {"sampler": 1.1, "estimator": 2.1, "vqe": 2.5, "qaoa": 1.6, "grover": 0.6}
MAX_OBSERVABLES = 64
EXACT_DEFAULT_QUBITS = 12  # VQE's exact reference by default up to here (dense, deterministic)
MAX_TEXT = 192 * 1024
# parsed programs kept by text: a circuits job's entries (cut sub-experiments, PUB points)
# share a few programs, and each was parsed at every check and every run (ANTLR: 15-70 ms
# each). Only programs of at most MAX_PARSED_TEXT bytes, so the cache stays small.
MAX_PARSED_PROGRAMS = 16
MAX_PARSED_TEXT = 8 * 1024

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Shape:
    """How large one run of a kind is: what limits are checked against and placement weighs."""

    num_qubits: int
    instructions: int  # gates in the circuit, or layers x terms: a size, not a time
    shots: int
    evaluations: int  # state preparations one run needs (optimizer iterations, points)

    @property
    def work(self) -> float:
        """A relative cost: evaluations x 2^qubits x (instructions + 1)."""
        return float(self.evaluations) * float(1 << self.num_qubits) * (self.instructions + 1)


# ----------------------------------------------------------------------------- field checks


def _fail(path: str, message: str) -> SpecError:
    return SpecError(f"{path}: {message}")


def _int(  # noqa: PLR0917 - a field check reads best with its bounds in a row
    params: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: int
) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(f"{path}.{key}", f"must be a whole number from {lo} to {hi}")
    return value


def _text(params: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = params.get(key, default)
    if not isinstance(value, str) or not value:
        raise _fail(f"{path}.{key}", "must be non-empty text")
    if len(value.encode("utf-8")) > MAX_TEXT:
        raise _fail(f"{path}.{key}", f"is over {MAX_TEXT} bytes")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, "must be a finite number")
    return float(value)


def _numbers(params: Mapping[str, Any], key: str, path: str, length: int | None) -> list[float]:
    value = params.get(key)
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = f"a list of {length} number(s)" if length is not None else "a list of numbers"
        raise _fail(f"{path}.{key}", f"must be {want}")
    return [_number(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]


def _inputs(params: Mapping[str, Any], path: str) -> dict[str, float]:
    value = params.get("inputs", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(f"{path}.inputs", "must map input names to numbers")
    return {k: _number(v, f"{path}.inputs.{k}") for k, v in value.items()}


def check_fields(kind: str, params: Any, path: str = "params") -> None:
    """The kind exists, ``params`` is a map, required fields are present, no unknown ones."""
    if kind not in FIELDS:
        raise SpecError(f"kind: {kind!r} is not one of {', '.join(KINDS)} or sweep")
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise _fail(path, f"must be a map of {kind} fields")
    known = FIELDS[kind]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise _fail(
            f"{path}.{unknown[0]}", f"is not a {kind} field (known: {', '.join(sorted(known))})"
        )
    missing = [k for k, required in known.items() if required and k not in params]
    if missing:
        raise _fail(f"{path}.{missing[0]}", f"is required for {kind}")


# ----------------------------------------------------------------------------- builders


_parsed: OrderedDict[str, Any] = OrderedDict()  # text -> Circuit, least recently used first
_parsed_lock = threading.Lock()  # specs are parsed in worker threads (asyncio.to_thread)


def _load(text: str):  # noqa: ANN202 - Circuit or DynamicProgram, lazily imported
    """``text`` parsed; a small static program from the cache when it was parsed lately (a
    copy: the caller may append to it)."""
    from qiz.quantum import qasm
    from qiz.quantum.core.circuit import Circuit

    with _parsed_lock:
        cached = _parsed.get(text)
        if cached is not None:
            _parsed.move_to_end(text)
    if cached is not None:
        return replace(cached, instructions=list(cached.instructions))
    circuit = qasm.loads(text, name="job")  # outside the lock: parsing is the slow part
    if isinstance(circuit, Circuit) and len(text) <= MAX_PARSED_TEXT:
        with _parsed_lock:
            _parsed[text] = replace(circuit, instructions=list(circuit.instructions))
            while len(_parsed) > MAX_PARSED_PROGRAMS:
                _parsed.popitem(last=False)
    return circuit


def _circuit(params: Mapping[str, Any], path: str):  # noqa: ANN202 - Circuit, lazily imported
    """The job's circuit with its inputs bound: a ``Circuit``, or a ``qasm.DynamicProgram``
    when its control flow depends on measurements (the sampler runs both)."""
    try:
        circuit = _load(_text(params, "qasm", path))
    except QuantumError as exc:
        raise _fail(f"{path}.qasm", str(exc)) from None
    inputs = _inputs(params, path)
    unknown = sorted(set(inputs) - set(circuit.parameters))
    if unknown:
        raise _fail(f"{path}.inputs.{unknown[0]}", "the circuit has no such input")
    missing = [n for n in circuit.parameters if n not in inputs]
    if missing:
        raise _fail(f"{path}.inputs", f"the circuit's input {missing[0]!r} needs a value")
    try:
        return circuit.bind(inputs) if inputs else circuit
    except QuantumError as exc:
        raise _fail(f"{path}.inputs", str(exc)) from None


def _static(circuit, path: str):  # noqa: ANN001, ANN202 - Circuit, lazily imported
    """``circuit`` if it is a plain ``Circuit``: the estimator's (exact) path needs one."""
    from qiz.quantum.core.circuit import Circuit

    if not isinstance(circuit, Circuit):
        raise _fail(
            f"{path}.qasm",
            "the estimator needs a circuit without classical control; this program's control "
            "flow depends on measurements (submit it as a sampler job)",
        )
    return circuit


def _hamiltonian(text: str, path: str):  # noqa: ANN202 - PauliSum
    from qiz.quantum.core.pauli import PauliSum

    try:
        return PauliSum.builtin(text) or PauliSum.loads(text, source=path)
    except QuantumError as exc:
        message = str(exc)  # the parser's messages start with the source, our path
        raise SpecError(message if message.startswith(path) else f"{path}: {message}") from None


def _graph(params: Mapping[str, Any], path: str):  # noqa: ANN202 - Graph
    from qiz.quantum.problems.graphs import load_graph, parse_edge_list

    text = _text(params, "graph", path)
    seed = _int(params, "graph_seed", path, 0, 2**63 - 1, 0)
    try:
        if text.startswith("random:"):
            return load_graph(text, seed)
        return parse_edge_list(text, f"{path}.graph")
    except QuantumError as exc:
        raise _fail(f"{path}.graph", str(exc)) from None


def shape(kind: str, params: Any, path: str = "params", max_shots: int = 10_000_000) -> Shape:
    """Check ``params`` fully (parse circuits, Hamiltonians, graphs) and measure the run."""
    check_fields(kind, params, path)
    return _SHAPES[kind](params, path, max_shots)


def _shape_sampler(params: Mapping[str, Any], path: str, max_shots: int) -> Shape:
    from qiz.compute import devices
    from qiz.quantum.core.circuit import Circuit

    circuit = _circuit(params, path)
    shots = _int(params, "shots", path, 1, max_shots, 1024)
    # a dynamic program (qasm.DynamicProgram) is sized by its statements; its limits bound a run
    size = len(circuit.instructions) if isinstance(circuit, Circuit) else circuit.size
    target = devices.check(params, circuit, path)
    if target is not None or devices.is_adapter_run(params):  # a noisy run costs more
        return devices.shape(circuit, size, shots)
    return Shape(circuit.num_qubits, size, shots, 1)


def _shape_estimator(params: Mapping[str, Any], path: str, max_shots: int) -> Shape:
    circuit = _static(_circuit(params, path), path)
    obs = params["observables"]
    if not isinstance(obs, list) or not 1 <= len(obs) <= MAX_OBSERVABLES:
        raise _fail(f"{path}.observables", f"must be a list of 1 to {MAX_OBSERVABLES} sums")
    terms = 0
    for i, text in enumerate(obs):
        if not isinstance(text, str):
            raise _fail(f"{path}.observables[{i}]", "must be a Pauli sum as text")
        h = _hamiltonian(text, f"{path}.observables[{i}]")
        if h.num_qubits != circuit.num_qubits:
            raise _fail(
                f"{path}.observables[{i}]",
                f"acts on {h.num_qubits} qubits; the circuit has {circuit.num_qubits}",
            )
        terms += len(h)
    return Shape(circuit.num_qubits, len(circuit.instructions) + terms, 0, 1)


def _shape_vqe(params: Mapping[str, Any], path: str, max_shots: int) -> Shape:
    from qiz.quantum.algorithms.ansatz import parse_ansatz

    h = _hamiltonian(_text(params, "hamiltonian", path), f"{path}.hamiltonian")
    try:
        ansatz = parse_ansatz(_text(params, "ansatz", path, "hea:2"), h)
    except QuantumError as exc:
        raise _fail(f"{path}.ansatz", str(exc)) from None
    optimizer = _text(params, "optimizer", path, "L-BFGS-B")
    if optimizer.upper() not in ("L-BFGS-B", "COBYLA", "SPSA"):
        raise _fail(f"{path}.optimizer", "must be L-BFGS-B, COBYLA or SPSA")
    maxiter = _int(params, "maxiter", path, 1, 100_000, 200)
    if "theta" in params:
        _numbers(params, "theta", path, ansatz.num_parameters)
        maxiter = 1
    if not isinstance(params.get("exact", False), bool):
        raise _fail(f"{path}.exact", "must be true or false")
    # the gates each evaluation prepares, counted from the name (never built here), and a term each
    return Shape(h.num_qubits, ansatz.num_instructions + len(h), 0, maxiter)


def _shape_qaoa(params: Mapping[str, Any], path: str, max_shots: int) -> Shape:
    g = _graph(params, path)
    p = _int(params, "p", path, 1, 64, 1)
    shots = _int(params, "shots", path, 1, max_shots, 1024)
    maxiter = _int(params, "maxiter", path, 1, 100_000, 200)
    if ("gammas" in params) != ("betas" in params):
        raise _fail(path, "give both gammas and betas (to evaluate) or neither (to optimise)")
    if "gammas" in params:
        _numbers(params, "gammas", path, p)
        _numbers(params, "betas", path, p)
        maxiter = 1
    if params.get("start", "ramp") not in ("ramp", "fixed"):
        raise _fail(f"{path}.start", "must be ramp or fixed")
    if params.get("precision", "double") not in ("double", "single"):
        raise _fail(f"{path}.precision", "must be double or single")
    return Shape(g.num_nodes, p * (len(g.edges) + g.num_nodes), shots, maxiter)


def _shape_grover(params: Mapping[str, Any], path: str, max_shots: int) -> Shape:
    n = _int(params, "qubits", path, 1, 40, 1)
    if ("marked" in params) == ("cnf" in params):
        raise _fail(path, "give exactly one of marked and cnf")
    if "marked" in params:
        marked = params["marked"]
        if not isinstance(marked, list) or not marked or len(marked) > 1 << 16:
            raise _fail(f"{path}.marked", "must be a list of 1 to 65536 indices")
        for i, m in enumerate(marked):
            if not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < 1 << n:
                raise _fail(f"{path}.marked[{i}]", f"must be an index in 0 .. 2^{n} - 1")
    else:
        _cnf(params, path, n)
    iterations = _int(params, "iterations", path, 0, 1 << 20, 0)
    shots = _int(params, "shots", path, 1, max_shots, 1024)
    return Shape(n, 2, shots, max(1, iterations or int(math.pi / 4 * 2 ** (n / 2))))


_SHAPES: dict[str, Callable[[Mapping[str, Any], str, int], Shape]] = {
    "sampler": _shape_sampler,
    "estimator": _shape_estimator,
    "vqe": _shape_vqe,
    "qaoa": _shape_qaoa,
    "grover": _shape_grover,
}


def _cnf(params: Mapping[str, Any], path: str, n: int):  # noqa: ANN202 - Cnf
    from qiz.quantum.problems.cnf import Cnf

    try:
        cnf = Cnf.loads(_text(params, "cnf", path), source=f"{path}.cnf")
    except QuantumError as exc:
        raise _fail(f"{path}.cnf", str(exc)) from None
    if cnf.num_vars != n:
        raise _fail(f"{path}.cnf", f"has {cnf.num_vars} variables; qubits is {n}")
    return cnf


# ----------------------------------------------------------------------------- running


def run(kind: str, params: Mapping[str, Any], seed: int | None, progress: Progress | None = None):  # noqa: ANN201
    """Run one instance of ``kind`` and return its canonical result (plain data).

    ``params`` must have passed :func:`shape` (the worker checks every spec on arrival, and
    a sweep's points differ only in numbers): the builders below parse what they need once,
    so a sweep point is not parsed twice. Only the fields are checked again here."""
    check_fields(kind, params)
    runner = {"sampler": _sampler, "estimator": _estimator, "vqe": _vqe, "qaoa": _qaoa}
    result = runner.get(kind, _grover)(params, seed, progress)
    return canonical(result)


def _sampler(params: Mapping[str, Any], seed: int | None, progress: Progress | None) -> dict:
    from qiz.quantum.core.primitives import Sampler

    circuit = _circuit(params, "params")
    if "adapter" in params:
        from qiz.compute import devices

        return devices.run_adapter(params, circuit, seed)
    if "target" in params:
        from qiz.compute import devices

        return devices.run(params, circuit, seed)
    shots = int(params.get("shots", 1024))
    res = Sampler().run(circuit, shots=shots, seed=seed)
    return {"counts": dict(sorted(res.counts.items())), "shots": shots}


def _estimator(params: Mapping[str, Any], seed: int | None, progress: Progress | None) -> dict:
    from qiz.quantum.core.primitives import Estimator

    circuit = _static(_circuit(params, "params"), "params")
    obs = [_hamiltonian(t, "params.observables") for t in params["observables"]]
    return {"values": [float(v) for v in Estimator().run(circuit, obs).values]}


def _vqe(params: Mapping[str, Any], seed: int | None, progress: Progress | None) -> dict:
    from qiz.quantum.algorithms.ansatz import HardwareEfficientAnsatz, parse_ansatz
    from qiz.quantum.algorithms.vqe import VqeEvaluator, run_vqe

    h = _hamiltonian(params["hamiltonian"], "params.hamiltonian")
    ansatz = parse_ansatz(params.get("ansatz", "hea:2"), h)
    if isinstance(ansatz, HardwareEfficientAnsatz) and not h.is_real:
        # its states are real: the odd-Y terms would silently average to 0
        raise _fail("params.ansatz", "hea makes real states only; use general:D for this one")
    if "theta" in params:
        energy = VqeEvaluator(ansatz, h).energy([float(v) for v in params["theta"]])
        return {"energy": float(energy)}
    maxiter = int(params.get("maxiter", 200))
    res = run_vqe(
        ansatz,
        h,
        method=params.get("optimizer", "L-BFGS-B"),
        maxiter=maxiter,
        seed=seed,
        exact=bool(params.get("exact", h.num_qubits <= EXACT_DEFAULT_QUBITS)),
        progress=_per_evaluation(progress, maxiter),
    )
    return {
        "energy": float(res.energy),
        "theta": [float(v) for v in res.theta],
        "exact": None if res.exact is None else float(res.exact),
        "evaluations": int(res.evaluations),
        "converged": bool(res.converged),
    }


def _qaoa(params: Mapping[str, Any], seed: int | None, progress: Progress | None) -> dict:
    from qiz.quantum.algorithms.qaoa import QaoaSimulator, optimize
    from qiz.quantum.problems.qubo import QuboProblem, bitstring

    g = _graph(params, "params")
    problem = QuboProblem.maxcut(g.num_nodes, g.edges, g.weights)
    precision = str(params.get("precision", "double"))
    if "gammas" in params:
        sim = QaoaSimulator(problem, precision)
        value = sim.expectation([float(v) for v in params["gammas"]], params["betas"])
        return {"expectation": float(value)}
    maxiter = int(params.get("maxiter", 200))
    res = optimize(
        problem,
        int(params["p"]),
        start=params.get("start", "ramp"),
        maxiter=maxiter,
        seed=seed,
        shots=int(params.get("shots", 1024)),
        progress=_per_evaluation(progress, maxiter),
        precision=precision,
    )
    return {
        "expectation": float(res.energy),
        "gammas": [float(v) for v in res.gammas],
        "betas": [float(v) for v in res.betas],
        "best_cut": float(res.best_value),
        "best_bitstring": bitstring(res.best_index, g.num_nodes),
        "optimum": None if res.optimum is None else float(res.optimum),
        "approximation_ratio": None
        if res.approximation_ratio is None
        else float(res.approximation_ratio),
        "evaluations": int(res.evaluations),
    }


def _grover(params: Mapping[str, Any], seed: int | None, progress: Progress | None) -> dict:
    from qiz.quantum.algorithms.grover import GroverSimulator, optimal_iterations

    n = int(params["qubits"])
    if "marked" in params:
        sim = GroverSimulator(n, marked=[int(m) for m in params["marked"]])
    else:
        sim = GroverSimulator(n, cnf=_cnf(params, "params", n))
    if sim.num_solutions == 0:
        return {"iterations": 0, "success_probability": 0.0, "counts": {}, "shots": 0}
    k = int(params.get("iterations") or optimal_iterations(n, sim.num_solutions))
    probability = sim.run(k)
    shots = int(params.get("shots", 1024))
    counts = sim.sample(shots, seed)
    return {
        "iterations": k,
        "success_probability": float(probability),
        "counts": {format(i, f"0{n}b"): int(c) for i, c in sorted(counts.items())},
        "shots": shots,
    }


# ----------------------------------------------------------------------------- result shapes
# What each runner above returns, read by :mod:`qiz.compute.results` to refuse a peer's result
# of the wrong shape before the quorum compares it; kept here, beside the runners, so that a
# runner that changes its fields changes this too (tests run every kind and check both agree).


def result_fields(kind: str, params: Mapping[str, Any]) -> frozenset[str] | None:
    """The exact keys of one run's result of ``kind`` with ``params``, or None (not a kind)."""
    if kind == "sampler":
        return frozenset({"counts", "shots"})
    if kind == "estimator":
        return frozenset({"values"})
    if kind == "vqe":
        if "theta" in params:
            return frozenset({"energy"})
        return frozenset({"energy", "theta", "exact", "evaluations", "converged"})
    if kind == "qaoa":
        if "gammas" in params:
            return frozenset({"expectation"})
        return frozenset(
            {
                "expectation",
                "gammas",
                "betas",
                "best_cut",
                "best_bitstring",
                "optimum",
                "approximation_ratio",
                "evaluations",
            }
        )
    if kind == "grover":
        return frozenset({"iterations", "success_probability", "counts", "shots"})
    return None


def outcome_width(kind: str, params: Mapping[str, Any]) -> int | None:
    """Bits per outcome in a sampled kind's counts (the circuit's classical bits, or grover's
    qubits); None for the kinds that return no counts. ``params`` passed :func:`shape`.

    The sampler's rule is mirrored exactly (``Sampler.run``): a circuit with no ``measure``
    and no ``reset`` is measured whole (``measure_all``), which widens the classical register
    to the qubits, so its outcomes have ``max(clbits, qubits)`` bits, not ``clbits`` (an honest
    result of ``qubit[2] q; h q[0];`` has outcomes like ``"01"``, not zero bits)."""
    if kind == "sampler":
        circuit = _circuit(params, "params")
        if circuit.has_measurements():
            return int(circuit.num_clbits)
        return max(int(circuit.num_clbits), int(circuit.num_qubits))
    if kind == "grover":
        return int(params["qubits"])
    return None


def observables(kind: str, params: Mapping[str, Any]) -> int | None:
    """How many values an estimator returns (one per observable); None for the other kinds."""
    return len(params["observables"]) if kind == "estimator" else None


WARM_UP = (
    ("qaoa", {"graph": "random:6,3", "p": 1, "gammas": [0.1], "betas": [0.2]}),
    ("vqe", {"hamiltonian": "tfim:3", "ansatz": "hea:1", "maxiter": 2}),
    ("grover", {"qubits": 3, "marked": [1], "shots": 4}),
    ("sampler", {"qasm": "OPENQASM 3.0; qubit[1] q; bit[1] c; h q[0]; c = measure q;", "shots": 4}),
)


def warm_up() -> None:
    """Run a tiny instance of each kind, so that a worker process loads its compiled kernels
    (numba's cache) before the first real task rather than during it."""
    for kind, params in WARM_UP:
        run(kind, params, 0)


def summarise(kind: str, results: list) -> str:
    """One line about a job's results (``results``: one per task), for people."""
    first = results[0] if results else None
    if kind == "circuits":
        from qiz.compute.circuits import summarise

        return summarise(results)
    if kind == "kernel":
        from qiz.compute.kernel_kind import summarise as kernel_summary

        return kernel_summary(results)
    if kind == "gradient":
        from qiz.compute.gradient_kind import summarise as gradient_summary

        return gradient_summary(results)
    if kind == "sweep":
        points = [p for task in results for p in task]
        values = [p.get("expectation", p.get("energy")) for p in points]
        numbers = [v for v in values if isinstance(v, int | float)]
        if numbers:
            best = max if "expectation" in points[0] else min
            return f"{len(points)} points, best {best(numbers):.10g}"
        return f"{len(points)} points"
    if not isinstance(first, dict):
        return ""
    if "approximation_ratio" in first and first.get("optimum") is not None:
        return (
            f"expected cut {first['expectation']:.6f}, best cut sampled {first['best_cut']:g} "
            f"({first['best_bitstring']}), optimum {first['optimum']:g}, "
            f"approximation ratio {first['approximation_ratio']:.4f}"
        )
    if "energy" in first:
        exact = first.get("exact")
        return f"energy {first['energy']:.10g}" + (f" (exact {exact:.10g})" if exact else "")
    if "expectation" in first:
        return f"expectation {first['expectation']:.10g}"
    if "counts" in first:
        top = sorted(first["counts"].items(), key=lambda kv: -kv[1])[:3]
        text = "top outcomes " + ", ".join(f"{k}: {v}" for k, v in top)
        if "success_probability" in first:
            text += f"; success probability {first['success_probability']:.6f}"
        return text
    if "values" in first:
        return "values " + ", ".join(f"{v:.10g}" for v in first["values"][:8])
    return ""


RUNNING_CAP = 0.99  # the most progress a task still running reports (it is not done yet)


def _per_evaluation(progress: Progress | None, total: int) -> Callable[[int, float], None] | None:
    """Progress as evaluations over the optimizer's iteration budget: an estimate only (L-BFGS-B
    evaluates several times per iteration, so it can run past ``total``), hence capped below
    1.0: only the finished task is done."""
    if progress is None:
        return None
    return lambda done, _value: progress(min(RUNNING_CAP, done / max(1, total)))


# ----------------------------------------------------------------------------- plain data


def canonical(value: Any) -> Any:
    """Plain data with every float rounded to ``SIGNIFICANT_DIGITS`` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def apply_point(params: Mapping[str, Any], point: Mapping[str, Any]) -> dict:
    """``params`` with each dotted path of ``point`` set: ``{"gammas.0": 0.3}`` sets
    ``params["gammas"][0]``; the path must exist (a list index inside the list)."""
    out = _deep_copy(params)
    for path, value in point.items():
        parts = path.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, dict):
                if part not in node and not last:
                    raise _fail(f"params.axes.{path}", f"{part!r} is not in the base parameters")
                if last:
                    node[part] = value
                else:
                    node = node[part]
            elif isinstance(node, list) and part.isdecimal() and int(part) < len(node):
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            else:
                raise _fail(f"params.axes.{path}", f"{part!r} does not name an element of the base")
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def run_points(
    kind: str,
    base: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]],
    seed: int | None,
    progress: Progress | None = None,
) -> list[dict]:
    """Run ``kind`` at each point of a sweep shard: one result per point, with its point."""
    out = []
    for i, point in enumerate(points):
        result = run(kind, apply_point(base, point), seed)
        out.append({"point": canonical(dict(point)), **result})
        if progress is not None:
            progress(min(RUNNING_CAP, (i + 1) / len(points)))
    return out
