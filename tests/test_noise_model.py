"""The noise model: Aer's placement rules, and its JSON file (docs/noise.md, "The file format"):
the documented example loads, a model round-trips, and bad files are refused naming the entry."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from qiz.quantum.noise import channels as ch
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.limits import MAX_NOISE_FILE_BYTES
from qiz.quantum.noise.model import NoiseModel

DOC = Path(__file__).resolve().parent.parent / "docs" / "noise.md"


def test_local_errors_replace_all_qubit_ones_and_repeats_compose() -> None:
    dep, amp, pd = ch.depolarizing(0.1), ch.amplitude_damping(0.2), ch.phase_damping(0.3)
    model = NoiseModel().add_all_qubit_error(dep, ["x", "h"]).add_error(amp, "x", [1])
    assert model.channel_for("x", (0,)) is dep
    assert model.channel_for("x", (1,)) is amp
    assert model.channel_for("h", (1,)) is dep
    assert model.channel_for("cx", (0, 1)) is None
    model.add_error(pd, "x", [1])
    rho = np.array([[0.3, 0.2 + 0.1j], [0.2 - 0.1j, 0.7]])
    got = model.channel_for("x", (1,)).apply_to_density(rho)
    assert np.allclose(got, pd.apply_to_density(amp.apply_to_density(rho)))


def test_two_qubit_local_errors_keep_their_qubit_order() -> None:
    model = NoiseModel().add_error(ch.depolarizing(0.1, 2), ["cx"], [2, 0])
    assert model.channel_for("cx", (2, 0)) is not None
    assert model.channel_for("cx", (0, 2)) is None


def test_names_are_read_as_ours_and_arity_is_checked() -> None:
    model = NoiseModel().add_all_qubit_error(ch.depolarizing(0.1), ["u3", "u1", "ecr_like"])
    assert set(model.all_qubit) == {"u", "p", "ecr_like"}
    with pytest.raises(NoiseError, match="cx acts on 2 qubit"):
        model.add_all_qubit_error(ch.depolarizing(0.1), ["cx"])
    with pytest.raises(NoiseError, match="cannot act on qubits"):
        model.add_error(ch.depolarizing(0.1, 2), ["cx"], [0])
    with pytest.raises(NoiseError, match="distinct and non-negative"):
        model.add_error(ch.depolarizing(0.1, 2), ["cx"], [1, 1])


def test_readout_local_replaces_all_qubit_and_ideal_is_no_error() -> None:
    model = NoiseModel().add_readout_error(ch.ReadoutError.symmetric(0.1))
    model.add_readout_error(ch.ReadoutError.symmetric(0.0), qubit=2)
    assert model.readout_for(0).flip_probability(0) == pytest.approx(0.1)
    assert model.readout_for(2) is None
    assert NoiseModel().is_ideal
    assert NoiseModel().add_readout_error(ch.ReadoutError.symmetric(0.0)).is_ideal
    assert not model.is_ideal


def documented_example() -> str:
    text = DOC.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.DOTALL)
    assert block, "docs/noise.md lost its JSON example"
    return block.group(1)


def test_the_documented_example_loads_and_means_what_it_says() -> None:
    model = NoiseModel.loads(documented_example())
    assert model.all_qubit["sx"].num_qubits == 1
    assert model.channel_for("cx", (0, 1)).name == "depolarizing"
    assert model.channel_for("cx", (1, 0)) is None
    assert model.channel_for("measure", (5,)).name == "amplitude_damping"
    assert model.channel_for("h", (3,)).name == "kraus"
    assert model.readout_for(2).flip_probability(1) == pytest.approx(0.1)
    assert model.readout_for(0).flip_probability(1) == pytest.approx(0.04)


def test_a_model_round_trips_through_its_file(tmp_path: Path) -> None:
    model = (
        NoiseModel()
        .add_all_qubit_error(ch.depolarizing(0.01), ["sx", "x"])
        .add_all_qubit_error(ch.thermal_relaxation(math.inf, math.inf, 3.0), ["id"])
        .add_error(ch.thermal_relaxation(100, 150, 35, 0.01), ["sx"], [3])
        .add_error(ch.depolarizing(0.02, 2).compose(ch.depolarizing(0.01, 2)), ["cx"], [0, 1])
        .add_readout_error(ch.ReadoutError(((0.98, 0.02), (0.05, 0.95))))
        .add_readout_error(ch.ReadoutError(((0.9, 0.1), (0.2, 0.8))), qubit=1)
    )
    path = tmp_path / "noise.json"
    path.write_text(model.dumps())
    back = NoiseModel.load(path)
    assert json.loads(back.dumps()) == json.loads(model.dumps())
    rho = np.diag([0.25, 0.25, 0.25, 0.25]).astype(complex)
    rho[0, 3] = rho[3, 0] = 0.2
    a = model.channel_for("cx", (0, 1)).apply_to_density(rho)
    b = back.channel_for("cx", (0, 1)).apply_to_density(rho)
    assert np.allclose(a, b, atol=1e-15)


def bad(doc: dict) -> str:
    return json.dumps({"format": "qiz-noise/1", **doc})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", r"noise model: not JSON"),
        ("[]", r"must be a JSON object"),
        ('{"format": "qiskit"}', r"'format' must be 'qiz-noise/1', got 'qiskit'"),
        (bad({"extra": 1}), r"unknown key\(s\) \['extra'\]"),
        (bad({"errors": {}}), r"errors must be a list"),
        (bad({"errors": [{"gates": [], "channel": {}}]}), r"errors\[0\].gates must be a non-empty"),
        (
            bad({"errors": [{"gates": ["x"], "channel": {"type": "bitflip"}}]}),
            r"errors\[0\].channel: unknown channel type 'bitflip'",
        ),
        (
            bad({"errors": [{"gates": ["x"], "channel": {"type": "depolarizing"}}]}),
            r"errors\[0\].channel: missing 'p'",
        ),
        (
            bad(
                {
                    "errors": [
                        {"gates": ["x"], "channel": {"type": "depolarizing", "p": 0.1}},
                        {
                            "gates": ["x"],
                            "channel": {
                                "type": "thermal_relaxation",
                                "t1": 50,
                                "t2": 150,
                                "time": 1,
                            },
                        },
                    ]
                }
            ),
            r"errors\[1\].channel: thermal_relaxation: T2 = 150 exceeds 2 T1 = 100",
        ),
        (
            bad({"errors": [{"gates": ["x"], "channel": {"type": "depolarizing", "p": "0.1"}}]}),
            r"errors\[0\].channel.p must be a number",
        ),
        (
            bad({"errors": [{"gates": ["x"], "channel": {"type": "phase_damping", "lambda": 2}}]}),
            r"errors\[0\].channel: phase_damping: lambda must be between 0 and 1",
        ),
        (
            bad({"errors": [{"gates": ["cx"], "channel": {"type": "depolarizing", "p": 0.1}}]}),
            r"errors\[0\]: cx acts on 2 qubit\(s\)",
        ),
        (
            bad(
                {
                    "errors": [
                        {
                            "gates": ["x"],
                            "qubits": [0],
                            "channel": {"type": "kraus", "operators": [[[[1, 0], [0, 0]]]]},
                        }
                    ]
                }
            ),
            r"errors\[0\].channel: kraus channel: Kraus operators must be 2\^k x 2\^k",
        ),
        (
            bad(
                {
                    "errors": [
                        {
                            "gates": ["x"],
                            "channel": {
                                "type": "kraus",
                                "operators": [[[[1, 0], [0, 0]], [[0, 0], [2, 0]]]],
                            },
                        }
                    ]
                }
            ),
            r"errors\[0\].channel: kraus channel: not trace preserving",
        ),
        (
            bad(
                {
                    "errors": [
                        {
                            "gates": ["x"],
                            "qubits": [0.5],
                            "channel": {"type": "depolarizing", "p": 0},
                        }
                    ]
                }
            ),
            r"errors\[0\].qubits must hold integers",
        ),
        (bad({"readout": [{"matrix": [[0.9, 0.2], [0, 1]]}]}), r"readout\[0\]: readout error"),
        (bad({"readout": [{"qubit": 0}]}), r"readout\[0\].matrix must be a list"),
    ],
)
def test_bad_files_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(NoiseError, match=message) as info:
        NoiseModel.loads(text)
    assert "\n" not in str(info.value)


def test_a_file_is_read_with_a_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_bytes(b" " * (MAX_NOISE_FILE_BYTES + 1))
    with pytest.raises(NoiseError, match=r"huge.json: larger than the 16 MiB limit"):
        NoiseModel.load(path)
    with pytest.raises(NoiseError, match=r"missing.json: no such file"):
        NoiseModel.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "qiz-noise/1", "errors": 3}')
    with pytest.raises(NoiseError, match=r"broken.json: noise model: errors must be a list"):
        NoiseModel.load(broken)
