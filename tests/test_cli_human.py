"""The one form of moments, durations and sizes in human output."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from qiz.cli.human import duration, moment, size


def test_moment_is_iso_utc() -> None:
    assert moment(0) == "1970-01-01T00:00:00Z"
    assert moment(1796354340.7) == "2026-12-04T03:19:00Z"
    assert moment(None) == "-"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_moment_round_trips_to_the_second(epoch) -> None:
    back = dt.datetime.fromisoformat(moment(epoch).replace("Z", "+00:00")).timestamp()
    assert back == int(epoch)


def test_durations() -> None:
    assert duration(0.85) == "850 ms"
    assert duration(12.34) == "12.3 s"
    assert duration(245) == "4m05s"
    assert duration(7380) == "2h03m"
    assert duration(3 * 86400 + 4 * 3600) == "3d04h"
    assert duration(None) == "-"


def test_sizes() -> None:
    assert size(512) == "512 B"
    assert size(1536) == "1.5 KiB"
    assert size(12 << 20) == "12.0 MiB"
    assert size(3 << 40) == "3.0 TiB"
    assert size(5 << 50) == "5120.0 TiB"
