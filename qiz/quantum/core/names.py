"""Sizes read out of short names a peer sends (``tfim:8``, ``random:20,3``, ``hva:4``, ``qubits
12``, ``p cnf 5 4``): bounded before anything is converted or built.

A job spec of 50 bytes can name a size; the name must be refused by what it says, at once, not
after the size was built (a graph of two million nodes) or handed to ``int()`` (which raises
``ValueError`` past 4,300 digits, outside the layer's errors). :func:`whole` reads at most as
many digits as its bound has, so its cost is a few characters whatever the text.
"""

from __future__ import annotations

SHOWN_CHARS = 40  # how much of a peer's name an error message quotes (one line, whatever it sent)


def whole(text: str, hi: int) -> int | None:
    """The whole number spelt by ``text`` (ASCII digits, leading zeros allowed) if it is at most
    ``hi``; None for anything else (a sign, other characters, or more than ``hi``)."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(hi)):
        return None
    value = int(digits)
    return value if value <= hi else None


def shown(text: str) -> str:
    """``repr(text)`` cut to :data:`SHOWN_CHARS` characters, for an error message."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return repr(text[:SHOWN_CHARS]) + f"... ({len(text)} characters)"
