"""Canonical CBOR: one encoding per value, strict decoding of untrusted bytes."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.wire import WireError, decode, encode

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-100, 100), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(value=plain)
def test_round_trip_is_exact(value: object) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        value = decode(data)
    except WireError:
        return
    assert encode(value) == data


def test_map_key_order_does_not_matter() -> None:
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("a2616201616101"), "canonical"),  # keys out of order
        (bytes.fromhex("1817"), "canonical"),  # 23 encoded in two bytes
        (bytes.fromhex("c11a514b67b0"), "plain data|tags"),  # tag 1 (date)
        (bytes.fromhex("d8ff00"), "tag"),  # unknown tag
        (bytes.fromhex("9fff"), "indefinite"),
        (bytes.fromhex("a2616101616102"), "Duplicate"),
        (bytes.fromhex("0000"), "canonical|trailing"),
        (b"", "empty"),
        (bytes.fromhex("5a7fffffff"), "CBOR"),  # claims a 2 GiB byte string
        (bytes.fromhex("f97e00"), "non-finite"),  # NaN
    ],
)
def test_refused_inputs(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(data)


def test_size_and_depth_limits() -> None:
    with pytest.raises(WireError, match="limit"):
        decode(encode(b"x" * 100), max_size=50)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(WireError):
        encode(deep)
    with pytest.raises(WireError):
        decode(bytes([0x81] * 40 + [0x01]))


def test_unencodable_values() -> None:
    for bad in (object(), {1.5: 1}, {True: 1}, float("inf"), 2**64):
        with pytest.raises(WireError):
            encode(bad)


@pytest.mark.parametrize(
    "value", [{"label": "x\ud800"}, {"\udc00": 1}, ["ok", ["deep", "\udfff"]], "\ud83d"]
)
def test_text_that_is_not_unicode_is_refused_with_its_position(value: object) -> None:
    """JSON can carry a lone surrogate (``"\\ud800"``); encoding it must be a WireError that
    says what is wrong, not an encoder's UnicodeEncodeError."""
    with pytest.raises(WireError, match="not valid Unicode"):
        encode(value)


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 30, 258, 55799])
def test_built_in_tags_are_refused_before_a_value_is_built(tag) -> None:
    """cbor2 decodes its own tags (dates, bignums, fractions, sets) before any hook sees them:
    each must be refused with the one plain message, not a Python type's name."""
    with pytest.raises(WireError, match="CBOR tags are not accepted"):
        decode(cbor2.dumps(cbor2.CBORTag(tag, [1, 2])), max_size=100)
