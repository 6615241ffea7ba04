"""What every adapter needs: a circuit with measurements, where each measured qubit's bit goes,
and counts keyed as ours (bitstrings over the classical bits, bit 0 rightmost).

Providers measure differently (Braket's keys follow its ``measured_qubits``, Qiskit's its
classical registers), so each adapter turns its provider's counts into ours here, and a circuit
that the conversion could not represent faithfully (a qubit measured twice, a gate after a
measurement) is refused before anything is sent.
"""

from __future__ import annotations

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.providers.errors import ProviderError


def measured(circuit: Circuit) -> Circuit:
    """``circuit`` itself if it measures anything, else a copy measuring every qubit into the
    bit of the same index (as the noiseless sampler does)."""
    if circuit.has_measurements():
        return circuit
    return Circuit(
        circuit.num_qubits, circuit.num_qubits, list(circuit.instructions), circuit.name
    ).measure_all()


def terminal_measurements(circuit: Circuit, provider: str) -> dict[int, int]:
    """qubit -> classical bit for a circuit whose measurements are all terminal, each qubit
    measured at most once; anything else is refused by name."""
    bit_of: dict[int, int] = {}
    for inst in circuit.instructions:
        if inst.name == "measure":
            q = inst.qubits[0]
            if q in bit_of:
                raise ProviderError(f"{provider}: qubit {q} is measured twice; measure it once")
            bit_of[q] = inst.clbits[0]
        elif inst.name == "barrier":
            continue
        elif inst.name == "reset":
            raise ProviderError(
                f"{provider}: reset is not supported here, only gates and measurements"
            )
        elif set(inst.qubits) & set(bit_of):
            raise ProviderError(
                f"{provider}: {inst.name} on qubits {list(inst.qubits)} after a measurement; "
                "only terminal measurements are supported here"
            )
    return bit_of


def counts_from_columns(
    raw: dict[str, int], columns: list[int], bit_of: dict[int, int], num_clbits: int
) -> dict[str, int]:
    """Counts keyed by strings whose j-th character is the outcome of qubit ``columns[j]``, as
    ours: bit ``bit_of[q]`` of a ``num_clbits``-bit string, bit 0 rightmost, others 0."""
    out: dict[str, int] = {}
    for key, n in raw.items():
        bits = ["0"] * num_clbits
        for j, q in enumerate(columns):
            bits[bit_of[q]] = key[j]
        ours = "".join(reversed(bits))
        out[ours] = out.get(ours, 0) + int(n)
    return out
