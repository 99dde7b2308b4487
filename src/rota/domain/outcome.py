"""How an attempt ends, and the control-flow exceptions handlers raise to choose it.

These are not ``RotaError``s: they are a handler's way of saying what should happen next.

* ``raise Retry(delay_s=30)``: this attempt failed; try again after 30 s (instead of the
  job's backoff), as long as attempts remain.
* ``raise Unrecoverable("bad address")``: fail the job now; retrying cannot help.
"""

from __future__ import annotations

import enum

__all__ = ["FailureKind", "Retry", "Unrecoverable"]


class FailureKind(enum.StrEnum):
    """Why an attempt did not complete."""

    ERROR = "error"
    """The handler raised (or timed out): retry with backoff while attempts remain."""
    UNRECOVERABLE = "unrecoverable"
    """Retrying cannot help: fail the job now."""
    CANCELLED = "cancelled"
    """Cancelled on request while it ran: the job ends ``cancelled``."""


class Retry(Exception):
    """Raised by a handler: try again after ``delay_s`` seconds (default: the job's backoff)."""

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        if delay_s is not None and not delay_s >= 0:
            raise ValueError(f"Retry delay_s must be >= 0, got {delay_s!r}")
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


class Unrecoverable(Exception):
    """Raised by a handler: fail the job now, whatever attempts remain."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
