"""ML-KEM-768 encapsulation with caller-supplied randomness (FIPS 203, ML-KEM.Encaps_internal).

OpenSSL's ML-KEM draws its 32 random bytes internally and offers no way to inject them. That is
right for production, but a protocol transcript test vector or a known-answer test needs the
exact ciphertext for a given ``m``. This module is a small, slow, pure-Python implementation of
the deterministic encapsulation only; key generation and decapsulation always go through
``cryptography``. It is checked against the official ML-KEM-768 known-answer file, and it is
used only where a caller explicitly injects randomness (tests and vectors), never on a hot path.
It is not constant-time, which is why it lives under tests/ and not in the runtime package: the
tests hand it to ``qiz.crypto.xwing.use_derandomised_mlkem`` and no node can reach it.
"""

from __future__ import annotations

import hashlib

from qiz.crypto.errors import InvalidKey

Q = 3329
N = 256
K = 3
ETA1 = 2
ETA2 = 2
DU = 10
DV = 4
ZETA = 17

PUBLIC_KEY_SIZE = 384 * K + 32
CIPHERTEXT_SIZE = 32 * (DU * K + DV)


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


_ZETAS = [pow(ZETA, _bitrev7(i), Q) for i in range(128)]
_GAMMAS = [pow(ZETA, 2 * _bitrev7(i) + 1, Q) for i in range(128)]
_N_INV = pow(128, -1, Q)


def _ntt(f: list[int]) -> list[int]:
    a = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * a[j + length] % Q
                a[j + length] = (a[j] - t) % Q
                a[j] = (a[j] + t) % Q
        length //= 2
    return a


def _ntt_inverse(f: list[int]) -> list[int]:
    a = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = a[j]
                a[j] = (t + a[j + length]) % Q
                a[j + length] = zeta * (a[j + length] - t) % Q
        length *= 2
    return [x * _N_INV % Q for x in a]


def _multiply_ntts(f: list[int], g: list[int]) -> list[int]:
    h = [0] * N
    for i in range(128):
        a0, a1 = f[2 * i], f[2 * i + 1]
        b0, b1 = g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def _add(f: list[int], g: list[int]) -> list[int]:
    return [(x + y) % Q for x, y in zip(f, g, strict=True)]


def _sample_ntt(seed: bytes) -> list[int]:
    """Rejection-sample a polynomial in NTT form from SHAKE128(seed) (FIPS 203 Algorithm 7)."""
    stream = hashlib.shake_128(seed).digest(840)  # enough for all but negligible cases
    out: list[int] = []
    pos = 0
    while len(out) < N:
        if pos + 3 > len(stream):
            stream = hashlib.shake_128(seed).digest(len(stream) * 2)
        b0, b1, b2 = stream[pos], stream[pos + 1], stream[pos + 2]
        pos += 3
        d1 = b0 + 256 * (b1 % 16)
        d2 = (b1 // 16) + 16 * b2
        if d1 < Q:
            out.append(d1)
        if d2 < Q and len(out) < N:
            out.append(d2)
    return out


def _sample_cbd(data: bytes, eta: int) -> list[int]:
    bits = [(data[i // 8] >> (i % 8)) & 1 for i in range(len(data) * 8)]
    f = []
    for i in range(N):
        x = sum(bits[2 * i * eta + j] for j in range(eta))
        y = sum(bits[2 * i * eta + eta + j] for j in range(eta))
        f.append((x - y) % Q)
    return f


def _prf(eta: int, seed: bytes, b: int) -> bytes:
    return hashlib.shake_256(seed + bytes([b])).digest(64 * eta)


def _byte_encode(f: list[int], d: int) -> bytes:
    acc = 0
    for i, x in enumerate(f):
        acc |= x << (i * d)
    return acc.to_bytes(32 * d, "little")


def _byte_decode(data: bytes, d: int) -> list[int]:
    acc = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    return [(acc >> (i * d)) & mask for i in range(N)]


def _compress(x: int, d: int) -> int:
    return ((x << d) + Q // 2) // Q % (1 << d)


def _decompress(y: int, d: int) -> int:
    return (y * Q + (1 << (d - 1))) >> d


def encapsulate_derand(public_key: bytes, m: bytes) -> tuple[bytes, bytes]:
    """Return ``(shared_secret, ciphertext)`` for ML-KEM-768 with randomness ``m`` (32 bytes)."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidKey(f"an ML-KEM-768 public key is {PUBLIC_KEY_SIZE} bytes")
    if len(m) != 32:
        raise InvalidKey("ML-KEM encapsulation randomness is 32 bytes")
    t_hat = [_byte_decode(public_key[384 * i : 384 * (i + 1)], 12) for i in range(K)]
    if any(c >= Q for poly in t_hat for c in poly):
        raise InvalidKey("ML-KEM-768 public key fails the modulus check")
    rho = public_key[384 * K :]
    g = hashlib.sha3_512(m + hashlib.sha3_256(public_key).digest()).digest()
    shared, r = g[:32], g[32:]

    a_hat = [[_sample_ntt(rho + bytes([j, i])) for j in range(K)] for i in range(K)]
    counter = 0
    y = []
    for _ in range(K):
        y.append(_sample_cbd(_prf(ETA1, r, counter), ETA1))
        counter += 1
    e1 = []
    for _ in range(K):
        e1.append(_sample_cbd(_prf(ETA2, r, counter), ETA2))
        counter += 1
    e2 = _sample_cbd(_prf(ETA2, r, counter), ETA2)
    y_hat = [_ntt(p) for p in y]

    u = []
    for i in range(K):
        acc = [0] * N
        for j in range(K):
            acc = _add(acc, _multiply_ntts(a_hat[j][i], y_hat[j]))
        u.append(_add(_ntt_inverse(acc), e1[i]))
    mu = [_decompress(bit, 1) for bit in _byte_decode(m, 1)]
    acc = [0] * N
    for i in range(K):
        acc = _add(acc, _multiply_ntts(t_hat[i], y_hat[i]))
    v = _add(_add(_ntt_inverse(acc), e2), mu)

    c1 = b"".join(_byte_encode([_compress(x, DU) for x in poly], DU) for poly in u)
    c2 = _byte_encode([_compress(x, DV) for x in v], DV)
    return shared, c1 + c2
