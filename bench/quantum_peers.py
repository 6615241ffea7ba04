"""The workloads of ``bench/quantum.py`` and one adapter per simulator, plus the subprocess worker
that times one (engine, workload, n) measurement.

    python bench/quantum_peers.py '{"engine": "aer", "workload": "qaoa", "n": 20, ...}'

prints one JSON line. Every engine gets identical inputs, built here from the seed, and returns
what its own best method computes for them:

- ``qaoa``: expected cut of a p=4 QAOA state on a random 3-regular graph (unit weights),
  |g,b> = prod_l exp(-i b_l sum_j X_j) exp(-i g_l C) |+>^n, C(x) = number of cut edges.
- ``vqe``: energy and full gradient of the open transverse-field Ising chain
  H = -J sum Z_i Z_{i+1} - h sum X_i (J = h = 1) in a hardware-efficient ansatz from |0>^n:
  4 layers of RY(theta[l*n+q]) on every qubit then CZ(q, q+1).
- ``grover``: probability of the marked item after k iterations (oracle, then diffusion) from
  |+>^n.

Qubit q is bit q of the basis index (little-endian, as Qiskit). Engines that order wires the
other way (PennyLane) get operators on named wires, so nothing depends on bit order except the
marked item's index, which each adapter maps explicitly.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

QAOA_GAMMAS = (0.20, 0.38, 0.44, 0.49)
QAOA_BETAS = (0.57, 0.41, 0.28, 0.15)
VQE_DEPTH = 4
GROVER_ITERATIONS = 4  # timed iterations; the full run is projected from the per-iteration time
TFIM_J = 1.0
TFIM_H = 1.0

ENGINES = ("qiz", "qokit", "aer", "lightning", "qulacs")
DISTRIBUTIONS = {
    "qiz": "qiz",
    "qokit": "qokit",
    "aer": "qiskit-aer",
    "lightning": "pennylane-lightning",
    "qulacs": "qulacs",
}
SUPPORTED = {
    "qaoa": ("qiz", "qokit", "aer", "lightning", "qulacs"),
    "vqe": ("qiz", "aer", "lightning", "qulacs"),
    "grover": ("qiz", "aer", "lightning", "qulacs"),
}
THREADS = 2


# ----------------------------------------------------------------------------- problems


def qaoa_edges(n: int, seed: int) -> list[tuple[int, int]]:
    import networkx as nx

    graph = nx.random_regular_graph(3, n, seed=seed)
    return sorted((min(u, v), max(u, v)) for u, v in graph.edges())


def vqe_theta(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-math.pi, math.pi, VQE_DEPTH * n)


def grover_marked(n: int, seed: int) -> int:
    return int(np.random.default_rng(seed).integers(0, 1 << n))


def grover_probability(n: int, k: int) -> float:
    """Analytic success probability after k iterations with one marked item of 2^n."""
    theta = math.asin(math.sqrt(1.0 / (1 << n)))
    return math.sin((2 * k + 1) * theta) ** 2


def grover_optimal_iterations(n: int) -> int:
    theta = math.asin(math.sqrt(1.0 / (1 << n)))
    return round(math.pi / (4 * theta) - 0.5)


# ----------------------------------------------------------------------------- adapters
# Each setup function builds everything that is done once per problem (circuits, operators,
# precomputed cost diagonals) and returns the zero-argument evaluation that is timed.

Setup = Callable[[str, int, int], Callable[[], Any]]


def setup_qiz(workload: str, n: int, seed: int) -> Callable[[], Any]:
    if workload == "qaoa":
        from qiz.quantum.algorithms.qaoa import QaoaSimulator

        sim = QaoaSimulator.maxcut(n, qaoa_edges(n, seed))
        return lambda: float(sim.expectation(list(QAOA_GAMMAS), list(QAOA_BETAS)))
    if workload == "vqe":
        from qiz.quantum.algorithms.ansatz import HardwareEfficientAnsatz
        from qiz.quantum.algorithms.vqe import VqeEvaluator
        from qiz.quantum.core.pauli import PauliSum

        ansatz = HardwareEfficientAnsatz(n, depth=VQE_DEPTH)
        ham = PauliSum.tfim(n, j=TFIM_J, h=TFIM_H, periodic=False)
        theta = vqe_theta(n, seed)
        # Prepared once, like Lightning's preprocessed tape: the Hamiltonian split for the
        # fused kernels and the state buffers, reused by every evaluation.
        evaluator = VqeEvaluator(ansatz, ham)

        def vqe() -> tuple[float, np.ndarray]:
            e, g = evaluator.energy_and_gradient(theta)
            return float(e), np.asarray(g, dtype=float)

        return vqe
    from qiz.quantum.algorithms.grover import GroverSimulator

    sim = GroverSimulator(n, marked=[grover_marked(n, seed)])
    return lambda: float(sim.run(GROVER_ITERATIONS))


def setup_qokit(workload: str, n: int, seed: int) -> Callable[[], Any]:
    import qokit.fur
    from qokit.fur.c.qaoa_simulator import QAOAFURXSimulatorC

    chosen = qokit.fur.choose_simulator(name="auto")
    if chosen is not QAOAFURXSimulatorC:
        raise RuntimeError(
            f"QOKit picked {chosen.__name__}, not its C simulator: libcsim.so is missing; "
            "run bench/build_qokit.sh with this interpreter"
        )
    # QOKit's terms (w, (i, j)) mean w * s_i * s_j with spins s = +-1; the diagonal is the cut
    # (as qokit.maxcut.get_maxcut_terms builds it). Its phase layer is exp(-i * gamma/2 * diag)
    # (apply_diagonal(-0.5 * gamma)) and its mixer exp(-i * beta * X_j): our gamma is half its.
    edges = qaoa_edges(n, seed)
    terms = [(-0.5, (u, v)) for u, v in edges] + [(len(edges) / 2, ())]
    sim = chosen(n, terms=terms)  # precomputes the cost diagonal once (not timed)
    gammas = [2 * g for g in QAOA_GAMMAS]
    betas = list(QAOA_BETAS)

    def qaoa() -> float:
        result = sim.simulate_qaoa(gammas, betas)
        return float(sim.get_expectation(result))

    return qaoa


def _aer_simulator() -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator(
        method="statevector",
        precision="double",
        max_parallel_threads=THREADS,
        max_parallel_experiments=1,
    )


def setup_aer(workload: str, n: int, seed: int) -> Callable[[], Any]:
    from qiskit import QuantumCircuit, transpile
    from qiskit.quantum_info import SparsePauliOp

    sim = _aer_simulator()
    if workload == "qaoa":
        edges = qaoa_edges(n, seed)
        qc = QuantumCircuit(n)
        qc.h(range(n))
        for g, b in zip(QAOA_GAMMAS, QAOA_BETAS, strict=True):
            for u, v in edges:
                qc.rzz(-g, u, v)  # exp(-i g (1 - Z_u Z_v)/2) up to a global phase
            qc.rx(2 * b, range(n))  # exp(-i b X)
        cost = SparsePauliOp.from_sparse_list(
            [("", [], len(edges) / 2)] + [("ZZ", [u, v], -0.5) for u, v in edges], num_qubits=n
        )
        qc.save_expectation_value(cost, range(n), label="e")
        circ = transpile(qc, sim, optimization_level=0)

        def qaoa() -> float:
            return float(sim.run(circ).result().data(0)["e"])

        return qaoa
    if workload == "vqe":
        from qiskit.circuit import ParameterVector

        theta = vqe_theta(n, seed)
        params = ParameterVector("t", len(theta))
        qc = QuantumCircuit(n)
        for layer in range(VQE_DEPTH):
            for q in range(n):
                qc.ry(params[layer * n + q], q)
            for q in range(n - 1):
                qc.cz(q, q + 1)
        ham = SparsePauliOp.from_sparse_list(
            [("ZZ", [i, i + 1], -TFIM_J) for i in range(n - 1)]
            + [("X", [i], -TFIM_H) for i in range(n)],
            num_qubits=n,
        )
        qc.save_expectation_value(ham, range(n), label="e")
        circ = transpile(qc, sim, optimization_level=0)
        # Parameter shift (exact for RY, shift pi/2): 1 + 2 * 4n bindings in one batched run.
        shifted = [theta]
        for k in range(len(theta)):
            for s in (math.pi / 2, -math.pi / 2):
                t = theta.copy()
                t[k] += s
                shifted.append(t)
        binds = [{p: [t[i] for t in shifted] for i, p in enumerate(params)}]

        def vqe() -> tuple[float, np.ndarray]:
            result = sim.run([circ], parameter_binds=binds).result()
            values = np.array([result.data(i)["e"] for i in range(len(shifted))], dtype=float)
            grad = 0.5 * (values[1::2] - values[2::2])
            return float(values[0]), grad

        return vqe
    marked = grover_marked(n, seed)
    zeros = [q for q in range(n) if not (marked >> q) & 1]
    qc = QuantumCircuit(n)
    qc.h(range(n))
    for _ in range(GROVER_ITERATIONS):
        if zeros:
            qc.x(zeros)
        qc.mcp(math.pi, list(range(n - 1)), n - 1)  # multi-controlled Z
        if zeros:
            qc.x(zeros)
        qc.h(range(n))
        qc.x(range(n))
        qc.mcp(math.pi, list(range(n - 1)), n - 1)
        qc.x(range(n))
        qc.h(range(n))
    qc.save_amplitudes_squared([marked], label="p")  # Qiskit is little-endian, as we are
    circ = transpile(qc, sim, optimization_level=0)
    if "mcphase" not in circ.count_ops():
        raise RuntimeError(f"Aer decomposed the multi-controlled Z: {dict(circ.count_ops())}")

    def grover() -> float:
        return float(sim.run(circ).result().data(0)["p"][0])

    return grover


def _lightning_runner(n: int, ops: list[Any], obs: Any, gradient: bool) -> Callable[[], Any]:
    """Run one tape on lightning.qubit through its device API: preprocessed once (as a circuit
    is transpiled once for Aer), so a call pays no QNode tape construction in Python."""
    import pennylane as qml

    dev = qml.device("lightning.qubit", wires=n)
    tape = qml.tape.QuantumScript(ops, [qml.expval(obs)])
    if gradient:
        # the gate angles only (the observable's coefficients are parameters of the tape too)
        tape.trainable_params = list(range(sum(op.num_params for op in ops)))
    config = qml.devices.ExecutionConfig(gradient_method="adjoint" if gradient else None)
    program, config = dev.preprocess(config)
    tapes, _ = program((tape,))
    if len(tapes) != 1:
        raise RuntimeError(f"lightning preprocessing split the tape into {len(tapes)}")
    if gradient:

        def energy_and_gradient() -> tuple[float, np.ndarray]:
            results, jacobians = dev.execute_and_compute_derivatives(tapes, config)
            return float(results[0]), np.asarray(jacobians[0], dtype=float)

        return energy_and_gradient
    return lambda: float(dev.execute(tapes, config)[0])


def setup_lightning(workload: str, n: int, seed: int) -> Callable[[], Any]:
    import pennylane as qml

    if workload == "qaoa":
        edges = qaoa_edges(n, seed)
        cost = qml.Hamiltonian(
            [len(edges) / 2] + [-0.5] * len(edges),
            [qml.Identity(0)] + [qml.PauliZ(u) @ qml.PauliZ(v) for u, v in edges],
        )
        ops = [qml.Hadamard(q) for q in range(n)]
        for g, b in zip(QAOA_GAMMAS, QAOA_BETAS, strict=True):
            ops += [qml.IsingZZ(-g, wires=[u, v]) for u, v in edges]
            ops += [qml.RX(2 * b, wires=q) for q in range(n)]
        return _lightning_runner(n, ops, cost, gradient=False)
    if workload == "vqe":
        ham = qml.Hamiltonian(
            [-TFIM_J] * (n - 1) + [-TFIM_H] * n,
            [qml.PauliZ(i) @ qml.PauliZ(i + 1) for i in range(n - 1)]
            + [qml.PauliX(i) for i in range(n)],
        )
        theta = vqe_theta(n, seed)
        ops = []
        for layer in range(VQE_DEPTH):
            ops += [qml.RY(theta[layer * n + q], wires=q) for q in range(n)]
            ops += [qml.CZ(wires=[q, q + 1]) for q in range(n - 1)]
        # diff_method="adjoint": the energy and the adjoint gradient from one call
        return _lightning_runner(n, ops, ham, gradient=True)
    marked = grover_marked(n, seed)
    zeros = [q for q in range(n) if not (marked >> q) & 1]
    bits = [(marked >> q) & 1 for q in range(n)]  # the value of wire q, whatever the bit order
    mcz = qml.ctrl(qml.PauliZ(n - 1), control=list(range(n - 1)))
    ops = [qml.Hadamard(q) for q in range(n)]
    for _ in range(GROVER_ITERATIONS):
        ops += [qml.PauliX(q) for q in zeros] + [mcz] + [qml.PauliX(q) for q in zeros]
        ops += [qml.Hadamard(q) for q in range(n)] + [qml.PauliX(q) for q in range(n)]
        ops += [mcz]
        ops += [qml.PauliX(q) for q in range(n)] + [qml.Hadamard(q) for q in range(n)]
    return _lightning_runner(n, ops, qml.Projector(bits, wires=range(n)), gradient=False)


def _qulacs_mcz(n: int) -> Any:
    from qulacs.gate import Z, to_matrix_gate

    gate = to_matrix_gate(Z(n - 1))
    for q in range(n - 1):
        gate.add_control_qubit(q, 1)
    return gate


def setup_qulacs(workload: str, n: int, seed: int) -> Callable[[], Any]:
    # Qulacs's rotations are exp(+i angle/2 P), the opposite sign of Qiskit's and PennyLane's
    # (checked: RY(0.3)|0> = cos 0.15 |0> - sin 0.15 |1>), so every angle is negated here.
    from qulacs import Observable, ParametricQuantumCircuit, QuantumCircuit, QuantumState

    state = QuantumState(n)
    if workload == "qaoa":
        from qulacs.gate import PauliRotation

        edges = qaoa_edges(n, seed)
        circuit = QuantumCircuit(n)
        for q in range(n):
            circuit.add_H_gate(q)
        for g, b in zip(QAOA_GAMMAS, QAOA_BETAS, strict=True):
            for u, v in edges:
                circuit.add_gate(PauliRotation([u, v], [3, 3], g))  # exp(+i g/2 Z_u Z_v)
            for q in range(n):
                circuit.add_RX_gate(q, -2 * b)  # exp(-i b X)
        cost = Observable(n)
        for u, v in edges:
            cost.add_operator(-0.5, f"Z {u} Z {v}")
        offset = len(edges) / 2

        def qaoa() -> float:
            state.set_zero_state()
            circuit.update_quantum_state(state)
            return offset + float(cost.get_expectation_value(state))

        return qaoa
    if workload == "vqe":
        theta = vqe_theta(n, seed)
        circuit = ParametricQuantumCircuit(n)
        for layer in range(VQE_DEPTH):
            for q in range(n):
                circuit.add_parametric_RY_gate(q, -theta[layer * n + q])
            for q in range(n - 1):
                circuit.add_CZ_gate(q, q + 1)
        ham = Observable(n)
        for i in range(n - 1):
            ham.add_operator(-TFIM_J, f"Z {i} Z {i + 1}")
        for i in range(n):
            ham.add_operator(-TFIM_H, f"X {i}")

        def vqe() -> tuple[float, np.ndarray]:
            state.set_zero_state()
            circuit.update_quantum_state(state)
            energy = float(ham.get_expectation_value(state))
            # backprop: the gradient by the adjoint method, in C++, w.r.t. qulacs's angles
            grad = -np.asarray(circuit.backprop(ham), dtype=float)
            return energy, grad

        return vqe
    marked = grover_marked(n, seed)
    zeros = [q for q in range(n) if not (marked >> q) & 1]
    circuit = QuantumCircuit(n)
    for q in range(n):
        circuit.add_H_gate(q)
    for _ in range(GROVER_ITERATIONS):
        for q in zeros:
            circuit.add_X_gate(q)
        circuit.add_gate(_qulacs_mcz(n))
        for q in zeros:
            circuit.add_X_gate(q)
        for q in range(n):
            circuit.add_H_gate(q)
        for q in range(n):
            circuit.add_X_gate(q)
        circuit.add_gate(_qulacs_mcz(n))
        for q in range(n):
            circuit.add_X_gate(q)
        for q in range(n):
            circuit.add_H_gate(q)

    def grover() -> float:
        state.set_zero_state()
        circuit.update_quantum_state(state)
        return float(abs(state.get_vector()[marked]) ** 2)  # qulacs is little-endian too

    return grover


SETUPS: dict[str, Setup] = {
    "qiz": setup_qiz,
    "qokit": setup_qokit,
    "aer": setup_aer,
    "lightning": setup_lightning,
    "qulacs": setup_qulacs,
}


# ----------------------------------------------------------------------------- worker


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    s = _status_kib()
    return s["VmHWM"] <= s["VmRSS"] + 1024


def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process), from /proc."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime + stime


def version_of(engine: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[engine])
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [float(value[0]), [float(x) for x in value[1]]]
    return float(value)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    engine, workload, n, seed = spec["engine"], spec["workload"], spec["n"], spec["seed"]
    setup = SETUPS[engine]
    # Warm up at a small size: imports, JIT compilation, thread pools, lazy initialisation.
    # Our kernels are compiled by numba on first use and some only run above 2^14 amplitudes,
    # so ours also warms up at n = 16 (the peers are compiled ahead of time).
    warm_sizes = [6] + ([min(n, 16)] if engine == "qiz" and n > 6 else [])
    try:
        for size in warm_sizes:
            setup(workload, size, seed)()
    except ImportError as e:
        return {"status": "not installed", "error": f"{type(e).__name__}: {e}"}
    gc.collect()
    base = _status_kib()["VmRSS"]
    peak_reset = _reset_peak()
    t0 = time.perf_counter()
    fn = setup(workload, n, seed)
    setup_seconds = time.perf_counter() - t0
    cpu0, wall0 = _cpu_jiffies(), time.perf_counter()
    t = time.perf_counter_ns()
    value = fn()
    first = (time.perf_counter_ns() - t) / 1e9
    # The first evaluation at this size (page faults, caches) is a warm-up when it is short; a
    # long one is timed, since one more would cost the run seconds for a negligible difference.
    # Ours never times its first evaluation (a numba specialisation could still compile there).
    times: list[float] = [first] if first > 1.0 and engine != "qiz" else []
    while len(times) < spec["min_runs"] or (
        len(times) < spec["max_runs"] and sum(times) < spec["min_seconds"]
    ):
        t = time.perf_counter_ns()
        value = fn()
        times.append((time.perf_counter_ns() - t) / 1e9)
    cpu1, wall = _cpu_jiffies(), time.perf_counter() - wall0
    # CPU that other processes used while this one ran, as a share of the machine's cores
    others = (cpu1[0] - cpu0[0] - (cpu1[1] - cpu0[1])) / (os.sysconf("SC_CLK_TCK") * wall)
    status = _status_kib()
    return {
        "status": "ok",
        "engine": engine,
        "workload": workload,
        "n": n,
        "version": version_of(engine),
        "value": _jsonable(value),
        "times": times,
        "setup_seconds": setup_seconds,
        "base_rss_kib": base,
        # Without a reset (clear_refs unavailable) VmHWM also covers imports and warm-up, which
        # stay far below the sizes measured here; the caller marks such figures.
        "peak_rss_kib": status["VmHWM"],
        "peak_reset": peak_reset,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "other_cpu": max(0.0, others) / (os.cpu_count() or 1),
    }


def memory_bandwidth(gib: float = 1.0) -> dict[str, float]:
    """STREAM-style copy bandwidth (bytes read + bytes written per second), best of 5, with
    numpy (one thread) and, when numba is installed, a parallel copy on THREADS threads."""
    count = int(gib * (1 << 30)) // 8
    src = np.ones(count)
    dst = np.zeros(count)
    out: dict[str, float] = {}

    def best(fn: Callable[[], None]) -> float:
        fn()
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return 2 * src.nbytes / min(samples)

    out["numpy_copy"] = best(lambda: np.copyto(dst, src))
    try:
        import numba
    except ImportError:
        return out

    @numba.njit(parallel=True, cache=False)
    def copy(a: np.ndarray, b: np.ndarray) -> None:
        for i in numba.prange(a.size):
            b[i] = a[i]

    out["numba_copy"] = best(lambda: copy(src, dst))
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    spec = json.loads(sys.argv[1])
    if spec.get("engine") == "membw":
        print(json.dumps({"status": "ok", "bandwidth": memory_bandwidth()}), flush=True)
        return
    print(json.dumps(measure(spec)), flush=True)


if __name__ == "__main__":
    main()
