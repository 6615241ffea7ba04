"""``qiz ml train``: a quantum model beside the classical baselines, the whitepaper's claims
checked against what was measured, and one-line errors for options that cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from qiz.ml import experiment
from qiz.ml.experiment import CLAIMS, Report, Row

from .helpers import ok_json, one_line_error, qiz, qiz_each


def test_train_vqc_on_iris_prints_every_model_and_the_claims(tmp_path) -> None:
    args = ["--dataset", "iris", "--model", "vqc", "--qubits", "2", "--layers", "1"]
    answer = ok_json(qiz(tmp_path, "ml", "train", *args, "--folds", "2", "--seed", "3", "--json",
                         timeout=120))  # fmt: skip
    assert (answer["dataset"], answer["model"], answer["qubits"], answer["layers"]) == (
        "iris", "vqc", 2, 1)  # fmt: skip
    assert (answer["samples"], answer["features"], answer["classes"]) == (150, 4, 3)
    assert answer["train_size"] + answer["test_size"] == 150
    names = [r["name"] for r in answer["rows"]]
    assert names[0] == "vqc" and names[1:3] == ["logistic_regression", "rbf_svm"]
    assert names[3].startswith("mlp_")
    assert [r["kind"] for r in answer["rows"]] == ["quantum"] + ["classical"] * 3
    vqc, mlp = answer["rows"][0], answer["rows"][3]
    # three classes on two qubits: chance is 1/3; a trained VQC does far better
    assert vqc["accuracy"] > 0.6 and vqc["cv_accuracy_mean"] > 0.6
    # the MLP is sized to the VQC's parameter count
    assert abs(mlp["parameters"] - vqc["parameters"]) <= 0.5 * vqc["parameters"]
    assert answer["claims"] == CLAIMS
    assert len(answer["verdicts"]) == 3
    assert "5x" in answer["verdicts"][0] and "3x" in answer["verdicts"][1]
    assert "97%" in answer["verdicts"][2]


def test_train_qsvc_human_output(tmp_path) -> None:
    result = qiz(tmp_path, "ml", "train", "--dataset", "iris", "--model", "qsvc", "--qubits",
                 "3", "--layers", "1", "--folds", "2", timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "iris: 150 samples, 4 features, 3 classes" in out
    assert "qsvc with 3 qubits and 1 layer" in out
    for name in ("qsvc", "logistic_regression", "rbf_svm", "mlp_"):
        assert name in out
    assert "whitepaper" in out and "claimed 5x" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dataset", "mnist"], ["unknown data set 'mnist'", "iris"]),
        (["--dataset", "iris", "--model", "qnn"], ["unknown model 'qnn'", "qsvc"]),
        (["--dataset", "iris", "--qubits", "6"], ["iris has 4 features", "--qubits at most 4"]),
        (["--dataset", "wine", "--qubits", "0"], ["--qubits must be between 1 and 12"]),
        (["--dataset", "wine", "--folds", "1"], ["--folds must be between 2"]),
        (["--dataset", "wine", "--layers", "11"], ["--layers must be between 1 and 10"]),
    ],
)
def test_options_that_cannot_run_are_one_line(tmp_path, args, words) -> None:
    plain, as_json = qiz_each(tmp_path, [["ml", "train", *args], ["ml", "train", *args, "--json"]])
    line = one_line_error(plain)
    one_line_error(as_json)
    for word in words:
        assert word in line, line


def test_same_seed_same_figures_and_every_data_set_loads() -> None:
    a = experiment.run("iris", "qsvc", qubits=2, layers=1, folds=2, seed=5)
    b = experiment.run("iris", "qsvc", qubits=2, layers=1, folds=2, seed=5)
    assert [(r.accuracy, r.cv_accuracy_mean) for r in a.rows] == [
        (r.accuracy, r.cv_accuracy_mean) for r in b.rows
    ]
    shapes = {name: experiment.load(name)[0].shape for name in experiment.DATASETS}
    assert shapes == {"breast_cancer": (569, 30), "wine": (178, 13), "iris": (150, 4),
                      "digits": (1797, 64)}  # fmt: skip


def _report(ours: tuple[float, float, float], baseline: tuple[float, float, float]) -> Report:
    report = Report("iris", "vqc", 2, 1, 2, 0, 150, 4, 3, 112, 38)
    report.rows = [Row("vqc", "quantum", 12, *ours), Row("rbf_svm", "classical", 99, *baseline)]
    return report


def test_verdicts_say_whether_each_claim_holds() -> None:
    # (accuracy, train_s, predict_s)
    slow = _report((0.90, 1.0, 0.03), (0.95, 0.01, 0.01))
    c = slow.comparison()
    assert np.isclose(c["training_speedup"], 0.01) and np.isclose(c["inference_speedup"], 1 / 3)
    training, inference, accuracy = slow.verdicts()
    assert "100.0x slower than rbf_svm" in training and "does not hold" in training
    assert "3.0x slower" in inference and "does not hold" in inference
    assert "classical wins here" in accuracy
    fast = _report((0.97, 0.1, 0.001), (0.95, 0.6, 0.004))
    training, inference, accuracy = fast.verdicts()
    assert "6.00x faster" in training and "claimed 5x holds" in training
    assert "4.00x faster" in inference and "claimed 3x holds" in inference
    assert "not behind" in accuracy


def test_the_mlp_is_sized_to_the_vqc() -> None:
    for qubits, layers, classes in ((2, 1, 3), (4, 2, 2), (8, 2, 10)):
        target = experiment.vqc_parameters(qubits, qubits, layers, classes)
        hidden = experiment.mlp_hidden(qubits, classes, target)
        outputs = 1 if classes == 2 else classes
        count = qubits * hidden + hidden + hidden * outputs + outputs
        step = qubits + 1 + outputs  # one hidden unit more or less
        assert abs(count - target) <= step / 2 + 1, (qubits, layers, classes, count, target)
