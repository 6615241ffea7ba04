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


def _check(value: Any, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise WireError(f"nesting deeper than {max_depth}")
    if value is None or isinstance(value, bool | bytes):
        return
    if isinstance(value, str):
        _check_text(value)
        return
    if isinstance(value, int):
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise WireError("integer outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError("non-finite float")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1, max_depth)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise WireError("map keys must be text or integers")
            if isinstance(key, str):
                _check_text(key)
            _check(item, depth + 1, max_depth)
        return
    raise WireError(f"type {type(value).__name__} is not plain data")


def encode(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The canonical encoding of plain data (tuples encode as arrays)."""
    _check(value, 0, max_depth)
    return cbor2.dumps(value, canonical=True)


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
    try:
        value = cbor2.loads(
            bytes(data),
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
    _check(value, 0, max_depth)
    if cbor2.dumps(value, canonical=True) != data:
        raise WireError(f"{what} is not in canonical CBOR form (or has trailing bytes)")
    return value


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
