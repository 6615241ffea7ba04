"""qiz.ml.torch: the PyTorch layer's gradients (gradcheck, weights and inputs), its outputs
against a fitted VQC and the plain engine, a hybrid network that learns, the float32 path, the
docs/ml.md example, and the one-line error without PyTorch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call

from qiz.ml import VQC
from qiz.ml.batched import Op, Program
from qiz.ml.feature_maps import reuploading_map, zz_map
from qiz.ml.torch import QuantumLayer
from qiz.quantum.core.statevector import statevector

DOC = Path(__file__).resolve().parent.parent / "docs" / "ml.md"
RNG = np.random.default_rng(11)


def _z_expectations(layer: QuantumLayer, x: np.ndarray) -> np.ndarray:
    """<Z_k> of every sample from the gate-level engine, one circuit per sample."""
    program = layer.fmap.program
    theta = layer.weight.detach().numpy()
    index = np.arange(1 << layer.num_qubits)
    out = []
    for row in x:
        prob = np.abs(statevector(program.circuit(row, theta))) ** 2
        out.append([prob @ (1.0 - 2.0 * ((index >> k) & 1)) for k in range(layer.outputs)])
    return np.array(out)


# (features, qubits, outputs, layers): more features than qubits takes RY then RZ encodings
SHAPES = [(2, 2, 1, 1), (3, 3, 2, 2), (5, 2, 2, 2)]


@pytest.mark.parametrize(("features", "qubits", "outputs", "layers"), SHAPES)
@pytest.mark.parametrize("path", ["fused", "gate-by-gate"])
def test_gradcheck_in_weights_and_inputs(
    features: int, qubits: int, outputs: int, layers: int, path: str
) -> None:
    layer = QuantumLayer(features, qubits, outputs=outputs, layers=layers, seed=1)
    if path == "gate-by-gate":  # a map of our own: the model's is cached and shared
        layer.fmap = reuploading_map(qubits, features, layers)
        layer.fmap.program.fused = None
    x = torch.tensor(RNG.normal(size=(3, features)), requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, {"weight": w}, (x,))

    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7)


def _mixed_program() -> Program:
    """Angles from weights, fixed scales and offsets, two-qubit rotations, fixed gates: the
    gate-by-gate path."""
    ops = [
        Op("h", (0,)),
        Op("ry", (1,), feature=0, weight=0, bias=1),
        Op("rxx", (0, 2), feature=1, weight=2),
        Op("cx", (2, 1)),
        Op("rz", (2,), feature=2, scale=0.7, offset=0.3),
        Op("rzz", (0, 1), feature=0, weight=3),
        Op("rx", (1,), feature=1, scale=1.3),
    ]
    return Program(3, ops, 4, 3)


def _fixed_map_program() -> Program:
    """A fused program whose data enters through untrained gates only (the ZZ map: RZ with
    a fixed scale, RZZ on pair columns), so the sweep must take gradients it otherwise skips."""
    return zz_map(3, 3, reps=2, entanglement="ring").program


@pytest.mark.parametrize("build", [_mixed_program, _fixed_map_program])
def test_program_input_gradients_match_finite_differences(build) -> None:
    """Program.backward's data_grad, per sample, against central differences of a diagonal
    observable; the fused and gate-by-gate paths agree."""
    program = build()
    data = RNG.normal(size=(4, program.num_encoded))
    theta = RNG.normal(size=program.num_params)
    diag = RNG.normal(size=8)

    def loss_of_row(i: int, row: np.ndarray) -> float:
        moved = data.copy()
        moved[i] = row
        psi = program.states(moved, theta)
        return float(((psi.real**2 + psi.imag**2) @ diag).sum())

    psi = program.states(data, theta)
    d_data = np.full_like(data, np.nan)  # every entry is written
    grad = program.backward(psi, psi * diag, data, theta, data_grad=d_data)
    assert np.array_equal(grad, program.backward(psi, psi * diag, data, theta))
    if program.fused is not None:
        gates = build()
        gates.fused = None
        d_gates = np.zeros_like(data)
        gates.backward(psi, psi * diag, data, theta, data_grad=d_gates)
        assert np.abs(d_data - d_gates).max() < 1e-10
    h = 1e-6
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            e = np.zeros(data.shape[1])
            e[j] = h
            fd = (loss_of_row(i, data[i] + e) - loss_of_row(i, data[i] - e)) / (2 * h)
            assert d_data[i, j] == pytest.approx(fd, abs=1e-7)


def test_outputs_equal_a_fitted_vqc_and_the_plain_engine() -> None:
    x = RNG.normal(size=(12, 3))
    y = (x[:, 0] > 0).astype(int)
    vqc = VQC(num_qubits=3, layers=2, max_iter=5, random_state=0).fit(x, y)
    layer = QuantumLayer(3, 3, outputs=1, layers=2, seed=0)
    k = layer.weight.numel()
    # the same seed starts from the same circuit as the VQC's random_state
    start = vqc._init_params(np.random.RandomState(0), 3.0)[:k]
    assert np.array_equal(layer.weight.detach().numpy(), start)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(vqc.params_[:k]))
        e = layer(torch.from_numpy(x)).numpy()
    scale, bias = vqc.params_[k], vqc.params_[k + 1]
    assert np.abs(e[:, 0] * scale + bias - vqc.decision_function(x)).max() < 1e-12
    # and a layer with three outputs against the engine, circuit by circuit
    layer3 = QuantumLayer(3, 3, outputs=3, layers=2, entanglement="ring", seed=5)
    with torch.no_grad():
        e3 = layer3(torch.from_numpy(x)).numpy()
    assert e3.shape == (12, 3)
    assert np.abs(e3 - _z_expectations(layer3, x)).max() < 1e-12


def _separable(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clusters with a margin (tests/test_ml.py's toy set)."""
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=(n, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    x += 0.4 * (2 * y[:, None] - 1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_a_hybrid_network_learns_a_separable_set_with_adam() -> None:
    """Linear -> QuantumLayer -> Linear: the first Linear trains only through the quantum
    layer's input gradients."""
    X, Y = _separable()
    torch.manual_seed(0)
    first = torch.nn.Linear(2, 2)
    quantum = QuantumLayer(2, 2, outputs=2, layers=2, seed=0)
    net = torch.nn.Sequential(first, quantum, torch.nn.Linear(2, 2))
    before = (first.weight.detach().clone(), quantum.weight.detach().clone())
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), Y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert (net(X).argmax(dim=1) == Y).all()
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(first.weight, before[0])  # gradients reached the layer before
    assert not torch.equal(quantum.weight, before[1])


def test_float32_inputs_give_float32_outputs_and_gradients() -> None:
    layer = QuantumLayer(3, 3, outputs=2, layers=2, seed=2)
    x64 = torch.tensor(RNG.normal(size=(5, 3)), requires_grad=True)
    x32 = x64.detach().float().requires_grad_(True)
    out32 = layer(x32)
    assert out32.dtype == torch.float32
    out32.sum().backward()
    assert x32.grad is not None
    assert x32.grad.dtype == torch.float32
    assert layer.weight.grad is not None
    assert layer.weight.grad.dtype == torch.float64
    g32 = layer.weight.grad.clone()
    layer.weight.grad = None
    out64 = layer(x64)
    assert out64.dtype == torch.float64
    out64.sum().backward()
    assert torch.allclose(out32.double(), out64, atol=1e-6)
    assert torch.allclose(x32.grad.double(), x64.grad, atol=1e-5)
    assert torch.allclose(g32, layer.weight.grad, atol=1e-5)
    # a module cast to float32 keeps computing in float64 and trains
    layer.float()
    assert layer.weight.dtype == torch.float32
    layer(x32).sum().backward()
    assert layer.weight.grad is not None
    assert layer.weight.grad.dtype == torch.float32


def test_bad_shapes_and_options_are_refused() -> None:
    layer = QuantumLayer(3, 2, outputs=2)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        layer(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        layer(torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="outputs"):
        QuantumLayer(3, 2, outputs=3)
    with pytest.raises(ValueError, match="entanglement"):
        QuantumLayer(3, entanglement="all")


def test_the_example_of_docs_ml_md_runs() -> None:
    """The page's python block as it stands (it asserts 100% training accuracy itself)."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    torch_blocks = [b for b in blocks if "qiz.ml.torch" in b]
    assert len(torch_blocks) == 1
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(torch_blocks[0], "docs/ml.md, the qiz.ml.torch block", "exec"), namespace)
    assert namespace["accuracy"] == 1.0


def test_without_pytorch_the_import_says_how_to_install_it() -> None:
    """torch blocked in a fresh interpreter: qiz.ml still imports (and never loads torch);
    qiz.ml.torch fails with one line naming the install command."""
    code = (
        "import sys\n"
        "import qiz.ml, qiz.ml.variational, qiz.ml.gradients\n"
        "assert 'torch' not in sys.modules, 'qiz.ml loaded torch'\n"
        "sys.modules['torch'] = None\n"
        "try:\n"
        "    import qiz.ml.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without torch')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message
    assert "PyTorch" in message
    assert "pip install -e '.[torch]'" in message
