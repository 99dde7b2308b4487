"""How far ahead of its free slots a WorkerPool claims when ``prefetch`` is ``"auto"``.

A pure rule (no clock, no I/O): the pool reports each claim it made (how many jobs it asked
for, how many it got), the running count of attempts that ended and the time; the rule
says how many jobs the next claim asks for beyond the free slots. Why it is shaped so is
in docs/architecture.md ("Fast by default").
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["AUTO_PREFETCH_HORIZON_S", "AUTO_PREFETCH_MAX", "AdaptivePrefetch"]

#: The most jobs an adaptive prefetch holds ahead of the free slots.
AUTO_PREFETCH_MAX: Final = 256
#: The longest a job claimed ahead waits to start, at the pool's measured rate (a tenth of
#: the lease ttl if that is shorter).
AUTO_PREFETCH_HORIZON_S: Final = 0.05


class AdaptivePrefetch:
    """Claims ahead while the queue is deep, nothing while it is shallow.

    * A claim that comes back full says the queue is deep: the prefetch doubles (from
      ``concurrency``), up to what the pool starts within ``horizon_s`` at the rate jobs
      ended since the queue was last found deep, and up to ``most``. No rate is known
      before a second full claim: a job that never ends is not given company.
    * A claim that comes up short says the queue is shallow: the prefetch is 0 at once
      and the rate is forgotten (it is measured afresh), so runtimes sharing a shallow
      queue claim only their free slots and share it.
    """

    __slots__ = ("_mark", "concurrency", "horizon_s", "most", "prefetch", "rate")

    def __init__(self, concurrency: int, *, horizon_s: float, most: int = AUTO_PREFETCH_MAX):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not (math.isfinite(horizon_s) and horizon_s >= 0):
            raise ValueError(f"horizon_s must be a finite number >= 0, got {horizon_s}")
        if most < 0:
            raise ValueError(f"most must be >= 0, got {most}")
        self.concurrency = concurrency
        self.horizon_s = horizon_s
        self.most = most
        self.prefetch = 0
        """Jobs the next claim asks for beyond the free slots."""
        self.rate = 0.0
        """Attempts ended per second while the queue was deep (0: not measured yet)."""
        self._mark: tuple[float, int] | None = None
        """(time, attempts ended) at the last full claim; None after a short one."""

    def limit(self) -> int:
        """The most the prefetch may be now: what starts within ``horizon_s``."""
        return min(self.most, int(self.rate * self.horizon_s))

    def on_claim(self, asked: int, got: int, *, ended: int, now: float) -> int:
        """A claim asked for ``asked`` jobs and got ``got``; ``ended`` attempts had ended
        in the pool so far (a running count) at time ``now`` (s, monotonic). Returns the
        prefetch of the next claim."""
        if got > asked:
            raise ValueError(f"a claim got {got} of {asked} jobs")
        if got < asked:
            self.prefetch, self.rate, self._mark = 0, 0.0, None
            return 0
        mark = self._mark
        if mark is None or now > mark[0]:
            if mark is not None:
                rate = (ended - mark[1]) / (now - mark[0])
                self.rate = (self.rate + rate) / 2 if self.rate else rate
            self._mark = (now, ended)
        self.prefetch = min(max(self.concurrency, 2 * self.prefetch), self.limit())
        return self.prefetch
