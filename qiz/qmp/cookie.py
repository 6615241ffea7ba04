"""Anti-DoS for the first handshake message, in the manner of WireGuard's mac1/mac2 cookies.

* ``mac1`` = HMAC-SHA256(SHA3-256("qmp/1 mac1" || responder X-Wing key), INIT without macs)
  truncated to 16 bytes. Only someone who knows the responder's public key can make it;
  checking it costs one HMAC and no KEM operation, and a wrong one gets a bare ERROR frame.
  (The key is public -- HELLO hands out the record -- so mac1 stops blind floods, not
  targeted ones; mac2 is for those.)
* Under load the responder demands ``mac2`` = HMAC-SHA256(cookie, INIT up to and with mac1)
  truncated to 16 bytes, where cookie = HMAC-SHA256(secret, peer address) truncated to 16 bytes
  and ``secret`` rotates every two minutes. It answers an INIT without a valid mac2 with a
  COOKIE frame: nonce (12) || AES-256-GCM(key = SHA3-256("qmp/1 cookie" || responder X-Wing
  key), nonce, cookie, aad = mac1). A flood of INITs therefore costs the responder only HMACs
  until the sender proves, by a round trip, that it can receive at its address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable

from qiz.crypto.aead import Aead
from qiz.crypto.errors import DecryptionFailed
from qiz.qmp.errors import ErrorCode, QmpError

MAC_SIZE = 16
COOKIE_SIZE = 16
COOKIE_FRAME_SIZE = 12 + COOKIE_SIZE + 16
SECRET_LIFETIME = 120.0
MAX_RECENT_INITS = 65536


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_SIZE]


def mac1_key(responder_xwing: bytes) -> bytes:
    return hashlib.sha3_256(b"qmp/1 mac1" + responder_xwing).digest()


def cookie_key(responder_xwing: bytes) -> bytes:
    return hashlib.sha3_256(b"qmp/1 cookie" + responder_xwing).digest()


def compute_mac1(responder_xwing: bytes, message: bytes) -> bytes:
    return _mac(mac1_key(responder_xwing), message)


def compute_mac2(cookie: bytes, message_with_mac1: bytes) -> bytes:
    return _mac(cookie, message_with_mac1)


def open_cookie_frame(responder_xwing: bytes, body: bytes, mac1: bytes) -> bytes:
    """The cookie inside a COOKIE frame; :class:`QmpError` if it does not authenticate."""
    if len(body) != COOKIE_FRAME_SIZE:
        raise QmpError(ErrorCode.PROTOCOL_ERROR, "COOKIE frame has the wrong size")
    try:
        return Aead(cookie_key(responder_xwing)).decrypt(body[:12], body[12:], mac1)
    except DecryptionFailed:
        raise QmpError(
            ErrorCode.AUTHENTICATION_FAILED, "COOKIE frame does not authenticate"
        ) from None


class CookieAuthority:
    """Responder-wide cookie state: the rotating secret and the load flag.

    One instance serves all of a node's inbound connections. ``under_load`` is set by whoever
    watches the load (the transport counts handshakes in progress); tests set it directly.
    """

    def __init__(
        self,
        responder_xwing: bytes,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        now: float = 0.0,
    ) -> None:
        self._responder_xwing = responder_xwing
        self._mac1_key = mac1_key(responder_xwing)
        self._cookie_aead = Aead(cookie_key(responder_xwing))
        self._rng = rng
        self._secret = rng(32)
        self._previous = self._secret
        self._rotated_at = now
        self.under_load = False
        self.cookies_sent = 0
        self.replays_refused = 0
        self._recent_inits: OrderedDict[bytes, float] = OrderedDict()

    def replayed(self, mac1: bytes, now: float) -> bool:
        """True if an INIT with this mac1 was already processed in the last two minutes.

        A byte-identical INIT replayed on new connections would cost the responder its KEM
        work each time for no cost to the sender (it cannot finish the handshake, but it need
        not). mac1 covers the whole INIT, so it names it; the INIT a cookie retry resends was
        answered with a COOKIE, not processed, so it passes.
        """
        while self._recent_inits:
            oldest, seen = next(iter(self._recent_inits.items()))
            if now - seen <= SECRET_LIFETIME and len(self._recent_inits) <= MAX_RECENT_INITS:
                break
            del self._recent_inits[oldest]
        if mac1 in self._recent_inits:
            self.replays_refused += 1
            return True
        self._recent_inits[mac1] = now
        return False

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= SECRET_LIFETIME:
            self._previous, self._secret = self._secret, self._rng(32)
            self._rotated_at = now

    def check_mac1(self, message: bytes, mac1: bytes) -> bool:
        return hmac.compare_digest(_mac(self._mac1_key, message), mac1)

    def _cookie(self, secret: bytes, peer_address: str) -> bytes:
        return _mac(secret, peer_address.encode("utf-8"))

    def check_mac2(
        self, peer_address: str, message_with_mac1: bytes, mac2: bytes, now: float
    ) -> bool:
        self._rotate(now)
        for secret in (self._secret, self._previous):
            expected = compute_mac2(self._cookie(secret, peer_address), message_with_mac1)
            if hmac.compare_digest(expected, mac2):
                return True
        return False

    def cookie_frame(self, peer_address: str, mac1: bytes, now: float) -> bytes:
        """The body of a COOKIE frame answering an INIT whose mac1 was ``mac1``."""
        self._rotate(now)
        nonce = self._rng(12)
        self.cookies_sent += 1
        cookie = self._cookie(self._secret, peer_address)
        return nonce + self._cookie_aead.encrypt(nonce, cookie, mac1)
