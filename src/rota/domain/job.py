"""The job and its parts: state, options, lease.

Times are integers in milliseconds since the epoch (``*_ms``); durations users pass are
floats in seconds (``*_s``). Payloads and results are bytes the app layer encodes with
msgspec; the domain never looks inside them.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from rota.domain.backoff import DEFAULT_BACKOFF, Backoff, StoredBackoff

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_STALLS",
    "DEFAULT_QUEUE",
    "FINISHED_STATES",
    "Job",
    "JobOptions",
    "JobState",
    "Lease",
    "NewJob",
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


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


class JobOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How one job is to be run. Every field has a default, so ``JobOptions()`` is valid.

    * ``queue``: the queue that runs it (default ``"default"``).
    * ``priority``: smaller runs first (default 0; negative allowed); FIFO within one.
    * ``delay_s`` / ``run_at_ms``: not before now + delay seconds, or that epoch time in ms.
      At most one of the two.
    * ``max_attempts``: attempts before the job fails for good (default 3, >= 1).
    * ``backoff``: wait between attempts (default exponential 1 s doubling up to 300 s).
    * ``timeout_s``: an attempt longer than this is cancelled and counts as failed (default
      none).
    * ``max_stalls``: lease expiries tolerated; one more fails the job as poison (default 1).
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
            raise ValueError("queue must be a non-empty string")
        if self.delay_s is not None and self.run_at_ms is not None:
            raise ValueError("give delay_s or run_at_ms, not both")
        if self.delay_s is not None and not self.delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.max_stalls < 0:
            raise ValueError(f"max_stalls must be >= 0, got {self.max_stalls!r}")
        _positive("timeout_s", self.timeout_s)
        if self.key is not None and not self.key:
            raise ValueError("key must be a non-empty string or None")


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
        return self.state in FINISHED_STATES

    @property
    def timeout_s(self) -> float | None:
        """An attempt's time limit in seconds (None: none)."""
        return None if self.timeout_ms is None else self.timeout_ms / 1000
