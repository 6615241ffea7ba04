"""The quantum processor's commands: ``run``, ``qaoa maxcut``, ``vqe`` and ``grover``.

They run locally (no node needed), print one JSON object with ``--json``, show progress on
stderr for long optimisations, and refuse a problem too large for this machine's memory with
the amount it would need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from qiz.cli.human import duration
from qiz.cli.output import UserError, console, emit, err_console, guarded
from qiz.cli.quiet import quiet_warnings

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
SeedOption = Annotated[
    int | None, typer.Option("--seed", min=0, help="Seed for every random choice (>= 0).")
]
qaoa_app = typer.Typer(help="QAOA on optimisation problems.", no_args_is_help=True)
PANEL = "Quantum processor"  # the heading these commands have in 'qiz --help'
LABEL_WIDTH = 22  # the column where values start in the human summaries


def register(app: typer.Typer) -> None:
    app.command("run", rich_help_panel=PANEL)(guarded(run_circuit))
    app.add_typer(qaoa_app, name="qaoa", rich_help_panel=PANEL)
    qaoa_app.command("maxcut")(guarded(qaoa_maxcut))
    app.command("vqe", rich_help_panel=PANEL)(guarded(vqe))
    app.command("grover", rich_help_panel=PANEL)(guarded(grover))


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    """A title line, then one aligned ``label  value`` line per row: the one layout of the
    quantum commands' human output."""
    console.print(title, markup=False)
    for label, value in rows:
        console.print(f"  {label:<{LABEL_WIDTH}}{value}", markup=False)


def _verdict(converged: bool | None, message: str, hint: str) -> str:
    """The optimizer's verdict for people: converged or not, in its own words."""
    said = message.strip().rstrip(".")
    if converged is None:
        return f"not tested: {said}" if said else "not tested"
    verdict = "yes" if converged else "no"
    return (f"{verdict} ({said})" if said else verdict) + ("" if converged else f"; {hint}")


def _evaluations(evaluations: int, iterations: int) -> str:
    """Energy evaluations, and the optimizer's iterations when they are a different count."""
    return f"{evaluations} energies" + (
        f", {iterations} iterations" if iterations != evaluations else ""
    )


@contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Callable[[int, float], None]]:
    """A progress bar on stderr (none under --json, and none when stderr is not a terminal,
    where it would leave a blank line in a log): advances once per energy evaluation."""
    if not enabled or not err_console.is_terminal:
        yield lambda _n, _e: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} evaluations  E = {task.fields[energy]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total, energy="-")

        def update(n: int, energy: float) -> None:
            bar.update(task, completed=min(n, total), energy=f"{energy:.8f}")

        yield update


def run_circuit(
    file: Annotated[Path, typer.Argument(help="An OpenQASM 3 program.")],
    *,
    shots: Annotated[int, typer.Option("--shots", help="Number of shots.")] = 1024,
    seed: SeedOption = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Bind an input angle: NAME=VALUE (repeatable)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Run as this device would (see 'qiz targets'), or a file."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Sample an OpenQASM 3 circuit: counts of each classical outcome."""
    from qiz.quantum import qasm
    from qiz.quantum.core.memory import require_memory
    from qiz.quantum.core.primitives import Sampler

    circuit = qasm.load(file)
    require_memory(circuit.num_qubits, 1.1)
    values = parse_bindings(param or [])
    unknown = sorted(set(values) - set(circuit.parameters))
    if unknown:
        raise UserError(f"--param: the circuit has no input named {', '.join(unknown)}")
    missing = [name for name in circuit.parameters if name not in values]
    if missing:
        raise UserError(
            f"{file}: the circuit has free input parameters ({', '.join(missing)}); "
            "give each with --param NAME=VALUE"
        )
    circuit = circuit.bind(values) if values else circuit
    if target is not None:  # transpiled and noisy: qiz/cli/target_cmds.py
        from qiz.cli.target_cmds import run_on_target

        return run_on_target(file, circuit, target, shots=shots, seed=seed, as_json=as_json)
    start = time.perf_counter()
    result = Sampler().run(circuit, shots=shots, seed=seed)
    seconds = time.perf_counter() - start
    data = {
        "counts": dict(sorted(result.counts.items())),
        "shots": shots,
        "seed": seed,
        "num_qubits": circuit.num_qubits,
        "num_clbits": result.num_clbits,
        "method": result.method,
        "engine": result.engine,
        "duration_s": round(seconds, 6),
    }

    def human() -> None:
        from rich.table import Table

        table = Table("outcome", "count", "probability", title=f"{file.name}: {shots} shots")
        for key, count in sorted(result.counts.items(), key=lambda kv: -kv[1])[:32]:
            table.add_row(key, str(count), f"{count / shots:.4f}")
        console.print(table)
        if len(result.counts) > 32:
            console.print(f"... and {len(result.counts) - 32} more outcomes (use --json)")

    emit(as_json, data, human)


def qaoa_maxcut(
    *,
    graph: Annotated[str, typer.Option("--graph", help="Edge-list file or random:N,D.")],
    p: Annotated[int, typer.Option("--p", help="QAOA depth (layers).")] = 1,
    seed: SeedOption = 0,
    start: Annotated[str, typer.Option("--start", help="ramp or fixed initial angles.")] = "ramp",
    maxiter: Annotated[int, typer.Option("--maxiter", help="Optimizer iterations.")] = 200,
    precision: Annotated[
        str, typer.Option("--precision", help="double, or single: half the memory (bounded error).")
    ] = "double",
    as_json: JsonOption = False,
) -> None:
    """Maximise the cut of a graph with QAOA; reports the approximation ratio."""
    from qiz.quantum.algorithms.qaoa import PRECISIONS, optimize
    from qiz.quantum.core.memory import require_memory
    from qiz.quantum.problems.graphs import load_graph
    from qiz.quantum.problems.qubo import QuboProblem, bitstring

    if precision not in PRECISIONS:
        raise UserError("--precision must be double or single")
    g = load_graph(graph, seed)
    require_memory(g.num_nodes, 1.2, precision=precision)
    problem = QuboProblem.maxcut(g.num_nodes, g.edges, g.weights)
    began = time.perf_counter()
    with _progress(not as_json, f"QAOA p={p}", maxiter) as progress, quiet_warnings(as_json):
        res = optimize(
            problem,
            p,
            start=start,
            maxiter=maxiter,
            seed=seed,
            progress=progress,
            precision=precision,
        )
    seconds = time.perf_counter() - began
    side = [(res.best_index >> i) & 1 for i in range(g.num_nodes)]
    data = {
        "problem": "maxcut",
        "num_nodes": g.num_nodes,
        "num_edges": len(g.edges),
        "p": p,
        "precision": precision,
        "energy": res.energy,
        "expected_cut": res.energy,
        "approximation_ratio": res.approximation_ratio,
        "optimum": res.optimum,
        "best_cut": {
            "value": res.best_value,
            "bitstring": bitstring(res.best_index, g.num_nodes),
            "partition": [
                [i for i, s in enumerate(side) if s == 0],
                [i for i, s in enumerate(side) if s],
            ],
        },
        "converged": res.converged,
        "optimizer_message": res.message,
        "iterations": res.iterations,
        "gammas": res.gammas,
        "betas": res.betas,
        "evaluations": res.evaluations,
        "duration_s": round(seconds, 3),
    }

    def human() -> None:
        rows = [("expected cut <C>", f"{res.energy:.6f}")]
        if res.optimum is not None:
            rows.append(("exact maximum cut", f"{res.optimum:g}"))
            rows.append(("approximation ratio", f"{res.approximation_ratio:.6f}"))
        rows += [
            ("best cut sampled", f"{res.best_value:g}  ({data['best_cut']['bitstring']})"),
            ("converged", _verdict(res.converged, res.message, "raise --maxiter")),
            ("evaluations", _evaluations(res.evaluations, res.iterations)),
            ("time", duration(seconds)),
        ]
        _summary(f"MaxCut on {g.num_nodes} nodes, {len(g.edges)} edges, QAOA p = {p}", rows)

    emit(as_json, data, human)


def vqe(
    *,
    hamiltonian: Annotated[
        str,
        typer.Option(
            "--hamiltonian", help="A Pauli-sum file, or tfim:N[:ring] / heisenberg:N[:ring]."
        ),
    ],
    ansatz: Annotated[
        str,
        typer.Option(
            "--ansatz",
            help="hea:DEPTH[:ladder|ring][:cz|cx] (real states), general:DEPTH[:ladder|ring]"
            "[:cz|cx] (RY + RZ: any Hamiltonian) or hva:LAYERS[:multi]",
        ),
    ] = "hea:2",
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="L-BFGS-B, COBYLA or SPSA")
    ] = "L-BFGS-B",
    maxiter: Annotated[int, typer.Option("--maxiter")] = 500,
    seed: SeedOption = 0,
    exact: Annotated[
        bool, typer.Option("--exact/--no-exact", help="Compute the exact ground energy.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Find a Hamiltonian's ground energy with VQE (adjoint gradients)."""
    if maxiter < 1:
        raise UserError("--maxiter must be at least 1")
    from qiz.quantum.algorithms.ansatz import HardwareEfficientAnsatz, parse_ansatz
    from qiz.quantum.algorithms.vqe import run_vqe

    h = _hamiltonian(hamiltonian)
    circuit = parse_ansatz(ansatz, h)
    if isinstance(circuit, HardwareEfficientAnsatz) and not h.is_real:
        raise UserError(
            f"{ansatz}: a RY-based hardware-efficient ansatz only makes real states, on which "
            "the Hamiltonian's terms with an odd number of Y average to 0; use --ansatz general:D"
        )
    began = time.perf_counter()
    with _progress(not as_json, f"VQE {optimizer}", maxiter) as progress, quiet_warnings(as_json):
        res = run_vqe(
            circuit,
            h,
            method=optimizer,
            maxiter=maxiter,
            seed=seed,
            exact=exact and h.num_qubits <= 20,
            progress=progress,
        )
    seconds = time.perf_counter() - began
    data = {
        "num_qubits": h.num_qubits,
        "num_terms": len(h),
        "ansatz": ansatz,
        "optimizer": res.method,
        "energy": res.energy,
        "exact": res.exact,
        "energy_error": res.error,
        "theta": res.theta,
        "evaluations": res.evaluations,
        "iterations": res.iterations,
        "converged": res.converged,
        "optimizer_message": res.message,
        "gradient_norm": res.gradient_norm,
        "duration_s": round(seconds, 3),
    }

    def human() -> None:
        rows = [("energy", f"{res.energy:.10f}")]
        if res.exact is not None and res.error is not None:
            rows.append(("exact ground energy", f"{res.exact:.10f}"))
            rows.append(("energy error", f"{res.error:.3e}"))
        rows += [
            ("converged", _verdict(res.converged, res.message, "raise --maxiter")),
            ("evaluations", f"{res.evaluations} energies"),
            ("iterations", str(res.iterations)),
        ]
        if res.gradient_norm is not None:
            rows.append(("gradient norm", f"{res.gradient_norm:.3e}"))
        rows += [
            ("time", duration(seconds)),
        ]
        title = f"VQE: {h.num_qubits} qubits, {len(h)} terms, ansatz {ansatz}, {res.method}"
        _summary(title, rows)

    emit(as_json, data, human)


def _hamiltonian(spec: str):  # noqa: ANN202 - PauliSum, imported lazily
    from qiz.quantum.core.pauli import PauliSum

    return PauliSum.builtin(spec) or PauliSum.load(spec)


def grover(
    *,
    qubits: Annotated[int, typer.Option("--qubits", help="Number of qubits (search space 2^n).")],
    marked: Annotated[
        str | None,
        typer.Option(
            "--marked", help="Comma-separated marked indices: decimal, or 0b101 bitstrings."
        ),
    ] = None,
    cnf: Annotated[Path | None, typer.Option("--cnf", help="A DIMACS CNF formula.")] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", help="Default: the optimal count.")
    ] = None,
    shots: Annotated[int, typer.Option("--shots")] = 1024,
    seed: SeedOption = 0,
    search: Annotated[
        bool, typer.Option("--search", help="Exponential search: the number of solutions unknown.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Grover search over a marked set or the solutions of a CNF formula."""
    from qiz.quantum.algorithms.grover import (
        GroverSimulator,
        analytic_success,
        exponential_search,
        optimal_iterations,
    )
    from qiz.quantum.problems.cnf import Cnf

    if (marked is None) == (cnf is None):
        raise UserError("give exactly one of --marked LIST and --cnf FILE")
    if marked is not None:
        sim = GroverSimulator(qubits, marked=_marked(marked, qubits))
    else:
        assert cnf is not None
        sim = GroverSimulator(qubits, cnf=Cnf.load(cnf))
    m = sim.num_solutions
    began = time.perf_counter()
    data: dict[str, object] = {"num_qubits": qubits, "num_items": 1 << qubits, "num_solutions": m}
    if search:
        found = exponential_search(sim, seed=seed)
        data.update(
            found=None if found.found is None else format(found.found, f"0{qubits}b"),
            iterations=found.iterations,
            rounds=found.rounds,
        )
    elif m == 0:
        data.update(iterations=0, success_probability=0.0, note="the formula has no solution")
    else:
        k = optimal_iterations(qubits, m) if iterations is None else iterations
        prob = sim.run(k)
        counts = sim.sample(shots, seed)
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        data.update(
            iterations=k,
            optimal_iterations=optimal_iterations(qubits, m),
            success_probability=prob,
            analytic_probability=analytic_success(qubits, m, k),
            shots=shots,
            counts={format(i, f"0{qubits}b"): c for i, c in ordered},
            hits=sum(c for i, c in counts.items() if sim.is_solution(i)),
        )
    data["duration_s"] = round(time.perf_counter() - began, 3)

    def human() -> None:
        title = f"Grover search: {qubits} qubits, {1 << qubits} items, {m} marked"
        _summary(title, _grover_rows(data, sim.is_solution))

    emit(as_json, data, human)


TOP_OUTCOMES = 5  # outcomes listed in Grover's human summary (--json lists all)


def _grover_rows(data: dict, is_solution: Callable[[int], bool]) -> list[tuple[str, str]]:
    """Grover's answer as aligned rows: iterations, success beside the analytic value, top
    outcomes (marked ones flagged), time."""
    rows: list[tuple[str, str]] = []
    if "rounds" in data:  # exponential search
        found = data["found"]
        rows.append(("found", "nothing" if found is None else f"{found} (marked)"))
        rows.append(("iterations", f"{data['iterations']} over {data['rounds']} rounds"))
    elif "note" in data:
        rows.append(("result", str(data["note"])))
    else:
        optimal = data["optimal_iterations"]
        k = data["iterations"]
        rows.append(
            ("iterations", f"{k}" + (" (optimal)" if k == optimal else f" (optimal {optimal})"))
        )
        rows.append(
            (
                "success probability",
                f"{data['success_probability']:.6f}  (analytic {data['analytic_probability']:.6f})",
            )
        )
        shots = data["shots"]
        rows.append(("marked in samples", f"{data['hits']} of {shots} shots"))
        counts: dict[str, int] = data["counts"]
        for n, (bits, count) in enumerate(list(counts.items())[:TOP_OUTCOMES]):
            mark = "  marked" if is_solution(int(bits, 2)) else ""
            line = f"{bits}  {count:>{len(str(shots))}}  ({count / shots:.1%}){mark}"
            rows.append(("top outcomes" if n == 0 else "", line))
        if len(counts) > TOP_OUTCOMES:
            rows.append(("", f"... {len(counts) - TOP_OUTCOMES} more outcomes (--json lists all)"))
    rows.append(("time", duration(float(data["duration_s"]))))
    return rows


def parse_bindings(items: list[str]) -> dict[str, float]:
    """``NAME=VALUE`` pairs from repeated --param options; VALUE a number or a constant
    expression (:func:`constant_expression`)."""
    import math

    values: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        value = constant_expression(text) if sep else None
        if not sep or not name.strip() or value is None or not math.isfinite(value):
            raise UserError(
                f"--param {item!r}: expected NAME=VALUE with a finite number or a constant "
                "expression such as pi/2 or 2*pi/3"
            )
        values[name.strip()] = value
    return values


def constant_expression(text: str) -> float | None:
    """The value of ``text``, a number (``0.5``) or a constant OpenQASM 3 expression (``pi/2``,
    ``-tau/8``, ``2*pi/3``, ``sqrt(2)/2``), or None if it is neither. The expression is read
    by the OpenQASM parser and evaluated by the importer's own evaluator
    (``qiz.quantum.qasm.expr``), so ``--param`` understands exactly what a gate angle in a
    program does; it must be the one initialiser of a declaration (nothing else is read)."""
    try:
        return float(text)
    except ValueError:
        pass
    if not text.strip():
        return None
    from openqasm3 import ast, parse
    from openqasm3.parser import QASM3ParsingError

    from qiz.quantum.core.errors import QuantumError
    from qiz.quantum.qasm.expr import Locator, evaluate_constant

    source = f"const float[64] value = {text};"
    try:
        statements = parse(source).statements
    except (QASM3ParsingError, ValueError, TypeError):
        return None
    if len(statements) != 1 or not isinstance(statements[0], ast.ConstantDeclaration):
        return None
    try:
        return evaluate_constant(statements[0].init_expression, {}, Locator(source), "the value")
    except QuantumError:
        return None


def _marked(text: str, qubits: int) -> list[int]:
    out = []
    for item in text.split(","):
        token = item.strip()
        if not token:
            continue
        try:  # decimal, or 0b... / 0x...: never guessed from the token's length
            value = int(token, 0)
        except ValueError:
            raise UserError(
                f"--marked: {token!r} is not an index (write bitstrings as 0b101)"
            ) from None
        if not 0 <= value < 1 << qubits:
            raise UserError(f"--marked: {token} is outside 0 .. 2^{qubits} - 1")
        out.append(value)
    if not out:
        raise UserError("--marked: no items given")
    return out
