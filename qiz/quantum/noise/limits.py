"""The noise layer's limits, in one place (each has a row in docs/security.md).

A noise model can arrive in a file (``model.load``), so what it may make the simulator do is
bounded here: the size of the file, the Kraus operators of one channel (each costs a pass over
every trajectory's state, or over the density matrix), and the register the exact density-matrix
simulator accepts (its memory is the square of a state vector's: 4^n complex128 entries).
"""

from __future__ import annotations

# Qubits the exact density-matrix simulator accepts: 4^12 x 16 B = 256 MiB for the matrix, and a
# gate or channel makes one or two temporaries of that size; 13 would need ~3 GiB at the peak.
# Above this, use the trajectory method (a state vector per trajectory).
MAX_DENSITY_QUBITS = 12
# Qubits one channel may act on: the trajectory path computes a 2^k x 2^k reduced density matrix
# per state and the density path a 4^k x 4^k superoperator; gates act on at most 3 qubits. A
# channel keeps at most 4^k Kraus operators (more, e.g. from composing, are reduced to that many
# through its Choi matrix), each a pass over every trajectory's state: 64 at most.
MAX_CHANNEL_QUBITS = 3
# A noise-model file read from disk (JSON): a calibrated 127-qubit device's model is ~2 MiB.
MAX_NOISE_FILE_BYTES = 16 << 20
# Entries (gate errors and readout errors) in one noise model file.
MAX_NOISE_ENTRIES = 100_000
