"""Crypto benchmark: AEAD throughput, X-Wing, composite signatures, HPKE sealing, and
``pqcrypto``'s ML-DSA-65 side by side with OpenSSL's (through ``cryptography``).

Every figure stands beside the whitepaper's claim (encryption 1 GB/s, key exchange 1 ms,
authentication 1 ms) with the ratio. Where two implementations do the same job, the run checks
that each verifies the other's output before any figure is printed.

    python bench/crypto.py [--quick]
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import mldsa

from bench.harness import Figure, machine, markdown_table, median, time_op
from qiz.crypto.aead import Aead, AeadAlgorithm, counter_nonce
from qiz.crypto.composite import CompositeSigningKey
from qiz.crypto.seal import open_sealed, seal
from qiz.crypto.xwing import XWingPrivateKey

CLAIM_ENCRYPTION = 1e9  # bytes per second: "encryption speed 1 GB/s"
CLAIM_KEY_EXCHANGE = 1e-3  # seconds: "key exchange 1 ms"
CLAIM_AUTHENTICATION = 1e-3  # seconds: "authentication 1 ms"


def aead_figures(quick: bool) -> list[Figure]:
    out = []
    for algorithm in AeadAlgorithm:
        aead = Aead(os.urandom(32), algorithm)
        for size, label in ((1024, "1 KiB"), (65536, "64 KiB"), (1 << 20, "1 MiB")):
            data = os.urandom(size)
            nonce = counter_nonce(1)
            ct = aead.encrypt(nonce, data, b"")
            assert aead.decrypt(nonce, ct, b"") == data
            secs = 0.1 if quick else 0.4
            enc = median(time_op(partial(aead.encrypt, nonce, data, b""), min_seconds=secs))
            dec = median(time_op(partial(aead.decrypt, nonce, ct, b""), min_seconds=secs))
            for op, seconds in (("encrypt", enc), ("decrypt", dec)):
                out.append(
                    Figure(
                        "AEAD",
                        f"{algorithm.value} {op} {label}",
                        size / seconds / 1e9,
                        "GB/s",
                        claim=CLAIM_ENCRYPTION / 1e9,
                        claim_text="1 GB/s",
                        higher_is_better=True,
                    )
                )
    return out


def kem_figures(quick: bool) -> list[Figure]:
    secs = 0.1 if quick else 0.4
    key = XWingPrivateKey.generate()
    pub = key.public_key()
    ss, ct = pub.encapsulate()
    assert key.decapsulate(ct) == ss
    keygen = median(time_op(XWingPrivateKey.generate, min_seconds=secs))
    encaps = median(time_op(pub.encapsulate, min_seconds=secs))
    decaps = median(time_op(lambda: key.decapsulate(ct), min_seconds=secs))
    out = [
        Figure("X-Wing", "keygen", keygen * 1e3, "ms"),
        Figure("X-Wing", "encapsulate", encaps * 1e3, "ms"),
        Figure("X-Wing", "decapsulate", decaps * 1e3, "ms"),
        Figure(
            "X-Wing",
            "encapsulate + decapsulate (key exchange)",
            (encaps + decaps) * 1e3,
            "ms",
            claim=CLAIM_KEY_EXCHANGE * 1e3,
            claim_text="1 ms",
        ),
    ]
    msg = os.urandom(1024)
    sealed = seal(msg, pub, b"ad")
    assert open_sealed(sealed, key, b"ad") == msg
    s = median(time_op(lambda: seal(msg, pub, b"ad"), min_seconds=secs))
    o = median(time_op(lambda: open_sealed(sealed, key, b"ad"), min_seconds=secs))
    out += [
        Figure("HPKE X-Wing", "seal 1 KiB", s * 1e3, "ms"),
        Figure("HPKE X-Wing", "open 1 KiB", o * 1e3, "ms"),
        Figure(
            "HPKE X-Wing",
            "seal + open 1 KiB",
            (s + o) * 1e3,
            "ms",
            claim=1.0,
            claim_text="1 ms (key exchange)",
        ),
    ]
    return out


def signature_figures(quick: bool) -> list[Figure]:
    secs = 0.1 if quick else 0.5
    msg = os.urandom(256)
    key = CompositeSigningKey.generate()
    pub = key.public_key()
    sig = key.sign(msg, "qiz/bench")
    pub.verify(sig, msg, "qiz/bench")
    sign = median(time_op(lambda: key.sign(msg, "qiz/bench"), min_seconds=secs))
    verify = median(time_op(lambda: pub.verify(sig, msg, "qiz/bench"), min_seconds=secs))
    out = [
        Figure("composite ML-DSA-65 + Ed25519", "sign", sign * 1e3, "ms"),
        Figure("composite ML-DSA-65 + Ed25519", "verify", verify * 1e3, "ms"),
        Figure(
            "composite ML-DSA-65 + Ed25519",
            "sign + verify (authentication)",
            (sign + verify) * 1e3,
            "ms",
            claim=CLAIM_AUTHENTICATION * 1e3,
            claim_text="1 ms",
        ),
    ]

    # ML-DSA-65 alone: OpenSSL (cryptography) against pqcrypto, on the same message.
    ossl = mldsa.MLDSA65PrivateKey.generate()
    ossl_pub = ossl.public_key()
    ossl_sig = ossl.sign(msg, b"qiz")
    o_sign = median(time_op(lambda: ossl.sign(msg, b"qiz"), min_seconds=secs))
    o_verify = median(time_op(lambda: ossl_pub.verify(ossl_sig, msg, b"qiz"), min_seconds=secs))
    out += [
        Figure("ML-DSA-65 (OpenSSL via cryptography)", "sign", o_sign * 1e3, "ms"),
        Figure("ML-DSA-65 (OpenSSL via cryptography)", "verify", o_verify * 1e3, "ms"),
    ]
    try:
        from pqcrypto.sign import ml_dsa_65
    except ImportError:
        print("# pqcrypto not installed: skipping the pqcrypto peer", file=sys.stderr)
        return out
    pk, sk = ml_dsa_65.keygen()
    pq_sig = ml_dsa_65.sign(sk, msg, context=b"qiz")
    # Agreement: each implementation accepts the other's signatures.
    mldsa.MLDSA65PublicKey.from_public_bytes(pk).verify(pq_sig, msg, b"qiz")
    ml_dsa_65.verify(ossl_pub.public_bytes_raw(), msg, ossl_sig, context=b"qiz")
    p_sign = median(time_op(lambda: ml_dsa_65.sign(sk, msg, context=b"qiz"), min_seconds=secs))
    p_verify = median(
        time_op(lambda: ml_dsa_65.verify(pk, msg, pq_sig, context=b"qiz"), min_seconds=secs)
    )
    out += [
        Figure(
            "ML-DSA-65 (pqcrypto)",
            "sign",
            p_sign * 1e3,
            "ms",
            extra={"openssl_speedup": p_sign / o_sign},
        ),
        Figure(
            "ML-DSA-65 (pqcrypto)",
            "verify",
            p_verify * 1e3,
            "ms",
            extra={"openssl_speedup": p_verify / o_verify},
        ),
    ]
    return out


def run(quick: bool = False) -> list[Figure]:
    figures = aead_figures(quick) + kem_figures(quick) + signature_figures(quick)
    for f in figures:
        f.emit()
    return figures


def main() -> None:
    quick = "--quick" in sys.argv
    figures = run(quick)
    print()
    print(f"## Crypto ({machine()})\n")
    print(markdown_table(figures))
    peers = [f for f in figures if f.group.startswith("ML-DSA-65 (pqcrypto)")]
    for f in peers:
        print(
            f"\npqcrypto ML-DSA-65 {f.name}: "
            f"{f.extra['openssl_speedup']:.2f}x the time of OpenSSL's"
        )


if __name__ == "__main__":
    main()
