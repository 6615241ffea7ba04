"""Known-answer tests: ML-KEM-768 and ML-DSA-65 (cryptography-vectors), X-Wing (the draft's
vectors, shipped in the repo under tests/vectors and in ../shared), and the X-Wing suite of the
HPKE PQ vectors."""

from __future__ import annotations

import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from qiz.crypto.composite import CompositeSigningKey
from qiz.crypto.xwing import XWingPrivateKey, XWingPublicKey, use_derandomised_mlkem

from .conftest import REPO_VECTORS, parse_rsp, vector_path
from .mlkem_derand import encapsulate_derand

use_derandomised_mlkem(encapsulate_derand)  # the X-Wing vectors fix ML-KEM's randomness

MLKEM = parse_rsp(vector_path("asymmetric", "MLKEM", "kat_MLKEM_768.rsp"))
MLDSA = parse_rsp(vector_path("asymmetric", "MLDSA", "kat_MLDSA_65_det_pure.rsp"))
XWING = json.loads((REPO_VECTORS / "xwing-test-vectors.json").read_text())
HPKE_XWING = [
    v
    for v in json.loads(vector_path("HPKE", "hpke-pq-test-vectors.json").read_text())
    if v["kem_id"] == 0x647A
]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_vector_files_are_complete() -> None:
    assert len(MLKEM) == 1000
    assert len(MLDSA) == 100
    assert len(XWING) >= 3
    assert len(HPKE_XWING) >= 2


@pytest.mark.parametrize("vec", MLKEM[:25], ids=lambda v: f"count{v['count']}")
def test_mlkem768_kat(vec: dict[str, str]) -> None:
    # Our deterministic encapsulation reproduces ct and ss from the KAT's message.
    ss, ct = encapsulate_derand(h(vec["pk"]), h(vec["msg"]))
    assert ct.hex() == vec["ct"]
    assert ss.hex() == vec["ss"]
    # Key generation and decapsulation (also implicit rejection) through OpenSSL.
    key = mlkem.MLKEM768PrivateKey.from_seed_bytes(h(vec["d"]) + h(vec["z"]))
    assert key.public_key().public_bytes_raw().hex() == vec["pk"]
    assert key.decapsulate(h(vec["ct"])).hex() == vec["ss"]
    assert key.decapsulate(h(vec["ct_n"])).hex() == vec["ss_n"]


@pytest.mark.parametrize("vec", MLDSA[:15], ids=lambda v: f"count{v['count']}")
def test_mldsa65_kat(vec: dict[str, str]) -> None:
    # Keys from the seed through our composite key, signature through the same backend.
    key = CompositeSigningKey(h(vec["xi"]), bytes(32))
    assert key.public_key().mldsa_part.hex() == vec["pk"]
    msg = h(vec["msg"])
    sig = h(vec["sm"])[: -len(msg)] if msg else h(vec["sm"])
    ctx = h(vec["ctx"])
    public = mldsa.MLDSA65PublicKey.from_public_bytes(h(vec["pk"]))
    public.verify(sig, msg, ctx)
    with pytest.raises(InvalidSignature):
        public.verify(sig, msg + b"x", ctx)


@pytest.mark.parametrize("index", range(len(XWING)))
def test_xwing_vectors(index: int) -> None:
    vec = XWING[index]
    key = XWingPrivateKey(h(vec["seed"]))
    assert key.public_key().raw.hex() == vec["pk"]
    assert key.seed.hex() == vec["sk"]
    ss, ct = key.public_key().encapsulate(eseed=h(vec["eseed"]))
    assert ct.hex() == vec["ct"]
    assert ss.hex() == vec["ss"]
    assert key.decapsulate(h(vec["ct"])).hex() == vec["ss"]


def test_shared_xwing_vectors_match_repo_copy() -> None:
    from .conftest import SHARED

    shared = SHARED / "vectors" / "xwing-test-vectors.json"
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    assert json.loads(shared.read_text()) == XWING


@pytest.mark.parametrize("vec", HPKE_XWING, ids=lambda v: f"kdf{v['kdf_id']}")
def test_xwing_matches_hpke_pq_vectors(vec: dict) -> None:
    key = XWingPrivateKey(h(vec["skRm"]))
    assert key.public_key().raw.hex() == vec["pkRm"]
    ss, enc = XWingPublicKey(h(vec["pkRm"])).encapsulate(eseed=h(vec["ikmE"]))
    assert enc.hex() == vec["enc"]
    assert ss.hex() == vec["shared_secret"]
    assert key.decapsulate(h(vec["enc"])).hex() == vec["shared_secret"]
