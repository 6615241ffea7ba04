"""Fuzz targets of what peers *answer*, parsed by the node that asked: a DHT lookup's contacts,
a worker's capacity (a name record's value, or an offer's reply), and a worker's result,
checked against its task's shape before any quorum compares it.

The property: the parser returns its value, None, or a reason (or the layer's error), never
raises anything else; a bad answer fails one request, never the node's loop that read it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from qiz.compute import results
from qiz.compute import spec as specs
from qiz.compute.directory import checked_capacity, decode_capacity
from qiz.identity import PeerRecord
from qiz.qmp.rpc import RpcError
from qiz.resolve.dht import Dht
from qiz.resolve.store import RecordStore

from .inputs import DOCUMENTS, LIMITS, body_of
from .strategies import PLAIN, budget, identity, mutated_value, only

CAPACITY = {"qubits": 20, "cores": 2, "slots": 2, "queue": 0, "backlog": 0.5, "engine": "qiz/1"}


@example("[" * 1000)
@given(
    st.one_of(
        mutated_value(CAPACITY).map(lambda v: json.dumps(v, default=repr)),
        st.just(json.dumps(CAPACITY)),
        st.sampled_from(['{"qubits": NaN}', "[" * 5000, "1e999", '{"a":' * 100, ""]),
        st.text(max_size=60),
    )
)
@budget(1)
def test_capacity_records_decode_to_figures_or_none(text: str) -> None:
    value = decode_capacity(text)  # not only(): any exception here fails the test
    assert value is None or set(value) == set(CAPACITY)


@given(
    st.one_of(
        mutated_value(CAPACITY).map(lambda v: json.dumps(v, default=repr)),
        st.just(json.dumps(CAPACITY)),
        st.text(max_size=60),
    )
)
@budget(1)
def test_capacity_records_decode_to_figures_or_none_fuzz(text: str) -> None:
    with only():
        value = decode_capacity(text)
        assert value is None or set(value) == set(CAPACITY)


@given(st.one_of(mutated_value(CAPACITY), PLAIN))
@budget(1)
def test_capacity_replies_check_to_figures_or_none(value: Any) -> None:
    with only():
        checked = checked_capacity(value)
        assert checked is None or 1 <= checked["slots"] <= 4096


# ----------------------------------------------------------------------------- lookup replies


def _dht() -> Dht:
    me = identity("asker")
    now = time.time()
    record = PeerRecord.create(me, ["127.0.0.1:4000"], seq=1, now=now)
    return Dht(me, None, RecordStore(None), lambda: record)  # type: ignore[arg-type]


DHT = _dht()
CONTACTS = {"contacts": [[bytes(32), "127.0.0.1:9"], [b"\x01" * 32, "[::1]:9"]], "records": []}


@given(st.one_of(mutated_value(CONTACTS, 4), PLAIN))
@budget(1)
def test_lookup_replies_give_contacts_or_rpc_error(reply: Any) -> None:
    if not isinstance(reply, dict):
        return  # the caller refuses a reply that is not a map first (Dht._query)
    with only(RpcError):
        contacts = DHT._parse_contacts(reply)
        assert len(contacts) <= DHT.config.k
        event(f"{len(contacts)} contacts")


# ----------------------------------------------------------------------------- worker results

VALID_RESULTS = {
    "sampler": {"counts": {"00": 50, "11": 50}, "shots": 100},
    "estimator": {"values": [0.5, 0.25]},
    "vqe": {"energy": -1.5, "theta": [0.1], "exact": None, "evaluations": 3, "converged": True},
    "qaoa": {"expectation": 0.3},
    "grover": {"iterations": 2, "success_probability": 0.9, "counts": {"101": 1024}, "shots": 1024},
}


def _shapes() -> list[tuple[results.ResultShape, Any]]:
    out = []
    for doc in DOCUMENTS:
        spec = specs.parse(specs.sign(body_of(doc), identity("submitter")), LIMITS)
        task = spec.tasks[0]
        shape = results.shape_of(task)
        assert shape is not None
        if task.points is not None:
            valid: Any = [{"point": p, "expectation": 0.1} for p in shape.points or ()]
        else:
            valid = VALID_RESULTS[task.kind]
        out.append((shape, valid))
    return out


SHAPES = _shapes()


@given(
    st.sampled_from(range(len(SHAPES))).flatmap(
        lambda i: st.tuples(
            st.just(i), st.one_of(st.just(SHAPES[i][1]), mutated_value(SHAPES[i][1], 4), PLAIN)
        )
    )
)
@budget(1.5)
def test_worker_results_are_accepted_or_given_a_reason(case: tuple[int, Any]) -> None:
    index, result = case
    shape, _ = SHAPES[index]
    with only():
        why = results.problem(shape, result)
        assert why is None or isinstance(why, str)
        event(f"{shape.kind}: {'accepted' if why is None else 'refused'}")
