"""What happened to jobs: events, log lines, progress, and the runtimes that run them.

Events are written by the engine in the same transaction as the change they describe, so
an event is never seen for a change that was rolled back, and every process reads the same
stream (in id order) from the database.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

__all__ = ["PID_MAX", "Event", "EventKind", "LogEntry", "Owner", "Progress", "possible_pid"]


class EventKind(enum.StrEnum):
    """The kinds of job events, in the order a job usually meets them."""

    ENQUEUED = "enqueued"
    ACTIVE = "active"
    """Claimed by a worker; ``attempt`` is the attempt starting."""
    PROGRESS = "progress"
    """The handler reported progress; ``data`` holds it (JSON)."""
    COMPLETED = "completed"
    FAILED = "failed"
    """Failed for good (attempts exhausted, unrecoverable, or poison); ``data``: error."""
    RETRYING = "retrying"
    """An attempt failed and another will follow; ``data``: error."""
    STALLED = "stalled"
    """The lease expired (or its owner died) during an attempt; ``data``: error."""
    CANCELLED = "cancelled"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the stream; ``id`` grows with every event written."""

    id: int
    at_ms: int
    kind: EventKind
    job_id: int
    queue: str
    name: str
    attempt: int
    data: bytes | None = None


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A line a handler logged with ``ctx.log``."""

    job_id: int
    at_ms: int
    attempt: int
    message: str


class Progress(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Progress a handler reports: a value (a percentage, a count), and optionally the
    step it is at (``step`` of ``total``) with a message. ``ctx.progress`` checks them: a
    finite ``value``, ``0 <= step <= total``, a str ``message``."""

    value: float | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    """A runtime that holds leases: one per running worker process."""

    id: str
    host: str
    pid: int
    started_at_ms: int
    heartbeat_at_ms: int
    queues: list[str] = []
    pools: dict[str, Any] | None = None
    """Its execution pools as of its last heartbeat (JSON-able, by queue name: concurrency,
    running, ``threads`` and ``processes`` figures); None until first reported."""
    doorbell: str | None = None
    """Where writers on its host ring it after committing work for its queues (see
    ``rota.storage.feed``); None: it has none, and notices commits by polling alone."""


#: The largest process id any system rota runs on can give (``pid_t`` is a 32-bit int).
PID_MAX: Final = 2**31 - 1


def possible_pid(pid: object) -> bool:
    """Whether ``pid`` can be a process's id: an int from 1 to ``PID_MAX``. Not 0 nor a
    negative number (to ``kill`` they name process groups, or every process), nor a number
    too large for ``pid_t`` (``os.kill`` raises ``OverflowError``)."""
    return type(pid) is int and 0 < pid <= PID_MAX
