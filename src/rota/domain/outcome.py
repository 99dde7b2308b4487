"""How an attempt ends, and the control-flow exceptions handlers raise to choose it.

These are not ``RotaError``s: they are a handler's way of saying what should happen next.

* ``raise Retry(delay_s=30)``: this attempt failed; try again after 30 s (instead of the
  job's backoff), as long as attempts remain.
* ``raise Unrecoverable("bad address")``: fail the job now; retrying cannot help.
"""

from __future__ import annotations

import enum
import math

from rota.domain.backoff import MAX_DELAY_S
from rota.errors import ConfigError

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
    """Raised by a handler: try again after ``delay_s`` seconds (default: the job's backoff),
    0 to one year (``MAX_DELAY_S``, the longest any backoff waits); anything else (NaN, an
    infinity, a negative delay) is a ``ConfigError`` (a ``ValueError``) here, in the handler."""

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        if delay_s is not None and not 0 <= delay_s <= MAX_DELAY_S:
            raise ConfigError(
                f"Retry delay_s must be between 0 and {MAX_DELAY_S:.0f} s (one year), "
                f"got {delay_s!r}"
            )
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason

    def delay_ms(self) -> int | None:
        """The delay in ms (None: the job's backoff), whatever ``delay_s`` was set to after
        construction: clamped to 0 to one year, NaN as None."""
        delay_s = self.delay_s
        if delay_s is None or math.isnan(delay_s):
            return None
        return round(min(max(delay_s, 0.0), MAX_DELAY_S) * 1000)


class Unrecoverable(Exception):
    """Raised by a handler: fail the job now, whatever attempts remain."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
