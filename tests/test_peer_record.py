"""Signed peer records: accepted only if canonical, self-certifying, signed and unexpired."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz import wire
from qiz.identity import NodeIdentity, PeerRecord, PeerRecordError, RelayAddress
from qiz.identity.peer_record import CONTEXT, MAX_RECORD_RELAYS, MAX_RECORD_SIZE, parse_address

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def record(alice: NodeIdentity) -> PeerRecord:
    return PeerRecord.create(alice, ["127.0.0.1:7450", "[::1]:7450"], seq=5, now=NOW)


def resign(identity: NodeIdentity, fields: dict) -> bytes:
    """Re-encode fields with a fresh valid signature by ``identity``."""
    body = {k: v for k, v in fields.items() if k != "sig"}
    return wire.encode({**body, "sig": identity.sign(wire.encode(body), CONTEXT)})


def test_valid_record_round_trips(record: PeerRecord, alice: NodeIdentity) -> None:
    again = PeerRecord.verify(record.raw, now=NOW + 10, expected_id=alice.node_id)
    assert again == record
    assert again.addresses == ("127.0.0.1:7450", "[::1]:7450")
    assert again.xwing_key == alice.xwing_public
    assert again.seq == 5


def test_expired_record_is_refused(record: PeerRecord) -> None:
    with pytest.raises(PeerRecordError, match="expired"):
        PeerRecord.verify(record.raw, now=record.expires)
    # Offline uses may ask only for the id-to-key binding.
    assert PeerRecord.verify(record.raw, now=record.expires + 1, check_expiry=False)


def test_wrong_expected_id_is_refused(record: PeerRecord, bob: NodeIdentity) -> None:
    with pytest.raises(PeerRecordError, match="expected"):
        PeerRecord.verify(record.raw, now=NOW, expected_id=bob.node_id)


def test_keys_under_someone_elses_id_are_refused(
    record: PeerRecord, alice: NodeIdentity, bob: NodeIdentity
) -> None:
    """Bob signs a record claiming Alice's id with his own keys: the id check catches it."""
    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    fields["sk"] = bob.public_key.raw
    with pytest.raises(PeerRecordError, match="does not match the hash"):
        PeerRecord.verify(resign(bob, fields), now=NOW)


def test_substituted_xwing_key_breaks_the_signature(record: PeerRecord, bob: NodeIdentity) -> None:
    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    fields["xk"] = bob.xwing_public.raw
    with pytest.raises(PeerRecordError, match="signature"):
        PeerRecord.verify(wire.encode(fields), now=NOW)


def test_bad_signature_is_refused(record: PeerRecord) -> None:
    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    sig = bytearray(fields["sig"])
    sig[100] ^= 1
    fields["sig"] = bytes(sig)
    with pytest.raises(PeerRecordError, match="signature"):
        PeerRecord.verify(wire.encode(fields), now=NOW)


def test_unsigned_record_is_refused(record: PeerRecord) -> None:
    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    del fields["sig"]
    with pytest.raises(PeerRecordError, match="missing"):
        PeerRecord.verify(wire.encode(fields), now=NOW)


def test_oversize_record_is_refused_before_parsing(record: PeerRecord) -> None:
    with pytest.raises(PeerRecordError, match="limit"):
        PeerRecord.verify(record.raw + b"\x00" * MAX_RECORD_SIZE, now=NOW)
    with pytest.raises(PeerRecordError, match="limit"):
        PeerRecord.verify(b"\xff" * (MAX_RECORD_SIZE + 1), now=NOW)


def test_extra_or_malformed_fields_are_refused(record: PeerRecord, alice: NodeIdentity) -> None:
    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    for change in (
        {"extra": 1},
        {"seq": -1},
        {"seq": True},
        {"exp": "soon"},
        {"addrs": ["example.com:80"]},
        {"addrs": ["127.0.0.1:0"]},
        {"addrs": ["::1:80"]},
        {"addrs": ["127.0.0.1:1"] * 17},
        {"v": 2},
        {"sk": b"short"},
    ):
        with pytest.raises(PeerRecordError):
            PeerRecord.verify(resign(alice, {**fields, **change}), now=NOW)


def test_non_canonical_encoding_is_refused(record: PeerRecord) -> None:
    # The same map with a key re-ordered: still CBOR, no longer canonical.
    import cbor2

    fields = wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    shuffled = cbor2.dumps(dict(reversed(list(fields.items()))))
    assert shuffled != record.raw
    with pytest.raises(PeerRecordError, match="canonical"):
        PeerRecord.verify(shuffled, now=NOW)


@given(flip=st.integers(min_value=0))
def test_any_bit_flip_is_refused(record: PeerRecord, flip: int) -> None:
    raw = bytearray(record.raw)
    bit = flip % (len(raw) * 8)
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PeerRecordError):
        PeerRecord.verify(bytes(raw), now=NOW)


def test_create_refuses_bad_addresses(alice: NodeIdentity) -> None:
    with pytest.raises(ValueError):
        PeerRecord.create(alice, ["localhost:80"], seq=1, now=NOW)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:443") == ("::1", 443)
    for bad in ("127.0.0.1", "127.0.0.1:x", "1.2.3.4:70000", "", "[::1]", "host:1"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_verified_record_cache_gives_the_same_answers(
    record: PeerRecord, bob: NodeIdentity
) -> None:
    from qiz.identity.peer_record import VerifiedRecordCache

    cache = VerifiedRecordCache(capacity=2)
    assert cache.verify(record.raw, now=NOW) == record
    assert cache.verify(record.raw, now=NOW + 1) == record
    assert cache.hits == 1
    with pytest.raises(PeerRecordError, match="expected"):
        cache.verify(record.raw, now=NOW, expected_id=bob.node_id)
    with pytest.raises(PeerRecordError, match="expired"):
        cache.verify(record.raw, now=record.expires)
    forged = bytearray(record.raw)
    forged[-3] ^= 1
    for _ in range(2):  # a bad record is never cached
        with pytest.raises(PeerRecordError):
            cache.verify(bytes(forged), now=NOW)


def test_relays_round_trip_and_a_record_without_them_is_unchanged(
    record: PeerRecord, alice: NodeIdentity, bob: NodeIdentity
) -> None:
    relay = RelayAddress(bob.node_id, "10.77.0.2:7450")
    relayed = PeerRecord.create(alice, [], seq=6, now=NOW, relays=[relay])
    again = PeerRecord.verify(relayed.raw, now=NOW + 1, expected_id=alice.node_id)
    assert again.relays == (relay,)
    assert again.addresses == ()
    assert str(relay) == f"{bob.node_id}@10.77.0.2:7450"
    # no relays: the field is absent, so the encoding is what it was before the field existed
    assert "relays" not in wire.decode(record.raw, max_size=MAX_RECORD_SIZE)
    assert record.relays == ()


def test_malformed_relays_are_refused_with_a_reason(alice: NodeIdentity, bob: NodeIdentity) -> None:
    fields = wire.decode(PeerRecord.create(alice, [], seq=1, now=NOW).raw, max_size=MAX_RECORD_SIZE)
    good = [bob.node_id.digest, "10.77.0.2:7450"]
    for relays, reason in (
        ([], "relays must be a list of 1 to 4"),
        ([good] * (MAX_RECORD_RELAYS + 1), "relays must be a list of 1 to 4"),
        ("10.77.0.2:7450", "relays must be a list"),
        ([[b"short", "10.77.0.2:7450"]], "relay is malformed"),
        ([[bob.node_id.digest, "relay.example:1"]], "relay is malformed"),
        ([[bob.node_id.digest]], "relay is [id digest"),
        ([[bob.node_id.digest, 7450]], "relay is [id digest"),
    ):
        with pytest.raises(PeerRecordError, match=reason.replace("[", r"\[")):
            PeerRecord.verify(resign(alice, {**fields, "relays": relays}), now=NOW)
