"""The provider adapters without their SDKs: importing the package loads none, and each adapter
refuses in one line naming the extra that installs its SDK (in a process where importing the
SDK fails, whatever is installed here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.providers.common import counts_from_columns, terminal_measurements
from qiz.quantum.providers.errors import ProviderError

BLOCKED = """
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"qiskit_ibm_runtime", "braket"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import qiz.quantum.providers
out = {"loaded": sorted(m for m in sys.modules if m.startswith(("qiskit", "braket")))}
from qiz import QizError
for adapter in ("ibm", "braket"):
    try:
        __import__("qiz.quantum.providers." + adapter)
    except QizError as exc:
        out[adapter] = [type(exc).__name__, isinstance(exc, ImportError), str(exc)]
print(json.dumps(out))
"""


def test_missing_sdk_is_one_line_naming_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(done.stdout)
    assert out["loaded"] == []
    for adapter, sdk in (("ibm", "qiskit_ibm_runtime"), ("braket", "braket")):
        name, is_import_error, message = out[adapter]
        assert name == "ProviderMissing" and is_import_error
        assert "\n" not in message
        assert sdk in message and f"pip install 'qiz[{adapter}]'" in message


def test_counts_keyed_as_ours() -> None:
    """Column j of a provider's key is qubit columns[j]; ours has bit bit_of[q], bit 0 right."""
    circuit = Circuit(3, 4).x(0).measure(0, 3).measure(2, 0)
    bit_of = terminal_measurements(circuit, "test")
    assert bit_of == {0: 3, 2: 0}
    assert counts_from_columns({"10": 7, "11": 1}, [0, 2], bit_of, 4) == {
        "1000": 7,
        "1001": 1,
    }


@pytest.mark.parametrize(
    "circuit, why",
    [
        (Circuit(2, 2).measure(0, 0).measure(0, 1), "measured twice"),
        (Circuit(2, 2).measure(0, 0).x(0), "after a measurement"),
        (Circuit(2, 2).reset(1).measure(0, 0), "reset is not supported"),
    ],
)
def test_non_terminal_measurements_are_refused(circuit: Circuit, why: str) -> None:
    with pytest.raises(ProviderError, match=why):
        terminal_measurements(circuit, "test")
