"""The Braket adapter, offline: our OpenQASM 3 export run by Braket's ``LocalSimulator``
(``braket_sv``) against our noiseless engine.

Exactly first: Braket's own probabilities (its ``probability`` result type, no shots) for every
gate of ours, on several qubit pairs, equal our state vector's within 1e-12 (this is what keeps
the adapter's prelude of gate definitions honest). Then sampled, through the adapter's counts
(a permuted, partial measurement map): within docs/noise.md's one-sample bound
``eps(N, K, delta) = sqrt((K ln 2 + ln(1/delta)) / (2N))`` of our exact distribution, delta = 1e-6.
Braket's local simulator takes no seed, so that part is a different sample on each run; a
correct simulator fails it once in a million runs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("braket.devices", reason="needs the braket extra (amazon-braket-sdk)")

from braket.ir.openqasm import Program

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.params import ParamExpr
from qiz.quantum.core.statevector import statevector
from qiz.quantum.providers import braket
from qiz.quantum.providers.errors import ProviderError

DELTA = 1e-6

warnings.filterwarnings("ignore", message="This program uses OpenQASM language features")


def braket_probabilities(circuit: Circuit) -> np.ndarray:
    """Braket's exact outcome probabilities, reindexed to ours (qubit q = bit q of the index;
    Braket's qubit 0 is its index's most significant bit)."""
    source = braket.program(circuit) + "#pragma braket result probability\n"
    result = braket.local_simulator().run(Program(source=source), shots=0).result()
    theirs = np.asarray(result.values[0])
    n = circuit.num_qubits
    assert theirs.shape == (2**n,)  # every qubit is touched: Braket keeps only those
    index = np.array([int(format(i, f"0{n}b")[::-1], 2) for i in range(2**n)])
    ours = np.empty_like(theirs)
    ours[index] = theirs
    return ours


def prepared(n: int = 4) -> Circuit:
    """Every qubit in a different state with complex amplitudes, so phases show."""
    c = Circuit(n, n)
    for q in range(n):
        c.ry(0.3 + 0.5 * q, q).rz(0.2 + 0.7 * q, q)
    return c


def undo_basis(c: Circuit) -> Circuit:
    for q in range(c.num_qubits):
        c.h(q).sx(q)
    return c


ONE_QUBIT = {
    "id": lambda c, a: c.id(a),
    "x": lambda c, a: c.x(a),
    "y": lambda c, a: c.y(a),
    "z": lambda c, a: c.z(a),
    "h": lambda c, a: c.h(a),
    "s": lambda c, a: c.s(a),
    "sdg": lambda c, a: c.sdg(a),
    "t": lambda c, a: c.t(a),
    "tdg": lambda c, a: c.tdg(a),
    "sx": lambda c, a: c.sx(a),
    "sxdg": lambda c, a: c.sxdg(a),
    "p": lambda c, a: c.p(0.61, a),
    "rx": lambda c, a: c.rx(0.61, a),
    "ry": lambda c, a: c.ry(0.61, a),
    "rz": lambda c, a: c.rz(0.61, a),
    "u": lambda c, a: c.u(0.4, 0.5, 0.6, a),
}
TWO_QUBIT = {
    "cx": lambda c, a, b: c.cx(a, b),
    "cy": lambda c, a, b: c.cy(a, b),
    "cz": lambda c, a, b: c.cz(a, b),
    "ch": lambda c, a, b: c.ch(a, b),
    "cp": lambda c, a, b: c.cp(0.8, a, b),
    "crx": lambda c, a, b: c.crx(0.8, a, b),
    "cry": lambda c, a, b: c.cry(0.8, a, b),
    "crz": lambda c, a, b: c.crz(0.8, a, b),
    "cu": lambda c, a, b: c.cu(0.4, 0.5, 0.6, 0.7, a, b),
    "swap": lambda c, a, b: c.swap(a, b),
    "rxx": lambda c, a, b: c.rxx(0.5, a, b),
    "ryy": lambda c, a, b: c.ryy(0.5, a, b),
    "rzz": lambda c, a, b: c.rzz(0.5, a, b),
}
THREE_QUBIT = {
    "ccx": lambda c, a, b, t: c.ccx(a, b, t),
    "cswap": lambda c, a, b, t: c.cswap(a, b, t),
}


def test_every_gate_has_our_exact_probabilities_on_braket() -> None:
    """Each of our gates (on qubit pairs in both directions, adjacent or not) between a
    preparation and a change of basis: Braket's exact probabilities are ours."""
    cases: list[tuple[str, Circuit]] = []
    for name, gate in ONE_QUBIT.items():
        for a in (0, 3):
            c = prepared()
            gate(c, a)
            cases.append((f"{name} {a}", undo_basis(c)))
    for name, gate2 in TWO_QUBIT.items():
        for a, b in ((0, 1), (1, 3), (3, 1), (2, 0)):
            c = prepared()
            gate2(c, a, b)
            cases.append((f"{name} {a},{b}", undo_basis(c)))
    for name, gate3 in THREE_QUBIT.items():
        for qubits in ((0, 1, 2), (3, 0, 2), (1, 3, 0)):
            c = prepared()
            gate3(c, *qubits)
            cases.append((f"{name} {qubits}", undo_basis(c)))
    worst = {
        label: float(np.abs(np.abs(statevector(c)) ** 2 - braket_probabilities(c)).max())
        for label, c in cases
    }
    assert max(worst.values()) < 1e-12, {k: v for k, v in worst.items() if v >= 1e-12}


def test_sampled_counts_agree_with_our_exact_distribution() -> None:
    """A 4-qubit circuit measured into permuted bits (one qubit not measured, one bit never
    written): Braket's counts, keyed as ours by the adapter, are within eps of our exact
    distribution over those bits; and the map matters (the unpermuted reading is far off)."""
    c = prepared()
    c.cx(0, 1).crx(1.1, 1, 3).cu(0.4, 0.5, 0.6, 0.7, 2, 0).h(2).ccx(0, 2, 3)
    amplitudes = statevector(c)
    c.measure(0, 2).measure(1, 0).measure(3, 3)  # qubit 2 unmeasured; bit 1 stays 0
    shots = 20_000
    counts = braket.run(c, shots=shots)
    assert sum(counts.values()) == shots and all(k[2] == "0" for k in counts)  # bit 1
    exact: dict[str, float] = {}
    for index, amp in enumerate(amplitudes):
        bits = ["0"] * 4
        for qubit, clbit in ((0, 2), (1, 0), (3, 3)):
            bits[clbit] = str((index >> qubit) & 1)
        key = "".join(reversed(bits))
        exact[key] = exact.get(key, 0.0) + abs(amp) ** 2
    tvd = 0.5 * sum(abs(exact.get(k, 0.0) - counts.get(k, 0) / shots) for k in exact | counts)
    bound = math.sqrt((2**3 * math.log(2) + math.log(1 / DELTA)) / (2 * shots))
    assert tvd <= bound  # K = 2^3: three bits carry outcomes
    swapped = {k[::-1]: v for k, v in counts.items()}  # a wrong (reversed) key order
    wrong = 0.5 * sum(abs(exact.get(k, 0.0) - swapped.get(k, 0) / shots) for k in exact | swapped)
    assert wrong > 3 * bound


def test_unmeasured_circuit_and_refusals() -> None:
    counts = braket.run(Circuit(3).x(2), shots=50)
    assert counts == {"100": 50}
    with pytest.raises(ProviderError, match="after a measurement"):
        braket.run(Circuit(1, 1).measure(0, 0).x(0), shots=10)
    with pytest.raises(ProviderError, match="unbound parameters: theta"):
        braket.run(Circuit(1, 1).ry(ParamExpr.symbol("theta"), 0).measure(0, 0), shots=10)
    with pytest.raises(ProviderError, match="shots must be at least 1"):
        braket.run(Circuit(1, 1).measure(0, 0), shots=0)
