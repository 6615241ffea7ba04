"""Noise channels: refused when invalid (one line, a QizError), and each one's action on a density
matrix equal to its analytic formula (docs/noise.md, "Channels")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qiz import QizError
from qiz.quantum.noise import channels as ch
from qiz.quantum.noise.errors import NoiseError

I2 = np.eye(2)


def random_density(dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))
    rho = a @ a.conj().T
    return rho / np.trace(rho)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ch.depolarizing(-0.1), r"depolarizing: p must be between 0 and 1.33333"),
        (lambda: ch.depolarizing(1.34), r"depolarizing: p must be between 0 and 1.33333"),
        (lambda: ch.depolarizing(1.07, 2), r"p must be between 0 and 1.06667"),
        (lambda: ch.depolarizing(0.1, 3), r"depolarizing: 1 or 2 qubits, got 3"),
        (lambda: ch.depolarizing(float("nan")), r"p must be between"),
        (lambda: ch.amplitude_damping(1.5), r"amplitude_damping: gamma must be between 0 and 1"),
        (lambda: ch.phase_damping(-1e-3), r"phase_damping: lambda must be between 0 and 1"),
        (lambda: ch.thermal_relaxation(50, 101, 1), r"T2 = 101 exceeds 2 T1 = 100, which is unph"),
        (lambda: ch.thermal_relaxation(0, 0, 1), r"t1 must be positive"),
        (lambda: ch.thermal_relaxation(50, -1, 1), r"t2 must be positive"),
        (lambda: ch.thermal_relaxation(50, 50, -1), r"time must be finite and non-negative"),
        (lambda: ch.thermal_relaxation(50, 50, 1, 2.0), r"excited_population must be between"),
        (lambda: ch.kraus([1.01 * I2]), r"kraus channel: not trace preserving .* > 1e-10"),
        (lambda: ch.kraus([I2, I2]), r"not trace preserving"),
        (lambda: ch.kraus([np.eye(3)]), r"Kraus operators must be 2\^k x 2\^k"),
        (lambda: ch.kraus([I2, np.eye(4)]), r"a Kraus operator has shape \(4, 4\), expected"),
        (lambda: ch.kraus([]), r"no Kraus operators"),
        (lambda: ch.kraus([np.eye(16)]), r"acts on 4 qubits; 1 to 3 are supported"),
        (lambda: ch.kraus([np.array([[1, 0], [0, np.nan]])]), r"non-finite entry"),
        (lambda: ch.ReadoutError(((0.9, 0.2), (0.0, 1.0))), r"each row must sum to 1"),
        (lambda: ch.ReadoutError(((1.1, -0.1), (0.0, 1.0))), r"between 0 and 1"),
        (lambda: ch.ReadoutError(((1.0, 0.0),)), r"must be 2 x 2"),
        (lambda: ch.ReadoutError.symmetric(2), r"readout error: p must be between 0 and 1"),
    ],
)
def test_invalid_channels_are_refused_with_one_line(make, message: str) -> None:
    with pytest.raises(NoiseError, match=message) as info:
        make()
    assert isinstance(info.value, QizError)
    assert "\n" not in str(info.value)


def test_trace_preservation_is_checked_to_1e_10() -> None:
    ch.kraus([(1 + 4e-11) * I2])  # within the tolerance: accepted
    with pytest.raises(NoiseError, match="not trace preserving"):
        ch.kraus([(1 + 1e-10) * I2])


def test_redundant_kraus_operators_are_reduced() -> None:
    channel = ch.kraus([I2 / math.sqrt(65)] * 65)
    assert len(channel.kraus) == 1
    assert np.allclose(channel.kraus[0] @ channel.kraus[0].conj().T, I2)


def test_composing_channels_of_different_sizes_is_refused() -> None:
    with pytest.raises(NoiseError, match="cannot compose a 1-qubit channel with a 2-qubit"):
        ch.depolarizing(0.1).compose(ch.depolarizing(0.1, 2))


# -- actions on a density matrix equal the formulas --------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0, 4 / 3])
def test_depolarizing_one_qubit(p: float) -> None:
    rho = random_density(2, 1)
    out = ch.depolarizing(p).apply_to_density(rho)
    assert np.allclose(out, (1 - p) * rho + p * I2 / 2, atol=1e-14)


@pytest.mark.parametrize("p", [0.0, 0.05, 1.0, 16 / 15])
def test_depolarizing_two_qubits(p: float) -> None:
    rho = random_density(4, 2)
    out = ch.depolarizing(p, 2).apply_to_density(rho)
    assert np.allclose(out, (1 - p) * rho + p * np.eye(4) / 4, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.0, 0.2, 1.0])
def test_amplitude_damping(gamma: float) -> None:
    r = random_density(2, 3)
    expected = np.array(
        [
            [r[0, 0] + gamma * r[1, 1], math.sqrt(1 - gamma) * r[0, 1]],
            [math.sqrt(1 - gamma) * r[1, 0], (1 - gamma) * r[1, 1]],
        ]
    )
    assert np.allclose(ch.amplitude_damping(gamma).apply_to_density(r), expected, atol=1e-14)


@pytest.mark.parametrize("lam", [0.0, 0.36, 1.0])
def test_phase_damping(lam: float) -> None:
    r = random_density(2, 4)
    k = math.sqrt(1 - lam)
    expected = np.array([[r[0, 0], k * r[0, 1]], [k * r[1, 0], r[1, 1]]])
    assert np.allclose(ch.phase_damping(lam).apply_to_density(r), expected, atol=1e-14)


@pytest.mark.parametrize(
    ("t1", "t2", "time", "pe"),
    [(50.0, 30.0, 5.0, 0.0), (50.0, 90.0, 5.0, 0.0), (40.0, 80.0, 7.0, 0.2), (10.0, 5.0, 0.0, 0.0)],
)
def test_thermal_relaxation(t1: float, t2: float, time: float, pe: float) -> None:
    r = random_density(2, 5)
    relax = math.exp(-time / t1)
    p1 = r[1, 1] * relax + pe * (1 - relax)
    off = r[0, 1] * math.exp(-time / t2)
    expected = np.array([[1 - p1, off], [np.conj(off), p1]])
    out = ch.thermal_relaxation(t1, t2, time, pe).apply_to_density(r)
    assert np.allclose(out, expected, atol=1e-14)


def test_infinite_t1_and_t2_is_no_relaxation() -> None:
    r = random_density(2, 6)
    out = ch.thermal_relaxation(math.inf, math.inf, 10.0).apply_to_density(r)
    assert np.allclose(out, r, atol=1e-15)


def test_composition_applies_the_first_channel_first() -> None:
    r = random_density(2, 7)
    a, b = ch.amplitude_damping(0.3), ch.phase_damping(0.5)
    composed = a.compose(b).apply_to_density(r)
    assert np.allclose(composed, b.apply_to_density(a.apply_to_density(r)), atol=1e-14)
    flip = ch.kraus([np.array([[0, 1], [1, 0]])])  # X does not commute with damping
    assert np.allclose(
        a.compose(flip).apply_to_density(r), flip.apply_to_density(a.apply_to_density(r))
    )


def test_superoperator_acts_on_vec_rho_row_major() -> None:
    r = random_density(4, 8)
    channel = ch.depolarizing(0.2, 2).compose(ch.kraus([np.kron(I2, np.diag([1, 1j]))]))
    out = (channel.superoperator() @ r.reshape(-1)).reshape(4, 4)
    assert np.allclose(out, channel.apply_to_density(r), atol=1e-14)


def test_mixtures_of_unitaries_are_recognised() -> None:
    assert ch.depolarizing(0.1).mixture == pytest.approx([1 - 0.075, 0.025, 0.025, 0.025])
    assert ch.depolarizing(0.0).is_unitary  # the zero-weight Paulis are left out
    assert ch.amplitude_damping(0.1).mixture is None
    assert ch.phase_damping(0.1).mixture is None  # its Kraus operators are not unitary
    assert ch.thermal_relaxation(math.inf, 10, 1).mixture is not None  # pure dephasing: I, Z


def test_readout_error_reads_as_aer_does() -> None:
    error = ch.ReadoutError(((0.97, 0.03), (0.06, 0.94)))
    assert error.flip_probability(0) == 0.03
    assert error.flip_probability(1) == 0.06
    assert not error.is_ideal
    assert ch.ReadoutError.symmetric(0.0).is_ideal


def test_composed_channels_keep_at_most_4_to_the_k_operators() -> None:
    damp = ch.amplitude_damping(0.3)
    a, b = ch.depolarizing(0.2, 2), ch.kraus([np.kron(k, I2) for k in damp.kraus])
    c = ch.depolarizing(0.1, 2)
    composed = a.compose(b).compose(c)  # 16 x 2 x 16 = 512 products
    assert len(composed.kraus) <= 16
    rho = random_density(4, 9)
    expected = c.apply_to_density(b.apply_to_density(a.apply_to_density(rho)))
    assert np.allclose(composed.apply_to_density(rho), expected, atol=1e-12)
