"""The fused VQE path of ``GeneralAnsatz``: energy and adjoint gradient on split arrays.

Each layer (RY on every qubit, then the diagonal D = CZ entangler x RZ layer) is the passes of
an RY + CZ layer: a low pass over qubits 0..13 in L2-sized blocks and one tile pass per higher
group of 12 qubits, D applied on the way out of the last. Backward, the same passes carry psi
and lambda together; the first undoes D and collects all the layer's RZ gradients, each pass
collects its qubits' RY gradients. At 22 qubits and depth 4 that is 10 passes over psi
forward, 2 for H psi, 10 over psi and lambda backward, whatever the parameter count.
"""

from __future__ import annotations

import numpy as np

from qiz.quantum.algorithms.ansatz import GeneralAnsatz
from qiz.quantum.kernels import vqe_general as kg
from qiz.quantum.kernels.blocked import high_groups, rotation_coefficients, split_state

# Amplitudes per row of a high-pass tile. Rows lie 2^lo amplitudes apart, so a narrow row
# costs a page (and a TLB miss) per cache line; measured at 22 qubits, one thread: the forward
# tile pass took 42 ms with rows of 8, 24 with 64; the backward one (psi and lambda, twice the
# bytes per tile) 102 ms with 8, 59 with 32, 62 with 64 and 120 with 128 (its tile outgrows L2).
FORWARD_TILE = 64
BACKWARD_TILE = 32
# psi's and lambda's four arrays a few KiB off a power of two apart (blocked.split_state), not
# sharing cache sets: measured at 22 qubits, one thread, 947-974 ms an evaluation against
# 1003-1038 ms
STAGGER = True


class GeneralPath:
    """Forward and backward sweeps of one ``GeneralAnsatz``; buffers are kept across calls."""

    def __init__(self, ansatz: GeneralAnsatz, block_bits: int, group_bits: int) -> None:
        self.ansatz = ansatz
        n = ansatz.num_qubits
        self.block = min(block_bits, n)
        self.groups = high_groups(n, block_bits, group_bits)
        self.shifts, self.masks = ansatz.cz_masks()
        # D's row phases cover the qubits of the pass that applies it: the top group, or all
        lo, hi = (self.groups[-1][0], self.groups[-1][1]) if self.groups else (0, n)
        self._rows = (lo, hi)
        # a CZ pair joining a row bit of the top pass to a column bit of its tiles (the ring's
        # closing pair) keeps D's sign from splitting into row and column factors
        widths = {self._width(lo, FORWARD_TILE), self._width(lo, BACKWARD_TILE)}
        self.cross = {w: _crosses(ansatz.cz_pairs(), lo, hi, w.bit_length() - 1) for w in widths}
        self._tre = np.empty(1 << (hi - lo))
        self._tim = np.empty(1 << (hi - lo))
        self._state: tuple[np.ndarray, ...] | None = None

    @staticmethod
    def _width(lo: int, tile: int) -> int:
        return min(tile, 1 << lo)

    def buffers(self) -> tuple[np.ndarray, ...]:
        """(psi re, psi im, lambda re, lambda im), one allocation made once."""
        if self._state is None:
            self._state = split_state(self.ansatz.num_qubits, vectors=2, stagger=STAGGER)
        return self._state

    def _layer(self, theta: np.ndarray, layer: int, sign: float) -> tuple:
        """RY(sign * theta) of a layer in scaled form, the low factor, the groups' factors, the
        RZ angles, and D's row phases filled in."""
        n = self.ansatz.num_qubits
        start = 2 * layer * n
        u, v, factors = rotation_coefficients(sign * theta[start : start + n])
        phi = np.ascontiguousarray(theta[start + n : start + 2 * n])
        lo, hi = self._rows
        kg.phase_table(phi, lo, hi - lo, self._tre, self._tim)
        groups = [(a, b, w, float(np.prod(factors[a:b]))) for a, b, w in self.groups]
        return u, v, float(np.prod(factors[: self.block])), groups, phi, factors

    def forward(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ans = self.ansatz
        pr, pi, _, _ = self.buffers()
        pr.fill(0.0)
        pi.fill(0.0)
        pr[0] = 1.0
        for layer in range(ans.depth + 1):
            sign = layer < ans.depth
            u, v, f_low, groups, phi, _ = self._layer(theta, layer, 1.0)
            kg.forward_low(pr, pi, self.block, u, v, f_low, not groups, phi, self._tre,
                           self._tim, self.shifts, self.masks, sign)  # fmt: skip
            for g, (lo, hi, _, f) in enumerate(groups):
                last = g == len(groups) - 1
                width = self._width(lo, FORWARD_TILE)
                cross = self.cross[width]
                kg.forward_high(pr, pi, lo, hi, u, v, f, last, phi, self._tre, self._tim,
                                self.shifts, self.masks, sign, cross, width)  # fmt: skip
        return pr, pi

    def backward(self, theta: np.ndarray, grad: np.ndarray) -> None:
        """Undo the layers of psi and lambda (= H psi, in the buffers), adding dE/dtheta."""
        ans = self.ansatz
        n = ans.num_qubits
        pr, pi, lr, li = self.buffers()
        for layer in range(ans.depth, -1, -1):
            sign = layer < ans.depth
            u, v, _, groups, phi, fs = self._layer(theta, layer, -1.0)
            g_ry = grad[2 * layer * n : (2 * layer + 1) * n]  # the kernels add into these views
            g_rz = grad[(2 * layer + 1) * n : (2 * layer + 2) * n]
            for g, (lo, hi, _, _) in enumerate(reversed(groups)):
                width = self._width(lo, BACKWARD_TILE)
                kg.backward_high(pr, pi, lr, li, lo, hi, u, v, fs, g == 0, phi, self._tre,
                                 self._tim, self.shifts, self.masks, sign, self.cross[width], width,
                                 g_ry, g_rz)  # fmt: skip
            kg.backward_low(pr, pi, lr, li, self.block, u, v, fs, not groups, phi, self._tre,
                            self._tim, self.shifts, self.masks, sign, g_ry, g_rz)  # fmt: skip


def _crosses(pairs: list[tuple[int, int]], lo: int, hi: int, colbits: int) -> bool:
    """Whether a pair joins a row qubit (lo..hi-1) to a column qubit (below colbits)."""
    return any((lo <= a < hi and b < colbits) or (lo <= b < hi and a < colbits) for a, b in pairs)
