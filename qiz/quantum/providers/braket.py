"""Amazon Braket: our OpenQASM 3 export (``qiz.quantum.qasm.dumps``) run by a Braket device,
``LocalSimulator()`` offline (Braket's own state-vector simulator, ``braket_sv``) or the user's
own ``AwsDevice(arn)`` online (made with their AWS credentials; we never see them).

Braket's OpenQASM dialect has no ``stdgates.inc``: its simulator knows its own gate names
(``cnot``, ``si``, ``v``, ``phaseshift``, ...) and refuses the include. So the include line of
our export is replaced by definitions of the standard gates in Braket's names (``PRELUDE``),
each the same matrix as ours up to a global phase (the test compares Braket's exact
probabilities with our engine's for every gate on several qubit pairs). The rest of the text is
our export as it is; a user-defined gate takes precedence over a Braket builtin of the same
name, and ``h``/``x``/``rz``/``U``... are Braket's own.

The controlled gates are decompositions (Qiskit's) into Braket's builtins, not ``ctrl @``
modifiers: with ``braket_sv`` 1.41.2, ``ctrl @ h``/``rx``/``ry``/``rz``/``U`` on some qubit
pairs (control 1 and target 3 of 4 qubits; control 2, target 0) gave other probabilities than
our engine, which we did not pin down further.

Braket's counts are keyed by its ``measured_qubits`` (character j is qubit
``measured_qubits[j]``), which ``common.counts_from_columns`` turns into ours (bit 0 rightmost).
Only terminal measurements, each qubit measured once; the local simulator takes no seed.

Needs ``amazon-braket-sdk`` (``pip install 'qiz[braket]'``); without it importing this module
raises a one-line :class:`ProviderMissing`.
"""

from __future__ import annotations

from typing import Any

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.providers.common import counts_from_columns, measured, terminal_measurements
from qiz.quantum.providers.errors import ProviderError, require
from qiz.quantum.qasm import dumps

devices = require("braket.devices", "braket", "braket")
openqasm = require("braket.ir.openqasm", "braket", "braket")

__all__ = ["PRELUDE", "counts", "local_simulator", "program", "run", "submit"]

INCLUDE = 'include "stdgates.inc";'
# stdgates.inc's gates that Braket's simulator does not know by that name, in its own gates
PRELUDE = "\n".join(
    [
        "gate id a { i a; }",
        "gate sdg a { si a; }",
        "gate tdg a { ti a; }",
        "gate sx a { v a; }",
        "gate p(l) a { phaseshift(l) a; }",
        "gate cx a, b { cnot a, b; }",
        "gate cp(l) a, b { cphaseshift(l) a, b; }",
        "gate ccx a, b, c { ccnot a, b, c; }",
        "gate ch a, b { s b; h b; t b; cnot a, b; ti b; h b; si b; }",
        "gate crz(t) a, b { rz(t/2) b; cnot a, b; rz(-t/2) b; cnot a, b; }",
        "gate cry(t) a, b { ry(t/2) b; cnot a, b; ry(-t/2) b; cnot a, b; }",
        "gate crx(t) a, b { h b; rz(t/2) b; cnot a, b; rz(-t/2) b; cnot a, b; h b; }",
        "gate cu(t, f, l, g) a, b { phaseshift(g + (l + f)/2) a; phaseshift((l - f)/2) b; "
        "cnot a, b; U(-t/2, 0, -(f + l)/2) b; cnot a, b; U(t/2, f, 0) b; }",
    ]
)


def program(circuit: Circuit) -> str:
    """The OpenQASM 3 text Braket runs: our export with ``PRELUDE`` in place of the include."""
    text = dumps(circuit)
    if INCLUDE not in text:
        raise ProviderError("braket: our OpenQASM export has no stdgates include to replace")
    return text.replace(INCLUDE, PRELUDE, 1)


def local_simulator() -> Any:
    """Braket's local state-vector simulator (``braket_sv``): no account, no network."""
    return devices.LocalSimulator()


def submit(circuit: Circuit, device: Any, shots: int = 1024) -> tuple[Any, dict[int, int], int]:
    """The Braket task sampling ``circuit`` (bound, terminal measurements) on ``device``, with
    what ``counts`` needs to key its result as ours. Online, ``device`` is the user's
    ``AwsDevice(arn)`` and the task is queued (and billed) by AWS."""
    if shots < 1:
        raise ProviderError(f"shots must be at least 1, not {shots}")
    if circuit.parameters:
        raise ProviderError(f"unbound parameters: {', '.join(circuit.parameters)}")
    circuit = measured(circuit)
    bit_of = terminal_measurements(circuit, "braket")
    task = device.run(openqasm.Program(source=program(circuit)), shots=shots)
    return task, bit_of, circuit.num_clbits


def counts(result: Any, bit_of: dict[int, int], num_clbits: int) -> dict[str, int]:
    """A Braket result's counts keyed as ours."""
    columns = [int(q) for q in result.measured_qubits]
    return counts_from_columns(dict(result.measurement_counts), columns, bit_of, num_clbits)


def run(circuit: Circuit, device: Any | None = None, shots: int = 1024) -> dict[str, int]:
    """The counts of ``shots`` samples of ``circuit`` on ``device`` (the local simulator by
    default), keyed as ours."""
    task, bit_of, num_clbits = submit(circuit, device or local_simulator(), shots)
    return counts(task.result(), bit_of, num_clbits)
