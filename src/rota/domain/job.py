"""The job and its parts: state, options, lease.

Times are integers in milliseconds since the epoch (``*_ms``); durations users pass are
floats in seconds (``*_s``). Payloads and results are bytes the app layer encodes with
msgspec; the domain never looks inside them.
"""

from __future__ import annotations

import enum
import math
from typing import Final

import msgspec

from rota.domain.backoff import DEFAULT_BACKOFF, Backoff, StoredBackoff
from rota.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_STALLS",
    "DEFAULT_QUEUE",
    "FINISHED_STATES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_COUNT",
    "MAX_DURATION_S",
    "MAX_RUN_AT_MS",
    "Job",
    "JobOptions",
    "JobState",
    "Lease",
    "NewJob",
    "option_error",
]

DEFAULT_QUEUE: Final = "default"
DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_MAX_STALLS: Final = 1


class JobState(enum.StrEnum):
    """Where a job is in its life. Every job is in exactly one state."""

    WAITING = "waiting"
    """Ready to run, ordered by priority (smaller first), then by time, then by id."""
    DELAYED = "delayed"
    """Not before ``run_at_ms``: a delayed enqueue or a retry waiting out its backoff."""
    ACTIVE = "active"
    """Leased by a worker (``owner``, ``token``, ``lease_expires_at_ms``)."""
    COMPLETED = "completed"
    """Ran to completion; ``result`` holds what the handler returned."""
    FAILED = "failed"
    """Attempts exhausted, unrecoverable, or stalled too often (the dead-letter set)."""
    CANCELLED = "cancelled"
    """Cancelled before it could finish."""


FINISHED_STATES: Final = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: ``max_attempts`` and ``max_stalls`` at most: a billion (their counters never overflow).
MAX_COUNT: Final = 1_000_000_000
#: ``delay_s`` and ``timeout_s`` at most: ten years (365-day years), in seconds.
MAX_DURATION_S: Final = 10 * 365 * 86_400.0
#: ``run_at_ms`` at most: the last millisecond of the year 9999 (UTC), the last a
#: ``datetime`` can name.
MAX_RUN_AT_MS: Final = 253_402_300_799_999

#: The range of each number of ``JobOptions``, both ends included (floats must also be
#: finite): what ``option_error`` checks.
_BOUNDS: Final[dict[str, tuple[float, float, str]]] = {
    "priority": (INT64_MIN, INT64_MAX, ""),
    "delay_s": (0.0, MAX_DURATION_S, " s"),
    "run_at_ms": (0, MAX_RUN_AT_MS, " ms since the epoch"),
    "max_attempts": (1, MAX_COUNT, ""),
    "timeout_s": (0.001, MAX_DURATION_S, " s"),
    "max_stalls": (0, MAX_COUNT, ""),
}


def option_error(field: str, value: object) -> str | None:
    """Why ``value`` is out of range for the ``JobOptions`` field ``field`` ("must be
    between 1 and 1000000000, got 0"), or, for a string (``queue``, ``key``), not storable
    as UTF-8; None if it is fine."""
    if isinstance(value, str):
        try:  # stored as UTF-8 text: a lone surrogate ("\ud800") cannot be
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"must be text without lone surrogates, got {value!r}"
        return None
    bounds = _BOUNDS.get(field)
    if bounds is None or value is None or not isinstance(value, (int, float)):
        return None
    low, high, unit = bounds
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        return f"must be between {_number(low)} and {_number(high)}{unit}, got {value!r}"
    return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class JobOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How one job is to be run. Every field has a default, so ``JobOptions()`` is valid.

    * ``queue``: the queue that runs it (default ``"default"``).
    * ``priority``: smaller runs first (default 0; negative allowed, a signed 64-bit
      integer); FIFO within one.
    * ``delay_s`` / ``run_at_ms``: not before now + delay seconds (0 to ten years), or that
      epoch time in ms (0 to the end of the year 9999). At most one of the two.
    * ``max_attempts``: attempts before the job fails for good (default 3, 1 to 10**9).
    * ``backoff``: wait between attempts (default exponential 1 s doubling up to 300 s).
    * ``timeout_s``: an attempt longer than this is cancelled and counts as failed (default
      none; 0.001 s to ten years).
    * ``max_stalls``: lease expiries tolerated; one more fails the job as poison (default 1,
      0 to 10**9).

    Every number must be finite and in its range (``option_error``), else ``ValueError``.
    * ``key``: a unique job key; enqueueing a key that exists returns the existing job
      instead of adding one (idempotent enqueue).
    """

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    delay_s: float | None = None
    run_at_ms: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Backoff = DEFAULT_BACKOFF
    timeout_s: float | None = None
    max_stalls: int = DEFAULT_MAX_STALLS
    key: str | None = None

    def __post_init__(self) -> None:
        if not self.queue:
            raise ConfigError("queue must be a non-empty string")
        if self.delay_s is not None and self.run_at_ms is not None:
            raise ConfigError("give delay_s or run_at_ms, not both")
        for field in (*_BOUNDS, "queue", "key"):
            error = option_error(field, getattr(self, field))
            if error is not None:
                raise ConfigError(f"{field} {error}")
        if self.key is not None and not self.key:
            raise ConfigError("key must be a non-empty string or None")


class NewJob(msgspec.Struct, frozen=True):
    """A job about to be enqueued: what the Engine receives. Build it with ``new_job``."""

    name: str
    queue: str
    payload: bytes
    priority: int
    run_at_ms: int
    """Enqueue time for a ready job; a future time makes it ``delayed``."""
    delayed: bool
    max_attempts: int
    max_stalls: int
    backoff: StoredBackoff
    timeout_ms: int | None
    key: str | None
    created_at_ms: int


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on an active job. Only ``token`` proves it (fencing)."""

    job_id: int
    owner: str
    token: int
    expires_at_ms: int


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A stored job, as read back from the engine."""

    id: int
    name: str
    queue: str
    state: JobState
    payload: bytes
    priority: int
    run_at_ms: int
    attempt: int
    """Attempts started so far; the running attempt while ``active``."""
    max_attempts: int
    stalls: int
    max_stalls: int
    backoff: StoredBackoff
    timeout_ms: int | None
    key: str | None
    created_at_ms: int
    finished_at_ms: int | None = None
    owner: str | None = None
    token: int | None = None
    lease_expires_at_ms: int | None = None
    cancel_requested: bool = False
    result: bytes | None = None
    error: str | None = None
    progress: bytes | None = None
    """The last progress reported (JSON of ``Progress``), kept after the job finishes."""

    @property
    def lease(self) -> Lease | None:
        """The current lease, if the job is active."""
        if self.state is not JobState.ACTIVE or self.owner is None or self.token is None:
            return None
        assert self.lease_expires_at_ms is not None
        return Lease(self.id, self.owner, self.token, self.lease_expires_at_ms)

    @property
    def finished(self) -> bool:
        """Whether the job is completed, failed or cancelled (it will not run again unless
        retried)."""
        return self.state in FINISHED_STATES

    @property
    def timeout_s(self) -> float | None:
        """An attempt's time limit in seconds (None: none)."""
        return None if self.timeout_ms is None else self.timeout_ms / 1000
