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
* Every INIT's KEM ciphertext ``ct1`` is remembered for two minutes and a second INIT with the
  same ``ct1`` is refused before any KEM work. The key is ``ct1``, not ``mac1``: anyone holding
  the node's public key can change a byte of the encrypted payload and recompute ``mac1``, but
  the decapsulation such an INIT costs is decided by ``ct1`` alone.
* KEM work is rate-limited per source prefix (a :class:`~qiz.ratelimit.KeyedRateLimiter`
  keyed on the prefix): an INIT from a prefix whose bucket is empty is answered with a COOKIE
  (no valid mac2) or refused with BUSY (valid mac2), never decapsulated. Making a fresh INIT
  costs the sender one encapsulation; processing it costs the node a decapsulation and two
  encapsulations, so the bucket, not the cookie, is what bounds the node's KEM work per
  network.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable

from qiz.crypto.aead import Aead
from qiz.crypto.errors import DecryptionFailed
from qiz.qmp.admission import address_prefix
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.ratelimit import KeyedRateLimiter

MAC_SIZE = 16
COOKIE_SIZE = 16
COOKIE_FRAME_SIZE = 12 + COOKIE_SIZE + 16
SECRET_LIFETIME = 120.0
# INIT ciphertexts remembered (16-byte digests, about 2 MiB at most): bounds the replay cache
MAX_RECENT_INITS = 65536
# KEM work per source prefix: decapsulations a /24 (IPv4) or /64 (IPv6) may make the node do,
# per second and in one burst. Protects the node's CPU from INIT floods (each costs it a
# decapsulation and two encapsulations, ~0.3 ms); a burst of 100 lets a local mesh of dozens of
# nodes on 127.0.0.1 join one bootstrap node at once.
KEM_RATE_PER_PREFIX = 50.0
KEM_BURST_PER_PREFIX = 100


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
        kem_rate: float = KEM_RATE_PER_PREFIX,
        kem_burst: int = KEM_BURST_PER_PREFIX,
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
        self.kem_operations = 0  # INITs decapsulated (each also costs two encapsulations)
        self.kem_limited = 0  # INITs not decapsulated because their prefix had no token
        self.kem_buckets = KeyedRateLimiter(kem_rate, kem_burst)
        self._recent_inits: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def _init_key(ciphertext: bytes) -> bytes:
        return hashlib.sha3_256(ciphertext).digest()[:16]

    def _expire(self, now: float) -> None:
        while self._recent_inits:
            oldest, seen = next(iter(self._recent_inits.items()))
            if now - seen <= SECRET_LIFETIME and len(self._recent_inits) <= MAX_RECENT_INITS:
                break
            del self._recent_inits[oldest]

    def replayed(self, ciphertext: bytes, now: float) -> bool:
        """True (and counted) if an INIT with this KEM ciphertext was decapsulated in the last
        two minutes.

        A replayed INIT -- byte for byte, or with its payload altered and mac1 recomputed --
        can never complete, but would cost the responder its KEM work each time for no cost to
        the sender. Only :meth:`remember` (called just before the decapsulation) adds to the
        cache, so the INIT a cookie retry resends, answered with a COOKIE the first time, passes.
        """
        self._expire(now)
        if self._init_key(ciphertext) in self._recent_inits:
            self.replays_refused += 1
            return True
        return False

    def remember(self, ciphertext: bytes, now: float) -> None:
        """Record that the INIT with this ciphertext is being decapsulated now."""
        self._expire(now)
        self._recent_inits[self._init_key(ciphertext)] = now

    def allow_kem(self, peer_address: str, now: float) -> bool:
        """Take one KEM token from ``peer_address``'s prefix (counted either way)."""
        if self.kem_buckets.allow(address_prefix(peer_address), now):
            self.kem_operations += 1
            return True
        self.kem_limited += 1
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
