"""Identifiers: round trips, and every kind of typo is caught with the right message."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import (
    BODY_LENGTH,
    ContentId,
    NodeId,
    ServiceName,
    crc24,
    parse_any,
)

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
digests = st.binary(min_size=32, max_size=32)
kinds = st.sampled_from([NodeId, ContentId, ServiceName])


@given(digest=digests, kind=kinds)
def test_text_round_trip(digest: bytes, kind: type) -> None:
    ident = kind(digest)
    text = str(ident)
    assert text.startswith(kind.PREFIX)
    assert len(text) == len(kind.PREFIX) + BODY_LENGTH
    assert kind.parse(text) == ident
    assert parse_any(text) == ident


@settings(max_examples=8)
@given(digest=digests)
def test_every_single_character_change_is_caught(digest: bytes) -> None:
    text = str(NodeId(digest))
    for pos in range(len(text)):
        for char in ALPHABET + "1":
            if char == text[pos]:
                continue
            changed = text[:pos] + char + text[pos + 1 :]
            with pytest.raises(InvalidIdentifier):
                NodeId.parse(changed)


@given(digest=digests)
def test_adjacent_swaps_are_caught(digest: bytes) -> None:
    text = str(NodeId(digest))
    for pos in range(5, len(text) - 1):
        if text[pos] == text[pos + 1]:
            continue
        swapped = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
        with pytest.raises(InvalidIdentifier, match="checksum"):
            NodeId.parse(swapped)


def test_errors_name_the_fault() -> None:
    text = str(NodeId(bytes(range(32))))
    with pytest.raises(InvalidIdentifier, match="wrong prefix"):
        NodeId.parse("x" + text[1:])
    with pytest.raises(InvalidIdentifier, match="is a content id"):
        NodeId.parse(str(ContentId(bytes(range(32)))))
    with pytest.raises(InvalidIdentifier, match="wrong length"):
        NodeId.parse(text[:-1])
    with pytest.raises(InvalidIdentifier, match="wrong length"):
        NodeId.parse(text + "a")
    with pytest.raises(InvalidIdentifier, match="invalid character"):
        NodeId.parse(text[:-1] + "0")
    with pytest.raises(InvalidIdentifier, match="invalid character"):
        NodeId.parse(text[:10] + text[10].upper() + text[11:])
    body = list(text)
    body[20] = "a" if body[20] != "a" else "b"
    with pytest.raises(InvalidIdentifier, match="bad checksum"):
        NodeId.parse("".join(body))
    with pytest.raises(InvalidIdentifier, match="wrong prefix"):
        parse_any("hello")


def test_surrounding_whitespace_is_ignored() -> None:
    ident = NodeId(bytes(32))
    assert NodeId.parse(f"  {ident}\n") == ident


def test_crc24_check_value() -> None:
    # The standard check value of CRC-24/OPENPGP over "123456789".
    assert crc24(b"123456789") == 0x21CF02


def test_node_id_is_hash_of_domain_and_keys() -> None:
    key = b"\x01" * 1984
    expected = hashlib.sha3_256(b"qiz/node-id/v1" + key).digest()
    assert NodeId.from_public_key(key).digest == expected


def test_content_id_is_plain_sha3() -> None:
    assert ContentId.of(b"abc").digest == hashlib.sha3_256(b"abc").digest()


def test_service_names_depend_on_owner_and_label() -> None:
    a, b = NodeId(b"\x01" * 32), NodeId(b"\x02" * 32)
    assert ServiceName.of(a, "web") != ServiceName.of(b, "web")
    assert ServiceName.of(a, "web") != ServiceName.of(a, "www")
    # NFC normalisation: composed and decomposed forms name the same service.
    assert ServiceName.of(a, "caf\u00e9") == ServiceName.of(a, "cafe\u0301")
    for bad in ("", "a/b", "tab\there", "x" * 256):
        with pytest.raises(InvalidIdentifier):
            ServiceName.of(a, bad)


def test_kinds_are_distinct() -> None:
    assert NodeId(bytes(32)) != ContentId(bytes(32))
    with pytest.raises(InvalidIdentifier):
        NodeId(b"short")
