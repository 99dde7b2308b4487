"""What the log says about an attempt that ended: its words and its structured fields.

One function composes the line for every place that logs an ended attempt (the worker
pool once the Store has stored its outcome, the Scheduler when it rescues a stalled lease,
the engine when it fails a corrupt row for good), so that they all read alike::

    jobs.resize #42 (images) attempt 1/5 completed in 0.012 s
    jobs.resize #7 (images) attempt 2/5 failed after 0.003 s: OSError: down; retry 3/5 in 4.0 s
    jobs.resize #9 (images) attempt 5/5 failed after 0.003 s: OSError: down; failed for good:
    in the dead-letter set          (one line; and the traceback on the lines after it)

The fields (``extra`` of the log record, the keys of ``--log-format json``): ``job_id``,
``job`` (the job's name), ``queue``, ``attempt``, ``max_attempts``, ``outcome``
(``OUTCOMES``), ``duration_s`` (when the attempt's time is known), ``error`` (the error's
last line), ``retry_in_s`` (when it runs again). When the job failed for good and its error
has more than one line (a traceback), the whole error goes with the line too
(``AttemptLine.traceback``: the record's ``exc_text``, which any formatter prints after the
message). Pure: nothing here logs.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

__all__ = [
    "JOB_LOG",
    "AttemptLine",
    "LOG_LINES",
    "OUTCOMES",
    "attempt_ended",
    "attempt_started",
    "job_fields",
    "job_label",
    "last_line",
]

#: The logger of the lines composed here (one per ended attempt).
JOB_LOG: Final = "rota.job"
#: The logger of the lines handlers write with ``ctx.log``.
LOG_LINES: Final = "rota.job.log"

#: What became of an attempt: ``completed``; ``cancelled`` (on request); ``retrying`` (it
#: failed, and the job runs again); ``failed`` (the job failed for good: it is in the
#: dead-letter set); ``lost`` (its lease was lost: stopped, not settled by this worker).
OUTCOMES: Final = ("completed", "cancelled", "retrying", "failed", "lost")


class AttemptLine(NamedTuple):
    """One ended attempt's log line: its message (one line), its fields (``extra``), and
    the whole error when the job failed for good with a traceback (else None)."""

    message: str
    fields: dict[str, Any]
    traceback: str | None = None


def job_label(name: object, job_id: object, queue: object) -> str:
    """``jobs.resize #42 (images)``."""
    return f"{name} #{job_id} ({queue})"


def job_fields(name: object, job_id: object, queue: object, attempt: object) -> dict[str, Any]:
    """A job's fields in a log record (``extra``)."""
    return {"job_id": job_id, "job": name, "queue": queue, "attempt": attempt}


def last_line(error: str | None) -> str:
    """The line of an error that names it (a traceback's last)."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


def _seconds(value: float) -> str:
    """``4.0 s``, ``12 s``; under a second in ms (``50 ms``, ``4.6 ms``, ``0.07 ms``)."""
    if value >= 10:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.1f} s"
    ms = value * 1000
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def attempt_started(
    *, job_id: int, name: object, queue: object, attempt: object, max_attempts: object
) -> AttemptLine:
    """``jobs.resize #42 (images) attempt 1/5 started`` (logged at DEBUG)."""
    fields = job_fields(name, job_id, queue, attempt)
    fields["max_attempts"] = max_attempts
    label = job_label(name, job_id, queue)
    return AttemptLine(f"{label} attempt {attempt}/{max_attempts} started", fields)


def attempt_ended(
    *,
    job_id: int,
    name: object,
    queue: object,
    attempt: object,
    max_attempts: object,
    outcome: str,
    duration_s: float | None = None,
    error: str | None = None,
    retry_in_s: float | None = None,
) -> AttemptLine:
    """The log line of one ended attempt. ``max_attempts`` may be None (a corrupt row);
    ``retry_in_s`` only with ``retrying``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown attempt outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    of = "" if max_attempts is None else f"/{max_attempts}"
    head = f"{job_label(name, job_id, queue)} attempt {attempt}{of}"
    fields = job_fields(name, job_id, queue, attempt)
    fields["max_attempts"] = max_attempts
    fields["outcome"] = outcome
    if duration_s is not None:
        fields["duration_s"] = round(duration_s, 6)
    took = "" if duration_s is None else f" {_seconds(duration_s)}"
    if outcome == "completed":
        return AttemptLine(f"{head} completed{' in' + took if took else ''}", fields)
    cause = last_line(error)
    fields["error"] = cause
    after = f" after{took}" if took else ""
    if outcome == "cancelled":
        return AttemptLine(f"{head} cancelled{after}: {cause}", fields)
    if outcome == "lost":
        return AttemptLine(
            f"{head} lost its lease{after}: stopped, not settled here (the job is rescued as "
            "a stall when its lease expires)",
            fields,
        )
    if outcome == "retrying":
        wait = max(retry_in_s or 0.0, 0.0)
        fields["retry_in_s"] = round(wait, 3)
        when = "now" if wait == 0 else f"in {_seconds(wait)}"
        next_attempt = f"{attempt + 1}{of}" if isinstance(attempt, int) else "?"
        return AttemptLine(f"{head} failed{after}: {cause}; retry {next_attempt} {when}", fields)
    message = f"{head} failed{after}: {cause}; failed for good: in the dead-letter set"
    text = (error or "").strip()
    # A traceback: all of it, once, when the job fails for good.
    return AttemptLine(message, fields, text if "\n" in text else None)
