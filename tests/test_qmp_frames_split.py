"""FrameDecoder's two paths (frames cut straight out of a read when nothing is buffered, and
the buffered path across reads) give the same frames and the same refusals, however the
stream is split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.qmp.errors import NOT_QMP, ErrorCode, QmpError
from qiz.qmp.frames import FrameDecoder, FrameKind, encode_frame

KINDS = list(FrameKind)
frames_st = st.lists(
    st.tuples(st.sampled_from(KINDS), st.binary(min_size=1, max_size=300)), max_size=8
)


def _feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list:
    out = []
    at = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out += [(kind, bytes(body)) for kind, body in decoder.feed_pairs(stream[at:cut])]
        at = cut
    return out


@settings(max_examples=200, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_any_split_gives_the_frames_of_one_read(frames: list, cuts: list[int]) -> None:
    stream = b"".join(encode_frame(kind, body) for kind, body in frames)
    cuts = [c for c in cuts if c <= len(stream)]
    whole = FrameDecoder(1000).feed_pairs(stream)
    assert [(kind, bytes(body)) for kind, body in whole] == frames
    assert _feed_in_pieces(FrameDecoder(1000), stream, cuts) == frames
    # feed() gives the same as Frame objects; handshake bodies are bytes, DATA a view
    decoded = FrameDecoder(1000).feed(stream)
    assert [(f.kind, bytes(f.body)) for f in decoded] == frames
    for frame in decoded:
        assert isinstance(frame.body, memoryview if frame.kind is FrameKind.DATA else bytes)


BAD_HEADERS = [
    (b"\x99\x00\x00\x01", ErrorCode.PROTOCOL_ERROR, "unknown frame kind 153"),
    (bytes([FrameKind.DATA]) + b"\x00\x00\x00", ErrorCode.PROTOCOL_ERROR, "empty DATA frame"),
    (bytes([FrameKind.DATA]) + (1001).to_bytes(3, "big"), ErrorCode.FRAME_TOO_LARGE, "1001"),
]


@pytest.mark.parametrize(("header", "code", "words"), BAD_HEADERS)
@pytest.mark.parametrize("split", ["one read", "byte by byte", "after a partial frame"])
def test_a_bad_header_is_refused_alike_on_both_paths(
    header: bytes, code: ErrorCode, words: str, split: str
) -> None:
    good = encode_frame(FrameKind.DATA, b"x" * 10)
    decoder = FrameDecoder(1000)
    with pytest.raises(QmpError) as refused:
        if split == "one read":
            decoder.feed_pairs(good + header)
        elif split == "byte by byte":
            for i in range(len(good + header)):
                decoder.feed_pairs((good + header)[i : i + 1])
        else:
            assert decoder.feed_pairs(good + header[:2]) != []  # the good frame, then a part
            decoder.feed_pairs(header[2:])
    assert refused.value.code is code
    assert words in str(refused.value)
    if split == "byte by byte":
        assert not str(refused.value).startswith(NOT_QMP)  # a frame came first: it is QMP


def test_a_bad_first_header_says_the_peer_does_not_speak_qmp() -> None:
    with pytest.raises(QmpError) as refused:
        FrameDecoder(1000).feed_pairs(b"HTTP/1.1 400 Bad Request\r\n")
    assert str(refused.value).startswith(NOT_QMP)


def test_a_partial_frame_left_by_a_read_is_completed_by_the_next() -> None:
    frame = encode_frame(FrameKind.DATA, bytes(range(50)))
    decoder = FrameDecoder(1000)
    assert decoder.feed_pairs(frame + frame[:7]) != []
    assert decoder.buffered == 7
    rest = decoder.feed_pairs(frame[7:])
    assert [bytes(body) for _, body in rest] == [bytes(range(50))]
    assert decoder.buffered == 0
