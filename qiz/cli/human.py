"""How human output writes moments, durations and sizes: one form everywhere.

JSON answers keep numbers (seconds since the epoch, seconds, bytes: see docs/json/README.md);
people read ISO 8601 moments in UTC, short durations and sizes with binary units."""

from __future__ import annotations

import datetime as dt
import math

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def moment(epoch_s: float | None) -> str:
    """A moment as ISO 8601 in UTC to the second (``2026-12-04T03:19:00Z``); ``-`` when unknown."""
    if epoch_s is None:
        return "-"
    when = dt.datetime.fromtimestamp(math.floor(epoch_s), dt.UTC)
    return when.isoformat().replace("+00:00", "Z")


def duration(seconds: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.3 s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def plural(count: int, word: str) -> str:
    """``1 node``, ``2 nodes``: a count with its noun (regular plurals only)."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def size(n_bytes: float | None) -> str:
    """A size with a binary unit: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    if n_bytes is None:
        return "-"
    value = float(n_bytes)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
