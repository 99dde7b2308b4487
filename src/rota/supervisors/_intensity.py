"""Restart intensity: at most ``max_restarts`` restarts within any ``period_s`` seconds.

A pure sliding window over restart times (the caller passes the clock's reading, so this is
testable without any clock). A restart at time ``t`` counts while ``now - t < period_s``:
one exactly ``period_s`` old has left the window. ``max_restarts`` restarts within the
window are allowed; the one that would make ``max_restarts + 1`` is refused, and the
supervisor gives up instead of performing it (so it is not recorded).
"""

from __future__ import annotations

from collections import deque

__all__ = ["Intensity"]


class Intensity:
    """The restart times still inside the window, oldest first."""

    __slots__ = ("_times", "max_restarts", "period_s")

    def __init__(self, max_restarts: int, period_s: float) -> None:
        self.max_restarts = max_restarts
        self.period_s = period_s
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        times = self._times
        while times and now - times[0] >= self.period_s:
            times.popleft()

    def in_window(self, now: float) -> int:
        """How many recorded restarts are less than ``period_s`` old at ``now``."""
        self._expire(now)
        return len(self._times)

    def try_record(self, now: float) -> bool:
        """Record a restart at ``now`` if the limit allows it; ``False`` means give up.

        ``now`` must not go backwards (the supervisor reads a monotonic clock).
        """
        if self.in_window(now) >= self.max_restarts:
            return False
        self._times.append(now)
        return True

    def clear(self) -> None:
        """Forget the restarts counted so far."""
        self._times.clear()
