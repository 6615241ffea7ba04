"""Canonical CBOR (RFC 8949 section 4.2.1, "core deterministic encoding") for everything that
is signed or hashed.

Encoding sorts map keys and uses the shortest forms, so one value has exactly one encoding.
Decoding is strict, because every byte we decode came from someone we do not trust yet:

* the size is checked *before* parsing, and nesting depth is capped;
* only plain data survives: null, booleans, integers, floats, text, bytes, arrays and maps with
  text or integer keys; tags (dates, bignums, shared values...) are refused;
* no indefinite-length items and no duplicate keys;
* the input must be the canonical encoding of what it decodes to, so a signature over the bytes
  and a signature over the value are the same thing.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2

from qiz import QizError

DEFAULT_MAX_SIZE = 64 * 1024
DEFAULT_MAX_DEPTH = 16
_MAX_INT = (1 << 64) - 1
# Byte strings this long or longer (a storage piece, a state vector) are encoded by reference:
# cbor2 copies every byte through a growing buffer, which costs a store transfer more than
# its encryption does (docs/store.md, "Throughput").
BULK = 4096


class WireError(QizError, ValueError):
    """Bytes from the network or a file are not an acceptable encoding."""


def _check_text(text: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate (which JSON can carry as ``\\ud800``)
    would otherwise fail deep inside the encoder with an error no user can act on."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(
            f"text holds a character that is not valid Unicode ({exc.object[exc.start]!r} "
            f"at position {exc.start})"
        ) from None


def _check(value: Any, depth: int, max_depth: int) -> bool:
    """Refuse what is not plain data; True when a bulk byte string (``BULK`` bytes or more)
    is inside, so that the encoder splices it in rather than copying it through cbor2.

    Every RPC message passes here twice (encoded, then decoded), so the common exact types
    are settled by one ``type()`` lookup each, scalar items of a container without a call of
    their own; anything else (subclasses, refusals) takes :func:`_check_any`."""
    if depth > max_depth:
        raise WireError(f"nesting deeper than {max_depth}")
    kind = type(value)
    if kind in _SCALARS:
        return _scalar_is_bulk(kind, value)
    if kind is list or kind is tuple:
        if value and depth >= max_depth:
            raise WireError(f"nesting deeper than {max_depth}")
        bulk = False
        for item in value:
            item_kind = type(item)
            # the commonest items (ids, byte strings, names) checked here, without a call
            if item_kind is int:
                if not -_MAX_INT - 1 <= item <= _MAX_INT:
                    raise WireError("integer outside the 64-bit range")
            elif item_kind is bytes:
                if len(item) >= BULK:
                    bulk = True
            elif item_kind is str:
                if not item.isascii():
                    _check_text(item)
            elif item_kind in _SCALARS:
                bulk = _scalar_is_bulk(item_kind, item) or bulk
            else:
                bulk = _check(item, depth + 1, max_depth) or bulk
        return bulk
    return _check_any(value, depth, max_depth)


def _scalar_is_bulk(kind: type, value: Any) -> bool:
    """The checks of one exact scalar type (a key of ``_SCALARS``)."""
    if kind is bytes:
        return len(value) >= BULK
    if kind is str:
        if not value.isascii():
            _check_text(value)
    elif kind is int:
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise WireError("integer outside the 64-bit range")
    elif kind is float and not math.isfinite(value):
        raise WireError("non-finite float")
    return False


_SCALARS = frozenset({bytes, str, int, float, bool, type(None)})


def _check_any(value: Any, depth: int, max_depth: int) -> bool:
    """:func:`_check` for any value: subclasses of plain types, maps, and refusals."""
    if depth > max_depth:
        raise WireError(f"nesting deeper than {max_depth}")
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, bytes):
        return len(value) >= BULK
    if isinstance(value, str):
        _check_text(value)
        return False
    if isinstance(value, int):
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise WireError("integer outside the 64-bit range")
        return False
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError("non-finite float")
        return False
    bulk = False
    if isinstance(value, list | tuple):
        for item in value:
            bulk = _check(item, depth + 1, max_depth) or bulk
        return bulk
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise WireError("map keys must be text or integers")
            if isinstance(key, str):
                _check_text(key)
            bulk = _check(item, depth + 1, max_depth) or bulk
        return bulk
    raise WireError(f"type {type(value).__name__} is not plain data")


def _head(major: int, length: int) -> bytes:
    """A CBOR item head in its shortest form (RFC 8949 section 3)."""
    if length < 24:
        return bytes([major << 5 | length])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | extra]) + length.to_bytes(size, "big")
    raise WireError("length beyond 64 bits")


def _encode_parts(value: Any, parts: list[bytes]) -> None:
    """The canonical encoding of checked plain data as pieces to join once: containers and
    bulk byte strings here, every other item by cbor2 (map keys in cbor2's canonical order:
    shorter encoded key first, then bytewise)."""
    if isinstance(value, bytes) and len(value) >= BULK:
        parts += (_head(2, len(value)), value)
    elif isinstance(value, list | tuple):
        parts.append(_head(4, len(value)))
        for item in value:
            _encode_parts(item, parts)
    elif isinstance(value, dict):
        parts.append(_head(5, len(value)))
        keyed = sorted(
            ((cbor2.dumps(key, canonical=True), item) for key, item in value.items()),
            key=lambda pair: (len(pair[0]), pair[0]),
        )
        for encoded_key, item in keyed:
            parts.append(encoded_key)
            _encode_parts(item, parts)
    else:
        parts.append(cbor2.dumps(value, canonical=True))


def _canonical(value: Any, bulk: bool) -> bytes:
    if not bulk:
        return cbor2.dumps(value, canonical=True)
    parts: list[bytes] = []
    _encode_parts(value, parts)
    return b"".join(parts)


def encode(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The canonical encoding of plain data (tuples encode as arrays)."""
    if _check(value, 0, max_depth):
        return _canonical(value, True)
    return cbor2.dumps(value, canonical=True)  # the common case, without a call between


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    what: str = "message",
) -> Any:
    """Decode untrusted bytes, accepting only the canonical encoding of plain data."""
    if len(data) > max_size:
        raise WireError(f"{what} is {len(data)} bytes, over the {max_size}-byte limit")
    if not data:
        raise WireError(f"{what} is empty")
    if type(data) is not bytes and not isinstance(data, bytearray):
        data = bytes(data)
    try:
        value = cbor2.loads(
            data,
            max_depth=max_depth + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            tag_hook=_refuse_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
        )
    except WireError:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input
        if isinstance(exc.__cause__, WireError):  # a tag refused from inside the decoder
            raise WireError(f"{what}: {exc.__cause__}") from None
        raise WireError(f"{what} is not valid CBOR: {exc}") from None
    if _check(value, 0, max_depth):
        canonical = _encodes_to(value, True, data)
    else:  # the common case, compared here without a call
        canonical = cbor2.dumps(value, canonical=True) == data
    if not canonical:
        raise WireError(f"{what} is not in canonical CBOR form (or has trailing bytes)")
    return value


def _encodes_to(value: Any, bulk: bool, data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is exactly the canonical encoding of ``value``: with a bulk byte
    string inside, piece by piece against ``data`` (no joined copy of a large message)."""
    if not bulk:
        return cbor2.dumps(value, canonical=True) == data
    if not isinstance(data, bytes | bytearray):
        data = bytes(data)
    parts: list[bytes] = []
    _encode_parts(value, parts)
    at = 0
    for part in parts:
        if not data.startswith(part, at):
            return False
        at += len(part)
    return at == len(data)


def _refuse_tag(_decoder: object, tag: object) -> None:
    raise WireError("CBOR tags are not accepted")


class _NoSemanticTags(dict):
    """What cbor2 consults for its built-in tags (dates, bignums, fractions, sets...): every
    tag maps to a refusal, so no tagged value is ever built, only refused with one message."""

    def __contains__(self, tag: object) -> bool:
        return True

    def get(self, tag: object, default: object = None) -> object:
        return self[tag]

    def __getitem__(self, tag: object) -> object:
        return _refuse_tag


_NO_SEMANTIC_TAGS = _NoSemanticTags()
