"""This machine's own crypto speed, measured in a few milliseconds: AES-256-GCM throughput, one
X-Wing key exchange, one composite sign + verify.

The dashboard and ``qiz demo`` show these beside the whitepaper's figures, so a user sees what
*their* machine does, not what we were told. ``bench/crypto.py`` is the careful, side-by-side
measurement; this is the quick self-check that runs inside a node (in a thread: it holds no
lock of the node's).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any


def aead_speed(records: int = 32) -> float:
    """AES-256-GCM over 1 MiB records on this machine, in GB/s."""
    from qiz.crypto.aead import Aead, AeadAlgorithm, counter_nonce

    aead = Aead(os.urandom(32), AeadAlgorithm.AES_256_GCM)
    block = os.urandom(1 << 20)
    began = time.perf_counter()
    for i in range(records):
        aead.encrypt(counter_nonce(i), block, b"")
    return records * len(block) / (time.perf_counter() - began) / 1e9


def median_ms(fn: Callable[[], object], runs: int = 30) -> float:
    """The median wall time of ``runs`` calls of ``fn``, in milliseconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def measure_crypto() -> dict[str, Any]:
    """AEAD speed, one X-Wing key exchange, one composite sign + verify, on this machine."""
    from qiz.crypto.composite import CompositeSigningKey
    from qiz.crypto.xwing import XWingPrivateKey

    speed = aead_speed()
    kem = XWingPrivateKey.generate()
    public = kem.public_key()

    def exchange() -> None:
        _shared, ciphertext = public.encapsulate()
        kem.decapsulate(ciphertext)

    key = CompositeSigningKey.generate()
    verify_key = key.public_key()

    def authenticate() -> None:
        verify_key.verify(key.sign(b"qiz", "qiz/bench"), b"qiz", "qiz/bench")

    return {
        "encryption_gb_s": round(speed, 3),
        "key_exchange_ms": median_ms(exchange),
        "authentication_ms": median_ms(authenticate),
    }
