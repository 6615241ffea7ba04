"""Device targets on the command line: ``qiz targets`` lists the shipped ones, and
``qiz run FILE --target NAME`` (the option lives on ``run``, in quantum_cmds) runs a circuit
as the device would, through :func:`run_on_target`.

Nothing heavy is imported until a command runs (``tests/test_cli_startup.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qiz.cli.human import plural
from qiz.cli.output import console, emit, guarded

if TYPE_CHECKING:
    from qiz.quantum.core.circuit import Circuit

PANEL = "Quantum processor"  # the heading in 'qiz --help', shared with quantum_cmds
TOP_OUTCOMES = 32  # rows of the human counts table


def register(app: typer.Typer) -> None:
    app.command("targets", rich_help_panel=PANEL)(guarded(list_targets))


def list_targets(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the device targets shipped with qiz (for 'qiz run --target')."""
    from qiz.quantum.targets import catalog

    rows = [catalog.load(name).summary() for name in catalog.names()]

    def human() -> None:
        from rich.table import Table

        table = Table(
            "name",
            "qubits",
            "basis gates",
            "2q error (median)",
            "T1 / T2 median (us)",
            "readout error (median)",
            "snapshot",
            title="device targets (from qiskit-ibm-runtime fake backends)",
        )
        for r in rows:
            table.add_row(
                str(r["name"]),
                str(r["num_qubits"]),
                ", ".join(r["basis_gates"]),  # type: ignore[arg-type]
                _fmt(r["two_qubit_error_median"], "{:.2e}"),
                f"{_fmt(r['t1_median_us'], '{:.0f}')} / {_fmt(r['t2_median_us'], '{:.0f}')}",
                _fmt(r["readout_error_median"], "{:.2e}"),
                str(r["snapshot_date"] or "-")[:10],
            )
        console.print(table)

    emit(as_json, {"targets": rows}, human)


def _fmt(value: object, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def run_on_target(
    file: Path, circuit: Circuit, name: str, *, shots: int, seed: int | None, as_json: bool
) -> None:
    """``qiz run FILE --target NAME``: transpile, simulate with the target's noise, and put the
    ideal distribution's TVD and fidelity beside the counts."""
    from qiz.quantum.targets import catalog
    from qiz.quantum.targets.run import run

    target = catalog.load(name)
    start = time.perf_counter()
    outcome = run(circuit, target, shots, seed)
    seconds = time.perf_counter() - start
    result = outcome.result
    info: dict[str, Any] = {
        "name": target.name,
        "backend": target.source.get("backend"),
        "snapshot_date": target.source.get("snapshot_date"),
        "transpiler": outcome.transpiler,
        "depth": outcome.device.depth(),
        "two_qubit_gates": outcome.device.two_qubit_gates(),
        "physical_qubits": outcome.physical_qubits,
        "tvd": _round(outcome.tvd),
        "fidelity": _round(outcome.fidelity),
    }
    data = {
        "counts": dict(sorted(result.counts.items())),
        "shots": shots,
        "seed": seed,
        "num_qubits": circuit.num_qubits,
        "num_clbits": result.num_clbits,
        "method": result.method,
        "engine": result.engine,
        "duration_s": round(seconds, 6),
        "target": info,
    }

    def human() -> None:
        from rich.table import Table

        console.print(
            f"{file.name} on {target.name} (snapshot {info['snapshot_date'] or '-'}): "
            f"transpiled by {info['transpiler']}",
            markup=False,
        )
        console.print(
            f"  depth {info['depth']}, {plural(info['two_qubit_gates'], 'two-qubit gate')}, "
            f"physical qubits {', '.join(map(str, outcome.physical_qubits))}",
            markup=False,
        )
        if outcome.ideal is None:
            console.print("  no exact ideal distribution (mid-circuit measurement or reset)")
        else:
            console.print(
                f"  vs ideal: TVD {outcome.tvd:.4f}, fidelity {outcome.fidelity:.4f}",
                markup=False,
            )
        ideal = outcome.ideal or {}
        table = Table("outcome", "count", "probability", "ideal", title=f"{shots} noisy shots")
        top = sorted(result.counts.items(), key=lambda kv: -kv[1])[:TOP_OUTCOMES]
        for key, count in top:
            table.add_row(key, str(count), f"{count / shots:.4f}", f"{ideal.get(key, 0.0):.4f}")
        console.print(table)
        if len(result.counts) > TOP_OUTCOMES:
            console.print(f"... and {len(result.counts) - TOP_OUTCOMES} more outcomes (use --json)")

    emit(as_json, data, human)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
