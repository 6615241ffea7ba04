"""How a person names a peer on the command line: an address, a node id, or a prefix of one.

Every command that takes a peer (``ping``, ``connect``, ``resolve``, a name's owner) accepts the
same three forms, so they are told apart here, once:

* an address, ``ip:port`` or ``ID@ip:port`` (the id pins who must answer): dialled as given;
* a full node id, ``qizn1...``: looked up among the node's peers, else through the DHT;
* a prefix of a node id, with or without ``qizn1`` (at least :data:`MIN_PREFIX` characters after
  it), as job ids take a prefix: it must name exactly one node the running node knows (a linked
  or departed peer, a routing-table contact, itself). A prefix never goes to the DHT: a lookup
  needs the whole id, and guessing among strangers would link to whoever matched first.

Parsing is pure (:func:`parse_peer_ref`); matching a prefix needs the candidates, which the node
supplies (:func:`match_prefix`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qiz import NotFound, QizError
from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import BODY_LENGTH, NodeId
from qiz.identity.peer_record import parse_address

MIN_PREFIX = 4  # characters after "qizn1": fewer would match half the mesh
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
EXAMPLE_PORT = 7451  # the port in the example address of "an address needs a port"
CANDIDATES_SHOWN = 5  # an ambiguous prefix's error lists this many candidates at most


class UnknownPeer(NotFound):
    """A prefix that matches no node the running node knows."""


class AmbiguousPeer(QizError):
    """A prefix that matches more than one known node."""

    http_status = 409


@dataclass(frozen=True)
class PeerRef:
    """One of: ``address`` (with an optional expected ``node_id``), a full ``node_id``, or a
    ``prefix`` (the id's text form, ``qizn1`` included, cut short)."""

    text: str
    address: str | None = None
    node_id: NodeId | None = None
    prefix: str | None = None


def parse_peer_ref(text: str) -> PeerRef:
    """Tell the three forms apart; :class:`InvalidIdentifier` (or :class:`ValueError` for a bad
    address) with the reason when ``text`` is none of them."""
    if not isinstance(text, str):
        raise InvalidIdentifier("a peer is an address, a node id or a prefix of one, as text")
    text = text.strip()
    try:
        if "@" in text or ":" in text:  # ids and prefixes have neither
            ident, at, address = text.rpartition("@")
            parse_address(address)
            return PeerRef(text, address=address, node_id=NodeId.parse(ident) if at else None)
        lowered = text.lower()
        body = lowered.removeprefix(NodeId.PREFIX)
        if len(body) >= BODY_LENGTH:  # the whole id: its checksum is checked
            return PeerRef(text, node_id=NodeId.parse(NodeId.PREFIX + body))
    except ValueError as exc:  # InvalidIdentifier too: say which text was meant
        raise InvalidIdentifier(f"{text!r} is not a peer: {exc}") from None
    if "." in text and text.isprintable() and " " not in text:  # a host without its port
        raise InvalidIdentifier(f"{text}: an address needs a port, e.g. {text}:{EXAMPLE_PORT}")
    bad = sorted({c for c in body if c not in _BASE32})
    if bad:
        raise InvalidIdentifier(
            f"{text!r} is not a peer: an address is ip:port, and a node id (or a prefix of one) "
            f"has only a-z and 2-7 after {NodeId.PREFIX!r}, not {bad[0]!r}"
        )
    if len(body) < MIN_PREFIX:
        raise InvalidIdentifier(
            f"{text!r} is too short to name a peer: give at least {MIN_PREFIX} characters of "
            f"its id after {NodeId.PREFIX!r}"
        )
    return PeerRef(text, prefix=NodeId.PREFIX + body)


def match_prefix(prefix: str, candidates: Iterable[NodeId], said: str | None = None) -> NodeId:
    """The one candidate whose id starts with ``prefix``; :class:`UnknownPeer` if none does,
    :class:`AmbiguousPeer` (listing some) if several do. ``said`` is the text the user typed
    (:attr:`PeerRef.text`), which the errors repeat: not ``prefix``, which may have gained a
    ``qizn1`` they never typed."""
    found = sorted({c for c in candidates if str(c).startswith(prefix)}, key=str)
    if len(found) == 1:
        return found[0]
    said = prefix if said is None else said.strip()
    if not found:
        raise UnknownPeer(
            f"{said!r} names no known peer: no node id this node knows (linked, departed or in "
            "the routing table) starts with it; an address is ip:port, and a full id is looked "
            "up in the DHT"
        )
    shown = ", ".join(str(c)[: len(prefix) + 6] + "..." for c in found[:CANDIDATES_SHOWN])
    more = f" and {len(found) - CANDIDATES_SHOWN} more" if len(found) > CANDIDATES_SHOWN else ""
    raise AmbiguousPeer(f"{said!r} matches {len(found)} peers: {shown}{more}; give more characters")
