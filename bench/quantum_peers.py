"""The workloads of ``bench/quantum.py`` and one adapter per simulator.

An adapter builds everything that is done once per problem (the graph, circuits, operators,
precomputed cost diagonals) and returns a :class:`Prepared`: ``bind(params)`` turns one round's
fresh parameters into a zero-argument call (not timed: Lightning builds its tape, Qulacs sets
its parameters, Aer binds its circuit), and that call is what the worker times. Every engine
gets identical inputs: the problem from the seed, the parameters from the round.

- ``qaoa`` / ``qaoa-float`` / ``large``: expected cut of a p=4 QAOA state on a random 3-regular
  graph, |g,b> = prod_l exp(-i b_l sum_j X_j) exp(-i g_l C) |+>^n, C(x) = sum of the weights of
  the cut edges (unit weights; uniform [0.5, 1.5] for ``qaoa-float``).
  ``large`` also times 1000 shots of that state where an engine has a sampler (ours).
- ``vqe``: energy and gradient of the open transverse-field Ising chain in the RY + CZ
  hardware-efficient ansatz (real amplitudes); ``vqe-complex``: the same chain plus 0.3 sum Y_j
  in the general ansatz (RY + RZ per qubit per layer, CZ ladder), complex amplitudes.
- ``grover-gates``: P(marked) after k gate-level iterations (X, a multi-controlled Z, H);
  ``grover-fused``: our fused mean-inversion path (not the same algorithm as the gate circuit).

Qubit q is bit q of the basis index (little-endian, as Qiskit). PennyLane gets operators on
named wires, so nothing depends on its bit order except the marked item, mapped explicitly.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

QAOA_DEPTH = 4
VQE_DEPTH = 4
GROVER_ITERATIONS = 4  # timed iterations; the full run is projected from the per-iteration time
SAMPLE_SHOTS = 1000
TFIM_J = 1.0
TFIM_H = 1.0
Y_FIELD = 0.3  # vqe-complex: the sum of Y_j makes the Hamiltonian (and the states) complex
THREADS = 2

ENGINES = ("qiz", "qiz-single", "qokit", "aer", "lightning", "qulacs")
DISTRIBUTIONS = {
    "qiz": "qiz",
    "qiz-single": "qiz",
    "qokit": "qokit",
    "aer": "qiskit-aer",
    "lightning": "pennylane-lightning",
    "qulacs": "qulacs",
}
PEERS = ("qokit", "aer", "lightning", "qulacs")

Value = Any  # a float, (energy, gradient), or None (samples: nothing to compare)
Call = Callable[[], Value]


@dataclass
class Prepared:
    """One engine's problem, built once: ``bind(params)`` gives the call that is timed."""

    bind: Callable[[dict[str, Any]], Call]
    path: str  # which code path the engine takes, for the table's label
    num_parameters: int = 0
    sample: Callable[[dict[str, Any]], Call] | None = None  # SAMPLE_SHOTS shots, where timed


# ----------------------------------------------------------------------------- problems


def qaoa_edges(n: int, seed: int) -> list[tuple[int, int]]:
    import networkx as nx

    graph = nx.random_regular_graph(3, n, seed=seed)
    return sorted((min(u, v), max(u, v)) for u, v in graph.edges())


def qaoa_weights(workload: str, n: int, seed: int, count: int) -> list[float]:
    """Unit weights, or seeded uniform [0.5, 1.5] for ``qaoa-float``."""
    if workload != "qaoa-float":
        return [1.0] * count
    return [float(w) for w in np.random.default_rng([seed, n, 7]).uniform(0.5, 1.5, count)]


def grover_probability(n: int, k: int) -> float:
    """Analytic success probability after k iterations with one marked item of 2^n."""
    theta = math.asin(math.sqrt(1.0 / (1 << n)))
    return math.sin((2 * k + 1) * theta) ** 2


def grover_optimal_iterations(n: int) -> int:
    theta = math.asin(math.sqrt(1.0 / (1 << n)))
    return round(math.pi / (4 * theta) - 0.5)


def vqe_hamiltonian(workload: str, n: int) -> Any:
    from qiz.quantum.core.pauli import PauliSum

    ham = PauliSum.tfim(n, j=TFIM_J, h=TFIM_H, periodic=False)
    if workload == "vqe-complex":
        ham = ham + PauliSum(n, [(Y_FIELD, 1 << j, 1 << j) for j in range(n)])
    return ham


def vqe_ansatz(workload: str, n: int) -> tuple[Any, str]:
    """The ansatz and its label. ``vqe-complex`` takes the general ansatz (RY + RZ); until it
    lands in qiz, the RY + CZ ansatz stands in and the label says so."""
    from qiz.quantum.algorithms import ansatz as module

    if workload == "vqe-complex":
        general = getattr(module, "GeneralAnsatz", None)
        if general is not None:
            return general(n, VQE_DEPTH, entangler="ladder", gate="cz"), "RY+RZ, CZ ladder"
        return module.HardwareEfficientAnsatz(n, depth=VQE_DEPTH), "RY+CZ (GeneralAnsatz pending)"
    return module.HardwareEfficientAnsatz(n, depth=VQE_DEPTH), "RY+CZ"


def pauli_terms(ham: Any) -> list[tuple[float, list[tuple[str, int]]]]:
    """(real coefficient, [(letter, qubit), ...]) for every term of a PauliSum."""
    out = []
    for t in ham.terms:
        factors = []
        for q in range(ham.num_qubits):
            x, z = (t.xmask >> q) & 1, (t.zmask >> q) & 1
            if x or z:
                factors.append(("Y" if x and z else "X" if x else "Z", q))
        out.append((float(t.coeff.real), factors))
    return out


def ansatz_gates(workload: str, n: int) -> tuple[list[tuple[str, tuple[int, ...], int]], int]:
    """The ansatz's instructions as (gate, qubits, parameter index or -1), read from its
    ``circuit()`` so every peer runs the very circuit we do; and the parameter count."""
    ansatz, _ = vqe_ansatz(workload, n)
    gates = []
    for inst in ansatz.circuit():
        if inst.name not in ("ry", "rz", "cz", "cx"):
            raise RuntimeError(f"the ansatz has a {inst.name} gate the adapters do not map")
        index = -1
        if inst.params:
            (expr,) = inst.params
            ((name, coeff),) = expr.terms
            if coeff != 1.0 or expr.const != 0.0 or not name.startswith("t"):
                raise RuntimeError(f"unexpected parameter expression {expr}")
            index = int(name[1:])
        gates.append((inst.name, inst.qubits, index))
    return gates, ansatz.num_parameters


def version_of(engine: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[engine])
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- ours


def setup_qiz(workload: str, n: int, seed: int, precision: str = "double") -> Prepared:
    if workload in ("qaoa", "qaoa-float", "large"):
        from qiz.quantum.algorithms.qaoa import QaoaSimulator

        edges = qaoa_edges(n, seed)
        weights = qaoa_weights(workload, n, seed, len(edges))
        if precision == "double":
            sim = QaoaSimulator.maxcut(n, edges, weights)
        else:
            try:
                sim = QaoaSimulator.maxcut(n, edges, weights, precision=precision)  # type: ignore[call-arg]
            except TypeError:
                raise NotImplementedError(
                    "pending: QaoaSimulator.maxcut has no precision argument yet"
                ) from None
        kind = "integer" if workload != "qaoa-float" else "float"
        table = "a level table" if sim.level is not None else "a float64 cost diagonal"
        path = f"{kind} weights, {precision} precision, phases from {table}"

        def bind_sample(p: dict[str, Any]) -> Call:
            def call() -> None:
                sim.sample(p["gammas"], p["betas"], SAMPLE_SHOTS, seed)

            return call

        return Prepared(
            lambda p: lambda: float(sim.expectation(p["gammas"], p["betas"])),
            path,
            sample=bind_sample,
        )
    if workload in ("vqe", "vqe-complex"):
        from qiz.quantum.algorithms.vqe import VqeEvaluator

        ansatz, label = vqe_ansatz(workload, n)
        evaluator = VqeEvaluator(ansatz, vqe_hamiltonian(workload, n))
        kind = "real amplitudes: our float64 path" if evaluator.real else "complex amplitudes"
        fused = "fused adjoint" if evaluator.fast else "gate-level adjoint"

        def bind_vqe(p: dict[str, Any]) -> Call:
            theta = np.asarray(p["theta"], dtype=float)

            def call() -> tuple[float, np.ndarray]:
                e, g = evaluator.energy_and_gradient(theta)
                return float(e), np.asarray(g, dtype=float)

            return call

        return Prepared(bind_vqe, f"{label}; {kind}, {fused}", evaluator.num_parameters)
    if workload == "grover-fused":
        from qiz.quantum.algorithms.grover import GroverSimulator

        previous: list[Any] = []

        def bind_fused(p: dict[str, Any]) -> Call:
            sim = GroverSimulator(n, marked=[int(p["marked"])])  # cheap: the marked list only
            if previous:  # the last round's state buffer: no fresh pages in a timed call
                sim.state = previous.pop().state
            previous.append(sim)
            return lambda: float(sim.run(GROVER_ITERATIONS))

        return Prepared(bind_fused, "fused mean inversion, real float64 (not the gate circuit)")
    return _qiz_grover_gates(n)


def _qiz_grover_gates(n: int) -> Prepared:
    """The gate-level Grover circuit through our general engine's gate kernels
    (``statevector.apply_instruction``; the multi-controlled Z through ``apply_matrix`` with
    n-1 controls: our Circuit gate set stops at two controls, and an OpenQASM 3
    ``ctrl(k) @ z`` with k >= 3 is refused at import, "ctrl @ ch is not supported")."""
    from qiz.quantum.core.circuit import Instruction
    from qiz.quantum.core.statevector import apply_instruction, apply_matrix
    from qiz.quantum.core.threads import threads_for

    z = np.diag([1.0, -1.0]).astype(np.complex128)
    state = np.zeros(1 << n, dtype=np.complex128)
    everyone = tuple(range(n))

    def bind(p: dict[str, Any]) -> Call:
        ops: list[Any] = []
        zeros = [q for q in range(n) if not (int(p["marked"]) >> q) & 1]

        def layer(name: str, qubits: list[int]) -> None:
            ops.extend(Instruction(name, (q,)) for q in qubits)

        layer("h", list(everyone))
        for _ in range(GROVER_ITERATIONS):
            layer("x", zeros)
            ops.append(None)  # the multi-controlled Z
            layer("x", zeros)
            layer("h", list(everyone))
            layer("x", list(everyone))
            ops.append(None)
            layer("x", list(everyone))
            layer("h", list(everyone))

        def call() -> float:
            state.fill(0.0)
            state[0] = 1.0
            with threads_for(n):
                for op in ops:
                    if op is None:
                        apply_matrix(state, everyone, n - 1, z)
                    else:
                        apply_instruction(state, op)
            return float(abs(state[int(p["marked"])]) ** 2)

        return call

    return Prepared(bind, "gate-level circuit, complex128, our general engine's kernels")


def setup_qiz_single(workload: str, n: int, seed: int) -> Prepared:
    return setup_qiz(workload, n, seed, precision="single")


# ----------------------------------------------------------------------------- QOKit


def setup_qokit(workload: str, n: int, seed: int) -> Prepared:
    import qokit.fur
    from qokit.fur.c.qaoa_simulator import QAOAFURXSimulatorC

    chosen = qokit.fur.choose_simulator(name="auto")
    if chosen is not QAOAFURXSimulatorC:
        raise RuntimeError(
            f"QOKit picked {chosen.__name__}, not its C simulator: libcsim.so is missing; "
            "run bench/build_qokit.sh with this interpreter"
        )
    # QOKit's terms (w, (i, j)) mean w * s_i * s_j with spins s = +-1 (weighted graphs as
    # qokit.maxcut.get_maxcut_terms builds them): the cut is sum w/2 - sum w/2 s_u s_v. Its
    # phase layer is exp(-i * gamma/2 * diag), so its gamma is twice ours.
    edges = qaoa_edges(n, seed)
    weights = qaoa_weights(workload, n, seed, len(edges))
    terms = [(-0.5 * w, (u, v)) for (u, v), w in zip(edges, weights, strict=True)]
    terms.append((sum(weights) / 2, ()))
    sim = chosen(n, terms=terms)  # precomputes the cost diagonal once (setup)

    def bind(p: dict[str, Any]) -> Call:
        gammas = [2 * g for g in p["gammas"]]
        betas = list(p["betas"])
        return lambda: float(sim.get_expectation(sim.simulate_qaoa(gammas, betas)))

    kind = "integer" if workload != "qaoa-float" else "float"
    return Prepared(bind, f"{kind} weights, C fur on its float64 cost diagonal")


# ----------------------------------------------------------------------------- Qiskit Aer


def _aer_simulator() -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator(
        method="statevector",
        precision="double",
        max_parallel_threads=THREADS,
        max_parallel_experiments=1,
    )


def _grover_marked_zeros(n: int, marked: int) -> list[int]:
    return [q for q in range(n) if not (marked >> q) & 1]


def setup_aer(workload: str, n: int, seed: int) -> Prepared:
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import ParameterVector
    from qiskit.quantum_info import SparsePauliOp

    sim = _aer_simulator()
    if workload.startswith("qaoa") or workload == "large":
        edges = qaoa_edges(n, seed)
        weights = qaoa_weights(workload, n, seed, len(edges))
        gam, bet = ParameterVector("g", QAOA_DEPTH), ParameterVector("b", QAOA_DEPTH)
        qc = QuantumCircuit(n)
        qc.h(range(n))
        for layer in range(QAOA_DEPTH):
            for (u, v), w in zip(edges, weights, strict=True):
                qc.rzz(-w * gam[layer], u, v)  # exp(-i g w (1 - Z_u Z_v)/2), global phase aside
            qc.rx(2 * bet[layer], range(n))  # exp(-i b X)
        cost = SparsePauliOp.from_sparse_list(
            [("", [], sum(weights) / 2)]
            + [("ZZ", [u, v], -0.5 * w) for (u, v), w in zip(edges, weights, strict=True)],
            num_qubits=n,
        )
        qc.save_expectation_value(cost, range(n), label="e")
        circ = transpile(qc, sim, optimization_level=0)

        def bind_qaoa(p: dict[str, Any]) -> Call:
            values = dict(zip(gam, p["gammas"], strict=True)) | dict(
                zip(bet, p["betas"], strict=True)
            )
            bound = circ.assign_parameters(values)
            return lambda: float(sim.run(bound).result().data(0)["e"])

        return Prepared(bind_qaoa, "RZZ(-w gamma) per edge, RX per qubit; C as a Pauli sum")
    if workload in ("vqe", "vqe-complex"):
        gates, count = ansatz_gates(workload, n)
        params = ParameterVector("t", count)
        qc = QuantumCircuit(n)
        for name, qubits, index in gates:
            getattr(qc, name)(*([params[index]] if index >= 0 else []), *qubits)
        ham = SparsePauliOp.from_sparse_list(
            [
                ("".join(a for a, _ in f), [q for _, q in f], c)
                for c, f in pauli_terms(vqe_hamiltonian(workload, n))
            ],
            num_qubits=n,
        )
        qc.save_expectation_value(ham, range(n), label="e")
        circ = transpile(qc, sim, optimization_level=0)

        def bind_vqe(p: dict[str, Any]) -> Call:
            # Parameter shift (exact for RY and RZ, shift pi/2): 1 + 2P bindings, one batched run
            theta = np.asarray(p["theta"], dtype=float)
            shifted = [theta]
            for k in range(count):
                for s in (math.pi / 2, -math.pi / 2):
                    t = theta.copy()
                    t[k] += s
                    shifted.append(t)
            binds = [{q: [t[i] for t in shifted] for i, q in enumerate(params)}]

            def call() -> tuple[float, np.ndarray]:
                result = sim.run([circ], parameter_binds=binds).result()
                values = np.array([result.data(i)["e"] for i in range(len(shifted))])
                return float(values[0]), 0.5 * (values[1::2] - values[2::2])

            return call

        return Prepared(bind_vqe, "parameter shift, 1 + 2P circuits in one batched run", count)

    def bind_grover(p: dict[str, Any]) -> Call:
        marked = int(p["marked"])
        zeros = _grover_marked_zeros(n, marked)
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
        qc.save_amplitudes_squared([marked], label="p")  # little-endian, as we are
        circ = transpile(qc, sim, optimization_level=0)
        if "mcphase" not in circ.count_ops():
            raise RuntimeError(f"Aer decomposed the multi-controlled Z: {dict(circ.count_ops())}")
        return lambda: float(sim.run(circ).result().data(0)["p"][0])

    return Prepared(bind_grover, "gate-level circuit, mcphase")


# ----------------------------------------------------------------------------- Lightning


def _lightning_runner(n: int, ops: list[Any], obs: Any, gradient: bool) -> Call:
    """One tape on lightning.qubit through its device API, preprocessed here (in ``bind``, not
    timed), so a call pays no QNode construction in Python."""
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


def _pl_pauli(factors: list[tuple[str, int]]) -> Any:
    import pennylane as qml

    ops = [{"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}[a](q) for a, q in factors]
    if not ops:
        return qml.Identity(0)
    out = ops[0]
    for op in ops[1:]:
        out = out @ op
    return out


def setup_lightning(workload: str, n: int, seed: int) -> Prepared:
    import pennylane as qml

    if workload.startswith("qaoa") or workload == "large":
        edges = qaoa_edges(n, seed)
        weights = qaoa_weights(workload, n, seed, len(edges))
        cost = qml.Hamiltonian(
            [sum(weights) / 2] + [-0.5 * w for w in weights],
            [qml.Identity(0)] + [qml.PauliZ(u) @ qml.PauliZ(v) for u, v in edges],
        )

        def bind_qaoa(p: dict[str, Any]) -> Call:
            ops = [qml.Hadamard(q) for q in range(n)]
            for g, b in zip(p["gammas"], p["betas"], strict=True):
                ops += [
                    qml.IsingZZ(-g * w, wires=[u, v])
                    for (u, v), w in zip(edges, weights, strict=True)
                ]
                ops += [qml.RX(2 * b, wires=q) for q in range(n)]
            return _lightning_runner(n, ops, cost, gradient=False)

        return Prepared(bind_qaoa, "IsingZZ per edge, RX per qubit; C as a Hamiltonian")
    if workload in ("vqe", "vqe-complex"):
        terms = pauli_terms(vqe_hamiltonian(workload, n))
        ham = qml.Hamiltonian([c for c, _ in terms], [_pl_pauli(f) for _, f in terms])
        gates, count = ansatz_gates(workload, n)
        kinds = {"ry": qml.RY, "rz": qml.RZ, "cz": qml.CZ, "cx": qml.CNOT}

        def bind_vqe(p: dict[str, Any]) -> Call:
            theta = p["theta"]
            ops = [
                kinds[name](theta[i], wires=list(qs)) if i >= 0 else kinds[name](wires=list(qs))
                for name, qs, i in gates
            ]
            run = _lightning_runner(n, ops, ham, gradient=True)
            order = [i for _, _, i in gates if i >= 0]  # the tape's parameters, in gate order

            def call() -> tuple[float, np.ndarray]:
                e, g = run()
                grad = np.zeros(count)
                np.add.at(grad, order, g)
                return e, grad

            return call

        return Prepared(bind_vqe, "adjoint method (execute_and_compute_derivatives)", count)

    def bind_grover(p: dict[str, Any]) -> Call:
        marked = int(p["marked"])
        zeros = _grover_marked_zeros(n, marked)
        bits = [(marked >> q) & 1 for q in range(n)]  # the value of wire q
        mcz = qml.ctrl(qml.PauliZ(n - 1), control=list(range(n - 1)))
        ops = [qml.Hadamard(q) for q in range(n)]
        for _ in range(GROVER_ITERATIONS):
            ops += [qml.PauliX(q) for q in zeros] + [mcz] + [qml.PauliX(q) for q in zeros]
            ops += [qml.Hadamard(q) for q in range(n)] + [qml.PauliX(q) for q in range(n)]
            ops += [mcz]
            ops += [qml.PauliX(q) for q in range(n)] + [qml.Hadamard(q) for q in range(n)]
        return _lightning_runner(n, ops, qml.Projector(bits, wires=range(n)), gradient=False)

    return Prepared(bind_grover, "gate-level circuit, controlled PauliZ")


# ----------------------------------------------------------------------------- Qulacs


def _qulacs_mcz(n: int) -> Any:
    from qulacs.gate import Z, to_matrix_gate

    gate = to_matrix_gate(Z(n - 1))
    for q in range(n - 1):
        gate.add_control_qubit(q, 1)
    return gate


def setup_qulacs(workload: str, n: int, seed: int) -> Prepared:
    # Qulacs's rotations are exp(+i angle/2 P), the opposite sign of Qiskit's and PennyLane's
    # (checked: RY(0.3)|0> = cos 0.15 |0> - sin 0.15 |1>), so every angle is negated here.
    from qulacs import Observable, ParametricQuantumCircuit, QuantumCircuit, QuantumState

    state = QuantumState(n)
    if workload.startswith("qaoa") or workload == "large":
        from qulacs.gate import PauliRotation

        edges = qaoa_edges(n, seed)
        weights = qaoa_weights(workload, n, seed, len(edges))
        cost = Observable(n)
        for (u, v), w in zip(edges, weights, strict=True):
            cost.add_operator(-0.5 * w, f"Z {u} Z {v}")
        offset = sum(weights) / 2

        def bind_qaoa(p: dict[str, Any]) -> Call:
            circuit = QuantumCircuit(n)
            for q in range(n):
                circuit.add_H_gate(q)
            for g, b in zip(p["gammas"], p["betas"], strict=True):
                for (u, v), w in zip(edges, weights, strict=True):
                    circuit.add_gate(PauliRotation([u, v], [3, 3], g * w))  # exp(+i gw/2 ZZ)
                for q in range(n):
                    circuit.add_RX_gate(q, -2 * b)  # exp(-i b X)

            def call() -> float:
                state.set_zero_state()
                circuit.update_quantum_state(state)
                return offset + float(cost.get_expectation_value(state).real)

            return call

        return Prepared(bind_qaoa, "Pauli ZZ rotation per edge, RX per qubit; C observable")
    if workload in ("vqe", "vqe-complex"):
        gates, count = ansatz_gates(workload, n)
        circuit = ParametricQuantumCircuit(n)
        order = []
        for name, (q, *rest), index in gates:
            if name == "ry":
                circuit.add_parametric_RY_gate(q, 0.0)
            elif name == "rz":
                circuit.add_parametric_RZ_gate(q, 0.0)
            elif name == "cz":
                circuit.add_CZ_gate(q, rest[0])
            else:
                circuit.add_CNOT_gate(q, rest[0])
            if index >= 0:
                order.append(index)
        ham = Observable(n)
        for c, f in pauli_terms(vqe_hamiltonian(workload, n)):
            ham.add_operator(c, " ".join(f"{a} {q}" for a, q in f))

        def bind_vqe(p: dict[str, Any]) -> Call:
            theta = p["theta"]
            for k, i in enumerate(order):
                circuit.set_parameter(k, -theta[i])

            def call() -> tuple[float, np.ndarray]:
                state.set_zero_state()
                circuit.update_quantum_state(state)
                energy = float(ham.get_expectation_value(state).real)
                # backprop: the adjoint method in C++, w.r.t. qulacs's (negated) angles
                g = np.asarray(circuit.backprop(ham), dtype=float)
                grad = np.zeros(count)
                np.add.at(grad, order, -g)
                return energy, grad

            return call

        return Prepared(bind_vqe, "backprop (adjoint in C++) + one forward pass", count)

    def bind_grover(p: dict[str, Any]) -> Call:
        marked = int(p["marked"])
        zeros = _grover_marked_zeros(n, marked)
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

        def call() -> float:
            state.set_zero_state()
            circuit.update_quantum_state(state)
            return float(abs(state.get_vector()[marked]) ** 2)  # little-endian too

        return call

    return Prepared(bind_grover, "gate-level circuit, controlled matrix gate")


SETUPS: dict[str, Callable[[str, int, int], Prepared]] = {
    "qiz": setup_qiz,
    "qiz-single": setup_qiz_single,
    "qokit": setup_qokit,
    "aer": setup_aer,
    "lightning": setup_lightning,
    "qulacs": setup_qulacs,
}

# the modules each engine imports, loaded before the base memory is read
IMPORTS = {
    "qiz": ("qiz.quantum.algorithms.qaoa", "qiz.quantum.algorithms.vqe", "networkx"),
    "qiz-single": ("qiz.quantum.algorithms.qaoa", "networkx"),
    "qokit": ("qokit.fur", "networkx"),
    "aer": ("qiskit", "qiskit_aer", "networkx"),
    "lightning": ("pennylane", "networkx"),
    "qulacs": ("qulacs", "networkx"),
}
