"""Valid inputs the fuzz targets mutate: signed records of each kind and signed job specs,
and the signing a malicious owner or submitter does to get a mutation past the signature.
Shared by several targets (test modules never import each other)."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import strategies as st

from qiz import wire
from qiz.compute import spec as specs
from qiz.crypto.ids import ContentId
from qiz.identity import PeerRecord
from qiz.identity.peer_record import CONTEXT as PEER_CONTEXT
from qiz.resolve.records import (
    NAME_CONTEXT,
    PROVIDER_CONTEXT,
    RecordKind,
    make_name_record,
    make_provider_record,
    validate,
)

from .strategies import cbor, identity, mutated_value

# ----------------------------------------------------------------------------- records

NOW = time.time()
CONTEXTS = {
    RecordKind.PEER: PEER_CONTEXT,
    RecordKind.NAME: NAME_CONTEXT,
    RecordKind.PROVIDER: PROVIDER_CONTEXT,
}


def valid_raw(kind: RecordKind) -> bytes:
    owner = identity("owner")
    if kind is RecordKind.PEER:
        return PeerRecord.create(owner, ["127.0.0.1:4000", "[::1]:4000"], seq=7, now=NOW).raw
    if kind is RecordKind.NAME:
        return make_name_record(owner, "svc", "v=1", seq=7, now=NOW, ttl=3600)
    return make_provider_record(owner, ContentId(bytes(32)), ["10.0.0.1:9"], now=NOW, ttl=3600)


VALID = {kind: valid_raw(kind) for kind in RecordKind}
KEYS = {kind: validate(kind, VALID[kind], key=None, now=NOW).key for kind in RecordKind}


def resign(kind: RecordKind, fields: Any) -> bytes:
    """``fields`` (a mutated record map) signed again by the owner, as a malicious owner
    would: the signature covers the canonical map without ``sig``."""
    if not isinstance(fields, dict):
        return cbor(fields)
    body = {k: v for k, v in fields.items() if k != "sig"}
    try:
        signed = wire.encode(body)
    except wire.WireError:
        signed = cbor(body)  # no valid record can hold it; the verifier refuses it first
    sig = identity("owner").sign(signed, CONTEXTS[kind])
    return cbor({**body, "sig": sig})


@st.composite
def resigned(draw: st.DrawFn, kind: RecordKind) -> bytes:
    fields = wire.decode(VALID[kind])
    return resign(kind, draw(mutated_value(fields)))


# ----------------------------------------------------------------------------- job specs

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "h q[0]; cx q[0], q[1]; c = measure q;"
)
DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "sampler", "params": {"qasm": BELL, "shots": 100}},
    {
        "kind": "estimator",
        "params": {
            "qasm": "OPENQASM 3.0; input float a; qubit[2] q; rx(a) q[0];",
            "observables": ["1 ZZ", "0.5 X0 Z1"],
            "inputs": {"a": 0.5},
        },
    },
    {"kind": "vqe", "params": {"hamiltonian": "tfim:3", "ansatz": "hea:1", "maxiter": 2}},
    {"kind": "vqe", "params": {"hamiltonian": "1 ZZ\n0.5 XI", "ansatz": "hva:1"}},
    {"kind": "qaoa", "params": {"graph": "random:6,3", "p": 1, "gammas": [0.1], "betas": [0.2]}},
    {"kind": "qaoa", "params": {"graph": "0 1\n1 2 0.5\n2 0", "p": 2, "maxiter": 3}},
    {"kind": "grover", "params": {"qubits": 3, "marked": [5]}},
    {"kind": "grover", "params": {"qubits": 3, "cnf": "p cnf 3 1\n1 -2 3 0"}},
    {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": "random:4,3", "p": 1, "gammas": [0.0], "betas": [0.0]},
            "axes": {"gammas.0": [0.1, 0.2], "betas.0": [0.3, 0.4]},
            "shard": 2,
        },
    },
]
LIMITS = specs.Limits(max_qubits=20)


def body_of(doc: dict[str, Any]) -> dict[str, Any]:
    return specs.make_body(doc, identity("submitter"))


def sign_any(body: Any) -> bytes:
    """The signed envelope of any body, valid or not, as a malicious submitter makes it."""
    body_bytes = cbor(body)
    sig = identity("submitter").sign(body_bytes, specs.SPEC_CONTEXT)
    return cbor({"body": body_bytes, "sig": sig})


BODIES = st.sampled_from(DOCUMENTS).map(body_of)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """Mostly a body whose params were mutated (that is where the parsers are), sometimes
    one mutated anywhere."""
    body = draw(BODIES)
    if draw(st.integers(0, 3)):
        return {**body, "params": draw(mutated_value(body["params"], 4))}
    return draw(mutated_value(body, 4))


SIGNED_MUTANTS = mutated_bodies().map(sign_any)
VALID_SIGNED = st.sampled_from(DOCUMENTS).map(
    lambda d: specs.sign(body_of(d), identity("submitter"))
)
