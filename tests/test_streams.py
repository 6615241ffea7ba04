"""Stream flow control (docs/nat.md §4.1): the sans-IO credit account of qiz.qmp.circuit, and
the stream multiplexer of qiz.qmp.streams on real QMP links."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qiz.qmp.circuit import (
    CIRCUIT_WINDOW,
    MAX_STREAM_CHUNK,
    StreamBufferFull,
    StreamEnd,
    StreamProtocolError,
)

# ------------------------------------------------------------------ the credit account


def test_a_writer_sends_one_window_then_waits_for_credit() -> None:
    end = StreamEnd()
    chunks = end.write(b"x" * (CIRCUIT_WINDOW + 1000))
    assert sum(map(len, chunks)) == CIRCUIT_WINDOW
    assert all(len(c) <= MAX_STREAM_CHUNK for c in chunks)
    assert end.buffered == 1000 and end.send_credit == 0
    assert end.write(b"y") == []
    more = end.on_credit(600)
    assert b"".join(more) == b"x" * 600
    assert end.buffered == 401


def test_data_beyond_the_credit_granted_is_a_protocol_error() -> None:
    end = StreamEnd()
    for _ in range(CIRCUIT_WINDOW // MAX_STREAM_CHUNK):
        end.on_data(MAX_STREAM_CHUNK)
    with pytest.raises(StreamProtocolError, match="beyond"):
        end.on_data(1)


@pytest.mark.parametrize("size", [0, -1, MAX_STREAM_CHUNK + 1])
def test_chunks_out_of_range_are_protocol_errors(size: int) -> None:
    with pytest.raises(StreamProtocolError):
        StreamEnd().on_data(size)


@pytest.mark.parametrize("credit", [0, -5, 2**31, True, "1"])
def test_bad_credit_is_a_protocol_error(credit: object) -> None:
    with pytest.raises(StreamProtocolError):
        StreamEnd().on_credit(credit)  # type: ignore[arg-type]


def test_credit_is_granted_once_half_a_window_is_consumed() -> None:
    end = StreamEnd()
    end.on_data(MAX_STREAM_CHUNK)
    assert end.consumed(MAX_STREAM_CHUNK) == 0
    end.on_data(MAX_STREAM_CHUNK)
    assert end.consumed(MAX_STREAM_CHUNK) == 2 * MAX_STREAM_CHUNK
    assert end.recv_allowance == CIRCUIT_WINDOW
    with pytest.raises(ValueError):
        end.consumed(1)  # nothing received is left unconsumed


def test_the_send_buffer_is_bounded() -> None:
    end = StreamEnd(max_buffer=10)
    end.write(b"a" * CIRCUIT_WINDOW)  # sent at once: the initial credit
    end.write(b"b" * 10)  # buffered
    with pytest.raises(StreamBufferFull):
        end.write(b"c")


def test_a_closed_end_sends_and_grants_nothing() -> None:
    end = StreamEnd()
    end.write(b"a" * (CIRCUIT_WINDOW + 5))
    end.close()
    assert end.buffered == 0
    assert end.write(b"more") == []
    end.on_data(10)
    assert end.consumed(10) == 0


@given(st.lists(st.integers(1, 300_000), max_size=20))
def test_chunks_reassemble_to_what_was_written(sizes: list[int]) -> None:
    end = StreamEnd(max_buffer=10**8)
    written, sent = bytearray(), bytearray()
    for i, size in enumerate(sizes):
        data = bytes([i % 256]) * size
        written += data
        for chunk in end.write(data):
            assert 0 < len(chunk) <= MAX_STREAM_CHUNK
            sent += chunk
        sent += b"".join(end.on_credit(size))
    sent += b"".join(end.on_credit(2**30))
    assert bytes(sent) == bytes(written)


class TwoEnds(RuleBasedStateMachine):
    """Two honest ends joined by two in-order pipes: whatever they write, read and credit, no
    end ever sees data beyond what it granted, buffers stay bounded, and bytes arrive intact
    and in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = [
            StreamEnd(max_buffer=4 * CIRCUIT_WINDOW),
            StreamEnd(max_buffer=4 * CIRCUIT_WINDOW),
        ]
        # messages in flight towards end i: ("data", bytes) or ("credit", n)
        self.pipes: list[deque[tuple[str, object]]] = [deque(), deque()]
        self.written = [bytearray(), bytearray()]  # by end i
        self.received = [bytearray(), bytearray()]  # delivered to end i, not yet consumed
        self.read = [bytearray(), bytearray()]  # consumed by end i
        self.counter = 0

    def _send(self, sender: int, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.pipes[1 - sender].append(("data", chunk))

    @rule(sender=st.integers(0, 1), size=st.integers(1, 200_000))
    def write(self, sender: int, size: int) -> None:
        end = self.ends[sender]
        if end.buffered + size - end.send_credit > end.max_buffer:
            with pytest.raises(StreamBufferFull):
                end.write(b"z" * size)
            return
        self.counter += 1
        data = bytes([self.counter % 256]) * size
        self.written[sender] += data
        self._send(sender, end.write(data))

    @precondition(lambda self: self.pipes[0] or self.pipes[1])
    @rule(to=st.integers(0, 1))
    def deliver(self, to: int) -> None:
        if not self.pipes[to]:
            return
        kind, value = self.pipes[to].popleft()
        end = self.ends[to]
        if kind == "data":
            assert isinstance(value, bytes)
            end.on_data(len(value))  # an honest peer never raises here
            self.received[to] += value
        else:
            assert isinstance(value, int)
            self._send(to, end.on_credit(value))

    @rule(reader=st.integers(0, 1), size=st.integers(0, 200_000))
    def consume(self, reader: int, size: int) -> None:
        size = min(size, len(self.received[reader]))
        self.read[reader] += self.received[reader][:size]
        del self.received[reader][:size]
        grant = self.ends[reader].consumed(size)
        if grant:
            self.pipes[1 - reader].append(("credit", grant))

    @invariant()
    def within_credit(self) -> None:
        for i in (0, 1):
            in_flight = sum(len(v) for k, v in self.pipes[i] if k == "data")  # type: ignore[arg-type]
            end = self.ends[i]
            assert in_flight <= end.recv_allowance
            assert end.unconsumed + in_flight <= CIRCUIT_WINDOW
            assert end.buffered <= end.max_buffer

    @invariant()
    def in_order(self) -> None:
        for i in (0, 1):
            got = bytes(self.read[1 - i] + self.received[1 - i])
            assert bytes(self.written[i]).startswith(got)


TestTwoEnds = TwoEnds.TestCase
TestTwoEnds.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
