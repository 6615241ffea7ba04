"""The node process's logging: one stderr handler that lets a repeated line through only a few
times a minute.

Why: a flood an attacker controls must not become a flood on the disk. 1,100 idle API
connections once made asyncio log 676,359 lines (300 MB) in 40 s, and a slowloris run 232k INFO
lines in 60 s; a log that grows at the attacker's pace fills the disk and buries the one line
that says what happened. Lines are "similar" when they come from the same call site at the same
level with the same text once its numbers are blanked (ports, fds, counts differ from line to
line of one flood). The first :data:`REPEAT_BURST` of them per :data:`REPEAT_WINDOW` seconds are
written; the rest are counted, and one summary line says how many were left out when the
window ends (written with the next line logged after it, or at exit).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEAT_BURST = 5  # similar lines written per window before the rest are only counted
REPEAT_WINDOW = 60.0  # seconds: how long a burst lasts; also bounds how late a summary comes
MAX_TRACKED = 4096  # distinct kinds of line remembered at once (the filter's own memory bound)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")

Key = tuple[str, int, str, int, str]


@dataclass
class _Window:
    start: float
    seen: int = 0
    suppressed: int = 0
    example: str = ""


def similarity_key(record: logging.LogRecord) -> Key:
    """What makes two records "the same line": call site, level and the text with every number
    blanked (the first 200 characters of the unformatted message)."""
    text = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    shape = _NUMBERS.sub("#", text[:200])
    return (record.name, record.levelno, record.pathname, record.lineno, shape)


class RepeatLimiter(logging.Filter):
    """A handler filter: the first ``burst`` similar records per ``window`` seconds pass, the
    rest are dropped and counted. Before a record passes, the summaries of windows that have
    ended with something dropped are written through ``write_summary``."""

    def __init__(
        self,
        write_summary: Callable[[logging.LogRecord], None],
        *,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.write_summary = write_summary
        self.burst = burst
        self.window = window
        self.clock = clock
        self.windows: dict[Key, _Window] = {}
        self.suppressed_total = 0
        self._flushing = False
        self._lock = threading.RLock()  # a node logs from its executor threads too

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if self._flushing:  # a summary on its way out
                return True
            now = self.clock()
            self.flush(now)
            return self._count(record, now)

    def _count(self, record: logging.LogRecord, now: float) -> bool:
        key = similarity_key(record)
        window = self.windows.get(key)
        if window is None:
            if len(self.windows) >= MAX_TRACKED:  # forget the oldest kind (dicts keep order)
                self._summarise(next(iter(self.windows)))
            window = self.windows[key] = _Window(now)
        window.seen += 1
        if window.seen <= self.burst:
            return True
        window.suppressed += 1
        self.suppressed_total += 1
        if not window.example:
            window.example = record.getMessage()[:200]
        return False

    def flush(self, now: float | None = None) -> None:
        """Write the summary of every window that has ended (all of them when ``now`` is None,
        as at exit) and forget those windows. Windows are kept in the order they started, so
        only the ended ones at the front are looked at."""
        with self._lock:
            while self.windows:
                key, window = next(iter(self.windows.items()))
                if now is not None and now - window.start < self.window:
                    return
                self._summarise(key)

    def _summarise(self, key: Key) -> None:
        window = self.windows.pop(key)
        if not window.suppressed:
            return
        name, level, pathname, lineno, _ = key
        summary = logging.LogRecord(
            name,
            level,
            pathname,
            lineno,
            "suppressed %d similar lines in %.0f s (like: %s)",
            (window.suppressed, self.window, window.example),
            None,
        )
        self._flushing = True
        try:
            self.write_summary(summary)
        finally:
            self._flushing = False


class _LimitedHandler(logging.StreamHandler):
    """stderr, behind a :class:`RepeatLimiter`; the pending summaries are written at close."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.limiter = RepeatLimiter(self.handle)
        self.addFilter(self.limiter)

    def close(self) -> None:
        self.limiter.flush()
        super().close()


def configure(verbose: bool = False) -> RepeatLimiter:
    """Install the node process's one log handler (stderr, repeats limited) on the root
    logger, replacing any earlier one, and return its limiter. Every logger of the process,
    asyncio's and aiohttp's included, writes through it."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler = _LimitedHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler.limiter
