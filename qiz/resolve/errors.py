"""Errors of reaching peers, importable without an event loop (the sans-IO cores name them)."""

from __future__ import annotations

from qiz import QizError


class Unreachable(QizError, ConnectionError):
    """A peer could not be reached: no record, no address, or no link could be opened."""

    http_status = 502
