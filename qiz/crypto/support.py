"""Start-up check that the installed ``cryptography`` can do post-quantum work.

``cryptography`` ships ML-KEM and ML-DSA only from release 48 on, and only when the bundled
OpenSSL carries them; a distribution build linked against an older system OpenSSL imports fine
but fails on first use. We probe each primitive once so that a node refuses to start with one
clear sentence instead of failing in the middle of a handshake.
"""

from __future__ import annotations

import functools

from qiz.crypto.errors import UnsupportedBackend

REQUIRED_CRYPTOGRAPHY = "48"


def _probe() -> list[str]:
    """Return the names of the missing primitives (empty when all work)."""
    missing: list[str] = []
    try:
        from cryptography.hazmat.primitives.asymmetric import mlkem

        key = mlkem.MLKEM768PrivateKey.generate()
        shared, ct = key.public_key().encapsulate()
        if key.decapsulate(ct) != shared:
            missing.append("ML-KEM-768")
    except Exception:
        missing.append("ML-KEM-768")
    try:
        from cryptography.hazmat.primitives.asymmetric import mldsa

        sk = mldsa.MLDSA65PrivateKey.generate()
        sk.public_key().verify(sk.sign(b"probe", b"qiz"), b"probe", b"qiz")
    except Exception:
        missing.append("ML-DSA-65")
    try:
        from cryptography.hazmat.primitives import hpke

        if not hasattr(hpke.KEM, "MLKEM768_X25519"):
            missing.append("HPKE MLKEM768-X25519")
    except Exception:
        missing.append("HPKE MLKEM768-X25519")
    return missing


@functools.cache
def require_pq_support() -> None:
    """Raise :class:`UnsupportedBackend` unless ML-KEM, ML-DSA and PQ HPKE all work."""
    missing = _probe()
    if missing:
        try:
            import cryptography

            have = cryptography.__version__
        except Exception:  # pragma: no cover - cryptography itself missing
            have = "none"
        raise UnsupportedBackend(
            f"the installed cryptography {have} lacks {', '.join(missing)}; QIZ needs "
            f"cryptography>={REQUIRED_CRYPTOGRAPHY} built with its bundled OpenSSL "
            f"(pip install 'cryptography>={REQUIRED_CRYPTOGRAPHY}')"
        )
