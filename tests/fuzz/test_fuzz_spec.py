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

from .inputs import BODIES, DOCUMENTS, LIMITS, SIGNED_MUTANTS, VALID_SIGNED, mutated_bodies
from .strategies import budget, bytes_from, identity, mutated_value, only


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
    if isinstance(doc, dict) and not all(isinstance(k, str) for k in doc):
        return  # the document is JSON (CLI, API): its keys are text
    with only(SpecError):
        specs.make_body(doc, identity("submitter"))
