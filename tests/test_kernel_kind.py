"""The ``kernel`` job kind and quantum-kernel models on the mesh (issue 22, item 3).

A kernel job's tasks are row blocks of K; each equals this machine's kernel matrix rows; every
malformed field and every bound is refused with its path; a result of the wrong shape is named.
Then three ``qiz node start`` processes on loopback: ``QuantumKernel(backend=Mesh())`` equals the
local kernel, and ``QSVC(backend=Mesh())`` trains to the same classifier as the local one, its
kernel jobs replicated on distinct workers and attested.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qiz.compute import kernel_kind, results
from qiz.compute import spec as specs
from qiz.compute.errors import SpecError
from qiz.identity import NodeIdentity

from .helpers import eventually, node_processes, node_state, qiz_init

RNG = np.random.default_rng(3)
MAP = {"name": "reuploading", "qubits": 3, "reps": 2, "entanglement": "linear", "bandwidth": 0.5}


def signed(doc: dict, who: NodeIdentity) -> bytes:
    return specs.sign(specs.make_body(doc, who), who)


def local_kernel(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    from qiz.ml import QuantumKernel

    kernel = QuantumKernel(num_qubits=MAP["qubits"], reps=MAP["reps"], bandwidth=MAP["bandwidth"])
    return kernel.evaluate(x, y)


def test_a_kernel_job_is_row_blocks_of_the_local_kernel_matrix(alice) -> None:
    x, y = RNG.normal(size=(7, 4)), RNG.normal(size=(5, 4))
    for other, expected in ((None, local_kernel(x)), (y, local_kernel(x, y))):
        params = {"map": MAP, "x": x.tolist(), "shard": 3}
        if other is not None:
            params["y"] = other.tolist()
        spec = specs.parse(signed({"kind": "kernel", "params": params}, alice))
        assert spec.kind == "kernel" and not spec.sampled and spec.seed == 0
        assert [len(t.params["x"]) for t in spec.tasks] == [3, 3, 1]
        blocks = [kernel_kind.run(t.params) for t in spec.tasks]
        for task, block in zip(spec.tasks, blocks, strict=True):
            shape = results.shape_of(task)
            assert shape is not None and results.problem(shape, block) is None
        matrix = np.array([row for block in blocks for row in block["rows"]])
        assert np.allclose(matrix, expected, rtol=0, atol=1e-11)
        assert kernel_kind.summarise(blocks) == f"a 7 x {expected.shape[1]} kernel matrix"


def test_a_block_of_the_wrong_shape_is_named(alice) -> None:
    params = {"map": MAP, "x": RNG.normal(size=(2, 3)).tolist()}
    (task,) = specs.parse(signed({"kind": "kernel", "params": params}, alice)).tasks
    shape = results.shape_of(task)
    assert shape is not None
    assert "has 2 rows" in (results.problem(shape, {"rows": [[0.5, 0.5]]}) or "")
    assert "hold 2 values" in (results.problem(shape, {"rows": [[1.0], [1.0]]}) or "")
    assert "from 0 to 1" in (results.problem(shape, {"rows": [[1.0, 7.0], [1.0, 1.0]]}) or "")
    assert "rows only" in (results.problem(shape, {"rows": [], "x": 1}) or "")
    assert "rows only" in (results.problem(shape, [1, 2]) or "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x": [[1.0]]}, r"params.map: is required"),
        ({"map": MAP, "x": [[1.0]], "z": 1}, r"params.z: is not a kernel field"),
        ({"map": {**MAP, "colour": 1}, "x": [[1.0]]}, r"params.map.colour: is not"),
        ({"map": {**MAP, "name": "zzz"}, "x": [[1.0]]}, r"params.map.name: must be one of"),
        ({"map": {**MAP, "qubits": 17}, "x": [[1.0]]}, r"params.map.qubits: must be a whole"),
        ({"map": {**MAP, "qubits": 12}, "x": [[1.0]]}, r"12 qubits; this node's memory allows"),
        ({"map": {**MAP, "reps": 0}, "x": [[1.0]]}, r"params.map.reps: must be a whole"),
        ({"map": {**MAP, "bandwidth": -1}, "x": [[1.0]]}, r"params.map.bandwidth: must be"),
        ({"map": {**MAP, "entanglement": "all"}, "x": [[1.0]]}, r"params.map.entanglement"),
        ({"map": MAP, "x": []}, r"params.x: must be a non-empty list"),
        ({"map": MAP, "x": [[1.0, 2.0], [1.0]]}, r"params.x\[1\]: has 1 features"),
        ({"map": MAP, "x": [[1.0, "a"]]}, r"params.x\[0\]\[1\]: must be a finite number"),
        ({"map": MAP, "x": [[1.0, True]]}, r"params.x\[0\]\[1\]: must be a finite number"),
        ({"map": MAP, "x": [[1.0]], "y": [[1.0, 2.0]]}, r"params.y\[0\]: has 2 features"),
        ({"map": MAP, "x": [[1.0]] * 4097}, r"params.x: must be a list of at most 4096"),
        ({"map": MAP, "x": [[1.0]] * 4000, "y": [[1.0]] * 97}, r"X and Y together are over"),
        ({"map": MAP, "x": [[0.0] * 257]}, r"params.x\[0\]: must be a list of 1 to 256"),
        ({"map": MAP, "x": [[1.0]], "shard": 0}, r"params.shard: must be a whole number"),
    ],
)
def test_malformed_kernel_jobs_are_refused_with_the_field_named(alice, params, message) -> None:
    raw = signed({"kind": "kernel", "params": params}, alice)
    with pytest.raises(SpecError, match=message):
        specs.parse(raw, specs.Limits(max_qubits=10, max_spec_bytes=1 << 22))


def test_a_kernel_job_is_deterministic_and_bounded_in_work(alice) -> None:
    params = {"map": MAP, "x": RNG.normal(size=(4, 2)).tolist()}
    with pytest.raises(SpecError, match="seed: null"):
        specs.parse(signed({"kind": "kernel", "params": params, "seed": None}, alice))
    with pytest.raises(SpecError, match="units of work"):
        specs.parse(signed({"kind": "kernel", "params": params}, alice), specs.Limits(max_work=1))


# ----------------------------------------------------------------------------- the mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Homes A, B, C running, one worker slot each (as tests/test_client.py)."""
    work = tmp_path_factory.mktemp("kernel")
    qiz_init(work, "A", "B", "C")
    with node_processes(work) as start:
        first = start("A", args=["--slots", "1"])
        for name in "BC":
            start(name, [first.bootstrap], args=["--slots", "1"])

        def joined() -> bool:
            status = node_state(first)
            return bool(status) and status["dht"]["contacts"] >= 2

        eventually(joined, 60, "the mesh")
        yield work


def test_models_train_on_the_mesh_as_they_do_here(mesh: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification

    from qiz.client import Mesh
    from qiz.ml import QSVC, QuantumKernel

    x, y = make_classification(60, 4, n_informative=3, n_redundant=0, random_state=2)
    client = Mesh(mesh / "A")
    remote = QuantumKernel(num_qubits=3, backend=client)
    assert np.allclose(remote.evaluate(x[:40], x[40:]), local_kernel(x[:40], x[40:]), atol=1e-11)
    (job,) = remote.runs_.jobs
    (attestation,) = remote.runs_.attestations
    assert attestation.job_id == job and attestation.quorum == 2
    assert len(set(attestation.workers)) >= 2  # its blocks ran on distinct workers

    here = QSVC(num_qubits=3, random_state=0).fit(x[:40], y[:40])
    there = QSVC(num_qubits=3, random_state=0, backend=client).fit(x[:40], y[:40])
    assert (there.predict(x[40:]) == here.predict(x[40:])).all()
    assert np.allclose(there.decision_function(x[40:]), here.decision_function(x[40:]), atol=1e-8)
    assert len(there.kernel_.runs_.jobs) == 3  # K(X), then K(X', X) for predict and decision


# ----------------------------------------------------------------------------- gradients

MODEL = {"qubits": 3, "layers": 2, "entanglement": "linear", "outputs": 1}


def gradient_doc(x: np.ndarray, target: list, theta: np.ndarray, **extra: object) -> dict:
    params = {
        "model": MODEL,
        "loss": "logistic",
        "theta": theta.tolist(),
        "x": x.tolist(),
        "target": target,
        **extra,
    }
    return {"kind": "gradient", "params": params}


def test_gradient_shards_add_up_to_the_batch_loss_and_gradient(alice) -> None:
    from qiz.compute import gradient_kind
    from qiz.ml import gradients

    x = RNG.normal(size=(9, 3))
    target = [int(v) for v in RNG.integers(0, 2, size=9)]
    fmap, obs = gradients.model(3, 3, 2, "linear"), gradients.observables(3, 1)
    theta = RNG.normal(size=fmap.program.num_params + 2)
    spec = specs.parse(signed(gradient_doc(x, target, theta, shard=4), alice))
    assert [len(t.params["x"]) for t in spec.tasks] == [4, 4, 1] and not spec.sampled
    shares = [gradient_kind.run(t.params) for t in spec.tasks]
    for task, share in zip(spec.tasks, shares, strict=True):
        shape = results.shape_of(task)
        assert shape is not None and results.problem(shape, share) is None
    loss, grad = gradients.loss_grad(
        fmap, obs, "logistic", params=theta, X=x, target=np.array(target), total=9
    )
    assert sum(s["loss"] for s in shares) == pytest.approx(loss, rel=1e-10)
    assert np.allclose(np.sum([s["grad"] for s in shares], axis=0), grad, rtol=1e-9, atol=1e-12)
    assert "over 3 shards" in gradient_kind.summarise(shares)
    (task,) = specs.parse(signed(gradient_doc(x[:2], target[:2], theta), alice)).tasks
    shape = results.shape_of(task)
    assert shape is not None
    assert "map of loss and grad" in (results.problem(shape, {"loss": 1.0}) or "")
    assert "finite" in (results.problem(shape, {"loss": float("nan"), "grad": []}) or "")
    assert f"hold {len(theta)} numbers" in (results.problem(shape, {"loss": 1.0, "grad": []}) or "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss": "hinge"}, r"params.loss: must be one of"),
        ({"loss": "softmax"}, r"logistic and mse read one output, softmax several"),
        ({"theta": [0.0]}, r"params.theta: the model has \d+ parameters"),
        ({"target": [0, 1]}, r"params.target: must be a list of 3 values"),
        ({"target": [0, 1, 2]}, r"params.target\[2\]: not a target of a logistic loss"),
        ({"target": [0, 1, True]}, r"params.target\[2\]: not a target"),
        ({"model": {**MODEL, "layers": 17}}, r"params.model.layers: must be a whole number"),
        ({"model": {**MODEL, "outputs": 0}}, r"params.model.outputs: must be a whole number"),
        ({"model": {**MODEL, "spin": 1}}, r"params.model.spin: is not a model option"),
        ({"model": {**MODEL, "qubits": 11}}, r"11 qubits; this node's memory allows at most 10"),
        ({"epochs": 3}, r"params.epochs: is not a gradient field"),
        ({"x": [[1.0, 2.0, 3.0]] * 4097}, r"params.x: must be a list of at most 4096 rows"),
    ],
)
def test_malformed_gradient_jobs_are_refused_with_the_field_named(alice, change, message) -> None:
    from qiz.ml import gradients

    x = RNG.normal(size=(3, 3))
    theta = np.zeros(gradients.model(3, 3, 2, "linear").program.num_params + 2)
    doc = gradient_doc(x, [0, 1, 1], theta)
    doc["params"].update(change)
    with pytest.raises(SpecError, match=message):
        specs.parse(signed(doc, alice), specs.Limits(max_qubits=10, max_spec_bytes=1 << 22))
    doc = gradient_doc(x, [0, 1, 1], theta)
    with pytest.raises(SpecError, match="seed: null"):
        specs.parse(signed({**doc, "seed": None}, alice))


def test_a_classifier_trains_on_the_mesh_as_it_does_here(mesh: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification

    from qiz.client import Mesh
    from qiz.ml import VQC

    x, y = make_classification(48, 3, n_informative=3, n_redundant=0, random_state=5)
    options = {"num_qubits": 3, "layers": 1, "max_iter": 4, "random_state": 0}
    here = VQC(**options).fit(x, y)
    there = VQC(**options, backend=Mesh(mesh / "A")).fit(x, y)
    assert np.allclose(there.params_, here.params_, rtol=1e-6, atol=1e-8)
    assert (there.predict(x) == here.predict(x)).all()
    assert len(there.runs_.jobs) == len(there.loss_curve_) >= 2  # a job per evaluation
    assert all(a.quorum == 2 for a in there.runs_.attestations)


def test_a_block_too_large_for_one_message_is_refused_and_the_client_picks_one_that_fits(
    alice,
) -> None:
    from qiz.ml.fidelity import MAX_KERNEL_RESULT, max_rows

    x = np.zeros((1000, 2)).tolist()
    raw = signed({"kind": "kernel", "params": {"map": MAP, "x": x, "shard": 32}}, alice)
    with pytest.raises(SpecError, match=r"params.shard: a block of 32 rows x 1000 values"):
        specs.parse(raw, specs.Limits(max_spec_bytes=1 << 22))
    most = max_rows(1000)
    params = {"map": MAP, "x": x[:40], "y": x, "shard": most}
    (task, *_) = specs.parse(
        signed({"kind": "kernel", "params": params}, alice), specs.Limits(max_spec_bytes=1 << 22)
    ).tasks
    from qiz import wire

    block = kernel_kind.run(task.params)
    assert len(wire.encode(block)) <= MAX_KERNEL_RESULT  # it fits one message
