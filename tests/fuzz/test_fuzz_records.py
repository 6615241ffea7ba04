"""Fuzz targets of the signed records a peer hands over: peer records (in HELLO/INIT and the
DHT), name and provider records (``dht/1.store``, lookup answers).

Two kinds of input: valid records with byte-level mutations (they must fail the signature or
an earlier check), and records whose fields were mutated *and then signed again* by their
owner, which is what a malicious owner can publish: those reach every check behind the
signature, and, when they validate, the record store that ``dht/1.store`` puts them in.
"""

from __future__ import annotations

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from qiz import wire
from qiz.identity import PeerRecord, PeerRecordError
from qiz.resolve.records import RecordError, RecordKind, ValidRecord, validate
from qiz.resolve.store import PutResult, RecordStore

from .inputs import KEYS, NOW, VALID, resign, resigned
from .strategies import budget, bytes_from, only

KINDS = st.sampled_from(list(RecordKind))


def check(kind: RecordKind, raw: bytes, key: bytes | None) -> ValidRecord | None:
    """The property: a ValidRecord or RecordError; a valid one can be stored."""
    with only(RecordError):
        record = validate(kind, raw, key=key, now=NOW)
        assert isinstance(record, ValidRecord) and record.kind is kind
        store = RecordStore(None)
        try:
            assert store.put(record, NOW) in (PutResult.STORED, PutResult.UNCHANGED)
            assert store.get(kind, record.key, NOW)[0].raw == raw
        finally:
            store.close()
        return record
    return None


@given(KINDS.flatmap(lambda k: st.tuples(st.just(k), bytes_from(st.just(VALID[k])))))
@budget(1)
def test_mutated_records_validate_or_raise_record_error(case: tuple[RecordKind, bytes]) -> None:
    kind, raw = case
    got = check(kind, raw, None)
    event(f"{kind.value}: {'valid' if got else 'refused'}")
    if got is not None:
        assert raw == VALID[kind]  # only the unmutated bytes may pass the signature


@given(KINDS.flatmap(lambda k: st.tuples(st.just(k), resigned(k))), st.booleans())
@budget(1)
def test_records_resigned_by_their_owner_validate_or_raise_record_error(
    case: tuple[RecordKind, bytes], keyed: bool
) -> None:
    kind, raw = case
    got = check(kind, raw, KEYS[kind] if keyed else None)
    event(f"{kind.value}: {'valid' if got else 'refused'}")


@given(bytes_from(st.just(VALID[RecordKind.PEER])))
@budget(1)
def test_peer_record_verify_returns_a_record_or_peer_record_error(raw: bytes) -> None:
    """The handshake's path: PeerRecord.verify on what RECORD and INIT carry."""
    with only(PeerRecordError):
        record = PeerRecord.verify(raw, now=NOW)
        assert record.raw == raw


# ----------------------------------------------------------------------------- regressions


@example(RecordKind.NAME, 1 << 63)
@example(RecordKind.PEER, (1 << 64) - 1)
@given(st.sampled_from([RecordKind.PEER, RecordKind.NAME]), st.integers(1 << 63, (1 << 64) - 1))
@budget(0.1)
def test_a_record_with_a_huge_seq_is_refused_or_stored(kind: RecordKind, seq: int) -> None:
    """Issue 13 item 2, found by the resigned-record fuzzer: at d378dc9 a record with seq from
    2^63 validated, then overflowed SQLite's INTEGER in RecordStore.put."""
    fields = wire.decode(VALID[kind])
    with pytest.raises(RecordError):  # refused is the only right answer: SQLite cannot hold it
        validate(kind, resign(kind, {**fields, "seq": seq}), key=None, now=NOW)
