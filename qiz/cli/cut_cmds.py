"""``qiz cut``: expectation values of a circuit too wide for one worker, cut across the mesh.

The cutting itself is :mod:`qiz.integrations.cutting` (Qiskit and qiskit-addon-cutting, loaded
inside the command so the CLI starts as fast without them); this module reads the options,
runs it on the node of the home (or here, ``--local``) and prints the values with their error
bound, the cuts' sampling overhead and where the time went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from qiz.cli.common import Session, read_file
from qiz.cli.output import UserError, console, emit, guarded

PANEL = "Quantum processor"  # the heading of 'qiz --help' the quantum commands share
LABEL_WIDTH = 22


def register(app: typer.Typer) -> None:
    app.command("cut", rich_help_panel=PANEL)(guarded(cut))


def cut(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="An OpenQASM 3 program (measured at its end).")],
    *,
    observable: Annotated[
        list[str],
        typer.Option(
            "--observable",
            "-o",
            help="A Pauli label, qubit 0 rightmost (ZZII...); repeatable.",
        ),
    ],
    max_qubits: Annotated[
        int, typer.Option("--max-qubits", min=1, help="Qubits a sub-experiment may have.")
    ] = 24,
    shots: Annotated[
        int, typer.Option("--shots", min=1, help="Shots of each sub-experiment.")
    ] = 4000,
    local: Annotated[
        bool, typer.Option("--local", help="Run here, on this machine's engine (no node).")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed for every random choice (>= 0).")
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Replicas of each mesh job.")
    ] = 2,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds to wait for each mesh job.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Cut a circuit into sub-experiments that fit --max-qubits, run them, reconstruct."""
    from qiz.integrations.cutting import CutError, run_cut

    text = read_file(file, what="circuit")
    try:
        program = text.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"circuit {file} is not UTF-8 text") from None
    labels = [o.strip() for o in observable]
    bad = [label for label in labels if not label or set(label.upper()) - set("IXYZ")]
    if bad:
        raise UserError(f"--observable {bad[0]!r}: a Pauli label of I, X, Y and Z (ZZII...)")
    labels = [label.upper() for label in labels]
    mesh = None
    if not local:
        from qiz.client import Mesh

        session: Session = ctx.obj
        home = session.home.path if session.home.given else None
        mesh = Mesh(home, passphrase=session.passphrase())
    try:
        result = run_cut(
            program,
            labels,
            max_qubits=max_qubits,
            shots=shots,
            mesh=mesh,
            local=local,
            seed=seed,
            replicas=replicas,
            timeout=timeout,
        )
    except CutError as exc:
        raise UserError(f"{file}: {exc}") from None
    data: dict[str, Any] = {
        "observables": labels,
        "num_qubits": len(labels[0]),
        "max_qubits": max_qubits,
        "local": local,
        "seed": seed,
        **result.as_dict(),
    }

    def human() -> None:
        where = "here" if local else f"on the mesh ({len(result.jobs)} jobs)"
        console.print(f"{file.name}: {len(labels[0])} qubits cut, run {where}", markup=False)
        for label, value, bound in zip(labels, result.values, result.std_bounds, strict=True):
            console.print(f"  <{label}> = {value:+.6f}  (std <= {bound:.3g})", markup=False)
        widths = data["subcircuit_widths"]
        rows = [
            (
                "cuts",
                ", ".join(_cut(c) for c in data["cuts"]) or "none (it fits)",
            ),
            ("sampling overhead", f"{result.sampling_overhead:.4g}"),
            ("sub-circuits", f"{len(widths)} of {', '.join(map(str, widths))} qubits"),
            ("sub-experiments", f"{result.num_subexperiments} ({result.num_runs} distinct runs)"),
            ("shots", f"{shots} each, {result.total_shots} in all"),
            (
                "time",
                f"cut {data['cut_s']:.2f} s, run {data['run_s']:.2f} s, "
                f"reconstruct {data['reconstruct_s']:.2f} s",
            ),
        ]
        for label, value in rows:
            console.print(f"  {label:<{LABEL_WIDTH}}{value}", markup=False)

    emit(as_json, data, human)


def _cut(cut: dict[str, Any]) -> str:
    qubits = ",".join(f"q[{q}]" for q in cut["qubits"])
    return f"wire {qubits}" if cut["type"] == "wire" else f"{cut['gate']} {qubits}"


def _cut(cut: dict[str, Any]) -> str:
    qubits = ",".join(f"q[{q}]" for q in cut["qubits"])
    return f"wire {qubits}" if cut["type"] == "wire" else f"{cut['gate']} {qubits}"
