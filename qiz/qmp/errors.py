"""QMP error codes (sent in ERROR and CLOSE frames) and the exception that carries them."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Why a link was refused or closed. Values are on the wire (u16)."""

    NORMAL_CLOSE = 0
    PROTOCOL_ERROR = 1  # malformed or unexpected frame
    UNSUPPORTED_VERSION = 2
    FRAME_TOO_LARGE = 3
    BUFFER_LIMIT = 4  # peer sent more unprocessed bytes than the link buffers
    AUTHENTICATION_FAILED = 5  # AEAD tag, mac1 or key confirmation failed
    BAD_PEER_RECORD = 6
    UNEXPECTED_PEER = 7  # authenticated, but not the node the dialer expected
    HANDSHAKE_TIMEOUT = 8
    IDLE_TIMEOUT = 9
    KEY_EXPIRED = 10  # a key was used past its hard lifetime without rekeying
    REPLAY = 11
    BUSY = 12  # responder refuses more links
    SHUTDOWN = 13
    REFUSED = 14  # the node will not link to this peer now: banned, or its score too low


# The reason a link's first bytes could not be read as QMP (an HTTP server, say): dial() turns a
# handshake that failed with it into "ADDRESS answered but is not a QIZ node".
NOT_QMP = "the other end does not speak QMP"


class QmpError(Exception):
    """A protocol failure on one link. The link is closed; the node keeps running."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
