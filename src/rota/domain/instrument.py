"""Instruments: one place where metrics, tracing and dashboards attach to a runtime.

Subclass ``Instrument`` and override what you need; every method is optional. A runtime
calls only the methods an instrument overrides, so one installed for attempts costs
nothing per storage batch, and none installed costs one truth test per batch::

    class Timings(rota.Instrument):
        def attempt_ended(self, attempt: rota.AttemptEnded) -> None:
            histogram.labels(attempt.name, attempt.outcome).observe(attempt.seconds or 0)

    app = rota.App("jobs.db", instruments=[Timings()])

Methods run on the runtime's event loop (``storage_batch_*`` between the Store's
transactions): keep them quick and non-blocking. One that raises is logged and removed
from the runtime, never the runtime's problem.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["AttemptEnded", "AttemptOutcome", "Instrument"]

#: How an attempt ended: completed, cancelled, failed and to run again (``retrying``),
#: failed for good (``failed``), or stopped because its lease was lost (``lost``).
AttemptOutcome = Literal["completed", "cancelled", "retrying", "failed", "lost"]


class AttemptEnded(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt that ended, once its outcome is stored (``lost``: once stopped)."""

    job_id: int
    name: str
    queue: str
    attempt: int
    max_attempts: int
    outcome: AttemptOutcome
    seconds: float | None
    """How long it ran (None if it never started)."""
    error: str | None = None
    """The error's last line, for an attempt that did not complete."""


class Instrument:
    """Hooks into a runtime; override any of them (the defaults do nothing)."""

    def storage_batch_started(self, operations: int) -> None:
        """The Store starts a transaction of ``operations`` operations (group commit)."""

    def storage_batch_ended(
        self, operations: int, seconds: float, error: BaseException | None
    ) -> None:
        """That transaction ended after ``seconds``: committed, or failed as a whole with
        ``error`` (a ``StorageError``; each caller got it)."""

    def attempt_ended(self, attempt: AttemptEnded) -> None:
        """An attempt of a job ended (see ``AttemptEnded``): once per attempt."""
