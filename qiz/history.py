"""A node's own recent past: a bounded ring of samples (link RTT, jobs finished, CPU, memory).

Why: a dashboard that shows only "now" cannot say whether the links got slower or the node
got busy in the last minutes, and asking Prometheus for that needs a Prometheus. The node
samples itself every :data:`INTERVAL_S` seconds (a background task of its
:class:`~qiz.tasks.TaskOwner`, on its clock) and keeps the last :data:`MAX_HISTORY_SAMPLES`;
``GET /api/history`` serves them and the dashboard draws them as sparklines.

What a sample holds is measured, never estimated: the median RTT of the links that have one,
the count of jobs this node's coordinator finished (the dashboard turns two samples into a
rate), the process's CPU use since the previous sample (``os.times``: user + system seconds
over wall seconds, in percent of one core) and its resident memory (``/proc/self/statm``; where
there is no ``/proc``, the peak RSS from ``resource``).
"""

from __future__ import annotations

import os
import statistics
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

INTERVAL_S = 2.0  # seconds between two samples
# samples kept: 10 minutes at INTERVAL_S; each is a few numbers (~200 bytes), so a few dozen KiB
MAX_HISTORY_SAMPLES = 300


@dataclass(frozen=True)
class Sample:
    at: float  # the node's clock, epoch seconds
    rtt_ms: float | None  # median over links with an RTT; None with no such link
    jobs_done: int  # jobs this node's coordinator finished so far (a counter)
    cpu_percent: float | None  # since the previous sample, % of one core; None for the first
    rss_bytes: int


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used (its threads included)."""
    times = os.times()
    return times.user + times.system


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak (``ru_maxrss``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes


class History:
    """The last ``limit`` samples, oldest first. :meth:`record` takes one; the measures of the
    process (CPU seconds, RSS) are injected so a test can give its own."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        limit: int = MAX_HISTORY_SAMPLES,
        interval_s: float = INTERVAL_S,
        cpu: Callable[[], float] = cpu_seconds,
        rss: Callable[[], int] = rss_bytes,
    ) -> None:
        if limit < 1 or interval_s <= 0:
            raise ValueError("a history keeps at least one sample, taken at a positive interval")
        self.clock = clock
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=limit)
        self._cpu = cpu
        self._rss = rss
        self._last_cpu: tuple[float, float] | None = None  # (clock, CPU seconds) at last sample

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, rtts_ms: Iterable[float | None], jobs_done: int) -> Sample:
        """Take one sample now: ``rtts_ms`` of the open links (None: not measured yet)."""
        now, used = self.clock(), self._cpu()
        cpu = None
        if self._last_cpu is not None:
            then, used_then = self._last_cpu
            if now > then:
                cpu = round(max(0.0, used - used_then) / (now - then) * 100, 1)
        self._last_cpu = (now, used)
        measured = [r for r in rtts_ms if r is not None]
        sample = Sample(
            at=now,
            rtt_ms=round(statistics.median(measured), 3) if measured else None,
            jobs_done=jobs_done,
            cpu_percent=cpu,
            rss_bytes=self._rss(),
        )
        self._samples.append(sample)
        return sample

    def answer(self) -> dict[str, Any]:
        """The ``history`` operation's answer: ``{"interval_s", "samples": [...]}``."""
        return {"interval_s": self.interval_s, "samples": [asdict(s) for s in self._samples]}
