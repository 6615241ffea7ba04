"""Fuzz target of job specs, the largest thing a peer hands a worker (``job.offer``) and a user
hands a coordinator: the signed envelope, the body's fields and limits, every kind's params
(which reach the OpenQASM, Pauli, graph and CNF parsers), and sweeps.

A submitter signs whatever it likes, so the fuzzer signs its mutated bodies too: that is what
gets the mutation past the signature to the checks behind it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from qiz import wire
from qiz.compute import spec as specs
from qiz.compute.errors import SpecError

from .strategies import budget, bytes_from, cbor, identity, mutated_value, only

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
            "observables": ["1 ZZ", "0.5 X0"],
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


def check(raw: bytes) -> specs.JobSpec | None:
    """The property: a JobSpec or SpecError, and an accepted spec is self-consistent."""
    with only(SpecError):
        spec = specs.parse(raw, LIMITS)
        assert spec.raw == raw and len(spec.job_id) == 32
        assert 1 <= spec.quorum <= spec.replicas <= LIMITS.max_replicas
        assert spec.tasks and all(t.shape.num_qubits <= LIMITS.max_qubits for t in spec.tasks)
        return spec
    return None


def outcome(raw: bytes) -> str:
    try:
        specs.parse(raw, LIMITS)
    except SpecError as exc:
        return "refused: " + str(exc).split(":")[0][:30]
    except Exception as exc:
        return f"raised {type(exc).__name__}"
    return "accepted"


@given(SIGNED_MUTANTS)
@budget(1.5)
def test_signed_mutated_specs_parse_or_raise_spec_error(raw: bytes) -> None:
    check(raw)
    event(outcome(raw))


@given(bytes_from(VALID_SIGNED))
@budget(1)
def test_byte_mutated_specs_parse_or_raise_spec_error(raw: bytes) -> None:
    spec = check(raw)
    if spec is not None:  # a byte changed under the signature cannot verify
        assert wire.decode(raw)["body"] == spec.body_bytes


@given(st.one_of(mutated_bodies(), BODIES))
@budget(1)
def test_check_body_returns_tasks_or_raises_spec_error(body: Any) -> None:
    """The checks behind the signature alone (what the CLI runs before signing, too)."""
    if not isinstance(body, dict) or set(body) != specs.TOP_FIELDS | {"v", "submitter"}:
        return
    with only(SpecError):
        tasks = specs.check_body(body, LIMITS)
        assert tasks


@given(st.one_of(st.sampled_from(DOCUMENTS).flatmap(lambda d: mutated_value(d, 3)), st.just(1)))
@budget(0.5)
def test_make_body_takes_a_user_document_or_raises_spec_error(doc: Any) -> None:
    with only(SpecError):
        specs.make_body(doc, identity("submitter"))
