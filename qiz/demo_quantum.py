"""The quantum part of ``qiz demo``: each capability of the quantum processor once, checked
against an exact reference, small enough to run in seconds."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

BELL_GHZ = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
h q[0];
cx q[0], q[1];
ctrl @ x q[1], q[2];
c = measure q;
"""

# Teleportation with feed-forward: RY(2 pi / 3)|0> (P(1) = 3/4) moves from q[0] to q[2] through
# two mid-circuit measurements and the corrections they select, in a for loop.
TELEPORT = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[2] m;
bit[1] out;
ry(2 * pi / 3) q[0];
h q[1];
cx q[1], q[2];
cx q[0], q[1];
h q[0];
for int i in [0:1] { m[i] = measure q[i]; }
if (m[1]) x q[2];
if (m[0]) z q[2];
out[0] = measure q[2];
"""
TELEPORT_SHOTS = 4000


def run_quantum_demo(seed: int = 7) -> dict[str, Any]:
    """Run the six showcases; raise if any answer disagrees with its exact reference."""
    from importlib import resources

    from qiz.quantum import qasm
    from qiz.quantum.algorithms.ansatz import HamiltonianVariationalAnsatz, HardwareEfficientAnsatz
    from qiz.quantum.algorithms.grover import GroverSimulator, analytic_success, optimal_iterations
    from qiz.quantum.algorithms.qaoa import QaoaSimulator, optimize
    from qiz.quantum.algorithms.solvers import solve
    from qiz.quantum.algorithms.vqe import run_vqe
    from qiz.quantum.core.pauli import PauliSum
    from qiz.quantum.core.primitives import Sampler
    from qiz.quantum.problems.graphs import random_regular
    from qiz.quantum.problems.netopt import assignment_qubo
    from qiz.quantum.problems.qubo import QuboProblem

    out: dict[str, Any] = {}
    began = time.perf_counter()
    counts = Sampler().run(qasm.loads(BELL_GHZ), shots=1000, seed=seed).counts
    if set(counts) != {"000", "111"}:
        raise RuntimeError(f"demo: a GHZ state gave {counts}")
    out["ghz_counts"] = counts

    out["teleport"] = _teleport(seed)

    g = random_regular(16, 3, seed)
    problem = QuboProblem.maxcut(g.num_nodes, g.edges)
    res = optimize(problem, 3, start="fixed", maxiter=60, seed=seed)
    sim = QaoaSimulator(problem)
    t0 = time.perf_counter()
    sim.expectation(res.gammas, res.betas)
    out["qaoa"] = {
        "num_nodes": 16,
        "p": 3,
        "expected_cut": res.energy,
        "best_cut_sampled": res.best_value,
        "optimum": res.optimum,
        "approximation_ratio": res.approximation_ratio,
        "ms_per_energy": (time.perf_counter() - t0) * 1000,
    }

    data = resources.files("qiz.quantum") / "data" / "h2_0.735_jw.txt"
    h2 = PauliSum.loads(data.read_text(encoding="utf-8"), "h2_0.735_jw.txt")
    vqe = run_vqe(HardwareEfficientAnsatz(4, 3), h2, seed=1)
    if vqe.error is None or abs(vqe.error) > 1.6e-3:
        raise RuntimeError("demo: VQE missed chemical accuracy on H2")
    tfim = PauliSum.tfim(8, periodic=True)
    ring = run_vqe(HamiltonianVariationalAnsatz(tfim, 4), tfim, maxiter=500)
    out["vqe"] = {
        "h2_energy": vqe.energy,
        "h2_exact": vqe.exact,
        "h2_error_mHa": abs(vqe.error) * 1000,
        "tfim8_energy": ring.energy,
        "tfim8_exact": ring.exact,
        "tfim8_error": abs(ring.error or 0.0),
    }

    grover = GroverSimulator(16, marked=[0xBEEF])
    k = optimal_iterations(16, 1)
    prob = grover.run(k)
    hits = grover.sample(100, seed).get(0xBEEF, 0)
    out["grover"] = {
        "num_qubits": 16,
        "iterations": k,
        "success_probability": prob,
        "analytic_probability": analytic_success(16, 1, k),
        "hits_in_100_shots": hits,
    }

    enc = assignment_qubo([3.0, 1.0, 2.0], [4.0, 2.0], [[1.0, 3.0], [2.0, 1.0], [1.0, 1.0]])
    answers = {}
    for method in ("exact", "annealing", "qaoa"):
        sol = solve(enc.problem, method, seed=seed)
        placed = enc.decode(sol.index)
        answers[method] = {
            "jobs_to_nodes": placed.job_to_node,
            "feasible": placed.feasible,
            "value": sol.value,
        }
    out["placement"] = answers
    out["duration_s"] = time.perf_counter() - began
    return out


def _teleport(seed: int) -> dict[str, Any]:
    """The dynamic-circuit showcase: P(1) within 6 standard deviations of the 3/4 sent."""
    from qiz.quantum import qasm
    from qiz.quantum.core.primitives import Sampler

    shots = TELEPORT_SHOTS
    run = Sampler().run(qasm.loads(TELEPORT), shots=shots, seed=seed)
    ones = sum(n for key, n in run.counts.items() if key[0] == "1")  # out: the leftmost bit
    if abs(ones - 0.75 * shots) > 6 * (shots * 0.75 * 0.25) ** 0.5:
        raise RuntimeError(f"demo: teleportation gave P(1) = {ones / shots} (expected 0.75)")
    return {
        "shots": shots,
        "p_one": ones / shots,
        "expected": 0.75,
        "states": run.metadata.get("states"),
        "method": run.method,
    }


def render_quantum(report: dict[str, Any], console: Console) -> None:
    console.rule("the quantum processor: every answer checked against an exact reference")
    console.print(f"OpenQASM 3 GHZ circuit, 1000 shots: {report['ghz_counts']}")
    tp = report["teleport"]
    console.print(
        f"OpenQASM 3 teleportation with feed-forward (for, if), {tp['shots']} shots: "
        f"P(1) = {tp['p_one']:.4f} (sent: {tp['expected']}), {tp['states']} states evolved "
        f"for {tp['shots']} shots ({tp['method']})"
    )
    q = report["qaoa"]
    console.print(
        f"QAOA p={q['p']} MaxCut, random 3-regular graph of {q['num_nodes']} nodes: <C> = "
        f"{q['expected_cut']:.4f}, exact max cut {q['optimum']:g}, approximation ratio "
        f"{q['approximation_ratio']:.4f}, best sampled cut {q['best_cut_sampled']:g} "
        f"({q['ms_per_energy']:.2f} ms per energy evaluation)"
    )
    v = report["vqe"]
    console.print(
        f"VQE H2 (STO-3G, 0.735 A): {v['h2_energy']:.8f} Ha vs exact {v['h2_exact']:.8f} "
        f"({v['h2_error_mHa']:.2e} mHa; chemical accuracy is 1.6)"
    )
    console.print(
        f"VQE 8-qubit Ising ring at the critical field: {v['tfim8_energy']:.10f} vs exact "
        f"{v['tfim8_exact']:.10f} (error {v['tfim8_error']:.1e})"
    )
    gr = report["grover"]
    console.print(
        f"Grover, {gr['num_qubits']} qubits, one marked item, {gr['iterations']} iterations: "
        f"P = {gr['success_probability']:.6f} (analytic {gr['analytic_probability']:.6f}); "
        f"{gr['hits_in_100_shots']}/100 shots found it"
    )
    table = Table(title="job placement as QUBO (3 jobs, 2 nodes): one interface, three solvers")
    for column in ("solver", "jobs -> nodes", "feasible", "objective"):
        table.add_column(column)
    for method, a in report["placement"].items():
        table.add_row(method, str(a["jobs_to_nodes"]), str(a["feasible"]), f"{a['value']:.4f}")
    console.print(table)
