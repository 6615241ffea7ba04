"""One QMP link as a sans-IO state machine: handshake, then channel, fed bytes and time.

Usage (either side)::

    conn = Connection.initiator(identity, record, expected=peer_record_or_id, now=t)
    conn.start(now)                       # initiator only
    transport.write(conn.data_to_send())
    for event in conn.receive_data(received_bytes, now): ...
    conn.send(payload, now); conn.ping(b"...", now); conn.close()
    for event in conn.tick(now): ...      # timeouts, at or after conn.next_deadline()

Time: the connection never reads a clock. :meth:`Connection.next_deadline` says when it next
needs :meth:`Connection.tick` (as aioquic's ``get_timer()``); a driver arms one timer there and
re-arms it after each call. Calling ``tick`` early is harmless (it does nothing), so a driver may
keep a timer that is earlier than the deadline and simply re-arm when it fires: the idle deadline
moves later with every frame received, and re-arming a timer for each would cost more than the
occasional early wake-up.

Every protocol failure closes the link (an ERROR or CLOSE frame goes out first when possible)
and surfaces as :class:`ConnectionClosed`; it never raises out of ``receive_data``. Application
calls made in the wrong state raise :class:`ConnectionStateError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity, PeerRecord, PeerRecordError
from qiz.identity.peer_record import MAX_RECORD_SIZE, VerifiedRecordCache
from qiz.qmp.channel import DATA_OVERHEAD, Channel, ChannelConfig, InnerType
from qiz.qmp.cookie import CookieAuthority, open_cookie_frame
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import HEADER_SIZE, MAX_BODY, FrameDecoder, FrameKind, encode_frame
from qiz.qmp.handshake import (
    VERSION,
    HandshakeResult,
    InitiatorHandshake,
    ResponderHandshake,
    Rng,
)

MAX_COOKIE_RETRIES = 2
HANDSHAKE_MAX_BODY = 32 * 1024  # INIT carries a ~6.8 KB peer record; nothing needs more
MAX_ERROR_REASON = 200
# Payloads from this size on are sealed straight into their frame's buffer (Channel.seal_frame):
# below it, building the pieces and joining them costs less than the buffer's setup.
SEAL_IN_PLACE_FROM = 2048
# Seconds a responder waits for the CONFIRM after sending its RESPONSE: an honest initiator
# answers after one decapsulation and one network trip. A peer that sends INITs and never
# confirms holds a pending slot (and made us decapsulate) for this long, not for the whole
# handshake timeout.
CONFIRM_TIMEOUT = 2.0


_DATA = FrameKind.DATA
_APP = InnerType.APP
_DATA_FRAME = FrameKind.DATA << 24  # a DATA frame header is (this | body length), 4 bytes


@dataclass(frozen=True)
class QmpConfig:
    """Limits and timers of one link. The defaults suit a LAN or the Internet."""

    # 1 MiB of payload: a storage piece is one message, and each message costs a round trip's
    # fixed CPU whatever its size (docs/store.md, "Throughput"). What a peer can make a node hold
    # is bounded in bytes, not messages, where that matters (rpc.MAX_INFLIGHT_BYTES_IN,
    # transport.MAX_QUEUED_BYTES); a peer that fills a frame has sent its bytes.
    max_frame_body: int = 1024 * 1024 + DATA_OVERHEAD
    max_outbound_buffer: int = 8 * 1024 * 1024
    handshake_timeout: float = 10.0
    confirm_timeout: float = CONFIRM_TIMEOUT  # responder: RESPONSE sent, CONFIRM due
    idle_timeout: float = 90.0
    channel: ChannelConfig = field(default_factory=ChannelConfig)

    def __post_init__(self) -> None:
        if not DATA_OVERHEAD < self.max_frame_body <= MAX_BODY:
            raise ValueError(f"max_frame_body must be in ({DATA_OVERHEAD}, {MAX_BODY}]")

    @property
    def max_payload(self) -> int:
        return self.max_frame_body - DATA_OVERHEAD


class State(enum.Enum):
    START = "start"
    AWAIT_RECORD = "await-record"  # initiator sent HELLO
    AWAIT_RESPONSE = "await-response"  # initiator sent INIT
    AWAIT_HELLO_OR_INIT = "await-hello-or-init"  # responder, fresh
    AWAIT_CONFIRM = "await-confirm"  # responder sent RESPONSE
    ESTABLISHED = "established"
    CLOSED = "closed"


_ESTABLISHED = State.ESTABLISHED  # module names: an enum member lookup costs a call each
_CLOSED = State.CLOSED


class ConnectionStateError(RuntimeError):
    """An application call that the link's state does not allow (send before established...)."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    peer: PeerRecord
    handshake_hash: bytes


@dataclass(frozen=True, slots=True)
class MessageReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameDropped:
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    code: ErrorCode
    reason: str
    by_peer: bool


Event = HandshakeComplete | MessageReceived | PongReceived | FrameDropped | ConnectionClosed


class Connection:
    """A QMP link. Build with :meth:`initiator` or :meth:`responder`."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        local_record: PeerRecord,
        initiator: bool,
        now: float,
        config: QmpConfig,
        rng: Rng | None,
    ) -> None:
        self.identity = identity
        self.local_record = local_record
        self.is_initiator = initiator
        self.config = config
        self._max_payload = config.max_payload  # read per message sent: computed once
        self.rng = rng
        self.state = State.START if initiator else State.AWAIT_HELLO_OR_INIT
        self.started_at = now
        self._confirm_due: float | None = None  # responder in AWAIT_CONFIRM: CONFIRM due by
        self.last_received = now
        self.peer: PeerRecord | None = None
        self.handshake_hash: bytes | None = None
        self.close_reason: ConnectionClosed | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_dropped = 0
        self._decoder = FrameDecoder(HANDSHAKE_MAX_BODY)  # raised once the channel is up
        self._out: list[bytes | bytearray] = []  # frames (in pieces) waiting for the transport
        self._out_size = 0
        self._channel: Channel | None = None
        # initiator
        self._expected_id: NodeId | None = None
        self._initiator_hs: InitiatorHandshake | None = None
        self._cookie_retries = 0
        # responder
        self.peer_address = ""
        self._cookies: CookieAuthority | None = None
        self._records: VerifiedRecordCache | None = None
        self._hello_answered = False
        self.kem_operations = 0

    # ----------------------------------------------------------------- construction

    @classmethod
    def initiator(
        cls,
        identity: NodeIdentity,
        local_record: PeerRecord,
        *,
        expected: PeerRecord | NodeId | None,
        now: float,
        config: QmpConfig | None = None,
        rng: Rng | None = None,
    ) -> Connection:
        """Dial side. ``expected`` is the responder's record (one round trip), its id (the
        record is fetched and must match), or None (accept whoever answers)."""
        conn = cls(
            identity=identity,
            local_record=local_record,
            initiator=True,
            now=now,
            config=config or QmpConfig(),
            rng=rng,
        )
        if isinstance(expected, PeerRecord):
            conn.peer = expected
            conn._expected_id = expected.node_id
        else:
            conn._expected_id = expected
        return conn

    @classmethod
    def responder(
        cls,
        identity: NodeIdentity,
        local_record: PeerRecord,
        *,
        cookies: CookieAuthority,
        peer_address: str,
        now: float,
        config: QmpConfig | None = None,
        rng: Rng | None = None,
        records: VerifiedRecordCache | None = None,
    ) -> Connection:
        """Listen side. ``cookies`` and ``records`` are shared by all of a node's inbound
        links: the anti-DoS state and the cache of peer records that already verified."""
        conn = cls(
            identity=identity,
            local_record=local_record,
            initiator=False,
            now=now,
            config=config or QmpConfig(),
            rng=rng,
        )
        conn._cookies = cookies
        conn._records = records
        conn.peer_address = peer_address
        return conn

    # ----------------------------------------------------------------- public API

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def data_to_send(self) -> bytes | bytearray:
        """Everything queued for the peer. A single queued frame is returned as it is (for a
        large message, a bytearray nothing else refers to), not copied into a new ``bytes``."""
        out = self._out
        data = out.pop() if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        self.bytes_sent += len(data)
        return data

    @property
    def outbound_buffered(self) -> int:
        return self._out_size

    def start(self, now: float) -> None:
        """Initiator: send HELLO (no record known) or INIT (record known)."""
        if not self.is_initiator or self.state is not State.START:
            raise ConnectionStateError("start() is for a fresh initiator")
        if self.peer is None:
            self._emit(FrameKind.HELLO, VERSION.to_bytes(2, "big"))
            self.state = State.AWAIT_RECORD
        else:
            self._send_init(now)

    def send(self, payload: bytes, now: float) -> None:
        """Queue an application message. Raises if the link is not up, the payload is over
        the frame limit, or the outbound buffer is full (the caller must wait and retry)."""
        self._send_inner(InnerType.APP, payload, now)

    def ping(self, payload: bytes, now: float) -> None:
        self._send_inner(InnerType.PING, payload, now)

    def close(
        self, code: ErrorCode = ErrorCode.NORMAL_CLOSE, reason: str = "", now: float = 0.0
    ) -> None:
        """Close the link, telling the peer why when a channel exists."""
        if self.state is State.CLOSED:
            return
        self._fail(QmpError(code, reason or code.name.lower()), now, by_peer=False, notify=True)

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is _CLOSED:
            return []
        self.bytes_received += len(data)
        self.last_received = now
        events: list[Event] = []
        try:
            for kind, body in self._decoder.feed_pairs(data):
                if kind is _DATA and self.state is _ESTABLISHED and self._channel is not None:
                    # The hot path, as _on_data for an established link's application message.
                    opened = self._channel.open(body, now)
                    if opened is not None and opened[0] is _APP:
                        events.append(MessageReceived(opened[1]))
                        continue
                    self._on_opened(opened, now, events)
                else:
                    self._handle(kind, body, now, events)
                if self.state is _CLOSED:
                    break
        except QmpError as exc:
            events.append(self._fail(exc, now, by_peer=False, notify=True))
        return events

    def next_deadline(self) -> float | None:
        """The time at which :meth:`tick` next has something to do, or None (closed).

        Before the channel is up: the handshake timeout (from the first byte of the link, so a
        peer cannot keep a half-open link alive by trickling handshake bytes). Once up: the
        idle timeout (from the last bytes received) and the channel's erasure of its previous
        receive key. ``send`` and ``ping`` never move it earlier; ``receive_data`` may (a rekey
        starts the previous key's grace), and the handshake's end replaces its deadline.
        """
        state = self.state
        if state is _CLOSED:
            return None
        if state is not _ESTABLISHED:
            return self._handshake_deadline()
        deadline = self.last_received + self.config.idle_timeout
        if self._channel is not None:
            erase = self._channel.erase_at  # Channel.next_deadline(), read without a call
            if erase is not None and erase < deadline:
                deadline = erase
        return deadline

    def _handshake_deadline(self) -> float:
        """The handshake timeout, or the CONFIRM deadline if that comes first."""
        deadline = self.started_at + self.config.handshake_timeout
        if self._confirm_due is not None and self._confirm_due < deadline:
            return self._confirm_due
        return deadline

    def tick(self, now: float) -> list[Event]:
        """Do what is due at ``now``: the handshake and idle timeouts (which close the link) and
        the erasure of an expired previous key. Before :meth:`next_deadline` it does nothing."""
        if self.state is State.CLOSED:
            return []
        if not self.established and now >= self._handshake_deadline():
            return [
                self._fail(
                    QmpError(ErrorCode.HANDSHAKE_TIMEOUT, "handshake did not finish in time"),
                    now,
                    by_peer=False,
                    notify=True,
                )
            ]
        if self.established and now >= self.last_received + self.config.idle_timeout:
            return [
                self._fail(
                    QmpError(ErrorCode.IDLE_TIMEOUT, "nothing received for too long"),
                    now,
                    by_peer=False,
                    notify=True,
                )
            ]
        if self._channel is not None:
            self._channel.tick(now)
        return []

    # ----------------------------------------------------------------- internals

    def _emit(self, kind: FrameKind, body: bytes) -> None:
        self._out.append(encode_frame(kind, body))
        self._out_size += HEADER_SIZE + len(body)

    def _emit_data(self, inner: InnerType, payload: bytes, now: float) -> None:
        """Queue a DATA frame: frame header, channel header and ciphertext as three pieces."""
        assert self._channel is not None
        if len(payload) >= SEAL_IN_PLACE_FROM:
            frame = self._channel.seal_frame(inner, payload, now)
            self._out.append(frame)
            self._out_size += len(frame)
            return
        header, sealed = self._channel.seal_parts(inner, payload, now)
        length = len(header) + len(sealed)
        # the OR needs length < 2**24 (else it would change the kind byte): max_payload is
        # under max_frame_body, which QmpConfig holds to MAX_BODY = 2**24 - 1
        self._out += ((_DATA_FRAME | length).to_bytes(HEADER_SIZE, "big"), header, sealed)
        self._out_size += HEADER_SIZE + length

    def _send_inner(self, inner: InnerType, payload: bytes, now: float) -> None:
        if self.state is not _ESTABLISHED or self._channel is None:
            raise ConnectionStateError(f"link is {self.state.value}, not established")
        config = self.config
        size = len(payload)
        if size > self._max_payload:
            raise ValueError(
                f"payload of {size} bytes is over the {config.max_payload}-byte frame limit"
            )
        if self._out_size + size > config.max_outbound_buffer:
            raise BufferError("outbound buffer full: wait for the transport to drain")
        if size >= SEAL_IN_PLACE_FROM:
            self._emit_data(inner, payload, now)
            return
        # _emit_data's small-payload case, without the call: every RPC message takes it
        header, sealed = self._channel.seal_parts(inner, payload, now)
        length = len(header) + len(sealed)
        # the OR needs length < 2**24 (else it would change the kind byte): max_payload is
        # under max_frame_body, which QmpConfig holds to MAX_BODY = 2**24 - 1
        self._out += ((_DATA_FRAME | length).to_bytes(HEADER_SIZE, "big"), header, sealed)
        self._out_size += HEADER_SIZE + length

    def _send_init(self, now: float) -> None:
        assert self.peer is not None
        self._initiator_hs = InitiatorHandshake(
            self.identity, self.local_record, self.peer, rng=self.rng
        )
        self.kem_operations += 1
        self._emit(FrameKind.INIT, self._initiator_hs.init_message())
        self.state = State.AWAIT_RESPONSE

    def _fail(self, exc: QmpError, now: float, *, by_peer: bool, notify: bool) -> ConnectionClosed:
        reason = _clip(str(exc))
        if notify and not by_peer:
            body = int(exc.code).to_bytes(2, "big") + reason.encode("utf-8", "replace")
            try:
                if self._channel is not None and self.state in (
                    State.ESTABLISHED,
                    State.AWAIT_CONFIRM,
                ):
                    self._emit_data(InnerType.CLOSE, body, now)
                else:
                    self._emit(FrameKind.ERROR, body)
            except QmpError:
                pass
        self.state = State.CLOSED
        self._channel = None
        event = ConnectionClosed(exc.code, reason, by_peer)
        self.close_reason = event
        return event

    def _handle(self, kind: FrameKind, body: bytes, now: float, events: list[Event]) -> None:
        if kind is FrameKind.DATA and self.state is State.ESTABLISHED:  # the hot path
            self._on_data(kind, body, now, events)
            return
        if kind is FrameKind.ERROR:
            if self.state is State.ESTABLISHED:
                # Plaintext and unauthenticated: after the handshake only CLOSE may end a link.
                raise QmpError(ErrorCode.PROTOCOL_ERROR, "plaintext ERROR on an established link")
            code, reason = _parse_error(body)
            events.append(self._fail(QmpError(code, reason), now, by_peer=True, notify=False))
            return
        handler = {
            State.AWAIT_RECORD: self._on_record_state,
            State.AWAIT_RESPONSE: self._on_response_state,
            State.AWAIT_HELLO_OR_INIT: self._on_responder_start,
            State.AWAIT_CONFIRM: self._on_data,
            State.ESTABLISHED: self._on_data,
        }.get(self.state)
        if handler is None:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"unexpected {kind.name} frame")
        handler(kind, body, now, events)

    # initiator ------------------------------------------------------------------

    def _on_record_state(
        self, kind: FrameKind, body: bytes, now: float, events: list[Event]
    ) -> None:
        if kind is not FrameKind.RECORD:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"expected RECORD, got {kind.name}")
        if len(body) > MAX_RECORD_SIZE:
            raise QmpError(ErrorCode.BAD_PEER_RECORD, "responder's record is too large")
        try:
            record = PeerRecord.verify(body, now=now)
        except PeerRecordError as exc:
            raise QmpError(ErrorCode.BAD_PEER_RECORD, f"responder's record: {exc}") from None
        if self._expected_id is not None and record.node_id != self._expected_id:
            raise QmpError(
                ErrorCode.UNEXPECTED_PEER,
                f"expected {self._expected_id}, but {record.node_id} answered",
            )
        self.peer = record
        self._send_init(now)

    def _on_response_state(
        self, kind: FrameKind, body: bytes, now: float, events: list[Event]
    ) -> None:
        assert self._initiator_hs is not None
        if kind is FrameKind.COOKIE:
            if self._cookie_retries >= MAX_COOKIE_RETRIES:
                raise QmpError(ErrorCode.BUSY, "responder keeps demanding a cookie")
            self._cookie_retries += 1
            assert self.peer is not None
            cookie = open_cookie_frame(self.peer.xwing_key.raw, body, self._initiator_hs.mac1)
            self._initiator_hs.set_cookie(cookie)
            self._emit(FrameKind.INIT, self._initiator_hs.init_message())
            return
        if kind is not FrameKind.RESPONSE:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"expected RESPONSE, got {kind.name}")
        result, _payload = self._initiator_hs.read_response(body)
        self._initiator_hs = None
        self._establish(result, now)
        # Key confirmation: R learns that we hold our static key from this first frame.
        self._emit_data(InnerType.CONFIRM, b"", now)
        events.append(HandshakeComplete(result.peer, result.handshake_hash))

    # responder ------------------------------------------------------------------

    def _on_responder_start(
        self, kind: FrameKind, body: bytes, now: float, events: list[Event]
    ) -> None:
        if kind is FrameKind.HELLO:
            if self._hello_answered:
                raise QmpError(ErrorCode.PROTOCOL_ERROR, "a second HELLO on one connection")
            self._hello_answered = True
            if len(body) != 2:
                raise QmpError(ErrorCode.PROTOCOL_ERROR, "HELLO has the wrong size")
            if int.from_bytes(body, "big") != VERSION:
                raise QmpError(ErrorCode.UNSUPPORTED_VERSION, "unsupported QMP version")
            self._emit(FrameKind.RECORD, self.local_record.raw)
            return
        if kind is not FrameKind.INIT:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"expected HELLO or INIT, got {kind.name}")
        assert self._cookies is not None
        message, mac1, mac2 = ResponderHandshake.split_init(body)
        if not self._cookies.check_mac1(message, mac1):
            raise QmpError(
                ErrorCode.AUTHENTICATION_FAILED,
                "INIT mac1 is wrong: the initiator does not hold this node's key",
            )
        # mac2 is all zeros until the initiator holds a cookie; any other value must be valid,
        # under load or not, so that no bit of INIT can change unnoticed.
        has_mac2 = mac2 != bytes(len(mac2))
        mac2_ok = has_mac2 and self._cookies.check_mac2(
            self.peer_address, message + mac1, mac2, now
        )
        if has_mac2 and not mac2_ok and not self._cookies.under_load:
            raise QmpError(ErrorCode.AUTHENTICATION_FAILED, "INIT mac2 is wrong")
        if self._cookies.under_load and not mac2_ok:
            self._emit(FrameKind.COOKIE, self._cookies.cookie_frame(self.peer_address, mac1, now))
            return
        ciphertext = ResponderHandshake.init_ciphertext(message)
        if self._cookies.replayed(ciphertext, now):
            raise QmpError(ErrorCode.AUTHENTICATION_FAILED, "replayed INIT (KEM ciphertext seen)")
        if not self._cookies.allow_kem(self.peer_address, now):
            # The sender's network used its KEM budget: no decapsulation. Without a cookie it
            # gets one (a retry a moment later may find a token); with one, a refusal.
            if mac2_ok:
                raise QmpError(ErrorCode.BUSY, "too many handshakes from this network")
            self._emit(FrameKind.COOKIE, self._cookies.cookie_frame(self.peer_address, mac1, now))
            return
        self._cookies.remember(ciphertext, now)
        self.kem_operations += 1
        responder = ResponderHandshake(self.identity, self.local_record, self._records)
        response, result, _payload = responder.respond(body, now=now, rng=self.rng)
        self._emit(FrameKind.RESPONSE, response)
        self._establish(result, now)
        self.state = State.AWAIT_CONFIRM
        self._confirm_due = now + self.config.confirm_timeout

    # both -----------------------------------------------------------------------

    def _establish(self, result: HandshakeResult, now: float) -> None:
        self.peer = result.peer
        self.handshake_hash = result.handshake_hash
        self._channel = Channel(
            result.send_key, result.receive_key, now=now, config=self.config.channel
        )
        self._decoder.max_body = self.config.max_frame_body
        self.state = State.ESTABLISHED

    def _on_data(self, kind: FrameKind, body: bytes, now: float, events: list[Event]) -> None:
        if kind is not FrameKind.DATA or self._channel is None:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"unexpected {kind.name} frame on a channel")
        self._on_opened(self._channel.open(body, now), now, events)

    def _on_opened(
        self,
        opened: tuple[InnerType, bytes | bytearray] | None,
        now: float,
        events: list[Event],
    ) -> None:
        """What an opened DATA frame (``None``: dropped as a replay) does to the link."""
        if opened is None:
            self.frames_dropped += 1
            events.append(FrameDropped("replayed or too old"))
            return
        if self.state is State.AWAIT_CONFIRM:
            self.state = State.ESTABLISHED
            assert self.peer is not None and self.handshake_hash is not None
            events.append(HandshakeComplete(self.peer, self.handshake_hash))
        inner, payload = opened
        if inner is InnerType.APP:
            events.append(MessageReceived(payload))
        elif inner is InnerType.PING:
            if self._out_size + len(payload) > self.config.max_outbound_buffer:
                raise QmpError(ErrorCode.BUFFER_LIMIT, "peer sends pings but does not read")
            self._emit_data(InnerType.PONG, payload, now)
        elif inner is InnerType.PONG:
            events.append(PongReceived(payload))
        elif inner is InnerType.CLOSE:
            code, reason = _parse_error(payload)
            events.append(self._fail(QmpError(code, reason), now, by_peer=True, notify=False))


def _clip(text: str) -> str:
    """At most MAX_ERROR_REASON bytes of UTF-8, cut at a character boundary."""
    return text.encode("utf-8", "replace")[:MAX_ERROR_REASON].decode("utf-8", "ignore")


def _parse_error(body: bytes) -> tuple[ErrorCode, str]:
    if len(body) < 2:
        return ErrorCode.PROTOCOL_ERROR, "malformed error frame"
    try:
        code = ErrorCode(int.from_bytes(body[:2], "big"))
    except ValueError:
        code = ErrorCode.PROTOCOL_ERROR
    reason = bytes(body[2 : 2 + MAX_ERROR_REASON]).decode("utf-8", "replace")
    return code, reason


__all__ = [
    "Connection",
    "ConnectionClosed",
    "ConnectionStateError",
    "FrameDropped",
    "HandshakeComplete",
    "MessageReceived",
    "PongReceived",
    "QmpConfig",
    "State",
]
