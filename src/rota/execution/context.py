"""What a running handler receives: ``rota.Context`` (``async def`` handlers) and
``rota.SyncContext`` (plain ``def`` handlers), one per attempt, in every mode.

A context reports through ``Reports``: in a worker, the executor's (stored through the
worker's storage, ``executor.py``); in a process-mode child, the pipe to the parent
(``child.py``). The checks of what a handler reports are here, so they are the same
wherever it runs.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Protocol

import msgspec

from rota.domain.event import Progress
from rota.domain.job import INT64_MAX, Job
from rota.domain.report import LOG_LINES, job_fields, job_label

__all__ = ["Context", "Reports", "SyncContext", "job_extra", "log_line"]

#: What handlers write with ``ctx.log``, prefixed with their job (name, id, queue).
log_lines = logging.getLogger(LOG_LINES)

_JSON = msgspec.json.Encoder()


class Reports(Protocol):
    """Where one attempt's log lines and progress reports go."""

    def add_log(self, line: str) -> None:
        """Keep a line the handler logged (stored with the next report, or at the end)."""

    async def progress(self, data: bytes) -> None:
        """Store a progress report (``data``: an encoded ``Progress``)."""

    def progress_from_thread(self, data: bytes) -> None:
        """``progress`` from a handler thread: blocks it until the report is stored."""


class _ContextBase:
    """What a running handler knows, in every mode."""

    __slots__ = ("_reports", "attempt", "job", "job_id", "max_attempts", "name", "queue")

    def __init__(self, reports: Reports, job: Job) -> None:
        self._reports = reports
        self.job: Job = job
        self.job_id: int = job.id
        self.name: str = job.name
        self.queue: str = job.queue
        self.attempt: int = job.attempt
        self.max_attempts: int = job.max_attempts

    def log(self, message: str) -> None:
        """Append a line to the job's log (stored with the next progress report or when the
        attempt ends) and log it at INFO on the ``rota.job.log`` logger, prefixed with the
        job (``jobs.resize #42 (images): ...``; the job's fields in the record). A lone
        surrogate, which UTF-8 cannot store, is kept escaped (``\\ud800``)."""
        line = str(message)
        if not line.isascii():
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        self._reports.add_log(line)
        log_line(self.job, line)

    def _extra(self) -> dict[str, Any]:
        return job_extra(self.job)


def job_extra(job: Job) -> dict[str, Any]:
    """A job's fields in log records (``extra``)."""
    return job_fields(job.name, job.id, job.queue, job.attempt)


def log_line(job: Job, line: str) -> None:
    """A line a handler logged (``ctx.log``, here or in a child process), on
    ``rota.job.log``: the job named in the text, its fields in the record."""
    if log_lines.isEnabledFor(logging.INFO):
        log_lines.info(f"{job_label(job.name, job.id, job.queue)}: {line}", extra=job_extra(job))


def _progress(
    value: float | None, step: int | None, total: int | None, message: str | None
) -> bytes:
    """A progress report as stored, its arguments checked first (in every mode, since
    every context reports through here): ``TypeError`` or ``ValueError`` naming the
    argument, raised in the handler that called ``progress``."""
    if value is None and step is None and total is None and message is None:
        raise TypeError("progress() needs at least one of value, step, total, message")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"progress() value must be an int or a float, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"progress() value is too large for a float: {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"progress() value must be a finite number, got {value!r}")
    for name, count in (("step", step), ("total", total)):
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"progress() {name} must be an int, got {count!r}")
            if not 0 <= count <= INT64_MAX:
                raise ValueError(f"progress() {name} must be between 0 and 2**63-1, got {count!r}")
    if step is not None and total is not None and step > total:
        raise ValueError(f"progress() step must be <= total, got step={step} of total={total}")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"progress() message must be a str, got {type(message).__name__}")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"progress() message cannot be encoded as UTF-8: {exc}") from None
    return _JSON.encode(Progress(value=value, step=step, total=total, message=message))


class Context(_ContextBase):
    """What a running ``async def`` handler knows and can report. One per attempt."""

    __slots__ = ()

    async def progress(
        self,
        value: float | None = None,
        *,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress: a number (a percentage, a count), and/or the step this attempt
        is at (``step`` of ``total``) with a message. Stored on the job and emitted as a
        ``progress`` event.

        At least one argument; ``value`` a finite int or float (not a bool; stored as a
        float), ``step`` and ``total`` ints >= 0 with ``step <= total`` when both are given,
        ``message`` a str. Anything else raises ``TypeError`` or ``ValueError`` naming the
        argument, here in the handler, and stores nothing."""
        await self._reports.progress(_progress(value, step, total, message))


class SyncContext(_ContextBase):
    """What a running plain ``def`` handler knows and can report (thread mode, and sync
    handlers in process mode). ``progress`` returns once the report is stored."""

    __slots__ = ("_stop",)

    def __init__(self, reports: Reports, job: Job, stop: threading.Event | None = None) -> None:
        super().__init__(reports, job)
        self._stop = stop

    def progress(
        self,
        value: float | None = None,
        *,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress (see ``Context.progress``, and its checks of the arguments);
        blocks this thread, never the event loop, until it is stored."""
        self._reports.progress_from_thread(_progress(value, step, total, message))

    @property
    def cancelled(self) -> bool:
        """True once nobody waits for this attempt any more (it timed out, was cancelled
        or its lease was lost): a thread cannot be killed, so a long handler may check this
        and return early. Whatever it returns then is dropped."""
        return self._stop is not None and self._stop.is_set()
