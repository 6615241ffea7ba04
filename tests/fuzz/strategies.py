"""What the fuzz targets share: the budget, mutations of bytes and of plain CBOR data, and the
checks every target makes (only the layer's documented error, bounded memory).

Mutations are what get a fuzzer past the first check of a parser: random bytes die at "not
CBOR", but a valid record with one field of the wrong type, or one byte flipped after the
length prefix, reaches the code behind it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from qiz import QizError

# ``make fuzz`` sets fuzz-long; the default is the short budget of ``make test``.
PROFILE = os.environ.get("QIZ_FUZZ_PROFILE", "fuzz")


def budget(scale: float = 1.0) -> settings:
    """The active fuzz profile, with ``scale`` times its examples (a target whose one example
    costs a signature or a round trip takes a smaller share of the short budget)."""
    base = settings.get_profile(PROFILE)
    return settings(
        base,
        max_examples=max(1, round(base.max_examples * scale)),
        suppress_health_check=[*base.suppress_health_check, HealthCheck.function_scoped_fixture],
    )


# ----------------------------------------------------------------------------- the property


@dataclass(frozen=True)
class Known:
    """A defect a fuzzer found that its owner is fixing: the exception type and the file (and
    function) it is raised in. Each has a strict-xfail replay test of its own (which flips when
    the fix lands, and then this entry goes too); the fuzz targets step over it, so that they
    keep looking for the next defect meanwhile instead of failing on this one."""

    what: str
    error: type[BaseException] | tuple[type[BaseException], ...]
    file: str
    function: str

    def matches(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.error):
            return False
        frames = traceback.extract_tb(exc.__traceback__)
        return bool(frames) and (
            frames[-1].filename.endswith(self.file) and frames[-1].name == self.function
        )


KNOWN: list[Known] = []


def known(exc: BaseException) -> Known | None:
    return next((k for k in KNOWN if k.matches(exc)), None)


@contextlib.contextmanager
def only(*allowed: type[BaseException]) -> Iterator[None]:
    """The parser either returns or raises one of ``allowed`` (a QizError subclass, the
    decoder's error type); anything else is a finding and fails the example with its
    traceback (hypothesis shrinks it and prints the input), unless it is a :data:`KNOWN`
    defect, replayed by its own xfail test."""
    try:
        yield
    except allowed:
        pass
    except Exception as exc:
        if known(exc) is None:
            raise


def peak_bytes(call: Callable[[], Any]) -> int:
    """The peak of Python allocations (tracemalloc) while ``call()`` runs; its errors are
    swallowed if they are QizErrors (the adversarial cases are meant to be refused)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with contextlib.suppress(QizError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- values

BOUNDARY_INTS = st.sampled_from(
    [
        0,
        1,
        -1,
        255,
        256,
        65535,
        65536,
        (1 << 24) - 1,
        1 << 24,
        (1 << 31) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        (1 << 53) + 1,
        (1 << 63) - 1,
        1 << 63,
        (1 << 64) - 1,
        -(1 << 63),
        -(1 << 63) - 1,
        -(1 << 64),
    ]
)
INTS = st.one_of(BOUNDARY_INTS, st.integers(-(1 << 64), (1 << 64) - 1))
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 0.5, 1e-300]),
)
TEXT = st.one_of(st.text(max_size=24), st.sampled_from(["", "\x00", "é" * 8, "a" * 300]))
BLOBS = st.one_of(st.binary(max_size=48), st.sampled_from([b"", b"\x00" * 32, b"\xff" * 64]))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT, BLOBS)


def deep(depth: int, leaf: Any = 0) -> Any:
    """Lists nested ``depth`` deep (a recursion bomb for naive walkers)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(TEXT, st.integers(-5, 5)), inner, max_size=5),
    ),
    max_leaves=12,
)
# what replaces a field: another type, a boundary number, a deep or wide structure
WRONG = st.one_of(
    SCALARS,
    PLAIN,
    st.integers(1, 14).map(deep),
    st.sampled_from([deep(16), deep(17), deep(40)]),
    st.just(list(range(300))),
    st.just({str(i): i for i in range(100)}),
)


def mutate_value(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one change somewhere inside: a field dropped, added or replaced by a
    wrong one, a number moved to a boundary, a text or byte string cut or grown."""
    if isinstance(value, dict) and value and depth < 6:
        key = draw(st.sampled_from(sorted(value, key=repr)))
        op = draw(st.sampled_from(["drop", "add", "replace", "recurse", "recurse"]))
        out = dict(value)
        if op == "drop":
            del out[key]
        elif op == "add":
            out[draw(st.one_of(TEXT, st.integers(-3, 3)))] = draw(WRONG)
        elif op == "replace":
            out[key] = draw(WRONG)
        else:
            out[key] = mutate_value(draw, value[key], depth + 1)
        return out
    if isinstance(value, list) and value and depth < 6:
        index = draw(st.integers(0, len(value) - 1))
        op = draw(st.sampled_from(["drop", "append", "replace", "recurse", "recurse"]))
        out = list(value)
        if op == "drop":
            del out[index]
        elif op == "append":
            out.append(draw(WRONG))
        elif op == "replace":
            out[index] = draw(WRONG)
        else:
            out[index] = mutate_value(draw, value[index], depth + 1)
        return out
    if isinstance(value, bool) or value is None:
        return draw(WRONG)
    if isinstance(value, int):
        return draw(st.one_of(BOUNDARY_INTS, st.just(value + 1), st.just(-value), WRONG))
    if isinstance(value, str):
        return draw(
            st.one_of(
                st.just(value[: draw(st.integers(0, len(value)))]),
                st.just(value + draw(TEXT)),
                st.just(value * draw(st.integers(2, 40))),
                WRONG,
            )
        )
    if isinstance(value, bytes):
        return draw(st.one_of(st.just(value[: len(value) // 2]), st.just(value + b"\x00"), WRONG))
    return draw(WRONG)


@st.composite
def mutated_value(draw: st.DrawFn, value: Any, changes: int = 3) -> Any:
    """``value`` with 1 to ``changes`` mutations (see :func:`mutate_value`)."""
    for _ in range(draw(st.integers(1, changes))):
        value = mutate_value(draw, value)
    return value


def cbor(value: Any) -> bytes:
    """Canonical CBOR of anything cbor2 takes (out-of-range ints become bignum tags, which a
    strict decoder must refuse): a peer need not use our encoder."""
    return cbor2.dumps(value, canonical=True)


# ----------------------------------------------------------------------------- bytes


def _cbor_head(major: int, argument: int) -> bytes:
    """A CBOR item head announcing ``argument`` (a huge length for strings, arrays, maps)."""
    return bytes([major << 5 | 27]) + argument.to_bytes(8, "big")


BYTE_OPS = (
    "flip",
    "flip",
    "set",
    "truncate",
    "extend",
    "insert",
    "delete",
    "duplicate",
    "huge-length",
    "deep",
)


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: bytes, ops: int = 4) -> bytes:
    """``valid`` with 1 to ``ops`` byte-level mutations: bit flips, a byte set, truncation,
    random bytes appended or inserted, a slice deleted or repeated, a CBOR head announcing a
    huge length spliced in, or a run of nested-array heads."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, ops))):
        op = draw(st.sampled_from(BYTE_OPS))
        at = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x9F]))
        elif op == "truncate":
            del data[at:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "huge-length":
            major = draw(st.sampled_from([2, 3, 4, 5]))
            size = draw(st.sampled_from([(1 << 32) - 1, (1 << 63) - 1, (1 << 64) - 1, 1 << 40]))
            data[at:at] = _cbor_head(major, size)
        else:  # deep: nested one-element arrays
            data[at:at] = b"\x81" * draw(st.integers(15, 2000))
    return bytes(data)


def bytes_from(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid bytes, mutated bytes of them, or unrelated bytes."""
    return st.one_of(
        valid,
        valid.flatmap(mutated_bytes),
        valid.flatmap(mutated_bytes),
        st.binary(max_size=256),
    )


# ----------------------------------------------------------------------------- identities


@functools.cache
def identity(name: str) -> Any:
    """One identity per name for the whole session (key generation is not what we fuzz)."""
    from qiz.identity import NodeIdentity

    return NodeIdentity.generate()
