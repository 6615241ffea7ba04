"""``qiz ml train``: a quantum classifier beside classical baselines on a data set that
scikit-learn ships, with accuracy and wall time side by side and the whitepaper's claims.

The experiment itself is :mod:`qiz.ml.experiment` (scikit-learn, the ``ml`` extra, loaded inside
the command so the CLI starts as fast without it); this module reads the options and prints.
Training runs here, on this machine; training across the mesh is not part of this command yet.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from qiz.cli.human import plural
from qiz.cli.output import UserError, console, emit, err_console, guarded

ml_app = typer.Typer(help="Quantum machine learning: classifiers beside classical baselines.")
PANEL = "Quantum processor"  # the heading of 'qiz --help' the quantum commands share


def register(app: typer.Typer) -> None:
    app.add_typer(ml_app, name="ml", rich_help_panel=PANEL)
    ml_app.command("train")(guarded(train))


def train(
    *,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="breast_cancer, wine, iris or digits (shipped with scikit-learn)."
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="qsvc or vqc.")] = "vqc",
    qubits: Annotated[
        int, typer.Option("--qubits", help="Qubits; the features are reduced to as many (PCA).")
    ] = 4,
    layers: Annotated[
        int, typer.Option("--layers", help="Feature-map repetitions (qsvc) or layers (vqc).")
    ] = 2,
    folds: Annotated[int, typer.Option("--folds", help="Folds of the cross-validation.")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the split and models.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train a quantum model and three classical baselines; print accuracy and times."""
    try:
        from qiz.ml import experiment
    except ImportError as e:
        raise UserError(
            f"qiz ml needs scikit-learn ({e.name or e}): pip install -e '.[ml]'"
        ) from None

    def step(name: str) -> None:
        if not as_json and err_console.is_terminal:
            err_console.print(f"training {name} ...", markup=False)

    try:
        report = experiment.run(
            dataset.strip().lower(),
            model.strip().lower(),
            qubits=qubits,
            layers=layers,
            folds=folds,
            seed=seed,
            on_step=step,
        )
    except experiment.ExperimentError as e:
        raise UserError(str(e)) from None
    data = report.as_dict()
    emit(as_json, data, lambda: _human(data))


def _human(data: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        f"{data['dataset']}: {data['samples']} samples, {data['features']} features, "
        f"{data['classes']} classes; PCA to {data['qubits']} components; "
        f"{data['train_size']} training / {data['test_size']} test samples (seed {data['seed']})",
        markup=False,
    )
    table = Table(
        "model",
        "parameters",
        "test accuracy",
        f"{data['folds']}-fold accuracy",
        "training (ms)",
        "inference (ms)",
        title=f"{data['model']} with {plural(data['qubits'], 'qubit')} and "
        f"{plural(data['layers'], 'layer')}",
    )
    for row in data["rows"]:
        table.add_row(
            row["name"],
            str(row["parameters"]),
            f"{row['accuracy']:.1%}",
            f"{row['cv_accuracy_mean']:.1%} ± {row['cv_accuracy_std']:.1%}",
            f"{row['train_s'] * 1e3:.1f}",
            f"{row['predict_s'] * 1e3:.2f}",
        )
    console.print(table)
    console.print("against the whitepaper's claims (one run on this machine):", markup=False)
    for line in data["verdicts"]:
        console.print(f"  {line}", markup=False)
